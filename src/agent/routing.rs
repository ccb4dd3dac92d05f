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
//! Restart without interruption: at start the reconciler adopts what the kernel has. It writes
//! nothing before the datastore has been read once (until then it does not know the node's
//! blocks or peers, and an empty desired state would flush the blackholes). Learned routes are
//! never deleted before every configured peer is Established and has sent End-of-RIB (or
//! 120 s passed), so a restarting agent does not withdraw routes its peers are about to send
//! again. While the datastore is unreachable the last known state stays in force: nothing is
//! removed because a read failed.

use super::calc;
use super::nexthops::{Nexthops, Want};
use crate::bgp::rib::SharedRib;
use crate::bgp::speaker::SpeakerHandle;
use crate::netlink::{
    KernelNetlink, Netlink, Route, RouteEvent, RouteFilter, RouteKind, RouteProtocol, RouteWatch,
};
use anyhow::Result;
use ipnetwork::IpNetwork;
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

const RESYNC_EVERY: Duration = Duration::from_secs(10);
const DELETE_GRACE_MAX: Duration = Duration::from_secs(120);
/// Longest a due full resync waits for the incremental backlog to drain.
const FULL_WAIT_MAX: Duration = Duration::from_secs(30);
/// Pause after a failed kernel update before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One next hop as the diff sees it: gateway, and the device only when it is a tunnel (onlink).
type HopSignature = (Option<IpAddr>, bool, Option<u32>);

/// What identifies a route's content for the diff. The kernel fills in the output device of a
/// plain `via` route, so the device counts only for onlink (tunnel) hops, which name it.
pub(crate) fn signature(route: &Route) -> (RouteKind, Vec<HopSignature>) {
    let hop = |gateway: Option<IpAddr>, onlink: bool, ifindex: Option<u32>| {
        (gateway, onlink, if onlink { ifindex } else { None })
    };
    let mut hops: Vec<HopSignature> = if route.multipath.is_empty() {
        route
            .gateway
            .map(|g| hop(Some(g), route.onlink, route.output_ifindex))
            .into_iter()
            .collect()
    } else {
        route
            .multipath
            .iter()
            .map(|h| hop(h.gateway, h.onlink, h.output_ifindex))
            .collect()
    };
    hops.sort();
    (route.kind, hops)
}

/// A route the monitor saw deleted (re-check that prefix), or a lost monitor message
/// (re-check everything).
type Repair = Option<IpNetwork>;

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
    netlink: Arc<KernelNetlink>,
    programmed: Arc<std::sync::atomic::AtomicBool>,
    deletions: Option<RouteWatch>,
) {
    let mut changes = match speaker.changes() {
        Ok(changes) => changes,
        Err(_) => return,
    };
    let rib = speaker.rib().clone();
    let (repair_tx, mut repair_rx) = mpsc::unbounded_channel::<Repair>();
    let ours = [RouteProtocol::BGP, RouteProtocol::BLACKHOLE];
    match super::repair::deletions(netlink.as_ref(), deletions, &ours).await {
        Ok(mut monitor) => {
            tokio::spawn(async move {
                while let Some(event) = monitor.next().await {
                    if !event.needs_repair_by(&ours) {
                        continue;
                    }
                    // One deleted route: that prefix. Lost notifications, or a removed nexthop
                    // object (its routes went without a word each): everything.
                    let repair = match event {
                        RouteEvent::Deleted(r) => Some(r.destination),
                        _ => None,
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
    // Nothing is written before the datastore has been read once: the kernel's routes are
    // adopted as they are until the node knows its blocks and peers.
    let mut local = loop {
        if let Some(local) = local_rx.borrow_and_update().clone() {
            break Arc::new(local);
        }
        if local_rx.changed().await.is_err() {
            return;
        }
    };
    // Nor before the tunnel manager's first pass: until then tunl0 is unknown, and its routes
    // would be rewritten as plain ones.
    let mut encap = loop {
        if let Some(encap) = encap_rx.borrow_and_update().clone() {
            break Arc::new(encap);
        }
        if encap_rx.changed().await.is_err() {
            return;
        }
    };
    let mut nexthops = Nexthops::start(&netlink, RouteProtocol::BGP).await;
    let started = Instant::now();
    let mut learned_settled = false;
    let mut ticker = tokio::time::interval(RESYNC_EVERY);
    let mut full_due = true;
    let mut last_full = Instant::now();
    let mut resync_every = RESYNC_EVERY;
    let mut pending: Vec<IpNetwork> = Vec::new();
    let mut first_full_done = false;
    let mut full_due_since: Option<Instant> = None;
    loop {
        if let Some(now) = local_rx.borrow_and_update().clone() {
            if *local != now {
                local = Arc::new(now);
                full_due = true;
            }
        }
        if let Some(now) = encap_rx.borrow_and_update().clone() {
            if *encap != now {
                encap = Arc::new(now);
                full_due = true;
            }
        }
        if !learned_settled {
            learned_settled = started.elapsed() > DELETE_GRACE_MAX || peers_settled(&speaker).await;
            if learned_settled {
                info!("every peer has sent its routes; stale learned routes may now be removed");
                full_due = true;
            }
        }
        // A full resync waits until the incremental backlog is applied: the kernel then
        // matches the RIB but for what the resync is for, and a scan finds little to do
        // (during a full table's arrival it would find most routes "missing" instead).
        // Never longer than `FULL_WAIT_MAX`, so endless churn cannot starve it.
        if !full_due {
            full_due_since = None;
        } else if full_due_since.is_none() {
            full_due_since = Some(Instant::now());
        }
        let waited_too_long = full_due_since.is_some_and(|t| t.elapsed() > FULL_WAIT_MAX);
        let full_now = full_due && ((pending.is_empty() && changes.is_empty()) || waited_too_long);
        let result = if full_now {
            let began = Instant::now();
            let result = resync(
                &netlink,
                &mut nexthops,
                &rib,
                &local,
                &encap,
                learned_settled,
            )
            .await;
            // A scan of a big table is not free: keep its share of the time small.
            resync_every = RESYNC_EVERY.max(began.elapsed() * 50);
            last_full = Instant::now();
            result.map(|(fix, deleted)| {
                if !fix.is_empty() {
                    debug!(routes = fix.len(), "resync: routes to fix");
                }
                pending.extend(fix);
                deleted
            })
        } else if pending.is_empty() {
            Ok(0)
        } else {
            // A chunk at a time: the routes built for one batch stay small, and the rest
            // waits in the channel as bare prefixes.
            pending.sort_unstable();
            pending.dedup();
            let rest = pending.split_off(pending.len().min(APPLY_CHUNK));
            let chunk = std::mem::replace(&mut pending, rest);
            apply_prefixes(&netlink, &mut nexthops, &rib, &local, &encap, chunk).await
        };
        match result {
            Ok(changes) => {
                if changes > 0 {
                    debug!(changes, full = full_now, "kernel routes reconciled");
                }
                if full_now {
                    first_full_done = true;
                    full_due = false;
                }
                if first_full_done && pending.is_empty() {
                    programmed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "route reconcile failed; retrying");
                full_due = true;
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
        if !pending.is_empty() || (full_due && !changes.is_empty()) {
            // More of a burst to apply (or a resync waiting for it): go round again.
            drain_changes(&mut changes, &mut pending, APPLY_CHUNK);
            drain_repairs(&mut repair_rx, &mut pending, &mut full_due);
            continue;
        }
        tokio::select! {
            r = local_rx.changed() => if r.is_err() { return },
            r = encap_rx.changed() => if r.is_err() { return },
            batch = changes.recv() => match batch {
                Some(batch) => pending.extend(batch),
                None => return,
            },
            Some(repair) = repair_rx.recv() => note_repair(repair, &mut pending, &mut full_due),
            _ = ticker.tick() => {
                if last_full.elapsed() >= resync_every {
                    full_due = true;
                }
            }
        }
        // Take what is already queued (up to a chunk): one batch for a burst.
        drain_changes(&mut changes, &mut pending, APPLY_CHUNK);
        drain_repairs(&mut repair_rx, &mut pending, &mut full_due);
    }
}

/// Prefixes programmed per batch on the incremental path.
const APPLY_CHUNK: usize = 16 * 1024;

/// Moves queued change batches into `pending` until it holds `limit` prefixes.
fn drain_changes(
    changes: &mut mpsc::UnboundedReceiver<Vec<IpNetwork>>,
    pending: &mut Vec<IpNetwork>,
    limit: usize,
) {
    while pending.len() < limit {
        match changes.try_recv() {
            Ok(batch) => pending.extend(batch),
            Err(_) => return,
        }
    }
}

/// Moves queued repairs into `pending` (a lost monitor message asks for a full resync).
fn drain_repairs(
    repairs: &mut mpsc::UnboundedReceiver<Repair>,
    pending: &mut Vec<IpNetwork>,
    full_due: &mut bool,
) {
    while let Ok(repair) = repairs.try_recv() {
        note_repair(repair, pending, full_due);
    }
}

/// A deleted prefix is re-checked; lost monitor messages ask for a full resync.
fn note_repair(repair: Repair, pending: &mut Vec<IpNetwork>, full_due: &mut bool) {
    match repair {
        Some(prefix) => pending.push(prefix),
        None => *full_due = true,
    }
}

/// The route routed wants in the kernel for `prefix`: the blackhole of a local block, or the
/// learned best route (`None`: no route of ours belongs there).
fn desired_for(
    prefix: IpNetwork,
    rib: &SharedRib,
    local: &BTreeSet<IpNetwork>,
    encap: &calc::EncapView,
) -> Option<Route> {
    if local.contains(&prefix) {
        return Some(Route::blackhole(prefix, RouteProtocol::BLACKHOLE));
    }
    let hops = rib.read().next_hops(&prefix);
    calc::learned_route(prefix, &hops, local, encap)
}

/// Programs the current desired route of each prefix (replace, with its nexthop object when
/// it can have one), or removes ours (delete).
async fn apply_prefixes(
    netlink: &KernelNetlink,
    nexthops: &mut Nexthops,
    rib: &SharedRib,
    local: &BTreeSet<IpNetwork>,
    encap: &calc::EncapView,
    prefixes: Vec<IpNetwork>,
) -> Result<usize> {
    let mut replace = Vec::new();
    let mut delete = Vec::new();
    for prefix in prefixes {
        match desired_for(prefix, rib, local, encap) {
            Some(route) => replace.push(route),
            None => delete.push(any_kind(Route::unicast_key(prefix, RouteProtocol::BGP))),
        }
    }
    nexthops.assign(netlink, &mut replace).await;
    program(netlink, replace, delete).await
}

/// What a streaming comparison of the kernel's routes with the desired ones found.
#[derive(Default)]
struct Scan {
    /// Prefixes whose kernel route is wrong or missing: re-applied from the RIB.
    fix: Vec<IpNetwork>,
    /// Routes of ours nothing wants any more: (prefix, protocol).
    delete: Vec<(IpNetwork, RouteProtocol)>,
    /// Desired prefixes the kernel has a route of ours for (right or wrong).
    present: usize,
    /// Nexthop objects our routes in the kernel use.
    in_use: HashSet<u32>,
}

/// Whether the kernel's route is the one wanted: the same object, or (written without one)
/// the same gateways. A route that could have an object but lacks it is rewritten.
fn is_wanted(wanted: &Route, want: Want, actual: &Route) -> bool {
    wanted.protocol == actual.protocol
        && match want {
            Want::Object(id) => actual.nexthop_id == Some(id),
            Want::Missing => false,
            Want::Plain => actual.nexthop_id.is_none() && signature(wanted) == signature(actual),
        }
}

/// Diffs the kernel's routes of our protocols against the desired ones, without copying
/// either table: the dump is compared route by route with the RIB, and desired routes the
/// kernel lacks are looked for only when the counts say some are missing. Deletes what
/// nothing wants (in chunks), then the nexthop objects no route uses; returns the prefixes to
/// re-apply, for the chunked incremental path, and the number of deletions.
async fn resync(
    netlink: &KernelNetlink,
    nexthops: &mut Nexthops,
    rib: &SharedRib,
    local: &Arc<BTreeSet<IpNetwork>>,
    encap: &Arc<calc::EncapView>,
    allow_delete_learned: bool,
) -> Result<(Vec<IpNetwork>, usize)> {
    let mut scan = Scan::default();
    nexthops.refresh(netlink).await;
    for protocol in [RouteProtocol::BLACKHOLE, RouteProtocol::BGP] {
        let (rib, local, encap) = (rib.clone(), local.clone(), encap.clone());
        let view = nexthops.view();
        scan = netlink
            .scan_routes(
                RouteFilter::protocol(protocol),
                scan,
                move |scan, actual| {
                    scan.in_use.extend(actual.nexthop_id);
                    match desired_for(actual.destination, &rib, &local, &encap) {
                        Some(wanted) => {
                            scan.present += 1;
                            if !is_wanted(&wanted, view.want(&wanted), &actual) {
                                scan.fix.push(actual.destination);
                            }
                        }
                        None => {
                            if actual.protocol != RouteProtocol::BGP || allow_delete_learned {
                                scan.delete.push((actual.destination, actual.protocol));
                            }
                        }
                    }
                },
            )
            .await?;
    }
    let mut desired = 0;
    for_each_desired(rib, local, encap, |_| desired += 1);
    if scan.present < desired {
        let mut have: Vec<IpNetwork> = Vec::with_capacity(scan.present);
        for protocol in [RouteProtocol::BLACKHOLE, RouteProtocol::BGP] {
            have = netlink
                .scan_routes(RouteFilter::protocol(protocol), have, |have, actual| {
                    have.push(actual.destination);
                })
                .await?;
        }
        have.sort_unstable();
        for_each_desired(rib, local, encap, |prefix| {
            if have.binary_search(&prefix).is_err() {
                scan.fix.push(prefix);
            }
        });
    }
    let mut deleted = 0;
    for chunk in scan.delete.chunks(APPLY_CHUNK) {
        let keys: Vec<Route> = chunk
            .iter()
            .map(|(prefix, protocol)| any_kind(Route::unicast_key(*prefix, *protocol)))
            .collect();
        deleted += program(netlink, Vec::new(), keys).await?;
    }
    nexthops.collect_garbage(netlink, &scan.in_use).await;
    Ok((scan.fix, deleted))
}

/// A delete key that matches the route whatever its type (unicast, blackhole...).
fn any_kind(mut key: Route) -> Route {
    key.kind = RouteKind::Other(0);
    key
}

/// Calls `f` with every prefix routed wants a kernel route for (local blackholes and learned
/// routes), reading the RIB in chunks so the speaker is never held up for long.
fn for_each_desired(
    rib: &SharedRib,
    local: &BTreeSet<IpNetwork>,
    encap: &calc::EncapView,
    mut f: impl FnMut(IpNetwork),
) {
    for block in local {
        f(*block);
    }
    let mut after = None;
    loop {
        let mut chunk = Vec::new();
        let last = rib.read().for_each_best(after, 4096, |prefix, hops| {
            if calc::learned_route(prefix, hops, local, encap).is_some() {
                chunk.push(prefix);
            }
        });
        chunk.into_iter().for_each(&mut f);
        match last {
            Some(last) => after = Some(last),
            None => return,
        }
    }
}

/// Replaces and deletes in batches (many netlink messages per send); returns the changes made.
async fn program(
    netlink: &KernelNetlink,
    replace: Vec<Route>,
    delete: Vec<Route>,
) -> Result<usize> {
    let mut changes = 0;
    if !replace.is_empty() {
        let report = netlink.replace_routes_batch(&replace).await?;
        for failure in &report.failures {
            warn!(route = %failure.key.destination, error = %failure.error, "cannot program route");
        }
        changes += report.succeeded;
    }
    if !delete.is_empty() {
        let report = netlink.delete_routes_batch(&delete).await?;
        for failure in &report.failures {
            warn!(route = %failure.key.destination, error = %failure.error, "cannot remove route");
        }
        changes += report.succeeded;
    }
    Ok(changes)
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
