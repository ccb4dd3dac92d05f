//! The node agent (`routed`): registers the node, follows the datastore, runs the BGP speaker
//! and the reconcilers that keep the kernel in line, and serves the local API.
//!
//! ```text
//!  routed-cni ──HTTP/unix──> server ──> Ipam ──Txn──> datastore
//!                               │
//!  start: detect address/MTU (node) ──> register Node (node) ──> forward acceptance ──> ready
//!
//!  datastore ──> follower ──> calc (pure) ──> speaker (peers, originated blocks)
//!                   │                  └────> reconciler driver: routes (routing), workloads,
//!                   │                         tunnels (tunnels, tunnel_devices, vxlan), nat
//!                   └── blocks, pools ──────────> (nat + forward)  ──> netlink ──> kernel
//! ```
//! Modules: `node` (address/MTU detection, the only writer of Node records), `follower` (the
//! one datastore reader), `calc` (pure desired state), `reconciler` (the shared driver and its
//! counters, [`AgentState::reconcilers`]), `routing` (speaker → kernel: planner and apply),
//! `nexthops` (kernel nexthop objects of learned routes), `repair` (route-deletion feeds),
//! `workloads` (pod /32s), `tunnels` + `tunnel_devices` + `vxlan` (encapsulation), `nat` +
//! `forward` (table inet routed), `server` (the local API, mapped to `api::v1`), `health`
//! (readiness).

pub mod bird_socket;
pub mod calc;
pub mod calc_rr;
pub mod follower;
pub mod follower_bench;
pub mod forward;
pub mod health;
pub mod nat;
pub mod nexthops;
pub mod node;
pub mod reconciler;
pub mod relevance;
pub mod repair;
pub mod repair_hold;
pub mod routing;
pub mod server;
pub mod status_publish;
pub mod tunnel_devices;
pub mod tunnels;
pub mod vxlan;
pub mod workloads;

use crate::datastore::{self, Datastore, DatastoreConfig};
use crate::ipam::Ipam;
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

/// What the agent needs to start (the `routed` command line).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub datastore: DatastoreConfig,
    /// The node address, or `None` to detect it.
    pub ip: Option<IpNetwork>,
    /// How to detect the address when `ip` is not given: `first-found`, `interface=REGEX`,
    /// `cidr=CIDR`.
    pub autodetect: String,
    pub socket: PathBuf,
    /// Pod MTU override; detected from the node interface when `None`.
    pub mtu: Option<u32>,
    /// Open the FORWARD path for pod traffic (nftables).
    pub manage_forward: bool,
    /// Run the BGP speaker and program learned routes.
    pub bgp: bool,
    // Observability: BIRD-compatible sockets (either or both) and the Prometheus endpoint.
    /// `--bird-socket`: BIRD 2.0's dialect.
    pub bird_socket: Option<PathBuf>,
    /// `--bird1-socket`: BIRD 1.6's dialect (calicoctl, calico-node).
    pub bird1_socket: Option<PathBuf>,
    /// `--metrics-listen`: where `/metrics` is served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--route-repair-hold`: while this file exists, deleted routes are not put back
    /// (fault injection, [`repair_hold`]).
    pub route_repair_hold: Option<PathBuf>,
}

/// Shared state of a running agent.
pub struct AgentState {
    pub node_name: String,
    pub store: Arc<dyn Datastore>,
    pub ipam: Ipam,
    pod_mtu: AtomicU32,
    node_address: Option<IpNetwork>,
    ready: AtomicBool,
    /// The BGP speaker, once started.
    pub speaker: std::sync::OnceLock<crate::bgp::speaker::SpeakerHandle>,
    /// Set once the route reconciler has programmed the kernel (readiness).
    pub routes_programmed: Arc<AtomicBool>,
    bgp_enabled: bool,
    /// Set once the workload reconciler did its first pass (readiness).
    pub workloads_programmed: Arc<AtomicBool>,
    /// Set once `table inet routed` holds the datastore's pools (readiness, reported only).
    pub nftables_applied: Arc<AtomicBool>,
    manage_forward: bool,
    detection: Option<node::Detected>,
    /// `--mtu`: when set, the pod MTU never follows the pools.
    mtu_override: Option<u32>,
    /// Node-wide sysctls routed set or checked, as found/left (`net.ipv4.ip_forward`, ...).
    sysctls: std::sync::RwLock<std::collections::BTreeMap<String, String>>,
    /// Each reconciler's counters, by name, in the order they started.
    reconcilers: std::sync::RwLock<Vec<(&'static str, Arc<reconciler::ReconcilerStats>)>>,
    /// When the agent started (BIRD's `Last reboot`, the published status).
    pub started: std::time::SystemTime,
}

impl AgentState {
    /// Ready: registered, and (with BGP) routes programmed once. One external peer being down
    /// does not make the node unready.
    pub fn is_ready(&self) -> bool {
        self.readiness().ready
    }

    /// The per-check readiness report served by `/readyz` (see [`health`]).
    pub fn readiness(&self) -> health::Readiness {
        use health::Check;
        health::Readiness::from_checks(&[
            Check {
                name: "datastore",
                passed: self.ready.load(Ordering::Relaxed),
                required: true,
                failure: "the node is not registered yet (datastore unreachable?)",
            },
            Check {
                name: "routes",
                passed: !self.bgp_enabled || self.routes_programmed.load(Ordering::Relaxed),
                required: true,
                failure: "BGP and blackhole routes not programmed yet",
            },
            Check {
                name: "workload_routes",
                passed: self.workloads_programmed.load(Ordering::Relaxed),
                required: true,
                failure: "pod routes not reconciled yet (waiting for the IPAM blocks)",
            },
            Check {
                name: "nftables",
                passed: !self.manage_forward || self.nftables_applied.load(Ordering::Relaxed),
                required: false,
                failure: "table inet routed (FORWARD acceptance, natOutgoing) not programmed; see the log",
            },
        ])
    }

    /// Recomputes the pod MTU from the pools (node interface MTU minus the largest
    /// encapsulation), unless `--mtu` fixed it; pods created from now on get the new value.
    pub fn update_pod_mtu(&self, pools: &[crate::model::IpPool]) {
        let (None, Some(detected)) = (self.mtu_override, &self.detection) else {
            return;
        };
        let mtu = detected.mtu.saturating_sub(node::overhead_of(pools));
        let old = self.pod_mtu.swap(mtu, Ordering::Relaxed);
        if old != mtu {
            info!(old, new = mtu, "pod MTU follows the pools' encapsulation");
        }
    }

    /// The counters of reconciler `name`, registered on first use (a restarted reconciler of
    /// the same name keeps counting on the same ones).
    pub fn reconciler_stats(&self, name: &'static str) -> Arc<reconciler::ReconcilerStats> {
        let Ok(mut list) = self.reconcilers.write() else {
            return Arc::default();
        };
        if let Some((_, stats)) = list.iter().find(|(n, _)| *n == name) {
            return stats.clone();
        }
        let stats = Arc::new(reconciler::ReconcilerStats::default());
        list.push((name, stats.clone()));
        stats
    }

    /// Every reconciler's counters now (`workloads`, `nat`, `tunnels`...), in start order.
    pub fn reconcilers(&self) -> Vec<(&'static str, reconciler::StatsSnapshot)> {
        self.reconcilers
            .read()
            .map(|list| {
                list.iter()
                    .map(|(name, stats)| (*name, stats.snapshot()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a node-wide sysctl for `/v1/node`.
    fn record_sysctl(&self, key: &str, value: &str) {
        if let Ok(mut map) = self.sysctls.write() {
            map.insert(key.to_string(), value.to_string());
        }
    }

    pub fn pod_mtu(&self) -> u32 {
        self.pod_mtu.load(Ordering::Relaxed)
    }
}

/// Runs the agent until SIGTERM/SIGINT. Routes and pods are left as they are on exit: the data
/// plane lives in the kernel.
pub async fn run(config: AgentConfig) -> Result<()> {
    crate::model::validate_name(&config.node_name)
        .with_context(|| "the node name must be a DNS subdomain (set --node-name or NODE_NAME)")?;
    if let Some(path) = &config.route_repair_hold {
        repair_hold::set(path.clone());
    }
    let store = datastore::open(&config.datastore)
        .await
        .with_context(|| format!("cannot open datastore {}", config.datastore.url))?;
    let store = crate::metrics::datastore::MeteredStore::wrap(store);
    let detected = node::detect(&config).await?;
    info!(node = %config.node_name, address = ?detected.address, method = %detected.method,
        interface = ?detected.interface, mtu = detected.mtu, "node address detected");
    let overhead = Ipam::new(store.clone())
        .list_pools()
        .await
        .map(|pools| calc::encapsulation_overhead(&pools))
        .unwrap_or(0);
    let pod_mtu = config.mtu.unwrap_or(detected.mtu.saturating_sub(overhead));
    let state = Arc::new(AgentState {
        node_name: config.node_name.clone(),
        ipam: Ipam::new(store.clone()),
        store: store.clone(),
        pod_mtu: AtomicU32::new(pod_mtu),
        node_address: detected.address,
        ready: AtomicBool::new(false),
        speaker: std::sync::OnceLock::new(),
        routes_programmed: Arc::new(AtomicBool::new(false)),
        bgp_enabled: config.bgp,
        workloads_programmed: Arc::new(AtomicBool::new(false)),
        nftables_applied: Arc::new(AtomicBool::new(false)),
        manage_forward: config.manage_forward,
        detection: Some(detected.clone()),
        mtu_override: config.mtu,
        sysctls: Default::default(),
        reconcilers: Default::default(),
        started: std::time::SystemTime::now(),
    });
    let listener = server::bind(&config.socket)
        .with_context(|| format!("cannot listen on {}", config.socket.display()))?;
    info!(socket = %config.socket.display(), pod_mtu, "local API listening");
    let api = tokio::spawn(server::serve(listener, state.clone()));
    start_observability(&state, &config).await?;

    // The node forwards pod traffic (per-veth forwarding is set by the CNI plugin).
    match crate::netlink::sysctl::set_sysctl(crate::netlink::sysctl::IP_FORWARD_KEY, "1") {
        Ok(()) => {
            info!("net.ipv4.ip_forward=1");
            state.record_sysctl("net.ipv4.ip_forward", "1");
        }
        Err(e) => warn!(error = %e, "could not enable net.ipv4.ip_forward"),
    }
    if let Some(value) = nat::relax_rp_filter() {
        state.record_sysctl("net.ipv4.conf.all.rp_filter", &value);
    }
    if config.manage_forward {
        if let Err(e) = forward::ensure_forward_accept().await {
            warn!(error = %format!("{e:#}"), "could not program FORWARD acceptance for pod traffic");
        }
    }
    tokio::spawn(nat::run(state.clone()));
    let deletions = start_workloads(&state).await;
    // Started while the datastore was down, the pools' encapsulation was unknown above: the
    // pool reconciler (nat::run) sets the pod MTU once it reads the pools, and again on
    // every pool change.
    register_until_done(&state, &detected).await;
    state.ready.store(true, Ordering::Relaxed);
    let speaker = if config.bgp {
        Some(start_routing(&state, &detected, deletions.as_ref()).await?)
    } else {
        None
    };
    info!(node = %state.node_name, bgp = config.bgp, "running");

    wait_for_shutdown().await;
    info!("shutting down; routes and pod interfaces stay in place");
    // No Cease to the peers: the sessions just close, so peers keep our routes as stale under
    // graceful restart until we are back (RFC 4724).
    std::mem::forget(speaker);
    api.abort();
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// The BIRD-compatible sockets and the metrics endpoint, when asked for.
async fn start_observability(state: &Arc<AgentState>, config: &AgentConfig) -> Result<()> {
    if let Some(addr) = config.metrics_listen {
        crate::metrics::http::start(state.clone(), addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }
    let mut sockets = Vec::new();
    if let Some(path) = &config.bird_socket {
        sockets.push((path.clone(), bird_compat::Dialect::Bird2));
    }
    if let Some(path) = &config.bird1_socket {
        sockets.push((path.clone(), bird_compat::Dialect::Bird1));
    }
    bird_socket::start(state, &sockets)?;
    tokio::spawn(status_publish::run(state.clone()));
    Ok(())
}

/// Opens the shared route-deletion monitor and starts the workload reconciler on it; returns
/// the monitor for the other repair loops (`None`: each opens its own).
async fn start_workloads(state: &Arc<AgentState>) -> Option<crate::netlink::SharedDeletions> {
    // One route-deletion monitor for every repair loop (each socket on the route groups costs
    // the kernel work per route change while a full BGP table is installed).
    let mut deletions = None;
    match crate::netlink::KernelNetlink::new().await {
        Ok(netlink) => {
            use crate::netlink::{Netlink, RouteProtocol as P};
            match netlink
                .watch_route_deletions(&[P::WORKLOAD, P::BLACKHOLE, P::BGP, P::TUNNEL])
                .await
            {
                Ok(watch) => deletions = Some(crate::netlink::SharedDeletions::start(watch)),
                Err(e) => {
                    warn!(error = %e, "no shared route monitor; each repair loop opens its own")
                }
            }
            tokio::spawn(workloads::run(
                state.clone(),
                Arc::new(netlink),
                deletions
                    .as_ref()
                    .map(|d| d.subscribe(&[crate::netlink::RouteProtocol::WORKLOAD])),
            ));
        }
        Err(e) => warn!(error = %e, "no netlink: workload routes are not reconciled"),
    }
    deletions
}

/// Starts the speaker, the datastore follower, the tunnel manager and the route reconciler.
async fn start_routing(
    state: &Arc<AgentState>,
    detected: &node::Detected,
    deletions: Option<&crate::netlink::SharedDeletions>,
) -> Result<crate::bgp::speaker::Speaker> {
    use crate::bgp::speaker::{Speaker, SpeakerConfig};
    use crate::netlink::Netlink;
    // The one follower of the cluster view; its first full read is the start-up state (it
    // retries on its own while the datastore is unreachable).
    let stats = Arc::new(follower::FollowerStats::default());
    let mut view_rx =
        follower::spawn_follow_cluster(state.store.clone(), state.node_name.clone(), stats);
    let snapshot = follower::first_state(&mut view_rx)
        .await
        .context("the datastore follower ended")?;
    let me = snapshot
        .nodes
        .iter()
        .find(|n| n.name == state.node_name)
        .cloned()
        .with_context(|| format!("node {} is not registered", state.node_name))?;
    let router_id = match detected.address.map(|a| a.ip()) {
        Some(std::net::IpAddr::V4(v4)) => v4,
        _ => anyhow::bail!("BGP needs an IPv4 node address for the router id"),
    };
    let netlink = Arc::new(
        crate::netlink::KernelNetlink::new()
            .await
            .context("netlink")?,
    );
    // Routes of ours already in the kernel: the agent restarted with forwarding state kept.
    // Counted by a streaming scan: after a restart with a full table in the kernel, a list
    // would copy a million routes just to see that there is one.
    let kept = netlink
        .scan_routes(
            crate::netlink::RouteFilter::protocol(crate::netlink::RouteProtocol::BGP),
            0usize,
            |count, _| *count += 1,
        )
        .await
        .map(|count| count > 0)
        .unwrap_or(false);
    let mut config =
        SpeakerConfig::new(router_id, me.as_number.unwrap_or(snapshot.config.as_number));
    config.listen_addr = Some(std::net::SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        snapshot.config.listen_port,
    ));
    config.graceful_restart_time =
        u16::try_from(snapshot.config.graceful_restart_time.min(4095)).unwrap_or(120);
    config.restarting = kept;
    config.connect_retry = std::time::Duration::from_secs(2);
    let speaker = Speaker::start(config)
        .await
        .context("starting the BGP speaker")?;
    let handle = speaker.handle();
    let _ = state.speaker.set(handle.clone());
    info!(router_id = %router_id, listen = ?speaker.listen_addr(), restarting = kept, "BGP speaker started");
    // `None` until the datastore has been read: the reconciler adopts the kernel until then.
    let (local_tx, local_rx) = tokio::sync::watch::channel(None);
    let (cluster_tx, cluster_rx) = tokio::sync::watch::channel(None);
    // `None` until the tunnel manager's first pass: tunl0 routes are adopted until then.
    let (encap_tx, encap_rx) = tokio::sync::watch::channel(None);
    tokio::spawn(follower::follow_datastore(
        me,
        handle.clone(),
        view_rx,
        local_tx,
        cluster_tx,
    ));
    // Its own sockets: two dumps at once on one netlink socket fail with EBUSY.
    let tunnel_netlink: Arc<dyn Netlink> = Arc::new(
        crate::netlink::KernelNetlink::new()
            .await
            .context("netlink")?,
    );
    use crate::netlink::RouteProtocol as P;
    let mut manager = tunnels::TunnelManager::new(state.clone(), tunnel_netlink, detected);
    if let Some(deletions) = deletions {
        manager = manager.with_deletions(deletions.subscribe(&[P::TUNNEL]));
    }
    tokio::spawn(manager.run(cluster_rx, encap_tx));
    tokio::spawn(routing::reconcile_routes(
        handle,
        local_rx,
        encap_rx,
        netlink,
        state.routes_programmed.clone(),
        deletions.map(|d| d.subscribe(&[P::BGP, P::BLACKHOLE])),
        state.reconciler_stats("routes"),
    ));
    Ok(speaker)
}

/// Registers the node, retrying while the datastore is unreachable (the API still serves).
async fn register_until_done(state: &AgentState, detected: &node::Detected) {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match node::register(state.store.as_ref(), &state.node_name, detected).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "node registration failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
