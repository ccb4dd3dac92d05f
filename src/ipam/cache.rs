//! What one allocator remembers between calls: pools, blocks, node affinities, handles, each
//! with the `mod_revision` it was read at. Stale entries are harmless: every write compares the
//! revision, and a failed compare returns the fresh records, which replace the cached ones.

use super::IpamError;
use crate::datastore::{decode_json, Datastore, KeyValue, Op, Revision, Txn};
use crate::model::{keys, Block, Handle, IpPool, IpamConfig};
use ipnetwork::IpNetwork;
use std::collections::HashMap;

/// Cached handles are dropped wholesale beyond this many (a node holds far fewer).
const MAX_CACHED_HANDLES: usize = 10_000;
/// Gets per batched transaction (etcd's default limit is 128 operations).
const GET_BATCH: usize = 64;

#[derive(Default)]
pub(crate) struct Cache {
    pub pools: Option<Vec<(IpPool, Revision)>>,
    pub config: Option<IpamConfig>,
    pub blocks: HashMap<IpNetwork, (Block, Revision)>,
    /// node → blocks confirmed affine to it.
    pub affine: HashMap<String, Vec<IpNetwork>>,
    pub handles: HashMap<String, (Handle, Revision)>,
}

impl Cache {
    pub fn set_handle(&mut self, id: &str, handle: Option<(Handle, Revision)>) {
        if self.handles.len() >= MAX_CACHED_HANDLES {
            self.handles.clear();
        }
        match handle {
            Some(h) => self.handles.insert(id.to_string(), h),
            None => self.handles.insert(id.to_string(), (Handle::new(id), 0)),
        };
    }

    pub fn handle(&self, id: &str) -> (Handle, Revision) {
        self.handles
            .get(id)
            .cloned()
            .unwrap_or_else(|| (Handle::new(id), 0))
    }

    /// Stores a block read back from the store (`None`: it is gone).
    pub fn set_block(&mut self, cidr: IpNetwork, block: Option<(Block, Revision)>) {
        match block {
            Some(b) => {
                let affinity = b.0.affinity.clone();
                self.blocks.insert(cidr, b);
                for (node, cidrs) in self.affine.iter_mut() {
                    if affinity.as_deref() != Some(node.as_str()) {
                        cidrs.retain(|c| *c != cidr);
                    }
                }
            }
            None => {
                self.blocks.remove(&cidr);
                for cidrs in self.affine.values_mut() {
                    cidrs.retain(|c| *c != cidr);
                }
            }
        }
    }

    pub fn set_pool(&mut self, name: &str, pool: Option<(IpPool, Revision)>) {
        if let Some(pools) = &mut self.pools {
            pools.retain(|(p, _)| p.name != name);
            if let Some(p) = pool {
                pools.push(p);
                pools.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            }
        }
    }

    pub fn pool_of(&self, cidr: &IpNetwork) -> Option<&(IpPool, Revision)> {
        self.pools
            .as_ref()?
            .iter()
            .find(|(p, _)| p.cidr.contains(cidr.network()))
    }
}

/// Every pool with its revision, sorted by name.
pub(crate) async fn load_pools(
    store: &dyn Datastore,
) -> Result<Vec<(IpPool, Revision)>, IpamError> {
    let listed = store.list(keys::POOLS).await?;
    let mut pools = Vec::with_capacity(listed.kvs.len());
    for kv in &listed.kvs {
        pools.push((decode_json::<IpPool>(kv)?, kv.mod_revision));
    }
    pools.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(pools)
}

/// Every block with its revision.
pub(crate) async fn load_all_blocks(
    store: &dyn Datastore,
) -> Result<Vec<(Block, Revision)>, IpamError> {
    let listed = store.list(keys::BLOCKS).await?;
    listed
        .kvs
        .iter()
        .map(|kv| Ok((decode_json::<Block>(kv)?, kv.mod_revision)))
        .collect()
}

/// Reads many keys in as few round trips as possible (batched transactions of gets).
pub(crate) async fn get_many(
    store: &dyn Datastore,
    keys: &[String],
) -> Result<Vec<Option<KeyValue>>, IpamError> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(GET_BATCH) {
        let txn = Txn {
            compare: vec![],
            success: chunk.iter().map(Op::get).collect(),
            failure: vec![],
        };
        let resp = store.txn(txn).await?;
        for i in 0..chunk.len() {
            out.push(resp.get(i).cloned());
        }
    }
    Ok(out)
}

/// Decodes an optional block record.
pub(crate) fn decode_block(kv: Option<&KeyValue>) -> Result<Option<(Block, Revision)>, IpamError> {
    kv.map(|kv| Ok((decode_json::<Block>(kv)?, kv.mod_revision)))
        .transpose()
}

pub(crate) fn decode_handle(
    kv: Option<&KeyValue>,
) -> Result<Option<(Handle, Revision)>, IpamError> {
    kv.map(|kv| Ok((decode_json::<Handle>(kv)?, kv.mod_revision)))
        .transpose()
}

pub(crate) fn decode_pool(kv: Option<&KeyValue>) -> Result<Option<(IpPool, Revision)>, IpamError> {
    kv.map(|kv| Ok((decode_json::<IpPool>(kv)?, kv.mod_revision)))
        .transpose()
}
