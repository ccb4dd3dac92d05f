//! The route reconciler's decisions, sans-IO: inputs and the current instant in, actions out.
//!
//! ```text
//!  LocalBlocks / Encap (datastore, tunnel manager) ──┐
//!  Changed (speaker) · RouteDeleted / MonitorLost ───┤
//!  Tick · PeersSettled · Applied(outcome) ───────────┴─> RoutePlanner
//!                                  next() ──> Work: ApplyPrefixes(chunk) · FullResync
//!                       on(Applied(outcome)) ──> Action: MarkProgrammed · RetryAfter(d)
//! ```
//!
//! The restart-safety rules live here (docs/architecture.md, decisions 12, 13, 17, 18, 21,
//! 22): no action before the first datastore read and the tunnel manager's first pass; a full
//! resync may delete learned (BGP) routes only once every peer has sent End-of-RIB or
//! `DELETE_GRACE_MAX` passed; an unchanged local-block set (a datastore outage) is no change.

use crate::agent::calc::EncapView;
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shortest interval between periodic full resyncs.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// Longest learned routes are kept while peers have not all sent End-of-RIB.
pub const DELETE_GRACE_MAX: Duration = Duration::from_secs(120);
/// Longest a due full resync waits for the incremental backlog to drain.
pub const FULL_WAIT_MAX: Duration = Duration::from_secs(30);
/// Pause after a failed kernel update before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Prefixes programmed per batch on the incremental path.
pub const APPLY_CHUNK: usize = 16 * 1024;

/// What the desired routes are computed from, besides the RIB.
#[derive(Debug, Clone)]
pub struct View {
    pub local: Arc<BTreeSet<IpNetwork>>,
    pub encap: Arc<EncapView>,
}

/// Something that happened, for the planner to take into account.
#[derive(Debug)]
pub enum Input {
    /// The node's local blocks as last read from the datastore.
    LocalBlocks(BTreeSet<IpNetwork>),
    /// The tunnel manager's view (tunl0, pools, local subnets).
    Encap(EncapView),
    /// Prefixes whose best route the speaker changed.
    Changed(Vec<IpNetwork>),
    /// The monitor saw a route of ours deleted.
    RouteDeleted(IpNetwork),
    /// The monitor lost messages, or a nexthop object of ours went: re-check everything.
    MonitorLost,
    /// The periodic timer.
    Tick,
    /// Every configured peer is Established and has sent End-of-RIB.
    PeersSettled,
    /// How the last action handed out by [`RoutePlanner::next`] went.
    Applied(Outcome),
}

/// The result of a piece of [`Work`].
#[derive(Debug)]
pub enum Outcome {
    /// A chunk was applied (`false`: the kernel update failed).
    Prefixes { ok: bool },
    /// A full resync ran for `took`; `fix` are the prefixes it found wrong or missing (`None`:
    /// it failed).
    Resync {
        took: Duration,
        fix: Option<Vec<IpNetwork>>,
    },
}

/// The kernel work the apply side is to do next ([`RoutePlanner::next`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Program the desired route of each of these prefixes (or remove ours).
    ApplyPrefixes(Vec<IpNetwork>),
    /// Compare every route of ours in the kernel with the desired ones; report the ones to fix.
    FullResync { allow_delete_learned: bool },
}

/// What the outcome of a piece of work calls for ([`Input::Applied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The kernel holds the desired routes (readiness: routes programmed).
    MarkProgrammed,
    /// The kernel update failed: pause this long before the next action.
    RetryAfter(Duration),
}

/// The reconciler's state, explicit: what was seen, what is due, what is pending.
#[derive(Debug)]
pub struct RoutePlanner {
    local: Option<Arc<BTreeSet<IpNetwork>>>,
    encap: Option<Arc<EncapView>>,
    /// When both views were first seen: the delete grace starts then.
    started: Option<Instant>,
    learned_settled: bool,
    full_due: bool,
    full_due_since: Option<Instant>,
    last_full: Option<Instant>,
    resync_every: Duration,
    pending: Vec<IpNetwork>,
    first_full_done: bool,
    programmed: bool,
}

impl Default for RoutePlanner {
    fn default() -> Self {
        RoutePlanner::new()
    }
}

impl RoutePlanner {
    pub fn new() -> RoutePlanner {
        RoutePlanner {
            local: None,
            encap: None,
            started: None,
            learned_settled: false,
            full_due: true,
            full_due_since: None,
            last_full: None,
            resync_every: RESYNC_EVERY,
            pending: Vec::new(),
            first_full_done: false,
            programmed: false,
        }
    }

    /// Both the datastore and the tunnel manager have been heard from: routes may be written.
    pub fn ready(&self) -> bool {
        self.started.is_some()
    }

    /// The views routes are computed from (`None` before [`Self::ready`]).
    pub fn view(&self) -> Option<View> {
        Some(View {
            local: self.local.clone()?,
            encap: self.encap.clone()?,
        })
    }

    /// Whether the caller should ask the speaker whether every peer has settled.
    pub fn awaiting_peers(&self, now: Instant) -> bool {
        self.ready() && !self.learned_settled && !self.grace_over(now)
    }

    /// Whether the speaker's queued changes should be taken in now (the batch is not full).
    pub fn wants_changes(&self) -> bool {
        self.pending.len() < APPLY_CHUNK
    }

    /// Whether to go round again without waiting for an input: more of a burst to apply, or a
    /// resync waiting for the speaker's `backlog` to drain.
    pub fn busy(&self, backlog: bool) -> bool {
        self.ready() && (!self.pending.is_empty() || (self.full_due && backlog))
    }

    /// Takes one input into account; an `Applied` outcome may call for actions.
    pub fn on(&mut self, now: Instant, input: Input) -> Vec<Action> {
        match input {
            Input::LocalBlocks(local) => {
                if self.local.as_deref() != Some(&local) {
                    self.full_due |= self.local.is_some();
                    self.local = Some(Arc::new(local));
                    self.start_if_ready(now);
                }
            }
            Input::Encap(encap) => {
                if self.encap.as_deref() != Some(&encap) {
                    self.full_due |= self.encap.is_some();
                    self.encap = Some(Arc::new(encap));
                    self.start_if_ready(now);
                }
            }
            Input::Changed(prefixes) => self.pending.extend(prefixes),
            Input::RouteDeleted(prefix) => self.pending.push(prefix),
            Input::MonitorLost => self.full_due = true,
            Input::Tick => {
                if self.last_full.is_some_and(|t| now - t >= self.resync_every) {
                    self.full_due = true;
                }
            }
            Input::PeersSettled => self.settle(),
            Input::Applied(outcome) => return self.applied(now, outcome),
        }
        Vec::new()
    }

    /// The next piece of kernel work, if any is due: a full resync once the backlog is applied
    /// (or it waited `FULL_WAIT_MAX`), else the next chunk of pending prefixes. `backlog`: the
    /// speaker has changes queued that are not in `pending` yet.
    pub fn next(&mut self, now: Instant, backlog: bool) -> Option<Work> {
        if !self.ready() {
            return None;
        }
        if !self.learned_settled && self.grace_over(now) {
            self.settle();
        }
        // A full resync waits until the incremental backlog is applied: the kernel then
        // matches the RIB but for what the resync is for, and a scan finds little to do
        // (during a full table's arrival it would find most routes "missing" instead).
        // Never longer than `FULL_WAIT_MAX`, so endless churn cannot starve it.
        if !self.full_due {
            self.full_due_since = None;
        } else if self.full_due_since.is_none() {
            self.full_due_since = Some(now);
        }
        let waited_too_long = self.full_due_since.is_some_and(|t| now - t > FULL_WAIT_MAX);
        let drained = self.pending.is_empty() && !backlog;
        if self.full_due && (drained || waited_too_long) {
            return Some(Work::FullResync {
                allow_delete_learned: self.learned_settled,
            });
        }
        if self.pending.is_empty() {
            return None;
        }
        // A chunk at a time: the routes built for one batch stay small, and the rest waits
        // as bare prefixes.
        self.pending.sort_unstable();
        self.pending.dedup();
        let rest = self.pending.split_off(self.pending.len().min(APPLY_CHUNK));
        Some(Work::ApplyPrefixes(std::mem::replace(
            &mut self.pending,
            rest,
        )))
    }

    fn applied(&mut self, now: Instant, outcome: Outcome) -> Vec<Action> {
        let ok = match outcome {
            Outcome::Prefixes { ok } => ok,
            Outcome::Resync { took, fix } => {
                // A scan of a big table is not free: keep its share of the time small.
                self.resync_every = RESYNC_EVERY.max(took * 50);
                self.last_full = Some(now);
                match fix {
                    Some(fix) => {
                        self.pending.extend(fix);
                        self.first_full_done = true;
                        self.full_due = false;
                        true
                    }
                    None => false,
                }
            }
        };
        if !ok {
            self.full_due = true;
            return vec![Action::RetryAfter(RETRY_AFTER)];
        }
        if self.first_full_done && self.pending.is_empty() && !self.programmed {
            self.programmed = true;
            return vec![Action::MarkProgrammed];
        }
        Vec::new()
    }

    fn start_if_ready(&mut self, now: Instant) {
        if self.started.is_none() && self.local.is_some() && self.encap.is_some() {
            self.started = Some(now);
            self.last_full = Some(now);
            self.full_due = true;
        }
    }

    fn grace_over(&self, now: Instant) -> bool {
        self.started
            .is_some_and(|started| now - started > DELETE_GRACE_MAX)
    }

    fn settle(&mut self) {
        if !self.learned_settled {
            tracing::info!(
                "every peer has sent its routes; stale learned routes may now be removed"
            );
            self.learned_settled = true;
            self.full_due = true;
        }
    }
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
