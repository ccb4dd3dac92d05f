//! Property tests: random bytes, random bodies behind a valid header, structured random
//! attributes and random mutations of valid messages must never panic, and must never
//! reach a zettabgp panic either (the guard would turn one into `DecodeError::Codec`
//! with "panicked" in it, which these tests also reject).

use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Header plus body, length computed (capped so the field does not wrap).
fn frame(message_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&((HEADER_LEN + body.len()).min(65535) as u16).to_be_bytes());
    out.push(message_type);
    out.extend_from_slice(body);
    out
}

fn options(four_octet_as: bool) -> WireOptions {
    WireOptions {
        four_octet_as,
        extended_message: false,
    }
}

/// Fails the property if zettabgp panicked behind the guard.
fn check_no_codec_panic(result: &Result<Decoded, DecodeError>) -> Result<(), TestCaseError> {
    if let Err(DecodeError::Codec { detail, .. }) = result {
        prop_assert!(!detail.contains("panicked"), "zettabgp panicked: {detail}");
    }
    Ok(())
}

/// A handful of valid messages of every type to mutate.
fn valid_messages() -> Vec<Vec<u8>> {
    let open = Open {
        asn: 64512,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(64512),
            Capability::AddPath(vec![AddPathFamily {
                family: Family::IPV4_UNICAST,
                send: true,
                receive: true,
            }]),
            Capability::ExtendedMessage,
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    family: Family::IPV4_UNICAST,
                    forwarding_state: true,
                }],
            }),
            Capability::Fqdn {
                hostname: "node".into(),
                domain: "example.com".into(),
            },
        ],
    };
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![64512, 4_200_000_000])),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        mp_next_hop: Some(MpNextHop::Ipv6 {
            global: "fd00::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        }),
        med: Some(1),
        local_pref: Some(100),
        atomic_aggregate: true,
        aggregator: Some(Aggregator {
            asn: 64512,
            address: Ipv4Addr::new(10, 0, 0, 1),
        }),
        communities: vec![1, 2],
        extended_communities: vec![3],
        large_communities: vec![LargeCommunity {
            global: 1,
            local1: 2,
            local2: 3,
        }],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 3)],
        other: vec![RawAttribute {
            flags: 0xc0,
            type_code: 99,
            value: vec![1, 2, 3],
        }],
    };
    let prefixes: Vec<IpNetwork> = vec![
        "10.244.1.0/26".parse().unwrap(),
        "192.168.0.0/16".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    let mut messages = vec![
        encode_open(&open).unwrap(),
        encode_keepalive(),
        encode_notification(&Notification::cease_with_message(2, "maintenance")),
        encode_route_refresh(&RouteRefresh::request(Family::IPV4_UNICAST)).unwrap(),
        encode_end_of_rib(Family::IPV6_UNICAST),
    ];
    for four in [true, false] {
        messages.extend(encode_updates(&attrs, &prefixes, &prefixes, &options(four)).unwrap());
    }
    messages
}

/// Any prefix, IPv4 or IPv6.
fn any_prefix() -> impl Strategy<Value = IpNetwork> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
            let net = Ipv4Network::new(Ipv4Addr::from(a), l).unwrap();
            IpNetwork::V4(Ipv4Network::new(net.network(), l).unwrap())
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, l)| {
            let net = Ipv6Network::new(a.into(), l).unwrap();
            IpNetwork::V6(Ipv6Network::new(net.network(), l).unwrap())
        }),
    ]
}

/// Attribute type codes worth hitting: every known one and a few unknown.
fn attribute_type() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(vec![
            1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32
        ]),
        any::<u8>(),
    ]
}

/// 3,000 cases per property unless `PROPTEST_CASES` says otherwise.
fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..600), four in any::<bool>()) {
        check_no_codec_panic(&decode_message(&bytes, &options(four)))?;
        let mut reader = FrameReader::new();
        reader.extend(&bytes);
        while let Ok(Some(frame)) = reader.next_frame() {
            check_no_codec_panic(&decode_message(&frame, &options(four)))?;
        }
    }

    #[test]
    fn random_bodies_never_panic(
        message_type in 1u8..=5,
        body in vec(any::<u8>(), 0..600),
        four in any::<bool>(),
    ) {
        check_no_codec_panic(&decode_message(&frame(message_type, &body), &options(four)))?;
    }

    #[test]
    fn random_open_capabilities_never_panic(
        caps in vec((any::<u8>(), vec(any::<u8>(), 0..20)), 0..12),
        known in vec((prop::sample::select(vec![1u8, 2, 6, 9, 64, 65, 69, 70, 71, 73]), vec(any::<u8>(), 0..20)), 0..12),
    ) {
        let mut params = Vec::new();
        for (code, data) in caps.iter().chain(&known) {
            params.extend_from_slice(&[2, data.len() as u8 + 2, *code, data.len() as u8]);
            params.extend_from_slice(data);
        }
        let mut body = vec![4, 0xfc, 0x00, 0, 90, 10, 0, 0, 1, params.len().min(255) as u8];
        body.extend_from_slice(&params);
        check_no_codec_panic(&decode_message(&frame(1, &body), &options(false)))?;
    }

    #[test]
    fn random_attributes_never_panic(
        attrs in vec((any::<u8>(), attribute_type(), vec(any::<u8>(), 0..40)), 0..10),
        nlri in vec(any::<u8>(), 0..20),
        four in any::<bool>(),
    ) {
        let mut block = Vec::new();
        for (flags, code, value) in &attrs {
            if flags & 0x10 != 0 {
                block.extend_from_slice(&[*flags, *code]);
                block.extend_from_slice(&(value.len() as u16).to_be_bytes());
            } else {
                block.extend_from_slice(&[*flags, *code, value.len() as u8]);
            }
            block.extend_from_slice(value);
        }
        let mut body = vec![0, 0];
        body.extend_from_slice(&(block.len() as u16).to_be_bytes());
        body.extend_from_slice(&block);
        body.extend_from_slice(&nlri);
        check_no_codec_panic(&decode_message(&frame(2, &body), &options(four)))?;
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        fix_length in any::<bool>(),
        four in any::<bool>(),
    ) {
        let messages = valid_messages();
        let mut bytes = pick.get(&messages).clone();
        for (at, value, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = value,
                1 => bytes[i] ^= 1 << (value % 8),
                2 => bytes.insert(i, value),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        if fix_length && bytes.len() >= HEADER_LEN {
            let len = (bytes.len().min(65535) as u16).to_be_bytes();
            bytes[16..18].copy_from_slice(&len);
        }
        check_no_codec_panic(&decode_message(&bytes, &options(four)))?;
    }

    #[test]
    fn updates_round_trip_and_fit(
        nlri in vec(any_prefix(), 0..400),
        withdrawn in vec(any_prefix(), 0..400),
        four in any::<bool>(),
    ) {
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![64512])),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            mp_next_hop: Some(MpNextHop::Ipv6 { global: "fd00::1".parse().unwrap(), link_local: None }),
            ..PathAttributes::default()
        };
        let messages = encode_updates(&attrs, &nlri, &withdrawn, &options(four)).unwrap();
        let mut got_nlri = Vec::new();
        let mut got_withdrawn = Vec::new();
        for m in &messages {
            prop_assert!(m.len() <= MAX_MESSAGE_LEN);
            let decoded = decode_message(m, &options(four)).unwrap();
            prop_assert!(decoded.findings.is_empty());
            let Message::Update(update) = decoded.message else {
                return Err(TestCaseError::fail("not an UPDATE"));
            };
            got_nlri.extend(update.nlri);
            got_withdrawn.extend(update.withdrawn);
        }
        let (v4, v6): (Vec<IpNetwork>, Vec<IpNetwork>) = nlri.iter().partition(|p| p.is_ipv4());
        prop_assert_eq!(got_nlri, v4.into_iter().chain(v6).collect::<Vec<_>>());
        let (v4, v6): (Vec<IpNetwork>, Vec<IpNetwork>) = withdrawn.iter().partition(|p| p.is_ipv4());
        prop_assert_eq!(got_withdrawn, v4.into_iter().chain(v6).collect::<Vec<_>>());
    }

    #[test]
    fn frame_reader_splits_any_chunking(cuts in vec(1usize..64, 1..40)) {
        let messages = valid_messages();
        let stream: Vec<u8> = messages.concat();
        let mut reader = FrameReader::new();
        let mut frames = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= stream.len() {
                break;
            }
            let end = (at + cut).min(stream.len());
            reader.extend(&stream[at..end]);
            at = end;
            while let Some(frame) = reader.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        prop_assert_eq!(frames, messages);
    }
}
