//! The one datastore follower of the agent: an in-memory view of what calc needs (the BGP
//! config, nodes, peers, pools, every node's affinities), kept current by applying watch events
//! one by one, and handed to the speaker (peers, originated blocks), the route reconciler (local
//! blocks) and the tunnel manager (snapshot).
//!
//! ```text
//!  config/bgp  nodes/  bgppeers/  ippools/  ipam/affinity/     one list-then-watch each
//!       └─────────┴────────┴─────────┴───────────┘             (watch_with_resync)
//!                          v  (source, event)
//!  ClusterView::apply: put/delete one record; a snapshot (first read, or after compaction or a
//!  lost watch) replaces that source's records      ── no datastore read per event ──
//!                          v  the change matters to this node (agent::relevance), every
//!                          v  source read once (a queued burst is one change)
//!  ClusterState ──> watch channel ──> follow_datastore: speaker.set_originated / set_peers,
//!                                     local blocks, tunnel snapshot
//! ```
//! Nothing else is followed: IPAM blocks, handles and the IPAM config (most of the datastore's
//! writes) never reach this agent's follower, and a change elsewhere in the cluster costs no
//! read at all. A change that cannot alter what calc computes for this node (with reflectors: a
//! client's record, any remote block; see [`super::relevance`]) costs only the update of its
//! record: no state is built or handed on. One that matters rebuilds the state. A prefix is re-listed only when its
//! watch reports compaction or fails. An undecodable record is logged and left out (the one
//! it replaced stays); while the datastore is unreachable the last state stays in force.
//!
//! The reconcilers that run without BGP follow one prefix each through [`follow_prefix`]
//! (IPAM blocks for the workload routes, pools for nftables): list-then-watch with resync, the
//! records decoded into a map published on a watch channel (`None` until the first full read).

use super::calc::{self, ClusterState};
use super::relevance;
use crate::bgp::speaker::{PeerSpec, SpeakerHandle};
use crate::datastore::sync::{watch_with_resync, SyncEvent};
use crate::datastore::{decode_json, Datastore, KeyValue};
use crate::model::{keys, AffinityState, BgpConfiguration, BgpPeer, BlockAffinity, IpPool, Node};
use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// One followed prefix of the cluster view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    Nodes,
    Peers,
    Pools,
    Affinities,
}

impl Source {
    /// Every source, in the order of [`ClusterView`]'s "read once" flags.
    pub const ALL: [Source; 5] = [
        Source::Config,
        Source::Nodes,
        Source::Peers,
        Source::Pools,
        Source::Affinities,
    ];

    /// The datastore prefix it follows.
    pub fn prefix(self) -> &'static str {
        match self {
            Source::Config => keys::BGP_CONFIG,
            Source::Nodes => keys::NODES,
            Source::Peers => keys::PEERS,
            Source::Pools => keys::POOLS,
            Source::Affinities => keys::AFFINITIES,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An affinity as calc sees it: (owner node, block, state).
type Affinity = (String, IpNetwork, AffinityState);

/// The in-memory cluster view, changed one event at a time (sans-IO: no datastore access).
#[derive(Debug, Default)]
pub struct ClusterView {
    config: Option<BgpConfiguration>,
    nodes: BTreeMap<String, Node>,
    peers: BTreeMap<String, BgpPeer>,
    pools: BTreeMap<String, IpPool>,
    affinities: BTreeMap<String, Affinity>,
    /// Which sources have been read in full at least once.
    read: [bool; 5],
    /// The node the view is for (`None`: every change matters).
    me: Option<String>,
    /// A change that matters to `me` was applied since [`ClusterView::take_relevant`].
    pending: bool,
}

impl ClusterView {
    /// A view for node `me`: changes elsewhere that cannot change calc's outputs for it are
    /// applied without marking the view for a new state ([`super::relevance`]).
    pub fn for_node(me: &str) -> ClusterView {
        ClusterView {
            me: Some(me.to_string()),
            ..ClusterView::default()
        }
    }

    /// True when a change that matters to this node was applied since the last call (a
    /// snapshot always matters); resets the mark.
    pub fn take_relevant(&mut self) -> bool {
        std::mem::take(&mut self.pending)
    }

    /// Records a state of the view holds in all (the work of building one).
    pub fn records(&self) -> usize {
        self.nodes.len() + self.peers.len() + self.pools.len() + self.affinities.len()
    }

    /// Applies one event of `source`; true when the view changed (a snapshot always counts).
    pub fn apply(&mut self, source: Source, event: SyncEvent) -> bool {
        match event {
            SyncEvent::Snapshot { kvs, .. } => {
                self.replace(source, &kvs);
                self.read[source.index()] = true;
                self.pending = true;
                true
            }
            // Before the first snapshot there is nothing to change (it always comes first).
            _ if !self.read[source.index()] => false,
            SyncEvent::Put(kv) => match source {
                Source::Nodes => self.put_node(&kv),
                Source::Affinities => self.put_affinity(&kv),
                _ => {
                    let changed = self.put(source, &kv);
                    self.mark(changed)
                }
            },
            SyncEvent::Delete { key, .. } => match source {
                Source::Nodes => {
                    let old = self.nodes.remove(&key);
                    let matters = old.is_some() && self.node_matters(old.as_ref(), None);
                    self.pending |= matters;
                    old.is_some()
                }
                Source::Affinities => {
                    let old = self.affinities.remove(&key);
                    let matters = old.as_ref().is_some_and(|a| self.affinity_matters(a));
                    self.pending |= matters;
                    old.is_some()
                }
                _ => {
                    let changed = self.delete(source, &key);
                    self.mark(changed)
                }
            },
        }
    }

    /// A change of the config, peers or pools: it always matters.
    fn mark(&mut self, changed: bool) -> bool {
        self.pending |= changed;
        changed
    }

    fn put_node(&mut self, kv: &KeyValue) -> bool {
        let Some(node) = decode_logged::<Node>(kv, "node") else {
            return false;
        };
        let old = self.nodes.get(&kv.key);
        if old == Some(&node) {
            return false;
        }
        let matters = self.node_matters(old, Some(&node));
        self.pending |= matters;
        self.nodes.insert(kv.key.clone(), node);
        true
    }

    fn put_affinity(&mut self, kv: &KeyValue) -> bool {
        let Some(affinity) = decode_affinity(kv) else {
            return false;
        };
        if self.affinities.get(&kv.key) == Some(&affinity) {
            return false;
        }
        let matters = self.affinity_matters(&affinity);
        self.pending |= matters;
        self.affinities.insert(kv.key.clone(), affinity);
        true
    }

    fn context(
        &self,
    ) -> Option<
        relevance::Context<
            '_,
            impl Iterator<Item = &BgpPeer> + Clone,
            impl Iterator<Item = &IpPool> + Clone,
        >,
    > {
        let me = self.me.as_deref()?;
        Some(relevance::Context {
            me: self.nodes.get(&keys::node(me)).filter(|n| n.name == me),
            config: self.config.as_ref().unwrap_or(&DEFAULT_CONFIG),
            peers: self.peers.values(),
            pools: self.pools.values(),
        })
    }

    /// Whether a node record going from `old` to `new` matters to this node.
    fn node_matters(&self, old: Option<&Node>, new: Option<&Node>) -> bool {
        let Some(context) = self.context() else {
            return true;
        };
        let mine = [old, new]
            .into_iter()
            .flatten()
            .any(|n| Some(n.name.as_str()) == self.me.as_deref());
        mine || context.remote_node_matters(old, new)
    }

    fn affinity_matters(&self, (owner, block, _): &Affinity) -> bool {
        let Some(context) = self.context() else {
            return true;
        };
        Some(owner.as_str()) == self.me.as_deref() || context.remote_affinity_matters(block)
    }

    /// True once every source has been read in full.
    pub fn ready(&self) -> bool {
        self.read.iter().all(|read| *read)
    }

    /// The state calc computes from, for `node` (its own affinities picked out).
    pub fn state(&self, node: &str) -> ClusterState {
        let all_affinities: Vec<Affinity> = self.affinities.values().cloned().collect();
        let affinities = all_affinities
            .iter()
            .filter(|(owner, _, _)| owner == node)
            .map(|(_, cidr, state)| (*cidr, *state))
            .collect();
        ClusterState {
            config: self.config.clone().unwrap_or_default(),
            nodes: self.nodes.values().cloned().collect(),
            peers: self.peers.values().cloned().collect(),
            pools: self.pools.values().cloned().collect(),
            affinities,
            all_affinities,
        }
    }

    fn replace(&mut self, source: Source, kvs: &[KeyValue]) {
        match source {
            Source::Config => {
                self.config = None;
                for kv in kvs.iter().filter(|kv| kv.key == keys::BGP_CONFIG) {
                    self.config = decode_logged(kv, "BGP configuration");
                }
            }
            Source::Nodes => self.nodes = decode_all(kvs, "node"),
            Source::Peers => self.peers = decode_all(kvs, "BGP peer"),
            Source::Pools => self.pools = decode_all(kvs, "pool"),
            Source::Affinities => {
                self.affinities = kvs
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), decode_affinity(kv)?)))
                    .collect();
            }
        }
    }

    fn put(&mut self, source: Source, kv: &KeyValue) -> bool {
        match source {
            Source::Config if kv.key == keys::BGP_CONFIG => {
                match decode_logged::<BgpConfiguration>(kv, "BGP configuration") {
                    Some(config) if self.config.as_ref() != Some(&config) => {
                        self.config = Some(config);
                        true
                    }
                    _ => false,
                }
            }
            Source::Config => false,
            Source::Nodes => self.put_node(kv),
            Source::Peers => put_record(&mut self.peers, kv, "BGP peer"),
            Source::Pools => put_record(&mut self.pools, kv, "pool"),
            Source::Affinities => self.put_affinity(kv),
        }
    }

    fn delete(&mut self, source: Source, key: &str) -> bool {
        match source {
            Source::Config if key == keys::BGP_CONFIG => self.config.take().is_some(),
            Source::Config => false,
            Source::Nodes => self.nodes.remove(key).is_some(),
            Source::Peers => self.peers.remove(key).is_some(),
            Source::Pools => self.pools.remove(key).is_some(),
            Source::Affinities => self.affinities.remove(key).is_some(),
        }
    }
}

/// What a view without a BGP configuration record reads as one.
static DEFAULT_CONFIG: std::sync::LazyLock<BgpConfiguration> =
    std::sync::LazyLock::new(BgpConfiguration::default);

fn decode_logged<T: DeserializeOwned>(kv: &KeyValue, what: &str) -> Option<T> {
    match decode_json::<T>(kv) {
        Ok(record) => Some(record),
        Err(e) => {
            warn!(key = %kv.key, error = %e, "undecodable {what} ignored");
            None
        }
    }
}

fn decode_all<T: DeserializeOwned>(kvs: &[KeyValue], what: &str) -> BTreeMap<String, T> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), decode_logged(kv, what)?)))
        .collect()
}

fn decode_affinity(kv: &KeyValue) -> Option<Affinity> {
    let (owner, cidr) = keys::parse_affinity_key(&kv.key)?;
    let affinity = decode_logged::<BlockAffinity>(kv, "block affinity")?;
    Some((owner, cidr, affinity.state))
}

/// Puts one decoded record; true when it differs from the one it replaces.
fn put_record<T: DeserializeOwned + PartialEq>(
    map: &mut BTreeMap<String, T>,
    kv: &KeyValue,
    what: &str,
) -> bool {
    match decode_logged::<T>(kv, what) {
        Some(record) if map.get(&kv.key) != Some(&record) => {
            map.insert(kv.key.clone(), record);
            true
        }
        _ => false,
    }
}

/// What the follower has done, for benchmarks and tests.
#[derive(Debug, Default)]
pub struct FollowerStats {
    /// Watch events applied (snapshots included).
    pub events: AtomicU64,
    /// Full reads of a source (the first one of each included).
    pub snapshots: AtomicU64,
    /// Cluster states built and published.
    pub published: AtomicU64,
    /// Changes applied without a new state: nothing this node's calc reads changed.
    pub unrelated: AtomicU64,
    /// Records copied into the states built (the work that grows with the cluster).
    pub records_built: AtomicU64,
    /// Time spent applying events and building states, in microseconds.
    pub busy_micros: AtomicU64,
}

/// Follows the five sources of the cluster view for `node` and publishes its state on the
/// returned channel: `None` until each source has been read once, then a new state after every
/// change (a burst of queued events is one change). Runs until every receiver is gone.
pub fn spawn_follow_cluster(
    store: Arc<dyn Datastore>,
    node: String,
    stats: Arc<FollowerStats>,
) -> watch::Receiver<Option<Arc<ClusterState>>> {
    let (tx, rx) = watch::channel(None);
    let (merged_tx, merged) = mpsc::channel(1024);
    for source in Source::ALL {
        let mut events = watch_with_resync(store.clone(), source.prefix().to_string());
        let merged_tx = merged_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if merged_tx.send((source, event)).await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(follow_cluster(merged, node, tx, stats));
    rx
}

async fn follow_cluster(
    mut merged: mpsc::Receiver<(Source, SyncEvent)>,
    node: String,
    tx: watch::Sender<Option<Arc<ClusterState>>>,
    stats: Arc<FollowerStats>,
) {
    let mut view = ClusterView::for_node(&node);
    loop {
        let event = tokio::select! {
            event = merged.recv() => event,
            _ = tx.closed() => return,
        };
        let Some(first) = event else { return };
        let began = Instant::now();
        let mut changed = apply_counted(&mut view, first, &stats);
        while let Ok(more) = merged.try_recv() {
            changed |= apply_counted(&mut view, more, &stats);
        }
        if changed && view.ready() {
            if view.take_relevant() {
                // Counted first: whoever sees the state also sees it counted.
                stats.published.fetch_add(1, Ordering::Relaxed);
                let records = u64::try_from(view.records()).unwrap_or(u64::MAX);
                stats.records_built.fetch_add(records, Ordering::Relaxed);
                tx.send_replace(Some(Arc::new(view.state(&node))));
            } else {
                stats.unrelated.fetch_add(1, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.busy_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

fn apply_counted(
    view: &mut ClusterView,
    (source, event): (Source, SyncEvent),
    stats: &FollowerStats,
) -> bool {
    stats.events.fetch_add(1, Ordering::Relaxed);
    if matches!(event, SyncEvent::Snapshot { .. }) {
        stats.snapshots.fetch_add(1, Ordering::Relaxed);
        info!(
            prefix = source.prefix(),
            "cluster view: prefix read in full"
        );
    }
    view.apply(source, event)
}

/// Waits for the first full cluster state; `None` when the follower ended before it.
pub async fn first_state(
    view: &mut watch::Receiver<Option<Arc<ClusterState>>>,
) -> Option<Arc<ClusterState>> {
    let state = view.wait_for(|state| state.is_some()).await.ok()?;
    state.clone()
}

/// Hands every new cluster state to the speaker (originated blocks, peers), the route
/// reconciler (local blocks) and the tunnel manager (the state itself).
pub async fn follow_datastore(
    me: Node,
    speaker: SpeakerHandle,
    mut view: watch::Receiver<Option<Arc<ClusterState>>>,
    local_tx: watch::Sender<Option<BTreeSet<IpNetwork>>>,
    cluster_tx: watch::Sender<Option<Arc<ClusterState>>>,
) {
    let mut last_peers: Option<Vec<PeerSpec>> = None;
    loop {
        let current = view.borrow_and_update().clone();
        if let Some(snapshot) = current {
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
            if last_peers.as_ref() != Some(&peers) {
                info!(peers = peers.len(), "BGP peers changed");
                let _ = speaker.set_peers(peers.clone());
                last_peers = Some(peers);
            }
            local_tx.send_if_modified(|current| {
                let next = Some(calc::local_blocks(&snapshot));
                let changed = *current != next;
                *current = next;
                changed
            });
            let _ = cluster_tx.send(Some(snapshot));
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// The records under a prefix, by key, once the prefix has been read in full.
pub type Records<T> = Option<BTreeMap<String, T>>;

/// Follows `prefix` (list, then watch, re-listing after compaction or a failed watch) and keeps
/// `tx` holding its records decoded as `T`: `None` until the first full read, then the map,
/// changed in place (a burst of queued events is one change). An undecodable record is
/// logged (`what` names its kind) and left out. Ends when every receiver is gone.
pub async fn follow_prefix<T: DeserializeOwned>(
    store: Arc<dyn Datastore>,
    prefix: &'static str,
    tx: watch::Sender<Records<T>>,
    what: &'static str,
) {
    let mut events = watch_with_resync(store, prefix.to_string());
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tx.closed() => return,
        };
        let Some(first) = event else { return };
        tx.send_modify(|records| {
            apply_event(records, first, what);
            while let Ok(more) = events.try_recv() {
                apply_event(records, more, what);
            }
        });
    }
}

/// Starts [`follow_prefix`] on a task of its own and returns the receiving end: `None` until
/// the first full read of `prefix`, then its records.
pub fn spawn_follow_prefix<T: DeserializeOwned + Send + Sync + 'static>(
    store: Arc<dyn Datastore>,
    prefix: &'static str,
    what: &'static str,
) -> watch::Receiver<Records<T>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(follow_prefix::<T>(store, prefix, tx, what));
    rx
}

/// Applies one datastore event to the records (a snapshot replaces them all).
pub fn apply_event<T: DeserializeOwned>(records: &mut Records<T>, event: SyncEvent, what: &str) {
    let decode = |kv: &KeyValue| match decode_json::<T>(kv) {
        Ok(record) => Some(record),
        Err(e) => {
            warn!(key = %kv.key, error = %e, "undecodable {what} ignored");
            None
        }
    };
    match event {
        SyncEvent::Snapshot { kvs, .. } => {
            let map = kvs
                .iter()
                .filter_map(|kv| decode(kv).map(|record| (kv.key.clone(), record)))
                .collect();
            *records = Some(map);
        }
        // Before the first snapshot there is nothing to change (it always comes first).
        SyncEvent::Put(kv) => {
            if let (Some(map), Some(record)) = (records.as_mut(), decode(&kv)) {
                map.insert(kv.key.clone(), record);
            }
        }
        SyncEvent::Delete { key, .. } => {
            if let Some(map) = records.as_mut() {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::encode_json;

    fn kv(key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }
    }

    fn put(key: &str, value: &[u8]) -> SyncEvent {
        SyncEvent::Put(kv(key, value))
    }

    fn delete(key: &str) -> SyncEvent {
        SyncEvent::Delete {
            key: key.into(),
            mod_revision: 9,
        }
    }

    fn snapshot(kvs: Vec<KeyValue>) -> SyncEvent {
        SyncEvent::Snapshot { kvs, revision: 1 }
    }

    fn node(name: &str, address: &str) -> Node {
        Node {
            name: name.into(),
            ipv4_address: Some(address.parse().unwrap()),
            ..Node::default()
        }
    }

    fn node_kv(name: &str, address: &str) -> KeyValue {
        kv(&keys::node(name), &encode_json(&node(name, address)))
    }

    fn affinity_kv(owner: &str, cidr: &str) -> KeyValue {
        let cidr: IpNetwork = cidr.parse().unwrap();
        let affinity = BlockAffinity {
            state: AffinityState::Confirmed,
        };
        kv(&keys::affinity(owner, &cidr), &encode_json(&affinity))
    }

    /// A view with every source read: nodes a and b, one affinity each.
    fn ready_view() -> ClusterView {
        let mut view = ClusterView::default();
        for source in Source::ALL {
            let kvs = match source {
                Source::Nodes => vec![node_kv("a", "10.0.0.1/24"), node_kv("b", "10.0.0.2/24")],
                Source::Affinities => vec![
                    affinity_kv("a", "10.65.0.0/26"),
                    affinity_kv("b", "10.65.0.64/26"),
                ],
                _ => vec![],
            };
            assert!(view.apply(source, snapshot(kvs)));
        }
        view
    }

    fn node_names(view: &ClusterView) -> Vec<String> {
        view.state("a").nodes.into_iter().map(|n| n.name).collect()
    }

    #[test]
    fn view_is_ready_only_once_every_source_was_read_and_ignores_events_before() {
        let mut view = ClusterView::default();
        assert!(!view.apply(Source::Nodes, SyncEvent::Put(node_kv("a", "10.0.0.1/24"))));
        for source in &Source::ALL[..4] {
            view.apply(*source, snapshot(vec![]));
            assert!(!view.ready());
        }
        view.apply(Source::Affinities, snapshot(vec![]));
        assert!(view.ready());
        assert!(
            node_names(&view).is_empty(),
            "the early put was not applied"
        );
    }

    #[test]
    fn create_event_adds_the_record_without_a_read() {
        let mut view = ready_view();
        assert!(view.apply(Source::Nodes, SyncEvent::Put(node_kv("c", "10.0.0.3/24"))));
        assert_eq!(node_names(&view), ["a", "b", "c"]);
        assert!(view.apply(
            Source::Affinities,
            SyncEvent::Put(affinity_kv("a", "10.65.1.0/26"))
        ));
        let state = view.state("a");
        assert_eq!(state.affinities.len(), 2);
        assert_eq!(state.all_affinities.len(), 3);
    }

    #[test]
    fn modify_event_replaces_the_record_and_an_identical_put_is_no_change() {
        let mut view = ready_view();
        assert!(view.apply(Source::Nodes, SyncEvent::Put(node_kv("b", "10.0.0.22/24"))));
        let b = view
            .state("a")
            .nodes
            .into_iter()
            .find(|n| n.name == "b")
            .unwrap();
        assert_eq!(b.ipv4_address, Some("10.0.0.22/24".parse().unwrap()));
        assert!(!view.apply(Source::Nodes, SyncEvent::Put(node_kv("b", "10.0.0.22/24"))));
    }

    #[test]
    fn delete_event_removes_the_record_and_an_unknown_key_is_no_change() {
        let mut view = ready_view();
        assert!(view.apply(Source::Nodes, delete(&keys::node("b"))));
        assert_eq!(node_names(&view), ["a"]);
        let cidr: IpNetwork = "10.65.0.64/26".parse().unwrap();
        assert!(view.apply(Source::Affinities, delete(&keys::affinity("b", &cidr))));
        assert_eq!(view.state("a").all_affinities.len(), 1);
        assert!(!view.apply(Source::Nodes, delete(&keys::node("zz"))));
    }

    #[test]
    fn snapshot_after_compaction_relists_one_source_and_keeps_the_others() {
        let mut view = ready_view();
        // The nodes' watch was compacted: its re-list replaces the nodes, nothing else.
        assert!(view.apply(Source::Nodes, snapshot(vec![node_kv("c", "10.0.0.3/24")])));
        assert_eq!(node_names(&view), ["c"]);
        assert_eq!(view.state("a").all_affinities.len(), 2);
        assert!(view.ready());
    }

    #[test]
    fn undecodable_record_is_left_out_and_the_one_it_replaces_stays() {
        let mut view = ready_view();
        assert!(!view.apply(Source::Nodes, put(&keys::node("b"), b"not json")));
        assert_eq!(node_names(&view), ["a", "b"]);
        assert!(!view.apply(Source::Config, put("config/bgpx", b"{}")));
        let config = BgpConfiguration {
            as_number: 65010,
            ..BgpConfiguration::default()
        };
        assert!(view.apply(Source::Config, put(keys::BGP_CONFIG, &encode_json(&config))));
        assert_eq!(view.state("a").config.as_number, 65010);
        assert!(view.apply(Source::Config, delete(keys::BGP_CONFIG)));
        assert_eq!(view.state("a").config, BgpConfiguration::default());
    }

    #[test]
    fn records_are_none_until_a_snapshot_then_follow_puts_and_deletes() {
        let mut records: Records<u32> = None;
        apply_event(&mut records, SyncEvent::Put(kv("a", b"1")), "number");
        assert_eq!(records, None, "nothing before the first full read");
        let snapshot = SyncEvent::Snapshot {
            kvs: vec![kv("a", &encode_json(&1)), kv("bad", b"not json")],
            revision: 2,
        };
        apply_event(&mut records, snapshot, "number");
        assert_eq!(records, Some([("a".to_string(), 1)].into()));
        apply_event(&mut records, SyncEvent::Put(kv("b", b"2")), "number");
        let delete = SyncEvent::Delete {
            key: "a".into(),
            mod_revision: 4,
        };
        apply_event(&mut records, delete, "number");
        assert_eq!(records, Some([("b".to_string(), 2)].into()));
        let empty = SyncEvent::Snapshot {
            kvs: vec![],
            revision: 5,
        };
        apply_event(&mut records, empty, "number");
        assert_eq!(records, Some(BTreeMap::new()));
    }
}
