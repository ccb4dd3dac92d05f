//! routed's BGP wire layer (`src/bgp/packet`), compiled as its own crate for the fuzz targets.
//!
//! The module uses nothing of routed outside itself (only `super::` paths and bytes, serde,
//! thiserror, tracing, ipnetwork, zettabgp), so the fuzzers exercise exactly the decoder the
//! agent runs without building the agent's datastore, API and netlink dependencies. If the
//! module ever reaches into `crate::`, this crate stops compiling: add the dependency here or
//! go back to depending on `routed`.

#[path = "../../src/bgp/packet/mod.rs"]
pub mod packet;

/// routed's BFD Control packet codec (`src/bfd/packet.rs`), on its own like `packet`.
#[path = "../../src/bfd/packet.rs"]
pub mod bfd_packet;
