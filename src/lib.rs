//! routed: a pure-L3 pod networking agent for Kubernetes, in the style of Calico's BGP mode.
//!
//! See `docs/architecture.md` for how the pieces fit. Modules:
//! - [`model`]: resources (pools, peers, nodes, IPAM records), validation, datastore keys.
//! - [`datastore`]: the revisioned key-value store contract, etcd and SQLite backends.
//! - [`ipam`]: block-affinity address management with Calico's semantics.
//! - [`cli`]: `routectl` commands and table rendering.
//! - [`net`]: socket options the protocols need (TCP MD5 signatures).

pub mod agent;
pub mod api;
pub mod bgp;
pub mod cli;
pub mod cni;
pub mod datastore;
pub mod ipam;
pub mod logging;
pub mod model;
pub mod net;
pub mod netlink;
