//! Node decommission on real etcd with two live agents (issue 16, item 3): `routectl node
//! delete` refuses while node-2's agent answers; once it is killed (SIGKILL, no goodbye), the
//! decommission is run interrupted after each step (the library's `stop_after`, as a crash
//! there would leave it) and resumed each time, finished by `routectl node delete`. Checked:
//! node-1's kernel loses node-2's block route, node-2's pod address is no longer allocated,
//! `ipam check` is clean, node-1's pod keeps its address. Needs root and ROUTED_E2E=1.

mod cluster;
mod common;

use cluster::{block_of, wait_for, Lab};
use common::EtcdServer;
use routed::datastore::DatastoreConfig;
use routed::ipam::decommission::Step;
use routed::ipam::Ipam;

/// Runs the decommission of node-2 stopping after each step in turn; each run resumes.
async fn interrupted_runs(url: &str) {
    let store = routed::datastore::open(&DatastoreConfig::new(url))
        .await
        .unwrap();
    let ipam = Ipam::new(store);
    for step in [
        Step::Marked,
        Step::PeersRemoved,
        Step::NodeRemoved,
        Step::AddressesReleased,
        Step::BlocksReleased,
    ] {
        let done = ipam
            .decommission_node("node-2", false, Some(step))
            .await
            .unwrap_or_else(|e| panic!("stopping after {step:?}: {e}"));
        assert_eq!(done.resumed, step != Step::Marked, "{step:?}");
    }
}

#[test]
fn node_delete_withdraws_routes_frees_addresses_and_resumes_after_each_step() {
    if !common::require_e2e(
        "node_delete_withdraws_routes_frees_addresses_and_resumes_after_each_step",
    ) {
        return;
    }
    let rack = cluster::rack();
    let etcd = EtcdServer::start_in(&rack, "10.100.0.254");
    let url = etcd.url();
    let mut lab = Lab::start(rack, &url, 2);
    let (_pod_a, ip_a) = lab.pod(1, "decom-a");
    let (_pod_b, ip_b) = lab.pod(2, "decom-b");
    lab.wait_established(1);
    let block_b = block_of(&ip_b);
    lab.wait_learned(1, &block_b);

    // Alive: refused, and nothing changed.
    let (ok, out) = lab.routectl(&["node", "delete", "node-2"]);
    assert!(!ok && out.contains("node node-2 is alive"), "{out}");
    assert!(lab.routectl_ok(&["node", "list"]).contains("node-2"));

    lab.agent(2).signal(libc::SIGKILL);
    let _ = lab.agent_mut(2).child.wait();

    // Interrupted after each step, resumed by the next run (real etcd, node-1 live throughout).
    // etcd listens inside the rack namespace: the library runs on a thread that enters it.
    let (rack_ns, store_url) = (lab.rack.path(), url.clone());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&rack_ns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(interrupted_runs(&store_url));
    })
    .join()
    .unwrap();
    let out = lab.routectl_ok(&["node", "delete", "node-2"]);
    assert!(out.contains("finished an interrupted run"), "{out}");

    wait_for("node-1 withdraws node-2's block", || {
        let routes = lab.routes(1, 232);
        if routes
            .lines()
            .any(|l| l.starts_with(&format!("{block_b} ")))
        {
            Err(routes)
        } else {
            Ok(())
        }
    });
    assert!(!lab.routectl_ok(&["node", "list"]).contains("node-2"));
    let (ok, out) = lab.routectl(&["ipam", "release", "--ip", &ip_b]);
    assert!(
        !ok && out.contains("is not allocated"),
        "{ip_b} still allocated: {out}"
    );
    let shown = lab.routectl_ok(&["ipam", "show"]);
    assert!(
        !shown.contains(&block_b),
        "node-2's block is still there: {shown}"
    );
    let check = lab.routectl_ok(&["ipam", "check"]);
    assert!(check.contains("no inconsistency found"), "{check}");
    let held = lab.routectl_ok(&["ipam", "show", "--node", "node-1"]);
    assert!(held.contains(&block_of(&ip_a)), "{held}");
}
