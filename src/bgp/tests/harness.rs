//! Helpers shared by the session and interop tests: polling, a raw BGP peer.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::bgp::fsm::State;
use crate::bgp::packet::{
    decode_message, encode_keepalive, encode_open, Capability, Family, FrameReader, Message, Open,
    WireOptions,
};
use crate::bgp::speaker::{PeerStatus, SpeakerHandle};

/// Poll `check` every 100 ms until it returns `Some`, or panic after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status line of peer `name`.
pub async fn peer_status(handle: &SpeakerHandle, name: &str) -> Option<PeerStatus> {
    let status = handle.status().await.ok()?;
    status.into_iter().find(|s| s.name == name)
}

/// Wait until peer `name` is in `state`.
pub async fn wait_state(
    handle: &SpeakerHandle,
    name: &str,
    state: State,
    timeout: Duration,
) -> PeerStatus {
    wait_for(&format!("{name} to be {state:?}"), timeout, || async {
        peer_status(handle, name).await.filter(|s| s.state == state)
    })
    .await
}

/// Wait until the best routes hold `prefix` with exactly `next_hops` (empty: absent).
pub async fn wait_route(
    handle: &SpeakerHandle,
    prefix: &str,
    next_hops: &[IpAddr],
    timeout: Duration,
) {
    let prefix: ipnetwork::IpNetwork = prefix.parse().expect("test prefix");
    wait_for(&format!("{prefix} via {next_hops:?}"), timeout, || async {
        let routes = handle.best_routes();
        let found = routes.iter().find(|r| r.prefix == prefix);
        let ok = match found {
            Some(route) => route.next_hops == next_hops,
            None => next_hops.is_empty(),
        };
        ok.then_some(())
    })
    .await;
}

/// A BGP peer written by hand: sends whatever bytes a test wants.
pub struct RawPeer {
    stream: TcpStream,
    frames: FrameReader,
    wire: WireOptions,
}

impl RawPeer {
    /// Connect from `source` to `target`, exchange OPEN and KEEPALIVE; Established.
    pub async fn establish(
        source: IpAddr,
        target: SocketAddr,
        asn: u32,
        id: Ipv4Addr,
        hold: u16,
    ) -> RawPeer {
        Self::establish_with(source, target, asn, id, hold, Vec::new()).await
    }

    /// `establish`, with `extra` capabilities in the OPEN after multiprotocol and 4-octet AS.
    pub async fn establish_with(
        source: IpAddr,
        target: SocketAddr,
        asn: u32,
        id: Ipv4Addr,
        hold: u16,
        extra: Vec<Capability>,
    ) -> RawPeer {
        let socket = TcpSocket::new_v4().expect("socket");
        Self::establish_on(socket, source, target, asn, id, hold, extra).await
    }

    /// `establish`, with a receive buffer of `bytes` (no autotuning): a peer that stops
    /// reading stalls the speaker's writes after that much, not after megabytes.
    pub async fn establish_small_window(
        source: IpAddr,
        target: SocketAddr,
        asn: u32,
        id: Ipv4Addr,
        bytes: u32,
    ) -> RawPeer {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        Self::establish_on(socket, source, target, asn, id, 90, Vec::new()).await
    }

    async fn establish_on(
        socket: TcpSocket,
        source: IpAddr,
        target: SocketAddr,
        asn: u32,
        id: Ipv4Addr,
        hold: u16,
        extra: Vec<Capability>,
    ) -> RawPeer {
        socket.bind(SocketAddr::new(source, 0)).expect("bind");
        let stream = socket.connect(target).await.expect("connect to speaker");
        let mut peer = RawPeer {
            stream,
            frames: FrameReader::new(),
            wire: WireOptions {
                four_octet_as: true,
                extended_message: false,
            },
        };
        let open = Open {
            asn,
            hold_time: hold,
            bgp_id: id,
            capabilities: [
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::FourOctetAs(asn),
            ]
            .into_iter()
            .chain(extra)
            .collect(),
        };
        peer.send(&encode_open(&open).expect("encode OPEN")).await;
        match peer.receive().await {
            Some(Message::Open(_)) => {}
            other => panic!("expected OPEN, got {other:?}"),
        }
        peer.send(&encode_keepalive()).await;
        match peer.receive().await {
            Some(Message::Keepalive) => {}
            other => panic!("expected KEEPALIVE, got {other:?}"),
        }
        peer
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to speaker");
    }

    /// The next message, `None` when the speaker closed the connection (10 s at most).
    pub async fn receive(&mut self) -> Option<Message> {
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(frame) = self.frames.next_frame().expect("framing from speaker") {
                return Some(
                    decode_message(&frame, &self.wire)
                        .expect("speaker sent garbage")
                        .message,
                );
            }
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buffer))
                .await
                .expect("speaker silent for 10 s")
                .ok()?;
            if read == 0 {
                return None;
            }
            self.frames.extend(&buffer[..read]);
        }
    }

    /// Skip KEEPALIVEs and UPDATEs until a NOTIFICATION or the end of the stream.
    pub async fn receive_notification(&mut self) -> Option<(u8, u8)> {
        loop {
            match self.receive().await? {
                Message::Notification(n) => return Some((n.code, n.subcode)),
                _ => continue,
            }
        }
    }
}

/// Hex (spaces ignored) to bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("hex digits");
            u8::from_str_radix(text, 16).expect("hex digits")
        })
        .collect()
}

/// A whole message with a computed length.
pub fn message(message_type: u8, body: &str) -> Vec<u8> {
    let body = hex(body);
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    out.push(message_type);
    out.extend_from_slice(&body);
    out
}

/// Log to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
