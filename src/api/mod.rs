//! The agent's local API: HTTP/1.1 + JSON on a unix socket (default `/run/routed/routed.sock`,
//! mode 0600), so `curl --unix-socket` works. The CNI plugin and routectl are its clients; the
//! agent ([`crate::agent::server`]) serves it. This module holds the versioned wire types
//! ([`v1`], owned by the API: the server maps internal types to them) and a small synchronous
//! client (the CNI plugin is a short-lived process: no runtime, one request each).
//!
//! | method | path | body → reply | golden file (`tests/golden/api/v1/`) |
//! |---|---|---|---|
//! | GET | /healthz | liveness: [`v1::Health`] `{"status":"ok"}` | `healthz.json` |
//! | GET | /readyz | [`v1::Readiness`] (per-check booleans, reasons); 200 when ready, else 503 | `readyz-ready.json`, `readyz-not-ready.json` |
//! | GET | /v1/node | [`v1::NodeInfo`] | `node.json` |
//! | POST | /v1/ipam/allocate | [`v1::AllocateRequest`] → [`v1::AllocateResponse`] | `ipam-allocate-request.json`, `ipam-allocate-response.json` |
//! | POST | /v1/ipam/release | [`v1::ReleaseRequest`] → [`v1::ReleaseResponse`] | `ipam-release-request.json`, `ipam-release-response.json` |
//! | POST | /v1/ipam/gc | [`v1::GcRequest`] → [`v1::GcResponse`] | `ipam-gc-request.json`, `ipam-gc-response.json` |
//! | GET | /v1/ipam/allocations | a list of [`v1::AllocationInfo`] held for this node | `ipam-allocations.json` |
//! | GET | /v1/bgp/status | a list of [`v1::PeerStatus`] (404 `not-found` without BGP) | `bgp-status.json` |
//! | GET | /v1/bfd | [`v1::BfdStatus`]: BFD sessions and dropped-datagram counters | `bfd-status.json` |
//!
//! Errors are [`v1::ApiError`] `{"error": "...", "kind": "..."}` with a status: 400 `invalid`,
//! 404 `not-found`, 409 `exhausted`, 503 `unavailable` (datastore or speaker), 500 `internal`
//! (`error-*.json`).

pub mod client;
pub mod v1;

pub const DEFAULT_SOCKET: &str = "/run/routed/routed.sock";
