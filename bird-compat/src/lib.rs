//! BIRD control-socket compatibility for routed: the server side of BIRD's control protocol
//! and pure renderers of its replies, so `birdc`, calico-node's checks, calicoctl's
//! `node status` and prometheus-bird-exporter read routed unchanged.
//!
//! ```text
//!  client ──line──> server ──parse──> command ──┐
//!                     ▲                         ├─> render (dialect, command, snapshot) ──> Reply
//!                     │      Source::snapshot ──┘                                          │
//!                     └────────────────────────── encode (codes, continuations, end) <─────┘
//! ```
//! The crate knows nothing of routed: the agent implements [`server::Source`] by filling the
//! neutral rows of [`model`] (protocols, routes, BFD sessions, status). Two dialects:
//! [`Dialect::Bird1`] (BIRD 1.6.8, the lower-case header calicoctl and calico-node parse) and
//! [`Dialect::Bird2`] (BIRD 2.0.12, for `birdc` of bird2 and the exporter's `-bird.v2`). The
//! golden files in `tests/golden/` are raw captures of those daemons (`capture/capture.sh`).

pub mod command;
pub mod model;
pub mod render;
pub mod reply;
pub mod server;
pub mod time;

pub use model::*;
pub use reply::Reply;

/// Which BIRD a socket speaks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// BIRD 1.6.8: `name proto table state since info`, whole seconds.
    Bird1,
    /// BIRD 2.0.12: `Name Proto Table State Since Info`, milliseconds, channels.
    Bird2,
}

impl Dialect {
    /// The version the welcome line and `show status` announce.
    pub fn version(self) -> &'static str {
        match self {
            Dialect::Bird1 => "1.6.8",
            Dialect::Bird2 => "2.0.12",
        }
    }
}

/// Formats one reply line of the BIRD control protocol: a four-digit code, then
/// `-` when more lines of the same reply follow or a space on the last line.
pub fn format_reply_line(code: u16, more_follows: bool, text: &str) -> String {
    let sep = if more_follows { '-' } else { ' ' };
    format!("{code:04}{sep}{text}\n")
}

#[cfg(test)]
mod golden_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_follow_bird_framing() {
        assert_eq!(
            format_reply_line(1, false, "BIRD 2.0.12 ready."),
            "0001 BIRD 2.0.12 ready.\n"
        );
        assert_eq!(
            format_reply_line(1002, true, "mesh1 BGP"),
            "1002-mesh1 BGP\n"
        );
    }
}
