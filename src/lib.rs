//! routed: a pure-L3 pod networking agent for Kubernetes, in the style of Calico's BGP mode.
//!
//! See `docs/architecture.md` for how the pieces fit and the data flow. Modules:
//! - [`model`]: resources (pools, peers, nodes, IPAM records), validation, datastore keys.
//! - [`datastore`]: the revisioned key-value store contract, etcd and SQLite backends, the
//!   get-modify-compare-and-swap helper, watches with resync.
//! - [`ipam`]: block-affinity address management with Calico's semantics.
//! - [`api`]: the local API's own wire types (`api::v1`) and its unix-socket client.
//! - [`agent`]: the node agent `routed`: the datastore follower, calc (pure), the reconcilers
//!   (routes, workloads, tunnels, nftables) under one driver, the local API server, health.
//! - [`bfd`]: BFD (RFC 5880/5881): packet codec, sans-IO session FSM, the UDP driver.
//! - [`bgp`]: the BGP speaker: packet codec, sans-IO FSM, sessions, RIB, speaker.
//! - [`netlink`]: the kernel interface (links, addresses, routes, nexthop objects, neighbours,
//!   FDB, sysctls, namespaces) behind the `Netlink` trait, with a fake for tests.
//! - [`net`]: socket options the protocols need (TCP MD5 signatures).
//! - [`cni`]: the CNI plugin `routed-cni`.
//! - [`cli`]: `routectl` commands, table rendering, exit codes.
//! - [`logging`]: the `tracing` subscriber (text or JSON) the binaries install.
//! - [`bench`]: the BGP peer simulator (`routectl bench bgp-peers`).
//! - [`stop_point`]: named points where a test makes a process stop, to SIGKILL it there.

pub mod agent;
pub mod api;
pub mod bench;
pub mod bfd;
pub mod bgp;
pub mod cli;
pub mod cni;
pub mod datastore;
pub mod ipam;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod net;
pub mod netlink;
pub mod stop_point;
