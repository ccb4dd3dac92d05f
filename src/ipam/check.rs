//! `ipam check`: reads every pool, block, affinity and handle and reports each inconsistency.
//!
//! The records are read with four lists, not at one revision: run it on a quiet cluster, or run
//! it twice — a finding caused by an allocation in flight disappears on the second run.

use super::cache::{load_all_blocks, load_pools};
use super::{Ipam, IpamError};
use crate::datastore::decode_json;
use crate::model::{keys, AffinityState, BlockAffinity, Handle};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// The kinds of inconsistency `check` finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// One address allocated to two handles (overlapping blocks).
    AddressInTwoHandles,
    /// Two blocks share addresses.
    BlocksOverlap,
    /// A block's free and allocated lists do not partition it.
    BlockCorrupt,
    /// A handle record names a block that does not hold its addresses.
    HandleDangling,
    /// A handle's recorded count differs from what the block holds.
    HandleCountMismatch,
    /// A block holds addresses for a handle that has no record of them.
    AllocationWithoutHandle,
    /// More than one node claims the block, or the block names another node than the claim.
    BlockClaimedTwice,
    /// A confirmed affinity with no block behind it.
    AffinityWithoutBlock,
    /// A block affine to a node that has no affinity record for it.
    BlockWithoutAffinity,
    /// A block outside every pool.
    BlockOutsidePools,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// What `check` read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub pools: usize,
    pub blocks: usize,
    pub affinities: usize,
    pub handles: usize,
    pub allocated: usize,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    fn add(&mut self, kind: FindingKind, message: String) {
        self.findings.push(Finding { kind, message });
    }
}

impl Ipam {
    /// Cross-checks every IPAM record (see [`FindingKind`]).
    pub async fn check(&self) -> Result<CheckReport, IpamError> {
        let store = self.store.as_ref();
        let pools = load_pools(store).await?;
        let blocks = load_all_blocks(store).await?;
        let affinity_kvs = store.list(keys::AFFINITIES).await?.kvs;
        let handle_kvs = store.list(keys::HANDLES).await?.kvs;
        let mut report = CheckReport {
            pools: pools.len(),
            blocks: blocks.len(),
            affinities: affinity_kvs.len(),
            handles: handle_kvs.len(),
            ..CheckReport::default()
        };

        // Blocks on their own, and every address → handles.
        let mut holders: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        let mut held: BTreeMap<(String, String), u32> = BTreeMap::new(); // (handle, block) → count
        for (block, _) in &blocks {
            if let Err(why) = block.check_partition() {
                report.add(
                    FindingKind::BlockCorrupt,
                    format!("block {}: {why}", block.cidr),
                );
            }
            if !pools
                .iter()
                .any(|(p, _)| p.cidr.contains(block.cidr.network()))
            {
                report.add(
                    FindingKind::BlockOutsidePools,
                    format!("block {} is outside every pool", block.cidr),
                );
            }
            for (ordinal, allocation) in &block.allocations {
                report.allocated += 1;
                if let Some(ip) = block.ip_at(*ordinal) {
                    holders
                        .entry(ip)
                        .or_default()
                        .insert(allocation.handle.clone());
                }
                *held
                    .entry((allocation.handle.clone(), block.cidr.to_string()))
                    .or_default() += 1;
            }
        }
        for (i, (a, _)) in blocks.iter().enumerate() {
            for (b, _) in &blocks[i + 1..] {
                if crate::model::pool::networks_overlap(&a.cidr, &b.cidr) {
                    report.add(
                        FindingKind::BlocksOverlap,
                        format!("blocks {} and {} overlap", a.cidr, b.cidr),
                    );
                }
            }
        }
        for (ip, handles) in &holders {
            if handles.len() > 1 {
                let list: Vec<&str> = handles.iter().map(String::as_str).collect();
                report.add(
                    FindingKind::AddressInTwoHandles,
                    format!("{ip} is held by {}", list.join(", ")),
                );
            }
        }

        // Handles against blocks.
        let mut recorded: BTreeMap<(String, String), u32> = BTreeMap::new();
        for kv in &handle_kvs {
            let handle: Handle = decode_json(kv)?;
            for (cidr, &count) in &handle.blocks {
                recorded.insert((handle.handle.clone(), cidr.clone()), count);
            }
            if handle.blocks.is_empty() {
                report.add(
                    FindingKind::HandleDangling,
                    format!("handle {} holds no block", handle.handle),
                );
            }
        }
        for ((handle, cidr), &count) in &recorded {
            match held.get(&(handle.clone(), cidr.clone())) {
                None => report.add(
                    FindingKind::HandleDangling,
                    format!("handle {handle} records {count} address(es) in block {cidr}, which holds none for it"),
                ),
                Some(&actual) if actual != count => report.add(
                    FindingKind::HandleCountMismatch,
                    format!("handle {handle} records {count} address(es) in block {cidr}; the block holds {actual}"),
                ),
                Some(_) => {}
            }
        }
        for ((handle, cidr), &actual) in &held {
            if !recorded.contains_key(&(handle.clone(), cidr.clone())) {
                report.add(
                    FindingKind::AllocationWithoutHandle,
                    format!("block {cidr} holds {actual} address(es) for handle {handle}, which has no record of them"),
                );
            }
        }

        // Affinities against blocks.
        let mut claims: BTreeMap<String, Vec<(String, AffinityState)>> = BTreeMap::new();
        for kv in &affinity_kvs {
            let Some((node, cidr)) = keys::parse_affinity_key(&kv.key) else {
                report.add(
                    FindingKind::BlockClaimedTwice,
                    format!("unreadable affinity key {}", kv.key),
                );
                continue;
            };
            let affinity: BlockAffinity = decode_json(kv)?;
            claims
                .entry(cidr.to_string())
                .or_default()
                .push((node, affinity.state));
        }
        let by_cidr: BTreeMap<String, &crate::model::Block> = blocks
            .iter()
            .map(|(b, _)| (b.cidr.to_string(), b))
            .collect();
        for (cidr, nodes) in &claims {
            let confirmed: Vec<&str> = nodes
                .iter()
                .filter(|(_, s)| *s == AffinityState::Confirmed)
                .map(|(n, _)| n.as_str())
                .collect();
            if confirmed.len() > 1 {
                report.add(
                    FindingKind::BlockClaimedTwice,
                    format!("block {cidr} is claimed by {}", confirmed.join(", ")),
                );
            }
            match by_cidr.get(cidr) {
                None => {
                    for node in &confirmed {
                        report.add(
                            FindingKind::AffinityWithoutBlock,
                            format!("node {node} claims block {cidr}, which does not exist"),
                        );
                    }
                }
                Some(block) => {
                    for node in &confirmed {
                        if block.affinity.as_deref() != Some(*node) {
                            report.add(
                                FindingKind::BlockClaimedTwice,
                                format!(
                                    "node {node} claims block {cidr}, but the block is affine to {}",
                                    block.affinity.as_deref().unwrap_or("no node")
                                ),
                            );
                        }
                    }
                }
            }
        }
        for (block, _) in &blocks {
            if let Some(node) = &block.affinity {
                let claimed = claims
                    .get(&block.cidr.to_string())
                    .is_some_and(|nodes| nodes.iter().any(|(n, _)| n == node));
                if !claimed {
                    report.add(
                        FindingKind::BlockWithoutAffinity,
                        format!(
                            "block {} is affine to {node}, which has no affinity record for it",
                            block.cidr
                        ),
                    );
                }
            }
        }
        report
            .findings
            .sort_by(|a, b| (a.kind, &a.message).cmp(&(b.kind, &b.message)));
        Ok(report)
    }
}
