//! Node records (`/routed/v1/nodes/<name>`), written by each agent at start.

use super::{validate_name, ValidationError};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// One cluster node as the agent registered it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// The node's IPv4 address with the prefix length of its subnet (e.g. 192.168.1.10/24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<IpNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<IpNetwork>,
    /// How the address was found (`explicit`, `first-found`, `interface=eth.*`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_detection: Option<String>,
    /// Per-node AS, overriding the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Set on route reflectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rr_cluster_id: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_ipip_tunnel_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_vxlan_tunnel_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_tunnel_mac: Option<String>,
    /// MTU of the interface carrying the node address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Node {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        if self.as_number == Some(0) {
            return Err(ValidationError::InvalidAsNumber(0));
        }
        if self.ipv4_address.is_some_and(|a| !a.is_ipv4()) {
            return Err(ValidationError::InvalidField {
                field: "ipv4_address".into(),
                reason: "must be an IPv4 address with prefix length".into(),
            });
        }
        for (key, value) in &self.labels {
            validate_label(key, value)?;
        }
        if self.ipv6_address.is_some_and(|a| !a.is_ipv6()) {
            return Err(ValidationError::InvalidField {
                field: "ipv6_address".into(),
                reason: "must be an IPv6 address with prefix length".into(),
            });
        }
        Ok(())
    }
}

/// Checks a label the way Kubernetes does, loosely: a key of letters, digits and `_ . / -`
/// (at most 253 characters; what a selector can name), a value of letters, digits and
/// `_ . -` (at most 63, may be empty).
pub fn validate_label(key: &str, value: &str) -> Result<(), ValidationError> {
    let invalid = |reason: &str| {
        Err(ValidationError::InvalidField {
            field: format!("label {key:?}"),
            reason: reason.to_string(),
        })
    };
    let key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    if key.is_empty() {
        return invalid("the key must not be empty");
    }
    if key.len() > 253 || !key.chars().all(key_char) {
        return invalid("keys use letters, digits, '_', '.', '/' and '-' (at most 253)");
    }
    let value_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if value.len() > 63 || !value.chars().all(value_char) {
        return invalid("values use letters, digits, '_', '.' and '-' (at most 63)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_validated() {
        assert!(validate_label("route-reflector", "true").is_ok());
        assert!(validate_label("topology.kubernetes.io/zone", "").is_ok());
        assert!(validate_label("", "x").is_err());
        assert!(validate_label("a b", "x").is_err());
        assert!(validate_label("a", "it's").is_err());
        let mut node = Node {
            name: "n1".into(),
            ..Node::default()
        };
        node.labels.insert("bad key".into(), "v".into());
        assert!(node.validate().is_err());
    }
}
