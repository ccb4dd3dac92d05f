//! Planner and apply together on `FakeNetlink`, with a real `SharedRib` fed by test peers:
//! the restart-safety rules as the kernel would see them.

use super::*;
use crate::bgp::packet::{AsPath, Origin, PathAttributes, Update};
use crate::bgp::rib::{ExportPolicy, PeerId, PeerInfo, Rib, SharedRib};
use crate::netlink::{FakeNetlink, NexthopSpec, Operation, Route, RouteFilter};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::Duration;

const AS: u32 = 64512;

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A RIB with peers 10.0.0.2 and 10.0.0.3 (iBGP): 10.2.0.0/26 from the first, 10.3.0.0/26
/// from the second, 10.4.0.0/26 from both (ECMP).
fn rib() -> SharedRib {
    let mut rib = Rib::new(AS, Ipv4Addr::new(10, 0, 0, 1), ExportPolicy::default());
    for (n, prefixes) in [
        (2u8, ["10.2.0.0/26", "10.4.0.0/26"]),
        (3, ["10.3.0.0/26", "10.4.0.0/26"]),
    ] {
        let peer = PeerId(u32::from(n));
        rib.add_peer(peer);
        rib.peer_up(
            peer,
            PeerInfo {
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
                peer_asn: AS,
                router_id: Ipv4Addr::new(10, 0, 0, n),
                local_address: ip("10.0.0.1"),
                ipv4: true,
                ipv6: false,
            },
        );
        let update = Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence(Vec::new())),
                next_hop: Some(Ipv4Addr::new(10, 0, 0, n)),
                ..PathAttributes::default()
            },
            nlri: prefixes.iter().map(|p| net(p)).collect(),
            ..Update::default()
        };
        rib.receive_update(peer, &update);
    }
    SharedRib::new(rib)
}

/// The node: eth0 on 10.0.0.0/24 (so the peers' next hops resolve to it), local block
/// 10.1.0.0/26, and a reconciler that has not seen anything yet.
struct Node {
    fake: FakeNetlink,
    eth0: u32,
    planner: RoutePlanner,
    apply: RouteApply,
    t0: Instant,
}

async fn node() -> Node {
    let fake = FakeNetlink::new();
    let eth0 = fake.add_link("eth0", "dummy");
    let connected = Route::link_scope(net("10.0.0.0/24"), eth0, RouteProtocol::KERNEL);
    fake.add_route(&connected).await.unwrap();
    let netlink: Arc<dyn Netlink> = Arc::new(fake.clone());
    Node {
        apply: RouteApply::new(netlink, rib()),
        fake,
        eth0,
        planner: RoutePlanner::new(),
        t0: Instant::now(),
    }
}

fn local() -> Input {
    Input::LocalBlocks([net("10.1.0.0/26")].into())
}

fn encap() -> Input {
    Input::Encap(calc::EncapView::default())
}

impl Node {
    /// Carries out the planner's actions at `now` until it has none.
    async fn run(&mut self, now: Instant) -> Vec<Action> {
        let mut said = Vec::new();
        for _ in 0..100 {
            let Some(work) = self.planner.next(now, false) else {
                return said;
            };
            let view = self
                .planner
                .view()
                .expect("work comes only with both views known");
            let (outcome, _) = carry_out(&mut self.apply, &view, work).await;
            said.extend(self.planner.on(now, Input::Applied(outcome)));
        }
        panic!("the planner never settles: {said:?}");
    }

    /// Both views, then everything the planner asks for.
    async fn start(&mut self) -> Vec<Action> {
        self.planner.on(self.t0, local());
        self.planner.on(self.t0, encap());
        self.run(self.t0).await
    }

    fn ours(&self) -> Vec<IpNetwork> {
        let mut ours: Vec<IpNetwork> = self
            .fake
            .routes()
            .into_iter()
            .filter(|r| [RouteProtocol::BGP, RouteProtocol::BLACKHOLE].contains(&r.protocol))
            .map(|r| r.destination)
            .collect();
        ours.sort();
        ours
    }

    fn route(&self, prefix: &str) -> Route {
        let routes = self.fake.routes();
        let found = routes.iter().find(|r| r.destination == net(prefix));
        found
            .cloned()
            .unwrap_or_else(|| panic!("no route {prefix}: {routes:?}"))
    }

    /// The kernel writes (routes and nexthop objects) made since call number `from`.
    fn writes_since(&self, from: usize) -> Vec<(Operation, String)> {
        let writes = [
            Operation::ReplaceRoutesBatch,
            Operation::DeleteRoutesBatch,
            Operation::CreateNexthop,
            Operation::DeleteNexthop,
        ];
        let calls = self.fake.calls();
        calls[from..]
            .iter()
            .filter(|(op, _)| writes.contains(op))
            .cloned()
            .collect()
    }

    /// Routes a previous agent left: a learned route no peer sends any more, and the blackhole
    /// of a block this node no longer has.
    async fn leftovers(&self) {
        let stale = Route::via(net("10.9.0.0/26"), ip("10.0.0.9"), None, RouteProtocol::BGP);
        self.fake.add_route(&stale).await.unwrap();
        let gone = Route::blackhole(net("10.1.0.64/26"), RouteProtocol::BLACKHOLE);
        self.fake.add_route(&gone).await.unwrap();
    }
}

#[tokio::test]
async fn nothing_is_written_before_the_first_datastore_read() {
    let mut node = node().await;
    node.leftovers().await;
    let before = node.ours();
    // The tunnel manager has run, speaker changes and deletions arrive: still nothing.
    node.planner.on(node.t0, encap());
    node.planner
        .on(node.t0, Input::Changed(vec![net("10.2.0.0/26")]));
    node.planner.on(node.t0, Input::MonitorLost);
    assert!(node.run(node.t0).await.is_empty());
    assert_eq!(node.writes_since(0), Vec::new());
    assert_eq!(node.ours(), before);

    // The datastore read: blackhole and learned routes written, the stale blackhole removed,
    // the stale learned route kept (peers have not all sent End-of-RIB).
    node.planner.on(node.t0, local());
    assert_eq!(node.run(node.t0).await, vec![Action::MarkProgrammed]);
    let expected: Vec<IpNetwork> = ["10.1.0.0/26", "10.2.0.0/26", "10.3.0.0/26", "10.4.0.0/26"]
        .iter()
        .chain(&["10.9.0.0/26"])
        .map(|p| net(p))
        .collect();
    assert_eq!(node.ours(), expected);
}

#[tokio::test]
async fn learned_routes_are_kept_until_every_peer_sent_end_of_rib() {
    let mut node = node().await;
    node.leftovers().await;
    node.start().await;
    assert!(node.ours().contains(&net("10.9.0.0/26")));
    // More resyncs before End-of-RIB change nothing about it.
    node.planner.on(node.t0, Input::MonitorLost);
    node.run(node.t0).await;
    assert!(node.ours().contains(&net("10.9.0.0/26")));

    node.planner.on(node.t0, Input::PeersSettled);
    node.run(node.t0).await;
    assert!(
        !node.ours().contains(&net("10.9.0.0/26")),
        "{:?}",
        node.ours()
    );
    assert!(node.ours().contains(&net("10.2.0.0/26")));
}

#[tokio::test]
async fn learned_routes_go_after_the_grace_without_end_of_rib() {
    let mut node = node().await;
    node.leftovers().await;
    node.start().await;
    node.run(node.t0 + Duration::from_secs(60)).await;
    assert!(node.ours().contains(&net("10.9.0.0/26")), "within 120 s");
    node.run(node.t0 + Duration::from_secs(121)).await;
    assert!(!node.ours().contains(&net("10.9.0.0/26")), "after 120 s");
}

#[tokio::test]
async fn a_datastore_outage_changes_nothing() {
    let mut node = node().await;
    node.start().await;
    node.planner.on(node.t0, Input::PeersSettled);
    node.run(node.t0).await;
    let programmed = node.ours();
    let from = node.fake.calls().len();
    // The follower keeps its last state while the datastore is unreachable: the same blocks
    // come in again; periodic resyncs run on.
    for minute in 1..4 {
        let now = node.t0 + Duration::from_secs(60 * minute);
        node.planner.on(now, local());
        node.planner.on(now, encap());
        node.planner.on(now, Input::Tick);
        node.run(now).await;
    }
    let scans = node.fake.calls()[from..]
        .iter()
        .filter(|(op, _)| *op == Operation::ListRoutes)
        .count();
    assert!(scans >= 3, "the periodic resyncs ran ({scans} scans)");
    assert_eq!(
        node.writes_since(from),
        Vec::new(),
        "nothing rewritten or deleted"
    );
    assert_eq!(node.ours(), programmed);
}

#[tokio::test]
async fn a_deleted_route_is_repaired() {
    let mut node = node().await;
    node.start().await;
    let wanted = node.route("10.2.0.0/26");
    node.fake.delete_route_externally(&wanted.key());
    assert!(!node.ours().contains(&net("10.2.0.0/26")));
    node.planner
        .on(node.t0, Input::RouteDeleted(net("10.2.0.0/26")));
    node.run(node.t0).await;
    assert_eq!(node.route("10.2.0.0/26"), wanted);
}

#[tokio::test]
async fn learned_routes_use_nexthop_objects_and_unused_ones_are_collected() {
    let mut node = node().await;
    let spare = NexthopSpec::Gateway {
        gateway: ip("10.0.0.7"),
        ifindex: node.eth0,
        onlink: false,
    };
    node.fake
        .create_nexthop(5, RouteProtocol::BGP, spare.clone())
        .await
        .unwrap();
    node.fake
        .create_nexthop(6, RouteProtocol::STATIC, spare)
        .await
        .unwrap();
    node.start().await;

    let single = node.route("10.2.0.0/26");
    assert_eq!(single.gateway, Some(ip("10.0.0.2")));
    let ecmp = node.route("10.4.0.0/26");
    assert_eq!(ecmp.multipath.len(), 2, "{ecmp:?}");
    let objects = node.fake.nexthops().await.unwrap();
    let ids: Vec<u32> = objects.iter().map(|n| n.id).collect();
    for used in [single.nexthop_id, ecmp.nexthop_id] {
        assert!(
            ids.contains(&used.expect("written with an object")),
            "{ids:?}"
        );
    }
    assert!(
        !ids.contains(&5),
        "an object of ours no route uses is deleted: {ids:?}"
    );
    assert!(
        ids.contains(&6),
        "another protocol's object is not ours: {ids:?}"
    );
}

#[tokio::test]
async fn a_restarted_reconciler_adopts_the_kernel_state_without_rewriting() {
    let mut node = node().await;
    node.start().await;
    node.planner.on(node.t0, Input::PeersSettled);
    node.run(node.t0).await;
    let programmed = node.fake.routes();
    let from = node.fake.calls().len();
    // A new agent: fresh planner and apply step, same kernel, same routes from the peers.
    let netlink: Arc<dyn Netlink> = Arc::new(node.fake.clone());
    node.apply = RouteApply::new(netlink, rib());
    node.planner = RoutePlanner::new();
    assert_eq!(node.start().await, vec![Action::MarkProgrammed]);
    assert_eq!(node.writes_since(from), Vec::new());
    assert_eq!(node.fake.routes(), programmed);
}

#[tokio::test]
async fn a_failed_kernel_update_is_retried_with_a_full_resync() {
    let mut node = node().await;
    node.fake.inject_failure_once(Operation::ReplaceRoutesBatch);
    let said = node.start().await;
    assert_eq!(
        said,
        vec![
            Action::RetryAfter(planner::RETRY_AFTER),
            Action::MarkProgrammed
        ]
    );
    let learned = node
        .fake
        .list_routes(&RouteFilter::protocol(RouteProtocol::BGP))
        .await
        .unwrap();
    assert_eq!(learned.len(), 3, "{learned:?}");
}

/// The whole reconciler under the shared driver, with a speaker that has no peers: waits until
/// `done` holds (paused time: a sleep runs everything that can run first).
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(start_paused = true)]
async fn under_the_driver_nothing_is_written_before_both_views_then_routes_are_kept_programmed() {
    use crate::bgp::speaker::{Speaker, SpeakerConfig};
    let node = node().await;
    node.leftovers().await;
    let mut config = SpeakerConfig::new(Ipv4Addr::new(10, 0, 0, 1), AS);
    config.listen_addr = None;
    let speaker = Speaker::start(config).await.unwrap();
    let (local_tx, local_rx) = watch::channel(None);
    let (encap_tx, encap_rx) = watch::channel(None);
    let programmed = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ReconcilerStats::default());
    let netlink: Arc<dyn Netlink> = Arc::new(node.fake.clone());
    tokio::spawn(reconcile_routes(
        speaker.handle(),
        local_rx,
        encap_rx,
        netlink,
        programmed.clone(),
        None,
        stats.clone(),
    ));
    encap_tx.send_replace(Some(calc::EncapView::default()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        node.writes_since(0),
        Vec::new(),
        "the datastore was not read"
    );
    assert_eq!(stats.snapshot().passes, 0);
    assert!(!programmed.load(Ordering::Relaxed));

    // The datastore read: the block's blackhole written, the stale one removed; no peer, so
    // the stale learned route may go too; the kernel counts as programmed.
    local_tx.send_replace(Some([net("10.1.0.0/26")].into()));
    until("routes programmed", || programmed.load(Ordering::Relaxed)).await;
    assert_eq!(node.ours(), vec![net("10.1.0.0/26")]);
    let stats_now = stats.snapshot();
    assert!(stats_now.passes_changed >= 1, "{stats_now:?}");

    // A deleted route of ours comes back through the monitor.
    let blackhole = node.route("10.1.0.0/26");
    let from = node.fake.calls().len();
    node.fake.delete_route_externally(&blackhole.key());
    until("blackhole repaired", || {
        node.ours() == vec![net("10.1.0.0/26")]
    })
    .await;
    let scans = node.fake.calls()[from..]
        .iter()
        .filter(|(op, _)| *op == Operation::ListRoutes)
        .count();
    assert_eq!(scans, 0, "repaired alone, not by a full resync");
    drop(speaker);
}
