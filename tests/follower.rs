//! The agent's datastore follower on a real etcd: what a change elsewhere in the cluster costs.

mod common;

use routed::agent::follower_bench;
use std::sync::Arc;

/// One agent in a 200-node cluster (4 blocks each): 100 changes on other nodes (their address,
/// a new affinity, that affinity deleted, an IPAM block) cost its follower no datastore read,
/// and its view reaches the state after the last of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_nothing_per_unrelated_change_on_etcd() {
    if !common::require_e2e("follower_reads_nothing_per_unrelated_change_on_etcd") {
        return;
    }
    let etcd = common::EtcdServer::start().await;
    let store: Arc<dyn routed::datastore::Datastore> = etcd.store().await;
    let report = follower_bench::run(store, 200, 4, 100, true).await.unwrap();
    println!("{report:?}");
    assert_eq!(report.relists, 0, "no watch was compacted or lost");
    // Joining is one list and one watch per followed prefix (five of each).
    assert_eq!(report.join_reads, 10);
    // The budget is 2 reads per unrelated change; the follower needs none.
    assert!(report.reads_per_change <= 2.0, "{report:?}");
    assert_eq!(
        report.reads, 0,
        "a change elsewhere is applied from its watch event"
    );
}
