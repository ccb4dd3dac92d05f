//! A minimal blocking HTTP/1.1 client for the agent's unix socket (one request per connection).
//! A non-2xx reply becomes [`ClientError::Api`] with the body's [`ErrorKind`] (a body that is
//! not an [`ApiError`] reads as `internal`, its text as the message).

use super::v1::{ApiError, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("routed agent is not reachable at {socket}: {source}")]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The agent accepted the connection but did not answer in time: it is running, busy.
    #[error("routed agent at {socket} is running but did not answer within {after:?}: {source}")]
    Slow {
        socket: PathBuf,
        after: std::time::Duration,
        source: std::io::Error,
    },
    #[error("routed agent at {socket} answered {status}: {error}")]
    Api {
        socket: PathBuf,
        status: u16,
        error: String,
        kind: ErrorKind,
    },
    #[error("routed agent at {socket} sent an unreadable reply: {reason}")]
    Protocol { socket: PathBuf, reason: String },
}

impl ClientError {
    /// The agent's error kind (`unavailable`, `exhausted`, ...), when it answered.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// How long the client waits for the agent's answer: longer than the agent's own datastore
/// timeout ([`crate::agent::server::IPAM_TIMEOUT`], 10 s), so a slow or unreachable datastore
/// comes back as the agent's "unavailable" answer rather than as a client timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Talks to one agent socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.protocol(e.to_string()))?;
        self.call("POST", path, Some(&body))
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            reason,
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        // Connected: from here a timeout means a busy agent, not a missing one.
        let unreachable = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Slow {
                socket: self.socket.clone(),
                after: self.timeout,
                source,
            },
            _ => ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            },
        };
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: routed\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).map_err(unreachable)?;
        stream.write_all(body).map_err(unreachable)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).map_err(unreachable)?;
        if reply.is_empty() {
            // Closed without a byte: the agent died or restarted mid-request (try again).
            return Err(unreachable(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the agent closed the connection without answering (it stopped or restarted)",
            )));
        }
        let (status, body) = parse_response(&reply).map_err(|r| self.protocol(r))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(body).map_err(|e| self.protocol(e.to_string()));
        }
        let err: ApiError = serde_json::from_slice(body).unwrap_or_else(|_| ApiError {
            error: String::from_utf8_lossy(body).into_owned(),
            kind: ErrorKind::Internal,
        });
        Err(ClientError::Api {
            socket: self.socket.clone(),
            status,
            error: err.error,
            kind: err.kind,
        })
    }
}

/// Splits an HTTP/1.1 response into status and body (honouring Content-Length when present).
pub fn parse_response(reply: &[u8]) -> Result<(u16, &[u8]), String> {
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&reply[..end]).map_err(|_| "headers are not UTF-8")?;
    let status_line = head.lines().next().ok_or("empty reply")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let body = &reply[end + 4..];
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    match length {
        Some(n) => body
            .get(..n)
            .map(|b| (status, b))
            .ok_or_else(|| "body shorter than Content-Length".into()),
        None => Ok((status, body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let (status, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((status, body), (200, &b"{}"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn a_silent_agent_is_slow_and_a_missing_one_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routed.sock");
        let missing = Client::new(&path).get::<serde_json::Value>("/v1/bgp/status");
        assert!(
            matches!(missing, Err(ClientError::Unreachable { .. })),
            "{missing:?}"
        );
        // Accepts the connection (the backlog does), never answers.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let busy = Client::new(&path)
            .with_timeout(Duration::from_millis(200))
            .get::<serde_json::Value>("/v1/bgp/status");
        assert!(matches!(busy, Err(ClientError::Slow { .. })), "{busy:?}");
    }

    #[test]
    fn an_agent_that_closes_without_answering_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routed.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let closer = std::thread::spawn(move || {
            // Reads the whole request (unread data would reset the connection), then closes.
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 256];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
                assert!(n > 0, "the client closed first");
                request.extend_from_slice(&buf[..n]);
            }
        });
        let answer = Client::new(&path).get::<serde_json::Value>("/v1/node");
        closer.join().unwrap();
        match answer {
            Err(ClientError::Unreachable { source, .. }) => {
                assert!(source.to_string().contains("without answering"), "{source}")
            }
            other => panic!("{other:?}"),
        }
    }
}
