//! The agent's data plane against a real kernel: workload and blackhole routes repaired after a
//! hand deletion (foreign routes untouched, stale proto-230 routes removed after the grace
//! period), natOutgoing seen from an external host, can-reach address detection, readiness.
//! A "node" is a network namespace running `routed` on embedded SQLite; its uplink goes to an
//! "external" namespace. Needs root and ROUTED_E2E=1.

mod common;

use common::{cni, run_ok, Agent, Netns, WAIT};
use routed::ipam::Ipam;
use routed::model::IpPool;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODE_IP: &str = "192.0.2.1";
const EXTERNAL_IP: &str = "192.0.2.254";

/// Polls every 20 ms: the repairs these tests wait for are quick.
fn poll(what: &str, deadline: Duration, check: impl FnMut() -> Result<(), String>) {
    common::poll_until(what, deadline, Duration::from_millis(20), check)
}

struct Lab {
    external: Netns,
    node: Netns,
    agent: Agent,
    url: String,
    conf: String,
    dir: tempfile::TempDir,
}

/// A node namespace (uplink 192.0.2.1/24, default route via the external host 192.0.2.254)
/// running routed with one pool.
async fn lab(test: &str, pool: IpPool, before_agent: impl FnOnce(&Netns)) -> Option<Lab> {
    if !common::require_e2e(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("routed.db").display());
    Ipam::new(common::open(&url).await)
        .create_pool(&pool)
        .await
        .unwrap();
    let external = Netns::new("rt-ext");
    let node = Netns::new("rt-dpn");
    node.exec_ok(&[
        "ip",
        "link",
        "add",
        "uplink",
        "type",
        "veth",
        "peer",
        "name",
        "down0",
        "netns",
        &external.name,
    ]);
    node.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "uplink",
    ]);
    node.exec_ok(&["ip", "link", "set", "uplink", "up"]);
    node.exec_ok(&["ip", "route", "add", "default", "via", EXTERNAL_IP]);
    external.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{EXTERNAL_IP}/24"),
        "dev",
        "down0",
    ]);
    external.exec_ok(&["ip", "link", "set", "down0", "up"]);
    before_agent(&node);
    let agent = Agent::start(&node, "node-1", &url, &format!("{NODE_IP}/24"), dir.path());
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"routed","type":"routed-cni","socket":"{}"}}"#,
        agent.socket.display()
    );
    Some(Lab {
        external,
        node,
        agent,
        url,
        conf,
        dir,
    })
}

/// A pod namespace wired by routed-cni; returns (pod, its address, its host veth).
fn add_pod(lab: &Lab, cid: &str) -> (Netns, String, String) {
    let pod = Netns::new("rt-dpp");
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", &pod.path()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    let (code, out) = cni(&lab.node, &env, &lab.conf);
    assert_eq!(code, 0, "ADD {cid}: {out}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ip = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_string();
    let veth = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    (pod, ip, veth)
}

fn agent_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.path().join("node-1.log")).unwrap_or_default()
}

fn routes(node: &Netns, proto: &str) -> String {
    node.exec(&["ip", "-4", "route", "show", "proto", proto]).1
}

/// Seconds since midnight of an `ip -ts monitor` line (`[2026-11-22T04:20:01.123456] ...`).
fn monitor_seconds(line: &str) -> Option<f64> {
    let time = line
        .strip_prefix('[')?
        .split(']')
        .next()?
        .split('T')
        .nth(1)?;
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The route `start_route_monitor` adds and deletes to see that the monitor listens.
const MONITOR_MARKER: &str = "100.64.0.99";

/// `ip -ts monitor route` in `node`, its lines sent to the returned channel as it prints them.
/// Returns once the monitor has reported a marker route (protocol 99, on lo): from then on it
/// sees every route event.
fn start_route_monitor(node: &Netns) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut monitor = Command::new("ip")
        .args(["netns", "exec", &node.name, "ip", "-ts", "monitor", "route"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ip monitor");
    let stdout = std::io::BufReader::new(monitor.stdout.take().expect("monitor stdout"));
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let marker = |verb: &str| {
        let marker = format!("{MONITOR_MARKER}/32");
        node.exec(&["ip", "route", verb, &marker, "dev", "lo", "proto", "99"]);
    };
    let mut seen = Vec::new();
    poll("ip monitor is listening", WAIT, || {
        marker("add");
        marker("del");
        seen.extend(lines.try_iter());
        match seen.iter().any(|l| l.contains(MONITOR_MARKER)) {
            true => Ok(()),
            false => Err(seen.join("\n")),
        }
    });
    (monitor, lines)
}

/// Deletes `route` by hand and waits until `present` sees it back; returns how long it took
/// as the test saw it (process start-up included) and prints what `ip -ts monitor route` saw
/// (deletion to re-add; its timestamps are taken when it reads each event).
fn delete_and_time_repair(node: &Netns, del: &[&str], present: impl Fn() -> bool) -> Duration {
    assert!(present(), "route must be present before the deletion");
    let (mut monitor, lines) = start_route_monitor(node);
    let start = Instant::now();
    node.exec_ok(del);
    poll(
        &format!("{del:?} repaired"),
        Duration::from_secs(10),
        || {
            if present() {
                Ok(())
            } else {
                Err("still missing".into())
            }
        },
    );
    let took = start.elapsed();
    // The monitor's view is printed, not asserted: read until it has reported the re-add (or,
    // at worst, for WAIT), then stop it.
    let mut seen: Vec<String> = Vec::new();
    let readded = |seen: &[String]| {
        seen.iter()
            .skip_while(|l| !l.contains("Deleted"))
            .any(|l| !l.contains("Deleted") && l.starts_with('['))
    };
    let until = Instant::now() + WAIT;
    while !readded(&seen) {
        match lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
            // The marker's events still in flight are not of interest.
            Ok(line) if line.contains(MONITOR_MARKER) => {}
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
    let text = seen.join("\n");
    let deleted = text.lines().find(|l| l.contains("Deleted"));
    let readded = deleted.and_then(|d| {
        text.lines()
            .skip_while(|l| *l != d)
            .find(|l| !l.contains("Deleted") && l.starts_with('['))
    });
    match (
        deleted.and_then(monitor_seconds),
        readded.and_then(monitor_seconds),
    ) {
        (Some(a), Some(b)) => eprintln!(
            "ip monitor view (stamped when ip reads each event, so bunched under load): {:.1} ms from\n  {}\nto\n  {}",
            (b - a) * 1000.0,
            deleted.unwrap_or_default(),
            readded.unwrap_or_default()
        ),
        _ => eprintln!("ip monitor saw:\n{text}"),
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_workload_and_blackhole_routes_come_back_and_foreign_routes_stay() {
    let mut pool = IpPool::new("pods", "10.77.0.0/16".parse().unwrap());
    pool.block_size = 26;
    let Some(lab) = lab(
        "deleted_workload_and_blackhole_routes_come_back_and_foreign_routes_stay",
        pool,
        |_| {},
    )
    .await
    else {
        return;
    };
    let (pod, ip, veth) = add_pod(&lab, "dp-route-a");
    let wl = format!("{ip} dev {veth} scope link");
    assert!(
        routes(&lab.node, "230").contains(&wl),
        "{}",
        routes(&lab.node, "230")
    );
    // Foreign routes, one of them a pod-like /32 in the pool range on the pod's veth, and a
    // proto-230 route nobody allocated (stale: removed after the grace period).
    lab.node.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.77.200.5/32",
        "dev",
        &veth,
        "proto",
        "99",
    ]);
    lab.node.exec_ok(&[
        "ip",
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        EXTERNAL_IP,
        "proto",
        "static",
    ]);
    lab.node.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.77.201.7/32",
        "dev",
        &veth,
        "proto",
        "230",
    ]);
    let stale_added = Instant::now();

    let took = delete_and_time_repair(
        &lab.node,
        &["ip", "route", "del", &format!("{ip}/32"), "dev", &veth],
        || routes(&lab.node, "230").contains(&wl),
    );
    eprintln!("workload route {ip}/32 repaired {took:?} after `ip route del`");
    lab.node.exec_ok(&["ping", "-c", "1", "-W", "2", &ip]);

    let blackhole = wait_for_blackhole(&lab.node);
    let took = delete_and_time_repair(
        &lab.node,
        &[
            "ip",
            "route",
            "del",
            "blackhole",
            &blackhole,
            "proto",
            "231",
        ],
        || routes(&lab.node, "231").contains(&format!("blackhole {blackhole}")),
    );
    eprintln!("blackhole {blackhole} repaired {took:?} after `ip route del`");

    // The stale proto-230 route goes after the grace period (30 s; resync every 10 s) ...
    poll(
        "stale proto-230 route removed",
        Duration::from_secs(90),
        || {
            let wl = routes(&lab.node, "230");
            if wl.contains("10.77.201.7") {
                Err(wl)
            } else {
                Ok(())
            }
        },
    );
    let waited = stale_added.elapsed();
    eprintln!("stale proto-230 route removed {waited:?} after it appeared");
    assert!(
        waited >= routed::agent::workloads::STALE_GRACE,
        "removed before the grace period: {waited:?}"
    );
    // ... while the foreign routes survived every resync in between, and the pod's stayed.
    let foreign = routes(&lab.node, "99");
    assert!(
        foreign.contains(&format!("10.77.200.5 dev {veth} scope link")),
        "{foreign}"
    );
    assert!(
        routes(&lab.node, "static").contains(&format!("198.51.100.0/24 via {EXTERNAL_IP}")),
        "{}",
        routes(&lab.node, "static")
    );
    assert!(routes(&lab.node, "230").contains(&wl));
    assert!(agent_log(&lab).contains("workload route (re)installed"));
    drop(pod);
}

fn wait_for_blackhole(node: &Netns) -> String {
    let mut found = String::new();
    poll("a blackhole for the local block", WAIT, || {
        let bh = routes(node, "231");
        match bh.lines().find_map(|l| {
            l.strip_prefix("blackhole ")
                .and_then(|r| r.split_whitespace().next())
        }) {
            Some(block) => {
                found = block.to_string();
                Ok(())
            }
            None => Err(bh),
        }
    });
    found
}

/// The packet counters of every rule of a chain, in order (rules without a counter are skipped).
fn counters(ns: &Netns, family: &str, table: &str, chain: &str) -> Vec<u64> {
    let out = ns.exec_ok(&["nft", "-j", "list", "chain", family, table, chain]);
    let listing: serde_json::Value = serde_json::from_str(&out).unwrap();
    listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .filter_map(|exprs| exprs.iter().find_map(|e| e["counter"]["packets"].as_u64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_outgoing_masquerades_only_traffic_leaving_the_pools() {
    let mut pool = IpPool::new("natpods", "10.78.0.0/16".parse().unwrap());
    pool.nat_outgoing = true;
    let Some(lab) = lab(
        "nat_outgoing_masquerades_only_traffic_leaving_the_pools",
        pool,
        |node| {
            node.exec_ok(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/rp_filter"]);
        },
    )
    .await
    else {
        return;
    };
    // Strict rp_filter was relaxed to loose, and /v1/node says so.
    assert_eq!(
        lab.node
            .exec_ok(&["cat", "/proc/sys/net/ipv4/conf/all/rp_filter"])
            .trim(),
        "2"
    );
    let client = routed::api::client::Client::new(&lab.agent.socket);
    let info: serde_json::Value = client.get("/v1/node").unwrap();
    assert_eq!(
        info["sysctls"]["net.ipv4.conf.all.rp_filter"], "2",
        "{info}"
    );
    assert_eq!(info["sysctls"]["net.ipv4.ip_forward"], "1", "{info}");

    // The external host counts echo requests by source: the node address, or a pod address.
    lab.external.exec_ok(&[
        "nft",
        &format!(
            "add table ip ext; add chain ip ext in {{ type filter hook input priority 0; policy accept; }}; \
             add rule ip ext in ip saddr {NODE_IP} icmp type echo-request counter; \
             add rule ip ext in ip saddr 10.78.0.0/16 icmp type echo-request counter"
        ),
    ]);
    let (pod_a, ip_a, _) = add_pod(&lab, "dp-nat-a");
    let (pod_b, ip_b, _) = add_pod(&lab, "dp-nat-b");
    poll("the NAT pool in nftables", WAIT, || {
        let sets = lab
            .node
            .exec(&["nft", "list", "set", "inet", "routed", "nat_pools_v4"])
            .1;
        if sets.contains("10.78.0.0/16") {
            Ok(())
        } else {
            Err(sets)
        }
    });

    // Pod to pod on the node: delivered, not masqueraded.
    let masq_before = counters(&lab.node, "inet", "routed", "postrouting");
    pod_a.exec_ok(&["ping", "-c", "2", "-W", "2", &ip_b]);
    pod_b.exec_ok(&["ping", "-c", "1", "-W", "2", &ip_a]);
    assert_eq!(
        counters(&lab.node, "inet", "routed", "postrouting"),
        masq_before,
        "pod-to-pod traffic hit the masquerade rule"
    );

    // Pod to the external host: masqueraded to the node address (the external host has no
    // route to the pods, so the reply only comes back because of NAT).
    pod_a.exec_ok(&["ping", "-c", "2", "-W", "2", EXTERNAL_IP]);
    let seen = counters(&lab.external, "ip", "ext", "in");
    assert!(
        seen[0] >= 2 && seen[1] == 0,
        "external host saw {seen:?} (node, pod)"
    );
    let masq = counters(&lab.node, "inet", "routed", "postrouting");
    assert!(masq[0] > masq_before[0], "masquerade counter {masq:?}");

    // natOutgoing off: the external host sees the pod address (with a route back to the pods).
    let (code, _, err) = common::run_routectl(
        &lab.url,
        &["pool", "set", "natpods", "--nat-outgoing", "false"],
    );
    assert_eq!(code, 0, "{err}");
    poll("the NAT pool removed from nftables", WAIT, || {
        let sets = lab
            .node
            .exec(&["nft", "list", "set", "inet", "routed", "nat_pools_v4"])
            .1;
        if sets.contains("10.78.0.0/16") || !sets.contains("nat_pools_v4") {
            Err(sets)
        } else {
            Ok(())
        }
    });
    lab.external
        .exec_ok(&["ip", "route", "add", "10.78.0.0/16", "via", NODE_IP]);
    pod_a.exec_ok(&["ping", "-c", "2", "-W", "2", EXTERNAL_IP]);
    let seen_after = counters(&lab.external, "ip", "ext", "in");
    assert_eq!(seen_after[0], seen[0], "still masqueraded: {seen_after:?}");
    assert!(seen_after[1] >= 2, "pod address not seen: {seen_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_reach_detection_picks_the_address_towards_the_target_and_readyz_reports_checks() {
    if !common::require_e2e("can_reach_detection_picks_the_address_towards_the_target") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("routed.db").display());
    Ipam::new(common::open(&url).await)
        .create_pool(&IpPool::new("pods", "10.79.0.0/16".parse().unwrap()))
        .await
        .unwrap();
    // Two uplinks; first-found would take eth0 (created first), the target is behind eth1.
    let far = Netns::new("rt-far");
    let node = Netns::new("rt-cr");
    for (dev, peer, addr, mtu) in [
        ("eth0", "f0", "192.0.2.10/24", "1500"),
        ("eth1", "f1", "198.51.100.10/24", "9000"),
    ] {
        node.exec_ok(&[
            "ip", "link", "add", dev, "mtu", mtu, "type", "veth", "peer", "name", peer, "netns",
            &far.name,
        ]);
        node.exec_ok(&["ip", "addr", "add", addr, "dev", dev]);
        node.exec_ok(&["ip", "link", "set", dev, "up"]);
        far.exec_ok(&["ip", "link", "set", peer, "mtu", mtu, "up"]);
    }
    node.exec_ok(&[
        "ip",
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.1",
    ]);
    let socket = dir.path().join("node-cr.sock");
    let log = std::fs::File::create(dir.path().join("node-cr.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &node.name])
        .arg(env!("CARGO_BIN_EXE_routed"))
        .args(["--node-name", "node-cr", "--datastore", &url, "--no-bgp"])
        .args(["--ip-autodetection", "can-reach=203.0.113.7", "--socket"])
        .arg(&socket)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let agent = Agent { child, socket };
    agent.wait_ready(dir.path(), "node-cr");

    let client = routed::api::client::Client::new(&agent.socket);
    let info: serde_json::Value = client.get("/v1/node").unwrap();
    assert_eq!(info["ipv4_address"], "198.51.100.10/24", "{info}");
    assert_eq!(info["address_detection"], "can-reach=203.0.113.7", "{info}");
    assert_eq!(info["interface"], "eth1", "{info}");
    assert_eq!(info["node_mtu"], 9000, "{info}");
    assert_eq!(info["pod_mtu"], 9000, "{info}");
    let listed = run_ok(
        common::routectl().to_str().unwrap(),
        &["--datastore", &url, "node", "list"],
    );
    let row = listed
        .lines()
        .find(|l| l.contains("node-cr"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains("198.51.100.10/24")
            && row.contains("can-reach=203.0.113.7")
            && row.contains("9000"),
        "{listed}"
    );

    // The pod MTU follows the pools: a VXLAN pool takes 50 bytes from it.
    let (code, _, err) = common::run_routectl(
        &url,
        &[
            "pool",
            "create",
            "vx",
            "--cidr",
            "10.80.0.0/16",
            "--vxlan-mode",
            "Always",
        ],
    );
    assert_eq!(code, 0, "{err}");
    poll("pod MTU minus VXLAN", WAIT, || {
        let info: serde_json::Value = client.get("/v1/node").map_err(|e| e.to_string())?;
        if info["pod_mtu"] == 8950 {
            Ok(())
        } else {
            Err(info.to_string())
        }
    });

    // readyz: JSON with per-check booleans.
    let ready: serde_json::Value = client.get("/readyz").unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    for check in ["datastore", "routes", "workload_routes", "nftables"] {
        assert_eq!(ready["checks"][check], true, "{check}: {ready}");
    }
    assert_eq!(ready["reasons"], serde_json::json!([]), "{ready}");
    // `routed health` for exec probes: 0 when ready/alive, 1 when the agent does not answer.
    let health = |args: &[&str], socket: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_routed"))
            .arg("health")
            .args(args)
            .arg("--socket")
            .arg(socket)
            .output()
            .unwrap()
    };
    let out = health(&["--ready"], &agent.socket);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"workload_routes\":true"));
    assert!(health(&[], &agent.socket).status.success());
    let gone = dir.path().join("no-such.sock");
    assert_eq!(health(&["--ready"], &gone).status.code(), Some(1));
    drop(agent);
}
