//! `routectl cluster status` on a three-node lab with one fault injected (issue 15): the
//! problem is named with the nodes involved, and once the fault is gone the view is clean
//! again (no problems, every session up, every route programmed). Three agents on one shared
//! datastore in namespaces (tests/cluster), a pod on each so each node advertises a block.
//!
//! Faults:
//! - a learned route deleted from node-1's kernel while node-1's repair is held off
//!   (`routed --route-repair-hold FILE`): "block B of node-2 missing from node-1's kernel";
//!   removing FILE lets the agent put the route back;
//! - a session blocked on one side: node-2's packets to node-1's BGP session are dropped
//!   (nftables in node-2's namespace) and node-2's socket is destroyed (`ss -K`, its RST
//!   dropped): node-2 is down while node-1 still says Established (until its hold timer):
//!   "one-sided session: node-1 says Established to node-2"; without the rule node-1's next
//!   keepalive meets node-2's RST and the session comes back.
//!
//! Needs root, nftables, iproute2's ss and ROUTED_E2E=1.

mod cluster;
mod common;

use cluster::{block_of, wait_for, Lab};
use common::Netns;
use std::path::PathBuf;
use std::time::Duration;

/// node-1's agent holds repair while `{dir}/hold-repair` exists.
fn agent_args(i: usize) -> Vec<String> {
    if i == 1 {
        vec!["--route-repair-hold".into(), "{dir}/hold-repair".into()]
    } else {
        Vec::new()
    }
}

struct Setup {
    _pods: Vec<Netns>,
    /// Each node's pod block.
    blocks: Vec<String>,
    lab: Lab,
    _store_dir: tempfile::TempDir,
}

impl Setup {
    /// Three nodes in a mesh, a pod on each, and a clean cluster view.
    fn start() -> Setup {
        let (url, store_dir) = common::sqlite_url();
        let lab = Lab::start_with(cluster::rack(), &url, 3, agent_args);
        let mut pods = Vec::new();
        let mut blocks = Vec::new();
        for i in 1..=3 {
            let (pod, ip) = lab.pod(i, &format!("cs-pod-{i}"));
            pods.push(pod);
            blocks.push(block_of(&ip));
        }
        let setup = Setup {
            _pods: pods,
            blocks,
            lab,
            _store_dir: store_dir,
        };
        setup.wait_clean("the converged lab");
        setup
    }

    fn hold_file(&self) -> PathBuf {
        self.lab.dir.path().join("hold-repair")
    }

    /// `routectl cluster status -o json`, parsed.
    fn view(&self) -> Result<serde_json::Value, String> {
        let (ok, out) = self.lab.routectl(&["cluster", "status", "-o", "json"]);
        serde_json::from_str(&out).map_err(|e| format!("{ok} {e}: {out}"))
    }

    /// Waits (bounded by `within`) until the view has three live nodes, no problems, every
    /// session up and every other node's block programmed on each node.
    fn wait_clean_within(&self, what: &str, within: Duration) {
        common::poll_until(
            &format!("cluster status clean: {what}"),
            within,
            Duration::from_millis(200),
            || {
                let view = self.view()?;
                let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
                let clean = view["problems"].as_array().is_some_and(|p| p.is_empty());
                let healthy = nodes.len() == 3
                    && nodes.iter().all(|n| {
                        n["status_age"].is_u64()
                            && n["sessions_total"] == 2
                            && n["sessions_up"] == 2
                            && n["routes_expected"] == 2
                            && n["routes_programmed"] == 2
                    });
                (clean && healthy).then_some(()).ok_or(view.to_string())
            },
        );
    }

    fn wait_clean(&self, what: &str) {
        self.wait_clean_within(what, common::WAIT);
    }

    /// Waits until the view's problems are exactly `expected` (the view itself on success).
    fn wait_problems(&self, expected: &[String]) -> serde_json::Value {
        let mut seen = serde_json::Value::Null;
        wait_for(&format!("cluster status names {expected:?}"), || {
            let view = self.view()?;
            let problems: Vec<String> = view["problems"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            seen = view.clone();
            (problems == expected).then_some(()).ok_or(view.to_string())
        });
        seen
    }

    fn row(view: &serde_json::Value, node: &str) -> serde_json::Value {
        view["nodes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["node"] == node).cloned())
            .unwrap_or_else(|| panic!("no row for {node}: {view}"))
    }
}

#[test]
fn cluster_status_names_a_learned_route_missing_from_one_kernel_and_is_clean_after_repair() {
    if !common::require_e2e(
        "cluster_status_names_a_learned_route_missing_from_one_kernel_and_is_clean_after_repair",
    ) {
        return;
    }
    let setup = Setup::start();
    let lab = &setup.lab;
    let block = setup.blocks[1].clone();
    std::fs::write(setup.hold_file(), b"").expect("create the hold file");
    lab.node(1)
        .exec_ok(&["ip", "route", "del", &block, "proto", "232"]);
    let view = setup.wait_problems(&[format!(
        "block {block} of node-2 missing from node-1's kernel"
    )]);
    let row = Setup::row(&view, "node-1");
    assert_eq!(
        (
            row["routes_programmed"].as_u64(),
            row["routes_expected"].as_u64()
        ),
        (Some(1), Some(2)),
        "{view}"
    );
    // Still missing: the problem is seen because repair is held, not in a race with it.
    let routes = lab.routes(1, 232);
    assert!(
        !routes.lines().any(|l| l.starts_with(&format!("{block} "))),
        "node-1 repaired {block} while held: {routes}"
    );
    std::fs::remove_file(setup.hold_file()).expect("remove the hold file");
    lab.wait_learned(1, &block);
    setup.wait_clean("node-1's route repaired");
}

/// nftables in node-2's namespace dropping what node-2 sends to node-1's BGP session.
fn block_node2_to_node1(lab: &Lab) {
    let script = "table inet rtcsfault {\n chain out {\n  type filter hook output priority 0;\n  \
                  ip daddr 10.100.0.1 tcp sport 179 drop\n  ip daddr 10.100.0.1 tcp dport 179 drop\n }\n}\n";
    let path = lab.dir.path().join("fault.nft");
    std::fs::write(&path, script).expect("write fault.nft");
    lab.node(2)
        .exec_ok(&["nft", "-f", &path.display().to_string()]);
}

#[test]
fn cluster_status_names_a_session_blocked_on_one_side_and_is_clean_once_unblocked() {
    if !common::require_e2e(
        "cluster_status_names_a_session_blocked_on_one_side_and_is_clean_once_unblocked",
    ) {
        return;
    }
    let setup = Setup::start();
    let lab = &setup.lab;
    block_node2_to_node1(lab);
    // node-2's end of the session goes; its RST to node-1 is dropped.
    lab.node(2)
        .exec_ok(&["ss", "-K", "-t", "dst", "10.100.0.1"]);
    let mut problems: Vec<String> = Vec::new();
    wait_for("cluster status names the one-sided session", || {
        let view = setup.view()?;
        problems = view["problems"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let named = problems.iter().any(|p| {
            p.starts_with(
                "one-sided session: node-1 says Established to node-2 (10.100.0.2), node-2 says ",
            )
        });
        named.then_some(()).ok_or(view.to_string())
    });
    // Whatever else follows from it (node-2 dropping node-1's block) is between those two.
    for problem in &problems {
        assert!(
            problem.contains("node-1") && problem.contains("node-2") && !problem.contains("node-3"),
            "{problems:?}"
        );
    }
    lab.node(2)
        .exec_ok(&["nft", "delete", "table", "inet", "rtcsfault"]);
    // node-1's next keepalive (every 30 s) meets node-2's RST; bounded by the hold time (90 s).
    setup.wait_clean_within("the session re-established", Duration::from_secs(120));
}
