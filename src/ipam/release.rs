//! Releasing addresses: by handle, by address (with an optional sequence number), the rollback
//! of a partial allocation, and giving back empty blocks.

use super::cache::{decode_block, decode_handle, get_many, Cache};
use super::{Allocated, Ipam, IpamError, MAX_ATTEMPTS};
use crate::datastore::{decode_json, encode_json, Compare, Op, Revision, Txn, TxnResponse};
use crate::model::{keys, validate_handle, Block, BlockAffinity, Handle};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::IpAddr;
use tracing::{info, warn};

/// What a release by address freed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Released {
    pub ip: IpAddr,
    pub handle: String,
    pub sequence: u64,
}

impl Ipam {
    /// Frees every address held by `handle`; returns them. A handle that holds nothing (or
    /// never existed) frees nothing and is not an error, so CNI DEL can repeat safely.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        validate_handle(handle)?;
        let mut cache = self.cache.lock().await;
        self.release_handle_locked(&mut cache, handle, None).await
    }

    /// Frees `ip`. With `sequence`, only if the address still carries that sequence number
    /// (else [`IpamError::StaleSequence`] and nothing changes).
    pub async fn release_ip(
        &self,
        ip: IpAddr,
        sequence: Option<u64>,
    ) -> Result<Released, IpamError> {
        let mut cache = self.cache.lock().await;
        let cidr = self.block_of(&mut cache, ip).await?;
        for attempt in 0..MAX_ATTEMPTS {
            super::contention_pause(attempt).await;
            let Some((block, block_rev)) = cache.blocks.get(&cidr).cloned() else {
                return Err(IpamError::UnknownAddress { ip });
            };
            let ordinal = block
                .ordinal_of(ip)
                .ok_or(IpamError::UnknownAddress { ip })?;
            let Some(allocation) = block.allocations.get(&ordinal).cloned() else {
                return Err(IpamError::NotAllocated { ip });
            };
            if let Some(given) = sequence.filter(|&s| s != allocation.sequence) {
                return Err(IpamError::StaleSequence {
                    ip,
                    given,
                    current: allocation.sequence,
                    handle: allocation.handle,
                });
            }
            let (mut handle, handle_rev) =
                self.cached_handle(&mut cache, &allocation.handle).await?;
            let mut updated = block.clone();
            updated.release_ordinal(ordinal);
            handle.remove(&cidr, 1);
            let (block_key, handle_key) = (keys::block(&cidr), keys::handle(&allocation.handle));
            let txn = Txn {
                compare: vec![
                    Compare::revision(&block_key, block_rev),
                    Compare::revision(&handle_key, handle_rev),
                ],
                success: vec![
                    Op::put(&block_key, encode_json(&updated)),
                    handle_write(&handle_key, &handle),
                ],
                failure: vec![Op::get(&block_key), Op::get(&handle_key)],
            };
            let resp = self.store.txn(txn).await?;
            if resp.succeeded {
                cache.blocks.insert(cidr, (updated, resp.revision));
                let rev = if handle.blocks.is_empty() {
                    0
                } else {
                    resp.revision
                };
                cache.set_handle(&allocation.handle, Some((handle, rev)));
                return Ok(Released {
                    ip,
                    handle: allocation.handle,
                    sequence: allocation.sequence,
                });
            }
            cache.set_block(cidr, decode_block(resp.get(0))?);
            cache.set_handle(&allocation.handle, decode_handle(resp.get(1))?);
        }
        Err(IpamError::TooManyRetries {
            what: format!("release of {ip}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Undoes a partial allocation: frees exactly the addresses handed out (matching sequence
    /// numbers), leaving anything else the handle held.
    pub(super) async fn release_allocated(
        &self,
        cache: &mut Cache,
        handle: &str,
        got: &[Allocated],
    ) {
        let only: BTreeMap<IpAddr, u64> = got.iter().map(|a| (a.ip, a.sequence)).collect();
        if let Err(e) = self.release_handle_locked(cache, handle, Some(&only)).await {
            warn!(%handle, error = %e, "rollback of a partial allocation failed; `routectl ipam check` will show it");
        }
    }

    /// Releases the handle's addresses (all, or only those in `only` with matching sequence)
    /// across all its blocks in one transaction.
    async fn release_handle_locked(
        &self,
        cache: &mut Cache,
        id: &str,
        only: Option<&BTreeMap<IpAddr, u64>>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        // A handle this allocator wrote is cached with its revision: trust it (a stale entry
        // fails the compare and is re-read). An unknown or absent one is read first.
        let mut fresh = cache.handles.get(id).is_none_or(|(_, rev)| *rev == 0);
        for attempt in 0..MAX_ATTEMPTS {
            super::contention_pause(attempt).await;
            let read_first = std::mem::replace(&mut fresh, false);
            let (handle, handle_rev) = self.handle_to_release(cache, id, read_first).await?;
            if handle_rev == 0 {
                return Ok(Vec::new());
            }
            let cidrs = handle_cidrs(&handle);
            self.ensure_blocks(cache, &cidrs).await?;
            let (txn, plan) = plan_handle_release(cache, id, (handle, handle_rev), &cidrs, only);
            let resp = self.store.txn(txn).await?;
            if resp.succeeded {
                return Ok(plan.commit(cache, id, resp.revision));
            }
            plan.refresh(cache, id, &resp)?;
        }
        Err(IpamError::TooManyRetries {
            what: format!("release of handle {id}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The handle and its revision: read from the store first when `read_first`, else as
    /// cached (revision 0: it holds nothing).
    async fn handle_to_release(
        &self,
        cache: &mut Cache,
        id: &str,
        read_first: bool,
    ) -> Result<(Handle, Revision), IpamError> {
        if read_first {
            let found = decode_handle(self.store.get(&keys::handle(id)).await?.as_ref())?;
            cache.set_handle(id, found);
        }
        Ok(cache.handle(id))
    }

    /// Gives back blocks that hold no address: of `node`, or of every node. Returns them.
    pub async fn release_empty_blocks(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let mut cache = self.cache.lock().await;
        let prefix = node.map_or(keys::AFFINITIES.to_string(), keys::affinities_of);
        let affinities = self.store.list(&prefix).await?;
        let mut released = Vec::new();
        for kv in &affinities.kvs {
            let Some((owner, cidr)) = keys::parse_affinity_key(&kv.key) else {
                continue;
            };
            let _: BlockAffinity = decode_json(kv)?;
            let block_key = keys::block(&cidr);
            let block = decode_block(self.store.get(&block_key).await?.as_ref())?;
            let mut txn = Txn {
                compare: vec![Compare::revision(&kv.key, kv.mod_revision)],
                ..Txn::default()
            };
            match &block {
                Some((b, rev)) if b.is_empty() && b.affinity.as_deref() == Some(owner.as_str()) => {
                    txn.compare.push(Compare::revision(&block_key, *rev));
                    txn.success.push(Op::delete(&block_key));
                }
                Some(_) => continue,
                None => {} // an affinity without a block: remove the leftover claim
            }
            txn.success.push(Op::delete(&kv.key));
            if self.store.txn(txn).await?.succeeded {
                info!(node = %owner, block = %cidr, "released empty block");
                cache.set_block(cidr, None);
                released.push(cidr);
            }
        }
        Ok(released)
    }

    /// The block that holds `ip`: from the pools, else by scanning block keys.
    async fn block_of(&self, cache: &mut Cache, ip: IpAddr) -> Result<IpNetwork, IpamError> {
        let pools = super::cache::load_pools(self.store.as_ref()).await?;
        let from_pool = pools.iter().find_map(|(p, _)| p.block_containing(ip));
        cache.pools = Some(pools);
        let cidr = match from_pool {
            Some(cidr) => cidr,
            None => {
                let listed = self.store.list_keys(keys::BLOCKS).await?;
                listed
                    .kvs
                    .iter()
                    .filter_map(|kv| keys::key_part_to_cidr(keys::last_part(&kv.key)))
                    .find(|c| c.contains(ip))
                    .ok_or(IpamError::UnknownAddress { ip })?
            }
        };
        let found = decode_block(self.store.get(&keys::block(&cidr)).await?.as_ref())?;
        if found.is_none() {
            return Err(IpamError::NotAllocated { ip });
        }
        cache.set_block(cidr, found);
        Ok(cidr)
    }

    async fn cached_handle(&self, cache: &mut Cache, id: &str) -> Result<(Handle, i64), IpamError> {
        if !cache.handles.contains_key(id) {
            let found = decode_handle(self.store.get(&keys::handle(id)).await?.as_ref())?;
            cache.set_handle(id, found);
        }
        Ok(cache.handle(id))
    }

    async fn ensure_blocks(&self, cache: &mut Cache, cidrs: &[IpNetwork]) -> Result<(), IpamError> {
        let missing: Vec<IpNetwork> = cidrs
            .iter()
            .filter(|c| !cache.blocks.contains_key(c))
            .copied()
            .collect();
        let block_keys: Vec<String> = missing.iter().map(keys::block).collect();
        for (cidr, kv) in missing
            .iter()
            .zip(get_many(self.store.as_ref(), &block_keys).await?)
        {
            cache.set_block(*cidr, decode_block(kv.as_ref())?);
        }
        Ok(())
    }
}

/// Writes the handle, or deletes it when it holds nothing.
fn handle_write(key: &str, handle: &Handle) -> Op {
    if handle.blocks.is_empty() {
        Op::delete(key)
    } else {
        Op::put(key, encode_json(handle))
    }
}

/// The blocks a handle records addresses in.
fn handle_cidrs(handle: &Handle) -> Vec<IpNetwork> {
    handle
        .blocks
        .keys()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// What one attempt at releasing a handle will have done once its transaction commits.
struct HandleRelease {
    freed: Vec<IpAddr>,
    /// The handle without the freed addresses (deleted when it holds none).
    remaining: Handle,
    /// The blocks the transaction compares, in order: their Gets follow the handle's in
    /// the failure branch.
    compared: Vec<IpNetwork>,
    /// The blocks it rewrites.
    updated_blocks: Vec<(IpNetwork, Block)>,
}

/// The transaction that releases `id`'s addresses from the cached `cidrs` blocks (no I/O),
/// and what it does. Every cached block is compared, changed or not.
fn plan_handle_release(
    cache: &Cache,
    id: &str,
    (handle, handle_rev): (Handle, Revision),
    cidrs: &[IpNetwork],
    only: Option<&BTreeMap<IpAddr, u64>>,
) -> (Txn, HandleRelease) {
    let handle_key = keys::handle(id);
    let mut txn = Txn {
        compare: vec![Compare::revision(&handle_key, handle_rev)],
        success: Vec::new(),
        failure: vec![Op::get(&handle_key)],
    };
    let mut plan = HandleRelease {
        freed: Vec::new(),
        remaining: handle,
        compared: Vec::new(),
        updated_blocks: Vec::new(),
    };
    for cidr in cidrs {
        let Some((block, rev)) = cache.blocks.get(cidr) else {
            plan.remaining.blocks.remove(&cidr.to_string());
            continue;
        };
        // Every block is compared, changed or not: a stale cached copy must not let the
        // handle be dropped while the block still holds its addresses.
        let key = keys::block(cidr);
        txn.compare.push(Compare::revision(&key, *rev));
        txn.failure.push(Op::get(&key));
        plan.compared.push(*cidr);
        let (updated, released) = release_in_block(block, id, only);
        if only.is_none() {
            plan.remaining.blocks.remove(&cidr.to_string());
        } else {
            plan.remaining.remove(cidr, released.len() as u32);
        }
        if released.is_empty() {
            continue;
        }
        plan.freed.extend(released);
        txn.success.push(Op::put(&key, encode_json(&updated)));
        plan.updated_blocks.push((*cidr, updated));
    }
    txn.success.push(handle_write(&handle_key, &plan.remaining));
    (txn, plan)
}

/// `block` with `id`'s addresses freed (all, or those in `only` carrying the given sequence
/// number), and the addresses freed.
fn release_in_block(
    block: &Block,
    id: &str,
    only: Option<&BTreeMap<IpAddr, u64>>,
) -> (Block, Vec<IpAddr>) {
    let mut updated = block.clone();
    let ordinals: Vec<u32> = block
        .allocations
        .iter()
        .filter(|(o, a)| {
            a.handle == id
                && only.is_none_or(|m| {
                    block
                        .ip_at(**o)
                        .is_some_and(|ip| m.get(&ip) == Some(&a.sequence))
                })
        })
        .map(|(o, _)| *o)
        .collect();
    let released = ordinals
        .into_iter()
        .filter_map(|o| updated.release_ordinal(o))
        .collect();
    (updated, released)
}

impl HandleRelease {
    /// Caches what the committed transaction wrote at `revision`; returns the freed addresses.
    fn commit(self, cache: &mut Cache, id: &str, revision: Revision) -> Vec<IpAddr> {
        for (cidr, block) in self.updated_blocks {
            cache.blocks.insert(cidr, (block, revision));
        }
        let rev = if self.remaining.blocks.is_empty() {
            0
        } else {
            revision
        };
        cache.set_handle(id, Some((self.remaining, rev)));
        self.freed
    }

    /// Caches the handle and blocks a failed compare read back.
    fn refresh(&self, cache: &mut Cache, id: &str, resp: &TxnResponse) -> Result<(), IpamError> {
        cache.set_handle(id, decode_handle(resp.get(0))?);
        for (i, cidr) in self.compared.iter().enumerate() {
            cache.set_block(*cidr, decode_block(resp.get(i + 1))?);
        }
        Ok(())
    }
}
