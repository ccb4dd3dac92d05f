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

/// A log sink for one test (a thread-local default subscriber: the current-thread runtime
/// polls every task of the speaker on this thread).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ten_thousand_survivable_malformed_updates_add_under_100_kb_to_the_log() {
    let buffer = LogBuffer::default();
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let net = 42;
    let s = speaker(addr(net, 1)).await;
    let flooder = addr(net, 9);
    s.handle()
        .set_peers(vec![passive("Global_flood", flooder, 65009)])
        .unwrap();
    let target = s.listen_addr().unwrap();
    let mut raw = RawPeer::establish(flooder, target, 65009, Ipv4Addr::new(9, 9, 9, 9), 90).await;
    // COMMUNITIES of length 3: treat-as-withdraw (RFC 7606), the session survives.
    let bad = message(
        2,
        "0000 0014 40 01 01 00 40 02 00 40 03 04 0a000001 c0 08 03 000001 10 0a09",
    );
    let before = buffer.0.lock().unwrap().len();
    let batch: Vec<u8> = (0..100).flat_map(|_| bad.clone()).collect();
    for _ in 0..100 {
        raw.send(&batch).await;
    }
    let status = super::harness::wait_for("10,000 findings counted", WAIT * 4, || async {
        let status = peer_status(&s.handle(), "Global_flood").await?;
        (status.errors.get("malformed_attribute") == Some(&10_000)).then_some(status)
    })
    .await;
    assert_eq!(status.state, State::Established);
    let added = buffer.0.lock().unwrap().len() - before;
    assert!(added < 100_000, "the flood added {added} bytes to the log");
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("malformed attribute 8"),
        "first occurrence logged in full:\n{text}"
    );
}
