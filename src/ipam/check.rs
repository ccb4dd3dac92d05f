//! `ipam check`: reads every pool, block, affinity and handle and reports each inconsistency.
//!
//! The records are read with four lists, not at one revision: run it on a quiet cluster, or run
//! it twice — a finding caused by an allocation in flight disappears on the second run.

use super::cache::{load_all_blocks, load_pools};
use super::{Ipam, IpamError};
use crate::datastore::{decode_json, KeyValue, Revision};
use crate::model::{keys, AffinityState, Block, BlockAffinity, Handle, IpPool};
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
    /// An address held for a node that has no Node record (a leak; `ipam repair`).
    AllocationOfMissingNode,
    /// A block claim of a node that has no Node record (a leak; `ipam repair`).
    AffinityOfMissingNode,
    /// A handle of a live node that no container there holds: the node's last CNI GC list
    /// (`cni.dev/valid-attachments`) did not name it (a leak; `ipam repair`).
    HandleWithoutContainer,
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
    /// Empty blocks still affine to a live node: not inconsistent, but `ipam repair` gives them
    /// back when they stay empty across its grace period.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reclaimable_blocks: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    fn add(&mut self, kind: FindingKind, message: String) {
        self.findings.push(Finding { kind, message });
    }
}

/// (handle, block CIDR) → how many addresses.
type CountsByHandleBlock = BTreeMap<(String, String), u32>;
/// block CIDR → the nodes whose affinity records claim it, with the claim's state.
type ClaimsByBlock = BTreeMap<String, Vec<(String, AffinityState)>>;

/// Every IPAM record, as `check` read it.
struct Records {
    pools: Vec<(IpPool, Revision)>,
    blocks: Vec<(Block, Revision)>,
    affinity_kvs: Vec<KeyValue>,
    handle_kvs: Vec<KeyValue>,
}

impl Ipam {
    /// Cross-checks every IPAM record (see [`FindingKind`]).
    pub async fn check(&self) -> Result<CheckReport, IpamError> {
        let records = self.read_records().await?;
        let mut report = CheckReport {
            pools: records.pools.len(),
            blocks: records.blocks.len(),
            affinities: records.affinity_kvs.len(),
            handles: records.handle_kvs.len(),
            ..CheckReport::default()
        };
        let held = check_blocks(&records, &mut report);
        check_handles(&records.handle_kvs, &held, &mut report)?;
        check_affinities(&records, &mut report)?;
        let leaks = self.leak_scan().await?;
        report.findings.extend(leaks.findings());
        report.reclaimable_blocks = leaks.empty_blocks.into_iter().map(|(c, _, _)| c).collect();
        report
            .findings
            .sort_by(|a, b| (a.kind, &a.message).cmp(&(b.kind, &b.message)));
        Ok(report)
    }

    /// Lists pools, blocks, affinities and handles (four lists, not one revision).
    async fn read_records(&self) -> Result<Records, IpamError> {
        let store = self.store.as_ref();
        Ok(Records {
            pools: load_pools(store).await?,
            blocks: load_all_blocks(store).await?,
            affinity_kvs: store.list(keys::AFFINITIES).await?.kvs,
            handle_kvs: store.list(keys::HANDLES).await?.kvs,
        })
    }
}

/// Blocks on their own and against each other; returns what each handle holds in each block.
fn check_blocks(records: &Records, report: &mut CheckReport) -> CountsByHandleBlock {
    let mut holders: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    let mut held = CountsByHandleBlock::new();
    for (block, _) in &records.blocks {
        check_block(block, &records.pools, report);
        tally_allocations(block, &mut holders, &mut held, report);
    }
    check_block_overlaps(&records.blocks, report);
    check_address_holders(&holders, report);
    held
}

/// A block's free/allocated partition, and that some pool contains it.
fn check_block(block: &Block, pools: &[(IpPool, Revision)], report: &mut CheckReport) {
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
}

/// Counts the block's allocations: each address → its handles, (handle, block) → addresses.
fn tally_allocations(
    block: &Block,
    holders: &mut BTreeMap<IpAddr, BTreeSet<String>>,
    held: &mut CountsByHandleBlock,
    report: &mut CheckReport,
) {
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

/// Every pair of blocks that share addresses.
fn check_block_overlaps(blocks: &[(Block, Revision)], report: &mut CheckReport) {
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
}

/// Every address allocated to more than one handle.
fn check_address_holders(holders: &BTreeMap<IpAddr, BTreeSet<String>>, report: &mut CheckReport) {
    for (ip, handles) in holders {
        if handles.len() > 1 {
            let list: Vec<&str> = handles.iter().map(String::as_str).collect();
            report.add(
                FindingKind::AddressInTwoHandles,
                format!("{ip} is held by {}", list.join(", ")),
            );
        }
    }
}

/// Handle records against what the blocks hold for them, both ways.
fn check_handles(
    handle_kvs: &[KeyValue],
    held: &CountsByHandleBlock,
    report: &mut CheckReport,
) -> Result<(), IpamError> {
    let handles = handle_kvs
        .iter()
        .map(decode_json::<Handle>)
        .collect::<Result<Vec<_>, _>>()?;
    let recorded = recorded_counts(&handles, report);
    check_recorded_counts(&recorded, held, report);
    check_unrecorded_allocations(&recorded, held, report);
    Ok(())
}

/// What each handle record says it holds in each block; a handle holding no block is a finding.
fn recorded_counts(handles: &[Handle], report: &mut CheckReport) -> CountsByHandleBlock {
    let mut recorded = CountsByHandleBlock::new();
    for handle in handles {
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
    recorded
}

/// Each handle's recorded count against what its block holds for it.
fn check_recorded_counts(
    recorded: &CountsByHandleBlock,
    held: &CountsByHandleBlock,
    report: &mut CheckReport,
) {
    for ((handle, cidr), &count) in recorded {
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
}

/// Addresses a block holds for a handle whose record does not name that block.
fn check_unrecorded_allocations(
    recorded: &CountsByHandleBlock,
    held: &CountsByHandleBlock,
    report: &mut CheckReport,
) {
    for ((handle, cidr), &actual) in held {
        if !recorded.contains_key(&(handle.clone(), cidr.clone())) {
            report.add(
                FindingKind::AllocationWithoutHandle,
                format!("block {cidr} holds {actual} address(es) for handle {handle}, which has no record of them"),
            );
        }
    }
}

/// Affinity records against blocks, both ways.
fn check_affinities(records: &Records, report: &mut CheckReport) -> Result<(), IpamError> {
    let claims = read_claims(&records.affinity_kvs, report)?;
    let by_cidr: BTreeMap<String, &Block> = records
        .blocks
        .iter()
        .map(|(b, _)| (b.cidr.to_string(), b))
        .collect();
    for (cidr, nodes) in &claims {
        check_claims(cidr, nodes, by_cidr.get(cidr).copied(), report);
    }
    check_block_affinities(&records.blocks, &claims, report);
    Ok(())
}

/// Who claims each block, from the affinity records; an unreadable key is a finding.
fn read_claims(
    affinity_kvs: &[KeyValue],
    report: &mut CheckReport,
) -> Result<ClaimsByBlock, IpamError> {
    let mut claims = ClaimsByBlock::new();
    for kv in affinity_kvs {
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
    Ok(claims)
}

/// The confirmed claims on one block: at most one, for a block that exists and is affine to
/// that node.
fn check_claims(
    cidr: &str,
    nodes: &[(String, AffinityState)],
    block: Option<&Block>,
    report: &mut CheckReport,
) {
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
    let Some(block) = block else {
        for node in &confirmed {
            report.add(
                FindingKind::AffinityWithoutBlock,
                format!("node {node} claims block {cidr}, which does not exist"),
            );
        }
        return;
    };
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

/// Every block affine to a node must be claimed by that node's affinity record.
fn check_block_affinities(
    blocks: &[(Block, Revision)],
    claims: &ClaimsByBlock,
    report: &mut CheckReport,
) {
    for (block, _) in blocks {
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
}
