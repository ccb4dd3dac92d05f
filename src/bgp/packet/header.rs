//! Message framing (RFC 4271 §4.1) and the streaming frame splitter.
//!
//! Data flow: bytes from the socket go into `FrameReader::extend`; `FrameReader::next_frame`
//! hands back one whole message at a time once its header has been checked: marker all
//! ones (1/1), length within 19..=4096 (or 65,535 after RFC 8654 extended message was
//! negotiated) and at least the minimum for its type (1/2), type 1..=5 (1/3).
//! Nothing here calls zettabgp: `decode_message_head` in 0.6.0 underflows on a length
//! below 19, so the header is ours.
//!
//! Departure: RFC 8654 says OPEN and KEEPALIVE never exceed 4,096 bytes even after the
//! extended message capability was negotiated; we enforce that per type.

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};

use super::error::{DecodeError, HeaderError};

/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// Largest message without RFC 8654.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message with RFC 8654 extended message.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// The five message types this speaker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    Open,
    Update,
    Notification,
    Keepalive,
    RouteRefresh,
}

impl MessageType {
    /// The type from its wire code, if it is one of ours.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(MessageType::Open),
            2 => Some(MessageType::Update),
            3 => Some(MessageType::Notification),
            4 => Some(MessageType::Keepalive),
            5 => Some(MessageType::RouteRefresh),
            _ => None,
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Open => 1,
            MessageType::Update => 2,
            MessageType::Notification => 3,
            MessageType::Keepalive => 4,
            MessageType::RouteRefresh => 5,
        }
    }

    /// Smallest legal total length (header included) for this type.
    fn min_len(self) -> usize {
        match self {
            MessageType::Open => 29,
            MessageType::Update => 23,
            MessageType::Notification => 21,
            MessageType::Keepalive => 19,
            // RFC 7313 wants a ROUTE-REFRESH error (7/1), not a header error, for a bad
            // length: the route-refresh decoder checks it.
            MessageType::RouteRefresh => HEADER_LEN,
        }
    }

    /// Largest legal total length for this type given the negotiated maximum.
    fn max_len(self, negotiated_max: usize) -> usize {
        match self {
            MessageType::Keepalive => HEADER_LEN,
            MessageType::Open => MAX_MESSAGE_LEN,
            _ => negotiated_max,
        }
    }
}

/// A checked message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub message_type: MessageType,
    /// Total length, header included.
    pub length: usize,
}

/// Check the 19-byte header at the start of `buf` against `max_len` (4,096, or 65,535
/// with extended message). `buf` must hold at least the header.
pub fn decode_header(buf: &[u8], max_len: usize) -> Result<Header, DecodeError> {
    let head = buf.get(..HEADER_LEN).ok_or(HeaderError::BadLength {
        length: buf.len() as u16,
    })?;
    let (marker, rest) = head.split_at(16);
    if marker.iter().any(|&b| b != 0xff) {
        return Err(HeaderError::ConnectionNotSynchronized.into());
    }
    let &[len_high, len_low, type_code] = rest else {
        return Err(HeaderError::ConnectionNotSynchronized.into());
    };
    let length_field = u16::from_be_bytes([len_high, len_low]);
    let length = usize::from(length_field);
    if !(HEADER_LEN..=max_len.min(MAX_EXTENDED_MESSAGE_LEN)).contains(&length) {
        return Err(HeaderError::BadLength {
            length: length_field,
        }
        .into());
    }
    let message_type = MessageType::from_code(type_code).ok_or(HeaderError::BadType {
        message_type: type_code,
    })?;
    if length < message_type.min_len() || length > message_type.max_len(max_len) {
        return Err(HeaderError::BadLength {
            length: length_field,
        }
        .into());
    }
    Ok(Header {
        message_type,
        length,
    })
}

/// Write header and body as one message. The caller keeps bodies within the limit; a
/// longer body is a bug in this module, so it is cut rather than allowed to wrap the
/// length field.
pub fn frame_message(message_type: MessageType, body: &[u8]) -> Vec<u8> {
    let body = body
        .get(..body.len().min(MAX_EXTENDED_MESSAGE_LEN - HEADER_LEN))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(message_type.code());
    out.extend_from_slice(body);
    out
}

/// Splits a TCP byte stream into whole BGP messages: partial reads are buffered, several
/// messages in one read come out one by one.
#[derive(Debug)]
pub struct FrameReader {
    buffer: BytesMut,
    max_len: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// A reader with the 4,096-byte limit.
    pub fn new() -> Self {
        FrameReader {
            buffer: BytesMut::with_capacity(MAX_MESSAGE_LEN),
            max_len: MAX_MESSAGE_LEN,
        }
    }

    /// Raise (or lower) the limit once extended message was negotiated.
    pub fn set_max_message_len(&mut self, max_len: usize) {
        self.max_len = max_len.clamp(MAX_MESSAGE_LEN, MAX_EXTENDED_MESSAGE_LEN);
    }

    /// Append bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole message (header included), `Ok(None)` when more bytes are needed, or
    /// the header error. After an error the stream is unusable: the session must close.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.buffer.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = decode_header(&self.buffer, self.max_len)?;
        if self.buffer.len() < header.length {
            return Ok(None);
        }
        Ok(Some(self.buffer.split_to(header.length).to_vec()))
    }

    /// The bytes buffered and not yet returned (for logging a bad header: the header and
    /// whatever followed it).
    pub fn buffered_bytes(&self) -> &[u8] {
        let shown = self.buffer.len().min(MAX_MESSAGE_LEN);
        self.buffer.get(..shown).unwrap_or_default()
    }

    /// Drop everything buffered (after a decode error or a reset).
    pub fn clear(&mut self) {
        self.buffer.advance(self.buffer.len());
    }
}
