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

/// A private etcd on loopback ports, stopped (by its pid) when dropped.
pub struct EtcdServer {
    child: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("test=http://127.0.0.1:{peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is not installed: run the README's test command, or apt-get install etcd-server");
        let server = EtcdServer {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            dir,
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
