//! CNI GC records and the handles no container holds, on a real SQLite store.

use super::*;
use crate::datastore::{sqlite::SqliteStore, Datastore};
use crate::ipam::{AllocateRequest, FindingKind};
use crate::model::{IpPool, Node};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const NODE: &str = "node-1";

async fn ipam() -> (tempfile::TempDir, Ipam) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gc.db");
    let store: Arc<dyn Datastore> =
        Arc::new(SqliteStore::open(path.to_str().unwrap(), "/t/").unwrap());
    let ipam = Ipam::new(store);
    ipam.create_pool(&IpPool::new("p", "10.3.0.0/16".parse().unwrap()))
        .await
        .unwrap();
    let node = Node {
        name: NODE.into(),
        ..Node::default()
    };
    ipam.store
        .create(&keys::node(NODE), encode_json(&node), 0)
        .await
        .unwrap();
    (dir, ipam)
}

/// Allocates one address for the attachment `routed.<cid>.eth0` of network `routed`.
async fn pod(ipam: &Ipam, cid: &str) -> IpAddr {
    pod_with(ipam, cid, 1).await[0]
}

/// [`pod`] with `count` addresses.
async fn pod_with(ipam: &Ipam, cid: &str, count: usize) -> Vec<IpAddr> {
    pod_at(ipam, cid, count, None).await
}

/// [`pod_with`], recording `allocated_at` (Unix seconds) as the agent does when given.
async fn pod_at(ipam: &Ipam, cid: &str, count: usize, at: Option<u64>) -> Vec<IpAddr> {
    let mut req = AllocateRequest::new(NODE, &format!("routed.{cid}.eth0"), count);
    req.attributes.insert("node".into(), NODE.into());
    req.attributes.insert("network".into(), "routed".into());
    if let Some(at) = at {
        let key = crate::ipam::repair::ALLOCATED_AT;
        req.attributes.insert(key.into(), at.to_string());
    }
    ipam.allocate(&req)
        .await
        .unwrap()
        .iter()
        .map(|a| a.ip)
        .collect()
}

fn scope(valid: &[&str]) -> GcScope {
    GcScope {
        prefix: "routed.".into(),
        network: Some("routed".into()),
        valid: valid.iter().map(|c| format!("routed.{c}.eth0")).collect(),
    }
}

fn record(handle: &str, network: Option<&str>) -> AddressRecord {
    let mut attributes = BTreeMap::new();
    if let Some(n) = network {
        attributes.insert("network".to_string(), n.to_string());
    }
    AddressRecord {
        ip: "10.3.0.1".parse().unwrap(),
        handle: handle.into(),
        sequence: 1,
        attributes,
    }
}

fn handles(records: &[AddressRecord]) -> Vec<&str> {
    records.iter().map(|r| r.handle.as_str()).collect()
}

async fn unheld_findings(ipam: &Ipam) -> Vec<String> {
    let report = ipam.check().await.unwrap();
    report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::HandleWithoutContainer)
        .map(|f| f.message.clone())
        .collect()
}

#[test]
fn a_gc_releases_only_what_the_previous_gc_found_unheld_and_keeps_other_networks() {
    let held = [
        record("routed.valid.eth0", Some("routed")),
        record("routed.twice.eth0", Some("routed")),
        record("routed.once.eth0", None),
        record("routed.other.eth0", Some("net1")),
        record("ipip-tunnel-addr-node-1", None),
    ];
    let previous = CniGcRecord {
        unheld: ["routed.twice.eth0".to_string()].into(),
        ..CniGcRecord::default()
    };
    let plan = plan_gc(&held, &scope(&["valid"]), Some(&previous));
    assert_eq!(plan.release, ["routed.twice.eth0".to_string()].into());
    assert_eq!(handles(&plan.released), ["routed.twice.eth0"]);
    assert_eq!(plan.unheld, ["routed.once.eth0".to_string()].into());
    assert_eq!(
        handles(&plan.kept),
        ["routed.valid.eth0", "routed.other.eth0"]
    );
    // The first GC of a node releases nothing.
    let first = plan_gc(&held, &scope(&["valid"]), None);
    assert!(first.release.is_empty(), "{first:?}");
    assert_eq!(first.unheld.len(), 2);
}

#[tokio::test]
async fn check_names_a_handle_no_container_holds_and_repair_releases_it_whole() {
    let (_dir, ipam) = ipam().await;
    let live = pod(&ipam, "live").await;
    let dead = pod_with(&ipam, "dead", 2).await;
    let plan = ipam.cni_gc(NODE, &scope(&["live"])).await.unwrap();
    assert!(plan.release.is_empty(), "the first GC releases nothing");
    // A pod ADDed after the list arrived is not a leak.
    let late = pod(&ipam, "late").await;
    let named = unheld_findings(&ipam).await;
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(
        named[0].contains("routed.dead.eth0") && named[0].contains("(network routed, "),
        "{named:?}"
    );
    let dry = ipam.repair(Duration::ZERO, true).await.unwrap();
    assert_eq!(dry.handles_without_container.len(), 1, "{dry:?}");
    assert!(dry.released_handles.is_empty());
    let done = ipam.repair(Duration::ZERO, false).await.unwrap();
    assert_eq!(done.released_handles, ["routed.dead.eth0"], "{done:?}");
    assert_eq!(done.addresses_released, dead.len(), "both of its addresses");
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let mut held: Vec<IpAddr> = ipam
        .allocations_of_node(NODE)
        .await
        .unwrap()
        .iter()
        .map(|a| a.ip)
        .collect();
    held.sort();
    let mut want = vec![live, late];
    want.sort();
    assert_eq!(held, want, "the live and the late pod keep their addresses");
}

#[tokio::test]
async fn the_second_gc_releases_what_the_first_found_unheld_and_a_racing_add_survives() {
    let (_dir, ipam) = ipam().await;
    pod(&ipam, "live").await;
    pod(&ipam, "dead").await;
    // "racer" was ADDed after the runtime computed the first list, before it arrived.
    pod(&ipam, "racer").await;
    ipam.cni_gc(NODE, &scope(&["live"])).await.unwrap();
    assert_eq!(unheld_findings(&ipam).await.len(), 2);
    let plan = ipam.cni_gc(NODE, &scope(&["live", "racer"])).await.unwrap();
    assert_eq!(handles(&plan.released), ["routed.dead.eth0"]);
    assert!(plan.unheld.is_empty(), "{plan:?}");
    assert!(unheld_findings(&ipam).await.is_empty());
    let left: Vec<String> = ipam
        .allocations_of_node(NODE)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.handle)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"routed.racer.eth0".to_string()));
}

#[tokio::test]
async fn repair_skips_a_handle_a_newer_gc_lists_as_valid() {
    let (_dir, ipam) = ipam().await;
    pod(&ipam, "racer").await;
    ipam.cni_gc(NODE, &scope(&[])).await.unwrap();
    let first = ipam.leak_scan().await.unwrap();
    let second = ipam.leak_scan().await.unwrap();
    assert_eq!(second.unheld.len(), 1, "{second:?}");
    // Between the second scan and the release, the runtime lists the container.
    ipam.cni_gc(NODE, &scope(&["racer"])).await.unwrap();
    let report = ipam
        .repair_confirmed(&first, &second, false, Duration::ZERO)
        .await
        .unwrap();
    assert!(report.released_handles.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(ipam.allocations_of_node(NODE).await.unwrap().len(), 1);
}

/// The runtime computed the list, then "racer" was ADDed, then the list arrived: the list lacks
/// a live pod. Repair (grace 60 s) releases only handles allocated at least that long before
/// the list, so the racer keeps its address until the next GC lists it.
#[tokio::test]
async fn repair_leaves_a_handle_allocated_within_the_grace_period_before_the_list() {
    let (_dir, ipam) = ipam().await;
    let now = now_unix();
    pod_at(&ipam, "dead", 1, Some(now - 3_600)).await;
    pod_at(&ipam, "racer", 1, Some(now)).await;
    ipam.cni_gc(NODE, &scope(&[])).await.unwrap();
    let named = unheld_findings(&ipam).await;
    assert_eq!(named.len(), 2, "check names both: {named:?}");
    let first = ipam.leak_scan().await.unwrap();
    let second = ipam.leak_scan().await.unwrap();
    let grace = Duration::from_secs(60);
    let report = ipam
        .repair_confirmed(&first, &second, false, grace)
        .await
        .unwrap();
    assert_eq!(report.released_handles, ["routed.dead.eth0"], "{report:?}");
    assert!(
        report.skipped.len() == 1 && report.skipped[0].contains("routed.racer.eth0"),
        "{report:?}"
    );
    let left = ipam.allocations_of_node(NODE).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].handle, "routed.racer.eth0");
}

#[tokio::test]
async fn a_decommission_forgets_the_nodes_gc_records() {
    let (_dir, ipam) = ipam().await;
    pod(&ipam, "dead").await;
    ipam.cni_gc(NODE, &scope(&[])).await.unwrap();
    assert_eq!(ipam.cni_gc_records_of(NODE).await.unwrap().len(), 1);
    ipam.decommission_node(NODE, true, None).await.unwrap();
    assert!(ipam.cni_gc_records_of(NODE).await.unwrap().is_empty());
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn a_bad_network_name_is_refused() {
    let (_dir, ipam) = ipam().await;
    let mut bad = scope(&[]);
    bad.network = Some("a/b".into());
    let err = ipam.cni_gc(NODE, &bad).await.unwrap_err();
    assert!(matches!(err, IpamError::Invalid(_)), "{err}");
}
