//! A datastore wrapper that counts every request by operation and result into
//! `routed_datastore_requests_total{op,result}`; the agent wraps its store with it.

use super::{global, DatastoreLabels};
use crate::datastore::*;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Counts each call to the wrapped store (one call = one round trip).
pub struct MeteredStore {
    inner: Arc<dyn Datastore>,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn Datastore>) -> Arc<dyn Datastore> {
        Arc::new(MeteredStore { inner })
    }
}

fn count<T>(op: &str, result: Result<T>) -> Result<T> {
    let labels = DatastoreLabels {
        op: op.to_string(),
        result: if result.is_ok() { "success" } else { "error" }.to_string(),
    };
    global().datastore_requests.get_or_create(&labels).inc();
    result
}

#[async_trait]
impl Datastore for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        count("get", self.inner.get(key).await)
    }
    async fn list(&self, prefix: &str) -> Result<ListResponse> {
        count("list", self.inner.list(prefix).await)
    }
    async fn list_keys(&self, prefix: &str) -> Result<ListResponse> {
        count("list_keys", self.inner.list_keys(prefix).await)
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        count("txn", self.inner.txn(txn).await)
    }
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch> {
        count("watch", self.inner.watch(prefix, from_revision).await)
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        count("compact", self.inner.compact(revision).await)
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        count("lease_grant", self.inner.lease_grant(ttl).await)
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        count("lease_keep_alive", self.inner.lease_keep_alive(lease).await)
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        count("lease_revoke", self.inner.lease_revoke(lease).await)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
