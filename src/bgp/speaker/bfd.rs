//! The speaker's side of BFD: one driver for every peer that wants it, and what its state
//! changes mean for BGP.
//!
//! Data flow: `add_peer` registers a peer's address with the driver (`bfd_add`, started
//! lazily with the first such peer), `remove_peer` unregisters it (`bfd_remove`); the
//! driver's `BfdEvent`s come back into the speaker's loop (`bfd_event`) and become
//! `SessionCommand::Bfd` for that peer's session:
//! - Up → Down, unless the peer signalled AdminDown (RFC 5882 §4.2): `BfdSignal::Down`.
//!   The session ends at once without a NOTIFICATION; its `SessionEvent::Down` then
//!   withdraws the peer's routes (or keeps them stale with `BfdSpec::graceful`) as any
//!   session end does, and the route reconciler takes them out of the kernel.
//! - → Up: `BfdSignal::Up`, which starts the session again if the Down held it, so BGP
//!   never comes back before BFD does.

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{PeerSpec, SpeakerTask};
use crate::bfd::{BfdDriver, BfdEvent, BfdHandle, BfdPeer, DriverConfig, State};
use crate::bgp::session::{BfdSignal, SessionCommand};

/// The driver, once started, and the channel its events arrive on.
pub(super) struct BfdLink {
    driver: Option<BfdDriver>,
    events_tx: mpsc::UnboundedSender<BfdEvent>,
    pub(super) events: mpsc::UnboundedReceiver<BfdEvent>,
}

impl BfdLink {
    pub(super) fn new() -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        BfdLink {
            driver: None,
            events_tx,
            events,
        }
    }

    pub(super) fn handle(&self) -> Option<BfdHandle> {
        self.driver.as_ref().map(BfdDriver::handle)
    }

    /// The driver, started on first use (0.0.0.0:3784).
    fn driver(&mut self) -> Option<&BfdDriver> {
        if self.driver.is_none() {
            match BfdDriver::start(DriverConfig::default(), self.events_tx.clone()) {
                Ok(driver) => self.driver = Some(driver),
                Err(error) => warn!(%error, "BFD unavailable"),
            }
        }
        self.driver.as_ref()
    }
}

impl SpeakerTask {
    /// Start BFD for a new peer; its initial state for status.
    pub(super) fn bfd_add(&mut self, spec: &PeerSpec) -> Option<State> {
        let bfd = spec.bfd?;
        let peer = BfdPeer::new(spec.address, spec.source_address, bfd.intervals);
        let driver = self.bfd.driver()?;
        if let Err(error) = driver.handle().add(peer) {
            warn!(peer = %spec.name, %error, "BFD session not started");
            return None;
        }
        Some(State::Down)
    }

    /// Stop BFD for a removed peer unless another peer at that address still uses it.
    pub(super) fn bfd_remove(&mut self, spec: &PeerSpec) {
        if spec.bfd.is_none() {
            return;
        }
        let shared = self
            .peers
            .values()
            .any(|e| e.spec.address == spec.address && e.spec.bfd.is_some());
        if let (Some(handle), false) = (self.bfd.handle(), shared) {
            let _ = handle.remove(spec.address);
        }
    }

    /// A BFD session changed state: tell the sessions of the peers at that address.
    pub(super) fn bfd_event(&mut self, event: BfdEvent) {
        for entry in self.peers.values_mut() {
            let Some(bfd) = entry.spec.bfd else {
                continue;
            };
            if entry.spec.address != event.peer {
                continue;
            }
            let _entered = entry.session.span.enter();
            entry.bfd_state = Some(event.to);
            let signal = match (event.from, event.to) {
                (State::Up, State::Down) if event.remote_admin_down => {
                    info!("BFD: peer is administratively down; the BGP session stays");
                    None
                }
                (State::Up, State::Down) => {
                    warn!(diagnostic = ?event.diagnostic, "BFD down");
                    Some(BfdSignal::Down {
                        graceful: bfd.graceful,
                    })
                }
                (_, State::Up) => Some(BfdSignal::Up),
                _ => None,
            };
            if let Some(signal) = signal {
                let _ = entry.session.commands.send(SessionCommand::Bfd(signal));
            }
        }
    }
}
