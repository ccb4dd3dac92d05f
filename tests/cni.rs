//! routed-cni against a real kernel: a "node" network namespace runs `routed` (embedded SQLite),
//! pods are namespaces wired by calling routed-cni exactly as libcni does. Needs root and
//! ROUTED_E2E=1.

mod common;

use common::{cni, Agent, Netns};
use routed::ipam::Ipam;
use routed::model::IpPool;

const NODE_IP: &str = "192.0.2.1";

struct Lab {
    _router: Netns,
    node: Netns,
    agent: Agent,
    url: String,
    conf: String,
    dir: tempfile::TempDir,
}

async fn lab(test: &str) -> Option<Lab> {
    if !common::require_e2e(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("routed.db").display());
    let mut pool = IpPool::new("pods", "10.77.0.0/16".parse().unwrap());
    pool.block_size = 26;
    Ipam::new(common::open(&url).await)
        .create_pool(&pool)
        .await
        .unwrap();
    // The node's uplink to a router namespace, with a default route as every real node has
    // (proxy ARP answers for 169.254.1.1 only when the host has a route to it elsewhere).
    let router = Netns::new("rt-rtr");
    let node = Netns::new("rt-node");
    node.exec_ok(&[
        "ip",
        "link",
        "add",
        "uplink",
        "type",
        "veth",
        "peer",
        "name",
        "down0",
        "netns",
        &router.name,
    ]);
    node.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "uplink",
    ]);
    node.exec_ok(&["ip", "link", "set", "uplink", "up"]);
    node.exec_ok(&["ip", "route", "add", "default", "via", "192.0.2.254"]);
    router.exec_ok(&["ip", "addr", "add", "192.0.2.254/24", "dev", "down0"]);
    router.exec_ok(&["ip", "link", "set", "down0", "up"]);
    let agent = Agent::start(&node, "node-1", &url, &format!("{NODE_IP}/24"), dir.path());
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"routed","type":"routed-cni","socket":"{}"}}"#,
        agent.socket.display()
    );
    Some(Lab {
        _router: router,
        node,
        agent,
        url,
        conf,
        dir,
    })
}

fn add_env<'a>(
    cmd: &'a str,
    cid: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_ARGS", args),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn pod_ip(result: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(result).unwrap_or_else(|e| panic!("{e}: {result}"));
    v["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_wired_exactly_and_reach_host_and_each_other() {
    let Some(lab) = lab("pods_are_wired_exactly_and_reach_host_and_each_other").await else {
        return;
    };
    let (a, b) = (Netns::new("rt-pod"), Netns::new("rt-pod"));
    let args_a = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-a";
    let (code, out_a) = cni(
        &lab.node,
        &add_env("ADD", "cid-a", &a.path(), "eth0", args_a),
        &lab.conf,
    );
    assert_eq!(code, 0, "{out_a}");
    let (code, out_b) = cni(
        &lab.node,
        &add_env("ADD", "cid-b", &b.path(), "eth0", ""),
        &lab.conf,
    );
    assert_eq!(code, 0, "{out_b}");
    let (ip_a, ip_b) = (pod_ip(&out_a), pod_ip(&out_b));
    assert!(ip_a.starts_with("10.77.") && ip_b.starts_with("10.77.") && ip_a != ip_b);

    // The result names both interfaces, the sandbox and the address on interface 1.
    let result: serde_json::Value = serde_json::from_str(&out_a).unwrap();
    let veth = routed::cni::host_veth_name(
        &routed::cni::spec::CniEnv::from_vars(
            &[("CNI_ARGS".to_string(), args_a.to_string())].into(),
        )
        .unwrap(),
        "cid-a",
        "eth0",
    );
    assert_eq!(result["interfaces"][0]["name"], veth.as_str());
    assert_eq!(result["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(result["interfaces"][1]["sandbox"], a.path().as_str());
    assert_eq!(result["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(result["ips"][0]["interface"], 1);

    // Pod side: the /32, the scope-link gateway route and the default route through it.
    let addr = a.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {ip_a}/32")), "{addr}");
    let routes = a.exec_ok(&["ip", "-4", "route", "show"]);
    let lines: Vec<&str> = routes.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"],
        "pod routes:\n{routes}"
    );
    // Host side: the /32 to the veth with our protocol, the MAC and the sysctls.
    let host_routes = lab
        .node
        .exec_ok(&["ip", "-4", "route", "show", "proto", "230"]);
    assert!(
        host_routes.contains(&format!("{ip_a} dev {veth} scope link")),
        "{host_routes}"
    );
    let link = lab.node.exec_ok(&["ip", "-o", "link", "show", &veth]);
    assert!(link.contains("link/ether ee:ee:ee:ee:ee:ee"), "{link}");
    for (key, want) in [
        (format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp"), "1"),
        (format!("/proc/sys/net/ipv4/neigh/{veth}/proxy_delay"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{veth}/forwarding"), "1"),
    ] {
        assert_eq!(lab.node.exec_ok(&["cat", &key]).trim(), want, "{key}");
    }

    // Traffic: host → pod, pod → host, pod ↔ pod on the same node.
    lab.node.exec_ok(&["ping", "-c", "2", "-W", "2", &ip_a]);
    a.exec_ok(&["ping", "-c", "2", "-W", "2", NODE_IP]);
    a.exec_ok(&["ping", "-c", "2", "-W", "2", &ip_b]);
    b.exec_ok(&["ping", "-c", "2", "-W", "2", &ip_a]);

    // CHECK passes on a healthy pod and names what is wrong on a broken one.
    let prev = format!(
        r#"{{"cniVersion":"1.0.0","name":"routed","type":"routed-cni","socket":"{}","prevResult":{out_a}}}"#,
        lab.agent.socket.display()
    );
    let (code, out) = cni(
        &lab.node,
        &add_env("CHECK", "cid-a", &a.path(), "eth0", args_a),
        &prev,
    );
    assert_eq!(code, 0, "{out}");
    lab.node
        .exec_ok(&["ip", "route", "del", &format!("{ip_a}/32")]);
    let (code, out) = cni(
        &lab.node,
        &add_env("CHECK", "cid-a", &a.path(), "eth0", args_a),
        &prev,
    );
    assert_eq!(code, 1);
    assert!(out.contains("host route") && out.contains(&ip_a), "{out}");

    // DEL twice: both succeed; nothing remains.
    for _ in 0..2 {
        let (code, out) = cni(
            &lab.node,
            &add_env("DEL", "cid-a", &a.path(), "eth0", args_a),
            &lab.conf,
        );
        assert_eq!(code, 0, "{out}");
    }
    let (code, _) = cni(
        &lab.node,
        &add_env("DEL", "cid-b", &b.path(), "eth0", ""),
        &lab.conf,
    );
    assert_eq!(code, 0);
    let links = lab.node.exec_ok(&["ip", "-o", "link", "show"]);
    assert!(!links.contains(" rd"), "veths left: {links}");
    let report = Ipam::new(common::open(&lab.url).await)
        .check()
        .await
        .unwrap();
    assert!(report.is_clean() && report.allocated == 0, "{report:?}");
    drop(lab.dir);
}
