//! The speaker's feed of changed prefixes to the route reconciler, coalesced.
//!
//! ```text
//!   speaker (each RIB operation) ── ChangeSender::send(prefixes) ──> pending: a set, in order
//!                                                                    of first change
//!   route reconciler <── ChangeFeed::recv / try_recv: up to CHANGE_CHUNK prefixes at a time
//! ```
//! A prefix that changes again before the reconciler took it is queued once: the reconciler
//! reads its route from the RIB when it applies it, so only "this prefix changed" matters.
//! Memory is bounded by the number of distinct prefixes (the RIB's size), however many
//! UPDATEs touch them, instead of one Vec per RIB operation.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnetwork::IpNetwork;
use tokio::sync::Notify;

/// Most prefixes one `recv` or `try_recv` hands out.
pub const CHANGE_CHUNK: usize = 4096;

#[derive(Debug, Default)]
struct Pending {
    order: VecDeque<IpNetwork>,
    set: HashSet<IpNetwork>,
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
        let before = pending.order.len();
        for prefix in prefixes {
            if pending.set.insert(prefix) {
                pending.order.push_back(prefix);
            }
        }
        let added = pending.order.len() > before;
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
                if !pending.order.is_empty() {
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
        (!pending.order.is_empty()).then(|| take(&mut pending))
    }

    /// Nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().order.is_empty()
    }

    /// Distinct prefixes queued.
    pub fn len(&self) -> usize {
        self.shared.lock().order.len()
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
    }
}

fn take(pending: &mut Pending) -> Vec<IpNetwork> {
    let count = pending.order.len().min(CHANGE_CHUNK);
    let taken: Vec<IpNetwork> = pending.order.drain(..count).collect();
    for prefix in &taken {
        pending.set.remove(prefix);
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(i: u32) -> IpNetwork {
        IpNetwork::V4(ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::from(i << 8), 24).unwrap())
    }

    #[tokio::test]
    async fn repeated_changes_of_one_prefix_are_queued_once_in_first_change_order() {
        let (tx, mut rx) = change_feed();
        assert!(tx.send([prefix(2), prefix(1)]));
        for _ in 0..1000 {
            assert!(tx.send([prefix(1), prefix(2)]));
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.recv().await, Some(vec![prefix(2), prefix(1)]));
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

    #[test]
    fn sender_learns_the_receiver_is_gone() {
        let (tx, rx) = change_feed();
        drop(rx);
        assert!(!tx.send([prefix(1)]));
    }
}
