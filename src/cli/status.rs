//! `routectl status`: the local agent's BGP sessions, as `calicoctl node status` shows them.

use super::commands::print;
use super::{table, Output};
use crate::api::client::{Client, ClientError};
use crate::bgp::fsm::State;
use crate::bgp::speaker::PeerStatus;
use anyhow::{bail, Result};
use std::path::Path;
use std::process::ExitCode;

pub fn status(socket: &Path, out: Output) -> Result<ExitCode> {
    let client = Client::new(socket).with_timeout(std::time::Duration::from_secs(5));
    let peers: Vec<PeerStatus> = match client.get("/v1/bgp/status") {
        Ok(p) => p,
        Err(ClientError::Unreachable { .. }) => {
            bail!(
                "routed is not running (no agent answers at {}; start it, or pass --socket)",
                socket.display()
            )
        }
        Err(ClientError::Slow { after, .. }) => {
            bail!(
                "routed is running but did not answer within {} s at {} (busy, e.g. loading a \
                 large routing table); try again",
                after.as_secs(),
                socket.display()
            )
        }
        Err(e) => return Err(e.into()),
    };
    print(out, &peers, || render(&peers))?;
    Ok(ExitCode::SUCCESS)
}

fn render(peers: &[PeerStatus]) -> String {
    let mut text = String::from("routed process is running.\n");
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        text.push_str(&format!("\n{family} BGP status\n"));
        let rows: Vec<Vec<String>> = peers
            .iter()
            .filter(|p| p.address.is_ipv4() == v4)
            .map(|p| {
                vec![
                    p.address.to_string(),
                    p.description.clone(),
                    if p.state == State::Established {
                        "up".into()
                    } else {
                        format!("{:?}", p.state).to_lowercase()
                    },
                    p.since_human.clone(),
                    p.info.clone(),
                    p.prefixes_received.to_string(),
                    p.prefixes_advertised.to_string(),
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
                ],
                &rows,
            ));
        }
    }
    text
}
