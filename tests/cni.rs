//! routed-cni against a real kernel: a "node" network namespace runs `routed` (embedded SQLite),
//! pods are namespaces wired by calling routed-cni exactly as libcni does. Needs root and
//! ROUTED_E2E=1.

mod common;

use common::{cni, pod_ip, Agent, Netns};
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
        [
            "default via 169.254.1.1 dev eth0",
            "169.254.1.1 dev eth0 scope link"
        ],
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
    // (A deleted host route is no longer a way to break a pod: the agent puts it back at once,
    // see tests/dataplane.rs. A sysctl it does not manage is.)
    lab.node.exec_ok(&[
        "sh",
        "-c",
        &format!("echo 0 > /proc/sys/net/ipv4/conf/{veth}/proxy_arp"),
    ]);
    let (code, out) = cni(
        &lab.node,
        &add_env("CHECK", "cid-a", &a.path(), "eth0", args_a),
        &prev,
    );
    assert_eq!(code, 1);
    assert!(out.contains("proxy_arp") && out.contains(&veth), "{out}");

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

fn rd_links(node: &Netns) -> Vec<String> {
    let links = node.exec_ok(&["ip", "-o", "link", "show"]);
    links
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        })
        .filter(|n| n.starts_with("rd"))
        .collect()
}

async fn assert_nothing_left(lab: &Lab) {
    assert_eq!(
        rd_links(&lab.node),
        Vec::<String>::new(),
        "host veths left behind"
    );
    let routes = lab
        .node
        .exec_ok(&["ip", "-4", "route", "show", "proto", "230"]);
    assert!(
        routes.trim().is_empty(),
        "workload routes left behind: {routes}"
    );
    let report = Ipam::new(common::open(&lab.url).await)
        .check()
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.allocated, 0, "addresses left allocated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_add_then_del_leave_nothing() {
    let Some(lab) = lab("two_hundred_pods_add_then_del_leave_nothing").await else {
        return;
    };
    let pods: Vec<Netns> = (0..200).map(|_| Netns::new("rt-p")).collect();
    let mut ips = std::collections::HashSet::new();
    for (i, pod) in pods.iter().enumerate() {
        let cid = format!("cid-{i}");
        let args = format!("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-{i}");
        let (code, out) = cni(
            &lab.node,
            &add_env("ADD", &cid, &pod.path(), "eth0", &args),
            &lab.conf,
        );
        assert_eq!(code, 0, "ADD {i}: {out}");
        assert!(ips.insert(pod_ip(&out)), "duplicate address");
    }
    assert_eq!(rd_links(&lab.node).len(), 200);
    // One pod reaches another across the host, as a spot check of the 200.
    pods[7].exec_ok(&["ping", "-c", "1", "-W", "2", &pods[150].eth0_ipv4()]);
    for (i, pod) in pods.iter().enumerate() {
        let cid = format!("cid-{i}");
        let args = format!("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-{i}");
        let (code, out) = cni(
            &lab.node,
            &add_env("DEL", &cid, &pod.path(), "eth0", &args),
            &lab.conf,
        );
        assert_eq!(code, 0, "DEL {i}: {out}");
    }
    assert_nothing_left(&lab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_the_spec_codes_and_leak_nothing() {
    let Some(mut lab) = lab("bad_inputs_get_the_spec_codes_and_leak_nothing").await else {
        return;
    };
    let pod = Netns::new("rt-pod");
    let p = pod.path();
    let conf = lab.conf.clone();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u32);
    let cases: Vec<Case> = vec![
        (
            "missing CNI_COMMAND",
            vec![
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", &p),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.clone(),
            4,
        ),
        (
            "unknown command",
            add_env("FROB", "c1", &p, "eth0", ""),
            conf.clone(),
            4,
        ),
        (
            "bad JSON",
            add_env("ADD", "c1", &p, "eth0", ""),
            "{\"cniVersion\": ".into(),
            6,
        ),
        (
            "unsupported cniVersion",
            add_env("ADD", "c1", &p, "eth0", ""),
            conf.replace("\"1.0.0\"", "\"0.2.0\""),
            1,
        ),
        (
            "no network name (the agent is not asked)",
            add_env("ADD", "c1", &p, "eth0", ""),
            conf.replace("\"name\":\"routed\",", ""),
            7,
        ),
        (
            "missing CNI_NETNS on ADD",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.clone(),
            4,
        ),
        (
            "netns path that does not exist",
            add_env("ADD", "c1", "/var/run/netns/rt-no-such-ns", "eth0", ""),
            conf.clone(),
            4,
        ),
        (
            "config for another plugin",
            add_env("ADD", "c1", &p, "eth0", ""),
            conf.replace("routed-cni", "bridge"),
            7,
        ),
    ];
    for (what, env, conf, want) in &cases {
        let (code, out) = cni(&lab.node, env, conf);
        assert_eq!(code, 1, "{what}: exit status");
        let err: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"));
        assert_eq!(
            err["code"].as_u64(),
            Some(u64::from(*want)),
            "{what}: {out}"
        );
        assert!(
            !err["msg"].as_str().unwrap_or_default().is_empty(),
            "{what}: message"
        );
        assert_nothing_left(&lab).await;
    }

    // The interface name is taken inside the container.
    pod.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let (code, out) = cni(&lab.node, &add_env("ADD", "c2", &p, "eth0", ""), &lab.conf);
    assert_eq!(code, 1);
    assert!(
        out.contains("\"code\":102") && out.contains("eth0"),
        "{out}"
    );
    assert_nothing_left(&lab).await;
    pod.exec_ok(&["ip", "link", "del", "eth0"]);

    // DEL of something never added succeeds.
    let (code, out) = cni(
        &lab.node,
        &add_env("DEL", "never", &p, "eth0", ""),
        &lab.conf,
    );
    assert_eq!(code, 0, "{out}");

    // ADD twice for the same container: the second fails and the first keeps working.
    let (code, first) = cni(
        &lab.node,
        &add_env("ADD", "twice", &p, "eth0", ""),
        &lab.conf,
    );
    assert_eq!(code, 0, "{first}");
    let (code, out) = cni(
        &lab.node,
        &add_env("ADD", "twice", &p, "eth0", ""),
        &lab.conf,
    );
    assert_eq!(code, 1);
    assert!(out.contains("\"code\":102"), "{out}");
    lab.node
        .exec_ok(&["ping", "-c", "1", "-W", "2", &pod_ip(&first)]);
    let held = Ipam::new(common::open(&lab.url).await)
        .check()
        .await
        .unwrap();
    assert_eq!(held.allocated, 1, "the failed second ADD took no address");
    let (code, _) = cni(
        &lab.node,
        &add_env("DEL", "twice", &p, "eth0", ""),
        &lab.conf,
    );
    assert_eq!(code, 0);
    assert_nothing_left(&lab).await;

    // CHECK of a container that is not there (any more): unknown container (3).
    let prev = format!(
        r#"{{"cniVersion":"1.0.0","name":"routed","type":"routed-cni","socket":"{}","prevResult":{first}}}"#,
        lab.agent.socket.display()
    );
    let (code, out) = cni(&lab.node, &add_env("CHECK", "twice", &p, "eth0", ""), &prev);
    assert_eq!(code, 1);
    let err: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(err["code"].as_u64(), Some(3), "{out}");
    assert_nothing_left(&lab).await;

    // Agent stopped: ADD says "try again later" (11), STATUS says "not available" (50).
    lab.agent.stop();
    let (code, out) = cni(&lab.node, &add_env("ADD", "c3", &p, "eth0", ""), &lab.conf);
    assert_eq!(code, 1);
    assert!(
        out.contains("\"code\":11") && out.contains("not reachable"),
        "{out}"
    );
    let status_conf = lab.conf.replace("\"1.0.0\"", "\"1.1.0\"");
    let (code, out) = cni(&lab.node, &[("CNI_COMMAND", "STATUS")], &status_conf);
    assert_eq!(code, 1);
    assert!(out.contains("\"code\":50"), "{out}");
    assert_eq!(rd_links(&lab.node), Vec::<String>::new());
}

/// Where [`AllocationHold`] stops the plugin's address allocation.
#[derive(Clone, Copy, Debug)]
enum Hold {
    /// The request never reaches the agent: the ADD wires its veth and allocates nothing.
    Request,
    /// The agent allocates and answers; the answer never reaches the plugin.
    Response,
}

/// A unix socket between routed-cni and the agent that forwards every request except the
/// address allocation, which it holds (see [`Hold`]). A held plugin blocks reading the answer
/// while its veth is wired, so the test can SIGKILL it at a known step with no hook in the
/// plugin. The held connection gets a byte of a never-ending header every few seconds, so the
/// plugin's read timeout (which would roll the ADD back) never fires.
struct AllocationHold {
    socket: std::path::PathBuf,
    held: std::sync::mpsc::Receiver<Hold>,
}

impl AllocationHold {
    fn start(agent: &std::path::Path, dir: &std::path::Path, hold: Hold) -> AllocationHold {
        let socket = dir.join(format!("hold-{hold:?}.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (tx, held) = std::sync::mpsc::channel();
        let agent = agent.to_path_buf();
        std::thread::spawn(move || {
            for plugin in listener.incoming() {
                let (agent, tx) = (agent.clone(), tx.clone());
                std::thread::spawn(move || hold_or_forward(plugin.unwrap(), &agent, hold, &tx));
            }
        });
        AllocationHold { socket, held }
    }

    fn conf(&self) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"routed","type":"routed-cni","socket":"{}"}}"#,
            self.socket.display()
        )
    }
}

/// One HTTP request (the client sends one per connection, with Content-Length).
fn read_request(stream: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::Read;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if request.len() >= end + 4 + length {
                return request;
            }
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the plugin closed before sending its whole request");
        request.extend_from_slice(&buf[..n]);
    }
}

fn hold_or_forward(
    mut plugin: std::os::unix::net::UnixStream,
    agent: &std::path::Path,
    hold: Hold,
    held: &std::sync::mpsc::Sender<Hold>,
) {
    use std::io::{Read, Write};
    let request = read_request(&mut plugin);
    let allocation = request.starts_with(b"POST /v1/ipam/allocate ");
    if !allocation || matches!(hold, Hold::Response) {
        let mut upstream = std::os::unix::net::UnixStream::connect(agent).unwrap();
        upstream.write_all(&request).unwrap();
        let mut answer = Vec::new();
        upstream.read_to_end(&mut answer).unwrap();
        if !allocation {
            plugin.write_all(&answer).unwrap();
            return;
        }
        let (status, _) = routed::api::client::parse_response(&answer).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    held.send(hold).unwrap();
    let _ = plugin.write_all(b"HTTP/1.1 200 OK\r\nX-Held: ");
    // Ends when the killed plugin's end of the socket is gone.
    while plugin.write_all(b"x").is_ok() {
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
}

/// `ipam check` finds exactly one problem: `handle` is held by no container.
async fn assert_only_unheld(url: &str, handle: &str) {
    let report = Ipam::new(common::open(url).await).check().await.unwrap();
    let named: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.kind == routed::ipam::FindingKind::HandleWithoutContainer)
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        report.findings.len() == 1 && named.len() == 1 && named[0].contains(handle),
        "{:#?}",
        report.findings
    );
}

/// SIGKILLs two ADDs with their veth wired (pod default route in place) and no address on the
/// pod: one whose allocation never reached the agent, one whose allocation the agent made. The
/// first GC removes both veths and records the leaked address as held by no container (`ipam
/// check` names it); the second releases it; the valid attachment keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_add_then_gc_leaves_nothing() {
    let Some(lab) = lab("killed_add_then_gc_leaves_nothing").await else {
        return;
    };
    let keep = Netns::new("rt-pod");
    let (code, kept) = cni(
        &lab.node,
        &add_env("ADD", "keep", &keep.path(), "eth0", ""),
        &lab.conf,
    );
    assert_eq!(code, 0, "{kept}");
    let mut victims = Vec::new();
    for hold in [Hold::Request, Hold::Response] {
        let proxy = AllocationHold::start(&lab.agent.socket, lab.dir.path(), hold);
        let pod = Netns::new("rt-pod");
        let cid = format!("killed-{hold:?}");
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.node.name])
            .arg(env!("CARGO_BIN_EXE_routed-cni"))
            .env_clear()
            .envs(add_env("ADD", &cid, &pod.path(), "eth0", ""))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(proxy.conf().as_bytes()).unwrap();
        }
        proxy
            .held
            .recv_timeout(common::WAIT)
            .unwrap_or_else(|e| panic!("the allocation of {cid} was never held: {e}"));
        common::wait_for(&format!("{cid}'s pod default route"), || {
            let routes = pod.exec_ok(&["ip", "-4", "route", "show", "default"]);
            match routes.contains("via 169.254.1.1") {
                true => Ok(()),
                false => Err(routes),
            }
        });
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "the held plugin is still blocked on its allocation"
        );
        // `ip netns exec` execs the plugin, so this pid is the plugin itself.
        child.kill().unwrap();
        child.wait().unwrap();
        victims.push(pod);
    }
    let held = Ipam::new(common::open(&lab.url).await)
        .check()
        .await
        .unwrap();
    assert_eq!(
        held.allocated, 2,
        "the kept pod and the killed ADD whose allocation the agent made: {held:?}"
    );
    assert_eq!(
        rd_links(&lab.node).len(),
        3,
        "the killed ADDs left their veths"
    );

    let gc_conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"routed","type":"routed-cni","socket":"{}",
            "cni.dev/valid-attachments":[{{"containerID":"keep","ifname":"eth0"}}]}}"#,
        lab.agent.socket.display()
    );
    let (code, out) = cni(&lab.node, &[("CNI_COMMAND", "GC")], &gc_conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        rd_links(&lab.node).len(),
        1,
        "the first GC removes the leaked veths"
    );
    // The first GC records the leaked handle as held by no container; the second releases it.
    assert_only_unheld(&lab.url, "routed.killed-Response.eth0").await;
    let (code, out) = cni(&lab.node, &[("CNI_COMMAND", "GC")], &gc_conf);
    assert_eq!(code, 0, "{out}");
    let after = Ipam::new(common::open(&lab.url).await)
        .check()
        .await
        .unwrap();
    assert!(after.is_clean(), "{:#?}", after.findings);
    assert_eq!(
        after.allocated, 1,
        "only the valid attachment keeps its address"
    );
    assert_eq!(
        rd_links(&lab.node).len(),
        1,
        "the leaked veths are gone, the valid one stays"
    );
    lab.node
        .exec_ok(&["ping", "-c", "1", "-W", "2", &pod_ip(&kept)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_traffic_passes_a_drop_policy_forward_chain() {
    if !common::require_e2e("pod_traffic_passes_a_drop_policy_forward_chain") {
        return;
    }
    // Build the lab by hand so the DROP policy exists before the agent starts (as Docker's does).
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("routed.db").display());
    Ipam::new(common::open(&url).await)
        .create_pool(&IpPool::new("pods", "10.78.0.0/16".parse().unwrap()))
        .await
        .unwrap();
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
    node.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", "uplink"]);
    node.exec_ok(&["ip", "link", "set", "uplink", "up"]);
    node.exec_ok(&["ip", "route", "add", "default", "via", "192.0.2.254"]);
    node.exec_ok(&["nft", "add", "table", "ip", "filter"]);
    node.exec_ok(&[
        "nft",
        "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
    ]);
    let (a, b) = (Netns::new("rt-pod"), Netns::new("rt-pod"));
    // Without routed's rules the DROP policy stops pod-to-pod traffic (wire two pods by hand first).
    let agent = Agent::start(&node, "node-fw", &url, "192.0.2.1/24", dir.path());
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"r","type":"routed-cni","socket":"{}"}}"#,
        agent.socket.display()
    );
    let (code, out_a) = cni(&node, &add_env("ADD", "fa", &a.path(), "eth0", ""), &conf);
    assert_eq!(code, 0, "{out_a}");
    let (code, out_b) = cni(&node, &add_env("ADD", "fb", &b.path(), "eth0", ""), &conf);
    assert_eq!(code, 0, "{out_b}");
    let rules = node.exec_ok(&["nft", "list", "chain", "ip", "filter", "FORWARD"]);
    assert!(rules.contains("routed-pod-forward"), "{rules}");
    assert!(node
        .exec_ok(&["nft", "list", "table", "inet", "routed"])
        .contains("hook forward"));
    a.exec_ok(&["ping", "-c", "2", "-W", "2", &pod_ip(&out_b)]);
    // Take routed's rules out: the same ping is dropped (the test proves the rules matter).
    for line in node
        .exec_ok(&["nft", "-a", "list", "chain", "ip", "filter", "FORWARD"])
        .lines()
    {
        if line.contains("routed-pod-forward") {
            let handle = line.rsplit("handle ").next().unwrap().trim();
            node.exec_ok(&[
                "nft", "delete", "rule", "ip", "filter", "FORWARD", "handle", handle,
            ]);
        }
    }
    let (ok, _) = a.exec(&["ping", "-c", "1", "-W", "1", &pod_ip(&out_b)]);
    assert!(
        !ok,
        "with the DROP policy and without routed's rules, pod traffic must not pass"
    );
    drop(agent);
    drop(dir);
}
