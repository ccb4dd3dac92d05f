//! Max-prefix (BIRD's `receive limit`, FRR's `maximum-prefix`): how many prefixes a peer
//! may send, and what happens past that.
//!
//! Data flow: after each UPDATE from a peer enters the RIB (`handle_session`), the speaker
//! calls `check_max_prefixes`; past the limit, `Warn` logs once per session, `Restart`
//! sends the session `SessionCommand::Cease` with Cease/1 "Maximum Number of Prefixes
//! Reached" carrying AFI, SAFI and the limit (RFC 4486 §4), which ends that session only;
//! it reconnects after ConnectRetry like after any error, and the peer's routes go as for
//! any session end. Other peers are untouched.

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::SpeakerTask;
use crate::bgp::packet::{codes, Family, Notification};
use crate::bgp::rib::PeerId;
use crate::bgp::session::SessionCommand;

/// What to do when a peer sends more prefixes than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaxPrefixAction {
    /// Log (once per session) and keep the routes.
    Warn,
    /// Cease/1 and restart the session.
    Restart,
}

/// A peer's prefix limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MaxPrefixes {
    pub limit: u32,
    pub action: MaxPrefixAction,
}

/// Cease/1 with AFI (2 bytes), SAFI (1) and the limit (4), RFC 4486 §4.
pub fn max_prefixes_notification(family: Family, limit: u32) -> Notification {
    let mut data = Vec::with_capacity(7);
    data.extend_from_slice(&family.afi.to_be_bytes());
    data.push(family.safi);
    data.extend_from_slice(&limit.to_be_bytes());
    Notification::new(codes::CEASE, codes::CEASE_MAX_PREFIXES, data)
}

impl SpeakerTask {
    /// Enforce the peer's limit after an UPDATE of session `epoch`.
    pub(super) fn check_max_prefixes(&mut self, id: PeerId, epoch: u64) {
        let (received, _) = self.rib.read().counts(id);
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(limit) = entry.spec.max_prefixes else {
            return;
        };
        if received <= limit.limit as usize || entry.max_prefix_reported == Some(epoch) {
            return;
        }
        entry.max_prefix_reported = Some(epoch);
        let _entered = entry.session.span.enter();
        warn!(received, limit = limit.limit, action = ?limit.action, "peer exceeded its prefix limit");
        if limit.action == MaxPrefixAction::Restart {
            let family = if entry.spec.address.is_ipv4() {
                Family::IPV4_UNICAST
            } else {
                Family::IPV6_UNICAST
            };
            let _ = entry.session.commands.send(SessionCommand::Cease {
                epoch,
                notification: max_prefixes_notification(family, limit.limit),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_prefixes_notification_carries_afi_safi_and_limit() {
        let n = max_prefixes_notification(Family::IPV4_UNICAST, 1000);
        assert_eq!((n.code, n.subcode), (6, 1));
        assert_eq!(n.data, [0, 1, 1, 0, 0, 0x03, 0xe8]);
    }
}
