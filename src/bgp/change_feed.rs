//! The speaker's feed of changed prefixes to the route reconciler, coalesced.
//!
//! ```text
//!   speaker (each RIB operation) ── ChangeSender::send(prefixes) ──> pending: a sorted set
//!   route reconciler <── ChangeFeed::recv / try_recv: up to CHANGE_CHUNK prefixes at a time,
//!                        sweeping the set in prefix order from where the last take ended
//! ```
//! A prefix that changes again before the reconciler took it is queued once: the reconciler
//! reads its route from the RIB when it applies it, so only "this prefix changed" matters.
//! Memory is bounded by the number of distinct prefixes (the RIB's size), however many
//! UPDATEs touch them, instead of one Vec per RIB operation; the set is a dense
//! [`PrefixSet`] (about 6 bytes per IPv4 prefix: 6 MB with all of a 1M-prefix table queued,
//! where a `VecDeque` in change order beside a `HashSet` took 39 MB). The sweep keeps it fair:
//! every queued prefix is taken within one pass over the set, however often the prefixes
//! before it change again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnetwork::IpNetwork;
use tokio::sync::Notify;

use crate::bgp::prefix_table::PrefixSet;

/// Most prefixes one `recv` or `try_recv` hands out.
pub const CHANGE_CHUNK: usize = 4096;

#[derive(Debug, Default)]
struct Pending {
    set: PrefixSet,
    /// The last prefix taken: the next take starts after it (then wraps around).
    cursor: Option<IpNetwork>,
    /// The sender is gone: nothing more will come.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    ready: Notify,
    receiver_gone: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves a consistent set (inserts are atomic).
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The speaker's end.
#[derive(Debug)]
pub struct ChangeSender {
    shared: Arc<Shared>,
}

/// The reconciler's end.
#[derive(Debug)]
pub struct ChangeFeed {
    shared: Arc<Shared>,
}

/// A new feed: the sender for the speaker, the receiver for the reconciler.
pub fn change_feed() -> (ChangeSender, ChangeFeed) {
    let shared = Arc::new(Shared::default());
    (
        ChangeSender {
            shared: shared.clone(),
        },
        ChangeFeed { shared },
    )
}

impl ChangeSender {
    /// Adds the changed prefixes (each one once until taken); false when the receiver is gone.
    pub fn send(&self, prefixes: impl IntoIterator<Item = IpNetwork>) -> bool {
        if self.shared.receiver_gone.load(Ordering::Acquire) {
            return false;
        }
        let mut pending = self.shared.lock();
        let mut added = false;
        for prefix in prefixes {
            added |= pending.set.insert(prefix);
        }
        drop(pending);
        if added {
            self.shared.ready.notify_one();
        }
        true
    }
}

impl Drop for ChangeSender {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }
}

impl ChangeFeed {
    /// The next changed prefixes (up to `CHANGE_CHUNK`), waiting for some; `None` once the
    /// sender is gone and everything was taken.
    pub async fn recv(&mut self) -> Option<Vec<IpNetwork>> {
        loop {
            let notified = self.shared.ready.notified();
            {
                let mut pending = self.shared.lock();
                if !pending.set.is_empty() {
                    return Some(take(&mut pending));
                }
                if pending.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The changed prefixes queued now (up to `CHANGE_CHUNK`), if any.
    pub fn try_recv(&mut self) -> Option<Vec<IpNetwork>> {
        let mut pending = self.shared.lock();
        (!pending.set.is_empty()).then(|| take(&mut pending))
    }

    /// Nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().set.is_empty()
    }

    /// Distinct prefixes queued.
    pub fn len(&self) -> usize {
        self.shared.lock().set.len()
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
    }
}

/// Up to `CHANGE_CHUNK` prefixes after the cursor, then from the start of the set.
fn take(pending: &mut Pending) -> Vec<IpNetwork> {
    let mut taken = pending.set.drain_after(pending.cursor, CHANGE_CHUNK);
    if taken.len() < CHANGE_CHUNK && pending.cursor.is_some() {
        let more = pending.set.drain_after(None, CHANGE_CHUNK - taken.len());
        taken.extend(more);
    }
    pending.cursor = taken.last().copied();
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(i: u32) -> IpNetwork {
        IpNetwork::V4(ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::from(i << 8), 24).unwrap())
    }

    #[tokio::test]
    async fn repeated_changes_of_one_prefix_are_queued_once() {
        let (tx, mut rx) = change_feed();
        assert!(tx.send([prefix(2), prefix(1)]));
        for _ in 0..1000 {
            assert!(tx.send([prefix(1), prefix(2)]));
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.recv().await, Some(vec![prefix(1), prefix(2)]));
        assert!(rx.is_empty());
        assert!(tx.send([prefix(1)]));
        assert_eq!(
            rx.try_recv(),
            Some(vec![prefix(1)]),
            "queued again once taken"
        );
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn feed_hands_out_chunks_and_ends_after_the_sender_is_gone() {
        let (tx, mut rx) = change_feed();
        tx.send((0..CHANGE_CHUNK as u32 + 3).map(prefix));
        drop(tx);
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(CHANGE_CHUNK));
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn takes_sweep_on_from_the_last_one_so_changes_before_it_wait_their_turn() {
        let (tx, mut rx) = change_feed();
        let chunk = CHANGE_CHUNK as u32;
        tx.send((0..chunk + 10).map(prefix));
        let first = rx.recv().await.unwrap();
        assert_eq!(first.last(), Some(&prefix(chunk - 1)));
        // The first prefixes change again: the ten queued after the cursor go first.
        tx.send((0..5).map(prefix));
        let second = rx.recv().await.unwrap();
        let want: Vec<IpNetwork> = (chunk..chunk + 10).chain(0..5).map(prefix).collect();
        assert_eq!(second, want);
        assert!(rx.is_empty());
    }

    #[test]
    fn sender_learns_the_receiver_is_gone() {
        let (tx, rx) = change_feed();
        drop(rx);
        assert!(!tx.send([prefix(1)]));
    }
}
