//! The resource model: what lives in the datastore, how it is named, and what makes it valid.
//!
//! Data flow: `routectl` and the agent build these types, call `validate()` (and, for pools,
//! [`pool::validate_pool_set`]) before writing, and serialise them as JSON under the keys from
//! [`keys`]. The same types render as YAML or JSON for `-o yaml|json`.
//!
//! Every address type is `IpNetwork`/`IpAddr`, never the v4-only variants: IPv6 pools, nodes and
//! peers are representable from the start even where later layers only act on IPv4.

pub mod bgp;
pub mod ipam;
pub mod keys;
pub mod node;
pub mod pool;
pub mod selector;

pub use bgp::{BfdConfig, NextHopMode, PrefixLimitAction};
pub use bgp::{BgpConfiguration, BgpPeer};
pub use ipam::{AffinityState, Allocation, Block, BlockAffinity, Handle, IpamConfig};
pub use node::Node;
pub use pool::{EncapMode, IpPool};
pub use selector::{Selector, SelectorError};

use thiserror::Error;

/// A resource or request that fails validation. Messages say what is wrong and what to do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValidationError {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid CIDR {input:?}: {reason}")]
    InvalidCidr { input: String, reason: String },
    #[error("{cidr} is a host address, not a pool: give the network, e.g. {suggestion}")]
    HostAddressAsPool { cidr: String, suggestion: String },
    #[error("block size /{block_size} is out of range for {family}: use {min}..={max} (default {default})")]
    BlockSizeOutOfRange {
        block_size: u8,
        family: &'static str,
        min: u8,
        max: u8,
        default: u8,
    },
    #[error("block size /{block_size} is larger than pool {cidr}: the pool must hold at least one block")]
    BlockLargerThanPool { block_size: u8, cidr: String },
    #[error("pool {name}: ipip_mode and vxlan_mode are both set; choose one encapsulation")]
    BothEncapsulations { name: String },
    #[error("pool {name}: IPIP cannot carry IPv6 ({cidr}); use vxlan_mode for IPv6 pools")]
    IpipOnIpv6 { name: String, cidr: String },
    #[error("pool {name} ({cidr}) overlaps pool {other} ({other_cidr})")]
    PoolsOverlap {
        name: String,
        cidr: String,
        other: String,
        other_cidr: String,
    },
    #[error("invalid AS number {0}: 0 is reserved")]
    InvalidAsNumber(u32),
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
}

/// Checks a resource name the way Kubernetes checks a DNS-1123 subdomain: lower-case
/// alphanumerics, '-' and '.', starting and ending alphanumeric, at most 253 characters.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let fail = |reason: &str| {
        Err(ValidationError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > 253 {
        return fail("must be at most 253 characters");
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if !name.chars().all(ok_char) {
        return fail("use lower-case letters, digits, '-' and '.' only");
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return fail("must start and end with a letter or digit");
    }
    Ok(())
}

/// Checks an IPAM handle id: printable ASCII without '/' or whitespace (container ids,
/// `k8s-pod-network.<id>`, `ipip-tunnel-addr-<node>` all pass), at most 253 characters.
pub fn validate_handle(handle: &str) -> Result<(), ValidationError> {
    let reason = if handle.is_empty() {
        Some("must not be empty")
    } else if handle.len() > 253 {
        Some("must be at most 253 characters")
    } else if !handle.chars().all(|c| c.is_ascii_graphic() && c != '/') {
        Some("use printable ASCII without '/' or spaces")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ValidationError::InvalidField {
            field: format!("handle {handle:?}"),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}

/// Parses a CIDR such as `10.244.0.0/16` or `fd00:10::/48`, with a message naming the input.
pub fn parse_cidr(input: &str) -> Result<ipnetwork::IpNetwork, ValidationError> {
    if !input.contains('/') {
        return Err(ValidationError::InvalidCidr {
            input: input.to_string(),
            reason: "missing prefix length (write it as ADDRESS/LEN, e.g. 10.244.0.0/16)".into(),
        });
    }
    input.parse().map_err(
        |e: ipnetwork::IpNetworkError| ValidationError::InvalidCidr {
            input: input.to_string(),
            reason: e.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_subdomain_rules() {
        assert!(validate_name("default-ipv4-ippool").is_ok());
        assert!(validate_name("node-1.rack2").is_ok());
        for bad in ["", "Upper", "-lead", "trail-", "sp ace", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn handles_allow_container_ids_and_reject_slashes() {
        assert!(validate_handle("k8s-pod-network.0123abcd").is_ok());
        assert!(validate_handle("ipip-tunnel-addr-node1").is_ok());
        assert!(validate_handle("a/b").is_err());
        assert!(validate_handle("").is_err());
    }

    #[test]
    fn cidr_errors_name_the_input() {
        let err = parse_cidr("10.0.0.0").unwrap_err().to_string();
        assert!(
            err.contains("10.0.0.0") && err.contains("prefix length"),
            "{err}"
        );
        let err = parse_cidr("10.0.0.300/24").unwrap_err().to_string();
        assert!(err.contains("10.0.0.300/24"), "{err}");
        assert!(parse_cidr("fd00::/48").is_ok());
    }

    /// `value` survives YAML and JSON unchanged, IPv4 and IPv6 alike.
    fn round_trips<T>(value: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let yaml = serde_yaml::to_string(value).unwrap();
        assert_eq!(&serde_yaml::from_str::<T>(&yaml).unwrap(), value, "{yaml}");
        let json = serde_json::to_string_pretty(value).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
    }

    #[test]
    fn every_resource_round_trips_through_yaml_and_json() {
        let mut pool = IpPool::new("v4", "10.244.0.0/16".parse().unwrap());
        pool.ipip_mode = EncapMode::CrossSubnet;
        pool.nat_outgoing = true;
        round_trips(&pool);
        let mut pool6 = IpPool::new("v6", "fd00:10::/48".parse().unwrap());
        pool6.vxlan_mode = EncapMode::Always;
        pool6.disabled = true;
        round_trips(&pool6);
        round_trips(&BgpConfiguration {
            as_number: 65100,
            node_to_node_mesh: false,
            node_mesh_password: Some("mesh".into()),
            ..BgpConfiguration::default()
        });
        for (peer_ip, node) in [("192.0.2.1", Some("node-1")), ("2001:db8::1", None)] {
            round_trips(&BgpPeer {
                name: "tor".into(),
                peer_ip: Some(peer_ip.parse().unwrap()),
                peer_port: Some(1179),
                as_number: 65001,
                node: node.map(str::to_owned),
                password: Some("s3cret".into()),
                source_address: None,
                hold_time: Some(9),
                keepalive_time: Some(3),
                max_restart_time: Some(120),
                max_prefixes: Some(1000),
                max_prefixes_action: Some(crate::model::PrefixLimitAction::Warn),
                local_as_number: Some(65100),
                ttl_security: Some(1),
                num_allowed_local_as_numbers: Some(2),
                next_hop_mode: Some(crate::model::NextHopMode::ForceSelf),
                ..BgpPeer::default()
            });
        }
        round_trips(&Node {
            name: "node-1".into(),
            ipv4_address: Some("192.0.2.10/24".parse().unwrap()),
            ipv6_address: Some("2001:db8::10/64".parse().unwrap()),
            as_number: Some(65010),
            labels: [("rack".to_owned(), "r1".to_owned())].into(),
            ..Node::default()
        });
        for cidr in ["10.244.1.0/26", "fd00:10::40/122"] {
            let mut block = Block::new(cidr.parse().unwrap(), Some("node-1"));
            let attributes = [("pod".to_owned(), "web-0".to_owned())].into();
            block.assign(2, "k8s-pod-network.abc", &attributes);
            round_trips(&block);
            let mut handle = Handle::new("k8s-pod-network.abc");
            handle.add(&block.cidr, 2);
            round_trips(&handle);
        }
        for state in [
            AffinityState::Pending,
            AffinityState::Confirmed,
            AffinityState::PendingDeletion,
        ] {
            round_trips(&BlockAffinity { state });
        }
        round_trips(&IpamConfig {
            strict_affinity: true,
            max_blocks_per_host: 4,
        });
    }
}
