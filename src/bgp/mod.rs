//! BGP-4 for routed: the wire layer and the session state machine.
//!
//! Data flow (one peer):
//!
//! ```text
//! TCP bytes ──> packet::FrameReader ──> packet::decode_message ──> fsm::Fsm::handle(Input)
//!                (framing, 1/x errors)   (validation, then zettabgp      │
//!                                         where it is safe)              v
//! TCP bytes <── packet::encode_*  <──────────────────────────────  Vec<Output>
//! ```
//!
//! `packet` validates every byte before zettabgp sees it and maps every failure to a typed
//! NOTIFICATION; `fsm` is the RFC 4271 §8 state machine with no I/O and no clock, driven by
//! the session task (tokio; `session/`) that owns the socket and the timers. `rib.rs`
//! holds Adj-RIB-In / Loc-RIB / Adj-RIB-Out with best-path selection and export policy,
//! sans-IO; `speaker.rs` owns the listener, one session task per peer and the RIB, and
//! publishes best routes to the route reconciler.
//!
//! RFCs: 4271 (BGP-4), 4760 (multiprotocol), 5492 (capabilities), 6793 (4-octet AS),
//! 2918/7313 (route refresh), 4724 (graceful restart), 7606 (revised error handling),
//! 8654 (extended message), 9003 (shutdown communication), 9072 (extended optional
//! parameters length), 9234 (role, parsed only).

pub mod change_feed;
pub mod fsm;
pub mod packet;
pub mod prefix_table;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod update_groups;

#[cfg(test)]
mod tests;
