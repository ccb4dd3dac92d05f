//! Resources as documents: `routectl apply|create|replace -f`, `get KIND [NAME]`, `delete`.
//!
//! ```text
//!  FILE|- ──parse_stream──> Vec<Document> ──prepare (per document)──> Prepared {kind, key, record}
//!   (YAML stream, JSON,       apiVersion routed.io/v1: fields::from_document_spec
//!    lists)                   apiVersion projectcalico.org/v3: calico::to_record
//!                                    │ Kind::check: decode, validate, unknown fields
//!                                    v
//!                           store::write: one compare-and-swap transaction per document
//!  get: datastore record ──Document::from_record──> YAML / JSON / table (same shape as apply's input)
//! ```
//! A document is `apiVersion`, `kind`, `metadata {name, resourceVersion, labels}` and `spec`
//! with camelCase fields. `resourceVersion` is the record's datastore mod revision: a document
//! that carries one is written only if the record still has it (optimistic concurrency).
//! Every document of a file is checked before anything is written; errors name the file, the
//! document and the field (`peers.yaml: document 2 (BGPPeer rack1): spec.asNumber: ...`).
//! Passwords are shown as [`MASKED`]; a document carrying [`MASKED`] keeps the stored password.

pub mod calico;
pub mod command;
pub mod fields;
pub mod kind;
pub mod store;
#[cfg(test)]
mod tests;

pub use kind::{Kind, ALL_KINDS};

use serde::Serialize;
use serde_json::{Map, Value};

/// Our own API version.
pub const API_VERSION: &str = "routed.io/v1";
/// Calico's, accepted on input for the fields routed supports.
pub const CALICO_API_VERSION: &str = "projectcalico.org/v3";
/// What `get` shows instead of a password; applied back, it keeps the stored one.
pub const MASKED: &str = "********";
/// Model fields holding secrets.
pub const SECRET_FIELDS: &[&str] = &["password", "node_mesh_password"];

/// What went wrong with one document: `field` is its path in the document (`spec.asNumber`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub source: String,
    /// 1-based position in the file.
    pub index: usize,
    /// `BGPPeer rack1`, when the document got that far.
    pub what: Option<String>,
    pub field: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {}", self.source, self.index)?;
        if let Some(what) = &self.what {
            write!(f, " ({what})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Where a document sits, for its errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub index: usize,
}

impl Origin {
    fn error(
        &self,
        what: Option<String>,
        field: Option<String>,
        reason: impl Into<String>,
    ) -> DocumentError {
        DocumentError {
            source: self.source.clone(),
            index: self.index,
            what,
            field,
            reason: reason.into(),
        }
    }
}

/// Metadata of a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub labels: Map<String, Value>,
}

/// A document as `get` prints it and `apply` reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Map<String, Value>,
}

impl Document {
    /// The document of a stored record (model names), with its revision (0: never written).
    pub fn from_record(kind: Kind, mut record: Map<String, Value>, revision: i64) -> Document {
        let name = match record.remove("name") {
            Some(Value::String(name)) => name,
            _ => kind::SINGLETON_NAME.to_string(),
        };
        let labels = match record.remove("labels") {
            Some(Value::Object(labels)) => labels,
            _ => Map::new(),
        };
        for secret in SECRET_FIELDS {
            if let Some(v) = record.get_mut(*secret) {
                if !v.is_null() {
                    *v = Value::String(MASKED.into());
                }
            }
        }
        Document {
            api_version: API_VERSION.to_string(),
            kind: kind.name().to_string(),
            metadata: Metadata {
                name,
                resource_version: (revision > 0).then(|| revision.to_string()),
                labels,
            },
            spec: fields::to_document_spec(record),
        }
    }
}

/// A checked document, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub origin: Origin,
    pub kind: Kind,
    pub name: String,
    /// The canonical record (model names), as it will be stored.
    pub record: Map<String, Value>,
    /// The revision the document requires the record to have (its resourceVersion).
    pub resource_version: Option<i64>,
}

impl Prepared {
    /// `BGPPeer rack1`.
    pub fn what(&self) -> String {
        format!("{} {}", self.kind.name(), self.name)
    }

    pub fn key(&self) -> String {
        self.kind.key(&self.name)
    }

    pub(crate) fn error(&self, field: Option<&str>, reason: impl Into<String>) -> DocumentError {
        let field = field.map(|f| format!("spec.{}", fields::to_camel(f)));
        self.origin.error(Some(self.what()), field, reason)
    }
}

/// Splits a YAML (or JSON) stream into documents; a list (`[...]` or `kind: List` with
/// `items`) contributes each item. Empty documents are skipped.
pub fn parse_stream(source: &str, text: &str) -> Result<Vec<(Origin, Value)>, DocumentError> {
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            source: source.to_string(),
            index: i + 1,
        };
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .map_err(|e| origin.error(None, None, format!("not valid YAML: {e}")))?;
        let json = serde_json::to_value(&value)
            .map_err(|e| origin.error(None, None, format!("cannot be read as a document: {e}")))?;
        match json {
            Value::Null => {}
            Value::Array(items) => out.extend(items.into_iter().map(|v| (origin.clone(), v))),
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = map
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                out.extend(items.into_iter().map(|v| (origin.clone(), v)));
            }
            other => out.push((origin, other)),
        }
    }
    Ok(out)
}

/// The document's kind and name, before its spec is looked at (enough for `delete -f`).
pub fn identify(
    origin: &Origin,
    doc: &Value,
) -> Result<(Kind, String, Option<i64>), DocumentError> {
    let map = doc.as_object().ok_or_else(|| {
        origin.error(
            None,
            None,
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        )
    })?;
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            origin.error(
                None,
                Some("apiVersion".into()),
                format!(
                    "missing; use {API_VERSION} (or {CALICO_API_VERSION} for Calico's documents)"
                ),
            )
        })?;
    if api_version != API_VERSION && api_version != CALICO_API_VERSION {
        return Err(origin.error(
            None,
            Some("apiVersion".into()),
            format!("{api_version:?} is not supported; use {API_VERSION} or {CALICO_API_VERSION}"),
        ));
    }
    let kind_text = map.get("kind").and_then(Value::as_str).ok_or_else(|| {
        origin.error(
            None,
            Some("kind".into()),
            "missing; one of IPPool, BGPPeer, BGPConfiguration, Node, IPAMConfig",
        )
    })?;
    let kind = Kind::parse(kind_text).ok_or_else(|| {
        origin.error(None, Some("kind".into()), format!("unknown kind {kind_text:?}; routed knows IPPool, BGPPeer, BGPConfiguration, Node, IPAMConfig"))
    })?;
    let metadata = map.get("metadata").and_then(Value::as_object);
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str);
    let name = match (name, kind.is_singleton()) {
        (Some(name), _) => name.to_string(),
        (None, true) => kind::SINGLETON_NAME.to_string(),
        (None, false) => {
            return Err(origin.error(
                Some(kind.name().into()),
                Some("metadata.name".into()),
                "missing: every document names its object",
            ))
        }
    };
    let what = Some(format!("{} {name}", kind.name()));
    if let Err(e) = crate::model::validate_name(&name) {
        return Err(origin.error(what, Some("metadata.name".into()), e.to_string()));
    }
    if kind.is_singleton() && name != kind::SINGLETON_NAME {
        return Err(origin.error(what, Some("metadata.name".into()), format!("{} has one object only, named {:?} (Calico's per-node configurations are not supported)", kind.name(), kind::SINGLETON_NAME)));
    }
    let resource_version = if api_version == CALICO_API_VERSION {
        None
    } else {
        resource_version(metadata)
            .map_err(|reason| origin.error(what, Some("metadata.resourceVersion".into()), reason))?
    };
    Ok((kind, name, resource_version))
}

fn resource_version(metadata: Option<&Map<String, Value>>) -> Result<Option<i64>, String> {
    let Some(value) = metadata.and_then(|m| m.get("resourceVersion")) else {
        return Ok(None);
    };
    let parsed = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!(
            "{value} is not a revision (the number `routectl get -o yaml` prints)"
        )),
    }
}

/// Checks one document completely: names, fields, types, the model's validation.
pub fn prepare(origin: &Origin, doc: &Value) -> Result<Prepared, DocumentError> {
    let (kind, name, resource_version) = identify(origin, doc)?;
    let what = Some(format!("{} {name}", kind.name()));
    let err = |field: Option<String>, reason: String| origin.error(what.clone(), field, reason);
    let map = doc.as_object().cloned().unwrap_or_default();
    let calico = map.get("apiVersion").and_then(Value::as_str) == Some(CALICO_API_VERSION);
    for key in map.keys() {
        let known = ["apiVersion", "kind", "metadata", "spec"].contains(&key.as_str());
        if !(known || calico && key == "status") {
            return Err(err(
                Some(key.clone()),
                "unknown top-level field (a document has apiVersion, kind, metadata and spec)"
                    .into(),
            ));
        }
    }
    let metadata = map
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for key in metadata.keys() {
        let ours = ["name", "resourceVersion", "labels"].contains(&key.as_str());
        if !(ours || calico && calico::CALICO_METADATA_IGNORED.contains(&key.as_str())) {
            return Err(err(
                Some(format!("metadata.{key}")),
                "unknown metadata field (routed reads name, resourceVersion and labels)".into(),
            ));
        }
    }
    let spec = match map.get("spec") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(spec)) => spec.clone(),
        Some(other) => {
            return Err(err(
                Some("spec".into()),
                format!("must be a mapping, found {other}"),
            ))
        }
    };
    let mut record = if calico {
        calico::to_record(kind, &spec).map_err(|errors| {
            let reasons: Vec<String> = errors
                .iter()
                .map(|(p, r)| format!("spec.{p}: {r}"))
                .collect();
            err(None, reasons.join("; "))
        })?
    } else {
        if spec.contains_key("name") {
            return Err(err(
                Some("spec.name".into()),
                "the name goes in metadata.name".into(),
            ));
        }
        fields::from_document_spec(&spec)
    };
    if !kind.is_singleton() {
        record.insert("name".into(), Value::String(name.clone()));
    }
    if let Some(labels) = metadata.get("labels") {
        record.insert("labels".into(), labels.clone());
    }
    kind.fill_defaults(&mut record);
    let (canonical, unknown) = kind.check(&record).map_err(|e| {
        let field = e.field.map(|f| document_path(&f, calico, kind));
        err(field, e.reason)
    })?;
    if let Some(field) = unknown.first() {
        let path = document_path(field, calico, kind);
        let reason = if field == "labels" {
            format!("{} has no labels", kind.name())
        } else {
            format!(
                "unknown field of {} (`routectl get {} -o yaml` shows the fields)",
                kind.name(),
                kind.name().to_ascii_lowercase()
            )
        };
        return Err(err(Some(path), reason));
    }
    Ok(Prepared {
        origin: origin.clone(),
        kind,
        name,
        record: canonical,
        resource_version,
    })
}

/// The document path of a model field: `spec.asNumber`, `metadata.name`, Calico's own path for
/// Calico documents.
fn document_path(field: &str, calico: bool, kind: Kind) -> String {
    match field {
        "name" => return "metadata.name".into(),
        "labels" => return "metadata.labels".into(),
        _ => {}
    }
    if calico {
        if let Some((_, path, _, _)) = calico::CALICO_FIELDS
            .iter()
            .find(|(k, _, f, _)| *k == kind && *f == field)
        {
            return format!("spec.{path}");
        }
    }
    if field.contains('_')
        || field
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        format!("spec.{}", fields::to_camel(field))
    } else {
        format!("spec.{field}")
    }
}

/// Parses and checks every document of a stream; all errors, or every document prepared.
pub fn prepare_all(source: &str, text: &str) -> Result<Vec<Prepared>, Vec<DocumentError>> {
    let docs = parse_stream(source, text).map_err(|e| vec![e])?;
    let mut prepared = Vec::new();
    let mut errors = Vec::new();
    for (origin, doc) in &docs {
        match prepare(origin, doc) {
            Ok(p) => prepared.push(p),
            Err(e) => errors.push(e),
        }
    }
    if docs.is_empty() {
        errors.push(DocumentError {
            source: source.to_string(),
            index: 0,
            what: None,
            field: None,
            reason: "holds no document".into(),
        });
    }
    if errors.is_empty() {
        Ok(prepared)
    } else {
        Err(errors)
    }
}
