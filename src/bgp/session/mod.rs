//! One tokio task per peer: sockets, timers and collisions around the sans-IO FSM.
//!
//! Data flow (one peer):
//!
//! ```text
//!   speaker ── SessionCommand (Incoming stream, Advertise, Stop) ──┐
//!                                                                  v
//!   connect task ── IoEvent::Connected/ConnectFailed ──>  session task ──> Fsm::handle(Input)
//!   reader task ─── IoEvent::Frame / Closed ───────────>  (main slot, and a second slot   │
//!     (FrameReader + decode_message; a panic there is      while a collision is open)     │
//!      caught by catch_unwind in `packet`, and its          timers: ConnectRetry (jittered),│
//!      JoinError::is_panic becomes Closed)                  Hold, Keepalive per slot        v
//!   reader task <── WireOptions (oneshot, after the OPEN) ── fsm.negotiated()   Vec<Output>
//!   writer task <── WriteOp (bytes, close; WriteQueue capped in bytes) ─────────────┘
//!                                                                  │
//!   speaker <── SessionMessage { peer, SessionEvent } ─────────────┘
//!               (StateChanged, Established, Down, Routes, RouteRefresh, Error(SessionError))
//! ```
//!
//! Files, one concern each:
//! - `mod.rs`: the types the speaker sees, the task's loop, and carrying out FSM outputs.
//! - `io.rs`: connecting, the reader and writer tasks of each connection (`Link`).
//! - `timers.rs`: the three RFC 4271 timers of each FSM, as deadlines, with jitter.
//! - `collision.rs`: a second connection while the first is open (RFC 4271 §6.8).
//! - `graceful.rs`: graceful restart (RFC 4724): a restarted peer, and our R bit.
//! - `error.rs`: `SessionError`, what a session reports; the speaker logs it once.
//! - `queues.rs`: the bounded queues: reader → session → speaker (`RouteBacklog`), and the
//!   writer queue capped in bytes (over the cap: Cease/Out of Resources, logged once).
//! - `bfd_hold.rs`: BFD Down ends the session at once and holds it until BFD is Up.
//! - The TCP-MD5 socket option is `crate::net::set_tcp_md5`.
//!
//! Every connection gets its own reader and writer task: a decoder error or panic ends that
//! connection only (with the NOTIFICATION `packet` maps it to), a slow peer blocks only its
//! writer, and the session task always serves its timers.
//!
//! The wire format has one source of truth: `fsm::Fsm` negotiates it from the OPENs
//! (`Negotiated::wire`); the reader decodes the frames before the peer's OPEN with the
//! defaults, then waits for the session to hand it the negotiated options before it reads
//! the next frame, and the writer side encodes with the same value.
//!
//! Departures: the R bit (graceful restart, restarting) is sent on every OPEN of the first
//! FSM of the session task and cleared once that FSM's first session ends; the ConnectRetry
//! jitter also applies to keepalives (RFC 4271 §10 allows both).

mod bfd_hold;
mod collision;
pub mod counters;
mod error;
mod graceful;
mod io;
mod queues;
mod timers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

pub use self::bfd_hold::BfdSignal;
pub use self::error::SessionError;
use self::io::{IoEvent, Link};
use self::queues::Overflow;
pub use self::queues::{
    RouteBacklog, WriteStats, DEFAULT_WRITE_QUEUE_CAP, READ_EVENTS, ROUTE_BACKLOG,
};
use self::timers::{jitter, sleep_until_opt, Timers};
use crate::bgp::fsm::{DownReason, Fsm, Input, Negotiated, Output, PeerConfig, State, TimerKind};
use crate::bgp::packet::{encode_end_of_rib, encode_message, Message, Update, WireOptions};
use crate::bgp::rib::{Outbound, PeerId};

/// Everything a session task needs to know about its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Peer name, for logs and status.
    pub name: String,
    pub peer: PeerId,
    /// Where to connect (port 179 unless configured).
    pub remote: SocketAddr,
    /// Local address (and port, 0 for any) to bind before connecting.
    pub source: Option<SocketAddr>,
    /// TCP MD5 key.
    pub password: Option<String>,
    /// GTSM (RFC 5082): the peer's hop count; TTL 255 sent, below 256 − hops refused.
    pub ttl_security: Option<u8>,
    /// Keepalive interval when shorter than a third of the negotiated hold time.
    pub keepalive: Option<Duration>,
    pub fsm: PeerConfig,
    /// Bytes that may wait in a connection's writer queue; over it the session sends Cease.
    pub write_queue_cap: usize,
    /// Messages in and out by type (status, metrics); the speaker keeps one per peer.
    pub counters: Arc<counters::MessageCounters>,
}

/// What the speaker tells a session.
#[derive(Debug)]
pub enum SessionCommand {
    /// The listener accepted a connection from this peer's address.
    Incoming(TcpStream),
    /// Send these changes if the session `epoch` is still Established; then End-of-RIB for
    /// every negotiated family when asked.
    Advertise {
        epoch: u64,
        outbound: Outbound,
        end_of_rib: bool,
    },
    /// Cease (administrative shutdown, with an optional RFC 9003 message) and end the task.
    Stop { message: Option<String> },
    /// Send UPDATEs the speaker encoded once for this peer's update group, if the session
    /// `epoch` is still Established.
    AdvertiseEncoded {
        epoch: u64,
        messages: Vec<crate::bgp::update_groups::Encoded>,
        announced: usize,
        withdrawn: usize,
    },
    /// BFD's verdict on the path to the peer (`bfd_hold.rs`).
    Bfd(BfdSignal),
    /// End the Established session `epoch` with this NOTIFICATION (max-prefix, Cease/1).
    Cease {
        epoch: u64,
        notification: crate::bgp::packet::Notification,
    },
}

/// What a session tells the speaker.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    StateChanged(State),
    /// The session is up; `epoch` tags everything until it goes down.
    Established {
        epoch: u64,
        negotiated: Negotiated,
        local_address: IpAddr,
    },
    /// The Established session ended. With `graceful`, keep the peer's routes as stale
    /// for `restart_time`.
    Down {
        epoch: u64,
        graceful: bool,
        restart_time: Option<Duration>,
        reason: DownReason,
    },
    Routes {
        epoch: u64,
        update: Update,
    },
    /// The peer asked for our routes again (RFC 2918).
    RouteRefresh {
        epoch: u64,
    },
    /// Something went wrong; the speaker logs it, and status shows some (connect
    /// failure, decode error).
    Error(SessionError),
}

/// A `SessionEvent` and the peer it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionMessage {
    pub peer: PeerId,
    pub event: SessionEvent,
}

/// The speaker's end of a session task.
#[derive(Debug)]
pub struct SessionHandle {
    pub commands: mpsc::UnboundedSender<SessionCommand>,
    pub task: tokio::task::JoinHandle<()>,
    /// The peer's span (`bgp_peer`, with its name and address): the session task runs in
    /// it, and the speaker logs the session's events in it.
    pub span: tracing::Span,
    /// The peer's UPDATEs the speaker holds: call `done()` after processing each `Routes`.
    pub backlog: Arc<RouteBacklog>,
    /// The writer queues' peak and overflows.
    pub writes: Arc<WriteStats>,
}

/// Start a session task. It runs until `Stop`, or until the command channel closes.
pub fn spawn_session(
    config: SessionConfig,
    events: mpsc::UnboundedSender<SessionMessage>,
) -> SessionHandle {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("bgp_peer", peer = %config.name, address = %config.remote.ip());
    let backlog = RouteBacklog::new(ROUTE_BACKLOG);
    let writes = Arc::new(WriteStats::default());
    let session = Session::new(config, events, backlog.clone(), writes.clone());
    let task = tokio::spawn(session.run(command_rx).instrument(span.clone()));
    SessionHandle {
        commands,
        task,
        span,
        backlog,
        writes,
    }
}

/// An FSM with its timers and its connection.
#[derive(Debug)]
struct Slot {
    fsm: Fsm,
    timers: Timers,
    link: Option<Link>,
    /// Wire options for what we send, once negotiated.
    wire: WireOptions,
    /// This FSM was not started yet: the ConnectRetry timer starts it (used to drop the R
    /// bit after a restart).
    start_on_retry: bool,
}

impl Slot {
    fn new(config: PeerConfig) -> Self {
        Slot {
            fsm: Fsm::new(config),
            timers: Timers::default(),
            link: None,
            wire: WireOptions::default(),
            start_on_retry: false,
        }
    }
}

/// Which slot an output batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Main,
    Second,
}

/// The state of one peer's session task.
struct Session {
    config: SessionConfig,
    events: mpsc::UnboundedSender<SessionMessage>,
    io_tx: mpsc::Sender<IoEvent>,
    io_rx: mpsc::Receiver<IoEvent>,
    /// This peer's UPDATEs handed to the speaker and not yet processed.
    backlog: Arc<RouteBacklog>,
    write_stats: Arc<WriteStats>,
    /// A writer queue went over its cap: Cease once the current outputs are carried out.
    overflow: Option<(Which, Overflow)>,
    main: Slot,
    second: Option<Slot>,
    /// The outgoing connection attempt in flight.
    connecting: Option<(u64, tokio::task::AbortHandle)>,
    next_conn: u64,
    epoch: u64,
    established: bool,
    /// BFD went down: no connection is made or accepted until it is Up again.
    bfd_held: bool,
}

impl Session {
    fn new(
        config: SessionConfig,
        events: mpsc::UnboundedSender<SessionMessage>,
        backlog: Arc<RouteBacklog>,
        write_stats: Arc<WriteStats>,
    ) -> Self {
        let (io_tx, io_rx) = mpsc::channel(queues::READ_EVENTS);
        let main = Slot::new(config.fsm.clone());
        Session {
            config,
            events,
            io_tx,
            io_rx,
            backlog,
            write_stats,
            overflow: None,
            main,
            second: None,
            connecting: None,
            next_conn: 1,
            epoch: 0,
            established: false,
            bfd_held: false,
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<SessionCommand>) {
        info!(passive = self.config.fsm.passive, "session starting");
        let outputs = self.main.fsm.handle(Input::ManualStart);
        self.apply(Which::Main, outputs);
        loop {
            let deadline = self.earliest_deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(SessionCommand::Stop { message }) => {
                        self.stop(message);
                        break;
                    }
                    None => {
                        self.stop(None);
                        break;
                    }
                    Some(command) => self.handle_command(command),
                },
                Some(event) = self.io_rx.recv() => self.handle_io(event),
                () = sleep_until_opt(deadline) => self.fire_timers(),
            }
            self.handle_overflow();
        }
        info!("session stopped");
    }

    /// ManualStop on every FSM; the links flush their Cease and close.
    fn stop(&mut self, message: Option<String>) {
        if let Some(second) = self.second.as_mut() {
            let outputs = second.fsm.handle(Input::ManualStop {
                message: message.clone(),
            });
            self.apply(Which::Second, outputs);
        }
        if let Some(second) = self.second.take() {
            if let Some(link) = second.link {
                link.close();
            }
        }
        let outputs = self.main.fsm.handle(Input::ManualStop { message });
        self.apply(Which::Main, outputs);
        self.cancel_connect();
        if let Some(link) = self.main.link.take() {
            link.close();
        }
    }

    fn handle_command(&mut self, command: SessionCommand) {
        match command {
            SessionCommand::Incoming(stream) if self.bfd_held => drop(stream),
            SessionCommand::Incoming(stream) => {
                if self.admits_ttl(&stream) {
                    self.accept(stream);
                }
            }
            SessionCommand::Advertise {
                epoch,
                outbound,
                end_of_rib,
            } => self.advertise(epoch, &outbound, end_of_rib),
            SessionCommand::AdvertiseEncoded {
                epoch,
                messages,
                announced,
                withdrawn,
            } => {
                debug!(announced, withdrawn, group = true, "sending UPDATEs");
                self.send_shared(epoch, messages);
            }
            SessionCommand::Bfd(signal) => self.bfd_signal(signal),
            SessionCommand::Cease {
                epoch,
                notification,
            } => {
                if epoch == self.epoch && self.established {
                    self.feed(Which::Main, Input::Cease(notification));
                }
            }
            SessionCommand::Stop { .. } => {}
        }
    }

    /// Send routes on the Established main connection.
    fn advertise(&mut self, epoch: u64, outbound: &Outbound, end_of_rib: bool) {
        if epoch != self.epoch || !self.established {
            debug!(epoch, current = self.epoch, "dropping stale advertisement");
            return;
        }
        let (mut messages, errors) = crate::bgp::update_groups::encode(outbound, &self.main.wire);
        if end_of_rib {
            let families = self
                .main
                .fsm
                .negotiated()
                .map(|n| n.families.clone())
                .unwrap_or_default();
            messages.extend(families.into_iter().map(encode_end_of_rib));
        }
        for source in errors {
            self.report_error(|peer| SessionError::Encode {
                peer,
                what: "UPDATE",
                source,
            });
        }
        if messages.is_empty() {
            return;
        }
        debug!(
            announced = outbound.announced_len(),
            withdrawn = outbound.withdraw.len(),
            messages = messages.len(),
            "sending UPDATEs"
        );
        self.send_updates(epoch, messages.into_iter());
    }

    /// Queue UPDATEs encoded once for the peer's update group, without copying them, on the
    /// Established main connection (an overflow: Cease).
    fn send_shared(&mut self, epoch: u64, runs: Vec<crate::bgp::update_groups::Encoded>) {
        if epoch != self.epoch || !self.established {
            debug!(epoch, current = self.epoch, "dropping stale advertisement");
            return;
        }
        if let Some(link) = &self.main.link {
            let count: usize = runs.iter().map(|run| run.len()).sum();
            self.config.counters.sent(counters::UPDATE, count as u64);
            if let Err(overflow) = link.writer.push_shared(runs) {
                self.overflowed(Which::Main, overflow);
                return;
            }
        }
        let outputs = self.main.fsm.handle(Input::UpdateSent);
        self.apply(Which::Main, outputs);
    }

    /// Queue UPDATEs on the Established main connection (an overflow: Cease).
    fn send_updates(&mut self, epoch: u64, messages: impl ExactSizeIterator<Item = Vec<u8>>) {
        if epoch != self.epoch || !self.established {
            debug!(epoch, current = self.epoch, "dropping stale advertisement");
            return;
        }
        if let Some(link) = &self.main.link {
            let count = messages.len() as u64;
            self.config.counters.sent(counters::UPDATE, count);
            for message in messages {
                if let Err(overflow) = link.writer.push(message) {
                    self.overflowed(Which::Main, overflow);
                    return;
                }
            }
        }
        let outputs = self.main.fsm.handle(Input::UpdateSent);
        self.apply(Which::Main, outputs);
    }

    /// Start (or restart) the main FSM; with `suppress_connect` no connection is dialled
    /// because one is about to be attached.
    fn wake_main(&mut self, suppress_connect: bool) {
        let input = if self.main.start_on_retry {
            self.main.start_on_retry = false;
            Input::ManualStart
        } else {
            Input::ConnectRetryTimerExpired
        };
        let mut outputs = self.main.fsm.handle(input);
        if suppress_connect {
            outputs.retain(|o| *o != Output::Connect);
        }
        self.apply(Which::Main, outputs);
    }

    fn slot_mut(&mut self, which: Which) -> Option<&mut Slot> {
        match which {
            Which::Main => Some(&mut self.main),
            Which::Second => self.second.as_mut(),
        }
    }

    /// Feed an input to a slot's FSM and carry out the outputs.
    fn feed(&mut self, which: Which, input: Input) {
        let Some(slot) = self.slot_mut(which) else {
            return;
        };
        let outputs = slot.fsm.handle(input);
        self.apply(which, outputs);
    }

    /// Carry out an FSM's outputs, in order.
    fn apply(&mut self, which: Which, outputs: Vec<Output>) {
        let mut collision_check = false;
        for output in outputs {
            match output {
                Output::Connect => {
                    if which == Which::Main {
                        self.start_connect();
                    }
                }
                Output::Disconnect => {
                    if which == Which::Main {
                        self.cancel_connect();
                    }
                    if let Some(link) = self.slot_mut(which).and_then(|s| s.link.take()) {
                        link.close();
                    }
                }
                Output::SendMessage(message) => self.send(which, &message),
                Output::StartTimer(kind, duration) => {
                    let duration = match (kind, self.config.keepalive) {
                        (TimerKind::Keepalive, Some(wanted)) => duration.min(wanted),
                        _ => duration,
                    };
                    if let Some(slot) = self.slot_mut(which) {
                        *slot.timers.slot(kind) = Some(Instant::now() + jitter(kind, duration));
                    }
                }
                Output::StopTimer(kind) => {
                    if let Some(slot) = self.slot_mut(which) {
                        *slot.timers.slot(kind) = None;
                    }
                }
                Output::StateChanged { from, to } => {
                    debug!(?which, ?from, ?to, "state");
                    if which == Which::Main {
                        self.report(SessionEvent::StateChanged(to));
                    }
                    if to == State::OpenConfirm {
                        collision_check = true;
                    }
                    if which == Which::Second && to == State::Idle {
                        if let Some(second) = self.second.take() {
                            if let Some(link) = second.link {
                                link.close();
                            }
                        }
                    }
                }
                Output::SessionEstablished(negotiated) => self.establish(which, negotiated),
                Output::SessionDown {
                    reason,
                    graceful,
                    restart_time,
                } => self.session_down(&reason, graceful, restart_time),
                Output::RoutesReceived(update) => {
                    if which == Which::Main && self.established {
                        // The speaker calls `done()` once it processed them.
                        self.backlog.add();
                        self.report(SessionEvent::Routes {
                            epoch: self.epoch,
                            update,
                        });
                    }
                }
                Output::RouteRefreshRequested(_) => {
                    if which == Which::Main && self.established {
                        self.report(SessionEvent::RouteRefresh { epoch: self.epoch });
                    }
                }
            }
        }
        if collision_check {
            self.resolve_collisions();
        }
    }

    /// Encode and queue one message on a slot's connection.
    fn send(&mut self, which: Which, message: &Message) {
        let counters = self.config.counters.clone();
        let Some(slot) = self.slot_mut(which) else {
            return;
        };
        if let Message::Notification(notification) = message {
            warn!(notification = %notification.describe(), "sending NOTIFICATION");
        }
        let Some(link) = &slot.link else {
            return;
        };
        match encode_message(message, &slot.wire) {
            Ok(buffers) => {
                counters.sent(counters::index(message), buffers.len() as u64);
                if matches!(message, Message::Notification(_)) {
                    // The NOTIFICATION is the connection's last message: it goes past the cap.
                    for buffer in buffers {
                        link.writer.push_last(buffer);
                    }
                } else {
                    let pushed: Result<(), Overflow> =
                        buffers.into_iter().try_for_each(|b| link.writer.push(b));
                    if let Err(overflow) = pushed {
                        self.overflowed(which, overflow);
                    }
                }
            }
            Err(source) => {
                let what = message_kind(message);
                self.report_error(|peer| SessionError::Encode { peer, what, source });
            }
        }
    }

    fn establish(&mut self, which: Which, negotiated: Negotiated) {
        if which == Which::Second {
            // Cannot happen: collisions are resolved in OpenConfirm. Keep the main one.
            self.feed(Which::Second, Input::CollisionLost);
            return;
        }
        self.main.wire = negotiated.wire;
        self.epoch += 1;
        self.established = true;
        let local_address = self
            .main
            .link
            .as_ref()
            .map_or(self.config.remote.ip(), |l| l.local_address);
        info!(
            peer_id = %negotiated.peer_id,
            hold = negotiated.hold_time,
            graceful_restart = negotiated.peer_graceful_restart.is_some(),
            "session established"
        );
        self.report(SessionEvent::Established {
            epoch: self.epoch,
            negotiated,
            local_address,
        });
    }

    fn session_down(
        &mut self,
        reason: &DownReason,
        graceful: bool,
        restart_time: Option<Duration>,
    ) {
        self.established = false;
        self.report(SessionEvent::Down {
            epoch: self.epoch,
            graceful,
            restart_time,
            reason: reason.clone(),
        });
        self.drop_restarting_bit();
    }

    /// Note a writer queue over its cap (logged once: the session goes down for it).
    fn overflowed(&mut self, which: Which, overflow: Overflow) {
        if self.overflow.is_none() {
            warn!(
                queued = overflow.queued,
                cap = overflow.cap,
                "writer queue over its cap: the peer does not read; sending Cease (out of resources)"
            );
            self.overflow = Some((which, overflow));
        }
    }

    /// Cease the connection whose writer queue went over its cap.
    fn handle_overflow(&mut self) {
        if let Some((which, _)) = self.overflow.take() {
            self.feed(which, Input::OutOfResources);
        }
    }

    fn report(&self, event: SessionEvent) {
        let _ = self.events.send(SessionMessage {
            peer: self.config.peer,
            event,
        });
    }

    /// Report an error about this peer (the speaker logs it).
    fn report_error(&self, error: impl FnOnce(String) -> SessionError) {
        self.report(SessionEvent::Error(error(self.config.name.clone())));
    }
}

/// A message's kind, for errors about it.
fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Open(_) => "OPEN",
        Message::Update(_) => "UPDATE",
        Message::Notification(_) => "NOTIFICATION",
        Message::Keepalive => "KEEPALIVE",
        Message::RouteRefresh(_) => "ROUTE-REFRESH",
    }
}

/// A readable reason for status and logs.
pub fn describe_reason(reason: &DownReason) -> String {
    match reason {
        DownReason::ManualStop => "stopped".to_owned(),
        DownReason::NotificationSent(n) => format!("sent {}", n.describe()),
        DownReason::NotificationReceived(n) => format!("received {}", n.describe()),
        DownReason::ConnectionLost => "connection lost".to_owned(),
        DownReason::BfdDown => "BFD down".to_owned(),
    }
}
