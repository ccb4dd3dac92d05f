//! One conformance suite, run against both backends: SQLite (always) and a real etcd started
//! for each test (under ROUTED_E2E=1). Each scenario is written once, below, against the trait.

mod common;

use routed::datastore::sync::{watch_with_resync, SyncEvent};
use routed::datastore::{Compare, Datastore, DatastoreError, Op, OpResult, Txn, Watch, WatchEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

async fn next_event(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(EVENT_TIMEOUT, watch.next())
        .await
        .expect("no watch event within 15 s")
        .expect("watch ended")
        .expect("watch error")
}

async fn crud_with_compare_and_swap(store: Arc<dyn Datastore>, _url: &str) {
    let r1 = store.create("a/one", b"1".to_vec(), 0).await.unwrap();
    assert!(matches!(
        store.create("a/one", b"x".to_vec(), 0).await,
        Err(DatastoreError::AlreadyExists { .. })
    ));
    let kv = store.get("a/one").await.unwrap().unwrap();
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"1"[..], r1, r1, 1)
    );

    match store.update("a/one", b"2".to_vec(), r1 - 1).await {
        Err(DatastoreError::Conflict {
            expected, found, ..
        }) => assert_eq!((expected, found), (r1 - 1, r1)),
        other => panic!("stale update must conflict, got {other:?}"),
    }
    let r2 = store.update("a/one", b"2".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get("a/one").await.unwrap().unwrap();
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"2"[..], r1, r2, 2)
    );

    // Update of an absent key with revision 0 creates it; with another revision it conflicts.
    assert!(matches!(
        store.update("a/none", b"x".to_vec(), 5).await,
        Err(DatastoreError::Conflict { found: 0, .. })
    ));

    assert!(matches!(
        store.delete("a/one", r1).await,
        Err(DatastoreError::Conflict { .. })
    ));
    store.delete("a/one", r2).await.unwrap();
    assert_eq!(store.get("a/one").await.unwrap(), None);
    assert!(matches!(
        store.delete("a/one", r2).await,
        Err(DatastoreError::NotFound { .. })
    ));
}

async fn multi_key_transactions(store: Arc<dyn Datastore>, _url: &str) {
    let ra = store.create("t/a", b"a".to_vec(), 0).await.unwrap();
    let txn = Txn {
        compare: vec![Compare::revision("t/a", ra), Compare::absent("t/b")],
        success: vec![
            Op::put("t/a", b"a2".to_vec()),
            Op::put("t/b", b"b".to_vec()),
            Op::get("t/a"),
        ],
        failure: vec![Op::get("t/a"), Op::get("t/b")],
    };
    let ok = store.txn(txn.clone()).await.unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.revision, ra + 1, "one transaction is one revision");
    let a = store.get("t/a").await.unwrap().unwrap();
    let b = store.get("t/b").await.unwrap().unwrap();
    assert_eq!((a.mod_revision, b.mod_revision), (ok.revision, ok.revision));
    // The same transaction again fails its compares and reads both keys back in the same call.
    let failed = store.txn(txn).await.unwrap();
    assert!(!failed.succeeded);
    assert_eq!(
        failed.revision, ok.revision,
        "a failed transaction writes nothing"
    );
    assert_eq!(failed.get(0).unwrap().value, b"a2");
    assert_eq!(failed.get(1).unwrap().value, b"b");
    // Deletes report whether they removed something.
    let del = Txn {
        compare: vec![],
        success: vec![Op::delete("t/b"), Op::delete("t/zzz")],
        failure: vec![],
    };
    let resp = store.txn(del).await.unwrap();
    assert_eq!(
        resp.results,
        vec![
            OpResult::Delete { deleted: true },
            OpResult::Delete { deleted: false }
        ]
    );
}

async fn list_by_prefix(store: Arc<dyn Datastore>, _url: &str) {
    for key in ["p/b", "p/a", "p/c/d", "pq/x", "o/z"] {
        store.create(key, key.as_bytes().to_vec(), 0).await.unwrap();
    }
    let listed = store.list("p/").await.unwrap();
    let keys: Vec<&str> = listed.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["p/a", "p/b", "p/c/d"],
        "sorted, and only under the prefix"
    );
    assert!(listed.revision >= listed.kvs.iter().map(|kv| kv.mod_revision).max().unwrap());
    assert_eq!(listed.kvs[0].value, b"p/a");
    let keys_only = store.list_keys("p/").await.unwrap();
    assert_eq!(keys_only.kvs.len(), 3);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
}

async fn watch_delivers_in_order(store: Arc<dyn Datastore>, _url: &str) {
    let mut watch = store.watch("w/", 0).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..40 {
        let key = format!("w/{}", i % 7);
        let rev = match store.get(&key).await.unwrap() {
            Some(kv) if i % 3 == 0 => {
                store.delete(&key, kv.mod_revision).await.unwrap();
                expected.push((key, None));
                continue;
            }
            Some(kv) => kv.mod_revision,
            None => 0,
        };
        store
            .update(&key, format!("v{i}").into_bytes(), rev)
            .await
            .unwrap();
        store
            .create(&format!("other/{i}"), vec![], 0)
            .await
            .unwrap(); // outside the prefix
        expected.push((key, Some(format!("v{i}").into_bytes())));
    }
    let mut last = 0;
    for (key, value) in expected {
        let event = next_event(&mut watch).await;
        assert!(event.revision() > last, "revisions increase");
        last = event.revision();
        match (event, value) {
            (WatchEvent::Put(kv), Some(v)) => assert_eq!((kv.key, kv.value), (key, v)),
            (WatchEvent::Delete { key: k, .. }, None) => assert_eq!(k, key),
            (event, value) => panic!("expected {key} {value:?}, got {event:?}"),
        }
    }
}

async fn watch_resumes_from_revision(store: Arc<dyn Datastore>, _url: &str) {
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(
            store
                .create(&format!("r/{i:02}"), vec![i], 0)
                .await
                .unwrap(),
        );
    }
    let mut watch = store.watch("r/", revisions[5]).await.unwrap();
    for i in 5..10u8 {
        match next_event(&mut watch).await {
            WatchEvent::Put(kv) => assert_eq!(
                (kv.key, kv.mod_revision),
                (format!("r/{i:02}"), revisions[i as usize])
            ),
            other => panic!("expected a replayed put, got {other:?}"),
        }
    }
    let live = store.create("r/live", vec![], 0).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!((kv.key.as_str(), kv.mod_revision), ("r/live", live)),
        other => panic!("expected the live put, got {other:?}"),
    }
}

async fn compaction_forces_resync(store: Arc<dyn Datastore>, _url: &str) {
    let first = store.create("c/a", b"1".to_vec(), 0).await.unwrap();
    store.create("c/b", b"2".to_vec(), 0).await.unwrap();
    let current = store.create("c/c", b"3".to_vec(), 0).await.unwrap();
    store.compact(current).await.unwrap();
    let mut watch = store.watch("c/", first).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Compacted { compact_revision } => assert!(compact_revision >= current - 1),
        other => panic!("a watch from compacted history must report it, got {other:?}"),
    }
    // The resyncing follower turns that into a fresh snapshot followed by live events.
    let mut sync = watch_with_resync(store.clone(), "c/".to_string());
    match tokio::time::timeout(EVENT_TIMEOUT, sync.recv())
        .await
        .unwrap()
        .unwrap()
    {
        SyncEvent::Snapshot { kvs, .. } => assert_eq!(kvs.len(), 3),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    store.create("c/d", b"4".to_vec(), 0).await.unwrap();
    match tokio::time::timeout(EVENT_TIMEOUT, sync.recv())
        .await
        .unwrap()
        .unwrap()
    {
        SyncEvent::Put(kv) => assert_eq!(kv.key, "c/d"),
        other => panic!("expected the live put, got {other:?}"),
    }
}

async fn leases_expire_and_revoke(store: Arc<dyn Datastore>, _url: &str) {
    let lease = store.lease_grant(Duration::from_secs(2)).await.unwrap();
    let kept = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    store.create("l/short", b"x".to_vec(), lease).await.unwrap();
    store.create("l/kept", b"y".to_vec(), kept).await.unwrap();
    assert!(store.lease_keep_alive(lease).await.unwrap() >= Duration::from_secs(1));
    let mut watch = store.watch("l/", 0).await.unwrap();
    let start = Instant::now();
    // Not renewed again: the key goes, with a delete event, within a few TTLs.
    match next_event(&mut watch).await {
        WatchEvent::Delete { key, .. } => assert_eq!(key, "l/short"),
        other => panic!("expected the expiry delete, got {other:?}"),
    }
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "expired too early"
    );
    assert_eq!(store.get("l/short").await.unwrap(), None);
    assert!(store.get("l/kept").await.unwrap().is_some());
    let renewed = store.lease_keep_alive(lease).await;
    assert!(
        matches!(renewed, Err(DatastoreError::LeaseNotFound(_))),
        "{renewed:?}"
    );
    store.lease_revoke(kept).await.unwrap();
    assert_eq!(store.get("l/kept").await.unwrap(), None);
    assert!(matches!(
        store.create("l/orphan", vec![], lease).await,
        Err(DatastoreError::LeaseNotFound(_))
    ));
}

/// Several OS processes increment one counter with compare-and-swap: no update is lost.
async fn concurrent_writers_in_processes(store: Arc<dyn Datastore>, url: &str) {
    let (processes, per_process, workers) = (4, 25, 2);
    let children: Vec<_> = (0..processes)
        .map(|_| {
            std::process::Command::new(common::routectl())
                .env("ROUTED_DATASTORE", url)
                .args([
                    "bench",
                    "cas",
                    "--shared-key",
                    "counter",
                    "--workers",
                    &workers.to_string(),
                ])
                .args(["--count", &per_process.to_string(), "-o", "json"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn routectl")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a writer process failed");
    }
    let kv = store.get("counter").await.unwrap().unwrap();
    let total: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
    assert_eq!(total, (processes * per_process * workers) as u64);
    assert_eq!(kv.version, total as i64, "every increment is one version");
}

async fn prefixes_isolate_clusters(_store: Arc<dyn Datastore>, url: &str) {
    use routed::datastore::{open, DatastoreConfig};
    let mut a = DatastoreConfig::new(url);
    a.prefix = "/cluster-a/".into();
    let mut b = DatastoreConfig::new(url);
    b.prefix = "/cluster-b/".into();
    let (a, b) = (open(&a).await.unwrap(), open(&b).await.unwrap());
    a.create("ippools/x", b"a".to_vec(), 0).await.unwrap();
    b.create("ippools/x", b"b".to_vec(), 0).await.unwrap();
    assert_eq!(a.get("ippools/x").await.unwrap().unwrap().value, b"a");
    let listed = b.list("ippools/").await.unwrap();
    assert_eq!(listed.kvs.len(), 1);
    assert_eq!(
        listed.kvs[0].key, "ippools/x",
        "keys come back relative to the prefix"
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (url, _dir) = crate::common::sqlite_url();
                    let store = crate::common::open(&url).await;
                    super::$name(store, &url).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !crate::common::require_e2e(stringify!($name)) {
                        return;
                    }
                    let server = crate::common::EtcdServer::start().await;
                    super::$name(server.store().await, &server.url()).await;
                }
            )*
        }
    };
}

conformance!(
    crud_with_compare_and_swap,
    multi_key_transactions,
    list_by_prefix,
    watch_delivers_in_order,
    watch_resumes_from_revision,
    compaction_forces_resync,
    leases_expire_and_revoke,
    concurrent_writers_in_processes,
    prefixes_isolate_clusters,
);
