//! OPEN messages (RFC 4271 §4.2) with RFC 9072 extended optional parameters.
//!
//! Data flow: `decode_open` checks the fixed fields (version 4 → else 2/1, hold time 0 or
//! ≥ 3 → else 2/6, identifier non-zero → else 2/3, AS non-zero → else 2/2), walks the
//! optional parameters itself (zettabgp 0.6 rejects any parameter but type 2 and ignores
//! the parameters-length byte), and passes each capabilities parameter to
//! `capability::decode_capabilities`. `encode_open` lets zettabgp write the fixed fields and
//! the leading capabilities it encodes correctly, then appends the others and fixes the
//! parameters-length byte; when the parameters exceed 255 bytes it writes the RFC 9072
//! form itself.
//!
//! Departures: the parameters block must end exactly at the end of the message (2/0 when it
//! does not); checks against configuration (peer AS, our own identifier) are the FSM's.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use zettabgp::prelude::BgpOpenMessage;
use zettabgp::{BgpMessage, BgpSessionParams, BgpTransportMode};

use super::capability::{decode_capabilities, encode_capability, to_zettabgp, Capability};
use super::error::{DecodeError, EncodeError, HeaderError, OpenError};
use super::header::{frame_message, MessageType, HEADER_LEN, MAX_MESSAGE_LEN};
use super::AS_TRANS;

/// Optional parameter type for capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072: a non-extended length of 255 followed by type 255 announces the extended form.
const PARAM_EXTENDED_MARKER: u8 = 255;
/// Version, my AS, hold time, BGP identifier, parameters length.
const FIXED_LEN: usize = 10;

/// A decoded OPEN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// The speaker's AS: the 4-octet AS capability when present, else the 2-octet field.
    pub asn: u32,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    /// Every capability, in wire order, from every capabilities parameter.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The 4-octet AS capability's value, if advertised.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    /// Whether a capability equal to `cap` was advertised.
    pub fn has_capability(&self, cap: &Capability) -> bool {
        self.capabilities.contains(cap)
    }
}

/// Decode an OPEN body (after the 19-byte header).
pub fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let fixed = body.get(..FIXED_LEN).ok_or(HeaderError::BadLength {
        length: (body.len() + HEADER_LEN) as u16,
    })?;
    let &[version, as_hi, as_lo, hold_hi, hold_lo, id0, id1, id2, id3, params_len] = fixed else {
        return Err(OpenError::MalformedOptionalParameters.into());
    };
    if version != 4 {
        return Err(OpenError::UnsupportedVersion { version }.into());
    }
    let hold_time = u16::from_be_bytes([hold_hi, hold_lo]);
    if hold_time == 1 || hold_time == 2 {
        return Err(OpenError::UnacceptableHoldTime { hold_time }.into());
    }
    let bgp_id = Ipv4Addr::new(id0, id1, id2, id3);
    if bgp_id.is_unspecified() {
        return Err(OpenError::BadBgpIdentifier { id: bgp_id }.into());
    }
    let params = body.get(FIXED_LEN..).unwrap_or_default();
    let capabilities = decode_optional_parameters(params_len, params)?;
    let two_octet_as = u32::from(u16::from_be_bytes([as_hi, as_lo]));
    let asn = capabilities
        .iter()
        .find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
        .unwrap_or(two_octet_as);
    if asn == 0 {
        return Err(OpenError::BadPeerAs { asn }.into());
    }
    Ok(Open {
        asn,
        hold_time,
        bgp_id,
        capabilities,
    })
}

/// Walk the optional parameters (classic or RFC 9072 form) and collect capabilities.
fn decode_optional_parameters(
    params_len: u8,
    params: &[u8],
) -> Result<Vec<Capability>, DecodeError> {
    let extended = params_len == 255 && params.first() == Some(&PARAM_EXTENDED_MARKER);
    let (block, length_size) = if extended {
        let len_bytes = params
            .get(1..3)
            .ok_or(OpenError::MalformedOptionalParameters)?;
        let len = usize::from(super::capability::read_u16(len_bytes, 0));
        if params.len() != 3 + len {
            return Err(OpenError::MalformedOptionalParameters.into());
        }
        (params.get(3..).unwrap_or_default(), 2)
    } else {
        if params.len() != usize::from(params_len) {
            return Err(OpenError::MalformedOptionalParameters.into());
        }
        (params, 1)
    };
    let mut caps = Vec::new();
    let mut rest = block;
    while !rest.is_empty() {
        let param_type = rest
            .first()
            .copied()
            .ok_or(OpenError::MalformedOptionalParameters)?;
        let len = match length_size {
            2 => usize::from(super::capability::read_u16(rest, 1)),
            _ => usize::from(
                rest.get(1)
                    .copied()
                    .ok_or(OpenError::MalformedOptionalParameters)?,
            ),
        };
        let header = 1 + length_size;
        if rest.len() < header + len {
            return Err(OpenError::MalformedOptionalParameters.into());
        }
        let value = rest.get(header..header + len).unwrap_or_default();
        if param_type != PARAM_CAPABILITIES {
            return Err(OpenError::UnsupportedOptionalParameter {
                param_type,
                parameter: rest.get(..header + len).unwrap_or_default().to_vec(),
            }
            .into());
        }
        caps.extend(decode_capabilities(value)?);
        rest = rest.get(header + len..).unwrap_or_default();
    }
    Ok(caps)
}

/// Encode a whole OPEN message.
pub fn encode_open(open: &Open) -> Result<Vec<u8>, EncodeError> {
    // zettabgp writes the leading run of capabilities it encodes exactly as we would; we
    // write the rest, so the wire order is the caller's order.
    let mut zetta_caps = Vec::new();
    let mut zetta_params_len = 0usize;
    let mut own_params = Vec::new();
    let mut all_tlvs = Vec::new();
    let mut in_leading_run = true;
    for cap in &open.capabilities {
        let tlv = encode_capability(cap)?;
        match to_zettabgp(cap).filter(|_| in_leading_run) {
            Some(zcap) => {
                zetta_params_len += 2 + tlv.len();
                zetta_caps.push(zcap);
            }
            None => {
                in_leading_run = false;
                own_params.push(PARAM_CAPABILITIES);
                own_params.push(tlv.len() as u8);
                own_params.extend_from_slice(&tlv);
            }
        }
        all_tlvs.push(tlv);
    }
    let params_len = zetta_params_len + own_params.len();
    let body = if params_len <= 255 {
        let mut body = encode_open_with_zettabgp(open, zetta_caps, zetta_params_len)?;
        body.extend_from_slice(&own_params);
        if let Some(len_byte) = body.get_mut(FIXED_LEN - 1) {
            *len_byte = params_len as u8;
        }
        body
    } else {
        encode_open_extended(open, &all_tlvs)?
    };
    if body.len() + HEADER_LEN > MAX_MESSAGE_LEN {
        return Err(EncodeError::OpenTooLarge { size: body.len() });
    }
    Ok(frame_message(MessageType::Open, &body))
}

/// zettabgp writes the fixed fields (AS_TRANS for a 4-octet AS) and one parameter per
/// capability into a buffer sized to exactly what it will write.
fn encode_open_with_zettabgp(
    open: &Open,
    caps: Vec<zettabgp::BgpCapability>,
    params_len: usize,
) -> Result<Vec<u8>, EncodeError> {
    let message = BgpOpenMessage {
        as_num: open.asn,
        hold_time: open.hold_time,
        router_id: open.bgp_id,
        caps,
    };
    let params = BgpSessionParams::new(
        open.asn,
        open.hold_time,
        BgpTransportMode::IPv4,
        open.bgp_id,
        Vec::new(),
    );
    let mut buf = vec![0u8; FIXED_LEN + params_len];
    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        message.encode_to(&params, &mut buf)
    }))
    .map_err(|_| EncodeError::Codec("OPEN encoder panicked".into()))?
    .map_err(|e| EncodeError::Codec(e.to_string()))?;
    if written != buf.len() {
        return Err(EncodeError::Codec(format!(
            "OPEN encoder wrote {written} bytes, expected {}",
            buf.len()
        )));
    }
    Ok(buf)
}

/// RFC 9072 form: parameters length 255, type 255, 2-byte extended length, then one
/// capabilities parameter with a 2-byte length.
fn encode_open_extended(open: &Open, tlvs: &[Vec<u8>]) -> Result<Vec<u8>, EncodeError> {
    let caps_len: usize = tlvs.iter().map(Vec::len).sum();
    let block_len = 3 + caps_len;
    let block_len16 =
        u16::try_from(block_len).map_err(|_| EncodeError::OpenTooLarge { size: block_len })?;
    let mut body = Vec::with_capacity(FIXED_LEN + 3 + block_len);
    body.push(4);
    body.extend_from_slice(&u16::try_from(open.asn).unwrap_or(AS_TRANS).to_be_bytes());
    body.extend_from_slice(&open.hold_time.to_be_bytes());
    body.extend_from_slice(&open.bgp_id.octets());
    body.push(255);
    body.push(PARAM_EXTENDED_MARKER);
    body.extend_from_slice(&block_len16.to_be_bytes());
    body.push(PARAM_CAPABILITIES);
    body.extend_from_slice(&(caps_len as u16).to_be_bytes());
    for tlv in tlvs {
        body.extend_from_slice(tlv);
    }
    Ok(body)
}
