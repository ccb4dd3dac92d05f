//! Calico's own documents (`apiVersion: projectcalico.org/v3`) → routed records.
//!
//! ```text
//!  spec (Calico paths, e.g. bgp.ipv4Address) ──CALICO_FIELDS──> record (model fields)
//!                                           └─ not in the table ──> error naming the field
//! ```
//! One row per Calico field routed supports, with its conversion (Calico writes durations as
//! `"120s"`, a peer address may carry a port). A Calico field whose value is Calico's default
//! is accepted and dropped ([`CALICO_DEFAULTS`]: files written by `calicoctl get -o yaml` carry
//! `nodeSelector: all()`). Everything else is an error naming the field, so a migrating user
//! sees the whole list at once. Add a row to [`CALICO_FIELDS`] when the model gains a field
//! Calico has.

use super::kind::Kind;
use serde_json::{Map, Value};

/// How a Calico value becomes ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// The same value.
    Same,
    /// A Go duration (`"90s"`, `"2m"`, `"1h"`) → whole seconds.
    Seconds,
    /// `IP` or `IP:PORT` / `[IPv6]:PORT` → `peer_ip` and `peer_port`.
    PeerAddress,
}

/// (kind, Calico spec path, model field, conversion).
pub const CALICO_FIELDS: &[(Kind, &str, &str, Conversion)] = &[
    (Kind::IpPool, "cidr", "cidr", Conversion::Same),
    (Kind::IpPool, "blockSize", "block_size", Conversion::Same),
    (Kind::IpPool, "ipipMode", "ipip_mode", Conversion::Same),
    (Kind::IpPool, "vxlanMode", "vxlan_mode", Conversion::Same),
    (
        Kind::IpPool,
        "natOutgoing",
        "nat_outgoing",
        Conversion::Same,
    ),
    (Kind::IpPool, "disabled", "disabled", Conversion::Same),
    (
        Kind::IpPool,
        "disableBGPExport",
        "disable_bgp_export",
        Conversion::Same,
    ),
    (Kind::BgpPeer, "peerIP", "peer_ip", Conversion::PeerAddress),
    (Kind::BgpPeer, "asNumber", "as_number", Conversion::Same),
    (Kind::BgpPeer, "node", "node", Conversion::Same),
    (
        Kind::BgpPeer,
        "nodeSelector",
        "node_selector",
        Conversion::Same,
    ),
    (
        Kind::BgpPeer,
        "peerSelector",
        "peer_selector",
        Conversion::Same,
    ),
    (
        Kind::BgpPeer,
        "keepaliveTime",
        "keepalive_time",
        Conversion::Seconds,
    ),
    (
        Kind::BgpPeer,
        "maxRestartTime",
        "max_restart_time",
        Conversion::Seconds,
    ),
    (
        Kind::BgpPeer,
        "ttlSecurity",
        "ttl_security",
        Conversion::Same,
    ),
    (
        Kind::BgpPeer,
        "numAllowedLocalASNumbers",
        "num_allowed_local_as_numbers",
        Conversion::Same,
    ),
    (
        Kind::BgpPeer,
        "nextHopMode",
        "next_hop_mode",
        Conversion::Same,
    ),
    (
        Kind::BgpPeer,
        "localASNumber",
        "local_as_number",
        Conversion::Same,
    ),
    (
        Kind::BgpConfiguration,
        "asNumber",
        "as_number",
        Conversion::Same,
    ),
    (
        Kind::BgpConfiguration,
        "nodeToNodeMeshEnabled",
        "node_to_node_mesh",
        Conversion::Same,
    ),
    (
        Kind::BgpConfiguration,
        "listenPort",
        "listen_port",
        Conversion::Same,
    ),
    (
        Kind::Node,
        "bgp.ipv4Address",
        "ipv4_address",
        Conversion::Same,
    ),
    (
        Kind::Node,
        "bgp.ipv6Address",
        "ipv6_address",
        Conversion::Same,
    ),
    (Kind::Node, "bgp.asNumber", "as_number", Conversion::Same),
    (
        Kind::Node,
        "bgp.routeReflectorClusterID",
        "rr_cluster_id",
        Conversion::Same,
    ),
    (
        Kind::Node,
        "bgp.ipv4IPIPTunnelAddr",
        "ipv4_ipip_tunnel_addr",
        Conversion::Same,
    ),
    (
        Kind::Node,
        "ipv4VXLANTunnelAddr",
        "ipv4_vxlan_tunnel_addr",
        Conversion::Same,
    ),
    (
        Kind::Node,
        "vxlanTunnelMACAddr",
        "vxlan_tunnel_mac",
        Conversion::Same,
    ),
];

/// (kind, Calico spec path, Calico's default written as JSON): accepted and dropped.
pub const CALICO_DEFAULTS: &[(Kind, &str, &str)] = &[
    (Kind::IpPool, "nodeSelector", r#""all()""#),
    (Kind::IpPool, "allowedUses", r#"["Workload","Tunnel"]"#),
    (Kind::IpPool, "assignmentMode", r#""Automatic""#),
    (Kind::BgpPeer, "sourceAddress", r#""UseNodeIP""#),
    (Kind::BgpConfiguration, "logSeverityScreen", r#""Info""#),
];

/// Metadata Calico writes that means nothing to routed (its own revision, uid, timestamps).
pub const CALICO_METADATA_IGNORED: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "annotations",
    "managedFields",
];

/// One field of a Calico document routed cannot take: its spec path and why.
pub type FieldError = (String, String);

/// Converts a Calico spec to a routed record (model fields), or lists every unsupported field.
pub fn to_record(
    kind: Kind,
    spec: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut record = Map::new();
    let mut errors = Vec::new();
    for (path, value) in flatten(spec) {
        if value.is_null() || is_default(kind, &path, &value) {
            continue;
        }
        let row = CALICO_FIELDS
            .iter()
            .find(|(k, p, _, _)| *k == kind && *p == path);
        let Some((_, _, field, conversion)) = row else {
            errors.push((
                path.clone(),
                format!(
                    "Calico field not supported by routed (remove it, or see docs/operations.md \
                     \"Calico documents\" for the {} fields routed takes)",
                    kind.name()
                ),
            ));
            continue;
        };
        if let Err(reason) = convert(*conversion, field, &value, &mut record) {
            errors.push((path, reason));
        }
    }
    if errors.is_empty() {
        Ok(record)
    } else {
        Err(errors)
    }
}

/// `{bgp: {asNumber: 1}}` → `[("bgp.asNumber", 1)]` for the paths the table knows nested
/// (Node's `bgp`); other values stay whole.
fn flatten(spec: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (k, v) in spec {
        match v {
            Value::Object(inner) if k == "bgp" => {
                for (ik, iv) in inner {
                    out.push((format!("{k}.{ik}"), iv.clone()));
                }
            }
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out
}

fn is_default(kind: Kind, path: &str, value: &Value) -> bool {
    CALICO_DEFAULTS.iter().any(|(k, p, default)| {
        *k == kind
            && *p == path
            && serde_json::from_str::<Value>(default).is_ok_and(|d| d == *value)
    })
}

fn convert(
    conversion: Conversion,
    field: &str,
    value: &Value,
    record: &mut Map<String, Value>,
) -> Result<(), String> {
    match conversion {
        Conversion::Same => {
            record.insert(field.to_string(), value.clone());
        }
        Conversion::Seconds => {
            record.insert(field.to_string(), parse_duration(value)?.into());
        }
        Conversion::PeerAddress => {
            let text = value
                .as_str()
                .ok_or_else(|| format!("expected an address as a string, found {value}"))?;
            let (ip, port) = split_peer_address(text)?;
            record.insert(field.to_string(), ip.into());
            if let Some(port) = port {
                record.insert("peer_port".into(), port.into());
            }
        }
    }
    Ok(())
}

/// `"90s"`, `"2m"`, `"1h30m"` or a plain number of seconds → seconds.
pub fn parse_duration(value: &Value) -> Result<u64, String> {
    if let Some(n) = value.as_u64() {
        return Ok(n);
    }
    let text = value
        .as_str()
        .ok_or_else(|| format!("expected a duration such as \"120s\", found {value}"))?;
    let bad =
        || format!("{text:?} is not a duration in whole seconds (write e.g. \"120s\", \"2m\")");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// `192.0.2.1`, `192.0.2.1:1179`, `[2001:db8::1]:1179` or `2001:db8::1` → address and port.
fn split_peer_address(text: &str) -> Result<(String, Option<u16>), String> {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok((text.to_string(), None));
    }
    match text.parse::<std::net::SocketAddr>() {
        Ok(sa) => Ok((sa.ip().to_string(), Some(sa.port()))),
        Err(_) => Err(format!("{text:?} is not an address or ADDRESS:PORT")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_peer_addresses_convert() {
        assert_eq!(parse_duration(&json!("120s")), Ok(120));
        assert_eq!(parse_duration(&json!("1h30m")), Ok(5400));
        assert!(parse_duration(&json!("1.5s")).is_err());
        assert_eq!(
            split_peer_address("[2001:db8::1]:1179"),
            Ok(("2001:db8::1".into(), Some(1179)))
        );
        assert_eq!(
            split_peer_address("192.0.2.1"),
            Ok(("192.0.2.1".into(), None))
        );
    }

    #[test]
    fn every_unsupported_field_is_named() {
        let spec = json!({"peerIP": "192.0.2.1", "asNumber": 65001,
            "password": {"secretKeyRef": {"name": "s", "key": "k"}}, "keepOriginalNextHop": true,
            "sourceAddress": "UseNodeIP"});
        let errors = to_record(Kind::BgpPeer, spec.as_object().unwrap()).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["keepOriginalNextHop", "password"]);
    }
}
