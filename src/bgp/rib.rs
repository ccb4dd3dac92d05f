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
//! our AS (eBGP). Routes learned over iBGP go to iBGP peers only by route reflection (below);
//! other learned routes are sent only when the peer's `ExportPolicy` says so (per peer,
//! `set_export`; off by default). Their NEXT_HOP follows the peer's [`NextHopMode`]
//! (`set_next_hop_mode`; Calico's `nextHopMode`): ours towards eBGP and kept towards iBGP
//! (`Auto`), always ours (`OurAddress`, Calico's `Self`), or always kept (`Keep`).
//!
//! Route reflection (RFC 4456), when some peers are our clients (`set_reflection` with
//! [`Reflection::Client`]): an iBGP-learned best path from a client goes to every other iBGP
//! peer, one from a non-client to the clients only (§6); never to the peer it came from nor
//! to the router named by its ORIGINATOR_ID. The reflected copy gets ORIGINATOR_ID (the
//! source's BGP identifier, when absent) and our cluster ID prepended to CLUSTER_LIST (§8);
//! NEXT_HOP, AS_PATH, LOCAL_PREF and MED stay (§10). Towards eBGP both attributes are
//! stripped. Received iBGP paths whose ORIGINATOR_ID is our router ID or whose CLUSTER_LIST
//! holds one of our cluster IDs are dropped as loops (as withdrawals), checked on arrival.
//! Best path: ORIGINATOR_ID stands in for the peer's BGP identifier, then the shorter
//! CLUSTER_LIST wins, before the peer address (§9). A prefix we originate is never taken from a peer for the Loc-RIB view the
//! reconciler gets: the local block (a blackhole plus /32s) wins.
//!
//! Graceful restart (RFC 4724 §4.2): `peer_down(graceful)` keeps the peer's paths marked
//! stale; they stay usable for forwarding until `end_of_rib` or `purge_stale`.
//!
//! Departures: no IGP cost step (every next hop is directly connected or reached through a
//! tunnel); stale paths are not ranked below fresh ones; loop detection drops eBGP paths
//! carrying our AS (more often than the peer's `set_allow_local_as`, BIRD's `allow local as`)
//! and iBGP paths whose ORIGINATOR_ID is ours, silently (as withdrawals).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::bgp::packet::{AsPath, MpNextHop, Origin, PathAttributes, Update};
use crate::bgp::prefix_table::PrefixMap;

/// A peer, as the RIB knows it: an opaque number the speaker assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u32);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// LOCAL_PREF assumed when a path has none (and for every eBGP path).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Paths in one multipath group at most (the group is a bit mask over a prefix's paths).
pub const MAX_MULTIPATH: usize = 32;

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

/// Which learned routes are re-advertised to a peer (our originated prefixes always are).
/// iBGP-learned routes go to iBGP peers only by route reflection ([`Reflection`]). Per peer
/// (`Rib::set_export`), with the RIB's own as the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPolicy {
    /// Send routes learned from eBGP peers to iBGP peers (next hop unchanged).
    pub ebgp_learned_to_ibgp: bool,
    /// Send learned routes to eBGP peers (next-hop self, our AS prepended).
    pub learned_to_ebgp: bool,
}

/// The NEXT_HOP of learned routes sent to a peer (Calico's `nextHopMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopMode {
    /// Ours towards eBGP, the received one towards iBGP (RFC 4271 §5.1.3, RFC 4456 §10).
    #[default]
    Auto,
    /// Always ours (BIRD's `next hop self`).
    OurAddress,
    /// Always the received one, towards eBGP too (BIRD's `next hop keep`).
    Keep,
}

impl NextHopMode {
    /// The NEXT_HOP a learned `path` is sent to the peer `to` with (`to_ebgp`: an eBGP peer).
    fn choose(
        self,
        to: &PeerInfo,
        path: &Held,
        prefix: &IpNetwork,
        to_ebgp: bool,
    ) -> Option<IpAddr> {
        match (self, to_ebgp) {
            (NextHopMode::OurAddress, _) | (NextHopMode::Auto, true) => Some(to.local_address),
            (NextHopMode::Keep, _) | (NextHopMode::Auto, false) => path.next_hop(prefix),
        }
    }
}

impl ExportPolicy {
    /// Whether any learned route can be exported at all.
    fn exports_learned(self) -> bool {
        self.ebgp_learned_to_ibgp || self.learned_to_ebgp
    }
}

/// One path in the Adj-RIB-In of a peer. The attributes are shared by every prefix of the
/// UPDATE that carried them; the next hop is read from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub attributes: Arc<PathAttributes>,
    /// Kept across a graceful restart of the peer, awaiting refresh.
    pub stale: bool,
}

impl Path {
    /// The next hop this path gives `prefix`.
    pub fn next_hop(&self, prefix: &IpNetwork) -> Option<IpAddr> {
        self.attributes.next_hop_for(prefix)
    }
}

/// The Loc-RIB entry for one prefix, as callers see it: the best path and the paths that tie
/// with it (built on demand; the table stores a compact form).
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

impl RibEvent {
    /// The prefix the event is about.
    pub fn prefix(&self) -> IpNetwork {
        match self {
            RibEvent::Changed(route) => route.prefix,
            RibEvent::Removed(prefix) => *prefix,
        }
    }
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

/// Per-peer state. The peer's paths live in the prefix table; here are its counters.
#[derive(Debug, Default)]
struct PeerRib {
    /// Set while the session is Established.
    info: Option<PeerInfo>,
    /// Kept from the last session for stale paths' tie-breaks.
    last_info: Option<PeerInfo>,
    /// Paths of this peer in the table, and how many of them are stale.
    received: usize,
    stale: usize,
    adj_out: BTreeMap<IpNetwork, PathAttributes>,
    /// What this peer is sent; `None`: the RIB's default policy.
    export: Option<ExportPolicy>,
    /// Our cluster ID when the peer is our route-reflector client.
    client_of: Option<Ipv4Addr>,
    /// How often our AS may appear in the AS_PATH of the peer's routes (`allow local as`).
    allow_local_as: u32,
    /// The NEXT_HOP of learned routes sent to the peer (our prefixes always carry ours).
    next_hop: NextHopMode,
}

impl PeerRib {
    fn known(&self) -> Option<&PeerInfo> {
        self.info.as_ref().or(self.last_info.as_ref())
    }
}

/// Route reflection on one session (RFC 4456), as the agent decides it (Calico's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reflection {
    /// The peer is our route-reflector client; we reflect with this cluster ID.
    Client { cluster_id: Ipv4Addr },
    /// The peer is a route reflector of this cluster and we are its client (or a reflector
    /// of the same cluster): plain iBGP on our side, recorded for status.
    Reflector { cluster_id: Ipv4Addr },
}

impl Reflection {
    /// The cluster ID the role names.
    pub fn cluster_id(self) -> Ipv4Addr {
        match self {
            Reflection::Client { cluster_id } | Reflection::Reflector { cluster_id } => cluster_id,
        }
    }
}

/// The selection stored per prefix: which of its paths are best and tie (bit i = path i).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Choice {
    best: u16,
    /// The other members of the multipath group among the first `MAX_MULTIPATH` paths.
    group: u32,
    ebgp: bool,
}

impl Choice {
    /// Whether path `i` is in the multipath group.
    fn contains(self, i: usize) -> bool {
        i == usize::from(self.best) || (i < MAX_MULTIPATH && self.group & (1 << i) != 0)
    }
}

/// One peer's path as the table holds it (16 bytes).
#[derive(Debug, Clone)]
struct Held {
    attributes: Arc<PathAttributes>,
    peer: PeerId,
    stale: bool,
}

impl Held {
    fn next_hop(&self, prefix: &IpNetwork) -> Option<IpAddr> {
        self.attributes.next_hop_for(prefix)
    }

    fn path(&self) -> Path {
        Path {
            attributes: self.attributes.clone(),
            stale: self.stale,
        }
    }
}

/// Every peer's path for one prefix (the Adj-RIBs-In, by prefix) and the Loc-RIB choice:
/// 32 bytes, no heap allocation while one peer has the prefix.
#[derive(Debug, Default)]
struct Dest {
    paths: SmallVec<[Held; 1]>,
    choice: Option<Choice>,
}

impl Dest {
    fn position(&self, peer: PeerId) -> Option<usize> {
        self.paths.iter().position(|h| h.peer == peer)
    }

    /// The multipath group's distinct next hops, sorted.
    fn next_hops(&self, prefix: &IpNetwork) -> Hops {
        let mut hops = Hops::new();
        let Some(choice) = self.choice else {
            return hops;
        };
        for (i, path) in self.paths.iter().enumerate() {
            if choice.contains(i) {
                if let Some(hop) = path.next_hop(prefix) {
                    hops.push(hop);
                }
            }
        }
        hops.sort_unstable();
        hops.dedup();
        hops
    }

    fn best_peer(&self) -> Option<PeerId> {
        let choice = self.choice?;
        self.paths.get(usize::from(choice.best)).map(|h| h.peer)
    }
}

/// Next hops of one prefix, without a heap allocation for the usual one or two.
pub type Hops = SmallVec<[IpAddr; 2]>;

/// The three RIBs of one speaker.
///
/// Memory: one table keyed by prefix holds every peer's path for it (a peer id, a shared
/// pointer to the UPDATE's attributes and a stale flag) and the compact Loc-RIB choice, so a
/// learned prefix costs one table entry however many structures look at it; the Adj-RIB-In of
/// one peer is a view over the table (`adj_in`), the Loc-RIB another (`best_routes`). The
/// table is a dense [`PrefixMap`] (about 45 bytes per IPv4 prefix held by one peer, against
/// 86 in a `BTreeMap<IpNetwork, Dest>`; see `prefix_table`).
#[derive(Debug)]
pub struct Rib {
    local_asn: u32,
    router_id: Ipv4Addr,
    policy: ExportPolicy,
    peers: BTreeMap<PeerId, PeerRib>,
    originated: BTreeSet<IpNetwork>,
    table: PrefixMap<Dest>,
    /// Prefixes with a selection that we do not originate (the reconciler's view).
    visible: usize,
    /// Our cluster IDs (those of our clients' sessions), with how many clients use each.
    cluster_ids: BTreeMap<Ipv4Addr, usize>,
}

/// A prefix touched by an operation and its next hops before it.
type Touched = (IpNetwork, Hops);

impl Rib {
    /// An empty RIB.
    pub fn new(local_asn: u32, router_id: Ipv4Addr, policy: ExportPolicy) -> Self {
        Rib {
            local_asn,
            router_id,
            policy,
            peers: BTreeMap::new(),
            originated: BTreeSet::new(),
            table: PrefixMap::new(),
            visible: 0,
            cluster_ids: BTreeMap::new(),
        }
    }

    /// Accept the peer's routes with our AS up to `times` times in the AS_PATH (BIRD's
    /// `allow local as`; before its session comes up).
    pub fn set_allow_local_as(&mut self, peer: PeerId, times: u32) {
        self.peers.entry(peer).or_default().allow_local_as = times;
    }

    /// Set how the NEXT_HOP of learned routes sent to a peer is chosen (before its session
    /// comes up).
    pub fn set_next_hop_mode(&mut self, peer: PeerId, mode: NextHopMode) {
        self.peers.entry(peer).or_default().next_hop = mode;
    }

    fn next_hop_mode(&self, peer: PeerId) -> NextHopMode {
        self.peers
            .get(&peer)
            .map_or(NextHopMode::Auto, |p| p.next_hop)
    }

    /// Set a peer's route-reflection role (before its session comes up). Only
    /// [`Reflection::Client`] changes what the RIB does.
    pub fn set_reflection(&mut self, peer: PeerId, reflection: Option<Reflection>) {
        let client_of = match reflection {
            Some(Reflection::Client { cluster_id }) => Some(cluster_id),
            _ => None,
        };
        let state = self.peers.entry(peer).or_default();
        let old = std::mem::replace(&mut state.client_of, client_of);
        self.forget_cluster_id(old);
        if let Some(id) = client_of {
            *self.cluster_ids.entry(id).or_default() += 1;
        }
    }

    fn forget_cluster_id(&mut self, id: Option<Ipv4Addr>) {
        let Some(id) = id else {
            return;
        };
        if let Some(count) = self.cluster_ids.get_mut(&id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.cluster_ids.remove(&id);
            }
        }
    }

    /// Recompute every Established peer's Adj-RIB-Out (after a route-reflection role
    /// changed): what a peer should now get is announced, what it should no longer get is
    /// withdrawn. The Loc-RIB does not change.
    pub fn refresh_exports(&mut self) -> RibOutput {
        let prefixes: Vec<Touched> = self
            .table
            .keys()
            .chain(self.originated.iter().copied())
            .map(|p| (p, Hops::new()))
            .collect();
        let established: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.info.is_some())
            .map(|(id, _)| *id)
            .collect();
        let mut out = RibOutput::default();
        for peer in established {
            let outbound = self.update_adj_out(peer, &prefixes);
            if !outbound.is_empty() {
                out.outbound.insert(peer, outbound);
            }
        }
        out
    }

    /// Whether we reflect routes (some peer is our client).
    pub fn is_reflector(&self) -> bool {
        !self.cluster_ids.is_empty()
    }

    /// Whether learned routes can go to `peer`: its export policy allows some, or we reflect.
    fn exports_learned_to(&self, peer: PeerId) -> bool {
        self.policy_for(peer).exports_learned() || self.is_reflector()
    }

    /// Make a peer known (before its session comes up). Idempotent.
    pub fn add_peer(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_default();
    }

    /// Set what a peer is sent (before its session comes up; `peer_up` applies it).
    pub fn set_export(&mut self, peer: PeerId, policy: ExportPolicy) {
        self.peers.entry(peer).or_default().export = Some(policy);
    }

    /// The export policy of a peer.
    fn policy_for(&self, peer: PeerId) -> ExportPolicy {
        self.peers
            .get(&peer)
            .and_then(|p| p.export)
            .unwrap_or(self.policy)
    }

    /// Forget a peer: its paths are withdrawn from the Loc-RIB.
    pub fn remove_peer(&mut self, peer: PeerId) -> RibOutput {
        let touched = self.drop_paths(peer, false);
        if let Some(state) = self.peers.remove(&peer) {
            self.forget_cluster_id(state.client_of);
        }
        self.reselect(touched)
    }

    /// The session came up: returns the full Adj-RIB-Out for the peer (and nothing else
    /// changes). The caller follows it with End-of-RIB.
    pub fn peer_up(&mut self, peer: PeerId, info: PeerInfo) -> Outbound {
        let state = self.peers.entry(peer).or_default();
        state.last_info = Some(info.clone());
        state.info = Some(info);
        state.adj_out.clear();
        let mut prefixes: BTreeSet<IpNetwork> = self.originated.clone();
        if self.exports_learned_to(peer) {
            prefixes.extend(
                self.table
                    .iter()
                    .filter(|(_, d)| d.choice.is_some())
                    .map(|(p, _)| p),
            );
        }
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
            let mut stale = 0;
            for dest in self.table.values_mut() {
                for held in dest.paths.iter_mut() {
                    if held.peer == peer {
                        held.stale = true;
                        stale += 1;
                    }
                }
            }
            if let Some(state) = self.peers.get_mut(&peer) {
                state.stale = stale;
            }
            return RibOutput::default();
        }
        let touched = self.drop_paths(peer, false);
        self.reselect(touched)
    }

    /// Drop the peer's paths still marked stale (End-of-RIB received, or the restart or
    /// stale-path timer expired).
    pub fn purge_stale(&mut self, peer: PeerId) -> RibOutput {
        if self.stale_count(peer) == 0 {
            return RibOutput::default();
        }
        let touched = self.drop_paths(peer, true);
        self.reselect(touched)
    }

    /// Remove the peer's paths (only the stale ones with `stale_only`) from the table;
    /// returns the prefixes touched with their next hops before.
    fn drop_paths(&mut self, peer: PeerId, stale_only: bool) -> Vec<Touched> {
        let mut touched = Vec::new();
        let mut removed = 0;
        let mut removed_stale = 0;
        for (prefix, dest) in self.table.iter_mut() {
            let Some(i) = dest.position(peer) else {
                continue;
            };
            let stale = dest.paths.get(i).is_some_and(|h| h.stale);
            if stale_only && !stale {
                continue;
            }
            touched.push((prefix, dest.next_hops(&prefix)));
            dest.paths.remove(i);
            removed += 1;
            removed_stale += usize::from(stale);
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.received = state.received.saturating_sub(removed);
            state.stale = state.stale.saturating_sub(removed_stale);
        }
        touched
    }

    /// How many of the peer's paths are stale.
    pub fn stale_count(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |s| s.stale)
    }

    /// Apply an UPDATE from an Established peer. End-of-RIB purges stale paths.
    pub fn receive_update(&mut self, peer: PeerId, update: &Update) -> RibOutput {
        if update.end_of_rib.is_some() {
            return self.purge_stale(peer);
        }
        let Some(info) = self.peers.get(&peer).and_then(|s| s.info.clone()) else {
            return RibOutput::default();
        };
        let allow_local_as = self.peers.get(&peer).map_or(0, |s| s.allow_local_as);
        let ibgp = info.peer_asn == self.local_asn;
        let mut touched: Vec<Touched> =
            Vec::with_capacity(update.withdrawn.len() + update.nlri.len());
        let mut received: isize = 0;
        let mut stale_dropped = 0;
        for prefix in &update.withdrawn {
            if let Some(dest) = self.table.get_mut(prefix) {
                if let Some(i) = dest.position(peer) {
                    touched.push((*prefix, dest.next_hops(prefix)));
                    let old = dest.paths.remove(i);
                    received -= 1;
                    stale_dropped += usize::from(old.stale);
                }
            }
        }
        let looped = if ibgp {
            update.attributes.originator_id == Some(self.router_id)
                || update
                    .attributes
                    .cluster_list
                    .iter()
                    .any(|c| self.cluster_ids.contains_key(c))
        } else {
            update
                .attributes
                .as_path
                .as_ref()
                .is_some_and(|p| p.occurrences(self.local_asn) > allow_local_as as usize)
        };
        let mut attributes = update.attributes.clone();
        if !ibgp {
            // RFC 4271 §5.1.5 / RFC 7606 §7.5: LOCAL_PREF from an eBGP peer is ignored.
            attributes.local_pref = None;
        }
        // One copy of the attributes for every prefix of the UPDATE.
        let attributes = Arc::new(attributes);
        for prefix in &update.nlri {
            let usable = match update.next_hop_for(prefix) {
                Some(nh) => !looped && nh_family_matches(prefix, nh) && !is_unusable(nh),
                None => false,
            };
            if usable {
                let dest = self.table.get_or_insert_with(*prefix, Dest::default);
                touched.push((*prefix, dest.next_hops(prefix)));
                let held = Held {
                    attributes: attributes.clone(),
                    peer,
                    stale: false,
                };
                match dest.position(peer) {
                    Some(i) => {
                        if let Some(old) = dest.paths.get_mut(i) {
                            stale_dropped += usize::from(old.stale);
                            *old = held;
                        }
                    }
                    None => {
                        dest.paths.push(held);
                        received += 1;
                    }
                }
            } else if let Some(dest) = self.table.get_mut(prefix) {
                if let Some(i) = dest.position(peer) {
                    touched.push((*prefix, dest.next_hops(prefix)));
                    let old = dest.paths.remove(i);
                    received -= 1;
                    stale_dropped += usize::from(old.stale);
                }
            }
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.received = state.received.saturating_add_signed(received);
            state.stale = state.stale.saturating_sub(stale_dropped);
        }
        self.reselect(touched)
    }

    /// Replace the set of prefixes we originate (the node's confirmed blocks).
    pub fn set_originated(&mut self, originated: BTreeSet<IpNetwork>) -> RibOutput {
        let changed: Vec<Touched> = self
            .originated
            .symmetric_difference(&originated)
            .map(|prefix| {
                let before = if self.originated.contains(prefix) {
                    Hops::new() // not visible before
                } else {
                    self.next_hops(prefix)
                };
                (*prefix, before)
            })
            .collect();
        self.originated = originated;
        let out = self.reselect(changed);
        self.recount();
        out
    }

    /// The prefixes we originate.
    pub fn originated(&self) -> &BTreeSet<IpNetwork> {
        &self.originated
    }

    /// The Loc-RIB as the reconciler sees it: learned best routes, prefixes we originate
    /// excluded.
    pub fn best_routes(&self) -> Vec<BestRoute> {
        let mut out = Vec::with_capacity(self.visible);
        self.for_each_best(None, usize::MAX, |prefix, hops| {
            out.push(BestRoute {
                prefix,
                next_hops: hops.to_vec(),
            });
        });
        out
    }

    /// Calls `f` with up to `limit` learned best routes (prefixes we originate excluded) in
    /// prefix order, starting after `after`; returns the last prefix visited, for the next call.
    pub fn for_each_best(
        &self,
        after: Option<IpNetwork>,
        limit: usize,
        mut f: impl FnMut(IpNetwork, &[IpAddr]),
    ) -> Option<IpNetwork> {
        let mut last = None;
        for (prefix, dest) in self.table.iter_after(after).take(limit) {
            last = Some(prefix);
            if dest.choice.is_none() || self.originated.contains(&prefix) {
                continue;
            }
            f(prefix, &dest.next_hops(&prefix));
        }
        last
    }

    /// How many learned best routes there are (prefixes we originate excluded).
    pub fn best_len(&self) -> usize {
        self.visible
    }

    /// The next hops of the learned best route for `prefix` (empty when there is none, or
    /// when we originate it).
    pub fn next_hops(&self, prefix: &IpNetwork) -> Hops {
        if self.originated.contains(prefix) {
            return Hops::new();
        }
        self.table
            .get(prefix)
            .map_or_else(Hops::new, |d| d.next_hops(prefix))
    }

    /// The Loc-RIB entry for a prefix.
    pub fn selected(&self, prefix: &IpNetwork) -> Option<Selected> {
        let dest = self.table.get(prefix)?;
        let choice = dest.choice?;
        let best = dest.best_peer()?;
        let mut multipath = vec![best];
        multipath.extend(
            dest.paths
                .iter()
                .enumerate()
                .filter(|(i, h)| choice.contains(*i) && h.peer != best)
                .map(|(_, h)| h.peer),
        );
        Some(Selected {
            best,
            multipath,
            next_hops: dest.next_hops(prefix).to_vec(),
            ebgp: choice.ebgp,
        })
    }

    /// A peer's Adj-RIB-In (a copy, built from the table).
    pub fn adj_in(&self, peer: PeerId) -> Option<BTreeMap<IpNetwork, Path>> {
        self.peers.get(&peer)?;
        Some(
            self.table
                .iter()
                .filter_map(|(prefix, dest)| {
                    let i = dest.position(peer)?;
                    Some((prefix, dest.paths.get(i)?.path()))
                })
                .collect(),
        )
    }

    /// A peer's Adj-RIB-Out.
    pub fn adj_out(&self, peer: PeerId) -> Option<&BTreeMap<IpNetwork, PathAttributes>> {
        self.peers.get(&peer).map(|s| &s.adj_out)
    }

    /// Prefixes received from and advertised to a peer.
    pub fn counts(&self, peer: PeerId) -> (usize, usize) {
        self.peers
            .get(&peer)
            .map_or((0, 0), |s| (s.received, s.adj_out.len()))
    }

    /// Re-run selection for the touched prefixes, then export what changed to every
    /// Established peer.
    fn reselect(&mut self, mut touched: Vec<Touched>) -> RibOutput {
        // Keep the first "before" of a prefix touched twice.
        touched.sort_by_key(|t| t.0); // stable: the first "before" stays first
        touched.dedup_by(|later, first| later.0 == first.0);
        let mut out = RibOutput::default();
        for (prefix, before) in &touched {
            let visible = !self.originated.contains(prefix);
            let (had, has, after) = match self.table.get_mut(prefix) {
                Some(dest) => {
                    let had = dest.choice.is_some();
                    dest.choice = choose(dest, &self.peers, self.local_asn);
                    let has = dest.choice.is_some();
                    let after = dest.next_hops(prefix);
                    if dest.paths.is_empty() {
                        self.table.remove(prefix);
                    }
                    (had, has, after)
                }
                None => (false, false, Hops::new()),
            };
            // `visible` counts selections of prefixes we do not originate (origination
            // changes recount it in `set_originated`).
            if visible {
                match (had, has) {
                    (false, true) => self.visible += 1,
                    (true, false) => self.visible = self.visible.saturating_sub(1),
                    _ => {}
                }
            }
            if visible && *before != after {
                out.events.push(if after.is_empty() {
                    RibEvent::Removed(*prefix)
                } else {
                    RibEvent::Changed(BestRoute {
                        prefix: *prefix,
                        next_hops: after.to_vec(),
                    })
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
            let outbound = self.update_adj_out(peer, &touched);
            if !outbound.is_empty() {
                out.outbound.insert(peer, outbound);
            }
        }
        out
    }

    /// Count the visible selections again (origination changed which prefixes are visible).
    fn recount(&mut self) {
        self.visible = self
            .table
            .iter()
            .filter(|(p, d)| d.choice.is_some() && !self.originated.contains(p))
            .count();
    }

    /// Diff the export of `prefixes` to `peer` against its Adj-RIB-Out.
    fn update_adj_out(&mut self, peer: PeerId, prefixes: &[Touched]) -> Outbound {
        let mut out = Outbound::default();
        let exports_learned = self.exports_learned_to(peer);
        for (prefix, _) in prefixes {
            let wanted = if exports_learned || self.originated.contains(prefix) {
                self.export(peer, prefix)
            } else {
                None
            };
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
        let policy = self.policy_for(peer);
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
        let dest = self.table.get(prefix)?;
        let choice = dest.choice?;
        let path = dest.paths.get(usize::from(choice.best))?;
        if path.peer == peer {
            return None;
        }
        if to_ibgp {
            if !choice.ebgp {
                return self.reflect(peer, info, prefix, path);
            }
            if !policy.ebgp_learned_to_ibgp {
                return None;
            }
            let mut attrs = PathAttributes::clone(&path.attributes);
            attrs.local_pref = Some(attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
            return with_next_hop(
                attrs,
                prefix,
                self.next_hop_mode(peer).choose(info, path, prefix, false)?,
            );
        }
        if !policy.learned_to_ebgp {
            return None;
        }
        let mut attrs = PathAttributes::clone(&path.attributes);
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
        with_next_hop(
            attrs,
            prefix,
            self.next_hop_mode(peer).choose(info, path, prefix, true)?,
        )
    }
}

impl Rib {
    /// RFC 4456 §6, §8, §10: the copy of an iBGP-learned best `path` that reflection sends to
    /// iBGP peer `to`, if any.
    fn reflect(
        &self,
        to: PeerId,
        to_info: &PeerInfo,
        prefix: &IpNetwork,
        path: &Held,
    ) -> Option<PathAttributes> {
        let from = self.peers.get(&path.peer)?;
        let to_client = self.peers.get(&to)?.client_of;
        // From a client: to clients and non-clients; from a non-client: to clients only.
        let cluster_id = from.client_of.or(to_client)?;
        let originator = path
            .attributes
            .originator_id
            .or_else(|| from.known().map(|i| i.router_id))?;
        if to_info.router_id == originator {
            return None; // never back to where the route began
        }
        let mut attrs = PathAttributes::clone(&path.attributes);
        attrs.originator_id = Some(originator);
        attrs.cluster_list.insert(0, cluster_id);
        attrs.local_pref = Some(attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        let next_hop = self
            .next_hop_mode(to)
            .choose(to_info, path, prefix, false)?;
        with_next_hop(attrs, prefix, next_hop)
    }
}

/// The RIB shared between the speaker task (the only writer) and readers such as the route
/// reconciler, which looks up the best routes it programs instead of keeping a copy of them.
/// Readers hold the lock briefly (one lookup, or one chunk of `for_each_best`).
#[derive(Debug, Clone)]
pub struct SharedRib(Arc<std::sync::RwLock<Rib>>);

impl SharedRib {
    pub fn new(rib: Rib) -> Self {
        SharedRib(Arc::new(std::sync::RwLock::new(rib)))
    }

    /// Read access. A writer that panicked leaves the RIB as it was between operations.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Rib> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write access, for the speaker task.
    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Rib> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// RFC 4271 §9.1.2.2 over the usable paths of one prefix.
fn choose(dest: &Dest, peers: &BTreeMap<PeerId, PeerRib>, local_asn: u32) -> Option<Choice> {
    let mut candidates: Candidates<'_> = dest
        .paths
        .iter()
        .enumerate()
        .filter_map(|(index, path)| {
            let info = peers.get(&path.peer)?.known()?;
            Some(Candidate {
                index,
                peer: path.peer,
                path,
                ebgp: info.peer_asn != local_asn,
                router_id: path.attributes.originator_id.unwrap_or(info.router_id),
                address: info.address,
            })
        })
        .collect();
    if candidates.len() > 1 {
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
        // RFC 4456 §9: ORIGINATOR_ID in place of the BGP identifier (`router_id`), then the
        // shorter CLUSTER_LIST.
        candidates.sort_by_key(|c| {
            (
                u32::from(c.router_id),
                c.path.attributes.cluster_list.len(),
                c.address,
                c.peer,
            )
        });
    }
    let best = candidates.first()?;
    let group = candidates
        .iter()
        .filter(|c| c.index < MAX_MULTIPATH)
        .fold(0u32, |mask, c| mask | (1 << c.index));
    Some(Choice {
        best: u16::try_from(best.index).ok()?,
        group,
        ebgp: best.ebgp,
    })
}

/// A path under selection.
struct Candidate<'a> {
    /// Position of the path in its `Dest`.
    index: usize,
    peer: PeerId,
    path: &'a Held,
    ebgp: bool,
    router_id: Ipv4Addr,
    address: IpAddr,
}

/// The paths under selection; most prefixes have one or two.
type Candidates<'a> = SmallVec<[Candidate<'a>; 4]>;

/// Keep only the candidates with the smallest key.
fn keep_min_by_key<K: Ord>(candidates: &mut Candidates<'_>, key: impl Fn(&Candidate<'_>) -> K) {
    let Some(min) = candidates.iter().map(&key).min() else {
        return;
    };
    candidates.retain(|c| key(c) == min);
}

/// §9.1.2.2 (c): drop a path when another path from the same neighbouring AS has a lower
/// MED (a missing MED counts as 0).
fn eliminate_by_med(candidates: &mut Candidates<'_>) {
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

#[cfg(test)]
#[path = "rib_policy_tests.rs"]
mod policy_tests;
