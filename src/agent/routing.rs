//! The routing loop: datastore → calc → BGP speaker, and speaker → calc → kernel.
//!
//! ```text
//!  datastore watch (nodes, bgppeers, config, ippools, my affinities)
//!        │ any change: reload snapshot (debounced by draining queued events)
//!        v
//!  calc::desired_peers ──> speaker.set_peers      calc::originated_blocks ──> speaker.set_originated
//!  calc::local_blocks ──┐
//!                       v
//!  speaker best routes ──> route reconciler <── netlink monitor (a deleted route of ours)
//!                              │               <── timer (full resync every 10 s)
//!                              v
//!              kernel: replace missing/changed, delete extra — protocols routed-bh and routed-bgp only
//! ```
//! Restart without interruption: at start the reconciler adopts what the kernel has. It writes
//! nothing before the datastore has been read once (until then it does not know the node's
//! blocks or peers, and an empty desired state would flush the blackholes). Learned routes are
//! never deleted before every configured peer is Established and has sent End-of-RIB (or
//! 120 s passed), so a restarting agent does not withdraw routes its peers are about to send
//! again. While the datastore is unreachable the last known state stays in force: nothing is
//! removed because a read failed.

use super::calc::{self, ClusterState};
use super::AgentState;
use crate::bgp::speaker::{PeerSpec, SpeakerHandle};
use crate::datastore::sync::{watch_with_resync, SyncEvent};
use crate::datastore::{decode_json, Datastore};
use crate::model::{keys, BgpConfiguration, BgpPeer, BlockAffinity, IpPool, Node};
use crate::netlink::{
    KernelNetlink, Netlink, Route, RouteEvent, RouteFilter, RouteKind, RouteProtocol,
};
use anyhow::Result;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

const RESYNC_EVERY: Duration = Duration::from_secs(10);
const DELETE_GRACE_MAX: Duration = Duration::from_secs(120);

/// Loads everything calc needs for `node`.
pub async fn load_state(store: &dyn Datastore, node: &str) -> Result<ClusterState> {
    let config = match store.get(keys::BGP_CONFIG).await? {
        Some(kv) => decode_json::<BgpConfiguration>(&kv)?,
        None => BgpConfiguration::default(),
    };
    let nodes = store
        .list(keys::NODES)
        .await?
        .kvs
        .iter()
        .map(decode_json::<Node>)
        .collect::<Result<_, _>>()?;
    let peers = store
        .list(keys::PEERS)
        .await?
        .kvs
        .iter()
        .map(decode_json::<BgpPeer>)
        .collect::<Result<_, _>>()?;
    let pools = store
        .list(keys::POOLS)
        .await?
        .kvs
        .iter()
        .map(decode_json::<IpPool>)
        .collect::<Result<_, _>>()?;
    let mut all_affinities = Vec::new();
    for kv in store.list(keys::AFFINITIES).await?.kvs {
        if let Some((owner, cidr)) = keys::parse_affinity_key(&kv.key) {
            all_affinities.push((owner, cidr, decode_json::<BlockAffinity>(&kv)?.state));
        }
    }
    let affinities = all_affinities
        .iter()
        .filter(|(owner, _, _)| owner == node)
        .map(|(_, cidr, state)| (*cidr, *state))
        .collect();
    Ok(ClusterState {
        config,
        nodes,
        peers,
        pools,
        affinities,
        all_affinities,
    })
}

/// Every node's affinities matter: VXLAN routes follow other nodes' blocks.
fn relevant(key: &str, _node: &str) -> bool {
    key.starts_with(keys::NODES)
        || key.starts_with(keys::PEERS)
        || key.starts_with("config/")
        || key.starts_with(keys::POOLS)
        || key.starts_with(keys::AFFINITIES)
}

/// Follows the datastore and keeps the speaker's peers and originated blocks, the local
/// blocks for the reconciler, and the snapshot for the tunnel manager up to date.
pub async fn follow_datastore(
    state: Arc<AgentState>,
    me: Node,
    speaker: SpeakerHandle,
    local_tx: watch::Sender<Option<BTreeSet<IpNetwork>>>,
    cluster_tx: watch::Sender<Option<Arc<ClusterState>>>,
) {
    let mut events = watch_with_resync(state.store.clone(), String::new());
    let mut last_peers: Vec<PeerSpec> = Vec::new();
    let mut synced = false;
    while let Some(first) = events.recv().await {
        let mut dirty = is_relevant(&first, &me.name);
        while let Ok(more) = events.try_recv() {
            dirty |= is_relevant(&more, &me.name);
        }
        if !dirty {
            continue;
        }
        let snapshot = match load_state(state.store.as_ref(), &me.name).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot read cluster state; keeping the current routing");
                continue;
            }
        };
        let me_now = snapshot
            .nodes
            .iter()
            .find(|n| n.name == me.name)
            .cloned()
            .unwrap_or_else(|| me.clone());
        // Originated blocks first: a restarting speaker's End-of-RIB must not go out before
        // its blocks are in the RIB, or its peers would drop the stale routes to them.
        let _ = speaker.set_originated(calc::originated_blocks(&snapshot));
        let peers = calc::desired_peers(&me_now, &snapshot);
        if peers != last_peers || !synced {
            info!(peers = peers.len(), "BGP peers changed");
            let _ = speaker.set_peers(peers.clone());
            last_peers = peers;
        }
        synced = true;
        local_tx.send_if_modified(|current| {
            let next = Some(calc::local_blocks(&snapshot));
            let changed = *current != next;
            *current = next;
            changed
        });
        let _ = cluster_tx.send(Some(Arc::new(snapshot)));
    }
}

fn is_relevant(event: &SyncEvent, node: &str) -> bool {
    match event {
        SyncEvent::Snapshot { .. } => true,
        SyncEvent::Put(kv) => relevant(&kv.key, node),
        SyncEvent::Delete { key, .. } => relevant(key, node),
    }
}

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

/// Keeps the kernel's routes of protocols routed-bh and routed-bgp equal to calc's.
pub async fn reconcile_routes(
    speaker: SpeakerHandle,
    mut local_rx: watch::Receiver<Option<BTreeSet<IpNetwork>>>,
    mut encap_rx: watch::Receiver<Option<calc::EncapView>>,
    netlink: Arc<KernelNetlink>,
    programmed: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut best_rx = speaker.watch_best_routes();
    let (repair_tx, mut repair_rx) = mpsc::channel::<()>(16);
    match netlink.watch_routes().await {
        Ok(mut monitor) => {
            tokio::spawn(async move {
                while let Some(event) = monitor.next().await {
                    let ours = match &event {
                        RouteEvent::Deleted(r) => {
                            r.protocol == RouteProtocol::BGP
                                || r.protocol == RouteProtocol::BLACKHOLE
                        }
                        RouteEvent::Overflow => true,
                        RouteEvent::Added(_) => false,
                    };
                    if ours && repair_tx.send(()).await.is_err() {
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
    let local = loop {
        if let Some(local) = local_rx.borrow_and_update().clone() {
            break local;
        }
        if local_rx.changed().await.is_err() {
            return;
        }
    };
    let mut local = local;
    // Nor before the tunnel manager's first pass: until then tunl0 is unknown, and its routes
    // would be rewritten as plain ones.
    let mut encap = loop {
        if let Some(encap) = encap_rx.borrow_and_update().clone() {
            break encap;
        }
        if encap_rx.changed().await.is_err() {
            return;
        }
    };
    let started = Instant::now();
    let mut learned_settled = false;
    let mut ticker = tokio::time::interval(RESYNC_EVERY);
    loop {
        if let Some(now) = local_rx.borrow_and_update().clone() {
            local = now;
        }
        let best = best_rx.borrow_and_update().clone();
        if let Some(now) = encap_rx.borrow_and_update().clone() {
            encap = now;
        }
        if !learned_settled {
            learned_settled = started.elapsed() > DELETE_GRACE_MAX || peers_settled(&speaker).await;
            if learned_settled {
                info!("every peer has sent its routes; stale learned routes may now be removed");
            }
        }
        match apply(
            &netlink,
            &calc::desired_routes(&local, &best, &encap),
            learned_settled,
        )
        .await
        {
            Ok(changes) => {
                if changes > 0 {
                    debug!(changes, "kernel routes reconciled");
                }
                programmed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => warn!(error = %format!("{e:#}"), "route reconcile failed; retrying"),
        }
        tokio::select! {
            r = local_rx.changed() => if r.is_err() { return },
            r = best_rx.changed() => if r.is_err() { return },
            r = encap_rx.changed() => if r.is_err() { return },
            _ = repair_rx.recv() => {}
            _ = ticker.tick() => {}
        }
    }
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

/// Diffs desired against the kernel; returns the number of changes made. Changes go to the
/// kernel in batches (many netlink messages per send), so a full table installs at batch speed.
async fn apply(
    netlink: &KernelNetlink,
    desired: &[Route],
    allow_delete_learned: bool,
) -> Result<usize> {
    let mut actual: BTreeMap<IpNetwork, Route> = BTreeMap::new();
    for protocol in [RouteProtocol::BLACKHOLE, RouteProtocol::BGP] {
        for route in netlink
            .list_routes(&RouteFilter::protocol(protocol))
            .await?
        {
            actual.insert(route.destination, route);
        }
    }
    let wanted: BTreeMap<IpNetwork, &Route> = desired.iter().map(|r| (r.destination, r)).collect();
    let replace: Vec<Route> = wanted
        .iter()
        .filter(|(dst, route)| {
            !actual
                .get(dst)
                .is_some_and(|a| a.protocol == route.protocol && signature(a) == signature(route))
        })
        .map(|(_, route)| (*route).clone())
        .collect();
    let delete: Vec<Route> = actual
        .iter()
        .filter(|(dst, route)| {
            !wanted.contains_key(dst)
                && (route.protocol != RouteProtocol::BGP || allow_delete_learned)
        })
        .map(|(_, route)| route.clone())
        .collect();
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
