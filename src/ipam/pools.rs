//! Pool lifecycle: create (validated against every other pool), update, delete (refused while
//! addresses are allocated from the pool unless forced; a forced delete removes the pool's
//! blocks, their affinities and the handles' references to them).

use super::cache::{load_all_blocks, load_pools};
use super::{Ipam, IpamError, MAX_ATTEMPTS};
use crate::datastore::{decode_json, encode_json, Compare, DatastoreError, Op, Txn};
use crate::model::{keys, pool::validate_pool_set, Handle, IpPool};
use tracing::info;

/// What deleting a pool removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolDeletion {
    pub pool: String,
    pub blocks_removed: usize,
    pub addresses_released: usize,
}

impl Ipam {
    /// Every pool, sorted by name.
    pub async fn list_pools(&self) -> Result<Vec<IpPool>, IpamError> {
        Ok(load_pools(self.store.as_ref())
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// Creates a pool after validating it against all existing pools.
    pub async fn create_pool(&self, pool: &IpPool) -> Result<(), IpamError> {
        pool.validate()?;
        let existing = load_pools(self.store.as_ref()).await?;
        if existing.iter().any(|(p, _)| p.name == pool.name) {
            return Err(IpamError::PoolExists {
                pool: pool.name.clone(),
            });
        }
        let mut all: Vec<IpPool> = existing.iter().map(|(p, _)| p.clone()).collect();
        all.push(pool.clone());
        validate_pool_set(&all)?;
        // The existing pools must be unchanged when ours lands (a pool renamed or resized in
        // between would otherwise escape the overlap check).
        let mut compare: Vec<Compare> = existing
            .iter()
            .map(|(p, rev)| Compare::revision(keys::pool(&p.name), *rev))
            .collect();
        compare.push(Compare::absent(keys::pool(&pool.name)));
        let txn = Txn {
            compare,
            success: vec![Op::put(keys::pool(&pool.name), encode_json(pool))],
            failure: vec![],
        };
        if !self.store.txn(txn).await?.succeeded {
            return Err(IpamError::TooManyRetries {
                what: format!(
                    "create pool {} (pools changed concurrently; run it again)",
                    pool.name
                ),
                attempts: 1,
            });
        }
        self.cache.lock().await.pools = None;
        info!(pool = %pool.name, cidr = %pool.cidr, "pool created");
        Ok(())
    }

    /// Applies `change` to a pool; the CIDR and block size cannot change.
    pub async fn update_pool(
        &self,
        name: &str,
        change: impl Fn(&mut IpPool),
    ) -> Result<IpPool, IpamError> {
        for attempt in 0..MAX_ATTEMPTS {
            super::contention_pause(attempt).await;
            let Some(kv) = self.store.get(&keys::pool(name)).await? else {
                return Err(IpamError::PoolNotFound {
                    pool: name.to_string(),
                });
            };
            let old: IpPool = decode_json(&kv)?;
            let mut pool = old.clone();
            change(&mut pool);
            pool.name = old.name.clone();
            pool.cidr = old.cidr;
            pool.block_size = old.block_size;
            pool.validate()?;
            match self
                .store
                .update(&kv.key, encode_json(&pool), kv.mod_revision)
                .await
            {
                Ok(_) => {
                    self.cache.lock().await.pools = None;
                    return Ok(pool);
                }
                Err(DatastoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("update of pool {name}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Deletes a pool and its blocks. Refused while addresses are allocated, unless `force`.
    pub async fn delete_pool(&self, name: &str, force: bool) -> Result<PoolDeletion, IpamError> {
        let Some(kv) = self.store.get(&keys::pool(name)).await? else {
            return Err(IpamError::PoolNotFound {
                pool: name.to_string(),
            });
        };
        let pool: IpPool = decode_json(&kv)?;
        let blocks: Vec<_> = load_all_blocks(self.store.as_ref())
            .await?
            .into_iter()
            .filter(|(b, _)| pool.cidr.contains(b.cidr.network()))
            .collect();
        let addresses: usize = blocks.iter().map(|(b, _)| b.allocations.len()).sum();
        if addresses > 0 && !force {
            let used = blocks.iter().filter(|(b, _)| !b.is_empty()).count();
            return Err(IpamError::PoolInUse {
                pool: name.to_string(),
                addresses,
                blocks: used,
            });
        }
        // The pool goes first: allocations compare the pool's revision, so none lands after.
        self.store.delete(&kv.key, kv.mod_revision).await?;
        self.cache.lock().await.pools = None;
        let affinities = self.store.list(keys::AFFINITIES).await?;
        for (block, _) in &blocks {
            let mut txn = Txn {
                compare: vec![],
                success: vec![Op::delete(keys::block(&block.cidr))],
                failure: vec![],
            };
            for a in &affinities.kvs {
                if keys::parse_affinity_key(&a.key).is_some_and(|(_, c)| c == block.cidr) {
                    txn.success.push(Op::delete(&a.key));
                }
            }
            self.store.txn(txn).await?;
            for handle_id in block
                .allocations
                .values()
                .map(|a| a.handle.clone())
                .collect::<std::collections::BTreeSet<_>>()
            {
                self.drop_block_from_handle(&handle_id, &block.cidr.to_string())
                    .await?;
            }
        }
        self.invalidate_cache().await;
        info!(pool = %name, blocks = blocks.len(), addresses, "pool deleted");
        Ok(PoolDeletion {
            pool: name.to_string(),
            blocks_removed: blocks.len(),
            addresses_released: addresses,
        })
    }

    async fn drop_block_from_handle(&self, id: &str, cidr: &str) -> Result<(), IpamError> {
        let key = keys::handle(id);
        for attempt in 0..MAX_ATTEMPTS {
            super::contention_pause(attempt).await;
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(());
            };
            let mut handle: Handle = decode_json(&kv)?;
            handle.blocks.remove(cidr);
            let op = if handle.blocks.is_empty() {
                Op::delete(&key)
            } else {
                Op::put(&key, encode_json(&handle))
            };
            let txn = Txn {
                compare: vec![Compare::revision(&key, kv.mod_revision)],
                success: vec![op],
                failure: vec![],
            };
            if self.store.txn(txn).await?.succeeded {
                return Ok(());
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("update of handle {id}"),
            attempts: MAX_ATTEMPTS,
        })
    }
}
