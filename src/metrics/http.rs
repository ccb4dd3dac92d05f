//! The `/metrics` endpoint: a minimal HTTP/1.1 server on a TCP listener. Each connection sends
//! one request (head read up to 8 KiB, within 10 s); `GET /metrics` gets the scrape, anything
//! else 404; the connection is closed after the answer.

use super::{encode, gather, registry_of, SlowCache};
use crate::agent::AgentState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info};

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Binds `addr` (an error at start-up: the operator asked for it) and serves in a task.
pub async fn start(state: Arc<AgentState>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(listen = %local, "metrics listening on /metrics");
    tokio::spawn(async move {
        let cache = Arc::new(SlowCache::default());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (state, cache) = (state.clone(), cache.clone());
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, &state, &cache).await {
                            debug!(error = %e, "metrics connection");
                        }
                    });
                }
                Err(e) => {
                    error!(error = %e, "metrics listener failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(local)
}

/// The request line's method and path, once the head is complete.
fn request_line(head: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(head))
}

async fn serve(
    mut stream: TcpStream,
    state: &Arc<AgentState>,
    cache: &SlowCache,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let Some((method, path)) = head.as_deref().and_then(request_line) else {
        return respond(&mut stream, 400, "text/plain", "bad request\n").await;
    };
    if method != "GET" || path.split('?').next() != Some("/metrics") {
        return respond(&mut stream, 404, "text/plain", "only GET /metrics here\n").await;
    }
    let body = encode(&registry_of(&gather(state, cache).await));
    respond(&mut stream, 200, CONTENT_TYPE, &body).await
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
