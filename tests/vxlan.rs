//! VXLAN across two subnets. A router namespace joins subnet A (node-1, node-2) and subnet B
//! (node-3) and only forwards: it knows nothing of pod addresses, so a pod packet can cross it
//! only encapsulated. The nodes run a BGP mesh through it (static default routes). One pool,
//! two pods per node. Needs root and ROUTED_E2E=1.
//!
//! ```text
//!   node-1 10.110.1.1 ─┐                          ┌─ node-3 10.110.2.3
//!   node-2 10.110.1.2 ─┴─ brA 10.110.1.254 [router] 10.110.2.254 brB ─┘
//! ```

mod common;

use common::{run_routectl, wait_for, Agent, Netns, WAIT};
use routed::api::v1::ReconcilerStatus;
use routed::ipam::Ipam;
use routed::model::{EncapMode, IpPool, Node};
use std::time::{Duration, Instant};

const POOL: &str = "vx-pods";

struct Pod {
    netns: Netns,
    ip: String,
    node: usize,
}

struct Lab {
    // Field order is drop order: agents stop before their namespaces go.
    agents: Vec<Agent>,
    pods: Vec<Pod>,
    nodes: Vec<Netns>,
    _router: Netns,
    url: String,
    dir: tempfile::TempDir,
}

fn node_ip(i: usize) -> String {
    if i < 2 {
        format!("10.110.1.{}", i + 1)
    } else {
        format!("10.110.2.{}", i + 1)
    }
}

impl Lab {
    async fn start(mode: EncapMode) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("routed.db").display());
        let mut pool = IpPool::new(POOL, "10.91.0.0/16".parse().unwrap());
        pool.vxlan_mode = mode;
        Ipam::new(common::open(&url).await)
            .create_pool(&pool)
            .await
            .unwrap();
        let router = Netns::new("rt-vxr");
        router.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (bridge, address) in [("brA", "10.110.1.254/24"), ("brB", "10.110.2.254/24")] {
            router.exec_ok(&["ip", "link", "add", bridge, "type", "bridge"]);
            router.exec_ok(&["ip", "addr", "add", address, "dev", bridge]);
            router.exec_ok(&["ip", "link", "set", bridge, "up"]);
        }
        let mut nodes = Vec::new();
        let mut agents = Vec::new();
        for i in 0..3 {
            let (bridge, gateway) = if i < 2 {
                ("brA", "10.110.1.254")
            } else {
                ("brB", "10.110.2.254")
            };
            let cidr = format!("{}/24", node_ip(i));
            let port = format!("p{}", i + 1);
            let node = Netns::node_on_bridge("rt-vxn", &router, &port, bridge, &cidr, gateway);
            agents.push(Agent::start(
                &node,
                &format!("node-{}", i + 1),
                &url,
                &cidr,
                dir.path(),
            ));
            nodes.push(node);
        }
        let mut pods = Vec::new();
        for (i, (node, agent)) in nodes.iter().zip(&agents).enumerate() {
            for k in 0..2 {
                let (netns, ip) = common::new_pod("rt-vxp", node, agent, &format!("vx-{i}-{k}"));
                pods.push(Pod { netns, ip, node: i });
            }
        }
        Lab {
            agents,
            pods,
            nodes,
            _router: router,
            url,
            dir,
        }
    }

    fn set_mode(&self, mode: &str) {
        let (code, out, err) =
            run_routectl(&self.url, &["pool", "set", POOL, "--vxlan-mode", mode]);
        assert_eq!(code, 0, "{out}{err}");
    }

    async fn node_record(&self, i: usize) -> Node {
        let store = common::open(&self.url).await;
        let kv = store
            .get(&format!("nodes/node-{}", i + 1))
            .await
            .unwrap()
            .expect("node registered");
        routed::datastore::decode_json(&kv).unwrap()
    }

    /// The blocks affine to node i.
    async fn blocks_of(&self, i: usize) -> Vec<String> {
        let ipam = Ipam::new(common::open(&self.url).await);
        let name = format!("node-{}", i + 1);
        ipam.show(None)
            .await
            .unwrap()
            .iter()
            .filter(|b| b.affinity.as_deref() == Some(name.as_str()))
            .map(|b| b.cidr.to_string())
            .collect()
    }

    /// The tunnel reconciler's counters on node `i` (`GET /v1/reconcilers`).
    fn tunnel_passes(&self, i: usize) -> ReconcilerStatus {
        let client = routed::api::client::Client::new(&self.agents[i].socket);
        let all: Vec<ReconcilerStatus> =
            client.get("/v1/reconcilers").expect("GET /v1/reconcilers");
        all.into_iter()
            .find(|r| r.name == "tunnels")
            .expect("the agent runs a tunnels reconciler")
    }

    fn pod_mtu(&self, i: usize) -> u64 {
        let client = routed::api::client::Client::new(&self.agents[i].socket);
        let info: serde_json::Value = client.get("/v1/node").expect("GET /v1/node");
        info["pod_mtu"].as_u64().expect("pod_mtu")
    }

    fn ping(&self, from: &Pod, to: &Pod) -> Result<(), String> {
        let (ok, out) = from.netns.exec(&["ping", "-c", "1", "-W", "1", &to.ip]);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "pod {} (node-{}) -> {} (node-{}): {out}",
                from.ip,
                from.node + 1,
                to.ip,
                to.node + 1
            ))
        }
    }

    fn ping_all_pairs(&self, phase: &str) {
        for from in &self.pods {
            for to in &self.pods {
                if from.ip != to.ip {
                    wait_for(&format!("{phase}: every pod reaches every pod"), || {
                        self.ping(from, to)
                    });
                }
            }
        }
    }

    /// (tx, rx) packet counters of vxlan.routed on node i.
    fn vxlan_counters(&self, i: usize) -> (u64, u64) {
        let out = self.nodes[i].exec_ok(&["ip", "-s", "-j", "link", "show", "vxlan.routed"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        let stats = &v[0]["stats64"];
        (
            stats["tx"]["packets"].as_u64().expect("tx packets"),
            stats["rx"]["packets"].as_u64().expect("rx packets"),
        )
    }

    fn routes(&self, i: usize, protocol: &str) -> String {
        self.nodes[i]
            .exec_ok(&["ip", "-4", "route", "show", "proto", protocol])
            .trim()
            .to_string()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{}.log", i + 1)))
            .unwrap_or_default()
    }
}

/// Waits until node i has, for every block of node j, exactly `want(block)` among its routes of
/// protocol 233.
async fn wait_routes(lab: &Lab, i: usize, j: usize, want: impl Fn(&str) -> String) {
    let blocks = lab.blocks_of(j).await;
    assert!(!blocks.is_empty(), "node-{} has no block", j + 1);
    wait_for(
        &format!("node-{} programs node-{}'s blocks", i + 1, j + 1),
        || {
            let routes = lab.routes(i, "233");
            for block in &blocks {
                let line = want(block);
                if !routes.lines().any(|l| l.trim() == line) {
                    return Err(format!("missing {line:?} in:\n{routes}\n{}", lab.log(i)));
                }
            }
            Ok(())
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_always_cross_subnet_never_switched_live() {
    if !common::require_e2e("vxlan_always_cross_subnet_never_switched_live") {
        return;
    }
    let lab = Lab::start(EncapMode::Always).await;

    // --- Always: the device, the VTEP on every Node record, routes through the device.
    let mut vteps = Vec::new();
    for i in 0..3 {
        wait_for(&format!("node-{} publishes its VTEP", i + 1), || {
            let (ok, out) = lab.nodes[i].exec(&["ip", "-d", "-j", "link", "show", "vxlan.routed"]);
            if !ok {
                return Err(out);
            }
            let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let data = &v[0]["linkinfo"]["info_data"];
            let expect = (
                data["id"].as_u64(),
                data["port"].as_u64(),
                data["learning"].as_bool(),
                data["local"].as_str().map(str::to_string),
                v[0]["mtu"].as_u64(),
            );
            if expect
                != (
                    Some(4096),
                    Some(4789),
                    Some(false),
                    Some(node_ip(i)),
                    Some(1450),
                )
            {
                return Err(format!("{expect:?}"));
            }
            Ok(())
        });
        let deadline = Instant::now() + WAIT;
        let node = loop {
            let node = lab.node_record(i).await;
            if node.ipv4_vxlan_tunnel_addr.is_some() && node.vxlan_tunnel_mac.is_some() {
                break node;
            }
            assert!(
                Instant::now() < deadline,
                "no VTEP on node-{}: {}",
                i + 1,
                lab.log(i)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let vtep = node.ipv4_vxlan_tunnel_addr.unwrap().to_string();
        assert!(vtep.starts_with("10.91."), "VTEP {vtep} from the pool");
        let on_device = lab.nodes[i].exec_ok(&["ip", "-4", "addr", "show", "dev", "vxlan.routed"]);
        assert!(on_device.contains(&format!("{vtep}/32")), "{on_device}");
        vteps.push((vtep, node.vxlan_tunnel_mac.unwrap()));
    }
    assert_eq!(lab.pod_mtu(0), 1450, "pod MTU = node MTU - 50 with VXLAN");
    for (i, j) in [(0, 1), (0, 2), (2, 0), (1, 2)] {
        let vtep = vteps[j].0.clone();
        wait_routes(&lab, i, j, |b| {
            format!("{b} via {vtep} dev vxlan.routed onlink")
        })
        .await;
    }
    let neigh = lab.nodes[0].exec_ok(&["ip", "neigh", "show", "dev", "vxlan.routed"]);
    for (vtep, mac) in &vteps[1..] {
        assert!(
            neigh.contains(&format!("{vtep} lladdr {mac} PERMANENT")),
            "{neigh}"
        );
    }
    let fdb = lab.nodes[0].exec_ok(&["bridge", "fdb", "show", "dev", "vxlan.routed"]);
    for (j, (_, mac)) in vteps.iter().enumerate().skip(1) {
        assert!(fdb.contains(&format!("{mac} dst {}", node_ip(j))), "{fdb}");
    }
    lab.ping_all_pairs("Always");
    // The host itself reaches a remote pod through its VTEP address.
    wait_for("node-1 host reaches a node-3 pod", || {
        let (ok, out) = lab.nodes[0].exec(&["ping", "-c", "1", "-W", "1", &lab.pods[4].ip]);
        ok.then_some(()).ok_or(out)
    });
    // Always encapsulates same-subnet traffic too.
    let (tx0, _) = lab.vxlan_counters(0);
    lab.pods[0]
        .netns
        .exec_ok(&["ping", "-c", "5", "-i", "0.2", "-W", "1", &lab.pods[2].ip]);
    let (tx1, _) = lab.vxlan_counters(0);
    assert!(
        tx1 - tx0 >= 5,
        "Always: same-subnet traffic encapsulated ({tx0} -> {tx1})"
    );

    // --- CrossSubnet, switched live: node-2 plainly, node-3 through the device.
    lab.set_mode("CrossSubnet");
    wait_routes(&lab, 0, 1, |b| format!("{b} via {} dev eth0", node_ip(1))).await;
    let vtep3 = vteps[2].0.clone();
    wait_routes(&lab, 0, 2, |b| {
        format!("{b} via {vtep3} dev vxlan.routed onlink")
    })
    .await;
    let vtep1 = vteps[0].0.clone();
    wait_routes(&lab, 2, 0, |b| {
        format!("{b} via {vtep1} dev vxlan.routed onlink")
    })
    .await;
    lab.ping_all_pairs("CrossSubnet");
    let pings = 10;
    let count = pings.to_string();
    let ping_from_pod0 = |to: usize| {
        let target = &lab.pods[to].ip;
        let args = ["ping", "-c", &count, "-i", "0.2", "-W", "1", target];
        lab.pods[0].netns.exec_ok(&args);
    };
    let (tx0, rx0) = lab.vxlan_counters(0);
    ping_from_pod0(2);
    let (tx1, rx1) = lab.vxlan_counters(0);
    assert!(
        tx1 - tx0 < 3 && rx1 - rx0 < 3,
        "CrossSubnet: same-subnet traffic must not be encapsulated (tx {tx0}->{tx1}, rx {rx0}->{rx1})"
    );
    ping_from_pod0(4);
    let (tx2, rx2) = lab.vxlan_counters(0);
    assert!(
        tx2 - tx1 >= pings && rx2 - rx1 >= pings,
        "CrossSubnet: cross-subnet traffic must be encapsulated (tx {tx1}->{tx2}, rx {rx1}->{rx2})"
    );

    // --- Never: devices and tunnel addresses go, same-subnet pods still reach each other over
    // plain BGP routes; the pod MTU is the node's again.
    lab.set_mode("Never");
    for i in 0..3 {
        wait_for(&format!("node-{} removes vxlan.routed", i + 1), || {
            let (exists, out) = lab.nodes[i].exec(&["ip", "link", "show", "vxlan.routed"]);
            let routes = lab.routes(i, "233");
            if exists || !routes.is_empty() {
                return Err(format!("{out}\n{routes}"));
            }
            Ok(())
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let node = lab.node_record(i).await;
            if node.ipv4_vxlan_tunnel_addr.is_none() && node.vxlan_tunnel_mac.is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "node-{} keeps its VTEP", i + 1);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let handles = Ipam::new(common::open(&lab.url).await)
        .allocations_of_node("node-1")
        .await
        .unwrap();
    assert!(
        handles
            .iter()
            .all(|a| !a.handle.starts_with("vxlan-tunnel-addr")),
        "tunnel address released: {handles:?}"
    );
    wait_for("pod MTU back to 1500", || match lab.pod_mtu(0) {
        1500 => Ok(()),
        other => Err(other.to_string()),
    });
    let blocks2 = lab.blocks_of(1).await;
    wait_for("node-1 learns node-2's blocks over BGP", || {
        let routes = lab.routes(0, "232");
        blocks2
            .iter()
            .all(|b| common::routes_via(&routes, b, &format!("via {} dev eth0", node_ip(1))))
            .then_some(())
            .ok_or(routes)
    });
    wait_for("Never: same-subnet pods still reach each other", || {
        lab.ping(&lab.pods[0], &lab.pods[2])
    });
    for i in 0..3 {
        for line in lab.log(i).lines().filter(|l| l.contains("WARN")) {
            eprintln!("node-{} warned: {line}", i + 1);
        }
    }
    drop(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_entries_removed_by_hand_are_restored() {
    if !common::require_e2e("vxlan_entries_removed_by_hand_are_restored") {
        return;
    }
    let lab = Lab::start(EncapMode::Always).await;
    let deadline = Instant::now() + WAIT;
    let node3 = loop {
        let node = lab.node_record(2).await;
        if node.ipv4_vxlan_tunnel_addr.is_some() && node.vxlan_tunnel_mac.is_some() {
            break node;
        }
        assert!(Instant::now() < deadline, "no VTEP on node-3");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let vtep = node3.ipv4_vxlan_tunnel_addr.unwrap().to_string();
    let mac = node3.vxlan_tunnel_mac.unwrap();
    let block = lab.blocks_of(2).await[0].clone();
    let route = format!("{block} via {vtep} dev vxlan.routed onlink");
    wait_routes(&lab, 0, 2, |b| {
        format!("{b} via {vtep} dev vxlan.routed onlink")
    })
    .await;
    let node1 = &lab.nodes[0];
    let has = |cmd: &[&str], want: &str| -> Result<(), String> {
        let out = node1.exec_ok(cmd);
        out.contains(want).then_some(()).ok_or(out)
    };
    let fdb_cmd = ["bridge", "fdb", "show", "dev", "vxlan.routed"];
    let fdb_line = format!("{mac} dst {}", node_ip(2));
    wait_for("FDB entry present", || has(&fdb_cmd, &fdb_line));
    node1.exec_ok(&[
        "bridge",
        "fdb",
        "del",
        &mac,
        "dev",
        "vxlan.routed",
        "dst",
        &node_ip(2),
    ]);
    assert!(has(&fdb_cmd, &fdb_line).is_err(), "FDB entry deleted");
    wait_for("FDB entry restored", || has(&fdb_cmd, &fdb_line));

    let neigh_cmd = ["ip", "neigh", "show", "dev", "vxlan.routed"];
    let neigh_line = format!("{vtep} lladdr {mac} PERMANENT");
    node1.exec_ok(&["ip", "neigh", "del", &vtep, "dev", "vxlan.routed"]);
    assert!(has(&neigh_cmd, &neigh_line).is_err(), "neighbour deleted");
    wait_for("neighbour restored", || has(&neigh_cmd, &neigh_line));

    let route_cmd = ["ip", "-4", "route", "show", "proto", "233"];
    node1.exec_ok(&["ip", "route", "del", &block, "proto", "233"]);
    wait_for("route restored", || has(&route_cmd, &route));

    // And traffic flows again.
    wait_for("node-1 pod reaches node-3 pod", || {
        lab.ping(&lab.pods[0], &lab.pods[4])
    });
    // Steady state is quiet: the tunnel reconciler keeps running its passes (resync every
    // 5 s), and none of them changes anything.
    let before = lab.tunnel_passes(0);
    wait_for("two more tunnel reconciler passes", || {
        let now = lab.tunnel_passes(0);
        if now.passes >= before.passes + 2 {
            Ok(())
        } else {
            Err(format!(
                "{} passes so far (from {})",
                now.passes, before.passes
            ))
        }
    });
    let after = lab.tunnel_passes(0);
    assert_eq!(
        after.passes_changed,
        before.passes_changed,
        "no churn in steady state: {before:?} -> {after:?}\n{}",
        lab.log(0)
    );
    drop(lab);
}
