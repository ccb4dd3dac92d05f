//! Get-modify-compare-and-swap of one JSON record, with a bounded number of attempts.
//!
//! ```text
//!  get key ──> decode (None: absent) ──> change(current) ──None──> done, nothing written
//!                                              │ Some(new)
//!                                              v
//!               txn: mod_revision(key) == read revision ? put : (conflict → read again)
//! ```
//! The one way the agent and routectl rewrite a small record (a Node, the BGP configuration):
//! a conflict means someone wrote in between, so the change is computed again on the fresh
//! value; after [`UPDATE_ATTEMPTS`] conflicts in a row the update gives up with an error naming
//! the key. An absent key is created (a compare on revision 0 means "absent").

use super::{decode_json, encode_json, Datastore, DatastoreError};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::{Debug, Display};
use thiserror::Error;

/// Conflicts in a row after which [`update_json`] gives up.
pub const UPDATE_ATTEMPTS: usize = 100;

/// Why an [`update_json`] failed. `E` is the error of the caller's change.
#[derive(Debug, Error)]
pub enum UpdateError<E: Debug + Display> {
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    #[error("{key} changed concurrently {attempts} times in a row; giving up")]
    TooManyConflicts { key: String, attempts: usize },
    #[error("{key}: {reason:#}")]
    Rejected { key: String, reason: E },
}

/// Reads `key`, lets `change` compute the new record from the current one (`None`: absent),
/// and writes it if the key did not change meanwhile; on a conflict, reads and asks again.
/// `change` returns `Ok(None)` to leave the record as it is. Returns the record written, or
/// `None` when nothing was written.
pub async fn update_json<T, E>(
    store: &dyn Datastore,
    key: &str,
    mut change: impl FnMut(Option<T>) -> Result<Option<T>, E>,
) -> Result<Option<T>, UpdateError<E>>
where
    T: Serialize + DeserializeOwned,
    E: Debug + Display,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let (current, revision) = match store.get(key).await? {
            Some(kv) => (Some(decode_json::<T>(&kv)?), kv.mod_revision),
            None => (None, 0),
        };
        let next = change(current).map_err(|reason| UpdateError::Rejected {
            key: key.to_string(),
            reason,
        })?;
        let Some(next) = next else {
            return Ok(None);
        };
        match store.update(key, encode_json(&next), revision).await {
            Ok(_) => return Ok(Some(next)),
            Err(DatastoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(UpdateError::TooManyConflicts {
        key: key.to_string(),
        attempts: UPDATE_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::sqlite::SqliteStore;
    use crate::datastore::{get_json, Datastore};
    use std::convert::Infallible;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, Arc<dyn Datastore>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("update.db");
        let store = SqliteStore::open(path.to_str().unwrap(), "/t/").unwrap();
        (dir, Arc::new(store))
    }

    async fn increment(store: &dyn Datastore, times: usize) {
        for _ in 0..times {
            update_json::<u64, Infallible>(store, "counter", |n| Ok(Some(n.unwrap_or(0) + 1)))
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn two_racing_writers_lose_no_update() {
        let (_dir, store) = store();
        let (a, b) = (store.clone(), store.clone());
        let first = tokio::spawn(async move { increment(a.as_ref(), 50).await });
        let second = tokio::spawn(async move { increment(b.as_ref(), 50).await });
        first.await.unwrap();
        second.await.unwrap();
        let (count, _) = get_json::<u64>(store.as_ref(), "counter")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(count, 100);
    }

    #[tokio::test]
    async fn an_unchanged_record_is_not_written() {
        let (_dir, store) = store();
        increment(store.as_ref(), 1).await;
        let before = store.get("counter").await.unwrap().unwrap().mod_revision;
        let written = update_json::<u64, Infallible>(store.as_ref(), "counter", |_| Ok(None))
            .await
            .unwrap();
        assert_eq!(written, None);
        let after = store.get("counter").await.unwrap().unwrap().mod_revision;
        assert_eq!(before, after);
    }

    #[tokio::test]
    async fn endless_conflicts_give_up_naming_the_key() {
        let (_dir, store) = store();
        increment(store.as_ref(), 1).await;
        // Another writer gets in between every read and write of this update.
        let rival = store.clone();
        let mut reads = 0;
        let result = update_json::<u64, Infallible>(store.as_ref(), "counter", |n| {
            reads += 1;
            let rival = rival.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
                    .block_on(increment(rival.as_ref(), 1))
            })
            .join()
            .unwrap();
            Ok(n.map(|n| n + 100))
        })
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, UpdateError::TooManyConflicts { key, attempts }
                if key == "counter" && *attempts == UPDATE_ATTEMPTS),
            "{err}"
        );
        assert_eq!(reads, UPDATE_ATTEMPTS);
        assert!(err.to_string().contains("counter"), "{err}");
    }

    #[tokio::test]
    async fn a_rejected_change_names_the_key_and_writes_nothing() {
        let (_dir, store) = store();
        let err = update_json::<u64, String>(store.as_ref(), "counter", |_| Err("no".into()))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "counter: no");
        assert!(store.get("counter").await.unwrap().is_none());
    }
}
