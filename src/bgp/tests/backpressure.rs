//! The bounded queues under a peer that misbehaves: one that stops reading (its writer queue
//! stays under the cap, then it gets Cease/Out of Resources) and one that floods (its reader
//! pauses, so TCP slows it; the other session stays Established throughout).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};

use super::harness::{peer_status, wait_for, wait_route, wait_state, RawPeer};
use crate::bgp::fsm::State;
use crate::bgp::packet::{encode_updates, AsPath, Origin, PathAttributes, WireOptions};
use crate::bgp::session::{READ_EVENTS, ROUTE_BACKLOG};
use crate::bgp::speaker::{PeerQueues, PeerSpec, Speaker, SpeakerConfig, SpeakerHandle};

const AS: u32 = 64512;
const WAIT: Duration = Duration::from_secs(30);

fn addr(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 43, net, host))
}

/// `count` /32 prefixes in 10.`first`.0.0/16 and up.
fn host_prefixes(first: u8, count: u32) -> Vec<IpNetwork> {
    (0..count)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, first, 0, 0)) + i);
            IpNetwork::V4(Ipv4Network::new(ip, 32).unwrap())
        })
        .collect()
}

async fn speaker(address: IpAddr, write_queue_cap: usize) -> Speaker {
    let IpAddr::V4(id) = address else {
        panic!("IPv4 only here");
    };
    let mut config = SpeakerConfig::new(id, AS);
    config.listen_addr = Some(SocketAddr::new(address, 0));
    config.connect_retry = Duration::from_millis(500);
    config.write_queue_cap = write_queue_cap;
    Speaker::start(config).await.expect("start speaker")
}

fn passive_peer(name: &str, address: IpAddr) -> PeerSpec {
    let mut spec = PeerSpec::new(name, "test", address, AS, AS);
    spec.passive = true;
    spec
}

async fn queues_of(handle: &SpeakerHandle, name: &str) -> PeerQueues {
    let queues = handle.queues().await.unwrap();
    queues.into_iter().find(|q| q.name == name).unwrap()
}

/// The raw peer reads its OPEN and KEEPALIVE, then nothing: the speaker's UPDATEs for 200k
/// prefixes (about 1 MB) pile up behind a 4 KiB receive window. The writer queue never holds
/// more than its 64 KiB cap; over it the peer gets Cease/Out of Resources (6/8), which it
/// reads once it reads again, and the overflow is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_stops_reading_stays_under_the_write_cap_and_gets_cease() {
    const CAP: usize = 64 * 1024;
    let (a_addr, raw_addr) = (addr(1, 1), addr(1, 9));
    let a = speaker(a_addr, CAP).await;
    a.handle()
        .set_peers(vec![passive_peer("Raw", raw_addr)])
        .unwrap();
    let target = a.listen_addr().unwrap();
    let mut raw =
        RawPeer::establish_small_window(raw_addr, target, AS, Ipv4Addr::new(9, 9, 9, 1), 4096)
            .await;
    wait_state(&a.handle(), "Raw", State::Established, WAIT).await;
    let originated: BTreeSet<IpNetwork> = host_prefixes(64, 200_000).into_iter().collect();
    a.handle().set_originated(originated).unwrap();
    let down = wait_for("the stalled peer to be ceased", WAIT, || async {
        let status = peer_status(&a.handle(), "Raw").await?;
        (status.state != State::Established && status.info.contains("(6/8)")).then_some(status)
    })
    .await;
    let queues = queues_of(&a.handle(), "Raw").await;
    println!("{down:?}\n{queues:?}");
    assert!(queues.write_peak <= CAP, "{queues:?}");
    assert_eq!(queues.write_overflows, 1, "{queues:?}");
    // Reading again: the queued UPDATEs, then the Cease.
    assert_eq!(raw.receive_notification().await, Some((6, 8)));
}

/// A raw peer sends 2,000 UPDATEs of 800 prefixes each as fast as TCP lets it, while the
/// speaker also has a healthy peer. The speaker never holds more than its backlog of the
/// flooder's UPDATEs (the reader paused: TCP flow control reached the flooder), and the
/// healthy session stays Established, never restarted, all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_peer_is_paused_by_the_backlog_and_other_sessions_stay_established() {
    let (a_addr, b_addr, flood_addr) = (addr(2, 1), addr(2, 2), addr(2, 9));
    let a = speaker(a_addr, crate::bgp::session::DEFAULT_WRITE_QUEUE_CAP).await;
    let b = speaker(b_addr, crate::bgp::session::DEFAULT_WRITE_QUEUE_CAP).await;
    let mut to_b = PeerSpec::new("B", "test", b_addr, AS, AS);
    to_b.port = b.listen_addr().unwrap().port();
    to_b.source_address = Some(a_addr);
    a.handle()
        .set_peers(vec![to_b, passive_peer("Flood", flood_addr)])
        .unwrap();
    b.handle()
        .set_peers(vec![passive_peer("A", a_addr)])
        .unwrap();
    b.handle()
        .set_originated(["10.250.0.0/26".parse().unwrap()].into())
        .unwrap();
    wait_route(&a.handle(), "10.250.0.0/26", &[b_addr], WAIT).await;
    let healthy = wait_state(&a.handle(), "B", State::Established, WAIT).await;

    let target = a.listen_addr().unwrap();
    let mut flood = RawPeer::establish(flood_addr, target, AS, Ipv4Addr::new(9, 9, 9, 2), 90).await;
    let prefixes = host_prefixes(100, 800);
    let wire = WireOptions {
        four_octet_as: true,
        extended_message: false,
    };
    let messages: Vec<Vec<u8>> = (0..2000u32)
        .flat_map(|i| {
            let attributes = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence(vec![])),
                next_hop: Some(Ipv4Addr::new(127, 43, 2, 9)),
                local_pref: Some(100),
                med: Some(i),
                ..PathAttributes::default()
            };
            encode_updates(&attributes, &prefixes, &[], &wire).unwrap()
        })
        .collect();
    let sender = tokio::spawn(async move {
        for message in &messages {
            flood.send(message).await;
        }
        flood
    });
    let mut checks = 0;
    while !sender.is_finished() {
        let now = peer_status(&a.handle(), "B").await.unwrap();
        assert_eq!(
            now.state,
            State::Established,
            "healthy peer during the flood"
        );
        assert_eq!(now.since, healthy.since, "healthy peer never restarted");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _flood = sender.await.unwrap();
    let queues = queues_of(&a.handle(), "Flood").await;
    println!("{checks} checks during the flood; {queues:?}");
    assert!(queues.backlog_waits > 0, "the reader paused: {queues:?}");
    // At most the backlog, what one 16 KiB read decodes (UPDATEs of 4 KiB here: 4), and the
    // session's queue of read events.
    assert!(
        queues.backlog_peak <= ROUTE_BACKLOG + READ_EVENTS + 4,
        "{queues:?}"
    );
    wait_route(&a.handle(), "10.100.0.0/32", &[flood_addr], WAIT).await;
    let after = peer_status(&a.handle(), "B").await.unwrap();
    assert_eq!(
        (after.state, after.since),
        (State::Established, healthy.since)
    );
}
