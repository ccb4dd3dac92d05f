//! `routectl peer ...` and `routectl config ...`.

use super::commands::{ok, print, Result};
use super::error::CliError;
use super::{table, ConfigCommand, OnOff, Output, PeerCommand};
use crate::datastore::{
    decode_json, encode_json, get_json, update_json, Datastore, DatastoreError, UpdateError,
};
use crate::model::{keys, BgpConfiguration, BgpPeer, ValidationError};
use std::process::ExitCode;
use std::sync::Arc;

pub async fn peer(store: Arc<dyn Datastore>, cmd: &PeerCommand, out: Output) -> Result<ExitCode> {
    match cmd {
        PeerCommand::Create {
            name,
            peer_ip,
            peer_selector,
            as_number,
            node,
            node_selector,
            password_file,
            port,
            hold_time,
            source_address,
            bfd,
            max_prefixes,
            max_prefixes_action,
            keepalive_time,
            max_restart_time,
            local_as_number,
            ttl_security,
            num_allowed_local_as_numbers,
            next_hop_mode,
        } => {
            let password = password_file.as_deref().map(read_password).transpose()?;
            let peer = BgpPeer {
                name: name.clone(),
                peer_ip: *peer_ip,
                peer_port: *port,
                as_number: *as_number,
                node: node.clone(),
                password,
                source_address: *source_address,
                hold_time: *hold_time,
                keepalive_time: *keepalive_time,
                max_restart_time: *max_restart_time,
                node_selector: node_selector.clone(),
                peer_selector: peer_selector.clone(),
                bfd: bfd.apply(None),
                max_prefixes: *max_prefixes,
                max_prefixes_action: *max_prefixes_action,
                local_as_number: *local_as_number,
                ttl_security: ttl_security.filter(|hops| *hops != 0),
                num_allowed_local_as_numbers: *num_allowed_local_as_numbers,
                next_hop_mode: *next_hop_mode,
            };
            create_peer(store.as_ref(), peer, out).await?;
        }
        PeerCommand::List => {
            let mut peers: Vec<BgpPeer> = store
                .list(keys::PEERS)
                .await?
                .kvs
                .iter()
                .map(decode_json)
                .collect::<Result<_, _>>()?;
            for p in &mut peers {
                if p.password.is_some() {
                    p.password = Some("********".into());
                }
            }
            print(out, &peers, || {
                let rows = peers
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            remote_of(p),
                            p.as_number.to_string(),
                            p.peer_type().to_string(),
                            p.node
                                .clone()
                                .or_else(|| p.node_selector.clone())
                                .unwrap_or_else(|| "(all)".into()),
                            if p.password.is_some() { "md5" } else { "-" }.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table::render(&["NAME", "PEER IP", "AS", "TYPE", "NODE", "AUTH"], &rows)
            })?;
        }
        PeerCommand::Delete { name } => {
            let Some(kv) = store.get(&keys::peer(name)).await? else {
                return Err(CliError::not_found(
                    format!("peer {name}"),
                    format!("peer {name} not found"),
                ));
            };
            store.delete(&kv.key, kv.mod_revision).await?;
            print(out, &serde_json::json!({"deleted": name}), || {
                format!("peer {name} deleted\n")
            })?;
        }
    }
    ok()
}

/// Validate and write a new peer, then print it (password masked).
async fn create_peer(store: &dyn Datastore, peer: BgpPeer, out: Output) -> Result<()> {
    let name = peer.name.clone();
    peer.validate()?;
    match store
        .create(&keys::peer(&name), encode_json(&peer), 0)
        .await
    {
        Ok(_) => {}
        Err(DatastoreError::AlreadyExists { .. }) => {
            return Err(CliError::conflict(
                format!("peer {name}"),
                format!("peer {name} already exists; delete it first to change it"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    print_created(out, &name, peer)
}

/// The remote side of a peer as the tables show it: its address, or its selector.
fn remote_of(peer: &BgpPeer) -> String {
    match (&peer.peer_ip, &peer.peer_selector) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(selector)) => selector.clone(),
        (None, None) => "-".into(),
    }
}

/// What `peer create` prints: the peer as written, its password masked.
fn print_created(out: Output, name: &str, peer: BgpPeer) -> Result<()> {
    let shown = BgpPeer {
        password: peer.password.as_ref().map(|_| "********".into()),
        ..peer
    };
    print(out, &shown, || {
        format!(
            "peer {name} created ({} AS {}, {})\n",
            remote_of(&shown),
            shown.as_number,
            shown.peer_type()
        )
    })
}

/// `bfd: ...` for `routectl config get/set`.
fn bfd_line(bfd: Option<&crate::model::BfdConfig>) -> String {
    match bfd {
        Some(b) if b.enabled => format!(
            "bfd: on ({}/{} ms x{}{})\n",
            b.min_tx_ms,
            b.min_rx_ms,
            b.multiplier,
            if b.graceful { ", graceful" } else { "" }
        ),
        _ => "bfd: off\n".to_owned(),
    }
}

/// The MD5 password in `path`, without its trailing newline.
fn read_password(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::invalid(
            "--password-file",
            format!("cannot read the password file {}: {e}", path.display()),
        )
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn config(
    store: Arc<dyn Datastore>,
    cmd: &ConfigCommand,
    out: Output,
) -> Result<ExitCode> {
    let key = keys::BGP_CONFIG;
    let config = match cmd {
        ConfigCommand::Get => get_json::<BgpConfiguration>(store.as_ref(), key)
            .await?
            .map(|(config, _)| config)
            .unwrap_or_default(),
        ConfigCommand::Set {
            as_number,
            mesh,
            listen_port,
            bfd,
        } => {
            let written = update_json(store.as_ref(), key, |current: Option<BgpConfiguration>| {
                let mut config = current.unwrap_or_default();
                if let Some(n) = as_number {
                    config.as_number = *n;
                }
                if let Some(m) = mesh {
                    config.node_to_node_mesh = *m == OnOff::On;
                }
                if let Some(p) = listen_port {
                    config.listen_port = *p;
                }
                config.bfd = bfd.apply(config.bfd);
                config.validate()?;
                Ok::<_, ValidationError>(Some(config))
            })
            .await;
            match written {
                Ok(config) => config.unwrap_or_default(),
                Err(UpdateError::TooManyConflicts { .. }) => {
                    return Err(CliError::conflict(
                        key,
                        "the BGP configuration kept changing; run the command again",
                    ))
                }
                Err(UpdateError::Rejected { reason, .. }) => return Err(reason.into()),
                Err(UpdateError::Datastore(e)) => return Err(e.into()),
            }
        }
    };
    print(out, &config, || {
        format!(
            "as_number: {}\nnode_to_node_mesh: {}\nlisten_port: {}\ngraceful_restart_time: {}\n",
            config.as_number,
            if config.node_to_node_mesh {
                "on"
            } else {
                "off"
            },
            config.listen_port,
            config.graceful_restart_time
        ) + &bfd_line(config.bfd.as_ref())
    })?;
    ok()
}
