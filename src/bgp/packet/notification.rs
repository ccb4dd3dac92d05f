//! NOTIFICATION messages (RFC 4271 §4.5) with variable-length data.
//!
//! Data flow: `decode_notification` takes a body the framing layer has already bounded
//! (at least 2 bytes); `encode_notification` writes a whole message. zettabgp's
//! NOTIFICATION type carries a single u16 of data, so both directions are ours.
//!
//! RFC 9003 (shutdown communication) is supported for Cease/Administrative Shutdown and
//! Cease/Administrative Reset: `Notification::cease_with_message` builds one and
//! `Notification::shutdown_message` reads one. A malformed shutdown communication is
//! reported as `None`, never an error (RFC 9003 §3: the NOTIFICATION itself stays valid).

use serde::{Deserialize, Serialize};

use super::header::{frame_message, MessageType};

/// Error codes and subcodes (RFC 4271 §4.5, RFC 4486, RFC 7313, RFC 8203/9003).
pub mod codes {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;

    pub const HEADER_CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const HEADER_BAD_LENGTH: u8 = 2;
    pub const HEADER_BAD_TYPE: u8 = 3;

    pub const OPEN_UNSPECIFIC: u8 = 0;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_BGP_IDENTIFIER: u8 = 3;
    pub const OPEN_UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;
    pub const OPEN_ROLE_MISMATCH: u8 = 11;

    pub const UPDATE_UNSPECIFIC: u8 = 0;
    pub const UPDATE_MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const UPDATE_MISSING_WELL_KNOWN: u8 = 3;
    pub const UPDATE_ATTRIBUTE_FLAGS: u8 = 4;
    pub const UPDATE_ATTRIBUTE_LENGTH: u8 = 5;
    pub const UPDATE_INVALID_ORIGIN: u8 = 6;
    pub const UPDATE_INVALID_NEXT_HOP: u8 = 8;
    pub const UPDATE_OPTIONAL_ATTRIBUTE: u8 = 9;
    pub const UPDATE_INVALID_NETWORK_FIELD: u8 = 10;
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;

    pub const FSM_UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const FSM_UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    pub const CEASE_MAX_PREFIXES: u8 = 1;
    pub const CEASE_ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMINISTRATIVE_RESET: u8 = 4;
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    pub const CEASE_OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CEASE_CONNECTION_COLLISION: u8 = 7;
    pub const CEASE_OUT_OF_RESOURCES: u8 = 8;

    pub const ROUTE_REFRESH_INVALID_LENGTH: u8 = 1;
}

/// Longest RFC 9003 shutdown communication, in bytes of UTF-8.
pub const SHUTDOWN_MESSAGE_MAX: usize = 255;

/// A NOTIFICATION: error code, subcode and whatever data the error carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with the given code, subcode and data.
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Hold Timer Expired (4/0).
    pub fn hold_timer_expired() -> Self {
        Self::new(codes::HOLD_TIMER_EXPIRED, 0, Vec::new())
    }

    /// Finite State Machine Error with the RFC 6608 subcode for the state it happened in.
    pub fn fsm_error(subcode: u8) -> Self {
        Self::new(codes::FSM_ERROR, subcode, Vec::new())
    }

    /// Cease with a subcode and no data.
    pub fn cease(subcode: u8) -> Self {
        Self::new(codes::CEASE, subcode, Vec::new())
    }

    /// Cease (administrative shutdown or reset) carrying an RFC 9003 shutdown communication;
    /// the text is cut at a character boundary to 255 bytes.
    pub fn cease_with_message(subcode: u8, message: &str) -> Self {
        let mut end = message.len().min(SHUTDOWN_MESSAGE_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = message.as_bytes().get(..end).unwrap_or_default();
        let mut data = Vec::with_capacity(1 + text.len());
        data.push(text.len() as u8);
        data.extend_from_slice(text);
        Self::new(codes::CEASE, subcode, data)
    }

    /// The RFC 9003 shutdown communication, if this is a Cease 2 or 4 that carries a
    /// well-formed one.
    pub fn shutdown_message(&self) -> Option<String> {
        let shutdown_kind = self.subcode == codes::CEASE_ADMINISTRATIVE_SHUTDOWN
            || self.subcode == codes::CEASE_ADMINISTRATIVE_RESET;
        if self.code != codes::CEASE || !shutdown_kind {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        std::str::from_utf8(text).ok().map(str::to_owned)
    }

    /// A short human-readable name for the code and subcode, for logs and `routectl`.
    pub fn describe(&self) -> String {
        let code = match self.code {
            codes::MESSAGE_HEADER => "message header error",
            codes::OPEN_MESSAGE => "OPEN message error",
            codes::UPDATE_MESSAGE => "UPDATE message error",
            codes::HOLD_TIMER_EXPIRED => "hold timer expired",
            codes::FSM_ERROR => "finite state machine error",
            codes::CEASE => "cease",
            codes::ROUTE_REFRESH_MESSAGE => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        match self.shutdown_message() {
            Some(text) => format!("{code} ({}/{}): \"{text}\"", self.code, self.subcode),
            None => format!("{code} ({}/{})", self.code, self.subcode),
        }
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Decode a NOTIFICATION body (the framing layer guarantees at least 2 bytes; shorter
/// input yields code and subcode 0 rather than an error, since no reply is ever sent to
/// a NOTIFICATION).
pub fn decode_notification(body: &[u8]) -> Notification {
    let code = body.first().copied().unwrap_or(0);
    let subcode = body.get(1).copied().unwrap_or(0);
    let data = body.get(2..).unwrap_or_default().to_vec();
    Notification::new(code, subcode, data)
}

/// Encode a whole NOTIFICATION message; data that would overflow the 4,096-byte limit is
/// truncated (the data is diagnostic, the code and subcode are what matter).
pub fn encode_notification(notification: &Notification) -> Vec<u8> {
    let room = super::header::MAX_MESSAGE_LEN - super::header::HEADER_LEN - 2;
    let data = notification
        .data
        .get(..notification.data.len().min(room))
        .unwrap_or_default();
    let mut body = Vec::with_capacity(2 + data.len());
    body.push(notification.code);
    body.push(notification.subcode);
    body.extend_from_slice(data);
    frame_message(MessageType::Notification, &body)
}
