//! The failures behind Calico's IPAM leak reports, with real processes, on both datastores
//! (embedded SQLite and a real etcd): `routed-cni` SIGKILLed in the middle of ADD (address
//! allocated and wired, result not yet printed), and the agent SIGKILLed in the middle of an
//! allocation (written to the datastore, no reply yet). Each time the runtime's CNI GC
//! (`cni.dev/valid-attachments`) tells the agent which attachments live; `routectl ipam check`
//! then names the leak (`handle-without-container`), `routectl ipam repair` releases it, no
//! veth or workload route is left, and the live pod keeps its address and its traffic.
//!
//! The processes are stopped at a named step by `routed::stop_point` (they SIGSTOP themselves
//! there; the test waits for the stopped state, then SIGKILLs them). Needs root and
//! ROUTED_E2E=1.

mod common;

use common::{pod_ip, EtcdServer, Netns};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const NODE: &str = "leak-node";
const NODE_IP: &str = "198.51.100.7";

#[derive(Clone, Copy, Debug)]
enum Store {
    Sqlite,
    Etcd,
}

/// A node namespace with an uplink (a veth pair of its own carrying the default route, so
/// proxy ARP answers for the pods' gateway), its datastore and its agent.
struct Lab {
    node: Netns,
    url: String,
    dir: tempfile::TempDir,
    agent: Child,
    _etcd: Option<EtcdServer>,
}

impl Lab {
    /// `stop_at`: the agent's stop point.
    fn start(store: Store, stop_at: Option<&str>) -> Lab {
        let node = Netns::new("lk-node");
        node.exec_ok(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1",
        ]);
        node.exec_ok(&["ip", "addr", "add", &format!("{NODE_IP}/24"), "dev", "up0"]);
        node.exec_ok(&["ip", "link", "set", "up1", "up"]);
        node.exec_ok(&["ip", "link", "set", "up0", "up"]);
        node.exec_ok(&["ip", "route", "add", "default", "dev", "up0"]);
        let dir = tempfile::tempdir().unwrap();
        let (url, etcd) = match store {
            Store::Sqlite => (
                format!("sqlite://{}", dir.path().join("routed.db").display()),
                None,
            ),
            Store::Etcd => {
                let etcd = EtcdServer::start_in(&node, NODE_IP);
                (etcd.url(), Some(etcd))
            }
        };
        let placeholder = Command::new("true").spawn().unwrap();
        let mut lab = Lab {
            node,
            url,
            dir,
            agent: placeholder,
            _etcd: etcd,
        };
        lab.routectl_ok(&["pool", "create", "pods", "--cidr", "10.78.0.0/16"]);
        let _ = lab.agent.wait();
        lab.agent = spawn_agent(&lab.node, &lab.url, lab.dir.path(), stop_at);
        lab.wait_ready();
        lab
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn conf(&self, version: &str, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"routed","type":"routed-cni","socket":"{}"{extra}}}"#,
            self.socket().display()
        )
    }

    fn wait_ready(&mut self) {
        let client = routed::api::client::Client::new(self.socket());
        common::wait_for("the agent is ready", || {
            if let Ok(Some(status)) = self.agent.try_wait() {
                return Err(format!("the agent exited ({status}): {}", self.log()));
            }
            client
                .get::<serde_json::Value>("/readyz")
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Kills the agent (SIGKILL, by pid) and starts it again, without a stop point.
    fn restart_agent(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        self.agent = spawn_agent(&self.node, &self.url, self.dir.path(), None);
        self.wait_ready();
    }

    /// routectl inside the node namespace (etcd listens there): (exit code, stdout + stderr).
    fn routectl(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .arg(common::routectl())
            .args(["--datastore", &self.url])
            .args(args)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    fn routectl_ok(&self, args: &[&str]) -> String {
        let (code, out) = self.routectl(args);
        assert_eq!(code, 0, "routectl {args:?}: {out}");
        out
    }

    /// `routectl -o json ipam check`: its exit code and report.
    fn check(&self) -> (i32, serde_json::Value) {
        let (code, out) = self.routectl(&["-o", "json", "ipam", "check"]);
        let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        (code, report)
    }

    /// The plugin, started for ADD of `cid` in `pod` with `env` added; not waited for.
    fn spawn_add(&self, cid: &str, pod: &Netns, env: &[(&str, &str)]) -> Child {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .arg(env!("CARGO_BIN_EXE_routed-cni"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs([
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", pod.path().as_str()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(self.conf("1.0.0", "").as_bytes()).unwrap();
        child
    }

    /// A pod ADDed the normal way: its namespace and address.
    fn live_pod(&self, cid: &str) -> (Netns, String) {
        let pod = Netns::new("lk-pod");
        let out = self.spawn_add(cid, &pod, &[]).wait_with_output().unwrap();
        let result = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "ADD of {cid}: {result}");
        let ip = pod_ip(&result);
        (pod, ip)
    }

    /// CNI GC with `valid` (container ids, eth0) as the valid attachments.
    fn gc(&self, valid: &[&str]) {
        let list: Vec<String> = valid
            .iter()
            .map(|c| format!(r#"{{"containerID":"{c}","ifname":"eth0"}}"#))
            .collect();
        let extra = format!(r#","cni.dev/valid-attachments":[{}]"#, list.join(","));
        let (code, out) = common::cni(
            &self.node,
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            &self.conf("1.1.0", &extra),
        );
        assert_eq!(code, 0, "GC: {out}");
    }

    fn veths(&self) -> Vec<String> {
        let links = self
            .node
            .exec_ok(&["ip", "-o", "link", "show", "type", "veth"]);
        links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| n.starts_with("rd"))
            .collect()
    }

    fn workload_routes(&self) -> String {
        self.node
            .exec_ok(&["ip", "-4", "route", "show", "proto", "230"])
    }

    /// After the leak of `victim`: GC (only `live` valid) removes the victim's veth and has
    /// the agent record the handle as held by no container; check names it; repair releases
    /// it; check is clean; the live pod keeps its address, veth, route and traffic.
    fn gc_check_repair(&self, victim: &str, live: &str, live_ip: &str) {
        self.gc(&[live]);
        assert_eq!(self.veths().len(), 1, "only the live pod's veth is left");
        let routes = self.workload_routes();
        assert_eq!(routes.lines().count(), 1, "{routes}");
        assert!(routes.starts_with(&format!("{live_ip} ")), "{routes}");

        let (code, report) = self.check();
        assert_eq!(code, 1, "check fails on a leak: {report:#}");
        let findings = report["findings"].as_array().unwrap();
        let handle = format!("routed.{victim}.eth0");
        assert_eq!(findings.len(), 1, "{report:#}");
        assert_eq!(
            findings[0]["kind"], "handle-without-container",
            "{report:#}"
        );
        let message = findings[0]["message"].as_str().unwrap();
        assert!(
            message.contains(&handle) && message.contains(NODE),
            "{message}"
        );

        // Grace 0: the victim was allocated a moment before the GC list (a grace period would
        // keep it as a possible race with the list; src/ipam/attachments_tests.rs covers that).
        let out = self.routectl_ok(&["ipam", "repair", "--grace-period", "0"]);
        assert!(
            out.contains(&format!("no container holds: handle {handle}"))
                && out.contains("released 1 address(es) of 1 handle(s)"),
            "{out}"
        );
        let (code, report) = self.check();
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["allocated"], 1, "only the live pod holds an address");
        let allocations = self.routectl_ok(&["ipam", "show"]);
        assert!(
            allocations.contains("1 address(es) in use"),
            "{allocations}"
        );
        self.node.exec_ok(&["ping", "-c", "1", "-W", "2", live_ip]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// `routed` in `node` on `url`, its log appended to `dir/agent.log`; `stop_at` sets its stop
/// point (`ROUTED_STOP_AT`).
fn spawn_agent(node: &Netns, url: &str, dir: &Path, stop_at: Option<&str>) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.name])
        .arg(env!("CARGO_BIN_EXE_routed"))
        .args(["--node-name", NODE, "--datastore", url])
        .args(["--ip", &format!("{NODE_IP}/24"), "--socket"])
        .arg(dir.join("agent.sock"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(point) = stop_at {
        cmd.env(routed::agent::server::STOP_VAR, point);
    }
    cmd.spawn().unwrap()
}

/// Waits until process `pid` is stopped (state `T`: it reached its stop point).
fn wait_stopped(what: &str, child: &mut Child) {
    let stat = format!("/proc/{}/stat", child.id());
    common::wait_for(&format!("{what} stops at its stop point"), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited ({status}) before its stop point"));
        }
        let text = std::fs::read_to_string(&stat).map_err(|e| e.to_string())?;
        // "pid (comm) STATE ...": the state follows the last ')'.
        let state = text.rsplit(')').next().unwrap_or("").trim_start();
        match state.starts_with('T') {
            true => Ok(()),
            false => Err(format!("state {state:.1}")),
        }
    });
}

/// routed-cni SIGKILLed at `point`: `wired` (the pod fully wired, the result not printed) or
/// `allocated` (the agent answered, the veth is up, the address is on nothing yet).
fn plugin_killed_mid_add(store: Store, point: &str) {
    let lab = Lab::start(store, None);
    let (_live, live_ip) = lab.live_pod("live");
    let victim = Netns::new("lk-pod");
    let stop = [(routed::cni::STOP_VAR, point)];
    let mut plugin = lab.spawn_add("victim", &victim, &stop);
    wait_stopped("routed-cni", &mut plugin);
    let victim_ip = victim.eth0_ipv4();
    let wired = !victim_ip.is_empty()
        && lab
            .workload_routes()
            .contains(&format!("{victim_ip} dev rd"));
    assert_eq!(
        wired,
        point == "wired",
        "{point}: pod address {victim_ip:?}, routes {}",
        lab.workload_routes()
    );
    plugin.kill().unwrap();
    let out = plugin.wait_with_output().unwrap();
    assert!(out.stdout.is_empty(), "the killed plugin printed no result");
    assert_eq!(lab.veths().len(), 2, "the killed ADD left its veth");
    // Before any GC the leak is invisible: the node is alive, the handle well-formed.
    let (code, report) = lab.check();
    assert_eq!((code, &report["allocated"]), (0, &2.into()), "{report:#}");
    lab.gc_check_repair("victim", "live", &live_ip);
}

/// The agent SIGKILLed between an allocation's datastore write and its reply; restarted.
fn agent_killed_mid_allocation(store: Store) {
    let mut lab = Lab::start(store, Some("allocation-committed"));
    let victim = Netns::new("lk-pod");
    let plugin = lab.spawn_add("victim", &victim, &[]);
    wait_stopped("the agent", &mut lab.agent);
    lab.agent.kill().unwrap();
    let _ = lab.agent.wait();
    let out = plugin.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "the ADD fails: {answer}");
    assert!(
        answer.contains("\"code\":11") && answer.contains("without answering"),
        "try again later: the agent died mid-request: {answer}"
    );
    assert!(
        lab.veths().is_empty(),
        "the failed ADD rolled its veth back"
    );
    lab.restart_agent();
    let (_live, live_ip) = lab.live_pod("live");
    let (code, report) = lab.check();
    assert_eq!((code, &report["allocated"]), (0, &2.into()), "{report:#}");
    lab.gc_check_repair("victim", "live", &live_ip);
}

#[test]
fn sqlite_routed_cni_killed_mid_add_is_named_by_check_and_fixed_by_repair() {
    if common::require_e2e("sqlite_routed_cni_killed_mid_add_is_named_by_check_and_fixed_by_repair")
    {
        plugin_killed_mid_add(Store::Sqlite, "wired");
    }
}

#[test]
fn etcd_routed_cni_killed_mid_add_is_named_by_check_and_fixed_by_repair() {
    if common::require_e2e("etcd_routed_cni_killed_mid_add_is_named_by_check_and_fixed_by_repair") {
        plugin_killed_mid_add(Store::Etcd, "wired");
    }
}

#[test]
fn sqlite_routed_cni_killed_before_the_address_goes_on_is_named_and_fixed() {
    if common::require_e2e("sqlite_routed_cni_killed_before_the_address_goes_on_is_named_and_fixed")
    {
        plugin_killed_mid_add(Store::Sqlite, "allocated");
    }
}

#[test]
fn etcd_routed_cni_killed_before_the_address_goes_on_is_named_and_fixed() {
    if common::require_e2e("etcd_routed_cni_killed_before_the_address_goes_on_is_named_and_fixed") {
        plugin_killed_mid_add(Store::Etcd, "allocated");
    }
}

#[test]
fn sqlite_agent_killed_mid_allocation_is_named_by_check_and_fixed_by_repair() {
    if common::require_e2e(
        "sqlite_agent_killed_mid_allocation_is_named_by_check_and_fixed_by_repair",
    ) {
        agent_killed_mid_allocation(Store::Sqlite);
    }
}

#[test]
fn etcd_agent_killed_mid_allocation_is_named_by_check_and_fixed_by_repair() {
    if common::require_e2e("etcd_agent_killed_mid_allocation_is_named_by_check_and_fixed_by_repair")
    {
        agent_killed_mid_allocation(Store::Etcd);
    }
}
