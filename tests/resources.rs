//! `routectl apply/create/replace/get/delete` as a user runs them, on SQLite: a YAML file
//! applied, printed back by `get -o yaml` and applied again unchanged; each failure's message
//! and exit code (3 invalid document, 4 not found, 5 conflict/stale resourceVersion); a Calico
//! v3 file; `get -o wide` and kinds as calicoctl spells them; `node delete` and `ipam repair`.

mod common;

use common::run_routectl;

const PEERS: &str = "apiVersion: routed.io/v1
kind: BGPPeer
metadata:
  name: rack0
spec:
  peerIP: 192.0.2.1
  asNumber: 65001
---
apiVersion: routed.io/v1
kind: BGPPeer
metadata:
  name: rack1
spec:
  peerIP: 192.0.2.2
  asNumber: 65002
  node: node-1
";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn apply_get_yaml_round_trip_and_reapply_is_unchanged() {
    let (url, dir) = common::sqlite_url();
    let file = write(&dir, "peers.yaml", PEERS);
    let (code, out, err) = run_routectl(&url, &["apply", "-f", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "bgppeer rack0 created\nbgppeer rack1 created\n");
    let (code, yaml, err) = run_routectl(&url, &["get", "bgppeers", "-o", "yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(yaml.contains("resourceVersion"), "{yaml}");
    let printed = write(&dir, "printed.yaml", &yaml);
    let (code, out, _) = run_routectl(&url, &["apply", "-f", &printed]);
    assert_eq!(
        (code, out.as_str()),
        (0, "bgppeer rack0 unchanged\nbgppeer rack1 unchanged\n")
    );
    let (code, table, _) = run_routectl(&url, &["get", "BGPPeer", "-o", "wide"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("| NAME") && table.contains("PEER IP"),
        "{table}"
    );
    assert!(
        table.contains("rack1") && table.contains("node-1"),
        "{table}"
    );
}

#[test]
fn bad_documents_exit_3_naming_file_document_and_field_and_write_nothing() {
    let (url, dir) = common::sqlite_url();
    let bad = PEERS.replace("asNumber: 65002", "asNumber: lots");
    let file = write(&dir, "peers.yaml", &bad);
    let (code, _, err) = run_routectl(&url, &["apply", "-f", &file]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("peers.yaml: document 2 (BGPPeer rack1): spec.asNumber: invalid type"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    let (code, _, err) = run_routectl(&url, &["get", "bgppeer", "rack0"]);
    assert_eq!(
        code, 4,
        "document 1 was written although document 2 is bad: {err}"
    );
}

#[test]
fn create_of_an_existing_and_a_stale_resource_version_exit_5() {
    let (url, dir) = common::sqlite_url();
    let file = write(&dir, "peers.yaml", PEERS);
    assert_eq!(run_routectl(&url, &["create", "-f", &file]).0, 0);
    let (code, _, err) = run_routectl(&url, &["create", "-f", &file]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (_, yaml, _) = run_routectl(&url, &["get", "bgppeer", "rack0", "-o", "yaml"]);
    let edited = write(&dir, "edited.yaml", &yaml.replace("65001", "65009"));
    assert_eq!(run_routectl(&url, &["replace", "-f", &edited]).0, 0);
    // The same edit again carries the old resourceVersion now.
    let (code, _, err) = run_routectl(&url, &["apply", "-f", &edited]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("metadata.resourceVersion") && err.contains("stale"),
        "{err}"
    );
    let (code, _, err) = run_routectl(&url, &["delete", "bgppeer", "nope"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run_routectl(&url, &["delete", "-f", &file]).0, 0);
    assert_eq!(run_routectl(&url, &["get", "bgppeer", "rack1"]).0, 4);
}

#[test]
fn a_calico_file_applies_and_its_unsupported_fields_are_named() {
    let (url, dir) = common::sqlite_url();
    let calico = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
  resourceVersion: '912'
spec:
  cidr: 10.48.0.0/16
  ipipMode: Always
  natOutgoing: true
  nodeSelector: all()
";
    let file = write(&dir, "calico.yaml", calico);
    let (code, out, err) = run_routectl(&url, &["apply", "-f", &file]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, pools, _) = run_routectl(&url, &["pool", "list"]);
    assert!(
        pools.contains("10.48.0.0/16") && pools.contains("Always"),
        "{pools}"
    );
    let unsupported = calico.replace(
        "nodeSelector: all()",
        "nodeSelector: zone == 'a'\n  allowedUses: [Tunnel]",
    );
    let file = write(
        &dir,
        "calico2.yaml",
        &unsupported.replace("default-ipv4", "other"),
    );
    let (code, _, err) = run_routectl(&url, &["apply", "-f", &file]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("spec.nodeSelector: Calico field not supported"),
        "{err}"
    );
    assert!(
        err.contains("spec.allowedUses: Calico field not supported"),
        "{err}"
    );
}

#[test]
fn node_delete_of_an_unknown_node_exits_4_and_repair_dry_run_changes_nothing() {
    let (url, _dir) = common::sqlite_url();
    let (code, _, err) = run_routectl(&url, &["node", "delete", "ghost"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("node ghost not found"), "{err}");
    let (code, out, err) = run_routectl(
        &url,
        &["ipam", "repair", "--dry-run", "--grace-period", "0"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: 0 leaked handle(s)"), "{out}");
}
