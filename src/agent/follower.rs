//! The one datastore follower of the agent: reads everything calc needs (config, nodes, peers,
//! pools, every node's affinities), re-reads it after any relevant change (queued events are
//! drained first, so a burst is one read), and hands the result to the speaker (peers,
//! originated blocks), the route reconciler (local blocks) and the tunnel manager (snapshot).
//! A failed read keeps the last state in force: nothing downstream changes because the
//! datastore cannot be read.
//!
//! The reconcilers that run without BGP follow one prefix each through [`follow_prefix`]
//! (IPAM blocks for the workload routes, pools for nftables): list-then-watch with resync, the
//! records decoded into a map published on a watch channel (`None` until the first full read).

use super::calc::{self, ClusterState};
use super::AgentState;
use crate::bgp::speaker::{PeerSpec, SpeakerHandle};
use crate::datastore::sync::{watch_with_resync, SyncEvent};
use crate::datastore::{decode_json, Datastore, KeyValue};
use crate::model::{keys, BgpConfiguration, BgpPeer, BlockAffinity, IpPool, Node};
use anyhow::Result;
use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

/// Loads everything calc needs for `node`.
pub async fn load_state(store: &dyn Datastore, node: &str) -> Result<ClusterState> {
    let config = match store.get(keys::BGP_CONFIG).await? {
        Some(kv) => decode_json::<BgpConfiguration>(&kv)?,
        None => BgpConfiguration::default(),
    };
    let nodes = list_json::<Node>(store, keys::NODES).await?;
    let peers = list_json::<BgpPeer>(store, keys::PEERS).await?;
    let pools = list_json::<IpPool>(store, keys::POOLS).await?;
    let mut all_affinities = Vec::new();
    for kv in store.list(keys::AFFINITIES).await?.kvs {
        if let Some((owner, cidr)) = keys::parse_affinity_key(&kv.key) {
            all_affinities.push((owner, cidr, decode_json::<BlockAffinity>(&kv)?.state));
        }
    }
    let affinities = all_affinities
        .iter()
        .filter(|(owner, _, _)| owner == node)
        .map(|(_, cidr, state)| (*cidr, *state))
        .collect();
    Ok(ClusterState {
        config,
        nodes,
        peers,
        pools,
        affinities,
        all_affinities,
    })
}

/// Every record under `prefix`, decoded as `T` (the first undecodable one is the error).
async fn list_json<T: DeserializeOwned>(store: &dyn Datastore, prefix: &str) -> Result<Vec<T>> {
    let listed = store.list(prefix).await?;
    Ok(listed
        .kvs
        .iter()
        .map(decode_json::<T>)
        .collect::<Result<_, _>>()?)
}

/// Every node's affinities matter: VXLAN routes follow other nodes' blocks.
fn relevant(key: &str, _node: &str) -> bool {
    key.starts_with(keys::NODES)
        || key.starts_with(keys::PEERS)
        || key.starts_with("config/")
        || key.starts_with(keys::POOLS)
        || key.starts_with(keys::AFFINITIES)
}

/// Follows the datastore and keeps the speaker's peers and originated blocks, the local
/// blocks for the reconciler, and the snapshot for the tunnel manager up to date.
pub async fn follow_datastore(
    state: Arc<AgentState>,
    me: Node,
    speaker: SpeakerHandle,
    local_tx: watch::Sender<Option<BTreeSet<IpNetwork>>>,
    cluster_tx: watch::Sender<Option<Arc<ClusterState>>>,
) {
    let mut events = watch_with_resync(state.store.clone(), String::new());
    let mut last_peers: Vec<PeerSpec> = Vec::new();
    let mut synced = false;
    while let Some(first) = events.recv().await {
        let mut dirty = is_relevant(&first, &me.name);
        while let Ok(more) = events.try_recv() {
            dirty |= is_relevant(&more, &me.name);
        }
        if !dirty {
            continue;
        }
        let snapshot = match load_state(state.store.as_ref(), &me.name).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot read cluster state; keeping the current routing");
                continue;
            }
        };
        let me_now = snapshot
            .nodes
            .iter()
            .find(|n| n.name == me.name)
            .cloned()
            .unwrap_or_else(|| me.clone());
        // Originated blocks first: a restarting speaker's End-of-RIB must not go out before
        // its blocks are in the RIB, or its peers would drop the stale routes to them.
        let _ = speaker.set_originated(calc::originated_blocks(&snapshot));
        let peers = calc::desired_peers(&me_now, &snapshot);
        if peers != last_peers || !synced {
            info!(peers = peers.len(), "BGP peers changed");
            let _ = speaker.set_peers(peers.clone());
            last_peers = peers;
        }
        synced = true;
        local_tx.send_if_modified(|current| {
            let next = Some(calc::local_blocks(&snapshot));
            let changed = *current != next;
            *current = next;
            changed
        });
        let _ = cluster_tx.send(Some(Arc::new(snapshot)));
    }
}

fn is_relevant(event: &SyncEvent, node: &str) -> bool {
    match event {
        SyncEvent::Snapshot { .. } => true,
        SyncEvent::Put(kv) => relevant(&kv.key, node),
        SyncEvent::Delete { key, .. } => relevant(key, node),
    }
}

/// The records under a prefix, by key, once the prefix has been read in full.
pub type Records<T> = Option<BTreeMap<String, T>>;

/// Follows `prefix` (list, then watch, re-listing after compaction or a failed watch) and keeps
/// `tx` holding its records decoded as `T`: `None` until the first full read, then the map,
/// changed in place (a burst of queued events is one change). An undecodable record is
/// logged (`what` names its kind) and left out. Ends when every receiver is gone.
pub async fn follow_prefix<T: DeserializeOwned>(
    store: Arc<dyn Datastore>,
    prefix: &'static str,
    tx: watch::Sender<Records<T>>,
    what: &'static str,
) {
    let mut events = watch_with_resync(store, prefix.to_string());
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tx.closed() => return,
        };
        let Some(first) = event else { return };
        tx.send_modify(|records| {
            apply_event(records, first, what);
            while let Ok(more) = events.try_recv() {
                apply_event(records, more, what);
            }
        });
    }
}

/// Starts [`follow_prefix`] on a task of its own and returns the receiving end: `None` until
/// the first full read of `prefix`, then its records.
pub fn spawn_follow_prefix<T: DeserializeOwned + Send + Sync + 'static>(
    store: Arc<dyn Datastore>,
    prefix: &'static str,
    what: &'static str,
) -> watch::Receiver<Records<T>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(follow_prefix::<T>(store, prefix, tx, what));
    rx
}

/// Applies one datastore event to the records (a snapshot replaces them all).
pub fn apply_event<T: DeserializeOwned>(records: &mut Records<T>, event: SyncEvent, what: &str) {
    let decode = |kv: &KeyValue| match decode_json::<T>(kv) {
        Ok(record) => Some(record),
        Err(e) => {
            warn!(key = %kv.key, error = %e, "undecodable {what} ignored");
            None
        }
    };
    match event {
        SyncEvent::Snapshot { kvs, .. } => {
            let map = kvs
                .iter()
                .filter_map(|kv| decode(kv).map(|record| (kv.key.clone(), record)))
                .collect();
            *records = Some(map);
        }
        // Before the first snapshot there is nothing to change (it always comes first).
        SyncEvent::Put(kv) => {
            if let (Some(map), Some(record)) = (records.as_mut(), decode(&kv)) {
                map.insert(kv.key.clone(), record);
            }
        }
        SyncEvent::Delete { key, .. } => {
            if let Some(map) = records.as_mut() {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::encode_json;

    fn kv(key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn records_are_none_until_a_snapshot_then_follow_puts_and_deletes() {
        let mut records: Records<u32> = None;
        apply_event(&mut records, SyncEvent::Put(kv("a", b"1")), "number");
        assert_eq!(records, None, "nothing before the first full read");
        let snapshot = SyncEvent::Snapshot {
            kvs: vec![kv("a", &encode_json(&1)), kv("bad", b"not json")],
            revision: 2,
        };
        apply_event(&mut records, snapshot, "number");
        assert_eq!(records, Some([("a".to_string(), 1)].into()));
        apply_event(&mut records, SyncEvent::Put(kv("b", b"2")), "number");
        let delete = SyncEvent::Delete {
            key: "a".into(),
            mod_revision: 4,
        };
        apply_event(&mut records, delete, "number");
        assert_eq!(records, Some([("b".to_string(), 2)].into()));
        let empty = SyncEvent::Snapshot {
            kvs: vec![],
            revision: 5,
        };
        apply_event(&mut records, empty, "number");
        assert_eq!(records, Some(BTreeMap::new()));
    }
}
