//! CNI GC (spec 1.1, `cni.dev/valid-attachments`): the runtime tells the plugin which
//! attachments of a network are alive; the agent keeps the last list of each node and network
//! in the datastore, so `routectl ipam check`, run anywhere, names the handles no container on
//! their node holds (`handle-without-container`), and `routectl ipam repair` releases them.
//!
//! ```text
//!  CNI GC of network N on node X, valid handles V ──> agent (POST /v1/ipam/gc):
//!    held    = X's handles with the plugin's prefix, of network N (or recorded without one)
//!    unheld  = held − V                (no container holds them; each existed before the list)
//!    release = unheld ∩ the previous record's unheld
//!              (the runtime said so twice, a GC interval apart: released whole, at once)
//!    record  ipam/cni-gc/X/N = {received_at, valid: V, unheld}  (compare-and-swap), then
//!    release each handle of `release` whole (one whose release fails stays named for check)
//! ```
//! A handle the runtime names unheld once stays allocated until the next GC, or until `ipam
//! repair` has seen it unheld in both its scans, re-read the record just before releasing it,
//! and found it allocated at least its grace period before that list (`allocated_at`, stamped
//! by the same agent). A pod ADDed after the list was computed but before it arrived is unheld
//! in that record only and young: the next GC lists it valid, so it is never released.

use super::{AddressRecord, Ipam, IpamError, MAX_ATTEMPTS};
use crate::datastore::{decode_json, encode_json, DatastoreError, Revision};
use crate::model::{keys, ValidationError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The network segment of the record key for a GC that names no network (an older plugin):
/// such a GC covers the node's handles of every network.
pub const ANY_NETWORK: &str = "*";

/// The last CNI GC list of one node and network, as the agent received it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniGcRecord {
    pub node: String,
    /// The CNI network (`name` of the configuration), or [`ANY_NETWORK`].
    pub network: String,
    /// Unix seconds when the agent received the list.
    pub received_at: u64,
    /// Handles of the valid attachments.
    pub valid: BTreeSet<String>,
    /// Handles the node held when the list came that no valid attachment names (those the GC
    /// released included: one whose release fails stays named for `ipam check`).
    pub unheld: BTreeSet<String>,
}

/// What one CNI GC covers.
#[derive(Debug, Clone, Default)]
pub struct GcScope {
    /// Only handles starting with this (the plugin's `routed.`).
    pub prefix: String,
    /// The CNI network; `None` covers every network.
    pub network: Option<String>,
    /// Handles of the valid attachments.
    pub valid: BTreeSet<String>,
}

impl GcScope {
    /// Whether `record`'s handle belongs to this GC: the prefix, and the network attribute
    /// equal to ours (or absent: recorded by a plugin that did not name its network).
    fn covers(&self, record: &AddressRecord) -> bool {
        if !record.handle.starts_with(&self.prefix) {
            return false;
        }
        match (&self.network, record.attributes.get("network")) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        }
    }

    fn network_key(&self) -> &str {
        self.network.as_deref().unwrap_or(ANY_NETWORK)
    }
}

/// What a GC does, computed without I/O ([`plan_gc`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Handles to release now (unheld in the previous record and in this list).
    pub release: BTreeSet<String>,
    /// Handles unheld for the first time: recorded, left allocated.
    pub unheld: BTreeSet<String>,
    /// Addresses of the handles released.
    pub released: Vec<AddressRecord>,
    /// Addresses of valid attachments and of other networks: the plugin keeps their veths
    /// (and deletes every other pod veth, the unheld ones' included).
    pub kept: Vec<AddressRecord>,
}

/// Splits the node's addresses (`held`) by what the GC does with each.
pub fn plan_gc(held: &[AddressRecord], scope: &GcScope, previous: Option<&CniGcRecord>) -> GcPlan {
    let mut plan = GcPlan::default();
    for record in held {
        if !record.handle.starts_with(&scope.prefix) {
            continue;
        }
        let unheld = scope.covers(record) && !scope.valid.contains(&record.handle);
        if !unheld {
            plan.kept.push(record.clone());
        } else if previous.is_some_and(|p| p.unheld.contains(&record.handle)) {
            plan.release.insert(record.handle.clone());
            plan.released.push(record.clone());
        } else {
            plan.unheld.insert(record.handle.clone());
        }
    }
    plan
}

/// A CNI network name as a key segment: what CNI allows in `name`.
fn validate_network(network: &str) -> Result<(), ValidationError> {
    let ok = !network.is_empty()
        && network.len() <= 253
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    Err(ValidationError::InvalidField {
        field: format!("network {network:?}"),
        reason: "a CNI network name: letters, digits, '_', '.' and '-'".into(),
    })
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ipam {
    /// Runs one CNI GC for `node` (see the module doc): records the list, then releases,
    /// whole, the handles unheld in this list and in the previous one.
    pub async fn cni_gc(&self, node: &str, scope: &GcScope) -> Result<GcPlan, IpamError> {
        crate::model::validate_name(node)?;
        if let Some(network) = &scope.network {
            validate_network(network)?;
        }
        let key = keys::cni_gc(node, scope.network_key());
        let mut plan = None;
        for attempt in 0..MAX_ATTEMPTS {
            super::contention_pause(attempt).await;
            let previous =
                crate::datastore::get_json::<CniGcRecord>(self.store.as_ref(), &key).await?;
            let held = self.allocations_of_node(node).await?;
            let planned = plan_gc(&held, scope, previous.as_ref().map(|(r, _)| r));
            let record = CniGcRecord {
                node: node.to_string(),
                network: scope.network_key().to_string(),
                received_at: now_unix(),
                valid: scope.valid.clone(),
                unheld: planned.unheld.union(&planned.release).cloned().collect(),
            };
            if self
                .write_record(&key, &record, previous.map(|(_, rev)| rev))
                .await?
            {
                plan = Some(planned);
                break;
            }
        }
        let plan = plan.ok_or_else(|| IpamError::TooManyRetries {
            what: format!("CNI GC record of node {node}"),
            attempts: MAX_ATTEMPTS,
        })?;
        for handle in &plan.release {
            self.release_handle(handle).await?;
        }
        Ok(plan)
    }

    /// Writes `record` if the key is still at `revision` (absent for `None`); false when
    /// another GC wrote it first.
    async fn write_record(
        &self,
        key: &str,
        record: &CniGcRecord,
        revision: Option<Revision>,
    ) -> Result<bool, IpamError> {
        let value = encode_json(record);
        let written = match revision {
            Some(rev) => self.store.update(key, value, rev).await.map(|_| ()),
            None => self.store.create(key, value, 0).await.map(|_| ()),
        };
        match written {
            Ok(()) => Ok(true),
            Err(DatastoreError::Conflict { .. } | DatastoreError::AlreadyExists { .. }) => {
                Ok(false)
            }
            Err(DatastoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every node's CNI GC records, by node.
    pub async fn cni_gc_records(&self) -> Result<BTreeMap<String, Vec<CniGcRecord>>, IpamError> {
        let mut out: BTreeMap<String, Vec<CniGcRecord>> = BTreeMap::new();
        for kv in self.store.list(keys::CNI_GC).await?.kvs {
            let record: CniGcRecord = decode_json(&kv)?;
            out.entry(record.node.clone()).or_default().push(record);
        }
        Ok(out)
    }

    /// `node`'s CNI GC records.
    pub async fn cni_gc_records_of(&self, node: &str) -> Result<Vec<CniGcRecord>, IpamError> {
        let listed = self.store.list(&keys::cni_gc_of(node)).await?;
        Ok(listed
            .kvs
            .iter()
            .map(decode_json)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes `node`'s CNI GC records (its decommission).
    pub(super) async fn forget_cni_gc(&self, node: &str) -> Result<(), IpamError> {
        for kv in self.store.list_keys(&keys::cni_gc_of(node)).await?.kvs {
            match self.store.delete(&kv.key, kv.mod_revision).await {
                Ok(()) | Err(DatastoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Whether the latest records of `node` still name `handle` unheld (and none lists it valid).
pub fn still_unheld(records: Option<&Vec<CniGcRecord>>, handle: &str) -> bool {
    let Some(records) = records else {
        return false;
    };
    records.iter().any(|r| r.unheld.contains(handle))
        && !records.iter().any(|r| r.valid.contains(handle))
}

#[cfg(test)]
#[path = "attachments_tests.rs"]
mod tests;
