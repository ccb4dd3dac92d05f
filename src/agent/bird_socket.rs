//! The BIRD-compatible control sockets (`--bird-socket`, `--bird1-socket`): routed's state as
//! BIRD's rows, served by `bird-compat` so birdc, calicoctl, calico-node and bird_exporter
//! read it unchanged.
//!
//! ```text
//!  client ─> bird_compat::server ─> AgentSource::snapshot ─> speaker.status(), Loc-RIB,
//!                                         │                   originated blocks, bfd_status()
//!                                         └─> rows_of (pure) ─> bird_compat::Snapshot ─> render
//! ```
//! Rows, as Calico's BIRD shows them: `device1` and `kernel1` (always up), `static1` (the
//! blocks this node originates, as blackholes), `bfd1` when BFD sessions exist, then one BGP
//! row per peer under the speaker's names (`Mesh_10_0_0_2`, `Node_...`, `Global_...`).
//! Route change statistics count prefixes (routed keeps no per-update history): updates
//! received/accepted are the prefixes received, exported the prefixes advertised.

use super::AgentState;
use crate::bgp::fsm::State;
use crate::bgp::rib::BestRoute;
use crate::bgp::speaker::PeerStatus;
use bird_compat::command::Command;
use bird_compat::model as bird;
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{error, info};

/// What the rows are made of (gathered from the running agent, or built by a test).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub router_id: Option<Ipv4Addr>,
    pub hostname: String,
    pub now_ms: u64,
    pub started_ms: u64,
    /// The node interface learned routes leave by.
    pub interface: String,
    pub next_hop: Option<IpAddr>,
    pub peers: Vec<PeerStatus>,
    pub originated: Vec<IpNetwork>,
    /// Learned best routes (empty unless the command shows routes).
    pub learned: Vec<BestRoute>,
    pub bfd: Vec<bird::BfdSession>,
}

/// The BFD sessions to show (`show bfd sessions`, a `bfd1` row, bird_exporter's BFD metrics):
/// the BFD driver's sessions as [`bird::BfdSession`] rows of protocol `bfd1`. BIRD's Interval
/// is the transmit interval in force, its Timeout the detection time.
pub fn bfd_rows(status: &crate::bfd::BfdStatus, interface: &str) -> Vec<bird::BfdSession> {
    status
        .sessions
        .iter()
        .map(|s| bird::BfdSession {
            protocol: "bfd1".into(),
            address: s.peer,
            interface: Some(interface.to_owned()),
            state: s.fsm.state.name().to_owned(),
            since: bird::Timestamp(s.since_unix_ms),
            interval_ms: s.fsm.tx_interval_us / 1000,
            timeout_ms: s.fsm.detection_time_us / 1000,
        })
        .collect()
}

fn bgp_state(state: State) -> bird::BgpState {
    match state {
        State::Idle => bird::BgpState::Idle,
        State::Connect => bird::BgpState::Connect,
        State::Active => bird::BgpState::Active,
        State::OpenSent => bird::BgpState::OpenSent,
        State::OpenConfirm => bird::BgpState::OpenConfirm,
        State::Established => bird::BgpState::Established,
    }
}

fn simple_row(
    name: &str,
    kind: bird::ProtoKind,
    since: bird::Timestamp,
    pref: u32,
) -> bird::Protocol {
    bird::Protocol {
        name: name.into(),
        kind,
        state: bird::ProtoState::Up,
        since,
        preference: pref,
        input_filter: "ACCEPT".into(),
        output_filter: "REJECT".into(),
        routes: bird::RouteCounts::default(),
        stats: bird::ChangeStats::default(),
    }
}

fn peer_row(p: &PeerStatus, next_hop: Option<IpAddr>) -> bird::Protocol {
    let established = p.state == State::Established;
    let session = p.session.as_ref().filter(|_| established);
    let ours = bird::Capabilities {
        ipv4_unicast: p.address.is_ipv4(),
        route_refresh: true,
        graceful_restart: true,
        as4: true,
        enhanced_refresh: false,
        long_lived_graceful_restart: false,
    };
    let theirs = bird::Capabilities {
        route_refresh: session.is_some_and(|s| s.route_refresh),
        graceful_restart: session.is_some_and(|s| s.graceful_restart),
        ..ours
    };
    let info = bird::BgpInfo {
        state: bgp_state(p.state),
        last_error: (!established && !p.info.is_empty()).then(|| p.info.clone()),
        neighbor_address: p.address,
        neighbor_as: p.remote_as,
        local_as: p.local_as,
        neighbor_id: session.map(|s| s.router_id),
        local_caps: ours,
        neighbor_caps: theirs,
        internal: p.remote_as == p.local_as,
        multihop: false,
        source_address: session.map(|s| s.local_address),
        hold_timer: None,
        keepalive_timer: None,
        connect_delay: None,
        next_hop,
    };
    let (rx, tx) = (p.prefixes_received as u64, p.prefixes_advertised as u64);
    bird::Protocol {
        name: p.name.clone(),
        kind: bird::ProtoKind::Bgp(Box::new(info)),
        state: if established {
            bird::ProtoState::Up
        } else {
            bird::ProtoState::Start
        },
        since: bird::Timestamp::from_secs(p.since),
        preference: 100,
        input_filter: "ACCEPT".into(),
        output_filter: "ACCEPT".into(),
        routes: bird::RouteCounts {
            imported: rx,
            exported: tx,
            preferred: rx,
        },
        stats: bird::ChangeStats {
            import_updates: [rx, 0, 0, 0, rx],
            import_withdraws: [0; 4],
            export_updates: [tx, 0, 0, tx],
            export_withdraws: [0; 2],
        },
    }
}

fn static_route(prefix: &IpNetwork, since: bird::Timestamp) -> bird::Route {
    bird::Route {
        prefix: prefix.network(),
        prefix_len: prefix.prefix(),
        dest: bird::RouteDest::Blackhole,
        protocol: "static1".into(),
        since,
        from: None,
        primary: true,
        preference: 200,
        bgp: None,
    }
}

/// One row per next hop of a learned route; the first is the primary.
fn learned_routes(inputs: &Inputs, route: &BestRoute, out: &mut Vec<bird::Route>) {
    for (i, hop) in route.next_hops.iter().enumerate() {
        let peer = inputs.peers.iter().find(|p| p.address == *hop);
        let internal = peer.is_none_or(|p| p.remote_as == p.local_as);
        out.push(bird::Route {
            prefix: route.prefix.network(),
            prefix_len: route.prefix.prefix(),
            dest: bird::RouteDest::Via {
                gateway: *hop,
                interface: inputs.interface.clone(),
            },
            protocol: peer.map_or_else(|| "bgp".to_string(), |p| p.name.clone()),
            since: peer.map_or(bird::Timestamp(inputs.started_ms), |p| {
                bird::Timestamp::from_secs(p.since)
            }),
            from: Some(*hop),
            primary: i == 0,
            preference: 100,
            bgp: Some(bird::BgpAttrs {
                origin: 0,
                as_path: match peer {
                    Some(p) if !internal => vec![p.remote_as],
                    _ => vec![],
                },
                next_hop: *hop,
                local_pref: internal.then_some(100),
            }),
        });
    }
}

/// The BIRD view of `inputs` (pure).
pub fn rows_of(inputs: &Inputs) -> bird::Snapshot {
    let started = bird::Timestamp(inputs.started_ms);
    let n = inputs.originated.len() as u64;
    let mut kernel = simple_row("kernel1", bird::ProtoKind::Kernel, started, 10);
    kernel.stats.export_updates = [n, 0, n, 0];
    let mut stat = simple_row("static1", bird::ProtoKind::Static, started, 200);
    stat.routes = bird::RouteCounts {
        imported: n,
        exported: 0,
        preferred: n,
    };
    stat.stats.import_updates = [n, 0, 0, 0, n];
    let mut protocols = vec![
        simple_row("device1", bird::ProtoKind::Device, started, 240),
        kernel,
        stat,
    ];
    if !inputs.bfd.is_empty() {
        protocols.push(simple_row("bfd1", bird::ProtoKind::Bfd, started, 0));
    }
    protocols.extend(inputs.peers.iter().map(|p| peer_row(p, inputs.next_hop)));
    let mut routes: Vec<bird::Route> = inputs
        .originated
        .iter()
        .map(|p| static_route(p, started))
        .collect();
    for route in &inputs.learned {
        learned_routes(inputs, route, &mut routes);
    }
    bird::Snapshot {
        status: bird::Status {
            router_id: inputs.router_id,
            hostname: inputs.hostname.clone(),
            now: bird::Timestamp(inputs.now_ms),
            started,
            reconfigured: started,
            graceful_restart_recovery: false,
        },
        protocols,
        routes,
        bfd: inputs.bfd.clone(),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The agent as a `bird_compat` row source.
pub struct AgentSource {
    pub state: Arc<AgentState>,
}

impl AgentSource {
    async fn inputs(&self, command: &Command) -> Inputs {
        let state = &self.state;
        let address = state.node_address.map(|a| a.ip());
        let mut inputs = Inputs {
            router_id: match address {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            },
            hostname: state.node_name.clone(),
            now_ms: unix_ms(SystemTime::now()),
            started_ms: unix_ms(state.started),
            interface: state
                .detection
                .as_ref()
                .and_then(|d| d.interface.clone())
                .unwrap_or_default(),
            next_hop: address,
            ..Inputs::default()
        };
        if let Some(speaker) = state.speaker.get() {
            inputs.peers = speaker.status().await.unwrap_or_default();
            if let Ok(bfd) = speaker.bfd_status().await {
                inputs.bfd = bfd_rows(&bfd, &inputs.interface);
            }
            inputs.originated = speaker.rib().read().originated().iter().copied().collect();
            if matches!(command, Command::Route(_) | Command::RouteCount) {
                inputs.learned = speaker.best_routes();
            }
        }
        inputs
    }
}

impl bird_compat::server::Source for AgentSource {
    async fn snapshot(&self, command: &Command) -> bird::Snapshot {
        rows_of(&self.inputs(command).await)
    }
}

/// Binds and serves the sockets asked for; a socket that cannot be bound is an error of the
/// start-up (the operator asked for it).
pub fn start(
    state: &Arc<AgentState>,
    sockets: &[(PathBuf, bird_compat::Dialect)],
) -> anyhow::Result<()> {
    use anyhow::Context;
    for (path, dialect) in sockets {
        let listener = bird_compat::server::bind(path)
            .with_context(|| format!("cannot listen on the BIRD socket {}", path.display()))?;
        info!(socket = %path.display(), dialect = ?dialect, "BIRD-compatible socket listening");
        let source = Arc::new(AgentSource {
            state: state.clone(),
        });
        let (dialect, path) = (*dialect, path.clone());
        tokio::spawn(async move {
            if let Err(e) = bird_compat::server::serve(listener, dialect, source).await {
                error!(socket = %path.display(), error = %e, "BIRD-compatible socket stopped");
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bird_compat::{render::respond, Dialect};

    fn peer(name: &str, address: &str, state: State, remote_as: u32) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            address: address.parse().unwrap(),
            description: "node-to-node mesh".into(),
            state,
            since: 1_796_161_411,
            since_human: String::new(),
            info: if state == State::Established {
                "Established".into()
            } else {
                "Connection refused (os error 111)".into()
            },
            prefixes_received: 2,
            prefixes_advertised: 1,
            end_of_rib_received: true,
            remote_as,
            local_as: 64512,
            established_transitions: 1,
            messages_received: Default::default(),
            messages_sent: Default::default(),
            session: None,
            reflection: None,
            bfd: None,
            errors: Default::default(),
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            router_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
            hostname: "node-a".into(),
            now_ms: 1_796_161_420_000,
            started_ms: 1_796_161_400_000,
            interface: "eth0".into(),
            next_hop: Some("10.0.0.1".parse().unwrap()),
            peers: vec![
                peer("Mesh_10_0_0_2", "10.0.0.2", State::Established, 64512),
                peer("Global_10_0_0_254", "10.0.0.254", State::Active, 64513),
            ],
            originated: vec!["10.244.1.0/26".parse().unwrap()],
            learned: vec![BestRoute {
                prefix: "10.244.2.0/26".parse().unwrap(),
                next_hops: vec!["10.0.0.2".parse().unwrap()],
            }],
            bfd: vec![],
        }
    }

    #[test]
    fn calico_parsers_see_one_bgp_row_per_peer_in_the_1_6_dialect() {
        let text = respond(Dialect::Bird1, "show protocols", &rows_of(&inputs())).encode();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "2002-name     proto    table    state  since       info"
        );
        assert!(
            lines.contains(&" Mesh_10_0_0_2 BGP      master   up     21:43:31    Established   ")
        );
        assert!(lines.contains(&" Global_10_0_0_254 BGP      master   start  21:43:31    Active        Connection refused (os error 111)"));
        assert_eq!(lines.last(), Some(&"0000 "));
    }

    #[test]
    fn learned_routes_name_their_peer_and_originated_blocks_are_static_blackholes() {
        let text = respond(Dialect::Bird2, "show route", &rows_of(&inputs())).encode();
        assert!(text.contains(" 10.244.1.0/26        blackhole [static1 21:43:20.000] * (200)\n"));
        assert!(text.contains(" 10.244.2.0/26        unicast [Mesh_10_0_0_2 21:43:31.000] * (100) [i]\n \tvia 10.0.0.2 on eth0\n"));
        let count = respond(Dialect::Bird1, "show route count", &rows_of(&inputs())).encode();
        assert_eq!(count, "0014 2 of 2 routes for 2 networks\n");
    }

    #[test]
    fn no_bfd_row_until_bfd_sessions_exist() {
        let rows = rows_of(&inputs());
        assert!(!rows.protocols.iter().any(|p| p.name == "bfd1"));
        let mut with_bfd = inputs();
        with_bfd.bfd.push(bird::BfdSession {
            protocol: "bfd1".into(),
            address: "10.0.0.2".parse().unwrap(),
            interface: Some("eth0".into()),
            state: "Up".into(),
            since: bird::Timestamp(1_796_161_411_000),
            interval_ms: 300,
            timeout_ms: 900,
        });
        let text = respond(Dialect::Bird2, "show bfd sessions", &rows_of(&with_bfd)).encode();
        assert!(text.contains(
            "10.0.0.2                  eth0       Up         21:43:31.000    0.300    0.900"
        ));
    }

    #[test]
    fn bfd_rows_show_the_driver_sessions_with_interval_and_detection_time() {
        use crate::bfd::{fsm::FsmStatus, packet::Diagnostic, BfdStatus, Intervals, State as Bfd};
        use std::time::Duration;
        let session = crate::bfd::driver::SessionStatus {
            peer: "10.0.0.2".parse().unwrap(),
            local: None,
            source_port: 49152,
            configured: Intervals {
                min_tx: Duration::from_millis(300),
                min_rx: Duration::from_millis(300),
                multiplier: 3,
            },
            fsm: FsmStatus {
                state: Bfd::Up,
                remote_state: Bfd::Up,
                local_discriminator: 1,
                remote_discriminator: 2,
                diagnostic: Diagnostic::None,
                tx_interval_us: 300_000,
                detection_time_us: 900_000,
                remote_multiplier: 3,
                polling: false,
            },
            since_unix_ms: 1_796_161_411_000,
        };
        let status = BfdStatus {
            sessions: vec![session],
            ..BfdStatus::default()
        };
        let mut with_bfd = inputs();
        with_bfd.bfd = bfd_rows(&status, "eth0");
        let text = respond(Dialect::Bird2, "show bfd sessions", &rows_of(&with_bfd)).encode();
        assert!(text.contains(
            "10.0.0.2                  eth0       Up         21:43:31.000    0.300    0.900"
        ));
        assert!(rows_of(&with_bfd)
            .protocols
            .iter()
            .any(|p| p.name == "bfd1"));
    }
}
