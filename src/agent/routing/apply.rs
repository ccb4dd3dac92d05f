//! The route reconciler's kernel side: carries out the planner's `ApplyPrefixes` and
//! `FullResync` on any [`Netlink`] (the kernel, or `FakeNetlink` in tests).
//!
//! ```text
//!  ApplyPrefixes(chunk) ──> calc::desired_route per prefix (RIB next hops) ──> nexthop objects
//!                           ──> replace_routes_batch / delete_routes_batch
//!  FullResync ──> nexthops.refresh ──> streaming scan of protocols routed-bh, routed-bgp,
//!                 each route compared with the RIB ──> delete what nothing wants (learned
//!                 routes only when allowed) ──> unused nexthop objects deleted ──> prefixes to fix
//! ```

use super::planner::{View, APPLY_CHUNK};
use crate::agent::calc;
use crate::agent::nexthops::{Nexthops, Want};
use crate::bgp::rib::SharedRib;
use crate::netlink::{Netlink, Route, RouteFilter, RouteKind, RouteProtocol};
use anyhow::Result;
use ipnetwork::IpNetwork;
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::warn;

/// One next hop as the diff sees it: gateway, and the device only when it is a tunnel (onlink).
type HopSignature = (Option<IpAddr>, bool, Option<u32>);

/// What identifies a route's content for the diff. The kernel fills in the output device of a
/// plain `via` route, so the device counts only for onlink (tunnel) hops, which name it.
pub(crate) fn signature(route: &Route) -> (RouteKind, Vec<HopSignature>) {
    let hop = |gateway: Option<IpAddr>, onlink: bool, ifindex: Option<u32>| {
        (gateway, onlink, if onlink { ifindex } else { None })
    };
    let mut hops: Vec<HopSignature> = if route.multipath.is_empty() {
        route
            .gateway
            .map(|g| hop(Some(g), route.onlink, route.output_ifindex))
            .into_iter()
            .collect()
    } else {
        route
            .multipath
            .iter()
            .map(|h| hop(h.gateway, h.onlink, h.output_ifindex))
            .collect()
    };
    hops.sort();
    (route.kind, hops)
}

/// The kernel side of the route reconciler: the netlink handle, the shared RIB it reads next
/// hops from, and the nexthop objects (adopted from the kernel on first use).
pub struct RouteApply {
    netlink: Arc<dyn Netlink>,
    rib: SharedRib,
    nexthops: Option<Nexthops>,
}

impl RouteApply {
    pub fn new(netlink: Arc<dyn Netlink>, rib: SharedRib) -> RouteApply {
        RouteApply {
            netlink,
            rib,
            nexthops: None,
        }
    }

    /// The nexthop objects, adopted from the kernel the first time (after the planner's first
    /// action, so only once the datastore and tunnel views are known).
    async fn nexthops(&mut self) -> &mut Nexthops {
        let nexthops = match self.nexthops.take() {
            Some(nexthops) => nexthops,
            None => Nexthops::start(self.netlink.as_ref(), RouteProtocol::BGP).await,
        };
        self.nexthops.insert(nexthops)
    }

    /// Programs the current desired route of each prefix (replace, with its nexthop object
    /// when it can have one), or removes ours (delete); returns the changes made.
    pub async fn apply_prefixes(&mut self, view: &View, prefixes: Vec<IpNetwork>) -> Result<usize> {
        let mut replace = Vec::new();
        let mut delete = Vec::new();
        for prefix in prefixes {
            match desired_for(prefix, &self.rib, &view.local, &view.encap) {
                Some(route) => replace.push(route),
                None => delete.push(any_kind(Route::unicast_key(prefix, RouteProtocol::BGP))),
            }
        }
        let netlink = self.netlink.clone();
        self.nexthops()
            .await
            .assign(netlink.as_ref(), &mut replace)
            .await;
        program(netlink.as_ref(), replace, delete).await
    }

    /// Diffs the kernel's routes of our protocols against the desired ones, without copying
    /// either table: the dump is compared route by route with the RIB, and desired routes the
    /// kernel lacks are looked for only when the counts say some are missing. Deletes what
    /// nothing wants (in chunks; learned routes only when `allow_delete_learned`), then the
    /// nexthop objects no route uses; returns the prefixes to re-apply, for the chunked
    /// incremental path, and the number of deletions.
    pub async fn resync(
        &mut self,
        view: &View,
        allow_delete_learned: bool,
    ) -> Result<(Vec<IpNetwork>, usize)> {
        let netlink = self.netlink.clone();
        let nexthops = self.nexthops().await;
        nexthops.refresh(netlink.as_ref()).await;
        let objects = nexthops.view();
        let mut scan = Scan::default();
        for protocol in [RouteProtocol::BLACKHOLE, RouteProtocol::BGP] {
            let (rib, view, objects) = (self.rib.clone(), view.clone(), objects.clone());
            scan = netlink
                .scan_routes(
                    RouteFilter::protocol(protocol),
                    scan,
                    move |scan, actual| {
                        scan.in_use.extend(actual.nexthop_id);
                        match desired_for(actual.destination, &rib, &view.local, &view.encap) {
                            Some(wanted) => {
                                scan.present += 1;
                                if !is_wanted(&wanted, objects.want(&wanted), &actual) {
                                    scan.fix.push(actual.destination);
                                }
                            }
                            None => {
                                if actual.protocol != RouteProtocol::BGP || allow_delete_learned {
                                    scan.delete.push((actual.destination, actual.protocol));
                                }
                            }
                        }
                    },
                )
                .await?;
        }
        self.find_missing(view, &mut scan).await?;
        let mut deleted = 0;
        for chunk in scan.delete.chunks(APPLY_CHUNK) {
            let keys: Vec<Route> = chunk
                .iter()
                .map(|(prefix, protocol)| any_kind(Route::unicast_key(*prefix, *protocol)))
                .collect();
            deleted += program(netlink.as_ref(), Vec::new(), keys).await?;
        }
        let nexthops = self.nexthops().await;
        nexthops
            .collect_garbage(netlink.as_ref(), &scan.in_use)
            .await;
        Ok((scan.fix, deleted))
    }

    /// Adds to `scan.fix` the desired prefixes the kernel has no route of ours for, when the
    /// counts say there are some (a second scan, of prefixes only).
    async fn find_missing(&self, view: &View, scan: &mut Scan) -> Result<()> {
        let mut desired = 0;
        for_each_desired(&self.rib, &view.local, &view.encap, |_| desired += 1);
        if scan.present >= desired {
            return Ok(());
        }
        let mut have: Vec<IpNetwork> = Vec::with_capacity(scan.present);
        for protocol in [RouteProtocol::BLACKHOLE, RouteProtocol::BGP] {
            have = self
                .netlink
                .scan_routes(RouteFilter::protocol(protocol), have, |have, actual| {
                    have.push(actual.destination);
                })
                .await?;
        }
        have.sort_unstable();
        for_each_desired(&self.rib, &view.local, &view.encap, |prefix| {
            if have.binary_search(&prefix).is_err() {
                scan.fix.push(prefix);
            }
        });
        Ok(())
    }
}

/// What a streaming comparison of the kernel's routes with the desired ones found.
#[derive(Default)]
struct Scan {
    /// Prefixes whose kernel route is wrong or missing: re-applied from the RIB.
    fix: Vec<IpNetwork>,
    /// Routes of ours nothing wants any more: (prefix, protocol).
    delete: Vec<(IpNetwork, RouteProtocol)>,
    /// Desired prefixes the kernel has a route of ours for (right or wrong).
    present: usize,
    /// Nexthop objects our routes in the kernel use.
    in_use: HashSet<u32>,
}

/// The route routed wants in the kernel for `prefix` (`calc::desired_route` over the RIB's
/// best next hops); `None`: no route of ours belongs there.
fn desired_for(
    prefix: IpNetwork,
    rib: &SharedRib,
    local: &BTreeSet<IpNetwork>,
    encap: &calc::EncapView,
) -> Option<Route> {
    if local.contains(&prefix) {
        return calc::desired_route(prefix, &[], local, encap);
    }
    let hops = rib.read().next_hops(&prefix);
    calc::desired_route(prefix, &hops, local, encap)
}

/// Whether the kernel's route is the one wanted: the same object, or (written without one)
/// the same gateways. A route that could have an object but lacks it is rewritten.
fn is_wanted(wanted: &Route, want: Want, actual: &Route) -> bool {
    wanted.protocol == actual.protocol
        && match want {
            Want::Object(id) => actual.nexthop_id == Some(id),
            Want::Missing => false,
            Want::Plain => actual.nexthop_id.is_none() && signature(wanted) == signature(actual),
        }
}

/// A delete key that matches the route whatever its type (unicast, blackhole...).
fn any_kind(mut key: Route) -> Route {
    key.kind = RouteKind::Other(0);
    key
}

/// Calls `f` with every prefix routed wants a kernel route for (local blackholes and learned
/// routes), reading the RIB in chunks so the speaker is never held up for long.
fn for_each_desired(
    rib: &SharedRib,
    local: &BTreeSet<IpNetwork>,
    encap: &calc::EncapView,
    mut f: impl FnMut(IpNetwork),
) {
    for block in local {
        f(*block);
    }
    let mut after = None;
    loop {
        let mut chunk = Vec::new();
        let last = rib.read().for_each_best(after, 4096, |prefix, hops| {
            if calc::learned_route(prefix, hops, local, encap).is_some() {
                chunk.push(prefix);
            }
        });
        chunk.into_iter().for_each(&mut f);
        match last {
            Some(last) => after = Some(last),
            None => return,
        }
    }
}

/// Replaces and deletes in batches (many netlink messages per send); returns the changes made.
async fn program(netlink: &dyn Netlink, replace: Vec<Route>, delete: Vec<Route>) -> Result<usize> {
    let mut changes = 0;
    if !replace.is_empty() {
        let report = netlink.replace_routes_batch(&replace).await?;
        for failure in &report.failures {
            warn!(route = %failure.key.destination, error = %failure.error, "cannot program route");
        }
        changes += report.succeeded;
    }
    if !delete.is_empty() {
        let report = netlink.delete_routes_batch(&delete).await?;
        for failure in &report.failures {
            warn!(route = %failure.key.destination, error = %failure.error, "cannot remove route");
        }
        changes += report.succeeded;
    }
    Ok(changes)
}
