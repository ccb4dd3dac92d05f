//! The three timers of each FSM (ConnectRetry, Hold, Keepalive) as deadlines.
//!
//! The FSM asks for a timer with `Output::StartTimer`; the session keeps the deadline in
//! the slot's `Timers`, sleeps until the earliest one of both slots, and feeds the expiry
//! back as an `Input`. RFC 4271 §10: ConnectRetry and keepalive intervals are jittered.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{Session, Which};
use crate::bgp::fsm::{Input, TimerKind};

/// The three timers of one FSM, as deadlines.
#[derive(Debug, Default)]
pub(super) struct Timers {
    pub(super) connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
}

impl Timers {
    pub(super) fn slot(&mut self, kind: TimerKind) -> &mut Option<Instant> {
        match kind {
            TimerKind::ConnectRetry => &mut self.connect_retry,
            TimerKind::Hold => &mut self.hold,
            TimerKind::Keepalive => &mut self.keepalive,
        }
    }

    pub(super) fn earliest(&self) -> Option<Instant> {
        [self.connect_retry, self.hold, self.keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// Take the timers that are due, in a fixed order.
    pub(super) fn take_expired(&mut self, now: Instant) -> Vec<TimerKind> {
        let mut due = Vec::new();
        for kind in [
            TimerKind::Hold,
            TimerKind::Keepalive,
            TimerKind::ConnectRetry,
        ] {
            let slot = self.slot(kind);
            if slot.is_some_and(|at| at <= now) {
                *slot = None;
                due.push(kind);
            }
        }
        due
    }
}

/// Sleep until the deadline, or forever without one.
pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// RFC 4271 §10: ConnectRetry and keepalive intervals are jittered to 75–100 %.
pub(super) fn jitter(kind: TimerKind, duration: Duration) -> Duration {
    match kind {
        TimerKind::Hold => duration,
        TimerKind::ConnectRetry | TimerKind::Keepalive => {
            duration.mul_f64(rand::thread_rng().gen_range(0.75..=1.0))
        }
    }
}

impl Session {
    pub(super) fn earliest_deadline(&self) -> Option<Instant> {
        let second = self.second.as_ref().and_then(|s| s.timers.earliest());
        [self.main.timers.earliest(), second]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        let due_main = self.main.timers.take_expired(now);
        for kind in due_main {
            match kind {
                TimerKind::ConnectRetry => self.wake_main(false),
                TimerKind::Hold => self.feed(Which::Main, Input::HoldTimerExpired),
                TimerKind::Keepalive => self.feed(Which::Main, Input::KeepaliveTimerExpired),
            }
        }
        let due_second = self
            .second
            .as_mut()
            .map(|s| s.timers.take_expired(now))
            .unwrap_or_default();
        for kind in due_second {
            let input = match kind {
                TimerKind::ConnectRetry => continue,
                TimerKind::Hold => Input::HoldTimerExpired,
                TimerKind::Keepalive => Input::KeepaliveTimerExpired,
            };
            self.feed(Which::Second, input);
        }
    }
}
