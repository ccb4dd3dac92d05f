//! Prometheus metrics (`routed --metrics-listen ADDR:PORT`, `GET /metrics`), encoded by the
//! `prometheus-client` crate (Prometheus text format 0.0.4).
//!
//! ```text
//!  in-process events ──> Metrics (global, long-lived): reconcile pass durations (agent::
//!    reconciler), CNI requests (agent::server), datastore requests (MeteredStore)
//!  scrape ──> http ──> gather(state): speaker.status() (sessions, messages, prefixes), Loc-RIB
//!             size, reconciler counters, cached kernel route counts and IPAM usage (30 s)
//!             ──> one Registry per scrape (long-lived families registered by clone) ──> text
//! ```
//! Values that live elsewhere (speaker counters, reconciler failures) are read at scrape time,
//! not copied on every change. Label sets are bounded: per peer, per message type, per
//! reconciler, per CNI command; never per prefix.

pub mod datastore;
pub mod http;

use crate::agent::AgentState;
use crate::bgp::speaker::{MessageCounts, PeerStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcilerLabels {
    pub reconciler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniLabels {
    pub command: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatastoreLabels {
    pub op: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    peer_asn: String,
    peer_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerOnly {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    peer: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabels {
    peer: String,
    afi_safi: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AfiSafi {
    afi_safi: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics fed by events, for the life of the process.
pub struct Metrics {
    pub reconcile_duration: Family<ReconcilerLabels, Histogram>,
    pub cni_requests: Family<CniLabels, Counter>,
    pub cni_duration: Family<CommandLabels, Histogram>,
    pub datastore_requests: Family<DatastoreLabels, Counter>,
}

/// The process's metrics (created on first use; cheap to feed when nobody scrapes).
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        reconcile_duration: Family::new_with_constructor(duration_histogram),
        cni_requests: Family::default(),
        cni_duration: Family::new_with_constructor(duration_histogram),
        datastore_requests: Family::default(),
    })
}

impl Metrics {
    /// One reconcile pass of `reconciler` took `elapsed`.
    pub fn observe_reconcile(&self, reconciler: &str, elapsed: Duration) {
        let labels = ReconcilerLabels {
            reconciler: reconciler.to_string(),
        };
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A CNI request (`ADD`, `DEL`, `GC`) answered with HTTP `status` after `elapsed`.
    pub fn observe_cni(&self, command: &str, status: u16, elapsed: Duration) {
        let result = if status == 200 { "success" } else { "error" };
        let labels = CniLabels {
            command: command.to_string(),
            result: result.to_string(),
        };
        self.cni_requests.get_or_create(&labels).inc();
        let labels = CommandLabels {
            command: command.to_string(),
        };
        self.cni_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// The CNI command a local-API request serves, if it is one (routed-cni's calls).
pub fn cni_command(method: &str, path: &str) -> Option<&'static str> {
    match (method, path.split('?').next().unwrap_or_default()) {
        ("POST", "/v1/ipam/allocate") => Some("ADD"),
        ("POST", "/v1/ipam/release") => Some("DEL"),
        ("POST", "/v1/ipam/gc") => Some("GC"),
        _ => None,
    }
}

/// Values that cost a kernel dump or a datastore read, refreshed at most every 30 s.
#[derive(Debug, Clone, Default)]
pub struct Slow {
    /// (class, routes of ours in the kernel).
    pub kernel_routes: Vec<(&'static str, u64)>,
    pub ipam_allocated: u64,
    pub ipam_capacity: u64,
}

/// What a scrape reads from the agent (gathered, or built by a test).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub peers: Vec<PeerStatus>,
    pub rib_routes: u64,
    pub reconcilers: Vec<(&'static str, u64)>,
    pub slow: Slow,
}

fn peer_type(description: &str) -> &'static str {
    match crate::agent::calc::PeerKind::from_label(description) {
        Some(crate::agent::calc::PeerKind::Mesh) => "mesh",
        Some(crate::agent::calc::PeerKind::Global) => "global",
        Some(crate::agent::calc::PeerKind::NodeSpecific) => "node",
        None => "other",
    }
}

fn state_number(state: crate::bgp::fsm::State) -> i64 {
    use crate::bgp::fsm::State;
    match state {
        State::Idle => 1,
        State::Connect => 2,
        State::Active => 3,
        State::OpenSent => 4,
        State::OpenConfirm => 5,
        State::Established => 6,
    }
}

fn message_types(c: &MessageCounts) -> [(&'static str, u64); 5] {
    [
        ("open", c.open),
        ("update", c.update),
        ("notification", c.notification),
        ("keepalive", c.keepalive),
        ("route_refresh", c.route_refresh),
    ]
}

fn afi_safi(p: &PeerStatus) -> &'static str {
    if p.address.is_ipv4() {
        "ipv4_unicast"
    } else {
        "ipv6_unicast"
    }
}

fn register_bgp(registry: &mut Registry, peers: &[PeerStatus]) {
    let up = Family::<PeerLabels, Gauge>::default();
    let state = Family::<PeerLabels, Gauge>::default();
    let transitions = Family::<PeerOnly, Counter>::default();
    let received = Family::<MessageLabels, Counter>::default();
    let sent = Family::<MessageLabels, Counter>::default();
    let prefixes_rx = Family::<FamilyLabels, Gauge>::default();
    let prefixes_tx = Family::<FamilyLabels, Gauge>::default();
    for p in peers {
        let peer = p.address.to_string();
        let labels = PeerLabels {
            peer: peer.clone(),
            peer_asn: p.remote_as.to_string(),
            peer_type: peer_type(&p.description).to_string(),
        };
        let established = p.state == crate::bgp::fsm::State::Established;
        up.get_or_create(&labels).set(i64::from(established));
        state.get_or_create(&labels).set(state_number(p.state));
        transitions
            .get_or_create(&PeerOnly { peer: peer.clone() })
            .inc_by(p.established_transitions);
        for (family, counts) in [(&received, &p.messages_received), (&sent, &p.messages_sent)] {
            for (kind, n) in message_types(counts) {
                let labels = MessageLabels {
                    peer: peer.clone(),
                    r#type: kind.to_string(),
                };
                family.get_or_create(&labels).inc_by(n);
            }
        }
        let labels = FamilyLabels {
            peer,
            afi_safi: afi_safi(p).to_string(),
        };
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        prefixes_rx
            .get_or_create(&labels)
            .set(count(p.prefixes_received));
        prefixes_tx
            .get_or_create(&labels)
            .set(count(p.prefixes_advertised));
    }
    registry.register(
        "routed_bgp_session_up",
        "1 when the BGP session is Established",
        up,
    );
    registry.register(
        "routed_bgp_session_state",
        "BGP FSM state: 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 Established",
        state,
    );
    registry.register(
        "routed_bgp_session_established_transitions",
        "Times the session reached Established",
        transitions,
    );
    registry.register(
        "routed_bgp_messages_received",
        "BGP messages received, by type",
        received,
    );
    registry.register(
        "routed_bgp_messages_sent",
        "BGP messages sent, by type",
        sent,
    );
    registry.register(
        "routed_bgp_prefixes_received",
        "Prefixes in the peer's Adj-RIB-In",
        prefixes_rx,
    );
    registry.register(
        "routed_bgp_prefixes_advertised",
        "Prefixes advertised to the peer",
        prefixes_tx,
    );
}

fn gauge_of(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// The registry of one scrape (pure but for the global families it registers).
pub fn registry_of(inputs: &Inputs) -> Registry {
    let mut registry = Registry::default();
    let build = Family::<VersionLabels, Gauge>::default();
    build
        .get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
    registry.register("routed_build_info", "routed's version (always 1)", build);
    register_bgp(&mut registry, &inputs.peers);
    let rib = Family::<AfiSafi, Gauge>::default();
    rib.get_or_create(&AfiSafi {
        afi_safi: "ipv4_unicast".into(),
    })
    .set(i64::try_from(inputs.rib_routes).unwrap_or(i64::MAX));
    registry.register("routed_rib_routes", "Best routes in the Loc-RIB", rib);
    let kernel = Family::<ClassLabels, Gauge>::default();
    for (class, n) in &inputs.slow.kernel_routes {
        kernel
            .get_or_create(&ClassLabels {
                class: class.to_string(),
            })
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    registry.register(
        "routed_kernel_routes",
        "Routes of ours in the kernel, by class (refreshed every 30 s)",
        kernel,
    );
    let errors = Family::<ReconcilerLabels, Counter>::default();
    for (name, failures) in &inputs.reconcilers {
        errors
            .get_or_create(&ReconcilerLabels {
                reconciler: name.to_string(),
            })
            .inc_by(*failures);
    }
    registry.register(
        "routed_reconcile_errors",
        "Reconcile passes that failed",
        errors,
    );
    registry.register(
        "routed_ipam_addresses_allocated",
        "Addresses allocated in this node's blocks",
        gauge_of(inputs.slow.ipam_allocated),
    );
    registry.register(
        "routed_ipam_addresses_capacity",
        "Addresses in this node's blocks",
        gauge_of(inputs.slow.ipam_capacity),
    );
    let m = global();
    registry.register(
        "routed_reconcile_duration_seconds",
        "Duration of reconcile passes' apply phase",
        m.reconcile_duration.clone(),
    );
    registry.register(
        "routed_cni_requests",
        "CNI requests served",
        m.cni_requests.clone(),
    );
    registry.register(
        "routed_cni_request_duration_seconds",
        "Duration of CNI requests",
        m.cni_duration.clone(),
    );
    registry.register(
        "routed_datastore_requests",
        "Datastore round trips, by operation and result",
        m.datastore_requests.clone(),
    );
    registry
}

/// Encodes a registry in the Prometheus text format 0.0.4 (what every scraper and
/// `promtool check metrics` read; its counter families carry their `_total` names).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// The cached slow values, with when they were read.
#[derive(Default)]
pub struct SlowCache {
    value: Mutex<Option<(Instant, Slow)>>,
}

const SLOW_EVERY: Duration = Duration::from_secs(30);

async fn read_slow(state: &AgentState) -> Slow {
    use crate::netlink::{RouteFilter, RouteProtocol as P};
    let mut slow = Slow::default();
    if let Ok(netlink) = crate::netlink::KernelNetlink::new().await {
        for (class, proto) in [
            ("workload", P::WORKLOAD),
            ("blackhole", P::BLACKHOLE),
            ("bgp", P::BGP),
            ("tunnel", P::TUNNEL),
        ] {
            let count = netlink
                .scan_routes(RouteFilter::protocol(proto), 0u64, |n, _| *n += 1)
                .await;
            if let Ok(n) = count {
                slow.kernel_routes.push((class, n));
            }
        }
    }
    if let Ok(blocks) = state.ipam.show(Some(&state.node_name)).await {
        slow.ipam_allocated = blocks.iter().map(|b| b.used as u64).sum();
        slow.ipam_capacity = blocks.iter().map(|b| u64::from(b.capacity)).sum();
    }
    slow
}

/// Gathers a scrape's inputs from the running agent.
pub async fn gather(state: &Arc<AgentState>, cache: &SlowCache) -> Inputs {
    let mut inputs = Inputs::default();
    if let Some(speaker) = state.speaker.get() {
        inputs.peers = speaker.status().await.unwrap_or_default();
        inputs.rib_routes = speaker.rib().read().best_len() as u64;
    }
    inputs.reconcilers = state
        .reconcilers()
        .into_iter()
        .map(|(name, s)| (name, s.failures))
        .collect();
    let cached = cache
        .value
        .lock()
        .ok()
        .and_then(|v| v.clone())
        .filter(|(at, _)| at.elapsed() < SLOW_EVERY);
    inputs.slow = match cached {
        Some((_, slow)) => slow,
        None => {
            let slow = read_slow(state).await;
            if let Ok(mut v) = cache.value.lock() {
                *v = Some((Instant::now(), slow.clone()));
            }
            slow
        }
    };
    inputs
}

#[cfg(test)]
mod tests;
