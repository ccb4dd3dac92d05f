//! The local API server: a small HTTP/1.1 server on a unix socket (see [`crate::api`] for the
//! endpoints). One request per connection; requests are parsed with strict size limits, so a
//! misbehaving client gets a 400 and cannot make the agent allocate without bound.
//!
//! ```text
//!  read_request ──> route ──> ipam / speaker / AgentState (internal types)
//!                       │
//!                       ├─ Ok: internal value ──(mapping below: the only place)──> api::v1 JSON
//!                       └─ Err(ServeError) ──> logged once here, with its context (handle, ...)
//!                                          ──> HTTP status + v1::ApiError {error, kind}
//! ```
//! The server never serialises an internal type: every reply is an [`crate::api::v1`] type,
//! built by the `*_to_wire` functions of this module.

use super::calc::PeerKind;
use super::health;
use super::reconciler;
use super::AgentState;
use crate::api::v1;
use crate::bgp::fsm::State;
use crate::bgp::rib::Reflection;
use crate::bgp::speaker::{self, SpeakerError};
use crate::ipam::{self, IpamError};
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info_span, warn, Instrument};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// How long an IPAM call may wait on the datastore before the agent answers "unavailable"
/// (the CNI plugin maps it to code 11). Shorter than the plugin's read timeout
/// ([`crate::api::client::DEFAULT_TIMEOUT`]) so the plugin gets a real answer, not a timeout.
pub const IPAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Test hook (`crate::stop_point`): `ROUTED_STOP_AT=allocation-committed` stops the agent
/// between an allocation's datastore write and its reply.
pub const STOP_VAR: &str = "ROUTED_STOP_AT";

/// Binds the socket (replacing a stale one), mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves until the listener fails.
pub async fn serve(listener: UnixListener, state: Arc<AgentState>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_connection(stream, state).await {
                        debug!(error = %e, "local API connection ended with an error");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "local API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    Response {
        status,
        body: serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// Why the API did not answer a request with its 2xx reply. Each carries what it concerns
/// (handle, endpoint, datastore); [`ServeError::kind`] gives the wire kind and HTTP status.
/// The messages are the `error` field clients show (routed-cni passes them on).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP request itself is malformed or too large.
    #[error("{0}")]
    BadRequest(String),
    #[error("bad request body: {source}")]
    BadBody {
        endpoint: &'static str,
        source: serde_json::Error,
    },
    #[error("no endpoint {method} {path}")]
    NoEndpoint { method: String, path: String },
    #[error("BGP is not running on this node (started with --no-bgp?)")]
    BgpNotRunning,
    #[error("{0}")]
    Speaker(#[from] SpeakerError),
    /// An IPAM call failed; `handle` when the request named one.
    #[error("{source}")]
    Ipam {
        handle: Option<String>,
        source: IpamError,
    },
    /// The datastore did not answer within [`IPAM_TIMEOUT`].
    #[error("datastore {store} unreachable: no answer to the {what} within {} s", .after.as_secs())]
    DatastoreTimeout {
        store: String,
        what: &'static str,
        handle: Option<String>,
        after: Duration,
    },
    #[error("the allocation task ended without an answer")]
    AllocationLost { handle: String },
}

impl ServeError {
    fn ipam(handle: Option<&str>, source: IpamError) -> ServeError {
        ServeError::Ipam {
            handle: handle.map(str::to_string),
            source,
        }
    }

    /// What the client can act on (the HTTP status follows from it).
    pub fn kind(&self) -> v1::ErrorKind {
        use v1::ErrorKind as K;
        match self {
            ServeError::BadRequest(_) | ServeError::BadBody { .. } => K::Invalid,
            ServeError::NoEndpoint { .. } | ServeError::BgpNotRunning => K::NotFound,
            ServeError::Speaker(_) | ServeError::DatastoreTimeout { .. } => K::Unavailable,
            ServeError::Ipam { source, .. } => ipam_error_kind(source),
            ServeError::AllocationLost { .. } => K::Internal,
        }
    }

    /// The handle the failed request concerned, if any.
    fn handle(&self) -> Option<&str> {
        match self {
            ServeError::Ipam { handle, .. } | ServeError::DatastoreTimeout { handle, .. } => {
                handle.as_deref()
            }
            ServeError::AllocationLost { handle } => Some(handle),
            _ => None,
        }
    }

    /// Logs the error (once: here, at the top of the request) and builds the reply.
    fn into_response(self) -> Response {
        let kind = self.kind();
        let message = self.to_string();
        match kind {
            v1::ErrorKind::Invalid | v1::ErrorKind::NotFound => {
                debug!(error = %message, %kind, handle = self.handle(), "local API request refused")
            }
            _ => warn!(error = %message, %kind, handle = self.handle(), "local API request failed"),
        }
        json(
            kind.status(),
            &v1::ApiError {
                error: message,
                kind,
            },
        )
    }
}

/// The wire kind of an IPAM error: 503 when the datastore is unreachable, 409 when no address
/// is left, 400 for a request that fails validation, else 500.
fn ipam_error_kind(e: &IpamError) -> v1::ErrorKind {
    match e {
        _ if e.is_unavailable() => v1::ErrorKind::Unavailable,
        IpamError::Exhausted { .. } | IpamError::NoPools { .. } => v1::ErrorKind::Exhausted,
        IpamError::Invalid(_) => v1::ErrorKind::Invalid,
        _ => v1::ErrorKind::Internal,
    }
}

async fn handle_connection(mut stream: UnixStream, state: Arc<AgentState>) -> std::io::Result<()> {
    let response = match read_request(&mut stream).await? {
        Ok(request) => {
            let span = info_span!("api", method = %request.method, path = %request.path);
            let cni = crate::metrics::cni_command(&request.method, &request.path);
            let started = std::time::Instant::now();
            let response = async {
                route(request, &state)
                    .await
                    .unwrap_or_else(ServeError::into_response)
            }
            .instrument(span)
            .await;
            if let Some(command) = cni {
                crate::metrics::global().observe_cni(command, response.status, started.elapsed());
            }
            response
        }
        Err(reason) => ServeError::BadRequest(reason).into_response(),
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

async fn read_request(stream: &mut UnixStream) -> std::io::Result<Result<Request, String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err("request headers too large".into()));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err("connection closed before the end of the headers".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Ok(Err("headers are not UTF-8".into()));
    };
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(path)) = (first.next(), first.next()) else {
        return Ok(Err("bad request line".into()));
    };
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                match value.trim().parse() {
                    Ok(n) if n <= MAX_BODY => length = n,
                    _ => return Ok(Err("bad or too large Content-Length".into())),
                }
            }
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err("connection closed before the end of the body".into()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        body,
    }))
}

fn parse<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    body: &[u8],
) -> Result<T, ServeError> {
    serde_json::from_slice(body).map_err(|source| ServeError::BadBody { endpoint, source })
}

/// Runs `call` within [`IPAM_TIMEOUT`]; an IPAM error or the timeout becomes a [`ServeError`]
/// naming `what` and `handle`.
async fn bounded<T>(
    state: &AgentState,
    what: &'static str,
    handle: Option<&str>,
    call: impl std::future::Future<Output = Result<T, ServeError>>,
) -> Result<T, ServeError> {
    match tokio::time::timeout(IPAM_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(ServeError::DatastoreTimeout {
            store: state.store.describe(),
            what,
            handle: handle.map(str::to_string),
            after: IPAM_TIMEOUT,
        }),
    }
}

async fn route(request: Request, state: &Arc<AgentState>) -> Result<Response, ServeError> {
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("GET", "/healthz") => Ok(json(200, &health_to_wire())),
        ("GET", "/readyz") => {
            let readiness = readiness_to_wire(&state.readiness());
            Ok(json(if readiness.ready { 200 } else { 503 }, &readiness))
        }
        ("GET", "/v1/node") => Ok(json(200, &node_info_to_wire(state))),
        ("GET", "/v1/reconcilers") => Ok(json(200, &reconcilers_to_wire(&state.reconcilers()))),
        ("POST", "/v1/ipam/allocate") => {
            let req: v1::AllocateRequest = parse("allocate", &request.body)?;
            allocate(state, req).await.map(|r| json(200, &r))
        }
        ("POST", "/v1/ipam/release") => {
            let req: v1::ReleaseRequest = parse("release", &request.body)?;
            let handle = Some(req.handle.as_str());
            let release = async {
                let released = state.ipam.release_handle(&req.handle).await;
                released.map_err(|e| ServeError::ipam(handle, e))
            };
            let released = bounded(state, "release", handle, release).await?;
            Ok(json(200, &v1::ReleaseResponse { released }))
        }
        ("POST", "/v1/ipam/gc") => {
            let req: v1::GcRequest = parse("gc", &request.body)?;
            let reply = bounded(state, "gc", None, gc(state, req)).await?;
            Ok(json(200, &reply))
        }
        ("GET", "/v1/bgp/status") => {
            let speaker = state.speaker.get().ok_or(ServeError::BgpNotRunning)?;
            let peers = speaker.status().await?;
            Ok(json(200, &peers_to_wire(&peers)))
        }
        ("GET", "/v1/bfd") => {
            let speaker = state.speaker.get().ok_or(ServeError::BgpNotRunning)?;
            let status = speaker.bfd_status().await?;
            Ok(json(200, &bfd_to_wire(&status)))
        }
        ("GET", "/v1/ipam/allocations") => {
            let list = async {
                let held = state.ipam.allocations_of_node(&state.node_name).await;
                held.map_err(|e| ServeError::ipam(None, e))
            };
            let held = bounded(state, "allocation listing", None, list).await?;
            Ok(json(200, &records_to_wire(&held)))
        }
        _ => Err(ServeError::NoEndpoint {
            method: request.method,
            path: request.path,
        }),
    }
}

/// Allocates in a task of its own, so a caller that gives up (the datastore is too slow)
/// does not cancel a batch serving other callers half way; an allocation that completes
/// after its caller gave up is released again (the plugin reported failure for it).
async fn allocate(
    state: &Arc<AgentState>,
    req: v1::AllocateRequest,
) -> Result<v1::AllocateResponse, ServeError> {
    let mut request = ipam::AllocateRequest::new(&state.node_name, &req.handle, req.count);
    request.family = if req.ipv6 {
        ipam::Family::V6
    } else {
        ipam::Family::V4
    };
    request.attributes = req.attributes;
    request
        .attributes
        .insert("node".into(), state.node_name.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    request
        .attributes
        .insert(ipam::repair::ALLOCATED_AT.into(), now.to_string());
    let (reply, answer) = tokio::sync::oneshot::channel();
    let worker = state.clone();
    tokio::spawn(async move {
        let result = worker.ipam.allocate(&request).await;
        if result.is_ok() {
            // Crash tests: the addresses are in the datastore, the caller has no answer yet.
            crate::stop_point::reached(STOP_VAR, "allocation-committed");
        }
        if let Err(Ok(late)) = reply.send(result) {
            warn!(handle = %request.handle, addresses = late.len(),
                "allocation completed after the caller gave up; releasing it");
            if let Err(e) = worker.ipam.release_handle(&request.handle).await {
                warn!(handle = %request.handle, error = %e,
                    "cannot release a late allocation; CNI GC will reclaim it");
            }
        }
    });
    let handle = Some(req.handle.as_str());
    let answer = async {
        answer.await.map_err(|_| ServeError::AllocationLost {
            handle: req.handle.clone(),
        })
    };
    let got = bounded(state, "allocation", handle, answer)
        .await?
        .map_err(|e| ServeError::ipam(handle, e))?;
    Ok(v1::AllocateResponse {
        addresses: got.iter().map(allocated_to_wire).collect(),
        pod_mtu: state.pod_mtu(),
    })
}

/// CNI GC: the list is recorded, handles unheld twice running are released
/// (`ipam::attachments`).
async fn gc(state: &AgentState, req: v1::GcRequest) -> Result<v1::GcResponse, ServeError> {
    let scope = ipam::attachments::GcScope {
        prefix: req.prefix,
        network: req.network,
        valid: req.keep.into_iter().collect(),
    };
    let plan = state
        .ipam
        .cni_gc(&state.node_name, &scope)
        .await
        .map_err(|e| ServeError::ipam(None, e))?;
    Ok(v1::GcResponse {
        released: records_to_wire(&plan.released),
        kept: records_to_wire(&plan.kept),
    })
}

// The mapping from internal types to the wire: the only place the two meet.

fn health_to_wire() -> v1::Health {
    v1::Health {
        status: "ok".into(),
    }
}

fn readiness_to_wire(r: &health::Readiness) -> v1::Readiness {
    v1::Readiness {
        ready: r.ready,
        status: if r.ready { "ready" } else { "not ready" }.into(),
        checks: r.checks.clone(),
        reasons: r.reasons.clone(),
        error: (!r.ready).then(|| format!("not ready: {}", r.reasons.join("; "))),
        kind: (!r.ready).then_some(v1::ErrorKind::Unavailable),
    }
}

fn allocated_to_wire(a: &ipam::Allocated) -> v1::AllocatedAddress {
    v1::AllocatedAddress {
        ip: a.ip,
        block: a.block.to_string(),
        sequence: a.sequence,
    }
}

fn record_to_wire(r: &ipam::AddressRecord) -> v1::AllocationInfo {
    v1::AllocationInfo {
        ip: r.ip,
        handle: r.handle.clone(),
        sequence: r.sequence,
        attributes: r.attributes.clone(),
    }
}

fn records_to_wire(records: &[ipam::AddressRecord]) -> Vec<v1::AllocationInfo> {
    records.iter().map(record_to_wire).collect()
}

/// What `/v1/node` serves: the node's name, addresses, MTUs and the sysctls the agent set.
fn node_info_to_wire(state: &AgentState) -> v1::NodeInfo {
    let detection = state.detection.as_ref();
    v1::NodeInfo {
        name: state.node_name.clone(),
        pod_mtu: state.pod_mtu(),
        ipv4_address: state.node_address.map(|a| a.to_string()),
        address_detection: detection.map(|d| d.method.clone()),
        interface: detection.and_then(|d| d.interface.clone()),
        node_mtu: detection.map(|d| d.mtu),
        sysctls: state.sysctls.read().map(|m| m.clone()).unwrap_or_default(),
    }
}

fn reconcilers_to_wire(
    reconcilers: &[(&'static str, reconciler::StatsSnapshot)],
) -> Vec<v1::ReconcilerStatus> {
    reconcilers
        .iter()
        .map(|(name, stats)| v1::ReconcilerStatus {
            name: name.to_string(),
            passes: stats.passes,
            passes_changed: stats.passes_changed,
            changes: stats.changes,
            failures: stats.failures,
            consecutive_failures: stats.consecutive_failures,
            last_error: stats.last_error.clone(),
        })
        .collect()
}

pub(super) fn peers_to_wire(peers: &[speaker::PeerStatus]) -> Vec<v1::PeerStatus> {
    peers.iter().map(peer_to_wire).collect()
}

fn peer_to_wire(p: &speaker::PeerStatus) -> v1::PeerStatus {
    v1::PeerStatus {
        name: p.name.clone(),
        address: p.address,
        kind: PeerKind::from_label(&p.description).map_or(v1::PeerKind::Other, peer_kind_to_wire),
        description: p.description.clone(),
        state: session_state_to_wire(p.state),
        since: p.since,
        since_human: p.since_human.clone(),
        info: p.info.clone(),
        prefixes_received: p.prefixes_received as u64,
        prefixes_advertised: p.prefixes_advertised as u64,
        end_of_rib_received: p.end_of_rib_received,
        role: match p.reflection {
            None => v1::PeerRole::Peer,
            Some(Reflection::Client { .. }) => v1::PeerRole::RrClient,
            Some(Reflection::Reflector { .. }) => v1::PeerRole::RouteReflector,
        },
        rr_cluster_id: p.reflection.map(Reflection::cluster_id),
        bfd: p.bfd.map(|state| state.name().to_owned()),
        errors: p.errors.clone(),
    }
}

fn bfd_to_wire(status: &crate::bfd::BfdStatus) -> v1::BfdStatus {
    let c = &status.counters;
    v1::BfdStatus {
        sessions: status
            .sessions
            .iter()
            .map(|s| v1::BfdSession {
                peer: s.peer,
                local: s.local,
                source_port: s.source_port,
                state: s.fsm.state.name().to_owned(),
                remote_state: s.fsm.remote_state.name().to_owned(),
                diagnostic: format!("{:?}", s.fsm.diagnostic),
                local_discriminator: s.fsm.local_discriminator,
                remote_discriminator: s.fsm.remote_discriminator,
                min_tx_ms: u64::try_from(s.configured.min_tx.as_millis()).unwrap_or(u64::MAX),
                min_rx_ms: u64::try_from(s.configured.min_rx.as_millis()).unwrap_or(u64::MAX),
                multiplier: s.configured.multiplier,
                tx_interval_us: s.fsm.tx_interval_us,
                detection_time_us: s.fsm.detection_time_us,
                remote_multiplier: s.fsm.remote_multiplier,
                polling: s.fsm.polling,
            })
            .collect(),
        counters: v1::BfdCounters {
            received: c.received,
            sent: c.sent,
            bad_ttl: c.bad_ttl,
            no_session: c.no_session,
            malformed: c.malformed.clone(),
            send_errors: c.send_errors,
        },
    }
}

fn peer_kind_to_wire(kind: PeerKind) -> v1::PeerKind {
    match kind {
        PeerKind::Mesh => v1::PeerKind::Mesh,
        PeerKind::Global => v1::PeerKind::Global,
        PeerKind::NodeSpecific => v1::PeerKind::NodeSpecific,
    }
}

fn session_state_to_wire(state: State) -> v1::SessionState {
    match state {
        State::Idle => v1::SessionState::Idle,
        State::Connect => v1::SessionState::Connect,
        State::Active => v1::SessionState::Active,
        State::OpenSent => v1::SessionState::OpenSent,
        State::OpenConfirm => v1::SessionState::OpenConfirm,
        State::Established => v1::SessionState::Established,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1::golden;
    use crate::datastore::DatastoreError;
    use std::collections::BTreeMap;

    fn attributes() -> BTreeMap<String, String> {
        [
            ("container_id", "3f1c0a"),
            ("ifname", "eth0"),
            ("namespace", "default"),
            ("node", "node-1"),
            ("pod", "web-0"),
            ("veth", "rd5e8f1c2a9b0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn record(ip: &str, handle: &str, sequence: u64) -> ipam::AddressRecord {
        ipam::AddressRecord {
            ip: ip.parse().unwrap(),
            handle: handle.into(),
            sequence,
            attributes: attributes(),
        }
    }

    fn peer(name: &str, address: &str, kind: PeerKind, state: State) -> speaker::PeerStatus {
        speaker::PeerStatus {
            name: name.into(),
            address: address.parse().unwrap(),
            description: kind.label().into(),
            state,
            since: 1_764_590_400,
            since_human: "2025-12-01 12:00:00".into(),
            info: if state == State::Established {
                "Established".into()
            } else {
                "Connection refused (os error 111)".into()
            },
            prefixes_received: 3,
            prefixes_advertised: 1,
            end_of_rib_received: state == State::Established,
            reflection: None,
            bfd: None,
            errors: if state == State::Established {
                Default::default()
            } else {
                [("connect".to_owned(), 12)].into_iter().collect()
            },
            remote_as: 64512,
            local_as: 64512,
            established_transitions: 1,
            messages_received: Default::default(),
            messages_sent: Default::default(),
            session: None,
        }
    }

    /// Every state and kind the speaker has, as the wire names them.
    fn peers() -> Vec<speaker::PeerStatus> {
        vec![
            peer(
                "Mesh_10_0_0_2",
                "10.0.0.2",
                PeerKind::Mesh,
                State::Established,
            ),
            peer(
                "Global_10_0_0_254",
                "10.0.0.254",
                PeerKind::Global,
                State::Active,
            ),
            peer(
                "Node_fd00__1",
                "fd00::1",
                PeerKind::NodeSpecific,
                State::Idle,
            ),
            peer("Mesh_10_0_0_3", "10.0.0.3", PeerKind::Mesh, State::Connect),
            peer("Mesh_10_0_0_4", "10.0.0.4", PeerKind::Mesh, State::OpenSent),
            peer(
                "Mesh_10_0_0_5",
                "10.0.0.5",
                PeerKind::Mesh,
                State::OpenConfirm,
            ),
            speaker::PeerStatus {
                description: "route reflector".into(),
                ..peer("Rr_10_0_0_9", "10.0.0.9", PeerKind::Global, State::Active)
            },
            speaker::PeerStatus {
                reflection: Some(Reflection::Reflector {
                    cluster_id: "1.0.0.1".parse().unwrap(),
                }),
                bfd: Some(crate::bfd::State::Up),
                ..peer(
                    "Global_10_0_0_11",
                    "10.0.0.11",
                    PeerKind::Global,
                    State::Established,
                )
            },
            speaker::PeerStatus {
                reflection: Some(Reflection::Client {
                    cluster_id: "1.0.0.1".parse().unwrap(),
                }),
                ..peer(
                    "Global_10_0_0_21",
                    "10.0.0.21",
                    PeerKind::Global,
                    State::Established,
                )
            },
        ]
    }

    fn readiness(ready: bool) -> health::Readiness {
        health::Readiness::from_checks(&[
            health::Check {
                name: "datastore",
                passed: true,
                required: true,
                failure: "the node is not registered yet (datastore unreachable?)",
            },
            health::Check {
                name: "routes",
                passed: ready,
                required: true,
                failure: "BGP and blackhole routes not programmed yet",
            },
            health::Check {
                name: "nftables",
                passed: false,
                required: false,
                failure: "table inet routed (FORWARD acceptance, natOutgoing) not programmed; see the log",
            },
        ])
    }

    fn body_of(response: Response) -> (u16, serde_json::Value) {
        (
            response.status,
            serde_json::from_slice(&response.body).unwrap(),
        )
    }

    #[test]
    fn health_and_readiness_map_to_their_golden_files() {
        golden::check("healthz", &health_to_wire());
        golden::check("readyz-ready", &readiness_to_wire(&readiness(true)));
        let not_ready = readiness_to_wire(&readiness(false));
        assert_eq!(not_ready.kind, Some(v1::ErrorKind::Unavailable));
        assert!(not_ready.error.as_deref().unwrap().contains("routes: BGP"));
        golden::check("readyz-not-ready", &not_ready);
    }

    #[test]
    fn node_info_matches_its_golden_file() {
        let info = v1::NodeInfo {
            name: "node-1".into(),
            pod_mtu: 1480,
            ipv4_address: Some("10.0.0.1/24".into()),
            address_detection: Some("interface=eth0".into()),
            interface: Some("eth0".into()),
            node_mtu: Some(1500),
            sysctls: [
                ("net.ipv4.conf.all.rp_filter", "2"),
                ("net.ipv4.ip_forward", "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        golden::check("node", &info);
    }

    #[test]
    fn reconciler_counters_map_to_their_golden_file() {
        let steady = reconciler::StatsSnapshot {
            passes: 42,
            passes_changed: 3,
            changes: 17,
            failures: 0,
            consecutive_failures: 0,
            last_error: None,
        };
        let failing = reconciler::StatsSnapshot {
            passes: 5,
            passes_changed: 1,
            changes: 1,
            failures: 4,
            consecutive_failures: 2,
            last_error: Some("nft: Operation not permitted".into()),
        };
        golden::check(
            "reconcilers",
            &reconcilers_to_wire(&[("workloads", steady), ("nat", failing)]),
        );
    }

    #[test]
    fn ipam_replies_map_to_their_golden_files() {
        let allocated = ipam::Allocated {
            ip: "10.244.3.4".parse().unwrap(),
            block: "10.244.3.0/26".parse().unwrap(),
            sequence: 7,
            borrowed: false,
        };
        let response = v1::AllocateResponse {
            addresses: vec![allocated_to_wire(&allocated)],
            pod_mtu: 1480,
        };
        golden::check("ipam-allocate-response", &response);
        let released = v1::ReleaseResponse {
            released: vec![allocated.ip],
        };
        golden::check("ipam-release-response", &released);
        let gc = v1::GcResponse {
            released: vec![record_to_wire(&record("10.244.3.5", "routed.9d2e.eth0", 8))],
            kept: vec![record_to_wire(&record(
                "10.244.3.4",
                "routed.3f1c0a.eth0",
                7,
            ))],
        };
        golden::check("ipam-gc-response", &gc);
        let held = [
            record("10.244.3.4", "routed.3f1c0a.eth0", 7),
            record("fd00:244::4", "routed.3f1c0a.eth0", 2),
        ];
        golden::check("ipam-allocations", &records_to_wire(&held));
    }

    #[test]
    fn bgp_status_maps_every_kind_and_state_to_its_golden_file() {
        golden::check("bgp-status", &peers_to_wire(&peers()));
    }

    /// A BFD session Up after its Poll, and the counters of dropped datagrams.
    pub(crate) fn bfd_status() -> crate::bfd::BfdStatus {
        use crate::bfd::{Diagnostic, FsmStatus, Intervals, SessionStatus, State as Bfd};
        crate::bfd::BfdStatus {
            sessions: vec![SessionStatus {
                peer: "10.0.0.254".parse().unwrap(),
                local: Some("10.0.0.1".parse().unwrap()),
                source_port: 49152,
                configured: Intervals::default(),
                fsm: FsmStatus {
                    state: Bfd::Up,
                    remote_state: Bfd::Up,
                    local_discriminator: 0x1f2e_3d4c,
                    remote_discriminator: 7,
                    diagnostic: Diagnostic::None,
                    tx_interval_us: 300_000,
                    detection_time_us: 900_000,
                    remote_multiplier: 3,
                    polling: false,
                },
                since_unix_ms: 0,
            }],
            counters: crate::bfd::Counters {
                received: 1200,
                sent: 1190,
                bad_ttl: 2,
                no_session: 1,
                malformed: [("bad_version".to_owned(), 3)].into_iter().collect(),
                send_errors: 0,
            },
        }
    }

    #[test]
    fn bfd_status_maps_to_its_golden_file() {
        golden::check("bfd-status", &bfd_to_wire(&bfd_status()));
    }

    #[test]
    fn errors_keep_their_status_kind_and_message() {
        let unavailable = ServeError::ipam(
            Some("routed.3f1c0a.eth0"),
            IpamError::Datastore(DatastoreError::Unavailable {
                url: "etcd://10.0.0.10:2379".into(),
                reason: "connection refused".into(),
            }),
        );
        let (status, body) = body_of(unavailable.into_response());
        assert_eq!(status, 503);
        golden::check("error-unavailable", &body);
        let exhausted = ServeError::ipam(
            None,
            IpamError::Exhausted {
                node: "node-1".into(),
                reason: "every block of the enabled pools is full".into(),
            },
        );
        let (status, body) = body_of(exhausted.into_response());
        assert_eq!(status, 409);
        golden::check("error-exhausted", &body);
        let timeout = ServeError::DatastoreTimeout {
            store: "etcd://10.0.0.10:2379".into(),
            what: "allocation",
            handle: Some("routed.3f1c0a.eth0".into()),
            after: IPAM_TIMEOUT,
        };
        assert_eq!(
            timeout.to_string(),
            "datastore etcd://10.0.0.10:2379 unreachable: no answer to the allocation within 10 s"
        );
        assert_eq!(body_of(timeout.into_response()).0, 503);
        let (status, body) = body_of(ServeError::BgpNotRunning.into_response());
        assert_eq!(status, 404);
        golden::check("error-bgp-not-running", &body);
        let bad = parse::<v1::ReleaseRequest>("release", b"{").unwrap_err();
        let (status, body) = body_of(bad.into_response());
        assert_eq!((status, &body["kind"]), (400, &"invalid".into()));
        assert!(body["error"]
            .as_str()
            .unwrap()
            .starts_with("bad request body: "));
        let lost = ServeError::AllocationLost { handle: "h".into() };
        assert_eq!(body_of(lost.into_response()).0, 500);
        let stopped = ServeError::from(SpeakerError::Stopped);
        assert_eq!(stopped.kind(), v1::ErrorKind::Unavailable);
    }

    #[test]
    fn the_clients_read_every_reply_golden_file() {
        use crate::api::v1::*;
        golden::read::<Health>("healthz");
        assert!(golden::read::<Readiness>("readyz-ready").ready);
        assert!(!golden::read::<Readiness>("readyz-not-ready").ready);
        assert_eq!(golden::read::<NodeInfo>("node").pod_mtu, 1480);
        let allocated = golden::read::<AllocateResponse>("ipam-allocate-response");
        assert_eq!(allocated.addresses[0].sequence, 7);
        golden::read::<ReleaseResponse>("ipam-release-response");
        let gc = golden::read::<GcResponse>("ipam-gc-response");
        assert_eq!(gc.kept[0].attributes["veth"], "rd5e8f1c2a9b0");
        assert_eq!(
            golden::read::<Vec<AllocationInfo>>("ipam-allocations").len(),
            2
        );
        assert_eq!(golden::read::<Vec<PeerStatus>>("bgp-status").len(), 9);
        let bfd = golden::read::<BfdStatus>("bfd-status");
        assert_eq!(bfd.sessions[0].state, "Up");
        let reconcilers = golden::read::<Vec<ReconcilerStatus>>("reconcilers");
        assert_eq!(reconcilers[1].consecutive_failures, 2);
        let e = golden::read::<ApiError>("error-unavailable");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert_eq!(
            golden::read::<ApiError>("error-exhausted").kind,
            ErrorKind::Exhausted
        );
    }
}
