//! `routectl status`: the local agent's BGP sessions, as `calicoctl node status` shows them.
//! Reads `GET /v1/bgp/status` into the API's wire type ([`v1::PeerStatus`]); `-o json` prints
//! those rows unchanged.

use super::commands::{print, Result};
use super::{table, Output};
use crate::api::client::Client;
use crate::api::v1::{self, SessionState};
use std::path::Path;
use std::process::ExitCode;

pub fn status(socket: &Path, out: Output) -> Result<ExitCode> {
    let client = Client::new(socket).with_timeout(std::time::Duration::from_secs(5));
    let peers: Vec<v1::PeerStatus> = client.get("/v1/bgp/status")?;
    print(out, &peers, || render(&peers))?;
    Ok(ExitCode::SUCCESS)
}

fn render(peers: &[v1::PeerStatus]) -> String {
    let mut text = String::from("routed process is running.\n");
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        text.push_str(&format!("\n{family} BGP status\n"));
        let rows: Vec<Vec<String>> = peers
            .iter()
            .filter(|p| p.address.is_ipv4() == v4)
            .map(|p| {
                vec![
                    p.address.to_string(),
                    peer_label(p),
                    if p.state == SessionState::Established {
                        "up".into()
                    } else {
                        format!("{:?}", p.state).to_lowercase()
                    },
                    p.since_human.clone(),
                    p.info.clone(),
                    p.prefixes_received.to_string(),
                    p.prefixes_advertised.to_string(),
                    p.bfd.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        if rows.is_empty() {
            text.push_str(&format!("No {family} peers found.\n"));
        } else {
            text.push_str(&table::render(
                &[
                    "PEER ADDRESS",
                    "PEER TYPE",
                    "STATE",
                    "SINCE",
                    "INFO",
                    "RECEIVED",
                    "ADVERTISED",
                    "BFD",
                ],
                &rows,
            ));
        }
    }
    text
}

/// The peer's type column: the agent's description of the peer (`node-to-node mesh`,
/// `global`, ...), or the wire kind when an older agent sent none.
fn peer_label(p: &v1::PeerStatus) -> String {
    let cluster = p
        .rr_cluster_id
        .map_or_else(String::new, |id| format!(", cluster {id}"));
    match p.role {
        v1::PeerRole::RouteReflector => return format!("route reflector{cluster}"),
        v1::PeerRole::RrClient => return format!("rr client{cluster}"),
        v1::PeerRole::Peer | v1::PeerRole::Other => {}
    }
    if p.description.is_empty() {
        format!("{:?}", p.kind)
    } else {
        p.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1::golden;

    /// routectl reads what the agent serves (the golden file the server's mapping produces).
    #[test]
    fn status_reads_the_golden_bgp_status_and_renders_every_row() {
        let peers: Vec<v1::PeerStatus> = golden::read("bgp-status");
        let text = render(&peers);
        assert!(
            text.contains("| 10.0.0.2     | node-to-node mesh                | up ")
                && text.contains("| 10.0.0.254   | global                           | active ")
                && text.contains("| 10.0.0.11    | route reflector, cluster 1.0.0.1 | up ")
                && text.contains("| 10.0.0.21    | rr client, cluster 1.0.0.1       | up ")
                && text.contains("| fd00::1      | node specific | idle ")
                && text.contains("| opensent ")
                && text.contains("| openconfirm ")
                && text.contains("| route reflector "),
            "{text}"
        );
    }

    /// `routectl status -o json` prints the agent's rows in the same shape (scripts read it).
    #[test]
    fn status_json_output_is_the_wire_format() {
        let peers: Vec<v1::PeerStatus> = golden::read("bgp-status");
        let mut printed = serde_json::to_string_pretty(&peers).unwrap();
        printed.push('\n');
        assert_eq!(printed, golden::text("bgp-status"));
    }
}
