//! Decommission on a real SQLite store: what goes, what stays, refusal while alive, and a run
//! interrupted after each step and resumed.

use super::*;
use crate::datastore::{get_json, sqlite::SqliteStore};
use crate::ipam::AllocateRequest;
use crate::model::IpPool;
use std::net::IpAddr;
use std::sync::Arc;

struct Cluster {
    _dir: tempfile::TempDir,
    store: Arc<dyn Datastore>,
    ipam: Ipam,
    /// node-1's addresses.
    gone: Vec<IpAddr>,
    /// node-2's addresses.
    kept: Vec<IpAddr>,
}

async fn put<T: Serialize>(store: &dyn Datastore, key: &str, value: &T) {
    store.create(key, encode_json(value), 0).await.unwrap();
}

async fn allocate(ipam: &Ipam, node: &str, handle: &str) -> IpAddr {
    let mut req = AllocateRequest::new(node, handle, 1);
    req.attributes.insert("node".into(), node.into());
    ipam.allocate(&req).await.unwrap()[0].ip
}

/// Pool 10.1.0.0/16, node-1 and node-2 registered, three pods on node-1, two on node-2, a
/// peer for node-1 only and a global one.
async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let store: Arc<dyn Datastore> =
        Arc::new(SqliteStore::open(path.to_str().unwrap(), "/t/").unwrap());
    let ipam = Ipam::new(store.clone());
    ipam.create_pool(&IpPool::new("p", "10.1.0.0/16".parse().unwrap()))
        .await
        .unwrap();
    for name in ["node-1", "node-2"] {
        let node = Node {
            name: name.into(),
            ..Node::default()
        };
        put(store.as_ref(), &keys::node(name), &node).await;
    }
    for (name, node) in [("tor-1", Some("node-1")), ("tor-all", None)] {
        let peer = BgpPeer {
            name: name.into(),
            peer_ip: Some("192.0.2.1".parse().unwrap()),
            as_number: 65001,
            node: node.map(str::to_string),
            ..BgpPeer::default()
        };
        put(store.as_ref(), &keys::peer(name), &peer).await;
    }
    let mut gone = Vec::new();
    for i in 0..3 {
        gone.push(allocate(&ipam, "node-1", &format!("pod-1-{i}")).await);
    }
    let mut kept = Vec::new();
    for i in 0..2 {
        kept.push(allocate(&ipam, "node-2", &format!("pod-2-{i}")).await);
    }
    Cluster {
        _dir: dir,
        store,
        ipam,
        gone,
        kept,
    }
}

/// node-1 is gone without a trace; node-2 and the global peer are untouched; check is clean.
async fn assert_decommissioned(c: &Cluster) {
    let store = c.store.as_ref();
    assert!(store.get(&keys::node("node-1")).await.unwrap().is_none());
    assert!(store.get(&keys::node("node-2")).await.unwrap().is_some());
    assert!(store.get(&keys::peer("tor-1")).await.unwrap().is_none());
    assert!(store.get(&keys::peer("tor-all")).await.unwrap().is_some());
    assert!(store.get(&marker_key("node-1")).await.unwrap().is_none());
    assert!(store
        .list(&keys::affinities_of("node-1"))
        .await
        .unwrap()
        .kvs
        .is_empty());
    let held: Vec<IpAddr> = c
        .ipam
        .allocations_of_node("node-2")
        .await
        .unwrap()
        .iter()
        .map(|a| a.ip)
        .collect();
    assert_eq!(held, c.kept);
    assert!(c
        .ipam
        .allocations_of_node("node-1")
        .await
        .unwrap()
        .is_empty());
    for block in c.ipam.show(None).await.unwrap() {
        assert_ne!(block.affinity.as_deref(), Some("node-1"), "{block:?}");
    }
    let report = c.ipam.check().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
}

#[tokio::test]
async fn decommission_releases_addresses_blocks_peers_and_the_record() {
    let c = cluster().await;
    let done = c
        .ipam
        .decommission_node("node-1", false, None)
        .await
        .unwrap();
    assert_eq!(done.peers_removed, ["tor-1"]);
    assert_eq!(done.addresses_released, 3);
    assert!(done.node_record_removed && !done.resumed);
    assert_decommissioned(&c).await;
    // Its addresses can be handed out again: no block holds them, so any node may claim it.
    for block in c.ipam.show(None).await.unwrap() {
        assert!(
            !c.gone.iter().any(|ip| block.cidr.contains(*ip)),
            "{block:?} still there"
        );
    }
}

#[tokio::test]
async fn an_interrupted_decommission_is_finished_by_the_next_run() {
    for step in [
        Step::Marked,
        Step::PeersRemoved,
        Step::NodeRemoved,
        Step::AddressesReleased,
        Step::BlocksReleased,
    ] {
        let c = cluster().await;
        c.ipam
            .decommission_node("node-1", false, Some(step))
            .await
            .unwrap();
        assert!(
            c.store.get(&marker_key("node-1")).await.unwrap().is_some(),
            "{step:?}: marker missing"
        );
        let done = c
            .ipam
            .decommission_node("node-1", false, None)
            .await
            .unwrap();
        assert!(done.resumed, "{step:?}");
        assert_decommissioned(&c).await;
    }
}

#[tokio::test]
async fn a_node_whose_agent_answers_is_kept_unless_forced() {
    let c = cluster().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = BgpConfiguration {
        listen_port: port,
        ..BgpConfiguration::default()
    };
    put(c.store.as_ref(), keys::BGP_CONFIG, &config).await;
    crate::datastore::update_json::<Node, std::convert::Infallible>(
        c.store.as_ref(),
        &keys::node("node-1"),
        |n| {
            Ok(n.map(|mut n| {
                n.ipv4_address = Some("127.0.0.1/8".parse().unwrap());
                n
            }))
        },
    )
    .await
    .unwrap();
    let err = c
        .ipam
        .decommission_node("node-1", false, None)
        .await
        .unwrap_err();
    assert!(matches!(err, DecommissionError::Alive { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    let (node, _) = get_json::<Node>(c.store.as_ref(), &keys::node("node-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        node.name, "node-1",
        "a refused decommission changed the record"
    );
    c.ipam
        .decommission_node("node-1", true, None)
        .await
        .unwrap();
    assert_decommissioned(&c).await;
    drop(listener);
}

#[tokio::test]
async fn an_unknown_node_is_not_found() {
    let c = cluster().await;
    let err = c
        .ipam
        .decommission_node("node-9", false, None)
        .await
        .unwrap_err();
    assert!(matches!(err, DecommissionError::NotFound { .. }), "{err}");
}
