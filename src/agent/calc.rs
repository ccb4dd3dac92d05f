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
//!   `via NH` (proto routed-bgp; ECMP when several next hops).

use crate::bgp::rib::BestRoute;
use crate::bgp::speaker::{PeerKind, PeerSpec};
use crate::model::{AffinityState, BgpConfiguration, BgpPeer, EncapMode, IpPool, Node};
use crate::netlink::{NextHop, Route, RouteProtocol};
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
}

fn peer_name(prefix: &str, ip: IpAddr, port: u16) -> String {
    let ip = ip.to_string().replace(['.', ':'], "_");
    if port == 179 {
        format!("{prefix}_{ip}")
    } else {
        format!("{prefix}_{ip}_port_{port}")
    }
}

/// The BGP sessions this node should have.
pub fn desired_peers(me: &Node, state: &ClusterState) -> Vec<PeerSpec> {
    let my_ip = me.ipv4_address.map(|a| a.ip());
    let my_as = me.as_number.unwrap_or(state.config.as_number);
    let mut out = Vec::new();
    if state.config.node_to_node_mesh {
        for node in &state.nodes {
            let Some(addr) = node.ipv4_address.map(|a| a.ip()) else {
                continue;
            };
            if node.name == me.name || Some(addr) == my_ip {
                continue;
            }
            let remote_as = node.as_number.unwrap_or(state.config.as_number);
            let mut spec = PeerSpec::new(
                peer_name("Mesh", addr, 179),
                PeerKind::Mesh,
                addr,
                remote_as,
            );
            spec.port = state.config.listen_port;
            spec.passive = my_ip.is_some_and(|mine| mine > addr);
            spec.password = state.config.node_mesh_password.clone();
            out.push(spec);
        }
    }
    for peer in &state.peers {
        let kind = match &peer.node {
            None => PeerKind::Global,
            Some(n) if *n == me.name => PeerKind::NodeSpecific,
            Some(_) => continue,
        };
        if Some(peer.peer_ip) == my_ip {
            continue; // a global peer list that includes this node itself
        }
        let port = peer.peer_port.unwrap_or(179);
        let prefix = if kind == PeerKind::Global {
            "Global"
        } else {
            "Node"
        };
        let mut spec = PeerSpec::new(
            peer_name(prefix, peer.peer_ip, port),
            kind,
            peer.peer_ip,
            peer.as_number,
        );
        spec.port = port;
        spec.password = peer.password.clone();
        spec.source_address = peer.source_address;
        if let Some(hold) = peer.hold_time {
            spec.hold_time = hold;
        }
        spec.keepalive = peer
            .keepalive_time
            .map(|k| Duration::from_secs(u64::from(k)));
        spec.max_restart_time = peer
            .max_restart_time
            .map(|t| Duration::from_secs(u64::from(t)));
        out.push(spec);
    }
    let _ = my_as;
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

/// Kernel routes: blackholes for local blocks, learned best routes via their next hops.
pub fn desired_routes(local: &BTreeSet<IpNetwork>, best: &[BestRoute]) -> Vec<Route> {
    let mut out: Vec<Route> = local
        .iter()
        .map(|b| Route::blackhole(*b, RouteProtocol::BLACKHOLE))
        .collect();
    for route in best {
        if local.contains(&route.prefix) {
            continue;
        }
        let hops: Vec<IpAddr> = route
            .next_hops
            .iter()
            .copied()
            .filter(|h| h.is_ipv4() == route.prefix.is_ipv4())
            .collect();
        match hops.as_slice() {
            [] => {}
            [one] => out.push(Route::via(route.prefix, *one, None, RouteProtocol::BGP)),
            many => {
                let multipath = many
                    .iter()
                    .map(|h| NextHop {
                        gateway: Some(*h),
                        output_ifindex: None,
                        weight: 1,
                        onlink: false,
                    })
                    .collect();
                out.push(
                    Route::via(route.prefix, many[0], None, RouteProtocol::BGP)
                        .with_multipath(multipath),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(peers
            .iter()
            .all(|p| p.remote_as == 64512 && p.kind == PeerKind::Mesh));
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
            peer_ip: ip.parse().unwrap(),
            peer_port: None,
            as_number: 65001,
            node: node.map(str::to_string),
            password: None,
            source_address: None,
            hold_time: Some(9),
            keepalive_time: None,
            max_restart_time: None,
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
        assert_eq!(peers[0].hold_time, 9);
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
        let routes = desired_routes(&local, &best);
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].protocol, RouteProtocol::BLACKHOLE);
        assert_eq!(routes[1].gateway, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(routes[2].multipath.len(), 2);
    }
}
