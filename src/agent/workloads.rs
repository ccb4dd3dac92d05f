//! Workload routes: the agent keeps `<pod ip>/32 dev <host veth> scope link proto routed-wl`
//! (230) in place for every pod of this node, and removes stale ones.
//!
//! ```text
//!  follower::follow_prefix(ipam/blocks/) ──> blocks ──> workloads_of(node): ip → veth (desired)
//!                                                                 │
//!  reconciler::run, one pass on:                                  v
//!    a block change, a proto-230 route deleted    ──> plan(workloads, links, proto-230 routes)
//!    (netlink monitor), the 10 s resync, a retry                  │
//!                                                                 v
//!                          kernel: replace missing/wrong routes at once; delete stale ones
//!                          after STALE_GRACE — protocol routed-wl only
//! ```
//!
//! Where the veth ↔ address mapping comes from: the allocation attributes. routed-cni records
//! `veth` (and `container_id`, `ifname`, `node`) with every address it asks for, in the same
//! datastore write as the allocation, so the mapping survives agent restarts and needs no kernel
//! archaeology. A route is wanted when this node holds an allocation whose `veth` names an
//! existing `rd*` interface; the datastore is the authority for which veth an address belongs
//! to. An allocation whose veth does not exist yet (CNI ADD in progress) or any more wants
//! nothing; routed-cni installs the route itself (with `replace`, so the agent writing it first
//! is harmless).
//!
//! Stale: a proto-230 route that no allocation wants (its veth is gone, or the address was
//! released). It is removed only after it stayed stale for [`STALE_GRACE`], because the agent's
//! view of the datastore can lag a CNI ADD that just wrote its route (Calico's felix keeps a
//! grace period for the same race). The kernel removes the routes of a deleted link itself, so
//! in practice this catches routes left by a crash or written by hand with proto 230.
//!
//! Nothing happens before the first datastore snapshot: with no allocations known, every route
//! would look stale. Routes of other protocols are never listed, so never touched.

use super::reconciler::{self, Applied, Reconciler, Triggers, Wake};
use super::AgentState;
use crate::model::{keys, Block};
use crate::netlink::{LinkInfo, Netlink, Route, RouteFilter, RouteProtocol, RouteWatch};
use anyhow::{Context, Result};
use async_trait::async_trait;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
// tokio's clock (the same as std's unless a test pauses it): the grace period follows paused time.
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long a proto-230 route nobody wants stays before it is removed.
pub const STALE_GRACE: Duration = Duration::from_secs(30);
/// Full resync period (also when stale routes come due).
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// The host-side veth name prefix routed-cni uses.
pub const POD_VETH_PREFIX: &str = "rd";

/// Every address of `node` (per the allocation's `node` attribute) whose allocation records the
/// host veth, as address → veth name.
pub fn workloads_of<'a>(
    blocks: impl IntoIterator<Item = &'a Block>,
    node: &str,
) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for block in blocks {
        for (ordinal, allocation) in &block.allocations {
            if allocation.attributes.get("node").map(String::as_str) != Some(node) {
                continue;
            }
            let Some(veth) = allocation.attributes.get("veth") else {
                continue;
            };
            if let Some(ip) = block.ip_at(*ordinal) {
                out.insert(ip, veth.clone());
            }
        }
    }
    out
}

/// What one reconcile pass changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Missing routes, or routes pointing at the wrong interface: written at once.
    pub replace: Vec<Route>,
    /// Routes stale for longer than the grace period.
    pub delete: Vec<Route>,
    /// Routes stale but still within the grace period.
    pub waiting: usize,
}

/// The host route of one pod address.
pub fn workload_route(ip: IpAddr, ifindex: u32) -> Route {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    // A host prefix is always valid; fall back to the address as a network just in case.
    let destination = IpNetwork::new(ip, prefix).unwrap_or_else(|_| IpNetwork::from(ip));
    Route::link_scope(destination, ifindex, RouteProtocol::WORKLOAD)
}

/// Diffs what the allocations want against the kernel's proto-230 routes (`actual`).
/// `stale_since` remembers when each unwanted route was first seen; the caller keeps it between
/// passes.
pub fn plan(
    workloads: &BTreeMap<IpAddr, String>,
    links: &[LinkInfo],
    actual: &[Route],
    stale_since: &mut HashMap<IpNetwork, Instant>,
    now: Instant,
    grace: Duration,
) -> Plan {
    let pod_links: HashMap<&str, u32> = links
        .iter()
        .filter(|l| l.name.starts_with(POD_VETH_PREFIX))
        .map(|l| (l.name.as_str(), l.index))
        .collect();
    let wanted: BTreeMap<IpNetwork, Route> = workloads
        .iter()
        .filter_map(|(ip, veth)| {
            pod_links
                .get(veth.as_str())
                .map(|i| workload_route(*ip, *i))
        })
        .map(|r| (r.destination, r))
        .collect();
    let actual: BTreeMap<IpNetwork, &Route> = actual
        .iter()
        .filter(|r| r.protocol == RouteProtocol::WORKLOAD)
        .map(|r| (r.destination, r))
        .collect();
    let mut out = Plan::default();
    for (destination, route) in &wanted {
        let in_place = actual.get(destination).is_some_and(|a| {
            a.output_ifindex == route.output_ifindex
                && a.kind == route.kind
                && a.scope == route.scope
                && a.gateway.is_none()
        });
        if !in_place {
            out.replace.push(route.clone());
        }
    }
    stale_since.retain(|destination, _| {
        actual.contains_key(destination) && !wanted.contains_key(destination)
    });
    for (destination, route) in &actual {
        if wanted.contains_key(destination) {
            continue;
        }
        let since = *stale_since.entry(*destination).or_insert(now);
        if now.duration_since(since) >= grace {
            out.delete.push((*route).clone());
        } else {
            out.waiting += 1;
        }
    }
    out
}

/// Reads the kernel, plans and applies one pass; returns the plan that was carried out and
/// the number of routes written or removed.
pub async fn reconcile_once(
    netlink: &dyn Netlink,
    workloads: &BTreeMap<IpAddr, String>,
    stale_since: &mut HashMap<IpNetwork, Instant>,
    grace: Duration,
) -> Result<(Plan, usize)> {
    let links = netlink.list_links().await.context("listing interfaces")?;
    let actual = netlink
        .list_routes(&RouteFilter::protocol(RouteProtocol::WORKLOAD))
        .await
        .context("listing workload routes")?;
    let plan = plan(
        workloads,
        &links,
        &actual,
        stale_since,
        Instant::now(),
        grace,
    );
    let mut changes = 0;
    if !plan.replace.is_empty() {
        let report = netlink
            .replace_routes_batch(&plan.replace)
            .await
            .context("writing workload routes")?;
        changes += report.succeeded;
        for failure in &report.failures {
            warn!(route = %failure.key.destination, error = %failure.error, "cannot program workload route");
        }
        for route in &plan.replace {
            info!(route = %route.destination, ifindex = ?route.output_ifindex, "workload route (re)installed");
        }
    }
    if !plan.delete.is_empty() {
        let report = netlink
            .delete_routes_batch(&plan.delete)
            .await
            .context("removing stale workload routes")?;
        changes += report.succeeded;
        for failure in &report.failures {
            warn!(route = %failure.key.destination, error = %failure.error, "cannot remove stale workload route");
        }
        for route in &plan.delete {
            info!(route = %route.destination, ifindex = ?route.output_ifindex, "stale workload route removed");
            stale_since.remove(&route.destination);
        }
    }
    Ok((plan, changes))
}

/// The workload reconciler's state between passes.
pub struct WorkloadRoutes {
    node: String,
    netlink: Arc<dyn Netlink>,
    /// When each unwanted route was first seen.
    stale_since: HashMap<IpNetwork, Instant>,
    /// Set after the first pass (readiness).
    programmed: Arc<AtomicBool>,
}

#[async_trait]
impl Reconciler for WorkloadRoutes {
    type Input = BTreeMap<String, Block>;
    type Desired = BTreeMap<IpAddr, String>;
    type Event = ();

    fn name(&self) -> &'static str {
        "workloads"
    }

    fn desired(&self, blocks: &BTreeMap<String, Block>) -> BTreeMap<IpAddr, String> {
        workloads_of(blocks.values(), &self.node)
    }

    async fn apply(&mut self, workloads: Self::Desired, _wake: Wake) -> Result<Applied> {
        let (plan, changes) = reconcile_once(
            self.netlink.as_ref(),
            &workloads,
            &mut self.stale_since,
            STALE_GRACE,
        )
        .await?;
        if plan.waiting > 0 {
            debug!(
                waiting = plan.waiting,
                "stale workload routes within the grace period"
            );
        }
        self.programmed.store(true, Ordering::Relaxed);
        Ok(Applied::changes(changes))
    }
}

/// Keeps this node's workload routes in place while the agent runs: follows the IPAM blocks
/// and runs the reconciler on them (nothing before the first full read of the blocks).
/// Sets `workloads_programmed` after the first pass.
pub async fn run(state: Arc<AgentState>, netlink: Arc<dyn Netlink>, deletions: Option<RouteWatch>) {
    let blocks_rx = super::follower::spawn_follow_prefix::<Block>(
        state.store.clone(),
        keys::BLOCKS,
        "IPAM block",
    );
    let repairs = super::repair::signal(
        netlink.as_ref(),
        deletions,
        &[RouteProtocol::WORKLOAD],
        "deleted workload routes",
    )
    .await;
    let reconciler = WorkloadRoutes {
        node: state.node_name.clone(),
        netlink,
        stale_since: HashMap::new(),
        programmed: state.workloads_programmed.clone(),
    };
    let triggers = Triggers::every(RESYNC_EVERY).with_kernel(repairs);
    let stats = state.reconciler_stats("workloads");
    reconciler::run(reconciler, blocks_rx, triggers, stats).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Allocation;
    use crate::netlink::{FakeNetlink, RouteKind};

    fn block(cidr: &str, allocations: &[(u32, &str, Option<&str>)]) -> Block {
        let mut block: Block = serde_json::from_value(serde_json::json!({
            "cidr": cidr, "affinity": "node-1", "allocations": {}, "free": [], "sequence_number": 0
        }))
        .unwrap();
        for (ordinal, node, veth) in allocations {
            let mut attributes = BTreeMap::new();
            attributes.insert("node".to_string(), node.to_string());
            if let Some(veth) = veth {
                attributes.insert("veth".to_string(), veth.to_string());
            }
            block.allocations.insert(
                *ordinal,
                Allocation {
                    handle: format!("h{ordinal}"),
                    sequence: 0,
                    attributes,
                },
            );
        }
        block
    }

    fn link(name: &str, index: u32) -> LinkInfo {
        LinkInfo {
            name: name.into(),
            index,
            kind: Some("veth".into()),
            mac: None,
            mtu: 1500,
            up: true,
            peer_ifindex: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn workloads_are_this_nodes_allocations_with_a_veth() {
        let blocks = [
            block(
                "10.1.0.0/26",
                &[
                    (1, "node-1", Some("rdaaa")),
                    (2, "node-2", Some("rdbbb")),
                    (3, "node-1", None),
                ],
            ),
            // Borrowed from another node's block: still ours by the node attribute.
            block("10.1.0.64/26", &[(5, "node-1", Some("rdccc"))]),
        ];
        let got = workloads_of(&blocks, "node-1");
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![
                (ip("10.1.0.1"), "rdaaa".to_string()),
                (ip("10.1.0.69"), "rdccc".to_string())
            ]
        );
    }

    #[test]
    fn missing_and_misdirected_routes_are_replaced_at_once() {
        let workloads: BTreeMap<_, _> = [
            (ip("10.1.0.1"), "rdaaa".to_string()),
            (ip("10.1.0.2"), "rdbbb".to_string()),
            (ip("10.1.0.3"), "rdgone".to_string()),
        ]
        .into();
        let links = [link("rdaaa", 10), link("rdbbb", 11), link("eth0", 2)];
        let actual = [
            workload_route(ip("10.1.0.1"), 10),
            workload_route(ip("10.1.0.2"), 2),
        ];
        let mut stale = HashMap::new();
        let plan = plan(
            &workloads,
            &links,
            &actual,
            &mut stale,
            Instant::now(),
            STALE_GRACE,
        );
        // 10.1.0.1 is in place, 10.1.0.2 points at eth0, 10.1.0.3's veth does not exist.
        assert_eq!(plan.replace, vec![workload_route(ip("10.1.0.2"), 11)]);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.waiting, 0);
    }

    #[test]
    fn a_veth_without_the_rd_prefix_is_never_a_pod() {
        let workloads: BTreeMap<_, _> = [(ip("10.1.0.1"), "eth0".to_string())].into();
        let plan = plan(
            &workloads,
            &[link("eth0", 2)],
            &[],
            &mut HashMap::new(),
            Instant::now(),
            STALE_GRACE,
        );
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn stale_routes_go_only_after_the_grace_period() {
        let workloads = BTreeMap::new();
        let links = [link("rdaaa", 10)];
        let stale_route = workload_route(ip("10.1.0.9"), 10);
        let mut foreign = workload_route(ip("10.1.0.8"), 10);
        foreign.protocol = RouteProtocol::STATIC;
        let actual = [stale_route.clone(), foreign];
        let mut since = HashMap::new();
        let start = Instant::now();
        let first = plan(&workloads, &links, &actual, &mut since, start, STALE_GRACE);
        assert_eq!((first.delete.len(), first.waiting), (0, 1));
        let later = start + STALE_GRACE - Duration::from_secs(1);
        let second = plan(&workloads, &links, &actual, &mut since, later, STALE_GRACE);
        assert_eq!((second.delete.len(), second.waiting), (0, 1));
        let due = start + STALE_GRACE;
        let third = plan(&workloads, &links, &actual, &mut since, due, STALE_GRACE);
        assert_eq!(third.delete, vec![stale_route]);
    }

    #[test]
    fn a_route_wanted_again_restarts_its_grace() {
        let links = [link("rdaaa", 10)];
        let route = workload_route(ip("10.1.0.9"), 10);
        let mut since = HashMap::new();
        let start = Instant::now();
        plan(
            &BTreeMap::new(),
            &links,
            std::slice::from_ref(&route),
            &mut since,
            start,
            STALE_GRACE,
        );
        let wanted: BTreeMap<_, _> = [(ip("10.1.0.9"), "rdaaa".to_string())].into();
        let p = plan(
            &wanted,
            &links,
            std::slice::from_ref(&route),
            &mut since,
            start + Duration::from_secs(5),
            STALE_GRACE,
        );
        assert_eq!(p, Plan::default());
        assert!(since.is_empty());
        let p = plan(
            &BTreeMap::new(),
            &links,
            std::slice::from_ref(&route),
            &mut since,
            start + STALE_GRACE + Duration::from_secs(1),
            STALE_GRACE,
        );
        assert_eq!((p.delete.len(), p.waiting), (0, 1));
    }

    #[tokio::test]
    async fn a_deleted_route_is_put_back_and_foreign_routes_stay() {
        let fake = FakeNetlink::new();
        let index = fake.add_link("rdaaa", "veth");
        let wanted = workload_route(ip("10.1.0.1"), index);
        let mut foreign = workload_route(ip("10.1.0.2"), index);
        foreign.protocol = RouteProtocol(99);
        fake.replace_route(&foreign).await.unwrap();
        let workloads: BTreeMap<_, _> = [(ip("10.1.0.1"), "rdaaa".to_string())].into();
        let mut since = HashMap::new();
        let (plan, changes) = reconcile_once(&fake, &workloads, &mut since, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(plan.replace, vec![wanted.clone()]);
        assert_eq!(changes, 1);
        fake.delete_route_externally(&wanted.key());
        reconcile_once(&fake, &workloads, &mut since, Duration::ZERO)
            .await
            .unwrap();
        let routes = fake.routes();
        assert!(routes.iter().any(|r| r.destination == wanted.destination
            && r.protocol == RouteProtocol::WORKLOAD
            && r.kind == RouteKind::Unicast));
        assert!(routes.contains(&foreign), "{routes:?}");
        // Nothing wanted any more: with no grace the workload route goes, the foreign one stays.
        reconcile_once(&fake, &BTreeMap::new(), &mut since, Duration::ZERO)
            .await
            .unwrap();
        let routes = fake.routes();
        assert_eq!(routes, vec![foreign]);
    }

    #[tokio::test(start_paused = true)]
    async fn under_the_driver_nothing_is_written_before_the_blocks_are_read() {
        let fake = Arc::new(FakeNetlink::new());
        let index = fake.add_link("rdaaa", "veth");
        // A proto-230 route no allocation wants: kept while the blocks are unknown.
        let orphan = workload_route(ip("10.1.0.9"), index);
        fake.replace_route(&orphan).await.unwrap();
        let programmed = Arc::new(AtomicBool::new(false));
        let reconciler = WorkloadRoutes {
            node: "node-1".into(),
            netlink: fake.clone(),
            stale_since: HashMap::new(),
            programmed: programmed.clone(),
        };
        let (blocks_tx, blocks_rx) = tokio::sync::watch::channel(None);
        let stats = Arc::new(reconciler::ReconcilerStats::default());
        let triggers = Triggers::<()>::every(RESYNC_EVERY);
        tokio::spawn(reconciler::run(
            reconciler,
            blocks_rx,
            triggers,
            stats.clone(),
        ));
        tokio::time::sleep(STALE_GRACE * 2).await;
        assert_eq!(fake.routes(), vec![orphan.clone()]);
        assert!(!programmed.load(Ordering::Relaxed));
        // The first full read: the pod's route at once, the orphan only after the grace.
        let blocks: BTreeMap<String, Block> = [(
            "ipam/blocks/10.1.0.0-26".to_string(),
            block("10.1.0.0/26", &[(1, "node-1", Some("rdaaa"))]),
        )]
        .into();
        blocks_tx.send_replace(Some(blocks));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let wanted = workload_route(ip("10.1.0.1"), index);
        let routes = fake.routes();
        assert!(
            routes.iter().any(|r| r.destination == wanted.destination),
            "{routes:?}"
        );
        assert!(routes.contains(&orphan), "{routes:?}");
        assert!(programmed.load(Ordering::Relaxed));
        tokio::time::sleep(STALE_GRACE + RESYNC_EVERY).await;
        let routes = fake.routes();
        assert!(
            !routes.iter().any(|r| r.destination == orphan.destination),
            "{routes:?}"
        );
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.passes_changed, 2, "{snapshot:?}");
        assert!(snapshot.passes >= 5, "{snapshot:?}");
    }
}
