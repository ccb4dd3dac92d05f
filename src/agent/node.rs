//! The node's identity: address detection (Calico's methods), MTU, and the Node record.
//!
//! The agent writes this node's record only here: [`register`] at start (address, detection
//! method, MTU) and [`record_tunnel`] for the tunnel manager (tunnel addresses, VTEP MAC), each a
//! get-modify-compare-and-swap ([`crate::datastore::update_json`]).

use super::AgentConfig;
use crate::datastore::{update_json, Datastore};
use crate::ipam::Ipam;
use crate::model::{keys, Node, ValidationError};
use crate::netlink::{KernelNetlink, MacAddr, Netlink};
use anyhow::{bail, Context, Result};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// What detection found.
#[derive(Debug, Clone)]
pub struct Detected {
    pub address: Option<IpNetwork>,
    pub interface: Option<String>,
    pub method: String,
    /// MTU of the interface carrying the address (1500 when unknown).
    pub mtu: u32,
}

/// An address on an interface that is up: (interface, its MTU, address with prefix length).
pub type Candidate = (String, u32, IpNetwork);

/// Finds the node address: explicit `--ip`, or `first-found`, `interface=REGEX` (a prefix match
/// on the interface name, `*` as wildcard), `cidr=CIDR`, `can-reach=IP` (the source address the
/// kernel picks for a route to IP).
pub async fn detect(config: &AgentConfig) -> Result<Detected> {
    let netlink = KernelNetlink::new().await.context("netlink")?;
    let links = netlink.list_links().await.context("listing interfaces")?;
    let mut candidates: Vec<Candidate> = Vec::new();
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
    let source = match (&config.ip, config.autodetect.strip_prefix("can-reach=")) {
        (None, Some(target)) => Some(source_address_towards(target)?),
        _ => None,
    };
    choose(config.ip, &config.autodetect, &candidates, source)
}

/// The source address the kernel would use to reach `target` (an IP, or IP:port): a connected
/// UDP socket asks the routing table without sending anything.
pub fn source_address_towards(target: &str) -> Result<IpAddr> {
    let ip: IpAddr = target
        .parse()
        .or_else(|_| target.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .with_context(|| format!("can-reach={target}: not an IP address"))?;
    let bind: std::net::SocketAddr = match ip {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(bind).context("can-reach: opening a UDP socket")?;
    socket
        .connect((ip, 9))
        .with_context(|| format!("can-reach={target}: no route to {ip}"))?;
    Ok(socket
        .local_addr()
        .context("can-reach: reading the chosen source address")?
        .ip())
}

/// The detection decision, without I/O. `source` is the address `can-reach` found.
pub fn choose(
    explicit: Option<IpNetwork>,
    method: &str,
    candidates: &[Candidate],
    source: Option<IpAddr>,
) -> Result<Detected> {
    let (method, chosen) = match (explicit, method) {
        (Some(ip), _) => {
            let found = candidates.iter().find(|(_, _, a)| a.ip() == ip.ip()).cloned();
            (
                "explicit".to_string(),
                Some(found.unwrap_or(("".into(), 1500, ip))),
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
        (None, m) if m.starts_with("can-reach=") => (
            m.to_string(),
            source.and_then(|src| candidates.iter().find(|(_, _, a)| a.ip() == src).cloned()),
        ),
        (None, m) => bail!(
            "unknown address detection method {m:?}: use first-found, interface=REGEX, cidr=CIDR or can-reach=IP"
        ),
    };
    let Some((interface, mtu, address)) = chosen else {
        let hint = match source {
            Some(src) => format!(" (the kernel would use {src}, which is on no usable interface)"),
            None => String::new(),
        };
        bail!(
            "no IPv4 address found by {method}{hint}; give the node address with --ip A.B.C.D/LEN"
        );
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

/// Bytes the enabled pools' encapsulation takes from the pod MTU (IPIP 20, VXLAN 50).
pub async fn encapsulation_overhead(ipam: &Ipam) -> Result<u32> {
    Ok(overhead_of(&ipam.list_pools().await?))
}

/// The largest encapsulation overhead among the enabled pools (pure; see
/// [`super::calc::encapsulation_overhead`]).
pub fn overhead_of(pools: &[crate::model::IpPool]) -> u32 {
    super::calc::encapsulation_overhead(pools)
}

/// Creates or updates this node's record, keeping fields others set (AS, labels, RR cluster).
pub async fn register(store: &dyn Datastore, name: &str, detected: &Detected) -> Result<()> {
    update_json(store, &keys::node(name), |existing: Option<Node>| {
        let mut node = existing.unwrap_or_else(|| Node {
            name: name.to_string(),
            ..Node::default()
        });
        node.ipv4_address = detected.address.filter(|a| a.is_ipv4());
        node.address_detection = Some(detected.method.clone());
        node.mtu = Some(detected.mtu);
        node.validate()?;
        Ok::<_, ValidationError>(Some(node))
    })
    .await?;
    Ok(())
}

/// The tunnel fields of a Node record, as the tunnel manager sets them (`None` clears).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelRecord {
    /// `ipv4_ipip_tunnel_addr`.
    Ipip(Option<IpAddr>),
    /// `ipv4_vxlan_tunnel_addr` and `vxlan_tunnel_mac`.
    Vxlan(Option<IpAddr>, Option<MacAddr>),
}

impl TunnelRecord {
    fn apply_to(self, node: &mut Node) {
        match self {
            TunnelRecord::Ipip(address) => node.ipv4_ipip_tunnel_addr = address,
            TunnelRecord::Vxlan(address, mac) => {
                node.ipv4_vxlan_tunnel_addr = address;
                node.vxlan_tunnel_mac = mac.map(|m| m.to_string());
            }
        }
    }
}

/// Records a tunnel address (and VTEP MAC) on this node's record; nothing is written when the
/// record already says so. The node must be registered.
pub async fn record_tunnel(store: &dyn Datastore, name: &str, record: TunnelRecord) -> Result<()> {
    update_json(store, &keys::node(name), |current: Option<Node>| {
        let Some(mut node) = current else {
            bail!("node {name} is not registered");
        };
        let before = node.clone();
        record.apply_to(&mut node);
        Ok((node != before).then_some(node))
    })
    .await?;
    Ok(())
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

    fn candidates() -> Vec<super::Candidate> {
        vec![
            ("eth0".into(), 1500, "192.0.2.10/24".parse().unwrap()),
            ("eth1".into(), 9000, "198.51.100.10/24".parse().unwrap()),
        ]
    }

    #[test]
    fn can_reach_picks_the_interface_carrying_the_kernels_source_address() {
        let src = "198.51.100.10".parse().ok();
        let got = super::choose(None, "can-reach=198.51.100.1", &candidates(), src).unwrap();
        assert_eq!(got.address, "198.51.100.10/24".parse().ok());
        assert_eq!(got.interface.as_deref(), Some("eth1"));
        assert_eq!(
            (got.method.as_str(), got.mtu),
            ("can-reach=198.51.100.1", 9000)
        );
        // A source on no candidate interface (lo, a pod veth) is an error naming it.
        let err = super::choose(
            None,
            "can-reach=10.0.0.1",
            &candidates(),
            "127.0.0.1".parse().ok(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }

    #[test]
    fn other_methods_still_choose_as_before() {
        let c = candidates();
        assert_eq!(
            super::choose(None, "first-found", &c, None)
                .unwrap()
                .interface
                .as_deref(),
            Some("eth0")
        );
        assert_eq!(
            super::choose(None, "interface=eth1", &c, None).unwrap().mtu,
            9000
        );
        assert_eq!(
            super::choose(None, "cidr=198.51.100.0/24", &c, None)
                .unwrap()
                .address,
            "198.51.100.10/24".parse().ok()
        );
        let explicit =
            super::choose("203.0.113.5/24".parse().ok(), "first-found", &c, None).unwrap();
        assert_eq!(
            (explicit.method.as_str(), explicit.interface),
            ("explicit", None)
        );
        assert!(super::choose(None, "magic", &c, None).is_err());
    }

    #[test]
    fn can_reach_on_loopback_uses_the_routing_table() {
        let src = super::source_address_towards("127.0.0.1").unwrap();
        assert!(src.is_loopback(), "{src}");
        assert!(super::source_address_towards("not-an-ip").is_err());
    }
}
