//! Field names between the model (snake_case, as stored) and documents (camelCase, as Calico).
//!
//! ```text
//!  model struct ──serde_json──> {snake_case: ..} ──to_document_spec──> {camelCase: ..}  (get)
//!  document spec {camelCase: ..} ──from_document_spec──> {snake_case: ..} ──serde──> model (apply)
//! ```
//! The mapping is generic: `as_number` ↔ `asNumber`. A field whose Calico name is not the plain
//! camelCase of ours is one row of [`EXCEPTIONS`]; a new model field needs nothing here unless
//! Calico spells it differently. Only the top level of a spec is renamed (label keys, maps and
//! nested values are the user's own).

use serde_json::{Map, Value};

/// Model field ↔ document field where the document name is not the plain camelCase (Calico's
/// acronyms). Add a row here when a new model field's Calico name differs.
pub const EXCEPTIONS: &[(&str, &str)] = &[
    ("peer_ip", "peerIP"),
    ("rr_cluster_id", "routeReflectorClusterID"),
    ("ipv4_ipip_tunnel_addr", "ipv4IPIPTunnelAddr"),
    ("ipv4_vxlan_tunnel_addr", "ipv4VXLANTunnelAddr"),
    ("vxlan_tunnel_mac", "vxlanTunnelMACAddr"),
    ("disable_bgp_export", "disableBGPExport"),
    ("node_to_node_mesh", "nodeToNodeMeshEnabled"),
    ("mtu", "mtu"),
    ("num_allowed_local_as_numbers", "numAllowedLocalASNumbers"),
    ("local_as_number", "localASNumber"),
];

/// `as_number` → `asNumber` (exceptions first).
pub fn to_camel(snake: &str) -> String {
    if let Some((_, camel)) = EXCEPTIONS.iter().find(|(s, _)| *s == snake) {
        return (*camel).to_string();
    }
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `asNumber` → `as_number` (exceptions first); the inverse of [`to_camel`].
pub fn to_snake(camel: &str) -> String {
    if let Some((snake, _)) = EXCEPTIONS.iter().find(|(_, c)| *c == camel) {
        return (*snake).to_string();
    }
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Fields whose map keys are the user's own (never renamed, never checked field by field).
pub const USER_KEYED: &[&str] = &["labels"];

/// Renames every key of `value` with `rename`, nested objects included, except inside the
/// user-keyed maps.
fn rename_keys(value: Value, rename: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::Object(map) => Value::Object(rename_map(map, rename)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| rename_keys(v, rename)).collect())
        }
        other => other,
    }
}

fn rename_map(map: Map<String, Value>, rename: &dyn Fn(&str) -> String) -> Map<String, Value> {
    map.into_iter()
        .map(|(k, v)| {
            let v = if USER_KEYED.contains(&k.as_str()) {
                v
            } else {
                rename_keys(v, rename)
            };
            (rename(&k), v)
        })
        .collect()
}

/// Renames the keys of a stored record (nested settings such as `bfd` too) to document names.
pub fn to_document_spec(record: Map<String, Value>) -> Map<String, Value> {
    rename_map(record, &to_camel)
}

/// Renames the keys of a document's spec to model names. A key that is not camelCase (it
/// holds '_') is kept as written, so it is reported as unknown under its own name.
pub fn from_document_spec(spec: &Map<String, Value>) -> Map<String, Value> {
    let rename = |k: &str| {
        if k.contains('_') {
            k.to_string()
        } else {
            to_snake(k)
        }
    };
    rename_map(spec.clone(), &rename)
}

/// True when a value carries nothing (null, empty string, list or map): a field given so is
/// not reported as unknown even if the model skips it when serialising.
pub fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Fields of `input` that the model did not take: absent from `reparsed` (the model's own
/// serialisation of what it decoded) although given with a value; nested settings are
/// compared too (`bfd.min_rx`).
pub fn unknown_fields(input: &Map<String, Value>, reparsed: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in input {
        match (reparsed.get(k), v) {
            (None, v) if !is_empty_value(v) => out.push(k.clone()),
            (Some(Value::Object(taken)), Value::Object(given))
                if !USER_KEYED.contains(&k.as_str()) =>
            {
                let nested = unknown_fields(given, taken);
                out.extend(nested.into_iter().map(|f| format!("{k}.{f}")));
            }
            _ => {}
        }
    }
    out
}

/// Decodes a model record from `record` (model names). On failure, names the field whose value
/// has the wrong type: each field is tried alone, and the one that fails with something other
/// than a missing field is the culprit.
pub fn decode_record<T: serde::de::DeserializeOwned>(
    record: &Map<String, Value>,
) -> Result<T, (Option<String>, String)> {
    match serde_json::from_value::<T>(Value::Object(record.clone())) {
        Ok(t) => Ok(t),
        Err(whole) => {
            let message = whole.to_string();
            if let Some(missing) = missing_field(&message) {
                return Err((Some(missing), "missing field (required)".to_string()));
            }
            for (k, v) in record {
                let alone: Map<String, Value> = [(k.clone(), v.clone())].into_iter().collect();
                if let Err(e) = serde_json::from_value::<T>(Value::Object(alone)) {
                    let text = e.to_string();
                    if missing_field(&text).is_none() {
                        return Err((Some(k.clone()), text));
                    }
                }
            }
            Err((None, message))
        }
    }
}

/// The field serde reports as missing (`missing field `as_number``).
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (snake, camel) in [
            ("as_number", "asNumber"),
            ("ipv4_address", "ipv4Address"),
            ("peer_ip", "peerIP"),
            ("node_to_node_mesh", "nodeToNodeMeshEnabled"),
            ("block_size", "blockSize"),
            ("max_blocks_per_host", "maxBlocksPerHost"),
        ] {
            assert_eq!(to_camel(snake), camel);
            assert_eq!(to_snake(camel), snake);
        }
    }

    #[test]
    fn nested_settings_are_renamed_and_checked_but_labels_are_not() {
        let record: Map<String, Value> =
            serde_json::from_str(r#"{"bfd":{"min_rx_ms":300},"labels":{"rack_id":"r1"}}"#).unwrap();
        let doc = to_document_spec(record.clone());
        assert_eq!(doc["bfd"]["minRxMs"], 300);
        assert_eq!(doc["labels"]["rack_id"], "r1");
        assert_eq!(from_document_spec(&doc), record);
        let given: Map<String, Value> =
            serde_json::from_str(r#"{"bfd":{"min_rx_ms":300,"min_rx":1}}"#).unwrap();
        assert_eq!(unknown_fields(&given, &record), ["bfd.min_rx"]);
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            name: String,
            count: u32,
        }
        let record: Map<String, Value> =
            serde_json::from_str(r#"{"name":"a","count":"many"}"#).unwrap();
        let (field, reason) = decode_record::<T>(&record).unwrap_err();
        assert_eq!(field.as_deref(), Some("count"), "{reason}");
        let record: Map<String, Value> = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        let (field, _) = decode_record::<T>(&record).unwrap_err();
        assert_eq!(field.as_deref(), Some("count"));
    }
}
