//! FSM tests: event sequences in, outputs checked.

use super::*;
use crate::bgp::packet::{decode_message, encode_message, MessageType};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config() -> PeerConfig {
    PeerConfig::new(64512, LOCAL_ID, 64512)
}

fn peer_open(asn: u32, hold_time: u16, capabilities: Vec<Capability>) -> Open {
    Open {
        asn,
        hold_time,
        bgp_id: PEER_ID,
        capabilities,
    }
}

fn standard_caps() -> Vec<Capability> {
    vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::RouteRefresh,
        Capability::FourOctetAs(64512),
    ]
}

fn received(message: Message) -> Input {
    Input::MessageReceived(message)
}

fn sent_notification(out: &[Output]) -> Option<&Notification> {
    out.iter().find_map(|o| match o {
        Output::SendMessage(Message::Notification(n)) => Some(n),
        _ => None,
    })
}

/// Drive an FSM to Established (active side) and return it.
fn established(config: PeerConfig, caps: Vec<Capability>) -> Fsm {
    let mut fsm = Fsm::new(config);
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    fsm.handle(received(Message::Open(peer_open(64512, 90, caps))));
    fsm.handle(received(Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    fsm
}

#[test]
fn active_happy_path_reaches_established() {
    let mut fsm = Fsm::new(config());
    let out = fsm.handle(Input::ManualStart);
    assert_eq!(
        out,
        vec![
            Output::StartTimer(TimerKind::ConnectRetry, Duration::from_secs(5)),
            Output::Connect,
            Output::StateChanged {
                from: State::Idle,
                to: State::Connect
            },
        ]
    );

    let out = fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    assert_eq!(fsm.state(), State::OpenSent);
    assert!(out.contains(&Output::StopTimer(TimerKind::ConnectRetry)));
    assert!(out.contains(&Output::StartTimer(TimerKind::Hold, OPEN_HOLD_TIME)));
    let open = out.iter().find_map(|o| match o {
        Output::SendMessage(Message::Open(open)) => Some(open.clone()),
        _ => None,
    });
    let open = open.expect("OPEN sent");
    assert_eq!(open.asn, 64512);
    assert_eq!(open.bgp_id, LOCAL_ID);
    assert!(open.has_capability(&Capability::FourOctetAs(64512)));

    // Peer proposes 30 s: the smaller wins, keepalive is a third of it.
    let out = fsm.handle(received(Message::Open(peer_open(
        64512,
        30,
        standard_caps(),
    ))));
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert_eq!(
        out,
        vec![
            Output::SendMessage(Message::Keepalive),
            Output::StartTimer(TimerKind::Hold, Duration::from_secs(30)),
            Output::StartTimer(TimerKind::Keepalive, Duration::from_secs(10)),
            Output::StateChanged {
                from: State::OpenSent,
                to: State::OpenConfirm
            },
        ]
    );

    let out = fsm.handle(received(Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    let negotiated = out.iter().find_map(|o| match o {
        Output::SessionEstablished(n) => Some(n.clone()),
        _ => None,
    });
    let negotiated = negotiated.expect("SessionEstablished");
    assert_eq!(negotiated.hold_time, 30);
    assert_eq!(negotiated.keepalive_time, 10);
    assert_eq!(negotiated.families, vec![Family::IPV4_UNICAST]);
    assert!(negotiated.wire.four_octet_as);
    assert!(negotiated.route_refresh);
    assert_eq!(negotiated.peer_id, PEER_ID);
}

#[test]
fn passive_happy_path_waits_for_peer() {
    let mut fsm = Fsm::new(config());
    let out = fsm.handle(Input::ManualStartPassive);
    assert_eq!(fsm.state(), State::Active);
    assert!(!out.contains(&Output::Connect));
    // A passive FSM never connects, even when a retry timer fires.
    let out = fsm.handle(Input::ConnectRetryTimerExpired);
    assert!(!out.contains(&Output::Connect));
    assert_eq!(fsm.state(), State::Active);

    fsm.handle(Input::TcpConnected(ConnectionOrigin::Remote));
    assert_eq!(fsm.state(), State::OpenSent);
    assert_eq!(fsm.connection_origin(), Some(ConnectionOrigin::Remote));
    fsm.handle(received(Message::Open(peer_open(
        64512,
        90,
        standard_caps(),
    ))));
    let out = fsm.handle(received(Message::Keepalive));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SessionEstablished(_))));
}

#[test]
fn established_passes_updates_and_refreshes_hold_timer() {
    let mut fsm = established(config(), standard_caps());
    let update = Update::default();
    let out = fsm.handle(received(Message::Update(update.clone())));
    assert_eq!(
        out,
        vec![
            Output::StartTimer(TimerKind::Hold, Duration::from_secs(90)),
            Output::RoutesReceived(update),
        ]
    );
    let out = fsm.handle(Input::KeepaliveTimerExpired);
    assert_eq!(
        out,
        vec![
            Output::SendMessage(Message::Keepalive),
            Output::StartTimer(TimerKind::Keepalive, Duration::from_secs(30)),
        ]
    );
    let out = fsm.handle(received(Message::RouteRefresh(RouteRefresh::request(
        Family::IPV4_UNICAST,
    ))));
    assert!(out.contains(&Output::RouteRefreshRequested(Family::IPV4_UNICAST)));
    // Not negotiated: ignored.
    let out = fsm.handle(received(Message::RouteRefresh(RouteRefresh::request(
        Family::IPV6_UNICAST,
    ))));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::RouteRefreshRequested(_))));
}

#[test]
fn hold_timer_expiry_sends_notification_4_0() {
    let mut fsm = established(config(), standard_caps());
    let out = fsm.handle(Input::HoldTimerExpired);
    let notification = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((notification.code, notification.subcode), (4, 0));
    assert!(out.contains(&Output::Disconnect));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SessionDown {
            graceful: false,
            ..
        }
    )));
    assert_eq!(fsm.state(), State::Idle);
    // The wire form of what goes out.
    let bytes = encode_message(
        &Message::Notification(notification.clone()),
        &WireOptions::default(),
    )
    .expect("encode");
    assert_eq!(bytes[0][16..], [0x00, 0x15, 0x03, 0x04, 0x00]);
}

#[test]
fn hold_timer_expiry_in_open_sent() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let out = fsm.handle(Input::HoldTimerExpired);
    assert_eq!(
        sent_notification(&out),
        Some(&Notification::hold_timer_expired())
    );
    assert_eq!(fsm.state(), State::Idle);
    // No session existed, so no SessionDown.
    assert!(!out.iter().any(|o| matches!(o, Output::SessionDown { .. })));
}

#[test]
fn bad_peer_as_is_rejected_with_2_2() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let out = fsm.handle(received(Message::Open(peer_open(
        64999,
        90,
        standard_caps(),
    ))));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 2));
    assert_eq!(n.data, 64999u16.to_be_bytes());
    assert_eq!(fsm.state(), State::Idle);
    assert!(out.contains(&Output::Disconnect));
}

#[test]
fn ebgp_peer_as_is_checked() {
    let mut fsm = Fsm::new(PeerConfig::new(64512, LOCAL_ID, 4_200_000_001));
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let caps = vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::FourOctetAs(4_200_000_001),
    ];
    fsm.handle(received(Message::Open(peer_open(4_200_000_001, 90, caps))));
    assert_eq!(fsm.state(), State::OpenConfirm);
}

#[test]
fn same_bgp_identifier_on_ibgp_is_2_3() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let mut open = peer_open(64512, 90, standard_caps());
    open.bgp_id = LOCAL_ID;
    let out = fsm.handle(received(Message::Open(open)));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 3));
    assert_eq!(n.data, LOCAL_ID.octets());
}

#[test]
fn zero_bgp_identifier_from_the_wire_is_2_3() {
    // The decoder catches it before the FSM; the FSM sends what the decoder says.
    let mut frame = encode_message(
        &Message::Open(peer_open(64512, 90, standard_caps())),
        &WireOptions::default(),
    )
    .expect("encode")
    .remove(0);
    frame[24..28].copy_from_slice(&[0, 0, 0, 0]);
    let error = decode_message(&frame, &WireOptions::default()).expect_err("rejected");
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let out = fsm.handle(Input::DecodeFailed(error));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 3));
}

#[test]
fn hold_time_is_min_of_both_and_zero_disables_keepalives() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let out = fsm.handle(received(Message::Open(peer_open(
        64512,
        0,
        standard_caps(),
    ))));
    assert!(out.contains(&Output::StopTimer(TimerKind::Hold)));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::StartTimer(TimerKind::Keepalive, _))));
    assert_eq!(fsm.negotiated().map(|n| n.hold_time), Some(0));
    let out = fsm.handle(Input::KeepaliveTimerExpired);
    assert_eq!(out, vec![Output::SendMessage(Message::Keepalive)]);
}

#[test]
fn hold_time_of_two_seconds_is_2_6() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let out = fsm.handle(received(Message::Open(peer_open(
        64512,
        2,
        standard_caps(),
    ))));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 6));
}

#[test]
fn no_common_family_is_2_7() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let caps = vec![Capability::Multiprotocol(Family::IPV6_UNICAST)];
    let out = fsm.handle(received(Message::Open(peer_open(64512, 90, caps))));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 7));
    assert_eq!(n.data, [1, 4, 0, 1, 0, 1]);
}

#[test]
fn peer_without_multiprotocol_gets_ipv4_unicast() {
    let fsm = established(config(), vec![]);
    let negotiated = fsm.negotiated().expect("negotiated");
    assert_eq!(negotiated.families, vec![Family::IPV4_UNICAST]);
    assert!(!negotiated.wire.four_octet_as);
}

#[test]
fn connect_retry_backs_off_exponentially_to_the_cap() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    let mut intervals = Vec::new();
    for _ in 0..8 {
        let out = fsm.handle(Input::TcpConnectionFails);
        assert_eq!(fsm.state(), State::Active);
        intervals.extend(out.iter().filter_map(|o| match o {
            Output::StartTimer(TimerKind::ConnectRetry, d) => Some(d.as_secs()),
            _ => None,
        }));
        let out = fsm.handle(Input::ConnectRetryTimerExpired);
        assert!(out.contains(&Output::Connect));
        assert_eq!(fsm.state(), State::Connect);
    }
    assert_eq!(intervals, vec![5, 10, 20, 40, 80, 120, 120, 120]);
    // A session that comes up resets the backoff.
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    fsm.handle(received(Message::Open(peer_open(
        64512,
        90,
        standard_caps(),
    ))));
    fsm.handle(received(Message::Keepalive));
    assert_eq!(fsm.connect_retry_counter(), 0);
}

#[test]
fn connect_attempt_timeout_retries_with_backoff() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    let out = fsm.handle(Input::ConnectRetryTimerExpired);
    assert_eq!(
        out,
        vec![
            Output::Disconnect,
            Output::StartTimer(TimerKind::ConnectRetry, Duration::from_secs(5)),
            Output::Connect,
        ]
    );
    let out = fsm.handle(Input::ConnectRetryTimerExpired);
    assert!(out.contains(&Output::StartTimer(
        TimerKind::ConnectRetry,
        Duration::from_secs(10)
    )));
}

#[test]
fn session_failure_restarts_automatically_after_backoff() {
    let mut fsm = established(config(), standard_caps());
    let out = fsm.handle(Input::TcpClosed);
    assert_eq!(fsm.state(), State::Idle);
    assert!(out.contains(&Output::StartTimer(
        TimerKind::ConnectRetry,
        Duration::from_secs(5)
    )));
    let out = fsm.handle(Input::ConnectRetryTimerExpired);
    assert!(out.contains(&Output::Connect));
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn manual_stop_sends_cease_with_shutdown_message_and_stays_down() {
    let mut fsm = established(config(), standard_caps());
    let out = fsm.handle(Input::ManualStop {
        message: Some("node drained".into()),
    });
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(n.shutdown_message().as_deref(), Some("node drained"));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SessionDown {
            reason: DownReason::ManualStop,
            graceful: false,
            ..
        }
    )));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::StartTimer(TimerKind::ConnectRetry, _))));
    assert!(fsm.handle(Input::ConnectRetryTimerExpired).is_empty());
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn unexpected_message_in_open_sent_is_fsm_error() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    let out = fsm.handle(received(Message::Update(Update::default())));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (5, 1));
}

#[test]
fn open_in_established_is_fsm_error() {
    let mut fsm = established(config(), standard_caps());
    let out = fsm.handle(received(Message::Open(peer_open(
        64512,
        90,
        standard_caps(),
    ))));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (5, 3));
}

#[test]
fn decode_failure_in_established_sends_its_notification() {
    let mut fsm = established(config(), standard_caps());
    let error = DecodeError::Update(crate::bgp::packet::UpdateError::MalformedAttributeList);
    let out = fsm.handle(Input::DecodeFailed(error));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (3, 1));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn notification_received_closes_without_reply() {
    let mut fsm = established(config(), standard_caps());
    let out = fsm.handle(received(Message::Notification(Notification::cease(2))));
    assert!(sent_notification(&out).is_none());
    assert!(out.contains(&Output::Disconnect));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(
        fsm.last_error(),
        Some(&DownReason::NotificationReceived(Notification::cease(2)))
    );
}

#[test]
fn idle_refuses_incoming_connection() {
    let mut fsm = Fsm::new(config());
    let out = fsm.handle(Input::TcpConnected(ConnectionOrigin::Remote));
    assert_eq!(out, vec![Output::Disconnect]);
}

fn gr_config(notification: bool) -> PeerConfig {
    let mut config = config();
    config.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: false,
        forwarding_preserved: true,
        notification,
    });
    config
}

fn gr_caps(notification: bool) -> Vec<Capability> {
    let mut caps = standard_caps();
    caps.push(Capability::GracefulRestart(GracefulRestart {
        restarting: true,
        notification,
        restart_time: 300,
        families: vec![GracefulRestartFamily {
            family: Family::IPV4_UNICAST,
            forwarding_state: true,
        }],
    }));
    caps
}

#[test]
fn graceful_restart_params_are_reported_and_down_is_graceful() {
    let mut fsm = Fsm::new(gr_config(false));
    fsm.handle(Input::ManualStart);
    let out = fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    // Our OPEN carries GR with the F bit.
    let ours = out.iter().find_map(|o| match o {
        Output::SendMessage(Message::Open(open)) => Some(open.clone()),
        _ => None,
    });
    let gr = ours.and_then(|o| {
        o.capabilities.into_iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    });
    let gr = gr.expect("GR advertised");
    assert_eq!(gr.restart_time, 120);
    assert!(gr.families[0].forwarding_state);

    fsm.handle(received(Message::Open(peer_open(
        64512,
        90,
        gr_caps(false),
    ))));
    let out = fsm.handle(received(Message::Keepalive));
    let negotiated = out.iter().find_map(|o| match o {
        Output::SessionEstablished(n) => Some(n.clone()),
        _ => None,
    });
    let peer_gr = negotiated.and_then(|n| n.peer_graceful_restart);
    let peer_gr = peer_gr.expect("peer GR reported");
    assert_eq!(peer_gr.restart_time, 300);
    assert!(peer_gr.restarting);
    assert!(peer_gr.families[0].forwarding_state);

    let out = fsm.handle(Input::TcpClosed);
    assert!(out.contains(&Output::SessionDown {
        reason: DownReason::ConnectionLost,
        graceful: true,
        restart_time: Some(Duration::from_secs(300)),
    }));
}

#[test]
fn graceful_restart_does_not_cover_notifications_without_n_bit() {
    let mut fsm = established(gr_config(false), gr_caps(false));
    let out = fsm.handle(Input::HoldTimerExpired);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SessionDown {
            graceful: false,
            restart_time: None,
            ..
        }
    )));
}

#[test]
fn graceful_restart_with_n_bit_covers_hold_timer_expiry() {
    let mut fsm = established(gr_config(true), gr_caps(true));
    let out = fsm.handle(Input::HoldTimerExpired);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SessionDown {
            graceful: true,
            restart_time: Some(_),
            ..
        }
    )));
    // Cease/Hard Reset (6/9) is never graceful.
    let mut fsm = established(gr_config(true), gr_caps(true));
    let out = fsm.handle(received(Message::Notification(Notification::cease(9))));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SessionDown {
            graceful: false,
            ..
        }
    )));
}

#[test]
fn gr_needs_both_sides() {
    // Peer advertises GR, we do not: not graceful.
    let mut fsm = established(config(), gr_caps(false));
    let out = fsm.handle(Input::TcpClosed);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SessionDown {
            graceful: false,
            ..
        }
    )));
}

#[test]
fn collision_keeps_connection_from_higher_identifier() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 9);
    // We are higher: keep the connection we opened.
    assert_eq!(
        resolve_collision(high, low, State::OpenConfirm, ConnectionOrigin::Local),
        CollisionResolution::KeepExisting
    );
    assert_eq!(
        resolve_collision(high, low, State::OpenConfirm, ConnectionOrigin::Remote),
        CollisionResolution::KeepNew
    );
    // Peer is higher: keep the connection the peer opened.
    assert_eq!(
        resolve_collision(low, high, State::OpenSent, ConnectionOrigin::Local),
        CollisionResolution::KeepNew
    );
    assert_eq!(
        resolve_collision(low, high, State::OpenSent, ConnectionOrigin::Remote),
        CollisionResolution::KeepExisting
    );
    // Established always wins; an FSM still connecting is no collision.
    assert_eq!(
        resolve_collision(low, high, State::Established, ConnectionOrigin::Local),
        CollisionResolution::KeepExisting
    );
    assert_eq!(
        resolve_collision(low, high, State::Connect, ConnectionOrigin::Local),
        CollisionResolution::KeepNew
    );
}

#[test]
fn collision_loser_sends_cease_6_7_and_stays_down() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Input::ManualStart);
    fsm.handle(Input::TcpConnected(ConnectionOrigin::Local));
    fsm.handle(received(Message::Open(peer_open(
        64512,
        90,
        standard_caps(),
    ))));
    assert_eq!(fsm.state(), State::OpenConfirm);
    let out = fsm.handle(Input::CollisionLost);
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (6, 7));
    assert_eq!(fsm.state(), State::Idle);
    assert!(fsm.handle(Input::ConnectRetryTimerExpired).is_empty());
}

#[test]
fn our_open_encodes_and_decodes() {
    let mut config = gr_config(false);
    config.hostname = Some("node-1".into());
    config.extended_message = true;
    config.families.push(Family::IPV6_UNICAST);
    let fsm = Fsm::new(config);
    let open = fsm.build_open();
    let frames =
        encode_message(&Message::Open(open.clone()), &WireOptions::default()).expect("encode");
    assert_eq!(frames[0][18], MessageType::Open.code());
    let decoded = decode_message(&frames[0], &WireOptions::default()).expect("decode");
    assert_eq!(decoded.message, Message::Open(open));
}

#[test]
fn update_sent_restarts_keepalive_timer() {
    let mut fsm = established(config(), standard_caps());
    assert_eq!(
        fsm.handle(Input::UpdateSent),
        vec![Output::StartTimer(
            TimerKind::Keepalive,
            Duration::from_secs(30)
        )]
    );
}

#[test]
fn bfd_down_closes_without_notification_and_waits_for_manual_start() {
    let mut fsm = established(config(), standard_caps());
    let out = fsm.handle(Input::BfdDown { graceful: false });
    assert_eq!(fsm.state(), State::Idle);
    assert!(sent_notification(&out).is_none());
    assert!(out.contains(&Output::Disconnect));
    assert!(out.contains(&Output::SessionDown {
        reason: DownReason::BfdDown,
        graceful: false,
        restart_time: None,
    }));
    // Held: no ConnectRetry, and an incoming connection is refused.
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::StartTimer(TimerKind::ConnectRetry, _))));
    let out = fsm.handle(Input::TcpConnected(ConnectionOrigin::Remote));
    assert!(out.contains(&Output::Disconnect));
    let out = fsm.handle(Input::ManualStart);
    assert!(out.contains(&Output::Connect));
}

#[test]
fn bfd_down_with_graceful_keeps_routes_stale_when_negotiated() {
    let mut fsm = established(gr_config(false), gr_caps(false));
    let out = fsm.handle(Input::BfdDown { graceful: true });
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SessionDown {
            reason: DownReason::BfdDown,
            graceful: true,
            ..
        }
    )));
}

#[test]
fn cease_input_sends_it_and_restarts_after_connect_retry() {
    let mut fsm = established(config(), standard_caps());
    let cease = Notification::new(6, 1, vec![0, 1, 1, 0, 0, 0, 2]);
    let out = fsm.handle(Input::Cease(cease.clone()));
    assert_eq!(sent_notification(&out), Some(&cease));
    assert_eq!(fsm.state(), State::Idle);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::StartTimer(TimerKind::ConnectRetry, _))));
}
