//! A small multi-node cluster for resilience tests (tests/restart.rs, tests/outage.rs): node
//! namespaces on one bridge in a "rack" namespace (the layout of tests/mesh.rs), an agent per
//! node, pods wired by routed-cni, and the tools these tests watch the data plane with: a
//! continuous ping inside a pod and `ip monitor route` inside a node.
#![allow(dead_code)]

use crate::common::{self, Agent, Netns};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub use common::wait_for;

pub use common::pod_ip;

/// The rack: a namespace with bridge br0 at 10.100.0.254/24.
pub fn rack() -> Netns {
    let rack = Netns::new("rt-rack");
    rack.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    rack.exec_ok(&["ip", "addr", "add", "10.100.0.254/24", "dev", "br0"]);
    rack.exec_ok(&["ip", "link", "set", "br0", "up"]);
    rack
}

/// Nodes `node-1..=n` at 10.100.0.i on the rack, one agent each, all on `url`.
pub struct Lab {
    // Dropped first: agents die before their namespaces go.
    pub agents: Vec<Agent>,
    pub nodes: Vec<Netns>,
    pub rack: Netns,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// More arguments for node i's agent (`{dir}` is the lab's directory).
    pub agent_args: fn(usize) -> Vec<String>,
}

impl Lab {
    /// Creates the pool 10.90.0.0/16 (through routectl in the rack) and starts `n` nodes.
    pub fn start(rack: Netns, url: &str, n: usize) -> Lab {
        Lab::start_with(rack, url, n, |_| Vec::new())
    }

    /// [`Lab::start`], node i's agent started with `agent_args(i)` more arguments.
    pub fn start_with(
        rack: Netns,
        url: &str,
        n: usize,
        agent_args: fn(usize) -> Vec<String>,
    ) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut lab = Lab {
            agents: Vec::new(),
            nodes: Vec::new(),
            rack,
            url: url.to_string(),
            dir,
            agent_args,
        };
        lab.routectl_ok(&["pool", "create", "lab-pods", "--cidr", "10.90.0.0/16"]);
        for i in 1..=n {
            let node = Netns::node_on_bridge(
                "rt-rn",
                &lab.rack,
                &format!("p{i}"),
                "br0",
                &Lab::address(i),
                "10.100.0.254",
            );
            lab.nodes.push(node);
        }
        for i in 1..=n {
            let agent = lab.start_agent(i);
            lab.agents.push(agent);
        }
        lab
    }

    /// `10.100.0.i/24`.
    pub fn address(i: usize) -> String {
        format!("10.100.0.{i}/24")
    }

    pub fn node(&self, i: usize) -> &Netns {
        &self.nodes[i - 1]
    }

    pub fn agent(&self, i: usize) -> &Agent {
        &self.agents[i - 1]
    }

    pub fn agent_mut(&mut self, i: usize) -> &mut Agent {
        &mut self.agents[i - 1]
    }

    /// Starts node `i`'s agent (again) and waits until it is ready.
    pub fn start_agent(&self, i: usize) -> Agent {
        let dir = self.dir.path().display().to_string();
        let extra: Vec<String> = (self.agent_args)(i)
            .into_iter()
            .map(|a| a.replace("{dir}", &dir))
            .collect();
        Agent::start_with(
            self.node(i),
            &format!("node-{i}"),
            &self.url,
            &Lab::address(i),
            self.dir.path(),
            &extra,
        )
    }

    /// Node `i`'s agent log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log"))).unwrap_or_default()
    }

    /// routectl against the lab's datastore, run inside the rack (where etcd listens).
    pub fn routectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.rack.name])
            .arg(common::routectl())
            .args(args)
            .env("ROUTED_DATASTORE", &self.url)
            .output()
            .expect("run routectl");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub fn routectl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.routectl(args);
        assert!(ok, "routectl {args:?}: {out}");
        out
    }

    /// CNI ADD of a pod named `cid` on node `i`; the pod namespace and the plugin's answer.
    pub fn add_pod(&self, i: usize, pod: &Netns, cid: &str) -> (i32, String) {
        common::cni_add(self.node(i), self.agent(i), pod, cid)
    }

    /// A new pod on node `i` (ADD must succeed): its namespace and address.
    pub fn pod(&self, i: usize, cid: &str) -> (Netns, String) {
        let pod = Netns::new("rt-rp");
        let (code, out) = self.add_pod(i, &pod, cid);
        assert_eq!(code, 0, "ADD of {cid} on node-{i}: {out}");
        let ip = pod_ip(&out);
        (pod, ip)
    }

    /// `ip -4 route show proto N` on node `i`.
    pub fn routes(&self, i: usize, protocol: u8) -> String {
        self.node(i)
            .exec_ok(&["ip", "-4", "route", "show", "proto", &protocol.to_string()])
    }

    /// `routectl status -o json` through node `i`'s agent socket.
    pub fn bgp_status(&self, i: usize) -> Result<serde_json::Value, String> {
        let out = Command::new(common::routectl())
            .args(["status", "--socket"])
            .arg(&self.agent(i).socket)
            .args(["-o", "json"])
            .output()
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Waits until node `i` has every other node Established.
    pub fn wait_established(&self, i: usize) {
        let want = self.nodes.len() - 1;
        wait_for(&format!("node-{i}: every session Established"), || {
            let peers = self.bgp_status(i)?;
            let up = peers.as_array().map_or(0, |a| {
                a.iter().filter(|p| p["state"] == "Established").count()
            });
            if up == want {
                Ok(())
            } else {
                Err(format!("{peers}"))
            }
        });
    }

    /// Waits until node `i` routes `prefix` (a learned route, protocol 232).
    pub fn wait_learned(&self, i: usize, prefix: &str) {
        wait_for(&format!("node-{i} learns {prefix}"), || {
            let routes = self.routes(i, 232);
            if routes.lines().any(|l| l.starts_with(&format!("{prefix} "))) {
                Ok(())
            } else {
                Err(routes)
            }
        });
    }
}

/// The /26 block holding `ip` (pool blocks are /26).
pub fn block_of(ip: &str) -> String {
    let ip: std::net::Ipv4Addr = ip.parse().expect("IPv4 address");
    let net = u32::from(ip) & !0x3f;
    format!("{}/26", std::net::Ipv4Addr::from(net))
}

/// A continuous ping inside a pod: `ping -i 0.05 -c COUNT`.
pub struct Ping {
    child: Child,
    count: u32,
    pod: String,
    replies_before: u64,
}

/// The IcmpInEchoReps counter of `netns` (/proc/net/snmp is per network namespace).
fn echo_replies(netns: &str) -> u64 {
    let snmp = common::run_ok("ip", &["netns", "exec", netns, "cat", "/proc/net/snmp"]);
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp: "));
    let (names, values) = (icmp.next(), icmp.next());
    let (Some(names), Some(values)) = (names, values) else {
        panic!("no Icmp lines in /proc/net/snmp of {netns}: {snmp}");
    };
    let at = names
        .split_whitespace()
        .position(|n| n == "InEchoReps")
        .expect("InEchoReps in /proc/net/snmp");
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .expect("an InEchoReps value")
}

/// What a finished ping reported.
#[derive(Debug)]
pub struct PingResult {
    pub transmitted: u32,
    pub received: u32,
    pub output: String,
}

impl Ping {
    /// Starts pinging `destination` from `pod`, 20 packets a second.
    pub fn start(pod: &Netns, destination: &str, count: u32) -> Ping {
        let replies_before = echo_replies(&pod.name);
        let child = Command::new("ip")
            .args(["netns", "exec", &pod.name, "ping", "-n", "-q", "-i", "0.05"])
            .args(["-c", &count.to_string(), destination])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ping is not installed: apt-get install iputils-ping");
        Ping {
            child,
            count,
            pod: pod.name.clone(),
            replies_before,
        }
    }

    /// Waits until the pod has received `replies` echo replies since the ping started (the
    /// kernel's IcmpInEchoReps counter), so what follows happens while traffic flows.
    pub fn wait_replies(&self, replies: u64) {
        wait_for(&format!("{replies} echo replies in {}", self.pod), || {
            let got = echo_replies(&self.pod) - self.replies_before;
            (got >= replies)
                .then_some(())
                .ok_or(format!("{got} so far"))
        });
    }

    /// True while ping is still sending.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for ping to end and parses "N packets transmitted, M received".
    pub fn finish(mut self) -> PingResult {
        let mut output = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut output);
        }
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut output);
        }
        let _ = self.child.wait();
        let line = output
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary in: {output}"));
        let number_before = |word: &str| -> u32 {
            let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            let at = words
                .iter()
                .position(|w| *w == word)
                .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
            words[at - 1]
                .parse()
                .unwrap_or_else(|_| panic!("bad number before {word:?} in {line:?}"))
        };
        let result = PingResult {
            transmitted: number_before("packets"),
            received: number_before("received"),
            output,
        };
        assert_eq!(
            result.transmitted, self.count,
            "ping did not send every packet: {}",
            result.output
        );
        result
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `ip -N monitor route` inside a node, written to a file; `finish` returns every line seen.
/// A marker route (protocol 99, on lo) proves the monitor was listening from before the first
/// event of interest until after the last.
pub struct RouteMonitor {
    child: Child,
    node: String,
    path: PathBuf,
}

const MARKER: &str = "192.0.2.99";

impl RouteMonitor {
    pub fn start(node: &Netns, path: PathBuf) -> RouteMonitor {
        let file = std::fs::File::create(&path).expect("monitor output file");
        let child = Command::new("ip")
            .args(["netns", "exec", &node.name, "ip", "-N", "monitor", "route"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ip monitor");
        let monitor = RouteMonitor {
            child,
            node: node.name.clone(),
            path,
        };
        // Add the marker until the monitor reports it: from then on it sees everything.
        wait_for("ip monitor is listening", || {
            monitor.marker("add");
            let seen = monitor.lines().iter().any(|l| l.contains(MARKER));
            monitor.marker("del");
            if seen {
                Ok(())
            } else {
                Err(monitor.lines().join("\n"))
            }
        });
        monitor
    }

    fn marker(&self, verb: &str) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.node, "ip", "route", verb])
            .args([&format!("{MARKER}/32"), "dev", "lo", "proto", "99"])
            .output();
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Stops the monitor (after it has seen a final marker deletion) and returns its lines.
    pub fn finish(mut self) -> Vec<String> {
        let markers_deleted = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| l.contains(MARKER) && l.starts_with("Deleted"))
                .count()
        };
        let before = markers_deleted(&self.lines());
        self.marker("add");
        self.marker("del");
        wait_for("ip monitor saw the final marker", || {
            let lines = self.lines();
            if markers_deleted(&lines) > before {
                Ok(())
            } else {
                Err(lines.join("\n"))
            }
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Route deletions of routed's protocols (230 workload, 231 blackhole, 232 BGP) in monitor
/// output.
pub fn deleted_routes_of_ours(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("Deleted"))
        .filter(|l| {
            ["proto 230", "proto 231", "proto 232"]
                .iter()
                .any(|p| l.contains(p))
        })
        .cloned()
        .collect()
}
