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
//!   writer task <── WriteOp (bytes, close) ─────────────  Vec<Output>
//!                                                                  │
//!   speaker <── SessionMessage { peer, SessionEvent } ─────────────┘
//!               (StateChanged, Established, Down, Routes, RouteRefresh, Error)
//! ```
//!
//! Every connection gets its own reader and writer task: a decoder error or panic ends that
//! connection only (with the NOTIFICATION `packet` maps it to), a slow peer blocks only its
//! writer, and the session task always serves its timers.
//!
//! Collisions (RFC 4271 §6.8): a connection the listener accepts while the main FSM is in
//! Connect or Active is adopted; while the main FSM waits to retry (Idle) the retry is pulled
//! forward and the connection adopted; in OpenSent/OpenConfirm it gets a second FSM, and as
//! soon as either side has the peer's OPEN, `resolve_collision` picks the survivor and the
//! loser sends Cease/Connection Collision Resolution. In Established, a new connection from
//! a peer that negotiated graceful restart means the peer restarted (RFC 4724 §4.2): the old
//! session ends gracefully and the new connection is adopted; without graceful restart the
//! new connection gets a Cease 6/7 and is closed.
//!
//! TCP MD5 (RFC 2385): `set_tcp_md5` sets the key on the connecting socket; the speaker sets
//! it on the listening socket per peer address.
//!
//! Departures: the R bit (graceful restart, restarting) is sent on every OPEN of the first
//! FSM of the session task and cleared once that FSM's first session ends; the ConnectRetry
//! jitter also applies to keepalives (RFC 4271 §10 allows both).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::bgp::fsm::{
    resolve_collision, CollisionResolution, ConnectionOrigin, DownReason, Fsm, Input, Negotiated,
    Output, PeerConfig, State, TimerKind,
};
use crate::bgp::packet::{
    codes, decode_message, encode_end_of_rib, encode_message, encode_notification, encode_updates,
    Capability, DecodeError, Decoded, FrameReader, Message, Notification, PathAttributes, Update,
    WireOptions, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN,
};
use crate::bgp::rib::{Outbound, PeerId};

/// How long a closing connection may take to flush before it is cut.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Keepalive interval when shorter than a third of the negotiated hold time.
    pub keepalive: Option<Duration>,
    pub fsm: PeerConfig,
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
        reason: String,
    },
    Routes {
        epoch: u64,
        update: Update,
    },
    /// The peer asked for our routes again (RFC 2918).
    RouteRefresh {
        epoch: u64,
    },
    /// Something went wrong that status should show (connect failure, decode error).
    Error(String),
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
}

/// Start a session task. It runs until `Stop`, or until the command channel closes.
pub fn spawn_session(
    config: SessionConfig,
    events: mpsc::UnboundedSender<SessionMessage>,
) -> SessionHandle {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("bgp_peer", peer = %config.name, address = %config.remote.ip());
    let task = tokio::spawn(
        Session::new(config, events)
            .run(command_rx)
            .instrument(span),
    );
    SessionHandle { commands, task }
}

/// Something the I/O helper tasks report.
#[derive(Debug)]
enum IoKind {
    Connected(TcpStream),
    ConnectFailed(io::Error),
    Frame(Box<Result<Decoded, DecodeError>>),
    Closed(String),
}

#[derive(Debug)]
struct IoEvent {
    conn: u64,
    kind: IoKind,
}

/// What the writer task does.
#[derive(Debug)]
enum WriteOp {
    Bytes(Vec<u8>),
    Close,
}

/// An open TCP connection.
#[derive(Debug)]
struct Link {
    conn: u64,
    writer: mpsc::UnboundedSender<WriteOp>,
    writer_abort: AbortHandle,
    reader_abort: AbortHandle,
    local_address: IpAddr,
}

impl Link {
    /// Flush what is queued, close, and cut the connection if the flush hangs.
    fn close(self) {
        self.reader_abort.abort();
        let _ = self.writer.send(WriteOp::Close);
        let writer_abort = self.writer_abort;
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_FLUSH_TIMEOUT).await;
            writer_abort.abort();
        });
    }
}

/// The three timers of one FSM, as deadlines.
#[derive(Debug, Default)]
struct Timers {
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
}

impl Timers {
    fn slot(&mut self, kind: TimerKind) -> &mut Option<Instant> {
        match kind {
            TimerKind::ConnectRetry => &mut self.connect_retry,
            TimerKind::Hold => &mut self.hold,
            TimerKind::Keepalive => &mut self.keepalive,
        }
    }

    fn earliest(&self) -> Option<Instant> {
        [self.connect_retry, self.hold, self.keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// Take the timers that are due, in a fixed order.
    fn take_expired(&mut self, now: Instant) -> Vec<TimerKind> {
        let mut due = Vec::new();
        for kind in [
            TimerKind::Hold,
            TimerKind::Keepalive,
            TimerKind::ConnectRetry,
        ] {
            let slot = self.slot(kind);
            if slot.is_some_and(|at| at <= now) {
                *slot = None;
                due.push(kind);
            }
        }
        due
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
    io_tx: mpsc::UnboundedSender<IoEvent>,
    io_rx: mpsc::UnboundedReceiver<IoEvent>,
    main: Slot,
    second: Option<Slot>,
    /// The outgoing connection attempt in flight.
    connecting: Option<(u64, AbortHandle)>,
    next_conn: u64,
    epoch: u64,
    established: bool,
}

impl Session {
    fn new(config: SessionConfig, events: mpsc::UnboundedSender<SessionMessage>) -> Self {
        let (io_tx, io_rx) = mpsc::unbounded_channel();
        let main = Slot::new(config.fsm.clone());
        Session {
            config,
            events,
            io_tx,
            io_rx,
            main,
            second: None,
            connecting: None,
            next_conn: 1,
            epoch: 0,
            established: false,
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
        }
        info!("session stopped");
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        let second = self.second.as_ref().and_then(|s| s.timers.earliest());
        [self.main.timers.earliest(), second]
            .into_iter()
            .flatten()
            .min()
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
            SessionCommand::Incoming(stream) => self.accept(stream),
            SessionCommand::Advertise {
                epoch,
                outbound,
                end_of_rib,
            } => self.advertise(epoch, &outbound, end_of_rib),
            SessionCommand::Stop { .. } => {}
        }
    }

    /// Send routes on the Established main connection.
    fn advertise(&mut self, epoch: u64, outbound: &Outbound, end_of_rib: bool) {
        if epoch != self.epoch || !self.established {
            debug!(epoch, current = self.epoch, "dropping stale advertisement");
            return;
        }
        let wire = self.main.wire;
        let mut messages = Vec::new();
        let mut push = |result: Result<Vec<Vec<u8>>, _>| match result {
            Ok(encoded) => messages.extend(encoded),
            Err(error) => warn!(%error, "cannot encode UPDATE; skipped"),
        };
        if !outbound.withdraw.is_empty() {
            push(encode_updates(
                &PathAttributes::default(),
                &[],
                &outbound.withdraw,
                &wire,
            ));
        }
        for (attributes, prefixes) in &outbound.announce {
            push(encode_updates(attributes, prefixes, &[], &wire));
        }
        if end_of_rib {
            let families = self
                .main
                .fsm
                .negotiated()
                .map(|n| n.families.clone())
                .unwrap_or_default();
            messages.extend(families.into_iter().map(encode_end_of_rib));
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
        if let Some(link) = &self.main.link {
            for message in messages {
                let _ = link.writer.send(WriteOp::Bytes(message));
            }
        }
        let outputs = self.main.fsm.handle(Input::UpdateSent);
        self.apply(Which::Main, outputs);
    }

    /// A connection the listener accepted from the peer's address.
    fn accept(&mut self, stream: TcpStream) {
        let state = self.main.fsm.state();
        debug!(?state, "incoming connection");
        match state {
            State::Connect | State::Active => {
                self.cancel_connect();
                self.attach(Which::Main, stream, ConnectionOrigin::Remote);
            }
            State::Idle if self.main.timers.connect_retry.is_some() => {
                // Waiting to retry: start now, on this connection.
                self.main.timers.connect_retry = None;
                self.wake_main(true);
                self.accept_in_connect(stream);
            }
            State::Established if self.graceful_negotiated() => {
                info!("peer reconnected while Established: it restarted (RFC 4724)");
                let outputs = self.main.fsm.handle(Input::TcpClosed);
                self.apply(Which::Main, outputs);
                self.main.timers.connect_retry = None;
                self.wake_main(true);
                self.accept_in_connect(stream);
            }
            State::OpenSent | State::OpenConfirm if self.second.is_none() => {
                let mut second = Slot::new(self.second_config());
                // Start it like an active FSM but never let it dial: the connection is here.
                let _ = second.fsm.handle(Input::ManualStart);
                self.second = Some(second);
                self.attach(Which::Second, stream, ConnectionOrigin::Remote);
            }
            _ => reject_connection(stream),
        }
    }

    /// After waking the main FSM: adopt the stream if it is now waiting for one.
    fn accept_in_connect(&mut self, stream: TcpStream) {
        if matches!(self.main.fsm.state(), State::Connect | State::Active) {
            self.cancel_connect();
            self.attach(Which::Main, stream, ConnectionOrigin::Remote);
        } else {
            reject_connection(stream);
        }
    }

    fn graceful_negotiated(&self) -> bool {
        self.main
            .fsm
            .negotiated()
            .is_some_and(|n| n.peer_graceful_restart.is_some())
    }

    /// The configuration for a collision FSM: the current one, R bit included only while
    /// the main FSM still sends it.
    fn second_config(&self) -> PeerConfig {
        self.main.fsm.config().clone()
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

    /// Give a slot its connection: reader and writer tasks, then TcpConnected.
    fn attach(&mut self, which: Which, stream: TcpStream, origin: ConnectionOrigin) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let local_address = match stream.local_addr() {
            Ok(addr) => addr.ip(),
            Err(error) => {
                warn!(%error, "connection without a local address; dropped");
                let outputs = self
                    .slot_mut(which)
                    .map(|s| s.fsm.handle(Input::TcpConnectionFails));
                self.apply(which, outputs.unwrap_or_default());
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let allow_extended = self.config.fsm.extended_message;
        let reader = spawn_reader(conn, read_half, self.io_tx.clone(), allow_extended);
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(write_half, writer_rx).in_current_span());
        let link = Link {
            conn,
            writer: writer_tx,
            writer_abort: writer.abort_handle(),
            reader_abort: reader,
            local_address,
        };
        debug!(conn, ?origin, %local_address, "connection attached");
        let Some(slot) = self.slot_mut(which) else {
            link.close();
            return;
        };
        if let Some(old) = slot.link.replace(link) {
            old.close();
        }
        slot.wire = WireOptions::default();
        let outputs = slot.fsm.handle(Input::TcpConnected(origin));
        self.apply(which, outputs);
    }

    fn slot_mut(&mut self, which: Which) -> Option<&mut Slot> {
        match which {
            Which::Main => Some(&mut self.main),
            Which::Second => self.second.as_mut(),
        }
    }

    /// Which slot owns connection `conn`.
    fn slot_of(&self, conn: u64) -> Option<Which> {
        if self.main.link.as_ref().is_some_and(|l| l.conn == conn) {
            return Some(Which::Main);
        }
        let second = self.second.as_ref()?;
        second
            .link
            .as_ref()
            .is_some_and(|l| l.conn == conn)
            .then_some(Which::Second)
    }

    fn handle_io(&mut self, event: IoEvent) {
        match event.kind {
            IoKind::Connected(stream) => {
                if self.connecting.as_ref().map(|(id, _)| *id) != Some(event.conn) {
                    return;
                }
                self.connecting = None;
                if matches!(self.main.fsm.state(), State::Connect | State::Active) {
                    self.attach(Which::Main, stream, ConnectionOrigin::Local);
                }
            }
            IoKind::ConnectFailed(error) => {
                if self.connecting.as_ref().map(|(id, _)| *id) != Some(event.conn) {
                    return;
                }
                self.connecting = None;
                debug!(%error, "connect failed");
                self.report(SessionEvent::Error(format!("connect: {error}")));
                let outputs = self.main.fsm.handle(Input::TcpConnectionFails);
                self.apply(Which::Main, outputs);
            }
            IoKind::Frame(result) => {
                let Some(which) = self.slot_of(event.conn) else {
                    return;
                };
                let input = match *result {
                    Ok(decoded) => {
                        for finding in &decoded.findings {
                            warn!(
                                type_code = finding.type_code,
                                action = ?finding.action,
                                error = %finding.error,
                                "malformed attribute (RFC 7606)"
                            );
                        }
                        Input::MessageReceived(decoded.message)
                    }
                    Err(error) => {
                        // The reader task logged it with the message bytes.
                        debug!(%error, "cannot decode message from peer");
                        self.report(SessionEvent::Error(format!("decode: {error}")));
                        Input::DecodeFailed(error)
                    }
                };
                self.feed(which, input);
            }
            IoKind::Closed(why) => {
                let Some(which) = self.slot_of(event.conn) else {
                    return;
                };
                debug!(%why, "connection closed");
                if let Some(link) = self.slot_mut(which).and_then(|s| s.link.take()) {
                    link.close();
                }
                self.feed(which, Input::TcpClosed);
            }
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

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let due_main = self.main.timers.take_expired(now);
        for kind in due_main {
            match kind {
                TimerKind::ConnectRetry => self.wake_main(false),
                TimerKind::Hold => self.feed(Which::Main, Input::HoldTimerExpired),
                TimerKind::Keepalive => self.feed(Which::Main, Input::KeepaliveTimerExpired),
            }
        }
        let due_second = self
            .second
            .as_mut()
            .map(|s| s.timers.take_expired(now))
            .unwrap_or_default();
        for kind in due_second {
            let input = match kind {
                TimerKind::ConnectRetry => continue,
                TimerKind::Hold => Input::HoldTimerExpired,
                TimerKind::Keepalive => Input::KeepaliveTimerExpired,
            };
            self.feed(Which::Second, input);
        }
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
                for buffer in buffers {
                    let _ = link.writer.send(WriteOp::Bytes(buffer));
                }
            }
            Err(error) => warn!(%error, "cannot encode message"),
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
        let text = describe_reason(reason);
        warn!(reason = %text, graceful, "session down");
        self.established = false;
        self.report(SessionEvent::Down {
            epoch: self.epoch,
            graceful,
            restart_time,
            reason: text,
        });
        // After the first session, we are no longer "restarting" (R bit off).
        let restarting = self
            .main
            .fsm
            .config()
            .graceful_restart
            .as_ref()
            .is_some_and(|g| g.restarting);
        if restarting {
            let mut config = self.main.fsm.config().clone();
            if let Some(gr) = config.graceful_restart.as_mut() {
                gr.restarting = false;
            }
            self.config.fsm = config.clone();
            // The old FSM's outputs after SessionDown arm ConnectRetry; the new FSM starts
            // when it fires. The link is already closed by the Disconnect before this.
            let timers = std::mem::take(&mut self.main.timers);
            self.main = Slot::new(config);
            self.main.timers.connect_retry = timers
                .connect_retry
                .or(Some(Instant::now() + self.config.fsm.connect_retry_time));
            self.main.start_on_retry = true;
        }
    }

    /// Two connections with the peer's OPEN known on one of them: keep one.
    fn resolve_collisions(&mut self) {
        let Some(second) = &self.second else {
            return;
        };
        let remote_id = second.fsm.peer_id().or_else(|| self.main.fsm.peer_id());
        let Some(remote_id) = remote_id else {
            return;
        };
        let main_origin = self
            .main
            .fsm
            .connection_origin()
            .unwrap_or(ConnectionOrigin::Local);
        let resolution = resolve_collision(
            self.config.fsm.local_id,
            remote_id,
            self.main.fsm.state(),
            main_origin,
        );
        info!(?resolution, %remote_id, "connection collision");
        match resolution {
            CollisionResolution::KeepExisting => {
                self.feed(Which::Second, Input::CollisionLost);
                if let Some(second) = self.second.take() {
                    if let Some(link) = second.link {
                        link.close();
                    }
                }
            }
            CollisionResolution::KeepNew => {
                let outputs = self.main.fsm.handle(Input::CollisionLost);
                self.apply(Which::Main, outputs);
                self.cancel_connect();
                if let Some(second) = self.second.take() {
                    self.main = second;
                }
                self.report(SessionEvent::StateChanged(self.main.fsm.state()));
            }
        }
    }

    fn start_connect(&mut self) {
        self.cancel_connect();
        let conn = self.next_conn;
        self.next_conn += 1;
        let config = self.config.clone();
        let io_tx = self.io_tx.clone();
        let task = tokio::spawn(
            async move {
                let kind = match connect(&config).await {
                    Ok(stream) => IoKind::Connected(stream),
                    Err(error) => IoKind::ConnectFailed(error),
                };
                let _ = io_tx.send(IoEvent { conn, kind });
            }
            .in_current_span(),
        );
        self.connecting = Some((conn, task.abort_handle()));
    }

    fn cancel_connect(&mut self) {
        if let Some((_, abort)) = self.connecting.take() {
            abort.abort();
        }
    }

    fn report(&self, event: SessionEvent) {
        let _ = self.events.send(SessionMessage {
            peer: self.config.peer,
            event,
        });
    }
}

/// Sleep until the deadline, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// RFC 4271 §10: ConnectRetry and keepalive intervals are jittered to 75–100 %.
fn jitter(kind: TimerKind, duration: Duration) -> Duration {
    match kind {
        TimerKind::Hold => duration,
        TimerKind::ConnectRetry | TimerKind::Keepalive => {
            duration.mul_f64(rand::thread_rng().gen_range(0.75..=1.0))
        }
    }
}

/// Close a connection we cannot take: Cease/Connection Collision Resolution, then close.
fn reject_connection(stream: TcpStream) {
    debug!("rejecting connection");
    tokio::spawn(
        async move {
            let mut stream = stream;
            let notification = Notification::cease(codes::CEASE_CONNECTION_COLLISION);
            let _ = stream.write_all(&encode_notification(&notification)).await;
            let _ = stream.shutdown().await;
        }
        .in_current_span(),
    );
}

/// A readable reason for status and logs.
pub fn describe_reason(reason: &DownReason) -> String {
    match reason {
        DownReason::ManualStop => "stopped".to_owned(),
        DownReason::NotificationSent(n) => format!("sent {}", n.describe()),
        DownReason::NotificationReceived(n) => format!("received {}", n.describe()),
        DownReason::ConnectionLost => "connection lost".to_owned(),
    }
}

/// Open the TCP connection: bind the source, set the MD5 key, connect.
async fn connect(config: &SessionConfig) -> io::Result<TcpStream> {
    let socket = match config.remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(password) = &config.password {
        set_tcp_md5(
            socket.as_raw_fd(),
            config.remote.ip(),
            Some(password),
            config.remote.is_ipv6(),
        )?;
    }
    if let Some(source) = config.source {
        if source.port() != 0 {
            socket.set_reuseaddr(true)?;
        }
        socket.bind(source)?;
    }
    socket.connect(config.remote).await
}

/// The reader task and its panic guard; returns what aborts it.
fn spawn_reader(
    conn: u64,
    read_half: OwnedReadHalf,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    allow_extended: bool,
) -> AbortHandle {
    let reader =
        tokio::spawn(read_loop(conn, read_half, io_tx.clone(), allow_extended).in_current_span());
    let abort = reader.abort_handle();
    tokio::spawn(
        async move {
            if let Err(error) = reader.await {
                if error.is_panic() {
                    warn!(conn, "reader task panicked; closing the connection");
                    let _ = io_tx.send(IoEvent {
                        conn,
                        kind: IoKind::Closed("reader panicked".to_owned()),
                    });
                }
            }
        }
        .in_current_span(),
    );
    abort
}

/// Read, frame and decode until the connection ends or a message is bad.
async fn read_loop(
    conn: u64,
    mut read_half: OwnedReadHalf,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    allow_extended: bool,
) {
    let mut frames = FrameReader::new();
    let mut wire = WireOptions::default();
    let mut buffer = vec![0u8; 16 * 1024];
    let send = |kind| io_tx.send(IoEvent { conn, kind }).is_ok();
    loop {
        let read = match read_half.read(&mut buffer).await {
            Ok(0) => {
                send(IoKind::Closed("end of stream".to_owned()));
                return;
            }
            Ok(n) => n,
            Err(error) => {
                send(IoKind::Closed(error.to_string()));
                return;
            }
        };
        frames.extend(buffer.get(..read).unwrap_or_default());
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let head = frames.buffered_bytes();
                    warn!(conn, %error, bytes = %hex_bytes(head), "bad message header from peer");
                    send(IoKind::Frame(Box::new(Err(error))));
                    return;
                }
            };
            let result = decode_message(&frame, &wire);
            match &result {
                Err(error) => {
                    warn!(conn, %error, bytes = %hex_bytes(&frame), "undecodable message from peer");
                }
                Ok(decoded) if !decoded.findings.is_empty() => {
                    warn!(conn, bytes = %hex_bytes(&frame), "UPDATE with malformed attributes (RFC 7606)");
                }
                Ok(_) => {}
            }
            if let Ok(Decoded {
                message: Message::Open(open),
                ..
            }) = &result
            {
                // What the FSM will negotiate: we always send 4-octet AS, and extended
                // message when configured. Set it here so the next frame reads right.
                wire.four_octet_as = open.four_octet_as().is_some();
                wire.extended_message =
                    allow_extended && open.has_capability(&Capability::ExtendedMessage);
                if wire.extended_message {
                    frames.set_max_message_len(MAX_EXTENDED_MESSAGE_LEN);
                }
            }
            let failed = result.is_err();
            if !send(IoKind::Frame(Box::new(result))) || failed {
                return;
            }
        }
    }
}

/// Most message bytes one log line shows (a whole 4,096-byte message fits).
const LOGGED_BYTES: usize = MAX_MESSAGE_LEN;

/// The bytes as hex for a log line, cut after `LOGGED_BYTES` (the length is given then).
fn hex_bytes(bytes: &[u8]) -> String {
    let shown = bytes
        .get(..bytes.len().min(LOGGED_BYTES))
        .unwrap_or_default();
    let mut text: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    if shown.len() < bytes.len() {
        text.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    text
}

/// Write queued messages until told to close; then shut the connection down.
async fn write_loop(mut write_half: OwnedWriteHalf, mut queue: mpsc::UnboundedReceiver<WriteOp>) {
    while let Some(op) = queue.recv().await {
        match op {
            WriteOp::Bytes(bytes) => {
                if let Err(error) = write_half.write_all(&bytes).await {
                    debug!(%error, "write failed");
                    break;
                }
            }
            WriteOp::Close => break,
        }
    }
    let _ = write_half.shutdown().await;
}

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: SockaddrStorage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

/// `struct __kernel_sockaddr_storage`: 128 bytes, 8-byte aligned.
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// Set (or, with `None`, remove) the TCP MD5 key for `peer` on a socket (RFC 2385).
/// `socket_is_v6`: IPv4 peers of an IPv6 socket are given as IPv4-mapped addresses.
pub fn set_tcp_md5(
    fd: RawFd,
    peer: IpAddr,
    key: Option<&str>,
    socket_is_v6: bool,
) -> io::Result<()> {
    let key = key.map(str::as_bytes).unwrap_or_default();
    let mut sig = TcpMd5Sig {
        addr: SockaddrStorage([0; 128]),
        flags: 0,
        prefixlen: 0,
        keylen: u16::try_from(key.len()).unwrap_or(u16::MAX),
        ifindex: 0,
        key: [0; 80],
    };
    sig.key
        .get_mut(..key.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "MD5 key longer than 80 bytes"))?
        .copy_from_slice(key);
    let peer = match (peer, socket_is_v6) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (other, _) => other,
    };
    let bytes = &mut sig.addr.0;
    match peer {
        IpAddr::V4(v4) => {
            bytes[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            bytes[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            bytes[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            bytes[8..24].copy_from_slice(&v6.octets());
        }
    }
    // SAFETY: `sig` is a valid, fully initialised `struct tcp_md5sig` that outlives the
    // call, and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::from_ref(&sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
