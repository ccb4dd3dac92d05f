//! BGP resources: the cluster-wide `BgpConfiguration` and explicit `BgpPeer`s.
//!
//! Field meanings follow Calico's BGPConfiguration and BGPPeer; the defaults are Calico's
//! (AS 64512, node-to-node mesh on, port 179).

use super::selector::Selector;
use super::{validate_name, ValidationError};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

fn default_as() -> u32 {
    64512
}
fn default_true() -> bool {
    true
}
fn default_port() -> u16 {
    179
}
fn default_restart_time() -> u32 {
    120
}

/// Cluster-wide BGP settings (`/routed/v1/config/bgp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpConfiguration {
    #[serde(default = "default_as")]
    pub as_number: u32,
    #[serde(default = "default_true")]
    pub node_to_node_mesh: bool,
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// Graceful-restart time advertised to peers, seconds (RFC 4724).
    #[serde(default = "default_restart_time")]
    pub graceful_restart_time: u32,
    /// TCP MD5 password for mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<String>,
    /// BFD on the node-to-node mesh sessions (the cluster default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdConfig>,
}

impl Default for BgpConfiguration {
    fn default() -> Self {
        BgpConfiguration {
            as_number: default_as(),
            node_to_node_mesh: true,
            listen_port: default_port(),
            graceful_restart_time: default_restart_time(),
            node_mesh_password: None,
            bfd: None,
        }
    }
}

impl BgpConfiguration {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.as_number == 0 {
            return Err(ValidationError::InvalidAsNumber(0));
        }
        if self.listen_port == 0 {
            return Err(ValidationError::InvalidField {
                field: "listen_port".into(),
                reason: "must be 1..=65535".into(),
            });
        }
        if let Some(bfd) = &self.bfd {
            bfd.validate()?;
        }
        Ok(())
    }
}

/// An explicit BGP peer (`/routed/v1/bgppeers/<name>`): global when neither `node` nor
/// `node_selector` is set, otherwise only the named or selected nodes peer with it. The remote
/// side is `peer_ip`, or every node `peer_selector` selects (exactly one of the two).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeer {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// The peer's AS. With `peer_selector` each session uses the selected node's own AS (this
    /// may then be 0).
    pub as_number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// TCP MD5 password (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<u16>,
    /// How long to keep this peer's routes when it restarts gracefully, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<u32>,
    // -- route reflection (issue 13) --
    /// Which nodes have this peering (Calico selector syntax); excludes `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// Peer with every node this selects (Calico selector syntax) instead of `peer_ip`; the
    /// selected nodes open the reverse side by themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    // -- end route reflection --
    /// BFD on this peer's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdConfig>,
    /// Most prefixes the peer may send; past it `max_prefixes_action` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    /// `warn` (log once) or `restart` (Cease/1, RFC 4486; the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes_action: Option<PrefixLimitAction>,
    /// Our AS on this session instead of the cluster's or the node's (Calico's
    /// `localASNumber`): only the OPEN carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_as_number: Option<u32>,
    /// GTSM (RFC 5082, Calico's `ttlSecurity`): the peer is at most this many hops away;
    /// TTL 255 is sent and nothing below 256 − hops accepted. 0 or absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// Accept routes whose AS_PATH holds our AS up to this many times (Calico's
    /// `numAllowedLocalASNumbers`, BIRD's `allow local as N`). 0 or absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_allowed_local_as_numbers: Option<u32>,
    /// The NEXT_HOP of routes sent to this peer (Calico's `nextHopMode`); absent: `Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
}

/// How the NEXT_HOP of routes sent to a peer is chosen (Calico's `nextHopMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum NextHopMode {
    /// Our address towards eBGP peers, the received one towards iBGP peers.
    #[default]
    #[value(name = "auto")]
    Auto,
    /// Always our address (BIRD's `next hop self`).
    #[serde(rename = "Self")]
    #[value(name = "self")]
    ForceSelf,
    /// Always the received one, even towards eBGP (BIRD's `next hop keep`); our own
    /// prefixes still carry our address.
    #[value(name = "keep")]
    Keep,
}

/// What happens when a peer sends more than `max_prefixes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrefixLimitAction {
    Warn,
    Restart,
}

impl BgpPeer {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        if self.as_number == 0 && self.peer_selector.is_none() {
            return Err(ValidationError::InvalidAsNumber(0));
        }
        if let Some(node) = &self.node {
            validate_name(node)?;
        }
        self.validate_selectors()?;
        if let Some(hold) = self.hold_time {
            if hold != 0 && hold < 3 {
                return Err(ValidationError::InvalidField {
                    field: "hold_time".into(),
                    reason: "must be 0 or at least 3 seconds (RFC 4271 4.2)".into(),
                });
            }
        }
        if self
            .password
            .as_ref()
            .is_some_and(|p| p.is_empty() || p.len() > 80)
        {
            return Err(ValidationError::InvalidField {
                field: "password".into(),
                reason: "TCP MD5 keys are 1..=80 bytes".into(),
            });
        }
        if let Some(bfd) = &self.bfd {
            bfd.validate()?;
        }
        if self.local_as_number == Some(0) {
            return Err(ValidationError::InvalidAsNumber(0));
        }
        if self.keepalive_time == Some(0) {
            return Err(ValidationError::InvalidField {
                field: "keepalive_time".into(),
                reason: "must be at least 1 second".into(),
            });
        }
        Ok(())
    }

    /// The peer type shown by `routectl status`.
    pub fn peer_type(&self) -> &'static str {
        if self.node.is_some() || self.node_selector.as_deref().is_some_and(|s| !is_all(s)) {
            "node specific"
        } else {
            "global"
        }
    }

    /// "Exactly one of peer_ip / peer_selector", "not both node and node_selector", and
    /// selectors that parse (the error names the field and the column).
    fn validate_selectors(&self) -> Result<(), ValidationError> {
        let invalid = |field: &str, reason: String| ValidationError::InvalidField {
            field: field.into(),
            reason,
        };
        match (self.peer_ip, &self.peer_selector) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "peer_ip",
                    "give either peer_ip or peer_selector, not both".into(),
                ))
            }
            (None, None) => return Err(invalid("peer_ip", "give peer_ip or peer_selector".into())),
            (Some(ip), None) if ip.is_unspecified() || ip.is_multicast() => {
                return Err(invalid("peer_ip", format!("{ip} is not a unicast address")))
            }
            _ => {}
        }
        if self.node.is_some() && self.node_selector.is_some() {
            return Err(invalid(
                "node_selector",
                "give either node or node_selector, not both".into(),
            ));
        }
        for (field, selector) in [
            ("node_selector", &self.node_selector),
            ("peer_selector", &self.peer_selector),
        ] {
            if let Some(text) = selector {
                Selector::parse(text).map_err(|e| invalid(field, format!("{text:?}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The parsed node selector (`None`: not set or not valid; `validate` refuses the latter).
    pub fn node_selector(&self) -> Option<Selector> {
        Selector::parse(self.node_selector.as_deref()?).ok()
    }

    /// The parsed peer selector (`None`: not set or not valid).
    pub fn peer_selector(&self) -> Option<Selector> {
        Selector::parse(self.peer_selector.as_deref()?).ok()
    }
}

/// Whether a selector text is `all()` (a node selector that makes the peer global).
fn is_all(text: &str) -> bool {
    Selector::parse(text).is_ok_and(|s| s == Selector::All)
}

fn default_bfd_interval() -> u32 {
    300
}
fn default_bfd_multiplier() -> u8 {
    3
}

/// BFD settings (RFC 5880) of a session, with MetalLB's ranges and FRR's defaults:
/// 10–60000 ms, multiplier 2–255, 300 ms × 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdConfig {
    /// BFD runs only when this is true.
    #[serde(default)]
    pub enabled: bool,
    /// Required Min RX: how often we can take packets, ms.
    #[serde(default = "default_bfd_interval")]
    pub min_rx_ms: u32,
    /// Desired Min TX: how often we would like to send, ms.
    #[serde(default = "default_bfd_interval")]
    pub min_tx_ms: u32,
    /// Detect Mult: packets missed before the path is declared down.
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u8,
    /// On BFD Down keep the peer's routes as stale when graceful restart was negotiated
    /// (BIRD's `bfd graceful`) instead of withdrawing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub graceful: bool,
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            enabled: false,
            min_rx_ms: default_bfd_interval(),
            min_tx_ms: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
            graceful: false,
        }
    }
}

impl BfdConfig {
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, value) in [("min_rx_ms", self.min_rx_ms), ("min_tx_ms", self.min_tx_ms)] {
            if !(10..=60_000).contains(&value) {
                return Err(ValidationError::InvalidField {
                    field: format!("bfd.{field}"),
                    reason: format!("{value} is not within 10..=60000 ms"),
                });
            }
        }
        if self.multiplier < 2 {
            return Err(ValidationError::InvalidField {
                field: "bfd.multiplier".into(),
                reason: format!("{} is not within 2..=255", self.multiplier),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_match_calico() {
        let c: BgpConfiguration = serde_json::from_str("{}").unwrap();
        assert_eq!(c, BgpConfiguration::default());
        assert_eq!(c.as_number, 64512);
        assert!(c.node_to_node_mesh);
        assert_eq!(c.listen_port, 179);
    }

    #[test]
    fn peer_validation() {
        let mut p: BgpPeer = serde_yaml::from_str(
            "name: tor1\npeer_ip: 192.0.2.1\nas_number: 65001\nnode: node-1\n",
        )
        .unwrap();
        assert!(p.validate().is_ok());
        assert_eq!(p.peer_type(), "node specific");
        p.hold_time = Some(2);
        assert!(p.validate().is_err());
        p.hold_time = None;
        p.as_number = 0;
        assert!(p.validate().is_err());
        p.as_number = 1;
        p.peer_ip = Some("0.0.0.0".parse().unwrap());
        assert!(p.validate().is_err());
    }

    #[test]
    fn peer_ip_xor_peer_selector_and_node_xor_node_selector() {
        let base: BgpPeer =
            serde_yaml::from_str("name: rr\npeer_ip: 192.0.2.1\nas_number: 64512\n").unwrap();
        assert!(base.validate().is_ok());
        let mut both = base.clone();
        both.peer_selector = Some("route-reflector == 'true'".into());
        assert!(both
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not both"));
        let mut neither = both.clone();
        neither.peer_selector = None;
        neither.peer_ip = None;
        assert!(neither.validate().is_err());
        let mut selected = both.clone();
        selected.peer_ip = None;
        selected.node_selector = Some("all()".into());
        assert!(selected.validate().is_ok());
        selected.as_number = 0; // the selected nodes' own AS
        assert!(selected.validate().is_ok());
        assert_eq!(selected.peer_type(), "global");
        selected.node = Some("node-1".into());
        assert!(selected.validate().is_err());
        selected.node = None;
        selected.node_selector = Some("zone == 'a'".into());
        assert_eq!(selected.peer_type(), "node specific");
        selected.peer_selector = Some("route-reflector = 'true'".into());
        let err = selected.validate().unwrap_err().to_string();
        assert!(
            err.contains("peer_selector") && err.contains("column 17"),
            "{err}"
        );
    }

    #[test]
    fn bfd_defaults_are_300_ms_times_3_and_ranges_are_checked() {
        let bfd: BfdConfig = serde_json::from_str(r#"{"enabled":true}"#).unwrap();
        assert_eq!(
            (bfd.min_rx_ms, bfd.min_tx_ms, bfd.multiplier),
            (300, 300, 3)
        );
        assert!(bfd.validate().is_ok());
        for bad in [
            BfdConfig {
                min_rx_ms: 9,
                ..bfd
            },
            BfdConfig {
                min_tx_ms: 60_001,
                ..bfd
            },
            BfdConfig {
                multiplier: 1,
                ..bfd
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let edge = BfdConfig {
            min_rx_ms: 10,
            min_tx_ms: 60_000,
            multiplier: 255,
            ..bfd
        };
        assert!(edge.validate().is_ok());
        let mut config = BgpConfiguration {
            bfd: Some(BfdConfig {
                multiplier: 0,
                ..bfd
            }),
            ..BgpConfiguration::default()
        };
        assert!(config.validate().is_err());
        config.bfd = Some(bfd);
        assert!(config.validate().is_ok());
    }
}
