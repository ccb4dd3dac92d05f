//! Documents against a real SQLite store: round trips of every kind, each bad document's
//! message, Calico v3 documents, optimistic concurrency, dry runs.

use super::store::{self, Verb, WriteError};
use super::*;
use crate::datastore::{sqlite::SqliteStore, Datastore};
use std::sync::Arc;

fn store() -> (tempfile::TempDir, Arc<dyn Datastore>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resources.db");
    let store = SqliteStore::open(path.to_str().unwrap(), "/t/").unwrap();
    (dir, Arc::new(store))
}

/// Applies every document of `text`; panics on the first error.
async fn apply(store: &dyn Datastore, text: &str, verb: Verb) -> Vec<store::Outcome> {
    let prepared = prepare_all("test.yaml", text).unwrap_or_else(|e| panic!("{e:?}"));
    let mut out = Vec::new();
    for p in &prepared {
        match store::write(store, p, verb, false).await {
            Ok(o) => out.push(o),
            Err(e) => panic!("{e:?}"),
        }
    }
    out
}

/// `get KIND` as YAML, parsed back into documents (resourceVersion dropped).
async fn get_yaml(store: &dyn Datastore, kind: Kind) -> Vec<serde_json::Value> {
    let docs = store::read(store, kind, None).await.unwrap();
    let mut text = String::new();
    for d in &docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(d).unwrap());
    }
    normalise(&text)
}

fn normalise(text: &str) -> Vec<serde_json::Value> {
    parse_stream("x", text)
        .unwrap()
        .into_iter()
        .map(|(_, mut v)| {
            if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.remove("resourceVersion");
            }
            v
        })
        .collect()
}

const ROUND_TRIP: &[(Kind, &str)] = &[
    (
        Kind::IpPool,
        "apiVersion: routed.io/v1\nkind: IPPool\nmetadata:\n  name: default-ipv4\nspec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n  ipipMode: CrossSubnet\n  vxlanMode: Never\n  natOutgoing: true\n  disabled: false\n  disableBGPExport: false\n---\napiVersion: routed.io/v1\nkind: IPPool\nmetadata:\n  name: v6\nspec:\n  cidr: fd00:10::/48\n  blockSize: 122\n  ipipMode: Never\n  vxlanMode: Always\n  natOutgoing: false\n  disabled: true\n  disableBGPExport: true\n",
    ),
    (
        Kind::BgpPeer,
        "apiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: rack1\nspec:\n  peerIP: 192.0.2.1\n  peerPort: 1179\n  asNumber: 65001\n  node: node-1\n  holdTime: 9\n  keepaliveTime: 3\n  maxRestartTime: 120\n  bfd:\n    enabled: true\n    minRxMs: 100\n    minTxMs: 100\n    multiplier: 3\n  maxPrefixes: 1000\n  localASNumber: 65100\n  ttlSecurity: 1\n  numAllowedLocalASNumbers: 2\n  nextHopMode: Self\n---\napiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor6\nspec:\n  peerIP: 2001:db8::1\n  asNumber: 65002\n",
    ),
    (
        Kind::BgpConfiguration,
        "apiVersion: routed.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 65100\n  nodeToNodeMeshEnabled: false\n  listenPort: 1179\n  gracefulRestartTime: 60\n",
    ),
    (
        Kind::Node,
        "apiVersion: routed.io/v1\nkind: Node\nmetadata:\n  name: node-1\n  labels:\n    rack: r1\nspec:\n  ipv4Address: 192.0.2.10/24\n  ipv6Address: 2001:db8::10/64\n  asNumber: 65010\n  routeReflectorClusterID: 224.0.0.1\n  mtu: 1500\n",
    ),
    (
        Kind::IpamConfig,
        "apiVersion: routed.io/v1\nkind: IPAMConfig\nmetadata:\n  name: default\nspec:\n  strictAffinity: true\n  maxBlocksPerHost: 4\n",
    ),
];

#[tokio::test]
async fn every_kind_round_trips_apply_then_get_yaml() {
    let (_dir, store) = store();
    for (kind, text) in ROUND_TRIP {
        let outcomes = apply(store.as_ref(), text, Verb::Apply).await;
        assert!(outcomes
            .iter()
            .all(|o| o.action == "created" || o.action == "updated"));
        assert_eq!(
            get_yaml(store.as_ref(), *kind).await,
            normalise(text),
            "{kind:?}"
        );
        // What get printed applies back unchanged.
        let docs = store::read(store.as_ref(), *kind, None).await.unwrap();
        let again: String = docs
            .iter()
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
            .collect();
        let outcomes = apply(store.as_ref(), &again, Verb::Apply).await;
        assert!(
            outcomes.iter().all(|o| o.action == "unchanged"),
            "{outcomes:?}"
        );
    }
}

#[tokio::test]
async fn json_documents_and_lists_are_read_too() {
    let (_dir, store) = store();
    let text = r#"{"apiVersion":"routed.io/v1","kind":"List","items":[
        {"apiVersion":"routed.io/v1","kind":"bgppeers","metadata":{"name":"a"},"spec":{"peerIP":"192.0.2.1","asNumber":1}},
        {"apiVersion":"routed.io/v1","kind":"BGPPEER","metadata":{"name":"b"},"spec":{"peerIP":"192.0.2.2","asNumber":2}}]}"#;
    let outcomes = apply(store.as_ref(), text, Verb::Create).await;
    assert_eq!(outcomes.len(), 2);
    assert_eq!(
        store::read(store.as_ref(), Kind::BgpPeer, None)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// The error of the one document in `text` at prepare time.
fn prepare_error(text: &str) -> String {
    let errors = prepare_all("peers.yaml", text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].to_string()
}

const GOOD_PEER: &str =
    "apiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: rack0\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65001\n";

#[test]
fn bad_documents_name_file_document_and_field() {
    let wrong_type = format!("{GOOD_PEER}---\napiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: rack1\nspec:\n  peerIP: 192.0.2.1\n  asNumber: many\n");
    let e = prepare_error(&wrong_type);
    assert!(
        e.starts_with("peers.yaml: document 2 (BGPPeer rack1): spec.asNumber: invalid type"),
        "{e}"
    );
    let missing = "apiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: rack1\nspec:\n  peerIP: 192.0.2.1\n";
    assert_eq!(
        prepare_error(missing),
        "peers.yaml: document 1 (BGPPeer rack1): spec.asNumber: missing field (required)"
    );
    let unknown_kind =
        "apiVersion: routed.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\nspec: {}\n";
    let e = prepare_error(unknown_kind);
    assert!(
        e.starts_with("peers.yaml: document 1: kind: unknown kind \"NetworkPolicy\""),
        "{e}"
    );
    let unknown_field = "apiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: rack1\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 1\n  asNumbr: 2\n";
    let e = prepare_error(unknown_field);
    assert!(
        e.starts_with("peers.yaml: document 1 (BGPPeer rack1): spec.asNumbr: unknown field"),
        "{e}"
    );
    let invalid = "apiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: rack1\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 0\n";
    let e = prepare_error(invalid);
    assert!(
        e.starts_with("peers.yaml: document 1 (BGPPeer rack1): spec.asNumber: invalid AS number 0"),
        "{e}"
    );
    let no_name = "apiVersion: routed.io/v1\nkind: IPPool\nspec:\n  cidr: 10.0.0.0/16\n";
    assert!(prepare_error(no_name).contains("(IPPool): metadata.name: missing"));
    let bad_version = "apiVersion: v1\nkind: IPPool\nmetadata:\n  name: p\n";
    assert!(prepare_error(bad_version).contains("apiVersion: \"v1\" is not supported"));
    let bad_yaml = "apiVersion: [\n";
    assert!(prepare_error(bad_yaml).contains("not valid YAML"));
    let nested_typo = "apiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: rack1\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 1\n  bfd:\n    enabled: true\n    minRx: 100\n";
    let e = prepare_error(nested_typo);
    assert!(
        e.contains("(BGPPeer rack1): spec.bfd.minRx: unknown field"),
        "{e}"
    );
    let labels_on_pool = "apiVersion: routed.io/v1\nkind: IPPool\nmetadata:\n  name: p\n  labels: {a: b}\nspec:\n  cidr: 10.0.0.0/16\n";
    assert!(prepare_error(labels_on_pool).contains("metadata.labels: IPPool has no labels"));
}

#[test]
fn every_bad_document_of_a_file_is_reported() {
    let text = "apiVersion: routed.io/v1\nkind: Bogus\n---\napiVersion: routed.io/v1\nkind: BGPPeer\nmetadata:\n  name: b\nspec:\n  peerIP: x\n  asNumber: 1\n";
    let errors = prepare_all("f.yaml", text).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[1].field.as_deref(), Some("spec.peerIP"));
}

#[tokio::test]
async fn a_stale_resource_version_is_refused_and_the_current_one_accepted() {
    let (_dir, store) = store();
    let created = apply(store.as_ref(), GOOD_PEER, Verb::Create).await;
    let rv = created[0].resource_version.unwrap();
    let changed = |rv: i64| {
        GOOD_PEER
            .replace(
                "  name: rack0\n",
                &format!("  name: rack0\n  resourceVersion: \"{rv}\"\n"),
            )
            .replace("65001", "65009")
    };
    let updated = apply(store.as_ref(), &changed(rv), Verb::Apply).await;
    assert_eq!(updated[0].action, "updated");
    let stale = prepare_all("peers.yaml", &changed(rv)).unwrap();
    let stale = stale[0].clone();
    match store::write(store.as_ref(), &stale, Verb::Apply, false).await {
        Err(WriteError::Conflict(e)) => {
            let text = e.to_string();
            assert!(
                text.starts_with(
                    "peers.yaml: document 1 (BGPPeer rack0): metadata.resourceVersion:"
                ),
                "{text}"
            );
            assert!(text.contains("stale"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn create_replace_and_dry_run_keep_their_contracts() {
    let (_dir, store) = store();
    let p = prepare_all("p.yaml", GOOD_PEER).unwrap().remove(0);
    assert!(matches!(
        store::write(store.as_ref(), &p, Verb::Replace, false).await,
        Err(WriteError::NotFound(_))
    ));
    let dry = store::write(store.as_ref(), &p, Verb::Create, true)
        .await
        .unwrap();
    assert_eq!((dry.action, dry.dry_run), ("created", true));
    assert!(
        store.get(&p.key()).await.unwrap().is_none(),
        "a dry run wrote"
    );
    store::write(store.as_ref(), &p, Verb::Create, false)
        .await
        .unwrap();
    assert!(matches!(
        store::write(store.as_ref(), &p, Verb::Create, false).await,
        Err(WriteError::Conflict(_))
    ));
    let deleted = store::delete(store.clone(), Kind::BgpPeer, "rack0", None, true)
        .await
        .unwrap();
    assert!(deleted.dry_run);
    assert!(
        store.get(&p.key()).await.unwrap().is_some(),
        "a dry-run delete deleted"
    );
    store::delete(store.clone(), Kind::BgpPeer, "rack0", None, false)
        .await
        .unwrap();
    assert!(store.get(&p.key()).await.unwrap().is_none());
}

#[tokio::test]
async fn pools_keep_cidr_and_never_overlap() {
    let (_dir, store) = store();
    apply(store.as_ref(), ROUND_TRIP[0].1, Verb::Apply).await;
    let resized = ROUND_TRIP[0].1.replace("blockSize: 26", "blockSize: 28");
    let p = prepare_all("pools.yaml", &resized).unwrap().remove(0);
    match store::write(store.as_ref(), &p, Verb::Apply, false).await {
        Err(WriteError::Invalid(e)) => assert_eq!(e.field.as_deref(), Some("spec.blockSize")),
        other => panic!("{other:?}"),
    }
    let overlapping = "apiVersion: routed.io/v1\nkind: IPPool\nmetadata:\n  name: other\nspec:\n  cidr: 10.244.8.0/24\n";
    let p = prepare_all("pools.yaml", overlapping).unwrap().remove(0);
    match store::write(store.as_ref(), &p, Verb::Apply, false).await {
        Err(WriteError::Invalid(e)) => {
            assert!(e.to_string().contains("(IPPool other): spec.cidr: pool default-ipv4 (10.244.0.0/16) overlaps pool other"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // The block size defaults from the family when left out.
    assert_eq!(p.record.get("block_size"), Some(&serde_json::json!(26)));
}

#[tokio::test]
async fn passwords_are_masked_and_a_masked_password_keeps_the_stored_one() {
    let (_dir, store) = store();
    let with_password =
        GOOD_PEER.replace("asNumber: 65001\n", "asNumber: 65001\n  password: s3cret\n");
    apply(store.as_ref(), &with_password, Verb::Apply).await;
    let docs = store::read(store.as_ref(), Kind::BgpPeer, Some("rack0"))
        .await
        .unwrap();
    assert_eq!(
        docs[0].spec.get("password"),
        Some(&serde_json::json!(MASKED))
    );
    let again = serde_yaml::to_string(&docs[0])
        .unwrap()
        .replace("65001", "65002");
    apply(store.as_ref(), &again, Verb::Apply).await;
    let (peer, _) =
        crate::datastore::get_json::<crate::model::BgpPeer>(store.as_ref(), "bgppeers/rack0")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        (peer.password.as_deref(), peer.as_number),
        (Some("s3cret"), 65002)
    );
}

const CALICO: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
  resourceVersion: "81234"
  uid: 5f3c7a52-0000-4000-8000-000000000000
  creationTimestamp: "2024-01-01T00:00:00Z"
spec:
  cidr: 10.48.0.0/16
  blockSize: 26
  ipipMode: Always
  natOutgoing: true
  nodeSelector: all()
  allowedUses: [Workload, Tunnel]
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.0.2.1:1179
  asNumber: 64567
  node: node-1
  keepaliveTime: 30s
  maxRestartTime: 2m
  ttlSecurity: 1
  numAllowedLocalASNumbers: 1
  nextHopMode: Keep
  localASNumber: 64600
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-rr
spec:
  nodeSelector: rack == 'r1'
  peerSelector: has(route-reflector)
  asNumber: 63400
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: false
  asNumber: 63400
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-1
  labels:
    rack: r1
spec:
  bgp:
    ipv4Address: 192.0.2.10/24
    routeReflectorClusterID: 224.0.0.1
  ipv4VXLANTunnelAddr: 10.48.0.1
status: {}
"#;

#[tokio::test]
async fn calico_v3_documents_apply_with_the_fields_routed_supports() {
    let (_dir, store) = store();
    let outcomes = apply(store.as_ref(), CALICO, Verb::Apply).await;
    assert_eq!(outcomes.len(), 5);
    let get = |key: &'static str| {
        let store = store.clone();
        async move {
            let kv = store.get(key).await.unwrap().unwrap();
            serde_json::from_slice::<serde_json::Value>(&kv.value).unwrap()
        }
    };
    let pool = get("ippools/default-ipv4-ippool").await;
    assert_eq!(
        (pool["ipip_mode"].as_str(), pool["nat_outgoing"].as_bool()),
        (Some("Always"), Some(true))
    );
    let peer = get("bgppeers/rack1-tor").await;
    assert_eq!(peer["peer_ip"], "192.0.2.1");
    assert_eq!(peer["peer_port"], 1179);
    assert_eq!(
        (
            peer["keepalive_time"].as_u64(),
            peer["max_restart_time"].as_u64()
        ),
        (Some(30), Some(120))
    );
    assert_eq!(
        (
            peer["ttl_security"].as_u64(),
            peer["num_allowed_local_as_numbers"].as_u64(),
            peer["next_hop_mode"].as_str(),
            peer["local_as_number"].as_u64(),
        ),
        (Some(1), Some(1), Some("Keep"), Some(64600))
    );
    let rr = get("bgppeers/rack1-rr").await;
    assert_eq!(
        (rr["node_selector"].as_str(), rr["peer_selector"].as_str()),
        (Some("rack == 'r1'"), Some("has(route-reflector)"))
    );
    let config = get("config/bgp").await;
    assert_eq!(
        (
            config["as_number"].as_u64(),
            config["node_to_node_mesh"].as_bool()
        ),
        (Some(63400), Some(false))
    );
    let node = get("nodes/node-1").await;
    assert_eq!(node["ipv4_address"], "192.0.2.10/24");
    assert_eq!(node["rr_cluster_id"], "224.0.0.1");
    assert_eq!(node["labels"]["rack"], "r1");
}

#[test]
fn calico_fields_routed_does_not_support_are_each_named() {
    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 1\n  keepOriginalNextHop: true\n  password:\n    secretKeyRef: {name: s, key: k}\n";
    let e = prepare_error(text);
    assert!(
        e.contains("spec.keepOriginalNextHop: Calico field not supported by routed"),
        "{e}"
    );
    assert!(
        e.contains("spec.password: Calico field not supported"),
        "{e}"
    );
    let node = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-1\nspec: {}\n";
    assert!(prepare_error(node).contains("metadata.name: BGPConfiguration has one object only"));
}

#[test]
fn kinds_parse_like_calicoctl() {
    for (text, kind) in [
        ("ippools", Kind::IpPool),
        ("IPPool", Kind::IpPool),
        ("bgppeer", Kind::BgpPeer),
        ("BGPConfigurations", Kind::BgpConfiguration),
        ("bgpconfig", Kind::BgpConfiguration),
        ("Nodes", Kind::Node),
        ("ipamconfig", Kind::IpamConfig),
    ] {
        assert_eq!(Kind::parse(text), Some(kind), "{text}");
    }
    assert_eq!(Kind::parse("pods"), None);
}

/// Calico's route-reflector recipe as a document (issue 13): the selectors are kept as given.
#[tokio::test]
async fn calico_v3_peer_selectors_apply() {
    let (_dir, store) = store();
    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-route-reflectors\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n  asNumber: 64512\n";
    let outcomes = apply(store.as_ref(), text, Verb::Apply).await;
    assert_eq!(outcomes.len(), 1);
    let kv = store
        .get("bgppeers/peer-with-route-reflectors")
        .await
        .unwrap()
        .unwrap();
    let peer: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(peer["node_selector"], "all()");
    assert_eq!(peer["peer_selector"], "route-reflector == 'true'");
    assert!(peer.get("peer_ip").is_none(), "{peer}");
}
