//! Update groups: peers that are to receive the same changes share one encoded UPDATE stream.
//!
//! ```text
//!  RibOutput::groups (one GroupChanges per update group: the RIB keeps one Adj-RIB-Out per
//!        v  group and diffs each change once, `rib_groups.rs`)
//!  encode_group(): per set of negotiated wire options among the members, each run of the
//!        v  changes (the withdrawals; one attribute set's announcements) encoded once
//!        v  ── UpdateStats::encoded counts them
//!  Arc<[Vec<u8>]> per run ── SessionCommand::AdvertiseEncoded to every member it applies to:
//!                            each session queues the same bytes (no copy until the socket)
//! ```
//! Split horizon makes a few members differ (the route's own source is not sent it): such a
//! member gets the shared runs its exception does not touch and its own encoding of the rest,
//! so a change reflected to 1,000 clients is encoded once, not 1,000 times. A peer's first
//! full table after Established is its own (sent by the session, with End-of-RIB).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipnetwork::IpNetwork;

use crate::bgp::packet::{encode_updates, EncodeError, PathAttributes, WireOptions};
use crate::bgp::rib::{GroupChanges, Outbound, PeerId};

/// What one member is sent: shared encoded runs, in order.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub peer: PeerId,
    pub messages: Vec<Encoded>,
    pub announced: usize,
    pub withdrawn: usize,
}

/// One run of a group's changes: the withdrawals, or one attribute set's announcements.
fn runs(changes: &Outbound) -> Vec<Outbound> {
    let mut runs = Vec::with_capacity(changes.announce.len() + 1);
    if !changes.withdraw.is_empty() {
        runs.push(Outbound {
            announce: Vec::new(),
            withdraw: changes.withdraw.clone(),
        });
    }
    runs.extend(changes.announce.iter().map(|run| Outbound {
        announce: vec![run.clone()],
        withdraw: Vec::new(),
    }));
    runs
}

fn prefixes(run: &Outbound) -> impl Iterator<Item = &IpNetwork> {
    run.withdraw
        .iter()
        .chain(run.announce.iter().flat_map(|(_, p)| p.iter()))
}

/// Encode a group's changes for its `members` that negotiated `wire`: each run once, shared
/// by every member it applies to; a member with an exception also gets its own encoding of
/// the runs the exception touches. Counted in `stats`.
pub fn encode_group(
    changes: &GroupChanges,
    members: &[PeerId],
    wire: &WireOptions,
    stats: &UpdateStats,
) -> (Vec<Delivery>, Vec<EncodeError>) {
    let runs = runs(&changes.changes);
    let mut errors = Vec::new();
    let encoded: Vec<Encoded> = runs
        .iter()
        .map(|run| {
            let (messages, mut failed) = encode(run, wire);
            errors.append(&mut failed);
            Encoded::from(messages)
        })
        .collect();
    let shared_messages: usize = encoded.iter().map(|e| e.len()).sum();
    let index: HashMap<IpNetwork, usize> =
        if members.iter().any(|m| changes.exceptions.contains_key(m)) {
            runs.iter()
                .enumerate()
                .flat_map(|(i, run)| prefixes(run).map(move |p| (*p, i)))
                .collect()
        } else {
            HashMap::new()
        };
    let mut counts = Counts::default();
    let deliveries = members
        .iter()
        .map(|&peer| {
            let Some(exception) = changes.exceptions.get(&peer) else {
                counts.sent += shared_messages;
                return Delivery {
                    peer,
                    messages: encoded.iter().filter(|e| !e.is_empty()).cloned().collect(),
                    announced: changes.changes.announced_len(),
                    withdrawn: changes.changes.withdraw.len(),
                };
            };
            let touched: BTreeSet<usize> = exception
                .skip
                .iter()
                .filter_map(|p| index.get(p).copied())
                .collect();
            let mut own = exception.own.clone();
            let keep = |p: &&IpNetwork| exception.skip.binary_search(p).is_err();
            for run in touched.iter().filter_map(|&i| runs.get(i)) {
                own.withdraw.extend(run.withdraw.iter().filter(keep));
                for (attributes, prefixes) in &run.announce {
                    let kept: Vec<IpNetwork> = prefixes.iter().filter(keep).copied().collect();
                    if !kept.is_empty() {
                        own.announce.push((attributes.clone(), kept));
                    }
                }
            }
            let mut messages: Vec<Encoded> = encoded
                .iter()
                .enumerate()
                .filter(|(i, e)| !touched.contains(i) && !e.is_empty())
                .map(|(_, e)| e.clone())
                .collect();
            counts.sent += messages.iter().map(|e| e.len()).sum::<usize>();
            let (mine, mut failed) = encode(&own, wire);
            errors.append(&mut failed);
            counts.own += mine.len();
            if !mine.is_empty() {
                messages.push(mine.into());
            }
            Delivery {
                peer,
                messages,
                announced: own.announced_len(),
                withdrawn: own.withdraw.len(),
            }
        })
        .collect();
    let members_sent = members.len() > 1 && shared_messages > 0;
    stats.add(
        (shared_messages + counts.own) as u64,
        (counts.sent + counts.own) as u64,
        members_sent,
    );
    (deliveries, errors)
}

#[derive(Debug, Default)]
struct Counts {
    /// Shared messages handed to members.
    sent: usize,
    /// Messages encoded for one member only.
    own: usize,
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
    /// Counts one group's encoding: messages encoded, handed to members, and whether the
    /// group shared them among several members.
    pub fn add(&self, encoded: u64, sent: u64, shared: bool) {
        self.encoded.fetch_add(encoded, Ordering::Relaxed);
        self.sent.fetch_add(sent, Ordering::Relaxed);
        if shared {
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

/// Encoded announcement runs of full tables, by attribute set: peers that join a group one
/// after another are sent the same runs (a reflector's clients: every other client's blocks),
/// so each is encoded once and shared, like a group's changes. An entry is used only when its
/// attributes (the same `Arc`, kept alive by the entry), prefixes and wire options all match.
#[derive(Debug, Default)]
pub struct RunCache {
    runs: HashMap<usize, CachedRun>,
    /// Encoded bytes held.
    bytes: usize,
}

#[derive(Debug)]
struct CachedRun {
    attributes: Arc<PathAttributes>,
    prefixes: Vec<IpNetwork>,
    wire: WireOptions,
    encoded: Encoded,
}

/// Runs and encoded bytes the cache holds at most (it starts over when either is reached).
const RUN_CACHE_MAX: usize = 1 << 16;
const RUN_CACHE_MAX_BYTES: usize = 16 << 20;

impl RunCache {
    /// The messages of a full table (`outbound`), each run encoded once across calls.
    pub fn encode(
        &mut self,
        outbound: &Outbound,
        wire: &WireOptions,
        stats: &UpdateStats,
    ) -> (Vec<Encoded>, Vec<EncodeError>) {
        let mut messages = Vec::with_capacity(outbound.announce.len() + 1);
        let (withdrawn, mut errors) = encode(
            &Outbound {
                announce: Vec::new(),
                withdraw: outbound.withdraw.clone(),
            },
            wire,
        );
        let (mut encoded, mut sent) = (withdrawn.len(), withdrawn.len());
        if !withdrawn.is_empty() {
            messages.push(Encoded::from(withdrawn));
        }
        for (attributes, prefixes) in &outbound.announce {
            let key = Arc::as_ptr(attributes) as usize;
            let hit = self.runs.get(&key).filter(|c| {
                Arc::ptr_eq(&c.attributes, attributes) && c.wire == *wire && c.prefixes == *prefixes
            });
            let run = match hit {
                Some(cached) => cached.encoded.clone(),
                None => {
                    let run = Outbound {
                        announce: vec![(attributes.clone(), prefixes.clone())],
                        withdraw: Vec::new(),
                    };
                    let (run, mut failed) = encode(&run, wire);
                    errors.append(&mut failed);
                    encoded += run.len();
                    let run = Encoded::from(run);
                    let size: usize = run.iter().map(Vec::len).sum();
                    if self.runs.len() >= RUN_CACHE_MAX || self.bytes + size > RUN_CACHE_MAX_BYTES {
                        self.runs.clear();
                        self.bytes = 0;
                    }
                    self.bytes += size;
                    self.runs.insert(
                        key,
                        CachedRun {
                            attributes: attributes.clone(),
                            prefixes: prefixes.clone(),
                            wire: *wire,
                            encoded: run.clone(),
                        },
                    );
                    run
                }
            };
            sent += run.len();
            if !run.is_empty() {
                messages.push(run);
            }
        }
        stats.add(encoded as u64, sent as u64, false);
        (messages, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::packet::Origin;
    use crate::bgp::rib::Exception;

    fn outbound(next_hop: &str, prefixes: &[&str]) -> Outbound {
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            next_hop: Some(next_hop.parse().unwrap()),
            ..PathAttributes::default()
        };
        Outbound {
            announce: vec![(
                Arc::new(attributes),
                prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            )],
            withdraw: vec![],
        }
    }

    const WIRE: WireOptions = WireOptions {
        four_octet_as: true,
        extended_message: false,
    };

    #[test]
    fn group_changes_are_encoded_once_and_the_same_bytes_go_to_every_member() {
        let changes = GroupChanges {
            members: vec![PeerId(1), PeerId(2), PeerId(3)],
            changes: outbound("10.0.0.9", &["10.1.0.0/26", "10.1.0.64/26"]),
            exceptions: Default::default(),
        };
        let stats = UpdateStats::default();
        let (deliveries, errors) = encode_group(&changes, &changes.members, &WIRE, &stats);
        assert!(errors.is_empty());
        assert_eq!(deliveries.len(), 3);
        for d in &deliveries {
            assert!(
                Arc::ptr_eq(&d.messages[0], &deliveries[0].messages[0]),
                "shared bytes"
            );
        }
        assert_eq!(
            stats.counts(),
            UpdateCounts {
                encoded: 1,
                sent: 3,
                shared_groups: 1
            }
        );
    }

    #[test]
    fn a_member_with_a_split_horizon_exception_gets_its_own_encoding_of_the_touched_run_only() {
        let mut changes = GroupChanges {
            members: vec![PeerId(1), PeerId(2)],
            changes: outbound("10.0.0.9", &["10.1.0.0/26"]),
            exceptions: Default::default(),
        };
        changes
            .changes
            .announce
            .extend(outbound("10.0.0.8", &["10.2.0.0/26", "10.2.0.64/26"]).announce);
        // Peer 2 is the source of 10.2.0.0/26: it is not sent it, and is told to withdraw
        // 10.9.0.0/26 (it had it from another source that is now itself).
        changes.exceptions.insert(
            PeerId(2),
            Exception {
                skip: vec!["10.2.0.0/26".parse().unwrap()],
                own: Outbound {
                    announce: vec![],
                    withdraw: vec!["10.9.0.0/26".parse().unwrap()],
                },
            },
        );
        let stats = UpdateStats::default();
        let (deliveries, errors) = encode_group(&changes, &changes.members, &WIRE, &stats);
        assert!(errors.is_empty());
        let [one, two] = &deliveries[..] else {
            panic!("two deliveries")
        };
        assert_eq!(one.messages.len(), 2, "both shared runs");
        assert_eq!(two.messages.len(), 2, "the untouched run and its own");
        assert!(Arc::ptr_eq(&one.messages[0], &two.messages[0]));
        let decode = |bytes: &[u8]| match crate::bgp::packet::decode_message(bytes, &WIRE)
            .unwrap()
            .message
        {
            crate::bgp::packet::Message::Update(u) => u,
            other => panic!("{other:?}"),
        };
        let own: Vec<_> = two.messages[1].iter().map(|m| decode(m)).collect();
        let withdrawn: Vec<_> = own.iter().flat_map(|u| u.withdrawn.clone()).collect();
        let nlri: Vec<_> = own.iter().flat_map(|u| u.nlri.clone()).collect();
        assert_eq!(withdrawn, vec!["10.9.0.0/26".parse::<IpNetwork>().unwrap()]);
        assert_eq!(nlri, vec!["10.2.0.64/26".parse::<IpNetwork>().unwrap()]);
        assert_eq!(changes.for_member(PeerId(2)).announced_len(), 2);
        assert_eq!(
            stats.counts(),
            UpdateCounts {
                encoded: 4,
                sent: 5,
                shared_groups: 1
            }
        );
    }

    #[test]
    fn full_tables_with_the_same_runs_share_one_encoding() {
        let mut table = outbound("10.0.0.9", &["10.1.0.0/26", "10.1.0.64/26"]);
        table
            .announce
            .extend(outbound("10.0.0.8", &["10.2.0.0/26"]).announce);
        let (mut cache, stats) = (RunCache::default(), UpdateStats::default());
        let (first, errors) = cache.encode(&table, &WIRE, &stats);
        assert!(errors.is_empty());
        // The next peer's table lacks its own run (split horizon) and shares the other.
        let mut second_table = table.clone();
        second_table.announce.remove(1);
        let (second, _) = cache.encode(&second_table, &WIRE, &stats);
        assert_eq!((first.len(), second.len()), (2, 1));
        assert!(Arc::ptr_eq(&first[0], &second[0]), "the same bytes");
        assert_eq!(
            (stats.counts().encoded, stats.counts().sent),
            (2, 3),
            "two runs encoded, three handed out"
        );
        // Changed prefixes under the same attributes: encoded again.
        second_table.announce[0].1.pop();
        let (third, _) = cache.encode(&second_table, &WIRE, &stats);
        assert!(!Arc::ptr_eq(&first[0], &third[0]));
    }
}
