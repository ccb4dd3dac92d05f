//! Prefix map and set tests: every operation against `BTreeMap`/`BTreeSet` as the model,
//! with tiny chunks so splits, hand-overs to neighbours and merges all happen.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn v4(i: u32) -> IpNetwork {
    IpNetwork::V4(Ipv4Network::new(std::net::Ipv4Addr::from(i << 8), 24).unwrap())
}

fn v6(i: u32) -> IpNetwork {
    let address = std::net::Ipv6Addr::from(u128::from(i) << 64);
    IpNetwork::V6(Ipv6Network::new(address, 64).unwrap())
}

/// A prefix from a small space (so operations hit the same keys): both families, several
/// lengths, host bits set or not (an `IpNetwork` keeps them, and so must the map).
fn prefix(i: u16) -> IpNetwork {
    let x = u32::from(i);
    let address = std::net::Ipv4Addr::from((x / 5) << 8 | (x % 3) << 5);
    match i % 5 {
        0 => v6(x),
        1 => IpNetwork::V4(Ipv4Network::new(address, 26).unwrap()),
        2 => IpNetwork::V4(Ipv4Network::new(address, 32).unwrap()),
        3 => IpNetwork::V4(Ipv4Network::new(address, 0).unwrap()),
        _ => v4(x / 5),
    }
}

impl<K: Ord + Copy + std::fmt::Debug, V, const CAP: usize> Chunks<K, V, CAP> {
    /// The layout's invariants: chunks non-empty, at most CAP, sorted across chunks, `firsts`
    /// and `len` in step.
    fn check(&self) {
        assert_eq!(self.firsts.len(), self.chunks.len());
        assert_eq!(self.len, self.chunks.iter().map(Vec::len).sum::<usize>());
        for (first, chunk) in self.firsts.iter().zip(&self.chunks) {
            assert!(
                !chunk.is_empty() && chunk.len() <= CAP,
                "chunk of {}",
                chunk.len()
            );
            assert!(
                chunk.capacity() <= CAP.max(4),
                "capacity {}",
                chunk.capacity()
            );
            assert_eq!(*first, chunk[0].0);
        }
        let keys: Vec<K> = self.iter().map(|(k, _)| *k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted: {keys:?}");
    }
}

impl<V, const CAP: usize> PrefixMap<V, CAP> {
    fn check(&self) {
        self.v4.check();
        self.v6.check();
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u32),
    Remove(u16),
    Get(u16),
    After(Option<u16>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..400u16, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => (0..400u16).prop_map(Op::Remove),
        1 => (0..400u16).prop_map(Op::Get),
        1 => proptest::option::of(0..400u16).prop_map(Op::After),
    ]
}

proptest! {
    #[test]
    fn prefix_map_behaves_as_a_btreemap_in_any_operation_order(ops in proptest::collection::vec(op(), 1..600)) {
        let mut map: PrefixMap<u32, 4> = PrefixMap::new();
        let mut model: BTreeMap<IpNetwork, u32> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    *map.get_or_insert_with(prefix(k), || 0) = v;
                    model.insert(prefix(k), v);
                }
                Op::Remove(k) => prop_assert_eq!(map.remove(&prefix(k)), model.remove(&prefix(k))),
                Op::Get(k) => prop_assert_eq!(map.get(&prefix(k)), model.get(&prefix(k))),
                Op::After(k) => {
                    let after = k.map(prefix);
                    let got: Vec<(IpNetwork, u32)> = map.iter_after(after).map(|(p, v)| (p, *v)).collect();
                    let want: Vec<(IpNetwork, u32)> = match after {
                        Some(a) => model.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)).map(|(p, v)| (*p, *v)).collect(),
                        None => model.iter().map(|(p, v)| (*p, *v)).collect(),
                    };
                    prop_assert_eq!(got, want);
                }
            }
            map.check();
            prop_assert_eq!(map.len(), model.len());
        }
        let all: Vec<(IpNetwork, u32)> = map.iter().map(|(p, v)| (p, *v)).collect();
        prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn prefix_set_drains_in_prefix_order_from_any_cursor(
        keys in proptest::collection::vec(0..400u16, 0..300),
        cursor in proptest::option::of(0..400u16),
        limit in 1..200usize,
    ) {
        let mut set = PrefixSet::new();
        let mut model = BTreeSet::new();
        for k in keys {
            prop_assert_eq!(set.insert(prefix(k)), model.insert(prefix(k)));
        }
        let after = cursor.map(prefix);
        let got = set.drain_after(after, limit);
        let want: Vec<IpNetwork> = model.iter().copied().filter(|p| after.is_none_or(|a| *p > a)).take(limit).collect();
        prop_assert_eq!(&got, &want);
        for p in &want {
            model.remove(p);
        }
        set.map.check();
        prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
    }
}

#[test]
fn ascending_insertion_fills_every_chunk() {
    let mut map: PrefixMap<u8, 8> = PrefixMap::new();
    for i in 0..64 {
        map.get_or_insert_with(v4(i), || 0);
    }
    map.check();
    assert_eq!(map.v4.chunks.len(), 8, "64 entries in 8 full chunks");
}

#[test]
fn interleaved_ascending_runs_fill_chunks_nearly_full() {
    // Ten peers, each sending its own range in ascending order, one UPDATE of 50 at a time.
    let mut map: PrefixMap<u8, 64> = PrefixMap::new();
    for round in 0..20 {
        for peer in 0..10 {
            for k in 0..50 {
                map.get_or_insert_with(v4(peer * 100_000 + round * 50 + k), || 0);
            }
        }
    }
    map.check();
    let fill = map.len() as f64 / (map.v4.chunks.len() * 64) as f64;
    assert!(fill > 0.9, "fill {fill:.2}");
}

#[test]
fn random_insertion_keeps_chunks_mostly_full() {
    let mut map: PrefixMap<u8, 64> = PrefixMap::new();
    let mut x: u32 = 1;
    for _ in 0..20_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345); // any fixed pseudo-random order
        map.get_or_insert_with(v4(x >> 8), || 0);
    }
    map.check();
    let fill = map.len() as f64 / (map.v4.chunks.len() * 64) as f64;
    assert!(fill > 0.8, "fill {fill:.2}");
}

#[test]
fn removing_most_entries_merges_chunks_back() {
    let mut map: PrefixMap<u8, 8> = PrefixMap::new();
    for i in 0..800 {
        map.get_or_insert_with(v4(i), || 0);
    }
    for i in 0..800 {
        if i % 10 != 0 {
            map.remove(&v4(i));
        }
    }
    map.check();
    assert_eq!(map.len(), 80);
    assert!(
        map.v4.chunks.len() <= 40,
        "{} chunks for 80 entries",
        map.v4.chunks.len()
    );
    for i in (0..800).step_by(10) {
        map.remove(&v4(i));
    }
    map.check();
    assert!(map.is_empty() && map.v4.chunks.is_empty());
}

#[test]
fn a_table_filled_in_hash_order_costs_under_52_bytes_per_prefix_for_32_byte_values() {
    // The RIB's case: 32-byte values (`Dest`), prefixes arriving in a speaker's hash order.
    // A BTreeMap<IpNetwork, Dest> held 77-99 bytes per prefix here (docs/benchmarks.md).
    let mut map: PrefixMap<[u64; 4]> = PrefixMap::new();
    let mut x: u32 = 7;
    for _ in 0..100_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        map.get_or_insert_with(v4(x >> 8), || [0; 4]);
    }
    map.check();
    let per_prefix = map.heap_bytes() as f64 / map.len() as f64;
    assert!(per_prefix < 52.0, "{per_prefix:.1} bytes per prefix");
}
