//! Session-level and interop tests for the speaker.
//!
//! `session.rs`: two in-process speakers over loopback TCP, and a raw TCP "peer" that sends
//! malformed UPDATEs. `backpressure.rs`: a peer that stops reading, a peer that floods.
//! `update_groups.rs`: two clients of one policy share one encoded stream. `interop_*.rs`: BIRD 2, FRR and GoBGP in network namespaces, run only
//! with `ROUTED_E2E=1` (see `netns.rs` for the topology and cleanup).

mod backpressure;
mod bfd_interop;
mod gtsm;
mod harness;
mod interop;
mod limits;
mod netns;
mod session;
mod update_groups;
