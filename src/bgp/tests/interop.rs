//! Interop with BIRD 2, FRR (bgpd) and GoBGP, each in its own namespace pair (see
//! `netns.rs`). Gated by `ROUTED_E2E=1`; with it set a missing daemon is a failure.
//!
//! Every daemon goes through the same scenario (`exercise`): eBGP session Established;
//! our originated blocks arrive with next hop = our address; the daemon's prefix shows up
//! in our best routes; the daemon is killed (SIGKILL) and our speaker keeps its routes as
//! stale, then refreshes them when it comes back; the daemon is frozen (SIGSTOP), our hold
//! timer (9 s) expires and its routes are withdrawn. BIRD also checks TCP MD5.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::harness::{init_tracing, peer_status, wait_for, wait_route, wait_state};
use super::netns::{e2e_enabled, require, Topology};
use crate::bgp::fsm::State;
use crate::bgp::speaker::{PeerSpec, Speaker, SpeakerConfig, SpeakerHandle};

const OUR_AS: u32 = 64512;
const WAIT: Duration = Duration::from_secs(40);
const OUR_BLOCKS: [&str; 2] = ["10.244.1.0/26", "10.244.1.64/26"];
const THEIR_PREFIX: &str = "192.0.2.0/24";
/// Announced by the daemon before its restart only: must vanish after End-of-RIB.
const GONE_AFTER_RESTART: &str = "198.51.100.0/24";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    Bird,
    Frr,
    Gobgp,
}

impl Daemon {
    fn asn(self) -> u32 {
        match self {
            Daemon::Bird => 65001,
            Daemon::Frr => 65002,
            Daemon::Gobgp => 65003,
        }
    }

    fn programs(self) -> &'static [&'static str] {
        match self {
            Daemon::Bird => &["bird", "birdc"],
            Daemon::Frr => &["/usr/lib/frr/bgpd", "vtysh"],
            Daemon::Gobgp => &["gobgpd", "gobgp"],
        }
    }

    /// Write the config and start the daemon; `second_life`: after a restart (R bit, and
    /// only `THEIR_PREFIX` announced).
    fn start(self, topo: &Topology, password: Option<&str>, second_life: bool) -> u32 {
        let (node, peer) = (topo.node_ip, topo.peer_ip);
        let asn = self.asn();
        let prefixes: Vec<&str> = if second_life {
            vec![THEIR_PREFIX]
        } else {
            vec![THEIR_PREFIX, GONE_AFTER_RESTART]
        };
        match self {
            Daemon::Bird => {
                let routes: String = prefixes
                    .iter()
                    .map(|p| format!("  route {p} blackhole;\n"))
                    .collect();
                let password = password.map_or(String::new(), |p| format!("  password \"{p}\";\n"));
                let conf = format!(
                    "router id {peer};\nprotocol device {{ }}\n\
                     protocol static {{\n  ipv4;\n{routes}}}\n\
                     protocol bgp routed {{\n  local {peer} as {asn};\n  neighbor {node} as {OUR_AS};\n\
                     hold time 9;\n  keepalive time 3;\n  connect retry time 2;\n  graceful restart on;\n{password}\
                     ipv4 {{ import all; export all; }};\n}}\n"
                );
                let path = topo.path("bird.conf");
                std::fs::write(&path, conf).expect("write bird.conf");
                let sock = topo.path("bird.ctl");
                let mut args = vec![
                    "bird".to_owned(),
                    "-f".to_owned(),
                    "-c".to_owned(),
                    path.display().to_string(),
                    "-s".to_owned(),
                    sock.display().to_string(),
                    "-P".to_owned(),
                    topo.path("bird.pid").display().to_string(),
                ];
                if second_life {
                    args.push("-R".to_owned());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                topo.spawn_peer(&args, "bird.log")
            }
            Daemon::Frr => {
                let networks: String = prefixes
                    .iter()
                    .map(|p| format!("  network {p}\n"))
                    .collect();
                let conf = format!(
                    "frr defaults traditional\nhostname frrpeer\n!\nrouter bgp {asn}\n bgp router-id {peer}\n\
                     no bgp ebgp-requires-policy\n no bgp network import-check\n bgp graceful-restart\n\
                     neighbor {node} remote-as {OUR_AS}\n neighbor {node} timers 3 9\n\
                     neighbor {node} timers connect 2\n address-family ipv4 unicast\n{networks} exit-address-family\n!\n"
                );
                let path = topo.path("bgpd.conf");
                std::fs::write(&path, conf).expect("write bgpd.conf");
                let vty = topo.path("vty");
                std::fs::create_dir_all(&vty).expect("vty dir");
                let args = [
                    "/usr/lib/frr/bgpd".to_owned(),
                    "-f".to_owned(),
                    path.display().to_string(),
                    "-i".to_owned(),
                    topo.path("bgpd.pid").display().to_string(),
                    "-Z".to_owned(),
                    "-S".to_owned(),
                    "-n".to_owned(),
                    "-P".to_owned(),
                    "0".to_owned(),
                    "--vty_socket".to_owned(),
                    vty.display().to_string(),
                    "--log".to_owned(),
                    "stdout".to_owned(),
                ];
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                topo.spawn_peer(&args, "bgpd.log")
            }
            Daemon::Gobgp => {
                let conf = format!(
                    "[global.config]\n  as = {asn}\n  router-id = \"{peer}\"\n  port = 179\n\
                     local-address-list = [\"{peer}\"]\n\
                     [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{node}\"\n    peer-as = {OUR_AS}\n\
                     [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n    connect-retry = 2\n\
                     [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n\
                     [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv4-unicast\"\n\
                     [neighbors.afi-safis.mp-graceful-restart.config]\n    enabled = true\n"
                );
                let path = topo.path("gobgpd.toml");
                std::fs::write(&path, conf).expect("write gobgpd.toml");
                let config = path.display().to_string();
                let mut args = vec![
                    "gobgpd",
                    "-f",
                    &config,
                    "-p",
                    "--pprof-disable",
                    "--api-hosts",
                    "127.0.0.1:50051",
                ];
                if second_life {
                    args.push("-r");
                }
                let pid = topo.spawn_peer(&args, "gobgpd.log");
                // The CLI can answer before gobgpd's API is ready and drop the route
                // silently: add until the RIB lists it.
                for prefix in prefixes {
                    let added = (0..100).any(|_| {
                        topo.exec_peer(&["gobgp", "global", "rib", "add", prefix]);
                        let listed = topo.exec_peer(&["gobgp", "global", "rib"]).contains(prefix);
                        if !listed {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        listed
                    });
                    assert!(
                        added,
                        "gobgp would not take {prefix}: {}",
                        topo.log("gobgpd.log")
                    );
                }
                pid
            }
        }
    }

    /// The daemon's table, as text.
    fn show_routes(self, topo: &Topology) -> String {
        match self {
            Daemon::Bird => {
                let sock = topo.path("bird.ctl").display().to_string();
                topo.exec_peer(&["birdc", "-s", &sock, "show", "route"])
            }
            Daemon::Frr => {
                let vty = topo.path("vty").display().to_string();
                topo.exec_peer(&[
                    "vtysh",
                    "--vty_socket",
                    &vty,
                    "-d",
                    "bgpd",
                    "-c",
                    "show bgp ipv4 unicast",
                ])
            }
            Daemon::Gobgp => topo.exec_peer(&["gobgp", "global", "rib"]),
        }
    }

    fn log(self, topo: &Topology) -> String {
        topo.log(match self {
            Daemon::Bird => "bird.log",
            Daemon::Frr => "bgpd.log",
            Daemon::Gobgp => "gobgpd.log",
        })
    }
}

/// Whether `table` lists `prefix` with next hop `next_hop` (within the entry's text).
fn table_has(table: &str, prefix: &str, next_hop: &str) -> bool {
    table.match_indices(prefix).any(|(at, _)| {
        let entry: String = table[at..].chars().take(160).collect();
        entry.contains(next_hop)
    })
}

fn peer_name(topo: &Topology) -> String {
    format!("Global_{}", topo.peer_ip)
}

fn spec(topo: &Topology, daemon: Daemon, password: Option<&str>) -> PeerSpec {
    let mut spec = PeerSpec::new(
        peer_name(topo),
        "global",
        IpAddr::V4(topo.peer_ip),
        OUR_AS,
        daemon.asn(),
    );
    spec.source_address = Some(IpAddr::V4(topo.node_ip));
    spec.timers.hold_time = 9;
    spec.timers.keepalive = Some(Duration::from_secs(3));
    spec.password = password.map(str::to_owned);
    spec
}

async fn start_speaker(topo: &Topology) -> Speaker {
    let mut config = SpeakerConfig::new(topo.node_ip, OUR_AS);
    config.listen_addr = Some(SocketAddr::new(IpAddr::V4(topo.node_ip), 179));
    config.connect_retry = Duration::from_secs(1);
    Speaker::start(config)
        .await
        .expect("start speaker in node netns")
}

async fn wait_table(topo: &Topology, daemon: Daemon, prefix: &str, present: bool) {
    let node = topo.node_ip.to_string();
    let ok = tokio::time::timeout(WAIT, async {
        loop {
            let table = daemon.show_routes(topo);
            if table_has(&table, prefix, &node) == present {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "{daemon:?}: {prefix} via {node} present={present} never seen:\n{}\nlog:\n{}",
        daemon.show_routes(topo),
        daemon.log(topo)
    );
}

async fn wait_established(handle: &SpeakerHandle, topo: &Topology, daemon: Daemon) {
    let name = peer_name(topo);
    let up = tokio::time::timeout(WAIT, wait_state(handle, &name, State::Established, WAIT)).await;
    assert!(
        up.is_ok(),
        "{daemon:?} never Established: {:?}\nlog:\n{}",
        peer_status(handle, &name).await,
        daemon.log(topo)
    );
}

/// The scenario every daemon goes through.
fn exercise(daemon: Daemon, tag: &str, subnet: u8) {
    if !e2e_enabled(&format!("interop {daemon:?}")) {
        return;
    }
    for program in daemon.programs() {
        require(program);
    }
    init_tracing();
    let topo = Topology::create(tag, subnet);
    let peer_ip = IpAddr::V4(topo.peer_ip);
    let first = daemon.start(&topo, None, false);
    topo.in_node(|| async {
        let speaker = start_speaker(&topo).await;
        let handle = speaker.handle();
        handle
            .set_originated(
                OUR_BLOCKS
                    .iter()
                    .map(|b| b.parse().expect("block"))
                    .collect::<BTreeSet<_>>(),
            )
            .expect("speaker");
        handle
            .set_peers(vec![spec(&topo, daemon, None)])
            .expect("speaker");
        wait_established(&handle, &topo, daemon).await;

        // Both ways.
        for block in OUR_BLOCKS {
            wait_table(&topo, daemon, block, true).await;
        }
        wait_route(&handle, THEIR_PREFIX, &[peer_ip], WAIT).await;
        wait_route(&handle, GONE_AFTER_RESTART, &[peer_ip], WAIT).await;
        let status = peer_status(&handle, &peer_name(&topo))
            .await
            .expect("status");
        assert_eq!(status.prefixes_advertised, 2);

        // Crash and restart: routes stay (stale), then refresh.
        topo.signal(first, libc::SIGKILL);
        wait_for("session down after kill", WAIT, || async {
            let s = peer_status(&handle, &peer_name(&topo)).await?;
            (s.state != State::Established).then_some(())
        })
        .await;
        let kept = handle.best_routes();
        assert!(
            kept.iter().any(|r| r.prefix.to_string() == THEIR_PREFIX),
            "{daemon:?}: routes dropped instead of kept stale: {kept:?}"
        );
        let second = daemon.start(&topo, None, true);
        wait_established(&handle, &topo, daemon).await;
        wait_route(&handle, THEIR_PREFIX, &[peer_ip], WAIT).await;
        wait_route(&handle, GONE_AFTER_RESTART, &[], WAIT).await;
        for block in OUR_BLOCKS {
            wait_table(&topo, daemon, block, true).await;
        }

        // Freeze: our hold timer (9 s) expires and the routes go.
        topo.signal(second, libc::SIGSTOP);
        let started = std::time::Instant::now();
        wait_route(&handle, THEIR_PREFIX, &[], Duration::from_secs(20)).await;
        assert!(
            started.elapsed() >= Duration::from_secs(5),
            "withdrawn before the hold time"
        );
        let status = peer_status(&handle, &peer_name(&topo))
            .await
            .expect("status");
        assert!(
            status.info.to_lowercase().contains("hold"),
            "{daemon:?}: {}",
            status.info
        );
        topo.signal(second, libc::SIGCONT);
        speaker.shutdown().await;
    });
}

#[test]
fn interop_bird() {
    exercise(Daemon::Bird, "bi", 1);
}

#[test]
fn interop_frr() {
    exercise(Daemon::Frr, "fr", 2);
}

#[test]
fn interop_gobgp() {
    exercise(Daemon::Gobgp, "go", 3);
}

#[test]
fn interop_bird_md5() {
    if !e2e_enabled("interop BIRD MD5") {
        return;
    }
    require("bird");
    require("birdc");
    let topo = Topology::create("md", 4);
    let daemon = Daemon::Bird;
    daemon.start(&topo, Some("s3cret"), false);
    topo.in_node(|| async {
        let speaker = start_speaker(&topo).await;
        let handle = speaker.handle();
        // Wrong password: never Established.
        handle
            .set_peers(vec![spec(&topo, daemon, Some("wrong"))])
            .expect("speaker");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let status = peer_status(&handle, &peer_name(&topo))
            .await
            .expect("status");
        assert_ne!(
            status.state,
            State::Established,
            "wrong MD5 password established"
        );
        // Right password: Established (only this peer's session restarts).
        handle
            .set_peers(vec![spec(&topo, daemon, Some("s3cret"))])
            .expect("speaker");
        wait_established(&handle, &topo, daemon).await;
        wait_route(&handle, THEIR_PREFIX, &[IpAddr::V4(topo.peer_ip)], WAIT).await;
        speaker.shutdown().await;
    });
}
