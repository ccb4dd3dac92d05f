//! Datastore keys, relative to the store's prefix (default `/routed/v1/`).
//!
//! The backends prepend the prefix, so `ippools/default` is stored as
//! `/routed/v1/ippools/default`. CIDRs in keys write '/' as '-' (`10.0.0.0-26`).

use ipnetwork::IpNetwork;

pub const BGP_CONFIG: &str = "config/bgp";
pub const IPAM_CONFIG: &str = "config/ipam";
pub const POOLS: &str = "ippools/";
pub const PEERS: &str = "bgppeers/";
pub const NODES: &str = "nodes/";
pub const BLOCKS: &str = "ipam/blocks/";
pub const AFFINITIES: &str = "ipam/affinity/";
pub const HANDLES: &str = "ipam/handles/";
/// The last CNI GC list of each node and network (`ipam::attachments::CniGcRecord`).
pub const CNI_GC: &str = "ipam/cni-gc/";
/// Each agent's published status (`api::v1::NodeStatusReport`) under a leased key: the key
/// exists while the agent runs (`routectl cluster status`; "agent alive" for other tools).
pub const NODE_STATUS: &str = "status/nodes/";

/// `status/nodes/<node>`: node's live status (gone within the lease TTL once its agent stops).
pub fn node_status(node: &str) -> String {
    format!("{NODE_STATUS}{node}")
}

/// `10.0.0.0/26` → `10.0.0.0-26` (v6 `fd00::/122` → `fd00::-122`).
pub fn cidr_to_key_part(cidr: &IpNetwork) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix())
}

/// Inverse of [`cidr_to_key_part`].
pub fn key_part_to_cidr(part: &str) -> Option<IpNetwork> {
    let (ip, len) = part.rsplit_once('-')?;
    IpNetwork::new(ip.parse().ok()?, len.parse().ok()?).ok()
}

pub fn pool(name: &str) -> String {
    format!("{POOLS}{name}")
}
pub fn peer(name: &str) -> String {
    format!("{PEERS}{name}")
}
pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}
pub fn block(cidr: &IpNetwork) -> String {
    format!("{BLOCKS}{}", cidr_to_key_part(cidr))
}
pub fn affinities_of(node: &str) -> String {
    format!("{AFFINITIES}{node}/")
}
pub fn affinity(node: &str, cidr: &IpNetwork) -> String {
    format!("{AFFINITIES}{node}/{}", cidr_to_key_part(cidr))
}
/// `ipam/cni-gc/<node>/`: the CNI GC records of one node.
pub fn cni_gc_of(node: &str) -> String {
    format!("{CNI_GC}{node}/")
}
/// `ipam/cni-gc/<node>/<network>`.
pub fn cni_gc(node: &str, network: &str) -> String {
    format!("{CNI_GC}{node}/{network}")
}
pub fn handle(id: &str) -> String {
    format!("{HANDLES}{id}")
}

/// The last path element of a key (`ippools/default` → `default`).
pub fn last_part(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Splits `ipam/affinity/<node>/<cidr>` into node and block.
pub fn parse_affinity_key(key: &str) -> Option<(String, IpNetwork)> {
    let rest = key.strip_prefix(AFFINITIES)?;
    let (node, cidr) = rest.split_once('/')?;
    Some((node.to_string(), key_part_to_cidr(cidr)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let v4: IpNetwork = "10.0.0.64/26".parse().unwrap();
        assert_eq!(block(&v4), "ipam/blocks/10.0.0.64-26");
        assert_eq!(key_part_to_cidr("10.0.0.64-26"), Some(v4));
        let v6: IpNetwork = "fd00::40/122".parse().unwrap();
        assert_eq!(key_part_to_cidr(&cidr_to_key_part(&v6)), Some(v6));
        assert_eq!(
            parse_affinity_key(&affinity("n1", &v4)),
            Some(("n1".into(), v4))
        );
        assert_eq!(last_part("ippools/default"), "default");
    }
}
