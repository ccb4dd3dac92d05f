//! Explicit peers and route-reflector roles (Calico's semantics), for [`super::calc`].
//!
//! Data flow: one `BgpPeer` + the cluster's nodes ──> [`explicit_peers`] ──> the `PeerSpec`s
//! this node has for it, each with its [`Reflection`] role. Pure, no I/O.
//!
//! Rules (Calico's confd, `bgp_processor.go`):
//! - A peer applies to this node when its `node` names it, its `node_selector` selects it, or
//!   it has neither (global).
//! - `peer_ip`: one session to that address. `peer_selector`: one session to every selected
//!   node (its own AS, the cluster's listen port); and a node the selector selects opens the
//!   reverse side by itself, to every node the peer applies to. Of each node pair the higher
//!   address is passive (as in the mesh).
//! - Roles, between two nodes of one AS: when this node has a cluster ID and the remote has
//!   none or another one, the remote is this node's client (`Reflection::Client`); two
//!   reflectors with the same ID peer as plain iBGP. A reflector's `peer_ip` peers in its
//!   own AS are its clients (unless the address is a node of its own cluster). The session to
//!   a reflector is plain iBGP on the client's side (`Reflection::Reflector`, for status).

use super::calc::{peer_name, ClusterState, PeerKind};
use crate::bgp::rib::Reflection;
use crate::bgp::speaker::{MaxPrefixAction, MaxPrefixes, NextHopMode, PeerSpec};
use crate::model::{BgpPeer, Node, PrefixLimitAction, Selector};
use std::net::IpAddr;
use std::time::Duration;

/// Whether `peer` applies to node `me`.
pub(super) fn applies_to(peer: &BgpPeer, node: &Node) -> bool {
    match (&peer.node, &peer.node_selector) {
        (Some(name), _) => *name == node.name,
        (None, Some(_)) => peer
            .node_selector()
            .is_some_and(|s| s.matches(&node.labels)),
        (None, None) => true,
    }
}

/// The Calico kind of the peer's sessions: global unless a node or a selector other than
/// `all()` narrows it.
fn kind_of(peer: &BgpPeer) -> PeerKind {
    match peer.peer_type() {
        "global" => PeerKind::Global,
        _ => PeerKind::NodeSpecific,
    }
}

/// The reflection role of a session from `me` to `remote` (a node, or an address that is
/// none) when both are in one AS.
pub fn reflection(me: &Node, remote: Option<&Node>, same_as: bool) -> Option<Reflection> {
    if !same_as {
        return None;
    }
    let theirs = remote.and_then(|n| n.rr_cluster_id);
    match (me.rr_cluster_id, theirs) {
        (Some(mine), _) if theirs != Some(mine) => Some(Reflection::Client { cluster_id: mine }),
        (_, Some(theirs)) => Some(Reflection::Reflector { cluster_id: theirs }),
        _ => None,
    }
}

/// The sessions node `me` has for one explicit peer.
pub fn explicit_peers(me: &Node, peer: &BgpPeer, state: &ClusterState) -> Vec<PeerSpec> {
    let my_ip = me.ipv4_address.map(|a| a.ip());
    let my_as = me.as_number.unwrap_or(state.config.as_number);
    let kind = kind_of(peer);
    let mut out = Vec::new();
    if let Some(address) = peer.peer_ip {
        if !applies_to(peer, me) || Some(address) == my_ip {
            return out; // a global peer list that includes this node itself
        }
        let port = peer.peer_port.unwrap_or(179);
        let mut spec = PeerSpec::new(
            peer_name(kind.name_prefix(), address, port),
            kind.label(),
            address,
            my_as,
            peer.as_number,
        );
        spec.port = port;
        let node = node_at(state, address);
        spec.reflection = reflection(me, node, my_as == peer.as_number);
        out.push(with_peer_settings(spec, peer));
        return out;
    }
    let Some(selector) = peer.peer_selector() else {
        return out;
    };
    for node in remote_nodes(me, peer, &selector, state) {
        let Some(address) = node.ipv4_address.map(|a| a.ip()) else {
            continue;
        };
        if Some(address) == my_ip {
            continue;
        }
        let remote_as = node.as_number.unwrap_or(state.config.as_number);
        let port = state.config.listen_port;
        let mut spec = PeerSpec::new(
            peer_name(kind.name_prefix(), address, port),
            kind.label(),
            address,
            my_as,
            remote_as,
        );
        spec.port = port;
        spec.passive = my_ip.is_some_and(|mine| mine > address);
        spec.reflection = reflection(me, Some(node), my_as == remote_as);
        out.push(with_peer_settings(spec, peer));
    }
    out
}

/// The nodes a peer-selector peering connects `me` to: the selected nodes when the peer
/// applies to `me`, and the nodes it applies to when `me` is selected (the reverse side).
fn remote_nodes<'a>(
    me: &Node,
    peer: &BgpPeer,
    selector: &Selector,
    state: &'a ClusterState,
) -> Vec<&'a Node> {
    let forward = applies_to(peer, me);
    let reverse = selector.matches(&me.labels);
    state
        .nodes
        .iter()
        .filter(|n| n.name != me.name)
        .filter(|n| (forward && selector.matches(&n.labels)) || (reverse && applies_to(peer, n)))
        .collect()
}

/// The settings every session of one `BgpPeer` shares.
fn with_peer_settings(mut spec: PeerSpec, peer: &BgpPeer) -> PeerSpec {
    spec.password = peer.password.clone();
    spec.source_address = peer.source_address;
    if let Some(hold) = peer.hold_time {
        spec.timers.hold_time = hold;
    }
    spec.timers.keepalive = peer
        .keepalive_time
        .map(|k| Duration::from_secs(u64::from(k)));
    spec.max_restart_time = peer
        .max_restart_time
        .map(|t| Duration::from_secs(u64::from(t)));
    spec.bfd = super::calc::bfd_spec(peer.bfd.as_ref());
    spec.local_as = peer.local_as_number;
    spec.ttl_security = peer.ttl_security.filter(|hops| *hops != 0);
    spec.allow_local_as = peer.num_allowed_local_as_numbers.unwrap_or(0);
    spec.next_hop_mode = match peer.next_hop_mode.unwrap_or_default() {
        crate::model::NextHopMode::Auto => NextHopMode::Auto,
        crate::model::NextHopMode::ForceSelf => NextHopMode::OurAddress,
        crate::model::NextHopMode::Keep => NextHopMode::Keep,
    };
    spec.max_prefixes = peer.max_prefixes.map(|limit| MaxPrefixes {
        limit,
        action: match peer.max_prefixes_action {
            Some(PrefixLimitAction::Warn) => MaxPrefixAction::Warn,
            Some(PrefixLimitAction::Restart) | None => MaxPrefixAction::Restart,
        },
    });
    spec
}

/// The cluster's node with this address, if any.
fn node_at(state: &ClusterState, address: IpAddr) -> Option<&Node> {
    state
        .nodes
        .iter()
        .find(|n| n.ipv4_address.map(|a| a.ip()) == Some(address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::calc::desired_peers;
    use crate::model::BgpConfiguration;
    use std::net::Ipv4Addr;

    fn node(name: &str, ip: &str, rr: Option<&str>, labels: &[(&str, &str)]) -> Node {
        Node {
            name: name.into(),
            ipv4_address: Some(format!("{ip}/24").parse().unwrap()),
            rr_cluster_id: rr.map(|r| r.parse().unwrap()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Node::default()
        }
    }

    const RR: (&str, &str) = ("route-reflector", "true");

    /// Calico's recipe: reflectors r1, r2 (one cluster ID) and clients a, b, c.
    fn recipe(mesh: bool) -> ClusterState {
        ClusterState {
            config: BgpConfiguration {
                node_to_node_mesh: mesh,
                ..Default::default()
            },
            nodes: vec![
                node("a", "10.0.0.1", None, &[]),
                node("b", "10.0.0.2", None, &[]),
                node("c", "10.0.0.3", None, &[]),
                node("r1", "10.0.0.11", Some("1.0.0.1"), &[RR]),
                node("r2", "10.0.0.12", Some("1.0.0.1"), &[RR]),
            ],
            peers: vec![BgpPeer {
                name: "to-rr".into(),
                as_number: 64512,
                node_selector: Some("all()".into()),
                peer_selector: Some("route-reflector == 'true'".into()),
                ..BgpPeer::default()
            }],
            ..ClusterState::default()
        }
    }

    fn summary(peers: &[PeerSpec]) -> Vec<(String, Option<Reflection>, bool)> {
        peers
            .iter()
            .map(|p| (p.name.clone(), p.reflection, p.passive))
            .collect()
    }

    fn id(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn client_peers_with_every_reflector_and_no_one_else() {
        let state = recipe(false);
        let peers = desired_peers(&state.nodes[0], &state);
        let reflector = Some(Reflection::Reflector {
            cluster_id: id("1.0.0.1"),
        });
        assert_eq!(
            summary(&peers),
            [
                ("Global_10_0_0_11".into(), reflector, false),
                ("Global_10_0_0_12".into(), reflector, false),
            ]
        );
        assert!(peers.iter().all(|p| p.description == "global"));
    }

    #[test]
    fn reflector_serves_every_client_and_peers_plainly_with_its_twin() {
        let state = recipe(false);
        let peers = desired_peers(&state.nodes[3], &state);
        let client = Some(Reflection::Client {
            cluster_id: id("1.0.0.1"),
        });
        let twin = Some(Reflection::Reflector {
            cluster_id: id("1.0.0.1"),
        });
        // The clients' sessions are the reverse side: r1 is selected, the peer applies to them.
        assert_eq!(
            summary(&peers),
            [
                ("Global_10_0_0_1".into(), client, true),
                ("Global_10_0_0_12".into(), twin, false),
                ("Global_10_0_0_2".into(), client, true),
                ("Global_10_0_0_3".into(), client, true),
            ]
        );
    }

    #[test]
    fn reflectors_leave_the_mesh_and_mesh_nodes_skip_them() {
        let state = recipe(true);
        let a: Vec<String> = desired_peers(&state.nodes[0], &state)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            a,
            [
                "Global_10_0_0_11",
                "Global_10_0_0_12",
                "Mesh_10_0_0_2",
                "Mesh_10_0_0_3"
            ]
        );
        let r1 = desired_peers(&state.nodes[3], &state);
        assert!(r1.iter().all(|p| !p.name.starts_with("Mesh_")), "{r1:?}");
    }

    #[test]
    fn different_cluster_ids_make_each_reflector_the_others_client() {
        let mut state = recipe(false);
        state.nodes[4].rr_cluster_id = Some(id("2.0.0.2"));
        let r1 = desired_peers(&state.nodes[3], &state);
        let to_r2 = r1.iter().find(|p| p.name == "Global_10_0_0_12").unwrap();
        assert_eq!(
            to_r2.reflection,
            Some(Reflection::Client {
                cluster_id: id("1.0.0.1")
            })
        );
    }

    #[test]
    fn reflector_explicit_ibgp_peers_are_clients_ebgp_peers_are_not() {
        let mut state = recipe(false);
        let by_ip = |name: &str, ip: &str, asn: u32| BgpPeer {
            name: name.into(),
            peer_ip: Some(ip.parse().unwrap()),
            as_number: asn,
            node: Some("r1".into()),
            ..BgpPeer::default()
        };
        state.peers = vec![
            by_ip("bird", "10.0.0.50", 64512),
            by_ip("tor", "10.0.0.254", 65001),
            by_ip("twin", "10.0.0.12", 64512),
        ];
        let r1 = desired_peers(&state.nodes[3], &state);
        assert_eq!(
            summary(&r1),
            [
                (
                    "Node_10_0_0_12".into(),
                    Some(Reflection::Reflector {
                        cluster_id: id("1.0.0.1")
                    }),
                    false
                ),
                ("Node_10_0_0_254".into(), None, false),
                (
                    "Node_10_0_0_50".into(),
                    Some(Reflection::Client {
                        cluster_id: id("1.0.0.1")
                    }),
                    false
                ),
            ]
        );
    }

    #[test]
    fn node_selector_limits_which_nodes_peer() {
        let mut state = recipe(false);
        state.nodes[0].labels.insert("rack".into(), "1".into());
        state.peers[0].node_selector = Some("rack == '1'".into());
        assert_eq!(desired_peers(&state.nodes[0], &state).len(), 2);
        assert!(desired_peers(&state.nodes[1], &state).is_empty());
        let r1: Vec<String> = desired_peers(&state.nodes[3], &state)
            .into_iter()
            .map(|p| p.name)
            .collect();
        // Only the selected node a and, r2 being selected too, nothing else: r2 is not
        // matched by the node selector.
        assert_eq!(r1, ["Node_10_0_0_1"]);
    }

    #[test]
    fn labelling_a_node_changes_only_its_own_sessions() {
        let before = recipe(false);
        let mut after = before.clone();
        after.nodes[2].labels.insert(RR.0.into(), RR.1.into());
        after.nodes[2].rr_cluster_id = Some(id("1.0.0.1"));
        // a keeps its two sessions unchanged and gains one to c.
        let a_before = desired_peers(&before.nodes[0], &before);
        let a_after = desired_peers(&after.nodes[0], &after);
        for spec in &a_before {
            assert!(a_after.contains(spec), "{spec:?} changed");
        }
        assert_eq!(a_after.len(), 3);
        assert_eq!(
            node_at(&after, "10.0.0.3".parse().unwrap()).unwrap().name,
            "c"
        );
    }
}
