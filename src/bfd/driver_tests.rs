//! The driver on loopback: two drivers bring a session Up, a removed peer's AdminDown is
//! flagged as such, a vanished peer is detected, and bad datagrams are counted.

use super::*;

fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn fast() -> Intervals {
    Intervals {
        min_tx: Duration::from_millis(50),
        min_rx: Duration::from_millis(50),
        multiplier: 3,
    }
}

fn start() -> (BfdDriver, mpsc::UnboundedReceiver<BfdEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = DriverConfig {
        listen: SocketAddr::new(localhost(), 0),
    };
    (BfdDriver::start(config, tx).unwrap(), rx)
}

/// Wait (bounded) for an event that matches.
async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<BfdEvent>,
    wanted: impl Fn(&BfdEvent) -> bool,
) -> BfdEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.recv().await.unwrap();
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .unwrap()
}

fn peer_on(port: u16) -> BfdPeer {
    BfdPeer {
        port,
        ..BfdPeer::new(localhost(), None, fast())
    }
}

/// Two drivers peered with each other, both Up.
async fn pair() -> (
    (BfdDriver, mpsc::UnboundedReceiver<BfdEvent>),
    (BfdDriver, mpsc::UnboundedReceiver<BfdEvent>),
) {
    let (a, mut a_events) = start();
    let (b, mut b_events) = start();
    a.handle().add(peer_on(b.local_addr().port())).unwrap();
    b.handle().add(peer_on(a.local_addr().port())).unwrap();
    wait_for(&mut a_events, |e| e.to == State::Up).await;
    wait_for(&mut b_events, |e| e.to == State::Up).await;
    ((a, a_events), (b, b_events))
}

#[tokio::test]
async fn two_drivers_come_up_with_the_negotiated_intervals_after_the_poll() {
    let ((a, _a_events), (_b, _b_events)) = pair().await;
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let status = a.handle().status().await.unwrap();
            if !status.sessions[0].fsm.polling {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let session = &status.sessions[0];
    assert_eq!(session.fsm.state, State::Up);
    assert_eq!(session.fsm.tx_interval_us, 50_000);
    assert_eq!(session.fsm.detection_time_us, 150_000);
    assert!(SOURCE_PORTS.contains(&session.source_port));
    assert_ne!(session.fsm.local_discriminator, 0);
    assert!(status.counters.malformed.is_empty());
}

#[tokio::test]
async fn removed_peer_sends_admin_down_which_is_not_a_failure() {
    let ((_a, mut a_events), (b, _b_events)) = pair().await;
    b.handle().remove(localhost()).unwrap();
    let event = wait_for(&mut a_events, |e| e.to == State::Down).await;
    assert!(event.remote_admin_down);
    assert_eq!(event.diagnostic, Diagnostic::NeighborSignaledSessionDown);
}

#[tokio::test]
async fn vanished_peer_is_detected_by_timeout() {
    let ((_a, mut a_events), (b, b_events)) = pair().await;
    drop(b);
    drop(b_events);
    let event = wait_for(&mut a_events, |e| e.to == State::Down).await;
    assert!(!event.remote_admin_down);
    assert_eq!(event.diagnostic, Diagnostic::ControlDetectionTimeExpired);
}

#[tokio::test]
async fn datagrams_with_ttl_below_255_or_malformed_are_counted_and_dropped() {
    let (a, _events) = start();
    a.handle().add(peer_on(9)).unwrap();
    let good = packet::encode(&ControlPacket {
        diagnostic: Diagnostic::None,
        state: State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_multiplier: 3,
        my_discriminator: 7,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 50_000,
        required_min_echo_rx_us: 0,
    });
    let low_ttl = std::net::UdpSocket::bind((localhost(), 0)).unwrap();
    low_ttl.set_ttl(64).unwrap();
    low_ttl.send_to(&good, a.local_addr()).unwrap();
    let sender = std::net::UdpSocket::bind((localhost(), 0)).unwrap();
    sender.set_ttl(255).unwrap();
    let mut bad = good;
    bad[0] = 0x40;
    sender.send_to(&bad, a.local_addr()).unwrap();
    sender.send_to(&good[..10], a.local_addr()).unwrap();
    let counters = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let counters = a.handle().status().await.unwrap().counters;
            if counters.received >= 3 {
                return counters;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(counters.bad_ttl, 1);
    assert_eq!(counters.malformed.get("bad_version"), Some(&1));
    assert_eq!(counters.malformed.get("too_short"), Some(&1));
    // The session never saw any of it.
    let status = a.handle().status().await.unwrap();
    assert_eq!(status.sessions[0].fsm.state, State::Down);
    assert_eq!(status.sessions[0].fsm.remote_discriminator, 0);
}
