//! Graceful restart in the session task (RFC 4724).
//!
//! The peer restarted: a new connection from a peer that negotiated graceful restart,
//! while the session is Established (§4.2), ends the old session gracefully (the speaker
//! keeps its routes as stale) and the new connection is adopted. We restarted: the first
//! FSM of the task sends the R bit; when its first session ends the main slot is swapped
//! for an FSM whose OPEN has it clear, started by the pending ConnectRetry.

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::info;

use super::{Session, Slot, Which};
use crate::bgp::fsm::Input;

impl Session {
    /// The peer reconnected while Established and graceful restart was negotiated: it
    /// restarted (RFC 4724 §4.2). End the old session gracefully, adopt the new connection.
    pub(super) fn adopt_restarted_peer(&mut self, stream: TcpStream) {
        info!("peer reconnected while Established: it restarted (RFC 4724)");
        let outputs = self.main.fsm.handle(Input::TcpClosed);
        self.apply(Which::Main, outputs);
        self.main.timers.connect_retry = None;
        self.wake_main(true);
        self.accept_in_connect(stream);
    }

    /// Whether the Established session negotiated graceful restart.
    pub(super) fn graceful_negotiated(&self) -> bool {
        self.main
            .fsm
            .negotiated()
            .is_some_and(|n| n.peer_graceful_restart.is_some())
    }

    /// After the first session, we are no longer "restarting": the main FSM is replaced
    /// by one whose OPEN has the R bit clear.
    pub(super) fn drop_restarting_bit(&mut self) {
        let restarting = self
            .main
            .fsm
            .config()
            .graceful_restart
            .as_ref()
            .is_some_and(|g| g.restarting);
        if restarting {
            let mut config = self.main.fsm.config().clone();
            if let Some(gr) = config.graceful_restart.as_mut() {
                gr.restarting = false;
            }
            self.config.fsm = config.clone();
            // The old FSM's outputs after SessionDown arm ConnectRetry; the new FSM starts
            // when it fires. The link is already closed by the Disconnect before this.
            let timers = std::mem::take(&mut self.main.timers);
            self.main = Slot::new(config);
            self.main.timers.connect_retry = timers
                .connect_retry
                .or(Some(Instant::now() + self.config.fsm.connect_retry_time));
            self.main.start_on_retry = true;
        }
    }
}
