//! The calc layer: datastore state → what this node wants (BGP peers, originated blocks, kernel
//! routes). Pure functions, no I/O: the routing loop feeds them snapshots and applies the result.
//!
//! Calico's rules, reproduced:
//! - Mesh (BgpConfiguration.node_to_node_mesh): a session to every other node with an IPv4
//!   address; of each pair, the node with the higher address is passive. Names `Mesh_<ip>`.
//! - BgpPeers without `node` are global (`Global_<ip>`); with `node` = this node, node specific
//!   (`Node_<ip>`). A port other than 179 appends `_port_<n>`.
//! - Originated: this node's confirmed blocks in enabled pools that are exported (not
//!   `disable_bgp_export`, not VXLAN: VXLAN routes come from the datastore, not BGP).
//! - Kernel: a blackhole for each local block (proto routed-bh) and each learned best route
//!   `via NH` (proto routed-bgp; ECMP when several next hops). When the block's pool says
//!   `ipip_mode: Always`, or `CrossSubnet` and NH is not on a subnet of the node's own
//!   addresses, the route goes `via NH dev tunl0 onlink` instead (still routed-bgp). Learned
//!   routes for blocks of VXLAN pools are ignored: those come from the datastore.
//! - VXLAN ([`desired_vxlan`]): for every remote node with a VTEP, a permanent neighbour
//!   (VTEP address → VTEP MAC) and an FDB entry (VTEP MAC → node address) on `vxlan.routed`, and
//!   for each block affine to that node in a VXLAN pool `<block> via <VTEP> dev vxlan.routed
//!   onlink` — or, with `CrossSubnet` and the node on a local subnet, `<block> via <node>` — all
//!   proto routed-tun.
//! - Pod MTU: node MTU minus the largest overhead of the encapsulations in use (IPIP 20,
//!   VXLAN 50).

use crate::bgp::speaker::PeerSpec;
use crate::model::{AffinityState, BgpConfiguration, BgpPeer, EncapMode, IpPool, Node};
use crate::netlink::{FdbEntry, MacAddr, Neighbour, NextHop, Route, RouteProtocol};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

/// Everything calc reads, as of one moment.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub config: BgpConfiguration,
    pub nodes: Vec<Node>,
    pub peers: Vec<BgpPeer>,
    pub pools: Vec<IpPool>,
    /// This node's block affinities.
    pub affinities: Vec<(IpNetwork, AffinityState)>,
    /// Every node's block affinities: (node, block, state).
    pub all_affinities: Vec<(String, IpNetwork, AffinityState)>,
}

/// What the kernel routes need to know about encapsulation, as of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncapView {
    pub pools: Vec<IpPool>,
    /// Subnets of the node's own addresses (the "local subnets" of `CrossSubnet`).
    pub local_subnets: Vec<IpNetwork>,
    /// `tunl0`'s ifindex once the agent has set it up.
    pub ipip_ifindex: Option<u32>,
}

/// IPIP header overhead.
pub const IPIP_OVERHEAD: u32 = 20;
/// VXLAN overhead: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

fn encapsulates(mode: EncapMode) -> bool {
    mode != EncapMode::Never
}

/// Which encapsulation devices the enabled pools need: (IPIP on IPv4 pools, VXLAN).
pub fn encapsulation_needed(pools: &[IpPool]) -> (bool, bool) {
    let enabled = || pools.iter().filter(|p| !p.disabled);
    (
        enabled().any(|p| p.cidr.is_ipv4() && encapsulates(p.ipip_mode)),
        enabled().any(|p| encapsulates(p.vxlan_mode)),
    )
}

/// Bytes the encapsulations in use take from the pod MTU: the largest of the enabled pools'.
pub fn encapsulation_overhead(pools: &[IpPool]) -> u32 {
    match encapsulation_needed(pools) {
        (_, true) => VXLAN_OVERHEAD,
        (true, false) => IPIP_OVERHEAD,
        (false, false) => 0,
    }
}

/// True when `ip` lies in one of `subnets`.
pub fn on_local_subnet(ip: IpAddr, subnets: &[IpNetwork]) -> bool {
    subnets.iter().any(|s| s.contains(ip))
}

/// The subnets of a node's addresses (`10.0.0.5/24` → `10.0.0.0/24`).
pub fn subnets_of(addresses: &[IpNetwork]) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = addresses
        .iter()
        .filter_map(|a| IpNetwork::new(a.network(), a.prefix()).ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether traffic to a block of `pool` through next hop `next_hop` goes through an IPIP tunnel.
pub fn ipip_wanted(pool: Option<&IpPool>, next_hop: IpAddr, local_subnets: &[IpNetwork]) -> bool {
    match pool.map(|p| p.ipip_mode) {
        Some(EncapMode::Always) => true,
        Some(EncapMode::CrossSubnet) => !on_local_subnet(next_hop, local_subnets),
        Some(EncapMode::Never) | None => false,
    }
}

pub(super) fn peer_name(prefix: &str, ip: IpAddr, port: u16) -> String {
    let ip = ip.to_string().replace(['.', ':'], "_");
    if port == 179 {
        format!("{prefix}_{ip}")
    } else {
        format!("{prefix}_{ip}_port_{port}")
    }
}

/// Where a peer comes from (Calico's peer types); the speaker sees only its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKind {
    Mesh,
    Global,
    NodeSpecific,
}

impl PeerKind {
    /// How `routectl status` names it (the peer spec's description).
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::NodeSpecific => "node specific",
        }
    }

    /// The kind whose [`PeerKind::label`] this is: the speaker's status carries the label as
    /// the peer's description, and the local API maps it back.
    pub fn from_label(label: &str) -> Option<PeerKind> {
        [PeerKind::Mesh, PeerKind::Global, PeerKind::NodeSpecific]
            .into_iter()
            .find(|kind| kind.label() == label)
    }

    /// The prefix of the peer's name (Calico's: `Mesh_10_0_0_2`, `Global_<ip>`, `Node_<ip>`).
    pub(super) fn name_prefix(self) -> &'static str {
        match self {
            PeerKind::Mesh => "Mesh",
            PeerKind::Global => "Global",
            PeerKind::NodeSpecific => "Node",
        }
    }
}

/// A resource's BFD settings as the speaker's, when enabled.
pub fn bfd_spec(config: Option<&crate::model::BfdConfig>) -> Option<crate::bfd::BfdSpec> {
    let config = config.filter(|c| c.enabled)?;
    Some(crate::bfd::BfdSpec {
        intervals: crate::bfd::Intervals {
            min_tx: Duration::from_millis(u64::from(config.min_tx_ms)),
            min_rx: Duration::from_millis(u64::from(config.min_rx_ms)),
            multiplier: config.multiplier,
        },
        graceful: config.graceful,
    })
}

/// The BGP sessions this node should have: Calico's mesh, global and node-specific peers
/// (by address or by peer selector, see [`crate::agent::calc_rr`]) as the speaker's neutral
/// peer specs. A route reflector (a node with a cluster ID) has no mesh, and mesh nodes skip
/// reflectors.
pub fn desired_peers(me: &Node, state: &ClusterState) -> Vec<PeerSpec> {
    let my_ip = me.ipv4_address.map(|a| a.ip());
    let my_as = me.as_number.unwrap_or(state.config.as_number);
    let mut out = Vec::new();
    if state.config.node_to_node_mesh && me.rr_cluster_id.is_none() {
        for node in &state.nodes {
            let Some(addr) = node.ipv4_address.map(|a| a.ip()) else {
                continue;
            };
            if node.name == me.name || Some(addr) == my_ip || node.rr_cluster_id.is_some() {
                continue;
            }
            let remote_as = node.as_number.unwrap_or(state.config.as_number);
            let kind = PeerKind::Mesh;
            let mut spec = PeerSpec::new(
                peer_name(kind.name_prefix(), addr, 179),
                kind.label(),
                addr,
                my_as,
                remote_as,
            );
            spec.port = state.config.listen_port;
            spec.passive = my_ip.is_some_and(|mine| mine > addr);
            spec.password = state.config.node_mesh_password.clone();
            spec.bfd = bfd_spec(state.config.bfd.as_ref());
            out.push(spec);
        }
    }
    for peer in &state.peers {
        out.extend(super::calc_rr::explicit_peers(me, peer, state));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The pool a block belongs to.
fn pool_of<'a>(pools: &'a [IpPool], block: &IpNetwork) -> Option<&'a IpPool> {
    pools.iter().find(|p| p.cidr.contains(block.network()))
}

/// This node's confirmed blocks in enabled pools (for blackholes).
pub fn local_blocks(state: &ClusterState) -> BTreeSet<IpNetwork> {
    state
        .affinities
        .iter()
        .filter(|(_, s)| *s == AffinityState::Confirmed)
        .filter(|(b, _)| pool_of(&state.pools, b).is_some_and(|p| !p.disabled))
        .map(|(b, _)| *b)
        .collect()
}

/// The blocks this node advertises over BGP.
pub fn originated_blocks(state: &ClusterState) -> BTreeSet<IpNetwork> {
    local_blocks(state)
        .into_iter()
        .filter(|b| {
            pool_of(&state.pools, b)
                .is_some_and(|p| !p.disable_bgp_export && p.vxlan_mode == EncapMode::Never)
        })
        .collect()
}

/// The route routed wants in the kernel for `prefix`, whose best learned next hops are
/// `next_hops`: the blackhole of a local block, else the learned route (`learned_route`).
/// `None`: no route of ours belongs there. The route reconciler asks this per prefix.
pub fn desired_route(
    prefix: IpNetwork,
    next_hops: &[IpAddr],
    local: &BTreeSet<IpNetwork>,
    encap: &EncapView,
) -> Option<Route> {
    if local.contains(&prefix) {
        return Some(Route::blackhole(prefix, RouteProtocol::BLACKHOLE));
    }
    learned_route(prefix, next_hops, local, encap)
}

/// The kernel route for one learned best route: via its next hops (through `tunl0` when the
/// block's pool asks for IPIP and the device is up). `None` when the prefix is a local block,
/// belongs to a VXLAN pool (programmed from the datastore, `desired_vxlan`) or has no next hop
/// of its family.
pub fn learned_route(
    prefix: IpNetwork,
    next_hops: &[IpAddr],
    local: &BTreeSet<IpNetwork>,
    encap: &EncapView,
) -> Option<Route> {
    if local.contains(&prefix) {
        return None;
    }
    let pool = pool_of(&encap.pools, &prefix);
    if pool.is_some_and(|p| encapsulates(p.vxlan_mode)) {
        return None;
    }
    let tunnel = |hop: IpAddr| {
        encap
            .ipip_ifindex
            .filter(|_| hop.is_ipv4() && ipip_wanted(pool, hop, &encap.local_subnets))
    };
    let mut hops = next_hops
        .iter()
        .copied()
        .filter(|h| h.is_ipv4() == prefix.is_ipv4());
    let first = hops.next()?;
    let Some(second) = hops.next() else {
        let r = Route::via(prefix, first, tunnel(first), RouteProtocol::BGP);
        return Some(if r.output_ifindex.is_some() {
            r.with_onlink()
        } else {
            r
        });
    };
    let multipath = [first, second]
        .into_iter()
        .chain(hops)
        .map(|h| NextHop {
            gateway: Some(h),
            output_ifindex: tunnel(h),
            weight: 1,
            onlink: tunnel(h).is_some(),
        })
        .collect();
    Some(Route::via(prefix, first, None, RouteProtocol::BGP).with_multipath(multipath))
}

/// What `vxlan.routed` needs: routes (proto routed-tun), neighbours and FDB entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanDesired {
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<FdbEntry>,
}

/// A remote node's VTEP: (VTEP address, VTEP MAC, node address), when it has published all three.
fn vtep_of(node: &Node) -> Option<(IpAddr, MacAddr, IpAddr)> {
    let vtep = node.ipv4_vxlan_tunnel_addr.filter(IpAddr::is_ipv4)?;
    let mac: MacAddr = node.vxlan_tunnel_mac.as_deref()?.parse().ok()?;
    let address = node.ipv4_address?.ip();
    Some((vtep, mac, address))
}

/// The VXLAN state this node wants, from every node's VTEP and block affinities. `ifindex` is
/// `vxlan.routed`'s (`None` while it is not up: only plain same-subnet routes then).
pub fn desired_vxlan(
    me: &str,
    state: &ClusterState,
    local_subnets: &[IpNetwork],
    ifindex: Option<u32>,
) -> VxlanDesired {
    let mut out = VxlanDesired::default();
    for node in state.nodes.iter().filter(|n| n.name != me) {
        let vtep = vtep_of(node);
        if let (Some((vtep_ip, mac, address)), Some(ifindex)) = (vtep, ifindex) {
            out.neighbours.push(Neighbour {
                ifindex,
                ip: vtep_ip,
                mac: Some(mac),
                permanent: true,
            });
            out.fdb.push(FdbEntry {
                ifindex,
                mac,
                destination: Some(address),
            });
        }
        let Some(address) = node.ipv4_address.map(|a| a.ip()) else {
            continue;
        };
        for (owner, block, affinity) in &state.all_affinities {
            if *owner != node.name || *affinity != AffinityState::Confirmed || !block.is_ipv4() {
                continue;
            }
            let Some(pool) = pool_of(&state.pools, block).filter(|p| !p.disabled) else {
                continue;
            };
            let plain = match pool.vxlan_mode {
                EncapMode::Never => continue,
                EncapMode::Always => false,
                EncapMode::CrossSubnet => on_local_subnet(address, local_subnets),
            };
            if plain {
                out.routes
                    .push(Route::via(*block, address, None, RouteProtocol::TUNNEL));
            } else if let (Some((vtep_ip, _, _)), Some(ifindex)) = (vtep, ifindex) {
                out.routes.push(
                    Route::via(*block, vtep_ip, Some(ifindex), RouteProtocol::TUNNEL).with_onlink(),
                );
            }
        }
    }
    out.routes.sort_by_key(|r| r.destination);
    out.routes.dedup_by_key(|r| r.destination);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::rib::BestRoute;
    use crate::bgp::speaker::PeerRole;

    fn node(name: &str, ip: &str) -> Node {
        Node {
            name: name.into(),
            ipv4_address: Some(ip.parse().unwrap()),
            ..Node::default()
        }
    }

    #[test]
    fn mesh_peers_with_the_higher_address_passive() {
        let state = ClusterState {
            nodes: vec![
                node("a", "10.0.0.1/24"),
                node("b", "10.0.0.2/24"),
                node("c", "10.0.0.3/24"),
            ],
            ..ClusterState::default()
        };
        let peers = desired_peers(&state.nodes[1], &state);
        let names: Vec<(&str, bool)> = peers.iter().map(|p| (p.name.as_str(), p.passive)).collect();
        assert_eq!(names, [("Mesh_10_0_0_1", true), ("Mesh_10_0_0_3", false)]);
        assert!(peers.iter().all(|p| p.remote_as == 64512
            && p.description == "node-to-node mesh"
            && p.role == PeerRole::Internal));
        let off = ClusterState {
            config: BgpConfiguration {
                node_to_node_mesh: false,
                ..Default::default()
            },
            ..state
        };
        assert!(desired_peers(&off.nodes[0], &off).is_empty());
    }

    #[test]
    fn global_and_node_specific_peers() {
        let peer = |name: &str, ip: &str, node: Option<&str>| BgpPeer {
            name: name.into(),
            peer_ip: Some(ip.parse().unwrap()),
            peer_port: None,
            as_number: 65001,
            node: node.map(str::to_string),
            password: None,
            source_address: None,
            hold_time: Some(9),
            keepalive_time: None,
            max_restart_time: None,
            ..BgpPeer::default()
        };
        let state = ClusterState {
            config: BgpConfiguration {
                node_to_node_mesh: false,
                ..Default::default()
            },
            nodes: vec![node("a", "10.0.0.1/24")],
            peers: vec![
                peer("tor", "10.0.0.254", None),
                peer("mine", "10.1.0.1", Some("a")),
                peer("theirs", "10.2.0.1", Some("b")),
            ],
            ..ClusterState::default()
        };
        let peers = desired_peers(&state.nodes[0], &state);
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Global_10_0_0_254", "Node_10_1_0_1"]);
        assert_eq!(peers[0].timers.hold_time, 9);
        let labels: Vec<&str> = peers.iter().map(|p| p.description.as_str()).collect();
        assert_eq!(labels, ["global", "node specific"]);
        // The cluster's AS is 64512, these peers' 65001: eBGP.
        assert!(peers.iter().all(|p| p.role == PeerRole::External));
    }

    #[test]
    fn bfd_settings_reach_the_peer_specs_only_when_enabled() {
        use crate::model::BfdConfig;
        let on = BfdConfig {
            enabled: true,
            min_rx_ms: 100,
            min_tx_ms: 200,
            multiplier: 5,
            graceful: true,
        };
        let spec = bfd_spec(Some(&on)).unwrap();
        assert_eq!(spec.intervals.min_rx, Duration::from_millis(100));
        assert_eq!(spec.intervals.min_tx, Duration::from_millis(200));
        assert_eq!(spec.intervals.multiplier, 5);
        assert!(spec.graceful);
        assert_eq!(bfd_spec(Some(&BfdConfig::default())), None);
        assert_eq!(bfd_spec(None), None);
        let state = ClusterState {
            config: BgpConfiguration {
                bfd: Some(on),
                ..Default::default()
            },
            nodes: vec![node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24")],
            ..Default::default()
        };
        let peers = desired_peers(&state.nodes[0], &state);
        assert_eq!(peers[0].bfd, Some(spec));
    }

    #[test]
    fn peer_hardening_fields_reach_the_peer_spec() {
        use crate::bgp::speaker::{MaxPrefixAction, MaxPrefixes};
        use crate::model::PrefixLimitAction;
        let peer = BgpPeer {
            name: "tor".into(),
            peer_ip: Some("10.0.0.254".parse().unwrap()),
            peer_port: Some(1179),
            as_number: 65001,
            node: None,
            password: None,
            source_address: Some("10.0.0.1".parse().unwrap()),
            hold_time: Some(30),
            keepalive_time: Some(5),
            max_restart_time: Some(60),
            bfd: None,
            max_prefixes: Some(100),
            max_prefixes_action: Some(PrefixLimitAction::Warn),
            local_as_number: Some(65100),
            ttl_security: Some(1),
            num_allowed_local_as_numbers: Some(2),
            next_hop_mode: Some(crate::model::NextHopMode::Keep),
            ..BgpPeer::default()
        };
        let state = ClusterState {
            config: BgpConfiguration {
                node_to_node_mesh: false,
                ..Default::default()
            },
            nodes: vec![node("a", "10.0.0.1/24")],
            peers: vec![peer],
            ..Default::default()
        };
        let spec = &desired_peers(&state.nodes[0], &state)[0];
        assert_eq!(spec.port, 1179);
        assert_eq!(spec.local_as, Some(65100));
        assert_eq!(spec.ttl_security, Some(1));
        assert_eq!(spec.allow_local_as, 2);
        assert_eq!(spec.next_hop_mode, crate::bgp::speaker::NextHopMode::Keep);
        assert_eq!(spec.source_address, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(spec.timers.keepalive, Some(Duration::from_secs(5)));
        assert_eq!(spec.max_restart_time, Some(Duration::from_secs(60)));
        assert_eq!(
            spec.max_prefixes,
            Some(MaxPrefixes {
                limit: 100,
                action: MaxPrefixAction::Warn
            })
        );
    }

    #[test]
    fn exports_confirmed_blocks_of_exported_pools_only() {
        let mut vx = IpPool::new("vx", "10.2.0.0/16".parse().unwrap());
        vx.vxlan_mode = EncapMode::Always;
        let mut hidden = IpPool::new("hidden", "10.3.0.0/16".parse().unwrap());
        hidden.disable_bgp_export = true;
        let mut off = IpPool::new("off", "10.4.0.0/16".parse().unwrap());
        off.disabled = true;
        let state = ClusterState {
            pools: vec![
                IpPool::new("p", "10.1.0.0/16".parse().unwrap()),
                vx,
                hidden,
                off,
            ],
            affinities: vec![
                ("10.1.0.0/26".parse().unwrap(), AffinityState::Confirmed),
                ("10.1.0.64/26".parse().unwrap(), AffinityState::Pending),
                ("10.2.0.0/26".parse().unwrap(), AffinityState::Confirmed),
                ("10.3.0.0/26".parse().unwrap(), AffinityState::Confirmed),
                ("10.4.0.0/26".parse().unwrap(), AffinityState::Confirmed),
            ],
            ..ClusterState::default()
        };
        let exported: Vec<String> = originated_blocks(&state)
            .iter()
            .map(|b| b.to_string())
            .collect();
        assert_eq!(exported, ["10.1.0.0/26"]);
        assert_eq!(
            local_blocks(&state).len(),
            3,
            "blackholes for every enabled local block"
        );
    }

    #[test]
    fn routes_blackhole_local_and_ecmp_learned() {
        let local: BTreeSet<IpNetwork> = ["10.1.0.0/26".parse().unwrap()].into();
        let best = vec![
            BestRoute {
                prefix: "10.1.0.0/26".parse().unwrap(),
                next_hops: vec!["10.0.0.9".parse().unwrap()],
            },
            BestRoute {
                prefix: "10.1.1.0/26".parse().unwrap(),
                next_hops: vec!["10.0.0.2".parse().unwrap()],
            },
            BestRoute {
                prefix: "192.0.2.0/24".parse().unwrap(),
                next_hops: vec!["10.0.0.253".parse().unwrap(), "10.0.0.254".parse().unwrap()],
            },
        ];
        let routes = routes_of(&local, &best, &EncapView::default());
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].protocol, RouteProtocol::BLACKHOLE);
        assert_eq!(routes[1].gateway, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(routes[2].multipath.len(), 2);
    }

    fn pool(name: &str, cidr: &str, ipip: EncapMode, vxlan: EncapMode) -> IpPool {
        let mut p = IpPool::new(name, cidr.parse().unwrap());
        p.ipip_mode = ipip;
        p.vxlan_mode = vxlan;
        p
    }

    fn best(prefix: &str, hops: &[&str]) -> BestRoute {
        BestRoute {
            prefix: prefix.parse().unwrap(),
            next_hops: hops.iter().map(|h| h.parse().unwrap()).collect(),
        }
    }

    /// The desired routes of local blocks and learned best routes, one `desired_route` each
    /// (what the route reconciler asks per prefix).
    fn routes_of(local: &BTreeSet<IpNetwork>, best: &[BestRoute], encap: &EncapView) -> Vec<Route> {
        let learned = best.iter().filter(|r| !local.contains(&r.prefix));
        local
            .iter()
            .map(|b| (*b, &[][..]))
            .chain(learned.map(|r| (r.prefix, &r.next_hops[..])))
            .filter_map(|(prefix, hops)| desired_route(prefix, hops, local, encap))
            .collect()
    }

    fn find<'a>(routes: &'a [Route], prefix: &str) -> &'a Route {
        let prefix: IpNetwork = prefix.parse().unwrap();
        routes
            .iter()
            .find(|r| r.destination == prefix)
            .unwrap_or_else(|| panic!("no route for {prefix} in {routes:?}"))
    }

    #[test]
    fn ipip_always_cross_subnet_and_never() {
        use EncapMode::*;
        let encap = EncapView {
            pools: vec![
                pool("always", "10.1.0.0/16", Always, Never),
                pool("cross", "10.2.0.0/16", CrossSubnet, Never),
                pool("never", "10.3.0.0/16", Never, Never),
            ],
            local_subnets: vec!["10.0.0.0/24".parse().unwrap()],
            ipip_ifindex: Some(7),
        };
        let learned = vec![
            best("10.1.0.0/26", &["10.0.0.2"]), // Always, same subnet: tunnel anyway
            best("10.2.0.0/26", &["10.0.0.2"]), // CrossSubnet, same subnet: plain
            best("10.2.0.64/26", &["10.0.1.2"]), // CrossSubnet, other subnet: tunnel
            best("10.3.0.0/26", &["10.0.1.2"]), // Never: plain
            best("192.0.2.0/24", &["10.0.1.2"]), // in no pool: plain
        ];
        let routes = routes_of(&BTreeSet::new(), &learned, &encap);
        let tunnelled = |r: &Route| r.output_ifindex == Some(7) && r.onlink;
        let plain = |r: &Route| r.output_ifindex.is_none() && !r.onlink;
        assert!(tunnelled(find(&routes, "10.1.0.0/26")));
        assert!(plain(find(&routes, "10.2.0.0/26")));
        assert!(tunnelled(find(&routes, "10.2.0.64/26")));
        assert!(plain(find(&routes, "10.3.0.0/26")));
        assert!(plain(find(&routes, "192.0.2.0/24")));
        assert!(routes
            .iter()
            .all(|r| r.protocol == RouteProtocol::BGP && r.gateway.is_some()));
        assert_eq!(
            find(&routes, "10.2.0.64/26").gateway,
            Some("10.0.1.2".parse().unwrap()),
            "the tunnel's next hop is the node address"
        );

        // tunl0 not up yet: plain routes, never a route through a missing device.
        let no_device = EncapView {
            ipip_ifindex: None,
            ..encap.clone()
        };
        let routes = routes_of(&BTreeSet::new(), &learned, &no_device);
        assert!(routes.iter().all(plain));

        // A mode change is a new view: the same learned routes, reprogrammed.
        let mut now_never = encap.clone();
        now_never.pools[0].ipip_mode = Never;
        let routes = routes_of(&BTreeSet::new(), &learned, &now_never);
        assert!(plain(find(&routes, "10.1.0.0/26")));
    }

    #[test]
    fn ipip_ecmp_hops_decide_one_by_one() {
        let encap = EncapView {
            pools: vec![pool(
                "cross",
                "10.2.0.0/16",
                EncapMode::CrossSubnet,
                EncapMode::Never,
            )],
            local_subnets: vec!["10.0.0.0/24".parse().unwrap()],
            ipip_ifindex: Some(7),
        };
        let routes = routes_of(
            &BTreeSet::new(),
            &[best("10.2.0.0/26", &["10.0.0.2", "10.0.1.2"])],
            &encap,
        );
        let hops = &routes[0].multipath;
        assert_eq!(hops.len(), 2);
        assert_eq!((hops[0].output_ifindex, hops[0].onlink), (None, false));
        assert_eq!((hops[1].output_ifindex, hops[1].onlink), (Some(7), true));
    }

    #[test]
    fn learned_routes_of_vxlan_pools_are_left_to_the_datastore() {
        let encap = EncapView {
            pools: vec![pool(
                "vx",
                "10.5.0.0/16",
                EncapMode::Never,
                EncapMode::Always,
            )],
            ..EncapView::default()
        };
        let routes = routes_of(
            &BTreeSet::new(),
            &[best("10.5.0.0/26", &["10.0.0.2"])],
            &encap,
        );
        assert!(routes.is_empty(), "{routes:?}");
    }

    #[test]
    fn overhead_and_devices_follow_enabled_pools() {
        use EncapMode::*;
        assert_eq!(encapsulation_overhead(&[]), 0);
        assert_eq!(
            encapsulation_overhead(&[pool("a", "10.1.0.0/16", Never, Never)]),
            0
        );
        let ipip = pool("b", "10.2.0.0/16", CrossSubnet, Never);
        let vxlan = pool("c", "10.3.0.0/16", Never, Always);
        assert_eq!(encapsulation_overhead(std::slice::from_ref(&ipip)), 20);
        assert_eq!(encapsulation_overhead(&[ipip.clone(), vxlan.clone()]), 50);
        assert_eq!(
            encapsulation_needed(&[ipip.clone(), vxlan.clone()]),
            (true, true)
        );
        let mut off = vxlan.clone();
        off.disabled = true;
        assert_eq!(encapsulation_needed(&[ipip, off]), (true, false));
    }

    fn vtep_node(name: &str, ip: &str, vtep: Option<(&str, &str)>) -> Node {
        Node {
            name: name.into(),
            ipv4_address: Some(ip.parse().unwrap()),
            ipv4_vxlan_tunnel_addr: vtep.map(|(a, _)| a.parse().unwrap()),
            vxlan_tunnel_mac: vtep.map(|(_, m)| m.to_string()),
            ..Node::default()
        }
    }

    fn vxlan_state(mode: EncapMode) -> ClusterState {
        let aff = |n: &str, b: &str, s| (n.to_string(), b.parse().unwrap(), s);
        ClusterState {
            nodes: vec![
                vtep_node("a", "10.0.0.1/24", Some(("10.5.3.0", "02:00:00:00:00:0a"))),
                vtep_node("b", "10.0.0.2/24", Some(("10.5.0.0", "02:00:00:00:00:0b"))),
                vtep_node("c", "10.0.1.3/24", Some(("10.5.1.0", "02:00:00:00:00:0c"))),
                vtep_node("d", "10.0.1.4/24", None),
            ],
            pools: vec![pool("vx", "10.5.0.0/16", EncapMode::Never, mode)],
            all_affinities: vec![
                aff("a", "10.5.3.0/26", AffinityState::Confirmed),
                aff("b", "10.5.0.0/26", AffinityState::Confirmed),
                aff("b", "10.5.0.64/26", AffinityState::Pending),
                aff("c", "10.5.1.0/26", AffinityState::Confirmed),
                aff("d", "10.5.2.0/26", AffinityState::Confirmed),
            ],
            ..ClusterState::default()
        }
    }

    #[test]
    fn vxlan_always_routes_neighbours_and_fdb() {
        let subnets = vec!["10.0.0.0/24".parse().unwrap()];
        let want = desired_vxlan("a", &vxlan_state(EncapMode::Always), &subnets, Some(9));
        let routes: Vec<(String, String, Option<u32>, bool)> = want
            .routes
            .iter()
            .map(|r| {
                (
                    r.destination.to_string(),
                    r.gateway.unwrap().to_string(),
                    r.output_ifindex,
                    r.onlink,
                )
            })
            .collect();
        // d has no VTEP yet: no route; pending and own blocks: none.
        assert_eq!(
            routes,
            [
                ("10.5.0.0/26".into(), "10.5.0.0".into(), Some(9), true),
                ("10.5.1.0/26".into(), "10.5.1.0".into(), Some(9), true),
            ]
        );
        assert!(want
            .routes
            .iter()
            .all(|r| r.protocol == RouteProtocol::TUNNEL));
        let neighbours: Vec<(String, String, bool)> = want
            .neighbours
            .iter()
            .map(|n| (n.ip.to_string(), n.mac.unwrap().to_string(), n.permanent))
            .collect();
        assert_eq!(
            neighbours,
            [
                ("10.5.0.0".into(), "02:00:00:00:00:0b".into(), true),
                ("10.5.1.0".into(), "02:00:00:00:00:0c".into(), true),
            ]
        );
        let fdb: Vec<(String, String)> = want
            .fdb
            .iter()
            .map(|f| (f.mac.to_string(), f.destination.unwrap().to_string()))
            .collect();
        assert_eq!(
            fdb,
            [
                ("02:00:00:00:00:0b".into(), "10.0.0.2".into()),
                ("02:00:00:00:00:0c".into(), "10.0.1.3".into()),
            ]
        );
        assert!(want.neighbours.iter().chain([]).all(|n| n.ifindex == 9));
    }

    #[test]
    fn vxlan_cross_subnet_routes_same_subnet_nodes_plainly() {
        let subnets = vec!["10.0.0.0/24".parse().unwrap()];
        let want = desired_vxlan("a", &vxlan_state(EncapMode::CrossSubnet), &subnets, Some(9));
        let b = find(&want.routes, "10.5.0.0/26");
        assert_eq!(
            (b.gateway, b.output_ifindex, b.onlink),
            (Some("10.0.0.2".parse().unwrap()), None, false)
        );
        let c = find(&want.routes, "10.5.1.0/26");
        assert_eq!(
            (c.gateway, c.output_ifindex, c.onlink),
            (Some("10.5.1.0".parse().unwrap()), Some(9), true)
        );
        // d (other subnet, no VTEP) gets nothing; a node on a local subnet needs no VTEP.
        assert_eq!(want.routes.len(), 2);

        // Device not up: only the plain route, and no neighbours or FDB entries.
        let early = desired_vxlan("a", &vxlan_state(EncapMode::CrossSubnet), &subnets, None);
        assert_eq!(early.routes.len(), 1);
        assert!(early.neighbours.is_empty() && early.fdb.is_empty());

        // Never: no routes at all.
        let never = desired_vxlan("a", &vxlan_state(EncapMode::Never), &subnets, Some(9));
        assert!(never.routes.is_empty());
    }
}
