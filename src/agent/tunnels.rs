//! Encapsulation: the agent's IPIP device (`tunl0`) and VXLAN device (`vxlan.routed`).
//!
//! ```text
//!  follower ──snapshot──> tunnel manager ──EncapView──> route reconciler (tunl0 routes)
//!                                   │  every pass (snapshot change, route monitor, 5 s timer):
//!                                   │  1. calc::encapsulation_needed(pools) → (ipip, vxlan)
//!                                   │  2. needed: tunnel address (IPAM handle, Node record),
//!                                   │     device created or adopted, MTU, up, address
//!                                   │     not needed: address released, device removed
//!                                   │  3. pod MTU = node MTU − overhead (AgentState::update_pod_mtu)
//!                                   │  4. calc::desired_vxlan → routes (proto 233), permanent
//!                                   v     neighbours and FDB entries on vxlan.routed: diff, apply
//!                                 kernel
//! ```
//!
//! - IPIP: `tunl0`, one-to-many (no local, no remote), MTU = node MTU − 20, up, with the
//!   address held by IPAM handle `ipip-tunnel-addr-<node>` as `/32`, recorded on the Node as
//!   `ipv4_ipip_tunnel_addr`. Loading the `ipip` module creates a fallback `tunl0` in every
//!   namespace; the agent adopts it (and cannot delete it: when IPIP is no longer used it takes
//!   the address off and sets it down).
//! - VXLAN: `vxlan.routed`, VNI 4096, UDP port 4789, learning off, local = node address,
//!   dev = node interface, MTU = node MTU − 50, MAC derived from the node name (stable across
//!   re-creation), address held by handle `vxlan-tunnel-addr-<node>`, recorded on the Node as
//!   `ipv4_vxlan_tunnel_addr` and `vxlan_tunnel_mac`.
//! - Only what is ours is touched: routes of protocol 233, permanent neighbours and FDB entries
//!   on `vxlan.routed`, and the two devices.

use super::calc::{self, ClusterState, EncapView, VxlanDesired};
use super::AgentState;
use crate::ipam::{AllocateRequest, Ipam};
use crate::model::{EncapMode, IpPool, Node};
use crate::netlink::{
    LinkInfo, MacAddr, Netlink, Route, RouteFilter, RouteProtocol, RouteWatch, VxlanSpec,
};
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub const IPIP_DEVICE: &str = "tunl0";
pub const VXLAN_DEVICE: &str = "vxlan.routed";
pub const VXLAN_VNI: u32 = 4096;
pub const VXLAN_PORT: u16 = 4789;
const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// The two encapsulations, with their device, IPAM handle and Node fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    Ipip,
    Vxlan,
}

impl Tunnel {
    pub fn device(self) -> &'static str {
        match self {
            Tunnel::Ipip => IPIP_DEVICE,
            Tunnel::Vxlan => VXLAN_DEVICE,
        }
    }

    /// The IPAM handle of the node's tunnel address (`ipip-tunnel-addr-<node>`, as Calico).
    pub fn handle(self, node: &str) -> String {
        match self {
            Tunnel::Ipip => format!("ipip-tunnel-addr-{node}"),
            Tunnel::Vxlan => format!("vxlan-tunnel-addr-{node}"),
        }
    }

    fn mode(self, pool: &IpPool) -> EncapMode {
        match self {
            Tunnel::Ipip => pool.ipip_mode,
            Tunnel::Vxlan => pool.vxlan_mode,
        }
    }

    fn recorded(self, node: &Node) -> Option<IpAddr> {
        match self {
            Tunnel::Ipip => node.ipv4_ipip_tunnel_addr,
            Tunnel::Vxlan => node.ipv4_vxlan_tunnel_addr,
        }
    }

    fn overhead(self) -> u32 {
        match self {
            Tunnel::Ipip => calc::IPIP_OVERHEAD,
            Tunnel::Vxlan => calc::VXLAN_OVERHEAD,
        }
    }

    /// Enabled IPv4 pools whose mode for this encapsulation is not Never.
    fn pools(self, pools: &[IpPool]) -> Vec<String> {
        pools
            .iter()
            .filter(|p| !p.disabled && p.cidr.is_ipv4() && self.mode(p) != EncapMode::Never)
            .map(|p| p.name.clone())
            .collect()
    }
}

/// A locally administered unicast MAC derived from the node name: a re-created VXLAN device
/// keeps the MAC the other nodes already have in their neighbour tables.
pub fn vtep_mac(node: &str) -> MacAddr {
    let digest = sha1_smol::Sha1::from(format!("routed-vtep.{node}").as_bytes())
        .digest()
        .bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    MacAddr(mac)
}

/// The subnets of every address on the node's interfaces, leaving out loopback, pod veths and
/// routed's own tunnel devices.
pub async fn local_subnets(netlink: &dyn Netlink) -> Result<Vec<IpNetwork>> {
    let mut addresses = Vec::new();
    for link in netlink.list_links().await.context("listing links")? {
        if link.name == "lo"
            || link.name.starts_with("rd")
            || link.name == IPIP_DEVICE
            || link.name == VXLAN_DEVICE
        {
            continue;
        }
        addresses.extend(
            netlink
                .list_addresses(link.index)
                .await
                .with_context(|| format!("addresses of {}", link.name))?
                .into_iter()
                .filter(|a| !a.ip().is_loopback()),
        );
    }
    Ok(calc::subnets_of(&addresses))
}

/// MTU, up, and exactly `address/32` as IPv4 address (`None`: addresses left as they are).
async fn ensure_link_state(
    netlink: &dyn Netlink,
    link: &LinkInfo,
    mtu: u32,
    address: Option<Ipv4Addr>,
) -> Result<()> {
    if link.mtu != mtu {
        netlink
            .set_link_mtu(link.index, mtu)
            .await
            .with_context(|| format!("MTU of {}", link.name))?;
    }
    let want = address
        .map(|a| IpNetwork::new(IpAddr::V4(a), 32))
        .transpose()?;
    let present = netlink.list_addresses(link.index).await?;
    for stale in present
        .iter()
        .filter(|a| want.is_some_and(|w| a.is_ipv4() && **a != w))
    {
        netlink.delete_address(link.index, *stale).await?;
        info!(device = %link.name, address = %stale, "stale tunnel address removed");
    }
    if let Some(want) = want.filter(|w| !present.contains(w)) {
        netlink
            .add_address(link.index, want)
            .await
            .with_context(|| format!("adding {want} to {}", link.name))?;
        info!(device = %link.name, address = %want, "tunnel address set");
    }
    if !link.up {
        netlink.set_link_up(link.index).await?;
    }
    Ok(())
}

/// `tunl0` created (or the kernel's fallback device adopted), MTU set, up, with `address`.
pub async fn ensure_ipip_device(
    netlink: &dyn Netlink,
    mtu: u32,
    address: Option<Ipv4Addr>,
) -> Result<LinkInfo> {
    let link = match netlink.link_by_name(IPIP_DEVICE).await? {
        Some(link) => link,
        None => match netlink.create_ipip(IPIP_DEVICE, mtu).await {
            Ok(link) => {
                info!(device = IPIP_DEVICE, mtu, "IPIP device created");
                link
            }
            // Asking for an ipip link loads the module, which creates tunl0 itself first.
            Err(e) if e.is_already_exists() => netlink
                .link_by_name(IPIP_DEVICE)
                .await?
                .context("tunl0 exists and vanished")?,
            Err(e) => {
                return Err(e).context("creating tunl0 (is the ipip kernel module available?)")
            }
        },
    };
    if link.kind.as_deref() != Some("ipip") {
        anyhow::bail!(
            "{IPIP_DEVICE} exists but is a {:?} device, not ipip",
            link.kind
        );
    }
    ensure_link_state(netlink, &link, mtu, address).await?;
    Ok(link)
}

/// `vxlan.routed` as `spec` says (re-created when it is not a VXLAN device), up, with `address`.
pub async fn ensure_vxlan_device(
    netlink: &dyn Netlink,
    spec: &VxlanSpec,
    address: Option<Ipv4Addr>,
) -> Result<LinkInfo> {
    let existing = netlink.link_by_name(&spec.name).await?;
    let link = match existing {
        Some(link) if link.kind.as_deref() == Some("vxlan") => link,
        other => {
            if other.is_some() {
                warn!(device = %spec.name, "not a VXLAN device; re-creating it");
                netlink.delete_link(&spec.name).await?;
            }
            let link = netlink
                .create_vxlan(spec)
                .await
                .with_context(|| format!("creating {}", spec.name))?;
            info!(device = %spec.name, vni = spec.vni, port = spec.port, local = ?spec.local,
                mtu = spec.mtu, "VXLAN device created");
            link
        }
    };
    ensure_link_state(netlink, &link, spec.mtu, address).await?;
    Ok(link)
}

/// Removes a tunnel device no pool needs any more. The IPIP fallback device cannot be deleted:
/// it is left down without addresses. Returns true when something changed.
pub async fn remove_device(netlink: &dyn Netlink, name: &str) -> Result<bool> {
    let Some(link) = netlink.link_by_name(name).await? else {
        return Ok(false);
    };
    let addresses = netlink.list_addresses(link.index).await?;
    if !link.up && addresses.is_empty() {
        return Ok(false); // an undeletable fallback tunl0, already cleaned
    }
    for address in addresses {
        netlink.delete_address(link.index, address).await?;
    }
    netlink.delete_link(name).await?;
    if let Some(still) = netlink.link_by_name(name).await? {
        if still.up {
            netlink.set_link_down(still.index).await?;
        }
    }
    info!(
        device = name,
        "encapsulation device removed (no pool uses it)"
    );
    Ok(true)
}

fn route_matches(desired: &Route, actual: &Route) -> bool {
    desired.protocol == actual.protocol
        && super::routing::signature(desired) == super::routing::signature(actual)
}

/// Applies the VXLAN routes (all of protocol 233), and the neighbours and FDB entries on the
/// device when it exists. Returns the number of changes.
pub async fn apply_vxlan(
    netlink: &dyn Netlink,
    ifindex: Option<u32>,
    desired: &VxlanDesired,
) -> Result<usize> {
    let mut changes = 0;
    let actual: BTreeMap<IpNetwork, Route> = netlink
        .list_routes(&RouteFilter::protocol(RouteProtocol::TUNNEL))
        .await?
        .into_iter()
        .map(|r| (r.destination, r))
        .collect();
    let wanted: BTreeMap<IpNetwork, &Route> =
        desired.routes.iter().map(|r| (r.destination, r)).collect();
    // Neighbours and FDB first: a route through the device needs them to carry traffic.
    if let Some(ifindex) = ifindex {
        let neighbours = netlink.list_neighbours(ifindex).await?;
        for want in &desired.neighbours {
            let present = neighbours
                .iter()
                .any(|n| n.ip == want.ip && n.mac == want.mac && n.permanent);
            if !present {
                netlink.replace_neighbour(want).await?;
                debug!(ip = %want.ip, mac = ?want.mac, "VTEP neighbour programmed");
                changes += 1;
            }
        }
        for stale in neighbours.iter().filter(|n| {
            n.permanent && n.ip.is_ipv4() && !desired.neighbours.iter().any(|w| w.ip == n.ip)
        }) {
            netlink.delete_neighbour(ifindex, stale.ip).await?;
            changes += 1;
        }
        let fdb = netlink.list_fdb(ifindex).await?;
        for want in &desired.fdb {
            if !fdb.contains(want) {
                netlink.replace_fdb(want).await?;
                debug!(mac = %want.mac, dst = ?want.destination, "VTEP FDB entry programmed");
                changes += 1;
            }
        }
        for stale in fdb.iter().filter(|f| !desired.fdb.contains(f)) {
            netlink.delete_fdb(stale).await?;
            changes += 1;
        }
    }
    for (destination, route) in &wanted {
        if !actual
            .get(destination)
            .is_some_and(|a| route_matches(route, a))
        {
            netlink
                .replace_route(route)
                .await
                .with_context(|| format!("route {destination}"))?;
            changes += 1;
        }
    }
    for (destination, route) in &actual {
        if !wanted.contains_key(destination) {
            netlink
                .delete_route(route)
                .await
                .with_context(|| format!("removing route {destination}"))?;
            changes += 1;
        }
    }
    Ok(changes)
}

/// Reads, changes and writes this node's record with compare-and-swap.
pub async fn update_node(
    store: &dyn crate::datastore::Datastore,
    name: &str,
    mut change: impl FnMut(&mut Node),
) -> Result<()> {
    use crate::datastore::{decode_json, encode_json, DatastoreError};
    let key = crate::model::keys::node(name);
    for _ in 0..crate::ipam::MAX_ATTEMPTS {
        let kv = store
            .get(&key)
            .await?
            .with_context(|| format!("node {name} is not registered"))?;
        let mut node: Node = decode_json(&kv)?;
        let before = node.clone();
        change(&mut node);
        if node == before {
            return Ok(());
        }
        match store
            .update(&key, encode_json(&node), kv.mod_revision)
            .await
        {
            Ok(_) => return Ok(()),
            Err(DatastoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("node {name}: too many concurrent updates")
}

fn set_recorded(tunnel: Tunnel, node: &mut Node, address: Option<IpAddr>, mac: Option<MacAddr>) {
    match tunnel {
        Tunnel::Ipip => node.ipv4_ipip_tunnel_addr = address,
        Tunnel::Vxlan => {
            node.ipv4_vxlan_tunnel_addr = address;
            node.vxlan_tunnel_mac = mac.map(|m| m.to_string());
        }
    }
}

/// The tunnel manager's own state between passes.
pub struct TunnelManager {
    state: Arc<AgentState>,
    netlink: Arc<dyn Netlink>,
    /// The interface carrying the node address (the VXLAN device's `dev`).
    node_interface: Option<String>,
    node_address: Option<Ipv4Addr>,
    node_mtu: u32,
    /// Tunnel addresses known to be held by their handle (checked once).
    verified: BTreeMap<&'static str, IpAddr>,
    /// Deletions of tunnel routes from the agent's shared monitor (else `run` opens its own).
    deletions: Option<RouteWatch>,
}

impl TunnelManager {
    pub fn new(
        state: Arc<AgentState>,
        netlink: Arc<dyn Netlink>,
        detected: &super::node::Detected,
    ) -> TunnelManager {
        TunnelManager {
            state,
            netlink,
            node_interface: detected.interface.clone(),
            node_address: match detected.address.map(|a| a.ip()) {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            },
            node_mtu: detected.mtu,
            verified: BTreeMap::new(),
            deletions: None,
        }
    }

    fn ipam(&self) -> &Ipam {
        &self.state.ipam
    }

    /// The node's tunnel address for `tunnel`: the recorded one when its handle still holds it,
    /// else a fresh allocation from the pools using that encapsulation (recorded on the Node).
    async fn ensure_address(
        &mut self,
        tunnel: Tunnel,
        me: &Node,
        pools: &[IpPool],
        mac: Option<MacAddr>,
    ) -> Result<Ipv4Addr> {
        let eligible = tunnel.pools(pools);
        let handle = tunnel.handle(&me.name);
        let in_eligible = |ip: IpAddr| {
            pools
                .iter()
                .any(|p| eligible.contains(&p.name) && p.cidr.contains(ip))
        };
        if let Some(IpAddr::V4(recorded)) = tunnel.recorded(me).filter(|ip| in_eligible(*ip)) {
            let mac_ok = tunnel == Tunnel::Ipip
                || me.vxlan_tunnel_mac.as_deref() == mac.map(|m| m.to_string()).as_deref();
            if self.verified.get(tunnel.device()) == Some(&IpAddr::V4(recorded)) && mac_ok {
                return Ok(recorded);
            }
            let held = self
                .state
                .store
                .get(&crate::model::keys::handle(&handle))
                .await?
                .is_some();
            if held {
                if !mac_ok {
                    update_node(self.state.store.as_ref(), &me.name, |n| {
                        set_recorded(tunnel, n, Some(IpAddr::V4(recorded)), mac)
                    })
                    .await?;
                }
                self.verified.insert(tunnel.device(), IpAddr::V4(recorded));
                return Ok(recorded);
            }
        }
        // Nothing usable recorded: start clean (a pool change may have left an old address).
        self.ipam().release_handle(&handle).await?;
        let mut request = AllocateRequest::new(&me.name, &handle, 1);
        request.pools = eligible;
        request.attributes.insert("node".into(), me.name.clone());
        request.attributes.insert(
            "type".into(),
            match tunnel {
                Tunnel::Ipip => "ipipTunnelAddress".into(),
                Tunnel::Vxlan => "vxlanTunnelAddress".into(),
            },
        );
        let allocated = self
            .ipam()
            .allocate(&request)
            .await
            .with_context(|| format!("allocating the {} address", tunnel.device()))?;
        let Some(IpAddr::V4(ip)) = allocated.first().map(|a| a.ip) else {
            anyhow::bail!("IPAM returned no IPv4 address for {handle}");
        };
        update_node(self.state.store.as_ref(), &me.name, |n| {
            set_recorded(tunnel, n, Some(IpAddr::V4(ip)), mac)
        })
        .await?;
        info!(device = tunnel.device(), address = %ip, %handle, "tunnel address allocated");
        self.verified.insert(tunnel.device(), IpAddr::V4(ip));
        Ok(ip)
    }

    /// Releases the tunnel address and clears it from the Node record.
    async fn release_address(&mut self, tunnel: Tunnel, me: &Node) -> Result<()> {
        if tunnel.recorded(me).is_none() && !self.verified.contains_key(tunnel.device()) {
            return Ok(());
        }
        let released = self.ipam().release_handle(&tunnel.handle(&me.name)).await?;
        update_node(self.state.store.as_ref(), &me.name, |n| {
            set_recorded(tunnel, n, None, None)
        })
        .await?;
        self.verified.remove(tunnel.device());
        info!(device = tunnel.device(), released = ?released, "tunnel address released");
        Ok(())
    }

    async fn ensure(&mut self, tunnel: Tunnel, me: &Node, pools: &[IpPool]) -> Result<u32> {
        let mtu = self.node_mtu.saturating_sub(tunnel.overhead());
        match tunnel {
            Tunnel::Ipip => {
                let address = self.ensure_address(tunnel, me, pools, None).await?;
                let link = ensure_ipip_device(self.netlink.as_ref(), mtu, Some(address)).await?;
                Ok(link.index)
            }
            Tunnel::Vxlan => {
                let parent = match &self.node_interface {
                    Some(name) => self.netlink.link_by_name(name).await?.map(|l| l.index),
                    None => None,
                };
                let spec = VxlanSpec {
                    name: VXLAN_DEVICE.into(),
                    vni: VXLAN_VNI,
                    port: VXLAN_PORT,
                    local: self.node_address,
                    parent_ifindex: parent,
                    learning: false,
                    mtu,
                    mac: Some(vtep_mac(&me.name)),
                };
                // The device first: its MAC goes on the Node record with the address.
                let link = ensure_vxlan_device(self.netlink.as_ref(), &spec, None).await?;
                let mac = link.mac.or(spec.mac);
                let address = self.ensure_address(tunnel, me, pools, mac).await?;
                let link = ensure_vxlan_device(self.netlink.as_ref(), &spec, Some(address)).await?;
                Ok(link.index)
            }
        }
    }

    async fn remove(&mut self, tunnel: Tunnel, me: &Node) -> Result<()> {
        remove_device(self.netlink.as_ref(), tunnel.device()).await?;
        self.release_address(tunnel, me).await
    }

    /// One pass over `snapshot`: devices, addresses, MTU, VXLAN state. Returns the view for the
    /// route reconciler.
    pub async fn pass(&mut self, snapshot: &ClusterState) -> Result<EncapView> {
        let me = snapshot
            .nodes
            .iter()
            .find(|n| n.name == self.state.node_name)
            .cloned()
            .with_context(|| format!("node {} is not registered", self.state.node_name))?;
        let (need_ipip, need_vxlan) = calc::encapsulation_needed(&snapshot.pools);
        let mut failures = Vec::new();
        let mut ipip_ifindex = None;
        let mut vxlan_ifindex = None;
        for (tunnel, needed) in [(Tunnel::Ipip, need_ipip), (Tunnel::Vxlan, need_vxlan)] {
            let result = if needed {
                match self.ensure(tunnel, &me, &snapshot.pools).await {
                    Ok(index) => {
                        match tunnel {
                            Tunnel::Ipip => ipip_ifindex = Some(index),
                            Tunnel::Vxlan => vxlan_ifindex = Some(index),
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.remove(tunnel, &me).await
            };
            if let Err(e) = result {
                failures.push(format!("{}: {e:#}", tunnel.device()));
                if needed {
                    // Keep using a device that is already up (e.g. the datastore failed us
                    // mid-pass after a restart): its routes must not turn into plain ones.
                    let existing = self
                        .netlink
                        .link_by_name(tunnel.device())
                        .await
                        .ok()
                        .flatten()
                        .filter(|l| l.up)
                        .map(|l| l.index);
                    match tunnel {
                        Tunnel::Ipip => ipip_ifindex = existing,
                        Tunnel::Vxlan => vxlan_ifindex = existing,
                    }
                }
            }
        }
        self.state.update_pod_mtu(&snapshot.pools);
        let local_subnets = local_subnets(self.netlink.as_ref()).await?;
        let desired = calc::desired_vxlan(&me.name, snapshot, &local_subnets, vxlan_ifindex);
        match apply_vxlan(self.netlink.as_ref(), vxlan_ifindex, &desired).await {
            Ok(0) => {}
            Ok(changes) => info!(changes, "VXLAN state reconciled"),
            Err(e) => failures.push(format!("VXLAN routes/neighbours/FDB: {e:#}")),
        }
        if !failures.is_empty() {
            warn!(failures = %failures.join("; "), "encapsulation not fully set up; retrying");
        }
        Ok(EncapView {
            pools: snapshot.pools.clone(),
            local_subnets,
            ipip_ifindex,
        })
    }

    /// Runs passes on every snapshot, on deletions of routes of protocol 233, and every 5 s.
    /// Take tunnel-route deletions from the agent's shared monitor.
    pub fn with_deletions(mut self, deletions: RouteWatch) -> TunnelManager {
        self.deletions = Some(deletions);
        self
    }

    pub async fn run(
        mut self,
        mut cluster_rx: watch::Receiver<Option<Arc<ClusterState>>>,
        encap_tx: watch::Sender<Option<EncapView>>,
    ) {
        let mut repair_rx = super::repair::signal(
            self.netlink.as_ref(),
            self.deletions.take(),
            &[RouteProtocol::TUNNEL],
            "deleted VXLAN routes",
        )
        .await;
        let mut ticker = tokio::time::interval(RESYNC_EVERY);
        loop {
            let snapshot = cluster_rx.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                match self.pass(&snapshot).await {
                    Ok(view) => {
                        encap_tx.send_if_modified(|current| {
                            let next = Some(view);
                            let changed = *current != next;
                            *current = next;
                            changed
                        });
                    }
                    Err(e) => warn!(error = %format!("{e:#}"), "tunnel reconcile failed; retrying"),
                }
            }
            tokio::select! {
                r = cluster_rx.changed() => if r.is_err() { return },
                Some(()) = repair_rx.recv() => {}
                _ = ticker.tick() => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "tunnels_tests.rs"]
mod tests;
