//! Two network namespaces joined by a veth, daemons started inside, all cleaned up on drop.
//!
//! ```text
//!  netns <tag>-node                      netns <tag>-peer
//!  our speaker (tokio runtime on a       BIRD / bgpd / gobgpd
//!  thread that entered the netns)
//!    veth n ── 10.99.<subnet>.1/24 ───── 10.99.<subnet>.2/24 ── veth p
//! ```
//!
//! Only processes started here are stopped, by pid. Namespace names carry the test's tag
//! and our pid, so parallel tests and parallel runs never share one.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use crate::netlink::{run_in_netns, NetnsRef};

/// `ROUTED_E2E=1`: run; unset: skip. Returns whether to run.
pub fn e2e_enabled(test: &str) -> bool {
    if std::env::var("ROUTED_E2E").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("{test}: skipped (set ROUTED_E2E=1 to run)");
    false
}

/// Fail (not skip) when a program the test needs is missing.
pub fn require(program: &str) {
    let found = Path::new(program).is_file()
        || std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
        });
    assert!(
        found,
        "{program} is not installed (apt-get install -y bird2 frr gobgpd)"
    );
}

/// Run a command, panicking with its output when it fails.
pub fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The topology of one test.
pub struct Topology {
    pub node_ns: String,
    pub peer_ns: String,
    pub node_ip: Ipv4Addr,
    pub peer_ip: Ipv4Addr,
    pub dir: tempfile::TempDir,
    children: Mutex<Vec<Child>>,
}

impl Topology {
    /// Create both namespaces and the veth; `subnet` picks 10.99.<subnet>.0/24.
    pub fn create(tag: &str, subnet: u8) -> Topology {
        let pid = std::process::id();
        let node_ns = format!("rb{tag}{pid}n");
        let peer_ns = format!("rb{tag}{pid}p");
        let topology = Topology {
            node_ns: node_ns.clone(),
            peer_ns: peer_ns.clone(),
            node_ip: Ipv4Addr::new(10, 99, subnet, 1),
            peer_ip: Ipv4Addr::new(10, 99, subnet, 2),
            dir: tempfile::tempdir().expect("tempdir"),
            children: Mutex::new(Vec::new()),
        };
        // From here on, Drop cleans up whatever exists.
        run(&["ip", "netns", "add", &node_ns]);
        run(&["ip", "netns", "add", &peer_ns]);
        let veth_n = format!("v{tag}{pid}n");
        let veth_p = format!("v{tag}{pid}p");
        let (veth_n, veth_p) = (truncate(&veth_n), truncate(&veth_p));
        run(&[
            "ip", "link", "add", &veth_n, "netns", &node_ns, "type", "veth", "peer", "name",
            &veth_p, "netns", &peer_ns,
        ]);
        for (ns, dev, ip) in [
            (&node_ns, &veth_n, topology.node_ip),
            (&peer_ns, &veth_p, topology.peer_ip),
        ] {
            let cidr = format!("{ip}/24");
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        topology
    }

    /// A path in the test's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Run a command in the peer namespace and return its stdout (no status check).
    pub fn exec_peer(&self, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.peer_ns])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Start a daemon in the peer namespace (`ip netns exec` execs it: same pid).
    pub fn spawn_peer(&self, args: &[&str], log: &str) -> u32 {
        let log = std::fs::File::create(self.path(log)).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.peer_ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        let pid = child.id();
        self.children.lock().expect("children").push(child);
        pid
    }

    /// Send a signal to a process this topology started, and reap it if it was killed.
    pub fn signal(&self, pid: u32, signal: libc::c_int) {
        let mut children = self.children.lock().expect("children");
        let Some(at) = children.iter().position(|c| c.id() == pid) else {
            panic!("pid {pid} was not started by this test");
        };
        // SAFETY: kill(2) on a pid we started and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
        if signal == libc::SIGKILL {
            let mut child = children.remove(at);
            let _ = child.wait();
        }
    }

    /// Run `work` on a thread inside the node namespace, with a tokio runtime.
    pub fn in_node<F, Fut, T>(&self, work: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = T>,
        T: Send,
    {
        block_on_in(&self.node_ns, work)
    }

    /// The contents of a log file, for failure messages.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

/// Interface names are at most 15 bytes.
fn truncate(name: &str) -> String {
    name.chars().take(15).collect()
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: show what the daemons said.
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(400).collect();
                    eprintln!("==== {} (last 400 lines)", path.display());
                    for line in tail.into_iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut() {
                // SAFETY: kill(2) on a pid we started and have not reaped yet.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for ns in [&self.node_ns, &self.peer_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `work` on a two-thread tokio runtime of its own inside namespace `name`.
pub fn block_on_in<F, Fut, T>(name: &str, work: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    let ns = NetnsRef::named(name);
    run_in_netns(&ns, || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(work())
    })
    .expect("enter node netns")
}
