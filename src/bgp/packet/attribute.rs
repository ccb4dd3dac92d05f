//! Path attributes (RFC 4271 §4.3/§5, RFC 4760, RFC 6793, RFC 1997, RFC 4360, RFC 8092,
//! RFC 4456) decoded by us, with RFC 7606 error handling.
//!
//! Data flow: `decode_attributes` walks the attribute block of one UPDATE. Framing errors
//! (a header or a value running past the block) and malformed MP_REACH/MP_UNREACH reset the
//! session; every other malformed attribute becomes an `AttributeFinding` with the RFC 7606
//! action (treat-as-withdraw or discard) and decoding goes on. zettabgp 0.6 never sees an
//! attribute: its attribute decoders panic on several malformed inputs (COMMUNITIES not a
//! multiple of 4, short MP_REACH/MP_UNREACH, ORIGINATOR_ID under 4 bytes, AS_PATH `[2,1,0]`; the
//! full list is in docs/bgp.md) and reject the whole UPDATE on any error.
//!
//! Departures from RFC 7606:
//! - §4 lets a receiver treat an attribute-length overrun as treat-as-withdraw when no
//!   MP_REACH/MP_UNREACH could be hidden behind it; we always reset (3/1), because a
//!   withdrawal we failed to read would leave a stale route installed.
//! - AS4_PATH / AS4_AGGREGATOR are kept raw in `other` and not merged (RFC 6793 §4.2.3);
//!   routed's peers all speak 4-octet AS.
//! - LOCAL_PREF from an eBGP peer is kept; the session layer, which knows the peer type,
//!   drops it (RFC 7606 §7.5).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::capability::{read_u16, Family};
use super::error::{AttributeAction, AttributeFinding, DecodeError, UpdateError};
use super::prefix::{decode_prefixes, PrefixFamily};
use super::WireOptions;

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// Attribute flag bits.
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

/// AS_PATH segment types (RFC 4271, RFC 5065).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentKind {
    Set,
    Sequence,
    ConfedSequence,
    ConfedSet,
}

impl SegmentKind {
    /// The kind from its wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(SegmentKind::Set),
            2 => Some(SegmentKind::Sequence),
            3 => Some(SegmentKind::ConfedSequence),
            4 => Some(SegmentKind::ConfedSet),
            _ => None,
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            SegmentKind::Set => 1,
            SegmentKind::Sequence => 2,
            SegmentKind::ConfedSequence => 3,
            SegmentKind::ConfedSet => 4,
        }
    }
}

/// One AS_PATH segment; ASNs are always held as 4 octets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsSegment {
    pub kind: SegmentKind,
    pub asns: Vec<u32>,
}

/// An AS_PATH.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE (empty for no ASNs).
    pub fn from_sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }
    }

    /// Path length for best-path selection (RFC 4271 §9.1.2.2: a set counts 1,
    /// confederation segments 0).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => 0,
            })
            .sum()
    }

    /// Whether `asn` appears anywhere (loop detection).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// How many times `asn` appears (loop detection with `allow local as`).
    pub fn occurrences(&self, asn: u32) -> usize {
        self.segments
            .iter()
            .map(|s| s.asns.iter().filter(|a| **a == asn).count())
            .sum()
    }

    /// The neighbouring AS: first ASN of a leading AS_SEQUENCE.
    pub fn first_asn(&self) -> Option<u32> {
        let first = self.segments.first()?;
        match first.kind {
            SegmentKind::Sequence => first.asns.first().copied(),
            _ => None,
        }
    }

    /// Whether any ASN needs 4 octets.
    pub fn has_four_octet_asn(&self) -> bool {
        self.segments
            .iter()
            .flat_map(|s| &s.asns)
            .any(|&a| a > 0xffff)
    }
}

/// AGGREGATOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A large community (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

/// The next hop from MP_REACH_NLRI: IPv6 global plus optional link-local (RFC 2545),
/// or IPv4 for IPv4 unicast carried in MP_REACH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MpNextHop {
    Ipv4(Ipv4Addr),
    Ipv6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// An attribute kept as bytes: unknown optional transitive ones, AS4_PATH, AS4_AGGREGATOR.
/// `flags` are as received; whoever re-advertises one must set `flag::PARTIAL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// Every path attribute routed reads or writes. MP_REACH/MP_UNREACH are not here: their
/// prefixes are folded into `Update::nlri` / `Update::withdrawn` and their next hop is
/// `mp_next_hop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    /// NEXT_HOP, for IPv4 prefixes in the classic NLRI field.
    pub next_hop: Option<Ipv4Addr>,
    /// MP_REACH_NLRI next hop, for prefixes carried there (IPv6).
    pub mp_next_hop: Option<MpNextHop>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<u32>,
    pub extended_communities: Vec<u64>,
    pub large_communities: Vec<LargeCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub other: Vec<RawAttribute>,
}

impl PathAttributes {
    /// The next hop that applies to `prefix`: NEXT_HOP for IPv4 (MP_REACH's when there is
    /// no NEXT_HOP), the MP_REACH next hop for IPv6.
    pub fn next_hop_for(&self, prefix: &IpNetwork) -> Option<IpAddr> {
        let mp = self.mp_next_hop.map(|nh| match nh {
            MpNextHop::Ipv4(v4) => IpAddr::V4(v4),
            MpNextHop::Ipv6 { global, .. } => IpAddr::V6(global),
        });
        match prefix {
            IpNetwork::V4(_) => self.next_hop.map(IpAddr::V4).or(mp),
            IpNetwork::V6(_) => mp,
        }
    }
}

/// Prefixes reached or withdrawn through MP_REACH / MP_UNREACH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MpPrefixes {
    pub family: Family,
    pub prefixes: Vec<IpNetwork>,
}

/// What `decode_attributes` found.
#[derive(Debug, Default)]
pub(crate) struct DecodedAttributes {
    pub attributes: PathAttributes,
    pub mp_reach: Option<MpPrefixes>,
    pub mp_unreach: Option<MpPrefixes>,
    pub findings: Vec<AttributeFinding>,
    /// How many attributes were present (for End-of-RIB detection).
    pub count: usize,
}

/// One attribute as found on the wire.
struct WireAttribute<'a> {
    flags: u8,
    type_code: u8,
    value: &'a [u8],
    /// Flags, type, length and value: the data of a NOTIFICATION about it.
    whole: &'a [u8],
}

/// Decode an attribute block. Errors are session resets; findings are the rest.
pub(crate) fn decode_attributes(
    buf: &[u8],
    options: &WireOptions,
) -> Result<DecodedAttributes, DecodeError> {
    let mut out = DecodedAttributes::default();
    let mut seen = [false; 256];
    let mut rest = buf;
    while !rest.is_empty() {
        let (attr, after) = split_attribute(rest)?;
        rest = after;
        out.count += 1;
        let seen_before = seen
            .get_mut(usize::from(attr.type_code))
            .map(|s| std::mem::replace(s, true))
            .unwrap_or(false);
        let is_mp = attr.type_code == type_code::MP_REACH_NLRI
            || attr.type_code == type_code::MP_UNREACH_NLRI;
        if seen_before {
            // RFC 7606 §3.g: repeated MP attributes reset, others: keep the first.
            if is_mp {
                return Err(UpdateError::MalformedAttributeList.into());
            }
            out.findings.push(AttributeFinding {
                type_code: attr.type_code,
                action: AttributeAction::Discard,
                error: UpdateError::MalformedAttributeList,
            });
            continue;
        }
        if is_mp {
            decode_mp_attribute(&attr, &mut out)?;
            continue;
        }
        if let Err((action, error)) = decode_attribute(&attr, options, &mut out.attributes) {
            if action == AttributeAction::SessionReset {
                return Err(error.into());
            }
            out.findings.push(AttributeFinding {
                type_code: attr.type_code,
                action,
                error,
            });
        }
    }
    Ok(out)
}

/// Cut the next attribute off the block.
fn split_attribute(buf: &[u8]) -> Result<(WireAttribute<'_>, &[u8]), DecodeError> {
    let malformed = || DecodeError::from(UpdateError::MalformedAttributeList);
    let &[flags, type_code, ..] = buf else {
        return Err(malformed());
    };
    let (header_len, value_len) = if flags & flag::EXTENDED_LENGTH != 0 {
        let len_bytes = buf.get(2..4).ok_or_else(malformed)?;
        (4, usize::from(read_u16(len_bytes, 0)))
    } else {
        (3, usize::from(*buf.get(2).ok_or_else(malformed)?))
    };
    let whole = buf.get(..header_len + value_len).ok_or_else(malformed)?;
    let value = whole.get(header_len..).unwrap_or_default();
    let rest = buf.get(header_len + value_len..).unwrap_or_default();
    Ok((
        WireAttribute {
            flags,
            type_code,
            value,
            whole,
        },
        rest,
    ))
}

/// (optional, transitive) as RFC 4271 and later RFCs fix them, for known attributes.
fn expected_flags(code: u8) -> Option<(bool, bool)> {
    use type_code::*;
    match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some((false, true)),
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            Some((true, false))
        }
        AGGREGATOR | COMMUNITIES | EXTENDED_COMMUNITIES | AS4_PATH | AS4_AGGREGATOR
        | LARGE_COMMUNITIES => Some((true, true)),
        _ => None,
    }
}

/// RFC 7606 §7: what to do when a known attribute is malformed.
fn action_for(code: u8) -> AttributeAction {
    use type_code::*;
    match code {
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => AttributeAction::Discard,
        MP_REACH_NLRI | MP_UNREACH_NLRI => AttributeAction::SessionReset,
        _ => AttributeAction::TreatAsWithdraw,
    }
}

type AttributeResult = Result<(), (AttributeAction, UpdateError)>;

/// What a per-attribute decoder reads: the attribute as received, the session's options and
/// the RFC 7606 action to take if it is malformed.
struct AttributeInput<'a> {
    attr: &'a WireAttribute<'a>,
    options: &'a WireOptions,
    action: AttributeAction,
}

impl AttributeInput<'_> {
    /// The attribute's value, without its header.
    fn value(&self) -> &[u8] {
        self.attr.value
    }

    /// The finding for a malformed attribute: `make` gets the whole attribute (the data of
    /// the NOTIFICATION about it).
    fn error(&self, make: impl FnOnce(Vec<u8>) -> UpdateError) -> (AttributeAction, UpdateError) {
        (self.action, make(self.attr.whole.to_vec()))
    }

    /// The finding for a value of the wrong length.
    fn length_error(&self) -> (AttributeAction, UpdateError) {
        self.error(|attribute| UpdateError::AttributeLength { attribute })
    }

    /// A value of one or more `size`-byte items, each decoded by `item` (RFC 7606: a zero
    /// length or a remainder is a length error).
    fn decode_list<T>(
        &self,
        size: usize,
        item: impl Fn(&[u8]) -> T,
    ) -> Result<Vec<T>, (AttributeAction, UpdateError)> {
        let items = chunks(self.value(), size).ok_or_else(|| self.length_error())?;
        Ok(items.map(item).collect())
    }
}

/// Decode one attribute other than MP_REACH / MP_UNREACH into `attrs`: check its flags, then
/// hand it to the decoder for its type code.
fn decode_attribute(
    attr: &WireAttribute<'_>,
    options: &WireOptions,
    attrs: &mut PathAttributes,
) -> AttributeResult {
    use type_code::*;
    let optional = attr.flags & flag::OPTIONAL != 0;
    let transitive = attr.flags & flag::TRANSITIVE != 0;
    let Some(expected) = expected_flags(attr.type_code) else {
        return keep_unknown(attr, optional, transitive, attrs);
    };
    let input = AttributeInput {
        attr,
        options,
        action: action_for(attr.type_code),
    };
    if expected != (optional, transitive) {
        return Err(input.error(|attribute| UpdateError::AttributeFlags { attribute }));
    }
    match attr.type_code {
        ORIGIN => decode_origin(&input, attrs),
        AS_PATH => decode_as_path_attribute(&input, attrs),
        NEXT_HOP => decode_next_hop(&input, attrs),
        MULTI_EXIT_DISC => decode_med(&input, attrs),
        LOCAL_PREF => decode_local_pref(&input, attrs),
        ATOMIC_AGGREGATE => decode_atomic_aggregate(&input, attrs),
        AGGREGATOR => decode_aggregator(&input, attrs),
        COMMUNITIES => decode_communities(&input, attrs),
        ORIGINATOR_ID => decode_originator_id(&input, attrs),
        CLUSTER_LIST => decode_cluster_list(&input, attrs),
        EXTENDED_COMMUNITIES => decode_extended_communities(&input, attrs),
        LARGE_COMMUNITIES => decode_large_communities(&input, attrs),
        AS4_PATH => decode_as4_path(&input, attrs),
        AS4_AGGREGATOR => decode_as4_aggregator(&input, attrs),
        // MP_REACH / MP_UNREACH go to `decode_mp_attribute` and never reach here.
        _ => keep_known_raw(&input, attrs),
    }
}

/// ORIGIN: one byte, IGP, EGP or INCOMPLETE.
fn decode_origin(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    let &[value] = input.value() else {
        return Err(input.length_error());
    };
    attrs.origin = Some(match value {
        0 => Origin::Igp,
        1 => Origin::Egp,
        2 => Origin::Incomplete,
        _ => return Err(input.error(|attribute| UpdateError::InvalidOrigin { attribute })),
    });
    Ok(())
}

/// AS_PATH, with 2- or 4-octet ASNs as the session negotiated.
fn decode_as_path_attribute(
    input: &AttributeInput<'_>,
    attrs: &mut PathAttributes,
) -> AttributeResult {
    let as_size = if input.options.four_octet_as { 4 } else { 2 };
    let path = decode_as_path(input.value(), as_size)
        .ok_or((input.action, UpdateError::MalformedAsPath))?;
    attrs.as_path = Some(path);
    Ok(())
}

/// NEXT_HOP: an IPv4 address that is not unspecified, multicast or broadcast.
fn decode_next_hop(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    let &[a, b, c, d] = input.value() else {
        return Err(input.length_error());
    };
    let next_hop = Ipv4Addr::new(a, b, c, d);
    if next_hop.is_unspecified() || next_hop.is_multicast() || next_hop.is_broadcast() {
        return Err(input.error(|attribute| UpdateError::InvalidNextHop { attribute }));
    }
    attrs.next_hop = Some(next_hop);
    Ok(())
}

/// MULTI_EXIT_DISC: a u32.
fn decode_med(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    attrs.med = Some(read_u32_exact(input.value()).ok_or_else(|| input.length_error())?);
    Ok(())
}

/// LOCAL_PREF: a u32.
fn decode_local_pref(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    attrs.local_pref = Some(read_u32_exact(input.value()).ok_or_else(|| input.length_error())?);
    Ok(())
}

/// ATOMIC_AGGREGATE: no value.
fn decode_atomic_aggregate(
    input: &AttributeInput<'_>,
    attrs: &mut PathAttributes,
) -> AttributeResult {
    if !input.value().is_empty() {
        return Err(input.length_error());
    }
    attrs.atomic_aggregate = true;
    Ok(())
}

/// AGGREGATOR: an ASN of the negotiated size and an IPv4 address.
fn decode_aggregator(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    let aggregator = match (input.options.four_octet_as, input.value()) {
        (true, &[a0, a1, a2, a3, i0, i1, i2, i3]) => Aggregator {
            asn: u32::from_be_bytes([a0, a1, a2, a3]),
            address: Ipv4Addr::new(i0, i1, i2, i3),
        },
        (false, &[a0, a1, i0, i1, i2, i3]) => Aggregator {
            asn: u32::from(u16::from_be_bytes([a0, a1])),
            address: Ipv4Addr::new(i0, i1, i2, i3),
        },
        _ => return Err(input.length_error()),
    };
    attrs.aggregator = Some(aggregator);
    Ok(())
}

/// COMMUNITIES: one or more u32s.
fn decode_communities(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    attrs.communities = input.decode_list(4, be_u32)?;
    Ok(())
}

/// ORIGINATOR_ID: an IPv4 router id.
fn decode_originator_id(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    let id = read_u32_exact(input.value()).ok_or_else(|| input.length_error())?;
    attrs.originator_id = Some(Ipv4Addr::from(id));
    Ok(())
}

/// CLUSTER_LIST: one or more IPv4 cluster ids.
fn decode_cluster_list(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    attrs.cluster_list = input.decode_list(4, |c| Ipv4Addr::from(be_u32(c)))?;
    Ok(())
}

/// EXTENDED_COMMUNITIES: one or more 8-byte communities.
fn decode_extended_communities(
    input: &AttributeInput<'_>,
    attrs: &mut PathAttributes,
) -> AttributeResult {
    attrs.extended_communities = input.decode_list(8, |c| {
        c.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    })?;
    Ok(())
}

/// LARGE_COMMUNITIES: one or more 12-byte communities.
fn decode_large_communities(
    input: &AttributeInput<'_>,
    attrs: &mut PathAttributes,
) -> AttributeResult {
    attrs.large_communities = input.decode_list(12, |c| LargeCommunity {
        global: be_u32(c.get(0..4).unwrap_or_default()),
        local1: be_u32(c.get(4..8).unwrap_or_default()),
        local2: be_u32(c.get(8..12).unwrap_or_default()),
    })?;
    Ok(())
}

/// AS4_PATH: checked like an AS_PATH of 4-octet ASNs, then kept raw.
fn decode_as4_path(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    decode_as_path(input.value(), 4).ok_or((input.action, UpdateError::MalformedAsPath))?;
    keep_raw(input.attr, attrs);
    Ok(())
}

/// AS4_AGGREGATOR: checked for its 8 bytes, then kept raw.
fn decode_as4_aggregator(
    input: &AttributeInput<'_>,
    attrs: &mut PathAttributes,
) -> AttributeResult {
    if input.value().len() != 8 {
        return Err(input.length_error());
    }
    keep_raw(input.attr, attrs);
    Ok(())
}

/// A known attribute with no decoder of its own: kept raw.
fn keep_known_raw(input: &AttributeInput<'_>, attrs: &mut PathAttributes) -> AttributeResult {
    keep_raw(input.attr, attrs);
    Ok(())
}

/// An attribute we do not know: RFC 4271 §6.3 / §9.
fn keep_unknown(
    attr: &WireAttribute<'_>,
    optional: bool,
    transitive: bool,
    attrs: &mut PathAttributes,
) -> AttributeResult {
    if !optional {
        return Err((
            AttributeAction::SessionReset,
            UpdateError::UnrecognizedWellKnown {
                attribute: attr.whole.to_vec(),
            },
        ));
    }
    if transitive {
        keep_raw(attr, attrs);
    }
    Ok(())
}

/// Keep an attribute as bytes.
fn keep_raw(attr: &WireAttribute<'_>, attrs: &mut PathAttributes) {
    attrs.other.push(RawAttribute {
        flags: attr.flags & !flag::EXTENDED_LENGTH,
        type_code: attr.type_code,
        value: attr.value.to_vec(),
    });
}

/// Decode MP_REACH_NLRI or MP_UNREACH_NLRI (RFC 4760); a malformed one resets the session
/// (RFC 7606 §7.11), an unknown family is discarded with a finding.
fn decode_mp_attribute(
    attr: &WireAttribute<'_>,
    out: &mut DecodedAttributes,
) -> Result<(), DecodeError> {
    let reset = || {
        DecodeError::from(UpdateError::OptionalAttribute {
            attribute: attr.whole.to_vec(),
        })
    };
    if expected_flags(attr.type_code)
        != Some((
            attr.flags & flag::OPTIONAL != 0,
            attr.flags & flag::TRANSITIVE != 0,
        ))
    {
        return Err(UpdateError::AttributeFlags {
            attribute: attr.whole.to_vec(),
        }
        .into());
    }
    let v = attr.value;
    let &[afi_hi, afi_lo, safi, ..] = v else {
        return Err(reset());
    };
    let family = Family {
        afi: u16::from_be_bytes([afi_hi, afi_lo]),
        safi,
    };
    let prefix_family = match family {
        Family::IPV4_UNICAST => PrefixFamily::Ipv4,
        Family::IPV6_UNICAST => PrefixFamily::Ipv6,
        _ => {
            out.findings.push(AttributeFinding {
                type_code: attr.type_code,
                action: AttributeAction::Discard,
                error: UpdateError::OptionalAttribute {
                    attribute: attr.whole.to_vec(),
                },
            });
            return Ok(());
        }
    };
    if attr.type_code == type_code::MP_UNREACH_NLRI {
        let prefixes =
            decode_prefixes(v.get(3..).unwrap_or_default(), prefix_family).map_err(|_| reset())?;
        out.mp_unreach = Some(MpPrefixes { family, prefixes });
        return Ok(());
    }
    let next_hop_len = usize::from(*v.get(3).ok_or_else(reset)?);
    let next_hop_bytes = v.get(4..4 + next_hop_len).ok_or_else(reset)?;
    // One reserved byte (formerly SNPA count) follows the next hop.
    v.get(4 + next_hop_len).ok_or_else(reset)?;
    let next_hop = decode_mp_next_hop(next_hop_bytes).ok_or_else(reset)?;
    if prefix_family == PrefixFamily::Ipv6 && matches!(next_hop, MpNextHop::Ipv4(_)) {
        return Err(reset());
    }
    let prefixes = decode_prefixes(v.get(5 + next_hop_len..).unwrap_or_default(), prefix_family)
        .map_err(|_| reset())?;
    out.attributes.mp_next_hop = Some(next_hop);
    out.mp_reach = Some(MpPrefixes { family, prefixes });
    Ok(())
}

/// A next hop of 4 (IPv4), 16 (IPv6 global) or 32 (global + link-local) bytes.
fn decode_mp_next_hop(bytes: &[u8]) -> Option<MpNextHop> {
    match bytes.len() {
        4 => Some(MpNextHop::Ipv4(Ipv4Addr::from(be_u32(bytes)))),
        16 => Some(MpNextHop::Ipv6 {
            global: ipv6_from(bytes)?,
            link_local: None,
        }),
        32 => Some(MpNextHop::Ipv6 {
            global: ipv6_from(bytes.get(..16)?)?,
            link_local: Some(ipv6_from(bytes.get(16..)?)?),
        }),
        _ => None,
    }
}

/// An IPv6 address from exactly 16 bytes.
fn ipv6_from(bytes: &[u8]) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

/// Decode AS_PATH segments with 2- or 4-octet ASNs; `None` if malformed (RFC 7606 §7.2:
/// unknown segment type, zero-length segment, overrun, trailing bytes).
pub(crate) fn decode_as_path(buf: &[u8], as_size: usize) -> Option<AsPath> {
    let mut segments = Vec::new();
    let mut rest = buf;
    while let [kind, count, after @ ..] = rest {
        let kind = SegmentKind::from_code(*kind)?;
        let count = usize::from(*count);
        if count == 0 {
            return None;
        }
        let bytes = after.get(..count * as_size)?;
        let asns = bytes
            .chunks_exact(as_size)
            .map(|c| c.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
            .collect();
        segments.push(AsSegment { kind, asns });
        rest = after.get(count * as_size..)?;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(AsPath { segments })
}

/// Non-empty whole chunks of `size`, or `None` (RFC 7606: a zero length or a remainder is
/// malformed).
fn chunks(v: &[u8], size: usize) -> Option<std::slice::ChunksExact<'_, u8>> {
    if v.is_empty() || v.len() % size != 0 {
        return None;
    }
    Some(v.chunks_exact(size))
}

/// u32 from exactly 4 bytes.
fn read_u32_exact(v: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = v.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// u32 from up to 4 bytes (callers pass exactly 4).
fn be_u32(v: &[u8]) -> u32 {
    v.iter()
        .take(4)
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}
