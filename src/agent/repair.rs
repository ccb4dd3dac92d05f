//! Route-deletion feeds for the agent's repair loops (workloads, tunnels, BGP routes).
//!
//! The agent normally hands each loop a subscription to its one shared, BPF-filtered monitor
//! (`netlink::SharedDeletions`); without it (no netlink at start, or tests) a loop opens a
//! monitor of its own. Loops that repair with a whole pass only need to be woken: `signal`.

use crate::netlink::{Netlink, NetlinkError, RouteProtocol, RouteWatch};
use tokio::sync::mpsc;
use tracing::warn;

/// The deletions of `protocols`: the shared subscription when given, else a monitor of its own.
pub async fn deletions(
    netlink: &dyn Netlink,
    shared: Option<RouteWatch>,
    protocols: &[RouteProtocol],
) -> Result<RouteWatch, NetlinkError> {
    match shared {
        Some(watch) => Ok(watch),
        None => netlink.watch_route_deletions(protocols).await,
    }
}

/// A wake-up whenever a route of `protocols` is deleted or the monitor lost events. Wake-ups
/// coalesce (one pending is enough for a whole pass). Without a monitor, `what` says in the
/// log what is repaired only by the loop's timer then; the channel then never yields.
pub async fn signal(
    netlink: &dyn Netlink,
    shared: Option<RouteWatch>,
    protocols: &[RouteProtocol],
    what: &str,
) -> mpsc::Receiver<()> {
    let (wake, woken) = mpsc::channel(1);
    match deletions(netlink, shared, protocols).await {
        Ok(mut monitor) => {
            let protocols = protocols.to_vec();
            tokio::spawn(async move {
                while let Some(event) = monitor.next().await {
                    // A full channel already holds a pending wake-up: dropping this one is fine.
                    if event.needs_repair_by(&protocols)
                        && wake.try_send(()).is_err()
                        && wake.is_closed()
                    {
                        return;
                    }
                }
            });
        }
        Err(e) => {
            warn!(error = %e, "no route monitor; {what} come back on the next resync");
            // Keep the sender alive: a closed channel would read as an endless stream of `None`.
            tokio::spawn(async move {
                wake.closed().await;
            });
        }
    }
    woken
}
