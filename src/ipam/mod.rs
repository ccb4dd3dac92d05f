//! Block-affinity IPAM with Calico's semantics, every write a compare-and-swap.
//!
//! ```text
//!  allocate(node, handle, n)
//!    ├─ an affine block with room? ── one Txn: compare(block, handle, pool revisions)
//!    │                                          put(block + n), put(handle + n)
//!    ├─ none: re-read the node's affinities (another process may have claimed one)
//!    ├─ none: claim a block: pending affinity → create block → confirm affinity
//!    └─ pool has no unclaimed block (or max_blocks_per_host reached):
//!         borrow from another node's block, unless strict_affinity
//! ```
//! Departures from Calico, on purpose:
//! - The block and its handle are written in one transaction (Calico writes the handle, then the
//!   block, and must undo on failure), so a crash between the two cannot leak a handle count.
//! - The pool's revision is part of that transaction, so a pool disabled or deleted concurrently
//!   is never allocated from.
//! - A failed compare reads the fresh block, handle and pool back in the same round trip, and the
//!   allocator keeps what it read in a cache: an uncontended allocation with a warm cache is one
//!   round trip; a cold one (first use by a process) is four (pools, affinities, blocks, commit).
//!
//! Sequence numbers: every allocation records the block's sequence number; a release that names
//! a stale one is refused ([`IpamError::StaleSequence`]), so a late release cannot free an
//! address that was handed out again.

mod allocate;
pub mod attachments;
mod batch;
pub mod bench;
mod cache;
mod check;
pub mod decommission;
mod error;
pub mod pools;
pub mod release;
pub mod repair;

pub use check::{CheckReport, Finding, FindingKind};
pub use error::IpamError;

use crate::datastore::Datastore;
use crate::model::IpamConfig;
use ipnetwork::IpNetwork;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Attempts per operation before giving up ([`IpamError::TooManyRetries`]), as Calico.
pub const MAX_ATTEMPTS: usize = 100;

/// Longest pause after a lost compare-and-swap race, in microseconds.
const CONTENTION_PAUSE_MAX_US: u64 = 1_000;
/// How long an allocation keeps retrying lost races once it has lost `MAX_ATTEMPTS` of them.
const RACE_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits after losing compare-and-swap race number `lost` (1, 2, ...) of one operation: the first
/// retry goes at once, later ones after a random pause of up to 1 ms, so contenders that share
/// no allocator (several processes for one node) fall out of lockstep. The pause stays short on
/// purpose: a new request of the winner does not wait, so a long back-off would only make the
/// loser lose again (starvation).
pub(crate) async fn contention_pause(lost: usize) {
    let ceiling = pause_ceiling_us(lost);
    if ceiling == 0 {
        return;
    }
    let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ceiling);
    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
}

/// The longest pause after `lost` lost races: none after the first, then 1 ms.
fn pause_ceiling_us(lost: usize) -> u64 {
    if lost <= 1 {
        0
    } else {
        CONTENTION_PAUSE_MAX_US
    }
}

/// The rounds of one allocation. At most `MAX_ATTEMPTS` rounds that are not lost races (claims,
/// refreshes, progress). Losing a race is not a failure of the allocation: under heavy
/// contention (allocators that share nothing, racing for one block) it may lose many in a row
/// while every round makes progress for someone, so lost races have their own budget: the
/// allocation gives up on them only after `MAX_ATTEMPTS` of them *and* `RACE_BUDGET` of trying.
pub(crate) struct Rounds {
    attempts: usize,
    began: std::time::Instant,
    lost: usize,
}

impl Rounds {
    pub(crate) fn new() -> Rounds {
        Rounds {
            attempts: 0,
            began: std::time::Instant::now(),
            lost: 0,
        }
    }

    /// Starts a round; [`IpamError::TooManyRetries`] after `MAX_ATTEMPTS` of them.
    pub(crate) fn next(&mut self, what: impl FnOnce() -> String) -> Result<(), IpamError> {
        self.attempts += 1;
        if self.attempts > MAX_ATTEMPTS {
            return Err(IpamError::TooManyRetries {
                what: what(),
                attempts: self.attempts,
            });
        }
        Ok(())
    }

    /// The round was a lost race: it is not counted as one; counts the race and pauses
    /// ([`IpamError::TooManyRetries`] when the races are out of budget).
    pub(crate) async fn lost(&mut self, what: impl FnOnce() -> String) -> Result<(), IpamError> {
        self.attempts -= 1;
        self.lost += 1;
        if self.lost > MAX_ATTEMPTS && self.began.elapsed() > RACE_BUDGET {
            return Err(IpamError::TooManyRetries {
                what: what(),
                attempts: self.lost,
            });
        }
        contention_pause(self.lost).await;
        Ok(())
    }
}

#[cfg(test)]
mod pause_tests {
    #[test]
    fn pauses_start_after_the_first_lost_race_and_stay_short() {
        let ceilings: Vec<u64> = (0..5).map(super::pause_ceiling_us).collect();
        assert_eq!(ceilings, [0, 0, 1_000, 1_000, 1_000]);
    }
}

/// Address family of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    pub fn of(net: &IpNetwork) -> Family {
        if net.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// A request for `count` addresses for one handle on one node.
#[derive(Debug, Clone)]
pub struct AllocateRequest {
    pub node: String,
    pub handle: String,
    pub count: usize,
    pub family: Family,
    /// Restrict to these pools (by name); empty means every enabled pool of the family.
    pub pools: Vec<String>,
    /// Recorded with each address: `namespace`, `pod`, `container_id`, `node`, ...
    pub attributes: BTreeMap<String, String>,
}

impl AllocateRequest {
    pub fn new(node: &str, handle: &str, count: usize) -> AllocateRequest {
        AllocateRequest {
            node: node.to_string(),
            handle: handle.to_string(),
            count,
            family: Family::V4,
            pools: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }
}

/// One address handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allocated {
    pub ip: IpAddr,
    /// The block the address came from.
    pub block: IpNetwork,
    /// Sequence number to pass to a release by address.
    pub sequence: u64,
    /// True when the block is affine to another node (borrowed).
    pub borrowed: bool,
}

/// One allocated address with its holder, as recorded in its block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AddressRecord {
    pub ip: IpAddr,
    pub handle: String,
    pub sequence: u64,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One block as `routectl ipam show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockSummary {
    pub cidr: IpNetwork,
    pub affinity: Option<String>,
    pub pool: Option<String>,
    pub used: usize,
    pub free: usize,
    pub capacity: u32,
}

/// The allocator for one process; share it (it serialises its own cache).
pub struct Ipam {
    store: Arc<dyn Datastore>,
    cache: tokio::sync::Mutex<cache::Cache>,
    /// Allocation requests waiting for the cache lock (group commit, see `batch`).
    queue: std::sync::Mutex<Vec<batch::Pending>>,
}

impl Ipam {
    pub fn new(store: Arc<dyn Datastore>) -> Ipam {
        Ipam {
            store,
            cache: tokio::sync::Mutex::new(cache::Cache::default()),
            queue: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Datastore> {
        &self.store
    }

    /// Reads the IPAM configuration (defaults when unset).
    pub async fn config(&self) -> Result<IpamConfig, IpamError> {
        let found =
            crate::datastore::get_json(self.store.as_ref(), crate::model::keys::IPAM_CONFIG)
                .await?;
        Ok(found.map(|(c, _)| c).unwrap_or_default())
    }

    /// Writes the IPAM configuration.
    pub async fn set_config(&self, config: &IpamConfig) -> Result<(), IpamError> {
        let key = crate::model::keys::IPAM_CONFIG;
        let value = crate::datastore::encode_json(config);
        for attempt in 0..MAX_ATTEMPTS {
            contention_pause(attempt).await;
            let current = self.store.get(key).await?.map_or(0, |kv| kv.mod_revision);
            match self.store.update(key, value.clone(), current).await {
                Ok(_) => {
                    self.cache.lock().await.config = None;
                    return Ok(());
                }
                Err(crate::datastore::DatastoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: "IPAM config update".into(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Every block, optionally only those affine to `node`, with usage.
    pub async fn show(&self, node: Option<&str>) -> Result<Vec<BlockSummary>, IpamError> {
        let pools = cache::load_pools(self.store.as_ref()).await?;
        let blocks = cache::load_all_blocks(self.store.as_ref()).await?;
        let out = blocks
            .into_iter()
            .filter(|(b, _)| node.is_none() || b.affinity.as_deref() == node)
            .map(|(b, _)| BlockSummary {
                cidr: b.cidr,
                pool: pools
                    .iter()
                    .find(|(p, _)| p.cidr.contains(b.cidr.network()))
                    .map(|(p, _)| p.name.clone()),
                affinity: b.affinity.clone(),
                used: b.allocations.len(),
                free: b.free_count(),
                capacity: b.capacity(),
            })
            .collect();
        Ok(out)
    }

    /// Every address allocated for `node` (its `node` attribute), in any block, borrowed or not.
    pub async fn allocations_of_node(&self, node: &str) -> Result<Vec<AddressRecord>, IpamError> {
        let blocks = cache::load_all_blocks(self.store.as_ref()).await?;
        let mut out = Vec::new();
        for (block, _) in &blocks {
            for (ordinal, a) in &block.allocations {
                if a.attributes.get("node").map(String::as_str) != Some(node) {
                    continue;
                }
                if let Some(ip) = block.ip_at(*ordinal) {
                    out.push(AddressRecord {
                        ip,
                        handle: a.handle.clone(),
                        sequence: a.sequence,
                        attributes: a.attributes.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Forgets cached datastore state (after an outage, or when another writer is known to
    /// have changed things).
    pub async fn invalidate_cache(&self) {
        *self.cache.lock().await = cache::Cache::default();
    }
}

/// FNV-1a: a stable hash for spreading nodes over a pool's blocks.
pub(crate) fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
