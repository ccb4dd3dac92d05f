//! List-then-watch with automatic resync: the way every consumer follows a prefix.
//!
//! A consumer wants "the current state, then every change, and never a gap". This lists the
//! prefix, watches from the revision after the list, and when the watch reports that history was
//! compacted (the consumer fell too far behind, or the store was compacted), lists again and
//! hands over a fresh snapshot instead of an event stream with a hole in it.

use super::*;

/// What a synced prefix delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// The full state under the prefix at `revision`; replaces everything seen before.
    Snapshot {
        kvs: Vec<KeyValue>,
        revision: Revision,
    },
    Put(KeyValue),
    Delete {
        key: String,
        mod_revision: Revision,
    },
}

/// Follows `prefix`: first a snapshot, then changes; a new snapshot after any compaction or
/// watch failure. Runs until the receiver is dropped.
pub fn watch_with_resync(store: Arc<dyn Datastore>, prefix: String) -> mpsc::Receiver<SyncEvent> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        while !tx.is_closed() {
            match follow_once(store.as_ref(), &prefix, &tx).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(store = %store.describe(), %prefix, error = %e,
                        "watch failed; resyncing after {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    rx
}

/// One list + watch cycle; returns Ok when a resync is needed.
async fn follow_once(
    store: &dyn Datastore,
    prefix: &str,
    tx: &mpsc::Sender<SyncEvent>,
) -> Result<()> {
    let listed = store.list(prefix).await?;
    let from = listed.revision + 1;
    if tx
        .send(SyncEvent::Snapshot {
            kvs: listed.kvs,
            revision: listed.revision,
        })
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut watch = store.watch(prefix, from).await?;
    while let Some(event) = watch.next().await {
        let out = match event? {
            WatchEvent::Put(kv) => SyncEvent::Put(kv),
            WatchEvent::Delete { key, mod_revision } => SyncEvent::Delete { key, mod_revision },
            WatchEvent::Compacted { compact_revision } => {
                tracing::info!(%prefix, compact_revision, "watch history compacted; resyncing");
                return Ok(());
            }
        };
        if tx.send(out).await.is_err() {
            return Ok(());
        }
    }
    Err(DatastoreError::Backend {
        context: format!("watch {prefix}"),
        reason: "watch ended".into(),
    })
}
