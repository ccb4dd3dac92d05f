//! Prepared documents ↔ the datastore: one compare-and-swap transaction per document.
//!
//! ```text
//!  Prepared ──get key──> checks (create: absent; replace: present; resourceVersion: equal;
//!                               IPPool: CIDR/block size unchanged, no overlap)
//!           ──txn: key (and, for pools, every other pool) at the revisions read ? put : conflict
//! ```
//! `--dry-run` runs every check and stops before the transaction.

use super::{kind::Kind, Document, DocumentError, Prepared, MASKED, SECRET_FIELDS};
use crate::datastore::{Compare, Datastore, DatastoreError, KeyValue, Op, Txn};
use crate::model::{keys, pool::validate_pool_set, IpPool};
use serde::Serialize;
use serde_json::{Map, Value};

/// How a document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Create or update.
    Apply,
    /// Only if absent.
    Create,
    /// Only if present.
    Replace,
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub kind: String,
    pub name: String,
    /// `created`, `updated`, `unchanged` or `deleted`.
    pub action: &'static str,
    /// The record's revision afterwards (its new resourceVersion); none after a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<i64>,
    pub dry_run: bool,
}

/// Why a document was not written.
#[derive(Debug)]
pub enum WriteError {
    Invalid(DocumentError),
    NotFound(DocumentError),
    Conflict(DocumentError),
    Datastore(DatastoreError),
}

impl From<DatastoreError> for WriteError {
    fn from(e: DatastoreError) -> Self {
        WriteError::Datastore(e)
    }
}

fn decode(kv: &KeyValue) -> Result<Map<String, Value>, DatastoreError> {
    crate::datastore::decode_json(kv)
}

/// Writes one prepared document (or, with `dry_run`, checks that it could be written).
pub async fn write(
    store: &dyn Datastore,
    doc: &Prepared,
    verb: Verb,
    dry_run: bool,
) -> Result<Outcome, WriteError> {
    let key = doc.key();
    let current = store.get(&key).await?;
    let current_record = current.as_ref().map(decode).transpose()?;
    check_presence(doc, verb, current.as_ref())?;
    let mut record = doc.record.clone();
    keep_secrets(doc, &mut record, current_record.as_ref())?;
    let expected = current.as_ref().map_or(0, |kv| kv.mod_revision);
    let mut compare = vec![Compare::revision(&key, expected)];
    if doc.kind == Kind::IpPool {
        check_pool(store, doc, &record, current_record.as_ref(), &mut compare).await?;
    }
    let outcome = |action, resource_version| Outcome {
        kind: doc.kind.name().to_string(),
        name: doc.name.clone(),
        action,
        resource_version,
        dry_run,
    };
    if current_record.as_ref() == Some(&record) {
        return Ok(outcome("unchanged", Some(expected)));
    }
    let action = if current.is_some() {
        "updated"
    } else {
        "created"
    };
    if dry_run {
        return Ok(outcome(action, None));
    }
    let value = serde_json::to_vec(&record).map_err(|e| {
        WriteError::Invalid(doc.error(None, format!("cannot encode the record: {e}")))
    })?;
    let txn = Txn {
        compare,
        success: vec![Op::put(&key, value)],
        failure: vec![],
    };
    let response = store.txn(txn).await?;
    if !response.succeeded {
        return Err(WriteError::Conflict(doc.error(
            None,
            "changed by someone else while being applied; nothing was written, run it again",
        )));
    }
    Ok(outcome(action, Some(response.revision)))
}

fn check_presence(
    doc: &Prepared,
    verb: Verb,
    current: Option<&KeyValue>,
) -> Result<(), WriteError> {
    match (verb, current) {
        (Verb::Create, Some(_)) => {
            return Err(WriteError::Conflict(doc.error(
                None,
                "already exists; use `routectl apply` or `routectl replace` to change it",
            )))
        }
        (Verb::Replace, None) => {
            return Err(WriteError::NotFound(doc.error(
                None,
                "does not exist; use `routectl create` or `routectl apply`",
            )))
        }
        _ => {}
    }
    let Some(wanted) = doc.resource_version else {
        return Ok(());
    };
    let field = |reason: String| {
        let mut e = doc.error(None, reason);
        e.field = Some("metadata.resourceVersion".into());
        WriteError::Conflict(e)
    };
    match current {
        None => Err(field(format!(
            "{wanted} names a version, but the object does not exist (deleted meanwhile?); \
             remove resourceVersion to create it"
        ))),
        Some(kv) if kv.mod_revision != wanted => Err(field(format!(
            "{wanted} is stale: the object was changed since (now {}); get it again and \
             re-apply your change",
            kv.mod_revision
        ))),
        Some(_) => Ok(()),
    }
}

/// A secret given as [`MASKED`] (what `get` prints) keeps the stored value.
fn keep_secrets(
    doc: &Prepared,
    record: &mut Map<String, Value>,
    current: Option<&Map<String, Value>>,
) -> Result<(), WriteError> {
    for secret in SECRET_FIELDS {
        if record.get(*secret).and_then(Value::as_str) != Some(MASKED) {
            continue;
        }
        match current.and_then(|c| c.get(*secret)) {
            Some(stored) => {
                record.insert((*secret).to_string(), stored.clone());
            }
            None => {
                return Err(WriteError::Invalid(doc.error(
                    Some(secret),
                    format!("{MASKED} stands for the stored password, and none is stored; give the password"),
                )))
            }
        }
    }
    Ok(())
}

/// An IPPool keeps its CIDR and block size, and overlaps no other pool; the other pools must
/// be unchanged when it lands.
async fn check_pool(
    store: &dyn Datastore,
    doc: &Prepared,
    record: &Map<String, Value>,
    current: Option<&Map<String, Value>>,
    compare: &mut Vec<Compare>,
) -> Result<(), WriteError> {
    if let Some(current) = current {
        for field in ["cidr", "block_size"] {
            if current.get(field) != record.get(field) {
                return Err(WriteError::Invalid(doc.error(
                    Some(field),
                    "cannot change once the pool exists; create a new pool and delete this one",
                )));
            }
        }
    }
    let ours: IpPool = serde_json::from_value(Value::Object(record.clone()))
        .map_err(|e| WriteError::Invalid(doc.error(None, e.to_string())))?;
    let mut all = vec![ours];
    for kv in store.list(keys::POOLS).await?.kvs {
        let pool: IpPool = crate::datastore::decode_json(&kv)?;
        if pool.name != doc.name {
            compare.push(Compare::revision(&kv.key, kv.mod_revision));
            all.push(pool);
        }
    }
    validate_pool_set(&all).map_err(|e| WriteError::Invalid(doc.error(Some("cidr"), e.to_string())))
}

/// The documents of `kind` (all, or the one named), as `get` prints them. Singletons nobody
/// wrote show their defaults.
pub async fn read(
    store: &dyn Datastore,
    kind: Kind,
    name: Option<&str>,
) -> Result<Vec<Document>, DatastoreError> {
    let kvs = match (kind.prefix(), name) {
        (Some(prefix), None) => store.list(prefix).await?.kvs,
        (_, Some(name)) => store.get(&kind.key(name)).await?.into_iter().collect(),
        (None, None) => store.get(&kind.key("")).await?.into_iter().collect(),
    };
    let mut docs = Vec::new();
    for kv in &kvs {
        docs.push(Document::from_record(kind, decode(kv)?, kv.mod_revision));
    }
    let singleton_default = kind.is_singleton()
        && docs.is_empty()
        && name.is_none_or(|n| n == super::kind::SINGLETON_NAME);
    if singleton_default {
        if let Some(record) = kind.default_record() {
            docs.push(Document::from_record(kind, record, 0));
        }
    }
    Ok(docs)
}

/// Deletes the object `name` of `kind` (with `resource_version`: only at that revision).
/// Pools go through IPAM, which refuses while addresses are allocated from them.
pub async fn delete(
    store: std::sync::Arc<dyn Datastore>,
    kind: Kind,
    name: &str,
    resource_version: Option<i64>,
    dry_run: bool,
) -> Result<Outcome, crate::cli::error::CliError> {
    use crate::cli::error::CliError;
    let what = format!("{} {name}", kind.name());
    let key = kind.key(name);
    let Some(kv) = store.get(&key).await? else {
        return Err(CliError::not_found(&what, format!("{what} not found")));
    };
    if let Some(wanted) = resource_version.filter(|rv| *rv != kv.mod_revision) {
        return Err(CliError::conflict(
            &what,
            format!(
                "{what}: resourceVersion {wanted} is stale (now {}); get it again before deleting",
                kv.mod_revision
            ),
        ));
    }
    let outcome = Outcome {
        kind: kind.name().to_string(),
        name: name.to_string(),
        action: "deleted",
        resource_version: None,
        dry_run,
    };
    if kind == Kind::IpPool {
        let ipam = crate::ipam::Ipam::new(store.clone());
        if dry_run {
            let pool: IpPool = crate::datastore::decode_json(&kv)?;
            let used: usize = ipam
                .show(None)
                .await?
                .iter()
                .filter(|b| b.pool.as_deref() == Some(pool.name.as_str()))
                .map(|b| b.used)
                .sum();
            if used > 0 {
                return Err(CliError::conflict(
                    &what,
                    format!("{what} has {used} address(es) allocated; release them first"),
                ));
            }
            return Ok(outcome);
        }
        ipam.delete_pool(name, false).await?;
        return Ok(outcome);
    }
    if !dry_run {
        store.delete(&key, kv.mod_revision).await?;
    }
    Ok(outcome)
}
