//! BFD interop with FRR 8.4 (zebra + bfdd + bgpd, `neighbor X bfd`) and BIRD 2
//! (`protocol bfd`, `bfd on`) in a namespace pair (`netns.rs`). Gated by `ROUTED_E2E=1`;
//! with it set a missing daemon is a failure.
//!
//! Scenario: eBGP with hold time 90 s on both sides (so the hold timer cannot be what ends
//! the session) and BFD on both sides; the BFD session comes Up on both with the
//! negotiated intervals (ours 100 ms × 3; FRR's 300 ms × 3: we transmit every 300 ms and
//! detect in 900 ms; BIRD's defaults, RX 10 ms, TX 100 ms × 5: every 100 ms, 500 ms); then the path is cut with an nftables drop in our namespace (no link event,
//! TCP notices nothing): BFD ends our session ("BFD down"), the route learned from the
//! daemon leaves our RIB (what the route reconciler programs into the kernel) and the
//! daemon withdraws our blocks. Lifting the drop brings BFD Up, then BGP, and the route back.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::harness::{init_tracing, peer_status, wait_for, wait_route};
use super::netns::{e2e_enabled, require, run, Topology};
use crate::bfd::{BfdSpec, Intervals, State as BfdState};
use crate::bgp::fsm::State;
use crate::bgp::speaker::{PeerSpec, Speaker, SpeakerConfig};

const OUR_AS: u32 = 64512;
const FRR_AS: u32 = 65002;
const BIRD_AS: u32 = 65001;
const WAIT: Duration = Duration::from_secs(40);
const OUR_BLOCK: &str = "10.244.7.0/26";
const THEIR_PREFIX: &str = "192.0.2.0/24";

/// zebra, bfdd and bgpd in the peer namespace (as user frr, like examples/lab.sh), talking
/// over their own zserv socket.
fn start_frr(topo: &Topology) {
    let node = topo.node_ip;
    let peer = topo.peer_ip;
    let vty = topo.path("vty");
    std::fs::create_dir_all(&vty).expect("vty dir");
    let zserv = topo.path("zserv.api").display().to_string();
    let vty = vty.display().to_string();
    std::fs::write(topo.path("zebra.conf"), "hostname frrpeer\n").expect("zebra.conf");
    std::fs::write(topo.path("bfdd.conf"), "hostname frrpeer\nbfd\n!\n").expect("bfdd.conf");
    let bgpd = format!(
        "frr defaults traditional\nhostname frrpeer\n!\nrouter bgp {FRR_AS}\n bgp router-id {peer}\n\
         no bgp ebgp-requires-policy\n no bgp network import-check\n\
         neighbor {node} remote-as {OUR_AS}\n neighbor {node} timers 30 90\n\
         neighbor {node} timers connect 2\n neighbor {node} bfd\n\
         address-family ipv4 unicast\n  network {THEIR_PREFIX}\n exit-address-family\n!\n"
    );
    std::fs::write(topo.path("bgpd.conf"), bgpd).expect("bgpd.conf");
    // FRR's daemons run as its own user (root is not in its vty group): the directory is theirs.
    let dir = topo.dir.path().display().to_string();
    run(&["chown", "-R", "frr:frr", &dir]);
    let common = |name: &str| -> Vec<String> {
        [
            format!("/usr/lib/frr/{name}"),
            "-f".into(),
            topo.path(&format!("{name}.conf")).display().to_string(),
            "-i".into(),
            topo.path(&format!("{name}.pid")).display().to_string(),
            "-z".into(),
            zserv.clone(),
            "--vty_socket".into(),
            vty.clone(),
            "-u".into(),
            "frr".into(),
            "-g".into(),
            "frr".into(),
            "-P".into(),
            "0".into(),
            "--log".into(),
            "stdout".into(),
        ]
        .into_iter()
        .collect()
    };
    let zebra = common("zebra");
    let args: Vec<&str> = zebra.iter().map(String::as_str).collect();
    topo.spawn_peer(&args, "zebra.log");
    let socket = topo.path("zserv.api");
    let mut tries = 0;
    while !socket.exists() && tries < 100 {
        std::thread::sleep(Duration::from_millis(100));
        tries += 1;
    }
    assert!(
        socket.exists(),
        "zebra never made its socket: {}",
        topo.log("zebra.log")
    );
    let mut bfdd = common("bfdd");
    bfdd.push("--bfdctl".into());
    bfdd.push(topo.path("bfdd.sock").display().to_string());
    let args: Vec<&str> = bfdd.iter().map(String::as_str).collect();
    topo.spawn_peer(&args, "bfdd.log");
    let bgpd = common("bgpd");
    let args: Vec<&str> = bgpd.iter().map(String::as_str).collect();
    topo.spawn_peer(&args, "bgpd.log");
}

/// BIRD with `protocol bfd` at its defaults and `bfd on` on the session. `error wait
/// time`: BIRD restarts the protocol 1 s (not 60 s) after BFD brought it down.
fn start_bird(topo: &Topology) {
    let (node, peer) = (topo.node_ip, topo.peer_ip);
    let conf = format!(
        "router id {peer};\nprotocol device {{ }}\nprotocol bfd {{ interface \"*\" {{ }}; }}\n\
         protocol static {{\n  ipv4;\n  route {THEIR_PREFIX} blackhole;\n}}\n\
         protocol bgp routed {{\n  local {peer} as {BIRD_AS};\n  neighbor {node} as {OUR_AS};\n\
         hold time 90;\n  keepalive time 30;\n  connect retry time 2;\n  error wait time 1, 5;\n  bfd on;\n\
         ipv4 {{ import all; export all; }};\n}}\n"
    );
    let path = topo.path("bird.conf");
    std::fs::write(&path, conf).expect("bird.conf");
    let path = path.display().to_string();
    let sock = topo.path("bird.ctl").display().to_string();
    let pid = topo.path("bird.pid").display().to_string();
    topo.spawn_peer(
        &["bird", "-f", "-c", &path, "-s", &sock, "-P", &pid],
        "bird.log",
    );
}

fn birdc(topo: &Topology, command: &[&str]) -> String {
    let sock = topo.path("bird.ctl").display().to_string();
    let mut args = vec!["birdc", "-s", &sock];
    args.extend_from_slice(command);
    topo.exec_peer(&args)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    Frr,
    Bird,
}

impl Daemon {
    fn asn(self) -> u32 {
        match self {
            Daemon::Frr => FRR_AS,
            Daemon::Bird => BIRD_AS,
        }
    }

    /// The daemon's BGP table lists `prefix`.
    fn has(self, topo: &Topology, prefix: &str) -> bool {
        match self {
            Daemon::Frr => frr_has(topo, prefix),
            Daemon::Bird => birdc(topo, &["show", "route", "protocol", "routed"]).contains(prefix),
        }
    }

    /// The daemon says its BFD session is up.
    fn bfd_up(self, topo: &Topology) -> bool {
        match self {
            Daemon::Frr => vtysh(topo, "bfdd", "show bfd peers").contains("Status: up"),
            Daemon::Bird => birdc(topo, &["show", "bfd", "sessions"])
                .lines()
                .any(|l| l.contains(&topo.node_ip.to_string()) && l.contains(" Up ")),
        }
    }

    fn diagnostics(self, topo: &Topology) -> String {
        match self {
            Daemon::Frr => format!(
                "{}\n{}\nbfdd log:\n{}\nbgpd log:\n{}",
                vtysh(topo, "bfdd", "show bfd peers"),
                vtysh(topo, "bgpd", "show bgp ipv4 unicast"),
                topo.log("bfdd.log"),
                topo.log("bgpd.log")
            ),
            Daemon::Bird => format!(
                "{}\n{}\nlog:\n{}",
                birdc(topo, &["show", "bfd", "sessions"]),
                birdc(topo, &["show", "route"]),
                topo.log("bird.log")
            ),
        }
    }
}

fn vtysh(topo: &Topology, daemon: &str, command: &str) -> String {
    let vty = topo.path("vty").display().to_string();
    topo.exec_peer(&["vtysh", "--vty_socket", &vty, "-d", daemon, "-c", command])
}

/// FRR's BGP table lists `prefix` (from us).
fn frr_has(topo: &Topology, prefix: &str) -> bool {
    vtysh(topo, "bgpd", "show bgp ipv4 unicast").contains(prefix)
}

async fn wait_daemon(
    topo: &Topology,
    daemon: Daemon,
    what: &str,
    check: impl Fn(&Topology) -> bool,
) {
    let seen = tokio::time::timeout(WAIT, async {
        while !check(topo) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "{daemon:?} never showed {what}:\n{}",
        daemon.diagnostics(topo)
    );
}

/// Drop everything between the two addresses in the node namespace (no link event).
fn cut(topo: &Topology, on: bool) {
    let ns = topo.node_ns.as_str();
    if on {
        let peer = topo.peer_ip.to_string();
        run(&[
            "ip", "netns", "exec", ns, "nft", "add", "table", "inet", "bfdcut",
        ]);
        for (chain, hook, field) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
            let spec = format!("{{ type filter hook {hook} priority 0; }}");
            run(&[
                "ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "bfdcut", chain, &spec,
            ]);
            run(&[
                "ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "bfdcut", chain, "ip",
                field, &peer, "drop",
            ]);
        }
    } else {
        run(&[
            "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "bfdcut",
        ]);
    }
}

fn spec(topo: &Topology, daemon: Daemon) -> PeerSpec {
    let mut spec = PeerSpec::new(
        format!("Global_{}", topo.peer_ip),
        "global",
        IpAddr::V4(topo.peer_ip),
        OUR_AS,
        daemon.asn(),
    );
    spec.source_address = Some(IpAddr::V4(topo.node_ip));
    spec.timers.hold_time = 90;
    spec.timers.connect_retry = Some(Duration::from_secs(1));
    spec.bfd = Some(BfdSpec {
        intervals: Intervals {
            min_tx: Duration::from_millis(100),
            min_rx: Duration::from_millis(100),
            multiplier: 3,
        },
        graceful: false,
    });
    spec
}

#[test]
fn interop_frr_bfd_up_both_ways_and_a_cut_path_ends_bgp() {
    if !e2e_enabled("interop FRR BFD") {
        return;
    }
    for program in [
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bfdd",
        "/usr/lib/frr/bgpd",
        "vtysh",
        "nft",
    ] {
        require(program);
    }
    let topo = Topology::create("bf", 21);
    start_frr(&topo);
    // FRR 300 ms × 3: TX max(our 100, their RX 300), detection 3 × max(our RX 100, their TX 300).
    exercise(&topo, Daemon::Frr, 300_000, 900_000);
}

#[test]
fn interop_bird_bfd_up_both_ways_and_a_cut_path_ends_bgp() {
    if !e2e_enabled("interop BIRD BFD") {
        return;
    }
    for program in ["bird", "birdc", "nft"] {
        require(program);
    }
    let topo = Topology::create("bb", 22);
    start_bird(&topo);
    // BIRD RX 10 ms, TX 100 ms × 5: TX max(our 100, 10), detection 5 × max(our RX 100, 100).
    exercise(&topo, Daemon::Bird, 100_000, 500_000);
}

/// Up both ways with the negotiated intervals; cut; BFD ends BGP; lift; back.
fn exercise(topo: &Topology, daemon: Daemon, tx_us: u64, detect_us: u64) {
    init_tracing();
    let peer_ip = IpAddr::V4(topo.peer_ip);
    topo.in_node(|| async {
        let mut config = SpeakerConfig::new(topo.node_ip, OUR_AS);
        config.listen_addr = Some(SocketAddr::new(IpAddr::V4(topo.node_ip), 179));
        config.connect_retry = Duration::from_secs(1);
        let speaker = Speaker::start(config).await.expect("speaker");
        let handle = speaker.handle();
        let blocks: BTreeSet<ipnetwork::IpNetwork> =
            [OUR_BLOCK.parse().expect("block")].into_iter().collect();
        handle.set_originated(blocks).expect("speaker");
        handle.set_peers(vec![spec(topo, daemon)]).expect("speaker");
        let name = spec(topo, daemon).name;

        // BGP and BFD Up, both ways, with the negotiated intervals.
        wait_daemon(topo, daemon, "our block", |t| daemon.has(t, OUR_BLOCK)).await;
        wait_route(&handle, THEIR_PREFIX, &[peer_ip], WAIT).await;
        let session = wait_for("BFD Up with the fast timers", WAIT, || async {
            let status = handle.bfd_status().await.ok()?;
            let s = status.sessions.into_iter().find(|s| s.peer == peer_ip)?;
            (s.fsm.state == BfdState::Up && !s.fsm.polling && s.fsm.tx_interval_us == tx_us)
                .then_some(s)
        })
        .await;
        assert_eq!(session.fsm.detection_time_us, detect_us);
        assert!((49152..=65535).contains(&session.source_port));
        wait_daemon(topo, daemon, "BFD up", |t| daemon.bfd_up(t)).await;
        let status = peer_status(&handle, &name).await.expect("status");
        assert_eq!(status.bfd, Some(BfdState::Up));

        // Cut the path: BFD, not the 90 s hold timer, ends the session.
        cut(topo, true);
        wait_route(&handle, THEIR_PREFIX, &[], WAIT).await;
        let status = peer_status(&handle, &name).await.expect("status");
        assert_ne!(status.state, State::Established);
        assert_eq!(status.info, "BFD down");
        assert_eq!(status.bfd, Some(BfdState::Down));
        wait_daemon(topo, daemon, "our block withdrawn", |t| {
            !daemon.has(t, OUR_BLOCK)
        })
        .await;

        // Lift it: BFD Up first, then BGP, and the routes come back.
        cut(topo, false);
        wait_route(&handle, THEIR_PREFIX, &[peer_ip], WAIT).await;
        wait_daemon(topo, daemon, "our block again", |t| {
            daemon.has(t, OUR_BLOCK)
        })
        .await;
        let counters = handle.bfd_status().await.expect("bfd status").counters;
        assert!(counters.malformed.is_empty(), "{counters:?}");
        assert_eq!(counters.bad_ttl, 0);
        speaker.shutdown().await;
    });
}
