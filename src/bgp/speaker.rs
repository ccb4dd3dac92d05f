//! The BGP speaker: owns the listener, one session task per peer, and the RIB.
//!
//! Channels in and out of the speaker task:
//!
//! ```text
//!                    SpeakerHandle (clonable)
//!   set_peers ───────┐  set_originated ──┐   status ──┐ (oneshot reply)
//!                    v                   v            v
//!              mpsc<Request> ─────────────────────────────> ┌──────────────────────────┐
//!   TcpListener (accept) ─── only configured peer addresses > │      speaker task         │
//!                                                            │  Rib (Adj-RIB-In/Out,     │
//!   session tasks ── mpsc<SessionMessage> ─────────────────> │       Loc-RIB)            │
//!     (one per peer, session/)                               │  peers: name -> entry     │
//!   stale timers ─── mpsc<StaleExpired> (graceful restart) > │                           │
//!                                                            └──┬──────────┬──────────┬─┘
//!   session tasks <── mpsc<SessionCommand> (Incoming stream,    │          │          │
//!                       Advertise, Stop) ───────────────────────┘          │          │
//!   route reconciler <── ChangeFeed (prefixes whose best route changed, coalesced) ─┘          │
//!   tests, tools     <── broadcast<RibEvent> (when someone listens) ────────────────────────┘
//!   route reconciler, status ── SharedRib (read lock: lookups, chunked walks of the Loc-RIB)
//! ```
//!
//! `Speaker` is the service: dropping it stops the speaker task, which drops every
//! session's command channel, so every session sends Cease and closes. `shutdown` does the
//! same and waits for the sessions.
//!
//! Peers are neutral `PeerSpec`s in BGP's own terms (address, AS, role, timers, MD5
//! password, export policy); where a peer comes from is an opaque `description` that status
//! shows. Errors: a session reports `SessionError`s, logged here once in the peer's span
//! (the session task's own span); status keeps the text of the last one. The speaker's own
//! are `SpeakerError`.
//!
//! Peers are keyed by name. `set_peers` diffs: a peer whose spec changed is restarted
//! (its routes withdrawn, a new session task started); unchanged peers are untouched. The
//! listener accepts connections only from configured peer addresses (others are closed at
//! once) and hands them to that peer's session, which resolves collisions. With a password
//! the MD5 key is set on the listening socket for that peer's address.
//!
//! Graceful restart (RFC 4724). Receiving speaker: when a session ends gracefully the
//! peer's routes stay, marked stale, for the peer's restart time (capped by
//! `PeerSpec::max_restart_time`); when the peer re-establishes, stale routes of families it
//! did not preserve forwarding for are dropped at once, the others when its End-of-RIB
//! arrives or `STALE_PATH_TIME` passes. Restarting speaker: `SpeakerConfig::restarting`
//! sets the R bit and the forwarding-preserved bit in our first OPEN to each peer.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::bfd::{BfdSpec, State as BfdState};
use crate::bgp::change_feed::{change_feed, ChangeFeed, ChangeSender};
use crate::bgp::fsm::{DownReason, GracefulRestartConfig, Negotiated, PeerConfig, State};
use crate::bgp::packet::{Family, Update, WireOptions};
pub use crate::bgp::rib::NextHopMode;
use crate::bgp::rib::{
    BestRoute, ExportPolicy, GroupChanges, Outbound, PeerId, PeerInfo, Reflection, Rib, RibEvent,
    RibOutput, SharedRib,
};
pub use crate::bgp::session::counters::{MessageCounters, MessageCounts};
use crate::bgp::session::{
    describe_reason, spawn_session, SessionCommand, SessionConfig, SessionError, SessionEvent,
    SessionHandle, SessionMessage,
};
use crate::bgp::update_groups::{self, UpdateCounts, UpdateStats};
use crate::net::{set_save_syn, set_send_ttl_255, set_tcp_md5};

mod bfd;
mod limits;
mod log_limit;

pub use limits::{max_prefixes_notification, MaxPrefixAction, MaxPrefixes};

/// The standard BGP port.
pub const BGP_PORT: u16 = 179;
/// How long stale routes may wait for End-of-RIB after the peer came back (FRR's default).
pub const STALE_PATH_TIME: Duration = Duration::from_secs(360);
/// Session messages handled in one go; their UPDATEs are one RIB operation.
const SESSION_BATCH: usize = 1024;
/// How many `RibEvent`s a slow subscriber may lag behind before it misses some.
const EVENT_BUFFER: usize = 4096;

/// The speaker's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Where to listen (port 179 by default); `None`: outgoing sessions only.
    pub listen_addr: Option<SocketAddr>,
    /// Restart time we advertise, seconds (≤ 4095).
    pub graceful_restart_time: u16,
    /// The agent restarted and the kernel kept its routes: set the R and F bits.
    pub restarting: bool,
    /// First ConnectRetry interval, unless the peer's timers say otherwise.
    pub connect_retry: Duration,
    /// Bytes that may wait in one peer's writer queue; over it that session gets Cease.
    #[serde(default = "default_write_queue_cap")]
    pub write_queue_cap: usize,
}

fn default_write_queue_cap() -> usize {
    crate::bgp::session::DEFAULT_WRITE_QUEUE_CAP
}

impl SpeakerConfig {
    /// Defaults: listen on 0.0.0.0:179, restart time 120 s, ConnectRetry 5 s.
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> Self {
        SpeakerConfig {
            router_id,
            local_as,
            listen_addr: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), BGP_PORT)),
            graceful_restart_time: 120,
            restarting: false,
            connect_retry: Duration::from_secs(5),
            write_queue_cap: default_write_queue_cap(),
        }
    }
}

/// The peer's BGP role. Internal and External must agree with the AS numbers (the
/// speaker warns when they do not; the AS numbers decide what the RIB does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerRole {
    /// iBGP: the peer is in our AS.
    Internal,
    /// eBGP: the peer is in another AS.
    External,
}

impl PeerRole {
    /// The role the AS numbers give.
    pub fn from_as(local_as: u32, remote_as: u32) -> Self {
        if local_as == remote_as {
            PeerRole::Internal
        } else {
            PeerRole::External
        }
    }
}

/// A peer's session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTimers {
    /// Hold time we propose, seconds (0 or ≥ 3).
    pub hold_time: u16,
    /// Keepalive interval, when shorter than hold / 3.
    pub keepalive: Option<Duration>,
    /// First ConnectRetry interval; `None`: the speaker's `connect_retry`.
    pub connect_retry: Option<Duration>,
}

impl Default for PeerTimers {
    /// Hold 90 s (RFC 4271's suggestion), keepalive hold / 3, the speaker's ConnectRetry.
    fn default() -> Self {
        PeerTimers {
            hold_time: 90,
            keepalive: None,
            connect_retry: None,
        }
    }
}

/// One peer, in BGP's own terms (the agent maps its resources to these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    /// Unique among the peers; the key `set_peers` diffs by.
    pub name: String,
    /// Where the peer comes from, for status (`routectl status` shows it); opaque here.
    pub description: String,
    pub address: IpAddr,
    /// Remote port (179 by default).
    pub port: u16,
    pub remote_as: u32,
    /// Our AS on this session when not the speaker's. Only the OPEN carries it: the RIB's
    /// iBGP/eBGP decisions use the speaker's AS.
    pub local_as: Option<u32>,
    pub role: PeerRole,
    pub timers: PeerTimers,
    /// TCP MD5 key (RFC 2385).
    pub password: Option<String>,
    /// Local address to connect from.
    pub source_address: Option<IpAddr>,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// Restart time advertised to this peer, and the cap on how long its routes are kept
    /// stale; `None`: the speaker's `graceful_restart_time`.
    pub max_restart_time: Option<Duration>,
    /// Which learned routes this peer is sent (our originated prefixes always are).
    pub export: ExportPolicy,
    /// Route reflection on this session (RFC 4456); `None`: plain BGP.
    #[serde(default)]
    pub reflection: Option<Reflection>,
    /// BFD for this session (`speaker/bfd.rs`); `None`: hold timer only.
    #[serde(default)]
    pub bfd: Option<BfdSpec>,
    /// How many prefixes the peer may send (`speaker/limits.rs`); `None`: no limit.
    #[serde(default)]
    pub max_prefixes: Option<MaxPrefixes>,
    /// GTSM (RFC 5082): the peer is at most this many hops away; `None`: off.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    /// How many times our AS may appear in a received AS_PATH (BIRD's `allow local as`).
    #[serde(default)]
    pub allow_local_as: u32,
    /// The NEXT_HOP of learned routes sent to this peer.
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
}

impl PeerSpec {
    /// A peer with defaults: port 179, default timers, active, originated prefixes only.
    /// The role follows the AS numbers.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        address: IpAddr,
        local_as: u32,
        remote_as: u32,
    ) -> Self {
        PeerSpec {
            name: name.into(),
            description: description.into(),
            address,
            port: BGP_PORT,
            remote_as,
            local_as: None,
            role: PeerRole::from_as(local_as, remote_as),
            timers: PeerTimers::default(),
            password: None,
            source_address: None,
            passive: false,
            max_restart_time: None,
            export: ExportPolicy::default(),
            reflection: None,
            bfd: None,
            max_prefixes: None,
            ttl_security: None,
            allow_local_as: 0,
            next_hop_mode: NextHopMode::Auto,
        }
    }
}

/// One line of `routectl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: IpAddr,
    /// The peer spec's `description` (where the peer comes from).
    pub description: String,
    pub state: State,
    /// When `state` was entered, unix seconds.
    pub since: u64,
    /// The same, as `YYYY-MM-DD HH:MM:SS` UTC.
    pub since_human: String,
    /// "Established", or the last error.
    pub info: String,
    pub prefixes_received: usize,
    pub prefixes_advertised: usize,
    /// The peer sent End-of-RIB on the current session: its initial routes are all in.
    #[serde(default)]
    pub end_of_rib_received: bool,
    /// The session's route-reflection role, from its spec.
    #[serde(default)]
    pub reflection: Option<Reflection>,
    /// The BFD session's state, when BFD is on for this peer.
    #[serde(default)]
    pub bfd: Option<BfdState>,
    /// Errors the peer's sessions reported, by kind (`SessionError::kind`).
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    // Observability (metrics, the BIRD socket): AS numbers, counters, the session's details.
    #[serde(default)]
    pub remote_as: u32,
    #[serde(default)]
    pub local_as: u32,
    /// Times the session reached Established since the peer was configured.
    #[serde(default)]
    pub established_transitions: u64,
    #[serde(default)]
    pub messages_received: MessageCounts,
    #[serde(default)]
    pub messages_sent: MessageCounts,
    /// What the current or last Established session negotiated.
    #[serde(default)]
    pub session: Option<SessionDetails>,
}

/// What an Established session negotiated, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDetails {
    pub router_id: Ipv4Addr,
    pub local_address: IpAddr,
    /// Negotiated hold time and keepalive interval, seconds.
    pub hold_time: u16,
    pub keepalive_time: u16,
    pub route_refresh: bool,
    pub graceful_restart: bool,
}

/// What the speaker reports.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// The speaker is gone.
    #[error("the BGP speaker has stopped")]
    Stopped,
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A peer's TCP MD5 key could not be set (or cleared) on the listening socket.
    #[error("cannot set the TCP MD5 key of {peer} on the listener: {source}")]
    ListenerMd5 {
        peer: String,
        #[source]
        source: io::Error,
    },
}

enum Request {
    SetPeers(Vec<PeerSpec>),
    SetOriginated(BTreeSet<IpNetwork>),
    Status(oneshot::Sender<Vec<PeerStatus>>),
    Subscribe(ChangeSender),
    Shutdown(oneshot::Sender<()>),
    Queues(oneshot::Sender<Vec<PeerQueues>>),
    BfdHandle(oneshot::Sender<Option<crate::bfd::BfdHandle>>),
}

/// The bounded queues of one peer's session (`session::queues`), for tests and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerQueues {
    pub name: String,
    /// Most of its UPDATEs the speaker held at once (≤ `session::ROUTE_BACKLOG` + one read).
    pub backlog_peak: usize,
    /// Times its reader paused for room: TCP flow control reached the peer.
    pub backlog_waits: u64,
    /// Most bytes queued to it at once (≤ the writer queue cap).
    pub write_peak: usize,
    /// Times its writer queue went over the cap (each one a Cease).
    pub write_overflows: u64,
}

/// A cheap clonable handle on the speaker.
#[derive(Debug, Clone)]
pub struct SpeakerHandle {
    requests: mpsc::UnboundedSender<Request>,
    rib: SharedRib,
    events: broadcast::Sender<RibEvent>,
    /// Update groups' counters: UPDATEs encoded once per group, sent once per member.
    updates: Arc<UpdateStats>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::SetPeers(_) => "SetPeers",
            Request::SetOriginated(_) => "SetOriginated",
            Request::Status(_) => "Status",
            Request::Subscribe(_) => "Subscribe",
            Request::Shutdown(_) => "Shutdown",
            Request::Queues(_) => "Queues",
            Request::BfdHandle(_) => "BfdHandle",
        })
    }
}

impl SpeakerHandle {
    /// Replace the peer set; changed peers restart, unchanged ones are untouched.
    pub fn set_peers(&self, peers: Vec<PeerSpec>) -> Result<(), SpeakerError> {
        self.requests
            .send(Request::SetPeers(peers))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Replace the prefixes we originate (the node's confirmed blocks).
    pub fn set_originated(&self, prefixes: BTreeSet<IpNetwork>) -> Result<(), SpeakerError> {
        self.requests
            .send(Request::SetOriginated(prefixes))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Every peer's session state, sorted by name.
    pub async fn status(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Status(reply))
            .map_err(|_| SpeakerError::Stopped)?;
        answer.await.map_err(|_| SpeakerError::Stopped)
    }

    /// The learned best routes now (prefixes we originate excluded).
    pub fn best_routes(&self) -> Vec<BestRoute> {
        self.rib.read().best_routes()
    }

    /// Read access to the RIB.
    pub fn rib(&self) -> &SharedRib {
        &self.rib
    }

    /// From now on, the prefixes whose learned best route changed (read their routes from
    /// `rib()`), coalesced: a prefix that changes again before it was taken is queued once,
    /// so a slow reader delays nothing, misses nothing, and its queue is at most the RIB.
    pub fn changes(&self) -> Result<ChangeFeed, SpeakerError> {
        let (tx, rx) = change_feed();
        self.requests
            .send(Request::Subscribe(tx))
            .map_err(|_| SpeakerError::Stopped)?;
        Ok(rx)
    }

    /// UPDATEs encoded (once per update group) and sent (once per member) so far.
    pub fn update_counts(&self) -> UpdateCounts {
        self.updates.counts()
    }

    /// Every peer's queue figures, sorted by name.
    pub async fn queues(&self) -> Result<Vec<PeerQueues>, SpeakerError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Queues(reply))
            .map_err(|_| SpeakerError::Stopped)?;
        answer.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Incremental changes of the best routes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RibEvent> {
        self.events.subscribe()
    }

    /// Every BFD session and the driver's counters (empty while no peer uses BFD).
    pub async fn bfd_status(&self) -> Result<crate::bfd::BfdStatus, SpeakerError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::BfdHandle(reply))
            .map_err(|_| SpeakerError::Stopped)?;
        match answer.await.map_err(|_| SpeakerError::Stopped)? {
            Some(handle) => handle.status().await.map_err(|_| SpeakerError::Stopped),
            None => Ok(crate::bfd::BfdStatus::default()),
        }
    }
}

/// The speaker service. Dropping it stops the speaker and every session.
#[derive(Debug)]
pub struct Speaker {
    handle: SpeakerHandle,
    task: Option<JoinHandle<()>>,
    listen_addr: Option<SocketAddr>,
}

impl Speaker {
    /// Bind the listener (when configured) and start the speaker task.
    pub async fn start(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let (listener, listen_addr) = match config.listen_addr {
            Some(addr) => {
                let bind = |source| SpeakerError::Bind { addr, source };
                let listener = bind_listener(addr).map_err(bind)?;
                let bound = listener.local_addr().map_err(bind)?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };
        let (requests, request_rx) = mpsc::unbounded_channel();
        let rib = SharedRib::new(Rib::new(
            config.local_as,
            config.router_id,
            ExportPolicy::default(),
        ));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let state = SpeakerTask::new(config, listener, rib.clone(), events.clone());
        let updates = state.updates.clone();
        let span = tracing::info_span!("bgp_speaker", router_id = %state.config.router_id);
        let task = tokio::spawn(state.run(request_rx).instrument(span));
        Ok(Speaker {
            handle: SpeakerHandle {
                requests,
                rib,
                events,
                updates,
            },
            task: Some(task),
            listen_addr,
        })
    }

    /// A handle for other tasks.
    pub fn handle(&self) -> SpeakerHandle {
        self.handle.clone()
    }

    /// Where the listener is bound (its real port when 0 was asked).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// Stop every session (Cease) and the speaker, and wait for them.
    pub async fn shutdown(mut self) {
        let (reply, done) = oneshot::channel();
        if self.handle.requests.send(Request::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Bind the listening socket (SO_REUSEADDR, like every BGP daemon).
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    // GTSM (RFC 5082) peers check our SYN-ACK's TTL; each session checks the TTL of its
    // peer's saved SYN (`session::io::check_ttl_security`).
    set_send_ttl_255(socket.as_raw_fd(), addr.is_ipv6())?;
    if let Err(error) = set_save_syn(socket.as_raw_fd()) {
        // Linux < 4.2: plain peers still work; GTSM peers' connections are refused.
        warn!(%error, "TCP_SAVE_SYN not available: incoming GTSM connections will be refused");
    }
    socket.bind(addr)?;
    // A reflector's clients all reconnect at once after it restarts: with a backlog of 128
    // the kernel drops their SYNs and each waits out TCP's 1, 3, 7 s retransmits. The kernel
    // caps this at net.core.somaxconn (4,096 by default).
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the BGP listener queues (see `bind_listener`).
const LISTEN_BACKLOG: u32 = 4096;

/// A configured peer.
struct PeerEntry {
    id: PeerId,
    spec: PeerSpec,
    session: SessionHandle,
    state: State,
    since: SystemTime,
    info: String,
    /// The epoch of the Established session, if any.
    epoch: Option<u64>,
    /// The peer's graceful-restart capability on the current or last session.
    peer_restart_time: Option<Duration>,
    /// Bumped whenever a stale timer is armed or cancelled.
    stale_generation: u64,
    /// End-of-RIB arrived on the current session.
    end_of_rib: bool,
    /// The wire options of the Established session (its update group's key, with its changes).
    wire: Option<WireOptions>,
    /// The BFD session's last state, when BFD is on.
    bfd_state: Option<BfdState>,
    /// The session epoch whose prefix limit was already reported.
    max_prefix_reported: Option<u64>,
    /// Error counts per kind, and the log's rate limit.
    error_log: log_limit::ErrorLog,
    /// Messages in and out (shared with the session task).
    counters: std::sync::Arc<MessageCounters>,
    /// How many times the session reached Established.
    established_transitions: u64,
    /// What the current (or last) Established session negotiated.
    negotiated: Option<SessionDetails>,
}

/// A graceful-restart timer fired.
#[derive(Debug)]
struct StaleExpired {
    peer: PeerId,
    generation: u64,
}

/// Everything the speaker task owns.
struct SpeakerTask {
    config: SpeakerConfig,
    listener: Option<TcpListener>,
    rib: SharedRib,
    peers: BTreeMap<PeerId, PeerEntry>,
    by_name: BTreeMap<String, PeerId>,
    next_peer: u32,
    session_tx: mpsc::UnboundedSender<SessionMessage>,
    session_rx: mpsc::UnboundedReceiver<SessionMessage>,
    stale_tx: mpsc::UnboundedSender<StaleExpired>,
    stale_rx: mpsc::UnboundedReceiver<StaleExpired>,
    /// Subscribers to the changed prefixes.
    feeds: Vec<ChangeSender>,
    events: broadcast::Sender<RibEvent>,
    updates: Arc<UpdateStats>,
    /// Encoded runs of the full tables sent on Established.
    full_tables: update_groups::RunCache,
    /// The BFD driver (started with the first peer that wants BFD) and its events.
    bfd: bfd::BfdLink,
}

impl SpeakerTask {
    fn new(
        config: SpeakerConfig,
        listener: Option<TcpListener>,
        rib: SharedRib,
        events: broadcast::Sender<RibEvent>,
    ) -> Self {
        let (session_tx, session_rx) = mpsc::unbounded_channel();
        let (stale_tx, stale_rx) = mpsc::unbounded_channel();
        SpeakerTask {
            rib,
            config,
            listener,
            peers: BTreeMap::new(),
            by_name: BTreeMap::new(),
            next_peer: 1,
            session_tx,
            session_rx,
            stale_tx,
            stale_rx,
            feeds: Vec::new(),
            events,
            updates: Arc::new(UpdateStats::default()),
            full_tables: update_groups::RunCache::default(),
            bfd: bfd::BfdLink::new(),
        }
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        info!(local_as = self.config.local_as, listen = ?self.listener.as_ref().and_then(|l| l.local_addr().ok()), "speaker started");
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Shutdown(done)) => {
                        self.stop_all().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(request) => self.handle_request(request),
                    None => {
                        self.stop_all().await;
                        return;
                    }
                },
                accepted = accept(self.listener.as_ref()) => match accepted {
                    Ok((stream, remote)) => self.route_incoming(stream, remote),
                    Err(error) => {
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(message) = self.session_rx.recv() => self.handle_sessions(message),
                Some(expired) = self.stale_rx.recv() => self.expire_stale(expired),
                Some(event) = self.bfd.events.recv() => self.bfd_event(event),
            }
        }
    }

    fn handle_request(&mut self, request: Request) {
        match request {
            Request::SetPeers(specs) => self.set_peers(specs),
            Request::SetOriginated(prefixes) => {
                info!(count = prefixes.len(), "originated prefixes");
                let output = self.rib.write().set_originated(prefixes);
                self.apply(output);
            }
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Subscribe(feed) => self.feeds.push(feed),
            Request::Queues(reply) => {
                let queues = self.peers.values().map(|entry| PeerQueues {
                    name: entry.spec.name.clone(),
                    backlog_peak: entry.session.backlog.peak(),
                    backlog_waits: entry.session.backlog.waits(),
                    write_peak: entry.session.writes.peak(),
                    write_overflows: entry.session.writes.overflows(),
                });
                let mut queues: Vec<PeerQueues> = queues.collect();
                queues.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(queues);
            }
            Request::BfdHandle(reply) => {
                let _ = reply.send(self.bfd.handle());
            }
            Request::Shutdown(_) => {}
        }
    }

    /// Stop every session and wait for their Cease to go out.
    async fn stop_all(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        let mut tasks = Vec::new();
        for id in ids {
            if let Some(task) = self.remove_peer(id) {
                tasks.push(task);
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    fn set_peers(&mut self, specs: Vec<PeerSpec>) {
        let wanted: BTreeMap<String, PeerSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        self.change_reflection_in_place(&wanted);
        let stale: Vec<PeerId> = self
            .peers
            .values()
            .filter(|e| wanted.get(&e.spec.name) != Some(&e.spec))
            .map(|e| e.id)
            .collect();
        for id in stale {
            let _ = self.remove_peer(id);
        }
        for (name, spec) in wanted {
            if !self.by_name.contains_key(&name) {
                self.add_peer(spec);
            }
        }
    }

    /// Peers whose spec changed only in its route-reflection role keep their session: the
    /// RIB takes the new role and every peer's Adj-RIB-Out is recomputed (RFC 4456 roles are
    /// local; nothing in the OPEN depends on them).
    fn change_reflection_in_place(&mut self, wanted: &BTreeMap<String, PeerSpec>) {
        let mut changed = false;
        for entry in self.peers.values_mut() {
            let Some(spec) = wanted.get(&entry.spec.name) else {
                continue;
            };
            if spec.reflection == entry.spec.reflection {
                continue;
            }
            let same_otherwise = PeerSpec {
                reflection: spec.reflection,
                ..entry.spec.clone()
            } == *spec;
            if same_otherwise {
                info!(peer = %spec.name, reflection = ?spec.reflection, "route-reflection role changed; session kept");
                entry.spec.reflection = spec.reflection;
                self.rib.write().set_reflection(entry.id, spec.reflection);
                changed = true;
            }
        }
        if changed {
            let output = self.rib.write().refresh_exports();
            self.apply(output);
        }
    }

    fn add_peer(&mut self, spec: PeerSpec) {
        // Ids are never reused while the speaker runs (4 billion peer changes would wrap).
        let id = PeerId(self.next_peer);
        self.next_peer = self.next_peer.wrapping_add(1).max(1);
        info!(peer = %spec.name, address = %spec.address, passive = spec.passive, "adding peer");
        if spec.role != PeerRole::from_as(self.local_as_for(&spec), spec.remote_as) {
            warn!(peer = %spec.name, role = ?spec.role, remote_as = spec.remote_as, "peer role disagrees with the AS numbers; the AS numbers decide");
        }
        if let (Some(listener), Some(password)) = (&self.listener, &spec.password) {
            if let Err(error) = set_listener_md5(listener, &spec, Some(password)) {
                warn!(peer = %spec.name, %error, "listener MD5 key not set");
            }
        }
        let counters = std::sync::Arc::new(MessageCounters::default());
        let mut session_config = self.session_config(id, &spec);
        session_config.counters = counters.clone();
        let session = spawn_session(session_config, self.session_tx.clone());
        let bfd_state = self.bfd_add(&spec);
        let mut rib = self.rib.write();
        rib.add_peer(id);
        rib.set_export(id, spec.export);
        rib.set_reflection(id, spec.reflection);
        rib.set_allow_local_as(id, spec.allow_local_as);
        rib.set_next_hop_mode(id, spec.next_hop_mode);
        drop(rib);
        self.by_name.insert(spec.name.clone(), id);
        self.peers.insert(
            id,
            PeerEntry {
                id,
                spec,
                session,
                state: State::Idle,
                since: SystemTime::now(),
                info: String::new(),
                epoch: None,
                peer_restart_time: None,
                stale_generation: 0,
                end_of_rib: false,
                wire: None,
                bfd_state,
                max_prefix_reported: None,
                error_log: log_limit::ErrorLog::default(),
                counters,
                established_transitions: 0,
                negotiated: None,
            },
        );
    }

    /// Stop a peer's session and forget its routes; returns the session task to await.
    fn remove_peer(&mut self, id: PeerId) -> Option<JoinHandle<()>> {
        let entry = self.peers.remove(&id)?;
        info!(peer = %entry.spec.name, "removing peer");
        self.by_name.remove(&entry.spec.name);
        let _ = entry.session.commands.send(SessionCommand::Stop {
            message: Some("peer deconfigured".to_owned()),
        });
        let still_keyed = self
            .peers
            .values()
            .any(|e| e.spec.address == entry.spec.address && e.spec.password.is_some());
        if let (Some(listener), Some(_), false) =
            (&self.listener, &entry.spec.password, still_keyed)
        {
            if let Err(error) = set_listener_md5(listener, &entry.spec, None) {
                warn!(peer = %entry.spec.name, %error, "listener MD5 key not cleared");
            }
        }
        self.bfd_remove(&entry.spec);
        let output = self.rib.write().remove_peer(id);
        self.apply(output);
        Some(entry.session.task)
    }

    /// Our AS on a peer's session.
    fn local_as_for(&self, spec: &PeerSpec) -> u32 {
        spec.local_as.unwrap_or(self.config.local_as)
    }

    fn session_config(&self, id: PeerId, spec: &PeerSpec) -> SessionConfig {
        let local_as = self.local_as_for(spec);
        let mut fsm = PeerConfig::new(local_as, self.config.router_id, spec.remote_as);
        fsm.hold_time = spec.timers.hold_time;
        fsm.passive = spec.passive;
        fsm.connect_retry_time = spec
            .timers
            .connect_retry
            .unwrap_or(self.config.connect_retry);
        fsm.families = match spec.address {
            IpAddr::V4(_) => vec![Family::IPV4_UNICAST],
            IpAddr::V6(_) => vec![Family::IPV6_UNICAST],
        };
        let restart_time = spec
            .max_restart_time
            .map_or(self.config.graceful_restart_time, |d| {
                u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
            });
        fsm.graceful_restart = Some(GracefulRestartConfig {
            restart_time: restart_time.min(4095),
            restarting: self.config.restarting,
            forwarding_preserved: self.config.restarting,
            notification: false,
        });
        SessionConfig {
            name: spec.name.clone(),
            peer: id,
            remote: SocketAddr::new(spec.address, spec.port),
            source: spec.source_address.map(|ip| SocketAddr::new(ip, 0)),
            password: spec.password.clone(),
            ttl_security: spec.ttl_security,
            keepalive: spec.timers.keepalive,
            fsm,
            write_queue_cap: self.config.write_queue_cap,
            counters: Default::default(),
        }
    }

    /// Hand an accepted connection to its peer's session, or close it.
    fn route_incoming(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let address = remote.ip().to_canonical();
        let entry = self.peers.values().find(|e| e.spec.address == address);
        match entry {
            Some(entry) => {
                debug!(peer = %entry.spec.name, %remote, "accepted connection");
                let _ = entry
                    .session
                    .commands
                    .send(SessionCommand::Incoming(stream));
            }
            None => {
                info!(%remote, "connection from an unconfigured address; closed");
                drop(stream);
            }
        }
    }

    /// Handle a session message and what else is queued behind it (up to `SESSION_BATCH`):
    /// consecutive UPDATEs go through the RIB as one operation, so a change that reaches many
    /// peers is exported and encoded once per batch, not once per UPDATE, and each peer gets
    /// one command for the batch. Other events end a batch (order is kept).
    fn handle_sessions(&mut self, first: SessionMessage) {
        let mut batch: Vec<(PeerId, u64, Update)> = Vec::new();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(message) = next.take() {
            match message.event {
                SessionEvent::Routes { epoch, update } => {
                    self.queue_routes(message.peer, epoch, update, &mut batch);
                }
                event => {
                    self.flush_routes(&mut batch);
                    self.handle_session(SessionMessage {
                        peer: message.peer,
                        event,
                    });
                }
            }
            handled += 1;
            if handled < SESSION_BATCH {
                next = self.session_rx.try_recv().ok();
            }
        }
        self.flush_routes(&mut batch);
    }

    /// An UPDATE of the current session joins the batch.
    fn queue_routes(
        &mut self,
        id: PeerId,
        epoch: u64,
        update: Update,
        batch: &mut Vec<(PeerId, u64, Update)>,
    ) {
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        // Room for the next UPDATE of this peer: its reader waits while we hold many.
        entry.session.backlog.done();
        if entry.epoch != Some(epoch) {
            return;
        }
        entry.end_of_rib |= update.end_of_rib.is_some();
        batch.push((id, epoch, update));
    }

    /// Apply a batch of UPDATEs, then each peer's prefix limit and stale timer.
    fn flush_routes(&mut self, batch: &mut Vec<(PeerId, u64, Update)>) {
        if batch.is_empty() {
            return;
        }
        let output = self
            .rib
            .write()
            .receive_updates(batch.iter().map(|(id, _, update)| (*id, update)));
        self.apply(output);
        let mut seen = BTreeSet::new();
        for (id, epoch, update) in batch.drain(..) {
            if seen.insert(id) {
                self.check_max_prefixes(id, epoch);
            }
            if update.end_of_rib.is_some() && self.rib.read().stale_count(id) == 0 {
                self.cancel_stale_timer(id);
            }
        }
    }

    fn handle_session(&mut self, message: SessionMessage) {
        let id = message.peer;
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        // Everything logged about a session's events is logged here, in the peer's span.
        let span = entry.session.span.clone();
        let _entered = span.enter();
        match message.event {
            SessionEvent::StateChanged(state) => {
                if entry.state != state {
                    entry.state = state;
                    entry.since = SystemTime::now();
                }
            }
            SessionEvent::Error(error) => record_error(entry, &error),
            SessionEvent::Established {
                epoch,
                negotiated,
                local_address,
            } => self.peer_established(id, epoch, &negotiated, local_address),
            SessionEvent::Down {
                epoch,
                graceful,
                restart_time,
                reason,
            } => self.peer_down(id, epoch, graceful, restart_time, &reason),
            SessionEvent::Routes { epoch, update } => {
                let mut batch = Vec::new();
                self.queue_routes(id, epoch, update, &mut batch);
                self.flush_routes(&mut batch);
            }
            SessionEvent::RouteRefresh { epoch } => self.refresh_peer(id, epoch),
        }
    }

    /// A session came up: send the peer our routes, and settle its stale routes.
    fn peer_established(
        &mut self,
        id: PeerId,
        epoch: u64,
        negotiated: &Negotiated,
        local_address: IpAddr,
    ) {
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        entry.epoch = Some(epoch);
        entry.end_of_rib = false;
        entry.wire = Some(negotiated.wire);
        entry.info = "Established".to_owned();
        entry.established_transitions += 1;
        entry.negotiated = Some(SessionDetails {
            router_id: negotiated.peer_id,
            local_address,
            hold_time: negotiated.hold_time,
            keepalive_time: negotiated.keepalive_time,
            route_refresh: negotiated.route_refresh,
            graceful_restart: negotiated.peer_graceful_restart.is_some(),
        });
        let peer_gr = negotiated.peer_graceful_restart.clone();
        entry.peer_restart_time = peer_gr
            .as_ref()
            .map(|g| Duration::from_secs(u64::from(g.restart_time)));
        let info = PeerInfo {
            address: entry.spec.address,
            peer_asn: negotiated.peer_asn,
            router_id: negotiated.peer_id,
            local_address,
            ipv4: negotiated.families.contains(&Family::IPV4_UNICAST),
            ipv6: negotiated.families.contains(&Family::IPV6_UNICAST),
        };
        let outbound = self.rib.write().peer_up(id, info);
        // The table's runs, shared with the peers that joined before (encoded once); then
        // End-of-RIB, which the session encodes for its families.
        let (messages, errors) =
            self.full_tables
                .encode(&outbound, &negotiated.wire, &self.updates);
        for error in errors {
            warn!(%error, "cannot encode an UPDATE of the full table; not sent");
        }
        if !messages.is_empty() {
            let _ = entry
                .session
                .commands
                .send(SessionCommand::AdvertiseEncoded {
                    epoch,
                    messages,
                    announced: outbound.announced_len(),
                    withdrawn: 0,
                });
        }
        let _ = entry.session.commands.send(SessionCommand::Advertise {
            epoch,
            outbound: Outbound::default(),
            end_of_rib: true,
        });
        // RFC 4724 §4.2: stale routes survive only if the peer kept forwarding state.
        let preserved = peer_gr.is_some_and(|g| g.families.iter().any(|f| f.forwarding_state));
        if self.rib.write().stale_count(id) > 0 {
            if preserved {
                self.arm_stale_timer(id, STALE_PATH_TIME);
            } else {
                self.cancel_stale_timer(id);
                let output = self.rib.write().purge_stale(id);
                self.apply(output);
            }
        }
    }

    /// The Established session ended: withdraw the peer's routes, or keep them stale.
    fn peer_down(
        &mut self,
        id: PeerId,
        epoch: u64,
        graceful: bool,
        restart_time: Option<Duration>,
        reason: &DownReason,
    ) {
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        if entry.epoch != Some(epoch) {
            return;
        }
        entry.epoch = None;
        entry.end_of_rib = false;
        entry.info = describe_reason(reason);
        warn!(reason = %entry.info, graceful, "session down");
        let cap = entry.spec.max_restart_time;
        let output = self.rib.write().peer_down(id, graceful);
        self.apply(output);
        if graceful {
            let keep = restart_time.unwrap_or_default();
            let keep = cap.map_or(keep, |c| keep.min(c));
            info!(
                stale = self.rib.write().stale_count(id),
                ?keep,
                "peer restarting; keeping its routes as stale"
            );
            self.arm_stale_timer(id, keep);
        }
    }

    /// The peer asked for our routes again (RFC 2918): send its whole Adj-RIB-Out.
    fn refresh_peer(&mut self, id: PeerId, epoch: u64) {
        if self.peers.get(&id).and_then(|e| e.epoch) != Some(epoch) {
            return;
        }
        let info = self.rib.write().peer_info(id).cloned();
        if let Some(info) = info {
            let outbound = self.rib.write().peer_up(id, info);
            if let Some(entry) = self.peers.get(&id) {
                let _ = entry.session.commands.send(SessionCommand::Advertise {
                    epoch,
                    outbound,
                    end_of_rib: false,
                });
            }
        }
    }

    fn arm_stale_timer(&mut self, id: PeerId, after: Duration) {
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        entry.stale_generation += 1;
        let expired = StaleExpired {
            peer: id,
            generation: entry.stale_generation,
        };
        let stale_tx = self.stale_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = stale_tx.send(expired);
        });
    }

    fn cancel_stale_timer(&mut self, id: PeerId) {
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.stale_generation += 1;
        }
    }

    fn expire_stale(&mut self, expired: StaleExpired) {
        let current = self
            .peers
            .get(&expired.peer)
            .is_some_and(|e| e.stale_generation == expired.generation);
        if !current {
            return;
        }
        let stale = self.rib.write().stale_count(expired.peer);
        if stale > 0 {
            info!(peer = %expired.peer, stale, "graceful-restart timer expired; dropping stale routes");
        }
        let output = self.rib.write().purge_stale(expired.peer);
        self.apply(output);
    }

    /// Send what the RIB wants sent (encoded once per update group), and publish best-route
    /// changes.
    fn apply(&mut self, output: RibOutput) {
        for changes in &output.groups {
            self.send_group(changes);
        }
        for (id, outbound) in output.single {
            if let Some((entry, epoch)) = self.peers.get(&id).and_then(|e| Some((e, e.epoch?))) {
                let _ = entry.session.commands.send(SessionCommand::Advertise {
                    epoch,
                    outbound,
                    end_of_rib: false,
                });
            }
        }
        if output.events.is_empty() {
            return;
        }
        debug!(changes = output.events.len(), "best routes changed");
        if self.events.receiver_count() > 0 {
            for event in &output.events {
                let _ = self.events.send(event.clone());
            }
        }
        let events = &output.events;
        self.feeds
            .retain(|feed| feed.send(events.iter().map(RibEvent::prefix)));
    }

    /// Encode one group's changes once per set of wire options among its Established members
    /// and hand the shared messages to every member.
    fn send_group(&self, changes: &GroupChanges) {
        let mut by_wire: Vec<(WireOptions, Vec<PeerId>)> = Vec::new();
        for id in &changes.members {
            let Some(wire) = self
                .peers
                .get(id)
                .filter(|e| e.epoch.is_some())
                .and_then(|e| e.wire)
            else {
                continue;
            };
            match by_wire.iter_mut().find(|(w, _)| *w == wire) {
                Some((_, members)) => members.push(*id),
                None => by_wire.push((wire, vec![*id])),
            }
        }
        for (wire, members) in by_wire {
            let (deliveries, errors) =
                update_groups::encode_group(changes, &members, &wire, &self.updates);
            for error in errors {
                warn!(%error, peers = members.len(), "cannot encode an UPDATE; not sent");
            }
            for delivery in deliveries {
                if delivery.messages.is_empty() {
                    continue;
                }
                let Some((entry, epoch)) = self
                    .peers
                    .get(&delivery.peer)
                    .and_then(|e| Some((e, e.epoch?)))
                else {
                    continue;
                };
                let _ = entry
                    .session
                    .commands
                    .send(SessionCommand::AdvertiseEncoded {
                        epoch,
                        messages: delivery.messages,
                        announced: delivery.announced,
                        withdrawn: delivery.withdrawn,
                    });
            }
        }
    }

    fn status(&self) -> Vec<PeerStatus> {
        let rib = self.rib.read();
        let mut out: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|entry| {
                let since = entry
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let (received, advertised) = rib.counts(entry.id);
                PeerStatus {
                    name: entry.spec.name.clone(),
                    address: entry.spec.address,
                    description: entry.spec.description.clone(),
                    state: entry.state,
                    since,
                    since_human: format_unix_time(since),
                    info: if entry.state == State::Established {
                        "Established".to_owned()
                    } else {
                        entry.info.clone()
                    },
                    prefixes_received: received,
                    prefixes_advertised: advertised,
                    end_of_rib_received: entry.state == State::Established && entry.end_of_rib,
                    reflection: entry.spec.reflection,
                    bfd: entry.bfd_state,
                    errors: entry.error_log.totals(),
                    remote_as: entry.spec.remote_as,
                    local_as: self.local_as_for(&entry.spec),
                    established_transitions: entry.established_transitions,
                    messages_received: entry.counters.received_counts(),
                    messages_sent: entry.counters.sent_counts(),
                    session: entry.negotiated.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Log a session's error once (in the peer's span, which the caller entered) and keep its
/// text as the peer's last error when status shows it. An error that repeats on every
/// retry (a peer that is down) is logged at debug level while it stays the same.
///
/// Every other error goes through the peer's `ErrorLog`: the first of each kind in full,
/// then a count at most every few seconds (`speaker/log_limit.rs`).
fn record_error(entry: &mut PeerEntry, error: &SessionError) {
    let text = error.to_string();
    let known = entry.info == text;
    let verdict = entry
        .error_log
        .admit(error.kind(), std::time::Instant::now());
    if error.repeats() && known {
        debug!(%error, "session error");
    } else {
        match verdict {
            log_limit::Verdict::Full => match error {
                SessionError::Decode { bytes, .. } => warn!(%error, %bytes, "session error"),
                _ => warn!(%error, "session error"),
            },
            log_limit::Verdict::Count { suppressed, total } => {
                warn!(kind = error.kind(), suppressed, total, last = %error, "session errors repeated");
            }
            log_limit::Verdict::Quiet => {}
        }
    }
    if error.shows_in_status() {
        entry.info = text;
    }
}

/// Accept on the listener, or wait forever without one.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Set or clear a peer's MD5 key on the listening socket.
fn set_listener_md5(
    listener: &TcpListener,
    peer: &PeerSpec,
    key: Option<&str>,
) -> Result<(), SpeakerError> {
    let failed = |source| SpeakerError::ListenerMd5 {
        peer: peer.name.clone(),
        source,
    };
    let is_v6 = listener.local_addr().map_err(failed)?.is_ipv6();
    set_tcp_md5(listener.as_raw_fd(), peer.address, key, is_v6).map_err(failed)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC), without a date library.
pub fn format_unix_time(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
