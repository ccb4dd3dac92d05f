//! Adj-RIB-In, Loc-RIB and Adj-RIB-Out (RFC 4271 §3.2, §9), sans-IO.
//!
//! Data flow:
//!
//! ```text
//! Update from peer P ──> Rib::receive_update ──> adj_in[P] ──> select_best(prefix) ──> loc
//!                                                                     │
//!  set_originated(blocks) ─────────────────────────────────────────────┤
//!                                                                     v
//!                    for every Established peer Q: export(Q, prefix) diffed against adj_out[Q]
//!                                                                     │
//!                                 RibOutput { best: Vec<RibEvent>, outbound: per-peer Outbound }
//! ```
//!
//! The caller (the speaker) turns `RibEvent`s into what the route reconciler sees and hands
//! each `Outbound` to the peer's session, which encodes it with `encode_updates`.
//!
//! Best path (RFC 4271 §9.1.2.2, the steps routed needs): highest LOCAL_PREF (eBGP paths
//! count as 100), shortest AS_PATH, lowest ORIGIN, lowest MED among paths from the same
//! neighbouring AS (the RFC's elimination, not a sort), eBGP over iBGP; the paths left after
//! these steps form the multipath (ECMP) group; the best path in it is the one from the
//! lowest BGP identifier, then the lowest peer address.
//!
//! Export policy (Calico's): our originated prefixes (the node's confirmed blocks) go to
//! every peer with next-hop self, ORIGIN IGP, AS_PATH empty (iBGP, with LOCAL_PREF 100) or
//! our AS (eBGP). Learned routes are never sent to iBGP peers when learned over iBGP (no
//! route reflection); other learned routes are sent only when `ExportPolicy` says so (off by
//! default). A prefix we originate is never taken from a peer for the Loc-RIB view the
//! reconciler gets: the local block (a blackhole plus /32s) wins.
//!
//! Graceful restart (RFC 4724 §4.2): `peer_down(graceful)` keeps the peer's paths marked
//! stale; they stay usable for forwarding until `end_of_rib` or `purge_stale`.
//!
//! Departures: no IGP cost step (every next hop is directly connected or reached through a
//! tunnel); stale paths are not ranked below fresh ones; loop detection drops eBGP paths
//! carrying our AS and iBGP paths whose ORIGINATOR_ID is ours, silently (as withdrawals).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::bgp::packet::{AsPath, MpNextHop, Origin, PathAttributes, Update};

/// A peer, as the RIB knows it: an opaque number the speaker assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// LOCAL_PREF assumed when a path has none (and for every eBGP path).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// What the RIB needs to know about an Established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address (tie-breaker, and what "next-hop self" is relative to).
    pub address: IpAddr,
    pub peer_asn: u32,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our address on the session: the next hop we advertise.
    pub local_address: IpAddr,
    /// Whether the session carries IPv4 / IPv6 unicast.
    pub ipv4: bool,
    pub ipv6: bool,
}

/// Which learned routes are re-advertised. iBGP-learned routes never go to iBGP peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPolicy {
    /// Send routes learned from eBGP peers to iBGP peers (next hop unchanged).
    pub ebgp_learned_to_ibgp: bool,
    /// Send learned routes to eBGP peers (next-hop self, our AS prepended).
    pub learned_to_ebgp: bool,
}

/// One path in an Adj-RIB-In.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub attributes: PathAttributes,
    pub next_hop: IpAddr,
    /// Kept across a graceful restart of the peer, awaiting refresh.
    pub stale: bool,
}

/// The Loc-RIB entry for one prefix: the best path and the paths that tie with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The best path's peer.
    pub best: PeerId,
    /// Every peer in the multipath group, best first.
    pub multipath: Vec<PeerId>,
    /// Distinct next hops of the multipath group, sorted.
    pub next_hops: Vec<IpAddr>,
    /// Whether the best path came over eBGP.
    pub ebgp: bool,
}

/// A best route as the route reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BestRoute {
    pub prefix: IpNetwork,
    /// ECMP next hops, sorted; never empty.
    pub next_hops: Vec<IpAddr>,
}

/// A change of the Loc-RIB view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RibEvent {
    /// A new best route, or new next hops for a prefix.
    Changed(BestRoute),
    /// No usable path left.
    Removed(IpNetwork),
}

/// Announcements grouped by identical attributes, and withdrawals, for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    pub announce: Vec<(PathAttributes, Vec<IpNetwork>)>,
    pub withdraw: Vec<IpNetwork>,
}

impl Outbound {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }

    /// Number of prefixes announced.
    pub fn announced_len(&self) -> usize {
        self.announce.iter().map(|(_, p)| p.len()).sum()
    }

    /// Add one announcement to the group with the same attributes (packing).
    fn push_announce(&mut self, attributes: PathAttributes, prefix: IpNetwork) {
        match self.announce.iter_mut().find(|(a, _)| *a == attributes) {
            Some((_, prefixes)) => prefixes.push(prefix),
            None => self.announce.push((attributes, vec![prefix])),
        }
    }
}

/// What one RIB operation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RibOutput {
    pub events: Vec<RibEvent>,
    pub outbound: BTreeMap<PeerId, Outbound>,
}

impl RibOutput {
    fn merge(&mut self, other: RibOutput) {
        self.events.extend(other.events);
        for (peer, out) in other.outbound {
            let entry = self.outbound.entry(peer).or_default();
            entry.withdraw.extend(out.withdraw);
            for (attrs, prefixes) in out.announce {
                for prefix in prefixes {
                    entry.push_announce(attrs.clone(), prefix);
                }
            }
        }
    }
}

/// Per-peer state.
#[derive(Debug, Default)]
struct PeerRib {
    /// Set while the session is Established.
    info: Option<PeerInfo>,
    /// Kept from the last session for stale paths' tie-breaks.
    last_info: Option<PeerInfo>,
    adj_in: BTreeMap<IpNetwork, Path>,
    adj_out: BTreeMap<IpNetwork, PathAttributes>,
}

impl PeerRib {
    fn known(&self) -> Option<&PeerInfo> {
        self.info.as_ref().or(self.last_info.as_ref())
    }
}

/// The three RIBs of one speaker.
#[derive(Debug)]
pub struct Rib {
    local_asn: u32,
    router_id: Ipv4Addr,
    policy: ExportPolicy,
    peers: BTreeMap<PeerId, PeerRib>,
    originated: BTreeSet<IpNetwork>,
    loc: BTreeMap<IpNetwork, Selected>,
}

impl Rib {
    /// An empty RIB.
    pub fn new(local_asn: u32, router_id: Ipv4Addr, policy: ExportPolicy) -> Self {
        Rib {
            local_asn,
            router_id,
            policy,
            peers: BTreeMap::new(),
            originated: BTreeSet::new(),
            loc: BTreeMap::new(),
        }
    }

    /// Make a peer known (before its session comes up). Idempotent.
    pub fn add_peer(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_default();
    }

    /// Forget a peer: its paths are withdrawn from the Loc-RIB.
    pub fn remove_peer(&mut self, peer: PeerId) -> RibOutput {
        let Some(state) = self.peers.remove(&peer) else {
            return RibOutput::default();
        };
        let prefixes: Vec<IpNetwork> = state.adj_in.into_keys().collect();
        self.reselect(&prefixes)
    }

    /// The session came up: returns the full Adj-RIB-Out for the peer (and nothing else
    /// changes). The caller follows it with End-of-RIB.
    pub fn peer_up(&mut self, peer: PeerId, info: PeerInfo) -> Outbound {
        let state = self.peers.entry(peer).or_default();
        state.last_info = Some(info.clone());
        state.info = Some(info);
        state.adj_out.clear();
        let mut prefixes: BTreeSet<IpNetwork> = self.originated.clone();
        prefixes.extend(self.loc.keys().copied());
        let mut out = Outbound::default();
        for prefix in prefixes {
            if let Some(attrs) = self.export(peer, &prefix) {
                out.push_announce(attrs.clone(), prefix);
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.adj_out.insert(prefix, attrs);
                }
            }
        }
        out
    }

    /// An Established peer's session details.
    pub fn peer_info(&self, peer: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&peer)?.info.as_ref()
    }

    /// The session went down. With `graceful`, the peer's paths stay (stale); without, they
    /// are withdrawn.
    pub fn peer_down(&mut self, peer: PeerId, graceful: bool) -> RibOutput {
        let Some(state) = self.peers.get_mut(&peer) else {
            return RibOutput::default();
        };
        state.info = None;
        state.adj_out.clear();
        if graceful {
            for path in state.adj_in.values_mut() {
                path.stale = true;
            }
            return RibOutput::default();
        }
        let prefixes: Vec<IpNetwork> = std::mem::take(&mut state.adj_in).into_keys().collect();
        self.reselect(&prefixes)
    }

    /// Drop the peer's paths still marked stale (End-of-RIB received, or the restart or
    /// stale-path timer expired).
    pub fn purge_stale(&mut self, peer: PeerId) -> RibOutput {
        let Some(state) = self.peers.get_mut(&peer) else {
            return RibOutput::default();
        };
        let stale: Vec<IpNetwork> = state
            .adj_in
            .iter()
            .filter(|(_, p)| p.stale)
            .map(|(prefix, _)| *prefix)
            .collect();
        for prefix in &stale {
            state.adj_in.remove(prefix);
        }
        self.reselect(&stale)
    }

    /// How many of the peer's paths are stale.
    pub fn stale_count(&self, peer: PeerId) -> usize {
        self.peers
            .get(&peer)
            .map_or(0, |s| s.adj_in.values().filter(|p| p.stale).count())
    }

    /// Apply an UPDATE from an Established peer. End-of-RIB purges stale paths.
    pub fn receive_update(&mut self, peer: PeerId, update: &Update) -> RibOutput {
        if update.end_of_rib.is_some() {
            return self.purge_stale(peer);
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return RibOutput::default();
        };
        let Some(info) = state.info.clone() else {
            return RibOutput::default();
        };
        let ibgp = info.peer_asn == self.local_asn;
        let mut touched = Vec::new();
        for prefix in &update.withdrawn {
            if state.adj_in.remove(prefix).is_some() {
                touched.push(*prefix);
            }
        }
        let looped = if ibgp {
            update.attributes.originator_id == Some(self.router_id)
        } else {
            update
                .attributes
                .as_path
                .as_ref()
                .is_some_and(|p| p.contains(self.local_asn))
        };
        let mut attributes = update.attributes.clone();
        if !ibgp {
            // RFC 4271 §5.1.5 / RFC 7606 §7.5: LOCAL_PREF from an eBGP peer is ignored.
            attributes.local_pref = None;
        }
        for prefix in &update.nlri {
            let next_hop = update.next_hop_for(prefix);
            let usable = match next_hop {
                Some(nh) => !looped && nh_family_matches(prefix, nh) && !is_unusable(nh),
                None => false,
            };
            let removed = match (usable, next_hop) {
                (true, Some(next_hop)) => {
                    let path = Path {
                        attributes: attributes.clone(),
                        next_hop,
                        stale: false,
                    };
                    state.adj_in.insert(*prefix, path);
                    false
                }
                _ => state.adj_in.remove(prefix).is_some(),
            };
            if usable || removed {
                touched.push(*prefix);
            }
        }
        self.reselect(&touched)
    }

    /// Replace the set of prefixes we originate (the node's confirmed blocks).
    pub fn set_originated(&mut self, originated: BTreeSet<IpNetwork>) -> RibOutput {
        let changed: Vec<IpNetwork> = self
            .originated
            .symmetric_difference(&originated)
            .copied()
            .collect();
        self.originated = originated;
        self.reselect(&changed)
    }

    /// The prefixes we originate.
    pub fn originated(&self) -> &BTreeSet<IpNetwork> {
        &self.originated
    }

    /// The Loc-RIB as the reconciler sees it: learned best routes, prefixes we originate
    /// excluded.
    pub fn best_routes(&self) -> Vec<BestRoute> {
        self.loc
            .iter()
            .filter(|(prefix, _)| !self.originated.contains(prefix))
            .map(|(prefix, selected)| BestRoute {
                prefix: *prefix,
                next_hops: selected.next_hops.clone(),
            })
            .collect()
    }

    /// The Loc-RIB entry for a prefix.
    pub fn selected(&self, prefix: &IpNetwork) -> Option<&Selected> {
        self.loc.get(prefix)
    }

    /// A peer's Adj-RIB-In.
    pub fn adj_in(&self, peer: PeerId) -> Option<&BTreeMap<IpNetwork, Path>> {
        self.peers.get(&peer).map(|s| &s.adj_in)
    }

    /// A peer's Adj-RIB-Out.
    pub fn adj_out(&self, peer: PeerId) -> Option<&BTreeMap<IpNetwork, PathAttributes>> {
        self.peers.get(&peer).map(|s| &s.adj_out)
    }

    /// Prefixes received from and advertised to a peer.
    pub fn counts(&self, peer: PeerId) -> (usize, usize) {
        self.peers
            .get(&peer)
            .map_or((0, 0), |s| (s.adj_in.len(), s.adj_out.len()))
    }

    /// Re-run selection for `prefixes`, then export what changed to every Established peer.
    fn reselect(&mut self, prefixes: &[IpNetwork]) -> RibOutput {
        let mut out = RibOutput::default();
        let unique: BTreeSet<IpNetwork> = prefixes.iter().copied().collect();
        for prefix in &unique {
            let before = self.loc.get(prefix).cloned();
            let after = self.select_best(prefix);
            match &after {
                Some(selected) => {
                    self.loc.insert(*prefix, selected.clone());
                }
                None => {
                    self.loc.remove(prefix);
                }
            }
            let visible = !self.originated.contains(prefix);
            let hops = |s: &Option<Selected>| s.as_ref().map(|s| s.next_hops.clone());
            if visible && hops(&before) != hops(&after) {
                out.events.push(match after {
                    Some(selected) => RibEvent::Changed(BestRoute {
                        prefix: *prefix,
                        next_hops: selected.next_hops,
                    }),
                    None => RibEvent::Removed(*prefix),
                });
            }
        }
        let established: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.info.is_some())
            .map(|(id, _)| *id)
            .collect();
        for peer in established {
            let outbound = self.update_adj_out(peer, &unique);
            if !outbound.is_empty() {
                out.merge(RibOutput {
                    events: Vec::new(),
                    outbound: BTreeMap::from([(peer, outbound)]),
                });
            }
        }
        out
    }

    /// Diff the export of `prefixes` to `peer` against its Adj-RIB-Out.
    fn update_adj_out(&mut self, peer: PeerId, prefixes: &BTreeSet<IpNetwork>) -> Outbound {
        let mut out = Outbound::default();
        for prefix in prefixes {
            let wanted = self.export(peer, prefix);
            let Some(state) = self.peers.get_mut(&peer) else {
                break;
            };
            let current = state.adj_out.get(prefix);
            if current == wanted.as_ref() {
                continue;
            }
            match wanted {
                Some(attrs) => {
                    state.adj_out.insert(*prefix, attrs.clone());
                    out.push_announce(attrs, *prefix);
                }
                None => {
                    state.adj_out.remove(prefix);
                    out.withdraw.push(*prefix);
                }
            }
        }
        out
    }

    /// What to advertise to `peer` for `prefix`, if anything.
    fn export(&self, peer: PeerId, prefix: &IpNetwork) -> Option<PathAttributes> {
        let info = self.peers.get(&peer)?.info.as_ref()?;
        let family_ok = match prefix {
            IpNetwork::V4(_) => info.ipv4,
            IpNetwork::V6(_) => info.ipv6,
        };
        if !family_ok {
            return None;
        }
        let to_ibgp = info.peer_asn == self.local_asn;
        if self.originated.contains(prefix) {
            let as_path = if to_ibgp {
                AsPath::default()
            } else {
                AsPath::from_sequence(vec![self.local_asn])
            };
            let attrs = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(as_path),
                local_pref: to_ibgp.then_some(DEFAULT_LOCAL_PREF),
                ..PathAttributes::default()
            };
            return with_next_hop(attrs, prefix, info.local_address);
        }
        let selected = self.loc.get(prefix)?;
        if selected.best == peer {
            return None;
        }
        let path = self.peers.get(&selected.best)?.adj_in.get(prefix)?;
        let mut attrs = path.attributes.clone();
        if to_ibgp {
            if !selected.ebgp || !self.policy.ebgp_learned_to_ibgp {
                return None;
            }
            attrs.local_pref = Some(attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
            return with_next_hop(attrs, prefix, path.next_hop);
        }
        if !self.policy.learned_to_ebgp {
            return None;
        }
        let mut asns = vec![self.local_asn];
        let mut as_path = attrs.as_path.take().unwrap_or_default();
        match as_path.segments.first_mut() {
            Some(seg) if seg.kind == crate::bgp::packet::SegmentKind::Sequence => {
                asns.append(&mut seg.asns);
                seg.asns = asns;
            }
            _ => as_path
                .segments
                .insert(0, AsPath::from_sequence(asns).segments.remove(0)),
        }
        attrs.as_path = Some(as_path);
        attrs.local_pref = None;
        attrs.med = None;
        attrs.originator_id = None;
        attrs.cluster_list.clear();
        with_next_hop(attrs, prefix, info.local_address)
    }

    /// RFC 4271 §9.1.2.2 over the usable paths for `prefix`.
    fn select_best(&self, prefix: &IpNetwork) -> Option<Selected> {
        let mut candidates: Vec<Candidate<'_>> = self
            .peers
            .iter()
            .filter_map(|(id, state)| {
                let path = state.adj_in.get(prefix)?;
                let info = state.known()?;
                Some(Candidate {
                    peer: *id,
                    path,
                    ebgp: info.peer_asn != self.local_asn,
                    router_id: path.attributes.originator_id.unwrap_or(info.router_id),
                    address: info.address,
                })
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        keep_min_by_key(&mut candidates, |c| {
            std::cmp::Reverse(c.path.attributes.local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
        });
        keep_min_by_key(&mut candidates, |c| {
            c.path
                .attributes
                .as_path
                .as_ref()
                .map_or(0, AsPath::path_len)
        });
        keep_min_by_key(&mut candidates, |c| origin_rank(c.path.attributes.origin));
        eliminate_by_med(&mut candidates);
        if candidates.iter().any(|c| c.ebgp) {
            candidates.retain(|c| c.ebgp);
        }
        candidates.sort_by_key(|c| (u32::from(c.router_id), c.address, c.peer));
        let best = candidates.first()?;
        let next_hops: BTreeSet<IpAddr> = candidates.iter().map(|c| c.path.next_hop).collect();
        Some(Selected {
            best: best.peer,
            multipath: candidates.iter().map(|c| c.peer).collect(),
            next_hops: next_hops.into_iter().collect(),
            ebgp: best.ebgp,
        })
    }
}

/// A path under selection.
struct Candidate<'a> {
    peer: PeerId,
    path: &'a Path,
    ebgp: bool,
    router_id: Ipv4Addr,
    address: IpAddr,
}

/// Keep only the candidates with the smallest key.
fn keep_min_by_key<K: Ord>(candidates: &mut Vec<Candidate<'_>>, key: impl Fn(&Candidate<'_>) -> K) {
    let Some(min) = candidates.iter().map(&key).min() else {
        return;
    };
    candidates.retain(|c| key(c) == min);
}

/// §9.1.2.2 (c): drop a path when another path from the same neighbouring AS has a lower
/// MED (a missing MED counts as 0).
fn eliminate_by_med(candidates: &mut Vec<Candidate<'_>>) {
    let neighbour = |c: &Candidate<'_>| {
        c.path
            .attributes
            .as_path
            .as_ref()
            .and_then(AsPath::first_asn)
    };
    let mut lowest: BTreeMap<Option<u32>, u32> = BTreeMap::new();
    for c in candidates.iter() {
        let med = c.path.attributes.med.unwrap_or(0);
        let entry = lowest.entry(neighbour(c)).or_insert(med);
        *entry = (*entry).min(med);
    }
    candidates.retain(|c| {
        let med = c.path.attributes.med.unwrap_or(0);
        lowest.get(&neighbour(c)).is_none_or(|&min| med <= min)
    });
}

/// ORIGIN preference: IGP < EGP < INCOMPLETE (a missing one ranks last).
fn origin_rank(origin: Option<Origin>) -> u8 {
    match origin {
        Some(Origin::Igp) => 0,
        Some(Origin::Egp) => 1,
        Some(Origin::Incomplete) | None => 2,
    }
}

/// Set the next hop field that matches the prefix's family; `None` when the families do
/// not match (an IPv6 prefix over an IPv4-only session has no next hop to give).
fn with_next_hop(
    mut attrs: PathAttributes,
    prefix: &IpNetwork,
    next_hop: IpAddr,
) -> Option<PathAttributes> {
    match (prefix, next_hop) {
        (IpNetwork::V4(_), IpAddr::V4(v4)) => {
            attrs.next_hop = Some(v4);
            attrs.mp_next_hop = None;
        }
        (IpNetwork::V6(_), IpAddr::V6(v6)) => {
            attrs.next_hop = None;
            attrs.mp_next_hop = Some(MpNextHop::Ipv6 {
                global: v6,
                link_local: None,
            });
        }
        _ => return None,
    }
    Some(attrs)
}

/// Whether a next hop can reach a prefix of this family.
fn nh_family_matches(prefix: &IpNetwork, next_hop: IpAddr) -> bool {
    matches!(
        (prefix, next_hop),
        (IpNetwork::V4(_), IpAddr::V4(_)) | (IpNetwork::V6(_), IpAddr::V6(_))
    )
}

/// Next hops no route may use (RFC 4271 §5.1.3 semantic checks).
fn is_unusable(next_hop: IpAddr) -> bool {
    match next_hop {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast() || v6 == Ipv6Addr::LOCALHOST,
    }
}

#[cfg(test)]
#[path = "rib_tests.rs"]
mod tests;
