//! CNI spec types (SPEC.md 0.4.0, 1.0.0, 1.1.0): environment, network configuration, results and
//! errors with the spec's codes. Errors are printed as JSON on stdout, as libcni reads them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Versions whose configurations routed-cni accepts and whose results it can write.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
pub const LATEST_VERSION: &str = "1.1.0";

/// Error codes: 1–99 as the spec defines them, 100+ routed-cni's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// routed-cni: the kernel refused a change (netlink), details name the step.
    pub const NETWORK_SETUP_FAILED: u32 = 100;
    /// routed-cni: no address could be allocated (pools exhausted or none enabled).
    pub const NO_ADDRESS: u32 = 101;
    /// routed-cni: the interface name is taken (in the container, or the host veth exists).
    pub const INTERFACE_EXISTS: u32 = 102;
}

/// A CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            cni_version: LATEST_VERSION.into(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

/// `cni.dev/valid-attachments` entries (GC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration routed-cni reads from stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// The agent's local API socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Pod MTU; by default the agent's (node MTU minus encapsulation).
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// `CNI_ARGS` as key → value (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub args: BTreeMap<String, String>,
}

impl CniEnv {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<CniEnv, CniError> {
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let mut args = BTreeMap::new();
        if let Some(raw) = get("CNI_ARGS") {
            for pair in raw.split(';').filter(|p| !p.is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(CniError::new(
                        code::INVALID_ENVIRONMENT,
                        "CNI_ARGS is malformed",
                        format!("expected KEY=VALUE pairs separated by ';', got {pair:?}"),
                    ));
                };
                args.insert(k.to_string(), v.to_string());
            }
        }
        Ok(CniEnv {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname: get("CNI_IFNAME"),
            args,
        })
    }

    /// A required variable, or error code 4 naming it.
    pub fn require<'a>(&self, name: &str, value: &'a Option<String>) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("{name} is required"),
                "set by the container runtime",
            )
        })
    }

    /// (namespace, pod) from CNI_ARGS when the runtime is kubelet.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((
            self.args.get("K8S_POD_NAMESPACE")?.as_str(),
            self.args.get("K8S_POD_NAME")?.as_str(),
        ))
    }
}

/// Parses the configuration; code 6 when it is not JSON, 1 for an unsupported version, 7 when
/// it is not for this plugin.
pub fn parse_config(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            "cannot decode the network configuration",
            e.to_string(),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("unsupported cniVersion {:?}", conf.cni_version),
            format!("routed-cni supports {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    if !conf.plugin_type.is_empty() && conf.plugin_type != "routed-cni" {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "configuration is for plugin {:?}, not routed-cni",
                conf.plugin_type
            ),
            "",
        ));
    }
    if conf.mtu.is_some_and(|m| !(576..=65535).contains(&m)) {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "mtu must be 576..=65535",
            "",
        ));
    }
    validate_config(&conf)?;
    Ok(conf)
}

/// The rest of the configuration, checked before the agent is asked anything (CNI spec,
/// "Network configuration"): `name` and `type` present, `name` of the allowed characters,
/// `socket` an absolute path. Each failure is code 7 naming the field.
pub fn validate_config(conf: &NetConf) -> Result<(), CniError> {
    let invalid =
        |msg: String, details: &str| Err(CniError::new(code::INVALID_CONFIG, msg, details));
    if conf.name.is_empty() {
        return invalid(
            "the network configuration has no \"name\"".into(),
            "add \"name\": \"routed\" (letters, digits, '_', '.', '-') to the configuration file",
        );
    }
    let name_ok = conf
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && conf
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !name_ok {
        return invalid(
            format!("network name {:?} is not valid", conf.name),
            "use letters, digits, '_', '.' and '-', starting with a letter or digit",
        );
    }
    if conf.plugin_type.is_empty() {
        return invalid(
            "the network configuration has no \"type\"".into(),
            "add \"type\": \"routed-cni\"",
        );
    }
    if conf.socket.as_ref().is_some_and(|s| !s.is_absolute()) {
        return invalid(
            "\"socket\" must be an absolute path".into(),
            "e.g. \"socket\": \"/run/routed/routed.sock\"",
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultInterface {
    pub name: String,
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultIp {
    /// Only in 0.4.0 results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: String,
    pub gateway: String,
    pub interface: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultRoute {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// A success result of ADD.
#[derive(Debug, Clone, Serialize)]
pub struct AddResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub interfaces: Vec<ResultInterface>,
    pub ips: Vec<ResultIp>,
    pub routes: Vec<ResultRoute>,
    pub dns: serde_json::Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_have_the_spec_codes() {
        assert_eq!(
            parse_config(b"{not json").unwrap_err().code,
            code::DECODE_FAILURE
        );
        let old = br#"{"cniVersion":"0.2.0","name":"n","type":"routed-cni"}"#;
        assert_eq!(
            parse_config(old).unwrap_err().code,
            code::INCOMPATIBLE_VERSION
        );
        let other = br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#;
        assert_eq!(parse_config(other).unwrap_err().code, code::INVALID_CONFIG);
        let ok =
            br#"{"cniVersion":"0.4.0","name":"n","type":"routed-cni","socket":"/s","mtu":1480}"#;
        let conf = parse_config(ok).unwrap();
        assert_eq!(
            (conf.mtu, conf.socket.unwrap().to_str().unwrap()),
            (Some(1480), "/s")
        );
    }

    #[test]
    fn environment_and_args() {
        let vars: HashMap<String, String> = [
            ("CNI_COMMAND", "ADD"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = CniEnv::from_vars(&vars).unwrap();
        assert_eq!(env.pod(), Some(("default", "web-0")));
        assert_eq!(
            env.require("CNI_IFNAME", &env.ifname).unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
        let bad: HashMap<String, String> = [("CNI_ARGS".to_string(), "novalue".to_string())].into();
        assert_eq!(
            CniEnv::from_vars(&bad).unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
    }
}
