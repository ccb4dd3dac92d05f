//! Connection collisions (RFC 4271 §6.8): a connection from the peer while one is open.
//!
//! A connection the listener accepts while the main FSM is in Connect or Active is adopted;
//! while the main FSM waits to retry (Idle) the retry is pulled forward and the connection
//! adopted; in OpenSent/OpenConfirm it gets a second FSM (the second slot), and as soon as
//! either side has the peer's OPEN, `resolve_collision` picks the survivor and the loser
//! sends Cease/Connection Collision Resolution. In Established, a peer that negotiated
//! graceful restart restarted (`graceful.rs`); without graceful restart the new connection
//! gets a Cease 6/7 and is closed.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, Instrument};

use super::{Session, SessionEvent, Slot, Which};
use crate::bgp::fsm::{
    resolve_collision, CollisionResolution, ConnectionOrigin, Input, PeerConfig, State,
};
use crate::bgp::packet::{codes, encode_notification, Notification};

/// Close a connection we cannot take: Cease/Connection Collision Resolution, then close.
fn reject_connection(stream: TcpStream) {
    debug!("rejecting connection");
    tokio::spawn(
        async move {
            let mut stream = stream;
            let notification = Notification::cease(codes::CEASE_CONNECTION_COLLISION);
            let _ = stream.write_all(&encode_notification(&notification)).await;
            let _ = stream.shutdown().await;
        }
        .in_current_span(),
    );
}

impl Session {
    /// A connection the listener accepted from the peer's address.
    pub(super) fn accept(&mut self, stream: TcpStream) {
        let state = self.main.fsm.state();
        debug!(?state, "incoming connection");
        match state {
            State::Connect | State::Active => {
                self.cancel_connect();
                self.attach(Which::Main, stream, ConnectionOrigin::Remote);
            }
            State::Idle if self.main.timers.connect_retry.is_some() => {
                // Waiting to retry: start now, on this connection.
                self.main.timers.connect_retry = None;
                self.wake_main(true);
                self.accept_in_connect(stream);
            }
            State::Established if self.graceful_negotiated() => self.adopt_restarted_peer(stream),
            State::OpenSent | State::OpenConfirm if self.second.is_none() => {
                let mut second = Slot::new(self.second_config());
                // Start it like an active FSM but never let it dial: the connection is here.
                let _ = second.fsm.handle(Input::ManualStart);
                self.second = Some(second);
                self.attach(Which::Second, stream, ConnectionOrigin::Remote);
            }
            _ => reject_connection(stream),
        }
    }

    /// After waking the main FSM: adopt the stream if it is now waiting for one.
    pub(super) fn accept_in_connect(&mut self, stream: TcpStream) {
        if matches!(self.main.fsm.state(), State::Connect | State::Active) {
            self.cancel_connect();
            self.attach(Which::Main, stream, ConnectionOrigin::Remote);
        } else {
            reject_connection(stream);
        }
    }

    /// The configuration for a collision FSM: the current one, R bit included only while
    /// the main FSM still sends it.
    fn second_config(&self) -> PeerConfig {
        self.main.fsm.config().clone()
    }

    /// Two connections with the peer's OPEN known on one of them: keep one.
    pub(super) fn resolve_collisions(&mut self) {
        let Some(second) = &self.second else {
            return;
        };
        let remote_id = second.fsm.peer_id().or_else(|| self.main.fsm.peer_id());
        let Some(remote_id) = remote_id else {
            return;
        };
        let main_origin = self
            .main
            .fsm
            .connection_origin()
            .unwrap_or(ConnectionOrigin::Local);
        let resolution = resolve_collision(
            self.config.fsm.local_id,
            remote_id,
            self.main.fsm.state(),
            main_origin,
        );
        info!(?resolution, %remote_id, "connection collision");
        match resolution {
            CollisionResolution::KeepExisting => {
                self.feed(Which::Second, Input::CollisionLost);
                if let Some(second) = self.second.take() {
                    if let Some(link) = second.link {
                        link.close();
                    }
                }
            }
            CollisionResolution::KeepNew => {
                let outputs = self.main.fsm.handle(Input::CollisionLost);
                self.apply(Which::Main, outputs);
                self.cancel_connect();
                if let Some(second) = self.second.take() {
                    self.main = second;
                }
                self.report(SessionEvent::StateChanged(self.main.fsm.state()));
            }
        }
    }
}
