//! The agent's datastore follower on a real etcd: what a change elsewhere in the cluster costs.

mod common;

use routed::agent::follower_bench;
use std::sync::Arc;

/// One agent in a 200-node cluster (4 blocks each, two reflectors): 100 changes on other
/// nodes (their address, a new affinity, that affinity deleted, an IPAM block) cost its
/// follower no datastore read and no rebuilt state, and its view reaches the state after the
/// last of them (a change of its own record, made after them, is seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_nothing_per_unrelated_change_on_etcd() {
    if !common::require_e2e("follower_reads_nothing_per_unrelated_change_on_etcd") {
        return;
    }
    let etcd = common::EtcdServer::start().await;
    let store: Arc<dyn routed::datastore::Datastore> = etcd.store().await;
    let spec = follower_bench::BenchSpec {
        nodes: 200,
        blocks: 4,
        changes: 100,
        topology: follower_bench::Topology::Reflectors,
        seed: true,
    };
    let report = follower_bench::run(store, spec).await.unwrap();
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
    // And with reflectors, none of them (clients' addresses and blocks) matters to this
    // client: no cluster state is rebuilt, no record copied.
    assert_eq!(
        (report.states_built, report.records_per_change),
        (0, 0.0),
        "{report:?}"
    );
}
