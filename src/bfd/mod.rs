//! BFD (RFC 5880, single hop over IPv4 per RFC 5881) for fast failure detection of BGP
//! sessions.
//!
//! Data flow:
//!
//! ```text
//!   speaker ── BfdHandle::add/remove/status ──> driver task ──> Fsm::handle(now, Input)
//!   UDP :3784 (one socket, IP_RECVTTL) ──> TTL == 255? ──> packet::decode ──┘   │
//!      (anything else counted in Counters and dropped)                          v
//!   per-session UDP socket (fixed source port 49152–65535, TTL 255) <── Output::Send
//!   speaker <── BfdEvent (state changes; remote AdminDown flagged) <── Output::StateChanged
//! ```
//!
//! - `packet`: the Control packet codec and the §6.8.6 checks (`DecodeError`).
//! - `fsm`: the session state machine, sans-IO (`handle(now, Input) -> Vec<Output>`).
//! - `driver`: the tokio task owning the sockets and every session's timers; `BfdError`.
//!
//! The BGP side (a BFD Down ends the session and holds it until BFD is Up again; a remote
//! AdminDown does not) is in `bgp::speaker::bfd` and `bgp::session`.
//!
//! Departures: IPv4 only, no echo, no demand mode, no authentication, no multihop
//! (RFC 5883); one session per peer address.

pub mod driver;
pub mod fsm;
pub mod packet;

pub use driver::{
    BfdDriver, BfdError, BfdEvent, BfdHandle, BfdPeer, BfdStatus, Counters, DriverConfig,
    SessionStatus, BFD_PORT,
};
pub use fsm::{FsmStatus, Intervals};
pub use packet::{Diagnostic, State};

/// BFD on one BGP peer, in the speaker's terms (the agent maps `BgpPeer.bfd` to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BfdSpec {
    pub intervals: Intervals,
    /// On BFD Down keep the peer's routes as stale when graceful restart was negotiated
    /// (BIRD's `bfd graceful`); otherwise they are withdrawn at once.
    pub graceful: bool,
}
