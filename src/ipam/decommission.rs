//! Node decommission (`routectl node delete NAME`, calicoctl's `delete node`): everything the
//! cluster holds for a node that is gone, removed in steps a crash can resume.
//!
//! ```text
//!  liveness (agent_alive; --force skips) ──> Marked: decommission/<node> written (with the Node)
//!    ──> PeersRemoved: BGPPeers with node == NAME deleted
//!    ──> NodeRemoved: nodes/<node> deleted; every other agent drops its mesh session and
//!                     withdraws the node's routes
//!    ──> AddressesReleased: every handle holding an address of the node (its `node` attribute,
//!                     or unattributed in its blocks) released whole
//!    ──> BlocksReleased: its empty blocks and claims deleted; a block still holding other nodes'
//!                     (borrowed) addresses loses its affinity and stays; its CNI GC records
//!                     (`ipam/cni-gc/<node>/`) deleted
//!    ──> Done: the marker is deleted
//! ```
//! Every step is idempotent and reads the datastore afresh, so running the command again after
//! a crash (or a Ctrl-C) at any point finishes the job; the marker tells a second run that the
//! node's record may already be gone and that the liveness check was passed.

use super::{Ipam, IpamError};
use crate::datastore::{decode_json, encode_json, Compare, Datastore, Op, Txn};
use crate::model::{keys, BgpConfiguration, BgpPeer, Block, Node};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;
use thiserror::Error;
use tracing::info;

/// Where decommission markers live (`decommission/<node>`).
pub const MARKERS: &str = "decommission/";

/// The marker of `node`.
pub fn marker_key(node: &str) -> String {
    format!("{MARKERS}{node}")
}

/// The steps, in order; tests stop after each to check that a second run resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Step {
    Marked,
    PeersRemoved,
    NodeRemoved,
    AddressesReleased,
    BlocksReleased,
    Done,
}

/// The marker's content: the Node record as it was when the decommission began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    node: String,
    #[serde(default)]
    record: Option<Node>,
}

/// What a decommission removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decommission {
    pub node: String,
    /// A marker from an earlier, interrupted run was found and the run finished its work.
    pub resumed: bool,
    pub peers_removed: Vec<String>,
    pub node_record_removed: bool,
    pub handles_released: Vec<String>,
    pub addresses_released: usize,
    pub blocks_released: Vec<IpNetwork>,
    /// Blocks that still hold other nodes' addresses: their affinity is gone, the block stays.
    pub blocks_unaffined: Vec<IpNetwork>,
}

#[derive(Debug, Error)]
pub enum DecommissionError {
    #[error(
        "node {node} is alive ({evidence}); stop its agent first, or pass --force to remove it \
         anyway (its agent would keep using addresses that are then handed out again)"
    )]
    Alive { node: String, evidence: String },
    #[error("node {node} not found (no Node record and no interrupted decommission)")]
    NotFound { node: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

impl From<crate::datastore::DatastoreError> for DecommissionError {
    fn from(e: crate::datastore::DatastoreError) -> Self {
        DecommissionError::Ipam(e.into())
    }
}

/// How long the liveness probe waits for a node's agent to answer.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `node`'s agent is alive, with the evidence. The one place that decides it: today the
/// agent's BGP listener answering on the node address (every agent running BGP listens on the
/// cluster's listen port); an agent started with `--no-bgp` counts as not alive. Switch this to
/// the agent's leased status record once agents write one.
pub async fn agent_alive(
    store: &dyn Datastore,
    node: &Node,
) -> Result<Option<String>, DecommissionError> {
    let port = crate::datastore::get_json::<BgpConfiguration>(store, keys::BGP_CONFIG)
        .await?
        .map_or_else(
            || BgpConfiguration::default().listen_port,
            |(c, _)| c.listen_port,
        );
    let addresses = [node.ipv4_address, node.ipv6_address];
    for address in addresses.into_iter().flatten() {
        let target = std::net::SocketAddr::new(address.ip(), port);
        let connect = tokio::net::TcpStream::connect(target);
        if let Ok(Ok(_)) = tokio::time::timeout(LIVENESS_TIMEOUT, connect).await {
            return Ok(Some(format!("its agent answers on {target} (BGP)")));
        }
    }
    Ok(None)
}

impl Ipam {
    /// Decommissions `node` (see the module doc). Refuses while its agent is alive unless
    /// `force`. `stop_after` ends the run after that step, as a crash there would (tests).
    pub async fn decommission_node(
        &self,
        node: &str,
        force: bool,
        stop_after: Option<Step>,
    ) -> Result<Decommission, DecommissionError> {
        crate::model::validate_name(node).map_err(IpamError::from)?;
        let store = self.store.as_ref();
        let marker = crate::datastore::get_json::<Marker>(store, &marker_key(node)).await?;
        let record = crate::datastore::get_json::<Node>(store, &keys::node(node)).await?;
        let mut done = Decommission {
            node: node.to_string(),
            resumed: marker.is_some(),
            ..Decommission::default()
        };
        if marker.is_none() {
            let Some((record, _)) = &record else {
                return Err(DecommissionError::NotFound {
                    node: node.to_string(),
                });
            };
            if !force {
                if let Some(evidence) = agent_alive(store, record).await? {
                    return Err(DecommissionError::Alive {
                        node: node.to_string(),
                        evidence,
                    });
                }
            }
            let marker = Marker {
                node: node.to_string(),
                record: Some(record.clone()),
            };
            // Absent → create; a racing second run created it first: fine, go on.
            let _ = store
                .create(&marker_key(node), encode_json(&marker), 0)
                .await;
        }
        info!(node, resumed = done.resumed, "decommissioning node");
        let stop = |step: Step| stop_after.is_some_and(|s| s <= step);
        if stop(Step::Marked) {
            return Ok(done);
        }
        done.peers_removed = remove_node_peers(store, node).await?;
        if stop(Step::PeersRemoved) {
            return Ok(done);
        }
        if let Some(kv) = store.get(&keys::node(node)).await? {
            store.delete(&kv.key, kv.mod_revision).await?;
            done.node_record_removed = true;
        }
        if stop(Step::NodeRemoved) {
            return Ok(done);
        }
        self.release_node_addresses(node, &mut done).await?;
        if stop(Step::AddressesReleased) {
            return Ok(done);
        }
        self.release_node_blocks(node, &mut done).await?;
        if stop(Step::BlocksReleased) {
            return Ok(done);
        }
        if let Some(kv) = store.get(&marker_key(node)).await? {
            store.delete(&kv.key, kv.mod_revision).await?;
        }
        info!(
            node,
            addresses = done.addresses_released,
            "node decommissioned"
        );
        Ok(done)
    }

    /// Releases, whole, every handle that holds an address of `node`.
    async fn release_node_addresses(
        &self,
        node: &str,
        done: &mut Decommission,
    ) -> Result<(), DecommissionError> {
        let blocks = super::cache::load_all_blocks(self.store.as_ref()).await?;
        let handles: BTreeSet<String> = blocks
            .iter()
            .flat_map(|(b, _)| b.allocations.values().map(move |a| (b, a)))
            .filter(|(b, a)| match a.attributes.get("node") {
                Some(owner) => owner == node,
                None => b.affinity.as_deref() == Some(node),
            })
            .map(|(_, a)| a.handle.clone())
            .collect();
        for handle in handles {
            let freed = self.release_handle(&handle).await?;
            done.addresses_released += freed.len();
            done.handles_released.push(handle);
        }
        Ok(())
    }

    /// Deletes the node's empty blocks and claims; a block still holding others' addresses
    /// keeps them and loses its affinity.
    pub(super) async fn release_node_blocks(
        &self,
        node: &str,
        done: &mut Decommission,
    ) -> Result<(), IpamError> {
        done.blocks_released = self.release_empty_blocks(Some(node)).await?;
        let store = self.store.as_ref();
        for kv in store.list(&keys::affinities_of(node)).await?.kvs {
            let Some((_, cidr)) = keys::parse_affinity_key(&kv.key) else {
                continue;
            };
            let block_key = keys::block(&cidr);
            let mut txn = Txn {
                compare: vec![Compare::revision(&kv.key, kv.mod_revision)],
                success: vec![Op::delete(&kv.key)],
                failure: vec![],
            };
            if let Some(block_kv) = store.get(&block_key).await? {
                let mut block: Block = decode_json(&block_kv)?;
                if block.affinity.as_deref() == Some(node) {
                    block.affinity = None;
                    txn.compare
                        .push(Compare::revision(&block_key, block_kv.mod_revision));
                    txn.success.push(Op::put(&block_key, encode_json(&block)));
                }
            }
            if store.txn(txn).await?.succeeded {
                done.blocks_unaffined.push(cidr);
            }
        }
        // Blocks that name the node without an affinity record behind them.
        for (mut block, revision) in super::cache::load_all_blocks(store).await? {
            if block.affinity.as_deref() != Some(node) {
                continue;
            }
            let block_key = keys::block(&block.cidr);
            let op = if block.is_empty() {
                Op::delete(&block_key)
            } else {
                block.affinity = None;
                Op::put(&block_key, encode_json(&block))
            };
            let txn = Txn {
                compare: vec![Compare::revision(&block_key, revision)],
                success: vec![op],
                failure: vec![],
            };
            if store.txn(txn).await?.succeeded {
                done.blocks_unaffined.push(block.cidr);
            }
        }
        self.forget_cni_gc(node).await?;
        self.invalidate_cache().await;
        Ok(())
    }
}

/// Deletes the BGPPeers that only `node` peers with; returns their names.
async fn remove_node_peers(
    store: &dyn Datastore,
    node: &str,
) -> Result<Vec<String>, DecommissionError> {
    let mut removed = Vec::new();
    for kv in store.list(keys::PEERS).await?.kvs {
        let peer: BgpPeer = decode_json(&kv)?;
        if peer.node.as_deref() == Some(node) {
            store.delete(&kv.key, kv.mod_revision).await?;
            removed.push(peer.name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[path = "decommission_tests.rs"]
mod tests;
