//! The datastore-at-scale benchmark of the follower (`routectl bench follower`) and the
//! synthetic cluster it runs on, shared with the etcd test of reads per unrelated change.
//!
//! ```text
//!  seed_cluster: N Node records + K block affinities each (batched transactions)
//!        v
//!  CountingStore ──> spawn_follow_cluster(node-00000) ── join: time and reads to the first state
//!        v
//!  C changes elsewhere (written around the counter): node address, new affinity, deleted
//!  affinity, IPAM block ── then a marker node, awaited in the view
//!        v
//!  reads, process CPU and the follower's own busy time for the C changes
//! ```

use super::follower::{first_state, spawn_follow_cluster, FollowerStats};
use crate::datastore::counting::CountingStore;
use crate::datastore::{encode_json, Datastore, Op, Txn};
use crate::model::{keys, AffinityState, BlockAffinity, Node};
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
    pub nodes: usize,
    pub blocks_per_node: usize,
    pub changes: usize,
    /// Time from the follower's start to its first full cluster state.
    pub join_ms: f64,
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

/// Seeds the cluster (unless `seed` is false), joins as node 0 and makes `changes` changes
/// elsewhere, counting the follower's reads.
pub async fn run(
    store: Arc<dyn Datastore>,
    nodes: usize,
    blocks: usize,
    changes: usize,
    seed: bool,
) -> Result<FollowerBenchReport> {
    if nodes < 2 {
        bail!("--nodes must be at least 2 (one agent and the rest of the cluster)");
    }
    if seed {
        seed_cluster(store.as_ref(), nodes, blocks).await?;
    }
    let counting = Arc::new(CountingStore::new(store.clone()));
    let stats = Arc::new(FollowerStats::default());
    let began = Instant::now();
    let mut view = spawn_follow_cluster(counting.clone(), node_name(0), stats.clone());
    first_state(&mut view)
        .await
        .context("the follower ended before its first read")?;
    let join = began.elapsed();
    let join_reads = counting.round_trips();
    let busy_before = stats.busy_micros.load(Ordering::Relaxed);
    let cpu_before = process_cpu();
    for change in 0..changes {
        store
            .txn(txn_of(change_elsewhere(change, nodes, blocks)))
            .await?;
    }
    let marker = format!("bench-marker-{}", std::process::id());
    let node = Node {
        name: marker.clone(),
        ..Node::default()
    };
    store
        .txn(txn_of(Op::put(keys::node(&marker), encode_json(&node))))
        .await?;
    let seen = view.wait_for(|state| {
        state
            .as_ref()
            .is_some_and(|s| s.nodes.iter().any(|n| n.name == marker))
    });
    tokio::time::timeout(Duration::from_secs(120), seen)
        .await
        .context("the follower did not see the changes within 120 s")?
        .context("the follower ended")?;
    let cpu = process_cpu().saturating_sub(cpu_before);
    let busy = stats.busy_micros.load(Ordering::Relaxed) - busy_before;
    store.txn(txn_of(Op::delete(keys::node(&marker)))).await?;
    let reads = counting.round_trips() - join_reads;
    let per_100 = 100.0 / changes.max(1) as f64;
    Ok(FollowerBenchReport {
        datastore: store.describe(),
        nodes,
        blocks_per_node: blocks,
        changes,
        join_ms: join.as_secs_f64() * 1000.0,
        join_reads,
        reads,
        reads_per_change: reads as f64 / changes.max(1) as f64,
        cpu_ms_per_100: cpu.as_secs_f64() * 1000.0 * per_100,
        follower_ms_per_100: busy as f64 / 1000.0 * per_100,
        relists: stats.snapshots.load(Ordering::Relaxed).saturating_sub(5),
    })
}

fn txn_of(op: Op) -> Txn {
    Txn {
        success: vec![op],
        ..Txn::default()
    }
}
