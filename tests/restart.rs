//! Agent restarts lose no pod traffic (issue 5, item 4). Two nodes in a BGP mesh, a pod on
//! each, a continuous ping between them; node-2's agent is killed (SIGKILL) or stopped
//! (SIGTERM) and started again while the ping runs. Checked: not one packet lost; `ip monitor
//! route` on both nodes never reports a deletion of a route of routed's protocols (230, 231,
//! 232) — the restarted node adopts its kernel routes instead of flushing them, and the peer
//! keeps the restarting node's routes (graceful restart); both sessions are Established again.
//! Needs root and ROUTED_E2E=1.

mod cluster;
mod common;

use cluster::{block_of, deleted_routes_of_ours, wait_for, Lab, Ping, RouteMonitor};
use common::Netns;

/// 20 packets a second for 40 s: spans the kill, the restart and the sessions coming back.
const PING_COUNT: u32 = 800;

fn restart_loses_nothing(test: &str, signal: i32) {
    if !common::require_e2e(test) {
        return;
    }
    let (url, _store_dir) = common::sqlite_url();
    let mut lab = Lab::start(cluster::rack(), &url, 2);
    let (pod_a, ip_a) = lab.pod(1, "restart-a");
    let (_pod_b, ip_b) = lab.pod(2, "restart-b");
    lab.wait_established(1);
    lab.wait_established(2);
    lab.wait_learned(1, &block_of(&ip_b));
    lab.wait_learned(2, &block_of(&ip_a));
    pod_a.exec_ok(&["ping", "-c", "2", "-W", "2", &ip_b]);

    let tables = |lab: &Lab| -> Vec<String> {
        [1, 2]
            .iter()
            .flat_map(|&i| [230, 231, 232].map(|p| lab.routes(i, p)))
            .collect()
    };
    let before = tables(&lab);
    let monitors: Vec<RouteMonitor> = [1, 2]
        .iter()
        .map(|&i| RouteMonitor::start(lab.node(i), lab.dir.path().join(format!("monitor-{i}.txt"))))
        .collect();
    let mut ping = Ping::start(&pod_a, &ip_b, PING_COUNT);
    ping.wait_replies(20);

    // Down: node-2's agent goes away; its routes stay, and node-1 keeps node-2's block.
    let log_before = lab.log(2).len();
    lab.agent(2).signal(signal);
    let status = lab.agent_mut(2).child.wait().expect("wait for routed");
    if signal == libc::SIGTERM {
        assert!(status.success(), "routed after SIGTERM: {status:?}");
        let log = lab.log(2);
        assert!(
            log.contains("shutting down; routes and pod interfaces stay in place"),
            "{log}"
        );
    }
    // node-1 has handled the session's end (its peer left Established): node-2's block stays,
    // and the route monitors below prove it was never deleted in between.
    wait_for("node-1 notices node-2's agent going down", || {
        let peers = lab.bgp_status(1)?;
        (peers[0]["state"] != "Established")
            .then_some(())
            .ok_or(peers.to_string())
    });
    let down_routes = lab.routes(1, 232);
    assert!(
        down_routes.contains(&block_of(&ip_b)),
        "node-1 dropped node-2's block while node-2's agent was down: {down_routes}"
    );

    // Up again: the new agent finds its routes in the kernel and restarts gracefully.
    let agent = lab.start_agent(2);
    lab.agents[1] = agent;
    lab.wait_established(1);
    lab.wait_established(2);
    let log = lab.log(2)[log_before..].to_string();
    assert!(
        log.contains("restarting=true"),
        "the restarted agent did not see its kept routes: {log}"
    );
    wait_for("node-2 has every peer's routes again", || {
        if lab.log(2)[log_before..].contains("every peer has sent its routes") {
            Ok(())
        } else {
            Err(lab.log(2)[log_before..].to_string())
        }
    });
    assert!(
        ping.running(),
        "the ping ended before the sessions were back; raise PING_COUNT"
    );

    let result = ping.finish();
    assert_eq!(
        result.received, result.transmitted,
        "packets lost across the restart: {}",
        result.output
    );
    for (i, monitor) in monitors.into_iter().enumerate() {
        let lines = monitor.finish();
        let deleted = deleted_routes_of_ours(&lines);
        assert!(
            deleted.is_empty(),
            "node-{} deleted routes of ours during the restart:\n{}",
            i + 1,
            deleted.join("\n")
        );
    }
    assert_eq!(
        tables(&lab),
        before,
        "kernel routes changed across the restart"
    );
    // Traffic both ways on the restarted node's routes.
    let (pod_c, ip_c) = lab.pod(2, "restart-c");
    wait_for("a pod added after the restart is reachable", || {
        let (ok, out) = pod_a.exec(&["ping", "-c", "1", "-W", "1", &ip_c]);
        ok.then_some(()).ok_or(out)
    });
    drop(pod_c);
    drop::<Netns>(pod_a);
}

#[test]
fn sigkill_of_an_agent_loses_no_pod_traffic() {
    restart_loses_nothing("sigkill_of_an_agent_loses_no_pod_traffic", libc::SIGKILL);
}

#[test]
fn sigterm_of_an_agent_loses_no_pod_traffic() {
    restart_loses_nothing("sigterm_of_an_agent_loses_no_pod_traffic", libc::SIGTERM);
}
