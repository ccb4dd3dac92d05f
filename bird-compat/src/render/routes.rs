//! `show route [for X] [protocol P] [all]`, `show route count` and `show bfd sessions`.

use crate::command::RouteQuery;
use crate::model::{Route, RouteDest, Snapshot, Timestamp};
use crate::reply::Reply;
use crate::time;
use crate::Dialect;
use std::net::IpAddr;

fn contains(route: &Route, addr: IpAddr) -> bool {
    fn bits(a: IpAddr) -> (u128, u8) {
        match a {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    }
    let ((net, width), (a, width_a)) = (bits(route.prefix), bits(addr));
    if width != width_a || route.prefix_len > width {
        return false;
    }
    let mask = if route.prefix_len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(route.prefix_len))
    };
    net & mask == a & mask
}

/// The routes a query selects: `for` keeps the network of the longest prefix holding the
/// address (None: there is none), `protocol` keeps that protocol's routes.
fn select<'a>(snapshot: &'a Snapshot, query: &RouteQuery) -> Option<Vec<&'a Route>> {
    let mut routes: Vec<&Route> = snapshot.routes.iter().collect();
    if let Some((addr, len)) = query.for_addr {
        let best = routes
            .iter()
            .filter(|r| contains(r, addr) && len.is_none_or(|l| r.prefix_len <= l))
            .map(|r| r.prefix_len)
            .max()?;
        routes.retain(|r| r.prefix_len == best && contains(r, addr));
    }
    if let Some(protocol) = &query.protocol {
        routes.retain(|r| &r.protocol == protocol);
    }
    Some(routes)
}

pub(super) fn show(dialect: Dialect, snapshot: &Snapshot, query: &RouteQuery) -> Reply {
    let Some(routes) = select(snapshot, query) else {
        return match dialect {
            Dialect::Bird1 => Reply::single(8001, "Network not in table"),
            Dialect::Bird2 => Reply::single(8001, "Network not found"),
        };
    };
    let mut reply = Reply::new();
    if dialect == Dialect::Bird2 && !routes.is_empty() {
        reply.push(1007, "Table master4:");
    }
    let now = snapshot.status.now;
    for route in routes {
        route_lines(&mut reply, dialect, route, now, query.all);
    }
    reply.push(0, "");
    reply
}

fn origin_letter(origin: u8) -> char {
    match origin {
        0 => 'i',
        1 => 'e',
        _ => '?',
    }
}

fn route_lines(reply: &mut Reply, dialect: Dialect, r: &Route, now: Timestamp, all: bool) {
    let net = format!("{}/{}", r.prefix, r.prefix_len);
    let dest = match (&r.dest, dialect) {
        (RouteDest::Blackhole, _) => "blackhole".to_string(),
        (RouteDest::Unreachable, _) => "unreachable".to_string(),
        (RouteDest::Via { .. }, Dialect::Bird2) => "unicast".to_string(),
        (RouteDest::Via { gateway, interface }, Dialect::Bird1) => {
            format!("via {gateway} on {interface}")
        }
    };
    let gateway = match &r.dest {
        RouteDest::Via { gateway, .. } => Some(*gateway),
        _ => None,
    };
    let from = match r.from {
        Some(from) if Some(from) != gateway => format!(" from {from}"),
        _ => String::new(),
    };
    let since = time::since(r.since, now, dialect);
    let star = if r.primary { " * " } else { "   " };
    let bgp = match &r.bgp {
        Some(a) => match a.as_path.last() {
            Some(asn) => format!(" [AS{asn}{}]", origin_letter(a.origin)),
            None => format!(" [{}]", origin_letter(a.origin)),
        },
        None => String::new(),
    };
    let proto_info = format!(
        "{dest} [{} {since}{from}]{star}({}){bgp}",
        r.protocol, r.preference
    );
    let line = match dialect {
        Dialect::Bird1 => format!("{net:<18} {proto_info}"),
        Dialect::Bird2 => format!("{net:<20} {proto_info}"),
    };
    reply.push(1007, line);
    if let (Dialect::Bird2, RouteDest::Via { gateway, interface }) = (dialect, &r.dest) {
        reply.push(1007, format!("\tvia {gateway} on {interface}"));
    }
    if all {
        attributes(reply, dialect, r);
    }
}

fn attributes(reply: &mut Reply, dialect: Dialect, r: &Route) {
    let source = if r.bgp.is_some() { "BGP" } else { "static" };
    let cast = match dialect {
        Dialect::Bird1 => " unicast",
        Dialect::Bird2 => "",
    };
    reply.push(1008, format!("\tType: {source}{cast} univ"));
    if let Some(a) = &r.bgp {
        let origin = match a.origin {
            0 => "IGP",
            1 => "EGP",
            _ => "Incomplete",
        };
        reply.push(1012, format!("\tBGP.origin: {origin}"));
        let path: Vec<String> = a.as_path.iter().map(u32::to_string).collect();
        reply.push(1012, format!("\tBGP.as_path: {}", path.join(" ")));
        reply.push(1012, format!("\tBGP.next_hop: {}", a.next_hop));
        if let Some(lp) = a.local_pref {
            reply.push(1012, format!("\tBGP.local_pref: {lp}"));
        }
    }
}

pub(super) fn count(dialect: Dialect, snapshot: &Snapshot) -> Reply {
    let routes = snapshot.routes.len();
    let mut networks: Vec<(IpAddr, u8)> = snapshot
        .routes
        .iter()
        .map(|r| (r.prefix, r.prefix_len))
        .collect();
    networks.sort();
    networks.dedup();
    let nets = networks.len();
    match dialect {
        Dialect::Bird1 => Reply::single(
            14,
            format!("{routes} of {routes} routes for {nets} networks"),
        ),
        Dialect::Bird2 => {
            let mut reply = Reply::new();
            reply.push(
                1007,
                format!("{routes} of {routes} routes for {nets} networks in table master4"),
            );
            reply.push(1007, "0 of 0 routes for 0 networks in table master6");
            reply.push(
                14,
                format!("Total: {routes} of {routes} routes for {nets} networks in 2 tables"),
            );
            reply
        }
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

pub(super) fn bfd_sessions(dialect: Dialect, snapshot: &Snapshot, name: Option<&str>) -> Reply {
    if !super::has_bfd(snapshot) {
        return Reply::single(9001, "There is no BFD protocol running");
    }
    let mut reply = Reply::new();
    let header = match dialect {
        Dialect::Bird1 => {
            "IP address                Interface  State      Since       Interval  Timeout"
        }
        Dialect::Bird2 => {
            "IP address                Interface  State      Since         Interval  Timeout"
        }
    };
    let now = snapshot.status.now;
    let bfd_protocols = snapshot
        .protocols
        .iter()
        .filter(|p| matches!(p.kind, crate::model::ProtoKind::Bfd))
        .filter(|p| name.is_none_or(|n| n == p.name));
    for p in bfd_protocols {
        reply.push(1020, format!("{}:", p.name));
        reply.push(1020, header);
        for s in snapshot.bfd.iter().filter(|s| s.protocol == p.name) {
            let iface = s.interface.as_deref().unwrap_or("---");
            let since = time::since(s.since, now, dialect);
            let (interval, timeout) = (seconds(s.interval_ms), seconds(s.timeout_ms));
            let line = match dialect {
                Dialect::Bird1 => format!(
                    "{:<25} {:<10} {:<10} {:<10} {:>8} {:>8}",
                    s.address, iface, s.state, since, interval, timeout
                ),
                Dialect::Bird2 => format!(
                    "{:<25} {:<10} {:<10} {:<12} {:>8} {:>8}",
                    s.address, iface, s.state, since, interval, timeout
                ),
            };
            reply.push(1020, line);
        }
    }
    reply.push(0, "");
    reply
}
