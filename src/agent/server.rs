//! The local API server: a small HTTP/1.1 server on a unix socket (see [`crate::api`] for the
//! endpoints). One request per connection; requests are parsed with strict size limits, so a
//! misbehaving client gets a 400 and cannot make the agent allocate without bound.

use super::AgentState;
use crate::api::{
    AllocateRequest, AllocateResponse, AllocatedAddress, ApiError, GcRequest, GcResponse,
    ReleaseRequest, ReleaseResponse,
};
use crate::ipam::{self, IpamError};
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info_span, warn, Instrument};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// How long an IPAM call may wait on the datastore before the agent answers "unavailable"
/// (the CNI plugin maps it to code 11). Shorter than the plugin's read timeout
/// ([`crate::api::client::DEFAULT_TIMEOUT`]) so the plugin gets a real answer, not a timeout.
pub const IPAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

fn error(status: u16, kind: &str, message: impl Into<String>) -> Response {
    json(
        status,
        &ApiError {
            error: message.into(),
            kind: kind.into(),
        },
    )
}

async fn handle_connection(mut stream: UnixStream, state: Arc<AgentState>) -> std::io::Result<()> {
    let response = match read_request(&mut stream).await? {
        Ok(request) => {
            let span = info_span!("api", method = %request.method, path = %request.path);
            route(request, &state).instrument(span).await
        }
        Err(reason) => error(400, "invalid", reason),
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

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(400, "invalid", format!("bad request body: {e}")))
}

fn ipam_error(e: &IpamError) -> Response {
    let message = e.to_string();
    match e {
        _ if e.is_unavailable() => error(503, "unavailable", message),
        IpamError::Exhausted { .. } | IpamError::NoPools { .. } => error(409, "exhausted", message),
        IpamError::Invalid(_) => error(400, "invalid", message),
        _ => error(500, "internal", message),
    }
}

async fn route(request: Request, state: &Arc<AgentState>) -> Response {
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("GET", "/healthz") => json(200, &serde_json::json!({"status": "ok"})),
        ("GET", "/readyz") => {
            let readiness = state.readiness();
            json(if readiness.ready { 200 } else { 503 }, &readiness)
        }
        ("GET", "/v1/node") => json(200, &state.node_info()),
        ("POST", "/v1/ipam/allocate") => match parse::<AllocateRequest>(&request.body) {
            Ok(req) => allocate(state, req).await,
            Err(r) => r,
        },
        ("POST", "/v1/ipam/release") => match parse::<ReleaseRequest>(&request.body) {
            Ok(req) => {
                match tokio::time::timeout(IPAM_TIMEOUT, state.ipam.release_handle(&req.handle))
                    .await
                {
                    Ok(Ok(released)) => json(200, &ReleaseResponse { released }),
                    Ok(Err(e)) => ipam_error(&e),
                    Err(_) => datastore_timeout(state, "release"),
                }
            }
            Err(r) => r,
        },
        ("POST", "/v1/ipam/gc") => match parse::<GcRequest>(&request.body) {
            Ok(req) => match tokio::time::timeout(IPAM_TIMEOUT, gc(state, req)).await {
                Ok(response) => response,
                Err(_) => datastore_timeout(state, "gc"),
            },
            Err(r) => r,
        },
        ("GET", "/v1/bgp/status") => match state.speaker.get() {
            Some(speaker) => match speaker.status().await {
                Ok(peers) => json(200, &peers),
                Err(e) => error(503, "unavailable", e.to_string()),
            },
            None => error(
                404,
                "not-found",
                "BGP is not running on this node (started with --no-bgp?)",
            ),
        },
        ("GET", "/v1/ipam/allocations") => {
            let list = state.ipam.allocations_of_node(&state.node_name);
            match tokio::time::timeout(IPAM_TIMEOUT, list).await {
                Ok(Ok(list)) => json(200, &list),
                Ok(Err(e)) => ipam_error(&e),
                Err(_) => datastore_timeout(state, "allocation listing"),
            }
        }
        _ => error(
            404,
            "not-found",
            format!("no endpoint {} {}", request.method, request.path),
        ),
    }
}

/// The datastore did not answer within [`IPAM_TIMEOUT`].
fn datastore_timeout(state: &AgentState, what: &str) -> Response {
    let message = format!(
        "datastore {} unreachable: no answer to the {what} within {} s",
        state.store.describe(),
        IPAM_TIMEOUT.as_secs()
    );
    warn!(%message, "IPAM call timed out");
    error(503, "unavailable", message)
}

/// Allocates in a task of its own, so a caller that gives up (the datastore is too slow)
/// does not cancel a batch serving other callers half way; an allocation that completes
/// after its caller gave up is released again (the plugin reported failure for it).
async fn allocate(state: &Arc<AgentState>, req: AllocateRequest) -> Response {
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
    let (reply, answer) = tokio::sync::oneshot::channel();
    let worker = state.clone();
    tokio::spawn(async move {
        let result = worker.ipam.allocate(&request).await;
        if let Err(Ok(late)) = reply.send(result) {
            warn!(handle = %request.handle, addresses = late.len(),
                "allocation completed after the caller gave up; releasing it");
            if let Err(e) = worker.ipam.release_handle(&request.handle).await {
                warn!(handle = %request.handle, error = %e,
                    "cannot release a late allocation; CNI GC will reclaim it");
            }
        }
    });
    let result = match tokio::time::timeout(IPAM_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => {
            return error(
                500,
                "internal",
                "the allocation task ended without an answer",
            )
        }
        Err(_) => return datastore_timeout(state, "allocation"),
    };
    match result {
        Ok(got) => {
            let addresses = got
                .into_iter()
                .map(|a| AllocatedAddress {
                    ip: a.ip,
                    block: a.block.to_string(),
                    sequence: a.sequence,
                })
                .collect();
            json(
                200,
                &AllocateResponse {
                    addresses,
                    pod_mtu: state.pod_mtu(),
                },
            )
        }
        Err(e) => {
            warn!(handle = %req.handle, error = %e, "allocation failed");
            ipam_error(&e)
        }
    }
}

async fn gc(state: &AgentState, req: GcRequest) -> Response {
    let held = match state.ipam.allocations_of_node(&state.node_name).await {
        Ok(list) => list,
        Err(e) => return ipam_error(&e),
    };
    let mut released = Vec::new();
    let mut kept = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for allocation in held {
        if !allocation.handle.starts_with(&req.prefix) {
            continue;
        }
        if req.keep.contains(&allocation.handle) {
            kept.push(allocation);
            continue;
        }
        if done.insert(allocation.handle.clone()) {
            if let Err(e) = state.ipam.release_handle(&allocation.handle).await {
                return ipam_error(&e);
            }
        }
        released.push(allocation);
    }
    json(200, &GcResponse { released, kept })
}
