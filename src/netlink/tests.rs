//! Real-kernel tests of [`KernelNetlink`], gated by `ROUTED_E2E=1`.
//!
//! Unset: each test prints that it is skipped and passes. Set: each test runs as root and
//! fails on any missing prerequisite (the `ip` binary, namespace support). Every test creates
//! its own namespaces named `rt-nl-<pid>-<counter>-<nanos>`, does all its work inside them
//! (through `KernelNetlink::open_in_netns` / `run_in_netns`), and a guard deletes them when the
//! test ends, pass or fail. Traffic stays between namespaces the test created. The kernel here
//! has no `dummy` module, so a veth pair inside one namespace stands in for a dummy device.

use std::net::{IpAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;

use super::sysctl::{
    accept_ra_key, ipv4_forwarding_key, proxy_arp_key, proxy_delay_key, route_localnet_key,
};
use super::*;

fn e2e_enabled(test: &str) -> bool {
    if std::env::var("ROUTED_E2E").as_deref() == Ok("1") {
        true
    } else {
        eprintln!("{test}: skipped (set ROUTED_E2E=1 to run against the kernel)");
        false
    }
}

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

/// A network namespace owned by one test, deleted on drop.
struct TestNetns {
    name: String,
    netns: NetnsRef,
}

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNetns {
    fn create() -> TestNetns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let counter = NETNS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rt-nl-{}-{counter}-{nanos:x}", std::process::id());
        ip(&["netns", "add", &name]);
        let netns = NetnsRef::named(&name);
        TestNetns { name, netns }
    }

    /// `ip -n <ns> args...`, which must succeed.
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Opens a kernel handle inside this namespace.
    async fn netlink(&self) -> KernelNetlink {
        KernelNetlink::open_in_netns(&self.netns).await.unwrap()
    }

    /// A new namespace, a handle in it, and device `d0` holding `cidr` (its ifindex).
    async fn with_addressed_device(cidr: &str) -> (TestNetns, KernelNetlink, u32) {
        let ns = TestNetns::create();
        let netlink = ns.netlink().await;
        let dev = ns.device(&netlink, "d0").await;
        ns.ip(&["addr", "add", cidr, "dev", "d0"]);
        (ns, netlink, dev)
    }

    /// A veth pair inside this namespace, both ends up; returns the ifindex of `name`.
    async fn device(&self, netlink: &KernelNetlink, name: &str) -> u32 {
        let peer = format!("{name}p");
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        self.ip(&["link", "set", name, "up"]);
        self.ip(&["link", "set", &peer, "up"]);
        netlink.link_by_name(name).await.unwrap().unwrap().index
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ROUTED_E2E=1 needs the `ip` binary (iproute2): {e}"));
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn e2e_veth_into_second_netns_with_mac_and_mtu() {
    if !e2e_enabled("e2e_veth_into_second_netns_with_mac_and_mtu") {
        return;
    }
    let host_ns = TestNetns::create();
    let pod_ns = TestNetns::create();
    let host = host_ns.netlink().await;
    let veth = host
        .create_veth("rdtest0", "eth0", &pod_ns.netns, MacAddr::HOST_VETH, 1450)
        .await
        .unwrap();
    assert_eq!(veth.name, "rdtest0");
    assert_eq!(veth.mac, Some(MacAddr::HOST_VETH));
    assert_eq!(veth.mtu, 1450);
    assert_eq!(veth.kind.as_deref(), Some("veth"));
    assert!(!veth.up);

    let pod = host.for_netns(&pod_ns.netns).await.unwrap();
    let eth0 = pod
        .link_by_name("eth0")
        .await
        .unwrap()
        .expect("eth0 in the pod netns");
    assert_eq!(eth0.mtu, 1450);
    assert_eq!(veth.peer_ifindex, Some(eth0.index));
    assert_eq!(eth0.peer_ifindex, Some(veth.index));
    assert!(host.link_by_name("eth0").await.unwrap().is_none());
    assert!(host
        .list_links()
        .await
        .unwrap()
        .iter()
        .any(|l| l.name == "rdtest0"));

    let again = host
        .create_veth("rdtest0", "eth9", &pod_ns.netns, MacAddr::HOST_VETH, 1450)
        .await;
    assert!(again.unwrap_err().is_already_exists());

    pod.set_link_up(eth0.index).await.unwrap();
    pod.rename_link(eth0.index, "eth1").await.unwrap();
    assert_eq!(
        pod.link_by_name("eth1").await.unwrap().map(|l| l.index),
        Some(eth0.index)
    );
    pod.rename_link(eth0.index, "eth0").await.unwrap();
    host.delete_link("rdtest0").await.unwrap();
    assert!(
        pod.link_by_name("eth0").await.unwrap().is_none(),
        "peer goes with the host end"
    );
    host.delete_link("rdtest0").await.unwrap();
}

#[tokio::test]
async fn e2e_calico_pod_wiring_carries_traffic() {
    if !e2e_enabled("e2e_calico_pod_wiring_carries_traffic") {
        return;
    }
    let host_ns = TestNetns::create();
    let pod_ns = TestNetns::create();
    let host = host_ns.netlink().await;
    let veth = host
        .create_veth("rdpod1", "eth0", &pod_ns.netns, MacAddr::HOST_VETH, 1480)
        .await
        .unwrap();
    // Host side: sysctls, up, /32 route with our protocol.
    for (key, value) in [
        (proxy_arp_key("rdpod1"), "1"),
        (proxy_delay_key("rdpod1"), "0"),
        (ipv4_forwarding_key("rdpod1"), "1"),
        (route_localnet_key("rdpod1"), "1"),
        (accept_ra_key("rdpod1"), "0"),
    ] {
        host.set_sysctl(&key, value).await.unwrap();
        assert_eq!(host.get_sysctl(&key).await.unwrap(), value, "{key}");
    }
    host.set_link_up(veth.index).await.unwrap();
    let workload = Route::link_scope(net("10.65.0.3/32"), veth.index, RouteProtocol::WORKLOAD);
    host.add_route(&workload).await.unwrap();
    // The host namespace's own address, and a default route so proxy ARP has somewhere to point.
    host_ns.ip(&["link", "set", "lo", "up"]);
    host_ns.ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"]);
    host_ns.ip(&["route", "add", "default", "dev", "lo"]);

    // Pod side.
    let pod = host.for_netns(&pod_ns.netns).await.unwrap();
    let eth0 = pod.link_by_name("eth0").await.unwrap().unwrap();
    pod.set_link_up(eth0.index).await.unwrap();
    pod.add_address(eth0.index, net("10.65.0.3/32"))
        .await
        .unwrap();
    assert!(pod
        .add_address(eth0.index, net("10.65.0.3/32"))
        .await
        .unwrap_err()
        .is_already_exists());
    assert_eq!(
        pod.list_addresses(eth0.index).await.unwrap(),
        vec![net("10.65.0.3/32")]
    );
    let gateway = IpNetwork::new(IpAddr::V4(POD_GATEWAY_V4), 32).unwrap();
    pod.add_route(&Route::link_scope(gateway, eth0.index, RouteProtocol::BOOT))
        .await
        .unwrap();
    pod.add_route(&Route::via(
        net("0.0.0.0/0"),
        gateway.ip(),
        Some(eth0.index),
        RouteProtocol::BOOT,
    ))
    .await
    .unwrap();
    let shown = pod_ns.ip(&["route", "show"]);
    assert!(
        shown.contains("default via 169.254.1.1 dev eth0"),
        "{shown}"
    );
    assert!(shown.contains("169.254.1.1 dev eth0 scope link"), "{shown}");
    let host_routes = host_ns.ip(&["route", "show", "proto", "230"]);
    assert!(
        host_routes.contains("10.65.0.3 dev rdpod1 scope link"),
        "{host_routes}"
    );

    // UDP from the pod to the host namespace and back: veth, proxy ARP and both routes work.
    let listener = run_in_netns(&host_ns.netns, || UdpSocket::bind("10.99.0.1:7777"))
        .unwrap()
        .unwrap();
    let sender = run_in_netns(&pod_ns.netns, || UdpSocket::bind("10.65.0.3:0"))
        .unwrap()
        .unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    sender
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    sender.send_to(b"ping", "10.99.0.1:7777").unwrap();
    let mut buffer = [0u8; 16];
    let (length, from) = listener.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..length], b"ping");
    assert_eq!(from.ip(), "10.65.0.3".parse::<IpAddr>().unwrap());
    listener.send_to(b"pong", from).unwrap();
    let (length, _) = sender.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..length], b"pong");
}

#[tokio::test]
async fn e2e_list_routes_by_protocol_never_touches_foreign_routes() {
    if !e2e_enabled("e2e_list_routes_by_protocol_never_touches_foreign_routes") {
        return;
    }
    let (ns, netlink, dev) = TestNetns::with_addressed_device("10.0.0.1/24").await;
    ns.ip(&[
        "route",
        "add",
        "10.70.0.0/24",
        "dev",
        "d0",
        "proto",
        "static",
    ]);
    let workload = Route::link_scope(net("10.65.0.3/32"), dev, RouteProtocol::WORKLOAD);
    let blackhole = Route::blackhole(net("10.65.0.0/26"), RouteProtocol::BLACKHOLE);
    let learned = Route::via(
        net("10.66.0.0/26"),
        "10.0.0.2".parse().unwrap(),
        Some(dev),
        RouteProtocol::BGP,
    );
    let tunnel = Route::via(
        net("10.67.0.0/26"),
        "192.0.2.7".parse().unwrap(),
        Some(dev),
        RouteProtocol::TUNNEL,
    )
    .with_onlink();
    let v6 = Route::blackhole(net("fd00:65::/122"), RouteProtocol::BLACKHOLE);
    let ecmp = Route::blackhole(net("10.68.0.0/26"), RouteProtocol::BGP).with_multipath(vec![
        NextHop {
            gateway: Some("10.0.0.2".parse().unwrap()),
            output_ifindex: Some(dev),
            weight: 1,
            onlink: false,
        },
        NextHop {
            gateway: Some("10.0.0.3".parse().unwrap()),
            output_ifindex: Some(dev),
            weight: 3,
            onlink: false,
        },
    ]);
    let ecmp = Route {
        kind: RouteKind::Unicast,
        ..ecmp
    };
    for route in [&workload, &blackhole, &learned, &tunnel, &v6, &ecmp] {
        netlink
            .add_route(route)
            .await
            .unwrap_or_else(|e| panic!("{route:?}: {e}"));
    }
    assert!(netlink
        .add_route(&workload)
        .await
        .unwrap_err()
        .is_already_exists());

    let list = |protocol| {
        let netlink = &netlink;
        async move {
            netlink
                .list_routes(&RouteFilter::protocol(protocol))
                .await
                .unwrap()
        }
    };
    assert_eq!(list(RouteProtocol::WORKLOAD).await, vec![workload.clone()]);
    let mut blackholes = list(RouteProtocol::BLACKHOLE).await;
    blackholes.sort_by_key(|r| r.key());
    assert_eq!(blackholes, vec![blackhole.clone(), v6.clone()]);
    let mut bgp = list(RouteProtocol::BGP).await;
    bgp.sort_by_key(|r| r.key());
    assert_eq!(bgp, vec![learned.clone(), ecmp.clone()]);
    assert_eq!(list(RouteProtocol::TUNNEL).await, vec![tunnel.clone()]);
    let statics = list(RouteProtocol::STATIC).await;
    assert_eq!(statics.len(), 1);
    assert_eq!(statics[0].destination, net("10.70.0.0/24"));

    // Deleting at the static route's key with our protocol must leave it alone.
    let impostor = Route::link_scope(net("10.70.0.0/24"), dev, RouteProtocol::BGP);
    netlink.delete_route(&impostor).await.unwrap();
    for route in [&workload, &blackhole, &learned, &tunnel, &v6, &ecmp] {
        netlink.delete_route(route).await.unwrap();
        netlink.delete_route(route).await.unwrap(); // already gone: Ok
    }
    for protocol in RouteProtocol::OURS {
        assert!(list(protocol).await.is_empty(), "{protocol} left behind");
    }
    let remaining = ns.ip(&["route", "show", "proto", "static"]);
    assert!(
        remaining.contains("10.70.0.0/24 dev d0"),
        "static route touched: {remaining}"
    );

    // Replace overwrites at the same key.
    netlink.add_route(&workload).await.unwrap();
    let moved = Route::via(
        net("10.65.0.3/32"),
        "10.0.0.9".parse().unwrap(),
        Some(dev),
        RouteProtocol::WORKLOAD,
    )
    .with_onlink();
    netlink.replace_route(&moved).await.unwrap();
    assert_eq!(list(RouteProtocol::WORKLOAD).await, vec![moved]);
}

#[tokio::test]
async fn e2e_route_monitor_sees_an_external_delete() {
    if !e2e_enabled("e2e_route_monitor_sees_an_external_delete") {
        return;
    }
    let ns = TestNetns::create();
    let netlink = ns.netlink().await;
    let dev = ns.device(&netlink, "d0").await;
    let mut watch = netlink.watch_routes().await.unwrap();
    let workload = Route::link_scope(net("10.65.0.9/32"), dev, RouteProtocol::WORKLOAD);
    netlink.add_route(&workload).await.unwrap();
    ns.ip(&["route", "del", "10.65.0.9/32", "dev", "d0"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen_add = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, watch.next())
            .await
            .expect("route event within 5 s")
            .expect("monitor still running");
        match event {
            RouteEvent::Added(route) if route == workload => seen_add = true,
            RouteEvent::Deleted(route) if route.key() == workload.key() => {
                assert_eq!(route.protocol, RouteProtocol::WORKLOAD);
                break;
            }
            _ => {}
        }
    }
    assert!(seen_add, "the add came before the delete");
}

#[tokio::test]
async fn e2e_deletion_monitor_sees_only_deletions_of_its_protocols() {
    if !e2e_enabled("e2e_deletion_monitor_sees_only_deletions_of_its_protocols") {
        return;
    }
    let ns = TestNetns::create();
    let netlink = ns.netlink().await;
    let dev = ns.device(&netlink, "d0").await;
    let mut watch = netlink
        .watch_route_deletions(&[RouteProtocol::WORKLOAD, RouteProtocol::BGP])
        .await
        .unwrap();
    let other = Route::link_scope(net("10.65.1.1/32"), dev, RouteProtocol::TUNNEL);
    let ours = Route::link_scope(net("10.65.1.2/32"), dev, RouteProtocol::WORKLOAD);
    netlink.add_route(&other).await.unwrap();
    netlink.add_route(&ours).await.unwrap();
    ns.ip(&["route", "del", "10.65.1.1/32", "dev", "d0"]);
    ns.ip(&["route", "del", "10.65.1.2/32", "dev", "d0"]);
    // The filter drops both adds and the other protocol's delete: the first event is ours.
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("route event within 5 s")
        .expect("monitor still running");
    match event {
        RouteEvent::Deleted(route) => assert_eq!(route.key(), ours.key()),
        other => panic!("expected only the deletion of ours, got {other:?}"),
    }
}

/// `count` /32 routes from 10.128.0.0 on, `dev scope link`.
fn host_routes(count: usize, dev: u32, protocol: RouteProtocol) -> Vec<Route> {
    (0..count)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(10, 128 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
            Route::link_scope(IpNetwork::new(IpAddr::V4(ip), 32).unwrap(), dev, protocol)
        })
        .collect()
}

#[tokio::test]
async fn e2e_streaming_scan_visits_every_route_of_a_protocol() {
    if !e2e_enabled("e2e_streaming_scan_visits_every_route_of_a_protocol") {
        return;
    }
    const COUNT: usize = 5_000;
    let ns = TestNetns::create();
    let netlink = ns.netlink().await;
    let dev = ns.device(&netlink, "d0").await;
    let routes = host_routes(COUNT, dev, RouteProtocol::BGP);
    netlink.replace_routes_batch(&routes).await.unwrap();
    let decoy = Route::link_scope(net("10.130.0.1/32"), dev, RouteProtocol::WORKLOAD);
    netlink.add_route(&decoy).await.unwrap();
    let seen = netlink
        .scan_routes(
            RouteFilter::protocol(RouteProtocol::BGP),
            Vec::new(),
            |seen: &mut Vec<Route>, route| seen.push(route),
        )
        .await
        .unwrap();
    assert_eq!(
        seen.len(),
        COUNT,
        "every route of the protocol, nothing else"
    );
    let mut seen: Vec<IpNetwork> = seen.into_iter().map(|r| r.destination).collect();
    seen.sort();
    let mut want: Vec<IpNetwork> = routes.iter().map(|r| r.destination).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn e2e_batch_install_of_20k_routes() {
    if !e2e_enabled("e2e_batch_install_of_20k_routes") {
        return;
    }
    const COUNT: usize = 20_000;
    let ns = TestNetns::create();
    let netlink = ns.netlink().await;
    let dev = ns.device(&netlink, "d0").await;
    let routes = host_routes(COUNT, dev, RouteProtocol::WORKLOAD);
    let started = Instant::now();
    let report = netlink.replace_routes_batch(&routes).await.unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "batch: {COUNT} routes in {elapsed:?} ({:.0} routes/s, {} build)",
        COUNT as f64 / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(report.is_complete(), "{:?}", report.failures.first());
    let read_back = netlink
        .list_routes(&RouteFilter::protocol(RouteProtocol::WORKLOAD))
        .await
        .unwrap();
    assert_eq!(read_back.len(), COUNT);
    let mut expected: Vec<_> = routes.iter().map(Route::key).collect();
    let mut actual: Vec<_> = read_back.iter().map(Route::key).collect();
    expected.sort();
    actual.sort();
    assert_eq!(expected, actual);

    // Per-route failures are reported by index while the rest still go in.
    let mut mixed: Vec<Route> = (0..1000)
        .map(|i| {
            Route::link_scope(
                net(&format!("10.200.{}.{}/32", i / 256, i % 256)),
                dev,
                RouteProtocol::WORKLOAD,
            )
        })
        .collect();
    mixed[10].output_ifindex = Some(9999);
    mixed[999].output_ifindex = Some(9999);
    let report = netlink.replace_routes_batch(&mixed).await.unwrap();
    assert_eq!(report.succeeded, 998);
    let failed: Vec<usize> = report.failures.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![10, 999]);
    assert!(
        report.failures[0].error.is_not_found(),
        "{}",
        report.failures[0].error
    );

    let report = netlink.delete_routes_batch(&routes).await.unwrap();
    assert!(report.is_complete());
    netlink.delete_routes_batch(&mixed).await.unwrap();
    let left = netlink
        .list_routes(&RouteFilter::protocol(RouteProtocol::WORKLOAD))
        .await
        .unwrap();
    assert!(left.is_empty(), "{} routes left", left.len());
}

#[tokio::test]
async fn e2e_sysctls_are_per_namespace() {
    if !e2e_enabled("e2e_sysctls_are_per_namespace") {
        return;
    }
    let ns = TestNetns::create();
    let netlink = ns.netlink().await;
    ns.device(&netlink, "rdsys0").await;
    for (key, value) in [
        (proxy_arp_key("rdsys0"), "1"),
        (proxy_delay_key("rdsys0"), "0"),
        (ipv4_forwarding_key("rdsys0"), "1"),
        (route_localnet_key("rdsys0"), "1"),
        (accept_ra_key("rdsys0"), "0"),
    ] {
        netlink.set_sysctl(&key, value).await.unwrap();
        assert_eq!(netlink.get_sysctl(&key).await.unwrap(), value);
        let path = format!("/proc/sys/{key}");
        let seen = run_in_netns(&ns.netns, move || std::fs::read_to_string(path))
            .unwrap()
            .unwrap();
        assert_eq!(seen.trim(), value, "{key}");
    }
    // The interface exists only in the test namespace, not in the caller's.
    assert!(sysctl::get_sysctl(&proxy_arp_key("rdsys0"))
        .unwrap_err()
        .is_not_found());
    assert!(netlink
        .set_sysctl(&proxy_arp_key("rdnothere"), "1")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn e2e_neighbours_and_fdb_on_vxlan() {
    if !e2e_enabled("e2e_neighbours_and_fdb_on_vxlan") {
        return;
    }
    let ns = TestNetns::create();
    let netlink = ns.netlink().await;
    ns.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "4096",
        "dstport",
        "4789",
        "local",
        "192.0.2.1",
        "nolearning",
    ]);
    let vx = netlink.link_by_name("vx0").await.unwrap().unwrap();
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    let mac: MacAddr = "66:aa:00:00:00:02".parse().unwrap();
    let neighbour = Neighbour {
        ifindex: vx.index,
        ip: "10.66.0.0".parse().unwrap(),
        mac: Some(mac),
        permanent: true,
    };
    netlink.replace_neighbour(&neighbour).await.unwrap();
    netlink.replace_neighbour(&neighbour).await.unwrap();
    assert_eq!(
        netlink.list_neighbours(vx.index).await.unwrap(),
        vec![neighbour.clone()]
    );
    let entry = FdbEntry {
        ifindex: vx.index,
        mac,
        destination: Some("192.0.2.2".parse().unwrap()),
    };
    netlink.replace_fdb(&entry).await.unwrap();
    let fdb = netlink.list_fdb(vx.index).await.unwrap();
    assert!(fdb.contains(&entry), "{fdb:?}");
    let shown = ns.ip(&["neigh", "show", "dev", "vx0"]);
    assert!(
        shown.contains("10.66.0.0 lladdr 66:aa:00:00:00:02 PERMANENT"),
        "{shown}"
    );
    netlink.delete_fdb(&entry).await.unwrap();
    netlink.delete_fdb(&entry).await.unwrap();
    assert!(!netlink.list_fdb(vx.index).await.unwrap().contains(&entry));
    netlink
        .delete_neighbour(vx.index, neighbour.ip)
        .await
        .unwrap();
    netlink
        .delete_neighbour(vx.index, neighbour.ip)
        .await
        .unwrap();
    assert!(netlink.list_neighbours(vx.index).await.unwrap().is_empty());
}

#[tokio::test]
async fn e2e_missing_netns_is_netns_not_found() {
    if !e2e_enabled("e2e_missing_netns_is_netns_not_found") {
        return;
    }
    let ns = TestNetns::create();
    let missing = NetnsRef::named("rt-nl-does-not-exist");
    assert!(matches!(
        KernelNetlink::open_in_netns(&missing).await,
        Err(NetlinkError::NetnsNotFound(_))
    ));
    let netlink = ns.netlink().await;
    assert!(matches!(
        netlink.for_netns(&missing).await,
        Err(NetlinkError::NetnsNotFound(_))
    ));
    let result = netlink
        .create_veth("rdmiss0", "eth0", &missing, MacAddr::HOST_VETH, 1500)
        .await;
    assert!(
        matches!(result, Err(NetlinkError::NetnsNotFound(_))),
        "{result:?}"
    );
    assert!(
        netlink.link_by_name("rdmiss0").await.unwrap().is_none(),
        "nothing left behind"
    );
}

#[tokio::test]
async fn e2e_nexthop_objects_carry_routes_and_their_deletion_is_reported() {
    if !e2e_enabled("e2e_nexthop_objects_carry_routes_and_their_deletion_is_reported") {
        return;
    }
    let (ns, netlink, dev) = TestNetns::with_addressed_device("10.66.0.1/24").await;
    let gateway: IpAddr = "10.66.0.2".parse().unwrap();
    // `ip route get`: the gateway is on d0, directly.
    let found = netlink.route_get(gateway).await.unwrap().unwrap();
    assert_eq!((found.output_ifindex, found.gateway), (Some(dev), None));
    let spec = NexthopSpec::Gateway {
        gateway,
        ifindex: dev,
        onlink: false,
    };
    netlink
        .create_nexthop(500, RouteProtocol::BGP, spec.clone())
        .await
        .unwrap();
    // An id in use is refused, never overwritten.
    let again = netlink
        .create_nexthop(500, RouteProtocol::BGP, spec.clone())
        .await
        .unwrap_err();
    assert!(again.is_already_exists(), "{again}");
    let group = NexthopSpec::Group(vec![(500, 1)]);
    netlink
        .create_nexthop(501, RouteProtocol::BGP, group.clone())
        .await
        .unwrap();
    let listed = netlink.nexthops().await.unwrap();
    let find = |id| listed.iter().find(|n| n.id == id).cloned();
    assert_eq!(find(500).and_then(|n| n.spec), Some(spec));
    assert_eq!(
        find(501).map(|n| (n.protocol, n.spec)),
        Some((RouteProtocol::BGP, Some(group)))
    );
    let shown = ns.ip(&["nexthop", "show", "id", "500"]);
    assert!(shown.contains("via 10.66.0.2 dev d0"), "{shown}");

    // A route written with the object: the kernel reports the id and, for compatibility, the
    // gateway and device it stands for.
    let mut route = Route::via(net("10.67.0.0/26"), gateway, None, RouteProtocol::BGP);
    route.nexthop_id = Some(500);
    let report = netlink
        .replace_routes_batch(&[route.clone()])
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1, "{:?}", report.failures);
    let text = ns.ip(&["route", "show", "10.67.0.0/26"]);
    assert!(
        text.contains("nhid 500") && text.contains("via 10.66.0.2 dev d0"),
        "{text}"
    );
    let scanned = netlink
        .scan_routes(
            RouteFilter::protocol(RouteProtocol::BGP),
            Vec::new(),
            |all, r| all.push(r),
        )
        .await
        .unwrap();
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].nexthop_id, Some(500));
    assert_eq!(scanned[0].gateway, Some(gateway));

    // Deleting the object takes the route with it, with no RTM_DELROUTE: the deletion monitor
    // reports the object of our protocol instead (after the group that used it).
    let mut watch = netlink
        .watch_route_deletions(&[RouteProtocol::BGP])
        .await
        .unwrap();
    netlink.delete_nexthop(500).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("nexthop event within 5 s")
        .expect("monitor still running");
    assert_eq!(event, RouteEvent::NexthopDeleted(RouteProtocol::BGP));
    let text = ns.ip(&["route", "show", "10.67.0.0/26"]);
    assert!(text.trim().is_empty(), "{text}");
    let gone = netlink.delete_nexthop(500).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
}

#[tokio::test]
async fn e2e_reconciler_nexthop_table_creates_adopts_and_collects_objects() {
    use crate::agent::nexthops::{Nexthops, Want};
    use std::collections::HashSet;
    if !e2e_enabled("e2e_reconciler_nexthop_table_creates_adopts_and_collects_objects") {
        return;
    }
    let (ns, netlink, dev) = TestNetns::with_addressed_device("10.66.0.1/24").await;
    let (gw2, gw3): (IpAddr, IpAddr) = ("10.66.0.2".parse().unwrap(), "10.66.0.3".parse().unwrap());
    let hop = |gateway| NextHop {
        gateway: Some(gateway),
        output_ifindex: None,
        weight: 1,
        onlink: false,
    };
    let plain = vec![
        Route::via(net("10.70.0.0/26"), gw2, None, RouteProtocol::BGP),
        Route::via(net("10.70.0.64/26"), gw2, None, RouteProtocol::BGP)
            .with_multipath(vec![hop(gw2), hop(gw3)]),
        // A tunnel-style route names its device and is onlink: it keeps its own form.
        Route::via(net("10.70.0.128/26"), gw3, Some(dev), RouteProtocol::BGP).with_onlink(),
        // Not on any link: no object (the kernel would refuse the route as well).
        Route::via(
            net("10.70.0.192/26"),
            "192.0.2.1".parse().unwrap(),
            None,
            RouteProtocol::BGP,
        ),
    ];
    let mut table = Nexthops::start(&netlink, RouteProtocol::BGP).await;
    let mut routes = plain.clone();
    table.assign(&netlink, &mut routes).await;
    let single = routes[0].nexthop_id.expect("an object for a plain gateway");
    let group = routes[1].nexthop_id.expect("a group for an ECMP set");
    assert_ne!(single, group);
    assert_eq!((routes[2].nexthop_id, routes[3].nexthop_id), (None, None));
    let report = netlink.replace_routes_batch(&routes[..3]).await.unwrap();
    assert_eq!(report.succeeded, 3, "{:?}", report.failures);
    let objects = ns.ip(&["nexthop", "show", "protocol", "232"]);
    assert_eq!(objects.lines().count(), 3, "{objects}");
    assert!(
        objects.contains(&format!("id {single} via 10.66.0.2 dev d0")),
        "{objects}"
    );
    let ecmp = ns.ip(&["route", "show", "10.70.0.64/26"]);
    assert!(ecmp.contains(&format!("nhid {group}")), "{ecmp}");
    assert!(
        ecmp.contains("nexthop via 10.66.0.2 dev d0")
            && ecmp.contains("nexthop via 10.66.0.3 dev d0"),
        "{ecmp}"
    );

    // A restarted reconciler adopts the objects: the same routes map to the same ids.
    let adopted = Nexthops::start(&netlink, RouteProtocol::BGP).await;
    assert_eq!(adopted.view().want(&plain[0]), Want::Object(single));
    assert_eq!(adopted.view().want(&plain[1]), Want::Object(group));
    assert_eq!(adopted.view().want(&plain[2]), Want::Plain);

    // The ECMP route goes: its group and the member nobody else uses are collected, the object
    // a route still uses stays.
    netlink.delete_routes_batch(&routes[1..2]).await.unwrap();
    table
        .collect_garbage(&netlink, &HashSet::from([single]))
        .await;
    let left = ns.ip(&["nexthop", "show", "protocol", "232"]);
    assert_eq!(left.lines().count(), 1, "{left}");
    assert!(left.contains(&format!("id {single} ")), "{left}");
    let kept = ns.ip(&["route", "show", "10.70.0.0/26"]);
    assert!(kept.contains(&format!("nhid {single}")), "{kept}");

    // A device without carrier: the kernel refuses an object on it, so its route keeps its
    // gateway; once the carrier is back, the next refresh lets the object be created.
    ns.ip(&["link", "add", "d1", "type", "veth", "peer", "name", "d1p"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["addr", "add", "10.68.0.1/24", "dev", "d1"]);
    let dark = vec![Route::via(
        net("10.71.0.0/26"),
        "10.68.0.2".parse().unwrap(),
        None,
        RouteProtocol::BGP,
    )];
    let mut first = dark.clone();
    table.assign(&netlink, &mut first).await;
    assert_eq!(first[0].nexthop_id, None, "no object without carrier");
    ns.ip(&["link", "set", "d1p", "up"]);
    table.refresh(&netlink).await;
    let mut second = dark.clone();
    table.assign(&netlink, &mut second).await;
    let lit = second[0]
        .nexthop_id
        .expect("an object once the carrier is up");
    let shown = ns.ip(&["nexthop", "show", "id", &lit.to_string()]);
    assert!(shown.contains("via 10.68.0.2 dev d1"), "{shown}");
}
