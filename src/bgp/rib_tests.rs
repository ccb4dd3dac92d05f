//! RIB tests: best path, multipath, export policy, packing, graceful restart, route reflection.

use super::*;
use crate::bgp::packet::{encode_updates, Family, WireOptions};

const LOCAL_AS: u32 = 64512;
const TOR_AS: u32 = 65001;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rib() -> Rib {
    Rib::new(
        LOCAL_AS,
        Ipv4Addr::new(10, 0, 0, 1),
        ExportPolicy::default(),
    )
}

fn info(n: u8, asn: u32) -> PeerInfo {
    PeerInfo {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        peer_asn: asn,
        router_id: Ipv4Addr::new(10, 0, 0, n),
        local_address: ip("10.0.0.1"),
        ipv4: true,
        ipv6: false,
    }
}

/// Bring peer `n` up with `asn`; returns its id.
fn up(rib: &mut Rib, n: u8, asn: u32) -> PeerId {
    let id = PeerId(u32::from(n));
    rib.add_peer(id);
    rib.peer_up(id, info(n, asn));
    id
}

fn attrs(path: &[u32], next_hop: &str) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path.to_vec())),
        next_hop: Some(next_hop.parse().unwrap()),
        ..PathAttributes::default()
    }
}

fn announce(attributes: PathAttributes, prefixes: &[&str]) -> Update {
    Update {
        attributes,
        nlri: prefixes.iter().map(|p| net(p)).collect(),
        ..Update::default()
    }
}

fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|p| net(p)).collect(),
        ..Update::default()
    }
}

fn hops(rib: &Rib, prefix: &str) -> Vec<IpAddr> {
    rib.selected(&net(prefix))
        .map(|s| s.next_hops.clone())
        .unwrap_or_default()
}

#[test]
fn single_ibgp_path_becomes_best_and_is_reported() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let out = rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.1.0/26"]));
    assert_eq!(
        out.events,
        vec![RibEvent::Changed(BestRoute {
            prefix: net("10.244.1.0/26"),
            next_hops: vec![ip("10.0.0.2")],
        })]
    );
    assert_eq!(rib.best_routes().len(), 1);
    assert_eq!(rib.counts(a), (1, 0));
}

#[test]
fn ibgp_learned_route_is_never_sent_to_ibgp_peers() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let b = up(&mut rib, 3, LOCAL_AS);
    let out = rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.1.0/26"]));
    assert!(out.outbound().is_empty(), "{out:?}");
    assert!(rib.adj_out(b).unwrap().is_empty());
}

#[test]
fn mesh_ecmp_when_two_ibgp_paths_tie() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let b = up(&mut rib, 3, LOCAL_AS);
    rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.9.0/26"]));
    let out = rib.receive_update(b, &announce(attrs(&[], "10.0.0.3"), &["10.244.9.0/26"]));
    assert_eq!(
        hops(&rib, "10.244.9.0/26"),
        vec![ip("10.0.0.2"), ip("10.0.0.3")]
    );
    let selected = rib.selected(&net("10.244.9.0/26")).unwrap();
    assert_eq!(selected.best, a, "lowest router id is best");
    assert_eq!(selected.multipath, vec![a, b]);
    assert_eq!(out.events.len(), 1);
}

#[test]
fn ecmp_shrinks_when_one_path_is_withdrawn() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let b = up(&mut rib, 3, LOCAL_AS);
    rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.9.0/26"]));
    rib.receive_update(b, &announce(attrs(&[], "10.0.0.3"), &["10.244.9.0/26"]));
    let out = rib.receive_update(a, &withdraw(&["10.244.9.0/26"]));
    assert_eq!(
        out.events,
        vec![RibEvent::Changed(BestRoute {
            prefix: net("10.244.9.0/26"),
            next_hops: vec![ip("10.0.0.3")],
        })]
    );
    let out = rib.receive_update(b, &withdraw(&["10.244.9.0/26"]));
    assert_eq!(out.events, vec![RibEvent::Removed(net("10.244.9.0/26"))]);
    assert!(rib.best_routes().is_empty());
}

#[test]
fn higher_local_pref_wins_over_shorter_path() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let b = up(&mut rib, 3, LOCAL_AS);
    let mut preferred = attrs(&[65001, 65002], "10.0.0.3");
    preferred.local_pref = Some(200);
    rib.receive_update(a, &announce(attrs(&[65001], "10.0.0.2"), &["192.0.2.0/24"]));
    rib.receive_update(b, &announce(preferred, &["192.0.2.0/24"]));
    assert_eq!(hops(&rib, "192.0.2.0/24"), vec![ip("10.0.0.3")]);
}

#[test]
fn shorter_as_path_wins() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let b = up(&mut rib, 3, 65002);
    rib.receive_update(
        a,
        &announce(attrs(&[TOR_AS, 65100], "10.0.0.2"), &["0.0.0.0/0"]),
    );
    rib.receive_update(b, &announce(attrs(&[65002], "10.0.0.3"), &["0.0.0.0/0"]));
    assert_eq!(hops(&rib, "0.0.0.0/0"), vec![ip("10.0.0.3")]);
}

#[test]
fn lower_origin_wins() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let b = up(&mut rib, 3, 65002);
    let mut incomplete = attrs(&[TOR_AS], "10.0.0.2");
    incomplete.origin = Some(Origin::Incomplete);
    rib.receive_update(a, &announce(incomplete, &["0.0.0.0/0"]));
    let mut egp = attrs(&[65002], "10.0.0.3");
    egp.origin = Some(Origin::Egp);
    rib.receive_update(b, &announce(egp, &["0.0.0.0/0"]));
    assert_eq!(hops(&rib, "0.0.0.0/0"), vec![ip("10.0.0.3")]);
}

#[test]
fn med_compared_only_within_the_same_neighbour_as() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let b = up(&mut rib, 3, TOR_AS);
    let c = up(&mut rib, 4, 65002);
    let with_med = |path: &[u32], nh: &str, med: u32| {
        let mut a = attrs(path, nh);
        a.med = Some(med);
        a
    };
    rib.receive_update(
        a,
        &announce(with_med(&[TOR_AS], "10.0.0.2", 50), &["0.0.0.0/0"]),
    );
    rib.receive_update(
        b,
        &announce(with_med(&[TOR_AS], "10.0.0.3", 10), &["0.0.0.0/0"]),
    );
    rib.receive_update(
        c,
        &announce(with_med(&[65002], "10.0.0.4", 99), &["0.0.0.0/0"]),
    );
    // 10.0.0.2 loses to 10.0.0.3 on MED (same AS); 10.0.0.4 is another AS and survives.
    assert_eq!(
        hops(&rib, "0.0.0.0/0"),
        vec![ip("10.0.0.3"), ip("10.0.0.4")]
    );
    assert_eq!(rib.selected(&net("0.0.0.0/0")).unwrap().best, b);
}

#[test]
fn ebgp_preferred_over_ibgp() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let b = up(&mut rib, 3, TOR_AS);
    rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["198.51.100.0/24"]));
    rib.receive_update(b, &announce(attrs(&[], "10.0.0.3"), &["198.51.100.0/24"]));
    // Equal path length (both empty): eBGP wins.
    let selected = rib.selected(&net("198.51.100.0/24")).unwrap();
    assert_eq!(selected.best, b);
    assert!(selected.ebgp);
    assert_eq!(selected.next_hops, vec![ip("10.0.0.3")]);
}

#[test]
fn two_tors_give_ecmp() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let b = up(&mut rib, 3, 65002);
    rib.receive_update(a, &announce(attrs(&[TOR_AS], "10.0.0.2"), &["0.0.0.0/0"]));
    rib.receive_update(b, &announce(attrs(&[65002], "10.0.0.3"), &["0.0.0.0/0"]));
    assert_eq!(
        hops(&rib, "0.0.0.0/0"),
        vec![ip("10.0.0.2"), ip("10.0.0.3")]
    );
}

#[test]
fn ebgp_local_pref_is_ignored() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let b = up(&mut rib, 3, 65002);
    let mut pushy = attrs(&[TOR_AS], "10.0.0.2");
    pushy.local_pref = Some(1000);
    rib.receive_update(a, &announce(pushy, &["0.0.0.0/0"]));
    rib.receive_update(b, &announce(attrs(&[65002], "10.0.0.3"), &["0.0.0.0/0"]));
    assert_eq!(hops(&rib, "0.0.0.0/0").len(), 2);
}

#[test]
fn ebgp_path_with_our_as_is_dropped() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let out = rib.receive_update(
        a,
        &announce(attrs(&[TOR_AS, LOCAL_AS], "10.0.0.2"), &["10.244.1.0/26"]),
    );
    assert!(out.events.is_empty());
    assert_eq!(rib.counts(a), (0, 0));
}

#[test]
fn loop_replacing_a_good_path_removes_it() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    rib.receive_update(a, &announce(attrs(&[TOR_AS], "10.0.0.2"), &["0.0.0.0/0"]));
    let out = rib.receive_update(
        a,
        &announce(attrs(&[TOR_AS, LOCAL_AS], "10.0.0.2"), &["0.0.0.0/0"]),
    );
    assert_eq!(out.events, vec![RibEvent::Removed(net("0.0.0.0/0"))]);
}

#[test]
fn unusable_next_hop_is_dropped() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let out = rib.receive_update(a, &announce(attrs(&[], "0.0.0.0"), &["10.244.1.0/26"]));
    assert!(out.events.is_empty());
}

#[test]
fn originated_prefixes_go_to_every_peer_with_next_hop_self() {
    let mut rib = rib();
    let mesh = up(&mut rib, 2, LOCAL_AS);
    let tor = up(&mut rib, 3, TOR_AS);
    let out = rib.set_originated(BTreeSet::from([
        net("10.244.0.0/26"),
        net("10.244.0.64/26"),
    ]));
    assert!(
        out.events.is_empty(),
        "local blocks are not routes for the reconciler"
    );
    let to_mesh = &out.outbound()[&mesh];
    assert_eq!(to_mesh.announce.len(), 1, "one attribute set: one group");
    let (mesh_attrs, mesh_prefixes) = &to_mesh.announce[0];
    assert_eq!(mesh_prefixes.len(), 2);
    assert_eq!(mesh_attrs.next_hop, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(mesh_attrs.local_pref, Some(100));
    assert_eq!(mesh_attrs.as_path, Some(AsPath::default()));
    let (tor_attrs, _) = &out.outbound()[&tor].announce[0];
    assert_eq!(
        tor_attrs.as_path,
        Some(AsPath::from_sequence(vec![LOCAL_AS]))
    );
    assert_eq!(tor_attrs.local_pref, None);
    assert_eq!(rib.counts(tor), (0, 2));
}

#[test]
fn removing_an_originated_prefix_withdraws_it() {
    let mut rib = rib();
    let mesh = up(&mut rib, 2, LOCAL_AS);
    rib.set_originated(BTreeSet::from([
        net("10.244.0.0/26"),
        net("10.244.0.64/26"),
    ]));
    let out = rib.set_originated(BTreeSet::from([net("10.244.0.0/26")]));
    assert_eq!(out.outbound()[&mesh].withdraw, vec![net("10.244.0.64/26")]);
    assert!(out.outbound()[&mesh].announce.is_empty());
    let out = rib.set_originated(BTreeSet::from([net("10.244.0.0/26")]));
    assert!(out.outbound().is_empty(), "no change, nothing sent");
}

#[test]
fn peer_up_sends_the_full_table() {
    let mut rib = rib();
    rib.set_originated(BTreeSet::from([net("10.244.0.0/26")]));
    let id = PeerId(7);
    rib.add_peer(id);
    let out = rib.peer_up(id, info(7, LOCAL_AS));
    assert_eq!(out.announced_len(), 1);
    // A peer that comes back gets everything again.
    rib.peer_down(id, false);
    let out = rib.peer_up(id, info(7, LOCAL_AS));
    assert_eq!(out.announced_len(), 1);
}

#[test]
fn ebgp_learned_routes_are_not_exported_by_default() {
    let mut rib = rib();
    let tor = up(&mut rib, 2, TOR_AS);
    let mesh = up(&mut rib, 3, LOCAL_AS);
    let other_tor = up(&mut rib, 4, 65002);
    let out = rib.receive_update(tor, &announce(attrs(&[TOR_AS], "10.0.0.2"), &["0.0.0.0/0"]));
    assert!(out.outbound().is_empty());
    assert!(rib.adj_out(mesh).unwrap().is_empty());
    assert!(rib.adj_out(other_tor).unwrap().is_empty());
}

#[test]
fn export_policy_can_send_ebgp_routes_to_the_mesh_and_other_tors() {
    let policy = ExportPolicy {
        ebgp_learned_to_ibgp: true,
        learned_to_ebgp: true,
    };
    let mut rib = Rib::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1), policy);
    let tor = up(&mut rib, 2, TOR_AS);
    let mesh = up(&mut rib, 3, LOCAL_AS);
    let other_tor = up(&mut rib, 4, 65002);
    let out = rib.receive_update(tor, &announce(attrs(&[TOR_AS], "10.0.0.2"), &["0.0.0.0/0"]));
    let (to_mesh, _) = &out.outbound()[&mesh].announce[0];
    assert_eq!(to_mesh.next_hop, Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(to_mesh.local_pref, Some(100));
    let (to_tor, _) = &out.outbound()[&other_tor].announce[0];
    assert_eq!(to_tor.next_hop, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(
        to_tor.as_path,
        Some(AsPath::from_sequence(vec![LOCAL_AS, TOR_AS]))
    );
    assert!(
        !out.outbound().contains_key(&tor),
        "never back to the source"
    );
    // And iBGP-learned routes still never go to iBGP peers.
    let mesh2 = up(&mut rib, 5, LOCAL_AS);
    let out = rib.receive_update(mesh, &announce(attrs(&[], "10.0.0.3"), &["10.244.3.0/26"]));
    assert!(!out.outbound().contains_key(&mesh2));
}

#[test]
fn originated_prefix_hides_a_learned_copy() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    rib.set_originated(BTreeSet::from([net("10.244.0.0/26")]));
    let out = rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.0.0/26"]));
    assert!(out.events.is_empty());
    assert!(rib.best_routes().is_empty());
}

#[test]
fn graceful_down_keeps_stale_paths_until_end_of_rib() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    rib.receive_update(
        a,
        &announce(attrs(&[], "10.0.0.2"), &["10.244.1.0/26", "10.244.2.0/26"]),
    );
    let out = rib.peer_down(a, true);
    assert!(out.events.is_empty(), "stale routes keep forwarding");
    assert_eq!(rib.stale_count(a), 2);
    assert_eq!(rib.best_routes().len(), 2);
    rib.peer_up(a, info(2, LOCAL_AS));
    // The peer refreshes one prefix, then End-of-RIB.
    rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.1.0/26"]));
    assert_eq!(rib.stale_count(a), 1);
    let eor = Update {
        end_of_rib: Some(Family::IPV4_UNICAST),
        ..Update::default()
    };
    let out = rib.receive_update(a, &eor);
    assert_eq!(out.events, vec![RibEvent::Removed(net("10.244.2.0/26"))]);
    assert_eq!(rib.best_routes().len(), 1);
}

#[test]
fn stale_timer_expiry_purges() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.1.0/26"]));
    rib.peer_down(a, true);
    let out = rib.purge_stale(a);
    assert_eq!(out.events, vec![RibEvent::Removed(net("10.244.1.0/26"))]);
}

#[test]
fn hard_down_withdraws_everything() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.1.0/26"]));
    let out = rib.peer_down(a, false);
    assert_eq!(out.events, vec![RibEvent::Removed(net("10.244.1.0/26"))]);
    assert_eq!(rib.counts(a), (0, 0));
}

#[test]
fn remove_peer_withdraws_its_paths() {
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    rib.receive_update(a, &announce(attrs(&[], "10.0.0.2"), &["10.244.1.0/26"]));
    let out = rib.remove_peer(a);
    assert_eq!(out.events, vec![RibEvent::Removed(net("10.244.1.0/26"))]);
}

#[test]
fn updates_before_established_are_ignored() {
    let mut rib = rib();
    let id = PeerId(9);
    rib.add_peer(id);
    let out = rib.receive_update(id, &announce(attrs(&[], "10.0.0.9"), &["10.244.1.0/26"]));
    assert_eq!(out, RibOutput::default());
}

#[test]
fn ipv6_prefixes_only_to_ipv6_sessions_with_mp_next_hop() {
    let mut rib = rib();
    let id = PeerId(6);
    rib.add_peer(id);
    let v6 = PeerInfo {
        address: ip("fd00::2"),
        local_address: ip("fd00::1"),
        ipv4: false,
        ipv6: true,
        ..info(6, LOCAL_AS)
    };
    rib.peer_up(id, v6);
    let v4_peer = up(&mut rib, 2, LOCAL_AS);
    let out = rib.set_originated(BTreeSet::from([net("fd10::/122"), net("10.244.0.0/26")]));
    let (attrs, prefixes) = &out.outbound()[&id].announce[0];
    assert_eq!(prefixes, &vec![net("fd10::/122")]);
    assert_eq!(
        attrs.mp_next_hop,
        Some(MpNextHop::Ipv6 {
            global: "fd00::1".parse().unwrap(),
            link_local: None
        })
    );
    assert_eq!(out.outbound()[&v4_peer].announced_len(), 1);
}

#[test]
fn packing_many_blocks_into_few_updates() {
    let mut rib = rib();
    let mesh = up(&mut rib, 2, LOCAL_AS);
    let blocks: BTreeSet<IpNetwork> = (0..2000u32)
        .map(|i| {
            let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 64;
            IpNetwork::new(IpAddr::V4(Ipv4Addr::from(base)), 26).unwrap()
        })
        .collect();
    let out = rib.set_originated(blocks);
    let outbound = &out.outbound()[&mesh];
    assert_eq!(outbound.announce.len(), 1);
    let (attrs, prefixes) = &outbound.announce[0];
    let messages = encode_updates(attrs, prefixes, &[], &WireOptions::default()).unwrap();
    // 2000 × 5 bytes = 10 kB of NLRI: three 4 kB UPDATEs, each within the limit.
    assert_eq!(messages.len(), 3);
    assert!(messages.iter().all(|m| m.len() <= 4096));
}

#[test]
fn mixed_attribute_sets_make_separate_groups() {
    let policy = ExportPolicy {
        ebgp_learned_to_ibgp: true,
        learned_to_ebgp: false,
    };
    let mut rib = Rib::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1), policy);
    let tor = up(&mut rib, 2, TOR_AS);
    let mesh = up(&mut rib, 3, LOCAL_AS);
    rib.set_originated(BTreeSet::from([net("10.244.0.0/26")]));
    rib.receive_update(tor, &announce(attrs(&[TOR_AS], "10.0.0.2"), &["0.0.0.0/0"]));
    rib.peer_down(mesh, false);
    let out = rib.peer_up(mesh, info(3, LOCAL_AS));
    assert_eq!(out.announce.len(), 2);
    assert_eq!(out.announced_len(), 2);
}

#[test]
fn a_table_entry_stays_small() {
    // What one learned prefix costs besides the map's own key and node overhead.
    assert!(
        std::mem::size_of::<Dest>() <= 32,
        "{}",
        std::mem::size_of::<Dest>()
    );
    assert!(std::mem::size_of::<Held>() <= 16);
}

#[test]
fn prefixes_of_one_update_share_one_copy_of_the_attributes() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    rib.receive_update(
        a,
        &announce(
            attrs(&[TOR_AS], "10.0.0.2"),
            &["192.0.2.0/24", "198.51.100.0/24"],
        ),
    );
    let adj = rib.adj_in(a).unwrap();
    let paths: Vec<&Path> = adj.values().collect();
    assert_eq!(paths.len(), 2);
    assert!(Arc::ptr_eq(&paths[0].attributes, &paths[1].attributes));
}

#[test]
fn an_identical_reannouncement_changes_nothing_the_reconciler_sees() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let update = announce(attrs(&[TOR_AS], "10.0.0.2"), &["192.0.2.0/24"]);
    assert_eq!(rib.receive_update(a, &update).events.len(), 1);
    assert!(rib.receive_update(a, &update).events.is_empty());
    // A new next hop is a change.
    let moved = announce(attrs(&[TOR_AS], "10.0.0.9"), &["192.0.2.0/24"]);
    assert_eq!(
        rib.receive_update(a, &moved).events,
        vec![RibEvent::Changed(BestRoute {
            prefix: net("192.0.2.0/24"),
            next_hops: vec![ip("10.0.0.9")],
        })]
    );
}

#[test]
fn counters_follow_announcements_withdrawals_and_graceful_restart() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let b = up(&mut rib, 3, TOR_AS);
    rib.receive_update(
        a,
        &announce(
            attrs(&[TOR_AS], "10.0.0.2"),
            &["192.0.2.0/24", "198.51.100.0/24"],
        ),
    );
    rib.receive_update(
        b,
        &announce(attrs(&[TOR_AS], "10.0.0.3"), &["192.0.2.0/24"]),
    );
    assert_eq!(rib.counts(a).0, 2);
    assert_eq!(rib.counts(b).0, 1);
    assert_eq!(rib.best_len(), 2);
    rib.receive_update(a, &withdraw(&["198.51.100.0/24"]));
    assert_eq!((rib.counts(a).0, rib.best_len()), (1, 1));
    // Graceful restart of b: its path is stale, still counted and still usable.
    rib.peer_down(b, true);
    assert_eq!((rib.stale_count(b), rib.counts(b).0), (1, 1));
    rib.peer_up(b, info(3, TOR_AS));
    rib.receive_update(
        b,
        &announce(attrs(&[TOR_AS], "10.0.0.3"), &["192.0.2.0/24"]),
    );
    assert_eq!(rib.stale_count(b), 0, "a refreshed path is no longer stale");
    // Our own block is never a learned best route, and counts follow origination.
    rib.set_originated(BTreeSet::from([net("192.0.2.0/24")]));
    assert_eq!(rib.best_len(), 0);
    assert!(rib.best_routes().is_empty());
    rib.set_originated(BTreeSet::new());
    assert_eq!(rib.best_len(), 1);
    rib.remove_peer(a);
    rib.remove_peer(b);
    assert_eq!(rib.best_len(), 0);
    assert_eq!(rib.next_hops(&net("192.0.2.0/24")).len(), 0);
}

#[test]
fn for_each_best_walks_in_chunks_without_gaps() {
    let mut rib = rib();
    let a = up(&mut rib, 2, TOR_AS);
    let prefixes: Vec<String> = (0..100).map(|i| format!("203.0.{i}.0/24")).collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    rib.receive_update(a, &announce(attrs(&[TOR_AS], "10.0.0.2"), &refs));
    let mut seen = Vec::new();
    let mut after = None;
    while let Some(last) = rib.for_each_best(after, 7, |p, hops| {
        assert_eq!(hops, [ip("10.0.0.2")]);
        seen.push(p);
    }) {
        after = Some(last);
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

// ---- Route reflection (RFC 4456) ----

const CLUSTER: Ipv4Addr = Ipv4Addr::new(1, 0, 0, 1);

/// A reflector (router id 10.0.0.1, cluster 1.0.0.1) with clients 2 and 3 and non-client 4
/// (another reflector), all iBGP.
fn reflector() -> (Rib, PeerId, PeerId, PeerId) {
    let mut rib = rib();
    let client = Some(Reflection::Client {
        cluster_id: CLUSTER,
    });
    for n in [2, 3] {
        rib.set_reflection(PeerId(n), client);
    }
    let c2 = up(&mut rib, 2, LOCAL_AS);
    let c3 = up(&mut rib, 3, LOCAL_AS);
    let plain = up(&mut rib, 4, LOCAL_AS);
    (rib, c2, c3, plain)
}

fn client_route(next_hop: &str) -> PathAttributes {
    PathAttributes {
        local_pref: Some(100),
        med: Some(7),
        ..attrs(&[], next_hop)
    }
}

/// The attributes `peer` is sent for `prefix` in `out`.
fn sent(out: &RibOutput, peer: PeerId, prefix: &str) -> Option<PathAttributes> {
    out.outbound()
        .get(&peer)?
        .announce
        .iter()
        .find_map(|(a, prefixes)| {
            prefixes
                .contains(&net(prefix))
                .then(|| PathAttributes::clone(a))
        })
}

#[test]
fn rr_client_route_goes_to_clients_and_non_clients_with_originator_and_cluster_list() {
    let (mut rib, c2, c3, plain) = reflector();
    let original = client_route("10.0.0.2");
    let out = rib.receive_update(c2, &announce(original.clone(), &["10.244.2.0/26"]));
    for peer in [c3, plain] {
        let attrs = sent(&out, peer, "10.244.2.0/26").expect("reflected");
        assert_eq!(attrs.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(attrs.cluster_list, vec![CLUSTER]);
        // §10: next hop, AS_PATH, LOCAL_PREF and MED unchanged.
        assert_eq!(attrs.next_hop, original.next_hop);
        assert_eq!(attrs.as_path, original.as_path);
        assert_eq!(attrs.local_pref, Some(100));
        assert_eq!(attrs.med, Some(7));
    }
    assert!(
        sent(&out, c2, "10.244.2.0/26").is_none(),
        "not back to the source"
    );
    // A reflector is a node too: the reflected route is in its own Loc-RIB.
    assert_eq!(hops(&rib, "10.244.2.0/26"), vec![ip("10.0.0.2")]);
}

#[test]
fn rr_non_client_route_goes_to_clients_only() {
    let (mut rib, c2, c3, plain) = reflector();
    let plain2 = up(&mut rib, 5, LOCAL_AS);
    let out = rib.receive_update(
        plain,
        &announce(client_route("10.0.0.4"), &["10.244.4.0/26"]),
    );
    for peer in [c2, c3] {
        let attrs = sent(&out, peer, "10.244.4.0/26").expect("reflected to clients");
        assert_eq!(attrs.originator_id, Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(attrs.cluster_list, vec![CLUSTER]);
    }
    assert!(sent(&out, plain2, "10.244.4.0/26").is_none());
    assert!(rib.adj_out(plain2).unwrap().is_empty());
}

#[test]
fn rr_keeps_an_existing_originator_id_and_prepends_its_cluster_id() {
    let (mut rib, c2, c3, _) = reflector();
    let other_cluster = Ipv4Addr::new(2, 0, 0, 2);
    let reflected_elsewhere = PathAttributes {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 99)),
        cluster_list: vec![other_cluster],
        ..client_route("10.0.0.99")
    };
    let out = rib.receive_update(c2, &announce(reflected_elsewhere, &["10.244.99.0/26"]));
    let attrs = sent(&out, c3, "10.244.99.0/26").unwrap();
    assert_eq!(attrs.originator_id, Some(Ipv4Addr::new(10, 0, 0, 99)));
    assert_eq!(attrs.cluster_list, vec![CLUSTER, other_cluster]);
}

#[test]
fn rr_never_reflects_to_the_router_named_by_originator_id() {
    let (mut rib, c2, c3, plain) = reflector();
    // Non-client 4 reflected client 3's route to us (another cluster): not back to 3.
    let from_three = PathAttributes {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 3)),
        cluster_list: vec![Ipv4Addr::new(2, 0, 0, 2)],
        ..client_route("10.0.0.3")
    };
    let out = rib.receive_update(plain, &announce(from_three, &["10.244.3.0/26"]));
    assert!(sent(&out, c3, "10.244.3.0/26").is_none());
    assert!(sent(&out, c2, "10.244.3.0/26").is_some());
}

#[test]
fn rr_drops_a_route_carrying_its_cluster_id() {
    let (mut rib, c2, c3, plain) = reflector();
    let looped = PathAttributes {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        cluster_list: vec![Ipv4Addr::new(3, 0, 0, 3), CLUSTER],
        ..client_route("10.0.0.2")
    };
    let out = rib.receive_update(plain, &announce(looped, &["10.244.2.0/26"]));
    assert!(
        out.events.is_empty() && out.outbound().is_empty(),
        "{out:?}"
    );
    assert!(rib.selected(&net("10.244.2.0/26")).is_none());
    assert_eq!(rib.counts(plain).0, 0);
    let _ = (c2, c3);
}

#[test]
fn rr_drops_a_route_whose_originator_id_is_its_router_id() {
    let (mut rib, c2, _, _) = reflector();
    let ours = PathAttributes {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..client_route("10.0.0.2")
    };
    let out = rib.receive_update(c2, &announce(ours, &["10.244.1.0/26"]));
    assert!(out.events.is_empty());
    assert!(rib.selected(&net("10.244.1.0/26")).is_none());
}

#[test]
fn rr_tie_break_uses_originator_id_in_place_of_the_router_id() {
    // A client of two reflectors (peers 7 and 8): the path reflected by 8 names originator
    // 10.0.0.3, the one by 7 originator 10.0.0.5: 8's wins although 7 has the lower id.
    let mut rib = rib();
    let rr7 = up(&mut rib, 7, LOCAL_AS);
    let rr8 = up(&mut rib, 8, LOCAL_AS);
    let via = |originator: u8, next_hop: &str| PathAttributes {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, originator)),
        cluster_list: vec![CLUSTER],
        ..client_route(next_hop)
    };
    rib.receive_update(rr7, &announce(via(5, "10.0.0.5"), &["10.244.7.0/26"]));
    rib.receive_update(rr8, &announce(via(3, "10.0.0.3"), &["10.244.7.0/26"]));
    assert_eq!(rib.selected(&net("10.244.7.0/26")).unwrap().best, rr8);
}

#[test]
fn rr_tie_break_prefers_the_shorter_cluster_list() {
    let mut rib = rib();
    let rr7 = up(&mut rib, 7, LOCAL_AS);
    let rr8 = up(&mut rib, 8, LOCAL_AS);
    let via = |clusters: Vec<Ipv4Addr>| PathAttributes {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 3)),
        cluster_list: clusters,
        ..client_route("10.0.0.3")
    };
    let two = vec![Ipv4Addr::new(2, 0, 0, 2), CLUSTER];
    rib.receive_update(rr7, &announce(via(two), &["10.244.3.0/26"]));
    rib.receive_update(rr8, &announce(via(vec![CLUSTER]), &["10.244.3.0/26"]));
    let selected = rib.selected(&net("10.244.3.0/26")).unwrap();
    assert_eq!(
        selected.best, rr8,
        "shorter CLUSTER_LIST before the lower peer address"
    );
    // Same next hop through both reflectors: one kernel next hop.
    assert_eq!(selected.next_hops, vec![ip("10.0.0.3")]);
}

#[test]
fn rr_strips_originator_id_and_cluster_list_towards_ebgp() {
    let policy = ExportPolicy {
        ebgp_learned_to_ibgp: false,
        learned_to_ebgp: true,
    };
    let mut rib = Rib::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1), policy);
    rib.set_reflection(
        PeerId(2),
        Some(Reflection::Client {
            cluster_id: CLUSTER,
        }),
    );
    let c2 = up(&mut rib, 2, LOCAL_AS);
    let tor = up(&mut rib, 9, TOR_AS);
    let reflected = PathAttributes {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        cluster_list: vec![Ipv4Addr::new(2, 0, 0, 2)],
        ..client_route("10.0.0.2")
    };
    let out = rib.receive_update(c2, &announce(reflected, &["10.244.2.0/26"]));
    let attrs = sent(&out, tor, "10.244.2.0/26").expect("exported to the ToR");
    assert_eq!(attrs.originator_id, None);
    assert!(attrs.cluster_list.is_empty());
}

#[test]
fn rr_ebgp_learned_routes_follow_the_export_policy_without_reflection_attributes() {
    let policy = ExportPolicy {
        ebgp_learned_to_ibgp: true,
        learned_to_ebgp: false,
    };
    let mut rib = Rib::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1), policy);
    rib.set_reflection(
        PeerId(2),
        Some(Reflection::Client {
            cluster_id: CLUSTER,
        }),
    );
    let c2 = up(&mut rib, 2, LOCAL_AS);
    let plain = up(&mut rib, 4, LOCAL_AS);
    let tor = up(&mut rib, 9, TOR_AS);
    let out = rib.receive_update(tor, &announce(attrs(&[TOR_AS], "10.0.0.9"), &["0.0.0.0/0"]));
    for peer in [c2, plain] {
        let attrs = sent(&out, peer, "0.0.0.0/0").expect("eBGP route to every iBGP peer");
        assert_eq!(attrs.originator_id, None);
        assert!(attrs.cluster_list.is_empty());
    }
}

#[test]
fn rr_client_joining_later_gets_the_reflected_table_and_leaving_withdraws() {
    let (mut rib, c2, _, _) = reflector();
    rib.receive_update(c2, &announce(client_route("10.0.0.2"), &["10.244.2.0/26"]));
    rib.set_reflection(
        PeerId(6),
        Some(Reflection::Client {
            cluster_id: CLUSTER,
        }),
    );
    rib.add_peer(PeerId(6));
    let outbound = rib.peer_up(PeerId(6), info(6, LOCAL_AS));
    assert_eq!(outbound.announced_len(), 1);
    assert_eq!(outbound.announce[0].0.cluster_list, vec![CLUSTER]);
    // The source client leaves: every peer that got the route is told.
    let out = rib.remove_peer(c2);
    assert!(out
        .outbound()
        .values()
        .all(|o| o.withdraw == vec![net("10.244.2.0/26")]));
    assert_eq!(out.outbound().len(), 3);
}

#[test]
fn rr_role_cleared_stops_reflection_and_loop_checks() {
    let mut rib = rib();
    rib.set_reflection(
        PeerId(2),
        Some(Reflection::Client {
            cluster_id: CLUSTER,
        }),
    );
    assert!(rib.is_reflector());
    rib.set_reflection(PeerId(2), None);
    assert!(!rib.is_reflector());
    rib.set_reflection(
        PeerId(3),
        Some(Reflection::Reflector {
            cluster_id: CLUSTER,
        }),
    );
    assert!(
        !rib.is_reflector(),
        "being a client does not make us a reflector"
    );
    rib.set_reflection(
        PeerId(3),
        Some(Reflection::Client {
            cluster_id: CLUSTER,
        }),
    );
    rib.remove_peer(PeerId(3));
    assert!(!rib.is_reflector());
}

#[test]
fn rr_role_change_on_a_live_session_reexports_without_touching_the_loc_rib() {
    // Peers 2 and 3 are plain iBGP: nothing reflected.
    let mut rib = rib();
    let a = up(&mut rib, 2, LOCAL_AS);
    let b = up(&mut rib, 3, LOCAL_AS);
    rib.receive_update(a, &announce(client_route("10.0.0.2"), &["10.244.2.0/26"]));
    assert!(rib.adj_out(b).unwrap().is_empty());
    // 2 becomes our client: its route now goes to 3, with the reflection attributes.
    rib.set_reflection(
        a,
        Some(Reflection::Client {
            cluster_id: CLUSTER,
        }),
    );
    let out = rib.refresh_exports();
    assert!(out.events.is_empty(), "the Loc-RIB is unchanged");
    let attrs = sent(&out, b, "10.244.2.0/26").expect("reflected after the change");
    assert_eq!(attrs.cluster_list, vec![CLUSTER]);
    assert!(!out.outbound().contains_key(&a));
    // And back: withdrawn from 3.
    rib.set_reflection(a, None);
    let out = rib.refresh_exports();
    assert_eq!(out.outbound()[&b].withdraw, vec![net("10.244.2.0/26")]);
    assert!(rib.adj_out(b).unwrap().is_empty());
}
