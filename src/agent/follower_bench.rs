//! The datastore-at-scale benchmark of the follower (`routectl bench follower`) and the
//! synthetic cluster it runs on, shared with the etcd test of reads per unrelated change.
//!
//! ```text
//!  seed_cluster: N Node records + K block affinities each (batched transactions), and the
//!  topology: Calico's for large clusters (mesh off, the last two nodes reflectors, every node
//!  peering with them by selector) or the default full mesh
//!        v
//!  CountingStore ──> spawn_follow_cluster(node-00000) ── join: time and reads to the first state
//!        v
//!  C changes elsewhere (written around the counter): node address, new affinity, deleted
//!  affinity, IPAM block ── then a marker label on node-00000 itself, awaited in the view
//!        v
//!  reads, process CPU and the follower's own busy time for the C changes
//! ```

use super::calc;
use super::follower::{first_state, spawn_follow_cluster, FollowerStats};
use crate::datastore::counting::CountingStore;
use crate::datastore::{encode_json, Datastore, Op, Txn};
use crate::model::{keys, AffinityState, BgpConfiguration, BgpPeer, BlockAffinity, Node};
use anyhow::{bail, Context, Result};
use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Puts per transaction while seeding (etcd allows 128 operations per transaction).
const SEED_BATCH: usize = 100;

/// The name of synthetic node `index`.
pub fn node_name(index: usize) -> String {
    format!("node-{index:05}")
}

/// How the synthetic cluster peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// The default BGP configuration: every node peers with every other.
    Mesh,
    /// Calico's configuration for large clusters: mesh off, the last two nodes route
    /// reflectors (label `route-reflector`), every node peering with them by selector.
    Reflectors,
}

/// The label that makes a synthetic node a reflector's peer.
pub const REFLECTOR_LABEL: &str = "route-reflector";

/// Whether synthetic node `index` of `nodes` is a reflector in [`Topology::Reflectors`].
pub fn is_reflector(index: usize, nodes: usize) -> bool {
    nodes >= 4 && index + 2 >= nodes
}

/// Synthetic node `index`: an address in 100.64.0.0/10.
pub fn synthetic_node(index: usize, generation: u32) -> Node {
    let host = 0x6440_0000u32 + 1 + index as u32 + generation * 0x0001_0000;
    Node {
        name: node_name(index),
        ipv4_address: Ipv4Network::new(Ipv4Addr::from(host), 10)
            .ok()
            .map(IpNetwork::V4),
        ..Node::default()
    }
}

/// Synthetic node `index` of `nodes` as [`Topology::Reflectors`] has it.
pub fn reflector_topology_node(index: usize, nodes: usize, generation: u32) -> Node {
    let mut node = synthetic_node(index, generation);
    if is_reflector(index, nodes) {
        node.rr_cluster_id = Some(Ipv4Addr::new(224, 0, 0, 1));
        node.labels.insert(REFLECTOR_LABEL.into(), "true".into());
    }
    node
}

/// The BGP configuration and peers of [`Topology::Reflectors`].
pub fn reflector_records() -> (BgpConfiguration, BgpPeer) {
    let config = BgpConfiguration {
        node_to_node_mesh: false,
        ..BgpConfiguration::default()
    };
    let peer = BgpPeer {
        name: "peer-with-reflectors".into(),
        node_selector: Some("all()".into()),
        peer_selector: Some(format!("has({REFLECTOR_LABEL})")),
        ..BgpPeer::default()
    };
    (config, peer)
}

/// Writes the topology's records: for reflectors the configuration, the peer and the two
/// reflector nodes (over their plain synthetic records); nothing for the mesh.
pub async fn seed_topology(store: &dyn Datastore, topology: Topology, nodes: usize) -> Result<()> {
    if topology == Topology::Mesh {
        return Ok(());
    }
    let (config, peer) = reflector_records();
    let mut ops = vec![
        Op::put(keys::BGP_CONFIG, encode_json(&config)),
        Op::put(keys::peer(&peer.name), encode_json(&peer)),
    ];
    for index in (0..nodes).filter(|i| is_reflector(*i, nodes)) {
        let node = reflector_topology_node(index, nodes, 0);
        ops.push(Op::put(keys::node(&node.name), encode_json(&node)));
    }
    write_all(store, ops).await
}

/// Block `block` of synthetic node `index`, a /26 in 10.0.0.0/8.
pub fn synthetic_block(index: usize, block: usize, blocks: usize) -> IpNetwork {
    let base = 0x0a00_0000u32 + ((index * blocks + block) as u32) * 64;
    let addr = Ipv4Addr::from(base);
    let block = Ipv4Network::new(addr, 26).unwrap_or_else(|_| Ipv4Network::from(addr));
    IpNetwork::V4(block)
}

fn affinity_put(index: usize, cidr: &IpNetwork) -> Op {
    let affinity = BlockAffinity {
        state: AffinityState::Confirmed,
    };
    Op::put(
        keys::affinity(&node_name(index), cidr),
        encode_json(&affinity),
    )
}

/// Writes `nodes` Node records with `blocks` confirmed affinities each.
pub async fn seed_cluster(store: &dyn Datastore, nodes: usize, blocks: usize) -> Result<()> {
    let mut ops = Vec::with_capacity(SEED_BATCH);
    for index in 0..nodes {
        let node = synthetic_node(index, 0);
        ops.push(Op::put(keys::node(&node.name), encode_json(&node)));
        for block in 0..blocks {
            ops.push(affinity_put(index, &synthetic_block(index, block, blocks)));
        }
        if ops.len() >= SEED_BATCH {
            write_all(store, std::mem::take(&mut ops)).await?;
        }
    }
    write_all(store, ops).await
}

async fn write_all(store: &dyn Datastore, ops: Vec<Op>) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let txn = Txn {
        success: ops,
        ..Txn::default()
    };
    store.txn(txn).await.context("seeding the cluster")?;
    Ok(())
}

/// The `change`-th change somewhere else in the cluster (never on node 0): a node's address,
/// a new affinity, that affinity deleted, a write to an IPAM block the follower does not read.
pub fn change_elsewhere(change: usize, nodes: usize, blocks: usize) -> Op {
    let index = 1 + (change / 4) % nodes.saturating_sub(1).max(1);
    let extra = synthetic_block(index, blocks + change / 4, blocks + 1_000_000);
    match change % 4 {
        0 => {
            let node = synthetic_node(index, 1 + (change / 4) as u32 % 8);
            Op::put(keys::node(&node.name), encode_json(&node))
        }
        1 => affinity_put(index, &extra),
        2 => Op::delete(keys::affinity(&node_name(index), &extra)),
        _ => Op::put(keys::block(&extra), b"{}".to_vec()),
    }
}

/// Figures of one run (one JSON object per run with `-o json`).
#[derive(Debug, Clone, Serialize)]
pub struct FollowerBenchReport {
    pub datastore: String,
    pub topology: Topology,
    pub nodes: usize,
    pub blocks_per_node: usize,
    pub changes: usize,
    /// Time from the follower's start to its first full cluster state.
    pub join_ms: f64,
    /// Then calc on that state (peers, local and originated blocks): what the agent computes
    /// before it configures the speaker.
    pub join_calc_ms: f64,
    pub join_reads: u64,
    /// Datastore round trips of the follower during the changes (and the marker).
    pub reads: u64,
    pub reads_per_change: f64,
    /// This process's CPU time during the changes (the writes included), per 100 changes.
    pub cpu_ms_per_100: f64,
    /// The follower's own time applying events and building states, per 100 changes.
    pub follower_ms_per_100: f64,
    /// Full reads of a prefix after the first five (compaction or a lost watch).
    pub relists: u64,
    /// Cluster states built during the changes (the marker's not counted): changes that
    /// matter to this node.
    pub states_built: u64,
    /// Records copied into those states, per change: the work that grows with the cluster.
    pub records_per_change: f64,
}

/// This process's user + system CPU time (from /proc/self/stat, in USER_HZ = 100 ticks/s).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces): utime and stime are 12th, 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// What one run does: the cluster's size and topology, the changes, whether to seed.
#[derive(Debug, Clone, Copy)]
pub struct BenchSpec {
    pub nodes: usize,
    pub blocks: usize,
    pub changes: usize,
    pub topology: Topology,
    /// Write the synthetic cluster first (false: the datastore already holds it).
    pub seed: bool,
}

/// Node 0 with the marker label: a change of this node's own record, which always reaches
/// its state (changes elsewhere may not: they need not).
fn marker_node(spec: &BenchSpec, marker: Option<&str>) -> Node {
    let mut node = match spec.topology {
        Topology::Mesh => synthetic_node(0, 0),
        Topology::Reflectors => reflector_topology_node(0, spec.nodes, 0),
    };
    if let Some(marker) = marker {
        node.labels.insert("bench-marker".into(), marker.into());
    }
    node
}

/// Seeds the cluster (unless `spec.seed` is false), joins as node 0 and makes the changes
/// elsewhere, counting the follower's reads and the states it builds.
pub async fn run(store: Arc<dyn Datastore>, spec: BenchSpec) -> Result<FollowerBenchReport> {
    let BenchSpec {
        nodes,
        blocks,
        changes,
        ..
    } = spec;
    if nodes < 2 {
        bail!("--nodes must be at least 2 (one agent and the rest of the cluster)");
    }
    if spec.seed {
        seed_cluster(store.as_ref(), nodes, blocks).await?;
        seed_topology(store.as_ref(), spec.topology, nodes).await?;
    }
    let counting = Arc::new(CountingStore::new(store.clone()));
    let stats = Arc::new(FollowerStats::default());
    let began = Instant::now();
    let mut view = spawn_follow_cluster(counting.clone(), node_name(0), stats.clone());
    let first = first_state(&mut view)
        .await
        .context("the follower ended before its first read")?;
    let join = began.elapsed();
    let join_reads = counting.round_trips();
    let join_calc = calc_once(&first, &node_name(0));
    let busy_before = stats.busy_micros.load(Ordering::Relaxed);
    let published_before = stats.published.load(Ordering::Relaxed);
    let records_before = stats.records_built.load(Ordering::Relaxed);
    let cpu_before = process_cpu();
    for change in 0..changes {
        store
            .txn(txn_of(change_elsewhere(change, nodes, blocks)))
            .await?;
    }
    // The markers, one per watch that the changes went through, each awaited in the view: a
    // label on this node's record, then an affinity of its own (both matter here). Their two
    // states are not the changes'.
    let marker = format!("{}", std::process::id());
    let me = marker_node(&spec, Some(&marker));
    let block = marker_block();
    store
        .txn(txn_of(Op::put(keys::node(&me.name), encode_json(&me))))
        .await?;
    wait_state(&mut view, |s| {
        s.nodes
            .iter()
            .any(|n| n.name == me.name && n.labels.get("bench-marker") == Some(&marker))
    })
    .await?;
    store.txn(txn_of(affinity_put(0, &block))).await?;
    let last = wait_state(&mut view, |s| s.affinities.iter().any(|(b, _)| *b == block)).await?;
    let cpu = process_cpu().saturating_sub(cpu_before);
    let busy = stats.busy_micros.load(Ordering::Relaxed) - busy_before;
    let marker_records = 2
        * (last.nodes.len() + last.peers.len() + last.pools.len() + last.all_affinities.len())
            as u64;
    let states_built =
        (stats.published.load(Ordering::Relaxed) - published_before).saturating_sub(2);
    let records = (stats.records_built.load(Ordering::Relaxed) - records_before)
        .saturating_sub(marker_records);
    let unmarked = marker_node(&spec, None);
    let restore = Txn {
        success: vec![
            Op::put(keys::node(&me.name), encode_json(&unmarked)),
            Op::delete(keys::affinity(&me.name, &block)),
        ],
        ..Txn::default()
    };
    store.txn(restore).await?;
    let reads = counting.round_trips() - join_reads;
    let per_100 = 100.0 / changes.max(1) as f64;
    Ok(FollowerBenchReport {
        datastore: store.describe(),
        topology: spec.topology,
        nodes,
        blocks_per_node: blocks,
        changes,
        join_ms: join.as_secs_f64() * 1000.0,
        join_calc_ms: join_calc.as_secs_f64() * 1000.0,
        join_reads,
        reads,
        reads_per_change: reads as f64 / changes.max(1) as f64,
        cpu_ms_per_100: cpu.as_secs_f64() * 1000.0 * per_100,
        follower_ms_per_100: busy as f64 / 1000.0 * per_100,
        relists: stats.snapshots.load(Ordering::Relaxed).saturating_sub(5),
        states_built,
        records_per_change: records as f64 / changes.max(1) as f64,
    })
}

/// The time calc takes on the first state: this node's peers and blocks.
fn calc_once(state: &calc::ClusterState, me: &str) -> Duration {
    let began = Instant::now();
    let node = state.nodes.iter().find(|n| n.name == me).cloned();
    let peers = node
        .map(|n| calc::desired_peers(&n, state))
        .unwrap_or_default();
    let blocks = calc::originated_blocks(state).len() + calc::local_blocks(state).len();
    std::hint::black_box((peers, blocks));
    began.elapsed()
}

/// The marker affinity of node 0 (outside the synthetic blocks).
fn marker_block() -> IpNetwork {
    let net = Ipv4Network::new(Ipv4Addr::new(198, 18, 0, 0), 26)
        .unwrap_or_else(|_| Ipv4Network::from(Ipv4Addr::new(198, 18, 0, 0)));
    IpNetwork::V4(net)
}

/// Waits (at most 120 s) for a published state that satisfies `seen`.
async fn wait_state(
    view: &mut tokio::sync::watch::Receiver<Option<Arc<calc::ClusterState>>>,
    seen: impl FnMut(&calc::ClusterState) -> bool,
) -> Result<Arc<calc::ClusterState>> {
    let mut seen = seen;
    let wait = view.wait_for(|state| state.as_ref().is_some_and(|s| seen(s)));
    let state = tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .context("the follower did not see the changes within 120 s")?
        .context("the follower ended")?;
    state.clone().context("no state")
}

fn txn_of(op: Op) -> Txn {
    Txn {
        success: vec![op],
        ..Txn::default()
    }
}
