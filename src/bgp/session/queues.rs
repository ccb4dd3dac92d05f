//! The bounded queues of a session: what a peer can make us hold is capped.
//!
//! ```text
//!   socket ──> reader ──(bounded mpsc, READ_EVENTS)──> session ──SessionEvent::Routes──> speaker
//!                 ^ waits before each socket read while           │ RouteBacklog::queued()
//!                 │ the speaker holds ROUTE_BACKLOG UPDATEs       │ (the speaker calls done()
//!                 └──────── RouteBacklog ◄────────────────────────┘  after each one)
//!
//!   session ──WriteQueue::push (bytes counted; over the cap: Err, the session sends Cease)──>
//!   writer task ──> socket (the count drops as each message is written)
//! ```
//! A flooding peer: its reader stops reading the socket while the speaker is behind, so TCP
//! flow control slows the peer and the speaker's queue holds at most `ROUTE_BACKLOG` of its
//! UPDATEs (plus what one socket read decoded). A peer that stops reading: our writes to it
//! queue up to the cap in bytes, then the session sends Cease/Out of Resources and closes.
//! A NOTIFICATION is queued past the cap (it is the last message of the connection).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

/// IoEvents a reader may queue to its session before it waits.
pub const READ_EVENTS: usize = 64;
/// UPDATEs of one peer the speaker may hold before that peer's reader waits.
pub const ROUTE_BACKLOG: usize = 64;
/// Default cap of one peer's writer queue, in bytes.
pub const DEFAULT_WRITE_QUEUE_CAP: usize = 32 * 1024 * 1024;

/// The UPDATEs of one peer handed to the speaker and not yet processed.
#[derive(Debug)]
pub struct RouteBacklog {
    queued: AtomicUsize,
    cap: usize,
    room: Notify,
    /// The highest `queued` seen.
    peak: AtomicUsize,
    /// Times a reader waited for room (each one a pause in reading the socket).
    waits: AtomicU64,
}

impl RouteBacklog {
    pub fn new(cap: usize) -> Arc<RouteBacklog> {
        Arc::new(RouteBacklog {
            queued: AtomicUsize::new(0),
            cap: cap.max(1),
            room: Notify::new(),
            peak: AtomicUsize::new(0),
            waits: AtomicU64::new(0),
        })
    }

    /// One more UPDATE handed to the speaker.
    pub(super) fn add(&self) {
        let now = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// The speaker processed one UPDATE of this peer.
    pub fn done(&self) {
        let before = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before.is_ok_and(|n| n <= self.cap) {
            self.room.notify_waiters();
        }
    }

    /// Waits until the speaker holds fewer than the cap.
    pub(super) async fn wait_room(&self) {
        let mut waited = false;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queued.load(Ordering::Acquire) < self.cap {
                return;
            }
            if !waited {
                waited = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            notified.await;
        }
    }

    /// UPDATEs queued at the speaker now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The most ever queued at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Times the reader paused for room.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

/// The writer queues of one session (all its connections, one after another): the most ever
/// queued on one connection, and how often a cap was hit.
#[derive(Debug, Default)]
pub struct WriteStats {
    peak: AtomicUsize,
    overflows: AtomicU64,
}

impl WriteStats {
    /// The most bytes ever queued on one connection at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Times the cap was hit (each one a Cease).
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }
}

/// Bytes queued on one connection and not yet written, shared with its writer task (which
/// takes each message off once written). Dropped with the connection: what an aborted
/// writer never wrote goes with it.
#[derive(Debug, Default)]
pub(super) struct Queued(AtomicUsize);

impl Queued {
    pub(super) fn written(&self, bytes: usize) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(bytes))
            });
    }

    #[cfg(test)]
    fn now(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// What the writer task does.
#[derive(Debug)]
pub(super) enum WriteOp {
    Bytes(Vec<u8>),
    /// Messages shared with the other members of an update group.
    Shared(Vec<crate::bgp::update_groups::Encoded>),
    Close,
}

impl WriteOp {
    /// Bytes it writes.
    pub(super) fn len(&self) -> usize {
        match self {
            WriteOp::Bytes(bytes) => bytes.len(),
            WriteOp::Shared(runs) => runs.iter().flat_map(|r| r.iter()).map(Vec::len).sum(),
            WriteOp::Close => 0,
        }
    }
}

/// The writer queue was over its cap; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Overflow {
    pub(super) queued: usize,
    pub(super) cap: usize,
}

/// The session's end of one connection's writer queue, capped in bytes.
#[derive(Debug)]
pub(super) struct WriteQueue {
    tx: mpsc::UnboundedSender<WriteOp>,
    queued: Arc<Queued>,
    stats: Arc<WriteStats>,
    cap: usize,
}

impl WriteQueue {
    /// A queue, and the writer task's end: the messages and the byte count to lower.
    pub(super) fn new(
        stats: Arc<WriteStats>,
        cap: usize,
    ) -> (WriteQueue, mpsc::UnboundedReceiver<WriteOp>, Arc<Queued>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Queued::default());
        let queue = WriteQueue {
            tx,
            queued: queued.clone(),
            stats,
            cap,
        };
        (queue, rx, queued)
    }

    /// Queues one message unless that would take the queue over its cap.
    pub(super) fn push(&self, bytes: Vec<u8>) -> Result<(), Overflow> {
        self.push_op(WriteOp::Bytes(bytes))
    }

    /// Queues shared messages (counted in full against the cap) unless over the cap.
    pub(super) fn push_shared(
        &self,
        runs: Vec<crate::bgp::update_groups::Encoded>,
    ) -> Result<(), Overflow> {
        self.push_op(WriteOp::Shared(runs))
    }

    fn push_op(&self, op: WriteOp) -> Result<(), Overflow> {
        let len = op.len();
        let reserved = self
            .queued
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n + len <= self.cap).then_some(n + len)
            });
        match reserved {
            Ok(before) => {
                self.stats.peak.fetch_max(before + len, Ordering::Relaxed);
                self.send(op, len);
                Ok(())
            }
            Err(queued) => {
                self.stats.overflows.fetch_add(1, Ordering::Relaxed);
                Err(Overflow {
                    queued,
                    cap: self.cap,
                })
            }
        }
    }

    /// Queues one message past the cap (a NOTIFICATION: the connection's last).
    pub(super) fn push_last(&self, bytes: Vec<u8>) {
        let len = bytes.len();
        self.queued.0.fetch_add(len, Ordering::AcqRel);
        self.send(WriteOp::Bytes(bytes), len);
    }

    fn send(&self, op: WriteOp, len: usize) {
        if self.tx.send(op).is_err() {
            // The writer is gone: what it would have written is not queued.
            self.queued.written(len);
        }
    }

    /// Bytes queued now.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queued.now()
    }

    /// Flush what is queued, then close.
    pub(super) fn close(&self) {
        let _ = self.tx.send(WriteOp::Close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_queue_refuses_a_message_over_the_cap_and_counts_it() {
        let stats = Arc::new(WriteStats::default());
        let (queue, mut rx, queued) = WriteQueue::new(stats.clone(), 100);
        assert!(queue.push(vec![0; 60]).is_ok());
        assert_eq!(
            queue.push(vec![0; 50]),
            Err(Overflow {
                queued: 60,
                cap: 100
            })
        );
        assert_eq!(
            (queue.queued(), stats.peak(), stats.overflows()),
            (60, 60, 1)
        );
        queue.push_last(vec![0; 50]);
        assert_eq!(queue.queued(), 110, "a NOTIFICATION goes past the cap");
        assert!(matches!(rx.try_recv(), Ok(WriteOp::Bytes(b)) if b.len() == 60));
        queued.written(60);
        assert!(queue.push(vec![0; 40]).is_ok(), "room again once written");
    }

    #[tokio::test]
    async fn route_backlog_holds_the_reader_until_the_speaker_catches_up() {
        let backlog = RouteBacklog::new(2);
        backlog.add();
        backlog.add();
        let waiting = {
            let backlog = backlog.clone();
            tokio::spawn(async move { backlog.wait_room().await })
        };
        for _ in 0..100 {
            if backlog.waits() > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "the reader waits while the backlog is full"
        );
        backlog.done();
        waiting.await.unwrap();
        assert_eq!(
            (backlog.queued(), backlog.peak(), backlog.waits()),
            (1, 2, 1)
        );
        backlog.done();
        backlog.done();
        assert_eq!(backlog.queued(), 0, "never below zero");
    }
}
