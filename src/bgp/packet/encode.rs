//! Building UPDATE and KEEPALIVE messages: attributes, sizing and splitting.
//!
//! Data flow: `encode_updates` takes one attribute set, the prefixes to announce with it
//! and the prefixes to withdraw, and returns as many whole messages as it takes, each
//! within 4,096 bytes (65,535 with RFC 8654). Withdrawals come first: IPv4 in the
//! withdrawn-routes field, IPv6 in MP_UNREACH_NLRI; then announcements: IPv4 in the NLRI
//! field with NEXT_HOP, IPv6 in MP_REACH_NLRI. Sizes are computed before a byte is
//! written, so no buffer can overflow; zettabgp's UPDATE encoder (which panics on a full
//! buffer) is not used.
//!
//! 4-octet AS (RFC 6793): on a session without the capability, ASNs above 65,535 are
//! written as AS_TRANS (23456) and the true path goes in AS4_PATH (AS4_AGGREGATOR for the
//! aggregator). AS4_* attributes held raw in `PathAttributes::other` are never re-sent.
//!
//! Departures: an announcement without ORIGIN or AS_PATH gets ORIGIN IGP and an empty
//! AS_PATH (the peer would otherwise treat it as withdrawn); RFC 8950 (IPv4 over IPv6 next
//! hop) is not encoded.

use ipnetwork::IpNetwork;

use super::attribute::{flag, type_code, AsPath, MpNextHop, Origin, PathAttributes};
use super::capability::Family;
use super::error::EncodeError;
use super::header::{frame_message, MessageType, HEADER_LEN};
use super::prefix::{encode_prefix, encoded_prefix_len};
use super::{WireOptions, AS_TRANS};

/// Largest encoded prefix: length byte plus 4 or 16 bytes.
const MAX_IPV4_PREFIX: usize = 5;
const MAX_IPV6_PREFIX: usize = 17;
/// Withdrawn-routes length and total-attributes length.
const UPDATE_FIXED: usize = 4;
/// Flags, type and a 2-byte length: the most an attribute header takes.
const ATTRIBUTE_HEADER_MAX: usize = 4;
/// Well-known transitive: ORIGIN, AS_PATH, LOCAL_PREF, ATOMIC_AGGREGATE.
const WELL_KNOWN: u8 = flag::TRANSITIVE;
/// Optional transitive: AGGREGATOR, the communities, AS4_*.
const OPTIONAL_TRANSITIVE: u8 = flag::OPTIONAL | flag::TRANSITIVE;

/// A KEEPALIVE: the bare header.
pub fn encode_keepalive() -> Vec<u8> {
    frame_message(MessageType::Keepalive, &[])
}

/// An End-of-RIB marker for `family` (RFC 4724 §2).
pub fn encode_end_of_rib(family: Family) -> Vec<u8> {
    if family == Family::IPV4_UNICAST {
        return frame_message(MessageType::Update, &[0, 0, 0, 0]);
    }
    let mut attrs = Vec::new();
    push_attribute(
        &mut attrs,
        flag::OPTIONAL,
        type_code::MP_UNREACH_NLRI,
        &family_bytes(family),
    );
    encode_update_message(&[], &attrs, &[])
}

/// Encode announcements and withdrawals into as many UPDATEs as needed.
pub fn encode_updates(
    attributes: &PathAttributes,
    nlri: &[IpNetwork],
    withdrawn: &[IpNetwork],
    options: &WireOptions,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let max_body = options.max_message_len() - HEADER_LEN;
    let (withdrawn_v4, withdrawn_v6) = split_families(withdrawn);
    let (nlri_v4, nlri_v6) = split_families(nlri);
    let mut messages = Vec::new();

    for group in pack_prefixes(&withdrawn_v4, max_body - UPDATE_FIXED) {
        messages.push(encode_update_message(&group, &[], &[]));
    }
    let unreach_room = max_body - UPDATE_FIXED - ATTRIBUTE_HEADER_MAX - 3;
    for group in pack_prefixes(&withdrawn_v6, unreach_room) {
        let mut value = family_bytes(Family::IPV6_UNICAST).to_vec();
        value.extend_from_slice(&group);
        let mut attrs = Vec::new();
        push_attribute(
            &mut attrs,
            flag::OPTIONAL,
            type_code::MP_UNREACH_NLRI,
            &value,
        );
        messages.push(encode_update_message(&[], &attrs, &[]));
    }
    if !nlri_v4.is_empty() {
        let next_hop = attributes.next_hop.ok_or(EncodeError::MissingIpv4NextHop)?;
        let mut attrs = encode_path_attributes(attributes, options);
        insert_attribute(
            &mut attrs,
            flag::TRANSITIVE,
            type_code::NEXT_HOP,
            &next_hop.octets(),
        );
        let attrs = concat_attributes(attrs);
        let room = room_for_prefixes(max_body, attrs.len(), MAX_IPV4_PREFIX)?;
        for group in pack_prefixes(&nlri_v4, room) {
            messages.push(encode_update_message(&[], &attrs, &group));
        }
    }
    if !nlri_v6.is_empty() {
        let next_hop = ipv6_next_hop_bytes(attributes.mp_next_hop)?;
        let attrs = encode_path_attributes(attributes, options);
        let fixed =
            concat_attributes(attrs.clone()).len() + ATTRIBUTE_HEADER_MAX + 5 + next_hop.len();
        let room = room_for_prefixes(max_body, fixed, MAX_IPV6_PREFIX)?;
        for group in pack_prefixes(&nlri_v6, room) {
            let mut value = family_bytes(Family::IPV6_UNICAST).to_vec();
            value.push(next_hop.len() as u8);
            value.extend_from_slice(&next_hop);
            value.push(0);
            value.extend_from_slice(&group);
            let mut with_mp = attrs.clone();
            insert_attribute(
                &mut with_mp,
                flag::OPTIONAL,
                type_code::MP_REACH_NLRI,
                &value,
            );
            messages.push(encode_update_message(&[], &concat_attributes(with_mp), &[]));
        }
    }
    Ok(messages)
}

/// Bytes left for prefixes once the attributes are in, or an error if not even one fits.
fn room_for_prefixes(
    max_body: usize,
    attrs_len: usize,
    largest: usize,
) -> Result<usize, EncodeError> {
    let room = max_body
        .checked_sub(UPDATE_FIXED + attrs_len)
        .ok_or(EncodeError::AttributesTooLarge { size: attrs_len })?;
    if room < largest {
        return Err(EncodeError::AttributesTooLarge { size: attrs_len });
    }
    Ok(room)
}

/// The next-hop field for IPv6 NLRI: global, or global and link-local.
fn ipv6_next_hop_bytes(next_hop: Option<MpNextHop>) -> Result<Vec<u8>, EncodeError> {
    match next_hop {
        Some(MpNextHop::Ipv6 { global, link_local }) => {
            let mut bytes = global.octets().to_vec();
            if let Some(ll) = link_local {
                bytes.extend_from_slice(&ll.octets());
            }
            Ok(bytes)
        }
        _ => Err(EncodeError::MissingIpv6NextHop),
    }
}

/// IPv4 prefixes and IPv6 prefixes.
fn split_families(prefixes: &[IpNetwork]) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    prefixes.iter().partition(|p| p.is_ipv4())
}

/// Encoded prefixes grouped so that each group fits in `room` bytes.
fn pack_prefixes(prefixes: &[IpNetwork], room: usize) -> Vec<Vec<u8>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    for prefix in prefixes {
        if !current.is_empty() && current.len() + encoded_prefix_len(prefix) > room {
            groups.push(std::mem::take(&mut current));
        }
        encode_prefix(prefix, &mut current);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// One whole UPDATE from its three encoded parts.
fn encode_update_message(withdrawn: &[u8], attributes: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(UPDATE_FIXED + withdrawn.len() + attributes.len() + nlri.len());
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    body.extend_from_slice(attributes);
    body.extend_from_slice(nlri);
    frame_message(MessageType::Update, &body)
}

/// AFI and SAFI as they open MP_REACH / MP_UNREACH.
fn family_bytes(family: Family) -> [u8; 3] {
    let [hi, lo] = family.afi.to_be_bytes();
    [hi, lo, family.safi]
}

/// Append one attribute, with the extended-length flag when the value needs it.
fn push_attribute(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | flag::EXTENDED_LENGTH);
        out.push(code);
        out.extend_from_slice(&(value.len().min(65535) as u16).to_be_bytes());
    } else {
        out.push(flags & !flag::EXTENDED_LENGTH);
        out.push(code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value.get(..value.len().min(65535)).unwrap_or_default());
}

/// Add an encoded attribute to a list kept in type-code order.
fn insert_attribute(attrs: &mut Vec<(u8, Vec<u8>)>, flags: u8, code: u8, value: &[u8]) {
    let mut bytes = Vec::new();
    push_attribute(&mut bytes, flags, code, value);
    let at = attrs.partition_point(|(c, _)| *c <= code);
    attrs.insert(at, (code, bytes));
}

/// Join encoded attributes.
fn concat_attributes(attrs: Vec<(u8, Vec<u8>)>) -> Vec<u8> {
    attrs.into_iter().flat_map(|(_, bytes)| bytes).collect()
}

/// Every attribute but NEXT_HOP and MP_*, encoded, in type-code order. Attributes with the
/// same type code keep the order they are added in here.
fn encode_path_attributes(attrs: &PathAttributes, options: &WireOptions) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    encode_origin(attrs, &mut out);
    encode_as_path_attributes(attrs, options, &mut out);
    encode_med(attrs, &mut out);
    encode_local_pref(attrs, &mut out);
    encode_atomic_aggregate(attrs, &mut out);
    encode_aggregator_attributes(attrs, options, &mut out);
    encode_communities(attrs, &mut out);
    encode_originator_id(attrs, &mut out);
    encode_cluster_list(attrs, &mut out);
    encode_extended_communities(attrs, &mut out);
    encode_large_communities(attrs, &mut out);
    encode_raw_attributes(attrs, &mut out);
    out
}

/// ORIGIN, IGP when the route has none.
fn encode_origin(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    let origin = match attrs.origin.unwrap_or(Origin::Igp) {
        Origin::Igp => 0,
        Origin::Egp => 1,
        Origin::Incomplete => 2,
    };
    insert_attribute(out, WELL_KNOWN, type_code::ORIGIN, &[origin]);
}

/// AS_PATH (empty when the route has none), and AS4_PATH when the session has 2-octet ASNs
/// and the path holds a larger one.
fn encode_as_path_attributes(
    attrs: &PathAttributes,
    options: &WireOptions,
    out: &mut Vec<(u8, Vec<u8>)>,
) {
    let empty = AsPath::default();
    let path = attrs.as_path.as_ref().unwrap_or(&empty);
    let as_size = if options.four_octet_as { 4 } else { 2 };
    let value = encode_as_path(path, as_size);
    insert_attribute(out, WELL_KNOWN, type_code::AS_PATH, &value);
    if !options.four_octet_as && path.has_four_octet_asn() {
        let value = encode_as_path(path, 4);
        insert_attribute(out, OPTIONAL_TRANSITIVE, type_code::AS4_PATH, &value);
    }
}

/// MULTI_EXIT_DISC, if set.
fn encode_med(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if let Some(med) = attrs.med {
        let value = med.to_be_bytes();
        insert_attribute(out, flag::OPTIONAL, type_code::MULTI_EXIT_DISC, &value);
    }
}

/// LOCAL_PREF, if set.
fn encode_local_pref(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if let Some(local_pref) = attrs.local_pref {
        let value = local_pref.to_be_bytes();
        insert_attribute(out, WELL_KNOWN, type_code::LOCAL_PREF, &value);
    }
}

/// ATOMIC_AGGREGATE, if set.
fn encode_atomic_aggregate(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if attrs.atomic_aggregate {
        insert_attribute(out, WELL_KNOWN, type_code::ATOMIC_AGGREGATE, &[]);
    }
}

/// AGGREGATOR, if set, with an ASN of the negotiated size; on a 2-octet session an ASN above
/// 65,535 is written as AS_TRANS and the true one goes in AS4_AGGREGATOR.
fn encode_aggregator_attributes(
    attrs: &PathAttributes,
    options: &WireOptions,
    out: &mut Vec<(u8, Vec<u8>)>,
) {
    let Some(aggregator) = attrs.aggregator else {
        return;
    };
    let mut value = Vec::with_capacity(8);
    if options.four_octet_as {
        value.extend_from_slice(&aggregator.asn.to_be_bytes());
    } else {
        let asn16 = u16::try_from(aggregator.asn).unwrap_or(AS_TRANS);
        value.extend_from_slice(&asn16.to_be_bytes());
        if aggregator.asn > 0xffff {
            let mut as4 = aggregator.asn.to_be_bytes().to_vec();
            as4.extend_from_slice(&aggregator.address.octets());
            insert_attribute(out, OPTIONAL_TRANSITIVE, type_code::AS4_AGGREGATOR, &as4);
        }
    }
    value.extend_from_slice(&aggregator.address.octets());
    insert_attribute(out, OPTIONAL_TRANSITIVE, type_code::AGGREGATOR, &value);
}

/// COMMUNITIES, if any.
fn encode_communities(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if !attrs.communities.is_empty() {
        let value: Vec<u8> = attrs
            .communities
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        insert_attribute(out, OPTIONAL_TRANSITIVE, type_code::COMMUNITIES, &value);
    }
}

/// ORIGINATOR_ID, if set.
fn encode_originator_id(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if let Some(originator) = attrs.originator_id {
        let value = originator.octets();
        insert_attribute(out, flag::OPTIONAL, type_code::ORIGINATOR_ID, &value);
    }
}

/// CLUSTER_LIST, if any.
fn encode_cluster_list(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if !attrs.cluster_list.is_empty() {
        let value: Vec<u8> = attrs.cluster_list.iter().flat_map(|c| c.octets()).collect();
        insert_attribute(out, flag::OPTIONAL, type_code::CLUSTER_LIST, &value);
    }
}

/// EXTENDED_COMMUNITIES, if any.
fn encode_extended_communities(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if !attrs.extended_communities.is_empty() {
        let value: Vec<u8> = attrs
            .extended_communities
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        let code = type_code::EXTENDED_COMMUNITIES;
        insert_attribute(out, OPTIONAL_TRANSITIVE, code, &value);
    }
}

/// LARGE_COMMUNITIES, if any.
fn encode_large_communities(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    if !attrs.large_communities.is_empty() {
        let value: Vec<u8> = attrs
            .large_communities
            .iter()
            .flat_map(|c| [c.global, c.local1, c.local2])
            .flat_map(u32::to_be_bytes)
            .collect();
        insert_attribute(
            out,
            OPTIONAL_TRANSITIVE,
            type_code::LARGE_COMMUNITIES,
            &value,
        );
    }
}

/// The attributes held raw, as received, except AS4_PATH / AS4_AGGREGATOR (this encoder
/// writes its own from the true path and aggregator).
fn encode_raw_attributes(attrs: &PathAttributes, out: &mut Vec<(u8, Vec<u8>)>) {
    for raw in &attrs.other {
        let generated =
            raw.type_code == type_code::AS4_PATH || raw.type_code == type_code::AS4_AGGREGATOR;
        if !generated {
            insert_attribute(out, raw.flags, raw.type_code, &raw.value);
        }
    }
}

/// AS_PATH (or AS4_PATH) segments with `as_size`-octet ASNs; segments longer than 255
/// ASNs are split, ASNs that do not fit 2 octets become AS_TRANS.
fn encode_as_path(path: &AsPath, as_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for segment in &path.segments {
        for chunk in segment.asns.chunks(255) {
            out.push(segment.kind.code());
            out.push(chunk.len() as u8);
            for &asn in chunk {
                if as_size == 4 {
                    out.extend_from_slice(&asn.to_be_bytes());
                } else {
                    out.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
            }
        }
    }
    out
}
