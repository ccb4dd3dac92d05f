//! `show protocols [all] [NAME]` in both dialects.

use crate::model::{BgpInfo, BgpState, Capabilities, ChangeStats, ProtoKind, Protocol, Snapshot};
use crate::reply::Reply;
use crate::time;
use crate::Dialect;

pub(super) fn show(dialect: Dialect, snapshot: &Snapshot, all: bool, name: Option<&str>) -> Reply {
    let mut reply = Reply::new();
    reply.push(2002, header(dialect));
    let now = snapshot.status.now;
    for p in &snapshot.protocols {
        if name.is_some_and(|n| n != p.name) {
            continue;
        }
        reply.push(1002, row(dialect, p, now));
        if all {
            let details = match dialect {
                Dialect::Bird1 => details_bird1(p, dialect),
                Dialect::Bird2 => details_bird2(p, dialect),
            };
            for line in details {
                reply.push(1006, line);
            }
        }
    }
    reply.push(0, "");
    reply
}

fn header(dialect: Dialect) -> String {
    let h = ["name", "proto", "table", "state", "since", "info"];
    match dialect {
        Dialect::Bird1 => format_row(dialect, h),
        Dialect::Bird2 => format_row(
            dialect,
            ["Name", "Proto", "Table", "State", "Since", "Info"],
        ),
    }
}

fn format_row(dialect: Dialect, c: [&str; 6]) -> String {
    match dialect {
        Dialect::Bird1 => format!(
            "{:<8} {:<8} {:<8} {:<5}  {:<10}  {}",
            c[0], c[1], c[2], c[3], c[4], c[5]
        ),
        Dialect::Bird2 => format!(
            "{:<10} {:<10} {:<10} {:<6} {:<12}  {}",
            c[0], c[1], c[2], c[3], c[4], c[5]
        ),
    }
}

fn table(dialect: Dialect, kind: &ProtoKind) -> &'static str {
    match (dialect, kind) {
        (Dialect::Bird1, _) => "master",
        (Dialect::Bird2, ProtoKind::Kernel | ProtoKind::Static) => "master4",
        (Dialect::Bird2, _) => "---",
    }
}

/// The info column: for BGP the state padded to 14, then the last error.
fn info(p: &Protocol) -> String {
    match &p.kind {
        ProtoKind::Bgp(bgp) => {
            let error = match (&bgp.last_error, bgp.state) {
                (Some(e), s) if s != BgpState::Established => e.as_str(),
                _ => "",
            };
            format!("{:<14}{error}", bgp.state.as_str())
        }
        _ => String::new(),
    }
}

fn row(dialect: Dialect, p: &Protocol, now: crate::model::Timestamp) -> String {
    let since = time::since(p.since, now, dialect);
    let info = info(p);
    format_row(
        dialect,
        [
            &p.name,
            p.kind.label(),
            table(dialect, &p.kind),
            p.state.as_str(),
            &since,
            &info,
        ],
    )
}

/// Route counts and the change statistics, each line prefixed by `indent`.
fn route_stats(p: &Protocol, indent: &str) -> Vec<String> {
    let r = &p.routes;
    let ChangeStats {
        import_updates: iu,
        import_withdraws: iw,
        export_updates: eu,
        export_withdraws: ew,
    } = p.stats;
    vec![
        format!(
            "{indent}Routes:         {} imported, {} exported, {} preferred",
            r.imported, r.exported, r.preferred
        ),
        format!(
            "{indent}Route change stats:     received   rejected   filtered    ignored   accepted"
        ),
        format!(
            "{indent}  Import updates:     {:>10} {:>10} {:>10} {:>10} {:>10}",
            iu[0], iu[1], iu[2], iu[3], iu[4]
        ),
        format!(
            "{indent}  Import withdraws:   {:>10} {:>10}        --- {:>10} {:>10}",
            iw[0], iw[1], iw[2], iw[3]
        ),
        format!(
            "{indent}  Export updates:     {:>10} {:>10} {:>10}        --- {:>10}",
            eu[0], eu[1], eu[2], eu[3]
        ),
        format!(
            "{indent}  Export withdraws:   {:>10}        ---        ---        --- {:>10}",
            ew[0], ew[1]
        ),
    ]
}

fn filters(p: &Protocol, indent: &str) -> Vec<String> {
    vec![
        format!("{indent}Preference:     {}", p.preference),
        format!("{indent}Input filter:   {}", p.input_filter),
        format!("{indent}Output filter:  {}", p.output_filter),
    ]
}

fn session(bgp: &BgpInfo) -> String {
    let kind = if bgp.internal { "internal" } else { "external" };
    let multihop = if bgp.multihop { " multihop" } else { "" };
    let as4 = if bgp.local_caps.as4 && bgp.neighbor_caps.as4 {
        " AS4"
    } else {
        ""
    };
    format!("{kind}{multihop}{as4}")
}

/// The BGP block (both dialects; BIRD 2 adds the local AS and lists capabilities).
fn bgp_block(bgp: &BgpInfo, dialect: Dialect) -> Vec<String> {
    let mut out = vec![
        format!("  BGP state:          {}", bgp.state.as_str()),
        format!("    Neighbor address: {}", bgp.neighbor_address),
        format!("    Neighbor AS:      {}", bgp.neighbor_as),
    ];
    if dialect == Dialect::Bird2 {
        out.push(format!("    Local AS:         {}", bgp.local_as));
    }
    let timer = |t: &crate::model::Timer| time::timer(t.remaining_ms, t.period_s, dialect);
    if bgp.state == BgpState::Established {
        if let Some(id) = bgp.neighbor_id {
            out.push(format!("    Neighbor ID:      {id}"));
        }
        match dialect {
            Dialect::Bird1 => out.push(format!(
                "    Neighbor caps:   {}",
                caps_bird1(&bgp.neighbor_caps)
            )),
            Dialect::Bird2 => {
                out.push("    Local capabilities".into());
                out.extend(caps_bird2(&bgp.local_caps));
                out.push("    Neighbor capabilities".into());
                out.extend(caps_bird2(&bgp.neighbor_caps));
            }
        }
        out.push(format!("    Session:          {}", session(bgp)));
        if let Some(source) = bgp.source_address {
            out.push(format!("    Source address:   {source}"));
        }
        if let Some(t) = &bgp.hold_timer {
            out.push(format!("    Hold timer:       {}", timer(t)));
        }
        if let Some(t) = &bgp.keepalive_timer {
            out.push(format!("    Keepalive timer:  {}", timer(t)));
        }
    } else {
        if let Some(t) = &bgp.connect_delay {
            out.push(format!("    Connect delay:    {}", timer(t)));
        }
        if let Some(e) = &bgp.last_error {
            out.push(format!("    Last error:       {e}"));
        }
    }
    out
}

fn caps_bird1(c: &Capabilities) -> String {
    let words = [
        (c.route_refresh, " refresh"),
        (c.enhanced_refresh, " enhanced-refresh"),
        (c.graceful_restart, " restart-aware"),
        (c.long_lived_graceful_restart, " llgr-aware"),
        (c.as4, " AS4"),
    ];
    words
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect()
}

fn caps_bird2(c: &Capabilities) -> Vec<String> {
    let mut out = Vec::new();
    if c.ipv4_unicast {
        out.push("      Multiprotocol".to_string());
        out.push("        AF announced: ipv4".to_string());
    }
    let rest = [
        (c.route_refresh, "Route refresh"),
        (c.graceful_restart, "Graceful restart"),
        (c.as4, "4-octet AS numbers"),
        (c.enhanced_refresh, "Enhanced refresh"),
        (c.long_lived_graceful_restart, "Long-lived graceful restart"),
    ];
    out.extend(
        rest.iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| format!("      {w}")),
    );
    out
}

/// BIRD 1.6: filters and routes first, then the BGP block, then a blank line.
fn details_bird1(p: &Protocol, dialect: Dialect) -> Vec<String> {
    let mut out = filters(p, "  ");
    out.extend(route_stats(p, "  "));
    if let ProtoKind::Bgp(bgp) = &p.kind {
        out.extend(bgp_block(bgp, dialect));
    }
    out.push(String::new());
    out
}

/// BIRD 2: the BGP block first, then the `Channel ipv4` block, then a blank line.
fn details_bird2(p: &Protocol, dialect: Dialect) -> Vec<String> {
    let mut out = Vec::new();
    let channel_up = match &p.kind {
        ProtoKind::Device | ProtoKind::Bfd => {
            out.push(String::new());
            return out;
        }
        ProtoKind::Bgp(bgp) => {
            out.extend(bgp_block(bgp, dialect));
            bgp.state == BgpState::Established
        }
        ProtoKind::Kernel | ProtoKind::Static => p.state == crate::model::ProtoState::Up,
    };
    out.push("  Channel ipv4".into());
    let state = if channel_up { "UP" } else { "DOWN" };
    out.push(format!("    State:          {state}"));
    out.push("    Table:          master4".into());
    out.extend(filters(p, "    "));
    if channel_up {
        out.extend(route_stats(p, "    "));
        if let ProtoKind::Bgp(bgp) = &p.kind {
            if let Some(nh) = bgp.next_hop {
                out.push(format!("    BGP Next hop:   {nh}"));
            }
        }
    }
    out.push(String::new());
    out
}
