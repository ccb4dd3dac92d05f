//! The shipped manifests are what the code expects: the DaemonSet parses, its CNI conflist is a
//! configuration routed-cni accepts, the environment variables it sets are ones the agent reads,
//! and the probe commands exist. No daemon needed.

use std::path::Path;
use std::process::Command;

fn docs() -> Vec<serde_yaml::Value> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/routed.yaml"))
            .expect("deploy/routed.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML document"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in deploy/routed.yaml"))
}

#[test]
fn daemonset_conflist_env_and_probes_match_the_binaries() {
    let docs = docs();
    let config = find(&docs, "ConfigMap");
    let conflist: serde_json::Value = serde_json::from_str(
        config["data"]["cni_conflist"]
            .as_str()
            .expect("cni_conflist"),
    )
    .expect("conflist is JSON");
    let plugin = serde_json::to_vec(&conflist["plugins"][0]).unwrap();
    let mut conf: serde_json::Value = serde_json::from_slice(&plugin).unwrap();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    conf["name"] = conflist["name"].clone();
    routed::cni::spec::parse_config(&serde_json::to_vec(&conf).unwrap())
        .expect("routed-cni accepts the shipped configuration");
    // The same file as the standalone example.
    let example: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/10-routed.conflist"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(example, conflist);

    let ds = find(&docs, "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    let agent = &spec["containers"][0];
    assert_eq!(agent["securityContext"]["privileged"].as_bool(), Some(true));
    let help = Command::new(env!("CARGO_BIN_EXE_routed"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for env in agent["env"].as_sequence().unwrap() {
        let name = env["name"].as_str().unwrap();
        if name == "RUST_LOG" {
            continue;
        }
        assert!(
            help.contains(&format!("env: {name}=")),
            "routed does not read {name}"
        );
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        let cmd: Vec<&str> = agent[probe]["exec"]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let bin = Path::new(cmd[0]).file_name().unwrap().to_str().unwrap();
        let exe = match bin {
            "routectl" => env!("CARGO_BIN_EXE_routectl"),
            "routed" => env!("CARGO_BIN_EXE_routed"),
            other => panic!("{probe} runs {other}, which the image does not ship"),
        };
        let out = Command::new(exe)
            .args(&cmd[1..cmd.len() - 1])
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{probe}: {cmd:?} is not a command of {bin}"
        );
        let usage = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            usage.contains(cmd[cmd.len() - 1]),
            "{probe}: {bin} has no {}",
            cmd[cmd.len() - 1]
        );
    }
}
