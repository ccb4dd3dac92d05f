//! Dense ordered maps and sets keyed by prefix, for tables of a million entries.
//!
//! ```text
//!  PrefixMap<V> ──> v4: Chunks<u64, V>           key: address << 8 | length
//!               └─> v6: Chunks<Ipv6Network, V>   keys of 17 bytes
//!  Chunks<K, V> ──> firsts: [k0,  k1,  ...]      the first key of each chunk (binary search)
//!               └─> chunks: [[(k, v); <= CAP], [(k, v); <= CAP], ...]   sorted, never empty
//! ```
//!
//! Why not `BTreeMap<IpNetwork, V>`: its nodes hold 11 entries and split in the middle, so a
//! table filled in random order (BGP speakers send their table in hash order) sits at about
//! two thirds full, and every entry carries the 18-byte `IpNetwork` key: 86 bytes per prefix
//! for the RIB's 32-byte `Dest` at 1M prefixes (measured, heaptrack). Here a chunk that is
//! full first hands an entry to a neighbour with room (so chunks stay nearly full in any
//! insertion order), appending past the end of a full chunk starts a new one (ascending
//! insertion fills chunks completely), and an IPv4 key is one integer (compared in one
//! instruction; the binary searches are most of a lookup): about 45 bytes per prefix for
//! the same values.
//!
//! Iteration follows `IpNetwork`'s order (every IPv4 prefix before every IPv6 one), as a
//! `BTreeMap<IpNetwork, V>`'s does. Costs: lookup O(log n); insert and remove O(log n) plus
//! a move of at most two chunks (and, when a chunk is split or dropped, of the chunk list,
//! n / CAP entries).

use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// An IPv4 prefix as one integer, in `Ipv4Network`'s order (address, then length).
fn v4_key(prefix: &Ipv4Network) -> u64 {
    (u64::from(u32::from(prefix.ip())) << 8) | u64::from(prefix.prefix())
}

/// The prefix of a `v4_key`.
fn v4_prefix(key: u64) -> IpNetwork {
    let address = Ipv4Addr::from((key >> 8) as u32);
    // The length came from a valid prefix: at most 32.
    IpNetwork::V4(Ipv4Network::new(address, key as u8).unwrap_or_else(|_| address.into()))
}

/// A sorted map in chunks of at most `CAP` entries.
#[derive(Debug, Clone)]
pub struct Chunks<K, V, const CAP: usize> {
    /// `firsts[c]` is the key of `chunks[c][0]`.
    firsts: Vec<K>,
    chunks: Vec<Vec<(K, V)>>,
    len: usize,
}

impl<K, V, const CAP: usize> Default for Chunks<K, V, CAP> {
    fn default() -> Self {
        Chunks {
            firsts: Vec::new(),
            chunks: Vec::new(),
            len: 0,
        }
    }
}

/// Where a key is, or would go: its chunk and its index in it.
type Slot = (usize, Result<usize, usize>);

impl<K: Ord + Copy, V, const CAP: usize> Chunks<K, V, CAP> {
    const HALF: usize = CAP / 2;

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held: every chunk's capacity, the chunk list and the first keys.
    pub fn heap_bytes(&self) -> usize {
        let entries: usize = self.chunks.iter().map(Vec::capacity).sum();
        entries * std::mem::size_of::<(K, V)>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<(K, V)>>()
            + self.firsts.capacity() * std::mem::size_of::<K>()
    }

    /// The chunk a key belongs in (the last one starting at or before it; the first one for a
    /// key before every chunk) and its index there; `None` when the map is empty.
    fn slot(&self, key: &K) -> Option<Slot> {
        let c = self.firsts.partition_point(|f| f <= key).saturating_sub(1);
        let chunk = self.chunks.get(c)?;
        Some((c, chunk.binary_search_by(|(k, _)| k.cmp(key))))
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        match self.slot(key)? {
            (c, Ok(i)) => self.chunks.get(c)?.get(i).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self.slot(key)? {
            (c, Ok(i)) => self.chunks.get_mut(c)?.get_mut(i).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value of `key`, inserted with `make` when absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let (c, i) = match self.slot(&key) {
            None => {
                self.insert_chunk(0, vec![(key, make())]);
                self.len = 1;
                (0, 0)
            }
            Some((c, Ok(i))) => (c, i),
            Some((c, Err(i))) => {
                self.len += 1;
                self.insert_at(c, i, (key, make()))
            }
        };
        &mut self.chunks[c][i].1
    }

    /// Inserts `key` (no value change when present); whether it was absent.
    pub fn insert(&mut self, key: K, value: V) -> bool {
        let before = self.len;
        self.get_or_insert_with(key, || value);
        self.len > before
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (c, Ok(i)) = self.slot(key)? else {
            return None;
        };
        let (_, value) = self.chunks[c].remove(i);
        self.len -= 1;
        if self.chunks[c].is_empty() {
            self.remove_chunk(c);
        } else {
            self.firsts[c] = self.chunks[c][0].0;
            self.merge_small(c);
        }
        Some(value)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = &(K, V)> + '_ {
        self.chunks.iter().flatten()
    }

    /// Entries in key order, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut V)> + '_ {
        self.chunks.iter_mut().flatten().map(|(k, v)| (*k, v))
    }

    /// Entries with a key after `after` (all of them for `None`), in key order.
    pub fn iter_after(&self, after: Option<&K>) -> impl Iterator<Item = &(K, V)> + '_ {
        // No slot: the map is empty.
        let (c, i) = match after.and_then(|key| self.slot(key)) {
            None => (0, 0),
            Some((c, Ok(i))) => (c, i + 1),
            Some((c, Err(i))) => (c, i),
        };
        let head = self
            .chunks
            .get(c)
            .map_or(&[][..], |chunk| &chunk[i.min(chunk.len())..]);
        head.iter().chain(
            self.chunks
                .get(c + 1..)
                .unwrap_or_default()
                .iter()
                .flatten(),
        )
    }

    /// Removes up to `limit` of the first keys after `after` (from the start for `None`), in
    /// key order, onto `out`.
    pub fn drain_after(&mut self, after: Option<&K>, limit: usize, out: &mut Vec<K>) {
        // No slot: the map is empty.
        let (mut c, mut i) = match after.and_then(|key| self.slot(key)) {
            None => (0, 0),
            Some((c, Ok(i))) => (c, i + 1),
            Some((c, Err(i))) => (c, i),
        };
        let mut left = limit;
        while left > 0 && c < self.chunks.len() {
            let chunk = &mut self.chunks[c];
            let end = chunk.len().min(i + left);
            let taken = end.saturating_sub(i);
            out.extend(chunk.drain(i..end).map(|(k, _)| k));
            self.len -= taken;
            left -= taken;
            if self.chunks[c].is_empty() {
                self.remove_chunk(c);
            } else {
                self.firsts[c] = self.chunks[c][0].0;
                c += 1;
            }
            i = 0;
        }
    }

    fn insert_chunk(&mut self, c: usize, mut chunk: Vec<(K, V)>) {
        chunk.reserve_exact(CAP.saturating_sub(chunk.len()));
        self.firsts.insert(c, chunk[0].0);
        self.chunks.insert(c, chunk);
    }

    fn remove_chunk(&mut self, c: usize) {
        self.chunks.remove(c);
        self.firsts.remove(c);
    }

    /// Puts `entry` at index `i` of chunk `c` (it sorts there); returns where it ended up.
    fn insert_at(&mut self, c: usize, i: usize, entry: (K, V)) -> (usize, usize) {
        if self.chunks[c].len() < CAP {
            self.chunks[c].insert(i, entry);
            self.firsts[c] = self.chunks[c][0].0;
            return (c, i);
        }
        let next_has_room = self.chunks.get(c + 1).is_some_and(|n| n.len() < CAP);
        let prev_has_room = c > 0 && self.chunks[c - 1].len() < CAP;
        if next_has_room {
            // The last entry (or the new one, when it goes last) moves to the next chunk.
            let moved = if i == CAP {
                entry
            } else {
                let last = self.chunks[c].remove(CAP - 1);
                self.chunks[c].insert(i, entry);
                self.firsts[c] = self.chunks[c][0].0;
                last
            };
            self.firsts[c + 1] = moved.0;
            self.chunks[c + 1].insert(0, moved);
            return if i == CAP { (c + 1, 0) } else { (c, i) };
        }
        if prev_has_room && i > 0 {
            let first = self.chunks[c].remove(0);
            self.chunks[c - 1].push(first);
            self.chunks[c].insert(i - 1, entry);
            self.firsts[c] = self.chunks[c][0].0;
            return (c, i - 1);
        }
        if i == CAP {
            // Ascending insertion: a new chunk after the full one.
            self.insert_chunk(c + 1, vec![entry]);
            return (c + 1, 0);
        }
        if i == 0 {
            self.insert_chunk(c, vec![entry]);
            return (c, 0);
        }
        let mut right = Vec::with_capacity(CAP);
        right.extend(self.chunks[c].drain(Self::HALF..));
        let at = if i <= Self::HALF {
            self.chunks[c].insert(i, entry);
            (c, i)
        } else {
            right.insert(i - Self::HALF, entry);
            (c + 1, i - Self::HALF)
        };
        self.insert_chunk(c + 1, right);
        at
    }

    /// Merges a chunk that fell under a quarter full into a neighbour, when they fit in one.
    fn merge_small(&mut self, c: usize) {
        let len = self.chunks[c].len();
        if len >= CAP / 4 {
            return;
        }
        let fits = |other: &Vec<(K, V)>| other.len() + len <= CAP;
        let (into, from) = if self.chunks.get(c + 1).is_some_and(fits) {
            (c, c + 1)
        } else if c > 0 && fits(&self.chunks[c - 1]) {
            (c - 1, c)
        } else {
            return;
        };
        let moved = std::mem::take(&mut self.chunks[from]);
        self.chunks[into].extend(moved);
        self.remove_chunk(from);
    }
}

/// A map from prefix to `V` in prefix order, dense (see the module doc).
#[derive(Debug, Clone)]
pub struct PrefixMap<V, const CAP: usize = 64> {
    v4: Chunks<u64, V, CAP>,
    v6: Chunks<Ipv6Network, V, CAP>,
}

impl<V, const CAP: usize> Default for PrefixMap<V, CAP> {
    fn default() -> Self {
        PrefixMap {
            v4: Chunks::default(),
            v6: Chunks::default(),
        }
    }
}

impl<V, const CAP: usize> PrefixMap<V, CAP> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the map's own structure (not by what the values point to).
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }

    pub fn get(&self, prefix: &IpNetwork) -> Option<&V> {
        match prefix {
            IpNetwork::V4(p) => self.v4.get(&v4_key(p)),
            IpNetwork::V6(p) => self.v6.get(p),
        }
    }

    pub fn get_mut(&mut self, prefix: &IpNetwork) -> Option<&mut V> {
        match prefix {
            IpNetwork::V4(p) => self.v4.get_mut(&v4_key(p)),
            IpNetwork::V6(p) => self.v6.get_mut(p),
        }
    }

    pub fn contains_key(&self, prefix: &IpNetwork) -> bool {
        self.get(prefix).is_some()
    }

    /// The value of `prefix`, inserted with `make` when absent.
    pub fn get_or_insert_with(&mut self, prefix: IpNetwork, make: impl FnOnce() -> V) -> &mut V {
        match prefix {
            IpNetwork::V4(p) => self.v4.get_or_insert_with(v4_key(&p), make),
            IpNetwork::V6(p) => self.v6.get_or_insert_with(p, make),
        }
    }

    pub fn remove(&mut self, prefix: &IpNetwork) -> Option<V> {
        match prefix {
            IpNetwork::V4(p) => self.v4.remove(&v4_key(p)),
            IpNetwork::V6(p) => self.v6.remove(p),
        }
    }

    /// Entries in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNetwork, &V)> + '_ {
        let v4 = self.v4.iter().map(|(k, v)| (v4_prefix(*k), v));
        v4.chain(self.v6.iter().map(|(p, v)| (IpNetwork::V6(*p), v)))
    }

    /// Entries in prefix order, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (IpNetwork, &mut V)> + '_ {
        let v4 = self.v4.iter_mut().map(|(k, v)| (v4_prefix(k), v));
        v4.chain(self.v6.iter_mut().map(|(p, v)| (IpNetwork::V6(p), v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.iter().map(|(p, _)| p)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        self.iter_mut().map(|(_, v)| v)
    }

    /// Entries after `after` (all of them for `None`), in prefix order.
    pub fn iter_after(&self, after: Option<IpNetwork>) -> impl Iterator<Item = (IpNetwork, &V)> {
        let (v4_after, v6_after, skip_v4) = match after {
            None => (None, None, false),
            Some(IpNetwork::V4(p)) => (Some(v4_key(&p)), None, false),
            Some(IpNetwork::V6(p)) => (None, Some(p), true),
        };
        let v4 = (!skip_v4).then(|| {
            self.v4
                .iter_after(v4_after.as_ref())
                .map(|(k, v)| (v4_prefix(*k), v))
        });
        let v6 = self
            .v6
            .iter_after(v6_after.as_ref())
            .map(|(p, v)| (IpNetwork::V6(*p), v));
        v4.into_iter().flatten().chain(v6)
    }
}

/// A set of prefixes in prefix order, dense (8 bytes per IPv4 prefix).
#[derive(Debug, Clone, Default)]
pub struct PrefixSet {
    map: PrefixMap<(), 512>,
}

impl PrefixSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds a prefix; whether it was absent.
    pub fn insert(&mut self, prefix: IpNetwork) -> bool {
        match prefix {
            IpNetwork::V4(p) => self.map.v4.insert(v4_key(&p), ()),
            IpNetwork::V6(p) => self.map.v6.insert(p, ()),
        }
    }

    pub fn contains(&self, prefix: &IpNetwork) -> bool {
        self.map.contains_key(prefix)
    }

    pub fn iter(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.map.keys()
    }

    /// Removes up to `limit` of the first prefixes after `after` (from the start for `None`),
    /// in prefix order.
    pub fn drain_after(&mut self, after: Option<IpNetwork>, limit: usize) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        match after {
            Some(IpNetwork::V6(p)) => {
                let mut v6 = Vec::new();
                self.map.v6.drain_after(Some(&p), limit, &mut v6);
                out.extend(v6.into_iter().map(IpNetwork::V6));
            }
            after => {
                let v4_after = match after {
                    Some(IpNetwork::V4(p)) => Some(v4_key(&p)),
                    _ => None,
                };
                let mut v4 = Vec::new();
                self.map.v4.drain_after(v4_after.as_ref(), limit, &mut v4);
                out.extend(v4.into_iter().map(v4_prefix));
                let mut v6 = Vec::new();
                self.map.v6.drain_after(None, limit - out.len(), &mut v6);
                out.extend(v6.into_iter().map(IpNetwork::V6));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
