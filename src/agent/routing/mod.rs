//! The route reconciler: speaker → calc → kernel (the datastore side is `follower`).
//!
//! ```text
//!  datastore watch (nodes, bgppeers, config, ippools, my affinities)
//!        │ any change: reload snapshot (debounced by draining queued events)
//!        v
//!  calc::desired_peers ──> speaker.set_peers      calc::originated_blocks ──> speaker.set_originated
//!  calc::local_blocks ──┐
//!                       v
//!  speaker: changed prefixes ──> route reconciler <── netlink monitor (a deleted route of ours)
//!  SharedRib (read: next hops) ──┘      │          <── timer (full resync every 10 s or more)
//!                                       v
//!      kernel: replace/delete the changed prefixes; on a full resync, a streaming dump of our
//!      routes compared with the RIB — protocols routed-bh and routed-bgp only
//! ```
//!
//! Three parts: this file is the thin loop (inputs from channels into the planner, the
//! planner's actions carried out by the apply step); `planner.rs` decides, sans-IO, from the
//! inputs and the current instant (every rule below is there, unit-tested with made-up
//! instants); `apply.rs` does the netlink work on any [`Netlink`] (the kernel, or
//! `FakeNetlink` in tests).
//! Restart without interruption: at start the reconciler adopts what the kernel has. It writes
//! nothing before the datastore has been read once (until then it does not know the node's
//! blocks or peers, and an empty desired state would flush the blackholes). Learned routes are
//! never deleted before every configured peer is Established and has sent End-of-RIB (or
//! 120 s passed), so a restarting agent does not withdraw routes its peers are about to send
//! again. While the datastore is unreachable the last known state stays in force: nothing is
//! removed because a read failed.

use super::calc;
use crate::bgp::speaker::SpeakerHandle;
use crate::netlink::{Netlink, RouteEvent, RouteProtocol, RouteWatch};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

mod apply;
mod planner;

pub(crate) use apply::signature;
pub use apply::RouteApply;
pub use planner::{Action, Input, Outcome, RoutePlanner, View, APPLY_CHUNK, RESYNC_EVERY};

/// Keeps the kernel's routes of protocols routed-bh and routed-bgp equal to calc's.
///
/// Two paths, so a full BGP table never costs a copy or a table walk per change:
/// - incremental: the speaker reports the prefixes whose best route changed; the reconciler
///   reads their routes from the shared RIB and replaces or deletes exactly those, in batches
///   (everything queued is drained first, so a burst of UPDATEs becomes a few large batches);
///   a route of ours the monitor sees deleted is re-checked the same way;
/// - full resync: when the local blocks or the tunnel view change, when the monitor lost
///   messages, once every peer has sent its routes, and periodically (every `RESYNC_EVERY`,
///   stretched so a scan of a big table costs at most ~2% of the time): a streaming dump of
///   the kernel's routes of our two protocols, each compared with the RIB as it goes, so
///   memory stays flat however big the table is.
pub async fn reconcile_routes(
    speaker: SpeakerHandle,
    mut local_rx: watch::Receiver<Option<BTreeSet<IpNetwork>>>,
    mut encap_rx: watch::Receiver<Option<calc::EncapView>>,
    netlink: Arc<dyn Netlink>,
    programmed: Arc<AtomicBool>,
    deletions: Option<RouteWatch>,
) {
    let Ok(mut changes) = speaker.changes() else {
        return;
    };
    let mut repairs = watch_deletions(netlink.as_ref(), deletions).await;
    let mut apply = RouteApply::new(netlink, speaker.rib().clone());
    let mut planner = RoutePlanner::new();
    let mut ticker = tokio::time::interval(RESYNC_EVERY);
    loop {
        let now = Instant::now();
        if let Some(local) = local_rx.borrow_and_update().clone() {
            planner.on(now, Input::LocalBlocks(local));
        }
        if let Some(encap) = encap_rx.borrow_and_update().clone() {
            planner.on(now, Input::Encap(encap));
        }
        if planner.awaiting_peers(now) && peers_settled(&speaker).await {
            planner.on(now, Input::PeersSettled);
        }
        if let Some(action) = planner.next(now, !changes.is_empty()) {
            let outcome = carry_out(&mut apply, &planner, action).await;
            for action in planner.on(Instant::now(), Input::Applied(outcome)) {
                match action {
                    Action::MarkProgrammed => programmed.store(true, Ordering::Relaxed),
                    Action::RetryAfter(pause) => tokio::time::sleep(pause).await,
                    Action::ApplyPrefixes(_) | Action::FullResync { .. } => {}
                }
            }
        }
        // Not busy (nothing more of a burst to apply, no resync waiting for one): wait.
        if !planner.busy(!changes.is_empty()) {
            let ready = planner.ready();
            tokio::select! {
                r = local_rx.changed() => if r.is_err() { return },
                r = encap_rx.changed() => if r.is_err() { return },
                batch = changes.recv(), if ready => match batch {
                    Some(batch) => { planner.on(Instant::now(), Input::Changed(batch)); }
                    None => return,
                },
                Some(repair) = repairs.recv(), if ready => { planner.on(Instant::now(), repair); }
                _ = ticker.tick(), if ready => { planner.on(Instant::now(), Input::Tick); }
            }
        }
        if planner.ready() {
            // Take what is already queued (up to a chunk): one batch for a burst.
            let now = Instant::now();
            while planner.wants_changes() {
                match changes.try_recv() {
                    Ok(batch) => planner.on(now, Input::Changed(batch)),
                    Err(_) => break,
                };
            }
            while let Ok(repair) = repairs.try_recv() {
                planner.on(now, repair);
            }
        }
    }
}

/// Runs one planner action on the kernel; the outcome goes back to the planner. Failures are
/// logged here, once.
async fn carry_out(apply: &mut RouteApply, planner: &RoutePlanner, action: Action) -> Outcome {
    let Some(view) = planner.view() else {
        return Outcome::Prefixes { ok: true };
    };
    match action {
        Action::FullResync {
            allow_delete_learned,
        } => {
            let began = Instant::now();
            let result = apply.resync(&view, allow_delete_learned).await;
            let took = began.elapsed();
            let fix = match result {
                Ok((fix, deleted)) => {
                    if !fix.is_empty() || deleted > 0 {
                        debug!(fix = fix.len(), deleted, "resync: routes to fix");
                    }
                    Some(fix)
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "route resync failed; retrying");
                    None
                }
            };
            Outcome::Resync { took, fix }
        }
        Action::ApplyPrefixes(prefixes) => match apply.apply_prefixes(&view, prefixes).await {
            Ok(changes) => {
                if changes > 0 {
                    debug!(changes, "kernel routes reconciled");
                }
                Outcome::Prefixes { ok: true }
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "route reconcile failed; retrying");
                Outcome::Prefixes { ok: false }
            }
        },
        Action::MarkProgrammed | Action::RetryAfter(_) => Outcome::Prefixes { ok: true },
    }
}

/// The monitor's deletions of our routes, as planner inputs: one deleted route re-checks that
/// prefix; lost notifications, or a removed nexthop object (its routes went without a word
/// each), re-check everything.
async fn watch_deletions(
    netlink: &dyn Netlink,
    deletions: Option<RouteWatch>,
) -> mpsc::UnboundedReceiver<Input> {
    let (repair_tx, repair_rx) = mpsc::unbounded_channel::<Input>();
    let ours = [RouteProtocol::BGP, RouteProtocol::BLACKHOLE];
    match super::repair::deletions(netlink, deletions, &ours).await {
        Ok(mut monitor) => {
            tokio::spawn(async move {
                while let Some(event) = monitor.next().await {
                    if !event.needs_repair_by(&ours) {
                        continue;
                    }
                    let repair = match event {
                        RouteEvent::Deleted(r) => Input::RouteDeleted(r.destination),
                        _ => Input::MonitorLost,
                    };
                    if repair_tx.send(repair).is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => {
            warn!(error = %e, "no route monitor; deleted routes come back on the next resync")
        }
    }
    repair_rx
}

/// Every configured peer is Established and has sent End-of-RIB: the learned routes are
/// complete, so a kernel route with no best path behind it is really gone.
async fn peers_settled(speaker: &SpeakerHandle) -> bool {
    match speaker.status().await {
        Ok(peers) => peers
            .iter()
            .all(|p| p.state == crate::bgp::fsm::State::Established && p.end_of_rib_received),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
