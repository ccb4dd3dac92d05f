//! The BGP finite state machine (RFC 4271 §8), sans-IO.
//!
//! Data flow: the session task (tokio, `session/`) owns the socket and the timers. It
//! turns what happens into an `Input` (TCP up or down, a decoded message, a decode error,
//! a timer firing, an operator command), calls `Fsm::handle`, and carries out the
//! returned `Output`s in order: connect or disconnect, send a message, (re)start or stop
//! a timer, report a session up or down, pass routes to the RIB. No clock, no socket and
//! no randomness live here, so tests drive the machine with event sequences.
//!
//! Implemented: states Idle, Connect, Active, OpenSent, OpenConfirm, Established; OPEN
//! checks (peer AS → 2/2, BGP identifier → 2/3, hold time → 2/6, no common address family
//! → 2/7); hold time negotiation (the smaller of both, 0 disables keepalives, keepalive =
//! hold / 3); ConnectRetry with exponential backoff up to a cap, also used to restart
//! automatically after a failure (RFC 4271 §8.1.1 optional attributes
//! AllowAutomaticStart and DampPeerOscillations, simplified); passive peers; collision
//! resolution (§6.8) as a helper the speaker calls when two connections to one peer reach
//! OpenSent/OpenConfirm; capabilities (multiprotocol, 4-octet AS, route refresh, extended
//! message, graceful restart, FQDN).
//!
//! Graceful restart (RFC 4724, RFC 8538): the peer's restart time, flags and per-family
//! forwarding bits are reported in `SessionEstablished`. When an Established session ends
//! with both sides having sent the GR capability, `SessionDown` says `graceful: true` with
//! the peer's restart time if the session ended without a NOTIFICATION (TCP closed or
//! failed), or with one while both sides set the N bit and it was not a Cease/Hard Reset.
//!
//! Departures: no DelayOpen timer and no Idle-hold timer of its own (the ConnectRetry
//! backoff plays that role); jitter (RFC 4271 §10) is left to the session task; a passive
//! FSM never leaves Active to connect; `TcpConnected` in OpenSent or later is ignored (a
//! second connection gets its own FSM and the speaker resolves the collision).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bgp::packet::{
    codes, Capability, DecodeError, Family, GracefulRestart, GracefulRestartFamily, Message,
    Notification, Open, OpenError, RouteRefresh, Update, WireOptions,
};

/// Hold time while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// The six states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// The timers the session task runs for this FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimerKind {
    ConnectRetry,
    Hold,
    Keepalive,
}

/// Who opened a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionOrigin {
    /// We connected to the peer.
    Local,
    /// The peer connected to us.
    Remote,
}

/// Graceful restart as we advertise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GracefulRestartConfig {
    /// Seconds the peer should keep our routes after we go away (≤ 4095).
    pub restart_time: u16,
    /// We are coming back from a restart (R bit).
    pub restarting: bool,
    /// The kernel kept our forwarding state (F bit for every family we advertise).
    pub forwarding_preserved: bool,
    /// Graceful restart also covers NOTIFICATIONs (RFC 8538 N bit).
    pub notification: bool,
}

/// One peer's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    pub local_asn: u32,
    pub local_id: Ipv4Addr,
    /// The AS the peer must announce (equal to `local_asn` for iBGP).
    pub peer_asn: u32,
    /// Hold time we propose, in seconds (0, or at least 3).
    pub hold_time: u16,
    /// First ConnectRetry interval; doubles on every consecutive failure.
    pub connect_retry_time: Duration,
    /// Cap of the backoff.
    pub connect_retry_max: Duration,
    /// Never connect; wait for the peer (the mesh's higher address is passive).
    pub passive: bool,
    /// Families to negotiate, in OPEN order.
    pub families: Vec<Family>,
    pub graceful_restart: Option<GracefulRestartConfig>,
    pub extended_message: bool,
    /// Advertised in the FQDN capability when set.
    pub hostname: Option<String>,
}

impl PeerConfig {
    /// A configuration with routed's defaults: hold 90 s, retry 5 s doubling to 120 s,
    /// IPv4 unicast, no graceful restart.
    pub fn new(local_asn: u32, local_id: Ipv4Addr, peer_asn: u32) -> Self {
        PeerConfig {
            local_asn,
            local_id,
            peer_asn,
            hold_time: 90,
            connect_retry_time: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(120),
            passive: false,
            families: vec![Family::IPV4_UNICAST],
            graceful_restart: None,
            extended_message: false,
            hostname: None,
        }
    }

    /// Whether the peer is in our AS.
    pub fn is_ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }
}

/// What both sides agreed in their OPENs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    /// Seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    pub keepalive_time: u16,
    /// Families both sides advertised.
    pub families: Vec<Family>,
    pub route_refresh: bool,
    /// How to read and write UPDATEs on this session.
    pub wire: WireOptions,
    /// The peer's graceful-restart capability, when both sides advertised one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// Both sides set the N bit.
    pub graceful_notification: bool,
    pub peer_hostname: Option<String>,
}

/// Why a session (or an attempt at one) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownReason {
    ManualStop,
    NotificationSent(Notification),
    NotificationReceived(Notification),
    ConnectionLost,
    /// BFD declared the path to the peer down (RFC 5882 §4.1).
    BfdDown,
}

/// An event for the FSM. `MessageReceived` carries a whole UPDATE; inputs are consumed
/// at once, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start and connect (RFC event 1).
    ManualStart,
    /// Start and wait for the peer to connect (RFC event 4).
    ManualStartPassive,
    /// Stop, with an optional RFC 9003 shutdown communication (RFC event 2).
    ManualStop {
        message: Option<String>,
    },
    /// A TCP connection to the peer is up (RFC events 16/17).
    TcpConnected(ConnectionOrigin),
    /// The connection attempt failed (RFC event 18).
    TcpConnectionFails,
    /// An established connection closed or broke.
    TcpClosed,
    /// A message decoded cleanly (UPDATEs with treat-as-withdraw already applied).
    MessageReceived(Message),
    /// A message did not decode; the FSM sends its NOTIFICATION.
    DecodeFailed(DecodeError),
    ConnectRetryTimerExpired,
    HoldTimerExpired,
    KeepaliveTimerExpired,
    /// The session task sent an UPDATE, which counts as a keepalive (RFC 4271 §4.4).
    UpdateSent,
    /// The speaker resolved a collision against this connection (§6.8).
    CollisionLost,
    /// The session cannot hold what it must send (the peer does not read): Cease/Out of
    /// Resources (RFC 4486 subcode 8), then restart as after any error.
    OutOfResources,
    /// BFD says the path is down: close without a NOTIFICATION (it could not arrive) and
    /// stay Idle until the next ManualStart. `graceful`: end the session as graceful restart
    /// would, when negotiated (BIRD's `bfd graceful`).
    BfdDown {
        graceful: bool,
    },
    /// The speaker ends the session with this NOTIFICATION (a Cease such as Maximum Number
    /// of Prefixes Reached); the session restarts after ConnectRetry like after any error.
    Cease(Notification),
}

/// Something for the session task to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending anything queued before this output).
    Disconnect,
    SendMessage(Message),
    /// Start the timer, replacing it if it runs.
    StartTimer(TimerKind, Duration),
    StopTimer(TimerKind),
    StateChanged {
        from: State,
        to: State,
    },
    SessionEstablished(Negotiated),
    /// The Established session ended. With `graceful`, keep the peer's routes as stale for
    /// `restart_time` (RFC 4724 §4.2).
    SessionDown {
        reason: DownReason,
        graceful: bool,
        restart_time: Option<Duration>,
    },
    RoutesReceived(Update),
    RouteRefreshRequested(Family),
}

/// The state machine for one connection to one peer.
#[derive(Debug, Clone)]
pub struct Fsm {
    config: PeerConfig,
    state: State,
    /// Started by the operator (automatic restarts are allowed).
    started: bool,
    passive: bool,
    connect_retry_counter: u32,
    origin: Option<ConnectionOrigin>,
    peer_open: Option<Open>,
    negotiated: Option<Negotiated>,
    last_error: Option<DownReason>,
}

impl Fsm {
    /// An FSM in Idle.
    pub fn new(config: PeerConfig) -> Self {
        let passive = config.passive;
        Fsm {
            config,
            state: State::Idle,
            started: false,
            passive,
            connect_retry_counter: 0,
            origin: None,
            peer_open: None,
            negotiated: None,
            last_error: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// What was negotiated, once in OpenConfirm or Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The peer's BGP identifier, once its OPEN arrived.
    pub fn peer_id(&self) -> Option<Ipv4Addr> {
        self.peer_open.as_ref().map(|o| o.bgp_id)
    }

    /// Who opened the current connection.
    pub fn connection_origin(&self) -> Option<ConnectionOrigin> {
        self.origin
    }

    /// Why the last session or attempt ended, for `routectl status`.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// Consecutive failures so far.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// Feed one event; get back what to do.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        let from = self.state;
        match input {
            Input::ManualStart => self.start(false, &mut out),
            Input::ManualStartPassive => self.start(true, &mut out),
            Input::ManualStop { message } => self.stop(message.as_deref(), &mut out),
            Input::TcpConnected(origin) => self.connect_tcp(origin, &mut out),
            Input::TcpConnectionFails | Input::TcpClosed => self.lose_connection(&mut out),
            Input::MessageReceived(message) => self.receive_message(message, &mut out),
            Input::DecodeFailed(error) => self.fail_decode(&error, &mut out),
            Input::ConnectRetryTimerExpired => self.expire_connect_retry(&mut out),
            Input::HoldTimerExpired => self.expire_hold(&mut out),
            Input::KeepaliveTimerExpired => self.expire_keepalive(&mut out),
            Input::UpdateSent => self.note_update_sent(&mut out),
            Input::CollisionLost => self.lose_collision(&mut out),
            Input::OutOfResources => {
                if self.state != State::Idle {
                    let cease = Notification::cease(codes::CEASE_OUT_OF_RESOURCES);
                    self.send_error(cease, &mut out);
                }
            }
            Input::BfdDown { graceful } => self.bfd_down(graceful, &mut out),
            Input::Cease(notification) => {
                if self.state == State::Established {
                    self.send_error(notification, &mut out);
                }
            }
        }
        if self.state != from {
            out.push(Output::StateChanged {
                from,
                to: self.state,
            });
        }
        out
    }

    /// ManualStart / ManualStartPassive: only meaningful in Idle.
    fn start(&mut self, passive: bool, out: &mut Vec<Output>) {
        if self.state != State::Idle {
            return;
        }
        self.started = true;
        self.passive = passive || self.config.passive;
        self.connect_retry_counter = 0;
        self.begin_connecting(out);
    }

    /// From Idle: connect (Connect) or wait (Active).
    fn begin_connecting(&mut self, out: &mut Vec<Output>) {
        if self.passive {
            self.state = State::Active;
            return;
        }
        out.push(Output::StartTimer(
            TimerKind::ConnectRetry,
            self.connect_retry_interval(),
        ));
        out.push(Output::Connect);
        self.state = State::Connect;
    }

    /// The backoff: the base interval for the first two attempts, then doubling, capped.
    pub fn connect_retry_interval(&self) -> Duration {
        let doublings = self.connect_retry_counter.saturating_sub(1).min(16);
        self.config
            .connect_retry_time
            .saturating_mul(1u32 << doublings)
            .min(self.config.connect_retry_max)
    }

    /// ManualStop: Cease in OpenSent and later, then Idle with no restart.
    fn stop(&mut self, message: Option<&str>, out: &mut Vec<Output>) {
        if self.state == State::Idle {
            self.started = false;
            out.push(Output::StopTimer(TimerKind::ConnectRetry));
            return;
        }
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            let notification = match message {
                Some(text) => {
                    Notification::cease_with_message(codes::CEASE_ADMINISTRATIVE_SHUTDOWN, text)
                }
                None => Notification::cease(codes::CEASE_ADMINISTRATIVE_SHUTDOWN),
            };
            out.push(Output::SendMessage(Message::Notification(notification)));
        }
        self.started = false;
        self.connect_retry_counter = 0;
        self.go_idle(DownReason::ManualStop, false, out);
    }

    /// BFD Down: Idle at once, no NOTIFICATION, no automatic restart.
    fn bfd_down(&mut self, graceful: bool, out: &mut Vec<Output>) {
        let graceful = graceful && self.graceful_without_notification();
        self.started = false;
        self.connect_retry_counter = 0;
        self.go_idle(DownReason::BfdDown, graceful, out);
    }

    /// A TCP connection came up.
    fn connect_tcp(&mut self, origin: ConnectionOrigin, out: &mut Vec<Output>) {
        match self.state {
            State::Connect | State::Active => {
                self.origin = Some(origin);
                out.push(Output::StopTimer(TimerKind::ConnectRetry));
                out.push(Output::SendMessage(Message::Open(self.build_open())));
                out.push(Output::StartTimer(TimerKind::Hold, OPEN_HOLD_TIME));
                self.state = State::OpenSent;
            }
            // Not started: refuse the connection.
            State::Idle => out.push(Output::Disconnect),
            // A second connection belongs to another FSM; nothing to do here.
            State::OpenSent | State::OpenConfirm | State::Established => {}
        }
    }

    /// TCP failed or closed.
    fn lose_connection(&mut self, out: &mut Vec<Output>) {
        match self.state {
            State::Idle => {}
            State::Connect | State::Active => {
                // Keep trying: wait out the backoff, listening meanwhile (RFC: Active).
                self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
                out.push(Output::StartTimer(
                    TimerKind::ConnectRetry,
                    self.connect_retry_interval(),
                ));
                self.state = State::Active;
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                let graceful = self.graceful_without_notification();
                self.fail(DownReason::ConnectionLost, graceful, out);
            }
        }
    }

    /// Whether the session may end gracefully without a NOTIFICATION.
    fn graceful_without_notification(&self) -> bool {
        self.negotiated
            .as_ref()
            .is_some_and(|n| n.peer_graceful_restart.is_some())
    }

    /// Whether the session may end gracefully with this NOTIFICATION (RFC 8538).
    fn graceful_with_notification(&self, notification: &Notification) -> bool {
        const CEASE_HARD_RESET: u8 = 9;
        let hard = notification.code == codes::CEASE && notification.subcode == CEASE_HARD_RESET;
        !hard
            && self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart.is_some() && n.graceful_notification)
    }

    /// A message arrived.
    fn receive_message(&mut self, message: Message, out: &mut Vec<Output>) {
        if let Message::Notification(notification) = message {
            self.receive_notification(notification, out);
            return;
        }
        match (self.state, message) {
            (State::OpenSent, Message::Open(open)) => self.receive_open(open, out),
            (State::OpenConfirm, Message::Keepalive) => self.establish(out),
            (State::Established, Message::Keepalive) => self.restart_hold_timer(out),
            (State::Established, Message::Update(update)) => {
                self.restart_hold_timer(out);
                out.push(Output::RoutesReceived(update));
            }
            (State::Established, Message::RouteRefresh(refresh)) => {
                self.restart_hold_timer(out);
                self.receive_route_refresh(refresh, out);
            }
            (State::Idle, _) => {}
            (State::Connect | State::Active, _) => {
                // A message without a connection is the session task's bug; start over.
                self.fail(DownReason::ConnectionLost, false, out);
            }
            (State::OpenSent, _) => self.send_error(
                Notification::fsm_error(codes::FSM_UNEXPECTED_IN_OPEN_SENT),
                out,
            ),
            (State::OpenConfirm, _) => self.send_error(
                Notification::fsm_error(codes::FSM_UNEXPECTED_IN_OPEN_CONFIRM),
                out,
            ),
            (State::Established, _) => self.send_error(
                Notification::fsm_error(codes::FSM_UNEXPECTED_IN_ESTABLISHED),
                out,
            ),
        }
    }

    /// The peer sent a NOTIFICATION: close without answering.
    fn receive_notification(&mut self, notification: Notification, out: &mut Vec<Output>) {
        if self.state == State::Idle {
            return;
        }
        let graceful = self.graceful_with_notification(&notification);
        self.fail(
            DownReason::NotificationReceived(notification),
            graceful,
            out,
        );
    }

    /// ROUTE-REFRESH for a negotiated family (others are ignored, RFC 7313 §5).
    fn receive_route_refresh(&mut self, refresh: RouteRefresh, out: &mut Vec<Output>) {
        let negotiated = self.negotiated.as_ref();
        let known = negotiated.is_some_and(|n| n.families.contains(&refresh.family));
        if known && refresh.subtype == 0 {
            out.push(Output::RouteRefreshRequested(refresh.family));
        }
    }

    /// The peer's OPEN in OpenSent: check it, negotiate, answer with KEEPALIVE.
    fn receive_open(&mut self, open: Open, out: &mut Vec<Output>) {
        match self.negotiate(&open) {
            Ok(negotiated) => {
                out.push(Output::SendMessage(Message::Keepalive));
                if negotiated.hold_time == 0 {
                    out.push(Output::StopTimer(TimerKind::Hold));
                } else {
                    out.push(Output::StartTimer(
                        TimerKind::Hold,
                        secs(negotiated.hold_time),
                    ));
                    out.push(Output::StartTimer(
                        TimerKind::Keepalive,
                        secs(negotiated.keepalive_time),
                    ));
                }
                self.peer_open = Some(open);
                self.negotiated = Some(negotiated);
                self.state = State::OpenConfirm;
            }
            Err(error) => {
                self.peer_open = Some(open);
                self.send_error(Notification::from(&DecodeError::Open(error)), out);
            }
        }
    }

    /// Check the peer's OPEN against our configuration and work out the session.
    fn negotiate(&self, open: &Open) -> Result<Negotiated, OpenError> {
        let config = &self.config;
        if open.asn != config.peer_asn {
            return Err(OpenError::BadPeerAs { asn: open.asn });
        }
        let same_id_ibgp = open.bgp_id == config.local_id && config.is_ibgp();
        if open.bgp_id.is_unspecified() || same_id_ibgp {
            return Err(OpenError::BadBgpIdentifier { id: open.bgp_id });
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime {
                hold_time: open.hold_time,
            });
        }
        let families = common_families(&config.families, &open.capabilities);
        if families.is_empty() {
            return Err(OpenError::UnsupportedCapability {
                capabilities: self.multiprotocol_tlvs(),
            });
        }
        let hold_time = config.hold_time.min(open.hold_time);
        let peer_gr = open.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr.clone()),
            _ => None,
        });
        let our_gr = config.graceful_restart.as_ref();
        let peer_graceful_restart = our_gr.and(peer_gr);
        let graceful_notification = our_gr.is_some_and(|g| g.notification)
            && peer_graceful_restart
                .as_ref()
                .is_some_and(|g| g.notification);
        let has = |cap: &Capability| open.capabilities.contains(cap);
        Ok(Negotiated {
            peer_asn: open.asn,
            peer_id: open.bgp_id,
            hold_time,
            keepalive_time: hold_time / 3,
            families,
            route_refresh: has(&Capability::RouteRefresh),
            wire: WireOptions {
                four_octet_as: open.four_octet_as().is_some(),
                extended_message: config.extended_message && has(&Capability::ExtendedMessage),
            },
            peer_graceful_restart,
            graceful_notification,
            peer_hostname: open.capabilities.iter().find_map(|c| match c {
                Capability::Fqdn { hostname, .. } => Some(hostname.clone()),
                _ => None,
            }),
        })
    }

    /// Our multiprotocol capabilities as TLVs, the data of a 2/7.
    fn multiprotocol_tlvs(&self) -> Vec<u8> {
        self.config
            .families
            .iter()
            .filter_map(|f| {
                crate::bgp::packet::capability::encode_capability(&Capability::Multiprotocol(*f))
                    .ok()
            })
            .flatten()
            .collect()
    }

    /// KEEPALIVE in OpenConfirm: the session is up.
    fn establish(&mut self, out: &mut Vec<Output>) {
        self.restart_hold_timer(out);
        self.connect_retry_counter = 0;
        self.state = State::Established;
        if let Some(negotiated) = &self.negotiated {
            out.push(Output::SessionEstablished(negotiated.clone()));
        }
    }

    /// Restart the hold timer if one is negotiated.
    fn restart_hold_timer(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated {
            if n.hold_time != 0 {
                out.push(Output::StartTimer(TimerKind::Hold, secs(n.hold_time)));
            }
        }
    }

    /// A message would not decode: send its NOTIFICATION and close.
    fn fail_decode(&mut self, error: &DecodeError, out: &mut Vec<Output>) {
        if matches!(self.state, State::Idle | State::Connect | State::Active) {
            return;
        }
        self.send_error(Notification::from(error), out);
    }

    /// ConnectRetry fired.
    fn expire_connect_retry(&mut self, out: &mut Vec<Output>) {
        match self.state {
            State::Idle if self.started => self.begin_connecting(out),
            State::Connect => {
                // The attempt timed out: drop it and try again after a longer wait.
                self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
                out.push(Output::Disconnect);
                out.push(Output::StartTimer(
                    TimerKind::ConnectRetry,
                    self.connect_retry_interval(),
                ));
                out.push(Output::Connect);
            }
            State::Active if !self.passive => {
                out.push(Output::StartTimer(
                    TimerKind::ConnectRetry,
                    self.connect_retry_interval(),
                ));
                out.push(Output::Connect);
                self.state = State::Connect;
            }
            _ => {}
        }
    }

    /// Hold timer fired: 4/0 and close.
    fn expire_hold(&mut self, out: &mut Vec<Output>) {
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            self.send_error(Notification::hold_timer_expired(), out);
        }
    }

    /// Keepalive timer fired: send one and re-arm.
    fn expire_keepalive(&mut self, out: &mut Vec<Output>) {
        if !matches!(self.state, State::OpenConfirm | State::Established) {
            return;
        }
        out.push(Output::SendMessage(Message::Keepalive));
        self.restart_keepalive_timer(out);
    }

    /// An UPDATE went out: the keepalive timer starts over.
    fn note_update_sent(&mut self, out: &mut Vec<Output>) {
        if self.state == State::Established {
            self.restart_keepalive_timer(out);
        }
    }

    /// Re-arm the keepalive timer if keepalives are negotiated.
    fn restart_keepalive_timer(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated {
            if n.keepalive_time != 0 {
                out.push(Output::StartTimer(
                    TimerKind::Keepalive,
                    secs(n.keepalive_time),
                ));
            }
        }
    }

    /// This connection lost a collision: Cease/Connection Collision Resolution (6/7).
    fn lose_collision(&mut self, out: &mut Vec<Output>) {
        if self.state == State::Idle {
            return;
        }
        out.push(Output::SendMessage(Message::Notification(
            Notification::cease(codes::CEASE_CONNECTION_COLLISION),
        )));
        // The surviving connection carries on; this FSM does not restart by itself.
        self.started = false;
        let reason =
            DownReason::NotificationSent(Notification::cease(codes::CEASE_CONNECTION_COLLISION));
        self.go_idle(reason, false, out);
    }

    /// Send a NOTIFICATION and fail the session.
    fn send_error(&mut self, notification: Notification, out: &mut Vec<Output>) {
        let graceful = self.graceful_with_notification(&notification);
        out.push(Output::SendMessage(Message::Notification(
            notification.clone(),
        )));
        self.fail(DownReason::NotificationSent(notification), graceful, out);
    }

    /// Go to Idle after an error, and schedule an automatic restart with backoff.
    fn fail(&mut self, reason: DownReason, graceful: bool, out: &mut Vec<Output>) {
        self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
        self.go_idle(reason, graceful, out);
        if self.started {
            out.push(Output::StartTimer(
                TimerKind::ConnectRetry,
                self.connect_retry_interval(),
            ));
        }
    }

    /// Close everything and go to Idle, reporting the session down if it was up.
    fn go_idle(&mut self, reason: DownReason, graceful: bool, out: &mut Vec<Output>) {
        let was_established = self.state == State::Established;
        out.push(Output::StopTimer(TimerKind::ConnectRetry));
        out.push(Output::StopTimer(TimerKind::Hold));
        out.push(Output::StopTimer(TimerKind::Keepalive));
        if self.state != State::Idle {
            out.push(Output::Disconnect);
        }
        if was_established {
            let restart_time = match (&self.negotiated, graceful) {
                (Some(n), true) => n
                    .peer_graceful_restart
                    .as_ref()
                    .map(|gr| secs(gr.restart_time)),
                _ => None,
            };
            out.push(Output::SessionDown {
                reason: reason.clone(),
                graceful: graceful && restart_time.is_some(),
                restart_time,
            });
        }
        self.last_error = Some(reason);
        self.state = State::Idle;
        self.origin = None;
        self.negotiated = None;
    }

    /// Our OPEN.
    pub fn build_open(&self) -> Open {
        let config = &self.config;
        let mut capabilities: Vec<Capability> = config
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(config.local_asn));
        if config.extended_message {
            capabilities.push(Capability::ExtendedMessage);
        }
        if let Some(gr) = &config.graceful_restart {
            capabilities.push(Capability::GracefulRestart(GracefulRestart {
                restarting: gr.restarting,
                notification: gr.notification,
                restart_time: gr.restart_time.min(0x0fff),
                families: config
                    .families
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        family: *f,
                        forwarding_state: gr.forwarding_preserved,
                    })
                    .collect(),
            }));
        }
        if let Some(hostname) = &config.hostname {
            capabilities.push(Capability::Fqdn {
                hostname: hostname.clone(),
                domain: String::new(),
            });
        }
        Open {
            asn: config.local_asn,
            hold_time: config.hold_time,
            bgp_id: config.local_id,
            capabilities,
        }
    }
}

/// Families both sides support. A peer that sent no multiprotocol capability supports
/// IPv4 unicast only (RFC 4760 §8).
fn common_families(ours: &[Family], theirs: &[Capability]) -> Vec<Family> {
    let mut peer: Vec<Family> = theirs
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
        .collect();
    if peer.is_empty() {
        peer.push(Family::IPV4_UNICAST);
    }
    ours.iter().filter(|f| peer.contains(f)).copied().collect()
}

/// Seconds as a Duration.
fn secs(seconds: u16) -> Duration {
    Duration::from_secs(u64::from(seconds))
}

/// Which of two connections to the same peer to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollisionResolution {
    KeepExisting,
    KeepNew,
}

/// RFC 4271 §6.8: when a second connection to a peer delivers an OPEN with `remote_id`
/// while the first is in `existing_state`, keep the connection opened by the speaker with
/// the higher BGP identifier; an Established session always wins, and an existing FSM
/// not yet past Active is no collision (the new connection is kept).
pub fn resolve_collision(
    local_id: Ipv4Addr,
    remote_id: Ipv4Addr,
    existing_state: State,
    existing_origin: ConnectionOrigin,
) -> CollisionResolution {
    match existing_state {
        State::Established => CollisionResolution::KeepExisting,
        State::Idle | State::Connect | State::Active => CollisionResolution::KeepNew,
        State::OpenSent | State::OpenConfirm => {
            let winner = if u32::from(local_id) > u32::from(remote_id) {
                ConnectionOrigin::Local
            } else {
                ConnectionOrigin::Remote
            };
            if existing_origin == winner {
                CollisionResolution::KeepExisting
            } else {
                CollisionResolution::KeepNew
            }
        }
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
