//! Route reflection (issue 13): routed nodes as reflectors, set up the Calico way, for routed,
//! FRR 8.4 and BIRD 2 clients; membership changed live; two redundant reflectors.
//!
//! ```text
//!  rack namespace, bridge br0 10.100.0.254/24
//!   ├─ node-1 10.100.0.1  reflector (route-reflector=true, cluster 1.0.0.1)
//!   ├─ node-2 10.100.0.2  reflector (same cluster)
//!   ├─ node-3..5          routed clients (one pod each)
//!   ├─ frr    10.100.0.50 FRR bgpd client of both reflectors (originates 10.91.50.0/26)
//!   └─ bird   10.100.0.51 BIRD 2 client of both reflectors (originates 10.91.51.0/26)
//! ```
//! Mesh off; one BGPPeer `--node-selector 'all()' --peer-selector "route-reflector == 'true'"`;
//! FRR and BIRD are explicit peers of the reflectors (`--node-selector "route-reflector ==
//! 'true'"`), so the reflectors treat them as clients. Needs root, FRR, BIRD 2 and
//! ROUTED_E2E=1.

mod cluster;
mod common;

use cluster::{block_of, deleted_routes_of_ours, wait_for, Lab, Ping, RouteMonitor};
use common::Netns;
use std::collections::BTreeMap;

const CLUSTER_ID: &str = "1.0.0.1";
const NODES: usize = 5;
const REFLECTORS: [usize; 2] = [1, 2];
const FRR_IP: &str = "10.100.0.50";
const FRR_PREFIX: &str = "10.91.50.0/26";
const BIRD_IP: &str = "10.100.0.51";
const BIRD_PREFIX: &str = "10.91.51.0/26";

fn node_ip(i: usize) -> String {
    format!("10.100.0.{i}")
}

/// A daemon in its own namespace on the rack (stopped before its namespace goes).
struct RackDaemon {
    _daemon: common::Daemon,
    netns: Netns,
}

impl RackDaemon {
    fn spawn(netns: Netns, args: &[String], log: std::path::PathBuf, what: &str) -> RackDaemon {
        let daemon = common::Daemon::spawn(&netns, args, &log, what);
        RackDaemon {
            _daemon: daemon,
            netns,
        }
    }
}

fn rack_member(lab: &Lab, name: &str, address: &str) -> Netns {
    Netns::node_on_bridge(
        "rt-rr",
        &lab.rack,
        name,
        "br0",
        &format!("{address}/24"),
        "10.100.0.254",
    )
}

/// FRR bgpd, a client of both reflectors, originating `FRR_PREFIX`.
fn start_frr(lab: &Lab) -> RackDaemon {
    let netns = rack_member(lab, "frr", FRR_IP);
    let mut conf = format!(
        "frr defaults traditional\nhostname frrclient\n!\nrouter bgp 64512\n bgp router-id {FRR_IP}\n\
         no bgp ebgp-requires-policy\n no bgp network import-check\n"
    );
    for rr in REFLECTORS {
        let ip = node_ip(rr);
        conf.push_str(&format!(
            " neighbor {ip} remote-as 64512\n neighbor {ip} timers 3 9\n neighbor {ip} timers connect 2\n"
        ));
    }
    conf.push_str(&format!(
        " address-family ipv4 unicast\n  network {FRR_PREFIX}\n exit-address-family\n!\n"
    ));
    let dir = lab.dir.path();
    std::fs::write(dir.join("bgpd.conf"), conf).expect("write bgpd.conf");
    let vty = dir.join("vty");
    std::fs::create_dir_all(&vty).expect("vty dir");
    let args: Vec<String> = [
        "/usr/lib/frr/bgpd",
        "-f",
        &dir.join("bgpd.conf").display().to_string(),
        "-i",
        &dir.join("bgpd.pid").display().to_string(),
        "-Z",
        "-S",
        "-n",
        "-P",
        "0",
        "--vty_socket",
        &vty.display().to_string(),
        "--log",
        "stdout",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    RackDaemon::spawn(
        netns,
        &args,
        dir.join("bgpd.log"),
        "FRR (Debian package frr)",
    )
}

fn frr_show(lab: &Lab, frr: &RackDaemon, command: &str) -> String {
    let vty = lab.dir.path().join("vty").display().to_string();
    frr.netns
        .exec(&["vtysh", "--vty_socket", &vty, "-d", "bgpd", "-c", command])
        .1
}

/// BIRD 2, a client of both reflectors, originating `BIRD_PREFIX`.
fn start_bird(lab: &Lab) -> RackDaemon {
    let netns = rack_member(lab, "bird", BIRD_IP);
    let mut conf = format!(
        "router id {BIRD_IP};\nprotocol device {{}}\n\
         protocol static {{ ipv4; route {BIRD_PREFIX} blackhole; }}\n"
    );
    for rr in REFLECTORS {
        conf.push_str(&format!(
            "protocol bgp rr{rr} {{\n  local {BIRD_IP} as 64512;\n  neighbor {} as 64512;\n\
             direct;\n  connect retry time 1;\n  ipv4 {{ import all; export all; }};\n}}\n",
            node_ip(rr)
        ));
    }
    spawn_bird(lab, netns, "bird", &conf)
}

/// BIRD 2 in `netns` with `conf`, its files `STEM.conf`, `STEM.ctl` and `STEM.log` in the lab's
/// directory.
fn spawn_bird(lab: &Lab, netns: Netns, stem: &str, conf: &str) -> RackDaemon {
    let dir = lab.dir.path();
    let file = |ext: &str| dir.join(format!("{stem}.{ext}"));
    std::fs::write(file("conf"), conf).unwrap_or_else(|e| panic!("write {stem}.conf: {e}"));
    let path = |ext: &str| file(ext).display().to_string();
    let args = ["bird", "-f", "-c", &path("conf"), "-s", &path("ctl")].map(String::from);
    RackDaemon::spawn(netns, &args, file("log"), "BIRD 2 (Debian package bird2)")
}

fn birdc(lab: &Lab, bird: &RackDaemon, args: &[&str]) -> String {
    let socket = lab.dir.path().join("bird.ctl").display().to_string();
    let mut cmd = vec!["birdc", "-s", &socket];
    cmd.extend_from_slice(args);
    bird.netns.exec(&cmd).1
}

/// The lab with Calico's recipe applied: mesh off, the selector peering, explicit FRR and BIRD
/// peers on the reflectors, nodes 1 and 2 labelled and given the cluster ID, a pod per node.
struct RrLab {
    // Dropped first: pods and daemons go before the nodes.
    pods: Vec<(Netns, String)>,
    lab: Lab,
    _store: tempfile::TempDir,
}

impl RrLab {
    fn start() -> RrLab {
        let (url, store) = common::sqlite_url();
        let setup: [&[&str]; 4] = [
            &["config", "set", "--mesh", "off"],
            &[
                "peer",
                "create",
                "to-reflectors",
                "--as",
                "64512",
                "--node-selector",
                "all()",
                "--peer-selector",
                "route-reflector == 'true'",
            ],
            &[
                "peer",
                "create",
                "frr-client",
                "--peer-ip",
                FRR_IP,
                "--as",
                "64512",
                "--node-selector",
                "route-reflector == 'true'",
            ],
            &[
                "peer",
                "create",
                "bird-client",
                "--peer-ip",
                BIRD_IP,
                "--as",
                "64512",
                "--node-selector",
                "route-reflector == 'true'",
            ],
        ];
        for args in setup {
            let (code, out, err) = common::run_routectl(&url, args);
            assert_eq!(code, 0, "routectl {args:?}: {out}{err}");
        }
        let lab = Lab::start(cluster::rack(), &url, NODES);
        for rr in REFLECTORS {
            let name = format!("node-{rr}");
            lab.routectl_ok(&["node", "label", &name, "route-reflector=true"]);
            lab.routectl_ok(&["node", "set", &name, "--rr-cluster-id", CLUSTER_ID]);
        }
        let pods = (1..=NODES)
            .map(|i| lab.pod(i, &format!("rr-pod-{i}")))
            .collect();
        RrLab {
            pods,
            lab,
            _store: store,
        }
    }

    fn block(&self, i: usize) -> String {
        block_of(&self.pods[i - 1].1)
    }

    /// Waits until every node's kernel routes every other node's block through that node
    /// (next hops unchanged by reflection), and `extra` prefixes through their originators.
    fn wait_full_mesh_of_routes(&self, extra: &[(&str, &str)]) {
        for i in 1..=NODES {
            wait_for(&format!("node-{i} routes every other block"), || {
                let routes = self.lab.routes(i, 232);
                for j in (1..=NODES).filter(|j| *j != i) {
                    let via = format!("via {} dev eth0", node_ip(j));
                    if !common::routes_via(&routes, &self.block(j), &via) {
                        return Err(format!("no {} {via}:\n{routes}", self.block(j)));
                    }
                }
                for (prefix, origin) in extra {
                    let via = format!("via {origin} dev eth0");
                    if !common::routes_via(&routes, prefix, &via) {
                        return Err(format!("no {prefix} {via}:\n{routes}"));
                    }
                }
                Ok(())
            });
        }
    }

    /// Session name → Established-since, of node `i`'s Established sessions.
    fn established_since(&self, i: usize) -> BTreeMap<String, u64> {
        let peers = self.lab.bgp_status(i).unwrap_or_default();
        peers
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] == "Established")
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["since"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until node `i` has exactly the Established sessions `names`.
    fn wait_sessions(&self, i: usize, names: &[String]) {
        wait_for(&format!("node-{i}: sessions {names:?} Established"), || {
            let up: Vec<String> = self.established_since(i).into_keys().collect();
            let mut want = names.to_vec();
            want.sort();
            (up == want)
                .then_some(())
                .ok_or_else(|| format!("{up:?}; {}", self.lab.bgp_status(i).unwrap_or_default()))
        });
    }

    /// The row of node `i`'s `routectl status -o json` for session `name`.
    fn status_row(&self, i: usize, name: &str) -> serde_json::Value {
        let peers = self.lab.bgp_status(i).expect("status");
        peers
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no session {name} on node-{i}: {peers}"))
    }

    /// Every node's expected sessions: reflectors see each other, every routed client and
    /// FRR and BIRD; clients see both reflectors.
    fn wait_recipe_sessions(&self) {
        for i in 1..=NODES {
            let names: Vec<String> = if REFLECTORS.contains(&i) {
                (1..=NODES)
                    .filter(|j| *j != i)
                    .map(session)
                    .chain([node_session(FRR_IP), node_session(BIRD_IP)])
                    .collect()
            } else {
                REFLECTORS.iter().map(|r| session(*r)).collect()
            };
            self.wait_sessions(i, &names);
        }
    }
}

/// The name of a selector session to node `j` (`Global_`: the node selector is `all()`).
fn session(j: usize) -> String {
    format!("Global_10_100_0_{j}")
}

/// The name of an explicit session a reflector has to `ip` (node selector not `all()`).
fn node_session(ip: &str) -> String {
    format!("Node_{}", ip.replace('.', "_"))
}

#[test]
fn routed_reflectors_serve_routed_frr_and_bird_clients_per_rfc_4456() {
    if !common::require_e2e("routed_reflectors_serve_routed_frr_and_bird_clients_per_rfc_4456") {
        return;
    }
    let rr = RrLab::start();
    let lab = &rr.lab;
    let frr = start_frr(lab);
    let bird = start_bird(lab);
    let logs = || {
        let read = |f: &str| std::fs::read_to_string(lab.dir.path().join(f)).unwrap_or_default();
        format!(
            "bird.log:\n{}\nbgpd.log:\n{}",
            read("bird.log"),
            read("bgpd.log")
        )
    };
    let sessions = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rr.wait_recipe_sessions();
    }));
    assert!(sessions.is_ok(), "{}", logs());
    rr.wait_full_mesh_of_routes(&[(FRR_PREFIX, FRR_IP), (BIRD_PREFIX, BIRD_IP)]);

    // FRR sees node-3's block reflected by both reflectors: ORIGINATOR_ID node-3, CLUSTER_LIST
    // our cluster, next hop node-3 (unchanged).
    let block3 = rr.block(3);
    let mut frr_view = serde_json::Value::Null;
    wait_for("FRR holds node-3's block from both reflectors", || {
        let text = frr_show(lab, &frr, &format!("show bgp ipv4 unicast {block3} json"));
        frr_view = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        let paths = frr_view["paths"].as_array().map_or(0, Vec::len);
        (paths == 2).then_some(()).ok_or(text)
    });
    for path in frr_view["paths"].as_array().into_iter().flatten() {
        assert_eq!(path["originatorId"], "10.100.0.3", "{path}");
        let clusters = path["clusterList"].to_string();
        assert!(clusters.contains(CLUSTER_ID), "{path}");
        let hops = path["nexthops"].to_string();
        assert!(hops.contains("\"10.100.0.3\""), "{path}");
    }

    // BIRD: the same attributes in `show route all`.
    let mut bird_view = String::new();
    wait_for("BIRD holds node-4's block", || {
        bird_view = birdc(lab, &bird, &["show", "route", "all", &rr.block(4)]);
        bird_view
            .contains("BGP.originator_id")
            .then_some(())
            .ok_or(bird_view.clone())
    });
    assert!(
        bird_view.contains("BGP.originator_id: 10.100.0.4")
            && bird_view.contains(&format!("BGP.cluster_list: {CLUSTER_ID}"))
            && bird_view.contains("BGP.next_hop: 10.100.0.4"),
        "{bird_view}"
    );
    // FRR's own prefix reached BIRD through a routed reflector, next hop still FRR.
    let frr_at_bird = birdc(lab, &bird, &["show", "route", "all", FRR_PREFIX]);
    assert!(
        frr_at_bird.contains(&format!("BGP.originator_id: {FRR_IP}"))
            && frr_at_bird.contains(&format!("BGP.next_hop: {FRR_IP}")),
        "{frr_at_bird}"
    );

    // Status: type and cluster ID on both sides.
    let to_reflector = rr.status_row(3, &session(1));
    assert_eq!(to_reflector["role"], "RouteReflector", "{to_reflector}");
    assert_eq!(to_reflector["rr_cluster_id"], CLUSTER_ID);
    let to_client = rr.status_row(1, &session(3));
    assert_eq!(to_client["role"], "RrClient", "{to_client}");
    let to_frr = rr.status_row(1, &node_session(FRR_IP));
    assert_eq!(to_frr["role"], "RrClient", "{to_frr}");
    let twin = rr.status_row(1, &session(2));
    assert_eq!(
        twin["role"], "RouteReflector",
        "same cluster: plain iBGP, {twin}"
    );

    // Pod traffic across clients, and from a client to a pod on a reflector.
    for (from, to) in [(3, 5), (4, 1)] {
        let ping = Ping::start(&rr.pods[from - 1].0, &rr.pods[to - 1].1, 5);
        let result = ping.finish();
        assert_eq!(result.received, 5, "{}", result.output);
    }
}

#[test]
fn reflector_membership_changes_live_without_resetting_other_sessions() {
    if !common::require_e2e("reflector_membership_changes_live_without_resetting_other_sessions") {
        return;
    }
    let rr = RrLab::start();
    let lab = &rr.lab;
    // No FRR or BIRD here: the reflectors' sessions to them stay down, which is fine.
    rr.wait_full_mesh_of_routes(&[]);
    let before: Vec<BTreeMap<String, u64>> = (1..=NODES).map(|i| rr.established_since(i)).collect();
    let monitors: Vec<RouteMonitor> = (1..=NODES)
        .map(|i| RouteMonitor::start(lab.node(i), lab.dir.path().join(format!("mon-{i}"))))
        .collect();

    // node-3 becomes a reflector of the same cluster: nodes 4 and 5 gain a session to it;
    // the reflectors' sessions to node-3 change role in place.
    lab.routectl_ok(&["node", "label", "node-3", "route-reflector=true"]);
    lab.routectl_ok(&["node", "set", "node-3", "--rr-cluster-id", CLUSTER_ID]);
    for i in [4, 5] {
        rr.wait_sessions(i, &[session(1), session(2), session(3)]);
    }
    wait_for("node-1 sees node-3 as a reflector", || {
        let row = rr.status_row(1, &session(3));
        (row["role"] == "RouteReflector")
            .then_some(())
            .ok_or(row.to_string())
    });
    // A client added and removed (an explicit peer of the reflectors; nothing listens there).
    lab.routectl_ok(&[
        "peer",
        "create",
        "extra-client",
        "--peer-ip",
        "10.100.0.60",
        "--as",
        "64512",
        "--node-selector",
        "route-reflector == 'true'",
    ]);
    wait_for("node-1 configures the extra client", || {
        let peers = lab.bgp_status(1)?;
        peers
            .to_string()
            .contains(&node_session("10.100.0.60"))
            .then_some(())
            .ok_or(peers.to_string())
    });
    lab.routectl_ok(&["peer", "delete", "extra-client"]);
    // And node-3 back out of the reflector role.
    lab.routectl_ok(&["node", "set", "node-3", "--no-rr-cluster-id"]);
    lab.routectl_ok(&["node", "label", "node-3", "route-reflector-"]);
    for i in [4, 5] {
        rr.wait_sessions(i, &[session(1), session(2)]);
    }
    wait_for("node-1 sees node-3 as a client again", || {
        let row = rr.status_row(1, &session(3));
        (row["role"] == "RrClient")
            .then_some(())
            .ok_or(row.to_string())
    });
    rr.wait_full_mesh_of_routes(&[]);

    // Every session that existed before is still the same session.
    for (i, sessions) in before.iter().enumerate() {
        let now = rr.established_since(i + 1);
        for (name, since) in sessions {
            assert_eq!(
                now.get(name),
                Some(since),
                "node-{}: session {name} was reset",
                i + 1
            );
        }
    }
    for (i, monitor) in monitors.into_iter().enumerate() {
        let deleted = deleted_routes_of_ours(&monitor.finish());
        assert!(
            deleted.is_empty(),
            "node-{} lost routes: {deleted:?}",
            i + 1
        );
    }
}

#[test]
fn killing_one_of_two_reflectors_loses_no_packet_and_it_rejoins() {
    if !common::require_e2e("killing_one_of_two_reflectors_loses_no_packet_and_it_rejoins") {
        return;
    }
    let mut rr = RrLab::start();
    rr.wait_full_mesh_of_routes(&[]);
    let before: Vec<BTreeMap<String, u64>> = (1..=NODES).map(|i| rr.established_since(i)).collect();
    // 20 packets a second for 30 s, across clients (3 → 5, 4 → 3).
    let pings = [(3, 5), (4, 3)]
        .map(|(from, to)| Ping::start(&rr.pods[from - 1].0, &rr.pods[to - 1].1, 600));
    for ping in &pings {
        ping.wait_replies(20);
    }
    rr.lab.agent_mut(1).stop(); // SIGKILL
    for i in 3..=NODES {
        rr.wait_sessions(i, &[session(2)]);
    }
    // Every client keeps every block through node-2.
    for i in 3..=NODES {
        let routes = rr.lab.routes(i, 232);
        for j in (1..=NODES).filter(|j| *j != i) {
            let via = format!("via {} dev eth0", node_ip(j));
            assert!(
                common::routes_via(&routes, &rr.block(j), &via),
                "node-{i} lost {}: {routes}",
                rr.block(j)
            );
        }
    }
    let restarted = rr.lab.start_agent(1);
    rr.lab.agents[0] = restarted;
    for i in 3..=NODES {
        rr.wait_sessions(i, &[session(1), session(2)]);
    }
    rr.wait_full_mesh_of_routes(&[]);
    // No flap elsewhere: the sessions to node-2 were never reset.
    for i in 3..=NODES {
        let now = rr.established_since(i);
        assert_eq!(
            now.get(&session(2)),
            before[i - 1].get(&session(2)),
            "node-{i}: session to node-2 reset"
        );
    }
    for ping in pings {
        let result = ping.finish();
        assert_eq!(result.received, result.transmitted, "{}", result.output);
    }
}

/// BIRD 2 as the reflector (`rr client; rr cluster id`), `ip` on the rack.
fn start_bird_reflector(lab: &Lab, ip: &str, clients: &[usize]) -> RackDaemon {
    let netns = rack_member(lab, "birdrr", ip);
    let mut conf = format!(
        "router id {ip};\nprotocol device {{}}\n\
         template bgp clients {{ local {ip} as 64512; rr client; rr cluster id {CLUSTER_ID}; direct;\n\
         connect retry time 1; ipv4 {{ import all; export all; }}; }}\n"
    );
    for i in clients {
        conf.push_str(&format!(
            "protocol bgp client_{i} from clients {{ neighbor {} as 64512; }}\n",
            node_ip(*i)
        ));
    }
    spawn_bird(lab, netns, "bird-rr", &conf)
}

#[test]
fn routed_clients_behind_a_bird_reflector_learn_every_block() {
    if !common::require_e2e("routed_clients_behind_a_bird_reflector_learn_every_block") {
        return;
    }
    const RR: &str = "10.100.0.250";
    let (url, _store) = common::sqlite_url();
    for args in [
        &["config", "set", "--mesh", "off"][..],
        &[
            "peer",
            "create",
            "bird-rr",
            "--peer-ip",
            RR,
            "--as",
            "64512",
        ][..],
    ] {
        let (code, out, err) = common::run_routectl(&url, args);
        assert_eq!(code, 0, "routectl {args:?}: {out}{err}");
    }
    let lab = Lab::start(cluster::rack(), &url, 3);
    let _bird = start_bird_reflector(&lab, RR, &[1, 2, 3]);
    let pods: Vec<(Netns, String)> = (1..=3)
        .map(|i| lab.pod(i, &format!("birdrr-pod-{i}")))
        .collect();
    for i in 1..=3 {
        wait_for(
            &format!("node-{i} routes every other block via its node"),
            || {
                let routes = lab.routes(i, 232);
                for j in (1..=3).filter(|j| *j != i) {
                    let via = format!("via {} dev eth0", node_ip(j));
                    if !common::routes_via(&routes, &block_of(&pods[j - 1].1), &via) {
                        return Err(format!("no {via}:\n{routes}"));
                    }
                }
                Ok(())
            },
        );
        let peers = lab.bgp_status(i).expect("status");
        let row = &peers[0];
        assert_eq!(row["state"], "Established", "{peers}");
        assert_eq!(
            row["role"], "Peer",
            "an external reflector is a plain iBGP peer: {row}"
        );
    }
    let ping = Ping::start(&pods[0].0, &pods[2].1, 5);
    let result = ping.finish();
    assert_eq!(result.received, 5, "{}", result.output);
}
