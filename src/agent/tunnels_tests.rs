//! Unit tests of the tunnel devices and the VXLAN apply step, on the fake netlink.

use super::*;
use crate::agent::calc::{desired_vxlan, ClusterState};
use crate::model::AffinityState;
use crate::netlink::{FakeNetlink, FdbEntry, Route};
use ipnetwork::IpNetwork;

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

#[tokio::test]
async fn ipip_device_is_created_with_mtu_address_and_up() {
    let fake = FakeNetlink::new();
    let (link, changes) = ensure_ipip_device(&fake, 1480, Some("10.1.0.1".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(changes, 3, "created, address set, up");
    let tunl0 = fake.link_by_name("tunl0").await.unwrap().unwrap();
    assert_eq!(tunl0.kind.as_deref(), Some("ipip"));
    assert_eq!((tunl0.mtu, tunl0.up), (1480, true));
    assert_eq!(
        fake.list_addresses(link.index).await.unwrap(),
        [net("10.1.0.1/32")]
    );
    // A second pass changes nothing.
    let before = fake.calls().len();
    let (_, changes) = ensure_ipip_device(&fake, 1480, Some("10.1.0.1".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(changes, 0);
    let writes: Vec<_> = fake.calls()[before..]
        .iter()
        .filter(|(op, _)| {
            !matches!(
                op,
                crate::netlink::Operation::LinkByName | crate::netlink::Operation::ListAddresses
            )
        })
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn the_kernels_fallback_tunl0_is_adopted_and_fixed() {
    let fake = FakeNetlink::new();
    // As `modprobe ipip` leaves it: tunl0, MTU 1500, down; plus an address from an old pool.
    let index = fake.add_link("tunl0", "ipip");
    fake.add_address_externally(index, net("10.9.0.1/32"));
    let (link, changes) = ensure_ipip_device(&fake, 1430, Some("10.1.0.7".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(link.index, index, "adopted, not re-created");
    assert_eq!(changes, 4, "MTU, old address off, new address on, up");
    let tunl0 = fake.link_by_name("tunl0").await.unwrap().unwrap();
    assert_eq!((tunl0.mtu, tunl0.up), (1430, true));
    assert_eq!(
        fake.list_addresses(index).await.unwrap(),
        [net("10.1.0.7/32")]
    );
}

#[tokio::test]
async fn a_foreign_tunl0_is_refused() {
    let fake = FakeNetlink::new();
    fake.add_link("tunl0", "dummy");
    let err = ensure_ipip_device(&fake, 1480, None).await.unwrap_err();
    assert!(format!("{err:#}").contains("not ipip"), "{err:#}");
}

#[tokio::test]
async fn unused_devices_are_removed() {
    let fake = FakeNetlink::new();
    ensure_ipip_device(&fake, 1480, Some("10.1.0.1".parse().unwrap()))
        .await
        .unwrap();
    assert!(remove_device(&fake, "tunl0").await.unwrap());
    assert!(fake.link_by_name("tunl0").await.unwrap().is_none());
    assert!(!remove_device(&fake, "tunl0").await.unwrap(), "idempotent");
}

fn vxlan_spec(parent: u32) -> VxlanSpec {
    VxlanSpec {
        name: VXLAN_DEVICE.into(),
        vni: VXLAN_VNI,
        port: VXLAN_PORT,
        local: Some("10.0.0.1".parse().unwrap()),
        parent_ifindex: Some(parent),
        learning: false,
        mtu: 1450,
        mac: Some(vtep_mac("a")),
    }
}

fn cluster(mode: EncapMode) -> ClusterState {
    let node = |name: &str, ip: &str, vtep: &str, mac: MacAddr| Node {
        name: name.into(),
        ipv4_address: Some(ip.parse().unwrap()),
        ipv4_vxlan_tunnel_addr: Some(vtep.parse().unwrap()),
        vxlan_tunnel_mac: Some(mac.to_string()),
        ..Node::default()
    };
    let mut pool = IpPool::new("vx", net("10.5.0.0/16"));
    pool.vxlan_mode = mode;
    ClusterState {
        nodes: vec![
            node("a", "10.0.0.1/24", "10.5.3.0", vtep_mac("a")),
            node("b", "10.0.0.2/24", "10.5.0.0", vtep_mac("b")),
            node("c", "10.0.1.3/24", "10.5.1.0", vtep_mac("c")),
        ],
        pools: vec![pool],
        all_affinities: vec![
            ("b".into(), net("10.5.0.0/26"), AffinityState::Confirmed),
            ("c".into(), net("10.5.1.0/26"), AffinityState::Confirmed),
        ],
        ..ClusterState::default()
    }
}

#[tokio::test]
async fn vxlan_state_is_applied_and_repaired() {
    let fake = FakeNetlink::new();
    let eth0 = fake.add_link("eth0", "veth");
    fake.add_address_externally(eth0, net("10.0.0.1/24"));
    let (link, _) =
        ensure_vxlan_device(&fake, &vxlan_spec(eth0), Some("10.5.3.0".parse().unwrap()))
            .await
            .unwrap();
    assert_eq!(link.kind.as_deref(), Some("vxlan"));
    assert_eq!(link.mac, Some(vtep_mac("a")));
    let vx = fake.link_by_name(VXLAN_DEVICE).await.unwrap().unwrap();
    assert_eq!((vx.mtu, vx.up), (1450, true));

    let subnets = local_subnets(&fake).await.unwrap();
    assert_eq!(
        subnets,
        [net("10.0.0.0/24")],
        "vxlan.routed's /32 is not a subnet"
    );
    let want = desired_vxlan("a", &cluster(EncapMode::Always), &subnets, Some(link.index));
    assert_eq!(
        apply_vxlan(&fake, Some(link.index), &want).await.unwrap(),
        6
    );
    assert_eq!(
        apply_vxlan(&fake, Some(link.index), &want).await.unwrap(),
        0
    );
    let neighbours = fake.list_neighbours(link.index).await.unwrap();
    assert!(neighbours
        .iter()
        .any(|n| n.ip == "10.5.1.0".parse::<IpAddr>().unwrap()
            && n.mac == Some(vtep_mac("c"))
            && n.permanent));
    assert!(fake
        .list_fdb(link.index)
        .await
        .unwrap()
        .contains(&FdbEntry {
            ifindex: link.index,
            mac: vtep_mac("c"),
            destination: Some("10.0.1.3".parse().unwrap()),
        }));

    // Removed by hand: each comes back on the next pass.
    fake.delete_neighbour_externally(link.index, "10.5.1.0".parse().unwrap());
    fake.delete_fdb_externally(link.index, vtep_mac("c"));
    let route = want.routes[1].clone();
    fake.delete_route_externally(&route.key());
    assert_eq!(
        apply_vxlan(&fake, Some(link.index), &want).await.unwrap(),
        3
    );
    assert!(fake.routes().contains(&route.clone().normalized()));

    // CrossSubnet: b (same subnet) switches to a plain route; Never: routes go away.
    let cross = desired_vxlan(
        "a",
        &cluster(EncapMode::CrossSubnet),
        &subnets,
        Some(link.index),
    );
    assert_eq!(
        apply_vxlan(&fake, Some(link.index), &cross).await.unwrap(),
        1
    );
    let b_route = fake
        .routes()
        .into_iter()
        .find(|r| r.destination == net("10.5.0.0/26"))
        .unwrap();
    assert_eq!(b_route.gateway, Some("10.0.0.2".parse().unwrap()));
    assert_eq!(b_route.output_ifindex, None);
    let never = desired_vxlan("a", &cluster(EncapMode::Never), &subnets, None);
    apply_vxlan(&fake, None, &never).await.unwrap();
    assert!(fake
        .routes()
        .iter()
        .all(|r| r.protocol != RouteProtocol::TUNNEL));
    // Routes of other protocols are never touched.
    let other = Route::via(
        net("10.7.0.0/26"),
        "10.0.0.2".parse().unwrap(),
        None,
        RouteProtocol::BGP,
    );
    fake.replace_route(&other).await.unwrap();
    apply_vxlan(&fake, None, &never).await.unwrap();
    assert!(fake.routes().iter().any(|r| r.key() == other.key()));
}

#[test]
fn vtep_mac_is_stable_unicast_and_local() {
    let mac = vtep_mac("node-1");
    assert_eq!(mac, vtep_mac("node-1"));
    assert_ne!(mac, vtep_mac("node-2"));
    assert_eq!(mac.0[0] & 0x01, 0, "unicast");
    assert_eq!(mac.0[0] & 0x02, 0x02, "locally administered");
}

#[test]
fn handles_and_devices_are_named_as_documented() {
    assert_eq!(Tunnel::Ipip.handle("n1"), "ipip-tunnel-addr-n1");
    assert_eq!(Tunnel::Vxlan.handle("n1"), "vxlan-tunnel-addr-n1");
    assert_eq!(Tunnel::Ipip.device(), "tunl0");
    assert_eq!(Tunnel::Vxlan.device(), "vxlan.routed");
}

#[test]
fn a_mode_change_is_a_different_route_for_the_diff() {
    use crate::agent::routing::signature;
    let gw: IpAddr = "10.0.1.2".parse().unwrap();
    let plain = Route::via(net("10.2.0.0/26"), gw, None, RouteProtocol::BGP);
    let tunnelled = Route::via(net("10.2.0.0/26"), gw, Some(7), RouteProtocol::BGP).with_onlink();
    assert_ne!(signature(&plain), signature(&tunnelled));
    // The kernel reports the device of a plain route; that alone is no difference.
    let read_back = Route::via(net("10.2.0.0/26"), gw, Some(3), RouteProtocol::BGP);
    assert_eq!(signature(&plain), signature(&read_back));
    // A tunnel route moved to another device is.
    let moved = Route::via(net("10.2.0.0/26"), gw, Some(8), RouteProtocol::BGP).with_onlink();
    assert_ne!(signature(&tunnelled), signature(&moved));
}
