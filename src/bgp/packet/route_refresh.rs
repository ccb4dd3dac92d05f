//! ROUTE-REFRESH (RFC 2918) with the RFC 7313 subtype byte.
//!
//! Data flow: `decode_route_refresh` checks the body is exactly 4 bytes (else 7/1 with the
//! whole message as data, RFC 7313 §5), then lets zettabgp decode it under
//! `catch_unwind`; `encode_route_refresh` lets zettabgp write the body into a buffer of the
//! right size. Subtypes: 0 normal request, 1 BoRR, 2 EoRR; other subtypes are passed up
//! for the caller to ignore, as RFC 7313 asks.

use serde::{Deserialize, Serialize};
use zettabgp::prelude::BgpRouterefreshMessage;
use zettabgp::{BgpMessage, BgpSessionParams, BgpTransportMode};

use super::capability::Family;
use super::error::{CodecContext, DecodeError, EncodeError, RouteRefreshError};
use super::guard_zettabgp;
use super::header::{frame_message, MessageType};

/// A ROUTE-REFRESH request or marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRefresh {
    pub family: Family,
    /// 0 request, 1 beginning of route refresh, 2 end of route refresh.
    pub subtype: u8,
}

impl RouteRefresh {
    /// A plain request for `family`.
    pub fn request(family: Family) -> Self {
        RouteRefresh { family, subtype: 0 }
    }
}

/// Parameters zettabgp wants but does not read for this message.
fn dummy_params() -> BgpSessionParams {
    BgpSessionParams::new(
        0,
        0,
        BgpTransportMode::IPv4,
        std::net::Ipv4Addr::UNSPECIFIED,
        Vec::new(),
    )
}

/// Decode a ROUTE-REFRESH body.
pub fn decode_route_refresh(body: &[u8]) -> Result<RouteRefresh, DecodeError> {
    if body.len() != 4 {
        // RFC 7313 §5: the data is the complete offending message.
        let message = frame_message(MessageType::RouteRefresh, body);
        return Err(RouteRefreshError::InvalidLength { message }.into());
    }
    let params = dummy_params();
    let decoded = guard_zettabgp(CodecContext::RouteRefresh, || {
        let mut m = BgpRouterefreshMessage::new();
        m.decode_from(&params, body).map(|()| m)
    })?;
    Ok(RouteRefresh {
        family: Family {
            afi: decoded.afi,
            safi: decoded.safi,
        },
        subtype: decoded.subtype,
    })
}

/// Encode a whole ROUTE-REFRESH message.
pub fn encode_route_refresh(refresh: &RouteRefresh) -> Result<Vec<u8>, EncodeError> {
    let message = BgpRouterefreshMessage {
        afi: refresh.family.afi,
        safi: refresh.family.safi,
        subtype: refresh.subtype,
    };
    let mut body = [0u8; 4];
    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        message.encode_to(&dummy_params(), &mut body)
    }))
    .map_err(|_| EncodeError::Codec("ROUTE-REFRESH encoder panicked".into()))?
    .map_err(|e| EncodeError::Codec(e.to_string()))?;
    Ok(frame_message(
        MessageType::RouteRefresh,
        body.get(..written).unwrap_or_default(),
    ))
}
