//! The VXLAN forwarding state routed owns: routes of protocol 233, and the permanent
//! neighbours and FDB entries on `vxlan.routed`, diffed against `calc::desired_vxlan` and
//! applied (neighbours and FDB first, then routes). Called by the tunnel manager (`tunnels`).
//!
//! ```text
//!  calc::desired_vxlan (pure) ──> apply_vxlan: read back proto-233 routes, neighbours, FDB
//!                                             ──> replace what is missing, delete what is ours
//!                                                 and no longer wanted
//! ```

use super::calc::VxlanDesired;
use crate::netlink::{Netlink, Route, RouteFilter, RouteProtocol};
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use tracing::debug;

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
