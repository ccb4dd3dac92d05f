//! Three agents in a full BGP mesh: node namespaces on one bridge ("the rack"), one embedded
//! SQLite store shared by all agents. Needs root and ROUTED_E2E=1.

mod common;

use common::{run_ok, wait_for, Agent, Netns};
use routed::ipam::Ipam;
use routed::model::IpPool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_mesh_exchanges_blocks_and_carries_pod_traffic() {
    if !common::require_e2e("three_node_mesh_exchanges_blocks_and_carries_pod_traffic") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("routed.db").display());
    Ipam::new(common::open(&url).await)
        .create_pool(&IpPool::new("mesh-pods", "10.90.0.0/16".parse().unwrap()))
        .await
        .unwrap();
    let rack = Netns::new("rt-rack");
    rack.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    rack.exec_ok(&["ip", "addr", "add", "10.100.0.254/24", "dev", "br0"]);
    rack.exec_ok(&["ip", "link", "set", "br0", "up"]);
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for i in 1..=3 {
        let node = Netns::node_on_bridge(
            "rt-mn",
            &rack,
            &format!("p{i}"),
            "br0",
            &format!("10.100.0.{i}/24"),
            "10.100.0.254",
        );
        agents.push(Agent::start(
            &node,
            &format!("node-{i}"),
            &url,
            &format!("10.100.0.{i}/24"),
            dir.path(),
        ));
        nodes.push(node);
    }
    // One pod per node: each node claims a block.
    let mut pods = Vec::new();
    let mut ips = Vec::new();
    for (i, (node, agent)) in nodes.iter().zip(&agents).enumerate() {
        let (pod, ip) = common::new_pod("rt-mp", node, agent, &format!("mesh-{i}"));
        ips.push(ip);
        pods.push(pod);
    }
    let ipam = Ipam::new(common::open(&url).await);
    let blocks_of = |blocks: &[routed::ipam::BlockSummary], node: &str| -> Vec<String> {
        blocks
            .iter()
            .filter(|b| b.affinity.as_deref() == Some(node))
            .map(|b| b.cidr.to_string())
            .collect()
    };
    let expect_routes = |blocks: Vec<routed::ipam::BlockSummary>| {
        for (i, node) in nodes.iter().enumerate() {
            wait_for(
                &format!("node-{} learns every other node's blocks", i + 1),
                || {
                    let routes = node.exec(&["ip", "-4", "route", "show", "proto", "232"]).1;
                    for j in 0..3 {
                        if i == j {
                            continue;
                        }
                        for block in blocks_of(&blocks, &format!("node-{}", j + 1)) {
                            let want = format!("via 10.100.0.{} dev eth0", j + 1);
                            if !common::routes_via(&routes, &block, &want) {
                                return Err(format!("missing {want:?} in:\n{routes}"));
                            }
                        }
                    }
                    Ok(())
                },
            );
            // Its own blocks are blackholes, never learned routes.
            wait_for(&format!("node-{} blackholes its own blocks", i + 1), || {
                let own = node.exec(&["ip", "-4", "route", "show", "proto", "231"]).1;
                for block in blocks_of(&blocks, &format!("node-{}", i + 1)) {
                    if !own.contains(&format!("blackhole {block}")) {
                        return Err(own);
                    }
                }
                Ok(())
            });
        }
    };
    expect_routes(ipam.show(None).await.unwrap());

    // routectl status: both mesh sessions up on every node.
    for agent in &agents {
        let socket = agent.socket.to_str().unwrap().to_string();
        wait_for("all sessions Established", || {
            let out = std::process::Command::new(common::routectl())
                .args(["status", "--socket", &socket, "-o", "json"])
                .output()
                .map_err(|e| e.to_string())?;
            let peers: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let up = peers.as_array().map_or(0, |a| {
                a.iter().filter(|p| p["state"] == "Established").count()
            });
            if up == 2 {
                Ok(())
            } else {
                Err(format!("{peers}"))
            }
        });
    }
    let table = run_ok(
        common::routectl().to_str().unwrap(),
        &["status", "--socket", agents[0].socket.to_str().unwrap()],
    );
    assert!(
        table.contains("node-to-node mesh")
            && table.contains("| up ")
            && table.contains("10.100.0.2"),
        "{table}"
    );

    // Pod-to-pod across nodes, on plain routes learned over BGP.
    pods[0].exec_ok(&["ping", "-c", "2", "-W", "2", &ips[1]]);
    pods[2].exec_ok(&["ping", "-c", "2", "-W", "2", &ips[0]]);

    // A new block on node-1 (its first block filled up) reaches the others.
    let mut req = routed::ipam::AllocateRequest::new("node-1", "filler", 64);
    req.attributes.insert("node".into(), "node-1".into());
    ipam.allocate(&req).await.unwrap();
    let blocks = ipam.show(None).await.unwrap();
    assert!(blocks_of(&blocks, "node-1").len() >= 2);
    expect_routes(blocks.clone());

    // A learned route deleted by hand comes back (the route monitor's repair path).
    let block = blocks_of(&blocks, "node-1")[0].clone();
    nodes[1].exec_ok(&["ip", "route", "del", &block, "proto", "232"]);
    expect_routes(blocks.clone());

    // Learned routes are written with kernel nexthop objects of routed's BGP protocol, one per
    // next hop (node-2 learns from node-1 and node-3). Flushing the objects by hand drops their
    // routes without an RTM_DELROUTE each; the RTM_DELNEXTHOP brings objects and routes back.
    let objects = |node: &Netns| node.exec(&["ip", "nexthop", "show", "protocol", "232"]).1;
    let learned = nodes[1]
        .exec(&["ip", "-4", "route", "show", "proto", "232"])
        .1;
    assert!(
        !learned.trim().is_empty() && learned.lines().all(|l| l.contains(" nhid ")),
        "{learned}"
    );
    let before = objects(&nodes[1]);
    assert_eq!(before.lines().count(), 2, "{before}");
    for gateway in ["10.100.0.1", "10.100.0.3"] {
        assert!(
            before.contains(&format!("via {gateway} dev eth0")),
            "{before}"
        );
    }
    nodes[1].exec_ok(&["ip", "nexthop", "flush"]);
    expect_routes(blocks.clone());
    wait_for("node-2 recreates its nexthop objects", || {
        match objects(&nodes[1]).lines().count() {
            2 => Ok(()),
            n => Err(format!("{n} objects")),
        }
    });

    // Mesh off: every session ends and every learned route leaves the kernel (withdrawals take
    // the incremental path); mesh on: they all come back.
    let routectl = common::routectl();
    let routectl = routectl.to_str().unwrap();
    run_ok(
        routectl,
        &["--datastore", &url, "config", "set", "--mesh", "off"],
    );
    for (i, node) in nodes.iter().enumerate() {
        wait_for(&format!("node-{} drops its learned routes", i + 1), || {
            let learned = node.exec(&["ip", "-4", "route", "show", "proto", "232"]).1;
            if learned.trim().is_empty() {
                Ok(())
            } else {
                Err(learned)
            }
        });
    }
    // Objects no route uses go at the next full resync.
    wait_for("node-2 deletes its unused nexthop objects", || {
        let left = objects(&nodes[1]);
        left.trim().is_empty().then_some(()).ok_or(left)
    });
    run_ok(
        routectl,
        &["--datastore", &url, "config", "set", "--mesh", "on"],
    );
    expect_routes(blocks);
    drop(agents);
}
