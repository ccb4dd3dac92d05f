//! Version 1 of the local API's wire types: what the agent ([`crate::agent::server`]) serves and
//! routed-cni and routectl read. These types belong to the API, not to the layers behind it: the
//! server maps the internal values (`ipam::AddressRecord`, `bgp::speaker::PeerStatus`,
//! `agent::health::Readiness`, ...) to them in one place, so renaming an internal field cannot
//! change what a client receives.
//!
//! ```text
//!  ipam / bgp::speaker / agent::health ──(agent::server: mapping)──> v1 types ──JSON──> routed-cni, routectl
//! ```
//!
//! Each endpoint's reply (and request body) has a golden JSON file in `tests/golden/api/v1/`,
//! produced by the server's mapping of a representative internal value and read back by the
//! clients' deserialisers in their tests: a renamed field breaks a test, not a user.
//! `ROUTED_BLESS=1 cargo test --lib` rewrites the files after an intended change.
//!
//! Compatibility rules: fields are only added (with `#[serde(default)]`), never renamed or
//! removed within v1; an error kind a client does not know reads as [`ErrorKind::Internal`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `GET /healthz`: `{"status":"ok"}` while the agent answers requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// `GET /readyz`: 200 when ready, else 503 (and `error`, `kind` like every non-2xx body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// `ready` or `not ready`.
    pub status: String,
    /// Check name (`datastore`, `routes`, `workload_routes`, `nftables`) → passed.
    pub checks: BTreeMap<String, bool>,
    /// One sentence per failed check (required or not).
    pub reasons: Vec<String>,
    /// Present when not ready (the API's error shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

/// `GET /v1/reconcilers` returns one of these per reconciler of the agent (`workloads`, `nat`,
/// `tunnels`, `routes`), in the order they started: how often each ran, how often a pass
/// changed the kernel, and whether the last one failed. A steady state shows `passes` rising
/// and `passes_changed` flat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcilerStatus {
    pub name: String,
    /// Passes run (failed ones included).
    pub passes: u64,
    /// Passes that changed something in the kernel.
    pub passes_changed: u64,
    /// Kernel objects changed, over all passes.
    pub changes: u64,
    /// Passes whose apply failed.
    pub failures: u64,
    /// Failed passes since the last one that succeeded (0: the last pass succeeded).
    pub consecutive_failures: u64,
    /// The error of the last failed pass, kept after a later success.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// `GET /v1/node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// MTU for pod interfaces: the node interface's MTU minus the encapsulation overhead in use.
    pub pod_mtu: u32,
    #[serde(default)]
    pub ipv4_address: Option<String>,
    /// How the address was found: `explicit`, `first-found`, `interface=..`, `cidr=..`,
    /// `can-reach=..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_detection: Option<String>,
    /// The interface carrying the node address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// That interface's MTU (the pod MTU is this minus the encapsulation overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mtu: Option<u32>,
    /// Node-wide sysctls the agent set or checked (`net.ipv4.ip_forward`,
    /// `net.ipv4.conf.all.rp_filter`), with the value in force.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
}

/// `POST /v1/ipam/allocate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateRequest {
    pub handle: String,
    #[serde(default = "one")]
    pub count: usize,
    #[serde(default)]
    pub ipv6: bool,
    /// `namespace`, `pod`, `container_id`, `ifname`, `veth` ...
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn one() -> usize {
    1
}

/// One address of an [`AllocateResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedAddress {
    pub ip: IpAddr,
    /// The block (CIDR) the address came from.
    pub block: String,
    /// Sequence number to pass to a release by address.
    pub sequence: u64,
}

/// `POST /v1/ipam/allocate` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateResponse {
    pub addresses: Vec<AllocatedAddress>,
    pub pod_mtu: u32,
}

/// `POST /v1/ipam/release` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub handle: String,
}

/// `POST /v1/ipam/release` reply: the addresses the handle held (none when it held nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    pub released: Vec<IpAddr>,
}

/// `POST /v1/ipam/gc` body: CNI GC of this node. Handles starting with `prefix` (of `network`,
/// or recorded without one) that are not in `keep` are unheld: recorded in the datastore, and
/// released when the previous GC found them unheld too (`ipam::attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub prefix: String,
    pub keep: Vec<String>,
    /// The CNI network (`name` of the configuration); absent: every network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `POST /v1/ipam/gc` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    /// What was released, with the attributes recorded at allocation (the plugin removes the
    /// `veth` named there).
    pub released: Vec<AllocationInfo>,
    /// What stays (handles in `keep`): the plugin keeps the veths named there and removes every
    /// other pod veth, including ones whose ADD died before its address was recorded.
    #[serde(default)]
    pub kept: Vec<AllocationInfo>,
}

/// One address held for this node: `GET /v1/ipam/allocations` returns a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationInfo {
    pub ip: IpAddr,
    pub handle: String,
    pub sequence: u64,
    /// Recorded at allocation: `node`, `namespace`, `pod`, `container_id`, `ifname`, `veth`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `GET /v1/bgp/status` returns a list of these, one per configured peer: the rows of
/// `routectl status` (and, unchanged, its `-o json` output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Unique (`Mesh_10_0_0_2`, `Global_<ip>`, `Node_<ip>`).
    pub name: String,
    pub address: IpAddr,
    pub kind: PeerKind,
    /// How the agent describes the peer (`node-to-node mesh`, `global`, `node specific`, or the
    /// label of a kind this client does not know).
    #[serde(default)]
    pub description: String,
    pub state: SessionState,
    /// When `state` was entered, unix seconds.
    pub since: u64,
    /// The same, as `YYYY-MM-DD HH:MM:SS` UTC.
    pub since_human: String,
    /// "Established", or the last error.
    pub info: String,
    pub prefixes_received: u64,
    pub prefixes_advertised: u64,
    /// The peer sent End-of-RIB on the current session: its initial routes are all in.
    #[serde(default)]
    pub end_of_rib_received: bool,
    /// The session's route-reflection role (`Peer` when none).
    #[serde(default)]
    pub role: PeerRole,
    /// The cluster ID of the reflection: ours towards a client, the reflector's towards it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rr_cluster_id: Option<std::net::Ipv4Addr>,
    /// The BFD session's state (`AdminDown`, `Down`, `Init`, `Up`) when BFD is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
    /// Errors the peer's sessions reported, by kind (`decode`, `malformed_attribute`,
    /// `connect`, ...): what the log shows only a count of after the first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
}

/// A session's route-reflection role (RFC 4456). A role this client does not know reads as
/// `Other`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRole {
    /// Plain BGP.
    #[default]
    Peer,
    /// The peer is a route reflector (we are its client, or a reflector of its cluster).
    RouteReflector,
    /// The peer is our route-reflector client.
    RrClient,
    #[serde(other)]
    Other,
}

/// Where a peer comes from (Calico's peer types). A kind this client does not know reads as
/// `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerKind {
    Mesh,
    Global,
    NodeSpecific,
    #[serde(other)]
    Other,
}

/// A BGP session's state (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// The body of every non-2xx reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a person (names the datastore, handle, ...).
    pub error: String,
    pub kind: ErrorKind,
}

/// What a client can act on. Each kind has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// 400: the request is malformed or fails validation.
    Invalid,
    /// 409: no address left (pools exhausted, or no enabled pool).
    Exhausted,
    /// 503: the datastore (or the BGP speaker) cannot answer now; retry later (CNI code 11).
    Unavailable,
    /// 404: no such endpoint, or BGP is not running.
    NotFound,
    /// 500: anything else (also any kind this client does not know).
    #[serde(other)]
    Internal,
}

impl ErrorKind {
    /// The HTTP status the agent answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Exhausted => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::NotFound => 404,
            ErrorKind::Internal => 500,
        }
    }

    /// The wire name (`invalid`, `exhausted`, `unavailable`, `not-found`, `internal`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::Exhausted => "exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What each agent publishes under [`crate::model::keys::node_status`] (a leased key: it
/// disappears when the agent stops renewing it) and `routectl cluster status` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatusReport {
    pub node: String,
    /// The node address (how the other nodes' sessions name this one).
    pub address: Option<IpAddr>,
    pub version: String,
    /// When the agent started, unix seconds.
    pub started: u64,
    /// When this report was written, unix seconds.
    pub published: u64,
    /// Its BGP sessions, as `GET /v1/bgp/status` shows them (`info`: the last error).
    pub sessions: Vec<PeerStatus>,
    /// The blocks it originates.
    pub advertised_blocks: Vec<String>,
    /// Learned routes of ours in its kernel (protocols 232 and 233: other nodes' blocks).
    pub programmed_routes: Vec<String>,
}

/// The golden files of `tests/golden/api/v1/`: compared with what the mapping produces, read by
/// the clients' deserialisers.
/// `GET /v1/bfd`: the agent's BFD sessions and its receive counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdStatus {
    pub sessions: Vec<BfdSession>,
    pub counters: BfdCounters,
}

/// One BFD session (RFC 5880 §6.8.1 variables, intervals in microseconds as on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdSession {
    pub peer: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<IpAddr>,
    pub source_port: u16,
    /// `AdminDown`, `Down`, `Init` or `Up`.
    pub state: String,
    pub remote_state: String,
    /// The last diagnostic (`None`, `ControlDetectionTimeExpired`, ...).
    pub diagnostic: String,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// Configured Desired Min TX / Required Min RX (ms) and multiplier.
    pub min_tx_ms: u64,
    pub min_rx_ms: u64,
    pub multiplier: u8,
    /// What is in force now: our transmit interval and the detection time.
    pub tx_interval_us: u64,
    pub detection_time_us: u64,
    pub remote_multiplier: u8,
    /// A Poll Sequence (timer change) is under way.
    pub polling: bool,
}

/// Datagrams received, sent and dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdCounters {
    pub received: u64,
    pub sent: u64,
    pub bad_ttl: u64,
    pub no_session: u64,
    pub malformed: BTreeMap<String, u64>,
    pub send_errors: u64,
}

#[cfg(test)]
pub(crate) mod golden {
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use std::path::PathBuf;

    pub fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/api/v1")
            .join(format!("{name}.json"))
    }

    /// The checked-in text of `name`.
    pub fn text(name: &str) -> String {
        let path = path(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (ROUTED_BLESS=1 writes it)", path.display()))
    }

    /// `name` parsed by the clients' deserialiser for `T`.
    pub fn read<T: DeserializeOwned>(name: &str) -> T {
        serde_json::from_str(&text(name))
            .unwrap_or_else(|e| panic!("golden {name}.json no longer parses: {e}"))
    }

    /// Asserts that `value` serialises to the golden file `name` and that the file parses back
    /// to `value` (a request: the client writes it, the server reads it).
    pub fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
        name: &str,
        value: &T,
    ) {
        check(name, value);
        assert_eq!(
            &read::<T>(name),
            value,
            "golden {name}.json reads back differently"
        );
    }

    /// Asserts that `value` serialises to the golden file `name` (rewrites it with
    /// `ROUTED_BLESS=1`).
    pub fn check<T: Serialize>(name: &str, value: &T) {
        let mut produced = serde_json::to_string_pretty(value).unwrap();
        produced.push('\n');
        if std::env::var_os("ROUTED_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(path(name), &produced).unwrap();
            return;
        }
        assert_eq!(
            produced,
            text(name),
            "the wire format of {name} changed; if on purpose, rerun with ROUTED_BLESS=1"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_error_kinds_read_as_internal() {
        let e: ApiError = serde_json::from_str(r#"{"error":"x","kind":"teapot"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::Internal);
        for kind in [
            ErrorKind::Invalid,
            ErrorKind::Exhausted,
            ErrorKind::Unavailable,
            ErrorKind::NotFound,
            ErrorKind::Internal,
        ] {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
    }

    #[test]
    fn allocate_request_defaults_to_one_ipv4_address() {
        let r: AllocateRequest = serde_json::from_str(r#"{"handle":"h"}"#).unwrap();
        assert_eq!((r.count, r.ipv6, r.attributes.len()), (1, false, 0));
    }

    /// The request bodies the clients send (routed-cni's ADD, DEL and GC), as the agent parses
    /// them.
    #[test]
    fn request_bodies_match_their_golden_files() {
        let attributes = [
            ("container_id", "3f1c0a"),
            ("ifname", "eth0"),
            ("namespace", "default"),
            ("pod", "web-0"),
            ("veth", "rd5e8f1c2a9b0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let allocate = AllocateRequest {
            handle: "routed.3f1c0a.eth0".into(),
            count: 1,
            ipv6: false,
            attributes,
        };
        golden::round_trip("ipam-allocate-request", &allocate);
        let release = ReleaseRequest {
            handle: "routed.3f1c0a.eth0".into(),
        };
        golden::round_trip("ipam-release-request", &release);
        let gc = GcRequest {
            prefix: "routed.".into(),
            keep: vec!["routed.3f1c0a.eth0".into()],
            network: Some("routed".into()),
        };
        golden::round_trip("ipam-gc-request", &gc);
    }
}
