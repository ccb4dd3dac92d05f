//! The datastore: a revisioned key-value store with etcd's model, and its two backends.
//!
//! ```text
//!  routectl / agent / IPAM ──> dyn Datastore ──┬─> EtcdStore    etcd://h:p[,h:p]   (production)
//!                                              └─> SqliteStore  sqlite:///path.db  (embedded default)
//! ```
//! Every key carries `create_revision`, `mod_revision` and `version`; one store-wide revision
//! increases with every write transaction. Writes are conditional on a key's `mod_revision`
//! (0 means "absent"), bundled in a [`Txn`] whose `failure` branch can read the keys back in the
//! same round trip. `watch(prefix, from)` replays history from a revision and then follows live
//! writes; when `from` is older than the compacted history the watch yields
//! [`WatchEvent::Compacted`] and the caller re-lists ([`sync::watch_with_resync`] does this).
//! Leases expire keys attached to them.
//!
//! Keys given to the trait are relative (`ippools/default`); each backend prepends its prefix
//! (default `/routed/v1/`), so several clusters or test runs can share one etcd.

pub mod counting;
pub mod etcd;
pub mod sqlite;
pub mod sync;
pub mod update;

pub use update::{update_json, UpdateError};

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

pub type Revision = i64;
pub type LeaseId = i64;

/// The default datastore URL when neither `--datastore` nor `ROUTED_DATASTORE` is given.
pub const DEFAULT_URL: &str = "sqlite:///var/lib/routed/routed.db";
/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/routed/v1/";

/// One stored key with its revisions (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after create).
    pub version: i64,
    /// 0 when not attached to a lease.
    pub lease: LeaseId,
}

/// A condition of a transaction: the key's `mod_revision` equals `revision` (0 = key absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub mod_revision: Revision,
}

impl Compare {
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare {
            key: key.into(),
            mod_revision: 0,
        }
    }
    pub fn revision(key: impl Into<String>, mod_revision: Revision) -> Compare {
        Compare {
            key: key.into(),
            mod_revision,
        }
    }
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn get(key: impl Into<String>) -> Op {
        Op::Get { key: key.into() }
    }
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put {
            key: key.into(),
            value,
            lease: 0,
        }
    }
    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }
}

/// All `compare`s hold → `success` ops run, else `failure` ops run; atomically, one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// The result of one op, in the order of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Get(Option<KeyValue>),
    Put,
    Delete { deleted: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    pub results: Vec<OpResult>,
}

impl TxnResponse {
    /// The value read by the `index`-th op of the branch that ran, when it was a Get.
    pub fn get(&self, index: usize) -> Option<&KeyValue> {
        match self.results.get(index) {
            Some(OpResult::Get(kv)) => kv.as_ref(),
            _ => None,
        }
    }
}

/// All keys under a prefix at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResponse {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete {
        key: String,
        mod_revision: Revision,
    },
    /// History before `compact_revision` is gone: re-list and watch again. The watch ends.
    Compacted {
        compact_revision: Revision,
    },
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
            WatchEvent::Compacted { compact_revision } => *compact_revision,
        }
    }
}

/// A running watch; dropping it cancels the watch.
pub struct Watch {
    pub(crate) rx: mpsc::Receiver<Result<WatchEvent, DatastoreError>>,
    pub(crate) _guard: Option<Box<dyn Send + Sync>>,
}

impl Watch {
    /// The next event; `None` when the watch ended (store closed or after `Compacted`).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, DatastoreError>> {
        self.rx.recv().await
    }
}

/// Errors of the datastore layer, carrying the key they concern.
#[derive(Debug, Error)]
pub enum DatastoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} changed concurrently (expected revision {expected}, found {found})")]
    Conflict {
        key: String,
        expected: Revision,
        found: Revision,
    },
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("revision {requested} has been compacted (oldest kept: {compact_revision})")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("datastore {url} unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("invalid datastore URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{context}: {reason}")]
    Backend { context: String, reason: String },
    #[error("stored value at {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
}

impl DatastoreError {
    /// True when retrying later may succeed (the store is down or overloaded).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DatastoreError::Unavailable { .. })
    }
}

pub type Result<T, E = DatastoreError> = std::result::Result<T, E>;

/// The store contract shared by both backends. See the module doc for semantics.
#[async_trait]
pub trait Datastore: Send + Sync {
    /// The key and its revisions, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key under `prefix`, sorted by key, with the store revision they were read at.
    async fn list(&self, prefix: &str) -> Result<ListResponse>;
    /// Keys only under `prefix` (values left empty); cheaper for large records.
    async fn list_keys(&self, prefix: &str) -> Result<ListResponse>;
    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;
    /// Events under `prefix` with revision ≥ `from_revision` (0: from now on), in revision order.
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch>;
    /// Discards history before `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// A new lease that expires after `ttl` unless kept alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;
    /// Renews a lease; returns its TTL.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration>;
    /// Ends a lease now, deleting its keys.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;
    /// A short description for logs and errors (URL without credentials).
    fn describe(&self) -> String;

    /// Creates `key` only if it is absent; returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision> {
        let put = Op::Put {
            key: key.to_string(),
            value,
            lease,
        };
        let txn = Txn {
            compare: vec![Compare::absent(key)],
            success: vec![put],
            failure: vec![],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            Ok(resp.revision)
        } else {
            Err(DatastoreError::AlreadyExists {
                key: key.to_string(),
            })
        }
    }

    /// Replaces `key` if its `mod_revision` still equals `expected`; returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let txn = Txn {
            compare: vec![Compare::revision(key, expected)],
            success: vec![Op::put(key, value)],
            failure: vec![Op::get(key)],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp.revision);
        }
        let found = resp.get(0).map_or(0, |kv| kv.mod_revision);
        Err(DatastoreError::Conflict {
            key: key.to_string(),
            expected,
            found,
        })
    }

    /// Deletes `key` if its `mod_revision` still equals `expected`.
    async fn delete(&self, key: &str, expected: Revision) -> Result<()> {
        let txn = Txn {
            compare: vec![Compare::revision(key, expected)],
            success: vec![Op::delete(key)],
            failure: vec![Op::get(key)],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(());
        }
        match resp.get(0) {
            None => Err(DatastoreError::NotFound {
                key: key.to_string(),
            }),
            Some(kv) => Err(DatastoreError::Conflict {
                key: key.to_string(),
                expected,
                found: kv.mod_revision,
            }),
        }
    }
}

/// TLS client settings for etcd (all three PEM files; see docs/operations.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// How to reach a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreConfig {
    pub url: String,
    pub prefix: String,
    pub tls: TlsFiles,
}

impl DatastoreConfig {
    pub fn new(url: &str) -> DatastoreConfig {
        DatastoreConfig {
            url: url.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            tls: TlsFiles::default(),
        }
    }
}

/// Opens the store a URL names: `etcd://h:p[,h:p]` (or `etcds://` for TLS) or `sqlite:///path`.
pub async fn open(config: &DatastoreConfig) -> Result<Arc<dyn Datastore>> {
    let url = config.url.as_str();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open(path, &config.prefix)?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("etcd://") || url.starts_with("etcds://") {
        let store = etcd::EtcdStore::connect(config).await?;
        return Ok(Arc::new(store));
    }
    Err(DatastoreError::InvalidUrl {
        url: url.to_string(),
        reason: "use etcd://HOST:PORT[,HOST:PORT] or sqlite:///PATH/TO/FILE.db".into(),
    })
}

/// Reads and decodes a JSON record; `None` when the key is absent.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Datastore,
    key: &str,
) -> Result<Option<(T, Revision)>> {
    match store.get(key).await? {
        None => Ok(None),
        Some(kv) => Ok(Some((decode_json(&kv)?, kv.mod_revision))),
    }
}

/// Decodes a stored JSON value, naming the key on failure.
pub fn decode_json<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| DatastoreError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// Encodes a record as JSON.
pub fn encode_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs to a Vec cannot fail (no maps with non-string keys
    // other than integers, no I/O); fall back to an empty object rather than panic.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}
