//! Update groups end to end: two clients with one export policy receive byte-identical
//! UPDATEs, and the speaker encoded each of them once.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::harness::{wait_state, RawPeer};
use crate::bgp::fsm::State;
use crate::bgp::packet::{decode_message, Message, WireOptions};
use crate::bgp::speaker::{PeerSpec, Speaker, SpeakerConfig};

const AS: u32 = 64512;
const WAIT: Duration = Duration::from_secs(30);

fn addr(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 44, 1, host))
}

/// The UPDATEs announcing `count` prefixes, as bytes (KEEPALIVEs and End-of-RIB skipped).
async fn updates_until(raw: &mut RawPeer, count: usize) -> Vec<Vec<u8>> {
    let wire = WireOptions {
        four_octet_as: true,
        extended_message: false,
    };
    let mut frames = Vec::new();
    let mut announced = 0;
    while announced < count {
        let frame = raw.receive_frame().await.expect("session open");
        if let Ok(decoded) = decode_message(&frame, &wire) {
            // End-of-RIB (no NLRI) ends each peer's own first table: not a group's.
            if let Message::Update(update) = decoded.message {
                if !update.nlri.is_empty() {
                    announced += update.nlri.len();
                    frames.push(frame);
                }
            }
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_with_one_policy_get_byte_identical_updates_encoded_once() {
    let speaker_addr = addr(1);
    let IpAddr::V4(id) = speaker_addr else {
        unreachable!()
    };
    let mut config = SpeakerConfig::new(id, AS);
    config.listen_addr = Some(SocketAddr::new(speaker_addr, 0));
    let speaker = Speaker::start(config).await.unwrap();
    let handle = speaker.handle();
    let peers = ["C1", "C2"].map(|name| {
        let host = if name == "C1" { 11 } else { 12 };
        let mut spec = PeerSpec::new(name, "test", addr(host), AS, AS);
        spec.passive = true;
        spec
    });
    handle.set_peers(peers.to_vec()).unwrap();
    let target = speaker.listen_addr().unwrap();
    let mut c1 = RawPeer::establish(addr(11), target, AS, Ipv4Addr::new(9, 0, 0, 11), 90).await;
    let mut c2 = RawPeer::establish(addr(12), target, AS, Ipv4Addr::new(9, 0, 0, 12), 90).await;
    wait_state(&handle, "C1", State::Established, WAIT).await;
    wait_state(&handle, "C2", State::Established, WAIT).await;
    // Each first table (empty, then End-of-RIB) is the peer's own; the change after is shared.
    let before = handle.update_counts();
    let blocks: BTreeSet<IpNetwork> = (0..2000u32)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 60, 0, 0)) + i * 64);
            IpNetwork::V4(ipnetwork::Ipv4Network::new(ip, 26).unwrap())
        })
        .collect();
    handle.set_originated(blocks).unwrap();
    let to_c1 = updates_until(&mut c1, 2000).await;
    let to_c2 = updates_until(&mut c2, 2000).await;
    assert!(to_c1.len() > 1, "2,000 prefixes take several UPDATEs");
    assert_eq!(to_c1, to_c2, "byte-identical UPDATE streams");
    let after = handle.update_counts();
    let encoded = after.encoded - before.encoded;
    let sent = after.sent - before.sent;
    println!(
        "{} UPDATEs each; encoded {encoded}, sent {sent}",
        to_c1.len()
    );
    assert_eq!(encoded, to_c1.len() as u64, "each UPDATE encoded once");
    assert_eq!(sent, 2 * encoded, "and written to both members");
    assert!(after.shared_groups > before.shared_groups);
}
