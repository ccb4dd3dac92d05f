//! A datastore wrapper that counts round trips, for benchmarks and the round-trip budget tests.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts every call that reaches the wrapped store (one call = one round trip).
pub struct CountingStore {
    inner: Arc<dyn Datastore>,
    round_trips: AtomicU64,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Datastore>) -> CountingStore {
        CountingStore {
            inner,
            round_trips: AtomicU64::new(0),
        }
    }

    /// Round trips so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn tick(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Datastore for CountingStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.tick();
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResponse> {
        self.tick();
        self.inner.list(prefix).await
    }
    async fn list_keys(&self, prefix: &str) -> Result<ListResponse> {
        self.tick();
        self.inner.list_keys(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.tick();
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch> {
        self.tick();
        self.inner.watch(prefix, from_revision).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.tick();
        self.inner.compact(revision).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.tick();
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.tick();
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.tick();
        self.inner.lease_revoke(lease).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
