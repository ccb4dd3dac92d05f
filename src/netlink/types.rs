//! Plain data exchanged with the [`Netlink`](super::Netlink) trait: links, MAC addresses, routes
//! and their kernel key, neighbours, FDB entries, batch reports and route events.
//!
//! These types know nothing about netlink messages (that is `message.rs`); the fake and the
//! kernel backend both speak them, and the reconciler diffs them. A [`Route`] is keyed like the
//! kernel keys its FIB entries ([`RouteKey`]: table, family, destination prefix, priority), so
//! "desired" and "actual" maps line up without translation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnetwork::IpNetwork;

use super::proto::RouteProtocol;

/// The main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;

/// The gateway address every pod routes through; the host veth answers ARP for it (proxy ARP).
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The kernel's default metric for IPv6 routes added with priority 0.
pub const IPV6_DEFAULT_PRIORITY: u32 = 1024;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ee:ee:ee:ee:ee:ee`, the MAC of every host-side veth (as Calico uses).
    pub const HOST_VETH: MacAddr = MacAddr([0xee; 6]);
    /// `00:00:00:00:00:00`, the VXLAN "flood to" FDB address.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads a MAC from the kernel's byte form; `None` unless exactly 6 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts
                .next()
                .ok_or_else(|| format!("MAC {text:?}: too short"))?;
            if part.len() != 2 {
                return Err(format!("MAC {text:?}: bad octet {part:?}"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|e| format!("MAC {text:?}: {e}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC {text:?}: too long"));
        }
        Ok(MacAddr(bytes))
    }
}

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// `IFLA_INFO_KIND`: "veth", "vxlan", "dummy", ...; `None` for physical devices and lo.
    pub kind: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// For a veth: the peer's ifindex (in the peer's namespace when it lives elsewhere).
    pub peer_ifindex: Option<u32>,
}

/// What [`Netlink::create_vxlan`](super::Netlink::create_vxlan) builds:
/// `ip link add <name> [address <mac>] mtu <mtu> type vxlan id <vni> local <local> dev <parent>
/// dstport <port> [no]learning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// UDP destination port (4789, the IANA port).
    pub port: u16,
    /// Source address of the outer packets (the node address).
    pub local: Option<Ipv4Addr>,
    /// The interface the outer packets leave through.
    pub parent_ifindex: Option<u32>,
    pub learning: bool,
    pub mtu: u32,
    /// The device MAC; the kernel picks a random one when `None`.
    pub mac: Option<MacAddr>,
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What the kernel does with a packet matching the route (`rtm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
    /// Local, broadcast, multicast, ...: only ever read back, never written by routed.
    Other(u8),
}

/// Route scope (`rtm_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteScope {
    /// Reaches beyond this link (a gateway route).
    Universe,
    /// Directly on the link (`scope link`): a workload /32, the pod's route to 169.254.1.1.
    Link,
    /// This host only.
    Host,
    Other(u8),
}

/// One next hop of an ECMP (multipath) route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub output_ifindex: Option<u32>,
    /// Relative weight, 1..=256 (the kernel stores weight − 1).
    pub weight: u16,
    pub onlink: bool,
}

/// The kernel's identity of a route: adding a second route with the same key fails with EEXIST,
/// replacing it overwrites it. (The kernel also keys on TOS, which routed always leaves 0.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub table: u32,
    pub family: Family,
    pub destination: IpNetwork,
    pub priority: u32,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} table {} metric {}",
            self.destination, self.table, self.priority
        )
    }
}

/// A route as routed writes it and as the kernel reports it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    /// Destination prefix; always stored with host bits cleared (see [`Route::normalized`]).
    pub destination: IpNetwork,
    /// The metric (`RTA_PRIORITY`); 0 for IPv4 unless set. IPv6 stores 0 as 1024.
    pub priority: u32,
    pub kind: RouteKind,
    pub protocol: RouteProtocol,
    pub scope: RouteScope,
    pub output_ifindex: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// `onlink`: trust the gateway is on the link even without a covering connected route.
    pub onlink: bool,
    /// ECMP next hops; when non-empty, `gateway` and `output_ifindex` are `None`.
    pub multipath: Vec<NextHop>,
    /// A kernel nexthop object (`nhid N`). When set, a route is written with it instead of its
    /// gateway, device and multipath hops (which then only describe it); the kernel reports
    /// both.
    pub nexthop_id: Option<u32>,
}

impl Route {
    fn base(destination: IpNetwork, protocol: RouteProtocol) -> Route {
        Route {
            table: TABLE_MAIN,
            destination,
            priority: 0,
            kind: RouteKind::Unicast,
            protocol,
            scope: RouteScope::Universe,
            output_ifindex: None,
            gateway: None,
            onlink: false,
            multipath: Vec::new(),
            nexthop_id: None,
        }
    }

    /// `<destination> dev <ifindex> scope link proto <protocol>`: a workload route to a host
    /// veth, or the pod's own `169.254.1.1 dev eth0 scope link`.
    pub fn link_scope(destination: IpNetwork, ifindex: u32, protocol: RouteProtocol) -> Route {
        Route {
            scope: RouteScope::Link,
            output_ifindex: Some(ifindex),
            ..Route::base(destination, protocol)
        }
        .normalized()
    }

    /// A unicast route with nothing but its key: what a delete of a `via` route needs.
    pub fn unicast_key(destination: IpNetwork, protocol: RouteProtocol) -> Route {
        Route::base(destination, protocol).normalized()
    }

    /// `blackhole <destination> proto <protocol>`.
    pub fn blackhole(destination: IpNetwork, protocol: RouteProtocol) -> Route {
        Route {
            kind: RouteKind::Blackhole,
            ..Route::base(destination, protocol)
        }
        .normalized()
    }

    /// `<destination> via <gateway> [dev <ifindex>] proto <protocol>`.
    pub fn via(
        destination: IpNetwork,
        gateway: IpAddr,
        ifindex: Option<u32>,
        protocol: RouteProtocol,
    ) -> Route {
        Route {
            gateway: Some(gateway),
            output_ifindex: ifindex,
            ..Route::base(destination, protocol)
        }
        .normalized()
    }

    /// Sets the `onlink` flag (as BIRD does for `via NH dev tunl0 onlink`).
    pub fn with_onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    /// Sets the table.
    pub fn with_table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    /// Sets the metric.
    pub fn with_priority(mut self, priority: u32) -> Route {
        self.priority = priority;
        self.normalized()
    }

    /// Replaces the single next hop with ECMP next hops.
    pub fn with_multipath(mut self, hops: Vec<NextHop>) -> Route {
        self.gateway = None;
        self.output_ifindex = None;
        self.multipath = hops;
        self
    }

    /// The address family of the destination.
    pub fn family(&self) -> Family {
        Family::of(self.destination.ip())
    }

    /// Clears host bits of the destination and applies the kernel's IPv6 default metric, so a
    /// route built here compares equal to the one read back from the kernel.
    pub fn normalized(mut self) -> Route {
        let prefix = self.destination.prefix();
        if let Ok(net) = IpNetwork::new(self.destination.network(), prefix) {
            self.destination = net;
        }
        if self.family() == Family::V6 && self.priority == 0 {
            self.priority = IPV6_DEFAULT_PRIORITY;
        }
        self
    }

    /// The kernel's key of this route.
    pub fn key(&self) -> RouteKey {
        let normalized = self.clone().normalized();
        RouteKey {
            table: normalized.table,
            family: normalized.family(),
            destination: normalized.destination,
            priority: normalized.priority,
        }
    }
}

/// Which routes [`Netlink::list_routes`](super::Netlink::list_routes) returns. Empty = all
/// unicast-ish routes of both families in all tables (cache clones are always skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteFilter {
    pub protocol: Option<RouteProtocol>,
    pub table: Option<u32>,
    pub family: Option<Family>,
}

impl RouteFilter {
    /// Routes of one protocol in the main table, both families.
    pub fn protocol(protocol: RouteProtocol) -> RouteFilter {
        RouteFilter {
            protocol: Some(protocol),
            table: Some(TABLE_MAIN),
            family: None,
        }
    }

    /// True when `route` passes the filter.
    pub fn matches(&self, route: &Route) -> bool {
        self.protocol.is_none_or(|p| p == route.protocol)
            && self.table.is_none_or(|t| t == route.table)
            && self.family.is_none_or(|f| f == route.family())
    }
}

/// A neighbour (ARP / NDP) entry: `ip neigh replace <ip> lladdr <mac> dev <ifindex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

/// A bridge FDB entry on a VXLAN device: `bridge fdb replace <mac> dev <ifindex> dst <ip>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub mac: MacAddr,
    pub destination: Option<IpAddr>,
}

/// One route a batch could not install.
#[derive(Debug)]
pub struct BatchFailure {
    /// Index into the slice given to the batch call.
    pub index: usize,
    pub key: RouteKey,
    pub error: super::NetlinkError,
}

/// Outcome of a batch install or delete: every route was attempted; `failures` lists the ones
/// the kernel refused, with their index into the input.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub attempted: usize,
    pub succeeded: usize,
    pub failures: Vec<BatchFailure>,
}

impl BatchReport {
    /// True when every route went in.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty() && self.succeeded == self.attempted
    }
}

/// What the route monitor saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    /// RTM_NEWROUTE: a route appeared or changed.
    Added(Route),
    /// RTM_DELROUTE: a route went away (by anyone, including the link going down).
    Deleted(Route),
    /// RTM_DELNEXTHOP of a nexthop object of this protocol: the kernel removed every route using
    /// it without an RTM_DELROUTE each, so the owner must resync.
    NexthopDeleted(RouteProtocol),
    /// The kernel dropped notifications (ENOBUFS): the receiver must resync from a full list.
    Overflow,
}

impl RouteEvent {
    /// Whether an owner of `protocols` must repair something: a deletion of a route or nexthop
    /// object of one of them, or lost notifications.
    pub fn needs_repair_by(&self, protocols: &[RouteProtocol]) -> bool {
        match self {
            RouteEvent::Deleted(route) => protocols.contains(&route.protocol),
            RouteEvent::NexthopDeleted(protocol) => protocols.contains(protocol),
            RouteEvent::Overflow => true,
            RouteEvent::Added(_) => false,
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac: MacAddr = "ee:ee:ee:ee:ee:ee".parse().unwrap();
        assert_eq!(mac, MacAddr::HOST_VETH);
        assert_eq!(
            MacAddr([1, 2, 3, 0xab, 0xcd, 0xef]).to_string(),
            "01:02:03:ab:cd:ef"
        );
        assert!("ee:ee".parse::<MacAddr>().is_err());
        assert!("ee:ee:ee:ee:ee:ee:ee".parse::<MacAddr>().is_err());
        assert!("eg:ee:ee:ee:ee:ee".parse::<MacAddr>().is_err());
    }

    #[test]
    fn route_key_normalizes_host_bits_and_v6_metric() {
        let a = Route::blackhole("10.0.0.7/26".parse().unwrap(), RouteProtocol::BLACKHOLE);
        assert_eq!(a.destination.to_string(), "10.0.0.0/26");
        let b = Route::blackhole("fd00::1/122".parse().unwrap(), RouteProtocol::BLACKHOLE);
        assert_eq!(b.key().priority, IPV6_DEFAULT_PRIORITY);
        assert_eq!(b.key().destination.to_string(), "fd00::/122");
    }

    #[test]
    fn filter_matches_protocol_table_and_family() {
        let route = Route::link_scope("10.1.2.3/32".parse().unwrap(), 7, RouteProtocol::WORKLOAD);
        assert!(RouteFilter::default().matches(&route));
        assert!(RouteFilter::protocol(RouteProtocol::WORKLOAD).matches(&route));
        assert!(!RouteFilter::protocol(RouteProtocol::BGP).matches(&route));
        let v6_only = RouteFilter {
            family: Some(Family::V6),
            ..RouteFilter::default()
        };
        assert!(!v6_only.matches(&route));
    }
}
