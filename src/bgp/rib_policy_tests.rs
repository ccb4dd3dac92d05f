//! Per-peer import and export settings of issue 17: `allow local as` (Calico's
//! `numAllowedLocalASNumbers`) and the NEXT_HOP mode (Calico's `nextHopMode`).

use super::*;

const LOCAL_AS: u32 = 64512;
const TOR_AS: u32 = 65001;
const OUR_ADDRESS: &str = "10.0.0.1";

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn everything_exported() -> Rib {
    let policy = ExportPolicy {
        ebgp_learned_to_ibgp: true,
        learned_to_ebgp: true,
    };
    Rib::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1), policy)
}

/// Peer `n` (10.0.0.n) with `asn`, its settings applied before it comes up.
fn up_with(rib: &mut Rib, n: u8, asn: u32, set: impl FnOnce(&mut Rib, PeerId)) -> PeerId {
    let id = PeerId(u32::from(n));
    rib.add_peer(id);
    set(rib, id);
    rib.peer_up(
        id,
        PeerInfo {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
            peer_asn: asn,
            router_id: Ipv4Addr::new(10, 0, 0, n),
            local_address: OUR_ADDRESS.parse().unwrap(),
            ipv4: true,
            ipv6: false,
        },
    );
    id
}

fn announce(path: &[u32], next_hop: &str, prefix: &str) -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(path.to_vec())),
            next_hop: Some(next_hop.parse().unwrap()),
            ..PathAttributes::default()
        },
        nlri: vec![net(prefix)],
        ..Update::default()
    }
}

fn has(rib: &Rib, prefix: &str) -> bool {
    rib.selected(&net(prefix)).is_some()
}

/// The NEXT_HOP `peer` was sent for `prefix`.
fn sent_next_hop(rib: &Rib, peer: PeerId, prefix: &str) -> Option<Ipv4Addr> {
    rib.adj_out(peer)?.get(&net(prefix))?.next_hop
}

#[test]
fn our_as_in_the_path_is_a_loop_unless_allowed_that_many_times() {
    let mut rib = everything_exported();
    let strict = up_with(&mut rib, 2, TOR_AS, |_, _| {});
    let once = up_with(&mut rib, 3, 65003, |rib, id| rib.set_allow_local_as(id, 1));
    // Our AS once: a loop for the strict peer, allowed for the other.
    rib.receive_update(
        strict,
        &announce(&[TOR_AS, LOCAL_AS, 65009], "10.0.0.2", "198.51.100.0/24"),
    );
    assert!(!has(&rib, "198.51.100.0/24"));
    rib.receive_update(
        once,
        &announce(&[65003, LOCAL_AS, 65009], "10.0.0.3", "198.51.100.0/24"),
    );
    assert_eq!(
        rib.selected(&net("198.51.100.0/24"))
            .map(|s| s.next_hops.clone()),
        Some(vec!["10.0.0.3".parse().unwrap()])
    );
    // Twice is more than the allowed once: dropped, as a withdrawal of the earlier path.
    rib.receive_update(
        once,
        &announce(&[65003, LOCAL_AS, LOCAL_AS], "10.0.0.3", "198.51.100.0/24"),
    );
    assert!(!has(&rib, "198.51.100.0/24"));
    let twice = up_with(&mut rib, 4, 65004, |rib, id| rib.set_allow_local_as(id, 2));
    rib.receive_update(
        twice,
        &announce(&[65004, LOCAL_AS, LOCAL_AS], "10.0.0.4", "198.51.100.0/24"),
    );
    assert!(has(&rib, "198.51.100.0/24"));
}

#[test]
fn next_hop_auto_is_ours_to_ebgp_and_kept_to_ibgp() {
    let mut rib = everything_exported();
    let tor = up_with(&mut rib, 2, TOR_AS, |_, _| {});
    let other_tor = up_with(&mut rib, 3, 65003, |_, _| {});
    let mesh = up_with(&mut rib, 4, LOCAL_AS, |_, _| {});
    rib.receive_update(tor, &announce(&[TOR_AS], "10.0.0.2", "0.0.0.0/0"));
    assert_eq!(
        sent_next_hop(&rib, other_tor, "0.0.0.0/0"),
        Some(Ipv4Addr::new(10, 0, 0, 1))
    );
    assert_eq!(
        sent_next_hop(&rib, mesh, "0.0.0.0/0"),
        Some(Ipv4Addr::new(10, 0, 0, 2))
    );
}

#[test]
fn next_hop_keep_keeps_the_received_one_towards_ebgp_but_not_for_our_prefixes() {
    let mut rib = everything_exported();
    let tor = up_with(&mut rib, 2, TOR_AS, |_, _| {});
    let keep = up_with(&mut rib, 3, 65003, |rib, id| {
        rib.set_next_hop_mode(id, NextHopMode::Keep)
    });
    rib.receive_update(tor, &announce(&[TOR_AS], "10.0.0.2", "0.0.0.0/0"));
    rib.set_originated([net("10.244.1.0/26")].into_iter().collect());
    assert_eq!(
        sent_next_hop(&rib, keep, "0.0.0.0/0"),
        Some(Ipv4Addr::new(10, 0, 0, 2))
    );
    assert_eq!(
        sent_next_hop(&rib, keep, "10.244.1.0/26"),
        Some(Ipv4Addr::new(10, 0, 0, 1))
    );
    let adj_out = rib.adj_out(keep).unwrap();
    let sent = &adj_out[&net("0.0.0.0/0")];
    assert_eq!(
        sent.as_path,
        Some(AsPath::from_sequence(vec![LOCAL_AS, TOR_AS])),
        "still eBGP"
    );
}

#[test]
fn next_hop_self_is_ours_towards_ibgp_and_reflected_routes_too() {
    let mut rib = everything_exported();
    let tor = up_with(&mut rib, 2, TOR_AS, |_, _| {});
    let mesh_self = up_with(&mut rib, 3, LOCAL_AS, |rib, id| {
        rib.set_next_hop_mode(id, NextHopMode::OurAddress)
    });
    let cluster_id = Ipv4Addr::new(10, 0, 0, 1);
    let client = up_with(&mut rib, 4, LOCAL_AS, |rib, id| {
        rib.set_reflection(id, Some(Reflection::Client { cluster_id }));
    });
    let client_self = up_with(&mut rib, 5, LOCAL_AS, |rib, id| {
        rib.set_reflection(id, Some(Reflection::Client { cluster_id }));
        rib.set_next_hop_mode(id, NextHopMode::OurAddress);
    });
    rib.receive_update(tor, &announce(&[TOR_AS], "10.0.0.2", "0.0.0.0/0"));
    assert_eq!(
        sent_next_hop(&rib, mesh_self, "0.0.0.0/0"),
        Some(Ipv4Addr::new(10, 0, 0, 1))
    );
    // A client's route reflected: the other client keeps its next hop unless Self.
    rib.receive_update(client, &announce(&[], "10.0.0.4", "10.244.9.0/26"));
    assert_eq!(
        sent_next_hop(&rib, client_self, "10.244.9.0/26"),
        Some(Ipv4Addr::new(10, 0, 0, 1))
    );
    let client_b = up_with(&mut rib, 6, LOCAL_AS, |rib, id| {
        rib.set_reflection(id, Some(Reflection::Client { cluster_id }));
    });
    assert_eq!(
        sent_next_hop(&rib, client_b, "10.244.9.0/26"),
        Some(Ipv4Addr::new(10, 0, 0, 4))
    );
}
