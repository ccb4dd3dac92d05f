//! Two in-process speakers over loopback, and a raw peer sending malformed UPDATEs.
//! Every test uses its own 127.x.y.0/24 addresses and ephemeral listening ports.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::harness::{hex, message, peer_status, wait_for, wait_route, wait_state, RawPeer};
use crate::bgp::fsm::State;
use crate::bgp::packet::Capability;
use crate::bgp::speaker::{PeerSpec, Speaker, SpeakerConfig};

const AS: u32 = 64512;
const WAIT: Duration = Duration::from_secs(15);

fn addr(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 42, net, host))
}

fn blocks(list: &[&str]) -> BTreeSet<IpNetwork> {
    list.iter()
        .map(|s| s.parse().expect("test prefix"))
        .collect()
}

async fn speaker(address: IpAddr, asn: u32) -> Speaker {
    let IpAddr::V4(id) = address else {
        panic!("IPv4 only here");
    };
    let mut config = SpeakerConfig::new(id, asn);
    config.listen_addr = Some(SocketAddr::new(address, 0));
    config.connect_retry = Duration::from_millis(500);
    Speaker::start(config).await.expect("start speaker")
}

/// A mesh peer spec from `local` to the speaker `remote` listening on `port`.
fn mesh_peer(local: IpAddr, remote: IpAddr, port: u16) -> PeerSpec {
    let mut spec = PeerSpec::new(
        format!("Mesh_{remote}"),
        "node-to-node mesh",
        remote,
        AS,
        AS,
    );
    spec.port = port;
    spec.source_address = Some(local);
    spec.passive = local > remote;
    spec.timers.hold_time = 9;
    spec
}

fn port(speaker: &Speaker) -> u16 {
    speaker.listen_addr().expect("listening").port()
}

/// Two speakers, meshed and Established.
async fn meshed_pair(net: u8) -> (Speaker, Speaker, IpAddr, IpAddr) {
    let (a_addr, b_addr) = (addr(net, 1), addr(net, 2));
    let a = speaker(a_addr, AS).await;
    let b = speaker(b_addr, AS).await;
    a.handle()
        .set_peers(vec![mesh_peer(a_addr, b_addr, port(&b))])
        .unwrap();
    b.handle()
        .set_peers(vec![mesh_peer(b_addr, a_addr, port(&a))])
        .unwrap();
    wait_state(
        &a.handle(),
        &format!("Mesh_{b_addr}"),
        State::Established,
        WAIT,
    )
    .await;
    wait_state(
        &b.handle(),
        &format!("Mesh_{a_addr}"),
        State::Established,
        WAIT,
    )
    .await;
    (a, b, a_addr, b_addr)
}

#[tokio::test]
async fn two_speakers_establish_and_exchange_blocks() {
    let (a, b, a_addr, b_addr) = meshed_pair(1).await;
    a.handle()
        .set_originated(blocks(&["10.244.1.0/26", "10.244.1.64/26"]))
        .unwrap();
    b.handle()
        .set_originated(blocks(&["10.244.2.0/26"]))
        .unwrap();
    wait_route(&b.handle(), "10.244.1.0/26", &[a_addr], WAIT).await;
    wait_route(&b.handle(), "10.244.1.64/26", &[a_addr], WAIT).await;
    wait_route(&a.handle(), "10.244.2.0/26", &[b_addr], WAIT).await;
    let status = peer_status(&a.handle(), &format!("Mesh_{b_addr}"))
        .await
        .unwrap();
    assert_eq!(status.info, "Established");
    assert_eq!(
        (status.prefixes_received, status.prefixes_advertised),
        (1, 2)
    );
    assert_eq!(status.description, "node-to-node mesh");
    // Our own blocks never show up as learned routes.
    assert!(a
        .handle()
        .best_routes()
        .iter()
        .all(|r| r.prefix.to_string() != "10.244.1.0/26"));

    // Withdraw on removal.
    let mut events = b.handle().subscribe();
    a.handle()
        .set_originated(blocks(&["10.244.1.0/26"]))
        .unwrap();
    wait_route(&b.handle(), "10.244.1.64/26", &[], WAIT).await;
    wait_route(&b.handle(), "10.244.1.0/26", &[a_addr], WAIT).await;
    let event = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event,
        crate::bgp::rib::RibEvent::Removed("10.244.1.64/26".parse().unwrap())
    );
}

#[tokio::test]
async fn removing_a_peer_withdraws_its_routes_and_leaves_others() {
    let (a, b, a_addr, b_addr) = meshed_pair(2).await;
    b.handle()
        .set_originated(blocks(&["10.244.2.0/26"]))
        .unwrap();
    wait_route(&a.handle(), "10.244.2.0/26", &[b_addr], WAIT).await;
    // A changed spec restarts the session; an unchanged one is untouched.
    let before = peer_status(&a.handle(), &format!("Mesh_{b_addr}"))
        .await
        .unwrap();
    a.handle()
        .set_peers(vec![mesh_peer(a_addr, b_addr, port(&b))])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = peer_status(&a.handle(), &format!("Mesh_{b_addr}"))
        .await
        .unwrap();
    assert_eq!(before.since, after.since);
    assert_eq!(after.state, State::Established);
    a.handle().set_peers(Vec::new()).unwrap();
    wait_route(&a.handle(), "10.244.2.0/26", &[], WAIT).await;
    // B sees the Cease and goes back to waiting.
    wait_for("B to leave Established", WAIT, || async {
        let status = peer_status(&b.handle(), &format!("Mesh_{a_addr}")).await?;
        (status.state != State::Established).then_some(())
    })
    .await;
}

#[tokio::test]
async fn hold_timer_expiry_withdraws_routes() {
    let speaker_addr = addr(3, 1);
    let raw_addr = addr(3, 9);
    let s = speaker(speaker_addr, AS).await;
    let mut spec = PeerSpec::new("Global_raw", "global", raw_addr, AS, 65009);
    spec.passive = true;
    spec.timers.hold_time = 3;
    s.handle().set_peers(vec![spec]).unwrap();
    let target = s.listen_addr().unwrap();
    let mut raw = RawPeer::establish(raw_addr, target, 65009, Ipv4Addr::new(9, 9, 9, 9), 3).await;
    // Announce 10.9.0.0/16 via 127.42.3.9 with AS_PATH [65009] (4-octet).
    raw.send(&message(
        2,
        "0000 0014 40 01 01 00 40 02 06 0201 0000fdf1 40 03 04 7f2a0309 10 0a09",
    ))
    .await;
    wait_route(&s.handle(), "10.9.0.0/16", &[raw_addr], WAIT).await;
    // Now go silent: the speaker's hold timer (3 s) fires.
    let notification = raw.receive_notification().await;
    assert_eq!(notification, Some((4, 0)));
    wait_route(&s.handle(), "10.9.0.0/16", &[], WAIT).await;
    let status = peer_status(&s.handle(), "Global_raw").await.unwrap();
    assert_ne!(status.state, State::Established);
    assert!(
        status.info.to_lowercase().contains("hold"),
        "{}",
        status.info
    );
}

/// One malformed UPDATE from shared/notes/zettabgp.md, what the bad peer must get back.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// `Some`: the NOTIFICATION; `None`: treat-as-withdraw, session stays up.
    notification: Option<(u8, u8)>,
}

fn malformed_cases() -> Vec<Case> {
    vec![
        Case {
            name: "COMMUNITIES length 3",
            bytes: message(
                2,
                "0000 0014 40 01 01 00 40 02 00 40 03 04 0a000001 c0 08 03 000001 10 0a09",
            ),
            notification: None,
        },
        Case {
            name: "LARGE_COMMUNITIES length 2",
            bytes: message(
                2,
                "0000 0013 40 01 01 00 40 02 00 40 03 04 0a000001 c0 20 02 0001 10 0a09",
            ),
            notification: None,
        },
        Case {
            name: "NLRI prefix length 249",
            bytes: message(2, "0000 0000 f9 0a09"),
            notification: Some((3, 10)),
        },
        Case {
            name: "AS_PATH [2,1,0]",
            bytes: message(
                2,
                "0000 0011 40 01 01 00 40 02 03 020100 40 03 04 0a000001 10 0a09",
            ),
            notification: None,
        },
        Case {
            name: "stray byte after attributes",
            bytes: message(2, "0000 0000 18"),
            notification: Some((3, 10)),
        },
        Case {
            name: "two stray bytes after attributes",
            bytes: message(2, "0000 0000 18 0a"),
            notification: Some((3, 10)),
        },
        Case {
            name: "short MP_REACH",
            bytes: message(2, "0000 0005 80 0e 02 0002"),
            notification: Some((3, 9)),
        },
        Case {
            name: "MP_REACH next hop beyond the buffer",
            bytes: message(2, "0000 0009 80 0e 06 0002 01 20 fd00"),
            notification: Some((3, 9)),
        },
        Case {
            name: "header length 16",
            bytes: hex("ffffffffffffffffffffffffffffffff 0010 04 000000"),
            notification: Some((1, 2)),
        },
        Case {
            name: "ORIGINATOR_ID of 2 bytes",
            bytes: message(
                2,
                "0000 0013 40 01 01 00 40 02 00 80 09 02 0a00 40 03 04 0a000001 10 0a09",
            ),
            notification: None,
        },
    ]
}

#[tokio::test]
async fn malformed_updates_hit_only_the_bad_peer() {
    let net = 4;
    let (a, b, _a_addr, b_addr) = meshed_pair(net).await;
    b.handle()
        .set_originated(blocks(&["10.244.2.0/26"]))
        .unwrap();
    wait_route(&a.handle(), "10.244.2.0/26", &[b_addr], WAIT).await;
    let healthy = peer_status(&a.handle(), &format!("Mesh_{b_addr}"))
        .await
        .unwrap();

    let raw_addr = addr(net, 9);
    let mut spec = PeerSpec::new("Global_bad", "global", raw_addr, AS, 65009);
    spec.passive = true;
    let mut peers = vec![mesh_peer(addr(net, 1), b_addr, port(&b)), spec];
    peers.sort_by(|x, y| x.name.cmp(&y.name));
    a.handle().set_peers(peers).unwrap();
    let target = a.listen_addr().unwrap();

    for case in malformed_cases() {
        // Wait for the previous connection to be gone before connecting again.
        wait_for("bad peer not Established", WAIT, || async {
            let s = peer_status(&a.handle(), "Global_bad").await?;
            (s.state != State::Established).then_some(())
        })
        .await;
        let mut raw =
            RawPeer::establish(raw_addr, target, 65009, Ipv4Addr::new(9, 9, 9, 9), 90).await;
        // A good route first: 10.9.0.0/16 via 10.0.0.1.
        raw.send(&message(
            2,
            "0000 0014 40 01 01 00 40 02 06 0201 0000fdf1 40 03 04 7f2a0409 10 0a09",
        ))
        .await;
        wait_route(&a.handle(), "10.9.0.0/16", &[raw_addr], WAIT).await;
        raw.send(&case.bytes).await;
        match case.notification {
            Some(expected) => {
                assert_eq!(
                    raw.receive_notification().await,
                    Some(expected),
                    "{}",
                    case.name
                );
                assert!(
                    raw.receive().await.is_none(),
                    "{}: connection closed",
                    case.name
                );
                wait_route(&a.handle(), "10.9.0.0/16", &[], WAIT).await;
            }
            None => {
                // Treat-as-withdraw: the route goes, the session stays.
                wait_route(&a.handle(), "10.9.0.0/16", &[], WAIT).await;
                let status = peer_status(&a.handle(), "Global_bad").await.unwrap();
                assert_eq!(status.state, State::Established, "{}", case.name);
                drop(raw);
            }
        }
        // The healthy session never noticed.
        let now = peer_status(&a.handle(), &format!("Mesh_{b_addr}"))
            .await
            .unwrap();
        assert_eq!(now.state, State::Established, "{}", case.name);
        assert_eq!(now.since, healthy.since, "{}", case.name);
        assert_eq!(now.prefixes_received, 1, "{}", case.name);
    }
}

/// notes (Interop): FRR's default OPEN, with the hostname capability carrying a domain name
/// (zettabgp 0.6 rejects the whole OPEN), extended message, role and an empty LLGR, sent
/// by a live peer: the session comes up and a route from it is accepted.
#[tokio::test]
async fn frr_style_open_with_fqdn_domain_establishes() {
    let net = 7;
    let s = speaker(addr(net, 1), AS).await;
    let raw_addr = addr(net, 9);
    let mut spec = PeerSpec::new("Global_frr", "global", raw_addr, AS, 65002);
    spec.passive = true;
    s.handle().set_peers(vec![spec]).unwrap();
    wait_for("peer configured", WAIT, || async {
        peer_status(&s.handle(), "Global_frr").await.map(|_| ())
    })
    .await;
    let mut raw = RawPeer::establish_with(
        raw_addr,
        s.listen_addr().unwrap(),
        65002,
        Ipv4Addr::new(9, 9, 9, 2),
        90,
        vec![
            Capability::RouteRefresh,
            Capability::ExtendedMessage,
            Capability::EnhancedRouteRefresh,
            Capability::Unknown {
                code: 71,
                data: vec![],
            },
            Capability::Fqdn {
                hostname: "frrpeer".into(),
                domain: "example.com".into(),
            },
            Capability::Role(4),
        ],
    )
    .await;
    wait_state(&s.handle(), "Global_frr", State::Established, WAIT).await;
    raw.send(&message(
        2,
        "0000 0014 40 01 01 00 40 02 06 0201 0000fdea 40 03 04 7f2a0709 10 0a09",
    ))
    .await;
    wait_route(&s.handle(), "10.9.0.0/16", &[raw_addr], WAIT).await;
}

#[tokio::test]
async fn unconfigured_address_is_closed_at_once() {
    let s = speaker(addr(5, 1), AS).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(addr(5, 7), 0)).unwrap();
    let mut stream = socket.connect(s.listen_addr().unwrap()).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
    )
    .await
    .expect("closed quickly");
    assert!(matches!(read, Ok(0) | Err(_)));
}

#[tokio::test]
async fn graceful_restart_keeps_stale_routes_until_the_peer_returns() {
    let net = 6;
    let (a, b, a_addr, b_addr) = meshed_pair(net).await;
    b.handle()
        .set_originated(blocks(&["10.244.2.0/26", "10.244.2.64/26"]))
        .unwrap();
    wait_route(&a.handle(), "10.244.2.64/26", &[b_addr], WAIT).await;
    // B "crashes": its task is aborted, the TCP connection closes without a NOTIFICATION.
    let b_port = port(&b);
    drop(b);
    wait_for("A to notice", WAIT, || async {
        let s = peer_status(&a.handle(), &format!("Mesh_{b_addr}")).await?;
        (s.state != State::Established).then_some(())
    })
    .await;
    // Dropping a Speaker stops it with a Cease, which is not graceful without the N bit:
    // what matters here is that a restarted B comes back and its routes are there.
    let mut config = SpeakerConfig::new(Ipv4Addr::new(127, 42, net, 2), AS);
    config.listen_addr = Some(SocketAddr::new(b_addr, b_port));
    config.restarting = true;
    config.connect_retry = Duration::from_millis(500);
    // Dropping B aborts its task; the old listener closes when the runtime gets to it, so
    // the port can still be busy for a moment on a loaded machine.
    let deadline = tokio::time::Instant::now() + WAIT;
    let b2 = loop {
        match Speaker::start(config.clone()).await {
            Ok(speaker) => break speaker,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("restart B: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("restart B: {e}"),
        }
    };
    b2.handle()
        .set_peers(vec![mesh_peer(b_addr, a_addr, port(&a))])
        .unwrap();
    b2.handle()
        .set_originated(blocks(&["10.244.2.0/26"]))
        .unwrap();
    wait_state(
        &a.handle(),
        &format!("Mesh_{b_addr}"),
        State::Established,
        WAIT,
    )
    .await;
    wait_route(&a.handle(), "10.244.2.0/26", &[b_addr], WAIT).await;
    wait_route(&a.handle(), "10.244.2.64/26", &[], WAIT).await;
    // The stale route went with B's End-of-RIB, which the status reports (the agent's route
    // reconciler waits for it before deleting learned routes).
    let status = peer_status(&a.handle(), &format!("Mesh_{b_addr}"))
        .await
        .unwrap();
    assert!(status.end_of_rib_received, "{status:?}");
}

/// The peer's OPEN, KEEPALIVE and a first UPDATE in one TCP segment: the reader must decode
/// the UPDATE with the 4-octet AS the FSM negotiated from the OPEN in front of it (read with
/// 2-octet AS, its AS_PATH is malformed and the route treated as withdrawn).
#[tokio::test]
async fn update_right_behind_the_open_is_read_with_the_negotiated_wire_format() {
    use crate::bgp::packet::{encode_keepalive, encode_open, Family, Open};
    let speaker_addr = addr(8, 1);
    let raw_addr = addr(8, 9);
    let s = speaker(speaker_addr, AS).await;
    let mut spec = PeerSpec::new("Global_raw", "global", raw_addr, AS, 65009);
    spec.passive = true;
    s.handle().set_peers(vec![spec]).unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(raw_addr, 0)).unwrap();
    let mut stream = socket.connect(s.listen_addr().unwrap()).await.unwrap();
    let open = Open {
        asn: 65009,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(9, 9, 9, 9),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(65009),
        ],
    };
    let mut bytes = encode_open(&open).unwrap();
    bytes.extend(encode_keepalive());
    // 10.8.0.0/16 via 127.42.8.9, AS_PATH [65009] as one 4-octet AS.
    bytes.extend(message(
        2,
        "0000 0014 40 01 01 00 40 02 06 0201 0000fdf1 40 03 04 7f2a0809 10 0a08",
    ));
    tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes)
        .await
        .unwrap();
    wait_route(&s.handle(), "10.8.0.0/16", &[raw_addr], WAIT).await;
    let status = peer_status(&s.handle(), "Global_raw").await.unwrap();
    assert_eq!(status.state, State::Established);
    assert_eq!(status.prefixes_received, 1);
}
