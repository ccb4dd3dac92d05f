//! The one loop shape of the agent's reconcilers (felix's): a manager computes what it wants
//! from its input with no I/O, one apply phase reads the kernel back, diffs and writes, and the
//! driver decides when a pass runs.
//!
//! ```text
//!  input (watch channel, fed by the follower) ──┐
//!  kernel events (route-deletion feed, repair) ──┤  queued wake-ups drained:     Reconciler::
//!  resync timer (every `resync_every`) ─────────┼─> one pass ──> desired(&input) ──> apply(desired)
//!  retry after a failed apply (back-off) ───────┘                  (pure)          (kernel I/O)
//!                                                                                      │
//!                          ReconcilerStats (passes, passes that changed something, last error)
//! ```
//! No pass runs before the input's first value (`None` until the datastore was read): until
//! then the manager does not know what it wants, and the kernel is left as it is. A failed
//! apply is retried after `first_retry`, doubling up to the resync period; any other wake-up
//! in between runs the pass sooner. Events of the kernel feed are handed to the reconciler
//! ([`Reconciler::on_event`]) before the pass, so a reconciler that repairs per prefix (the
//! route reconciler) can collect them; one that repairs with a whole pass ignores them. A
//! reconciler may take events at its own pace ([`Reconciler::wants_events`]: the route
//! reconciler takes a chunk of speaker changes at a time); what it leaves stays queued in the
//! feed, and the pass is told so (`Wake::backlog`). The feed is an `mpsc` channel or any
//! [`Feed`] (the route reconciler's merges speaker change batches and route-deletion repairs).
//! An apply may report more work queued (`Applied::more`), and the driver goes round again at
//! once.
//!
//! The counters live in an `Arc<ReconcilerStats>` registered on the agent's state by name
//! (`AgentState::reconcilers`), for the local API.

use async_trait::async_trait;
use futures::FutureExt;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::warn;

/// First pause after a failed apply (doubling up to the resync period).
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What woke a pass; wake-ups that queued up meanwhile are merged into one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    /// The input changed (or it is the first pass).
    pub input: bool,
    /// The kernel feed reported something (a route of ours deleted, lost events).
    pub kernel: bool,
    /// The resync timer: read the kernel back in full.
    pub timer: bool,
    /// A retry of a failed apply.
    pub retry: bool,
    /// The feed holds events the reconciler did not take yet ([`Reconciler::wants_events`]).
    pub backlog: bool,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Kernel objects written or removed.
    pub changes: usize,
    /// Work is left (a chunked apply): run another pass at once.
    pub more: bool,
}

impl Applied {
    pub fn changes(changes: usize) -> Applied {
        Applied {
            changes,
            more: false,
        }
    }
}

/// One reconciler: a pure desired-state computation and one apply phase.
#[async_trait]
pub trait Reconciler: Send {
    /// What it follows (the value of its input watch channel once known).
    type Input: Send + Sync;
    /// What it wants, computed from the input without I/O.
    type Desired: Send;
    /// An event of its kernel feed (`()` for a bare wake-up).
    type Event: Send;

    /// The name its counters are registered under (`workloads`, `tunnels`, `nat`...).
    fn name(&self) -> &'static str;
    /// What the input wants (no I/O: called with the input borrowed).
    fn desired(&self, input: &Self::Input) -> Self::Desired;
    /// Takes note of a kernel event before the next pass.
    fn on_event(&mut self, _event: Self::Event) {}
    /// Whether to take another event from the feed now (`false`: leave it queued until after
    /// the next pass; flow control for a reconciler that works through a backlog in chunks).
    fn wants_events(&self) -> bool {
        true
    }
    /// Reads the kernel back, diffs against `desired`, writes the difference.
    async fn apply(&mut self, desired: Self::Desired, wake: Wake) -> anyhow::Result<Applied>;
}

/// Where a reconciler's events come from: a channel, or several merged into one.
#[async_trait]
pub trait Feed<E>: Send {
    /// The next event; `None` once the feed has closed.
    async fn recv(&mut self) -> Option<E>;
    /// An event already queued, if any.
    fn try_recv(&mut self) -> Option<E>;
    /// Whether events are queued (what `Wake::backlog` reports).
    fn queued(&self) -> bool;
}

#[async_trait]
impl<E: Send> Feed<E> for mpsc::Receiver<E> {
    async fn recv(&mut self) -> Option<E> {
        mpsc::Receiver::recv(self).await
    }

    fn try_recv(&mut self) -> Option<E> {
        mpsc::Receiver::try_recv(self).ok()
    }

    fn queued(&self) -> bool {
        !self.is_empty()
    }
}

/// When passes run besides input changes.
pub struct Triggers<E> {
    /// The kernel feed (`None`: repaired by the timer only).
    pub kernel: Option<Box<dyn Feed<E>>>,
    pub resync_every: Duration,
    pub first_retry: Duration,
}

impl<E> Triggers<E> {
    /// A resync every `resync_every`, retries from [`FIRST_RETRY`], no kernel feed.
    pub fn every(resync_every: Duration) -> Triggers<E> {
        Triggers {
            kernel: None,
            resync_every,
            first_retry: FIRST_RETRY,
        }
    }

    /// Retries a failed apply at once, without back-off: for a reconciler whose apply pauses
    /// itself as its planner asks (the route reconciler).
    pub fn retry_at_once(mut self) -> Triggers<E> {
        self.first_retry = Duration::ZERO;
        self
    }
}

impl<E: Send + 'static> Triggers<E> {
    pub fn with_kernel(self, kernel: mpsc::Receiver<E>) -> Triggers<E> {
        self.with_feed(kernel)
    }

    pub fn with_feed(mut self, feed: impl Feed<E> + 'static) -> Triggers<E> {
        self.kernel = Some(Box::new(feed));
        self
    }
}

/// A reconciler's counters, shared with the local API (cheap to update and to read).
#[derive(Debug, Default)]
pub struct ReconcilerStats {
    passes: AtomicU64,
    passes_changed: AtomicU64,
    changes: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Passes run (failed ones included).
    pub passes: u64,
    /// Passes that changed something in the kernel.
    pub passes_changed: u64,
    /// Kernel objects changed, over all passes.
    pub changes: u64,
    /// Passes whose apply failed.
    pub failures: u64,
    /// Failed passes since the last one that succeeded (0: the last pass succeeded).
    pub consecutive_failures: u64,
    /// The error of the last failed pass, kept after a later success.
    pub last_error: Option<String>,
}

impl ReconcilerStats {
    fn record(&self, result: &anyhow::Result<Applied>) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(applied) => {
                if applied.changes > 0 {
                    self.passes_changed.fetch_add(1, Ordering::Relaxed);
                    self.changes
                        .fetch_add(applied.changes as u64, Ordering::Relaxed);
                }
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(format!("{e:#}"));
                }
            }
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            passes: self.passes.load(Ordering::Relaxed),
            passes_changed: self.passes_changed.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|last| last.clone()),
        }
    }
}

/// Runs `reconciler` until its input's sender is dropped.
pub async fn run<R: Reconciler>(
    mut reconciler: R,
    mut input: watch::Receiver<Option<R::Input>>,
    triggers: Triggers<R::Event>,
    stats: Arc<ReconcilerStats>,
) {
    let Triggers {
        mut kernel,
        resync_every,
        first_retry,
    } = triggers;
    let mut ticker = tokio::time::interval_at(Instant::now() + resync_every, resync_every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retry_in = first_retry;
    let mut retry_at: Option<Instant> = None;
    let mut wake = Wake {
        input: true,
        ..Wake::default()
    };
    loop {
        drain(
            &mut reconciler,
            &mut input,
            &mut kernel,
            &mut ticker,
            &mut wake,
        );
        if retry_at.is_some_and(|at| at <= Instant::now()) {
            wake.retry = true;
        }
        let desired = input
            .borrow_and_update()
            .as_ref()
            .map(|i| reconciler.desired(i));
        let mut more = false;
        if let Some(desired) = desired {
            let started = Instant::now();
            let result = reconciler.apply(desired, wake).await;
            crate::metrics::global().observe_reconcile(reconciler.name(), started.elapsed());
            stats.record(&result);
            match result {
                Ok(applied) => {
                    more = applied.more;
                    retry_at = None;
                    retry_in = first_retry;
                }
                Err(e) => {
                    warn!(reconciler = reconciler.name(), error = %format!("{e:#}"),
                        retry_in = ?retry_in, "reconcile failed; retrying");
                    retry_at = Some(Instant::now() + retry_in);
                    retry_in = (retry_in * 2).min(resync_every.max(first_retry));
                }
            }
        }
        wake = Wake::default();
        if more {
            continue;
        }
        tokio::select! {
            changed = input.changed() => match changed {
                Ok(()) => wake.input = true,
                Err(_) => return,
            },
            event = next_event(&mut kernel), if reconciler.wants_events() => {
                reconciler.on_event(event);
                wake.kernel = true;
            }
            _ = ticker.tick() => wake.timer = true,
            _ = sleep_until(retry_at) => wake.retry = true,
        }
    }
}

/// Merges every wake-up already queued into `wake` (one pass covers them all).
fn drain<R: Reconciler>(
    reconciler: &mut R,
    input: &mut watch::Receiver<Option<R::Input>>,
    kernel: &mut Option<Box<dyn Feed<R::Event>>>,
    ticker: &mut tokio::time::Interval,
    wake: &mut Wake,
) {
    wake.input |= input.has_changed().unwrap_or(false);
    if let Some(feed) = kernel.as_mut() {
        while reconciler.wants_events() {
            let Some(event) = feed.try_recv() else { break };
            reconciler.on_event(event);
            wake.kernel = true;
        }
        wake.backlog = feed.queued();
    }
    if ticker.tick().now_or_never().is_some() {
        wake.timer = true;
    }
}

/// The next kernel event; pending forever without a feed (or once it closed).
async fn next_event<E>(kernel: &mut Option<Box<dyn Feed<E>>>) -> E {
    if let Some(feed) = kernel.as_mut() {
        if let Some(event) = feed.recv().await {
            return event;
        }
        *kernel = None;
    }
    std::future::pending().await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
