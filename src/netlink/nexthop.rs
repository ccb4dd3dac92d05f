//! Kernel nexthop objects (`ip nexthop`, Linux ≥ 5.3): RTM_NEWNEXTHOP / RTM_DELNEXTHOP /
//! RTM_GETNEXTHOP, built and parsed here by hand (netlink-packet-route knows `RTA_NH_ID` on a
//! route but not the nexthop messages themselves).
//!
//! Why routed uses them: a route written as `via GW` makes the kernel validate the gateway (a
//! FIB lookup) and build a fresh `fib_info` for every route; a route written as `nhid N` points
//! at a next hop validated once. At a full BGP table that is a third of the kernel's
//! per-route work (docs/benchmarks.md, "BGP").
//!
//! ```text
//!  nlmsghdr | nhmsg { family u8, scope u8, protocol u8, resvd u8, flags u32 } | attributes
//!  NHA_ID u32 · NHA_GROUP [{ id u32, weight−1 u8, resvd u8, resvd u16 }] · NHA_OIF u32 ·
//!  NHA_GATEWAY 4|16 bytes · NHA_BLACKHOLE flag
//! ```

use std::net::IpAddr;

use super::proto::RouteProtocol;

pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;
/// The multicast group of nexthop notifications (joined with NETLINK_ADD_MEMBERSHIP: > 31).
pub const RTNLGRP_NEXTHOP: u32 = 32;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_GROUP_TYPE: u16 = 3;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_ENCAP_TYPE: u16 = 7;
const NHA_ENCAP: u16 = 8;
const NHA_FDB: u16 = 11;
const NHA_RES_GROUP: u16 = 12;
const RTNH_F_ONLINK: u32 = 4;
const NHMSG_LEN: usize = 8;
const NLMSG_HEADER_LEN: usize = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;

/// What a nexthop object is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NexthopSpec {
    /// One gateway through one device (`via GW dev IF [onlink]`).
    Gateway {
        gateway: IpAddr,
        ifindex: u32,
        onlink: bool,
    },
    /// ECMP over other nexthop objects: (id, weight 1..=256), sorted by id.
    Group(Vec<(u32, u16)>),
}

/// A nexthop object as the kernel reports it. `spec` is `None` for kinds routed never creates
/// (blackhole, FDB, device-only, resilient groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    pub id: u32,
    pub protocol: RouteProtocol,
    pub spec: Option<NexthopSpec>,
}

fn header(buffer: &mut Vec<u8>, message_type: u16, flags: u16, sequence: u32) {
    buffer.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
    buffer.extend_from_slice(&message_type.to_ne_bytes());
    buffer.extend_from_slice(&flags.to_ne_bytes());
    buffer.extend_from_slice(&sequence.to_ne_bytes());
    buffer.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
}

fn nhmsg(buffer: &mut Vec<u8>, family: u8, protocol: u8, flags: u32) {
    buffer.extend_from_slice(&[family, 0, protocol, 0]);
    buffer.extend_from_slice(&flags.to_ne_bytes());
}

fn attribute(buffer: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let length = 4 + value.len();
    buffer.extend_from_slice(&(length as u16).to_ne_bytes());
    buffer.extend_from_slice(&kind.to_ne_bytes());
    buffer.extend_from_slice(value);
    buffer.resize(buffer.len() + ((4 - length % 4) % 4), 0);
}

fn finish(mut buffer: Vec<u8>) -> Vec<u8> {
    let length = buffer.len() as u32;
    buffer[..4].copy_from_slice(&length.to_ne_bytes());
    buffer
}

fn address_bytes(ip: IpAddr) -> (u8, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    }
}

/// RTM_NEWNEXTHOP creating object `id` (fails with EEXIST when the id is taken: routed never
/// overwrites a nexthop it did not create), acknowledged.
pub fn create_request(
    id: u32,
    protocol: RouteProtocol,
    spec: &NexthopSpec,
    sequence: u32,
) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(64);
    header(
        &mut buffer,
        RTM_NEWNEXTHOP,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        sequence,
    );
    match spec {
        NexthopSpec::Gateway {
            gateway,
            ifindex,
            onlink,
        } => {
            let (family, octets) = address_bytes(*gateway);
            nhmsg(
                &mut buffer,
                family,
                protocol.0,
                if *onlink { RTNH_F_ONLINK } else { 0 },
            );
            attribute(&mut buffer, NHA_ID, &id.to_ne_bytes());
            attribute(&mut buffer, NHA_OIF, &ifindex.to_ne_bytes());
            attribute(&mut buffer, NHA_GATEWAY, &octets);
        }
        NexthopSpec::Group(members) => {
            nhmsg(&mut buffer, libc::AF_UNSPEC as u8, protocol.0, 0);
            attribute(&mut buffer, NHA_ID, &id.to_ne_bytes());
            let mut group = Vec::with_capacity(members.len() * 8);
            for (member, weight) in members {
                group.extend_from_slice(&member.to_ne_bytes());
                group.push(u8::try_from(weight.clamp(&1, &256) - 1).unwrap_or(u8::MAX));
                group.extend_from_slice(&[0, 0, 0]);
            }
            attribute(&mut buffer, NHA_GROUP, &group);
        }
    }
    finish(buffer)
}

/// RTM_DELNEXTHOP of object `id`, acknowledged.
pub fn delete_request(id: u32, sequence: u32) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(32);
    header(
        &mut buffer,
        RTM_DELNEXTHOP,
        NLM_F_REQUEST | NLM_F_ACK,
        sequence,
    );
    nhmsg(&mut buffer, libc::AF_UNSPEC as u8, 0, 0);
    attribute(&mut buffer, NHA_ID, &id.to_ne_bytes());
    finish(buffer)
}

/// RTM_GETNEXTHOP dump of every nexthop object of the namespace.
pub fn dump_request(sequence: u32) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(32);
    header(
        &mut buffer,
        RTM_GETNEXTHOP,
        NLM_F_REQUEST | NLM_F_DUMP,
        sequence,
    );
    nhmsg(&mut buffer, libc::AF_UNSPEC as u8, 0, 0);
    finish(buffer)
}

/// The object an RTM_NEWNEXTHOP / RTM_DELNEXTHOP message (header included) describes; `None`
/// when it is not one or is malformed.
pub fn parse(message: &[u8]) -> Option<Nexthop> {
    let message_type = u16::from_ne_bytes([*message.get(4)?, *message.get(5)?]);
    if message_type != RTM_NEWNEXTHOP && message_type != RTM_DELNEXTHOP {
        return None;
    }
    let body = message.get(NLMSG_HEADER_LEN..)?;
    let fixed = body.get(..NHMSG_LEN)?;
    let protocol = RouteProtocol(fixed[2]);
    let flags = u32::from_ne_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let mut id = None;
    let mut ifindex = None;
    let mut gateway = None;
    let mut group = None;
    let mut other = false;
    let mut rest = &body[NHMSG_LEN..];
    while rest.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = rest.get(4..length)?;
        match kind {
            NHA_ID => id = Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?)),
            NHA_OIF => ifindex = Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?)),
            NHA_GATEWAY => {
                gateway = match value.len() {
                    4 => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
                    16 => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
                    _ => return None,
                }
            }
            NHA_GROUP => {
                group = Some(
                    value
                        .chunks_exact(8)
                        .map(|m| {
                            let member = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]);
                            (member, u16::from(m[4]) + 1)
                        })
                        .collect::<Vec<_>>(),
                )
            }
            // NHA_GROUP_TYPE 0 is the plain multipath group; anything else (resilient, blackhole,
            // FDB, encapsulation) is a kind routed does not create.
            NHA_GROUP_TYPE => other |= value.iter().any(|b| *b != 0),
            NHA_BLACKHOLE | NHA_ENCAP_TYPE | NHA_ENCAP | NHA_FDB | NHA_RES_GROUP => other = true,
            _ => {}
        }
        let step = (length + 3) & !3;
        if length < 4 || step > rest.len() {
            break;
        }
        rest = &rest[step..];
    }
    let spec = match (gateway, ifindex, group) {
        _ if other => None,
        (Some(gateway), Some(ifindex), None) => Some(NexthopSpec::Gateway {
            gateway,
            ifindex,
            onlink: flags & RTNH_F_ONLINK != 0,
        }),
        (None, _, Some(mut members)) => {
            members.sort_unstable();
            Some(NexthopSpec::Group(members))
        }
        _ => None,
    };
    Some(Nexthop {
        id: id?,
        protocol,
        spec,
    })
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn gateway_object_matches_iproute2_bytes() {
        // `ip nexthop add id 7 via 10.9.0.2 dev <ifindex 3> proto 232`, as strace shows it,
        // with our flags and sequence.
        let spec = NexthopSpec::Gateway {
            gateway: "10.9.0.2".parse().unwrap(),
            ifindex: 3,
            onlink: false,
        };
        let bytes = create_request(7, RouteProtocol(232), &spec, 9);
        let mut expected = Vec::new();
        expected.extend_from_slice(&48u32.to_ne_bytes());
        expected.extend_from_slice(&104u16.to_ne_bytes());
        expected.extend_from_slice(&0x405u16.to_ne_bytes());
        expected.extend_from_slice(&9u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend_from_slice(&[2, 0, 232, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[8, 0, 1, 0]);
        expected.extend_from_slice(&7u32.to_ne_bytes());
        expected.extend_from_slice(&[8, 0, 5, 0]);
        expected.extend_from_slice(&3u32.to_ne_bytes());
        expected.extend_from_slice(&[8, 0, 6, 0, 10, 9, 0, 2]);
        assert_eq!(bytes, expected);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.id, 7);
        assert_eq!(parsed.protocol, RouteProtocol(232));
        assert_eq!(parsed.spec, Some(spec));
    }

    #[test]
    fn groups_and_v6_gateways_round_trip() {
        let group = NexthopSpec::Group(vec![(3, 1), (5, 2)]);
        let parsed = parse(&create_request(11, RouteProtocol(232), &group, 1)).unwrap();
        assert_eq!((parsed.id, parsed.spec), (11, Some(group)));
        let v6 = NexthopSpec::Gateway {
            gateway: "fd00::2".parse().unwrap(),
            ifindex: 4,
            onlink: true,
        };
        let parsed = parse(&create_request(12, RouteProtocol(232), &v6, 1)).unwrap();
        assert_eq!(parsed.spec, Some(v6));
    }

    #[test]
    fn malformed_or_foreign_messages_parse_to_nothing_or_no_spec() {
        let spec = NexthopSpec::Gateway {
            gateway: "10.9.0.2".parse().unwrap(),
            ifindex: 3,
            onlink: false,
        };
        let bytes = create_request(7, RouteProtocol(232), &spec, 9);
        for cut in 0..bytes.len() {
            // Never a panic; a cut inside the attributes loses the object or its spec.
            let _ = parse(&bytes[..cut]);
        }
        assert_eq!(parse(&delete_request(7, 1)).map(|n| n.spec), Some(None));
        assert!(parse(&dump_request(1)).is_none());
        let mut blackhole = delete_request(8, 1);
        blackhole[4..6].copy_from_slice(&RTM_NEWNEXTHOP.to_ne_bytes());
        blackhole.extend_from_slice(&[4, 0, 4, 0]);
        let length = blackhole.len() as u32;
        blackhole[..4].copy_from_slice(&length.to_ne_bytes());
        assert_eq!(parse(&blackhole).map(|n| (n.id, n.spec)), Some((8, None)));
    }
}
