//! The node's identity: address detection (Calico's methods), MTU, and the Node record.

use super::AgentConfig;
use crate::datastore::{decode_json, encode_json, Datastore, DatastoreError};
use crate::model::{keys, Node};
use crate::netlink::{KernelNetlink, Netlink};
use anyhow::{bail, Context, Result};
use ipnetwork::IpNetwork;

/// What detection found.
#[derive(Debug, Clone)]
pub struct Detected {
    pub address: Option<IpNetwork>,
    pub interface: Option<String>,
    pub method: String,
    /// MTU of the interface carrying the address (1500 when unknown).
    pub mtu: u32,
}

/// Finds the node address: explicit `--ip`, or `first-found`, `interface=REGEX` (a prefix match
/// on the interface name, `*` as wildcard), `cidr=CIDR`.
pub async fn detect(config: &AgentConfig) -> Result<Detected> {
    let netlink = KernelNetlink::new().await.context("netlink")?;
    let links = netlink.list_links().await.context("listing interfaces")?;
    let mut candidates = Vec::new();
    for link in &links {
        if link.name == "lo" || link.name.starts_with("rd") || !link.up {
            continue;
        }
        for addr in netlink.list_addresses(link.index).await.unwrap_or_default() {
            if addr.is_ipv4() && !addr.ip().is_loopback() && !is_link_local(&addr) {
                candidates.push((link.name.clone(), link.mtu, addr));
            }
        }
    }
    let (method, chosen) = match (&config.ip, config.autodetect.as_str()) {
        (Some(ip), _) => {
            let found = candidates
                .iter()
                .find(|(_, _, a)| a.ip() == ip.ip())
                .cloned();
            (
                "explicit".to_string(),
                Some(found.unwrap_or(("".into(), 1500, *ip))),
            )
        }
        (None, "first-found") => ("first-found".to_string(), candidates.first().cloned()),
        (None, m) if m.starts_with("interface=") => {
            let pattern = &m["interface=".len()..];
            (
                m.to_string(),
                candidates
                    .iter()
                    .find(|(name, _, _)| glob_match(pattern, name))
                    .cloned(),
            )
        }
        (None, m) if m.starts_with("cidr=") => {
            let cidr: IpNetwork = m["cidr=".len()..]
                .parse()
                .with_context(|| format!("bad {m}"))?;
            (
                m.to_string(),
                candidates
                    .iter()
                    .find(|(_, _, a)| cidr.contains(a.ip()))
                    .cloned(),
            )
        }
        (None, m) => bail!(
            "unknown address detection method {m:?}: use first-found, interface=REGEX or cidr=CIDR"
        ),
    };
    let Some((interface, mtu, address)) = chosen else {
        bail!("no IPv4 address found by {method}; give the node address with --ip A.B.C.D/LEN");
    };
    Ok(Detected {
        address: Some(address),
        interface: (!interface.is_empty()).then_some(interface),
        method,
        mtu: if mtu == 0 { 1500 } else { mtu },
    })
}

fn is_link_local(addr: &IpNetwork) -> bool {
    matches!(addr.ip(), std::net::IpAddr::V4(v4) if v4.is_link_local())
}

/// `eth*`, `ens3`, `en*0`: `*` matches any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    parts.len() > 1 || rest.is_empty()
}

/// Creates or updates this node's record, keeping fields others set (AS, labels, RR cluster).
pub async fn register(store: &dyn Datastore, name: &str, detected: &Detected) -> Result<()> {
    let key = keys::node(name);
    for _ in 0..crate::ipam::MAX_ATTEMPTS {
        let existing = store.get(&key).await?;
        let mut node: Node = match &existing {
            Some(kv) => decode_json(kv)?,
            None => Node {
                name: name.to_string(),
                ..Node::default()
            },
        };
        node.ipv4_address = detected.address.filter(|a| a.is_ipv4());
        node.address_detection = Some(detected.method.clone());
        node.mtu = Some(detected.mtu);
        node.validate()?;
        let value = encode_json(&node);
        let result = match &existing {
            Some(kv) => store.update(&key, value, kv.mod_revision).await.map(|_| ()),
            None => store.create(&key, value, 0).await.map(|_| ()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(DatastoreError::Conflict { .. } | DatastoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("node {name}: too many concurrent updates")
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_patterns() {
        assert!(super::glob_match("eth*", "eth0"));
        assert!(super::glob_match("eth0", "eth0"));
        assert!(!super::glob_match("eth0", "eth01"));
        assert!(super::glob_match("en*0", "ens10"));
        assert!(!super::glob_match("wl*", "eth0"));
    }
}
