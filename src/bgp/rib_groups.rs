//! One Adj-RIB-Out per update group (issue 14), a child of `rib`.
//!
//! ```text
//!  peer_up(P) ──> GroupKey of P: iBGP or eBGP, export policy, reflection role (client of
//!                 which cluster), families, our address on the session, next-hop mode
//!                 └─> OutGroup { members, adj_out: prefix → Sent } (built when the first
//!                     member joins, dropped when the last leaves)
//!  reselect(touched) ──> per group: export(key, prefix) diffed once against its adj_out
//!                 └─> GroupChanges { members, changes (what every member gets),
//!                                    exceptions (split horizon, per member) }
//! ```
//! A `Sent` entry holds the exported attributes (the Loc-RIB's `Arc` when export does not
//! change them; one `Arc` per source UPDATE and group otherwise) and the split-horizon rule:
//! the peer the best path came from, and for a reflected route its ORIGINATOR_ID, never get
//! it. A member's own view is the group's map minus the entries whose rule names it (one
//! comparison per entry, no copy); how many entries withhold it is counted as they change,
//! so `counts` stays O(1).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::*;

/// What decides everything a peer is exported: peers with equal keys share one Adj-RIB-Out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct GroupKey {
    pub(super) ibgp: bool,
    pub(super) ebgp_learned_to_ibgp: bool,
    pub(super) learned_to_ebgp: bool,
    /// Our cluster ID when the members are our route-reflector clients.
    pub(super) client_of: Option<Ipv4Addr>,
    pub(super) ipv4: bool,
    pub(super) ipv6: bool,
    /// Our address on the session: next-hop self.
    pub(super) local_address: IpAddr,
    /// The NEXT_HOP of learned routes (Calico's `nextHopMode`).
    pub(super) next_hop: NextHopMode,
}

impl GroupKey {
    fn exports_learned(&self) -> bool {
        self.ebgp_learned_to_ibgp || self.learned_to_ebgp
    }
}

/// One prefix of a group's Adj-RIB-Out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sent {
    pub(super) attributes: Arc<PathAttributes>,
    /// Split horizon: the peer the best path came from is not sent it...
    pub(super) source: Option<PeerId>,
    /// ...nor, for a reflected route, a peer whose BGP identifier is its ORIGINATOR_ID.
    pub(super) originator: Option<Ipv4Addr>,
}

impl Sent {
    fn withholds(&self, peer: PeerId, router_id: Ipv4Addr) -> bool {
        self.source == Some(peer) || self.originator == Some(router_id)
    }
}

/// The Adj-RIB-Out of one update group.
#[derive(Debug, Default)]
pub(super) struct OutGroup {
    /// Members and their BGP identifiers.
    members: BTreeMap<PeerId, Ipv4Addr>,
    by_router_id: BTreeMap<Ipv4Addr, SmallVec<[PeerId; 1]>>,
    adj_out: BTreeMap<IpNetwork, Sent>,
}

impl OutGroup {
    /// The members an entry withholds from (at most a couple).
    fn withheld_from(&self, sent: &Sent, into: &mut SmallVec<[PeerId; 2]>) {
        if let Some(source) = sent.source.filter(|s| self.members.contains_key(s)) {
            into.push(source);
        }
        if let Some(peers) = sent.originator.and_then(|o| self.by_router_id.get(&o)) {
            into.extend(peers.iter().copied());
        }
    }
}

/// What one update group's members are sent after a RIB operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChanges {
    /// The members (Established peers), in id order.
    pub members: Vec<PeerId>,
    /// What every member is sent, apart from `exceptions`.
    pub changes: Outbound,
    /// Members whose changes differ (split horizon): what they are sent instead.
    pub exceptions: BTreeMap<PeerId, Exception>,
}

/// How one member's changes differ from its group's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exception {
    /// Prefixes of the group's changes this member is not sent, sorted.
    pub skip: Vec<IpNetwork>,
    /// What it is sent for them (and for prefixes the group's changes do not name).
    pub own: Outbound,
}

impl GroupChanges {
    /// The changes one member is sent.
    pub fn for_member(&self, peer: PeerId) -> Outbound {
        let Some(exception) = self.exceptions.get(&peer) else {
            return self.changes.clone();
        };
        let keep = |p: &IpNetwork| exception.skip.binary_search(p).is_err();
        let mut out = Outbound {
            announce: self
                .changes
                .announce
                .iter()
                .map(|(a, prefixes)| (a.clone(), prefixes.iter().copied().filter(keep).collect()))
                .filter(|(_, prefixes): &(_, Vec<IpNetwork>)| !prefixes.is_empty())
                .collect(),
            withdraw: self.changes.withdraw.iter().copied().filter(keep).collect(),
        };
        out.withdraw.extend(exception.own.withdraw.iter().copied());
        out.announce.extend(exception.own.announce.iter().cloned());
        out
    }

    /// Nobody is sent anything.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.exceptions.values().all(|e| e.own.is_empty())
    }
}

/// Packs announcements by equal attributes (a hash of the fields that tell routes apart,
/// then equality), so building one is linear in the prefixes.
#[derive(Debug, Default)]
pub(super) struct OutboundBuilder {
    out: Outbound,
    index: HashMap<u64, SmallVec<[usize; 1]>>,
}

impl OutboundBuilder {
    pub(super) fn announce(&mut self, attributes: &Arc<PathAttributes>, prefix: IpNetwork) {
        if let Some((last, prefixes)) = self.out.announce.last_mut() {
            if Arc::ptr_eq(last, attributes) {
                prefixes.push(prefix);
                return;
            }
        }
        let runs = self.index.entry(pack_key(attributes)).or_default();
        for &i in runs.iter() {
            if let Some((a, prefixes)) = self.out.announce.get_mut(i) {
                if **a == **attributes {
                    prefixes.push(prefix);
                    return;
                }
            }
        }
        runs.push(self.out.announce.len());
        self.out.announce.push((attributes.clone(), vec![prefix]));
    }

    pub(super) fn withdraw(&mut self, prefix: IpNetwork) {
        self.out.withdraw.push(prefix);
    }

    pub(super) fn finish(self) -> Outbound {
        self.out
    }
}

fn pack_key(attributes: &PathAttributes) -> u64 {
    let mut hasher = DefaultHasher::new();
    attributes.next_hop.hash(&mut hasher);
    attributes.originator_id.hash(&mut hasher);
    attributes.cluster_list.hash(&mut hasher);
    attributes.local_pref.hash(&mut hasher);
    attributes.med.hash(&mut hasher);
    attributes.communities.hash(&mut hasher);
    hasher.finish()
}

/// What one prefix's change means for one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Nothing,
    Announce,
    Withdraw,
}

/// The exports computed in one operation, by the Loc-RIB attributes they came from: a
/// source UPDATE's prefixes share one exported `Arc`.
#[derive(Debug, Default)]
pub(super) struct Memo(HashMap<MemoKey, Option<Sent>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum MemoKey {
    Originated {
        v4: bool,
    },
    Learned {
        attributes: usize,
        peer: PeerId,
        v4: bool,
    },
}

impl Memo {
    pub(super) fn get_or(
        &mut self,
        key: MemoKey,
        compute: impl FnOnce() -> Option<Sent>,
    ) -> Option<Sent> {
        self.0.entry(key).or_insert_with(compute).clone()
    }
}

/// The diff of one group, as it is built.
#[derive(Debug, Default)]
struct GroupDiff {
    changes: OutboundBuilder,
    exceptions: BTreeMap<PeerId, (Vec<IpNetwork>, OutboundBuilder)>,
}

impl GroupDiff {
    fn push(builder: &mut OutboundBuilder, action: Action, prefix: IpNetwork, new: Option<&Sent>) {
        match (action, new) {
            (Action::Announce, Some(sent)) => builder.announce(&sent.attributes, prefix),
            (Action::Withdraw, _) => builder.withdraw(prefix),
            _ => {}
        }
    }

    /// Record the change of one prefix from `old` to `new` (not equal); keeps the members'
    /// withheld counts.
    fn record(
        &mut self,
        group: &OutGroup,
        prefix: IpNetwork,
        old: Option<&Sent>,
        new: Option<&Sent>,
        peers: &mut BTreeMap<PeerId, PeerRib>,
    ) {
        let changed = match (old, new) {
            (Some(o), Some(n)) => o.attributes != n.attributes,
            _ => true,
        };
        let action = |had: bool, has: bool| match (had, has) {
            (true, true) if changed => Action::Announce,
            (false, true) => Action::Announce,
            (true, false) => Action::Withdraw,
            _ => Action::Nothing,
        };
        let generic = action(old.is_some(), new.is_some());
        Self::push(&mut self.changes, generic, prefix, new);
        let mut special = SmallVec::<[PeerId; 2]>::new();
        for sent in old.into_iter().chain(new) {
            group.withheld_from(sent, &mut special);
        }
        special.sort_unstable();
        special.dedup();
        for member in special {
            let Some(&router_id) = group.members.get(&member) else {
                continue;
            };
            let old_withholds = old.is_some_and(|o| o.withholds(member, router_id));
            let new_withholds = new.is_some_and(|n| n.withholds(member, router_id));
            if let Some(state) = peers.get_mut(&member) {
                state.withheld = (state.withheld + usize::from(new_withholds))
                    .saturating_sub(usize::from(old_withholds));
            }
            let mine = action(
                old.is_some() && !old_withholds,
                new.is_some() && !new_withholds,
            );
            if mine == generic {
                continue;
            }
            let (skip, own) = self.exceptions.entry(member).or_default();
            if generic != Action::Nothing {
                skip.push(prefix);
            }
            Self::push(own, mine, prefix, new);
        }
    }

    fn finish(self, group: &OutGroup) -> GroupChanges {
        GroupChanges {
            members: group.members.keys().copied().collect(),
            changes: self.changes.finish(),
            exceptions: self
                .exceptions
                .into_iter()
                .map(|(peer, (mut skip, own))| {
                    skip.sort_unstable();
                    let own = own.finish();
                    (peer, Exception { skip, own })
                })
                .collect(),
        }
    }
}

impl Rib {
    /// The update group an Established peer belongs to.
    pub(super) fn group_key(&self, peer: PeerId) -> Option<GroupKey> {
        let state = self.peers.get(&peer)?;
        let info = state.info.as_ref()?;
        let policy = state.export.unwrap_or(self.policy);
        Some(GroupKey {
            ibgp: info.peer_asn == self.local_asn,
            ebgp_learned_to_ibgp: policy.ebgp_learned_to_ibgp,
            learned_to_ebgp: policy.learned_to_ebgp,
            client_of: state.client_of,
            ipv4: info.ipv4,
            ipv6: info.ipv6,
            local_address: info.local_address,
            next_hop: state.next_hop,
        })
    }

    /// Whether learned routes can go to a group: its policy allows some, or we reflect.
    fn group_exports_learned(&self, key: &GroupKey) -> bool {
        key.exports_learned() || self.is_reflector()
    }

    /// Put an Established peer in the group of `key` (built when it is the first member).
    pub(super) fn join_group(&mut self, peer: PeerId, key: GroupKey) {
        let Some(router_id) = self.peer_info(peer).map(|i| i.router_id) else {
            return;
        };
        if !self.groups.contains_key(&key) {
            let group = self.build_group(&key);
            self.groups.insert(key, group);
        }
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        group.members.insert(peer, router_id);
        group.by_router_id.entry(router_id).or_default().push(peer);
        let withheld = group
            .adj_out
            .values()
            .filter(|s| s.withholds(peer, router_id))
            .count();
        if let Some(state) = self.peers.get_mut(&peer) {
            state.group = Some(key);
            state.withheld = withheld;
        }
    }

    /// Take a peer out of its group; the last member's leaving drops the group's map.
    pub(super) fn leave_group(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.withheld = 0;
        let Some(key) = state.group.take() else {
            return;
        };
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        if let Some(router_id) = group.members.remove(&peer) {
            if let Some(peers) = group.by_router_id.get_mut(&router_id) {
                peers.retain(|p| *p != peer);
                if peers.is_empty() {
                    group.by_router_id.remove(&router_id);
                }
            }
        }
        if group.members.is_empty() {
            self.groups.remove(&key);
        }
    }

    /// A new group's Adj-RIB-Out: everything its key exports.
    fn build_group(&self, key: &GroupKey) -> OutGroup {
        let mut memo = Memo::default();
        let mut adj_out = BTreeMap::new();
        let learned = self.group_exports_learned(key);
        let prefixes = self.originated.iter().copied().chain(
            self.table
                .iter()
                .filter(|(_, d)| learned && d.choice.is_some())
                .map(|(p, _)| p),
        );
        for prefix in prefixes {
            if let Some(sent) = self.export(key, &prefix, &mut memo) {
                adj_out.insert(prefix, sent);
            }
        }
        OutGroup {
            adj_out,
            ..OutGroup::default()
        }
    }

    /// A member's own Adj-RIB-Out: its group's minus what split horizon withholds from it.
    pub(super) fn view(
        &self,
        peer: PeerId,
    ) -> impl Iterator<Item = (&IpNetwork, &Arc<PathAttributes>)> + '_ {
        let group = self
            .peers
            .get(&peer)
            .and_then(|s| s.group.as_ref())
            .and_then(|k| self.groups.get(k));
        let router_id = group.and_then(|g| g.members.get(&peer).copied());
        group
            .into_iter()
            .flat_map(|g| g.adj_out.iter())
            .filter(move |(_, s)| router_id.is_some_and(|r| !s.withholds(peer, r)))
            .map(|(p, s)| (p, &s.attributes))
    }

    /// A member's view as the announcements of a full table.
    pub(super) fn view_outbound(&self, peer: PeerId) -> Outbound {
        let mut builder = OutboundBuilder::default();
        for (prefix, attributes) in self.view(peer) {
            builder.announce(attributes, *prefix);
        }
        builder.finish()
    }

    /// How many prefixes a peer is advertised.
    pub(super) fn advertised(&self, peer: PeerId) -> usize {
        let Some(state) = self.peers.get(&peer) else {
            return 0;
        };
        state
            .group
            .as_ref()
            .and_then(|k| self.groups.get(k))
            .map_or(0, |g| g.adj_out.len().saturating_sub(state.withheld))
    }

    /// Diff the export of `prefixes` to every group against its Adj-RIB-Out.
    pub(super) fn update_groups(&mut self, prefixes: &[Touched]) -> Vec<GroupChanges> {
        let keys: Vec<GroupKey> = self.groups.keys().copied().collect();
        keys.into_iter()
            .map(|key| self.update_group(key, prefixes))
            .filter(|changes| !changes.is_empty())
            .collect()
    }

    fn update_group(&mut self, key: GroupKey, prefixes: &[Touched]) -> GroupChanges {
        let Some(mut group) = self.groups.remove(&key) else {
            return GroupChanges::default();
        };
        let learned = self.group_exports_learned(&key);
        let mut memo = Memo::default();
        let mut diff = GroupDiff::default();
        for (prefix, _) in prefixes {
            let new = if learned || self.originated.contains(prefix) {
                self.export(&key, prefix, &mut memo)
            } else {
                None
            };
            let old = group.adj_out.get(prefix);
            if old == new.as_ref() {
                continue;
            }
            diff.record(&group, *prefix, old, new.as_ref(), &mut self.peers);
            match new {
                Some(sent) => group.adj_out.insert(*prefix, sent),
                None => group.adj_out.remove(prefix),
            };
        }
        let changes = diff.finish(&group);
        self.groups.insert(key, group);
        changes
    }
}

/// The changes that turn one Adj-RIB-Out into another (a peer that changed groups).
pub(super) fn diff_views(
    old: &BTreeMap<IpNetwork, Arc<PathAttributes>>,
    new: &BTreeMap<IpNetwork, Arc<PathAttributes>>,
) -> Outbound {
    let mut builder = OutboundBuilder::default();
    for (prefix, attributes) in new {
        if old.get(prefix) != Some(attributes) {
            builder.announce(attributes, *prefix);
        }
    }
    for prefix in old.keys() {
        if !new.contains_key(prefix) {
            builder.withdraw(*prefix);
        }
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::packet::WireOptions;
    use crate::bgp::update_groups::{encode_group, UpdateStats};

    const AS: u32 = 64512;
    const CLUSTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn info(n: u8, asn: u32) -> PeerInfo {
        PeerInfo {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
            peer_asn: asn,
            router_id: Ipv4Addr::new(10, 0, 0, n),
            local_address: "10.0.0.1".parse().unwrap(),
            ipv4: true,
            ipv6: false,
        }
    }

    fn block(n: u8) -> IpNetwork {
        format!("10.244.{n}.0/26").parse().unwrap()
    }

    /// Client `n`'s route to `prefixes` (next hop itself).
    fn route(n: u8, local_pref: u32, prefixes: &[IpNetwork]) -> Update {
        Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::default()),
                next_hop: Some(Ipv4Addr::new(10, 0, 0, n)),
                local_pref: Some(local_pref),
                ..PathAttributes::default()
            },
            nlri: prefixes.to_vec(),
            ..Update::default()
        }
    }

    fn client_up(rib: &mut Rib, n: u8) -> PeerId {
        let id = PeerId(u32::from(n));
        rib.set_reflection(
            id,
            Some(Reflection::Client {
                cluster_id: CLUSTER,
            }),
        );
        rib.add_peer(id);
        rib.peer_up(id, info(n, AS));
        id
    }

    fn reflector(clients: &[u8]) -> (Rib, Vec<PeerId>) {
        let mut rib = Rib::new(AS, CLUSTER, ExportPolicy::default());
        let ids = clients.iter().map(|n| client_up(&mut rib, *n)).collect();
        (rib, ids)
    }

    #[test]
    fn reflector_clients_share_one_adj_rib_out_that_the_last_to_leave_drops() {
        let (mut rib, ids) = reflector(&[2, 3, 4]);
        assert_eq!(rib.groups.len(), 1, "one key, one group");
        let out = rib.receive_update(ids[0], &route(2, 100, &[block(2)]));
        let [changes] = &out.groups[..] else {
            panic!("one group's changes: {out:?}")
        };
        assert_eq!(changes.members, ids);
        assert_eq!(changes.changes.announced_len(), 1);
        let source = &changes.exceptions[&ids[0]];
        assert_eq!(source.skip, vec![block(2)], "not sent back to its source");
        assert!(source.own.is_empty());
        assert_eq!(changes.exceptions.len(), 1);
        assert_eq!(
            (
                rib.counts(ids[0]).1,
                rib.counts(ids[1]).1,
                rib.counts(ids[2]).1
            ),
            (0, 1, 1)
        );
        let (a, b) = (rib.adj_out(ids[1]).unwrap(), rib.adj_out(ids[2]).unwrap());
        assert!(Arc::ptr_eq(&a[&block(2)], &b[&block(2)]), "one entry");
        // A client joining later gets the group's table as its own view.
        let late = PeerId(5);
        rib.set_reflection(
            late,
            Some(Reflection::Client {
                cluster_id: CLUSTER,
            }),
        );
        rib.add_peer(late);
        let table = rib.peer_up(late, info(5, AS));
        assert_eq!(table.announced_len(), 1);
        assert!(Arc::ptr_eq(&table.announce[0].0, &a[&block(2)]));
        assert_eq!(rib.groups.len(), 1);
        // The source leaves: the others are told to withdraw, once for the group.
        let out = rib.peer_down(ids[0], false);
        assert_eq!(out.groups.len(), 1);
        assert_eq!(out.groups[0].changes.withdraw, vec![block(2)]);
        assert!(out.groups[0].exceptions.is_empty());
        for id in [ids[1], ids[2], late] {
            assert_eq!(rib.groups.len(), 1);
            rib.peer_down(id, false);
        }
        assert!(
            rib.groups.is_empty(),
            "the last member took the map with it"
        );
        assert_eq!(rib.counts(late), (0, 0));
    }

    #[test]
    fn an_export_policy_change_moves_a_peer_to_another_group_with_its_own_diff() {
        let mut rib = Rib::new(AS, CLUSTER, ExportPolicy::default());
        for n in [2, 3, 9] {
            rib.add_peer(PeerId(u32::from(n)));
            rib.peer_up(
                PeerId(u32::from(n)),
                info(n, if n == 9 { 65001 } else { AS }),
            );
        }
        let (plain, moved, tor) = (PeerId(2), PeerId(3), PeerId(9));
        let mut default_route = route(9, 100, &["0.0.0.0/0".parse().unwrap()]);
        default_route.attributes.as_path = Some(AsPath::from_sequence(vec![65001]));
        let out = rib.receive_update(tor, &default_route);
        assert!(
            out.outbound().is_empty(),
            "eBGP-learned routes stay off iBGP by default"
        );
        assert_eq!(rib.groups.len(), 2, "iBGP and eBGP");
        let to_ibgp = ExportPolicy {
            ebgp_learned_to_ibgp: true,
            learned_to_ebgp: false,
        };
        rib.set_export(moved, to_ibgp);
        let out = rib.refresh_exports();
        assert!(
            out.groups.is_empty(),
            "the groups that stay have nothing new"
        );
        assert_eq!(out.single.keys().collect::<Vec<_>>(), [&moved]);
        assert_eq!(out.single[&moved].announced_len(), 1);
        assert_eq!(rib.groups.len(), 3);
        assert_eq!((rib.counts(plain).1, rib.counts(moved).1), (0, 1));
        // And back into the first group: withdrawn.
        rib.set_export(moved, ExportPolicy::default());
        let out = rib.refresh_exports();
        assert_eq!(
            out.single[&moved].withdraw,
            vec!["0.0.0.0/0".parse().unwrap()]
        );
        assert_eq!(rib.groups.len(), 2);
        assert_eq!(rib.counts(moved).1, 0);
    }

    #[test]
    fn best_path_moving_between_two_members_is_withdrawn_from_the_new_source_only() {
        let (mut rib, ids) = reflector(&[2, 3, 4]);
        let (old_source, new_source, other) = (ids[0], ids[1], ids[2]);
        rib.receive_update(old_source, &route(2, 100, &[block(7)]));
        let out = rib.receive_update(new_source, &route(3, 200, &[block(7)]));
        let [changes] = &out.groups[..] else {
            panic!("one group's changes: {out:?}")
        };
        // The old source had nothing and now gets the new best path like everyone else; the
        // new source had the old one and must withdraw it.
        assert!(!changes.exceptions.contains_key(&old_source));
        let exception = &changes.exceptions[&new_source];
        assert_eq!(exception.skip, vec![block(7)]);
        assert_eq!(exception.own.withdraw, vec![block(7)]);
        let per_peer = out.outbound();
        for peer in [old_source, other] {
            let (attrs, prefixes) = &per_peer[&peer].announce[0];
            assert_eq!(
                (attrs.originator_id, prefixes.clone()),
                (Some(Ipv4Addr::new(10, 0, 0, 3)), vec![block(7)])
            );
        }
        assert_eq!(per_peer[&new_source].withdraw, vec![block(7)]);
        assert_eq!(
            (
                rib.counts(old_source).1,
                rib.counts(new_source).1,
                rib.counts(other).1
            ),
            (1, 0, 1)
        );
        // Encoded for the wire: the two receivers of the new path share its bytes.
        let wire = WireOptions {
            four_octet_as: true,
            extended_message: false,
        };
        let stats = UpdateStats::default();
        let (deliveries, errors) = encode_group(changes, &changes.members, &wire, &stats);
        assert!(errors.is_empty());
        let of = |peer| deliveries.iter().find(|d| d.peer == peer).unwrap();
        assert!(Arc::ptr_eq(
            &of(old_source).messages[0],
            &of(other).messages[0]
        ));
        assert!(!of(new_source)
            .messages
            .iter()
            .any(|m| Arc::ptr_eq(m, &of(other).messages[0])));
    }

    #[test]
    fn a_batch_of_updates_from_many_clients_is_one_diff_with_each_source_excepted() {
        let clients: Vec<u8> = (2..12).collect();
        let (mut rib, ids) = reflector(&clients);
        let updates: Vec<(PeerId, Update)> = ids
            .iter()
            .zip(&clients)
            .map(|(id, n)| (*id, route(*n, 100, &[block(*n), block(*n + 100)])))
            .collect();
        let out = rib.receive_updates(updates.iter().map(|(id, u)| (*id, u)));
        assert_eq!(out.events.len(), 20);
        let [changes] = &out.groups[..] else {
            panic!("one group's changes: {out:?}")
        };
        assert_eq!(changes.changes.announce.len(), 10, "one run per source");
        assert_eq!(changes.changes.announced_len(), 20);
        for (id, n) in ids.iter().zip(&clients) {
            assert_eq!(
                changes.exceptions[id].skip,
                vec![block(*n), block(*n + 100)]
            );
            assert_eq!(rib.counts(*id).1, 18);
        }
    }
}
