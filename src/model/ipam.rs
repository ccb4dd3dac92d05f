//! IPAM records: blocks, block affinities, handles and the IPAM configuration.
//!
//! A block is a `block_size` slice of a pool. Its allocations map an ordinal (offset in the
//! block) to the handle that holds it and the block sequence number at allocation time, so a
//! release carrying a stale sequence number cannot free an address that was since reused
//! (Calico's `sequenceNumberForAllocation`). Free ordinals are kept in reuse order: a released
//! address goes to the back of the queue and is handed out again last.

use super::pool::{add_to_ip, host_bits, ip_offset};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One allocated address inside a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub handle: String,
    /// The block's sequence number when this address was handed out.
    pub sequence: u64,
    /// Who holds it: `namespace`, `pod`, `container_id`, `node`, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A block of addresses (`/routed/v1/ipam/blocks/<cidr>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: IpNetwork,
    /// The node this block is affine to; `None` once its affinity was released.
    #[serde(default)]
    pub affinity: Option<String>,
    /// ordinal → allocation.
    #[serde(default)]
    pub allocations: BTreeMap<u32, Allocation>,
    /// Free ordinals in the order they will be handed out.
    #[serde(default)]
    pub free: Vec<u32>,
    /// Incremented on every allocation.
    #[serde(default)]
    pub sequence_number: u64,
}

impl Block {
    /// A fresh, empty block affine to `node`.
    pub fn new(cidr: IpNetwork, node: Option<&str>) -> Block {
        let size = block_size(&cidr);
        Block {
            cidr,
            affinity: node.map(str::to_string),
            allocations: BTreeMap::new(),
            free: (0..size).collect(),
            sequence_number: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        block_size(&self.cidr)
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    /// The address at `ordinal`.
    pub fn ip_at(&self, ordinal: u32) -> Option<IpAddr> {
        if ordinal >= self.capacity() {
            return None;
        }
        add_to_ip(self.cidr.network(), u128::from(ordinal))
    }

    /// The ordinal of `ip` in this block.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(ip) {
            return None;
        }
        u32::try_from(ip_offset(self.cidr.network(), ip)?).ok()
    }

    /// Hands out up to `count` addresses to `handle`; returns `(ip, sequence)` for each.
    pub fn assign(
        &mut self,
        count: usize,
        handle: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Vec<(IpAddr, u64)> {
        let take = count.min(self.free.len());
        let ordinals: Vec<u32> = self.free.drain(..take).collect();
        let mut out = Vec::with_capacity(take);
        for ordinal in ordinals {
            self.sequence_number += 1;
            let allocation = Allocation {
                handle: handle.to_string(),
                sequence: self.sequence_number,
                attributes: attributes.clone(),
            };
            self.allocations.insert(ordinal, allocation);
            if let Some(ip) = self.ip_at(ordinal) {
                out.push((ip, self.sequence_number));
            }
        }
        out
    }

    /// Frees every address `handle` holds here; returns the freed addresses.
    pub fn release_handle(&mut self, handle: &str) -> Vec<IpAddr> {
        let ordinals: Vec<u32> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.handle == handle)
            .map(|(o, _)| *o)
            .collect();
        ordinals
            .into_iter()
            .filter_map(|o| self.release_ordinal(o))
            .collect()
    }

    /// Frees one ordinal; returns its address when it was allocated.
    pub fn release_ordinal(&mut self, ordinal: u32) -> Option<IpAddr> {
        self.allocations.remove(&ordinal)?;
        self.free.push(ordinal);
        self.ip_at(ordinal)
    }

    /// Number of addresses `handle` holds here.
    pub fn count_for_handle(&self, handle: &str) -> usize {
        self.allocations
            .values()
            .filter(|a| a.handle == handle)
            .count()
    }

    /// Internal consistency: allocated and free ordinals partition the block exactly.
    pub fn check_partition(&self) -> Result<(), String> {
        let size = self.capacity();
        let mut seen = vec![false; size as usize];
        let ords = self.allocations.keys().chain(self.free.iter());
        for &ordinal in ords {
            let Some(slot) = seen.get_mut(ordinal as usize) else {
                return Err(format!(
                    "ordinal {ordinal} is outside the block (size {size})"
                ));
            };
            if *slot {
                return Err(format!(
                    "ordinal {ordinal} is both free and allocated, or listed twice"
                ));
            }
            *slot = true;
        }
        match seen.iter().position(|s| !s) {
            Some(missing) => Err(format!("ordinal {missing} is neither free nor allocated")),
            None => Ok(()),
        }
    }
}

/// Number of addresses in a block network (capped; blocks are at most /20 or /116).
pub fn block_size(cidr: &IpNetwork) -> u32 {
    let bits = host_bits(cidr) - u32::from(cidr.prefix());
    1u32.checked_shl(bits.min(31)).unwrap_or(u32::MAX)
}

/// State of a node's claim on a block (`/routed/v1/ipam/affinity/<node>/<cidr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    Pending,
    Confirmed,
    PendingDeletion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAffinity {
    pub state: AffinityState,
}

/// What one handle holds: block → number of addresses (`/routed/v1/ipam/handles/<id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub handle: String,
    pub blocks: BTreeMap<String, u32>,
}

impl Handle {
    pub fn new(handle: &str) -> Handle {
        Handle {
            handle: handle.to_string(),
            blocks: BTreeMap::new(),
        }
    }

    /// Adds `n` to the count for `cidr`.
    pub fn add(&mut self, cidr: &IpNetwork, n: u32) {
        *self.blocks.entry(cidr.to_string()).or_default() += n;
    }

    /// Removes `n` from the count for `cidr`, dropping the entry at zero.
    pub fn remove(&mut self, cidr: &IpNetwork, n: u32) {
        let key = cidr.to_string();
        if let Some(count) = self.blocks.get_mut(&key) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.blocks.remove(&key);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.blocks.values().map(|&n| u64::from(n)).sum()
    }
}

fn default_max_blocks() -> u32 {
    20
}

/// Cluster-wide IPAM settings (`/routed/v1/config/ipam`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// When true, a node only uses blocks affine to it and never borrows.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Most blocks one node may claim; 0 means no limit.
    #[serde(default = "default_max_blocks")]
    pub max_blocks_per_host: u32,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            max_blocks_per_host: default_max_blocks(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_and_release_keep_the_partition() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), Some("n1"));
        assert_eq!(b.capacity(), 4);
        let attrs = BTreeMap::new();
        let got = b.assign(3, "h1", &attrs);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], ("10.0.0.0".parse().unwrap(), 1));
        assert_eq!(got[2].1, 3);
        b.check_partition().unwrap();
        assert_eq!(b.release_ordinal(1), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(b.free, vec![3, 1], "a released address is reused last");
        assert_eq!(b.release_handle("h1").len(), 2);
        assert!(b.is_empty());
        b.check_partition().unwrap();
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Block>(&json).unwrap(), b);
    }

    #[test]
    fn partition_errors_are_found() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), None);
        b.free.push(0);
        assert!(b.check_partition().is_err());
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), None);
        b.free.pop();
        assert!(b.check_partition().unwrap_err().contains("neither"));
    }

    #[test]
    fn v6_blocks_work() {
        let mut b = Block::new("fd00::40/122".parse().unwrap(), Some("n"));
        assert_eq!(b.capacity(), 64);
        let got = b.assign(1, "h", &BTreeMap::new());
        assert_eq!(got[0].0, "fd00::40".parse::<IpAddr>().unwrap());
        assert_eq!(b.ordinal_of("fd00::7f".parse().unwrap()), Some(63));
    }
}
