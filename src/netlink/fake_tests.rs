//! Unit tests of [`FakeNetlink`]: kernel rules it mirrors and failure injection on every
//! operation.

use super::*;
use crate::netlink::proto::RouteProtocol;
use crate::netlink::sysctl::proxy_arp_key;
use crate::netlink::types::POD_GATEWAY_V4;

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

fn pod_netns() -> NetnsRef {
    NetnsRef::named("pod-a")
}

/// A host with a veth "rdhost" whose peer "eth0" lives in pod-a.
async fn world_with_veth() -> (FakeNetlink, LinkInfo) {
    let fake = FakeNetlink::new();
    fake.add_netns(&pod_netns());
    let host = fake
        .create_veth("rdhost", "eth0", &pod_netns(), MacAddr::HOST_VETH, 1450)
        .await
        .unwrap();
    (fake, host)
}

/// Calls `op` once with plausible arguments; returns its error, if any.
async fn call(netlink: &dyn Netlink, op: Operation, ifindex: u32) -> Option<NetlinkError> {
    let route = Route::link_scope(net("10.65.0.9/32"), ifindex, RouteProtocol::WORKLOAD);
    let neighbour = Neighbour {
        ifindex,
        ip: "10.0.0.1".parse().unwrap(),
        mac: Some(MacAddr::HOST_VETH),
        permanent: true,
    };
    let fdb = FdbEntry {
        ifindex,
        mac: MacAddr::HOST_VETH,
        destination: Some("10.0.0.1".parse().unwrap()),
    };
    let key = proxy_arp_key("rdhost");
    let proto = RouteProtocol::BGP;
    let gateway = NexthopSpec::Gateway {
        gateway: neighbour.ip,
        ifindex,
        onlink: false,
    };
    match op {
        Operation::LinkByName => netlink.link_by_name("rdhost").await.err(),
        Operation::CreateVeth => netlink
            .create_veth("rdnew", "eth1", &pod_netns(), MacAddr::HOST_VETH, 1500)
            .await
            .err(),
        Operation::DeleteLink => netlink.delete_link("nothing").await.err(),
        Operation::ListLinks => netlink.list_links().await.err(),
        Operation::SetLinkUp => netlink.set_link_up(ifindex).await.err(),
        Operation::RenameLink => netlink.rename_link(ifindex, "rdrenamed").await.err(),
        Operation::AddAddress => netlink.add_address(ifindex, net("10.9.9.9/32")).await.err(),
        Operation::ListAddresses => netlink.list_addresses(ifindex).await.err(),
        Operation::AddRoute => netlink.add_route(&route).await.err(),
        Operation::ReplaceRoute => netlink.replace_route(&route).await.err(),
        Operation::DeleteRoute => netlink.delete_route(&route).await.err(),
        Operation::ListRoutes => netlink.list_routes(&RouteFilter::default()).await.err(),
        Operation::ReplaceRoutesBatch => netlink.replace_routes_batch(&[route]).await.err(),
        Operation::DeleteRoutesBatch => netlink.delete_routes_batch(&[route]).await.err(),
        Operation::WatchRoutes => netlink.watch_routes().await.err(),
        Operation::ReplaceNeighbour => netlink.replace_neighbour(&neighbour).await.err(),
        Operation::ListNeighbours => netlink.list_neighbours(ifindex).await.err(),
        Operation::DeleteNeighbour => netlink.delete_neighbour(ifindex, neighbour.ip).await.err(),
        Operation::ReplaceFdb => netlink.replace_fdb(&fdb).await.err(),
        Operation::ListFdb => netlink.list_fdb(ifindex).await.err(),
        Operation::DeleteFdb => netlink.delete_fdb(&fdb).await.err(),
        Operation::SetSysctl => netlink.set_sysctl(&key, "1").await.err(),
        Operation::GetSysctl => netlink.get_sysctl(&key).await.err(),
        Operation::EnterNetns => netlink.for_netns(&pod_netns()).await.err(),
        Operation::CreateIpip => netlink.create_ipip("tunl0", 1480).await.err(),
        Operation::CreateVxlan => netlink
            .create_vxlan(&VxlanSpec {
                name: "vxlan.routed".into(),
                vni: 4096,
                port: 4789,
                local: Some("10.0.0.1".parse().unwrap()),
                parent_ifindex: Some(ifindex),
                learning: false,
                mtu: 1450,
                mac: None,
            })
            .await
            .err(),
        Operation::SetLinkDown => netlink.set_link_down(ifindex).await.err(),
        Operation::SetLinkMtu => netlink.set_link_mtu(ifindex, 1400).await.err(),
        Operation::DeleteAddress => netlink
            .delete_address(ifindex, net("10.9.9.9/32"))
            .await
            .err(),
        Operation::ListNexthops => netlink.nexthops().await.err(),
        Operation::CreateNexthop => match netlink.create_nexthop(900, proto, gateway).await {
            Err(e) if e.is_already_exists() => None,
            other => other.err(),
        },
        Operation::DeleteNexthop => {
            let _ = netlink.create_nexthop(901, proto, gateway).await;
            netlink.delete_nexthop(901).await.err()
        }
        Operation::GetRoute => netlink.route_get(neighbour.ip).await.err(),
    }
}

#[tokio::test]
async fn every_operation_succeeds_then_fails_when_injected() {
    for op in Operation::ALL {
        let (fake, host) = world_with_veth().await;
        assert!(
            call(&fake, op, host.index).await.is_none(),
            "{op} failed without injection"
        );
        fake.inject_failure(op);
        match call(&fake, op, host.index).await {
            Some(NetlinkError::Injected { op: failed, .. }) => assert_eq!(failed, op),
            other => panic!("{op}: expected Injected, got {other:?}"),
        }
        fake.clear_failures();
        // The first call may have created what a second one now finds (AlreadyExists).
        let after = call(&fake, op, host.index).await;
        assert!(
            !matches!(after, Some(NetlinkError::Injected { .. })),
            "{op} still failing after clear: {after:?}"
        );
    }
}

#[tokio::test]
async fn injected_once_fails_only_the_next_call() {
    let (fake, host) = world_with_veth().await;
    fake.inject_failure_once(Operation::SetLinkUp);
    assert!(fake.set_link_up(host.index).await.is_err());
    assert!(fake.set_link_up(host.index).await.is_ok());
}

#[tokio::test]
async fn injected_errno_maps_like_the_kernel() {
    let (fake, _) = world_with_veth().await;
    fake.inject_errno(Operation::AddRoute, libc::EEXIST);
    let route = Route::blackhole(net("10.65.0.0/26"), RouteProtocol::BLACKHOLE);
    assert!(fake
        .add_route(&route)
        .await
        .unwrap_err()
        .is_already_exists());
    fake.inject_errno(Operation::AddRoute, libc::ENETUNREACH);
    match fake.add_route(&route).await {
        Err(NetlinkError::Kernel { errno, .. }) => assert_eq!(errno, libc::ENETUNREACH),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cni_add_then_del_leaves_nothing() {
    let (fake, host) = world_with_veth().await;
    assert_eq!(host.mac, Some(MacAddr::HOST_VETH));
    let pod = fake.for_netns(&pod_netns()).await.unwrap();
    let eth0 = pod.link_by_name("eth0").await.unwrap().unwrap();
    assert_eq!(eth0.peer_ifindex, Some(host.index));
    assert_eq!(eth0.mtu, 1450);
    pod.set_link_up(eth0.index).await.unwrap();
    pod.add_address(eth0.index, net("10.65.0.3/32"))
        .await
        .unwrap();
    let gateway = IpNetwork::new(IpAddr::V4(POD_GATEWAY_V4), 32).unwrap();
    pod.add_route(&Route::link_scope(gateway, eth0.index, RouteProtocol::BOOT))
        .await
        .unwrap();
    let default = Route::via(
        net("0.0.0.0/0"),
        gateway.ip(),
        Some(eth0.index),
        RouteProtocol::BOOT,
    );
    pod.add_route(&default).await.unwrap();
    fake.set_sysctl(&proxy_arp_key("rdhost"), "1")
        .await
        .unwrap();
    assert_eq!(
        fake.get_sysctl(&proxy_arp_key("rdhost")).await.unwrap(),
        "1"
    );
    let workload = Route::link_scope(net("10.65.0.3/32"), host.index, RouteProtocol::WORKLOAD);
    fake.add_route(&workload).await.unwrap();
    assert!(fake
        .add_route(&workload)
        .await
        .unwrap_err()
        .is_already_exists());

    let mut watch = fake.watch_routes().await.unwrap();
    fake.delete_link("rdhost").await.unwrap();
    assert_eq!(watch.next().await, Some(RouteEvent::Deleted(workload)));
    assert!(fake.routes().is_empty());
    assert!(pod.link_by_name("eth0").await.unwrap().is_none());
    assert!(pod
        .list_routes(&RouteFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(fake
        .get_sysctl(&proxy_arp_key("rdhost"))
        .await
        .unwrap_err()
        .is_not_found());
    fake.delete_link("rdhost").await.unwrap();
}

#[tokio::test]
async fn missing_namespace_is_netns_not_found() {
    let fake = FakeNetlink::new();
    let missing = NetnsRef::named("gone");
    assert!(matches!(
        fake.for_netns(&missing).await,
        Err(NetlinkError::NetnsNotFound(_))
    ));
    assert!(matches!(
        fake.create_veth("rdx", "eth0", &missing, MacAddr::HOST_VETH, 1500)
            .await,
        Err(NetlinkError::NetnsNotFound(_))
    ));
}

#[tokio::test]
async fn delete_route_touches_only_the_given_protocol() {
    let fake = FakeNetlink::new();
    let foreign = Route::blackhole(net("10.70.0.0/24"), RouteProtocol::STATIC);
    fake.add_route(&foreign).await.unwrap();
    let ours = Route::blackhole(net("10.70.0.0/24"), RouteProtocol::BLACKHOLE);
    fake.delete_route(&ours).await.unwrap();
    assert_eq!(fake.routes(), vec![foreign]);
}

#[tokio::test]
async fn batch_reports_injected_route_failures_by_index() {
    let fake = FakeNetlink::new();
    let dummy = fake.add_link("d0", "dummy");
    let routes: Vec<Route> = (0..10)
        .map(|i| {
            Route::link_scope(
                net(&format!("10.1.0.{i}/32")),
                dummy,
                RouteProtocol::WORKLOAD,
            )
        })
        .collect();
    fake.inject_batch_route_failure(net("10.1.0.4/32"));
    let report = fake.replace_routes_batch(&routes).await.unwrap();
    assert_eq!(report.attempted, 10);
    assert_eq!(report.succeeded, 9);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].index, 4);
    assert!(!report.is_complete());
    let calls = fake.calls();
    assert_eq!(
        calls.last().map(|c| c.0),
        Some(Operation::ReplaceRoutesBatch)
    );
}

#[tokio::test]
async fn route_on_missing_link_is_not_found() {
    let fake = FakeNetlink::new();
    let route = Route::link_scope(net("10.1.0.1/32"), 999, RouteProtocol::WORKLOAD);
    assert!(fake.replace_route(&route).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn routes_with_a_nexthop_object_report_it_and_go_with_it() {
    let (fake, host) = world_with_veth().await;
    let proto = RouteProtocol::BGP;
    let gateway = |ip: &str| NexthopSpec::Gateway {
        gateway: ip.parse().unwrap(),
        ifindex: host.index,
        onlink: false,
    };
    fake.create_nexthop(10, proto, gateway("10.0.0.2"))
        .await
        .unwrap();
    fake.create_nexthop(11, proto, gateway("10.0.0.3"))
        .await
        .unwrap();
    fake.create_nexthop(12, proto, NexthopSpec::Group(vec![(10, 1), (11, 1)]))
        .await
        .unwrap();
    let taken = fake.create_nexthop(10, proto, gateway("10.0.0.4")).await;
    assert!(taken.unwrap_err().is_already_exists());
    let missing = fake.create_nexthop(13, proto, NexthopSpec::Group(vec![(99, 1)]));
    assert!(missing.await.unwrap_err().is_not_found());

    let mut single = Route::via(
        net("10.1.0.0/26"),
        "192.0.2.1".parse().unwrap(),
        None,
        proto,
    );
    single.nexthop_id = Some(10);
    let mut group = Route::via(
        net("10.1.1.0/26"),
        "192.0.2.1".parse().unwrap(),
        None,
        proto,
    );
    group.nexthop_id = Some(12);
    let mut unknown = Route::via(
        net("10.1.2.0/26"),
        "192.0.2.1".parse().unwrap(),
        None,
        proto,
    );
    unknown.nexthop_id = Some(77);
    let report = fake
        .replace_routes_batch(&[single, group, unknown])
        .await
        .unwrap();
    assert_eq!(report.succeeded, 2);
    assert_eq!(
        report.failures.len(),
        1,
        "a route with an unknown object is refused"
    );
    let routes = fake.routes();
    let find = |p: &str| routes.iter().find(|r| r.destination == net(p)).unwrap();
    assert_eq!(
        find("10.1.0.0/26").gateway,
        Some("10.0.0.2".parse().unwrap())
    );
    assert_eq!(find("10.1.0.0/26").output_ifindex, Some(host.index));
    assert_eq!(find("10.1.1.0/26").multipath.len(), 2);

    let mut watch = fake.watch_routes().await.unwrap();
    fake.delete_nexthop(10).await.unwrap();
    assert!(fake.delete_nexthop(10).await.unwrap_err().is_not_found());
    let left: Vec<IpNetwork> = fake.routes().iter().map(|r| r.destination).collect();
    assert_eq!(
        left,
        vec![net("10.1.1.0/26")],
        "the object's route went with it"
    );
    assert_eq!(
        watch.next().await,
        Some(RouteEvent::NexthopDeleted(proto)),
        "one notification for the object, none per route"
    );
    let ids: Vec<u32> = fake
        .nexthops()
        .await
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, vec![11, 12]);
}

#[tokio::test]
async fn route_get_takes_the_longest_prefix_and_a_scan_folds_every_route() {
    let (fake, host) = world_with_veth().await;
    let connected = Route::link_scope(net("10.0.0.0/24"), host.index, RouteProtocol::KERNEL);
    fake.add_route(&connected).await.unwrap();
    let wider = Route::via(
        net("10.0.0.0/16"),
        "10.0.0.1".parse().unwrap(),
        None,
        RouteProtocol::BGP,
    );
    fake.add_route(&wider).await.unwrap();
    let found = fake.route_get("10.0.0.7".parse().unwrap()).await.unwrap();
    assert_eq!(found.unwrap().output_ifindex, Some(host.index));
    assert_eq!(
        fake.route_get("192.0.2.1".parse().unwrap()).await.unwrap(),
        None
    );

    let netlink: &dyn Netlink = &fake;
    let count = netlink
        .scan_routes(RouteFilter::protocol(RouteProtocol::BGP), 0usize, |n, _| {
            *n += 1
        })
        .await
        .unwrap();
    assert_eq!(count, 1);
}
