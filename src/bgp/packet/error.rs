//! Decode and encode errors, one enum per layer, and their NOTIFICATIONs.
//!
//! Every `DecodeError` maps to exactly one NOTIFICATION (RFC 4271 §6, RFC 7313 §5) with
//! the offending data attached where the RFC says which data. Attribute errors that RFC
//! 7606 lets us survive are not `DecodeError`s: they come back as `AttributeFinding`s next
//! to the decoded UPDATE, each with its `AttributeAction`.
//!
//! Departure: RFC 4271 does not say what to send for a well-framed but inconsistent OPEN
//! optional parameter block or a malformed known capability; we send 2/0 (unspecific),
//! as FRR and GoBGP do.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::notification::{codes, Notification};

/// Anything that makes a received message unusable. The session must send the
/// NOTIFICATION from `to_notification` and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: {0}")]
    Header(#[from] HeaderError),
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE: {0}")]
    Update(#[from] UpdateError),
    #[error("ROUTE-REFRESH: {0}")]
    RouteRefresh(#[from] RouteRefreshError),
    /// zettabgp refused input we had already validated, or panicked on it.
    #[error("codec ({context}): {detail}")]
    Codec {
        context: CodecContext,
        detail: String,
    },
}

/// Which message zettabgp was decoding when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodecContext {
    Open,
    RouteRefresh,
}

impl std::fmt::Display for CodecContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecContext::Open => f.write_str("OPEN"),
            CodecContext::RouteRefresh => f.write_str("ROUTE-REFRESH"),
        }
    }
}

/// Framing errors (code 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("connection not synchronized (marker is not all ones)")]
    ConnectionNotSynchronized,
    #[error("bad message length {length}")]
    BadLength { length: u16 },
    #[error("bad message type {message_type}")]
    BadType { message_type: u8 },
}

/// OPEN errors (code 2). Peer AS and identifier checks against configuration happen in the
/// FSM, which builds these same variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported version {version}")]
    UnsupportedVersion { version: u8 },
    #[error("bad peer AS {asn}")]
    BadPeerAs { asn: u32 },
    #[error("bad BGP identifier {id}")]
    BadBgpIdentifier { id: Ipv4Addr },
    #[error("unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter { param_type: u8, parameter: Vec<u8> },
    #[error("unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    #[error("unsupported capability")]
    UnsupportedCapability { capabilities: Vec<u8> },
    #[error("optional parameters overrun the message")]
    MalformedOptionalParameters,
    #[error("malformed capability {code}")]
    MalformedCapability { code: u8, data: Vec<u8> },
    #[error("BGP role mismatch (ours {ours}, peer's {theirs})")]
    RoleMismatch { ours: u8, theirs: u8 },
}

/// UPDATE errors (code 3). As a `DecodeError` they reset the session; inside an
/// `AttributeFinding` they only describe what was discarded or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum UpdateError {
    #[error("malformed attribute list")]
    MalformedAttributeList,
    #[error("unrecognized well-known attribute")]
    UnrecognizedWellKnown { attribute: Vec<u8> },
    #[error("missing well-known attribute {type_code}")]
    MissingWellKnown { type_code: u8 },
    #[error("attribute flags error")]
    AttributeFlags { attribute: Vec<u8> },
    #[error("attribute length error")]
    AttributeLength { attribute: Vec<u8> },
    #[error("invalid ORIGIN")]
    InvalidOrigin { attribute: Vec<u8> },
    #[error("invalid NEXT_HOP")]
    InvalidNextHop { attribute: Vec<u8> },
    #[error("optional attribute error")]
    OptionalAttribute { attribute: Vec<u8> },
    #[error("invalid network field")]
    InvalidNetworkField,
    #[error("malformed AS_PATH")]
    MalformedAsPath,
}

/// ROUTE-REFRESH errors (code 7, RFC 7313).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefreshError {
    #[error("invalid message length")]
    InvalidLength { message: Vec<u8> },
}

/// What RFC 7606 says to do with a malformed attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributeAction {
    /// Drop the attribute, keep the routes.
    Discard,
    /// Keep the session, withdraw every prefix the UPDATE announced.
    TreatAsWithdraw,
    /// Send the NOTIFICATION and close (only used inside `DecodeError`, listed for callers
    /// that classify errors uniformly).
    SessionReset,
}

/// One attribute error the decoder survived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeFinding {
    pub type_code: u8,
    pub action: AttributeAction,
    pub error: UpdateError,
}

/// Errors building messages to send; they are our bugs or our configuration's, never
/// the peer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("IPv4 prefixes to announce but no IPv4 next hop")]
    MissingIpv4NextHop,
    #[error("IPv6 prefixes to announce but no IPv6 next hop")]
    MissingIpv6NextHop,
    #[error("path attributes take {size} bytes, leaving no room for a prefix")]
    AttributesTooLarge { size: usize },
    #[error("OPEN optional parameters take {size} bytes, more than fits")]
    OpenTooLarge { size: usize },
    #[error("graceful restart time {restart_time} does not fit in 12 bits")]
    RestartTimeTooLarge { restart_time: u16 },
    #[error("capability {code} is {size} bytes, more than 255")]
    CapabilityTooLarge { code: u8, size: usize },
    #[error("zettabgp: {0}")]
    Codec(String),
}

impl UpdateError {
    /// The UPDATE-message subcode and data.
    fn subcode_and_data(&self) -> (u8, Vec<u8>) {
        match self {
            UpdateError::MalformedAttributeList => {
                (codes::UPDATE_MALFORMED_ATTRIBUTE_LIST, Vec::new())
            }
            UpdateError::UnrecognizedWellKnown { attribute } => {
                (codes::UPDATE_UNRECOGNIZED_WELL_KNOWN, attribute.clone())
            }
            UpdateError::MissingWellKnown { type_code } => {
                (codes::UPDATE_MISSING_WELL_KNOWN, vec![*type_code])
            }
            UpdateError::AttributeFlags { attribute } => {
                (codes::UPDATE_ATTRIBUTE_FLAGS, attribute.clone())
            }
            UpdateError::AttributeLength { attribute } => {
                (codes::UPDATE_ATTRIBUTE_LENGTH, attribute.clone())
            }
            UpdateError::InvalidOrigin { attribute } => {
                (codes::UPDATE_INVALID_ORIGIN, attribute.clone())
            }
            UpdateError::InvalidNextHop { attribute } => {
                (codes::UPDATE_INVALID_NEXT_HOP, attribute.clone())
            }
            UpdateError::OptionalAttribute { attribute } => {
                (codes::UPDATE_OPTIONAL_ATTRIBUTE, attribute.clone())
            }
            UpdateError::InvalidNetworkField => (codes::UPDATE_INVALID_NETWORK_FIELD, Vec::new()),
            UpdateError::MalformedAsPath => (codes::UPDATE_MALFORMED_AS_PATH, Vec::new()),
        }
    }
}

impl OpenError {
    /// The OPEN-message subcode and data.
    fn subcode_and_data(&self) -> (u8, Vec<u8>) {
        match self {
            // RFC 4271 §6.2: data is the largest version we support.
            OpenError::UnsupportedVersion { .. } => {
                (codes::OPEN_UNSUPPORTED_VERSION, 4u16.to_be_bytes().to_vec())
            }
            OpenError::BadPeerAs { asn } => (
                codes::OPEN_BAD_PEER_AS,
                u16::try_from(*asn)
                    .unwrap_or(super::AS_TRANS)
                    .to_be_bytes()
                    .to_vec(),
            ),
            OpenError::BadBgpIdentifier { id } => {
                (codes::OPEN_BAD_BGP_IDENTIFIER, id.octets().to_vec())
            }
            OpenError::UnsupportedOptionalParameter { parameter, .. } => (
                codes::OPEN_UNSUPPORTED_OPTIONAL_PARAMETER,
                parameter.clone(),
            ),
            OpenError::UnacceptableHoldTime { hold_time } => (
                codes::OPEN_UNACCEPTABLE_HOLD_TIME,
                hold_time.to_be_bytes().to_vec(),
            ),
            // RFC 5492 §3: data is the list of capabilities we miss.
            OpenError::UnsupportedCapability { capabilities } => {
                (codes::OPEN_UNSUPPORTED_CAPABILITY, capabilities.clone())
            }
            OpenError::MalformedOptionalParameters => (codes::OPEN_UNSPECIFIC, Vec::new()),
            OpenError::MalformedCapability { code, data } => {
                let mut bytes = vec![*code, data.len().min(255) as u8];
                bytes.extend_from_slice(data.get(..data.len().min(255)).unwrap_or_default());
                (codes::OPEN_UNSPECIFIC, bytes)
            }
            OpenError::RoleMismatch { .. } => (codes::OPEN_ROLE_MISMATCH, Vec::new()),
        }
    }
}

impl From<&DecodeError> for Notification {
    fn from(error: &DecodeError) -> Self {
        match error {
            DecodeError::Header(HeaderError::ConnectionNotSynchronized) => Notification::new(
                codes::MESSAGE_HEADER,
                codes::HEADER_CONNECTION_NOT_SYNCHRONIZED,
                Vec::new(),
            ),
            DecodeError::Header(HeaderError::BadLength { length }) => Notification::new(
                codes::MESSAGE_HEADER,
                codes::HEADER_BAD_LENGTH,
                length.to_be_bytes().to_vec(),
            ),
            DecodeError::Header(HeaderError::BadType { message_type }) => Notification::new(
                codes::MESSAGE_HEADER,
                codes::HEADER_BAD_TYPE,
                vec![*message_type],
            ),
            DecodeError::Open(open) => {
                let (subcode, data) = open.subcode_and_data();
                Notification::new(codes::OPEN_MESSAGE, subcode, data)
            }
            DecodeError::Update(update) => {
                let (subcode, data) = update.subcode_and_data();
                Notification::new(codes::UPDATE_MESSAGE, subcode, data)
            }
            DecodeError::RouteRefresh(RouteRefreshError::InvalidLength { message }) => {
                Notification::new(
                    codes::ROUTE_REFRESH_MESSAGE,
                    codes::ROUTE_REFRESH_INVALID_LENGTH,
                    message.clone(),
                )
            }
            DecodeError::Codec { context, .. } => match context {
                CodecContext::Open => {
                    Notification::new(codes::OPEN_MESSAGE, codes::OPEN_UNSPECIFIC, Vec::new())
                }
                CodecContext::RouteRefresh => Notification::new(
                    codes::ROUTE_REFRESH_MESSAGE,
                    codes::ROUTE_REFRESH_INVALID_LENGTH,
                    Vec::new(),
                ),
            },
        }
    }
}

impl DecodeError {
    /// The NOTIFICATION to send before closing.
    pub fn to_notification(&self) -> Notification {
        Notification::from(self)
    }
}
