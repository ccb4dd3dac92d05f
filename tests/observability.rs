//! Observability against real clients (issue 15): an agent with an Established mesh session
//! and a BIRD 2 ToR, read through its BIRD-compatible sockets by Debian's `birdc` (bird2), the
//! `birdc` of BIRD 1.6.8 (Debian `bird`, unpacked to a temp dir: it conflicts with bird2), a
//! parser written from calicoctl's `node status` rules, and prometheus-bird-exporter 1.4.1 in
//! both its modes; its `/metrics` checked by `promtool check metrics` and scraped by Debian's
//! Prometheus. A second ToR peer that is never up shows that readiness does not depend on an
//! external peer. Needs root, bird2, prometheus, prometheus-bird-exporter, curl and
//! ROUTED_E2E=1.

mod cluster;
mod common;

use cluster::{wait_for, Lab};
use common::{Daemon, Netns};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOR_PREFIX: &str = "198.51.100.0/24";

fn agent_args(i: usize) -> Vec<String> {
    vec![
        "--bird-socket".into(),
        format!("{{dir}}/node-{i}-bird.ctl"),
        "--bird1-socket".into(),
        format!("{{dir}}/node-{i}-bird1.ctl"),
        "--metrics-listen".into(),
        format!("10.100.0.{i}:9099"),
    ]
}

/// A two-node lab (node-1's sockets and metrics on), a BIRD 2 ToR at 10.100.0.201 peering
/// with node-1 (AS 65001, originating 198.51.100.0/24), a global peer 10.100.0.202 that is never
/// up, and a pod on each node; returns once node-1 has the mesh and the ToR Established.
struct Setup {
    _tor: Daemon,
    _tor_ns: Netns,
    _pods: Vec<Netns>,
    lab: Lab,
    _store_dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let (url, store_dir) = common::sqlite_url();
        let lab = Lab::start_with(cluster::rack(), &url, 2, agent_args);
        lab.routectl_ok(&["config", "set", "--as", "64512"]);
        for (name, ip, asn) in [
            ("tor", "10.100.0.201", "65001"),
            ("tor-down", "10.100.0.202", "65002"),
        ] {
            lab.routectl_ok(&["peer", "create", name, "--peer-ip", ip, "--as", asn]);
        }
        let tor_ns = Netns::node_on_bridge(
            "rt-otor",
            &lab.rack,
            "tor",
            "br0",
            "10.100.0.201/24",
            "10.100.0.254",
        );
        let conf = lab.dir.path().join("tor.conf");
        std::fs::write(
            &conf,
            format!(
                "router id 10.100.0.201;\nprotocol device {{}}\n\
                 protocol static {{ ipv4; route {TOR_PREFIX} blackhole; }}\n\
                 protocol bgp node1 {{\n  local 10.100.0.201 as 65001;\n  neighbor 10.100.0.1 as 64512;\n\
                 connect retry time 1;\n  ipv4 {{ import all; export all; }};\n}}\n"
            ),
        )
        .expect("write tor.conf");
        let socket = lab.dir.path().join("tor.ctl").display().to_string();
        let tor = Daemon::spawn(
            &tor_ns,
            &[
                "bird",
                "-f",
                "-c",
                &conf.display().to_string(),
                "-s",
                &socket,
            ],
            &lab.dir.path().join("tor.log"),
            "BIRD 2 (Debian bird2)",
        );
        let (pod1, _) = lab.pod(1, "obs-pod-1");
        let (pod2, ip2) = lab.pod(2, "obs-pod-2");
        lab.wait_learned(1, &cluster::block_of(&ip2));
        lab.wait_learned(1, TOR_PREFIX);
        wait_for("node-1: mesh and ToR Established", || {
            let peers = lab.bgp_status(1)?;
            let up = |name: &str| {
                peers.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|p| p["name"] == name && p["state"] == "Established")
                })
            };
            (up("Mesh_10_100_0_2") && up("Global_10_100_0_201"))
                .then_some(())
                .ok_or(peers.to_string())
        });
        Setup {
            _tor: tor,
            _tor_ns: tor_ns,
            _pods: vec![pod1, pod2],
            lab,
            _store_dir: store_dir,
        }
    }

    fn socket(&self, dialect: &str) -> PathBuf {
        self.lab.dir.path().join(format!("node-1-{dialect}.ctl"))
    }

    /// Node-1's peers as `routectl status -o json` shows them: name → (up, received, advertised).
    fn routectl_peers(&self) -> Vec<(String, bool, u64, u64)> {
        let peers = self.lab.bgp_status(1).expect("routectl status -o json");
        peers
            .as_array()
            .expect("a list of peers")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["state"] == "Established",
                    p["prefixes_received"].as_u64().unwrap_or(u64::MAX),
                    p["prefixes_advertised"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    }
}

/// `birdc` (or `birdcl`) at `path` running `command` on `socket`: (exit success, output).
fn birdc(path: &Path, socket: &Path, command: &str) -> (bool, String) {
    let mut args = vec!["-s".to_string(), socket.display().to_string()];
    args.extend(command.split(' ').map(str::to_string));
    let out = Command::new(path)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// BIRD 1.6.8's birdc: `$ROUTED_BIRD1_DIR/usr/sbin/birdc`, or the Debian `bird` package
/// unpacked into `dir` (apt-get download; it cannot be installed beside bird2).
fn bird1_birdc(dir: &Path) -> PathBuf {
    if let Ok(root) = std::env::var("ROUTED_BIRD1_DIR") {
        return Path::new(&root).join("usr/sbin/birdc");
    }
    let out = Command::new("apt-get")
        .args(["download", "bird"])
        .current_dir(dir)
        .output()
        .expect("apt-get download bird");
    assert!(
        out.status.success(),
        "apt-get download bird: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("the bird .deb");
    let root = dir.join("bird1");
    common::run_ok(
        "dpkg-deb",
        &[
            "-x",
            &deb.display().to_string(),
            &root.display().to_string(),
        ],
    );
    root.join("usr/sbin/birdc")
}

/// One BGP peer as calicoctl's `node status` reads it from `show protocols`.
#[derive(Debug, PartialEq)]
struct CalicoPeer {
    kind: String,
    address: String,
    state: String,
    since: String,
    bgp_state: String,
    info: String,
}

/// calicoctl's rules (commands/node/status.go): send at once, skip `0001`, require the exact
/// lower-case header, rows from `1002-` and ` ` lines (≥ 6 fields, proto `BGP`, name
/// `^(Global|Node|Mesh)_(.+)$` with `_` for `.`), stop at `0000`; any other line is an error.
fn calicoctl_peers(socket: &Path) -> Result<Vec<CalicoPeer>, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"show protocols\n")
        .map_err(|e| e.to_string())?;
    let mut peers = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| format!("read: {e}"))?;
        if line.starts_with("0001") {
            continue;
        }
        if line.starts_with("0000") {
            return Ok(peers);
        }
        if let Some(header) = line.strip_prefix("2002-") {
            let fields: Vec<&str> = header.split_whitespace().collect();
            if fields != ["name", "proto", "table", "state", "since", "info"] {
                return Err(format!("unexpected header {header:?}"));
            }
            continue;
        }
        let row = line
            .strip_prefix("1002-")
            .or_else(|| line.strip_prefix(' '))
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        let fields: Vec<&str> = row.split_whitespace().collect();
        if fields.len() < 6 || fields[1] != "BGP" {
            continue;
        }
        let Some((kind, ip)) = fields[0].split_once('_') else {
            continue;
        };
        if !["Global", "Node", "Mesh"].contains(&kind) {
            continue;
        }
        peers.push(CalicoPeer {
            kind: kind.to_string(),
            address: ip.replace('_', "."),
            state: fields[3].to_string(),
            since: fields[4].to_string(),
            bgp_state: fields[5].to_string(),
            info: fields[6..].join(" "),
        });
    }
    Err("the reply did not end with 0000".into())
}

#[test]
fn birdc_of_bird2_and_bird1_and_calicoctl_rules_read_the_agent_sockets() {
    if !common::require_e2e("birdc_of_bird2_and_bird1_and_calicoctl_rules_read_the_agent_sockets") {
        return;
    }
    let setup = Setup::start();
    let (bird2, bird1) = (setup.socket("bird"), setup.socket("bird1"));
    let birdc2 = Path::new("/usr/sbin/birdc");

    let (ok, out) = birdc(birdc2, &bird2, "show protocols");
    assert!(ok, "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(str::to_string)
    };
    let mesh = row("Mesh_10_100_0_2").unwrap_or_else(|| panic!("no mesh row: {out}"));
    assert!(
        mesh.contains(" BGP ") && mesh.contains(" up ") && mesh.ends_with("Established   "),
        "{mesh}"
    );
    let tor = row("Global_10_100_0_201").unwrap_or_else(|| panic!("no ToR row: {out}"));
    assert!(tor.contains("Established"), "{tor}");
    let down = row("Global_10_100_0_202").unwrap_or_else(|| panic!("no down-ToR row: {out}"));
    assert!(
        down.contains(" start ") && !down.contains("Established"),
        "{down}"
    );
    assert!(
        out.contains("Name       Proto      Table      State  Since         Info"),
        "{out}"
    );

    let (ok, out) = birdc(birdc2, &bird2, "show route");
    assert!(
        ok && out.contains(TOR_PREFIX) && out.contains("[Global_10_100_0_201 "),
        "{out}"
    );
    let (ok, out) = birdc(
        birdc2,
        &bird2,
        &format!("show route for {}", "198.51.100.7"),
    );
    assert!(ok && out.contains(TOR_PREFIX), "{out}");
    let (ok, out) = birdc(birdc2, &bird2, "show status");
    assert!(
        ok && out.contains("BIRD 2.0.12") && out.contains("Daemon is up and running"),
        "{out}"
    );
    let (ok, out) = birdc(birdc2, &bird2, "show protocols all Mesh_10_100_0_2");
    assert!(
        ok && out.contains("Neighbor address: 10.100.0.2") && out.contains("Channel ipv4"),
        "{out}"
    );
    // An error reply ends the reply (birdc 2 exits non-zero on it) and the client does not hang.
    let (ok, out) = birdc(birdc2, &bird2, "show route for 192.0.2.1");
    assert!(!ok && out.contains("Network not found"), "{out}");

    let tmp = tempfile::tempdir().expect("temp dir");
    let birdc1 = bird1_birdc(tmp.path());
    let (ok, out) = birdc(&birdc1, &bird1, "show protocols");
    assert!(ok, "{out}");
    assert!(
        out.contains("name     proto    table    state  since       info"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("Mesh_10_100_0_2 BGP      master   up ")),
        "{out}"
    );
    let (ok, out) = birdc(&birdc1, &bird1, "show status");
    assert!(
        ok && out.contains("BIRD 1.6.8") && out.contains("Daemon is up and running"),
        "{out}"
    );
    let (ok, out) = birdc(&birdc1, &bird1, "show route");
    assert!(ok && out.contains(TOR_PREFIX), "{out}");

    let peers = calicoctl_peers(&bird1).expect("calicoctl's parser reads the 1.6 socket");
    let find = |ip: &str| peers.iter().find(|p| p.address == ip);
    let mesh = find("10.100.0.2").unwrap_or_else(|| panic!("{peers:?}"));
    assert_eq!(
        (
            mesh.kind.as_str(),
            mesh.state.as_str(),
            mesh.bgp_state.as_str()
        ),
        ("Mesh", "up", "Established")
    );
    let tor = find("10.100.0.201").unwrap_or_else(|| panic!("{peers:?}"));
    assert_eq!(
        (tor.kind.as_str(), tor.bgp_state.as_str()),
        ("Global", "Established")
    );
    let down = find("10.100.0.202").unwrap_or_else(|| panic!("{peers:?}"));
    assert_eq!(down.state, "start");
    assert!(!down.since.is_empty());

    // One external peer down: the agent stays ready (calico#2290).
    let out = Command::new(env!("CARGO_BIN_EXE_routed"))
        .args(["health", "--ready", "--socket"])
        .arg(&setup.lab.agent(1).socket)
        .output()
        .expect("routed health");
    assert!(
        out.status.success(),
        "not ready with one ToR down: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(setup
        .routectl_peers()
        .iter()
        .any(|(name, up, _, _)| name == "Global_10_100_0_202" && !up));
}

/// The value of the first sample of `metric` whose labels include `name="NAME"`.
fn sample(text: &str, metric: &str, name: &str) -> Option<u64> {
    let label = format!("name=\"{name}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn bird_exporter_in_both_modes_reports_what_routectl_status_reports() {
    if !common::require_e2e("bird_exporter_in_both_modes_reports_what_routectl_status_reports") {
        return;
    }
    let setup = Setup::start();
    let rack = &setup.lab.rack;
    let dir = setup.lab.dir.path();
    let v1 = setup.socket("bird1").display().to_string();
    let v2 = setup.socket("bird").display().to_string();
    let exporter = "prometheus-bird-exporter";
    let need = "prometheus-bird-exporter (Debian package)";
    let _old = Daemon::spawn(
        rack,
        &[
            exporter,
            "-bird.socket",
            &v1,
            "-bird.ipv6=false",
            "-web.listen-address",
            "127.0.0.1:19324",
        ],
        &dir.join("exporter-v1.log"),
        need,
    );
    let _new = Daemon::spawn(
        rack,
        &[
            exporter,
            "-bird.v2",
            "-bird.socket",
            &v2,
            "-web.listen-address",
            "127.0.0.1:19325",
        ],
        &dir.join("exporter-v2.log"),
        need,
    );
    for port in [19324, 19325] {
        let url = format!("http://127.0.0.1:{port}/metrics");
        wait_for(
            &format!("the exporter on {port} agrees with routectl status"),
            || {
                let (ok, text) = rack.exec(&["curl", "-sf", &url]);
                if !ok {
                    return Err(format!("curl {url}: {text}"));
                }
                for (name, up, received, advertised) in setup.routectl_peers() {
                    let got = (
                        sample(&text, "bird_protocol_up", &name),
                        sample(&text, "bird_protocol_prefix_import_count", &name),
                        sample(&text, "bird_protocol_prefix_export_count", &name),
                    );
                    let want = if up {
                        (Some(1), Some(received), Some(advertised))
                    } else {
                        // A session that is not up shows no route counts in BIRD 2's dialect.
                        (Some(0), got.1, got.2)
                    };
                    if got != want {
                        return Err(format!(
                            "{name}: exporter {got:?}, routectl {want:?}\n{text}"
                        ));
                    }
                }
                Ok(())
            },
        );
    }
}

#[test]
fn promtool_finds_the_metrics_clean_and_prometheus_reads_back_session_up() {
    if !common::require_e2e("promtool_finds_the_metrics_clean_and_prometheus_reads_back_session_up")
    {
        return;
    }
    let setup = Setup::start();
    let rack = &setup.lab.rack;
    let dir = setup.lab.dir.path();
    let text = rack.exec_ok(&["curl", "-sf", "http://10.100.0.1:9099/metrics"]);
    for name in [
        "routed_bgp_session_up{",
        "routed_bgp_messages_received_total{",
        "routed_rib_routes{",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ROUTED_E2E=1 needs promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = promtool.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );

    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: routed\n    static_configs:\n      - targets: ['10.100.0.1:9099']\n",
    )
    .expect("write prometheus.yml");
    let _prometheus = Daemon::spawn(
        rack,
        &[
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            "--web.listen-address=127.0.0.1:19090",
        ],
        &dir.join("prometheus.log"),
        "prometheus (Debian package)",
    );
    let query = "http://127.0.0.1:19090/api/v1/query?query=routed_bgp_session_up";
    wait_for(
        "Prometheus has routed_bgp_session_up of the mesh peer",
        || {
            let (ok, body) = rack.exec(&["curl", "-sf", query]);
            if !ok {
                return Err(body);
            }
            let json: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            let results = json["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mesh = results.iter().find(|r| r["metric"]["peer"] == "10.100.0.2");
            match mesh {
                Some(r) if r["value"][1] == "1" && r["metric"]["peer_type"] == "mesh" => Ok(()),
                _ => Err(body),
            }
        },
    );
}

#[test]
fn cluster_status_lists_every_node_of_a_converged_lab_without_problems() {
    if !common::require_e2e("cluster_status_lists_every_node_of_a_converged_lab_without_problems") {
        return;
    }
    let setup = Setup::start();
    wait_for("routectl cluster status: both nodes, no problems", || {
        let (ok, out) = setup.lab.routectl(&["cluster", "status", "-o", "json"]);
        let view: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("{ok} {e}: {out}"))?;
        let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
        let fresh = nodes.iter().filter(|n| n["status_age"].is_u64()).count();
        let clean = view["problems"].as_array().is_some_and(|p| p.is_empty());
        let programmed = nodes.iter().all(|n| {
            n["routes_expected"].as_u64() >= Some(1)
                && n["routes_programmed"] == n["routes_expected"]
        });
        (fresh == 2 && clean && programmed).then_some(()).ok_or(out)
    });
    let out = setup.lab.routectl_ok(&["status", "--node", "node-2"]);
    assert!(out.contains("10.100.0.1") && out.contains("up"), "{out}");
}
