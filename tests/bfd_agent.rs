//! BFD at the agent level, into the kernel (issue 17): the real `routed` agent (embedded
//! SQLite store) on node-1 of a rack, peered over eBGP with FRR 8.4 (zebra + bfdd + bgpd,
//! `neighbor X bfd`) with BFD on both sides and hold time 90 s. The path is cut with an
//! nftables drop in the node's namespace (no link event, TCP notices nothing): the route
//! learned from FRR leaves the node's kernel (`ip route`, protocol 232) and FRR withdraws
//! the node's block; lifting the drop brings both back. Needs root, FRR, nft and
//! ROUTED_E2E=1 (then a missing program fails the test).

mod cluster;
mod common;

use cluster::{block_of, wait_for, Lab};
use common::Netns;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const FRR_PREFIX: &str = "198.51.100.0/24";
const FRR_ADDRESS: &str = "10.100.0.203";
const FRR_AS: u32 = 65002;

/// zebra, bfdd and bgpd in their own namespace on the rack, as user frr; stopped (by pid)
/// when dropped.
struct Frr {
    children: Vec<Child>,
    dir: PathBuf,
    netns: Netns,
}

impl Frr {
    fn start(lab: &Lab) -> Frr {
        for program in ["zebra", "bfdd", "bgpd"] {
            let path = format!("/usr/lib/frr/{program}");
            assert!(
                Path::new(&path).is_file(),
                "{path} is missing (apt-get install frr)"
            );
        }
        let netns = Netns::node_on_bridge(
            "rt-bfdfrr",
            &lab.rack,
            "frr0",
            "br0",
            &format!("{FRR_ADDRESS}/24"),
            "10.100.0.254",
        );
        let dir = lab.dir.path().join("frr");
        std::fs::create_dir_all(dir.join("vty")).expect("frr dir");
        std::fs::write(dir.join("zebra.conf"), "hostname tor\n").expect("zebra.conf");
        std::fs::write(dir.join("bfdd.conf"), "hostname tor\nbfd\n!\n").expect("bfdd.conf");
        let bgpd = format!(
            "frr defaults traditional\nhostname tor\n!\nrouter bgp {FRR_AS}\n bgp router-id {FRR_ADDRESS}\n\
             no bgp ebgp-requires-policy\n no bgp network import-check\n\
             neighbor 10.100.0.1 remote-as 64512\n neighbor 10.100.0.1 timers 30 90\n\
             neighbor 10.100.0.1 timers connect 1\n neighbor 10.100.0.1 bfd\n\
             address-family ipv4 unicast\n  network {FRR_PREFIX}\n exit-address-family\n!\n"
        );
        std::fs::write(dir.join("bgpd.conf"), bgpd).expect("bgpd.conf");
        common::run_ok("chown", &["-R", "frr:frr", &dir.display().to_string()]);
        let mut frr = Frr {
            children: Vec::new(),
            dir,
            netns,
        };
        frr.spawn("zebra", &[]);
        let socket = frr.dir.join("zserv.api");
        common::poll_until(
            "zebra's socket",
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(100),
            || {
                socket
                    .exists()
                    .then_some(())
                    .ok_or_else(|| frr.log("zebra"))
            },
        );
        let bfdctl = frr.dir.join("bfdd.sock").display().to_string();
        frr.spawn("bfdd", &["--bfdctl", &bfdctl]);
        frr.spawn("bgpd", &[]);
        frr
    }

    fn spawn(&mut self, daemon: &str, extra: &[&str]) {
        let path = |name: &str| self.dir.join(name).display().to_string();
        let log = std::fs::File::create(self.dir.join(format!("{daemon}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns.name])
            .arg(format!("/usr/lib/frr/{daemon}"))
            .args(["-f", &path(&format!("{daemon}.conf"))])
            .args(["-i", &path(&format!("{daemon}.pid"))])
            .args(["-z", &path("zserv.api"), "--vty_socket", &path("vty")])
            .args(["-u", "frr", "-g", "frr", "-P", "0", "--log", "stdout"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start an FRR daemon");
        self.children.push(child);
    }

    fn log(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default()
    }

    fn vtysh(&self, daemon: &str, command: &str) -> String {
        let vty = self.dir.join("vty").display().to_string();
        let out = Command::new("vtysh")
            .args(["--vty_socket", &vty, "-d", daemon, "-c", command])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// FRR's BGP table has `prefix` (from the node).
    fn has(&self, prefix: &str) -> bool {
        self.vtysh("bgpd", "show bgp ipv4 unicast").contains(prefix)
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for daemon in ["bfdd", "bgpd"] {
                eprintln!("==== {daemon}:\n{}", self.log(daemon));
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Drop everything to and from FRR in the node's namespace (no link event), or lift it.
fn cut(node: &Netns, on: bool) {
    if !on {
        node.exec_ok(&["nft", "delete", "table", "inet", "bfdcut"]);
        return;
    }
    node.exec_ok(&["nft", "add", "table", "inet", "bfdcut"]);
    for (chain, hook, field) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
        let spec = format!("{{ type filter hook {hook} priority 0; }}");
        node.exec_ok(&["nft", "add", "chain", "inet", "bfdcut", chain, &spec]);
        node.exec_ok(&[
            "nft",
            "add",
            "rule",
            "inet",
            "bfdcut",
            chain,
            "ip",
            field,
            FRR_ADDRESS,
            "drop",
        ]);
    }
}

#[test]
fn agent_with_bfd_drops_the_learned_route_from_the_kernel_when_the_path_is_cut() {
    if !common::require_e2e("agent BFD cut") {
        return;
    }
    for program in ["nft", "vtysh"] {
        common::run_ok("sh", &["-c", &format!("command -v {program}")]);
    }
    let (url, _store_dir) = common::sqlite_url();
    let lab = Lab::start(cluster::rack(), &url, 1);
    lab.routectl_ok(&["config", "set", "--as", "64512"]);
    lab.routectl_ok(&[
        "peer",
        "create",
        "tor",
        "--peer-ip",
        FRR_ADDRESS,
        "--as",
        "65002",
        "--hold-time",
        "90",
        "--bfd",
        "on",
        "--bfd-interval-ms",
        "100",
    ]);
    let (_pod, pod_ip) = lab.pod(1, "bfd-pod");
    let block = block_of(&pod_ip);
    let frr = Frr::start(&lab);
    let node = lab.node(1);
    let learned = || {
        common::routes_via(
            &lab.routes(1, 232),
            FRR_PREFIX,
            &format!("via {FRR_ADDRESS}"),
        )
    };

    wait_for("the route from FRR in the kernel", || {
        learned().then_some(()).ok_or_else(|| lab.routes(1, 232))
    });
    wait_for("FRR has the node's block", || {
        frr.has(&block)
            .then_some(())
            .ok_or_else(|| frr.vtysh("bgpd", "show bgp ipv4 unicast"))
    });
    wait_for("BFD Up on both sides", || {
        let status = lab.bgp_status(1)?;
        let ours = status.as_array().is_some_and(|peers| {
            peers
                .iter()
                .any(|p| p["address"] == FRR_ADDRESS && p["bfd"] == "Up")
        });
        let theirs = frr.vtysh("bfdd", "show bfd peers").contains("Status: up");
        (ours && theirs).then_some(()).ok_or(format!("{status}"))
    });

    // Cut: BFD (not the 90 s hold timer) ends the session; the route leaves the kernel.
    cut(node, true);
    wait_for("the learned route gone from the kernel", || {
        (!learned()).then_some(()).ok_or_else(|| lab.routes(1, 232))
    });
    let status = lab.bgp_status(1).expect("status");
    let peer = status
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["address"] == FRR_ADDRESS))
        .expect("the FRR peer in status")
        .clone();
    assert_eq!(peer["info"], "BFD down", "{peer}");
    assert_ne!(peer["state"], "Established", "{peer}");
    wait_for("FRR withdraws the node's block", || {
        (!frr.has(&block))
            .then_some(())
            .ok_or_else(|| frr.vtysh("bfdd", "show bfd peers"))
    });

    // Lift it: BFD Up, then BGP, and both routes come back.
    cut(node, false);
    wait_for("the route from FRR back in the kernel", || {
        learned().then_some(()).ok_or_else(|| lab.routes(1, 232))
    });
    wait_for("FRR has the node's block again", || {
        frr.has(&block)
            .then_some(())
            .ok_or_else(|| frr.vtysh("bgpd", "show bgp ipv4 unicast"))
    });
}
