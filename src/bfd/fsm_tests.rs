//! Sequence tests of the BFD state machine: every §6.2 transition, the detection timeout,
//! the slow rate while not Up, jitter bounds and the Poll/Final exchange.

use super::*;

const LOCAL: u32 = 0x11;
const REMOTE: u32 = 0x22;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A random source returning `value` every time.
fn fixed(value: u32) -> Random {
    Box::new(move || value)
}

fn fsm(now: Instant) -> Fsm {
    Fsm::new(LOCAL, Intervals::default(), now, fixed(25))
}

fn from_peer(state: State) -> ControlPacket {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_multiplier: 3,
        my_discriminator: REMOTE,
        your_discriminator: if state == State::Down { 0 } else { LOCAL },
        desired_min_tx_us: 300_000,
        required_min_rx_us: 300_000,
        required_min_echo_rx_us: 0,
    }
}

fn sent(out: &[Output]) -> Vec<ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(*p),
            Output::StateChanged { .. } => None,
        })
        .collect()
}

fn changes(out: &[Output]) -> Vec<(State, State)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StateChanged { from, to, .. } => Some((*from, *to)),
            Output::Send(_) => None,
        })
        .collect()
}

/// Bring a session Up (Down → Init on Down, Init → Up on Up) and finish the Poll.
fn up(now: Instant) -> Fsm {
    let mut f = fsm(now);
    f.handle(now, Input::Received(from_peer(State::Down)));
    f.handle(now, Input::Received(from_peer(State::Up)));
    let mut final_ = from_peer(State::Up);
    final_.final_ = true;
    f.handle(now, Input::Received(final_));
    assert_eq!(f.state(), State::Up);
    assert!(!f.status().polling);
    f
}

#[test]
fn first_packet_is_down_at_the_slow_rate_with_no_remote_discriminator() {
    let now = Instant::now();
    let mut f = fsm(now);
    assert_eq!(f.next_deadline(), Some(now));
    let out = f.handle(now, Input::Tick);
    let packets = sent(&out);
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].state, State::Down);
    assert_eq!(packets[0].your_discriminator, 0);
    assert_eq!(packets[0].my_discriminator, LOCAL);
    assert_eq!(packets[0].desired_min_tx_us, 1_000_000);
    assert_eq!(packets[0].required_min_rx_us, 300_000);
}

#[test]
fn down_receiving_down_goes_to_init() {
    let now = Instant::now();
    let mut f = fsm(now);
    let out = f.handle(now, Input::Received(from_peer(State::Down)));
    assert_eq!(changes(&out), vec![(State::Down, State::Init)]);
    assert_eq!(sent(&out)[0].state, State::Init);
    assert_eq!(sent(&out)[0].your_discriminator, REMOTE);
}

#[test]
fn down_receiving_init_goes_up_and_starts_a_poll_for_the_fast_timers() {
    let now = Instant::now();
    let mut f = fsm(now);
    let out = f.handle(now, Input::Received(from_peer(State::Init)));
    assert_eq!(changes(&out), vec![(State::Down, State::Up)]);
    let packets = sent(&out);
    assert!(packets[0].poll);
    assert_eq!(packets[0].desired_min_tx_us, 300_000);
    assert!(f.status().polling);
}

#[test]
fn down_receiving_up_stays_down() {
    let now = Instant::now();
    let mut f = fsm(now);
    let out = f.handle(now, Input::Received(from_peer(State::Up)));
    assert!(changes(&out).is_empty());
    assert_eq!(f.state(), State::Down);
}

#[test]
fn init_receiving_init_or_up_goes_up() {
    for received in [State::Init, State::Up] {
        let now = Instant::now();
        let mut f = fsm(now);
        f.handle(now, Input::Received(from_peer(State::Down)));
        let out = f.handle(now, Input::Received(from_peer(received)));
        assert_eq!(
            changes(&out),
            vec![(State::Init, State::Up)],
            "{received:?}"
        );
    }
}

#[test]
fn init_receiving_down_stays_init() {
    let now = Instant::now();
    let mut f = fsm(now);
    f.handle(now, Input::Received(from_peer(State::Down)));
    let out = f.handle(now, Input::Received(from_peer(State::Down)));
    assert!(changes(&out).is_empty());
    assert_eq!(f.state(), State::Init);
}

#[test]
fn up_receiving_down_goes_down_with_neighbor_signaled() {
    let now = Instant::now();
    let mut f = up(now);
    let out = f.handle(now, Input::Received(from_peer(State::Down)));
    assert_eq!(
        out[0],
        Output::StateChanged {
            from: State::Up,
            to: State::Down,
            diagnostic: Diagnostic::NeighborSignaledSessionDown,
            remote_admin_down: false,
        }
    );
    assert_eq!(sent(&out)[0].desired_min_tx_us, 1_000_000);
}

#[test]
fn up_or_init_receiving_admin_down_goes_down_flagged_as_remote_admin_down() {
    let now = Instant::now();
    let mut f = up(now);
    let mut admin = from_peer(State::AdminDown);
    admin.diagnostic = Diagnostic::AdministrativelyDown;
    let out = f.handle(now, Input::Received(admin));
    assert!(matches!(
        out[0],
        Output::StateChanged {
            from: State::Up,
            to: State::Down,
            remote_admin_down: true,
            ..
        }
    ));
    let mut f = fsm(now);
    f.handle(now, Input::Received(from_peer(State::Down)));
    let out = f.handle(now, Input::Received(admin));
    assert_eq!(changes(&out), vec![(State::Init, State::Down)]);
    // Down stays Down.
    let out = f.handle(now, Input::Received(admin));
    assert!(changes(&out).is_empty());
}

#[test]
fn up_receiving_init_or_up_stays_up() {
    let now = Instant::now();
    let mut f = up(now);
    for state in [State::Init, State::Up] {
        let out = f.handle(now, Input::Received(from_peer(state)));
        assert!(changes(&out).is_empty());
    }
}

#[test]
fn local_admin_down_ignores_the_peer_and_admin_up_returns_to_down() {
    let now = Instant::now();
    let mut f = up(now);
    let out = f.handle(now, Input::AdminDown);
    assert_eq!(changes(&out), vec![(State::Up, State::AdminDown)]);
    assert_eq!(sent(&out)[0].state, State::AdminDown);
    assert_eq!(sent(&out)[0].diagnostic, Diagnostic::AdministrativelyDown);
    let out = f.handle(now, Input::Received(from_peer(State::Init)));
    assert!(changes(&out).is_empty());
    let out = f.handle(now, Input::AdminUp);
    assert_eq!(changes(&out), vec![(State::AdminDown, State::Down)]);
}

#[test]
fn detection_timeout_brings_up_down_with_diagnostic_1() {
    let now = Instant::now();
    let mut f = up(now);
    // 3 × max(300 ms ours, 300 ms theirs).
    assert_eq!(f.status().detection_time_us, 900_000);
    let almost = now + ms(899);
    let out = f.handle(almost, Input::Tick);
    assert!(changes(&out).is_empty());
    let out = f.handle(now + ms(900), Input::Tick);
    assert_eq!(
        out[0],
        Output::StateChanged {
            from: State::Up,
            to: State::Down,
            diagnostic: Diagnostic::ControlDetectionTimeExpired,
            remote_admin_down: false,
        }
    );
    assert_eq!(f.status().remote_discriminator, 0);
    assert_eq!(sent(&out)[0].your_discriminator, 0);
}

#[test]
fn detection_timeout_from_init_goes_down() {
    let now = Instant::now();
    let mut f = fsm(now);
    f.handle(now, Input::Received(from_peer(State::Down)));
    // In Init our Required Min RX is 300 ms, theirs 300 ms TX: 900 ms.
    let out = f.handle(now + ms(900), Input::Tick);
    assert_eq!(changes(&out), vec![(State::Init, State::Down)]);
}

#[test]
fn each_packet_restarts_the_detection_timer() {
    let now = Instant::now();
    let mut f = up(now);
    f.handle(now + ms(800), Input::Received(from_peer(State::Up)));
    let out = f.handle(now + ms(1000), Input::Tick);
    assert!(changes(&out).is_empty());
    assert_eq!(f.state(), State::Up);
}

#[test]
fn detection_time_uses_the_remote_multiplier_and_the_larger_interval() {
    let now = Instant::now();
    let mut f = up(now);
    let mut slow_peer = from_peer(State::Up);
    slow_peer.detect_multiplier = 5;
    slow_peer.desired_min_tx_us = 500_000;
    f.handle(now, Input::Received(slow_peer));
    assert_eq!(f.status().detection_time_us, 2_500_000);
}

#[test]
fn transmit_interval_is_jittered_between_75_and_100_percent() {
    let now = Instant::now();
    for (random, expected) in [(0, 750), (25, 1000), (26, 750)] {
        let mut f = Fsm::new(LOCAL, Intervals::default(), now, fixed(random));
        f.handle(now, Input::Tick);
        assert_eq!(
            f.next_deadline(),
            Some(now + ms(expected)),
            "random {random}"
        );
    }
    // Multiplier 1: at most 90 %.
    let single = Intervals {
        multiplier: 1,
        ..Intervals::default()
    };
    let mut f = Fsm::new(LOCAL, single, now, fixed(15));
    f.handle(now, Input::Tick);
    assert_eq!(f.next_deadline(), Some(now + ms(900)));
}

#[test]
fn transmit_interval_follows_the_remote_required_min_rx() {
    let now = Instant::now();
    let mut f = up(now);
    assert_eq!(f.status().tx_interval_us, 300_000);
    let mut slow_rx = from_peer(State::Up);
    slow_rx.required_min_rx_us = 2_000_000;
    f.handle(now, Input::Received(slow_rx));
    assert_eq!(f.status().tx_interval_us, 2_000_000);
}

#[test]
fn nothing_is_sent_while_the_remote_wants_no_packets() {
    let now = Instant::now();
    let mut f = fsm(now);
    let mut silent = from_peer(State::Down);
    silent.required_min_rx_us = 0;
    let out = f.handle(now, Input::Received(silent));
    assert!(sent(&out).is_empty());
    assert_eq!(f.next_deadline(), Some(now + ms(900)));
    let out = f.handle(now + ms(2000), Input::Tick);
    assert!(sent(&out).is_empty());
}

#[test]
fn poll_is_answered_at_once_with_final() {
    let now = Instant::now();
    let mut f = up(now);
    let mut poll = from_peer(State::Up);
    poll.poll = true;
    let out = f.handle(now, Input::Received(poll));
    let packets = sent(&out);
    assert_eq!(packets.len(), 1);
    assert!(packets[0].final_);
    assert!(!packets[0].poll);
}

#[test]
fn poll_keeps_p_set_until_final_and_holds_the_old_timers_meanwhile() {
    let now = Instant::now();
    let mut f = fsm(now);
    let out = f.handle(now, Input::Received(from_peer(State::Init)));
    assert!(sent(&out).iter().all(|p| p.poll));
    // While polling, TX uses the smaller of old (1 s) and new (300 ms).
    assert_eq!(f.status().tx_interval_us, 300_000);
    let out = f.handle(now + ms(300), Input::Tick);
    assert!(sent(&out)[0].poll);
    let mut final_ = from_peer(State::Up);
    final_.final_ = true;
    f.handle(now + ms(310), Input::Received(final_));
    assert!(!f.status().polling);
    let out = f.handle(now + ms(700), Input::Tick);
    assert!(!sent(&out)[0].poll);
}

#[test]
fn new_intervals_while_up_start_a_poll_and_take_effect_on_final() {
    let now = Instant::now();
    let mut f = up(now);
    let slower = Intervals {
        min_tx: ms(1000),
        min_rx: ms(1000),
        multiplier: 3,
    };
    let out = f.handle(now, Input::SetIntervals(slower));
    let packets = sent(&out);
    assert!(packets[0].poll);
    assert_eq!(packets[0].desired_min_tx_us, 1_000_000);
    // TX keeps the old (smaller) interval until Final; detection already uses the larger RX.
    assert_eq!(f.status().tx_interval_us, 300_000);
    assert_eq!(f.status().detection_time_us, 3_000_000);
    let mut final_ = from_peer(State::Up);
    final_.final_ = true;
    f.handle(now, Input::Received(final_));
    assert_eq!(f.status().tx_interval_us, 1_000_000);
    assert!(!f.status().polling);
}

#[test]
fn new_intervals_while_down_keep_the_slow_rate() {
    let now = Instant::now();
    let mut f = fsm(now);
    let fast = Intervals {
        min_tx: ms(10),
        min_rx: ms(10),
        multiplier: 3,
    };
    let out = f.handle(now, Input::SetIntervals(fast));
    assert!(out.is_empty());
    let out = f.handle(now, Input::Tick);
    assert_eq!(sent(&out)[0].desired_min_tx_us, 1_000_000);
    assert_eq!(sent(&out)[0].required_min_rx_us, 10_000);
}

#[test]
fn packet_for_another_discriminator_is_ignored() {
    let now = Instant::now();
    let mut f = fsm(now);
    let mut other = from_peer(State::Init);
    other.your_discriminator = 0x99;
    let out = f.handle(now, Input::Received(other));
    assert!(out.is_empty());
    assert_eq!(f.state(), State::Down);
}
