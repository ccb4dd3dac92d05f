//! IPIP end to end in a qemu VM (issue 6): this machine's kernel has no `ipip` module, so the
//! lab runs inside Debian's kernel booted by `tests/vm/run.sh`, which sees this filesystem
//! read-only over 9p, plus the repository and the binaries' directory as shares of their own (so
//! a clone under /tmp works too). Needs root and ROUTED_E2E=1;
//! the harness installs qemu and busybox-static and downloads the kernel when they are missing.
//! docs/testing.md explains the harness.
//!
//! The scripts inside the VM print `PASS ...` / `FAIL ...` lines; these tests fail on any FAIL,
//! on a non-zero exit status, and when a check they require did not report PASS at all.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One VM at a time: the machine has few cores and software emulation needs all of them.
static VM: Mutex<()> = Mutex::new(());

struct VmRun {
    status: Option<i32>,
    output: String,
}

impl VmRun {
    fn lines(&self, tag: &str) -> Vec<&str> {
        self.output.lines().filter(|l| l.starts_with(tag)).collect()
    }

    /// Fails the test unless the run succeeded, reported no FAIL, and reported a PASS line
    /// containing each of `required`.
    fn assert_passed(&self, what: &str, required: &[&str]) {
        let failures = self.lines("FAIL ");
        assert!(
            failures.is_empty() && self.status == Some(0),
            "{what}: exit status {:?}, failures:\n{}\n--- full output:\n{}",
            self.status,
            failures.join("\n"),
            self.output
        );
        let passes = self.lines("PASS ");
        for want in required {
            assert!(
                passes.iter().any(|l| l.contains(want)),
                "{what}: no PASS line for {want:?}; passes:\n{}\n--- full output:\n{}",
                passes.join("\n"),
                self.output
            );
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/vm/run.sh` with `args`, echoing the VM's console, and returns what it printed.
/// The VM's time limit: a guard against a hung guest, not a performance assertion. Software
/// emulation on a busy machine is slow (docs/testing.md has timings); ROUTED_VM_TIMEOUT overrides.
fn vm_timeout() -> String {
    std::env::var("ROUTED_VM_TIMEOUT").unwrap_or_else(|_| "1800".into())
}

fn run_vm(args: &[&str], out_dir: &Path) -> VmRun {
    let _one_at_a_time = VM.lock().unwrap_or_else(|e| e.into_inner());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_routed"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    // run.sh shares ROUTED_BIN_DIR and the repository with the VM at their own paths, so both
    // may live anywhere (a CI clone under /tmp included).
    let mut child = Command::new(root().join("tests/vm/run.sh"))
        .current_dir(root())
        .arg("--timeout")
        .arg(vm_timeout())
        .arg("--out")
        .arg(out_dir)
        .arg("--")
        .args(args)
        .env("ROUTED_BIN_DIR", &bin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/vm/run.sh");
    // The console as it arrives (a VM run takes minutes), and kept for the assertions.
    let stderr = child.stderr.take().expect("piped stderr");
    let harness = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut console = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        console.push_str(&line);
        console.push('\n');
    }
    let status = child.wait().expect("wait for tests/vm/run.sh");
    let harness = harness.join().unwrap_or_default();
    VmRun {
        status: status.code(),
        output: format!("{console}\n--- harness:\n{harness}"),
    }
}

#[test]
fn vm_harness_boots_debian_kernel_and_carries_ipip_between_namespaces() {
    if !common::require_e2e("vm_harness_boots_debian_kernel_and_carries_ipip_between_namespaces") {
        return;
    }
    let out = tempfile::tempdir().expect("output dir");
    let run = run_vm(&["tests/vm/smoke.sh"], out.path());
    run.assert_passed(
        "VM smoke test",
        &[
            "ipip module loaded",
            "underlay: host a reaches host b",
            "ping across the IPIP tunnel",
            "router saw the ping encapsulated",
            "tunl0 of host b received",
        ],
    );
}

#[test]
fn ipip_always_and_cross_subnet_across_a_router_in_a_vm() {
    if !common::require_e2e("ipip_always_and_cross_subnet_across_a_router_in_a_vm") {
        return;
    }
    let out = tempfile::tempdir().expect("output dir");
    let run = run_vm(&["tests/vm/ipip-lab.sh"], out.path());
    if run.status != Some(0) {
        // The agents' logs were copied out of the VM; show them before failing.
        for node in ["node-1", "node-2", "node-3"] {
            let log =
                std::fs::read_to_string(out.path().join(format!("{node}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- {node}.log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
    }
    run.assert_passed(
        "IPIP lab",
        &[
            "six pods wired by routed-cni",
            "node-1: tunl0 up, MTU 1480",
            "node-3: tunl0 up, MTU 1480",
            "pod MTU 1480",
            "Always: every node routes remote pods",
            "Always: all 30 pod pairs reach each other",
            "Always: capture on the router: 24 cross-node pairs encapsulated (protocol 4), 0 plain",
            "Always: host node-1 reaches pod3a",
            "CrossSubnet: every node routes remote pods",
            "CrossSubnet: all 30 pod pairs reach each other",
            "CrossSubnet: capture on the router: 16 cross-node pairs encapsulated (protocol 4), 8 plain",
            "CrossSubnet: host node-1 reaches pod3b",
            "CrossSubnet: host node-3 reaches pod2b",
        ],
    );
}
