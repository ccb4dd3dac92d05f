//! IPAM leaks and their repair (`routectl ipam check` reports them, `routectl ipam repair` fixes
//! what is safe), with Calico's garbage-collection cautions.
//!
//! ```text
//!  leak_scan ──(grace period)──> leak_scan ──> confirmed = seen in both scans, unchanged
//!     │                                          │ (dry run: report and stop)
//!     │                                          v
//!     │   per handle no container holds: re-read the node's CNI GC records just before
//!     │                      ──> release_handle (whole), or skip if a newer list names it valid
//!     │   per leaked handle: re-read the node record just before ──> release_handle (all of
//!     │                      the handle's addresses together), or skip if the node is back
//!     │   per affinity of a missing node: re-check, then the decommission's block release
//!     └── per empty block still affine to a live node: released only if still empty and
//!         unchanged (the block's revision is compared in the delete)
//! ```
//! What is a leak: an address whose `node` attribute names a node without a Node record (or
//! an unattributed one in such a node's block), an affinity of such a node, a handle of a live
//! node that the node's last CNI GC list names unheld (no container holds it; see
//! `ipam::attachments`), and, as reclaimable rather than inconsistent, an empty block still
//! affine to a live node. Missing-node findings are only made when the cluster has Node records
//! at all (IPAM used on its own, with `routectl ipam allocate --node` for nodes no agent
//! registered, has no leaks of this kind).

use super::attachments::{still_unheld, CniGcRecord};
use super::decommission::{Decommission, MARKERS};
use super::{Ipam, IpamError};
use crate::datastore::{Compare, Op, Txn};
use crate::model::{keys, Block};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;
use tracing::info;

/// The allocation attribute the agent writes with each address: Unix seconds, its clock.
pub const ALLOCATED_AT: &str = "allocated_at";

/// Calico's default is 15 minutes for its controller; an operator running repair by hand
/// usually waits less. `routectl ipam repair --grace-period` sets it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// A handle whose addresses belong to a node that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LeakedHandle {
    pub handle: String,
    pub node: String,
    /// (address, sequence number) of every address the handle holds there.
    pub addresses: Vec<(IpAddr, u64)>,
}

/// One scan of the IPAM records for leaks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeakScan {
    /// Nodes with a Node record.
    pub nodes: BTreeSet<String>,
    pub handles: Vec<LeakedHandle>,
    /// Handles of live nodes that no container holds (their node's last CNI GC list).
    pub unheld: Vec<LeakedHandle>,
    /// handle → the GC list that named it unheld, and when the handle was allocated.
    #[serde(skip)]
    pub unheld_by: BTreeMap<String, UnheldBy>,
    /// node → blocks it claims, for nodes without a record.
    pub affinities: BTreeMap<String, Vec<String>>,
    /// (block, its node, block revision) of empty blocks still affine to a live node.
    pub empty_blocks: Vec<(String, String, i64)>,
}

/// Why a handle counts as held by no container: the CNI GC list that lacks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnheldBy {
    pub network: String,
    /// Unix seconds, the agent's clock: when the list came.
    pub received_at: u64,
    /// Unix seconds, the agent's clock: when the handle was allocated (its `allocated_at`
    /// attribute; absent in allocations of older agents).
    pub allocated_at: Option<u64>,
}

/// What a repair found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    pub grace_seconds: u64,
    /// Leaks seen in both scans.
    pub leaked_handles: Vec<LeakedHandle>,
    /// Handles no container holds, seen in both scans.
    pub handles_without_container: Vec<LeakedHandle>,
    pub released_handles: Vec<String>,
    pub addresses_released: usize,
    /// Missing nodes whose blocks and claims were released.
    pub nodes_cleaned: Vec<String>,
    pub empty_blocks_released: Vec<String>,
    /// Leaks left alone because the re-check just before release found them changed.
    pub skipped: Vec<String>,
}

impl Ipam {
    /// Reads the blocks, affinities and node names once and lists what is leaked.
    pub async fn leak_scan(&self) -> Result<LeakScan, IpamError> {
        let store = self.store.as_ref();
        let nodes: BTreeSet<String> = store
            .list_keys(keys::NODES)
            .await?
            .kvs
            .iter()
            .map(|kv| keys::last_part(&kv.key).to_string())
            .collect();
        let markers: BTreeSet<String> = store
            .list_keys(MARKERS)
            .await?
            .kvs
            .iter()
            .map(|kv| keys::last_part(&kv.key).to_string())
            .collect();
        let blocks = super::cache::load_all_blocks(store).await?;
        let records = self.cni_gc_records().await?;
        let mut scan = LeakScan {
            nodes,
            ..LeakScan::default()
        };
        let missing = |node: &str| {
            !scan.nodes.is_empty() && !scan.nodes.contains(node) || markers.contains(node)
        };
        let mut handles = HandleAddresses::new();
        let mut unheld = HandleAddresses::new();
        let mut allocated_at = BTreeMap::new();
        for (block, revision) in &blocks {
            collect_block(block, &missing, &mut handles);
            collect_unheld(block, &missing, &records, (&mut unheld, &mut allocated_at));
            if let Some(node) = block.affinity.as_deref() {
                if block.is_empty() && !missing(node) {
                    scan.empty_blocks
                        .push((block.cidr.to_string(), node.to_string(), *revision));
                }
            }
        }
        scan.handles = leaked_handles(handles);
        scan.unheld = leaked_handles(unheld);
        scan.unheld_by = unheld_by(&scan.unheld, &records, &allocated_at);
        for kv in store.list_keys(keys::AFFINITIES).await?.kvs {
            if let Some((node, cidr)) = keys::parse_affinity_key(&kv.key) {
                if missing(&node) {
                    scan.affinities
                        .entry(node)
                        .or_default()
                        .push(cidr.to_string());
                }
            }
        }
        Ok(scan)
    }

    /// Scans twice, `grace` apart, and releases what both scans found (see the module doc).
    pub async fn repair(&self, grace: Duration, dry_run: bool) -> Result<RepairReport, IpamError> {
        let first = self.leak_scan().await?;
        tokio::time::sleep(grace).await;
        let second = self.leak_scan().await?;
        self.repair_confirmed(&first, &second, dry_run, grace).await
    }

    /// Releases the leaks `first` and `second` agree on, each re-checked just before. A
    /// handle no container holds must also have been allocated `grace` or more before the GC
    /// list that lacks it (an ADD that raced the list is not in it, and is alive).
    pub async fn repair_confirmed(
        &self,
        first: &LeakScan,
        second: &LeakScan,
        dry_run: bool,
        grace: Duration,
    ) -> Result<RepairReport, IpamError> {
        let mut report = RepairReport {
            dry_run,
            grace_seconds: grace.as_secs(),
            leaked_handles: seen_twice(&first.handles, &second.handles),
            handles_without_container: seen_twice(&first.unheld, &second.unheld),
            ..RepairReport::default()
        };
        if dry_run {
            return Ok(report);
        }
        self.release_unheld(&mut report, second).await?;
        let store = self.store.as_ref();
        for leak in report.leaked_handles.clone() {
            if store.get(&keys::node(&leak.node)).await?.is_some() {
                report.skipped.push(format!(
                    "handle {}: node {} is back",
                    leak.handle, leak.node
                ));
                continue;
            }
            let freed = self.release_handle(&leak.handle).await?;
            info!(handle = %leak.handle, node = %leak.node, addresses = freed.len(), "released leaked handle");
            report.addresses_released += freed.len();
            report.released_handles.push(leak.handle);
        }
        for node in second
            .affinities
            .keys()
            .filter(|n| first.affinities.contains_key(*n))
        {
            if store.get(&keys::node(node)).await?.is_some() {
                report
                    .skipped
                    .push(format!("blocks of node {node}: the node is back"));
                continue;
            }
            let mut done = Decommission::default();
            self.release_node_blocks(node, &mut done).await?;
            report.nodes_cleaned.push(node.clone());
        }
        for (cidr, node, revision) in &second.empty_blocks {
            let seen_before = first
                .empty_blocks
                .iter()
                .any(|(c, n, _)| c == cidr && n == node);
            if seen_before && self.release_empty_block(cidr, node, *revision).await? {
                report.empty_blocks_released.push(cidr.clone());
            }
        }
        self.invalidate_cache().await;
        Ok(report)
    }

    /// Releases, whole, each handle no container holds that both scans found, if its node's
    /// CNI GC records, read again just before, still name it unheld.
    async fn release_unheld(
        &self,
        report: &mut RepairReport,
        scan: &LeakScan,
    ) -> Result<(), IpamError> {
        for leak in report.handles_without_container.clone() {
            let records = self.cni_gc_records_of(&leak.node).await?;
            if !still_unheld(Some(&records), &leak.handle) {
                report.skipped.push(format!(
                    "handle {}: node {}'s last CNI GC no longer names it unheld",
                    leak.handle, leak.node
                ));
                continue;
            }
            let allocated_at = scan
                .unheld_by
                .get(&leak.handle)
                .and_then(|u| u.allocated_at);
            if let Some(young) = too_young(&records, &leak.handle, allocated_at, report) {
                report.skipped.push(format!(
                    "handle {}: allocated {young} s before the CNI GC list that lacks it, less than the grace period (its ADD may have raced the list; the next GC decides)",
                    leak.handle
                ));
                continue;
            }
            let freed = self.release_handle(&leak.handle).await?;
            info!(handle = %leak.handle, node = %leak.node, addresses = freed.len(),
                "released a handle no container holds");
            report.addresses_released += freed.len();
            report.released_handles.push(leak.handle);
        }
        Ok(())
    }

    /// Deletes one empty block and its node's claim, if the block is unchanged since the scan.
    async fn release_empty_block(
        &self,
        cidr: &str,
        node: &str,
        revision: i64,
    ) -> Result<bool, IpamError> {
        let Ok(net) = cidr.parse::<ipnetwork::IpNetwork>() else {
            return Ok(false);
        };
        let block_key = keys::block(&net);
        let txn = Txn {
            compare: vec![Compare::revision(&block_key, revision)],
            success: vec![
                Op::delete(&block_key),
                Op::delete(keys::affinity(node, &net)),
            ],
            failure: vec![],
        };
        let released = self.store.txn(txn).await?.succeeded;
        if released {
            info!(block = %cidr, node, "released empty block");
        }
        Ok(released)
    }
}

/// (handle, node) → (address, sequence number) of each address it holds there.
type HandleAddresses = BTreeMap<(String, String), Vec<(IpAddr, u64)>>;

fn leaked_handles(found: HandleAddresses) -> Vec<LeakedHandle> {
    found
        .into_iter()
        .map(|((handle, node), addresses)| LeakedHandle {
            handle,
            node,
            addresses,
        })
        .collect()
}

/// Some(seconds between the allocation and the newest list naming `handle` unheld) when that is
/// less than the report's grace period; None when old enough or the allocation time is unknown.
fn too_young(
    records: &[CniGcRecord],
    handle: &str,
    allocated_at: Option<u64>,
    report: &RepairReport,
) -> Option<u64> {
    let allocated_at = allocated_at?;
    let received_at = records
        .iter()
        .filter(|r| r.unheld.contains(handle))
        .map(|r| r.received_at)
        .max()?;
    let age = received_at.saturating_sub(allocated_at);
    (age < report.grace_seconds).then_some(age)
}

/// The GC list that names each of `unheld` unheld, with the handle's allocation time.
fn unheld_by(
    unheld: &[LeakedHandle],
    records: &BTreeMap<String, Vec<CniGcRecord>>,
    allocated_at: &BTreeMap<String, u64>,
) -> BTreeMap<String, UnheldBy> {
    let mut out = BTreeMap::new();
    for h in unheld {
        let list = records
            .get(&h.node)
            .and_then(|rs| rs.iter().find(|r| r.unheld.contains(&h.handle)));
        if let Some(r) = list {
            let by = UnheldBy {
                network: r.network.clone(),
                received_at: r.received_at,
                allocated_at: allocated_at.get(&h.handle).copied(),
            };
            out.insert(h.handle.clone(), by);
        }
    }
    out
}

/// Adds the block's allocations of live nodes whose CNI GC records name them unheld.
fn collect_unheld(
    block: &Block,
    missing: &dyn Fn(&str) -> bool,
    records: &BTreeMap<String, Vec<CniGcRecord>>,
    (unheld, allocated_at): (&mut HandleAddresses, &mut BTreeMap<String, u64>),
) {
    for (ordinal, a) in &block.allocations {
        let Some(node) = a.attributes.get("node").filter(|n| !missing(n)) else {
            continue;
        };
        if !still_unheld(records.get(node), &a.handle) {
            continue;
        }
        if let Some(at) = a
            .attributes
            .get(ALLOCATED_AT)
            .and_then(|v| v.parse::<u64>().ok())
        {
            let latest = allocated_at.entry(a.handle.clone()).or_insert(at);
            *latest = (*latest).max(at);
        }
        if let Some(ip) = block.ip_at(*ordinal) {
            unheld
                .entry((a.handle.clone(), node.clone()))
                .or_default()
                .push((ip, a.sequence));
        }
    }
}

/// Adds the block's allocations of missing nodes to `handles`.
fn collect_block(block: &Block, missing: &dyn Fn(&str) -> bool, handles: &mut HandleAddresses) {
    for (ordinal, a) in &block.allocations {
        let owner = a
            .attributes
            .get("node")
            .map(String::as_str)
            .or(block.affinity.as_deref());
        let Some(owner) = owner.filter(|o| missing(o)) else {
            continue;
        };
        if let Some(ip) = block.ip_at(*ordinal) {
            handles
                .entry((a.handle.clone(), owner.to_string()))
                .or_default()
                .push((ip, a.sequence));
        }
    }
}

/// The leaks of `second` that `first` found too, unchanged (same addresses and sequences).
fn seen_twice(first: &[LeakedHandle], second: &[LeakedHandle]) -> Vec<LeakedHandle> {
    second
        .iter()
        .filter(|h| first.contains(h))
        .cloned()
        .collect()
}

impl LeakScan {
    /// The scan's leaks as `check` findings.
    pub fn findings(&self) -> Vec<super::Finding> {
        let mut out = Vec::new();
        for h in &self.handles {
            let ips: Vec<String> = h.addresses.iter().map(|(ip, _)| ip.to_string()).collect();
            out.push(super::Finding {
                kind: super::FindingKind::AllocationOfMissingNode,
                message: format!(
                    "handle {} holds {} for node {}, which has no Node record (`routectl ipam repair`)",
                    h.handle,
                    ips.join(", "),
                    h.node
                ),
            });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for h in &self.unheld {
            let ips: Vec<String> = h.addresses.iter().map(|(ip, _)| ip.to_string()).collect();
            let list = self.unheld_by.get(&h.handle).map_or_else(String::new, |u| {
                let allocated = u.allocated_at.map_or_else(String::new, |at| {
                    format!(
                        ", {} s after its allocation",
                        u.received_at.saturating_sub(at)
                    )
                });
                format!(
                    " (network {}, {} s ago{allocated})",
                    u.network,
                    now.saturating_sub(u.received_at)
                )
            });
            out.push(super::Finding {
                kind: super::FindingKind::HandleWithoutContainer,
                message: format!(
                    "handle {} holds {} on node {}, where no container holds it: the node's last CNI GC{list} did not list it (`routectl ipam repair`)",
                    h.handle,
                    ips.join(", "),
                    h.node
                ),
            });
        }
        for (node, cidrs) in &self.affinities {
            out.push(super::Finding {
                kind: super::FindingKind::AffinityOfMissingNode,
                message: format!(
                    "node {node}, which has no Node record, still claims block(s) {} (`routectl ipam repair`)",
                    cidrs.join(", ")
                ),
            });
        }
        out
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
