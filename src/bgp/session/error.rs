//! What can go wrong in a session task, with the peer it happened to.
//!
//! Data flow: the session task never logs these; it reports each one to the speaker as
//! `SessionEvent::Error`, and the speaker logs it once, in the peer's span, and keeps the
//! text of those that `shows_in_status` as the peer's last error (what `routectl status`
//! shows). The text of each variant is what status showed before the errors were typed.

use std::io;
use std::sync::Arc;

use crate::bgp::packet::{AttributeFinding, DecodeError, EncodeError};

/// A session's error. `peer` is the peer's name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// The TCP connection to the peer could not be opened.
    #[error("connect: {source}")]
    Connect {
        peer: String,
        #[source]
        source: Arc<io::Error>,
    },
    /// The TCP MD5 key could not be set on the connecting socket.
    #[error("connect: {source}")]
    Md5 {
        peer: String,
        #[source]
        source: Arc<io::Error>,
    },
    /// A message from the peer could not be decoded; the session sends the NOTIFICATION
    /// this maps to and closes.
    #[error("decode: {source}")]
    Decode {
        peer: String,
        #[source]
        source: DecodeError,
        /// The message's bytes as hex (cut after `io::LOGGED_BYTES`), for the log.
        bytes: String,
    },
    /// An UPDATE had a malformed attribute the session survives (RFC 7606: treat-as-withdraw
    /// or attribute discard); the speaker rate-limits these in the log.
    #[error("malformed attribute {} ({:?}): {}", .finding.type_code, .finding.action, .finding.error)]
    MalformedAttribute {
        peer: String,
        finding: AttributeFinding,
    },
    /// A message to the peer could not be encoded (our bug or configuration); it was
    /// skipped.
    #[error("cannot encode {what}: {source}")]
    Encode {
        peer: String,
        what: &'static str,
        #[source]
        source: EncodeError,
    },
    /// GTSM (RFC 5082): an incoming connection's SYN arrived with a TTL below the minimum,
    /// its TTL is not known, or the option could not be set; the connection was closed.
    #[error("ttl security: {reason}")]
    TtlSecurity { peer: String, reason: String },
    /// An accepted or connected socket had no local address; the connection was dropped.
    #[error("connection without a local address: {source}")]
    NoLocalAddress {
        peer: String,
        #[source]
        source: Arc<io::Error>,
    },
}

impl SessionError {
    /// The peer the error is about.
    pub fn peer(&self) -> &str {
        match self {
            SessionError::Connect { peer, .. }
            | SessionError::Md5 { peer, .. }
            | SessionError::Decode { peer, .. }
            | SessionError::Encode { peer, .. }
            | SessionError::NoLocalAddress { peer, .. }
            | SessionError::TtlSecurity { peer, .. }
            | SessionError::MalformedAttribute { peer, .. } => peer,
        }
    }

    /// The error's kind, the key the speaker's log limiter counts by.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::Connect { .. } => "connect",
            SessionError::Md5 { .. } => "md5",
            SessionError::Decode { .. } => "decode",
            SessionError::Encode { .. } => "encode",
            SessionError::NoLocalAddress { .. } => "no_local_address",
            SessionError::TtlSecurity { .. } => "ttl_security",
            SessionError::MalformedAttribute { .. } => "malformed_attribute",
        }
    }

    /// Whether status shows it as the peer's last error.
    pub fn shows_in_status(&self) -> bool {
        matches!(
            self,
            SessionError::Connect { .. }
                | SessionError::Md5 { .. }
                | SessionError::Decode { .. }
                | SessionError::TtlSecurity { .. }
        )
    }

    /// Whether it comes back on every retry (logged at debug level once known).
    pub fn repeats(&self) -> bool {
        matches!(self, SessionError::Connect { .. })
    }
}

impl PartialEq for SessionError {
    /// Same variant and same text (I/O errors cannot be compared otherwise).
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.peer() == other.peer()
            && self.to_string() == other.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_of_each_error_is_what_status_showed_before_typed_errors() {
        let refused = || Arc::new(io::Error::from(io::ErrorKind::ConnectionRefused));
        let connect = SessionError::Connect {
            peer: "Global_x".into(),
            source: refused(),
        };
        assert!(connect.to_string().starts_with("connect: "), "{connect}");
        assert!(connect.shows_in_status() && connect.repeats());
        let decode = SessionError::Decode {
            peer: "Global_x".into(),
            source: DecodeError::Header(crate::bgp::packet::HeaderError::BadLength { length: 16 }),
            bytes: "ff".into(),
        };
        assert!(decode.to_string().starts_with("decode: "), "{decode}");
        assert!(decode.shows_in_status() && !decode.repeats());
        let local = SessionError::NoLocalAddress {
            peer: "Global_x".into(),
            source: refused(),
        };
        assert!(!local.shows_in_status());
        assert_eq!(local.peer(), "Global_x");
        assert_eq!(connect.clone(), connect);
        assert_ne!(connect, local);
    }
}
