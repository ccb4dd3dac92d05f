//! Allocation: affine blocks first, then a new claim, then borrowing (see the module doc).

use super::cache::{self, decode_block, decode_handle, decode_pool, get_many, Cache};
use super::{stable_hash, AllocateRequest, Allocated, Family, Ipam, IpamError, MAX_ATTEMPTS};
use crate::datastore::{decode_json, encode_json, Compare, DatastoreError, Op, Revision, Txn};
use crate::model::{
    keys, validate_handle, validate_name, AffinityState, Block, BlockAffinity, IpPool, IpamConfig,
};
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use tracing::{debug, info, warn};

/// Largest number of addresses one request may ask for.
pub const MAX_COUNT: usize = 4096;

enum Assign {
    Done(Vec<Allocated>),
    /// A compare failed; the cache now holds the fresh records.
    Retry,
}

enum Claim {
    Claimed(IpNetwork),
    /// No unclaimed block in any candidate pool.
    PoolsFull,
    /// The node holds `max_blocks_per_host` blocks already.
    MaxBlocks(u32),
}

impl Ipam {
    /// Hands out `count` addresses to `handle` on `node`. All or nothing: when fewer can be
    /// had, the ones taken are released again and the error says why.
    pub async fn allocate(&self, req: &AllocateRequest) -> Result<Vec<Allocated>, IpamError> {
        validate_name(&req.node)?;
        validate_handle(&req.handle)?;
        if req.count == 0 || req.count > MAX_COUNT {
            return Err(IpamError::Invalid(
                crate::model::ValidationError::InvalidField {
                    field: "count".into(),
                    reason: format!("must be 1..={MAX_COUNT}"),
                },
            ));
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.enqueue(super::batch::Pending {
            req: req.clone(),
            reply: tx,
        });
        let gone = || IpamError::TooManyRetries {
            what: format!("allocation for {}", req.handle),
            attempts: 0,
        };
        // Either another caller's batch answers us while we wait for the lock (then we leave the
        // lock's queue at once: waiting on would make every later holder serve one request), or
        // we get the lock and serve everything queued, ours included.
        tokio::select! {
            biased;
            answer = &mut rx => answer.unwrap_or_else(|_| Err(gone())),
            mut cache = self.cache.lock() => {
                let batch = self.take_queue();
                if !batch.is_empty() {
                    self.allocate_batch(&mut cache, batch).await;
                }
                drop(cache);
                rx.await.unwrap_or_else(|_| Err(gone()))
            }
        }
    }

    /// One request on its own: affine block, claim, borrow; all or nothing.
    pub(super) async fn allocate_one(
        &self,
        cache: &mut Cache,
        req: &AllocateRequest,
    ) -> Result<Vec<Allocated>, IpamError> {
        let mut got = Vec::with_capacity(req.count);
        let result = self.allocate_into(cache, req, &mut got).await;
        match result {
            Ok(()) => Ok(got),
            Err(e) => {
                if !got.is_empty() {
                    warn!(node = %req.node, handle = %req.handle, error = %e,
                        "allocation incomplete; returning {} addresses", got.len());
                    self.release_allocated(cache, &req.handle, &got).await;
                }
                Err(e)
            }
        }
    }

    pub(super) async fn allocate_into(
        &self,
        cache: &mut Cache,
        req: &AllocateRequest,
        got: &mut Vec<Allocated>,
    ) -> Result<(), IpamError> {
        self.warm_cache(cache, &req.node).await?;
        let mut refreshed = false;
        let mut rounds = super::Rounds::new();
        let what = || format!("allocation for {}", req.handle);
        while got.len() < req.count {
            rounds.next(what)?;
            let pools = candidate_pools(cache, req)?;
            let remaining = req.count - got.len();
            if let Some(cidr) = affine_block_with_room(cache, &req.node, &pools) {
                match self.assign(cache, cidr, req, remaining, false).await? {
                    Assign::Done(mut new) => got.append(&mut new),
                    Assign::Retry => rounds.lost(what).await?,
                }
                continue;
            }
            if !refreshed {
                refreshed = true;
                self.refresh_node_blocks(cache, &req.node).await?;
                continue;
            }
            let config = cache.config.clone().unwrap_or_default();
            let why = match self.claim_block(cache, &req.node, &pools, &config).await? {
                Claim::Claimed(cidr) => {
                    debug!(node = %req.node, block = %cidr, "allocating from newly claimed block");
                    continue;
                }
                Claim::PoolsFull => format!(
                    "every block of pool(s) {} is claimed and full",
                    names(&pools)
                ),
                Claim::MaxBlocks(n) => {
                    format!("node holds max_blocks_per_host ({n}) blocks, all full")
                }
            };
            if config.strict_affinity {
                return Err(IpamError::Exhausted {
                    node: req.node.clone(),
                    reason: format!(
                        "{why}; strict_affinity forbids borrowing from other nodes' blocks"
                    ),
                });
            }
            match self.borrowable_block(cache, &req.node, &pools).await? {
                Some(cidr) => match self.assign(cache, cidr, req, remaining, true).await? {
                    Assign::Done(mut new) => got.append(&mut new),
                    Assign::Retry => rounds.lost(what).await?,
                },
                None => {
                    return Err(IpamError::Exhausted {
                        node: req.node.clone(),
                        reason: format!("{why}, and no other node's block has a free address"),
                    })
                }
            }
        }
        Ok(())
    }

    /// Loads what an allocation for `node` needs and the cache lacks.
    pub(super) async fn warm_cache(&self, cache: &mut Cache, node: &str) -> Result<(), IpamError> {
        if cache.pools.is_none() {
            cache.pools = Some(cache::load_pools(self.store.as_ref()).await?);
        }
        if cache.config.is_none() {
            cache.config = Some(self.config().await?);
        }
        if !cache.affine.contains_key(node) {
            self.refresh_node_blocks(cache, node).await?;
        }
        Ok(())
    }

    /// One transaction: take up to `n` addresses of `cidr` for the handle.
    async fn assign(
        &self,
        cache: &mut Cache,
        cidr: IpNetwork,
        req: &AllocateRequest,
        n: usize,
        borrowed: bool,
    ) -> Result<Assign, IpamError> {
        let Some((block, block_rev)) = cache.blocks.get(&cidr).cloned() else {
            return Ok(Assign::Retry);
        };
        let Some((pool, pool_rev)) = cache.pool_of(&cidr).cloned() else {
            return Ok(Assign::Retry);
        };
        let (mut handle, handle_rev) = cache.handle(&req.handle);
        let mut updated = block.clone();
        let taken = updated.assign(n, &req.handle, &req.attributes);
        if taken.is_empty() {
            return Ok(Assign::Retry);
        }
        handle.add(&cidr, taken.len() as u32);
        let (block_key, handle_key, pool_key) = (
            keys::block(&cidr),
            keys::handle(&req.handle),
            keys::pool(&pool.name),
        );
        let txn = Txn {
            compare: vec![
                Compare::revision(&block_key, block_rev),
                Compare::revision(&handle_key, handle_rev),
                Compare::revision(&pool_key, pool_rev),
            ],
            success: vec![
                Op::put(&block_key, encode_json(&updated)),
                Op::put(&handle_key, encode_json(&handle)),
            ],
            failure: vec![
                Op::get(&block_key),
                Op::get(&handle_key),
                Op::get(&pool_key),
            ],
        };
        let resp = self.store.txn(txn).await?;
        if !resp.succeeded {
            debug!(block = %cidr, handle = %req.handle, "allocation raced; retrying with fresh records");
            cache.set_block(cidr, decode_block(resp.get(0))?);
            cache.set_handle(&req.handle, decode_handle(resp.get(1))?);
            cache.set_pool(&pool.name, decode_pool(resp.get(2))?);
            return Ok(Assign::Retry);
        }
        cache.blocks.insert(cidr, (updated, resp.revision));
        cache.set_handle(&req.handle, Some((handle, resp.revision)));
        let out = taken
            .into_iter()
            .map(|(ip, sequence)| Allocated {
                ip,
                block: cidr,
                sequence,
                borrowed,
            })
            .collect();
        Ok(Assign::Done(out))
    }

    /// Re-reads which blocks `node` holds, fetching blocks not yet cached.
    pub(super) async fn refresh_node_blocks(
        &self,
        cache: &mut Cache,
        node: &str,
    ) -> Result<(), IpamError> {
        let listed = self.store.list(&keys::affinities_of(node)).await?;
        let mut cidrs = Vec::new();
        for kv in &listed.kvs {
            let Some((_, cidr)) = keys::parse_affinity_key(&kv.key) else {
                continue;
            };
            let affinity: BlockAffinity = decode_json(kv)?;
            if affinity.state != AffinityState::PendingDeletion {
                cidrs.push(cidr);
            }
        }
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
            if let Some(b) = decode_block(kv.as_ref())? {
                cache.blocks.insert(*cidr, b);
            }
        }
        cidrs.retain(|c| {
            cache
                .blocks
                .get(c)
                .is_some_and(|(b, _)| b.affinity.as_deref() == Some(node))
        });
        cidrs.sort();
        cache.affine.insert(node.to_string(), cidrs);
        Ok(())
    }

    /// Claims an unclaimed block for `node`: pending affinity → create block → confirm.
    async fn claim_block(
        &self,
        cache: &mut Cache,
        node: &str,
        pools: &[IpPool],
        config: &IpamConfig,
    ) -> Result<Claim, IpamError> {
        let held = cache.affine.get(node).map_or(0, Vec::len);
        if config.max_blocks_per_host > 0 && held >= config.max_blocks_per_host as usize {
            return Ok(Claim::MaxBlocks(config.max_blocks_per_host));
        }
        let listed = self.store.list_keys(keys::BLOCKS).await?;
        let mut taken: HashSet<IpNetwork> = listed
            .kvs
            .iter()
            .filter_map(|kv| keys::key_part_to_cidr(keys::last_part(&kv.key)))
            .collect();
        for pool in pools {
            for _ in 0..MAX_ATTEMPTS {
                let Some(cidr) = unclaimed_block(pool, node, &taken) else {
                    break;
                };
                if self.claim(cache, node, cidr).await? {
                    info!(%node, block = %cidr, pool = %pool.name, "claimed block");
                    return Ok(Claim::Claimed(cidr));
                }
                taken.insert(cidr);
            }
        }
        Ok(Claim::PoolsFull)
    }

    /// Tries to claim `cidr`; false when another node got it first.
    async fn claim(
        &self,
        cache: &mut Cache,
        node: &str,
        cidr: IpNetwork,
    ) -> Result<bool, IpamError> {
        let affinity_key = keys::affinity(node, &cidr);
        let pending = encode_json(&BlockAffinity {
            state: AffinityState::Pending,
        });
        let affinity_rev = match self.store.create(&affinity_key, pending, 0).await {
            Ok(rev) => rev,
            // Left by an earlier attempt of ours that died: it is still ours to finish.
            Err(DatastoreError::AlreadyExists { .. }) => self
                .store
                .get(&affinity_key)
                .await?
                .map_or(0, |kv| kv.mod_revision),
            Err(e) => return Err(e.into()),
        };
        let block_key = keys::block(&cidr);
        let block = Block::new(cidr, Some(node));
        let txn = Txn {
            compare: vec![Compare::absent(&block_key)],
            success: vec![Op::put(&block_key, encode_json(&block))],
            failure: vec![Op::get(&block_key)],
        };
        let resp = self.store.txn(txn).await?;
        let (block, block_rev): (Block, Revision) = if resp.succeeded {
            (block, resp.revision)
        } else {
            match decode_block(resp.get(0))? {
                Some((existing, rev)) if existing.affinity.as_deref() == Some(node) => {
                    (existing, rev)
                }
                _ => {
                    // Someone else's block: withdraw our pending claim.
                    if let Err(e) = self.store.delete(&affinity_key, affinity_rev).await {
                        warn!(%node, block = %cidr, error = %e, "could not remove pending affinity");
                    }
                    return Ok(false);
                }
            }
        };
        self.confirm_affinity(&affinity_key, affinity_rev).await?;
        cache.blocks.insert(cidr, (block, block_rev));
        let held = cache.affine.entry(node.to_string()).or_default();
        if !held.contains(&cidr) {
            held.push(cidr);
            held.sort();
        }
        Ok(true)
    }

    /// Marks a claim confirmed. Another allocator of the same node may be confirming it too (or
    /// have done so): re-read and retry until it is confirmed, whoever wrote it.
    async fn confirm_affinity(&self, key: &str, mut revision: Revision) -> Result<(), IpamError> {
        let confirmed = encode_json(&BlockAffinity {
            state: AffinityState::Confirmed,
        });
        for attempt in 0..MAX_ATTEMPTS {
            super::contention_pause(attempt).await;
            let result = if revision == 0 {
                self.store.create(key, confirmed.clone(), 0).await
            } else {
                self.store.update(key, confirmed.clone(), revision).await
            };
            match result {
                Ok(_) => return Ok(()),
                Err(DatastoreError::Conflict { .. } | DatastoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            match self.store.get(key).await? {
                Some(kv)
                    if decode_json::<BlockAffinity>(&kv)?.state == AffinityState::Confirmed =>
                {
                    return Ok(())
                }
                Some(kv) => revision = kv.mod_revision,
                None => revision = 0,
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("confirming {key}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// A block of another node (or of none) in the candidate pools with a free address, chosen
    /// in an order seeded by the node's name so borrowers spread out.
    async fn borrowable_block(
        &self,
        cache: &mut Cache,
        node: &str,
        pools: &[IpPool],
    ) -> Result<Option<IpNetwork>, IpamError> {
        let blocks = cache::load_all_blocks(self.store.as_ref()).await?;
        let mut candidates = Vec::new();
        for (block, rev) in blocks {
            let in_pools = pools.iter().any(|p| p.cidr.contains(block.cidr.network()));
            if in_pools && block.affinity.as_deref() != Some(node) && block.free_count() > 0 {
                candidates.push(block.cidr);
            }
            cache.set_block(block.cidr, Some((block, rev)));
        }
        let node_seed = node.to_string();
        candidates.sort_by_key(|c| stable_hash(&[&node_seed, &c.to_string()]));
        Ok(candidates.first().copied())
    }
}

/// Enabled pools of the request's family (and names, when given), in name order.
pub(super) fn candidate_pools(
    cache: &Cache,
    req: &AllocateRequest,
) -> Result<Vec<IpPool>, IpamError> {
    let all = cache.pools.as_deref().unwrap_or_default();
    let pools: Vec<IpPool> = all
        .iter()
        .map(|(p, _)| p)
        .filter(|p| !p.disabled && Family::of(&p.cidr) == req.family)
        .filter(|p| req.pools.is_empty() || req.pools.contains(&p.name))
        .cloned()
        .collect();
    if pools.is_empty() {
        let detail = if req.pools.is_empty() {
            String::new()
        } else {
            format!(" among {}", req.pools.join(", "))
        };
        return Err(IpamError::NoPools {
            family: req.family.name(),
            detail,
        });
    }
    Ok(pools)
}

fn affine_block_with_room(cache: &Cache, node: &str, pools: &[IpPool]) -> Option<IpNetwork> {
    cache.affine.get(node)?.iter().copied().find(|cidr| {
        pools.iter().any(|p| p.cidr.contains(cidr.network()))
            && cache
                .blocks
                .get(cidr)
                .is_some_and(|(b, _)| b.free_count() > 0)
    })
}

/// The first block of `pool` not in `taken`, scanning from a start point derived from the node
/// name so concurrent claimers rarely collide.
fn unclaimed_block(pool: &IpPool, node: &str, taken: &HashSet<IpNetwork>) -> Option<IpNetwork> {
    let count = pool.block_count();
    let in_pool = taken
        .iter()
        .filter(|c| pool.cidr.contains(c.network()))
        .count() as u128;
    let start = u128::from(stable_hash(&[node, &pool.name])) % count;
    (0..count.min(in_pool + 1))
        .filter_map(|i| pool.nth_block((start + i) % count))
        .find(|cidr| !taken.contains(cidr))
}

fn names(pools: &[IpPool]) -> String {
    pools
        .iter()
        .map(|p| format!("{} ({})", p.name, p.cidr))
        .collect::<Vec<_>>()
        .join(", ")
}
