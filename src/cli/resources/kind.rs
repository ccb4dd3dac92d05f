//! The resource kinds documents can name, where each is stored, and how its record is checked.
//!
//! A record is the model's own JSON (snake_case, with `name` for named kinds). [`Kind::check`]
//! decodes it into the model type, validates it, and returns the model's re-serialisation (the
//! canonical stored form) together with the fields the model did not take.

use super::fields::{decode_record, unknown_fields};
use crate::model::{
    keys, pool::block_size_limits, BgpConfiguration, BgpPeer, IpPool, IpamConfig, Node,
    ValidationError,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

/// A resource kind of `routectl apply/get/delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    IpPool,
    BgpPeer,
    BgpConfiguration,
    Node,
    IpamConfig,
}

/// Every kind, in the order `get` lists them.
pub const ALL_KINDS: [Kind; 5] = [
    Kind::IpPool,
    Kind::BgpPeer,
    Kind::BgpConfiguration,
    Kind::Node,
    Kind::IpamConfig,
];

/// The name of the one object of a singleton kind (Calico's global BGPConfiguration).
pub const SINGLETON_NAME: &str = "default";

/// A record that failed its kind's checks: `field` is the model field (None: the whole record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub field: Option<String>,
    pub reason: String,
}

impl Kind {
    /// The kind's document name (`kind:`), as Calico spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::IpPool => "IPPool",
            Kind::BgpPeer => "BGPPeer",
            Kind::BgpConfiguration => "BGPConfiguration",
            Kind::Node => "Node",
            Kind::IpamConfig => "IPAMConfig",
        }
    }

    /// A kind as written in a document or on the command line: case-insensitive, singular or
    /// plural, and calicoctl's short forms (`ippools`, `bgpconfig`, `bgpp`, ...).
    pub fn parse(text: &str) -> Option<Kind> {
        let lower = text.to_ascii_lowercase();
        let kind = match lower.as_str() {
            "ippool" | "ippools" | "ipp" | "ipps" | "pool" | "pools" => Kind::IpPool,
            "bgppeer" | "bgppeers" | "bgpp" | "bgpps" | "bp" | "bps" | "peer" | "peers" => {
                Kind::BgpPeer
            }
            "bgpconfiguration" | "bgpconfigurations" | "bgpconfig" | "bgpconfigs" => {
                Kind::BgpConfiguration
            }
            "node" | "nodes" | "no" | "nos" => Kind::Node,
            "ipamconfig" | "ipamconfigs" | "ipamconfiguration" | "ipamconfigurations" => {
                Kind::IpamConfig
            }
            _ => return None,
        };
        Some(kind)
    }

    /// True for kinds with one object only, named [`SINGLETON_NAME`].
    pub fn is_singleton(self) -> bool {
        matches!(self, Kind::BgpConfiguration | Kind::IpamConfig)
    }

    /// The datastore key of the object `name`.
    pub fn key(self, name: &str) -> String {
        match self {
            Kind::IpPool => keys::pool(name),
            Kind::BgpPeer => keys::peer(name),
            Kind::Node => keys::node(name),
            Kind::BgpConfiguration => keys::BGP_CONFIG.to_string(),
            Kind::IpamConfig => keys::IPAM_CONFIG.to_string(),
        }
    }

    /// The prefix all objects of a named kind live under.
    pub fn prefix(self) -> Option<&'static str> {
        match self {
            Kind::IpPool => Some(keys::POOLS),
            Kind::BgpPeer => Some(keys::PEERS),
            Kind::Node => Some(keys::NODES),
            Kind::BgpConfiguration | Kind::IpamConfig => None,
        }
    }

    /// The record of a singleton nobody wrote yet (the model's defaults).
    pub fn default_record(self) -> Option<Map<String, Value>> {
        let value = match self {
            Kind::BgpConfiguration => serde_json::to_value(BgpConfiguration::default()),
            Kind::IpamConfig => serde_json::to_value(IpamConfig::default()),
            _ => return None,
        };
        match value {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    /// The columns `get` shows in its table (document field names); `-o wide` shows every field.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::IpPool => &[
                "cidr",
                "blockSize",
                "ipipMode",
                "vxlanMode",
                "natOutgoing",
                "disabled",
            ],
            Kind::BgpPeer => &["peerIP", "asNumber", "node"],
            Kind::BgpConfiguration => &["asNumber", "nodeToNodeMeshEnabled", "listenPort"],
            Kind::Node => &["ipv4Address", "ipv6Address", "asNumber"],
            Kind::IpamConfig => &["strictAffinity", "maxBlocksPerHost"],
        }
    }

    /// Fills what the kind defaults from other fields (an IPPool's block size from its family).
    pub fn fill_defaults(self, record: &mut Map<String, Value>) {
        if self == Kind::IpPool && !record.contains_key("block_size") {
            let cidr = record.get("cidr").and_then(Value::as_str);
            if let Some(Ok(cidr)) = cidr.map(str::parse::<ipnetwork::IpNetwork>) {
                record.insert("block_size".into(), block_size_limits(&cidr).2.into());
            }
        }
    }

    /// Decodes and validates `record`; returns the canonical record and the fields not taken.
    pub fn check(
        self,
        record: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, Vec<String>), RecordError> {
        match self {
            Kind::IpPool => typed::<IpPool>(record, IpPool::validate),
            Kind::BgpPeer => typed::<BgpPeer>(record, BgpPeer::validate),
            Kind::BgpConfiguration => typed::<BgpConfiguration>(record, BgpConfiguration::validate),
            Kind::Node => typed::<Node>(record, Node::validate),
            Kind::IpamConfig => typed::<IpamConfig>(record, |_| Ok(())),
        }
    }
}

fn typed<T: Serialize + DeserializeOwned>(
    record: &Map<String, Value>,
    validate: fn(&T) -> Result<(), ValidationError>,
) -> Result<(Map<String, Value>, Vec<String>), RecordError> {
    let value: T =
        decode_record(record).map_err(|(field, reason)| RecordError { field, reason })?;
    validate(&value).map_err(|e| RecordError {
        field: field_of(&e),
        reason: e.to_string(),
    })?;
    let canonical = match serde_json::to_value(&value) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(RecordError {
                field: None,
                reason: "the record does not serialise to an object".into(),
            })
        }
    };
    let unknown = unknown_fields(record, &canonical);
    Ok((canonical, unknown))
}

/// The model field a validation error is about.
fn field_of(e: &ValidationError) -> Option<String> {
    let field = match e {
        ValidationError::InvalidName { .. } => "name",
        ValidationError::InvalidCidr { .. }
        | ValidationError::HostAddressAsPool { .. }
        | ValidationError::PoolsOverlap { .. } => "cidr",
        ValidationError::BlockSizeOutOfRange { .. }
        | ValidationError::BlockLargerThanPool { .. } => "block_size",
        ValidationError::BothEncapsulations { .. } => "vxlan_mode",
        ValidationError::IpipOnIpv6 { .. } => "ipip_mode",
        ValidationError::InvalidAsNumber(_) => "as_number",
        ValidationError::InvalidField { field, .. } if !field.contains(' ') => field,
        ValidationError::InvalidField { .. } => return None,
    };
    Some(field.to_string())
}
