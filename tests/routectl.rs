//! routectl as a user runs it: output formats, messages and exit codes (docs/operations.md,
//! "routectl exit codes": 0 ok, 1 failed or `ipam check` found something, 2 usage, 3 invalid
//! input, 4 not found, 5 conflict, 6 no address left, 7 datastore unavailable, 8 agent
//! unreachable).

mod common;

use common::run_routectl;

#[test]
fn pool_lifecycle_and_output_formats() {
    let (url, _dir) = common::sqlite_url();
    let (code, out, err) = run_routectl(
        &url,
        &[
            "pool",
            "create",
            "default",
            "--cidr",
            "10.244.0.0/16",
            "--nat-outgoing",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pool default created (10.244.0.0/16, blocks of /26)"),
        "{out}"
    );

    let (code, out, _) = run_routectl(&url, &["pool", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("| default | 10.244.0.0/16 | 26") && out.contains("| NAT OUTGOING |"),
        "{out}"
    );
    let (_, json, _) = run_routectl(&url, &["pool", "list", "-o", "json"]);
    let pools: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pools[0]["cidr"], "10.244.0.0/16");
    assert_eq!(pools[0]["nat_outgoing"], true);
    let (_, yaml, _) = run_routectl(&url, &["pool", "list", "-o", "yaml"]);
    assert!(
        yaml.contains("name: default") && yaml.contains("block_size: 26"),
        "{yaml}"
    );

    let (code, _, err) = run_routectl(
        &url,
        &["pool", "create", "inner", "--cidr", "10.244.8.0/24"],
    );
    assert_eq!(code, 3, "invalid input");
    assert!(
        err.contains("overlaps pool default") && err.contains("--cidr"),
        "{err}"
    );
    let (code, _, err) = run_routectl(
        &url,
        &[
            "pool",
            "create",
            "v6ipip",
            "--cidr",
            "fd00::/48",
            "--ipip-mode",
            "Always",
        ],
    );
    assert_eq!(code, 3, "invalid input");
    assert!(err.contains("IPIP cannot carry IPv6"), "{err}");
    let (code, _, err) = run_routectl(
        &url,
        &[
            "pool",
            "create",
            "both",
            "--cidr",
            "10.9.0.0/16",
            "--ipip-mode",
            "Always",
            "--vxlan-mode",
            "CrossSubnet",
        ],
    );
    assert_eq!(code, 3, "invalid input");
    assert!(err.contains("both set"), "{err}");

    let (code, _, _) = run_routectl(
        &url,
        &["pool", "set", "default", "--vxlan-mode", "CrossSubnet"],
    );
    assert_eq!(code, 0);
    let (_, json, _) = run_routectl(&url, &["pool", "list", "-o", "json"]);
    assert!(json.contains("\"vxlan_mode\": \"CrossSubnet\""), "{json}");
}

#[test]
fn ipam_allocate_show_release_check() {
    let (url, _dir) = common::sqlite_url();
    run_routectl(
        &url,
        &[
            "pool",
            "create",
            "p",
            "--cidr",
            "10.50.0.0/24",
            "--block-size",
            "28",
        ],
    );
    let (code, out, err) = run_routectl(
        &url,
        &[
            "ipam", "allocate", "--node", "n1", "--handle", "pod-1", "--count", "3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let ips: Vec<&str> = out.lines().collect();
    assert_eq!(ips.len(), 3);
    assert!(ips.iter().all(|ip| ip.starts_with("10.50.0.")), "{out}");

    let (code, out, _) = run_routectl(&url, &["ipam", "show", "--node", "n1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("| n1   | p    | 3    | 13   |") && out.contains("3 address(es) in use"),
        "{out}"
    );
    let (code, out, _) = run_routectl(&url, &["ipam", "check"]);
    assert_eq!(code, 0);
    assert!(out.contains("no inconsistency found"), "{out}");

    let (code, _, err) = run_routectl(&url, &["pool", "delete", "p"]);
    assert_eq!(code, 5, "conflict: the pool is in use");
    assert!(err.contains("--force"), "{err}");

    let (code, out, _) = run_routectl(&url, &["ipam", "release", "--ip", ips[0]]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("released {} (handle pod-1)", ips[0])),
        "{out}"
    );
    let (code, _, err) = run_routectl(&url, &["ipam", "release", "--ip", ips[0]]);
    assert_eq!(code, 4, "not found");
    assert!(err.contains("is not allocated"), "{err}");
    let (code, out, _) = run_routectl(&url, &["ipam", "release", "--handle", "pod-1"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, _) = run_routectl(&url, &["ipam", "release", "--empty-blocks"]);
    assert_eq!(code, 0);
    assert!(out.contains("released 1 empty block(s)"), "{out}");
    let (code, _, _) = run_routectl(&url, &["pool", "delete", "p"]);
    assert_eq!(code, 0);
}

#[test]
fn check_exits_1_when_inconsistent() {
    let (url, _dir) = common::sqlite_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = common::open(&url).await;
        let block = routed::model::Block::new("172.31.0.0/26".parse().unwrap(), None);
        store
            .create(
                "ipam/blocks/172.31.0.0-26",
                routed::datastore::encode_json(&block),
                0,
            )
            .await
            .unwrap();
    });
    let (code, out, _) = run_routectl(&url, &["ipam", "check"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("BlockOutsidePools") && out.contains("1 inconsistency"),
        "{out}"
    );
    let (code, json, _) = run_routectl(&url, &["ipam", "check", "-o", "json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["findings"][0]["kind"], "block-outside-pools");
}

#[test]
fn usage_errors_exit_2_and_each_failure_kind_its_own_code() {
    let (url, _dir) = common::sqlite_url();
    assert_eq!(run_routectl(&url, &["frobnicate"]).0, 2);
    assert_eq!(
        run_routectl(&url, &["pool", "create", "x"]).0,
        2,
        "missing --cidr"
    );
    assert_eq!(
        run_routectl(&url, &["ipam", "release"]).0,
        2,
        "nothing to release named"
    );
    let (code, _, err) = run_routectl(&url, &["pool", "create", "x", "--cidr", "10.0.0.0"]);
    assert_eq!(code, 3, "invalid input");
    assert!(
        err.contains("missing prefix length") && err.contains("(--cidr)"),
        "the message names the flag: {err}"
    );
    let (code, _, err) = run_routectl(&url, &["ipam", "allocate", "--node", "n1", "--handle", "h"]);
    assert_eq!(code, 6, "no address");
    assert!(
        err.contains("routectl pool create"),
        "no pool: the message says what to do: {err}"
    );
    let (code, _, err) = run_routectl("mysql://x", &["pool", "list"]);
    assert_eq!(code, 3, "invalid --datastore");
    assert!(
        err.contains("etcd://") && err.contains("sqlite:///"),
        "{err}"
    );
}

#[test]
fn node_list_shows_registered_nodes() {
    let (url, _dir) = common::sqlite_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = common::open(&url).await;
        let node = routed::model::Node {
            name: "node-1".into(),
            ipv4_address: Some("192.0.2.10/24".parse().unwrap()),
            address_detection: Some("interface=eth0".into()),
            mtu: Some(1500),
            ..Default::default()
        };
        store
            .create("nodes/node-1", routed::datastore::encode_json(&node), 0)
            .await
            .unwrap();
    });
    let (code, out, _) = run_routectl(&url, &["node", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("| node-1 | 192.0.2.10/24 |") && out.contains("interface=eth0"),
        "{out}"
    );
}

#[test]
fn unreachable_etcd_exits_7_with_a_clear_message() {
    // Port 1 on loopback: nothing listens there.
    let (code, _, err) = run_routectl("etcd://127.0.0.1:1", &["pool", "list"]);
    assert_eq!(code, 7, "datastore unavailable: {err}");
    assert!(
        err.contains("unavailable") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn peer_create_list_delete() {
    let (url, dir) = common::sqlite_url();
    let password_file = dir.path().join("tor.password");
    std::fs::write(&password_file, "s3cret\n").unwrap();
    let (code, out, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "tor-a",
            "--peer-ip",
            "192.0.2.1",
            "--as",
            "65001",
            "--node",
            "node-1",
            "--password-file",
            password_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("peer tor-a created (192.0.2.1 AS 65001, node specific)"),
        "{out}"
    );
    let (code, out, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "rr",
            "--peer-ip",
            "192.0.2.2",
            "--as",
            "64512",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("global"), "{out}");

    // The password is stored (trailing newline cut) but never printed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored: routed::model::BgpPeer = rt.block_on(async {
        let store = common::open(&url).await;
        let kv = store
            .get(&routed::model::keys::peer("tor-a"))
            .await
            .unwrap()
            .expect("peer stored");
        routed::datastore::decode_json(&kv).unwrap()
    });
    assert_eq!(stored.password.as_deref(), Some("s3cret"));
    assert_eq!(stored.node.as_deref(), Some("node-1"));

    let (code, out, _) = run_routectl(&url, &["peer", "list"]);
    assert_eq!(code, 0);
    let row = |name: &str| {
        out.lines()
            .find(|l| l.contains(&format!("| {name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("tor-a"),
        [
            "tor-a",
            "192.0.2.1",
            "65001",
            "node specific",
            "node-1",
            "md5"
        ],
        "{out}"
    );
    assert_eq!(
        row("rr"),
        ["rr", "192.0.2.2", "64512", "global", "(all)", "-"],
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    let (_, json, _) = run_routectl(&url, &["peer", "list", "-o", "json"]);
    assert!(!json.contains("s3cret"), "{json}");
    let peers: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(peers.as_array().map(Vec::len), Some(2), "{json}");

    // Creating it again is refused with what to do; bad input is a failure, not a crash.
    let (code, _, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "rr",
            "--peer-ip",
            "192.0.2.3",
            "--as",
            "1",
        ],
    );
    assert_eq!(code, 5, "conflict");
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "zero",
            "--peer-ip",
            "192.0.2.4",
            "--as",
            "0",
        ],
    );
    assert_eq!(code, 3, "invalid input");
    assert!(
        err.contains("AS number 0") && err.contains("(--as)"),
        "{err}"
    );
    assert_eq!(
        run_routectl(&url, &["peer", "create", "x", "--as", "1"]).0,
        2,
        "missing --peer-ip"
    );

    let (code, out, err) = run_routectl(&url, &["peer", "delete", "tor-a"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("peer tor-a deleted"), "{out}");
    let (code, _, err) = run_routectl(&url, &["peer", "delete", "tor-a"]);
    assert_eq!(code, 4, "not found");
    assert!(err.contains("not found"), "{err}");
    let (_, out, _) = run_routectl(&url, &["peer", "list"]);
    assert!(!out.contains("tor-a") && out.contains("rr"), "{out}");
}

#[test]
fn config_set_as_and_mesh() {
    let (url, _dir) = common::sqlite_url();
    // Nothing stored yet: Calico's defaults.
    let (code, out, _) = run_routectl(&url, &["config", "get"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("as_number: 64512") && out.contains("node_to_node_mesh: on"),
        "{out}"
    );
    let (code, out, err) = run_routectl(&url, &["config", "set", "--as", "65100", "--mesh", "off"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("as_number: 65100") && out.contains("node_to_node_mesh: off"),
        "{out}"
    );
    let (_, json, _) = run_routectl(&url, &["config", "get", "-o", "json"]);
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(config["as_number"], 65100);
    assert_eq!(config["node_to_node_mesh"], false);
    // Changing one field keeps the others.
    let (code, _, _) = run_routectl(&url, &["config", "set", "--mesh", "on"]);
    assert_eq!(code, 0);
    let (_, json, _) = run_routectl(&url, &["config", "get", "-o", "json"]);
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(config["as_number"], 65100);
    assert_eq!(config["node_to_node_mesh"], true);
    assert_eq!(
        run_routectl(&url, &["config", "set", "--mesh", "maybe"]).0,
        2
    );
    let (code, _, err) = run_routectl(&url, &["config", "set", "--as", "0"]);
    assert_eq!(code, 3, "invalid input");
    assert!(
        err.contains("AS number 0") && err.contains("(--as)"),
        "{err}"
    );
}

#[test]
fn status_without_an_agent_exits_8_with_a_clear_message() {
    let (url, dir) = common::sqlite_url();
    let socket = dir.path().join("no-agent.sock");
    for format in ["table", "json"] {
        let (code, out, err) = run_routectl(
            &url,
            &["status", "--socket", socket.to_str().unwrap(), "-o", format],
        );
        assert_eq!(code, 8, "{format}: {out}");
        assert!(
            err.contains("routed is not running") && err.contains("no-agent.sock"),
            "{format}: {err}"
        );
    }
}

/// An agent stand-in on a unix socket: answers every connection with `status` and `body`.
fn fake_agent(socket: &std::path::Path, status: &str, body: String) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let status = status.to_string();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).unwrap();
    })
}

fn golden(name: &str) -> String {
    let path = format!(
        "{}/tests/golden/api/v1/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn status_json_prints_the_agents_bgp_status_unchanged() {
    let (url, dir) = common::sqlite_url();
    let socket = dir.path().join("agent.sock");
    let agent = fake_agent(&socket, "200 OK", golden("bgp-status"));
    let (code, out, err) = run_routectl(
        &url,
        &["status", "--socket", socket.to_str().unwrap(), "-o", "json"],
    );
    agent.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        golden("bgp-status"),
        "the -o json shape users script against"
    );
    let socket = dir.path().join("agent-table.sock");
    let agent = fake_agent(&socket, "200 OK", golden("bgp-status"));
    let (code, out, err) = run_routectl(&url, &["status", "--socket", socket.to_str().unwrap()]);
    agent.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("| 10.0.0.2     | node-to-node mesh                | up ")
            && out.contains("| rr client, cluster 1.0.0.1       |")
            && out.contains("IPv6 BGP status"),
        "{out}"
    );
}

#[test]
fn status_on_an_agent_without_bgp_exits_4() {
    let (url, dir) = common::sqlite_url();
    let socket = dir.path().join("agent.sock");
    let agent = fake_agent(&socket, "404 Not Found", golden("error-bgp-not-running"));
    let (code, _, err) = run_routectl(&url, &["status", "--socket", socket.to_str().unwrap()]);
    agent.join().unwrap();
    assert_eq!(code, 4, "not found: {err}");
    assert!(err.contains("BGP is not running on this node"), "{err}");
}

/// `routectl node label` / `node set` (issue 13): kubectl-style labels, the cluster ID, and
/// errors for bad labels and unknown nodes.
#[test]
fn node_label_and_rr_cluster_id() {
    let (url, _dir) = common::sqlite_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = common::open(&url).await;
        let node = routed::model::Node {
            name: "node-1".into(),
            ipv4_address: Some("192.0.2.10/24".parse().unwrap()),
            ..Default::default()
        };
        store
            .create("nodes/node-1", routed::datastore::encode_json(&node), 0)
            .await
            .unwrap();
    });
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (code, out, err) = run_routectl(&url, &all);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap()
    };
    let node = json(&["node", "label", "node-1", "route-reflector=true", "zone=a"]);
    assert_eq!(node["labels"]["route-reflector"], "true");
    assert_eq!(node["labels"]["zone"], "a");
    assert_eq!(node["ipv4_address"], "192.0.2.10/24", "other fields kept");
    let node = json(&["node", "label", "node-1", "zone-"]);
    assert!(node["labels"].get("zone").is_none(), "{node}");
    let node = json(&["node", "set", "node-1", "--rr-cluster-id", "1.0.0.1"]);
    assert_eq!(node["rr_cluster_id"], "1.0.0.1");
    assert_eq!(node["labels"]["route-reflector"], "true");
    let node = json(&["node", "set", "node-1", "--no-rr-cluster-id"]);
    assert!(node.get("rr_cluster_id").is_none(), "{node}");

    let (code, _, err) = run_routectl(&url, &["node", "label", "node-1", "zone"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("key=value"), "{err}");
    let (code, _, err) = run_routectl(&url, &["node", "label", "node-9", "a=b"]);
    assert_eq!(code, 4, "{err}");
    let (code, _, _) = run_routectl(&url, &["node", "set", "node-1", "--rr-cluster-id", "1.2.3"]);
    assert_eq!(code, 2);
    let (code, _, _) = run_routectl(&url, &["node", "set", "node-1"]);
    assert_eq!(
        code, 2,
        "one of --rr-cluster-id / --no-rr-cluster-id is required"
    );
}

/// `peer create --peer-selector / --node-selector` (issue 13): selectors are stored, a bad one
/// is refused with its column, and the address/selector and node/selector pairs exclude each
/// other.
#[test]
fn peer_create_with_selectors() {
    let (url, _dir) = common::sqlite_url();
    let (code, out, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "to-rr",
            "--as",
            "64512",
            "--node-selector",
            "all()",
            "--peer-selector",
            "route-reflector == 'true'",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("route-reflector == 'true' AS 64512, global"),
        "{out}"
    );
    let (_, json, _) = run_routectl(&url, &["peer", "list", "-o", "json"]);
    let peers: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(peers[0]["peer_selector"], "route-reflector == 'true'");
    assert_eq!(peers[0]["node_selector"], "all()");
    assert!(peers[0].get("peer_ip").is_none(), "{peers}");

    let (code, _, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "bad",
            "--as",
            "64512",
            "--peer-selector",
            "route-reflector = 'true'",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("column 17"), "{err}");
    let (code, _, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "bad",
            "--as",
            "1",
            "--peer-selector",
            "a == 'b",
            "--node",
            "n",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("unterminated") && err.contains("column 6"),
        "{err}"
    );
    let (code, _, _) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "bad",
            "--as",
            "1",
            "--peer-ip",
            "192.0.2.1",
            "--peer-selector",
            "all()",
        ],
    );
    assert_eq!(code, 2, "--peer-ip and --peer-selector exclude each other");
    let (code, _, _) = run_routectl(&url, &["peer", "create", "bad", "--as", "1"]);
    assert_eq!(code, 2, "one of --peer-ip / --peer-selector is required");
    let (code, _, _) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "bad",
            "--as",
            "1",
            "--peer-ip",
            "192.0.2.1",
            "--node",
            "n",
            "--node-selector",
            "all()",
        ],
    );
    assert_eq!(code, 2, "--node and --node-selector exclude each other");
}

#[test]
fn peer_create_stores_ttl_security_allowed_local_as_and_next_hop_mode() {
    let (url, _dir) = common::sqlite_url();
    let (code, _, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "tor-gtsm",
            "--peer-ip",
            "192.0.2.9",
            "--as",
            "65009",
            "--ttl-security",
            "1",
            "--num-allowed-local-as-numbers",
            "2",
            "--next-hop-mode",
            "Self",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, json, _) = run_routectl(&url, &["peer", "list", "-o", "json"]);
    assert_eq!(code, 0);
    let peers: serde_json::Value = serde_json::from_str(&json).unwrap();
    let peer = &peers[0];
    assert_eq!(
        (
            peer["ttl_security"].as_u64(),
            peer["num_allowed_local_as_numbers"].as_u64(),
            peer["next_hop_mode"].as_str()
        ),
        (Some(1), Some(2), Some("Self"))
    );
    // 0 hops is GTSM off; a mode outside auto|self|keep is a usage error.
    let (code, _, err) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "tor-plain",
            "--peer-ip",
            "192.0.2.10",
            "--as",
            "65010",
            "--ttl-security",
            "0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, json, _) = run_routectl(&url, &["peer", "list", "-o", "json"]);
    let peers: serde_json::Value = serde_json::from_str(&json).unwrap();
    let plain = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tor-plain")
        .unwrap();
    assert!(plain.get("ttl_security").is_none(), "{plain}");
    let (code, _, _) = run_routectl(
        &url,
        &[
            "peer",
            "create",
            "tor-bad",
            "--peer-ip",
            "192.0.2.11",
            "--as",
            "65011",
            "--next-hop-mode",
            "sometimes",
        ],
    );
    assert_eq!(code, 2);
}
