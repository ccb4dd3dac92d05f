//! The kernel interface of routed: links, addresses, routes, neighbours and FDB entries over
//! rtnetlink, network namespaces, and `/proc/sys/net` sysctls.
//!
//! ```text
//!  CNI plugin (veth, pod addr/routes)      route reconciler (desired vs actual)
//!            │                                   │            ▲
//!            ▼                                   ▼            │ RouteEvent
//!  ┌──────────────────── trait Netlink ─────────────────────────────────────┐
//!  │ KernelNetlink (kernel.rs)                       FakeNetlink (fake.rs)   │
//!  │   requests ── rtnetlink Handle (one socket, acked, async)               │
//!  │   batches ─── batch.rs: raw socket, many RTM_NEWROUTE per sendmsg       │
//!  │   events ──── monitor.rs: RTNLGRP_IPV4/IPV6_ROUTE multicast socket       │
//!  │   nexthops ── nexthop.rs: kernel nexthop objects (on the batch socket)   │
//!  │   sysctls ─── sysctl.rs (/proc/sys/net, in the handle's namespace)      │
//!  └──────────────────────────┬─────────────────────────────────────────────┘
//!                             ▼  sockets opened inside the target netns (netns.rs)
//!                          kernel
//! ```
//!
//! What this module owns: the translation to and from netlink (`message.rs`), the route protocol
//! numbers that mark routed's routes (`proto.rs`, the only place they are declared), and the
//! error type ([`NetlinkError`]). What it does not own: deciding which routes should exist (the
//! agent's calc layer), or retry policy (the callers).
//!
//! A handle operates on the namespace it was opened in: [`KernelNetlink::new`] on the caller's,
//! [`Netlink::for_netns`] on a pod's. Every socket is created by a thread that has entered that
//! namespace, so tokio's worker threads never switch namespace.

mod batch;
mod error;
mod fake;
mod kernel;
mod message;
mod monitor;
pub mod netns;
mod nexthop;
pub mod proto;
pub mod sysctl;
mod types;

#[cfg(test)]
mod tests;

use std::any::Any;
use std::net::IpAddr;

use async_trait::async_trait;
use ipnetwork::IpNetwork;

pub use error::{NetlinkError, Operation, Result};
pub use fake::FakeNetlink;
pub use kernel::KernelNetlink;
pub use monitor::{RouteWatch, SharedDeletions};
pub use netns::{run_in_netns, run_in_netns_async, NetnsRef};
pub use nexthop::{Nexthop, NexthopSpec};
pub use proto::RouteProtocol;
pub use types::{
    BatchFailure, BatchReport, Family, FdbEntry, LinkInfo, MacAddr, Neighbour, NextHop, Route,
    RouteEvent, RouteFilter, RouteKey, RouteKind, RouteScope, VxlanSpec, IPV6_DEFAULT_PRIORITY,
    POD_GATEWAY_V4, TABLE_MAIN,
};

/// Everything the CNI plugin and the reconcilers ask of the kernel. Object-safe: callers hold a
/// `Box<dyn Netlink>` or `Arc<dyn Netlink>` and tests hand them a [`FakeNetlink`].
///
/// Idempotence: `delete_*` of something already gone is `Ok`; `add_*` of something present is
/// [`NetlinkError::AlreadyExists`]; `replace_*` creates or overwrites.
#[async_trait]
pub trait Netlink: Send + Sync {
    /// A handle on the same backend operating inside `netns` (the pod side of CNI ADD).
    /// [`NetlinkError::NetnsNotFound`] when the path does not exist.
    async fn for_netns(&self, netns: &NetnsRef) -> Result<Box<dyn Netlink>>;

    /// The link called `name`, or `None`.
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>>;

    /// Creates a veth pair: `host_name` here with `host_mac` and `mtu`, `peer_name` placed
    /// directly in `peer_netns` with the same `mtu`. Both ends start down. Returns the host end.
    async fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns: &NetnsRef,
        host_mac: MacAddr,
        mtu: u32,
    ) -> Result<LinkInfo>;

    /// Deletes the link called `name` (and a veth's peer with it); `Ok` when it does not exist.
    async fn delete_link(&self, name: &str) -> Result<()>;

    /// All links of the namespace.
    async fn list_links(&self) -> Result<Vec<LinkInfo>>;

    /// `ip link set <ifindex> up`.
    async fn set_link_up(&self, ifindex: u32) -> Result<()>;

    /// `ip link set <ifindex> down`.
    async fn set_link_down(&self, ifindex: u32) -> Result<()>;

    /// `ip link set <ifindex> mtu <mtu>`.
    async fn set_link_mtu(&self, ifindex: u32, mtu: u32) -> Result<()>;

    /// `ip link add <name> mtu <mtu> type ipip`: a one-to-many IPIP device (no local, no remote),
    /// down. [`NetlinkError::AlreadyExists`] when the name is taken — loading the `ipip` module
    /// creates the fallback device `tunl0` in every namespace, so a request for `tunl0` usually
    /// ends there and the caller adopts the existing device.
    async fn create_ipip(&self, name: &str, mtu: u32) -> Result<LinkInfo>;

    /// Creates a VXLAN device as `spec` says, down. [`NetlinkError::AlreadyExists`] when the name
    /// is taken.
    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<LinkInfo>;

    /// `ip link set <ifindex> name <new_name>` (the link should be down).
    async fn rename_link(&self, ifindex: u32, new_name: &str) -> Result<()>;

    /// `ip addr add <network> dev <ifindex>`.
    async fn add_address(&self, ifindex: u32, network: IpNetwork) -> Result<()>;

    /// `ip addr del <network> dev <ifindex>`; `Ok` when absent.
    async fn delete_address(&self, ifindex: u32, network: IpNetwork) -> Result<()>;

    /// The addresses on `ifindex`, both families.
    async fn list_addresses(&self, ifindex: u32) -> Result<Vec<IpNetwork>>;

    /// Adds a route; [`NetlinkError::AlreadyExists`] when its key is taken.
    async fn add_route(&self, route: &Route) -> Result<()>;

    /// Adds or overwrites the route at `route.key()`.
    async fn replace_route(&self, route: &Route) -> Result<()>;

    /// Deletes the route at `route.key()` if it carries `route.protocol`; `Ok` when absent.
    async fn delete_route(&self, route: &Route) -> Result<()>;

    /// Reads routes back from the kernel.
    async fn list_routes(&self, filter: &RouteFilter) -> Result<Vec<Route>>;

    /// Visits every route `filter` selects without collecting them (a streaming dump), and
    /// hands the visitor back. For tables too big to copy, like a full BGP table; callers use
    /// the typed [`scan_routes`](trait.Netlink.html#method.scan_routes) on `dyn Netlink`.
    async fn fold_routes(
        &self,
        filter: RouteFilter,
        fold: Box<dyn RouteFold>,
    ) -> Result<Box<dyn RouteFold>>;

    /// The route the kernel would take to `address` (`ip route get`); `None` when it answered
    /// with nothing routable.
    async fn route_get(&self, address: IpAddr) -> Result<Option<Route>>;

    /// Every nexthop object of the namespace (fails on a kernel without them).
    async fn nexthops(&self) -> Result<Vec<Nexthop>>;

    /// Creates nexthop object `id` of `protocol` ([`NetlinkError::AlreadyExists`] when the id
    /// is taken; an existing object is never overwritten).
    async fn create_nexthop(
        &self,
        id: u32,
        protocol: RouteProtocol,
        spec: NexthopSpec,
    ) -> Result<()>;

    /// Deletes nexthop object `id`; the kernel removes the routes using it without an
    /// RTM_DELROUTE each ([`NetlinkError::NotFound`] when there is no such object).
    async fn delete_nexthop(&self, id: u32) -> Result<()>;

    /// Replaces many routes, pipelining the requests; every route is attempted and the report
    /// lists the ones the kernel refused. `Err` only when the batch could not run at all.
    async fn replace_routes_batch(&self, routes: &[Route]) -> Result<BatchReport>;

    /// Deletes many routes like [`Netlink::delete_route`], pipelined; absent routes count as done.
    async fn delete_routes_batch(&self, routes: &[Route]) -> Result<BatchReport>;

    /// Subscribes to route changes in this namespace (RTM_NEWROUTE / RTM_DELROUTE), from now on.
    async fn watch_routes(&self) -> Result<RouteWatch>;

    /// Like [`Netlink::watch_routes`], for repair loops that only care about deletions of
    /// their own protocols: the kernel backend drops every other notification in the kernel
    /// (a socket filter), so installing a million routes costs a repair loop nothing. Other
    /// events may still arrive; callers filter.
    async fn watch_route_deletions(&self, protocols: &[RouteProtocol]) -> Result<RouteWatch> {
        let _ = protocols;
        self.watch_routes().await
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <ifindex> [nud permanent]`.
    async fn replace_neighbour(&self, neighbour: &Neighbour) -> Result<()>;

    /// ARP/NDP entries on `ifindex`.
    async fn list_neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>>;

    /// `ip neigh del <ip> dev <ifindex>`; `Ok` when absent.
    async fn delete_neighbour(&self, ifindex: u32, ip: IpAddr) -> Result<()>;

    /// `bridge fdb replace <mac> dev <ifindex> dst <ip> self permanent`.
    async fn replace_fdb(&self, entry: &FdbEntry) -> Result<()>;

    /// FDB entries of `ifindex`.
    async fn list_fdb(&self, ifindex: u32) -> Result<Vec<FdbEntry>>;

    /// `bridge fdb del <mac> dev <ifindex> dst <ip> self`; `Ok` when absent.
    async fn delete_fdb(&self, entry: &FdbEntry) -> Result<()>;

    /// Writes a `net/...` sysctl in this handle's namespace (see [`sysctl`] for key helpers).
    async fn set_sysctl(&self, key: &str, value: &str) -> Result<()>;

    /// Reads a `net/...` sysctl in this handle's namespace.
    async fn get_sysctl(&self, key: &str) -> Result<String>;
}

/// The visitor of one streaming dump ([`Netlink::fold_routes`]): folds each route into itself.
pub trait RouteFold: Send + 'static {
    /// One route of the dump.
    fn visit(&mut self, route: Route);
    /// What was gathered, for [`Netlink::scan_routes`] to take back.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// A state and the function folding routes into it.
struct Fold<S, F> {
    state: S,
    visit: F,
}

impl<S, F> RouteFold for Fold<S, F>
where
    S: Send + 'static,
    F: FnMut(&mut S, Route) + Send + 'static,
{
    fn visit(&mut self, route: Route) {
        (self.visit)(&mut self.state, route)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.state)
    }
}

impl dyn Netlink {
    /// Visits every route `filter` selects without collecting them (a streaming dump); returns
    /// what the visitor gathered in `state`.
    pub async fn scan_routes<S, F>(&self, filter: RouteFilter, state: S, visit: F) -> Result<S>
    where
        S: Send + 'static,
        F: FnMut(&mut S, Route) + Send + 'static,
    {
        let fold = self
            .fold_routes(filter, Box::new(Fold { state, visit }))
            .await?;
        match fold.into_any().downcast::<S>() {
            Ok(state) => Ok(*state),
            Err(_) => Err(NetlinkError::Protocol {
                op: Operation::ListRoutes,
                target: format!("{filter:?}"),
                message: "a route scan handed back another visitor".into(),
            }),
        }
    }
}
