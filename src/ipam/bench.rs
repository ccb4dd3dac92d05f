//! Datastore and IPAM benchmarks behind `routectl bench` (and the contention tests).
//!
//! `bench_allocate` runs `workers` concurrent workers on one node, each allocating `count`
//! single-address handles, then releases them. By default the workers share one allocator, as
//! concurrent CNI requests share the node agent's; with `independent` each has its own allocator
//! and cache (separate processes racing on the same blocks: the worst case for compare-and-swap); it reports throughput, p50/p99 latency and datastore round trips per operation.
//! `bench_cas` measures the raw compare-and-swap rate the allocator is compared with: each
//! operation is one single-key transaction `compare(mod_revision) → put`.

use super::{AllocateRequest, Allocated, Ipam, IpamError};
use crate::datastore::counting::CountingStore;
use crate::datastore::{Compare, Datastore, DatastoreError, Op, Txn};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Figures for one benchmarked operation.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub operation: String,
    pub datastore: String,
    pub workers: usize,
    pub operations: usize,
    pub seconds: f64,
    pub ops_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub round_trips: u64,
    pub round_trips_per_op: f64,
    /// Workers had one allocator each (see the module doc).
    pub independent: bool,
}

fn report(
    operation: &str,
    datastore: String,
    workers: usize,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    round_trips: u64,
) -> BenchReport {
    latencies.sort();
    let pct = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[idx.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    let n = latencies.len();
    let secs = elapsed.as_secs_f64().max(1e-9);
    BenchReport {
        operation: operation.to_string(),
        datastore,
        workers,
        operations: n,
        seconds: secs,
        ops_per_second: n as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        round_trips,
        independent: false,
        round_trips_per_op: if n == 0 {
            0.0
        } else {
            round_trips as f64 / n as f64
        },
    }
}

/// Allocation (and, unless `keep`, release) benchmark; returns the reports and, with `keep`,
/// the addresses still held.
pub async fn bench_allocate(
    store: Arc<dyn Datastore>,
    node: &str,
    workers: usize,
    count: usize,
    handle_prefix: &str,
    keep: bool,
    independent: bool,
) -> Result<(Vec<BenchReport>, Vec<Allocated>), IpamError> {
    let counting = Arc::new(CountingStore::new(store.clone()));
    let name = store.describe();
    let shared = Arc::new(Ipam::new(counting.clone()));
    let ipams: Vec<Arc<Ipam>> = (0..workers)
        .map(|_| {
            if independent {
                Arc::new(Ipam::new(counting.clone()))
            } else {
                shared.clone()
            }
        })
        .collect();

    let start = Instant::now();
    let before = counting.round_trips();
    let mut tasks = Vec::new();
    for (w, ipam) in ipams.iter().enumerate() {
        let (ipam, node, prefix) = (ipam.clone(), node.to_string(), handle_prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            let mut got = Vec::with_capacity(count);
            for i in 0..count {
                let mut req = AllocateRequest::new(&node, &format!("{prefix}-{w}-{i}"), 1);
                req.attributes.insert("node".into(), node.clone());
                let t = Instant::now();
                got.extend(ipam.allocate(&req).await?);
                lat.push(t.elapsed());
            }
            Ok::<_, IpamError>((lat, got))
        }));
    }
    let (latencies, allocated) = join_all(tasks).await?;
    let mut reports = vec![report(
        "allocate",
        name.clone(),
        workers,
        latencies,
        start.elapsed(),
        counting.round_trips() - before,
    )];
    reports[0].independent = independent;
    if keep {
        return Ok((reports, allocated));
    }

    let mut release = release_phase(&counting, &ipams, count, handle_prefix).await?;
    release.independent = independent;
    reports.push(release);
    Ok((reports, Vec::new()))
}

/// Releases the handles a `bench_allocate --keep` run left (`<prefix>-<worker>-<i>`).
pub async fn bench_release(
    store: Arc<dyn Datastore>,
    workers: usize,
    count: usize,
    handle_prefix: &str,
) -> Result<BenchReport, IpamError> {
    let counting = Arc::new(CountingStore::new(store));
    let ipams: Vec<Arc<Ipam>> = (0..workers)
        .map(|_| Arc::new(Ipam::new(counting.clone())))
        .collect();
    release_phase(&counting, &ipams, count, handle_prefix).await
}

async fn release_phase(
    counting: &Arc<CountingStore>,
    ipams: &[Arc<Ipam>],
    count: usize,
    handle_prefix: &str,
) -> Result<BenchReport, IpamError> {
    let start = Instant::now();
    let before = counting.round_trips();
    let mut tasks = Vec::new();
    for (w, ipam) in ipams.iter().enumerate() {
        let (ipam, prefix) = (ipam.clone(), handle_prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for i in 0..count {
                let t = Instant::now();
                ipam.release_handle(&format!("{prefix}-{w}-{i}")).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, IpamError>((lat, Vec::new()))
        }));
    }
    let (latencies, _) = join_all(tasks).await?;
    Ok(report(
        "release",
        counting.describe(),
        ipams.len(),
        latencies,
        start.elapsed(),
        counting.round_trips() - before,
    ))
}

/// What one benchmark worker returns: its latencies and the addresses it kept.
type WorkerResult = Result<(Vec<Duration>, Vec<Allocated>), IpamError>;

async fn join_all(
    tasks: Vec<tokio::task::JoinHandle<WorkerResult>>,
) -> Result<(Vec<Duration>, Vec<Allocated>), IpamError> {
    let mut latencies = Vec::new();
    let mut allocated = Vec::new();
    for task in tasks {
        let (lat, got) = task.await.map_err(|e| {
            IpamError::Datastore(DatastoreError::Backend {
                context: "benchmark worker".into(),
                reason: e.to_string(),
            })
        })??;
        latencies.extend(lat);
        allocated.extend(got);
    }
    Ok((latencies, allocated))
}

/// Raw single-key compare-and-swap rate. Without `shared_key` each worker updates its own key
/// (no conflicts: the store's raw rate). With `shared_key` every worker increments one counter
/// (read, then compare-and-swap, retried on conflict) — the final value proves no update was lost.
pub async fn bench_cas(
    store: Arc<dyn Datastore>,
    workers: usize,
    count: usize,
    key_prefix: &str,
    shared_key: Option<&str>,
) -> Result<BenchReport, DatastoreError> {
    let counting = Arc::new(CountingStore::new(store.clone()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store: Arc<dyn Datastore> = counting.clone();
        let key = shared_key.map_or_else(
            || format!("{key_prefix}{}-{w}", std::process::id()),
            str::to_string,
        );
        let shared = shared_key.is_some();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            let mut rev = store.get(&key).await?.map_or(0, |kv| kv.mod_revision);
            let mut value: u64 = 0;
            for _ in 0..count {
                let t = Instant::now();
                loop {
                    if shared {
                        let current = store.get(&key).await?;
                        rev = current.as_ref().map_or(0, |kv| kv.mod_revision);
                        value = current
                            .and_then(|kv| String::from_utf8(kv.value).ok())
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                    }
                    value += 1;
                    let txn = Txn {
                        compare: vec![Compare::revision(&key, rev)],
                        success: vec![Op::put(&key, value.to_string().into_bytes())],
                        failure: vec![],
                    };
                    let resp = store.txn(txn).await?;
                    if resp.succeeded {
                        rev = resp.revision;
                        break;
                    }
                    if !shared {
                        return Err(DatastoreError::Conflict {
                            key: key.clone(),
                            expected: rev,
                            found: -1,
                        });
                    }
                }
                lat.push(t.elapsed());
            }
            Ok::<_, DatastoreError>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| DatastoreError::Backend {
            context: "benchmark worker".into(),
            reason: e.to_string(),
        })??);
    }
    let op = if shared_key.is_some() {
        "cas-shared-counter"
    } else {
        "cas"
    };
    Ok(report(
        op,
        store.describe(),
        workers,
        latencies,
        start.elapsed(),
        counting.round_trips(),
    ))
}
