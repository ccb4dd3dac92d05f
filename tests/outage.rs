//! A datastore outage loses no pod traffic (issue 5, item 5). Two nodes in a BGP mesh on one
//! etcd (running in the rack namespace), a pod on each and a continuous ping between them. etcd
//! is first cut off from node-1 by a firewall rule (requests hang rather than fail), then killed
//! (by pid) for 30 s and started again on the same data directory and ports.
//! Checked: not one packet lost and no route of routed's protocols deleted; the agents stay up;
//! a CNI ADD during the outage fails with code 11, names the datastore and leaves no interface
//! or route behind; after etcd returns a new pod ADD works, the agents follow the datastore
//! again (a block claimed after the outage reaches the other node over BGP) and
//! `routectl ipam check` is clean. Needs root and ROUTED_E2E=1.

mod cluster;
mod common;

use cluster::{block_of, deleted_routes_of_ours, wait_for, Lab, Ping, RouteMonitor};
use common::{EtcdServer, Netns};
use std::time::{Duration, Instant};

const OUTAGE: Duration = Duration::from_secs(30);
/// 20 packets a second for 75 s: from before the partition until after etcd is back.
const PING_COUNT: u32 = 1500;

fn host_veths(lab: &Lab, i: usize) -> Vec<String> {
    lab.node(i)
        .exec_ok(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| name.starts_with("rd"))
        .collect()
}

/// The ADD failed with code 11 naming the datastore, and left nothing behind.
fn assert_add_failed_cleanly(
    lab: &Lab,
    pod: &Netns,
    code: i32,
    out: &str,
    url: &str,
    veths_before: &[String],
    workload_routes_before: &str,
) {
    assert_ne!(code, 0, "ADD succeeded without the datastore: {out}");
    let error: serde_json::Value = serde_json::from_str(out).expect("CNI error is JSON");
    assert_eq!(error["code"], 11, "{out}");
    let msg = error["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("datastore {url}")),
        "the error does not name the datastore: {out}"
    );
    assert_eq!(host_veths(lab, 1), veths_before, "ADD left a veth behind");
    assert_eq!(
        lab.routes(1, 230),
        workload_routes_before,
        "ADD left a route behind"
    );
    let (has_eth0, _) = pod.exec(&["ip", "link", "show", "eth0"]);
    assert!(!has_eth0, "ADD left eth0 in the pod");
}

#[test]
fn etcd_outage_keeps_pod_traffic_and_fails_cni_add_with_code_11() {
    if !common::require_e2e("etcd_outage_keeps_pod_traffic_and_fails_cni_add_with_code_11") {
        return;
    }
    let rack = cluster::rack();
    let mut etcd = EtcdServer::start_in(&rack, "10.100.0.254");
    let url = etcd.url();
    let lab = Lab::start(rack, &url, 2);
    let (pod_a, ip_a) = lab.pod(1, "outage-a");
    let (pod_b, ip_b) = lab.pod(2, "outage-b");
    // A pod that is deleted during the outage.
    let (pod_e, ip_e) = lab.pod(1, "outage-e");
    let del_e = |lab: &Lab| {
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"r","type":"routed-cni","socket":"{}"}}"#,
            lab.agent(1).socket.display()
        );
        let path = pod_e.path();
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "outage-e"),
            ("CNI_NETNS", path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        common::cni(lab.node(1), &env, &conf)
    };
    lab.wait_established(1);
    lab.wait_established(2);
    lab.wait_learned(1, &block_of(&ip_b));
    lab.wait_learned(2, &block_of(&ip_a));
    pod_a.exec_ok(&["ping", "-c", "2", "-W", "2", &ip_b]);

    let monitors: Vec<RouteMonitor> = [1, 2]
        .iter()
        .map(|&i| RouteMonitor::start(lab.node(i), lab.dir.path().join(format!("monitor-{i}.txt"))))
        .collect();
    let veths_before = host_veths(&lab, 1);
    let workload_routes_before = lab.routes(1, 230);
    let mut ping = Ping::start(&pod_a, &ip_b, PING_COUNT);
    ping.wait_replies(20);

    // A partition first: node-1's packets to etcd vanish, so requests hang instead of being
    // refused. The agent answers within its datastore timeout, and the ADD fails cleanly.
    let partition = [
        "add table inet rt-partition",
        "add chain inet rt-partition out { type filter hook output priority 0 ; }",
        "add rule inet rt-partition out ip daddr 10.100.0.254 tcp dport 2379 drop",
    ];
    for rule in partition {
        lab.node(1).exec_ok(&["nft", rule]);
    }
    let pod_d = Netns::new("rt-rp");
    let add_started = Instant::now();
    let (code, out) = lab.add_pod(1, &pod_d, "partition-d");
    eprintln!(
        "ADD during the partition answered after {:?}: {out}",
        add_started.elapsed()
    );
    assert_add_failed_cleanly(
        &lab,
        &pod_d,
        code,
        &out,
        &url,
        &veths_before,
        &workload_routes_before,
    );
    lab.node(1)
        .exec_ok(&["nft", "delete table inet rt-partition"]);

    // The outage.
    etcd.stop();
    let down_since = Instant::now();
    let pod_c = Netns::new("rt-rp");
    let add_started = Instant::now();
    let (code, out) = lab.add_pod(1, &pod_c, "outage-c");
    eprintln!(
        "ADD during the outage answered after {:?}: {out}",
        add_started.elapsed()
    );
    assert_add_failed_cleanly(
        &lab,
        &pod_c,
        code,
        &out,
        &url,
        &veths_before,
        &workload_routes_before,
    );
    // DEL during the outage: the interfaces go, the release fails with code 11 (retried later).
    let (code, out) = del_e(&lab);
    assert_ne!(code, 0, "DEL released without the datastore: {out}");
    assert!(out.contains(r#""code":11"#), "{out}");
    assert_eq!(
        host_veths(&lab, 1).len(),
        veths_before.len() - 1,
        "DEL left the veth during the outage"
    );
    let (pod_e_wired, _) = pod_e.exec(&["ip", "link", "show", "eth0"]);
    assert!(!pod_e_wired, "DEL left eth0 in the pod");
    while down_since.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_millis(500));
        for (i, agent) in lab.agents.iter().enumerate() {
            let client = routed::api::client::Client::new(&agent.socket);
            if let Err(e) = client.get::<serde_json::Value>("/healthz") {
                panic!(
                    "node-{}'s agent stopped answering during the outage: {e}",
                    i + 1
                );
            }
        }
    }
    let log = lab.log(1);
    eprintln!("node-1's agent during the outage:\n{log}");
    assert!(
        log.contains(&format!("datastore {url} unavailable")),
        "node-1's agent did not notice the outage: {log}"
    );

    // etcd is back.
    etcd.restart();
    assert!(
        ping.running(),
        "the ping ended before etcd came back; raise PING_COUNT"
    );
    let mut last = String::new();
    wait_for("a pod ADD works again after the outage", || {
        let (code, out) = lab.add_pod(1, &pod_c, "outage-c");
        last = out.clone();
        (code == 0).then_some(()).ok_or(out)
    });
    let ip_c = cluster::pod_ip(&last);
    // The runtime retries the DEL: now the address goes back.
    let (code, out) = del_e(&lab);
    assert_eq!(code, 0, "DEL after the outage: {out}");
    let held: serde_json::Value = routed::api::client::Client::new(&lab.agent(1).socket)
        .get("/v1/ipam/allocations")
        .expect("node-1 allocations");
    assert!(
        !held.to_string().contains("routed.outage-e.eth0"),
        "the deleted pod's address is still held: {held}"
    );
    let check = lab.routectl_ok(&["ipam", "check"]);
    assert!(check.contains("no inconsistency found"), "{check}");
    // The agents follow the datastore again: a block node-2 claims now reaches node-1.
    lab.routectl_ok(&[
        "ipam", "allocate", "--node", "node-2", "--handle", "filler", "--count", "64",
    ]);
    let blocks: serde_json::Value =
        serde_json::from_str(&lab.routectl_ok(&["ipam", "show", "--node", "node-2", "-o", "json"]))
            .expect("ipam show JSON");
    let node2_blocks: Vec<String> = blocks
        .as_array()
        .expect("a list of blocks")
        .iter()
        .filter(|b| b["affinity"] == "node-2")
        .filter_map(|b| b["cidr"].as_str().map(str::to_string))
        .collect();
    assert!(node2_blocks.len() >= 2, "{blocks}");
    for block in &node2_blocks {
        lab.wait_learned(1, block);
    }

    let result = ping.finish();
    assert_eq!(
        result.received, result.transmitted,
        "packets lost during the datastore outage: {}",
        result.output
    );
    for (i, monitor) in monitors.into_iter().enumerate() {
        let lines = monitor.finish();
        // The pod deleted during the outage takes its own route with it; nothing else goes.
        let mut deleted = deleted_routes_of_ours(&lines);
        deleted.retain(|l| !l.starts_with(&format!("Deleted {ip_e} ")));
        assert!(
            deleted.is_empty(),
            "node-{} deleted routes of ours during the outage:\n{}",
            i + 1,
            deleted.join("\n")
        );
    }
    wait_for("the pod added after the outage is reachable", || {
        let (ok, out) = pod_b.exec(&["ping", "-c", "1", "-W", "1", &ip_c]);
        ok.then_some(()).ok_or(out)
    });
    let check = lab.routectl_ok(&["ipam", "check"]);
    assert!(check.contains("no inconsistency found"), "{check}");
}
