//! The agent's local API: HTTP/1.1 + JSON on a unix socket (default `/run/routed/routed.sock`,
//! mode 0600), so `curl --unix-socket` works. The CNI plugin and routectl are its clients; the
//! agent ([`crate::agent::server`]) serves it. This module holds the wire types and a small
//! synchronous client (the CNI plugin is a short-lived process: no runtime, one request each).
//!
//! | method | path | body → reply |
//! |---|---|---|
//! | GET | /healthz | liveness: `{"status":"ok"}` |
//! | GET | /readyz | readiness: [`crate::agent::health::Readiness`] JSON (per-check booleans, reasons); 200 when ready, else 503 |
//! | GET | /v1/node | [`NodeInfo`] |
//! | POST | /v1/ipam/allocate | [`AllocateRequest`] → [`AllocateResponse`] |
//! | POST | /v1/ipam/release | [`ReleaseRequest`] → [`ReleaseResponse`] |
//! | POST | /v1/ipam/gc | [`GcRequest`] → [`GcResponse`] |
//! | GET | /v1/ipam/allocations | [`AllocationInfo`]s held for this node |
//!
//! Errors are `{"error": "...", "kind": "..."}` with a status: 400 invalid, 409 exhausted,
//! 503 datastore unavailable, 500 anything else.

pub mod client;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const DEFAULT_SOCKET: &str = "/run/routed/routed.sock";

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedAddress {
    pub ip: IpAddr,
    pub block: String,
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateResponse {
    pub addresses: Vec<AllocatedAddress>,
    pub pod_mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub handle: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    pub released: Vec<IpAddr>,
}

/// Release every allocation of this node whose handle starts with `prefix` and is not in `keep`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub prefix: String,
    pub keep: Vec<String>,
}

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

/// One address held for this node (the IPAM record, as the API returns it).
pub use crate::ipam::AddressRecord as AllocationInfo;

/// The body of every non-2xx reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    /// `invalid`, `exhausted`, `unavailable`, `not-found`, `internal`.
    pub kind: String,
}
