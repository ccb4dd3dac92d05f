//! Translation between this module's types and rtnetlink messages (`netlink-packet-route`).
//!
//! Data flow: `kernel.rs` and `batch.rs` build requests here (`route_message`, `neighbour_message`,
//! ...) and hand kernel answers back here (`route_from_message`, `link_from_message`, ...). No I/O
//! happens in this file, so message building is unit-tested byte for byte without a kernel.
//!
//! Conventions that mirror iproute2: a table above 255 travels in `RTA_TABLE` with
//! `rtm_table = RT_TABLE_UNSPEC`; a default route carries no `RTA_DST`; a delete matches on the
//! key and our protocol only (`rtm_scope = RT_SCOPE_NOWHERE`, no next hop), so it removes the
//! route at that key if and only if it is ours.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo as PacketLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteProtocol as PacketProtocol, RouteScope as PacketScope,
    RouteType as PacketType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::proto::RouteProtocol;
use super::types::{
    Family, FdbEntry, LinkInfo, MacAddr, Neighbour, NextHop, Route, RouteFilter, RouteKind,
    RouteScope,
};

/// `NLM_F_CAPPED`: the error message carries only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: the error message carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the extended-ack text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `RT_TABLE_UNSPEC`.
const RT_TABLE_UNSPEC: u8 = 0;

/// Wraps a payload in a netlink message with `NLM_F_REQUEST | flags` and the sequence number.
pub fn request_message(
    payload: RouteNetlinkMessage,
    flags: u16,
    sequence_number: u32,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = sequence_number;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    message.finalize();
    message
}

/// Reads the kernel's extended-ack text out of an NLMSG_ERROR payload (the bytes after the
/// errno), given the outer header's flags. Empty when there is none.
pub fn ext_ack_message(outer_flags: u16, payload: &[u8]) -> String {
    if outer_flags & NLM_F_ACK_TLVS == 0 {
        return String::new();
    }
    let request_len = if outer_flags & NLM_F_CAPPED != 0 {
        16
    } else {
        match payload.get(0..4) {
            Some(bytes) => u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            None => return String::new(),
        }
    };
    let mut offset = align4(request_len);
    while let Some(header) = payload.get(offset..offset + 4) {
        let len = u16::from_ne_bytes([header[0], header[1]]) as usize;
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
        if len < 4 {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            if let Some(text) = payload.get(offset + 4..offset + len) {
                let text = text.split(|b| *b == 0).next().unwrap_or_default();
                return String::from_utf8_lossy(text).into_owned();
            }
        }
        offset += align4(len);
    }
    String::new()
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn ip_of_route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn packet_type(kind: RouteKind) -> PacketType {
    match kind {
        RouteKind::Unicast => PacketType::Unicast,
        RouteKind::Blackhole => PacketType::BlackHole,
        RouteKind::Unreachable => PacketType::Unreachable,
        RouteKind::Prohibit => PacketType::Prohibit,
        RouteKind::Other(value) => PacketType::from(value),
    }
}

fn route_kind(kind: PacketType) -> RouteKind {
    match kind {
        PacketType::Unicast => RouteKind::Unicast,
        PacketType::BlackHole => RouteKind::Blackhole,
        PacketType::Unreachable => RouteKind::Unreachable,
        PacketType::Prohibit => RouteKind::Prohibit,
        other => RouteKind::Other(u8::from(other)),
    }
}

fn packet_scope(scope: RouteScope) -> PacketScope {
    match scope {
        RouteScope::Universe => PacketScope::Universe,
        RouteScope::Link => PacketScope::Link,
        RouteScope::Host => PacketScope::Host,
        RouteScope::Other(value) => PacketScope::from(value),
    }
}

fn route_scope(scope: PacketScope) -> RouteScope {
    match scope {
        PacketScope::Universe => RouteScope::Universe,
        PacketScope::Link => RouteScope::Link,
        PacketScope::Host => RouteScope::Host,
        other => RouteScope::Other(u8::from(other)),
    }
}

/// Sets the table in the header, or in `RTA_TABLE` when it does not fit in 8 bits.
fn set_table(message: &mut RouteMessage, table: u32) {
    match u8::try_from(table) {
        Ok(small) => message.header.table = small,
        Err(_) => {
            message.header.table = RT_TABLE_UNSPEC;
            message.attributes.push(RouteAttribute::Table(table));
        }
    }
}

fn key_message(route: &Route) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = address_family(route.family());
    message.header.destination_prefix_length = route.destination.prefix();
    message.header.protocol = PacketProtocol::from(route.protocol.0);
    message.header.kind = packet_type(route.kind);
    set_table(&mut message, route.table);
    if route.destination.prefix() > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(route_address(
                route.destination.network(),
            )));
    }
    if route.priority != 0 {
        message
            .attributes
            .push(RouteAttribute::Priority(route.priority));
    }
    message
}

/// RTM_NEWROUTE body for `route` (add or replace: the flags decide).
pub fn route_message(route: &Route) -> RouteMessage {
    let mut message = key_message(route);
    message.header.scope = packet_scope(route.scope);
    if route.onlink {
        message.header.flags |= RouteFlags::Onlink;
    }
    if let Some(id) = route.nexthop_id {
        // The object carries gateway, device and flags; the kernel refuses them beside it.
        message.header.flags = RouteFlags::empty();
        message.attributes.push(RouteAttribute::NhId(id));
        return message;
    }
    if let Some(gateway) = route.gateway {
        message
            .attributes
            .push(RouteAttribute::Gateway(route_address(gateway)));
    }
    if let Some(ifindex) = route.output_ifindex {
        message.attributes.push(RouteAttribute::Oif(ifindex));
    }
    if !route.multipath.is_empty() {
        let hops = route.multipath.iter().map(packet_next_hop).collect();
        message.attributes.push(RouteAttribute::MultiPath(hops));
    }
    message
}

/// RTM_DELROUTE body: the key and our protocol, nothing else, so only our route at that key goes.
pub fn route_delete_message(route: &Route) -> RouteMessage {
    let mut message = key_message(route);
    message.header.scope = PacketScope::NoWhere;
    message
}

fn packet_next_hop(hop: &NextHop) -> RouteNextHop {
    let mut packet = RouteNextHop::default();
    packet.hops = u8::try_from(hop.weight.clamp(1, 256) - 1).unwrap_or(u8::MAX);
    packet.interface_index = hop.output_ifindex.unwrap_or(0);
    if hop.onlink {
        packet.flags |= RouteNextHopFlags::Onlink;
    }
    if let Some(gateway) = hop.gateway {
        packet
            .attributes
            .push(RouteAttribute::Gateway(route_address(gateway)));
    }
    packet
}

/// RTM_GETROUTE for one address (`ip route get`): the kernel answers with the route it would
/// use, output device included.
pub fn route_get_message(address: IpAddr) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = address_family(match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    });
    message.header.destination_prefix_length = if address.is_ipv4() { 32 } else { 128 };
    message
        .attributes
        .push(RouteAttribute::Destination(route_address(address)));
    message
}

/// RTM_GETROUTE dump request for one family, carrying the filter so a strict-checking kernel
/// filters on its side (the caller filters again: older kernels ignore the header).
pub fn route_dump_message(family: Family, filter: &RouteFilter) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = address_family(family);
    if let Some(protocol) = filter.protocol {
        message.header.protocol = PacketProtocol::from(protocol.0);
    }
    if let Some(table) = filter.table {
        set_table(&mut message, table);
    }
    message
}

/// The route a kernel message describes; `None` for other families and for cache clones.
pub fn route_from_message(message: &RouteMessage) -> Option<Route> {
    let header: &RouteHeader = &message.header;
    let family = match header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    if header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut destination = None;
    let mut priority = 0;
    let mut gateway = None;
    let mut output_ifindex = None;
    let mut multipath = Vec::new();
    let mut nexthop_id = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(address) => destination = ip_of_route_address(address),
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::Gateway(address) => gateway = ip_of_route_address(address),
            RouteAttribute::Oif(index) => output_ifindex = Some(*index),
            RouteAttribute::MultiPath(hops) => multipath = hops.iter().map(next_hop).collect(),
            RouteAttribute::NhId(id) => nexthop_id = Some(*id),
            _ => {}
        }
    }
    let destination = destination.unwrap_or(match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    let destination = IpNetwork::new(destination, header.destination_prefix_length).ok()?;
    let kind = route_kind(header.kind);
    // The kernel hangs IPv6 blackhole/unreachable/prohibit routes on lo; that oif is not part of
    // what was asked for, so drop it to compare equal with the route as written.
    if family == Family::V6 && kind != RouteKind::Unicast && multipath.is_empty() {
        output_ifindex = None;
    }
    Some(Route {
        table,
        destination,
        priority,
        kind,
        protocol: RouteProtocol(u8::from(header.protocol)),
        scope: route_scope(header.scope),
        output_ifindex,
        gateway,
        onlink: header.flags.contains(RouteFlags::Onlink),
        multipath,
        nexthop_id,
    })
}

fn next_hop(packet: &RouteNextHop) -> NextHop {
    let gateway = packet
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Gateway(address) => ip_of_route_address(address),
            _ => None,
        });
    NextHop {
        gateway,
        output_ifindex: (packet.interface_index != 0).then_some(packet.interface_index),
        weight: u16::from(packet.hops) + 1,
        onlink: packet.flags.contains(RouteNextHopFlags::Onlink),
    }
}

/// The link a kernel RTM_NEWLINK message describes.
pub fn link_from_message(message: &LinkMessage) -> LinkInfo {
    let mut link = LinkInfo {
        name: String::new(),
        index: message.header.index,
        kind: None,
        mac: None,
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
        peer_ifindex: None,
    };
    let mut parent = None;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) => link.mac = MacAddr::from_bytes(bytes),
            LinkAttribute::Link(index) => parent = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|info| match info {
                    PacketLinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    if link.kind.as_deref() == Some("veth") {
        link.peer_ifindex = parent;
    }
    link
}

/// RTM_NEWADDR body: `ip addr add <network> dev <ifindex>`.
pub fn address_message(ifindex: u32, network: IpNetwork) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = address_family(Family::of(network.ip()));
    message.header.prefix_len = network.prefix();
    message.header.scope = AddressScope::Universe;
    message.header.index = ifindex;
    if network.is_ipv4() {
        message
            .attributes
            .push(AddressAttribute::Local(network.ip()));
    }
    message
        .attributes
        .push(AddressAttribute::Address(network.ip()));
    message
}

/// The (ifindex, address/prefix) a kernel RTM_NEWADDR message describes.
pub fn address_from_message(message: &AddressMessage) -> Option<(u32, IpNetwork)> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let network = IpNetwork::new(ip, message.header.prefix_len).ok()?;
    Some((message.header.index, network))
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn ip_of_neighbour_address(address: &NeighbourAddress) -> Option<IpAddr> {
    match address {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        // AF_BRIDGE messages (VXLAN FDB) carry the remote VTEP as raw bytes.
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

/// RTM_NEWNEIGH / RTM_DELNEIGH body for an ARP/NDP entry.
pub fn neighbour_message(neighbour: &Neighbour) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = address_family(Family::of(neighbour.ip));
    message.header.ifindex = neighbour.ifindex;
    message.header.state = if neighbour.permanent {
        NeighbourState::Permanent
    } else {
        NeighbourState::Reachable
    };
    message
        .attributes
        .push(NeighbourAttribute::Destination(neighbour_address(
            neighbour.ip,
        )));
    if let Some(mac) = neighbour.mac {
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    message
}

/// The neighbour a kernel message describes (IPv4/IPv6 families only).
pub fn neighbour_from_message(message: &NeighbourMessage) -> Option<Neighbour> {
    if !matches!(
        message.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(address) => ip = ip_of_neighbour_address(address),
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = MacAddr::from_bytes(bytes),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: message.header.ifindex,
        ip: ip?,
        mac,
        permanent: message.header.state == NeighbourState::Permanent,
    })
}

/// RTM_NEWNEIGH / RTM_DELNEIGH body for a bridge FDB entry on the device itself (`self`).
pub fn fdb_message(entry: &FdbEntry) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = entry.ifindex;
    message.header.state = NeighbourState::Permanent;
    message.header.flags = NeighbourFlags::Own;
    message
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
    if let Some(destination) = entry.destination {
        message
            .attributes
            .push(NeighbourAttribute::Destination(neighbour_address(
                destination,
            )));
    }
    message
}

/// The FDB entry a kernel AF_BRIDGE neighbour message describes.
pub fn fdb_from_message(message: &NeighbourMessage) -> Option<FdbEntry> {
    if message.header.family != AddressFamily::Bridge {
        return None;
    }
    let mut mac = None;
    let mut destination = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = MacAddr::from_bytes(bytes),
            NeighbourAttribute::Destination(address) => {
                destination = ip_of_neighbour_address(address)
            }
            _ => {}
        }
    }
    Some(FdbEntry {
        ifindex: message.header.ifindex,
        mac: mac?,
        destination,
    })
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE};

    fn net(text: &str) -> IpNetwork {
        text.parse().unwrap()
    }

    fn emit(route: &Route) -> Vec<u8> {
        let message = request_message(
            RouteNetlinkMessage::NewRoute(route_message(route)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            7,
        );
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn workload_route_bytes_match_iproute2() {
        // `ip route replace 10.65.0.3/32 dev <ifindex 9> scope link proto 230`, as iproute2
        // encodes it: nlmsghdr, rtmsg {AF_INET, 32, 0, 0, main, 230, link, unicast, 0},
        // RTA_DST 10.65.0.3, RTA_OIF 9.
        let route = Route::link_scope(net("10.65.0.3/32"), 9, RouteProtocol::WORKLOAD);
        let bytes = emit(&route);
        let expected: Vec<u8> = [
            &44u32.to_ne_bytes()[..],
            &24u16.to_ne_bytes(),
            &(0x1u16 | 0x4 | 0x400 | 0x100).to_ne_bytes(),
            &7u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &[2, 32, 0, 0, 254, 230, 253, 1],
            &0u32.to_ne_bytes(),
            &8u16.to_ne_bytes(),
            &1u16.to_ne_bytes(),
            &[10, 65, 0, 3],
            &8u16.to_ne_bytes(),
            &4u16.to_ne_bytes(),
            &9u32.to_ne_bytes(),
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn route_survives_build_and_parse() {
        let routes = [
            Route::link_scope(net("10.65.0.3/32"), 9, RouteProtocol::WORKLOAD),
            Route::blackhole(net("10.65.0.0/26"), RouteProtocol::BLACKHOLE),
            Route::via(
                net("10.66.0.0/26"),
                "10.0.0.2".parse().unwrap(),
                Some(3),
                RouteProtocol::TUNNEL,
            )
            .with_onlink()
            .with_table(1000)
            .with_priority(20),
            Route::via(
                net("0.0.0.0/0"),
                "169.254.1.1".parse().unwrap(),
                Some(2),
                RouteProtocol::BOOT,
            ),
            Route::blackhole(net("fd00:10::/122"), RouteProtocol::BLACKHOLE),
            Route::link_scope(net("10.67.0.0/26"), 0, RouteProtocol::BGP).with_multipath(vec![
                NextHop {
                    gateway: Some("10.0.0.2".parse().unwrap()),
                    output_ifindex: Some(3),
                    weight: 1,
                    onlink: false,
                },
                NextHop {
                    gateway: Some("10.0.0.3".parse().unwrap()),
                    output_ifindex: Some(3),
                    weight: 5,
                    onlink: true,
                },
            ]),
        ];
        for route in routes {
            let bytes = emit(&route);
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(message)) =
                parsed.payload
            else {
                panic!("not a route message");
            };
            assert_eq!(route_from_message(&message).unwrap(), route);
        }
    }

    #[test]
    fn delete_carries_only_key_and_protocol() {
        let route = Route::link_scope(net("10.65.0.3/32"), 9, RouteProtocol::WORKLOAD);
        let message = route_delete_message(&route);
        assert_eq!(message.header.scope, PacketScope::NoWhere);
        assert_eq!(u8::from(message.header.protocol), 230);
        assert!(!message
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(_))));
        assert!(message.buffer_len() > 0);
    }

    #[test]
    fn ext_ack_text_is_found_in_capped_and_full_errors() {
        let mut capped = vec![0u8; 16];
        let text = b"Nexthop device is not up\0";
        let len = 4 + text.len();
        capped.extend_from_slice(&(len as u16).to_ne_bytes());
        capped.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        capped.extend_from_slice(text);
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &capped),
            "Nexthop device is not up"
        );
        let mut full = vec![0u8; 24];
        full[0..4].copy_from_slice(&22u32.to_ne_bytes());
        full.extend_from_slice(&capped[16..]);
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS, &full),
            "Nexthop device is not up"
        );
        assert_eq!(ext_ack_message(0, &full), "");
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &[1, 2]), "");
    }

    #[test]
    fn fdb_and_neighbour_round_trip() {
        let entry = FdbEntry {
            ifindex: 4,
            mac: MacAddr([0x66, 0, 0, 0, 0, 1]),
            destination: Some("192.168.0.2".parse().unwrap()),
        };
        assert_eq!(fdb_from_message(&fdb_message(&entry)).unwrap(), entry);
        let neighbour = Neighbour {
            ifindex: 4,
            ip: "10.66.0.0".parse().unwrap(),
            mac: Some(MacAddr([0x66, 0, 0, 0, 0, 1])),
            permanent: true,
        };
        assert_eq!(
            neighbour_from_message(&neighbour_message(&neighbour)).unwrap(),
            neighbour
        );
    }
}
