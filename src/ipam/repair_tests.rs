//! Leak scans and repair on a real SQLite store, and the property that repair never frees a
//! live pod's address, whatever happens between its scans and its release.

use super::*;
use crate::datastore::{encode_json, sqlite::SqliteStore, Datastore};
use crate::ipam::AllocateRequest;
use crate::model::{IpPool, Node};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

async fn ipam() -> (tempfile::TempDir, Ipam) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let store: Arc<dyn Datastore> =
        Arc::new(SqliteStore::open(path.to_str().unwrap(), "/t/").unwrap());
    let ipam = Ipam::new(store);
    ipam.create_pool(&IpPool::new("p", "10.2.0.0/16".parse().unwrap()))
        .await
        .unwrap();
    (dir, ipam)
}

async fn register(ipam: &Ipam, node: &str) {
    let record = Node {
        name: node.into(),
        ..Node::default()
    };
    let key = keys::node(node);
    if ipam.store.get(&key).await.unwrap().is_none() {
        ipam.store
            .create(&key, encode_json(&record), 0)
            .await
            .unwrap();
    }
}

async fn unregister(ipam: &Ipam, node: &str) {
    if let Some(kv) = ipam.store.get(&keys::node(node)).await.unwrap() {
        ipam.store.delete(&kv.key, kv.mod_revision).await.unwrap();
    }
}

/// The grace period of the property test's repairs (time does not pass in it: every
/// allocation is younger than this when a GC list lacks it).
const GRACE: Duration = Duration::from_secs(60);

/// Allocates one address for `handle` on `node`, with the attributes the agent writes.
async fn allocate(ipam: &Ipam, node: &str, handle: &str) -> IpAddr {
    let mut req = AllocateRequest::new(node, handle, 1);
    req.attributes.insert("node".into(), node.into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    req.attributes.insert(ALLOCATED_AT.into(), now.to_string());
    ipam.allocate(&req).await.unwrap()[0].ip
}

#[tokio::test]
async fn check_names_the_leaks_of_a_vanished_node_and_repair_fixes_them() {
    let (_dir, ipam) = ipam().await;
    register(&ipam, "node-1").await;
    register(&ipam, "node-2").await;
    let live = allocate(&ipam, "node-1", "pod-live").await;
    allocate(&ipam, "node-2", "pod-gone-a").await;
    allocate(&ipam, "node-2", "pod-gone-b").await;
    assert!(ipam.check().await.unwrap().is_clean());
    unregister(&ipam, "node-2").await; // node-2 vanished without a decommission
    let report = ipam.check().await.unwrap();
    let kinds: Vec<FindingKindName> = report.findings.iter().map(|f| f.kind.into()).collect();
    assert!(
        kinds.contains(&FindingKindName::Allocation),
        "{:?}",
        report.findings
    );
    assert!(
        kinds.contains(&FindingKindName::Affinity),
        "{:?}",
        report.findings
    );
    assert!(report
        .findings
        .iter()
        .any(|f| f.message.contains("pod-gone-a")));
    let dry = ipam.repair(Duration::ZERO, true).await.unwrap();
    assert_eq!(dry.leaked_handles.len(), 2);
    assert!(dry.released_handles.is_empty());
    assert!(
        !ipam.check().await.unwrap().is_clean(),
        "a dry run repaired"
    );
    let done = ipam.repair(Duration::ZERO, false).await.unwrap();
    assert_eq!(done.addresses_released, 2);
    assert_eq!(done.nodes_cleaned, ["node-2"]);
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let held: Vec<IpAddr> = ipam
        .allocations_of_node("node-1")
        .await
        .unwrap()
        .iter()
        .map(|a| a.ip)
        .collect();
    assert_eq!(held, [live]);
}

#[tokio::test]
async fn a_leak_seen_once_is_left_alone_and_a_returning_node_keeps_its_addresses() {
    let (_dir, ipam) = ipam().await;
    register(&ipam, "node-1").await;
    register(&ipam, "node-2").await;
    allocate(&ipam, "node-2", "pod-a").await;
    let before = ipam.leak_scan().await.unwrap();
    unregister(&ipam, "node-2").await;
    let after = ipam.leak_scan().await.unwrap();
    // Seen in the second scan only: not confirmed.
    let report = ipam
        .repair_confirmed(&before, &after, false, Duration::ZERO)
        .await
        .unwrap();
    assert!(report.released_handles.is_empty(), "{report:?}");
    // Seen twice, but the node registers again before the release: the re-check keeps it.
    let again = ipam.leak_scan().await.unwrap();
    register(&ipam, "node-2").await;
    let report = ipam
        .repair_confirmed(&after, &again, false, Duration::ZERO)
        .await
        .unwrap();
    assert!(report.released_handles.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 2, "{report:?}");
    assert_eq!(ipam.allocations_of_node("node-2").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_empty_block_of_a_live_node_is_reclaimable_and_repair_gives_it_back() {
    let (_dir, ipam) = ipam().await;
    register(&ipam, "node-1").await;
    allocate(&ipam, "node-1", "pod-a").await;
    ipam.release_handle("pod-a").await.unwrap();
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean());
    assert_eq!(report.reclaimable_blocks.len(), 1);
    let done = ipam.repair(Duration::ZERO, false).await.unwrap();
    assert_eq!(done.empty_blocks_released, report.reclaimable_blocks);
    assert!(ipam.show(None).await.unwrap().is_empty());
    assert!(ipam.check().await.unwrap().is_clean());
}

/// Finding kinds this file asserts on.
#[derive(Debug, PartialEq, Eq)]
enum FindingKindName {
    Allocation,
    Affinity,
    Other,
}

impl From<crate::ipam::FindingKind> for FindingKindName {
    fn from(k: crate::ipam::FindingKind) -> Self {
        match k {
            crate::ipam::FindingKind::AllocationOfMissingNode => FindingKindName::Allocation,
            crate::ipam::FindingKind::AffinityOfMissingNode => FindingKindName::Affinity,
            _ => FindingKindName::Other,
        }
    }
}

/// Something that happens to the cluster while a repair is under way.
#[derive(Debug, Clone)]
enum Event {
    /// A pod starts on node i (the node registers first if it has to: an agent runs there).
    Pod(usize),
    /// Node i's record goes (the node vanished).
    Vanish(usize),
    /// Node i registers (again).
    Register(usize),
    /// The pod j (mod the pods so far) is deleted the normal way.
    Delete(usize),
    /// A pod ADD on node i whose container dies before the runtime records it (a killed ADD):
    /// its address is allocated, no container holds it.
    Crash(usize),
    /// CNI GC on node i, listing its running pods; racing: without the pods started since the
    /// node's previous GC (their ADD may have raced the list: it was computed before them).
    Gc(usize, bool),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..3usize).prop_map(Event::Pod),
        (0..3usize).prop_map(Event::Vanish),
        (0..3usize).prop_map(Event::Register),
        (0..8usize).prop_map(Event::Delete),
        (0..3usize).prop_map(Event::Crash),
        (0..3usize, any::<bool>()).prop_map(|(i, racing)| Event::Gc(i, racing)),
    ]
}

/// The pods running: (node, handle, address); and how many were ever started.
#[derive(Default)]
struct Pods {
    running: Vec<(String, String, IpAddr)>,
    started: usize,
    /// node → handles started there since its last CNI GC.
    since_gc: BTreeMap<String, BTreeSet<String>>,
}

/// The CNI GC of `node` (see [`Event::Gc`]).
async fn gc(ipam: &Ipam, node: &str, racing: bool, pods: &mut Pods) {
    let recent = pods.since_gc.remove(node).unwrap_or_default();
    let valid = pods
        .running
        .iter()
        .filter(|(n, h, _)| n == node && !(racing && recent.contains(h)))
        .map(|(_, h, _)| h.clone())
        .collect();
    let scope = crate::ipam::attachments::GcScope {
        prefix: "pod-".into(),
        network: None,
        valid,
    };
    ipam.cni_gc(node, &scope).await.unwrap();
}

/// Runs `events` against the cluster; records each pod's (node, handle, address).
async fn play(ipam: &Ipam, events: &[Event], pods: &mut Pods) {
    for e in events {
        match e {
            Event::Pod(i) | Event::Crash(i) => {
                let node = format!("node-{i}");
                register(ipam, &node).await;
                pods.started += 1;
                let handle = format!("pod-{}", pods.started);
                let ip = allocate(ipam, &node, &handle).await;
                let since = pods.since_gc.entry(node.clone()).or_default();
                since.insert(handle.clone());
                if matches!(e, Event::Pod(_)) {
                    pods.running.push((node, handle, ip));
                }
            }
            Event::Gc(i, racing) => gc(ipam, &format!("node-{i}"), *racing, pods).await,
            Event::Vanish(i) => unregister(ipam, &format!("node-{i}")).await,
            Event::Register(i) => register(ipam, &format!("node-{i}")).await,
            Event::Delete(j) if !pods.running.is_empty() => {
                let (_, handle, _) = pods.running.remove(j % pods.running.len());
                ipam.release_handle(&handle).await.unwrap();
            }
            Event::Delete(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever happens before, between and after the two scans (pods started, deleted and
    /// killed mid-ADD, nodes vanishing and returning, CNI GCs, some racing an ADD): every pod
    /// whose node has its record when the repair releases keeps its address, through the GCs
    /// and the repair.
    #[test]
    fn repair_never_frees_the_address_of_a_live_pod(
        before in proptest::collection::vec(event(), 0..8),
        between in proptest::collection::vec(event(), 0..8),
        after in proptest::collection::vec(event(), 0..8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (_dir, ipam) = ipam().await;
            register(&ipam, "node-0").await;
            let mut pods = Pods::default();
            play(&ipam, &before, &mut pods).await;
            let first = ipam.leak_scan().await.unwrap();
            play(&ipam, &between, &mut pods).await;
            let second = ipam.leak_scan().await.unwrap();
            play(&ipam, &after, &mut pods).await;
            ipam.repair_confirmed(&first, &second, false, GRACE).await.unwrap();
            for (node, handle, ip) in &pods.running {
                if ipam.store.get(&keys::node(node)).await.unwrap().is_none() {
                    continue; // its node is gone: a leak, fair game
                }
                let held: Vec<IpAddr> = ipam.allocations_of_node(node).await.unwrap().iter()
                    .filter(|a| &a.handle == handle).map(|a| a.ip).collect();
                assert_eq!(held, [*ip], "live pod {handle} on {node} lost {ip}");
            }
        });
    }
}
