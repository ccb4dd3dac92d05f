//! Per-peer message counters: the session task counts every message it decodes and every
//! message it queues for the wire, by type; the speaker reads them for status and metrics.
//! Atomics, so counting costs no lock and no message to the speaker.

use crate::bgp::packet::Message;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts by message type, as status reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    pub open: u64,
    pub update: u64,
    pub notification: u64,
    pub keepalive: u64,
    pub route_refresh: u64,
}

/// One peer's counters, shared by its session task (writer) and the speaker (reader).
#[derive(Debug, Default)]
pub struct MessageCounters {
    received: [AtomicU64; 5],
    sent: [AtomicU64; 5],
}

/// Index of a message type in the counter arrays.
pub(crate) const UPDATE: usize = 1;

pub(crate) fn index(message: &Message) -> usize {
    match message {
        Message::Open(_) => 0,
        Message::Update(_) => UPDATE,
        Message::Notification(_) => 2,
        Message::Keepalive => 3,
        Message::RouteRefresh(_) => 4,
    }
}

fn snapshot(counters: &[AtomicU64; 5]) -> MessageCounts {
    let get = |i: usize| counters[i].load(Ordering::Relaxed);
    MessageCounts {
        open: get(0),
        update: get(1),
        notification: get(2),
        keepalive: get(3),
        route_refresh: get(4),
    }
}

/// Equal when they count the same (configs holding them compare by value).
impl PartialEq for MessageCounters {
    fn eq(&self, other: &Self) -> bool {
        self.received_counts() == other.received_counts()
            && self.sent_counts() == other.sent_counts()
    }
}

impl Eq for MessageCounters {}

impl MessageCounters {
    pub fn received(&self, kind: usize, n: u64) {
        if let Some(c) = self.received.get(kind) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn sent(&self, kind: usize, n: u64) {
        if let Some(c) = self.sent.get(kind) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn received_counts(&self) -> MessageCounts {
        snapshot(&self.received)
    }

    pub fn sent_counts(&self) -> MessageCounts {
        snapshot(&self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_under_their_message_type() {
        let c = MessageCounters::default();
        c.received(index(&Message::Keepalive), 2);
        c.sent(UPDATE, 3);
        assert_eq!(c.received_counts().keepalive, 2);
        assert_eq!(c.sent_counts().update, 3);
        assert_eq!(c.sent_counts().open, 0);
    }
}
