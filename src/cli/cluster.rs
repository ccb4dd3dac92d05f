//! `routectl cluster status` and `routectl status --node NAME`: the cluster's view from the
//! reports every agent publishes under `status/nodes/` (agent::status_publish), and the
//! registered nodes (`nodes/`).
//!
//! ```text
//!  datastore: nodes/, status/nodes/ ──> analyze (pure) ──> rows + problems ──> table | json
//! ```
//! Problems: a one-sided session (A says Established to B, B does not say so to A), a block
//! advertised by one node that another node's kernel does not route, a registered node with no
//! live report (its lease expired: the agent is gone or cannot reach the datastore).

use super::commands::{print, Result};
use super::error::CliError;
use super::{table, Output};
use crate::api::v1::{NodeStatusReport, SessionState};
use crate::datastore::{decode_json, Datastore};
use crate::model::keys;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;

/// One row of `routectl cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub node: String,
    pub sessions_up: usize,
    pub sessions_total: usize,
    /// Other nodes' blocks this node's kernel routes, of those expected.
    pub routes_programmed: usize,
    pub routes_expected: usize,
    /// Seconds since the report was written; `None`: no live report.
    pub status_age: Option<u64>,
}

/// What `-o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeRow>,
    pub problems: Vec<String>,
}

fn one_sided(reports: &[NodeStatusReport], problems: &mut Vec<String>) {
    for a in reports {
        for s in a
            .sessions
            .iter()
            .filter(|s| s.state == SessionState::Established)
        {
            let Some(b) = reports.iter().find(|r| r.address == Some(s.address)) else {
                continue;
            };
            let back = b.sessions.iter().find(|t| Some(t.address) == a.address);
            let theirs = back.map_or("no session".to_string(), |t| format!("{:?}", t.state));
            if back.is_none_or(|t| t.state != SessionState::Established) {
                problems.push(format!(
                    "one-sided session: {} says Established to {} ({}), {} says {theirs}",
                    a.node, b.node, s.address, b.node
                ));
            }
        }
    }
}

/// Rows and problems (pure): `registered` are the Node records, `reports` the live reports.
pub fn analyze(registered: &[String], reports: &[NodeStatusReport], now: u64) -> ClusterView {
    let mut problems = Vec::new();
    let mut nodes = Vec::new();
    let mut names: Vec<&str> = registered.iter().map(String::as_str).collect();
    names.extend(reports.iter().map(|r| r.node.as_str()));
    names.sort_unstable();
    names.dedup();
    for name in names {
        let Some(report) = reports.iter().find(|r| r.node == name) else {
            problems.push(format!(
                "{name}: no live status (agent stopped, or its lease expired)"
            ));
            nodes.push(NodeRow {
                node: name.to_string(),
                sessions_up: 0,
                sessions_total: 0,
                routes_programmed: 0,
                routes_expected: 0,
                status_age: None,
            });
            continue;
        };
        let mut expected = 0;
        let mut programmed = 0;
        for other in reports.iter().filter(|r| r.node != name) {
            for block in &other.advertised_blocks {
                expected += 1;
                if report.programmed_routes.contains(block) {
                    programmed += 1;
                } else {
                    problems.push(format!(
                        "block {block} of {} missing from {name}'s kernel",
                        other.node
                    ));
                }
            }
        }
        nodes.push(NodeRow {
            node: name.to_string(),
            sessions_up: report
                .sessions
                .iter()
                .filter(|s| s.state == SessionState::Established)
                .count(),
            sessions_total: report.sessions.len(),
            routes_programmed: programmed,
            routes_expected: expected,
            status_age: Some(now.saturating_sub(report.published)),
        });
    }
    one_sided(reports, &mut problems);
    ClusterView { nodes, problems }
}

fn render(view: &ClusterView) -> String {
    let rows: Vec<Vec<String>> = view
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                format!("{}/{}", n.sessions_up, n.sessions_total),
                format!("{}/{}", n.routes_programmed, n.routes_expected),
                n.status_age.map_or("expired".into(), |a| format!("{a}s")),
            ]
        })
        .collect();
    let mut text = table::render(&["NODE", "SESSIONS UP", "ROUTES", "STATUS AGE"], &rows);
    if view.problems.is_empty() {
        text.push_str("\nno problems found\n");
    } else {
        text.push_str("\nproblems:\n");
        for p in &view.problems {
            text.push_str(&format!("  {p}\n"));
        }
    }
    text
}

async fn reports(store: &Arc<dyn Datastore>) -> Result<Vec<NodeStatusReport>> {
    let list = store.list(keys::NODE_STATUS).await?;
    let mut out = Vec::new();
    for kv in &list.kvs {
        match decode_json::<NodeStatusReport>(kv) {
            Ok(r) => out.push(r),
            Err(e) => eprintln!("routectl: skipping {}: {e}", kv.key),
        }
    }
    Ok(out)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn status(store: Arc<dyn Datastore>, out: Output) -> Result<ExitCode> {
    let registered: Vec<String> = store
        .list_keys(keys::NODES)
        .await?
        .kvs
        .iter()
        .map(|kv| keys::last_part(&kv.key).to_string())
        .collect();
    let view = analyze(&registered, &reports(&store).await?, now());
    print(out, &view, || render(&view))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn node_status(store: Arc<dyn Datastore>, node: &str, out: Output) -> Result<ExitCode> {
    let kv = store.get(&keys::node_status(node)).await?.ok_or_else(|| {
        CliError::not_found(
            format!("node {node}"),
            "no live status (agent stopped, or its lease expired)",
        )
    })?;
    let report: NodeStatusReport = decode_json(&kv)?;
    print(out, &report.sessions, || {
        format!(
            "{node} (published {}s ago)\n{}",
            now().saturating_sub(report.published),
            super::status::render(&report.sessions)
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1::{golden, PeerKind, PeerStatus};

    fn session(name: &str, address: &str, state: SessionState) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            address: address.parse().unwrap(),
            kind: PeerKind::Mesh,
            description: "node-to-node mesh".into(),
            state,
            since: 1_796_161_411,
            since_human: "2026-12-01 21:43:31".into(),
            info: if state == SessionState::Established {
                "Established".into()
            } else {
                "Connection refused (os error 111)".into()
            },
            prefixes_received: 1,
            prefixes_advertised: 1,
            end_of_rib_received: state == SessionState::Established,
            ..golden::read::<Vec<PeerStatus>>("bgp-status")[0].clone()
        }
    }

    fn report(i: u8, sessions: Vec<PeerStatus>, programmed: &[&str]) -> NodeStatusReport {
        NodeStatusReport {
            node: format!("node-{i}"),
            address: Some(format!("10.100.0.{i}").parse().unwrap()),
            version: "0.1.0".into(),
            started: 1_796_161_400,
            published: 1_796_161_420,
            sessions,
            advertised_blocks: vec![format!("10.90.{i}.0/26")],
            programmed_routes: programmed.iter().map(|s| s.to_string()).collect(),
        }
    }

    use SessionState::{Active, Established};

    fn healthy() -> Vec<NodeStatusReport> {
        vec![
            report(
                1,
                vec![session("Mesh_10_100_0_2", "10.100.0.2", Established)],
                &["10.90.2.0/26"],
            ),
            report(
                2,
                vec![session("Mesh_10_100_0_1", "10.100.0.1", Established)],
                &["10.90.1.0/26"],
            ),
        ]
    }

    #[test]
    fn the_published_report_matches_its_golden_file() {
        golden::check("node-status-report", &healthy()[0]);
    }

    #[test]
    fn a_healthy_cluster_has_no_problems() {
        let names = vec!["node-1".to_string(), "node-2".to_string()];
        let view = analyze(&names, &healthy(), 1_796_161_425);
        assert!(view.problems.is_empty(), "{:?}", view.problems);
        assert_eq!(view.nodes[0].status_age, Some(5));
        assert_eq!(
            (
                view.nodes[1].routes_programmed,
                view.nodes[1].routes_expected
            ),
            (1, 1)
        );
    }

    #[test]
    fn one_sided_sessions_missing_blocks_and_expired_nodes_are_named() {
        let mut reports = healthy();
        reports[1].sessions[0].state = Active;
        reports[1].programmed_routes.clear();
        let names: Vec<String> = ["node-1", "node-2", "node-3"].map(String::from).to_vec();
        let view = analyze(&names, &reports, 1_796_161_425);
        assert_eq!(
            view.problems,
            vec![
                "block 10.90.1.0/26 of node-1 missing from node-2's kernel".to_string(),
                "node-3: no live status (agent stopped, or its lease expired)".to_string(),
                "one-sided session: node-1 says Established to node-2 (10.100.0.2), node-2 says Active"
                    .to_string(),
            ]
        );
    }
}
