//! The route reconciler: speaker → calc → kernel (the datastore side is `follower`).
//!
//! ```text
//!  datastore watch (nodes, bgppeers, config, ippools, affinities)
//!        │ each event applied to the follower's in-memory view (a queued burst is one change)
//!        v
//!  calc::desired_peers ──> speaker.set_peers      calc::originated_blocks ──> speaker.set_originated
//!  calc::local_blocks ──┐
//!                       v
//!  speaker: changed prefixes ──> route reconciler <── netlink monitor (a deleted route of ours)
//!  SharedRib (read: next hops) ──┘      │          <── timer (full resync every 10 s or more)
//!                                       v
//!      kernel: replace/delete the changed prefixes; on a full resync, a streaming dump of our
//!      routes compared with the RIB — protocols routed-bh and routed-bgp only
//! ```
//!
//! Three parts: this file is the glue, a `Reconciler` run by the shared driver
//! (`agent::reconciler`: one watch of both views as its input, the speaker's change batches and
//! the monitor's repairs as its feed, the planner's actions carried out by the apply step in
//! one pass, counters as `routes`); `planner.rs` decides, sans-IO, from the
//! inputs and the current instant (every rule below is there, unit-tested with made-up
//! instants); `apply.rs` does the netlink work on any [`Netlink`] (the kernel, or
//! `FakeNetlink` in tests).
//! Restart without interruption: at start the reconciler adopts what the kernel has. It writes
//! nothing before the datastore has been read once (until then it does not know the node's
//! blocks or peers, and an empty desired state would flush the blackholes). Learned routes are
//! never deleted before every configured peer is Established and has sent End-of-RIB (or
//! 120 s passed), so a restarting agent does not withdraw routes its peers are about to send
//! again. While the datastore is unreachable the last known state stays in force: nothing is
//! removed because a read failed.

use super::calc;
use super::reconciler::{self, Applied, Feed, Reconciler, ReconcilerStats, Triggers, Wake};
use crate::bgp::change_feed::ChangeFeed;
use crate::bgp::speaker::SpeakerHandle;
use crate::netlink::{Netlink, RouteEvent, RouteProtocol, RouteWatch};
use async_trait::async_trait;
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

mod apply;
mod planner;

pub(crate) use apply::signature;
pub use apply::RouteApply;
pub use planner::{Action, Input, Outcome, RoutePlanner, View, Work, APPLY_CHUNK, RESYNC_EVERY};

/// Keeps the kernel's routes of protocols routed-bh and routed-bgp equal to calc's.
///
/// Two paths, so a full BGP table never costs a copy or a table walk per change:
/// - incremental: the speaker reports the prefixes whose best route changed; the reconciler
///   reads their routes from the shared RIB and replaces or deletes exactly those, in batches
///   (everything queued is drained first, up to a chunk, so a burst of UPDATEs becomes a few
///   large batches); a route of ours the monitor sees deleted is re-checked the same way;
/// - full resync: when the local blocks or the tunnel view change, when the monitor lost
///   messages, once every peer has sent its routes, and periodically (every `RESYNC_EVERY`,
///   stretched so a scan of a big table costs at most ~2% of the time): a streaming dump of
///   the kernel's routes of our two protocols, each compared with the RIB as it goes, so
///   memory stays flat however big the table is.
///
/// Runs under the shared driver (`reconciler::run`, counters as `routes`): its input is both
/// views at once, its feed the speaker's change batches and the monitor's repairs.
pub async fn reconcile_routes(
    speaker: SpeakerHandle,
    local_rx: watch::Receiver<Option<BTreeSet<IpNetwork>>>,
    encap_rx: watch::Receiver<Option<calc::EncapView>>,
    netlink: Arc<dyn Netlink>,
    programmed: Arc<AtomicBool>,
    deletions: Option<RouteWatch>,
    stats: Arc<ReconcilerStats>,
) {
    let Ok(changes) = speaker.changes() else {
        return;
    };
    let repairs = watch_deletions(netlink.as_ref(), deletions).await;
    let reconciler = RouteReconciler {
        apply: RouteApply::new(netlink, speaker.rib().clone()),
        planner: RoutePlanner::new(),
        speaker,
        programmed,
    };
    // The planner paces its own retries (`Action::RetryAfter`, carried out in the apply).
    let triggers = Triggers::every(RESYNC_EVERY)
        .retry_at_once()
        .with_feed(RouteFeed { changes, repairs });
    reconciler::run(reconciler, both(local_rx, encap_rx), triggers, stats).await;
}

/// Both views the routes are computed from: the node's local blocks (datastore) and the
/// tunnel manager's view.
type Views = (BTreeSet<IpNetwork>, calc::EncapView);

/// One watch of both views, `None` until each has a value (the datastore was read and the
/// tunnel manager ran once); it closes when either does.
fn both(
    mut local: watch::Receiver<Option<BTreeSet<IpNetwork>>>,
    mut encap: watch::Receiver<Option<calc::EncapView>>,
) -> watch::Receiver<Option<Views>> {
    fn current(
        local: &mut watch::Receiver<Option<BTreeSet<IpNetwork>>>,
        encap: &mut watch::Receiver<Option<calc::EncapView>>,
    ) -> Option<Views> {
        let local = local.borrow_and_update().clone();
        let encap = encap.borrow_and_update().clone();
        Some((local?, encap?))
    }
    let (tx, rx) = watch::channel(current(&mut local, &mut encap));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = local.changed() => if r.is_err() { return },
                r = encap.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
            // A view never goes back to unknown: the last known one stays in force.
            if let Some(views) = current(&mut local, &mut encap) {
                tx.send_replace(Some(views));
            }
        }
    });
    rx
}

/// The route reconciler's feed: the monitor's repairs first, then the speaker's change
/// batches (its queue is the backlog a due full resync waits for).
struct RouteFeed {
    changes: ChangeFeed,
    repairs: mpsc::UnboundedReceiver<Input>,
}

#[async_trait]
impl Feed<Input> for RouteFeed {
    async fn recv(&mut self) -> Option<Input> {
        tokio::select! {
            biased;
            Some(repair) = self.repairs.recv() => Some(repair),
            batch = self.changes.recv() => batch.map(Input::Changed),
        }
    }

    fn try_recv(&mut self) -> Option<Input> {
        match self.repairs.try_recv() {
            Ok(repair) => Some(repair),
            Err(_) => self.changes.try_recv().map(Input::Changed),
        }
    }

    fn queued(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// The planner and its apply step as one reconciler: the planner takes the views, events,
/// ticks and outcomes; the apply step carries out its actions.
struct RouteReconciler {
    planner: RoutePlanner,
    apply: RouteApply,
    speaker: SpeakerHandle,
    programmed: Arc<AtomicBool>,
}

#[async_trait]
impl Reconciler for RouteReconciler {
    type Input = Views;
    type Desired = Views;
    type Event = Input;

    fn name(&self) -> &'static str {
        "routes"
    }

    /// The views; the routes themselves are read from the RIB prefix by prefix in the apply.
    fn desired(&self, views: &Views) -> Views {
        views.clone()
    }

    fn on_event(&mut self, event: Input) {
        self.planner.on(Instant::now(), event);
    }

    /// Until the planner has seen both views, nothing is taken (the speaker's changes wait in
    /// its queue); then up to a chunk of pending prefixes.
    fn wants_events(&self) -> bool {
        self.planner.ready() && self.planner.wants_changes()
    }

    async fn apply(&mut self, (local, encap): Views, wake: Wake) -> anyhow::Result<Applied> {
        let now = Instant::now();
        self.planner.on(now, Input::LocalBlocks(local));
        self.planner.on(now, Input::Encap(encap));
        if wake.timer && !super::repair_hold::held() {
            self.planner.on(now, Input::Tick);
        }
        if self.planner.awaiting_peers(now) && peers_settled(&self.speaker).await {
            self.planner.on(now, Input::PeersSettled);
        }
        let mut changes = Ok(0);
        // Work is handed out only once both views are known, so a view is there with it.
        if let (Some(view), Some(work)) =
            (self.planner.view(), self.planner.next(now, wake.backlog))
        {
            let outcome;
            (outcome, changes) = carry_out(&mut self.apply, &view, work).await;
            for action in self.planner.on(Instant::now(), Input::Applied(outcome)) {
                match action {
                    Action::MarkProgrammed => self.programmed.store(true, Ordering::Relaxed),
                    Action::RetryAfter(pause) => tokio::time::sleep(pause).await,
                }
            }
        }
        // More of a burst to apply, or a resync waiting for the backlog: go round at once.
        let more = self.planner.busy(wake.backlog);
        changes.map(|changes| Applied { changes, more })
    }
}

/// Does one piece of the planner's work on the kernel: the outcome goes back to the planner,
/// the changes made (or the error, logged once by the driver) to the driver.
async fn carry_out(
    apply: &mut RouteApply,
    view: &View,
    work: Work,
) -> (Outcome, anyhow::Result<usize>) {
    match work {
        Work::FullResync {
            allow_delete_learned,
        } => {
            let began = Instant::now();
            let result = apply.resync(view, allow_delete_learned).await;
            let took = began.elapsed();
            match result {
                Ok((fix, deleted)) => {
                    if !fix.is_empty() || deleted > 0 {
                        debug!(fix = fix.len(), deleted, "resync: routes to fix");
                    }
                    let fix = Some(fix);
                    (Outcome::Resync { took, fix }, Ok(deleted))
                }
                Err(e) => {
                    let e = e.context("route resync");
                    (Outcome::Resync { took, fix: None }, Err(e))
                }
            }
        }
        Work::ApplyPrefixes(prefixes) => match apply.apply_prefixes(view, prefixes).await {
            Ok(changes) => {
                if changes > 0 {
                    debug!(changes, "kernel routes reconciled");
                }
                (Outcome::Prefixes { ok: true }, Ok(changes))
            }
            Err(e) => (Outcome::Prefixes { ok: false }, Err(e)),
        },
    }
}

/// The monitor's deletions of our routes, as planner inputs: one deleted route re-checks that
/// prefix; lost notifications, or a removed nexthop object (its routes went without a word
/// each), re-check everything.
async fn watch_deletions(
    netlink: &dyn Netlink,
    deletions: Option<RouteWatch>,
) -> mpsc::UnboundedReceiver<Input> {
    let (repair_tx, repair_rx) = mpsc::unbounded_channel::<Input>();
    let ours = [RouteProtocol::BGP, RouteProtocol::BLACKHOLE];
    match super::repair::deletions(netlink, deletions, &ours).await {
        Ok(mut monitor) => {
            tokio::spawn(async move {
                // Deletions seen while repair is held (`--route-repair-hold`): one full
                // resync repairs them all once the hold is released.
                let mut missed = false;
                loop {
                    let event = tokio::select! {
                        event = monitor.next() => event,
                        _ = super::repair_hold::released(), if missed => {
                            missed = false;
                            if repair_tx.send(Input::MonitorLost).is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    let Some(event) = event else { return };
                    if !event.needs_repair_by(&ours) {
                        continue;
                    }
                    if super::repair_hold::held() {
                        missed = true;
                        continue;
                    }
                    let repair = match event {
                        RouteEvent::Deleted(r) => Input::RouteDeleted(r.destination),
                        _ => Input::MonitorLost,
                    };
                    if repair_tx.send(repair).is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => {
            warn!(error = %e, "no route monitor; deleted routes come back on the next resync")
        }
    }
    repair_rx
}

/// Every configured peer is Established and has sent End-of-RIB: the learned routes are
/// complete, so a kernel route with no best path behind it is really gone.
async fn peers_settled(speaker: &SpeakerHandle) -> bool {
    match speaker.status().await {
        Ok(peers) => peers
            .iter()
            .all(|p| p.state == crate::bgp::fsm::State::Established && p.end_of_rib_received),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
