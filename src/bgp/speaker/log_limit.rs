//! A peer cannot flood the log: per session and kind of error, the first occurrence is
//! logged in full (the hex of the message capped, `session::io`), later ones are counted
//! and the count is logged at most every `REPORT_EVERY`.
//!
//! Data flow: `record_error` (speaker.rs) asks `ErrorLog::admit` for each `SessionError`
//! the peer's session reports; the totals per kind go to `PeerStatus::errors`
//! (`routectl status -o json`). Counts live as long as the peer's entry (a peer that
//! reconnects keeps its totals and its quiet period).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// At most one count line per kind and peer in this time.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What to log for one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first of its kind: log it in full.
    Full,
    /// Log a count: this many more since the last line.
    Count { suppressed: u64, total: u64 },
    /// Only count it.
    Quiet,
}

#[derive(Debug, Clone)]
struct KindLog {
    total: u64,
    unreported: u64,
    last_line: Instant,
}

/// One peer's error counts.
#[derive(Debug, Clone, Default)]
pub struct ErrorLog {
    kinds: BTreeMap<&'static str, KindLog>,
}

impl ErrorLog {
    pub fn admit(&mut self, kind: &'static str, now: Instant) -> Verdict {
        let Some(log) = self.kinds.get_mut(kind) else {
            self.kinds.insert(
                kind,
                KindLog {
                    total: 1,
                    unreported: 0,
                    last_line: now,
                },
            );
            return Verdict::Full;
        };
        log.total += 1;
        log.unreported += 1;
        if now.duration_since(log.last_line) < REPORT_EVERY {
            return Verdict::Quiet;
        }
        log.last_line = now;
        let suppressed = std::mem::take(&mut log.unreported);
        Verdict::Count {
            suppressed,
            total: log.total,
        }
    }

    /// Every kind seen, with its total.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        self.kinds
            .iter()
            .map(|(kind, log)| ((*kind).to_owned(), log.total))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_full_then_quiet_then_one_count_per_period_per_kind() {
        let start = Instant::now();
        let mut log = ErrorLog::default();
        assert_eq!(log.admit("decode", start), Verdict::Full);
        assert_eq!(log.admit("malformed_attribute", start), Verdict::Full);
        for i in 1..1000 {
            assert_eq!(
                log.admit("decode", start + Duration::from_millis(i)),
                Verdict::Quiet
            );
        }
        assert_eq!(
            log.admit("decode", start + REPORT_EVERY),
            Verdict::Count {
                suppressed: 1000,
                total: 1001
            }
        );
        assert_eq!(
            log.admit("decode", start + REPORT_EVERY + Duration::from_secs(1)),
            Verdict::Quiet
        );
        let totals = log.totals();
        assert_eq!(totals["decode"], 1002);
        assert_eq!(totals["malformed_attribute"], 1);
    }
}
