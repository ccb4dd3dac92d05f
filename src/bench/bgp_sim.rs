//! The BGP peer simulator: N iBGP route-reflector clients, each from its own address,
//! each advertising K /26 blocks with itself as next hop, against one reflector.
//!
//! ```text
//!  driver ── spawns N client tasks (at most `connect_parallel` connecting at once)
//!    │        client i: connect from first_client + i ─ OPEN/KEEPALIVE ─ Established
//!    │                  ─ UPDATE (its K blocks, NEXT_HOP itself) ─ then reads: each NLRI or
//!    │                  withdrawal of a simulated block flips one bit of its own bitset
//!    │                  (N×K bits, no RIB: no attributes kept), counted in `counts[i]`
//!    │  polls every 5 ms:
//!    ├─ all Established ──> converged: every client holds the (N-1)×K blocks of the others
//!    ├─ withdraw wave: client 0 withdraws its blocks ─> gone at every other client
//!    └─ flap back: client 0 announces them again ─> back at every client
//!  the reflector's peak RSS (VmHWM) and CPU (utime+stime) from /proc/PID when given its pid
//! ```
//! With `announce_together` the clients hold their blocks until every client is Established
//! and then announce at once: the convergence figure is then the reflection of N×K blocks to
//! N clients alone, comparable between reflectors that bring sessions up at different speeds.
//! With `idle` set, the run ends differently: once every client is Established (and has sent
//! its blocks, if it has any) the sessions are held that long, keepalives only, and nothing
//! else is timed: what one idle session costs the peer (tests/bench/session_memory.sh) needs
//! no reflection, so the peer can be any BGP speaker with the clients configured.
//! Block j of client i is `block_base + (i×K + j)×64`/26, so a received prefix maps to one bit
//! with no lookup. Frames are decoded with the crate's own codec (`bgp::packet`).

use crate::bgp::packet::{
    decode_message, encode_keepalive, encode_open, encode_updates, AsPath, Capability, Family,
    FrameReader, Message, Open, Origin, PathAttributes, WireOptions,
};
use anyhow::{bail, Context, Result};
use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The reflector's address and port.
    pub reflector: SocketAddr,
    pub asn: u32,
    /// Client i connects from `first_client + i` (the addresses must be configured).
    pub first_client: Ipv4Addr,
    pub clients: usize,
    /// Blocks per client.
    pub blocks: usize,
    /// Where the simulated /26 blocks start.
    pub block_base: Ipv4Addr,
    pub hold_time: u16,
    /// Each phase must end within it.
    pub timeout: Duration,
    /// Clients connecting at once.
    pub connect_parallel: usize,
    /// The reflector's process id, for its peak RSS and CPU.
    pub reflector_pid: Option<u32>,
    /// Hold the sessions idle this long once all are Established, instead of the phases.
    pub idle: Option<Duration>,
    /// Clients announce their blocks only once every client is Established, all at once, so
    /// convergence times the reflection alone: the same work for any reflector however long
    /// its sessions took to come up.
    pub announce_together: bool,
}

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub clients: usize,
    pub blocks: usize,
    /// From the start to the last client Established.
    pub established_s: f64,
    /// From the last Established to every client holding every other client's blocks.
    pub converged_s: f64,
    /// From client 0's withdrawal to its blocks gone at every other client.
    pub withdraw_s: f64,
    /// From client 0's re-announcement to its blocks back at every other client.
    pub flap_s: f64,
    /// The reflector's VmHWM (MB), and utime+stime (s) over the run.
    pub reflector_peak_rss_mb: Option<f64>,
    pub reflector_cpu_s: Option<f64>,
    /// UPDATE messages and NLRI (announced + withdrawn) the clients received.
    pub updates_received: usize,
    pub nlri_received: usize,
}

/// What client 0 is told to do.
#[derive(Debug, Clone, Copy)]
enum Command {
    Withdraw,
    Announce,
}

/// Shared by the driver and the clients.
struct Shared {
    config: SimConfig,
    established: AtomicUsize,
    /// Simulated blocks each client holds now.
    counts: Vec<AtomicUsize>,
    updates: AtomicUsize,
    nlri: AtomicUsize,
    /// The first error of any client.
    failure: std::sync::Mutex<Option<String>>,
    /// Set once every client is Established, with `announce_together`: announce now.
    go: watch::Sender<bool>,
}

impl Shared {
    fn fail(&self, client: usize, error: &anyhow::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert_with(|| format!("client {client}: {error:#}"));
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Block j of client i.
pub fn block_of(config: &SimConfig, client: usize, block: usize) -> IpNetwork {
    let index = (client * config.blocks + block) as u32;
    let ip = Ipv4Addr::from(u32::from(config.block_base).wrapping_add(index.wrapping_mul(64)));
    let net = Ipv4Network::new(ip, 26).unwrap_or_else(|_| Ipv4Network::from(ip));
    IpNetwork::V4(net)
}

/// The simulated block index of `prefix`, if it is one.
fn index_of(config: &SimConfig, prefix: &IpNetwork) -> Option<usize> {
    let IpNetwork::V4(v4) = prefix else {
        return None;
    };
    if v4.prefix() != 26 || v4.ip() != v4.network() {
        return None; // not a /26, or host bits set: not one of the simulated blocks
    }
    let offset = u32::from(v4.ip()).checked_sub(u32::from(config.block_base))?;
    let index = (offset / 64) as usize;
    (offset % 64 == 0 && index < config.clients * config.blocks).then_some(index)
}

fn client_address(config: &SimConfig, client: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(config.first_client).wrapping_add(client as u32))
}

const WIRE: WireOptions = WireOptions {
    four_octet_as: true,
    extended_message: false,
};

/// Runs the simulation: all phases, then the figures.
pub async fn run(config: SimConfig) -> Result<SimReport> {
    if config.idle.is_none() && (config.clients < 2 || config.blocks == 0) {
        bail!("need at least 2 clients and 1 block each");
    }
    let cpu_before = config.reflector_pid.and_then(process_cpu_s);
    let shared = Arc::new(Shared {
        counts: (0..config.clients).map(|_| AtomicUsize::new(0)).collect(),
        config: config.clone(),
        established: AtomicUsize::new(0),
        updates: AtomicUsize::new(0),
        nlri: AtomicUsize::new(0),
        failure: std::sync::Mutex::new(None),
        go: watch::channel(false).0,
    });
    let began = Instant::now();
    let (commands, command_rx) = mpsc::channel(4);
    let tasks = spawn_clients(&shared, command_rx);
    let result = match config.idle {
        Some(idle) => hold_idle(&shared, idle, began).await,
        None => phases(&shared, &commands, began).await,
    };
    for task in tasks {
        task.abort();
    }
    let mut report = result?;
    if let Some(pid) = config.reflector_pid {
        report.reflector_peak_rss_mb = peak_rss_mb(pid);
        report.reflector_cpu_s = process_cpu_s(pid)
            .zip(cpu_before)
            .map(|(after, before)| after - before);
    }
    Ok(report)
}

fn spawn_clients(
    shared: &Arc<Shared>,
    command_rx: mpsc::Receiver<Command>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let gate = Arc::new(Semaphore::new(shared.config.connect_parallel.max(1)));
    let mut command_rx = Some(command_rx);
    (0..shared.config.clients)
        .map(|i| {
            let shared = shared.clone();
            let gate = gate.clone();
            let commands = if i == 0 { command_rx.take() } else { None };
            tokio::spawn(async move {
                if let Err(e) = client(i, &shared, &gate, commands).await {
                    shared.fail(i, &e);
                }
            })
        })
        .collect()
}

/// The phases, timed.
async fn phases(
    shared: &Arc<Shared>,
    commands: &mpsc::Sender<Command>,
    began: Instant,
) -> Result<SimReport> {
    let config = &shared.config;
    let (n, k) = (config.clients, config.blocks);
    wait_until(shared, "every client Established", || {
        shared.established.load(Ordering::Relaxed) == n
    })
    .await?;
    let established = began.elapsed();
    shared.go.send_replace(true);
    let all = (n - 1) * k;
    let everyone_holds =
        |others: usize| move |i: usize, count: usize| count == if i == 0 { all } else { others };
    let converged = timed(shared, "convergence", everyone_holds(all)).await?;
    commands
        .send(Command::Withdraw)
        .await
        .context("client 0 ended")?;
    let withdraw = timed(shared, "the withdraw wave", everyone_holds(all - k)).await?;
    commands
        .send(Command::Announce)
        .await
        .context("client 0 ended")?;
    let flap = timed(shared, "the re-announcement", everyone_holds(all)).await?;
    Ok(SimReport {
        clients: n,
        blocks: k,
        established_s: established.as_secs_f64(),
        converged_s: converged.as_secs_f64(),
        withdraw_s: withdraw.as_secs_f64(),
        flap_s: flap.as_secs_f64(),
        reflector_peak_rss_mb: None,
        reflector_cpu_s: None,
        updates_received: shared.updates.load(Ordering::Relaxed),
        nlri_received: shared.nlri.load(Ordering::Relaxed),
    })
}

/// Every client Established, then the sessions held for `idle`: only the Established time.
async fn hold_idle(shared: &Arc<Shared>, idle: Duration, began: Instant) -> Result<SimReport> {
    let n = shared.config.clients;
    wait_until(shared, "every client Established", || {
        shared.established.load(Ordering::Relaxed) == n
    })
    .await?;
    let established = began.elapsed();
    shared.go.send_replace(true);
    tokio::time::sleep(idle).await;
    if let Some(failure) = shared.failure() {
        bail!("while idle: {failure}");
    }
    Ok(SimReport {
        clients: n,
        blocks: shared.config.blocks,
        established_s: established.as_secs_f64(),
        converged_s: 0.0,
        withdraw_s: 0.0,
        flap_s: 0.0,
        reflector_peak_rss_mb: None,
        reflector_cpu_s: None,
        updates_received: shared.updates.load(Ordering::Relaxed),
        nlri_received: shared.nlri.load(Ordering::Relaxed),
    })
}

/// The time until every client's count passes `check`.
async fn timed(
    shared: &Shared,
    what: &str,
    check: impl Fn(usize, usize) -> bool,
) -> Result<Duration> {
    let began = Instant::now();
    wait_until(shared, what, || {
        shared
            .counts
            .iter()
            .enumerate()
            .all(|(i, count)| check(i, count.load(Ordering::Relaxed)))
    })
    .await?;
    Ok(began.elapsed())
}

async fn wait_until(shared: &Shared, what: &str, done: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + shared.config.timeout;
    loop {
        if done() {
            return Ok(());
        }
        if let Some(failure) = shared.failure() {
            bail!("{what}: {failure}");
        }
        if Instant::now() > deadline {
            let behind = shared
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            bail!(
                "{what} not reached within {:?} (established {}, fewest blocks held {behind})",
                shared.config.timeout,
                shared.established.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One client, until the driver aborts it.
async fn client(
    i: usize,
    shared: &Shared,
    gate: &Semaphore,
    mut commands: Option<mpsc::Receiver<Command>>,
) -> Result<()> {
    let config = &shared.config;
    let me = client_address(config, i);
    let mut frames = FrameReader::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let (mut reader, mut writer) = {
        let _permit = gate.acquire().await.context("connect gate closed")?;
        establish(config, me, &mut frames, &mut buffer).await?
    };
    shared.established.fetch_add(1, Ordering::Relaxed);
    let own: Vec<IpNetwork> = (0..config.blocks).map(|j| block_of(config, i, j)).collect();
    let mut go = shared.go.subscribe();
    let mut waiting = config.announce_together && !own.is_empty();
    if !own.is_empty() && !waiting {
        announce(&mut writer, me, &own, &[]).await?;
    }
    let mut held = vec![false; config.clients * config.blocks];
    let keepalive = Duration::from_secs(u64::from(config.hold_time.max(3) / 3));
    let mut ticker = tokio::time::interval(keepalive);
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => {
                let read = read.context("reading from the reflector")?;
                if read == 0 {
                    bail!("the reflector closed the session");
                }
                frames.extend(buffer.get(..read).unwrap_or_default());
                receive(shared, i, &mut frames, &mut held)?;
            }
            _ = ticker.tick() => writer.write_all(&encode_keepalive()).await?,
            Ok(()) = async { go.wait_for(|go| *go).await.map(|_| ()) }, if waiting => {
                waiting = false;
                announce(&mut writer, me, &own, &[]).await?;
            }
            Some(command) = recv_command(&mut commands) => match command {
                Command::Withdraw => announce(&mut writer, me, &[], &own).await?,
                Command::Announce => announce(&mut writer, me, &own, &[]).await?,
            },
        }
    }
}

async fn recv_command(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Connect and handshake, again after a failure (a reflector still starting its protocols
/// resets connections) until the timeout.
async fn establish(
    config: &SimConfig,
    me: Ipv4Addr,
    frames: &mut FrameReader,
    buffer: &mut [u8],
) -> Result<(tokio::net::tcp::OwnedReadHalf, OwnedWriteHalf)> {
    let deadline = Instant::now() + config.timeout;
    loop {
        let stream = connect(config, me).await?;
        let (mut reader, mut writer) = stream.into_split();
        *frames = FrameReader::new();
        match handshake(config, me, &mut reader, &mut writer, frames, buffer).await {
            Ok(()) => return Ok((reader, writer)),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%me, error = %format!("{e:#}"), "handshake failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context(format!("handshake from {me}"))),
        }
    }
}

async fn connect(config: &SimConfig, me: Ipv4Addr) -> Result<TcpStream> {
    let deadline = Instant::now() + config.timeout;
    loop {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(me), 0))?;
        match socket.connect(config.reflector).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%me, error = %e, "connect failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context(format!("connecting from {me}")),
        }
    }
}

/// OPEN both ways, then KEEPALIVE both ways.
async fn handshake(
    config: &SimConfig,
    me: Ipv4Addr,
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    frames: &mut FrameReader,
    buffer: &mut [u8],
) -> Result<()> {
    let open = Open {
        asn: config.asn,
        hold_time: config.hold_time,
        bgp_id: me,
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(config.asn),
        ],
    };
    writer.write_all(&encode_open(&open)?).await?;
    let mut opened = false;
    loop {
        while let Some(frame) = frames.next_frame()? {
            match decode_message(&frame, &WIRE)?.message {
                Message::Open(_) => {
                    opened = true;
                    writer.write_all(&encode_keepalive()).await?;
                }
                Message::Keepalive if opened => return Ok(()),
                Message::Notification(n) => bail!("the reflector sent {}", n.describe()),
                _ => {}
            }
        }
        let read = reader.read(buffer).await?;
        if read == 0 {
            bail!("the reflector closed the connection during the handshake");
        }
        frames.extend(buffer.get(..read).unwrap_or_default());
    }
}

async fn announce(
    writer: &mut OwnedWriteHalf,
    me: Ipv4Addr,
    nlri: &[IpNetwork],
    withdrawn: &[IpNetwork],
) -> Result<()> {
    let attributes = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![])),
        next_hop: Some(me),
        local_pref: Some(100),
        ..PathAttributes::default()
    };
    let attributes = if nlri.is_empty() {
        PathAttributes::default()
    } else {
        attributes
    };
    for message in encode_updates(&attributes, nlri, withdrawn, &WIRE)? {
        writer.write_all(&message).await?;
    }
    Ok(())
}

/// Every complete frame: UPDATEs flip the bits of simulated blocks.
fn receive(shared: &Shared, i: usize, frames: &mut FrameReader, held: &mut [bool]) -> Result<()> {
    let config = &shared.config;
    let mut delta: isize = 0;
    while let Some(frame) = frames.next_frame()? {
        let update = match decode_message(&frame, &WIRE)?.message {
            Message::Update(update) => update,
            Message::Notification(n) => bail!("the reflector sent {}", n.describe()),
            _ => continue,
        };
        shared.updates.fetch_add(1, Ordering::Relaxed);
        let nlri = update.nlri.len() + update.withdrawn.len();
        shared.nlri.fetch_add(nlri, Ordering::Relaxed);
        for (prefixes, present) in [(&update.withdrawn, false), (&update.nlri, true)] {
            for prefix in prefixes {
                // Its own blocks, if the reflector sends them back, are not counted.
                let index = index_of(config, prefix).filter(|x| x / config.blocks != i);
                let Some(slot) = index.and_then(|x| held.get_mut(x)) else {
                    continue;
                };
                if *slot != present {
                    *slot = present;
                    delta += if present { 1 } else { -1 };
                }
            }
        }
    }
    if let Some(count) = shared.counts.get(i) {
        if delta >= 0 {
            count.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            count.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
    Ok(())
}

/// VmHWM of a process, MB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// utime+stime of a process, seconds (USER_HZ = 100).
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clients: usize, blocks: usize) -> SimConfig {
        SimConfig {
            reflector: "127.0.0.1:179".parse().unwrap(),
            asn: 64512,
            first_client: Ipv4Addr::new(10, 99, 1, 1),
            clients,
            blocks,
            block_base: Ipv4Addr::new(10, 200, 0, 0),
            hold_time: 240,
            timeout: Duration::from_secs(1),
            connect_parallel: 10,
            reflector_pid: None,
            idle: None,
            announce_together: false,
        }
    }

    /// The stand-in peer's side of the handshake: OPEN (AS 64512) and KEEPALIVE.
    async fn greet(stream: &mut tokio::net::TcpStream) {
        let open = Open {
            asn: 64512,
            hold_time: 240,
            bgp_id: Ipv4Addr::new(127, 0, 0, 1),
            capabilities: vec![Capability::FourOctetAs(64512)],
        };
        stream
            .write_all(&encode_open(&open).unwrap())
            .await
            .unwrap();
        stream.write_all(&encode_keepalive()).await.unwrap();
    }

    /// A stand-in peer on loopback: answers every connection with OPEN and KEEPALIVE, then
    /// reads until it closes; counts the connections and the bytes that are not keepalives.
    async fn answering_peer() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    greet(&mut stream).await;
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        (address, accepted)
    }

    #[tokio::test]
    async fn idle_mode_brings_every_client_up_then_holds_them_without_the_phases() {
        let (peer, accepted) = answering_peer().await;
        let config = SimConfig {
            reflector: peer,
            first_client: Ipv4Addr::new(127, 0, 0, 1),
            idle: Some(Duration::from_millis(50)),
            announce_together: false,
            ..config(3, 0)
        };
        let report = run(config).await.unwrap();
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            3,
            "one connection per client"
        );
        assert_eq!((report.clients, report.blocks), (3, 0));
        assert!(report.established_s > 0.0);
        assert_eq!(report.converged_s, 0.0, "no convergence phase in idle mode");
        assert_eq!(report.updates_received, 0);
    }

    /// A stand-in peer that counts the UPDATEs it reads, and those that came before `clients`
    /// connections were accepted.
    async fn update_counting_peer(clients: usize) -> (SocketAddr, Arc<[AtomicUsize; 2]>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let accepted = Arc::new(AtomicUsize::new(0));
        let shared = counts.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let (counts, accepted) = (shared.clone(), accepted.clone());
                tokio::spawn(async move {
                    greet(&mut stream).await;
                    let mut frames = FrameReader::new();
                    let mut buffer = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                        frames.extend(&buffer[..n]);
                        while let Ok(Some(frame)) = frames.next_frame() {
                            if frame.get(18) == Some(&2) {
                                let early = accepted.load(Ordering::SeqCst) < clients;
                                counts[usize::from(early)].fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        (address, counts)
    }

    #[tokio::test]
    async fn announce_together_holds_every_block_until_all_clients_are_established() {
        let (peer, counts) = update_counting_peer(3).await;
        let config = SimConfig {
            reflector: peer,
            first_client: Ipv4Addr::new(127, 0, 0, 1),
            idle: Some(Duration::from_millis(50)),
            announce_together: true,
            connect_parallel: 1,
            ..config(3, 1)
        };
        run(config).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while counts[0].load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(counts[0].load(Ordering::SeqCst), 3, "one UPDATE per client");
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            0,
            "none before all were up"
        );
    }

    #[tokio::test]
    async fn phases_still_need_two_clients_with_blocks() {
        let error = run(config(1, 0)).await.unwrap_err();
        assert!(error.to_string().contains("at least 2 clients"), "{error}");
    }

    #[test]
    fn every_block_maps_back_to_its_own_bit_and_others_to_none() {
        let config = config(1000, 4);
        let mut seen = vec![false; 4000];
        for i in 0..1000 {
            for j in 0..4 {
                let index = index_of(&config, &block_of(&config, i, j)).unwrap();
                assert!(!std::mem::replace(&mut seen[index], true));
            }
        }
        assert!(seen.iter().all(|s| *s));
        for other in [
            "10.200.0.0/24",
            "10.200.0.32/26",
            "10.199.0.0/26",
            "10.210.0.0/26",
        ] {
            assert_eq!(index_of(&config, &other.parse().unwrap()), None, "{other}");
        }
    }
}
