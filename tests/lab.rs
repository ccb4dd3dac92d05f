//! The README's main job as a test: `examples/lab.sh up` builds a three-node cluster in network
//! namespaces (BIRD 2 as the ToR, an external host, two pods per node through routed-cni) and runs
//! its checks; then natOutgoing is switched on and the checks run again; `down` must leave nothing.
//! Needs root and ROUTED_E2E=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_routed"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

struct Lab {
    name: String,
    dir: tempfile::TempDir,
    up: bool,
}

impl Lab {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .env("ROUTED_LAB_NAME", &self.name)
            .env("ROUTED_LAB_DIR", self.dir.path().join("lab"))
            .env("ROUTED_BIN_DIR", bin_dir())
            .output()
            .expect("run examples/lab.sh");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        eprintln!("--- lab.sh {args:?} ---\n{text}");
        (out.status.success(), text)
    }

    fn routectl(&self, args: &[&str]) -> String {
        let url = format!(
            "sqlite://{}",
            self.dir.path().join("lab/routed.db").display()
        );
        let (code, out, err) = common::run_routectl(&url, args);
        assert_eq!(code, 0, "routectl {args:?}: {err}");
        out
    }
}

const SUMMARY_NO_NAT: &str =
    "summary: pod pairs 30/30, external->pod 6/6, pod->external source 3/3 (natOutgoing=false)";

impl Lab {
    /// natOutgoing on: pods reach the external host as their node; pod-to-pod is untouched.
    fn assert_nat_outgoing(&self) {
        self.routectl(&["pool", "set", "lab-pods", "--nat-outgoing", "true"]);
        // The agents apply the pool change when they see it in the datastore: check until then.
        let mut last = String::new();
        common::wait_for("the checks pass with natOutgoing on", || {
            let (ok, out) = self.run(&["check"]);
            last = out;
            ok.then_some(()).ok_or_else(|| last.clone())
        });
        assert!(
            last.contains(
                "summary: pod pairs 30/30, external->pod 6/6, pod->external source 3/3 (natOutgoing=true)"
            ),
            "{last}"
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.up {
            let _ = self.run(&["down"]);
        }
    }
}

fn namespaces_named(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn lab_cluster_reaches_every_pod_and_cleans_up() {
    if !common::require_e2e("lab_cluster_reaches_every_pod_and_cleans_up") {
        return;
    }
    let mut lab = Lab {
        name: format!("rlt{:x}", common::rand_suffix() & 0xffff),
        dir: tempfile::tempdir().expect("temp dir"),
        up: true,
    };
    let (ok, out) = lab.run(&["up"]);
    assert!(ok, "lab up failed:\n{out}");
    // Every pair of the six pods, the external host to every pod (routed by BIRD from our BGP
    // routes), and the pod's own address arriving at the external host (no NAT by default).
    assert!(out.contains(SUMMARY_NO_NAT), "{out}");
    assert!(out.contains("lab OK"), "{out}");
    // routectl status as a user sees it: three sessions up on each node (two mesh, one global).
    let status_lines = out.lines().filter(|l| l.contains("Established")).count();
    assert!(
        status_lines >= 9 + 3,
        "9 routed sessions + 3 BIRD sessions:\n{out}"
    );

    lab.assert_nat_outgoing();

    // down removes every namespace and process the lab made.
    let pids: Vec<String> = std::fs::read_to_string(lab.dir.path().join("lab/pids"))
        .expect("lab pids")
        .lines()
        .map(str::to_string)
        .collect();
    assert!(pids.len() >= 4, "BIRD and three agents: {pids:?}");
    let (ok, out) = lab.run(&["down"]);
    lab.up = false;
    assert!(ok, "{out}");
    assert_eq!(namespaces_named(&lab.name), Vec::<String>::new());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "process {pid} still running after down"
        );
    }
    assert!(!lab.dir.path().join("lab").exists());
    // Nothing the lab started is still running (daemons named by the lab's directory).
    let lab_dir = lab.dir.path().join("lab").display().to_string();
    assert_eq!(processes_mentioning(&lab_dir), Vec::<String>::new());
}

/// Command lines of running processes that mention `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// The same lab with FRR (zebra + bgpd) and with GoBGP as the ToR: sessions up, every node's
/// block at the ToR with the node as next hop, the prefix the ToR originates in every node's
/// kernel (the lab's convergence condition), pod traffic, the external host's traffic through
/// the ToR's kernel routes from that daemon's best routes (zebra's for FRR; for GoBGP, which
/// programs no kernel routes, lab.sh writes them), and natOutgoing as seen by the external host.
#[test]
fn lab_with_frr_and_gobgp_as_the_tor() {
    if !common::require_e2e("lab_with_frr_and_gobgp_as_the_tor") {
        return;
    }
    for tor in ["frr", "gobgp"] {
        let mut lab = Lab {
            name: format!("rl{}{:x}", &tor[..1], common::rand_suffix() & 0xffff),
            dir: tempfile::tempdir().expect("temp dir"),
            up: true,
        };
        let (ok, out) = lab.run(&["up", "--tor", tor]);
        assert!(ok, "lab up --tor {tor} failed:\n{out}");
        assert!(out.contains(SUMMARY_NO_NAT), "{tor}:\n{out}");
        assert!(out.contains("lab OK"), "{tor}:\n{out}");
        lab.assert_nat_outgoing();
        let (ok, out) = lab.run(&["down"]);
        lab.up = false;
        assert!(ok, "{out}");
        assert_eq!(namespaces_named(&lab.name), Vec::<String>::new());
        let lab_dir = lab.dir.path().join("lab").display().to_string();
        assert_eq!(processes_mentioning(&lab_dir), Vec::<String>::new());
    }
}

/// `lab.sh up --rr` (issue 13, item 7): six nodes with two route reflectors set up the Calico
/// way and the ToR an iBGP client of the reflectors; every pod pair and the external host reach
/// every pod, the topology is printed, and the clients see both reflectors in `routectl status`.
#[test]
fn lab_with_route_reflectors() {
    if !common::require_e2e("lab_with_route_reflectors") {
        return;
    }
    let mut lab = Lab {
        name: format!("rlr{:x}", common::rand_suffix() & 0xffff),
        dir: tempfile::tempdir().expect("temp dir"),
        up: true,
    };
    let (ok, out) = lab.run(&["up", "--rr"]);
    assert!(ok, "lab up --rr failed:\n{out}");
    assert!(
        out.contains(
            "summary: pod pairs 132/132, external->pod 12/12, pod->external source 6/6 (natOutgoing=false)"
        ),
        "{out}"
    );
    assert!(
        out.contains("route-reflection topology (cluster ID 1.0.0.1"),
        "{out}"
    );
    assert!(out.contains("route reflector, cluster 1.0.0.1"), "{out}");
    assert!(out.contains("rr client, cluster 1.0.0.1"), "{out}");
    let (ok, status) = lab.run(&["status"]);
    assert!(
        ok && status.contains("route reflector, cluster 1.0.0.1"),
        "{status}"
    );
    let (ok, out) = lab.run(&["down"]);
    lab.up = false;
    assert!(ok, "{out}");
    assert_eq!(namespaces_named(&lab.name), Vec::<String>::new());
}
