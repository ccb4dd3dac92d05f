//! Encapsulation: the agent's IPIP device (`tunl0`) and VXLAN device (`vxlan.routed`).
//!
//! ```text
//!  follower ──snapshot──> tunnel manager ──EncapView──> route reconciler (tunl0 routes)
//!                                   │  one pass (reconciler::run) on a snapshot change, a
//!                                   │  deleted route of protocol 233, the 5 s resync, a retry:
//!                                   │  1. calc::encapsulation_needed(pools) → (ipip, vxlan)  (pure)
//!                                   │  2. needed: tunnel address (IPAM handle, Node record via
//!                                   │     node::record_tunnel), device created or adopted, MTU,
//!                                   │     up, address (tunnel_devices)
//!                                   │     not needed: address released, device removed
//!                                   │  3. pod MTU = node MTU − overhead (AgentState::update_pod_mtu)
//!                                   │  4. calc::desired_vxlan → routes (proto 233), permanent
//!                                   v     neighbours and FDB entries on vxlan.routed (vxlan::apply_vxlan)
//!                                 kernel
//! ```
//! The EncapView is published after every pass, also one that failed in part (a device that is
//! up stays in the view, so its routes do not turn into plain ones); the failures make the
//! pass an error, retried with back-off.
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

use super::calc::{self, ClusterState, EncapView};
use super::node::{record_tunnel, TunnelRecord};
use super::reconciler::{self, Applied, Reconciler, Triggers, Wake};
use super::AgentState;
use crate::ipam::{AllocateRequest, Ipam};
use crate::model::{EncapMode, IpPool, Node};
use crate::netlink::{MacAddr, Netlink, RouteProtocol, RouteWatch, VxlanSpec};
use anyhow::{Context, Result};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

pub use super::tunnel_devices::{
    ensure_ipip_device, ensure_vxlan_device, local_subnets, remove_device, vtep_mac, IPIP_DEVICE,
    VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI,
};
pub use super::vxlan::apply_vxlan;

/// Full pass period (neighbours and FDB entries removed by hand come back within it).
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);

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

    /// The Node fields for `address` (and, for VXLAN, the VTEP MAC); `None` clears them.
    fn record(self, address: Option<IpAddr>, mac: Option<MacAddr>) -> TunnelRecord {
        match self {
            Tunnel::Ipip => TunnelRecord::Ipip(address),
            Tunnel::Vxlan => TunnelRecord::Vxlan(address, mac),
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
                    let record = tunnel.record(Some(IpAddr::V4(recorded)), mac);
                    record_tunnel(self.state.store.as_ref(), &me.name, record).await?;
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
        let record = tunnel.record(Some(IpAddr::V4(ip)), mac);
        record_tunnel(self.state.store.as_ref(), &me.name, record).await?;
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
        let record = tunnel.record(None, None);
        record_tunnel(self.state.store.as_ref(), &me.name, record).await?;
        self.verified.remove(tunnel.device());
        info!(device = tunnel.device(), released = ?released, "tunnel address released");
        Ok(())
    }

    /// The device of `tunnel` set up; its index and the number of kernel changes made.
    async fn ensure(
        &mut self,
        tunnel: Tunnel,
        me: &Node,
        pools: &[IpPool],
    ) -> Result<(u32, usize)> {
        let mtu = self.node_mtu.saturating_sub(tunnel.overhead());
        match tunnel {
            Tunnel::Ipip => {
                let address = self.ensure_address(tunnel, me, pools, None).await?;
                let (link, changes) =
                    ensure_ipip_device(self.netlink.as_ref(), mtu, Some(address)).await?;
                Ok((link.index, changes))
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
                let (link, created) =
                    ensure_vxlan_device(self.netlink.as_ref(), &spec, None).await?;
                let mac = link.mac.or(spec.mac);
                let address = self.ensure_address(tunnel, me, pools, mac).await?;
                let (link, changes) =
                    ensure_vxlan_device(self.netlink.as_ref(), &spec, Some(address)).await?;
                Ok((link.index, created + changes))
            }
        }
    }

    /// Removes the device of `tunnel` and releases its address; the kernel changes made.
    async fn remove(&mut self, tunnel: Tunnel, me: &Node) -> Result<usize> {
        let removed = remove_device(self.netlink.as_ref(), tunnel.device()).await?;
        self.release_address(tunnel, me).await?;
        Ok(usize::from(removed))
    }

    /// One pass over `snapshot`: devices, addresses, MTU, VXLAN state. The view for the route
    /// reconciler is built even when a step failed; the failures are listed in the outcome.
    pub async fn pass(&mut self, snapshot: &ClusterState) -> Result<PassOutcome> {
        let me = snapshot
            .nodes
            .iter()
            .find(|n| n.name == self.state.node_name)
            .cloned()
            .with_context(|| format!("node {} is not registered", self.state.node_name))?;
        let (need_ipip, need_vxlan) = calc::encapsulation_needed(&snapshot.pools);
        let mut out = PassOutcome::default();
        let mut vxlan_ifindex = None;
        for (tunnel, needed) in [(Tunnel::Ipip, need_ipip), (Tunnel::Vxlan, need_vxlan)] {
            let ifindex = self
                .pass_device(tunnel, needed, &me, snapshot, &mut out)
                .await;
            match tunnel {
                Tunnel::Ipip => out.view.ipip_ifindex = ifindex,
                Tunnel::Vxlan => vxlan_ifindex = ifindex,
            }
        }
        self.state.update_pod_mtu(&snapshot.pools);
        let local_subnets = local_subnets(self.netlink.as_ref()).await?;
        let desired = calc::desired_vxlan(&me.name, snapshot, &local_subnets, vxlan_ifindex);
        match apply_vxlan(self.netlink.as_ref(), vxlan_ifindex, &desired).await {
            Ok(0) => {}
            Ok(changes) => {
                info!(changes, "VXLAN state reconciled");
                out.changes += changes;
            }
            Err(e) => out
                .failures
                .push(format!("VXLAN routes/neighbours/FDB: {e:#}")),
        }
        out.view.pools = snapshot.pools.clone();
        out.view.local_subnets = local_subnets;
        Ok(out)
    }

    /// Sets up or removes the device of `tunnel`; its index when it is in use.
    async fn pass_device(
        &mut self,
        tunnel: Tunnel,
        needed: bool,
        me: &Node,
        snapshot: &ClusterState,
        out: &mut PassOutcome,
    ) -> Option<u32> {
        let result = if needed {
            self.ensure(tunnel, me, &snapshot.pools)
                .await
                .map(|(index, changes)| (Some(index), changes))
        } else {
            self.remove(tunnel, me).await.map(|changes| (None, changes))
        };
        match result {
            Ok((ifindex, changes)) => {
                out.changes += changes;
                ifindex
            }
            Err(e) => {
                out.failures.push(format!("{}: {e:#}", tunnel.device()));
                if !needed {
                    return None;
                }
                // Keep using a device that is already up (e.g. the datastore failed us
                // mid-pass after a restart): its routes must not turn into plain ones.
                self.netlink
                    .link_by_name(tunnel.device())
                    .await
                    .ok()
                    .flatten()
                    .filter(|l| l.up)
                    .map(|l| l.index)
            }
        }
    }

    /// Take tunnel-route deletions from the agent's shared monitor (else `run` opens its own).
    pub fn with_deletions(mut self, deletions: RouteWatch) -> TunnelManager {
        self.deletions = Some(deletions);
        self
    }

    /// Runs passes on every snapshot, on deletions of routes of protocol 233, every 5 s, and
    /// after a failed pass (with back-off); publishes the EncapView after each pass.
    pub async fn run(
        mut self,
        cluster_rx: watch::Receiver<Option<Arc<ClusterState>>>,
        encap_tx: watch::Sender<Option<EncapView>>,
    ) {
        let repairs = super::repair::signal(
            self.netlink.as_ref(),
            self.deletions.take(),
            &[RouteProtocol::TUNNEL],
            "deleted VXLAN routes",
        )
        .await;
        let stats = self.state.reconciler_stats("tunnels");
        let triggers = Triggers::every(RESYNC_EVERY).with_kernel(repairs);
        let reconciler = TunnelReconciler {
            manager: self,
            encap_tx,
        };
        reconciler::run(reconciler, cluster_rx, triggers, stats).await;
    }
}

/// What one pass did: the view for the route reconciler, kernel changes, failed steps.
#[derive(Debug, Default)]
pub struct PassOutcome {
    pub view: EncapView,
    pub changes: usize,
    pub failures: Vec<String>,
}

/// The tunnel manager hosted by the reconciler driver, publishing its view.
struct TunnelReconciler {
    manager: TunnelManager,
    encap_tx: watch::Sender<Option<EncapView>>,
}

#[async_trait]
impl Reconciler for TunnelReconciler {
    type Input = Arc<ClusterState>;
    type Desired = Arc<ClusterState>;
    type Event = ();

    fn name(&self) -> &'static str {
        "tunnels"
    }

    /// The snapshot itself: what each encapsulation needs is computed from it in the pass
    /// (calc::encapsulation_needed, calc::desired_vxlan), with the kernel's facts (devices,
    /// local subnets) it depends on.
    fn desired(&self, snapshot: &Arc<ClusterState>) -> Arc<ClusterState> {
        snapshot.clone()
    }

    async fn apply(&mut self, snapshot: Arc<ClusterState>, _wake: Wake) -> Result<Applied> {
        let out = self.manager.pass(&snapshot).await?;
        self.encap_tx.send_if_modified(|current| {
            let next = Some(out.view);
            let changed = *current != next;
            *current = next;
            changed
        });
        if !out.failures.is_empty() {
            anyhow::bail!(
                "encapsulation not fully set up: {}",
                out.failures.join("; ")
            );
        }
        Ok(Applied::changes(out.changes))
    }
}

#[cfg(test)]
#[path = "tunnels_tests.rs"]
mod tests;
