//! Session hardening against one peer: max-prefix (Cease/1 to that peer only).
//! Loopback addresses 127.42.40.0/24 and up (session.rs uses lower ones).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::harness::{message, peer_status, wait_route, RawPeer};
use crate::bgp::fsm::State;
use crate::bgp::speaker::{MaxPrefixAction, MaxPrefixes, PeerSpec, Speaker, SpeakerConfig};

const AS: u32 = 64512;
const WAIT: Duration = Duration::from_secs(15);

fn addr(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 42, net, host))
}

async fn speaker(address: IpAddr) -> Speaker {
    let IpAddr::V4(id) = address else {
        panic!("IPv4 only here");
    };
    let mut config = SpeakerConfig::new(id, AS);
    config.listen_addr = Some(SocketAddr::new(address, 0));
    config.connect_retry = Duration::from_millis(500);
    Speaker::start(config).await.expect("start speaker")
}

fn passive(name: &str, address: IpAddr, asn: u32) -> PeerSpec {
    let mut spec = PeerSpec::new(name, "global", address, AS, asn);
    spec.passive = true;
    spec
}

/// An UPDATE announcing `prefixes` (/16s of 10.x) via `next_hop`, AS_PATH [asn].
fn announce(asn: u32, next_hop: Ipv4Addr, seconds: &[u8]) -> Vec<u8> {
    let nh: String = next_hop
        .octets()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let nlri: String = seconds.iter().map(|b| format!("10 0a{b:02x} ")).collect();
    message(
        2,
        &format!("0000 0014 40 01 01 00 40 02 06 0201 {asn:08x} 40 03 04 {nh} {nlri}"),
    )
}

#[tokio::test]
async fn peer_over_its_prefix_limit_gets_cease_1_and_others_are_untouched() {
    let net = 40;
    let s = speaker(addr(net, 1)).await;
    let (greedy, calm) = (addr(net, 9), addr(net, 10));
    let mut limited = passive("Global_greedy", greedy, 65009);
    limited.max_prefixes = Some(MaxPrefixes {
        limit: 2,
        action: MaxPrefixAction::Restart,
    });
    s.handle()
        .set_peers(vec![limited, passive("Global_calm", calm, 65010)])
        .unwrap();
    let target = s.listen_addr().unwrap();
    let mut other = RawPeer::establish(calm, target, 65010, Ipv4Addr::new(9, 9, 9, 10), 90).await;
    other
        .send(&announce(65010, Ipv4Addr::new(127, 42, net, 10), &[20]))
        .await;
    wait_route(&s.handle(), "10.20.0.0/16", &[calm], WAIT).await;
    let before = peer_status(&s.handle(), "Global_calm").await.unwrap();

    let mut raw = RawPeer::establish(greedy, target, 65009, Ipv4Addr::new(9, 9, 9, 9), 90).await;
    // Two prefixes: at the limit, fine.
    raw.send(&announce(65009, Ipv4Addr::new(127, 42, net, 9), &[1, 2]))
        .await;
    wait_route(&s.handle(), "10.2.0.0/16", &[greedy], WAIT).await;
    // A third: over it.
    raw.send(&announce(65009, Ipv4Addr::new(127, 42, net, 9), &[3]))
        .await;
    assert_eq!(raw.receive_notification().await, Some((6, 1)));
    wait_route(&s.handle(), "10.1.0.0/16", &[], WAIT).await;
    let status = peer_status(&s.handle(), "Global_greedy").await.unwrap();
    assert!(
        status.info.contains("Maximum Number of Prefixes") || status.info.contains("6/1"),
        "{}",
        status.info
    );

    let after = peer_status(&s.handle(), "Global_calm").await.unwrap();
    assert_eq!(after.state, State::Established);
    assert_eq!(after.since, before.since);
    assert_eq!(after.prefixes_received, 1);
}

#[tokio::test]
async fn warn_action_keeps_the_session_and_the_routes() {
    let net = 41;
    let s = speaker(addr(net, 1)).await;
    let greedy = addr(net, 9);
    let mut limited = passive("Global_greedy", greedy, 65009);
    limited.max_prefixes = Some(MaxPrefixes {
        limit: 1,
        action: MaxPrefixAction::Warn,
    });
    s.handle().set_peers(vec![limited]).unwrap();
    let target = s.listen_addr().unwrap();
    let mut raw = RawPeer::establish(greedy, target, 65009, Ipv4Addr::new(9, 9, 9, 9), 90).await;
    raw.send(&announce(65009, Ipv4Addr::new(127, 42, net, 9), &[1, 2, 3]))
        .await;
    wait_route(&s.handle(), "10.3.0.0/16", &[greedy], WAIT).await;
    let status = peer_status(&s.handle(), "Global_greedy").await.unwrap();
    assert_eq!(status.state, State::Established);
    assert_eq!(status.prefixes_received, 3);
}
