//! Which changes elsewhere in the cluster can change what calc computes for this node (issue
//! 14, item 4: work proportional to the change). The follower applies every watch event to its
//! view (a map insert or removal), but builds and hands on a new [`super::calc::ClusterState`]
//! only for a change that can matter here; an unrelated one costs the update of one record.
//!
//! What calc reads, and so what matters (keep in step with calc, calc_rr and tunnels; the
//! follower's tests check every rule against calc's outputs):
//! - this node's own Node record and its own affinities: always;
//! - the BGP configuration, the BGP peers and the pools: always (few, cluster-wide);
//! - another node's record: when this node is in the full mesh (a mesh node peers with every
//!   node), when a VXLAN pool is in use (`desired_vxlan` reads every VTEP), when an explicit
//!   peer's `peer_ip` is its address (the session's reflection role depends on it), or when a
//!   `peer_selector` peering connects it with this node, before or after the change (it is
//!   selected and the peer applies here, or this node is selected and the peer applies to it);
//! - another node's affinity: when its block lies in an enabled VXLAN pool (routes from the
//!   datastore); BGP-routed blocks come over BGP, not from the datastore.
//!
//! In Calico's configuration for large clusters (mesh off, clients peering with reflectors by
//! selector) a client's change matters to the reflectors only, and a block affinity elsewhere
//! to no one.

use super::calc_rr::applies_to;
use crate::model::{BgpConfiguration, BgpPeer, EncapMode, IpPool, Node};
use ipnetwork::IpNetwork;

/// What a change is judged against: the view as of the change.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a, P, Q> {
    /// This node's record (`None`: not known yet; then everything matters).
    pub me: Option<&'a Node>,
    pub config: &'a BgpConfiguration,
    pub peers: P,
    pub pools: Q,
}

fn vxlan(pool: &IpPool) -> bool {
    !pool.disabled && pool.vxlan_mode != EncapMode::Never
}

impl<'a, P, Q> Context<'a, P, Q>
where
    P: Iterator<Item = &'a BgpPeer> + Clone,
    Q: Iterator<Item = &'a IpPool> + Clone,
{
    /// Whether another node's record going from `old` to `new` (either `None`: created or
    /// deleted) can change calc's outputs for this node.
    pub fn remote_node_matters(&self, old: Option<&Node>, new: Option<&Node>) -> bool {
        let Some(me) = self.me else {
            return true;
        };
        if self.config.node_to_node_mesh && me.rr_cluster_id.is_none() {
            return true;
        }
        if self.pools.clone().any(vxlan) {
            return true;
        }
        let versions = [old, new].into_iter().flatten();
        self.peers
            .clone()
            .any(|peer| versions.clone().any(|node| involves(me, peer, node)))
    }

    /// Whether another node's affinity for `block` can change calc's outputs for this node.
    pub fn remote_affinity_matters(&self, block: &IpNetwork) -> bool {
        self.pools
            .clone()
            .any(|pool| vxlan(pool) && pool.cidr.contains(block.network()))
    }
}

/// Whether `peer` gives `me` a session whose spec depends on `node`'s record.
fn involves(me: &Node, peer: &BgpPeer, node: &Node) -> bool {
    if let Some(address) = peer.peer_ip {
        return node.ipv4_address.map(|a| a.ip()) == Some(address);
    }
    let Some(selector) = peer.peer_selector() else {
        return false;
    };
    (applies_to(peer, me) && selector.matches(&node.labels))
        || (selector.matches(&me.labels) && applies_to(peer, node))
}

#[cfg(test)]
mod tests {
    use super::super::calc::{self, ClusterState, VxlanDesired};
    use super::super::follower::{ClusterView, Source};
    use super::super::follower_bench::{
        change_elsewhere, reflector_records, reflector_topology_node, synthetic_block,
    };
    use crate::bgp::speaker::PeerSpec;
    use crate::datastore::sync::SyncEvent;
    use crate::datastore::{encode_json, KeyValue, Op};
    use crate::model::{keys, AffinityState, BgpConfiguration, BgpPeer, BlockAffinity};
    use crate::model::{EncapMode, IpPool, Node};
    use ipnetwork::IpNetwork;
    use std::collections::BTreeSet;

    fn kv(key: &str, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }
    }

    fn put(key: &str, value: Vec<u8>) -> SyncEvent {
        SyncEvent::Put(kv(key, value))
    }

    fn delete(key: &str) -> SyncEvent {
        SyncEvent::Delete {
            key: key.into(),
            mod_revision: 2,
        }
    }

    fn event_of(op: Op) -> Option<(Source, SyncEvent)> {
        let (key, event) = match op {
            Op::Put { key, value, .. } => (key.clone(), put(&key, value)),
            Op::Delete { key } => (key.clone(), delete(&key)),
            Op::Get { .. } => return None,
        };
        let source = Source::ALL
            .into_iter()
            .find(|s| key.starts_with(s.prefix()))?;
        Some((source, event))
    }

    fn affinity(owner: &str, cidr: IpNetwork) -> KeyValue {
        let value = BlockAffinity {
            state: AffinityState::Confirmed,
        };
        kv(&keys::affinity(owner, &cidr), encode_json(&value))
    }

    /// A ready view for `me` of `nodes` (4 blocks each in 10.0.0.0/8), the configuration,
    /// peers and pools given.
    fn view(
        me: &str,
        config: &BgpConfiguration,
        peers: &[BgpPeer],
        pools: &[IpPool],
        nodes: &[Node],
    ) -> ClusterView {
        let mut view = ClusterView::for_node(me);
        let config = vec![kv(keys::BGP_CONFIG, encode_json(config))];
        let peers = peers
            .iter()
            .map(|p| kv(&keys::peer(&p.name), encode_json(p)));
        let pools = pools
            .iter()
            .map(|p| kv(&keys::pool(&p.name), encode_json(p)));
        let node_kvs = nodes
            .iter()
            .map(|n| kv(&keys::node(&n.name), encode_json(n)));
        let affinities = (0..nodes.len()).flat_map(|index| {
            let owner = nodes[index].name.clone();
            (0..4).map(move |b| affinity(&owner, synthetic_block(index, b, 4)))
        });
        let snapshots = [
            (Source::Config, config),
            (Source::Peers, peers.collect()),
            (Source::Pools, pools.collect()),
            (Source::Nodes, node_kvs.collect()),
            (Source::Affinities, affinities.collect()),
        ];
        for (source, kvs) in snapshots {
            view.apply(source, SyncEvent::Snapshot { kvs, revision: 1 });
        }
        assert!(view.ready() && view.take_relevant());
        view
    }

    fn pool(vxlan: EncapMode) -> IpPool {
        IpPool {
            name: "pods".into(),
            cidr: "10.0.0.0/8".parse().unwrap(),
            block_size: 26,
            ipip_mode: EncapMode::Never,
            vxlan_mode: vxlan,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
        }
    }

    /// Everything calc makes of a state for `me`.
    type Outputs = (
        Vec<PeerSpec>,
        BTreeSet<IpNetwork>,
        BTreeSet<IpNetwork>,
        VxlanDesired,
    );

    fn outputs(state: &ClusterState, me: &str) -> Outputs {
        let (_, vxlan_up) = calc::encapsulation_needed(&state.pools);
        let node = state.nodes.iter().find(|n| n.name == me).cloned();
        (
            node.map(|n| calc::desired_peers(&n, state))
                .unwrap_or_default(),
            calc::local_blocks(state),
            calc::originated_blocks(state),
            // The tunnel manager's vxlan.routed exists only while a VXLAN pool is in use.
            calc::desired_vxlan(me, state, &[], vxlan_up.then_some(7)),
        )
    }

    /// Synthetic nodes with VTEPs (so VXLAN outputs are not empty), the last two reflectors.
    fn nodes(count: usize) -> Vec<Node> {
        (0..count)
            .map(|i| {
                let mut node = reflector_topology_node(i, count, 0);
                node.ipv4_vxlan_tunnel_addr = Some(format!("10.255.0.{}", i + 1).parse().unwrap());
                node.vxlan_tunnel_mac = Some(format!("02:00:00:00:00:{:02x}", i + 1));
                node
            })
            .collect()
    }

    /// The configurations the rules are checked under: (name, config, peers, pools).
    fn setups() -> Vec<(&'static str, BgpConfiguration, Vec<BgpPeer>, Vec<IpPool>)> {
        let (rr_config, rr_peer) = reflector_records();
        let by_address = BgpPeer {
            name: "tor".into(),
            peer_ip: Some("100.64.0.5".parse().unwrap()),
            as_number: 64512,
            ..BgpPeer::default()
        };
        let never = pool(EncapMode::Never);
        vec![
            (
                "mesh",
                BgpConfiguration::default(),
                vec![],
                vec![never.clone()],
            ),
            (
                "reflectors",
                rr_config.clone(),
                vec![rr_peer.clone()],
                vec![never.clone()],
            ),
            (
                "reflectors+vxlan",
                rr_config.clone(),
                vec![rr_peer],
                vec![pool(EncapMode::Always)],
            ),
            ("peer by address", rr_config, vec![by_address], vec![never]),
        ]
    }

    /// The changes checked, on a 12-node cluster seen from node-00000 (node-00004 is at
    /// 100.64.0.5, the address peer's; node-00010 and -00011 are the reflectors).
    fn changes(nodes: &[Node]) -> Vec<(&'static str, Source, SyncEvent)> {
        let node_put = |n: &Node| put(&keys::node(&n.name), encode_json(n));
        let mut moved = nodes[3].clone();
        moved.ipv4_address = Some("100.64.9.9/10".parse().unwrap());
        let mut labelled = nodes[3].clone();
        labelled.labels.insert("rack".into(), "2".into());
        let mut promoted = nodes[3].clone();
        promoted.rr_cluster_id = nodes[10].rr_cluster_id;
        promoted.labels = nodes[10].labels.clone();
        let mut target = nodes[4].clone();
        target.as_number = Some(65009);
        let mut mine = nodes[0].clone();
        mine.labels.insert("rack".into(), "1".into());
        let new_node = reflector_topology_node(50, 100, 0);
        let extra: IpNetwork = "10.200.0.0/26".parse().unwrap();
        let first_of =
            |index: usize| keys::affinity(&nodes[index].name, &synthetic_block(index, 0, 4));
        let own_extra = affinity("node-00000", extra);
        let remote_extra = affinity("node-00003", extra);
        vec![
            ("a client's address", Source::Nodes, node_put(&moved)),
            ("a client's labels", Source::Nodes, node_put(&labelled)),
            (
                "a client becomes a reflector",
                Source::Nodes,
                node_put(&promoted),
            ),
            (
                "a reflector deleted",
                Source::Nodes,
                delete(&keys::node(&nodes[10].name)),
            ),
            ("a new client", Source::Nodes, node_put(&new_node)),
            ("the address peer's node", Source::Nodes, node_put(&target)),
            (
                "a client deleted",
                Source::Nodes,
                delete(&keys::node(&nodes[3].name)),
            ),
            ("this node's labels", Source::Nodes, node_put(&mine)),
            (
                "a remote affinity",
                Source::Affinities,
                SyncEvent::Put(remote_extra),
            ),
            (
                "a remote affinity deleted",
                Source::Affinities,
                delete(&first_of(3)),
            ),
            (
                "an own affinity",
                Source::Affinities,
                SyncEvent::Put(own_extra),
            ),
            (
                "an own affinity deleted",
                Source::Affinities,
                delete(&first_of(0)),
            ),
        ]
    }

    #[test]
    fn every_change_judged_unrelated_leaves_what_calc_computes_for_this_node_unchanged() {
        let cluster = nodes(12);
        let mut unrelated = Vec::new();
        for (setup, config, peers, pools) in setups() {
            for (what, source, event) in changes(&cluster) {
                let mut view = view("node-00000", &config, &peers, &pools, &cluster);
                let before = outputs(&view.state("node-00000"), "node-00000");
                assert!(view.apply(source, event), "{setup}: {what} changed nothing");
                let after = outputs(&view.state("node-00000"), "node-00000");
                if !view.take_relevant() {
                    assert_eq!(before, after, "{setup}: {what} was judged unrelated");
                    unrelated.push(format!("{setup}: {what}"));
                }
            }
        }
        // Not vacuous: with reflectors a client's changes and remote blocks are unrelated.
        let expected = [
            "reflectors: a client's address",
            "reflectors: a client's labels",
            "reflectors: a new client",
            "reflectors: a client deleted",
            "reflectors: a remote affinity",
            "reflectors: a remote affinity deleted",
            "peer by address: a client's address",
            "mesh: a remote affinity",
        ];
        for case in expected {
            assert!(unrelated.iter().any(|u| u == case), "{case}: {unrelated:?}");
        }
        // And what must reach the state does.
        for case in [
            "reflectors: a client becomes a reflector",
            "reflectors+vxlan: a remote affinity",
            "peer by address: the address peer's node",
            "mesh: a client's address",
        ] {
            assert!(
                !unrelated.iter().any(|u| u == case),
                "{case} judged unrelated"
            );
        }
    }

    #[test]
    fn a_hundred_unrelated_changes_in_a_thousand_node_cluster_build_no_state() {
        let (config, peer) = reflector_records();
        let cluster: Vec<Node> = (0..1000)
            .map(|i| reflector_topology_node(i, 1000, 0))
            .collect();
        let mut view = view(
            "node-00000",
            &config,
            &[peer],
            &[pool(EncapMode::Never)],
            &cluster,
        );
        let mut applied = 0;
        // The benchmark's changes: client addresses, new affinities and their deletion (and
        // IPAM blocks, which the follower does not follow).
        for change in 0..100 {
            let Some((source, event)) = event_of(change_elsewhere(change, 1000, 4)) else {
                continue;
            };
            if view.apply(source, event) {
                applied += 1;
            }
            assert!(
                !view.take_relevant(),
                "change {change} would rebuild the state"
            );
        }
        assert_eq!(
            applied, 75,
            "every change but the IPAM blocks' reached the view"
        );
        // One that matters (a reflector's address) does.
        let mut reflector = cluster[999].clone();
        reflector.ipv4_address = Some("100.65.0.1/10".parse().unwrap());
        let event = put(&keys::node(&reflector.name), encode_json(&reflector));
        assert!(view.apply(Source::Nodes, event) && view.take_relevant());
    }
}
