//! Kernel nexthop objects for the learned (BGP) routes.
//!
//! A route written `via GW` costs the kernel a gateway validation (a FIB lookup) and a fresh
//! `fib_info` per route; written `nhid N` it points at a next hop validated once. At a full
//! table that is a third of the kernel's install work (docs/benchmarks.md, "BGP"). So the
//! reconciler writes every learned route whose next hops are plain gateways with an object:
//! one per (gateway, device), one group per ECMP set. `ip route` still shows `via GW dev IF`
//! beside `nhid N`. Routes through a tunnel (`dev tunl0 onlink`) keep their own form.
//!
//! Ownership: objects carry protocol `routed-bgp`; at start (and before each full resync) the
//! table is re-read from the kernel, so a restarted agent adopts the objects its routes use
//! and nothing is rewritten. Ids are taken above the highest id in use; an id someone else
//! took meanwhile (EEXIST) is skipped. Objects no route of ours uses are deleted after a full
//! resync (deleting an object deletes its routes, so only then). If someone deletes an object
//! (or its device goes down), the kernel drops its routes without an RTM_DELROUTE each; the
//! route monitor reports RTM_DELNEXTHOP of our protocol and the reconciler resyncs.
//!
//! On a kernel without nexthop objects (before 5.3) the first dump fails and every route keeps
//! `via GW`, as before.

use crate::netlink::{Netlink, NexthopSpec, Route, RouteKind, RouteProtocol};
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// Ids routed takes start here unless higher ones are in use (clear of the low ids people pick
/// by hand in `ip nexthop add id N`).
const FIRST_ID: u32 = 0x0e0_0000;
/// Taken ids skipped in a row before giving up on one object.
const MAX_ID_ATTEMPTS: usize = 64;

/// How a route is to be written, as far as objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// With this object.
    Object(u32),
    /// With an object that does not exist yet: the apply path creates it.
    Missing,
    /// With its gateways (a tunnel route, an unresolvable gateway, or no objects on this kernel).
    Plain,
}

/// What the objects are, readable by a full resync's scan while the table stays with the
/// reconciler.
#[derive(Debug, Default, Clone)]
pub struct NexthopView {
    /// Output device of each gateway seen; `None` when the kernel has no on-link route to it.
    devices: HashMap<IpAddr, Option<u32>>,
    ids: HashMap<NexthopSpec, u32>,
}

impl NexthopView {
    /// How `route` is to be written.
    pub fn want(&self, route: &Route) -> Want {
        let Some(members) = members(route) else {
            return Want::Plain;
        };
        let mut ids = Ids::new();
        let mut missing = false;
        for (gateway, weight) in members {
            let Some(Some(ifindex)) = self.devices.get(&gateway) else {
                return Want::Plain;
            };
            match self.ids.get(&gateway_spec(gateway, *ifindex)) {
                Some(id) => ids.push((*id, weight)),
                None => missing = true,
            }
        }
        if missing {
            return Want::Missing;
        }
        match group_of(ids) {
            Ok(single) => Want::Object(single),
            Err(group) => self
                .ids
                .get(&group)
                .map_or(Want::Missing, |id| Want::Object(*id)),
        }
    }
}

fn gateway_spec(gateway: IpAddr, ifindex: u32) -> NexthopSpec {
    NexthopSpec::Gateway {
        gateway,
        ifindex,
        onlink: false,
    }
}

/// A route's gateways with their weights, and the ids of their objects: inline for the usual
/// one or two, so the per-route work of a full table allocates nothing.
type Members = SmallVec<[(IpAddr, u16); 2]>;
type Ids = SmallVec<[(u32, u16); 2]>;

/// One member: that object itself (`Ok`); several: the group over them (`Err`).
fn group_of(mut ids: Ids) -> Result<u32, NexthopSpec> {
    ids.sort_unstable();
    // The same next hop learned twice (two peers, one next hop) is one member.
    ids.dedup_by_key(|(id, _)| *id);
    match ids.as_slice() {
        [(single, _)] => Ok(*single),
        _ => Err(NexthopSpec::Group(ids.into_vec())),
    }
}

/// The gateways (and weights) of a route written with an object: a unicast route via plain
/// gateways, no device named and no onlink. `None`: the route keeps its own form.
fn members(route: &Route) -> Option<Members> {
    if route.kind != RouteKind::Unicast {
        return None;
    }
    if route.multipath.is_empty() {
        if route.onlink || route.output_ifindex.is_some() {
            return None;
        }
        return Some(smallvec::smallvec![(route.gateway?, 1)]);
    }
    route
        .multipath
        .iter()
        .map(|hop| match hop.gateway {
            Some(gateway) if !hop.onlink && hop.output_ifindex.is_none() => {
                Some((gateway, hop.weight))
            }
            _ => None,
        })
        .collect()
}

/// The reconciler's nexthop objects.
pub struct Nexthops {
    protocol: RouteProtocol,
    /// `None` until the first kernel read; `Some(false)` on a kernel without objects.
    enabled: Option<bool>,
    view: Arc<NexthopView>,
    /// Every object of our protocol in the kernel, usable or not (duplicates, kinds we do not
    /// create): what garbage collection may delete.
    owned: HashSet<u32>,
    /// Objects the kernel refused since the last refresh (not retried per batch).
    refused: HashSet<NexthopSpec>,
    /// Objects whose refusal was logged at warn level (once, until one is created again).
    warned: HashSet<NexthopSpec>,
    next_id: u32,
}

impl Nexthops {
    /// Adopts the objects of `protocol` the kernel has.
    pub async fn start(netlink: &dyn Netlink, protocol: RouteProtocol) -> Nexthops {
        let mut nexthops = Nexthops {
            protocol,
            enabled: None,
            view: Arc::default(),
            owned: HashSet::new(),
            refused: HashSet::new(),
            warned: HashSet::new(),
            next_id: FIRST_ID,
        };
        nexthops.refresh(netlink).await;
        nexthops
    }

    /// A snapshot for a scan.
    pub fn view(&self) -> Arc<NexthopView> {
        self.view.clone()
    }

    /// Re-reads our objects from the kernel and re-resolves every known gateway's device (a
    /// moved gateway gets a new object; its routes are then rewritten by the resync).
    pub async fn refresh(&mut self, netlink: &dyn Netlink) {
        let all = match netlink.nexthops().await {
            Ok(all) => all,
            Err(error) => {
                if self.enabled.is_none() {
                    info!(%error, "no kernel nexthop objects; learned routes are written with their gateways");
                    self.enabled = Some(false);
                } else if self.enabled == Some(true) {
                    warn!(%error, "cannot read the kernel's nexthop objects; keeping the known ones");
                }
                return;
            }
        };
        self.enabled = Some(true);
        self.refused.clear();
        let mut ids: HashMap<NexthopSpec, u32> = HashMap::new();
        self.owned.clear();
        for nexthop in all {
            self.next_id = self.next_id.max(nexthop.id.saturating_add(1));
            if nexthop.protocol != self.protocol {
                continue;
            }
            self.owned.insert(nexthop.id);
            if let Some(spec) = nexthop.spec {
                let id = ids.entry(spec).or_insert(nexthop.id);
                *id = (*id).min(nexthop.id);
            }
        }
        let mut gateways: HashSet<IpAddr> = self.view.devices.keys().copied().collect();
        gateways.extend(ids.keys().filter_map(|spec| match spec {
            NexthopSpec::Gateway { gateway, .. } => Some(*gateway),
            NexthopSpec::Group(_) => None,
        }));
        let mut devices = HashMap::with_capacity(gateways.len());
        for gateway in gateways {
            devices.insert(gateway, resolve(netlink, gateway).await);
        }
        self.view = Arc::new(NexthopView { devices, ids });
    }

    /// Writes each route that can use an object with it, creating the objects it lacks.
    pub async fn assign(&mut self, netlink: &dyn Netlink, routes: &mut [Route]) {
        if self.enabled != Some(true) {
            return;
        }
        for route in routes.iter_mut() {
            route.nexthop_id = None;
            if let Some(members) = members(route) {
                route.nexthop_id = self.object_for(netlink, members).await;
            }
        }
    }

    /// The object for these gateways, created (members first) when missing.
    async fn object_for(&mut self, netlink: &dyn Netlink, members: Members) -> Option<u32> {
        let mut ids = Ids::new();
        for (gateway, weight) in members {
            let ifindex = match self.view.devices.get(&gateway) {
                Some(known) => *known,
                None => {
                    let found = resolve(netlink, gateway).await;
                    Arc::make_mut(&mut self.view).devices.insert(gateway, found);
                    found
                }
            }?;
            ids.push((
                self.object(netlink, gateway_spec(gateway, ifindex)).await?,
                weight,
            ));
        }
        match group_of(ids) {
            Ok(single) => Some(single),
            Err(group) => self.object(netlink, group).await,
        }
    }

    /// The id of `spec`, creating the object when it does not exist.
    async fn object(&mut self, netlink: &dyn Netlink, spec: NexthopSpec) -> Option<u32> {
        if let Some(id) = self.view.ids.get(&spec) {
            return Some(*id);
        }
        if self.refused.contains(&spec) {
            return None;
        }
        for _ in 0..MAX_ID_ATTEMPTS {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(FIRST_ID);
            match netlink
                .create_nexthop(id, self.protocol, spec.clone())
                .await
            {
                Ok(()) => {
                    debug!(id, ?spec, "nexthop object created");
                    self.warned.remove(&spec);
                    Arc::make_mut(&mut self.view).ids.insert(spec, id);
                    self.owned.insert(id);
                    return Some(id);
                }
                Err(error) if error.is_already_exists() => continue,
                Err(error) => {
                    // Retried after each refresh (a device without carrier, say, comes back);
                    // said once.
                    if self.warned.insert(spec.clone()) {
                        warn!(%error, "kernel refused a nexthop object; its routes keep their gateways");
                    } else {
                        debug!(%error, "kernel refused a nexthop object again");
                    }
                    self.refused.insert(spec);
                    return None;
                }
            }
        }
        warn!(
            ?spec,
            "no free nexthop id found; its routes keep their gateways"
        );
        self.refused.insert(spec);
        None
    }

    /// Deletes the objects of ours that no route in `in_use` (ids the last full scan found on
    /// our routes) needs, groups before their members. Call only right after that scan.
    pub async fn collect_garbage(&mut self, netlink: &dyn Netlink, in_use: &HashSet<u32>) {
        let mut keep = in_use.clone();
        let mut groups = HashSet::new();
        for (spec, id) in &self.view.ids {
            if let NexthopSpec::Group(members) = spec {
                groups.insert(*id);
                if in_use.contains(id) {
                    keep.extend(members.iter().map(|(member, _)| *member));
                }
            }
        }
        let mut unused: Vec<u32> = self.owned.difference(&keep).copied().collect();
        // Groups first (false sorts before true), then by id.
        unused.sort_unstable_by_key(|id| (!groups.contains(id), *id));
        if unused.is_empty() {
            return;
        }
        debug!(objects = unused.len(), "deleting unused nexthop objects");
        for id in unused {
            match netlink.delete_nexthop(id).await {
                Ok(()) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    warn!(%error, id, "cannot delete an unused nexthop object");
                    continue;
                }
            }
            self.owned.remove(&id);
            Arc::make_mut(&mut self.view)
                .ids
                .retain(|_, known| *known != id);
        }
    }
}

/// The device the kernel reaches `gateway` on directly; `None` when it is not on a link (no
/// route, a route via another gateway, or an address of this host).
async fn resolve(netlink: &dyn Netlink, gateway: IpAddr) -> Option<u32> {
    match netlink.route_get(gateway).await {
        Ok(Some(route)) if route.kind == RouteKind::Unicast && route.gateway.is_none() => {
            route.output_ifindex
        }
        Ok(_) => None,
        Err(error) => {
            debug!(%error, %gateway, "next hop not reachable on a link");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::NextHop;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn via(gateway: &str) -> Route {
        Route::via(
            "10.1.0.0/26".parse().unwrap(),
            ip(gateway),
            None,
            RouteProtocol::BGP,
        )
    }

    fn ecmp(gateways: &[&str]) -> Route {
        let hops = gateways
            .iter()
            .map(|g| NextHop {
                gateway: Some(ip(g)),
                output_ifindex: None,
                weight: 1,
                onlink: false,
            })
            .collect();
        via(gateways[0]).with_multipath(hops)
    }

    fn view() -> NexthopView {
        let mut view = NexthopView::default();
        view.devices.insert(ip("10.0.0.2"), Some(3));
        view.devices.insert(ip("10.0.0.3"), Some(3));
        view.devices.insert(ip("192.0.2.9"), None);
        view.ids.insert(gateway_spec(ip("10.0.0.2"), 3), 100);
        view.ids.insert(gateway_spec(ip("10.0.0.3"), 3), 101);
        view.ids
            .insert(NexthopSpec::Group(vec![(100, 1), (101, 1)]), 102);
        view
    }

    #[test]
    fn plain_gateways_and_ecmp_sets_map_to_their_objects() {
        let view = view();
        assert_eq!(view.want(&via("10.0.0.2")), Want::Object(100));
        assert_eq!(
            view.want(&ecmp(&["10.0.0.3", "10.0.0.2"])),
            Want::Object(102)
        );
        // The same next hop twice is that one object.
        assert_eq!(
            view.want(&ecmp(&["10.0.0.2", "10.0.0.2"])),
            Want::Object(100)
        );
    }

    #[test]
    fn unknown_objects_are_missing_and_unusable_routes_stay_plain() {
        let view = view();
        let mut other = view.clone();
        other.devices.insert(ip("10.0.0.4"), Some(3));
        assert_eq!(other.want(&via("10.0.0.4")), Want::Missing);
        assert_eq!(other.want(&ecmp(&["10.0.0.2", "10.0.0.4"])), Want::Missing);
        // Not resolved yet, or not on a link: plain.
        assert_eq!(view.want(&via("10.0.0.4")), Want::Plain);
        assert_eq!(view.want(&via("192.0.2.9")), Want::Plain);
        // Tunnel routes name their device and are onlink: plain.
        let tunnel = Route::via(
            "10.1.0.0/26".parse().unwrap(),
            ip("10.0.0.2"),
            Some(7),
            RouteProtocol::BGP,
        )
        .with_onlink();
        assert_eq!(view.want(&tunnel), Want::Plain);
        let blackhole = Route::blackhole("10.1.0.0/26".parse().unwrap(), RouteProtocol::BLACKHOLE);
        assert_eq!(view.want(&blackhole), Want::Plain);
    }
}
