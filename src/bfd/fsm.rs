//! The BFD session state machine (RFC 5880 §6.2, §6.8), sans-IO.
//!
//! Data flow: the driver feeds `Fsm::handle(now, Input)` with the packets that passed
//! `packet::decode` and were matched to this session, with `Tick` when `next_deadline()`
//! has passed, and with administrative changes; it carries out the `Output`s (send a
//! packet, report a state change). No clock and no socket here: `now` comes from the
//! caller and the jitter from an injectable random source, so tests drive every timer.
//!
//! What the RFC asks and where it is done:
//! - §6.2 transitions: `receive` (Down→Init on Down, Down→Up on Init, Init→Up on Init/Up,
//!   Up→Down on Down, anything→Down on AdminDown) and `detection_expired` (Init/Up→Down,
//!   diagnostic 1, remote discriminator reset).
//! - §6.8.3: while not Up our Desired Min TX is at least 1 s (`SLOW_TX`); a change of our
//!   intervals while Up (including the switch to the configured ones once Up) is a Poll
//!   Sequence: packets carry P and the new values until the peer answers with F; until then
//!   the transmit interval uses the smaller and the detection time the larger of old and new.
//! - §6.8.4: detection time = remote multiplier × max(our Required Min RX, the remote's
//!   Desired Min TX).
//! - §6.8.7: transmit every max(our Desired Min TX, remote Required Min RX), less 0–25 %
//!   jitter (0–10 % more with multiplier 1); never while the remote's Required Min RX is 0;
//!   a Poll is answered with F at once.
//!
//! Departures: a state change sends a packet at once instead of at the next interval (as
//! BIRD and FRR do), which brings sessions up and down one interval sooner. No demand
//! mode, no echo, no authentication.

use std::time::{Duration, Instant};

use super::packet::{ControlPacket, Diagnostic, State};

/// The slowest rate we may transmit at while not Up, and our Desired Min TX then.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's configured timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Intervals {
    /// Desired Min TX: how often we would like to send.
    pub min_tx: Duration,
    /// Required Min RX: how often we can take packets.
    pub min_rx: Duration,
    /// Detect Mult.
    pub multiplier: u8,
}

impl Default for Intervals {
    /// FRR's and MetalLB's defaults: 300 ms both ways, multiplier 3.
    fn default() -> Self {
        Intervals {
            min_tx: Duration::from_millis(300),
            min_rx: Duration::from_millis(300),
            multiplier: 3,
        }
    }
}

/// What happened to the session, or an order for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A valid packet for this session (after `packet::decode` and the driver's lookup).
    Received(ControlPacket),
    /// Time passed: fire the deadlines at or before `now`.
    Tick,
    /// Administratively down: tell the peer (diagnostic 7) and ignore what it sends.
    AdminDown,
    /// Leave AdminDown.
    AdminUp,
    /// New configured timers (a Poll Sequence while Up).
    SetIntervals(Intervals),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this packet to the peer.
    Send(ControlPacket),
    /// The local state changed. `remote_admin_down`: the peer told us it is
    /// administratively down (RFC 5882 §4.2: not a path failure).
    StateChanged {
        from: State,
        to: State,
        diagnostic: Diagnostic,
        remote_admin_down: bool,
    },
}

/// The interval pair in force or being polled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Active {
    tx: Duration,
    rx: Duration,
}

/// What `status` reports about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FsmStatus {
    pub state: State,
    pub remote_state: State,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    pub diagnostic: Diagnostic,
    /// The interval we transmit at now (before jitter), microseconds.
    pub tx_interval_us: u64,
    /// The detection time now, microseconds (0 before the first packet).
    pub detection_time_us: u64,
    pub remote_multiplier: u8,
    /// A Poll Sequence is under way.
    pub polling: bool,
}

/// A random source: any u32 per call (tests pass a fixed sequence).
pub type Random = Box<dyn FnMut() -> u32 + Send>;

/// One BFD session.
pub struct Fsm {
    config: Intervals,
    local_discriminator: u32,
    state: State,
    diagnostic: Diagnostic,
    remote_state: State,
    remote_discriminator: u32,
    remote_min_rx: Duration,
    remote_min_tx: Duration,
    remote_multiplier: u8,
    active: Active,
    poll: Option<Active>,
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
    random: Random,
}

impl std::fmt::Debug for Fsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fsm")
            .field("state", &self.state)
            .field("local_discriminator", &self.local_discriminator)
            .field("remote_discriminator", &self.remote_discriminator)
            .finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Fsm {
    /// A session in Down that sends its first packet at `now`. `local_discriminator`
    /// must be unique and non-zero (the driver hands them out).
    pub fn new(local_discriminator: u32, config: Intervals, now: Instant, random: Random) -> Self {
        Fsm {
            config,
            local_discriminator,
            state: State::Down,
            diagnostic: Diagnostic::None,
            remote_state: State::Down,
            remote_discriminator: 0,
            // RFC 5880 §6.8.1: initialised to 1 µs.
            remote_min_rx: Duration::from_micros(1),
            remote_min_tx: Duration::ZERO,
            remote_multiplier: 0,
            active: slow(config),
            poll: None,
            next_tx: Some(now),
            detect_at: None,
            random,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discriminator
    }

    /// When `handle(Tick)` is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_tx, self.detect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn status(&self) -> FsmStatus {
        FsmStatus {
            state: self.state,
            remote_state: self.remote_state,
            local_discriminator: self.local_discriminator,
            remote_discriminator: self.remote_discriminator,
            diagnostic: self.diagnostic,
            tx_interval_us: u64::try_from(self.tx_interval().as_micros()).unwrap_or(u64::MAX),
            detection_time_us: u64::try_from(self.detection_time().as_micros()).unwrap_or(u64::MAX),
            remote_multiplier: self.remote_multiplier,
            polling: self.poll.is_some(),
        }
    }

    /// Feed one input.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Received(packet) => self.receive(now, &packet, &mut out),
            Input::Tick => self.tick(now, &mut out),
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.change(
                        State::AdminDown,
                        Diagnostic::AdministrativelyDown,
                        false,
                        &mut out,
                    );
                    self.detect_at = None;
                    self.send_now(now, &mut out);
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.change(State::Down, Diagnostic::None, false, &mut out);
                    self.send_now(now, &mut out);
                }
            }
            Input::SetIntervals(intervals) => {
                self.config = intervals;
                if self.state == State::Up {
                    self.start_poll();
                    if self.poll.is_some() {
                        self.send_now(now, &mut out);
                    }
                } else {
                    self.active = slow(intervals);
                }
            }
        }
        out
    }

    /// The transmit interval before jitter: max(our Desired Min TX, the remote's
    /// Required Min RX); zero when the remote wants no packets.
    fn tx_interval(&self) -> Duration {
        if self.remote_min_rx.is_zero() {
            return Duration::ZERO;
        }
        let ours = self
            .poll
            .map_or(self.active.tx, |p| p.tx.min(self.active.tx));
        ours.max(self.remote_min_rx)
    }

    /// Remote multiplier × max(our Required Min RX, the remote's Desired Min TX).
    fn detection_time(&self) -> Duration {
        let ours = self
            .poll
            .map_or(self.active.rx, |p| p.rx.max(self.active.rx));
        ours.max(self.remote_min_tx) * u32::from(self.remote_multiplier)
    }

    /// The packet we send now.
    fn packet(&self, poll: bool, final_: bool) -> ControlPacket {
        let advertised = self.poll.unwrap_or(self.active);
        ControlPacket {
            diagnostic: self.diagnostic,
            state: self.state,
            poll,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_multiplier: self.config.multiplier,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx_us: micros(advertised.tx),
            required_min_rx_us: micros(advertised.rx),
            required_min_echo_rx_us: 0,
        }
    }

    /// The next periodic transmission, jittered (§6.8.7).
    fn schedule_tx(&mut self, now: Instant) {
        let interval = self.tx_interval();
        if interval.is_zero() {
            self.next_tx = None;
            return;
        }
        let spread = if self.config.multiplier == 1 { 16 } else { 26 };
        let percent = 75 + (self.random)() % spread;
        self.next_tx = Some(now + interval * percent / 100);
    }

    /// Send a packet outside the schedule (a state change) and restart the schedule.
    fn send_now(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.remote_min_rx.is_zero() {
            return;
        }
        out.push(Output::Send(self.packet(self.poll.is_some(), false)));
        self.schedule_tx(now);
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.detect_at.is_some_and(|at| at <= now) {
            self.detection_expired(now, out);
        }
        if self.next_tx.is_some_and(|at| at <= now) {
            out.push(Output::Send(self.packet(self.poll.is_some(), false)));
            self.schedule_tx(now);
        }
    }

    /// No packet for a detection time (§6.8.4): Down, diagnostic 1.
    fn detection_expired(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.detect_at = None;
        if !matches!(self.state, State::Init | State::Up) {
            return;
        }
        self.remote_discriminator = 0;
        self.remote_state = State::Down;
        self.change(
            State::Down,
            Diagnostic::ControlDetectionTimeExpired,
            false,
            out,
        );
        self.send_now(now, out);
    }

    /// §6.8.6, after the packet-level checks: update the remote's view, then the state.
    fn receive(&mut self, now: Instant, packet: &ControlPacket, out: &mut Vec<Output>) {
        if packet.your_discriminator != 0 && packet.your_discriminator != self.local_discriminator {
            return;
        }
        let old_interval = self.tx_interval();
        self.remote_discriminator = packet.my_discriminator;
        self.remote_state = packet.state;
        self.remote_min_rx = Duration::from_micros(u64::from(packet.required_min_rx_us));
        self.remote_min_tx = Duration::from_micros(u64::from(packet.desired_min_tx_us));
        self.remote_multiplier = packet.detect_multiplier;
        if packet.final_ {
            if let Some(pending) = self.poll.take() {
                self.active = pending;
            }
        }
        if self.tx_interval() != old_interval || self.next_tx.is_none() {
            self.schedule_tx(now);
        }
        if self.state == State::AdminDown {
            return;
        }
        let state_before = self.state;
        self.transition(packet.state, out);
        self.detect_at = match self.state {
            State::Init | State::Up => Some(now + self.detection_time()),
            State::Down | State::AdminDown => None,
        };
        if packet.poll {
            // §6.8.7: answer at once, with F and without P.
            out.push(Output::Send(self.packet(false, true)));
        }
        if self.state != state_before {
            if self.state == State::Up {
                self.start_poll();
            }
            self.send_now(now, out);
        }
    }

    /// The §6.2 transition for a received state.
    fn transition(&mut self, received: State, out: &mut Vec<Output>) {
        let next = match (self.state, received) {
            (State::Down | State::Init | State::Up, State::AdminDown) => {
                if self.state == State::Down {
                    return;
                }
                self.change(
                    State::Down,
                    Diagnostic::NeighborSignaledSessionDown,
                    true,
                    out,
                );
                return;
            }
            (State::Down, State::Down) => State::Init,
            (State::Down, State::Init) => State::Up,
            (State::Init, State::Init | State::Up) => State::Up,
            (State::Up, State::Down) => {
                self.change(
                    State::Down,
                    Diagnostic::NeighborSignaledSessionDown,
                    false,
                    out,
                );
                return;
            }
            _ => return,
        };
        self.change(next, Diagnostic::None, false, out);
    }

    fn change(
        &mut self,
        to: State,
        diagnostic: Diagnostic,
        remote_admin_down: bool,
        out: &mut Vec<Output>,
    ) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.diagnostic = diagnostic;
        if from == State::Up {
            // Not Up any more: back to the slow rate (an increase needs no Poll while not Up).
            self.poll = None;
            self.active = slow(self.config);
        }
        out.push(Output::StateChanged {
            from,
            to,
            diagnostic,
            remote_admin_down,
        });
    }

    /// Switch to the configured intervals with a Poll Sequence (§6.8.3); the caller
    /// sends the first packet with P.
    fn start_poll(&mut self) {
        let target = Active {
            tx: self.config.min_tx,
            rx: self.config.min_rx,
        };
        self.poll = (target != self.active).then_some(target);
    }
}

/// The intervals while not Up: Desired Min TX at least 1 s.
fn slow(config: Intervals) -> Active {
    Active {
        tx: config.min_tx.max(SLOW_TX),
        rx: config.min_rx,
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
