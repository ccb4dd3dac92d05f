//! Capabilities advertised in OPEN (RFC 5492), parsed one TLV at a time.
//!
//! Data flow: `decode_capabilities` walks the TLVs of one capabilities optional parameter.
//! For the codes zettabgp 0.6 decodes correctly (1 multiprotocol, 2 route refresh,
//! 65 4-octet AS, 69 add-path, 70 enhanced route refresh) we check the length first and
//! then hand that single TLV to `zettabgp::BgpCapability::from_buffer` under
//! `catch_unwind`. The codes zettabgp rejects or lacks are parsed here: 6 extended message
//! (RFC 8654), 9 BGP role (RFC 9234), 64 graceful restart (RFC 4724; zettabgp drops the
//! N flag), 73 FQDN (zettabgp rejects any non-empty domain name) and every unknown code,
//! which is kept raw so the session can log it.
//!
//! Encoding: `encode_capability` writes any capability; `to_zettabgp` converts the subset
//! zettabgp encodes byte-identically, which `encode_open` hands to zettabgp.
//!
//! Departures: a known capability with a bad length is a 2/0 error (RFC 5492 leaves it
//! open); an FQDN capability without its domain-length byte is accepted with an empty
//! domain (older FRR releases sent that).

use serde::{Deserialize, Serialize};
use zettabgp::{BgpCapAddPath, BgpCapability};

use super::error::{CodecContext, DecodeError, EncodeError, OpenError};
use super::guard_zettabgp;

/// Capability codes (IANA "Capability Codes").
pub mod code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const ROLE: u8 = 9;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const FQDN: u8 = 73;
}

/// An address family: AFI and SAFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Family::IPV4_UNICAST => f.write_str("ipv4-unicast"),
            Family::IPV6_UNICAST => f.write_str("ipv6-unicast"),
            Family { afi, safi } => write!(f, "afi {afi} safi {safi}"),
        }
    }
}

/// One family in a graceful-restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GracefulRestartFamily {
    pub family: Family,
    /// The F bit: the speaker kept its forwarding state for this family across the restart.
    pub forwarding_state: bool,
}

/// Graceful restart (RFC 4724 §3, N bit from RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GracefulRestart {
    /// The R bit: the speaker has restarted.
    pub restarting: bool,
    /// The N bit: graceful restart also covers NOTIFICATIONs.
    pub notification: bool,
    /// Seconds the peer should keep our routes; 12 bits.
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

/// One family in an add-path capability (RFC 7911).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddPathFamily {
    pub family: Family,
    pub send: bool,
    pub receive: bool,
}

/// A capability as routed understands it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capability {
    Multiprotocol(Family),
    RouteRefresh,
    ExtendedMessage,
    /// RFC 9234 role: 0 provider, 1 route server, 2 route server client, 3 customer, 4 peer.
    Role(u8),
    GracefulRestart(GracefulRestart),
    FourOctetAs(u32),
    AddPath(Vec<AddPathFamily>),
    EnhancedRouteRefresh,
    Fqdn {
        hostname: String,
        domain: String,
    },
    Unknown {
        code: u8,
        data: Vec<u8>,
    },
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => code::MULTIPROTOCOL,
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::ExtendedMessage => code::EXTENDED_MESSAGE,
            Capability::Role(_) => code::ROLE,
            Capability::GracefulRestart(_) => code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Capability::AddPath(_) => code::ADD_PATH,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::Fqdn { .. } => code::FQDN,
            Capability::Unknown { code, .. } => *code,
        }
    }
}

/// Decode the TLVs of one capabilities optional parameter.
pub fn decode_capabilities(buf: &[u8]) -> Result<Vec<Capability>, DecodeError> {
    let mut caps = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let (&cap_code, after_code) = rest
            .split_first()
            .ok_or(OpenError::MalformedOptionalParameters)?;
        let (&len, after_len) = after_code
            .split_first()
            .ok_or(OpenError::MalformedOptionalParameters)?;
        let data = after_len
            .get(..usize::from(len))
            .ok_or(OpenError::MalformedOptionalParameters)?;
        let tlv = rest
            .get(..2 + usize::from(len))
            .ok_or(OpenError::MalformedOptionalParameters)?;
        caps.push(decode_capability(cap_code, data, tlv)?);
        rest = after_len.get(usize::from(len)..).unwrap_or_default();
    }
    Ok(caps)
}

/// Decode one capability from its code, value and whole TLV.
fn decode_capability(cap_code: u8, data: &[u8], tlv: &[u8]) -> Result<Capability, DecodeError> {
    let malformed = || OpenError::MalformedCapability {
        code: cap_code,
        data: data.to_vec(),
    };
    let length_ok = match cap_code {
        code::MULTIPROTOCOL | code::FOUR_OCTET_AS => data.len() == 4,
        code::ROUTE_REFRESH | code::ENHANCED_ROUTE_REFRESH | code::EXTENDED_MESSAGE => {
            data.is_empty()
        }
        code::ADD_PATH => !data.is_empty() && data.len() % 4 == 0,
        code::ROLE => data.len() == 1,
        code::GRACEFUL_RESTART => data.len() >= 2 && (data.len() - 2) % 4 == 0,
        code::FQDN => !data.is_empty(),
        _ => true,
    };
    if !length_ok {
        return Err(malformed().into());
    }
    match cap_code {
        code::MULTIPROTOCOL
        | code::ROUTE_REFRESH
        | code::FOUR_OCTET_AS
        | code::ADD_PATH
        | code::ENHANCED_ROUTE_REFRESH => decode_with_zettabgp(cap_code, data, tlv),
        code::EXTENDED_MESSAGE => Ok(Capability::ExtendedMessage),
        code::ROLE => Ok(Capability::Role(data.first().copied().unwrap_or_default())),
        code::GRACEFUL_RESTART => Ok(Capability::GracefulRestart(decode_graceful_restart(data))),
        code::FQDN => decode_fqdn(data).ok_or_else(|| malformed().into()),
        _ => Ok(Capability::Unknown {
            code: cap_code,
            data: data.to_vec(),
        }),
    }
}

/// Let zettabgp decode a TLV whose length we checked, then convert its answer.
fn decode_with_zettabgp(cap_code: u8, data: &[u8], tlv: &[u8]) -> Result<Capability, DecodeError> {
    let (decoded, _consumed) =
        guard_zettabgp(CodecContext::Open, || BgpCapability::from_buffer(tlv))?;
    match decoded {
        Ok(cap) => Ok(
            convert_from_zettabgp(cap).unwrap_or_else(|| Capability::Unknown {
                code: cap_code,
                data: data.to_vec(),
            }),
        ),
        // zettabgp does not know this AFI/SAFI (or the reserved byte is set).
        Err(_) if cap_code == code::MULTIPROTOCOL => Ok(Capability::Multiprotocol(Family {
            afi: read_u16(data, 0),
            safi: data.get(3).copied().unwrap_or_default(),
        })),
        Err((code, data)) => Ok(Capability::Unknown { code, data }),
    }
}

/// Our view of a zettabgp capability, for the codes we let it decode.
fn convert_from_zettabgp(cap: BgpCapability) -> Option<Capability> {
    match cap {
        BgpCapability::CapRR => Some(Capability::RouteRefresh),
        BgpCapability::CapEnhancedRR => Some(Capability::EnhancedRouteRefresh),
        BgpCapability::CapASN32(asn) => Some(Capability::FourOctetAs(asn)),
        BgpCapability::CapAddPath(families) => Some(Capability::AddPath(
            families
                .iter()
                .map(|f| AddPathFamily {
                    family: Family {
                        afi: f.afi,
                        safi: f.safi,
                    },
                    send: f.send,
                    receive: f.receive,
                })
                .collect(),
        )),
        other => other
            .afi_safi()
            .map(|(afi, safi)| Capability::Multiprotocol(Family { afi, safi })),
    }
}

/// The zettabgp form of a capability, when zettabgp encodes it exactly as we would.
pub(crate) fn to_zettabgp(cap: &Capability) -> Option<BgpCapability> {
    match cap {
        Capability::Multiprotocol(family) => BgpCapability::from_afi_safi(family.afi, family.safi),
        Capability::RouteRefresh => Some(BgpCapability::CapRR),
        Capability::EnhancedRouteRefresh => Some(BgpCapability::CapEnhancedRR),
        Capability::FourOctetAs(asn) => Some(BgpCapability::CapASN32(*asn)),
        Capability::AddPath(families) if families.len() <= 63 => Some(BgpCapability::CapAddPath(
            families
                .iter()
                .map(|f| BgpCapAddPath {
                    afi: f.family.afi,
                    safi: f.family.safi,
                    send: f.send,
                    receive: f.receive,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// Graceful restart: 4 flag bits, 12 bits of restart time, then (AFI, SAFI, flags) tuples.
fn decode_graceful_restart(data: &[u8]) -> GracefulRestart {
    let head = read_u16(data, 0);
    let families = data
        .get(2..)
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|tuple| GracefulRestartFamily {
            family: Family {
                afi: read_u16(tuple, 0),
                safi: tuple.get(2).copied().unwrap_or_default(),
            },
            forwarding_state: tuple.get(3).is_some_and(|flags| flags & 0x80 != 0),
        })
        .collect();
    GracefulRestart {
        restarting: head & 0x8000 != 0,
        notification: head & 0x4000 != 0,
        restart_time: head & 0x0fff,
        families,
    }
}

/// FQDN (draft-walton-bgp-hostname-capability): length-prefixed hostname and domain.
fn decode_fqdn(data: &[u8]) -> Option<Capability> {
    let (&host_len, rest) = data.split_first()?;
    let hostname = rest.get(..usize::from(host_len))?;
    let rest = rest.get(usize::from(host_len)..)?;
    let domain = match rest.split_first() {
        None => &[][..],
        Some((&domain_len, rest)) => rest.get(..usize::from(domain_len))?,
    };
    Some(Capability::Fqdn {
        hostname: String::from_utf8_lossy(hostname).into_owned(),
        domain: String::from_utf8_lossy(domain).into_owned(),
    })
}

/// Encode one capability as a TLV (code, length, value).
pub fn encode_capability(cap: &Capability) -> Result<Vec<u8>, EncodeError> {
    let value = match cap {
        Capability::Multiprotocol(family) => {
            let [hi, lo] = family.afi.to_be_bytes();
            vec![hi, lo, 0, family.safi]
        }
        Capability::RouteRefresh | Capability::ExtendedMessage => Vec::new(),
        Capability::EnhancedRouteRefresh => Vec::new(),
        Capability::Role(role) => vec![*role],
        Capability::GracefulRestart(gr) => encode_graceful_restart(gr)?,
        Capability::FourOctetAs(asn) => asn.to_be_bytes().to_vec(),
        Capability::AddPath(families) => families
            .iter()
            .flat_map(|f| {
                let [hi, lo] = f.family.afi.to_be_bytes();
                [
                    hi,
                    lo,
                    f.family.safi,
                    u8::from(f.receive) | (u8::from(f.send) << 1),
                ]
            })
            .collect(),
        Capability::Fqdn { hostname, domain } => {
            let host = hostname.as_bytes();
            let dom = domain.as_bytes();
            let host = host.get(..host.len().min(255)).unwrap_or_default();
            let dom = dom.get(..dom.len().min(255)).unwrap_or_default();
            let mut v = vec![host.len() as u8];
            v.extend_from_slice(host);
            v.push(dom.len() as u8);
            v.extend_from_slice(dom);
            v
        }
        Capability::Unknown { data, .. } => data.clone(),
    };
    let len = u8::try_from(value.len()).map_err(|_| EncodeError::CapabilityTooLarge {
        code: cap.code(),
        size: value.len(),
    })?;
    let mut tlv = Vec::with_capacity(2 + value.len());
    tlv.push(cap.code());
    tlv.push(len);
    tlv.extend_from_slice(&value);
    Ok(tlv)
}

/// The value of a graceful-restart capability.
fn encode_graceful_restart(gr: &GracefulRestart) -> Result<Vec<u8>, EncodeError> {
    if gr.restart_time > 0x0fff {
        return Err(EncodeError::RestartTimeTooLarge {
            restart_time: gr.restart_time,
        });
    }
    let head = gr.restart_time
        | if gr.restarting { 0x8000 } else { 0 }
        | if gr.notification { 0x4000 } else { 0 };
    let mut v = head.to_be_bytes().to_vec();
    for f in &gr.families {
        v.extend_from_slice(&f.family.afi.to_be_bytes());
        v.push(f.family.safi);
        v.push(if f.forwarding_state { 0x80 } else { 0 });
    }
    Ok(v)
}

/// Big-endian u16 at `at`, 0 when out of range (callers have checked lengths).
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    match buf.get(at..at + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}
