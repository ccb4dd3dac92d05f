//! BFD's verdict on the session (RFC 5882 §4.1): a Down ends the session at once, without
//! a NOTIFICATION, and holds it (nothing dialled, nothing accepted) until BFD is Up again,
//! so BGP cannot come back over a path BFD does not vouch for.
//!
//! Data flow: the speaker turns the BFD driver's state changes into `BfdSignal`s (it
//! already left out a peer's own AdminDown, RFC 5882 §4.2) and sends them as
//! `SessionCommand::Bfd`; here they become `Input::BfdDown` or `Input::ManualStart` for the
//! main FSM, and a collision's second FSM is dropped.

use super::{Session, Which};
use crate::bgp::fsm::Input;
use tracing::info;

/// What BFD says about the path to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BfdSignal {
    /// The path failed; `graceful` keeps the routes stale when graceful restart was
    /// negotiated.
    Down { graceful: bool },
    /// The path works again: start the session if it was held.
    Up,
}

impl Session {
    pub(super) fn bfd_signal(&mut self, signal: BfdSignal) {
        match signal {
            BfdSignal::Down { graceful } => {
                info!(graceful, "BFD down: ending the session and holding it");
                self.bfd_held = true;
                if let Some(second) = self.second.take() {
                    if let Some(link) = second.link {
                        link.close();
                    }
                }
                self.cancel_connect();
                self.feed(Which::Main, Input::BfdDown { graceful });
            }
            BfdSignal::Up => {
                if self.bfd_held {
                    info!("BFD up: starting the session");
                    self.bfd_held = false;
                    self.feed(Which::Main, Input::ManualStart);
                }
            }
        }
    }
}
