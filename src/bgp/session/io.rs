//! Socket I/O of a session: connecting, and the reader and writer task of each connection.
//!
//! ```text
//!   connect task ── IoEvent::Connected / ConnectFailed ──> session task
//!   reader task ─── IoEvent::Frame / Closed ─────────────> session task (handle_io)
//!     (bounded channel; before each socket read the reader waits while the speaker
//!      holds ROUTE_BACKLOG of this peer's UPDATEs: see `queues`)
//!   reader task <── WireOptions (oneshot) ──────────────── session, once the FSM has
//!                                                          negotiated the peer's OPEN
//!   writer task <── WriteOp (bytes, close) ─────────────── session (WriteQueue, capped in bytes)
//! ```
//!
//! The reader decodes until the peer's OPEN with default wire options, then waits for the
//! FSM's `Negotiated::wire` before the next frame: 4-octet AS and extended message come
//! from the FSM's negotiation alone. A reader that panics reports `Closed`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, warn, Instrument};

use super::queues::{Queued, RouteBacklog, WriteOp, WriteQueue};
use super::{Session, SessionConfig, SessionError, SessionEvent, Which};
use crate::bgp::fsm::{ConnectionOrigin, Input, State};
use crate::bgp::packet::{decode_message, DecodeError, Decoded, FrameReader, Message, WireOptions};
use crate::net::{min_ttl, saved_syn_ttl, set_tcp_md5, set_ttl_security};

/// How long a closing connection may take to flush before it is cut.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Something the I/O helper tasks report.
#[derive(Debug)]
pub(super) enum IoKind {
    Connected(TcpStream),
    ConnectFailed(SessionError),
    Frame(Box<Decoded>),
    /// A message that cannot be decoded, with its bytes (for the log); the reader stopped.
    BadFrame {
        error: DecodeError,
        bytes: Vec<u8>,
    },
    Closed(String),
}

/// What an I/O helper task reports, and on which connection.
#[derive(Debug)]
pub(super) struct IoEvent {
    conn: u64,
    kind: IoKind,
}

/// An open TCP connection.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) conn: u64,
    pub(super) writer: WriteQueue,
    writer_abort: AbortHandle,
    reader_abort: AbortHandle,
    pub(super) local_address: IpAddr,
    /// The reader waits on it after the peer's OPEN: the wire options the FSM negotiated.
    wire: Option<oneshot::Sender<WireOptions>>,
}

impl Link {
    /// Hand the reader the negotiated wire options (once; later calls do nothing).
    pub(super) fn set_wire(&mut self, wire: WireOptions) {
        if let Some(sender) = self.wire.take() {
            let _ = sender.send(wire);
        }
    }

    /// Flush what is queued, close, and cut the connection if the flush hangs.
    pub(super) fn close(self) {
        self.reader_abort.abort();
        self.writer.close();
        let writer_abort = self.writer_abort;
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_FLUSH_TIMEOUT).await;
            writer_abort.abort();
        });
    }
}

/// Open the TCP connection: bind the source, set the MD5 key, connect.
async fn connect(config: &SessionConfig) -> Result<TcpStream, SessionError> {
    let failed = |source: io::Error| SessionError::Connect {
        peer: config.name.clone(),
        source: Arc::new(source),
    };
    let socket = match config.remote {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(failed)?;
    if let Some(password) = &config.password {
        set_tcp_md5(
            socket.as_raw_fd(),
            config.remote.ip(),
            Some(password),
            config.remote.is_ipv6(),
        )
        .map_err(|source| SessionError::Md5 {
            peer: config.name.clone(),
            source: Arc::new(source),
        })?;
    }
    if let Some(hops) = config.ttl_security {
        // Before connect: the SYN goes out with TTL 255 and a far SYN-ACK is dropped.
        set_ttl_security(socket.as_raw_fd(), config.remote.is_ipv6(), hops).map_err(failed)?;
    }
    open_socket(socket, config).await.map_err(failed)
}

/// GTSM on an accepted connection (RFC 5082 §3): the SYN's TTL (saved by the listener) must
/// be at least 256 − hops, and everything after it is checked by the kernel.
fn check_ttl_security(stream: &TcpStream, hops: u8) -> Result<(), String> {
    let fd = stream.as_raw_fd();
    let min = min_ttl(hops);
    let ipv6 = stream.local_addr().map_err(|e| e.to_string())?.is_ipv6();
    match saved_syn_ttl(fd) {
        Ok(Some(ttl)) if ttl >= min => {}
        Ok(Some(ttl)) => return Err(format!("connection with TTL {ttl} refused (minimum {min})")),
        Ok(None) => return Err("connection without a saved SYN refused".to_owned()),
        Err(error) => return Err(format!("cannot read the SYN's TTL: {error}")),
    }
    set_ttl_security(fd, ipv6, hops).map_err(|e| format!("cannot set IP_MINTTL: {e}"))
}

/// Bind the source address, if any, and connect.
async fn open_socket(socket: TcpSocket, config: &SessionConfig) -> io::Result<TcpStream> {
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
    io_tx: mpsc::Sender<IoEvent>,
    wire: oneshot::Receiver<WireOptions>,
    backlog: Arc<RouteBacklog>,
) -> AbortHandle {
    let reader =
        tokio::spawn(read_loop(conn, read_half, io_tx.clone(), wire, backlog).in_current_span());
    let abort = reader.abort_handle();
    tokio::spawn(
        async move {
            if let Err(error) = reader.await {
                if error.is_panic() {
                    warn!(conn, "reader task panicked; closing the connection");
                    let closed = IoEvent {
                        conn,
                        kind: IoKind::Closed("reader panicked".to_owned()),
                    };
                    let _ = io_tx.send(closed).await;
                }
            }
        }
        .in_current_span(),
    );
    abort
}

/// A connection's first read buffer: enough for an idle session (keepalives, the odd UPDATE).
/// A read that fills it doubles it, up to `READ_BUFFER_MAX` (an idle session held 16 KiB
/// before, most of what one cost the agent: tests/bench/session_memory.sh).
const READ_BUFFER_FIRST: usize = 4 * 1024;
const READ_BUFFER_MAX: usize = 16 * 1024;

/// Read, frame and decode until the connection ends or a message is bad. After the peer's
/// OPEN, wait for the negotiated wire options before the next frame (the session drops
/// the sender when negotiation failed; the connection is closing then). Before each socket
/// read it waits for room in the speaker's backlog of this peer's UPDATEs, and each event
/// waits for room in the session's queue: a peer that sends faster than we process is
/// slowed by TCP flow control.
async fn read_loop(
    conn: u64,
    mut read_half: OwnedReadHalf,
    io_tx: mpsc::Sender<IoEvent>,
    wire_rx: oneshot::Receiver<WireOptions>,
    backlog: Arc<RouteBacklog>,
) {
    let mut frames = FrameReader::new();
    let mut wire = WireOptions::default();
    let mut hex_logged = false;
    let mut wire_rx = Some(wire_rx);
    let mut buffer = vec![0u8; READ_BUFFER_FIRST];
    let send = |kind| {
        let io_tx = io_tx.clone();
        async move { io_tx.send(IoEvent { conn, kind }).await.is_ok() }
    };
    loop {
        backlog.wait_room().await;
        let read = match read_half.read(&mut buffer).await {
            Ok(0) => {
                send(IoKind::Closed("end of stream".to_owned())).await;
                return;
            }
            Ok(n) => n,
            Err(error) => {
                send(IoKind::Closed(error.to_string())).await;
                return;
            }
        };
        frames.extend(buffer.get(..read).unwrap_or_default());
        if read == buffer.len() && buffer.len() < READ_BUFFER_MAX {
            // The peer sends more than fits: bigger reads (a full table), fewer wake-ups.
            buffer.resize(buffer.len() * 2, 0);
        }
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let bytes = frames.buffered_bytes().to_vec();
                    send(IoKind::BadFrame { error, bytes }).await;
                    return;
                }
            };
            let decoded = match decode_message(&frame, &wire) {
                Ok(decoded) => decoded,
                Err(error) => {
                    send(IoKind::BadFrame {
                        error,
                        bytes: frame,
                    })
                    .await;
                    return;
                }
            };
            if !decoded.findings.is_empty() {
                // The bytes once per connection; the session reports each finding and the
                // speaker rate-limits those.
                if hex_logged {
                    debug!(conn, "UPDATE with malformed attributes (RFC 7606)");
                } else {
                    hex_logged = true;
                    warn!(conn, bytes = %hex_bytes(&frame), "UPDATE with malformed attributes (RFC 7606)");
                }
            }
            let open = matches!(decoded.message, Message::Open(_));
            if !send(IoKind::Frame(Box::new(decoded))).await {
                return;
            }
            if open {
                // One source of truth: what the FSM negotiated from this OPEN.
                if let Some(rx) = wire_rx.take() {
                    let Ok(negotiated) = rx.await else {
                        return; // negotiation failed: the session is closing the connection
                    };
                    wire = negotiated;
                    frames.set_max_message_len(wire.max_message_len());
                }
            }
        }
    }
}

/// Most message bytes one log line shows: enough for any attribute's header and start,
/// short enough that a peer cannot make one line large (the length is given when cut).
pub(super) const LOGGED_BYTES: usize = 512;

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

/// Write queued messages until told to close; then shut the connection down. What is queued
/// is copied into one buffer of up to `WRITE_CHUNK` bytes per socket write (many small
/// UPDATEs, one system call); bytes leave the queue's count once written.
async fn write_loop(
    mut write_half: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<WriteOp>,
    queued: Arc<Queued>,
) {
    let mut chunk = Chunk::default();
    'ops: while let Some(op) = queue.recv().await {
        let mut next = Some(op);
        while let Some(op) = next.take() {
            let close = matches!(op, WriteOp::Close);
            let messages: Vec<&[u8]> = match &op {
                WriteOp::Bytes(bytes) => vec![bytes.as_slice()],
                WriteOp::Shared(runs) => runs
                    .iter()
                    .flat_map(|r| r.iter())
                    .map(Vec::as_slice)
                    .collect(),
                WriteOp::Close => Vec::new(),
            };
            for message in messages {
                chunk.buffer.extend_from_slice(message);
                if chunk.buffer.len() >= WRITE_CHUNK && !chunk.write(&mut write_half, &queued).await
                {
                    break 'ops;
                }
            }
            if close {
                let _ = chunk.write(&mut write_half, &queued).await;
                break 'ops;
            }
            next = queue.try_recv().ok();
        }
        if !chunk.write(&mut write_half, &queued).await {
            break;
        }
        // Idle: the buffer's memory goes back.
        chunk.buffer = Vec::new();
    }
    let _ = write_half.shutdown().await;
}

/// Bytes a writer copies together before one socket write.
const WRITE_CHUNK: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Chunk {
    buffer: Vec<u8>,
}

impl Chunk {
    /// Write the buffer out; false when the connection failed.
    async fn write(&mut self, write_half: &mut OwnedWriteHalf, queued: &Queued) -> bool {
        if self.buffer.is_empty() {
            return true;
        }
        let written = write_half.write_all(&self.buffer).await;
        queued.written(self.buffer.len());
        self.buffer.clear();
        if let Err(error) = written {
            debug!(%error, "write failed");
            return false;
        }
        true
    }
}

impl Session {
    /// Whether an incoming connection passes GTSM (always, without it); a refused one is
    /// reported (the speaker counts it as `ttl_security`) and closed by the caller's drop.
    pub(super) fn admits_ttl(&self, stream: &TcpStream) -> bool {
        let Some(hops) = self.config.ttl_security else {
            return true;
        };
        match check_ttl_security(stream, hops) {
            Ok(()) => true,
            Err(reason) => {
                self.report_error(|peer| SessionError::TtlSecurity { peer, reason });
                false
            }
        }
    }

    /// Give a slot its connection: reader and writer tasks, then TcpConnected.
    pub(super) fn attach(&mut self, which: Which, stream: TcpStream, origin: ConnectionOrigin) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let local_address = match stream.local_addr() {
            Ok(addr) => addr.ip(),
            Err(source) => {
                self.report_error(|peer| SessionError::NoLocalAddress {
                    peer,
                    source: Arc::new(source),
                });
                let outputs = self
                    .slot_mut(which)
                    .map(|s| s.fsm.handle(Input::TcpConnectionFails));
                self.apply(which, outputs.unwrap_or_default());
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let (wire_tx, wire_rx) = oneshot::channel();
        let reader = spawn_reader(
            conn,
            read_half,
            self.io_tx.clone(),
            wire_rx,
            self.backlog.clone(),
        );
        let (writer_tx, writer_rx, queued) =
            WriteQueue::new(self.write_stats.clone(), self.config.write_queue_cap);
        let writer = tokio::spawn(write_loop(write_half, writer_rx, queued).in_current_span());
        let link = Link {
            conn,
            writer: writer_tx,
            writer_abort: writer.abort_handle(),
            reader_abort: reader,
            local_address,
            wire: Some(wire_tx),
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

    /// Which slot owns connection `conn`.
    pub(super) fn slot_of(&self, conn: u64) -> Option<Which> {
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

    pub(super) fn handle_io(&mut self, event: IoEvent) {
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
                self.report(SessionEvent::Error(error));
                let outputs = self.main.fsm.handle(Input::TcpConnectionFails);
                self.apply(Which::Main, outputs);
            }
            IoKind::Frame(decoded) => {
                if let Some(which) = self.slot_of(event.conn) {
                    self.receive(which, event.conn, *decoded);
                }
            }
            IoKind::BadFrame { error, bytes } => {
                let Some(which) = self.slot_of(event.conn) else {
                    return;
                };
                self.report_error(|peer| SessionError::Decode {
                    peer,
                    source: error.clone(),
                    bytes: hex_bytes(&bytes),
                });
                self.feed(which, Input::DecodeFailed(error));
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

    /// A decoded message for a slot's FSM; after the peer's OPEN, the wire options the FSM
    /// negotiated go to the reader and the writer side of connection `conn` (which may have
    /// moved to the main slot, when the OPEN resolved a collision).
    fn receive(&mut self, which: Which, conn: u64, decoded: Decoded) {
        for finding in &decoded.findings {
            self.report_error(|peer| SessionError::MalformedAttribute {
                peer,
                finding: finding.clone(),
            });
        }
        let open = matches!(decoded.message, Message::Open(_));
        let kind = super::counters::index(&decoded.message);
        self.config.counters.received(kind, 1);
        self.feed(which, Input::MessageReceived(decoded.message));
        if !open {
            return;
        }
        let Some(slot) = self.slot_of(conn).and_then(|owner| self.slot_mut(owner)) else {
            return;
        };
        let negotiated = slot.fsm.negotiated().map(|n| n.wire);
        if let Some(wire) = negotiated {
            slot.wire = wire;
        }
        if let Some(link) = slot.link.as_mut() {
            match negotiated {
                Some(wire) => link.set_wire(wire),
                None => link.wire = None,
            }
        }
    }

    pub(super) fn start_connect(&mut self) {
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
                let _ = io_tx.send(IoEvent { conn, kind }).await;
            }
            .in_current_span(),
        );
        self.connecting = Some((conn, task.abort_handle()));
    }

    pub(super) fn cancel_connect(&mut self) {
        if let Some((_, abort)) = self.connecting.take() {
            abort.abort();
        }
    }
}
