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
        if self.ipv6_address.is_some_and(|a| !a.is_ipv6()) {
            return Err(ValidationError::InvalidField {
                field: "ipv6_address".into(),
                reason: "must be an IPv6 address with prefix length".into(),
            });
        }
        Ok(())
    }
}
