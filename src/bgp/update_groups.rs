//! Update groups: peers that are to receive the same changes share one encoded UPDATE stream.
//!
//! ```text
//!  RibOutput::outbound (PeerId → Outbound, after each peer's export policy)
//!        v  group(): peers whose Outbound is equal and whose negotiated wire options are
//!        v  equal form one group (compared, not hashed: a handful of groups per operation)
//!  encode(): one set of UPDATE messages per group      ── UpdateStats::encoded counts them
//!        v  Arc<[Vec<u8>]>
//!  SessionCommand::AdvertiseEncoded to every member ── each session queues the same bytes
//! ```
//! Peers with the same export policy get equal `Outbound`s from the RIB (it packs prefixes by
//! identical attributes in one order), so a change reflected to 1,000 clients is encoded once,
//! not 1,000 times; a peer whose changes differ (the route's own source, under split horizon)
//! is a group of its own. A peer's first full table after Established is its own (sent by the
//! session, with End-of-RIB).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::bgp::packet::{encode_updates, EncodeError, PathAttributes, WireOptions};
use crate::bgp::rib::{Outbound, PeerId};

/// Peers that receive one encoded stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateGroup {
    pub peers: Vec<PeerId>,
    pub wire: WireOptions,
    pub outbound: Outbound,
}

/// Groups the peers of one RIB operation by equal changes and wire options; peers without
/// wire options (not Established) are left out.
pub fn group(
    outbound: BTreeMap<PeerId, Outbound>,
    wire_of: impl Fn(PeerId) -> Option<WireOptions>,
) -> Vec<UpdateGroup> {
    let mut groups: Vec<UpdateGroup> = Vec::new();
    for (peer, changes) in outbound {
        let Some(wire) = wire_of(peer) else {
            continue;
        };
        match groups
            .iter_mut()
            .find(|g| g.wire == wire && g.outbound == changes)
        {
            Some(group) => group.peers.push(peer),
            None => groups.push(UpdateGroup {
                peers: vec![peer],
                wire,
                outbound: changes,
            }),
        }
    }
    groups
}

/// The UPDATE messages for `outbound`: withdrawals first, then one run per attribute set.
pub fn encode(outbound: &Outbound, wire: &WireOptions) -> (Vec<Vec<u8>>, Vec<EncodeError>) {
    let mut messages = Vec::new();
    let mut errors = Vec::new();
    let mut push = |result: Result<Vec<Vec<u8>>, EncodeError>| match result {
        Ok(encoded) => messages.extend(encoded),
        Err(error) => errors.push(error),
    };
    if !outbound.withdraw.is_empty() {
        push(encode_updates(
            &PathAttributes::default(),
            &[],
            &outbound.withdraw,
            wire,
        ));
    }
    for (attributes, prefixes) in &outbound.announce {
        push(encode_updates(attributes, prefixes, &[], wire));
    }
    (messages, errors)
}

/// How much encoding the groups saved.
#[derive(Debug, Default)]
pub struct UpdateStats {
    /// UPDATE messages encoded (once per group).
    encoded: AtomicU64,
    /// UPDATE messages handed to sessions (once per member).
    sent: AtomicU64,
    /// Groups with more than one member.
    shared_groups: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpdateCounts {
    pub encoded: u64,
    pub sent: u64,
    pub shared_groups: u64,
}

impl UpdateStats {
    /// Counts one group's encoding and its members' copies.
    pub fn record(&self, messages: usize, members: usize) {
        let messages = messages as u64;
        self.encoded.fetch_add(messages, Ordering::Relaxed);
        self.sent
            .fetch_add(messages * members as u64, Ordering::Relaxed);
        if members > 1 {
            self.shared_groups.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> UpdateCounts {
        UpdateCounts {
            encoded: self.encoded.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            shared_groups: self.shared_groups.load(Ordering::Relaxed),
        }
    }
}

/// The encoded messages of one group, shared by its members' commands.
pub type Encoded = Arc<[Vec<u8>]>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::packet::Origin;

    fn outbound(prefixes: &[&str]) -> Outbound {
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            next_hop: Some("10.0.0.1".parse().unwrap()),
            ..PathAttributes::default()
        };
        Outbound {
            announce: vec![(
                attributes,
                prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            )],
            withdraw: vec![],
        }
    }

    #[test]
    fn peers_with_equal_changes_and_wire_share_a_group_others_get_their_own() {
        let wire = WireOptions {
            four_octet_as: true,
            extended_message: false,
        };
        let extended = WireOptions {
            extended_message: true,
            ..wire
        };
        let same = outbound(&["10.1.0.0/26"]);
        let changes: BTreeMap<PeerId, Outbound> = [
            (PeerId(1), same.clone()),
            (PeerId(2), same.clone()),
            (PeerId(3), outbound(&["10.2.0.0/26"])),
            (PeerId(4), same.clone()),
            (PeerId(5), same.clone()),
        ]
        .into();
        let groups = group(changes, |peer| match peer.0 {
            4 => Some(extended),
            5 => None,
            _ => Some(wire),
        });
        let members: Vec<Vec<u32>> = groups
            .iter()
            .map(|g| g.peers.iter().map(|p| p.0).collect())
            .collect();
        assert_eq!(members, [vec![1, 2], vec![3], vec![4]]);
        let stats = UpdateStats::default();
        let (messages, errors) = encode(&groups[0].outbound, &groups[0].wire);
        assert!(errors.is_empty());
        stats.record(messages.len(), groups[0].peers.len());
        assert_eq!(
            stats.counts(),
            UpdateCounts {
                encoded: 1,
                sent: 2,
                shared_groups: 1
            }
        );
    }
}
