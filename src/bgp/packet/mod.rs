//! The BGP wire layer: framing, validation, and zettabgp where it is safe.
//!
//! Data flow (receive):
//!
//! ```text
//! socket bytes -> FrameReader::next_frame  (header: marker, length, type; 1/x errors)
//!              -> decode_message           (per-type structure checks, then:
//!                   OPEN          open.rs + capability.rs; zettabgp decodes the
//!                                 capabilities it handles correctly, one TLV at a time
//!                   UPDATE        update.rs + attribute.rs, ours (RFC 7606 findings)
//!                   NOTIFICATION  notification.rs, ours (variable-length data)
//!                   KEEPALIVE     nothing to decode
//!                   ROUTE-REFRESH route_refresh.rs; zettabgp after a length check)
//!              -> Decoded { message (treat-as-withdraw applied), findings }
//! ```
//!
//! Send: `encode_open` (zettabgp writes the fixed fields and the capabilities it encodes
//! byte-exactly, we append the rest), `encode_updates` (ours: sizes and splits at 4,096
//! bytes), `encode_notification`, `encode_keepalive`, `encode_route_refresh` (zettabgp),
//! `encode_end_of_rib`.
//!
//! Every call into zettabgp runs inside `guard_zettabgp` (`catch_unwind`): a panic in the
//! codec becomes `DecodeError::Codec` and a NOTIFICATION for that peer, never an unwinding
//! task. Inputs that make zettabgp 0.6.0 panic (listed in docs/bgp.md) are rejected
//! before it is called; the tests prove each one yields a typed error.
//!
//! RFCs: 4271, 4760, 5492, 6793, 2918, 7313, 4724, 7606, 8654, 9003, 9072, 1997, 4360,
//! 8092, 4456. Departures are listed at the top of each file.

pub mod attribute;
pub mod capability;
pub mod encode;
pub mod error;
pub mod header;
pub mod notification;
pub mod open;
pub mod prefix;
pub mod route_refresh;
pub mod update;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_captured;
#[cfg(test)]
mod tests_fuzz;

use serde::{Deserialize, Serialize};

pub use attribute::{
    Aggregator, AsPath, AsSegment, LargeCommunity, MpNextHop, Origin, PathAttributes, RawAttribute,
    SegmentKind,
};
pub use capability::{AddPathFamily, Capability, Family, GracefulRestart, GracefulRestartFamily};
pub use encode::{encode_end_of_rib, encode_keepalive, encode_updates};
pub use error::{
    AttributeAction, AttributeFinding, CodecContext, DecodeError, EncodeError, HeaderError,
    OpenError, RouteRefreshError, UpdateError,
};
pub use header::{
    decode_header, FrameReader, Header, MessageType, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN,
    MAX_MESSAGE_LEN,
};
pub use notification::{codes, decode_notification, encode_notification, Notification};
pub use open::{decode_open, encode_open, Open};
pub use route_refresh::{decode_route_refresh, encode_route_refresh, RouteRefresh};
pub use update::{decode_update, DecodedUpdate, Update};

/// The 2-octet placeholder for a 4-octet AS (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// What the session negotiated that changes how bytes are read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOptions {
    /// Both sides sent the 4-octet AS capability: AS_PATH and AGGREGATOR carry 4-byte ASNs.
    pub four_octet_as: bool,
    /// Both sides sent the extended message capability (RFC 8654).
    pub extended_message: bool,
}

impl WireOptions {
    /// Largest UPDATE / NOTIFICATION / ROUTE-REFRESH we may send or accept.
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// A BGP message. UPDATE is much larger than the others; a message is moved a couple of
/// times and then consumed, so boxing it would cost more clarity than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }
}

/// A decoded message and the attribute errors RFC 7606 let us survive (UPDATE only).
/// `message` already has treat-as-withdraw applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    pub findings: Vec<AttributeFinding>,
}

/// Decode one whole message (as returned by `FrameReader::next_frame`).
pub fn decode_message(frame: &[u8], options: &WireOptions) -> Result<Decoded, DecodeError> {
    let header = decode_header(frame, options.max_message_len())?;
    if frame.len() != header.length {
        return Err(HeaderError::BadLength {
            length: frame.len().min(usize::from(u16::MAX)) as u16,
        }
        .into());
    }
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    let message = match header.message_type {
        MessageType::Open => Message::Open(decode_open(body)?),
        MessageType::Update => {
            let decoded = decode_update(body, options)?;
            let findings = decoded.findings.clone();
            return Ok(Decoded {
                message: Message::Update(decoded.into_effective()),
                findings,
            });
        }
        MessageType::Notification => Message::Notification(decode_notification(body)),
        MessageType::Keepalive => Message::Keepalive,
        MessageType::RouteRefresh => Message::RouteRefresh(decode_route_refresh(body)?),
    };
    Ok(Decoded {
        message,
        findings: Vec::new(),
    })
}

/// Encode a message: one buffer, or several for an UPDATE that must be split.
pub fn encode_message(
    message: &Message,
    options: &WireOptions,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    Ok(match message {
        Message::Open(open) => vec![encode_open(open)?],
        Message::Update(update) => match update.end_of_rib {
            Some(family) => vec![encode_end_of_rib(family)],
            None => encode_updates(&update.attributes, &update.nlri, &update.withdrawn, options)?,
        },
        Message::Notification(notification) => vec![encode_notification(notification)],
        Message::Keepalive => vec![encode_keepalive()],
        Message::RouteRefresh(refresh) => vec![encode_route_refresh(refresh)?],
    })
}

/// Run a zettabgp call so that a panic inside it becomes a typed error. zettabgp's own
/// errors are mapped too. The default panic hook still prints the panic; the session
/// logs the resulting error once.
pub(crate) fn guard_zettabgp<T>(
    context: CodecContext,
    call: impl FnOnce() -> Result<T, zettabgp::error::BgpError>,
) -> Result<T, DecodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(DecodeError::Codec {
            context,
            detail: error.to_string(),
        }),
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            tracing::warn!(%context, %detail, "zettabgp panicked; treating input as malformed");
            Err(DecodeError::Codec {
                context,
                detail: format!("zettabgp panicked: {detail}"),
            })
        }
    }
}
