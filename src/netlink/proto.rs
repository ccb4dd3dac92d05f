//! Route protocol numbers: the one place where routed declares which routes it owns.
//!
//! The kernel stores an 8-bit `rtm_protocol` with every route and never interprets values above
//! `RTPROT_STATIC` (4); routing daemons use it to mark their routes. routed marks each class of
//! route with its own number, so a reconciler lists, diffs and deletes only its own class and never
//! touches a route someone else installed (Calico's felix regretted not doing this from day one).
//!
//! | number | name         | class                                                    | installed by |
//! |--------|--------------|----------------------------------------------------------|--------------|
//! | 230    | `routed-wl`  | workload `/32` (`/128`) to a pod's host veth, scope link | CNI plugin, route reconciler |
//! | 231    | `routed-bh`  | blackhole for each local IPAM block                      | route reconciler |
//! | 232    | `routed-bgp` | prefixes learned over BGP: `nhid N` (a nexthop object `via NH dev IF`, same protocol), or `via NH dev tunl0 onlink` (IPIP) | route reconciler (from the BGP RIB) |
//! | 233    | `routed-tun` | VXLAN pools' blocks from the datastore: `via VTEP dev vxlan.routed onlink`, or `via NH` (CrossSubnet, same subnet) | tunnel manager |
//!
//! Why 230–233: they collide with nothing in iproute2's `/etc/iproute2/rt_protos` (0–4 kernel
//! and boot, 8–18 gated … keepalived, 42 babel, 99 openr, 186–192 bgp/isis/ospf/rip/eigrp),
//! nothing in FRR's `rt_protos.d/frr.conf` (186–198: nhrp, ldp, sharp, pbr, static, openfabric,
//! srte), nor the numbers other Kubernetes network agents use (felix 80, kube-router 17, BIRD 12,
//! monogon 129, assorted tools at 200–201). One contiguous block keeps `ip route show proto
//! routed-*` style audits simple.
//!
//! `ip route` prints names instead of numbers once [`render_rt_protos`] is written to
//! `/etc/iproute2/rt_protos.d/routed.conf` ([`RT_PROTOS_PATH`]).

use std::fmt;

/// A route protocol number (`rtm_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RouteProtocol(pub u8);

impl RouteProtocol {
    /// `RTPROT_UNSPEC` (0).
    pub const UNSPEC: RouteProtocol = RouteProtocol(0);
    /// `RTPROT_KERNEL` (2): routes the kernel adds itself (connected subnets).
    pub const KERNEL: RouteProtocol = RouteProtocol(2);
    /// `RTPROT_BOOT` (3): the default of `ip route add`.
    pub const BOOT: RouteProtocol = RouteProtocol(3);
    /// `RTPROT_STATIC` (4): `ip route add ... proto static`.
    pub const STATIC: RouteProtocol = RouteProtocol(4);

    /// Workload routes: `<pod ip>/32 dev <host veth> scope link`.
    pub const WORKLOAD: RouteProtocol = RouteProtocol(230);
    /// Blackhole routes for the node's own IPAM blocks: `blackhole <block>/26`.
    pub const BLACKHOLE: RouteProtocol = RouteProtocol(231);
    /// Routes learned over BGP and installed as plain `via NH`.
    pub const BGP: RouteProtocol = RouteProtocol(232);
    /// Routes learned over BGP that go through a tunnel (`dev tunl0 onlink`, VXLAN device).
    pub const TUNNEL: RouteProtocol = RouteProtocol(233);

    /// routed's protocols, in table order.
    pub const OURS: [RouteProtocol; 4] = [
        RouteProtocol::WORKLOAD,
        RouteProtocol::BLACKHOLE,
        RouteProtocol::BGP,
        RouteProtocol::TUNNEL,
    ];

    /// True when routed owns routes carrying this protocol.
    pub fn is_ours(self) -> bool {
        Self::OURS.contains(&self)
    }

    /// The `rt_protos` name of one of routed's protocols.
    pub fn routed_name(self) -> Option<&'static str> {
        match self {
            RouteProtocol::WORKLOAD => Some("routed-wl"),
            RouteProtocol::BLACKHOLE => Some("routed-bh"),
            RouteProtocol::BGP => Some("routed-bgp"),
            RouteProtocol::TUNNEL => Some("routed-tun"),
            _ => None,
        }
    }

    /// One line of description per protocol, used in the rendered rt_protos file.
    fn description(self) -> &'static str {
        match self {
            RouteProtocol::WORKLOAD => "workload /32 and /128 routes to pod veths",
            RouteProtocol::BLACKHOLE => "blackholes for local IPAM blocks",
            RouteProtocol::BGP => "routes learned over BGP",
            RouteProtocol::TUNNEL => "VXLAN routes from the datastore",
            _ => "",
        }
    }
}

impl fmt::Display for RouteProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.routed_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Where iproute2 looks for extra protocol names (files ending in `.conf`).
pub const RT_PROTOS_PATH: &str = "/etc/iproute2/rt_protos.d/routed.conf";

/// Renders an iproute2 `rt_protos.d` file: `<number> <name>` lines, so `ip route` shows
/// `proto routed-wl` instead of `proto 230`.
pub fn render_rt_protos() -> String {
    let mut out = String::from("# routed route protocols (generated; see src/netlink/proto.rs)\n");
    for protocol in RouteProtocol::OURS {
        let name = protocol.routed_name().unwrap_or("routed-unknown");
        out.push_str(&format!(
            "# {name}: {}\n{} {name}\n",
            protocol.description(),
            protocol.0
        ));
    }
    out
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    /// iproute2 6.x rt_protos, FRR's frr.conf, and other agents' numbers.
    const TAKEN: &[u8] = &[
        0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 80, 99, 129, 186, 187, 188,
        189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 200, 201,
    ];

    #[test]
    fn our_protocols_are_distinct_and_collide_with_nothing_known() {
        for (i, a) in RouteProtocol::OURS.iter().enumerate() {
            assert!(!TAKEN.contains(&a.0), "{} collides", a.0);
            for b in &RouteProtocol::OURS[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn rendered_file_has_one_line_per_protocol() {
        let text = render_rt_protos();
        let lines: Vec<_> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "230 routed-wl",
                "231 routed-bh",
                "232 routed-bgp",
                "233 routed-tun",
            ]
        );
    }

    #[test]
    fn display_uses_names_for_ours_numbers_for_others() {
        assert_eq!(RouteProtocol::WORKLOAD.to_string(), "routed-wl");
        assert_eq!(RouteProtocol::STATIC.to_string(), "4");
        assert!(!RouteProtocol::STATIC.is_ours());
    }
}
