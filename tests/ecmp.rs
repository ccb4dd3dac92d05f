//! ECMP from two ToRs into the kernel (issue 4, item 5: "multipath when several best paths").
//! One node, two BIRD 2 ToRs on its rack (eBGP, AS 65001 and 65002) originating the same
//! prefix: the node installs one route through a kernel nexthop group of both ToRs; when one
//! ToR goes away the route moves to the other alone, and the group and the lost ToR's object
//! are deleted. Needs root, BIRD 2 and ROUTED_E2E=1.

mod cluster;
mod common;

use cluster::{wait_for, Lab};
use common::Netns;
use std::process::{Child, Command, Stdio};

const PREFIX: &str = "198.51.100.0/24";

/// A BIRD 2 ToR in its own namespace on the rack; stopped (by its pid) when dropped.
struct Tor {
    child: Child,
    _netns: Netns,
}

impl Tor {
    fn start(lab: &Lab, name: &str, address: &str, asn: u32) -> Tor {
        let netns = Netns::node_on_bridge(
            "rt-tor",
            &lab.rack,
            name,
            "br0",
            &format!("{address}/24"),
            "10.100.0.254",
        );
        let conf = lab.dir.path().join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "router id {address};\nprotocol device {{}}\n\
                 protocol static {{ ipv4; route {PREFIX} blackhole; }}\n\
                 protocol bgp node {{\n  local {address} as {asn};\n  neighbor 10.100.0.1 as 64512;\n\
                 connect retry time 1;\n  ipv4 {{ import none; export all; }};\n}}\n"
            ),
        )
        .expect("write bird.conf");
        let socket = lab.dir.path().join(format!("{name}.ctl"));
        let log = std::fs::File::create(lab.dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ROUTED_E2E=1 needs BIRD 2 (`bird`, Debian package bird2)");
        Tor {
            child,
            _netns: netns,
        }
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Tor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

#[test]
fn two_tors_give_an_ecmp_route_through_a_nexthop_group() {
    if !common::require_e2e("two_tors_give_an_ecmp_route_through_a_nexthop_group") {
        return;
    }
    let (url, _store_dir) = common::sqlite_url();
    let lab = Lab::start(cluster::rack(), &url, 1);
    lab.routectl_ok(&["config", "set", "--as", "64512"]);
    lab.routectl_ok(&[
        "peer",
        "create",
        "tor-a",
        "--peer-ip",
        "10.100.0.201",
        "--as",
        "65001",
    ]);
    lab.routectl_ok(&[
        "peer",
        "create",
        "tor-b",
        "--peer-ip",
        "10.100.0.202",
        "--as",
        "65002",
    ]);
    let mut tor_a = Tor::start(&lab, "tora", "10.100.0.201", 65001);
    let _tor_b = Tor::start(&lab, "torb", "10.100.0.202", 65002);

    let node = lab.node(1);
    let route = || {
        node.exec(&["ip", "route", "show", PREFIX, "proto", "232"])
            .1
    };
    wait_for("an ECMP route over both ToRs", || {
        let text = route();
        let both = text.contains("nexthop via 10.100.0.201 dev eth0")
            && text.contains("nexthop via 10.100.0.202 dev eth0");
        both.then_some(()).ok_or(text)
    });
    let text = route();
    assert!(text.starts_with(&format!("{PREFIX} nhid ")), "{text}");
    let objects = node.exec_ok(&["ip", "nexthop", "show", "protocol", "232"]);
    assert_eq!(
        objects.lines().count(),
        3,
        "two ToRs and their group:\n{objects}"
    );
    assert!(objects.lines().any(|l| l.contains(" group ")), "{objects}");

    // ToR A goes away: the route is through ToR B alone, and the group and A's object go.
    tor_a.stop();
    wait_for("the route through ToR B alone", || {
        let text = route();
        common::routes_via(&text, PREFIX, "via 10.100.0.202 dev eth0")
            .then_some(())
            .ok_or(text)
    });
    wait_for("only ToR B's object left", || {
        let objects = node.exec_ok(&["ip", "nexthop", "show", "protocol", "232"]);
        let only_b = objects.lines().count() == 1 && objects.contains("via 10.100.0.202 dev eth0");
        only_b.then_some(()).ok_or(objects)
    });
}
