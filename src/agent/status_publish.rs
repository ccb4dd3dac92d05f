//! Publishes this agent's status for `routectl cluster status`: its sessions, the blocks it
//! originates and the learned routes in its kernel, under `status/nodes/<node>`
//! ([`crate::model::keys::node_status`]) on a lease the agent keeps alive.
//!
//! ```text
//!  every CHECK (2 s): speaker.status() + originated blocks + kernel routes in the pools
//!  (proto 232, 233; scanned every CHECK, less often when a scan is slow: scan_every)
//!  ──> report ──(changed since the last write, or PERIOD (30 s) passed)──> put with lease
//! ```
//! The pools (which learned routes are other nodes' blocks) are read from the datastore every
//! PERIOD only.
//! Changes are debounced by the check interval (a burst of session changes is one write). The
//! lease (TTL 90 s) is renewed on every write; when the agent stops the key expires, which is
//! how `routectl cluster status` (and `node delete`) tell an agent that is gone. Errors are
//! logged once per kind of failure and retried on the next check.

use super::AgentState;
use crate::api::v1;
use crate::datastore::{LeaseId, Op, Txn};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

pub const CHECK: Duration = Duration::from_secs(2);
pub const PERIOD: Duration = Duration::from_secs(30);
pub const TTL: Duration = Duration::from_secs(90);

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Learned routes inside the IP pools (other nodes' blocks): a full BGP table from a ToR is
/// neither listed nor kept while scanning.
async fn programmed_routes(pools: &[ipnetwork::IpNetwork]) -> Vec<String> {
    use crate::netlink::{RouteFilter, RouteProtocol as P};
    let Ok(netlink) = crate::netlink::KernelNetlink::new().await else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for proto in [P::BGP, P::TUNNEL] {
        let found = netlink
            .scan_routes(
                RouteFilter::protocol(proto),
                (pools.to_vec(), BTreeSet::new()),
                |(pools, set), route| {
                    let d = route.destination;
                    if pools
                        .iter()
                        .any(|p| p.contains(d.network()) && p.prefix() <= d.prefix())
                    {
                        set.insert(d.to_string());
                    }
                },
            )
            .await;
        if let Ok((_, found)) = found {
            out.extend(found);
        }
    }
    out.into_iter().collect()
}

/// This node's report now (`published` left 0: set when written); `programmed` are the
/// kernel routes, read at most every PERIOD by the caller.
async fn report(state: &AgentState, programmed: &[String]) -> v1::NodeStatusReport {
    let mut report = v1::NodeStatusReport {
        node: state.node_name.clone(),
        address: state.node_address.map(|a| a.ip()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started: unix_secs(state.started),
        published: 0,
        sessions: Vec::new(),
        advertised_blocks: Vec::new(),
        programmed_routes: programmed.to_vec(),
    };
    if let Some(speaker) = state.speaker.get() {
        let peers = speaker.status().await.unwrap_or_default();
        report.sessions = super::server::peers_to_wire(&peers);
        let rib = speaker.rib().read();
        report.advertised_blocks = rib.originated().iter().map(|p| p.to_string()).collect();
    }
    report
}

/// How long after a kernel scan that took `took` the next one is due: every check while scans
/// are cheap (the report follows the kernel within a check), stretched so scanning costs at
/// most 2% of the time (a full table from a ToR), never rarer than every PERIOD.
pub fn scan_every(took: Duration) -> Duration {
    (took * 50).clamp(CHECK, PERIOD)
}

/// Runs until the task is dropped.
pub async fn run(state: Arc<AgentState>) {
    let key = crate::model::keys::node_status(&state.node_name);
    let mut lease: Option<LeaseId> = None;
    let mut last: Option<(v1::NodeStatusReport, Instant)> = None;
    let mut failing = false;
    // The kernel's routes, when they were read and how long until the next read.
    let mut programmed: Option<(Vec<String>, Instant, Duration)> = None;
    // The pools (which routes are other nodes' blocks), read every PERIOD: a datastore read
    // per check would cost the cluster's datastore one read per node every 2 s.
    let mut pools: Option<(Vec<ipnetwork::IpNetwork>, Instant)> = None;
    loop {
        if pools.as_ref().is_none_or(|(_, at)| at.elapsed() >= PERIOD) {
            if let Ok(list) = state.ipam.list_pools().await {
                pools = Some((list.iter().map(|p| p.cidr).collect(), Instant::now()));
            }
        }
        let cidrs = pools
            .as_ref()
            .map(|(p, _)| p.as_slice())
            .unwrap_or_default();
        if programmed
            .as_ref()
            .is_none_or(|(_, at, every)| at.elapsed() >= *every)
        {
            let began = Instant::now();
            let routes = programmed_routes(cidrs).await;
            programmed = Some((routes, Instant::now(), scan_every(began.elapsed())));
        }
        let routes = programmed
            .as_ref()
            .map(|(r, _, _)| r.as_slice())
            .unwrap_or_default();
        let current = report(&state, routes).await;
        let due = match &last {
            Some((previous, at)) => *previous != current || at.elapsed() >= PERIOD,
            None => true,
        };
        if due {
            match publish(&state, &key, &current, &mut lease).await {
                Ok(()) => {
                    failing = false;
                    last = Some((current, Instant::now()));
                }
                Err(e) => {
                    lease = None;
                    if !failing {
                        warn!(error = %e, "cannot publish the node status; retrying");
                    } else {
                        debug!(error = %e, "cannot publish the node status");
                    }
                    failing = true;
                }
            }
        }
        tokio::time::sleep(CHECK).await;
    }
}

async fn publish(
    state: &AgentState,
    key: &str,
    report: &v1::NodeStatusReport,
    lease: &mut Option<LeaseId>,
) -> Result<(), crate::datastore::DatastoreError> {
    let id = match *lease {
        Some(id) => {
            state.store.lease_keep_alive(id).await?;
            id
        }
        None => state.store.lease_grant(TTL).await?,
    };
    *lease = Some(id);
    let mut written = report.clone();
    written.published = unix_secs(SystemTime::now());
    let txn = Txn {
        compare: vec![],
        success: vec![Op::Put {
            key: key.to_string(),
            value: crate::datastore::encode_json(&written),
            lease: id,
        }],
        failure: vec![],
    };
    state.store.txn(txn).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_scan_follows_every_check_while_cheap_and_stretches_to_at_most_the_period() {
        assert_eq!(scan_every(Duration::from_micros(300)), CHECK);
        assert_eq!(
            scan_every(Duration::from_millis(100)),
            Duration::from_secs(5)
        );
        assert_eq!(scan_every(Duration::from_secs(3)), PERIOD);
    }
}
