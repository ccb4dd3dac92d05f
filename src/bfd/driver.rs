//! The BFD driver: one tokio task owning the receive socket, one transmit socket per
//! session, and every session's `Fsm` and timers.
//!
//! Data flow: `BfdHandle` requests (add, remove, status) and received datagrams come into
//! the task; each datagram is checked for TTL 255 (RFC 5881 §5, read with IP_RECVTTL),
//! decoded (`packet::decode`), matched to a session by Your Discriminator, or by source
//! address while that is zero (RFC 5880 §6.8.6), and fed to its `Fsm`. The task sleeps
//! until the earliest session deadline and then ticks the sessions that are due. State
//! changes go out as `BfdEvent`s. Anything dropped is counted in `Counters`, never logged
//! per packet, so a flood costs a counter increment.
//!
//! Each session sends from its own UDP socket bound to a source port from 49152–65535 that
//! stays fixed for the session's life (RFC 5881 §4), with TTL 255; local discriminators
//! are random, non-zero and unique among the sessions.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, Instrument};

use super::fsm::{Fsm, FsmStatus, Input, Intervals, Output};
use super::packet::{self, ControlPacket, DecodeError, Diagnostic, State};

/// The single-hop control port (RFC 5881 §4).
pub const BFD_PORT: u16 = 3784;
/// The TTL we send and the only one we accept (RFC 5881 §5).
const TTL: u8 = 255;
/// Where session source ports come from (RFC 5881 §4).
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// What the driver needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// Where to receive (0.0.0.0:3784).
    pub listen: SocketAddr,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), BFD_PORT),
        }
    }
}

/// One session to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BfdPeer {
    pub peer: IpAddr,
    /// Our address on the link; `None`: the kernel's choice.
    pub local: Option<IpAddr>,
    /// The peer's BFD port: `BFD_PORT` (tests run two drivers on one host).
    pub port: u16,
    pub intervals: Intervals,
}

impl BfdPeer {
    /// A session with `peer` on the standard port.
    pub fn new(peer: IpAddr, local: Option<IpAddr>, intervals: Intervals) -> Self {
        BfdPeer {
            peer,
            local,
            port: BFD_PORT,
            intervals,
        }
    }
}

/// A session's state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdEvent {
    pub peer: IpAddr,
    pub from: State,
    pub to: State,
    pub diagnostic: Diagnostic,
    /// The peer said it is administratively down (RFC 5882 §4.2: not a failure).
    pub remote_admin_down: bool,
}

/// What was received, sent and dropped, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub received: u64,
    pub sent: u64,
    /// Dropped: TTL (or hop limit) not 255.
    pub bad_ttl: u64,
    /// Dropped: valid but for no session of ours.
    pub no_session: u64,
    /// Dropped: failed a §6.8.6 check, by `DecodeError::name`.
    pub malformed: BTreeMap<String, u64>,
    /// Packets the kernel would not take (a full socket buffer, no route).
    pub send_errors: u64,
}

/// One session, for `routectl bfd status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub peer: IpAddr,
    pub local: Option<IpAddr>,
    pub source_port: u16,
    pub configured: Intervals,
    pub fsm: FsmStatus,
    /// When the session started or last changed state, Unix milliseconds (BIRD's "Since").
    #[serde(default)]
    pub since_unix_ms: u64,
}

/// Every session and the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdStatus {
    pub sessions: Vec<SessionStatus>,
    pub counters: Counters,
}

/// What can go wrong in the driver.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("cannot bind the BFD socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot set {option} on the BFD socket: {source}")]
    SocketOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no free BFD source port for {peer}: {source}")]
    SourcePort {
        peer: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("BFD supports IPv4 peers only, not {0}")]
    Unsupported(IpAddr),
    #[error("the BFD driver has stopped")]
    Stopped,
}

enum Request {
    Add(BfdPeer),
    Remove(IpAddr),
    Status(oneshot::Sender<BfdStatus>),
}

/// A cheap clonable handle on the driver.
#[derive(Debug, Clone)]
pub struct BfdHandle {
    requests: mpsc::UnboundedSender<Request>,
}

impl BfdHandle {
    /// Start (or re-time) the session with `peer.peer`.
    pub fn add(&self, peer: BfdPeer) -> Result<(), BfdError> {
        self.requests
            .send(Request::Add(peer))
            .map_err(|_| BfdError::Stopped)
    }

    /// Stop the session with `peer` (it sends AdminDown first).
    pub fn remove(&self, peer: IpAddr) -> Result<(), BfdError> {
        self.requests
            .send(Request::Remove(peer))
            .map_err(|_| BfdError::Stopped)
    }

    pub async fn status(&self) -> Result<BfdStatus, BfdError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Status(reply))
            .map_err(|_| BfdError::Stopped)?;
        answer.await.map_err(|_| BfdError::Stopped)
    }
}

/// The driver service: dropping it stops the task.
#[derive(Debug)]
pub struct BfdDriver {
    handle: BfdHandle,
    task: JoinHandle<()>,
    local_addr: SocketAddr,
}

impl BfdDriver {
    /// Bind the receive socket and start the task; state changes go to `events`.
    pub fn start(
        config: DriverConfig,
        events: mpsc::UnboundedSender<BfdEvent>,
    ) -> Result<BfdDriver, BfdError> {
        let socket = bind_receiver(config.listen)?;
        let local_addr = socket.local_addr().map_err(|source| BfdError::Bind {
            addr: config.listen,
            source,
        })?;
        let (requests, request_rx) = mpsc::unbounded_channel();
        let task = DriverTask {
            socket,
            events,
            sessions: HashMap::new(),
            next_port: *SOURCE_PORTS.start(),
            counters: Counters::default(),
        };
        let span = tracing::info_span!("bfd", listen = %local_addr);
        let task = tokio::spawn(task.run(request_rx).instrument(span));
        Ok(BfdDriver {
            handle: BfdHandle { requests },
            task,
            local_addr,
        })
    }

    pub fn handle(&self) -> BfdHandle {
        self.handle.clone()
    }

    /// Where the receive socket is bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for BfdDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running session.
struct Session {
    peer: BfdPeer,
    fsm: Fsm,
    socket: UdpSocket,
    source_port: u16,
    /// Start or last state change.
    since: std::time::SystemTime,
}

struct DriverTask {
    socket: UdpSocket,
    events: mpsc::UnboundedSender<BfdEvent>,
    sessions: HashMap<IpAddr, Session>,
    next_port: u16,
    counters: Counters,
}

impl DriverTask {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut buffer = [0u8; 512];
        loop {
            let deadline = self
                .sessions
                .values()
                .filter_map(|s| s.fsm.next_deadline())
                .min();
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.handle_request(request),
                    None => break,
                },
                received = recv_with_ttl(&self.socket, &mut buffer) => match received {
                    Ok((len, from, ttl)) => self.receive(&buffer[..len.min(buffer.len())], from, ttl),
                    Err(error) => {
                        debug!(%error, "BFD receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                () = sleep_until_opt(deadline) => self.tick(),
            }
        }
        for peer in self.sessions.keys().copied().collect::<Vec<_>>() {
            self.remove(peer);
        }
    }

    fn handle_request(&mut self, request: Request) {
        match request {
            Request::Add(peer) => {
                if let Err(error) = self.add(peer) {
                    // The speaker's view stays "BFD configured"; status shows no session.
                    tracing::warn!(%error, "BFD session not started");
                }
            }
            Request::Remove(peer) => self.remove(peer),
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn add(&mut self, peer: BfdPeer) -> Result<(), BfdError> {
        if !peer.peer.is_ipv4() {
            return Err(BfdError::Unsupported(peer.peer));
        }
        let now = Instant::now().into_std();
        if let Some(session) = self.sessions.get_mut(&peer.peer) {
            if session.peer.local == peer.local && session.peer.port == peer.port {
                session.peer = peer;
                let outputs = session.fsm.handle(now, Input::SetIntervals(peer.intervals));
                self.carry_out(peer.peer, outputs);
                return Ok(());
            }
            self.remove(peer.peer);
        }
        let (socket, source_port) = self.bind_sender(&peer)?;
        let discriminator = self.new_discriminator();
        let mut rng = rand::rngs::StdRng::from_entropy();
        let random = Box::new(move || rng.gen::<u32>());
        let fsm = Fsm::new(discriminator, peer.intervals, now, random);
        info!(peer = %peer.peer, source_port, discriminator, "BFD session started");
        self.sessions.insert(
            peer.peer,
            Session {
                peer,
                fsm,
                socket,
                source_port,
                since: std::time::SystemTime::now(),
            },
        );
        Ok(())
    }

    fn remove(&mut self, peer: IpAddr) {
        let Some(mut session) = self.sessions.remove(&peer) else {
            return;
        };
        let outputs = session
            .fsm
            .handle(Instant::now().into_std(), Input::AdminDown);
        for output in outputs {
            if let Output::Send(packet) = output {
                send(&session, &packet, &mut self.counters);
            }
        }
        info!(%peer, "BFD session stopped");
    }

    /// A random non-zero discriminator no session uses.
    fn new_discriminator(&self) -> u32 {
        let mut rng = rand::thread_rng();
        loop {
            let candidate: u32 = rng.gen();
            if candidate != 0
                && !self
                    .sessions
                    .values()
                    .any(|s| s.fsm.local_discriminator() == candidate)
            {
                return candidate;
            }
        }
    }

    /// A socket with TTL 255 on the next free source port.
    fn bind_sender(&mut self, peer: &BfdPeer) -> Result<(UdpSocket, u16), BfdError> {
        let local = peer.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let span = usize::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        let mut last_error = io::Error::from(io::ErrorKind::AddrInUse);
        for _ in 0..span.min(1024) {
            let port = self.next_port;
            self.next_port = if port == *SOURCE_PORTS.end() {
                *SOURCE_PORTS.start()
            } else {
                port + 1
            };
            if self.sessions.values().any(|s| s.source_port == port) {
                continue;
            }
            match bind_sender_on(SocketAddr::new(local, port)) {
                Ok(socket) => return Ok((socket, port)),
                Err(error) => last_error = error,
            }
        }
        Err(BfdError::SourcePort {
            peer: peer.peer,
            source: last_error,
        })
    }

    /// One datagram: TTL, decode, lookup, FSM.
    fn receive(&mut self, bytes: &[u8], from: SocketAddr, ttl: Option<u8>) {
        self.counters.received += 1;
        if ttl != Some(TTL) {
            self.counters.bad_ttl += 1;
            return;
        }
        let packet = match packet::decode(bytes) {
            Ok(packet) => packet,
            Err(error) => {
                self.count_malformed(error);
                return;
            }
        };
        let source = from.ip().to_canonical();
        let found = if packet.your_discriminator != 0 {
            self.sessions
                .get(&source)
                .filter(|s| s.fsm.local_discriminator() == packet.your_discriminator)
                .is_some()
        } else {
            self.sessions.contains_key(&source)
        };
        if !found {
            self.counters.no_session += 1;
            return;
        }
        self.feed(source, Input::Received(packet));
    }

    fn count_malformed(&mut self, error: DecodeError) {
        *self
            .counters
            .malformed
            .entry(error.name().to_owned())
            .or_default() += 1;
    }

    fn feed(&mut self, peer: IpAddr, input: Input) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        let outputs = session.fsm.handle(Instant::now().into_std(), input);
        self.carry_out(peer, outputs);
    }

    /// Tick every session whose deadline passed.
    fn tick(&mut self) {
        let now = Instant::now().into_std();
        let due: Vec<IpAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.fsm.next_deadline().is_some_and(|d| d <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.feed(peer, Input::Tick);
        }
    }

    fn carry_out(&mut self, peer: IpAddr, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send(packet) => {
                    if let Some(session) = self.sessions.get(&peer) {
                        send(session, &packet, &mut self.counters);
                    }
                }
                Output::StateChanged {
                    from,
                    to,
                    diagnostic,
                    remote_admin_down,
                } => {
                    info!(%peer, from = from.name(), to = to.name(), ?diagnostic, "BFD state");
                    if let Some(session) = self.sessions.get_mut(&peer) {
                        session.since = std::time::SystemTime::now();
                    }
                    let _ = self.events.send(BfdEvent {
                        peer,
                        from,
                        to,
                        diagnostic,
                        remote_admin_down,
                    });
                }
            }
        }
    }

    fn status(&self) -> BfdStatus {
        let mut sessions: Vec<SessionStatus> = self
            .sessions
            .values()
            .map(|s| SessionStatus {
                peer: s.peer.peer,
                local: s.peer.local,
                source_port: s.source_port,
                configured: s.peer.intervals,
                fsm: s.fsm.status(),
                since_unix_ms: s
                    .since
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect();
        sessions.sort_by_key(|s| s.peer);
        BfdStatus {
            sessions,
            counters: self.counters.clone(),
        }
    }
}

/// Send one packet without waiting; a full buffer drops it (BFD tolerates loss).
fn send(session: &Session, packet: &ControlPacket, counters: &mut Counters) {
    let bytes = packet::encode(packet);
    match session.socket.try_send_to(
        &bytes,
        SocketAddr::new(session.peer.peer, session.peer.port),
    ) {
        Ok(_) => counters.sent += 1,
        Err(_) => counters.send_errors += 1,
    }
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    option: &'static str,
) -> Result<(), BfdError> {
    // SAFETY: a valid descriptor and a pointer to a live c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(BfdError::SocketOption {
            option,
            source: io::Error::last_os_error(),
        })
    }
}

/// The receive socket, asking the kernel for each datagram's TTL.
fn bind_receiver(addr: SocketAddr) -> Result<UdpSocket, BfdError> {
    let bind = |source| BfdError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
    socket.set_nonblocking(true).map_err(bind)?;
    set_int_option(&socket, libc::IPPROTO_IP, libc::IP_RECVTTL, 1, "IP_RECVTTL")?;
    UdpSocket::from_std(socket).map_err(bind)
}

/// A session's transmit socket: TTL 255.
fn bind_sender_on(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_ttl(u32::from(TTL))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Receive one datagram with its source and the TTL it arrived with.
async fn recv_with_ttl(
    socket: &UdpSocket,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || {
            recvmsg_ttl(socket.as_raw_fd(), buffer)
        }) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// `recvmsg` with room for one IP_TTL control message.
fn recvmsg_ttl(
    fd: std::os::fd::RawFd,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    let mut source = MaybeUninit::<libc::sockaddr_in>::zeroed();
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: msghdr is plain data; every pointer below outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_name = source.as_mut_ptr().cast();
    message.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = size_of::<[u64; 8]>();
    // SAFETY: a valid descriptor and a msghdr whose buffers are live and sized.
    let len = unsafe { libc::recvmsg(fd, &raw mut message, libc::MSG_DONTWAIT) };
    let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
    let mut ttl = None;
    // SAFETY: walking the control buffer the kernel filled, with the libc macros.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const message);
        while !header.is_null() {
            let h = &*header;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>());
                ttl = u8::try_from(value).ok();
            }
            header = libc::CMSG_NXTHDR(&raw const message, header);
        }
    }
    // SAFETY: the kernel wrote a sockaddr_in (the socket is IPv4).
    let source = unsafe { source.assume_init() };
    let address = SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(source.sin_addr.s_addr)),
        u16::from_be(source.sin_port),
    );
    Ok((len, SocketAddr::V4(address), ttl))
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
