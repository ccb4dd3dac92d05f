//! Test support shared by the integration tests: the ROUTED_E2E switch, a real etcd started on
//! loopback ports for one test, and temporary SQLite stores.
#![allow(dead_code)]

use routed::datastore::{self, Datastore, DatastoreConfig};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// True when tests that need a daemon (etcd) must run; with it set, a missing prerequisite fails.
pub fn e2e() -> bool {
    std::env::var("ROUTED_E2E").is_ok_and(|v| v == "1")
}

/// Returns false (and says so) when an etcd test cannot run because ROUTED_E2E is not set.
pub fn require_e2e(test: &str) -> bool {
    if e2e() {
        return true;
    }
    eprintln!("{test}: needs a real etcd; set ROUTED_E2E=1 (the README's test command does)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A private etcd for one test, stopped (by its pid) when dropped: on free loopback ports
/// (`start`), or inside a test's network namespace (`start_in`). `stop` kills it and `restart`
/// brings it back on the same data directory and ports.
pub struct EtcdServer {
    child: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
    netns: Option<String>,
    host: String,
    client_port: u16,
    peer_port: u16,
}

fn spawn_etcd(
    dir: &std::path::Path,
    netns: Option<&str>,
    host: &str,
    client: u16,
    peer: u16,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .expect("etcd log file");
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "etcd"]);
            cmd
        }
        None => Command::new("etcd"),
    };
    cmd.args(["--name", "test", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &format!("http://{host}:{client}")])
        .args([
            "--advertise-client-urls",
            &format!("http://{host}:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://{host}:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://{host}:{peer}"),
        ])
        .args(["--initial-cluster", &format!("test=http://{host}:{peer}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect(
            "etcd is not installed: run the README's test command, or apt-get install etcd-server",
        )
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let child = spawn_etcd(dir.path(), None, "127.0.0.1", client, peer);
        let server = EtcdServer {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            dir,
            netns: None,
            host: "127.0.0.1".into(),
            client_port: client,
            peer_port: peer,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(store) = datastore::open(&DatastoreConfig::new(&server.url())).await {
                if store.get("probe").await.is_ok() {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become ready; see {}",
                server.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// etcd inside `netns`, listening on `host` (an address of that namespace), ports 2379
    /// and 2380 (the namespace is the test's own). Waits until `etcdctl endpoint health` passes.
    pub fn start_in(netns: &Netns, host: &str) -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = spawn_etcd(dir.path(), Some(&netns.name), host, 2379, 2380);
        let server = EtcdServer {
            child,
            endpoint: format!("{host}:2379"),
            dir,
            netns: Some(netns.name.clone()),
            host: host.to_string(),
            client_port: 2379,
            peer_port: 2380,
        };
        server.wait_healthy();
        server
    }

    /// Starts a new etcd on the same data directory and ports (after `stop`), and waits until
    /// it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_etcd(
            self.dir.path(),
            self.netns.as_deref(),
            &self.host,
            self.client_port,
            self.peer_port,
        );
        self.wait_healthy();
    }

    /// The etcd process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_healthy(&self) {
        let endpoints = format!("--endpoints=http://{}", self.endpoint);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut cmd = match &self.netns {
                Some(ns) => {
                    let mut cmd = Command::new("ip");
                    cmd.args(["netns", "exec", ns, "etcdctl"]);
                    cmd
                }
                None => Command::new("etcdctl"),
            };
            let healthy = cmd
                .args([&endpoints, "--command-timeout=2s", "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .output()
                .expect("etcdctl is not installed: apt-get install etcd-client")
                .status
                .success();
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become ready; see {}",
                self.dir.path().join("etcd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint)
    }

    pub async fn store(&self) -> Arc<dyn Datastore> {
        datastore::open(&DatastoreConfig::new(&self.url()))
            .await
            .expect("connect to test etcd")
    }

    /// Stops etcd (SIGKILL by pid) without removing its data; `restart` brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A SQLite store in a fresh temporary directory (kept alive by the returned guard).
pub fn sqlite_url() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("routed.db").display());
    (url, dir)
}

pub async fn open(url: &str) -> Arc<dyn Datastore> {
    datastore::open(&DatastoreConfig::new(url))
        .await
        .expect("open datastore")
}

/// The routectl binary built with the tests.
pub fn routectl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_routectl"))
}

/// Runs routectl against `url`; returns (exit code, stdout, stderr).
pub fn run_routectl(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(routectl())
        .env("ROUTED_DATASTORE", url)
        .args(args)
        .output()
        .expect("run routectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A network namespace created for one test (`ip netns add`), deleted when dropped.
pub struct Netns {
    pub name: String,
}

/// How long the multi-node tests wait for convergence.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` every `every` until it passes; panics with its last error after `deadline`.
pub fn poll_until(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let until = Instant::now() + deadline;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() > until => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// `poll_until` with `WAIT`, every 100 ms.
pub fn wait_for(what: &str, check: impl FnMut() -> Result<(), String>) {
    poll_until(what, WAIT, Duration::from_millis(100), check)
}

/// True when `ip route` output has a route for `prefix` whose next hop reads `via` ("via GW dev
/// IF"). Learned routes are written with kernel nexthop objects, shown as
/// "PREFIX nhid N via GW dev IF ...", so the check does not depend on the `nhid` part.
pub fn routes_via(routes: &str, prefix: &str, via: &str) -> bool {
    let start = format!("{prefix} ");
    routes
        .lines()
        .any(|line| line.starts_with(&start) && line.contains(&format!(" {via}")))
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = format!("{prefix}-{:x}", rand_suffix());
        run_ok("ip", &["netns", "add", &name]);
        run_ok("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A node namespace wired into `hub`'s bridge: `eth0` (a veth whose other end, `port`, is a
    /// port of `bridge` in `hub`) with `cidr`, and a default route via `gateway`.
    pub fn node_on_bridge(
        prefix: &str,
        hub: &Netns,
        port: &str,
        bridge: &str,
        cidr: &str,
        gateway: &str,
    ) -> Netns {
        let node = Netns::new(prefix);
        node.exec_ok(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", &hub.name,
        ]);
        hub.exec_ok(&["ip", "link", "set", port, "master", bridge, "up"]);
        node.exec_ok(&["ip", "addr", "add", cidr, "dev", "eth0"]);
        node.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        node.exec_ok(&["ip", "route", "add", "default", "via", gateway]);
        node
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace; returns (success, stdout+stderr).
    pub fn exec(&self, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let (ok, out) = self.exec(cmd);
        assert!(ok, "{cmd:?} in {} failed: {out}", self.name);
        out
    }

    /// The IPv4 address on `eth0` (a pod's, which the plugin may not have printed); empty when
    /// it has none.
    pub fn eth0_ipv4(&self) -> String {
        let out = self.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id() << 12) ^ t.wrapping_add(N.fetch_add(1, Ordering::Relaxed) * 7919)
}

pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `routed` agent running inside a namespace, killed (SIGKILL, by pid) when dropped.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `routed` in `netns` and waits until it is ready.
    pub fn start(netns: &Netns, node: &str, url: &str, ip: &str, dir: &std::path::Path) -> Agent {
        Agent::start_with(netns, node, url, ip, dir, &[])
    }

    /// [`Agent::start`] with more command-line arguments (`--bird-socket PATH`...).
    pub fn start_with(
        netns: &Netns,
        node: &str,
        url: &str,
        ip: &str,
        dir: &std::path::Path,
        extra: &[String],
    ) -> Agent {
        let socket = dir.join(format!("{node}.sock"));
        // Appended to, so a restarted agent's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{node}.log")))
            .expect("agent log");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .arg(env!("CARGO_BIN_EXE_routed"))
            .args([
                "--node-name",
                node,
                "--datastore",
                url,
                "--ip",
                ip,
                "--socket",
            ])
            .arg(&socket)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn routed");
        let agent = Agent { child, socket };
        agent.wait_ready(dir, node);
        agent
    }

    pub fn wait_ready(&self, dir: &std::path::Path, node: &str) {
        let client = routed::api::client::Client::new(&self.socket);
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get::<serde_json::Value>("/readyz").is_err() {
            assert!(
                Instant::now() < deadline,
                "agent {node} not ready; log: {}",
                std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the agent, by pid.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Calls routed-cni as libcni does: inside `node`, with the CNI_* environment and the
/// configuration on stdin. Returns (exit code, stdout).
/// CNI ADD of pod `cid` (namespace `pod`) through `agent`, run in `node`: (exit code, output).
pub fn cni_add(node: &Netns, agent: &Agent, pod: &Netns, cid: &str) -> (i32, String) {
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"r","type":"routed-cni","socket":"{}"}}"#,
        agent.socket.display()
    );
    let path = pod.path();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    cni(node, &env, &conf)
}

/// A new pod namespace named from `prefix`, added through `agent` on `node` (ADD must
/// succeed): the namespace and the pod's address.
pub fn new_pod(prefix: &str, node: &Netns, agent: &Agent, cid: &str) -> (Netns, String) {
    let pod = Netns::new(prefix);
    let (code, out) = cni_add(node, agent, &pod, cid);
    assert_eq!(code, 0, "ADD of {cid}: {out}");
    let ip = pod_ip(&out);
    (pod, ip)
}

/// The address of the first IP of a CNI ADD result.
pub fn pod_ip(result: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(result).unwrap_or_else(|e| panic!("{e}: {result}"));
    v["ips"][0]["address"]
        .as_str()
        .expect("CNI result has an address")
        .trim_end_matches("/32")
        .to_string()
}

pub fn cni(node: &Netns, env: &[(&str, &str)], conf: &str) -> (i32, String) {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.name])
        .arg(env!("CARGO_BIN_EXE_routed-cni"));
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn routed-cni");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.as_bytes());
    }
    let out = child.wait_with_output().expect("routed-cni output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A daemon a test started inside a namespace, its output in a log file; stopped (SIGTERM, by
/// its pid) and reaped when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    /// Runs `args` in `netns`; `what` names the package a missing program comes from.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        netns: &Netns,
        args: &[S],
        log: &std::path::Path,
        what: &str,
    ) -> Daemon {
        let log = std::fs::File::create(log).expect("daemon log");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("ROUTED_E2E=1 needs {what}: {e}"));
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
                // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let _ = self.0.wait();
        }
    }
}
