//! Golden tests: the capture scenario of `capture/capture.sh`, rendered in both dialects and
//! compared with the real daemons' raw replies. Only what differs between two runs of the same
//! scenario is masked: times of day, dates, timer values and the host name.

use crate::model::*;
use crate::render::respond;
use crate::Dialect;
use regex::Regex;
use std::net::{IpAddr, Ipv4Addr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn proto(name: &str, kind: ProtoKind, pref: u32, filters: (&str, &str)) -> Protocol {
    Protocol {
        name: name.into(),
        kind,
        state: ProtoState::Up,
        since: Timestamp(1_796_161_411_182),
        preference: pref,
        input_filter: filters.0.into(),
        output_filter: filters.1.into(),
        routes: RouteCounts::default(),
        stats: ChangeStats::default(),
    }
}

fn all_caps() -> Capabilities {
    Capabilities {
        ipv4_unicast: true,
        route_refresh: true,
        graceful_restart: true,
        as4: true,
        enhanced_refresh: true,
        long_lived_graceful_restart: true,
    }
}

fn bgp(state: BgpState, neighbor: &str, asn: u32) -> BgpInfo {
    BgpInfo {
        state,
        last_error: None,
        neighbor_address: ip(neighbor),
        neighbor_as: asn,
        local_as: 64512,
        neighbor_id: None,
        local_caps: all_caps(),
        neighbor_caps: all_caps(),
        internal: asn == 64512,
        multihop: false,
        source_address: None,
        hold_timer: None,
        keepalive_timer: None,
        connect_delay: None,
        next_hop: None,
    }
}

fn protocols() -> Vec<Protocol> {
    let reject = ("ACCEPT", "REJECT");
    let mut kernel = proto("kernel1", ProtoKind::Kernel, 10, reject);
    kernel.stats.export_updates = [3, 0, 3, 0];
    let mut stat = proto("static1", ProtoKind::Static, 200, reject);
    stat.routes = RouteCounts {
        imported: 1,
        exported: 0,
        preferred: 1,
    };
    stat.stats.import_updates = [1, 0, 0, 0, 1];
    let mut mesh_bgp = bgp(BgpState::Established, "10.0.0.2", 64512);
    mesh_bgp.neighbor_id = Some(Ipv4Addr::new(10, 0, 0, 2));
    mesh_bgp.source_address = Some(ip("10.0.0.1"));
    mesh_bgp.hold_timer = Some(Timer {
        remaining_ms: 186_782,
        period_s: 240,
    });
    mesh_bgp.keepalive_timer = Some(Timer {
        remaining_ms: 59_532,
        period_s: 80,
    });
    mesh_bgp.next_hop = Some(ip("10.0.0.1"));
    let mut mesh = proto(
        "Mesh_10_0_0_2",
        ProtoKind::Bgp(Box::new(mesh_bgp)),
        100,
        ("ACCEPT", "ACCEPT"),
    );
    mesh.routes = RouteCounts {
        imported: 1,
        exported: 1,
        preferred: 1,
    };
    mesh.stats.import_updates = [1, 0, 0, 0, 1];
    mesh.stats.export_updates = [2, 1, 0, 1];
    let mut global_bgp = bgp(BgpState::Active, "10.0.0.254", 64513);
    global_bgp.last_error = Some("Socket: Connection refused".into());
    global_bgp.connect_delay = Some(Timer {
        remaining_ms: 3_225,
        period_s: 5,
    });
    let mut global = proto(
        "Global_10_0_0_254",
        ProtoKind::Bgp(Box::new(global_bgp)),
        100,
        ("ACCEPT", "ACCEPT"),
    );
    global.state = ProtoState::Start;
    vec![
        proto("device1", ProtoKind::Device, 240, reject),
        kernel,
        stat,
        proto("bfd1", ProtoKind::Bfd, 0, reject),
        mesh,
        global,
    ]
}

/// The scenario; routes in the order each daemon printed them (BIRD 1.6 walks its hash).
fn snapshot(dialect: Dialect) -> Snapshot {
    let t = Timestamp(1_796_161_415_763);
    let blackhole = Route {
        prefix: ip("10.244.1.0"),
        prefix_len: 26,
        dest: RouteDest::Blackhole,
        protocol: "static1".into(),
        since: t,
        from: None,
        primary: true,
        preference: 200,
        bgp: None,
    };
    let learned = Route {
        prefix: ip("10.244.2.0"),
        prefix_len: 26,
        dest: RouteDest::Via {
            gateway: ip("10.0.0.2"),
            interface: "capa".into(),
        },
        protocol: "Mesh_10_0_0_2".into(),
        since: t,
        from: Some(ip("10.0.0.2")),
        primary: true,
        preference: 100,
        bgp: Some(BgpAttrs {
            origin: 0,
            as_path: vec![],
            next_hop: ip("10.0.0.2"),
            local_pref: Some(100),
        }),
    };
    let routes = match dialect {
        Dialect::Bird1 => vec![learned, blackhole],
        Dialect::Bird2 => vec![blackhole, learned],
    };
    Snapshot {
        status: Status {
            router_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
            hostname: "vm".into(),
            now: Timestamp(t.0 + 5000),
            started: Timestamp(1_796_161_411_182),
            reconfigured: Timestamp(1_796_161_411_182),
            graceful_restart_recovery: false,
        },
        protocols: protocols(),
        routes,
        bfd: vec![BfdSession {
            protocol: "bfd1".into(),
            address: ip("10.0.0.2"),
            interface: Some("capa".into()),
            state: "Up".into(),
            since: t,
            interval_ms: 100,
            timeout_ms: 500,
        }],
    }
}

/// Masks what changes between runs, keeping widths where BIRD pads.
fn mask(text: &str) -> String {
    let time = Regex::new(r"\d{2}:\d{2}:\d{2}(\.\d{3})?|\d{4}-\d{2}-\d{2}").unwrap();
    let timer = Regex::new(r"(timer|delay):( +)\d+(\.\d{3})?/").unwrap();
    let host = Regex::new(r"Hostname is .*").unwrap();
    let text = time.replace_all(text, |c: &regex::Captures| {
        c[0].chars()
            .map(|ch| if ch.is_ascii_digit() { 'N' } else { ch })
            .collect::<String>()
    });
    let text = timer.replace_all(&text, "$1:$2N/");
    host.replace_all(&text, "Hostname is H").into_owned()
}

const COMMANDS: &[(&str, &str)] = &[
    ("show_status", "show status"),
    ("show_protocols", "show protocols"),
    ("show_protocols_all", "show protocols all"),
    (
        "show_protocols_all_mesh",
        "show protocols all Mesh_10_0_0_2",
    ),
    ("show_protocols_all_nosuch", "show protocols all Nosuch_1"),
    ("show_route", "show route"),
    ("show_route_all", "show route all"),
    ("show_route_for", "show route for 10.244.2.1"),
    ("show_route_for_missing", "show route for 192.0.2.1"),
    ("show_route_protocol", "show route protocol Mesh_10_0_0_2"),
    ("show_route_count", "show route count"),
    ("show_bfd_sessions", "show bfd sessions"),
    ("syntax_error", "show frobnicate"),
];

fn check_dialect(dialect: Dialect, dir: &str) {
    let snap = snapshot(dialect);
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    for (file, command) in COMMANDS {
        let path = format!("{base}/{dir}/{file}.txt");
        let golden = std::fs::read_to_string(&path).unwrap();
        let ours = respond(dialect, command, &snap).encode();
        assert_eq!(mask(&ours), mask(&golden), "{dir}/{file}.txt ({command})");
    }
    let welcome = std::fs::read_to_string(format!("{base}/{dir}/welcome.txt")).unwrap();
    assert_eq!(
        welcome,
        crate::format_reply_line(1, false, &format!("BIRD {} ready.", dialect.version()))
    );
}

#[test]
fn bird2_renderers_match_the_bird_2_0_12_captures() {
    check_dialect(Dialect::Bird2, "bird2");
}

#[test]
fn bird1_renderers_match_the_bird_1_6_8_captures() {
    check_dialect(Dialect::Bird1, "bird1");
}

#[test]
fn graceful_restart_recovery_comes_before_the_status_line() {
    let mut snap = snapshot(Dialect::Bird1);
    snap.status.graceful_restart_recovery = true;
    let text = respond(Dialect::Bird1, "show status", &snap).encode();
    assert!(text
        .ends_with("0024-Graceful restart recovery in progress\n0013 Daemon is up and running\n"));
}

#[test]
fn every_reply_ends_with_a_final_code() {
    let final_line = Regex::new(r"(?m)\A(?:.*\n)*[089]\d{3} .*\n\z").unwrap();
    for dialect in [Dialect::Bird1, Dialect::Bird2] {
        for line in [
            "",
            "show",
            "bogus words here",
            "show route for ::1",
            "show bfd sessions x",
        ] {
            let text = respond(dialect, line, &snapshot(dialect)).encode();
            assert!(final_line.is_match(&text), "{line:?} → {text:?}");
        }
        let empty = respond(dialect, "show bfd sessions", &Snapshot::default()).encode();
        assert!(final_line.is_match(&empty), "{empty:?}");
    }
}
