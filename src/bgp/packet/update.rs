//! UPDATE messages (RFC 4271 §4.3) with MP_REACH/MP_UNREACH folded in (RFC 4760).
//!
//! Data flow: `decode_update` checks the two length fields (reset 3/1 when they overrun),
//! decodes the withdrawn routes and NLRI (reset 3/10 when a prefix is malformed), then
//! `attribute::decode_attributes`; it checks the mandatory attributes when routes are
//! announced (RFC 7606 §3.d: missing ones mean treat-as-withdraw) and returns the UPDATE
//! as received plus the findings. `DecodedUpdate::into_effective` applies them: with a
//! treat-as-withdraw finding every announced prefix becomes a withdrawal.
//!
//! End-of-RIB (RFC 4724 §2) is recognised: an empty UPDATE for IPv4 unicast, an UPDATE
//! holding only an empty MP_UNREACH for other families.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::attribute::{decode_attributes, type_code, PathAttributes};
use super::capability::{read_u16, Family};
use super::error::{AttributeAction, AttributeFinding, DecodeError, UpdateError};
use super::prefix::{decode_prefixes, PrefixFamily};
use super::WireOptions;

/// One UPDATE: withdrawals and announcements of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Classic withdrawn routes (IPv4) and MP_UNREACH prefixes.
    pub withdrawn: Vec<IpNetwork>,
    pub attributes: PathAttributes,
    /// Classic NLRI (IPv4) and MP_REACH prefixes.
    pub nlri: Vec<IpNetwork>,
    /// Set when this UPDATE is an End-of-RIB marker for that family.
    pub end_of_rib: Option<Family>,
}

impl Update {
    /// The next hop that applies to `prefix`: NEXT_HOP for IPv4 (MP_REACH's when there is
    /// no NEXT_HOP), the MP_REACH next hop for IPv6.
    pub fn next_hop_for(&self, prefix: &IpNetwork) -> Option<IpAddr> {
        self.attributes.next_hop_for(prefix)
    }
}

/// An UPDATE as received, and the attribute errors that were survived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedUpdate {
    pub update: Update,
    pub findings: Vec<AttributeFinding>,
}

impl DecodedUpdate {
    /// Whether RFC 7606 says to withdraw what this UPDATE announced.
    pub fn treat_as_withdraw(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.action == AttributeAction::TreatAsWithdraw)
    }

    /// The UPDATE to act on: as received, or with its announcements turned into
    /// withdrawals and its attributes dropped.
    pub fn into_effective(self) -> Update {
        if !self.treat_as_withdraw() {
            return self.update;
        }
        let Update {
            mut withdrawn,
            nlri,
            ..
        } = self.update;
        withdrawn.extend(nlri);
        Update {
            withdrawn,
            ..Update::default()
        }
    }
}

/// Decode an UPDATE body (after the 19-byte header).
pub fn decode_update(body: &[u8], options: &WireOptions) -> Result<DecodedUpdate, DecodeError> {
    let malformed = || DecodeError::from(UpdateError::MalformedAttributeList);
    let withdrawn_len = usize::from(read_u16(body.get(..2).ok_or_else(malformed)?, 0));
    let withdrawn_bytes = body.get(2..2 + withdrawn_len).ok_or_else(malformed)?;
    let attrs_at = 2 + withdrawn_len;
    let attrs_len = usize::from(read_u16(
        body.get(attrs_at..attrs_at + 2).ok_or_else(malformed)?,
        0,
    ));
    let attrs_bytes = body
        .get(attrs_at + 2..attrs_at + 2 + attrs_len)
        .ok_or_else(malformed)?;
    let nlri_bytes = body.get(attrs_at + 2 + attrs_len..).unwrap_or_default();

    let invalid_network = || DecodeError::from(UpdateError::InvalidNetworkField);
    let mut withdrawn =
        decode_prefixes(withdrawn_bytes, PrefixFamily::Ipv4).map_err(|_| invalid_network())?;
    let mut nlri =
        decode_prefixes(nlri_bytes, PrefixFamily::Ipv4).map_err(|_| invalid_network())?;
    let decoded = decode_attributes(attrs_bytes, options)?;
    let mut findings = decoded.findings;

    let classic_empty = withdrawn_bytes.is_empty() && nlri_bytes.is_empty();
    let end_of_rib = detect_end_of_rib(classic_empty, decoded.count, decoded.mp_unreach.as_ref());
    let announces_classic = !nlri.is_empty();
    let announces_mp = decoded
        .mp_reach
        .as_ref()
        .is_some_and(|r| !r.prefixes.is_empty());
    if announces_classic || announces_mp {
        let attributes = &decoded.attributes;
        let mut missing = Vec::new();
        if attributes.origin.is_none() {
            missing.push(type_code::ORIGIN);
        }
        if attributes.as_path.is_none() {
            missing.push(type_code::AS_PATH);
        }
        if announces_classic && attributes.next_hop.is_none() {
            missing.push(type_code::NEXT_HOP);
        }
        findings.extend(missing.into_iter().map(|code| AttributeFinding {
            type_code: code,
            action: AttributeAction::TreatAsWithdraw,
            error: UpdateError::MissingWellKnown { type_code: code },
        }));
    }
    if let Some(reach) = decoded.mp_reach {
        nlri.extend(reach.prefixes);
    }
    if let Some(unreach) = decoded.mp_unreach {
        withdrawn.extend(unreach.prefixes);
    }
    Ok(DecodedUpdate {
        update: Update {
            withdrawn,
            attributes: decoded.attributes,
            nlri,
            end_of_rib,
        },
        findings,
    })
}

/// End-of-RIB: an empty body (IPv4 unicast), or a body whose only attribute is an empty
/// MP_UNREACH.
fn detect_end_of_rib(
    classic_empty: bool,
    attribute_count: usize,
    mp_unreach: Option<&super::attribute::MpPrefixes>,
) -> Option<Family> {
    if !classic_empty {
        return None;
    }
    match (attribute_count, mp_unreach) {
        (0, _) => Some(Family::IPV4_UNICAST),
        (1, Some(unreach)) if unreach.prefixes.is_empty() => Some(unreach.family),
        _ => None,
    }
}
