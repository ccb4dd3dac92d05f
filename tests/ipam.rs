//! IPAM behaviour against real stores: contention across processes (SQLite) and clients (etcd),
//! exhaustion, borrowing rules, stale sequence numbers, disabled pools, rollback, `check`.

mod common;

use routed::datastore::{encode_json, Datastore};
use routed::ipam::{bench, AllocateRequest, FindingKind, Ipam, IpamError};
use routed::model::{keys, AffinityState, Block, BlockAffinity, Handle, IpPool, IpamConfig};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const WORKERS: usize = 8;
const PER_WORKER: usize = 125; // 3 × 8 × 125 = 3,000 addresses

async fn pool(ipam: &Ipam, name: &str, cidr: &str, block_size: u8) {
    let mut p = IpPool::new(name, cidr.parse().unwrap());
    p.block_size = block_size;
    ipam.create_pool(&p).await.unwrap();
}

async fn alloc(
    ipam: &Ipam,
    node: &str,
    handle: &str,
) -> Result<Vec<routed::ipam::Allocated>, IpamError> {
    ipam.allocate(&AllocateRequest::new(node, handle, 1)).await
}

/// Every allocation is unique, and sits in a block affine to the node that asked for it.
async fn assert_contention_result(store: Arc<dyn Datastore>, expected: usize) {
    let blocks = store.list(keys::BLOCKS).await.unwrap();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for kv in &blocks.kvs {
        let block: Block = routed::datastore::decode_json(kv).unwrap();
        for (ordinal, allocation) in &block.allocations {
            let ip = block.ip_at(*ordinal).unwrap();
            assert!(seen.insert(ip), "{ip} handed out twice");
            let node = allocation.attributes.get("node").expect("node attribute");
            assert_eq!(
                block.affinity.as_ref(),
                Some(node),
                "{ip} for {node} sits in a block of another node"
            );
            *per_node.entry(node.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), expected, "allocated addresses");
    for node in NODES {
        assert_eq!(
            per_node.get(node).copied(),
            Some(WORKERS * PER_WORKER),
            "{node}"
        );
    }
    let report = Ipam::new(store).check().await.unwrap();
    assert!(
        report.is_clean(),
        "ipam check after allocation: {:#?}",
        report.findings
    );
}

async fn assert_all_free(store: Arc<dyn Datastore>) {
    let ipam = Ipam::new(store);
    let blocks = ipam.show(None).await.unwrap();
    assert!(!blocks.is_empty());
    assert_eq!(
        blocks.iter().map(|b| b.used).sum::<usize>(),
        0,
        "everything released"
    );
    let report = ipam.check().await.unwrap();
    assert!(
        report.is_clean(),
        "ipam check after release: {:#?}",
        report.findings
    );
    assert_eq!(report.handles, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_sqlite_separate_processes() {
    let (url, _dir) = common::sqlite_url();
    let store = common::open(&url).await;
    pool(&Ipam::new(store.clone()), "pods", "10.32.0.0/16", 26).await;
    let spawn_all = |extra: &'static str| {
        let mut children = Vec::new();
        for node in NODES {
            for w in 0..WORKERS {
                let child = Command::new(common::routectl())
                    .env("ROUTED_DATASTORE", &url)
                    .args(["bench", "ipam", "--node", node, "--workers", "1"])
                    .args([
                        "--count",
                        &PER_WORKER.to_string(),
                        "--handle-prefix",
                        &format!("{node}-{w}"),
                        extra,
                    ])
                    .args(["-o", "json"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn routectl");
                children.push(child);
            }
        }
        for mut child in children {
            assert!(child.wait().unwrap().success(), "a worker process failed");
        }
    };
    spawn_all("--keep");
    assert_contention_result(store.clone(), NODES.len() * WORKERS * PER_WORKER).await;
    spawn_all("--release-only");
    assert_all_free(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_etcd_concurrent_clients() {
    if !common::require_e2e("contention_etcd_concurrent_clients") {
        return;
    }
    let server = common::EtcdServer::start().await;
    let store = server.store().await;
    pool(&Ipam::new(store.clone()), "pods", "10.32.0.0/16", 26).await;
    let mut tasks = Vec::new();
    for node in NODES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            bench::bench_allocate(store, node, WORKERS, PER_WORKER, node, true, true)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_contention_result(store.clone(), NODES.len() * WORKERS * PER_WORKER).await;
    let mut tasks = Vec::new();
    for node in NODES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            bench::bench_release(store, WORKERS, PER_WORKER, node)
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_all_free(store).await;
}

async fn sqlite_ipam() -> (Ipam, tempfile::TempDir) {
    let (url, dir) = common::sqlite_url();
    (Ipam::new(common::open(&url).await), dir)
}

#[tokio::test]
async fn small_pool_exhaustion_is_a_clear_error() {
    let (ipam, _dir) = sqlite_ipam().await;
    pool(&ipam, "tiny", "10.9.0.0/28", 30).await; // 4 blocks of 4
    for i in 0..16 {
        alloc(&ipam, "n1", &format!("h{i}")).await.unwrap();
    }
    let err = alloc(&ipam, "n1", "h16").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err:?}");
    assert!(
        msg.contains("n1") && msg.contains("tiny (10.9.0.0/28)"),
        "{msg}"
    );
    // A request larger than what is left fails whole and keeps nothing.
    ipam.release_handle("h0").await.unwrap();
    ipam.release_handle("h1").await.unwrap();
    let err = ipam
        .allocate(&AllocateRequest::new("n1", "big", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }));
    let used: usize = ipam.show(None).await.unwrap().iter().map(|b| b.used).sum();
    assert_eq!(used, 14, "the partial allocation was rolled back");
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn borrowing_only_when_allowed() {
    let (ipam, _dir) = sqlite_ipam().await;
    pool(&ipam, "p", "10.9.0.0/28", 30).await;
    ipam.set_config(&IpamConfig {
        strict_affinity: false,
        max_blocks_per_host: 1,
    })
    .await
    .unwrap();
    let a = alloc(&ipam, "n1", "a0").await.unwrap()[0];
    for i in 0..4 {
        let got = alloc(&ipam, "n2", &format!("b{i}")).await.unwrap()[0];
        assert!(!got.borrowed, "n2 has room in its own block: no borrowing");
        assert_ne!(got.block, a.block);
    }
    // n2's one block is full and it may not claim another: it borrows from n1's block.
    let borrowed = alloc(&ipam, "n2", "b4").await.unwrap()[0];
    assert!(borrowed.borrowed);
    assert_eq!(borrowed.block, a.block);
    ipam.release_handle("b4").await.unwrap();
    // With strict affinity the same request fails and says why.
    ipam.set_config(&IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 1,
    })
    .await
    .unwrap();
    let fresh = Ipam::new(ipam.store().clone());
    let err = alloc(&fresh, "n2", "b5").await.unwrap_err().to_string();
    assert!(err.contains("strict_affinity"), "{err}");
    assert!(fresh.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn stale_sequence_cannot_free_a_reused_address() {
    let (ipam, _dir) = sqlite_ipam().await;
    pool(&ipam, "one-block", "10.9.9.0/30", 30).await;
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(alloc(&ipam, "n1", &format!("h{i}")).await.unwrap()[0]);
    }
    let first = got[0];
    ipam.release_ip(first.ip, Some(first.sequence))
        .await
        .unwrap();
    let reused = alloc(&ipam, "n1", "h-new").await.unwrap()[0];
    assert_eq!(
        reused.ip, first.ip,
        "the only free address is handed out again"
    );
    assert!(reused.sequence > first.sequence);
    // A late release naming the old sequence number is refused; the new holder keeps it.
    let err = ipam
        .release_ip(first.ip, Some(first.sequence))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::StaleSequence { current, .. } if current == reused.sequence),
        "{err:?}"
    );
    let block = ipam.show(None).await.unwrap();
    assert_eq!(block[0].used, 4);
    let released = ipam
        .release_ip(first.ip, Some(reused.sequence))
        .await
        .unwrap();
    assert_eq!(released.handle, "h-new");
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn disabled_pools_are_not_allocated_from() {
    let (ipam, _dir) = sqlite_ipam().await;
    pool(&ipam, "a", "10.1.0.0/24", 26).await;
    pool(&ipam, "b", "10.2.0.0/24", 26).await;
    ipam.update_pool("a", |p| p.disabled = true).await.unwrap();
    for i in 0..10 {
        let got = alloc(&ipam, "n1", &format!("h{i}")).await.unwrap()[0];
        assert!(
            got.ip.to_string().starts_with("10.2."),
            "{} came from a disabled pool",
            got.ip
        );
    }
    ipam.update_pool("b", |p| p.disabled = true).await.unwrap();
    let err = alloc(&ipam, "n1", "none").await.unwrap_err();
    assert!(matches!(err, IpamError::NoPools { .. }), "{err:?}");
    // A stale allocator (its cache still says "enabled") is stopped by the pool revision compare.
    let other = Ipam::new(ipam.store().clone());
    ipam.update_pool("b", |p| p.disabled = false).await.unwrap();
    alloc(&other, "n1", "warm").await.unwrap();
    ipam.update_pool("b", |p| p.disabled = true).await.unwrap();
    assert!(matches!(
        alloc(&other, "n1", "stale").await,
        Err(IpamError::NoPools { .. })
    ));
}

#[tokio::test]
async fn release_by_handle_is_idempotent_and_frees_every_block() {
    let (ipam, _dir) = sqlite_ipam().await;
    pool(&ipam, "p", "10.3.0.0/24", 30).await;
    let got = ipam
        .allocate(&AllocateRequest::new("n1", "multi", 6))
        .await
        .unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!(
        got.iter().map(|a| a.block).collect::<HashSet<_>>().len(),
        2,
        "spans two blocks of 4"
    );
    let freed = ipam.release_handle("multi").await.unwrap();
    assert_eq!(freed.len(), 6);
    assert!(ipam.release_handle("multi").await.unwrap().is_empty());
    assert!(ipam
        .release_handle("never-existed")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ipam.release_empty_blocks(Some("n1")).await.unwrap().len(),
        2
    );
    let report = ipam.check().await.unwrap();
    assert!(
        report.is_clean() && report.blocks == 0 && report.affinities == 0,
        "{report:?}"
    );
}

#[tokio::test]
async fn warm_allocation_costs_at_most_two_round_trips() {
    let (url, _dir) = common::sqlite_url();
    let store = common::open(&url).await;
    pool(&Ipam::new(store.clone()), "p", "10.4.0.0/16", 26).await;
    let (reports, _) = bench::bench_allocate(store, "n1", 1, 200, "rt", false, false)
        .await
        .unwrap();
    let allocate = &reports[0];
    assert_eq!(allocate.operations, 200);
    assert!(
        allocate.round_trips_per_op <= 2.0,
        "round trips per allocation: {}",
        allocate.round_trips_per_op
    );
    assert!(
        reports[1].round_trips_per_op <= 2.0,
        "round trips per release: {}",
        reports[1].round_trips_per_op
    );
}

/// Writes `block` and, when `claimed_by` names a node, that node's confirmed affinity for it.
async fn put_block(store: &Arc<dyn Datastore>, block: &Block, claimed_by: Option<&str>) {
    store
        .create(&keys::block(&block.cidr), encode_json(block), 0)
        .await
        .unwrap();
    if let Some(node) = claimed_by {
        put_affinity(store, node, &block.cidr).await;
    }
}

async fn put_affinity(store: &Arc<dyn Datastore>, node: &str, cidr: &ipnetwork::IpNetwork) {
    let confirmed = BlockAffinity {
        state: AffinityState::Confirmed,
    };
    store
        .create(&keys::affinity(node, cidr), encode_json(&confirmed), 0)
        .await
        .unwrap();
}

async fn put_handle(store: &Arc<dyn Datastore>, handle: &str, blocks: &[(&str, u32)]) {
    let mut record = Handle::new(handle);
    for (cidr, count) in blocks {
        record.add(&cidr.parse().unwrap(), *count);
    }
    store
        .create(&keys::handle(handle), encode_json(&record), 0)
        .await
        .unwrap();
}

/// A block of `cidr` affine to `node` with `count` addresses assigned to `handle`.
fn block_holding(cidr: &str, node: &str, handle: &str, count: usize) -> Block {
    let mut block = Block::new(cidr.parse().unwrap(), Some(node));
    block.assign(count, handle, &BTreeMap::new());
    block
}

/// One inconsistency of each kind `check` knows, each built from records written straight into
/// the store, each with its own block, node or handle: every kind is reported naming its record,
/// and nothing else is reported.
#[tokio::test]
async fn check_reports_every_kind_of_inconsistency() {
    let (ipam, _dir) = sqlite_ipam().await;
    let store = ipam.store().clone();
    pool(&ipam, "p", "10.5.0.0/16", 26).await;
    alloc(&ipam, "n1", "good").await.unwrap();
    assert!(ipam.check().await.unwrap().is_clean());

    // HandleDangling: a handle recording an address in a block that does not exist.
    put_handle(&store, "dangling", &[("10.5.200.0/26", 1)]).await;
    // BlockOutsidePools.
    put_block(
        &store,
        &Block::new("192.168.77.0/26".parse().unwrap(), None),
        None,
    )
    .await;
    // AffinityWithoutBlock.
    put_affinity(&store, "n9", &"10.5.100.0/26".parse().unwrap()).await;
    // BlockClaimedTwice: a block affine to n1 that n1 and n2 both claim.
    let shared = Block::new("10.5.50.0/26".parse().unwrap(), Some("n1"));
    put_block(&store, &shared, Some("n1")).await;
    put_affinity(&store, "n2", &shared.cidr).await;
    // BlocksOverlap and AddressInTwoHandles: 10.5.60.0 held by x in a /25 and by y in a /26.
    for (cidr, handle) in [("10.5.60.0/25", "x"), ("10.5.60.0/26", "y")] {
        put_block(&store, &block_holding(cidr, "n3", handle, 1), Some("n3")).await;
        put_handle(&store, handle, &[(cidr, 1)]).await;
    }
    // BlockCorrupt: ordinal 5 is neither free nor allocated.
    let mut corrupt = Block::new("10.5.70.0/26".parse().unwrap(), Some("n4"));
    corrupt.free.retain(|&ordinal| ordinal != 5);
    put_block(&store, &corrupt, Some("n4")).await;
    // HandleCountMismatch: the handle records 3 addresses, the block holds 2.
    let miscounted = block_holding("10.5.80.0/26", "n5", "miscounted", 2);
    put_block(&store, &miscounted, Some("n5")).await;
    put_handle(&store, "miscounted", &[("10.5.80.0/26", 3)]).await;
    // AllocationWithoutHandle: the block holds an address for a handle with no record.
    put_block(
        &store,
        &block_holding("10.5.90.0/26", "n6", "orphan", 1),
        Some("n6"),
    )
    .await;
    // BlockWithoutAffinity: affine to n7, which has no affinity record for it.
    let unclaimed = Block::new("10.5.110.0/26".parse().unwrap(), Some("n7"));
    put_block(&store, &unclaimed, None).await;

    use FindingKind::*;
    let expected: &[(FindingKind, &[&str])] = &[
        (AddressInTwoHandles, &["10.5.60.0 ", "x, y"]),
        (BlocksOverlap, &["10.5.60.0/25", "10.5.60.0/26"]),
        (
            BlockCorrupt,
            &["10.5.70.0/26", "ordinal 5 is neither free nor allocated"],
        ),
        (HandleDangling, &["handle dangling", "10.5.200.0/26"]),
        (
            HandleCountMismatch,
            &["handle miscounted records 3", "10.5.80.0/26", "holds 2"],
        ),
        (AllocationWithoutHandle, &["10.5.90.0/26", "handle orphan"]),
        (
            BlockClaimedTwice,
            &["block 10.5.50.0/26 is claimed by n1, n2"],
        ),
        (
            BlockClaimedTwice,
            &["node n2 claims block 10.5.50.0/26", "affine to n1"],
        ),
        (AffinityWithoutBlock, &["node n9", "10.5.100.0/26"]),
        (BlockWithoutAffinity, &["10.5.110.0/26", "affine to n7"]),
        (BlockOutsidePools, &["192.168.77.0/26"]),
    ];
    let report = ipam.check().await.unwrap();
    // A kind added to FindingKind breaks this match until it is listed here and planted above.
    let all_kinds = |kind: FindingKind| match kind {
        AddressInTwoHandles
        | BlocksOverlap
        | BlockCorrupt
        | HandleDangling
        | HandleCountMismatch
        | AllocationWithoutHandle
        | BlockClaimedTwice
        | AffinityWithoutBlock
        | BlockWithoutAffinity
        | BlockOutsidePools => kind,
        // Planted in src/ipam/repair_tests.rs and attachments_tests.rs: they need Node records,
        // which would make every record planted here (for nodes n1..n9 that no agent
        // registered) a leak as well.
        AllocationOfMissingNode | AffinityOfMissingNode | HandleWithoutContainer => kind,
    };
    let planted: HashSet<FindingKind> = expected.iter().map(|(kind, _)| all_kinds(*kind)).collect();
    assert_eq!(planted.len(), 10, "every kind is planted");
    for (kind, words) in expected {
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.kind == *kind && words.iter().all(|w| f.message.contains(w))),
            "no {kind:?} finding naming {words:?}: {:#?}",
            report.findings
        );
    }
    assert_eq!(
        report.findings.len(),
        expected.len(),
        "findings beyond the planted ones: {:#?}",
        report.findings
    );
}

#[tokio::test]
async fn pool_delete_is_refused_while_in_use_unless_forced() {
    let (ipam, _dir) = sqlite_ipam().await;
    pool(&ipam, "p", "10.6.0.0/24", 26).await;
    alloc(&ipam, "n1", "h1").await.unwrap();
    let err = ipam.delete_pool("p", false).await.unwrap_err().to_string();
    assert!(
        err.contains("1 allocated address") && err.contains("--force"),
        "{err}"
    );
    let done = ipam.delete_pool("p", true).await.unwrap();
    assert_eq!((done.blocks_removed, done.addresses_released), (1, 1));
    let report = ipam.check().await.unwrap();
    assert!(
        report.is_clean() && report.blocks == 0 && report.handles == 0,
        "{report:?}"
    );
}
