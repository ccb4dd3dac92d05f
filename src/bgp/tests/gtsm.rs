//! GTSM (RFC 5082) in network namespaces, against FRR 8.4 (`neighbor X ttl-security hops 1`)
//! and BIRD 2 (`ttl security on`). Gated by `ROUTED_E2E=1`; with it set a missing program is a
//! failure.
//!
//! ```text
//!  netns rg<pid>n (our speaker)     netns rg<pid>r (forwards)         netns rg<pid>f
//!  10.97.1.1 ── veth ── 10.97.1.2  FRR "near"    10.97.2.1 ── veth ── 10.97.2.2  BIRD "far"
//!                                  (1 hop)                            (2 hops, multihop 2)
//! ```
//! Both daemons send TTL 255 and both our peers have `ttl_security: 1`. We are passive towards
//! the near one, so FRR dials us: its socket has `IP_MINTTL` 255 before `connect`, so reaching
//! Established shows our listener's SYN-ACK left with TTL 255 and our check admitted its SYN
//! (TTL 255). The far one's SYNs arrive with TTL 254: the session refuses them
//! (`ttl_security` in the peer's errors), and its SYN-ACKs to our own connection attempts are
//! dropped by the kernel (`TcpExtTCPMinTTLDrop` rises in our namespace). Told the far peer is
//! 2 hops away, the same session comes up (BIRD checks that we send 255).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::harness::{init_tracing, peer_status, wait_for, wait_route};
use super::netns::{block_on_in, e2e_enabled, require, run};
use crate::bgp::fsm::State;
use crate::bgp::speaker::{PeerSpec, Speaker, SpeakerConfig, SpeakerHandle};

const OUR_AS: u32 = 64512;
const NEAR_AS: u32 = 65011;
const FAR_AS: u32 = 65012;
const NODE: Ipv4Addr = Ipv4Addr::new(10, 97, 1, 1);
const NEAR: Ipv4Addr = Ipv4Addr::new(10, 97, 1, 2);
const FAR: Ipv4Addr = Ipv4Addr::new(10, 97, 2, 2);
const NEAR_PREFIX: &str = "198.51.100.0/24";
const FAR_PREFIX: &str = "203.0.113.0/24";
const WAIT: Duration = Duration::from_secs(40);

/// Three namespaces in a line, the BIRDs started in them; all removed on drop.
struct Line {
    node: String,
    router: String,
    far: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Line {
    fn create() -> Line {
        let pid = std::process::id();
        let mut line = Line {
            node: format!("rg{pid}n"),
            router: format!("rg{pid}r"),
            far: format!("rg{pid}f"),
            dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
        };
        for ns in [&line.node, &line.router, &line.far] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        line.link(
            &format!("vg{pid}a"),
            &line.node.clone(),
            "10.97.1.1/24",
            &line.router.clone(),
            "10.97.1.2/24",
        );
        line.link(
            &format!("vg{pid}b"),
            &line.router.clone(),
            "10.97.2.1/24",
            &line.far.clone(),
            "10.97.2.2/24",
        );
        run(&[
            "ip",
            "netns",
            "exec",
            &line.router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        run(&[
            "ip",
            "-n",
            &line.node,
            "route",
            "add",
            "10.97.2.0/24",
            "via",
            "10.97.1.2",
        ]);
        run(&[
            "ip",
            "-n",
            &line.far,
            "route",
            "add",
            "default",
            "via",
            "10.97.2.1",
        ]);
        line.start_frr();
        let far = bird_conf(FAR, FAR_AS, FAR_PREFIX, "  multihop 2;\n");
        line.start_bird("far", &line.far.clone(), &far);
        line
    }

    fn link(&mut self, name: &str, a: &str, a_ip: &str, b: &str, b_ip: &str) {
        let (end_a, end_b) = (format!("{name}x"), format!("{name}y"));
        let (end_a, end_b): (String, String) = (
            end_a.chars().take(15).collect(),
            end_b.chars().take(15).collect(),
        );
        run(&[
            "ip", "link", "add", &end_a, "netns", a, "type", "veth", "peer", "name", &end_b,
            "netns", b,
        ]);
        for (ns, dev, ip) in [(a, &end_a, a_ip), (b, &end_b, b_ip)] {
            run(&["ip", "-n", ns, "addr", "add", ip, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_bird(&mut self, name: &str, ns: &str, conf: &str) {
        let conf_path = self.path(&format!("{name}.conf"));
        std::fs::write(&conf_path, conf).expect("bird.conf");
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("log");
        let err = log.try_clone().expect("log");
        let sock = self.path(&format!("{name}.ctl")).display().to_string();
        let pid = self.path(&format!("{name}.pid")).display().to_string();
        let conf_path = conf_path.display().to_string();
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "bird", "-f", "-c", &conf_path, "-s", &sock, "-P", &pid,
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start bird");
        self.children.push(child);
    }

    /// zebra and bgpd (as user frr) in the router namespace, GTSM for one hop towards us.
    fn start_frr(&mut self) {
        let dir = self.path("frr");
        std::fs::create_dir_all(dir.join("vty")).expect("frr dir");
        std::fs::write(dir.join("zebra.conf"), "hostname near\n").expect("zebra.conf");
        let bgpd = format!(
            "frr defaults traditional\nhostname near\n!\nrouter bgp {NEAR_AS}\n bgp router-id {NEAR}\n\
             no bgp ebgp-requires-policy\n no bgp network import-check\n\
             neighbor {NODE} remote-as {OUR_AS}\n neighbor {NODE} ttl-security hops 1\n\
             neighbor {NODE} timers connect 1\n\
             address-family ipv4 unicast\n  network {NEAR_PREFIX}\n exit-address-family\n!\n"
        );
        std::fs::write(dir.join("bgpd.conf"), bgpd).expect("bgpd.conf");
        run(&["chown", "-R", "frr:frr", &dir.display().to_string()]);
        let router = self.router.clone();
        for daemon in ["zebra", "bgpd"] {
            let path = |name: &str| dir.join(name).display().to_string();
            let log = std::fs::File::create(self.path(&format!("{daemon}.log"))).expect("log");
            let child = Command::new("ip")
                .args(["netns", "exec", &router, &format!("/usr/lib/frr/{daemon}")])
                .args(["-f", &path(&format!("{daemon}.conf"))])
                .args([
                    "-i",
                    &path(&format!("{daemon}.pid")),
                    "-z",
                    &path("zserv.api"),
                ])
                .args([
                    "--vty_socket",
                    &path("vty"),
                    "-u",
                    "frr",
                    "-g",
                    "frr",
                    "-P",
                    "0",
                ])
                .args(["--log", "stdout"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start an FRR daemon");
            self.children.push(child);
            if daemon == "zebra" {
                let socket = dir.join("zserv.api");
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while !socket.exists() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "zebra never made its socket"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn birdc(&self, name: &str, command: &[&str]) -> String {
        let sock = self.path(&format!("{name}.ctl")).display().to_string();
        let output = Command::new("birdc")
            .args(["-s", &sock])
            .args(command)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `TcpExtTCPMinTTLDrop` of our namespace: segments the kernel dropped for IP_MINTTL.
    fn min_ttl_drops(&self) -> u64 {
        let output = run(&[
            "ip",
            "netns",
            "exec",
            &self.node,
            "cat",
            "/proc/net/netstat",
        ]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
        let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else {
            panic!("no TcpExt in /proc/net/netstat: {text}");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "TCPMinTTLDrop")
            .and_then(|(_, value)| value.parse().ok())
            .expect("TCPMinTTLDrop counter")
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["zebra", "bgpd", "far"] {
                let log = std::fs::read_to_string(self.path(&format!("{name}.log")));
                eprintln!("==== {name}:\n{}", log.unwrap_or_default());
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.node, &self.router, &self.far] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// BIRD with GTSM towards our node; `extra`: more session options.
fn bird_conf(local: Ipv4Addr, asn: u32, prefix: &str, extra: &str) -> String {
    format!(
        "router id {local};\nprotocol device {{ }}\n\
         protocol static {{\n  ipv4;\n  route {prefix} blackhole;\n}}\n\
         protocol bgp routed {{\n  local {local} as {asn};\n  neighbor {NODE} as {OUR_AS};\n\
         ttl security on;\n{extra}  connect retry time 1;\n  error wait time 1, 2;\n\
         ipv4 {{ import all; export all; }};\n}}\n"
    )
}

fn spec(address: Ipv4Addr, asn: u32, hops: u8, passive: bool) -> PeerSpec {
    let mut spec = PeerSpec::new(
        format!("Global_{address}"),
        "global",
        IpAddr::V4(address),
        OUR_AS,
        asn,
    );
    spec.source_address = Some(IpAddr::V4(NODE));
    spec.timers.connect_retry = Some(Duration::from_secs(1));
    spec.ttl_security = Some(hops);
    spec.passive = passive;
    spec
}

async fn wait_established(handle: &SpeakerHandle, name: &str) {
    wait_for(name, WAIT, || async {
        let status = peer_status(handle, name).await?;
        (status.state == State::Established).then_some(())
    })
    .await;
}

#[test]
fn gtsm_refuses_a_peer_two_hops_away_and_accepts_one_hop() {
    if !e2e_enabled("GTSM") {
        return;
    }
    for program in [
        "bird",
        "birdc",
        "sysctl",
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
    ] {
        require(program);
    }
    init_tracing();
    let line = Line::create();
    block_on_in(&line.node, || exercise(&line));
}

async fn exercise(line: &Line) {
    let mut config = SpeakerConfig::new(NODE, OUR_AS);
    config.listen_addr = Some(SocketAddr::new(IpAddr::V4(NODE), 179));
    config.connect_retry = Duration::from_secs(1);
    let speaker = Speaker::start(config).await.expect("speaker");
    let handle = speaker.handle();
    let blocks: BTreeSet<ipnetwork::IpNetwork> = ["10.244.9.0/26".parse().expect("block")]
        .into_iter()
        .collect();
    handle.set_originated(blocks).expect("speaker");
    let drops_before = line.min_ttl_drops();
    handle
        .set_peers(vec![
            spec(NEAR, NEAR_AS, 1, true),
            spec(FAR, FAR_AS, 1, false),
        ])
        .expect("speaker");

    // One hop: FRR dials us and reaches Established (our SYN-ACK had TTL 255), the route is
    // learned.
    let near = format!("Global_{NEAR}");
    wait_established(&handle, &near).await;
    wait_route(&handle, NEAR_PREFIX, &[IpAddr::V4(NEAR)], WAIT).await;

    // Two hops: its connections are refused by the session, ours die in the kernel.
    let far = format!("Global_{FAR}");
    let refused = wait_for("the far peer's connection refused", WAIT, || async {
        let status = peer_status(&handle, &far).await?;
        (status.errors.get("ttl_security").copied().unwrap_or(0) > 0).then_some(status)
    })
    .await;
    assert_ne!(refused.state, State::Established);
    assert!(
        refused.info.contains("TTL 254") && refused.info.contains("minimum 255"),
        "{}",
        refused.info
    );
    wait_for("SYN-ACKs dropped by IP_MINTTL", WAIT, || async {
        (line.min_ttl_drops() > drops_before).then_some(())
    })
    .await;
    let shown = line.birdc("far", &["show", "protocols", "routed"]);
    assert!(!shown.contains("Established"), "{shown}");

    // Told the far peer is 2 hops away, the same peer comes up.
    handle
        .set_peers(vec![
            spec(NEAR, NEAR_AS, 1, true),
            spec(FAR, FAR_AS, 2, false),
        ])
        .expect("speaker");
    wait_established(&handle, &far).await;
    wait_route(&handle, FAR_PREFIX, &[IpAddr::V4(FAR)], WAIT).await;
    let status = peer_status(&handle, &near).await.expect("near status");
    assert_eq!(
        status.state,
        State::Established,
        "the near session is untouched"
    );
    speaker.shutdown().await;
}
