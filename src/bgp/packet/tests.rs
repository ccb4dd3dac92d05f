//! Byte-vector tests, both directions, and one test per known zettabgp 0.6.0 panic (listed in
//! docs/bgp.md, "zettabgp 0.6 departures") showing that a typed error comes back instead.
//!
//! Vectors are written by hand from the RFCs; each says which implementation's layout it
//! follows. A mismatch prints both buffers as hex with the first differing byte marked.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::*;

/// Hex string (spaces and newlines ignored) to bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Render bytes as hex rows of 16.
fn render_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(row, chunk)| {
            let cells: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}", row * 16, cells.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Assert equal buffers, printing a hex diff on failure.
#[track_caller]
fn assert_bytes_eq(actual: &[u8], expected: &[u8]) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "bytes differ at offset {first} (0x{first:x}); lengths {} vs {}\nactual:\n{}\nexpected:\n{}",
        actual.len(),
        expected.len(),
        render_hex(actual),
        render_hex(expected)
    );
}

const MARKER: &str = "ffffffff ffffffff ffffffff ffffffff";

/// A message with the given type code and body; the length is computed.
fn msg(message_type: u8, body: &str) -> Vec<u8> {
    let body = hex(body);
    let mut out = hex(MARKER);
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(message_type);
    out.extend_from_slice(&body);
    out
}

/// A message with a header written out by hand (for deliberately wrong lengths).
fn message(len_and_type: &str, body: &str) -> Vec<u8> {
    hex(&format!("{MARKER} {len_and_type} {body}"))
}

fn four_octet() -> WireOptions {
    WireOptions {
        four_octet_as: true,
        extended_message: false,
    }
}

fn decode(frame: &[u8], options: &WireOptions) -> Result<Decoded, DecodeError> {
    decode_message(frame, options)
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn decode_update_frame(frame: &[u8], options: &WireOptions) -> Result<DecodedUpdate, DecodeError> {
    decode_header(frame, options.max_message_len())?;
    decode_update(&frame[HEADER_LEN..], options)
}

// ---------------------------------------------------------------- KEEPALIVE

#[test]
fn keepalive_both_ways() {
    let wire = msg(0x04, "");
    assert_bytes_eq(&encode_keepalive(), &wire);
    assert_eq!(
        decode(&wire, &WireOptions::default()).unwrap().message,
        Message::Keepalive
    );
}

#[test]
fn keepalive_with_body_is_bad_length() {
    let wire = message("0014 04", "00");
    let err = decode(&wire, &WireOptions::default()).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Header(HeaderError::BadLength { length: 20 })
    );
    let n = err.to_notification();
    assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0, 20]));
}

// ---------------------------------------------------------------- OPEN

/// routed's own OPEN as zettabgp writes it: one capability per optional parameter.
fn routed_open() -> (Open, Vec<u8>) {
    let open = Open {
        asn: 64512,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(64512),
        ],
    };
    let wire = msg(
        0x01,
        "04 fc00 005a 0a000001 14
         02 06 01 04 0001 00 01
         02 02 02 00
         02 06 41 04 0000fc00",
    );
    (open, wire)
}

#[test]
fn open_both_ways() {
    let (open, wire) = routed_open();
    assert_bytes_eq(&encode_open(&open).unwrap(), &wire);
    assert_eq!(
        decode(&wire, &WireOptions::default()).unwrap().message,
        Message::Open(open)
    );
}

/// FRR 8/9 layout: one capability per parameter, including Cisco's old route refresh (128),
/// extended message (RFC 8654), add-path receive, enhanced route refresh, an empty LLGR,
/// hostname with a domain (which zettabgp 0.6 rejects), graceful restart and role.
fn frr_open_wire() -> Vec<u8> {
    msg(
        0x01,
        "04 fde9 00b4 c0000201 4e
         02 06 01 04 0001 00 01
         02 02 80 00
         02 02 02 00
         02 02 06 00
         02 06 41 04 0000fde9
         02 06 45 04 0001 01 01
         02 02 46 00
         02 02 47 00
         02 11 49 0f 02 7231 0b 6578616d706c652e636f6d
         02 08 40 06 0078 0001 01 80
         02 03 09 01 04",
    )
}

#[test]
fn frr_open_with_fqdn_domain_extended_message_and_role_decodes() {
    let decoded = decode(&frr_open_wire(), &WireOptions::default()).unwrap();
    let Message::Open(open) = decoded.message else {
        panic!("not an OPEN");
    };
    assert_eq!(open.asn, 65001);
    assert_eq!(open.hold_time, 180);
    assert_eq!(open.bgp_id, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Unknown {
                code: 128,
                data: vec![]
            },
            Capability::RouteRefresh,
            Capability::ExtendedMessage,
            Capability::FourOctetAs(65001),
            Capability::AddPath(vec![AddPathFamily {
                family: Family::IPV4_UNICAST,
                send: false,
                receive: true
            }]),
            Capability::EnhancedRouteRefresh,
            Capability::Unknown {
                code: 71,
                data: vec![]
            },
            Capability::Fqdn {
                hostname: "r1".into(),
                domain: "example.com".into()
            },
            Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                notification: false,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    family: Family::IPV4_UNICAST,
                    forwarding_state: true
                }],
            }),
            Capability::Role(4),
        ]
    );
    // And back: the same bytes (zettabgp writes the part it knows, we append the rest).
    assert_bytes_eq(&encode_open(&open).unwrap(), &frr_open_wire());
}

/// BIRD 2 / GoBGP layout: every capability inside a single optional parameter.
#[test]
fn bird_open_single_parameter_decodes() {
    let wire = msg(
        0x01,
        "04 fc00 00f0 0a000002 16
         02 14
            01 04 0001 00 01
            02 00
            46 00
            40 02 0078
            41 04 0000fc00",
    );
    let Message::Open(open) = decode(&wire, &WireOptions::default()).unwrap().message else {
        panic!("not an OPEN");
    };
    assert_eq!(open.hold_time, 240);
    assert_eq!(open.four_octet_as(), Some(64512));
    assert!(open.has_capability(&Capability::EnhancedRouteRefresh));
    assert!(
        open.has_capability(&Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            notification: false,
            restart_time: 120,
            families: vec![],
        }))
    );
    assert_eq!(open.capabilities.len(), 5);
}

/// RFC 9072 extended optional parameters length, written by hand from §2.
#[test]
fn open_with_extended_optional_parameters_decodes() {
    let wire = msg(
        0x01,
        "04 fc00 005a 0a000002 ff ff 000b
         02 0008 01 04 0001 00 01 02 00",
    );
    let Message::Open(open) = decode(&wire, &WireOptions::default()).unwrap().message else {
        panic!("not an OPEN");
    };
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::RouteRefresh
        ]
    );
}

#[test]
fn open_with_many_capabilities_uses_extended_form_and_round_trips() {
    let capabilities: Vec<Capability> = (0..60)
        .map(|i| Capability::Unknown {
            code: 200,
            data: vec![i; 3],
        })
        .collect();
    let open = Open {
        asn: 4_200_000_000,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities,
    };
    let wire = encode_open(&open).unwrap();
    assert_eq!(
        &wire[19 + 1..19 + 3],
        &[0x5b, 0xa0],
        "AS_TRANS in the 2-octet field"
    );
    assert_eq!(&wire[19 + 9..19 + 11], &[0xff, 0xff]);
    let Message::Open(back) = decode(&wire, &WireOptions::default()).unwrap().message else {
        panic!("not an OPEN");
    };
    // No 4-octet AS capability in the list, so the 2-octet field (AS_TRANS) is the AS.
    assert_eq!(back.asn, u32::from(AS_TRANS));
    assert_eq!(back.capabilities, open.capabilities);
}

#[test]
fn open_errors_map_to_notifications() {
    let cases: Vec<(&str, (u8, u8), Vec<u8>)> = vec![
        // version 3 → 2/1 with the version we support
        ("03 fc00 005a 0a000001 00", (2, 1), vec![0, 4]),
        // hold time 2 → 2/6
        ("04 fc00 0002 0a000001 00", (2, 6), vec![0, 2]),
        // identifier 0 → 2/3
        ("04 fc00 005a 00000000 00", (2, 3), vec![0, 0, 0, 0]),
        // AS 0 → 2/2
        ("04 0000 005a 0a000001 00", (2, 2), vec![0, 0]),
        // optional parameter type 1 (authentication) → 2/4 with the parameter
        ("04 fc00 005a 0a000001 03 01 01 00", (2, 4), vec![1, 1, 0]),
        // parameters length says 5, only 3 follow → 2/0
        ("04 fc00 005a 0a000001 05 02 01 02", (2, 0), vec![]),
        // 4-octet AS capability of the wrong length → 2/0 with the capability
        (
            "04 fc00 005a 0a000001 06 02 04 41 02 0000",
            (2, 0),
            vec![0x41, 2, 0, 0],
        ),
    ];
    for (body, (code, subcode), data) in cases {
        let err = decode(&msg(1, body), &WireOptions::default()).unwrap_err();
        let n = Notification::from(&err);
        assert_eq!(
            (n.code, n.subcode, n.data),
            (code, subcode, data),
            "{body}: {err}"
        );
    }
}

// ---------------------------------------------------------------- UPDATE

fn v4_update_attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![64512])),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        local_pref: Some(100),
        ..PathAttributes::default()
    }
}

/// An IPv4 announcement laid out as BIRD and FRR send it (attributes in type order).
fn v4_update_wire() -> Vec<u8> {
    msg(
        0x02,
        "0000 001b
         40 01 01 00
         40 02 06 02 01 0000fc00
         40 03 04 0a000001
         40 05 04 00000064
         1a 0af40100
         10 c0a8",
    )
}

#[test]
fn update_ipv4_announce_both_ways() {
    let nlri = vec![net("10.244.1.0/26"), net("192.168.0.0/16")];
    let encoded = encode_updates(&v4_update_attrs(), &nlri, &[], &four_octet()).unwrap();
    assert_eq!(encoded.len(), 1);
    assert_bytes_eq(&encoded[0], &v4_update_wire());
    let decoded = decode(&v4_update_wire(), &four_octet()).unwrap();
    assert!(decoded.findings.is_empty());
    let Message::Update(update) = decoded.message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.nlri, nlri);
    assert_eq!(update.attributes, v4_update_attrs());
    assert_eq!(
        update.next_hop_for(&nlri[0]),
        Some(Ipv4Addr::new(10, 0, 0, 1).into())
    );
}

#[test]
fn update_ipv4_withdraw_both_ways() {
    let wire = msg(0x02, "0005 1a0af40100 0000");
    let withdrawn = vec![net("10.244.1.0/26")];
    let encoded =
        encode_updates(&PathAttributes::default(), &[], &withdrawn, &four_octet()).unwrap();
    assert_eq!(encoded.len(), 1);
    assert_bytes_eq(&encoded[0], &wire);
    let Message::Update(update) = decode(&wire, &four_octet()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.withdrawn, withdrawn);
    assert!(update.nlri.is_empty());
}

fn v6_attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        mp_next_hop: Some(MpNextHop::Ipv6 {
            global: "fd00::1".parse().unwrap(),
            link_local: None,
        }),
        local_pref: Some(100),
        ..PathAttributes::default()
    }
}

#[test]
fn update_ipv6_mp_reach_both_ways() {
    // RFC 4760 §3 layout with a 16-byte next hop (RFC 2545), as GoBGP sends it.
    let wire = msg(
        0x02,
        "0000 002d
         40 01 01 00
         40 02 00
         40 05 04 00000064
         80 0e 1c 0002 01 10 fd000000000000000000000000000001 00
            30 20010db80001",
    );
    let nlri = vec![net("2001:db8:1::/48")];
    let encoded = encode_updates(&v6_attrs(), &nlri, &[], &four_octet()).unwrap();
    assert_eq!(encoded.len(), 1);
    assert_bytes_eq(&encoded[0], &wire);
    let Message::Update(update) = decode(&wire, &four_octet()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.nlri, nlri);
    assert_eq!(update.attributes, v6_attrs());
    assert_eq!(
        update.next_hop_for(&nlri[0]),
        Some("fd00::1".parse::<Ipv6Addr>().unwrap().into())
    );
}

#[test]
fn update_ipv6_mp_unreach_both_ways() {
    let wire = msg(0x02, "0000 000d 80 0f 0a 0002 01 30 20010db80001");
    let withdrawn = vec![net("2001:db8:1::/48")];
    let encoded =
        encode_updates(&PathAttributes::default(), &[], &withdrawn, &four_octet()).unwrap();
    assert_bytes_eq(&encoded[0], &wire);
    let Message::Update(update) = decode(&wire, &four_octet()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.withdrawn, withdrawn);
}

#[test]
fn update_ipv6_link_local_next_hop_is_kept() {
    let wire = msg(
        0x02,
        "0000 0038
         40 01 01 00
         40 02 00
         80 0e 2e 0002 01 20 fd000000000000000000000000000001
                             fe800000000000000000000000000001 00
            40 20010db800010002",
    );
    let Message::Update(update) = decode(&wire, &four_octet()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(
        update.attributes.mp_next_hop,
        Some(MpNextHop::Ipv6 {
            global: "fd00::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        })
    );
    assert_eq!(update.nlri, vec![net("2001:db8:1:2::/64")]);
}

#[test]
fn end_of_rib_both_ways() {
    let v4 = msg(0x02, "0000 0000");
    let v6 = msg(0x02, "0000 0006 80 0f 03 0002 01");
    assert_bytes_eq(&encode_end_of_rib(Family::IPV4_UNICAST), &v4);
    assert_bytes_eq(&encode_end_of_rib(Family::IPV6_UNICAST), &v6);
    for (wire, family) in [(v4, Family::IPV4_UNICAST), (v6, Family::IPV6_UNICAST)] {
        let Message::Update(update) = decode(&wire, &four_octet()).unwrap().message else {
            panic!("not an UPDATE");
        };
        assert_eq!(update.end_of_rib, Some(family));
    }
}

#[test]
fn two_octet_session_writes_as_trans_and_as4_path() {
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![4_200_000_000, 64512])),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..PathAttributes::default()
    };
    let wire = msg(
        0x02,
        "0000 0021
         40 01 01 00
         40 02 06 02 02 5ba0 fc00
         40 03 04 0a000001
         c0 11 0a 02 02 fa56ea00 0000fc00
         08 0a",
    );
    let encoded =
        encode_updates(&attrs, &[net("10.0.0.0/8")], &[], &WireOptions::default()).unwrap();
    assert_bytes_eq(&encoded[0], &wire);
    let Message::Update(update) = decode(&wire, &WireOptions::default()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(
        update.attributes.as_path,
        Some(AsPath::from_sequence(vec![u32::from(AS_TRANS), 64512]))
    );
    assert_eq!(update.attributes.other[0].type_code, 17);
}

#[test]
fn communities_and_unknown_transitive_round_trip() {
    let mut attrs = v4_update_attrs();
    attrs.med = Some(5);
    attrs.communities = vec![0xfc00_0001];
    attrs.large_communities = vec![LargeCommunity {
        global: 64512,
        local1: 1,
        local2: 2,
    }];
    attrs.extended_communities = vec![0x0002_fc00_0000_0001];
    attrs.originator_id = Some(Ipv4Addr::new(10, 0, 0, 9));
    attrs.cluster_list = vec![Ipv4Addr::new(10, 0, 0, 10)];
    attrs.atomic_aggregate = true;
    attrs.aggregator = Some(Aggregator {
        asn: 64512,
        address: Ipv4Addr::new(10, 0, 0, 1),
    });
    attrs.other = vec![RawAttribute {
        flags: 0xe0,
        type_code: 99,
        value: vec![1, 2, 3],
    }];
    let nlri = vec![net("10.244.0.0/26")];
    let encoded = encode_updates(&attrs, &nlri, &[], &four_octet()).unwrap();
    let Message::Update(update) = decode(&encoded[0], &four_octet()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.attributes, attrs);
    assert_eq!(update.nlri, nlri);
}

#[test]
fn unknown_optional_non_transitive_is_dropped_and_unknown_well_known_resets() {
    let dropped = msg(0x02, "0000 000a 40 01 01 00 40 02 00 80 63 00");
    let update = decode_update_frame(&dropped, &four_octet()).unwrap();
    assert!(update.update.attributes.other.is_empty());
    let well_known = msg(0x02, "0000 0003 40 63 00");
    let err = decode(&well_known, &four_octet()).unwrap_err();
    assert_eq!(err.to_notification().subcode, 2);
    assert_eq!(err.to_notification().data, vec![0x40, 0x63, 0x00]);
}

#[test]
fn missing_mandatory_attribute_is_treat_as_withdraw() {
    // ORIGIN and AS_PATH present, NEXT_HOP missing, one prefix announced.
    let wire = msg(0x02, "0000 0007 40 01 01 00 40 02 00 08 0a");
    let decoded = decode_update_frame(&wire, &four_octet()).unwrap();
    assert!(decoded.treat_as_withdraw());
    assert_eq!(
        decoded.findings[0].error,
        UpdateError::MissingWellKnown { type_code: 3 }
    );
    let Message::Update(update) = decode(&wire, &four_octet()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.withdrawn, vec![net("10.0.0.0/8")]);
    assert!(update.nlri.is_empty());
}

#[test]
fn malformed_aggregator_is_discarded_routes_kept() {
    let wire = msg(
        0x02,
        "0000 0017 40 01 01 00 40 02 00 40 03 04 0a000001 c0 07 03 000000 40 06 00 08 0a",
    );
    let decoded = decode_update_frame(&wire, &four_octet()).unwrap();
    assert!(!decoded.treat_as_withdraw());
    assert_eq!(decoded.findings[0].action, AttributeAction::Discard);
    assert_eq!(decoded.update.nlri, vec![net("10.0.0.0/8")]);
    assert!(decoded.update.attributes.atomic_aggregate);
    assert_eq!(decoded.update.attributes.aggregator, None);
}

#[test]
fn wrong_flags_on_origin_is_treat_as_withdraw() {
    let wire = msg(
        0x02,
        "0000 000e c0 01 01 00 40 02 00 40 03 04 0a000001 08 0a",
    );
    let decoded = decode_update_frame(&wire, &four_octet()).unwrap();
    assert!(decoded.treat_as_withdraw());
    assert!(matches!(
        decoded.findings[0].error,
        UpdateError::AttributeFlags { .. }
    ));
}

#[test]
fn encode_splits_two_thousand_prefixes_under_4096_bytes() {
    // zettabgp 0.6 panics encoding this many into 4 KB (afi/mod.rs:269).
    let nlri: Vec<IpNetwork> = (0..2000u32)
        .map(|i| {
            IpNetwork::V4(
                ipnetwork::Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap(),
            )
        })
        .collect();
    let v6: Vec<IpNetwork> = (0..1000u128)
        .map(|i| {
            IpNetwork::V6(
                ipnetwork::Ipv6Network::new(
                    Ipv6Addr::from((0x2001_0db8u128 << 96) + (i << 64)),
                    64,
                )
                .unwrap(),
            )
        })
        .collect();
    let mut attrs = v4_update_attrs();
    attrs.mp_next_hop = v6_attrs().mp_next_hop;
    let all: Vec<IpNetwork> = nlri.iter().chain(&v6).copied().collect();
    for options in [four_octet(), WireOptions::default()] {
        let messages = encode_updates(&attrs, &all, &all, &options).unwrap();
        assert!(messages.len() > 4);
        let mut announced = Vec::new();
        let mut withdrawn = Vec::new();
        for m in &messages {
            assert!(m.len() <= MAX_MESSAGE_LEN, "{} bytes", m.len());
            let Message::Update(update) = decode(m, &options).unwrap().message else {
                panic!("not an UPDATE");
            };
            announced.extend(update.nlri);
            withdrawn.extend(update.withdrawn);
        }
        assert_eq!(announced, all);
        assert_eq!(withdrawn, all);
    }
}

#[test]
fn extended_message_allows_bigger_updates() {
    let nlri: Vec<IpNetwork> = (0..2000u32)
        .map(|i| {
            IpNetwork::V4(
                ipnetwork::Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap(),
            )
        })
        .collect();
    let options = WireOptions {
        four_octet_as: true,
        extended_message: true,
    };
    let messages = encode_updates(&v4_update_attrs(), &nlri, &[], &options).unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].len() > MAX_MESSAGE_LEN);
    // Without the capability the receiver refuses it with 1/2.
    let err = decode(&messages[0], &four_octet()).unwrap_err();
    assert_eq!(err.to_notification().subcode, 2);
    assert!(decode(&messages[0], &options).is_ok());
}

#[test]
fn encode_refuses_missing_next_hops() {
    let mut attrs = v4_update_attrs();
    attrs.next_hop = None;
    assert_eq!(
        encode_updates(&attrs, &[net("10.0.0.0/8")], &[], &four_octet()),
        Err(EncodeError::MissingIpv4NextHop)
    );
    assert_eq!(
        encode_updates(&attrs, &[net("2001:db8::/32")], &[], &four_octet()),
        Err(EncodeError::MissingIpv6NextHop)
    );
}

// ---------------------------------------------------------------- NOTIFICATION

#[test]
fn notification_with_shutdown_message_both_ways() {
    // RFC 9003 §2: Cease / Administrative Shutdown, length byte, UTF-8.
    let wire = msg(0x03, "06 02 03 627965");
    let notification = Notification::cease_with_message(2, "bye");
    assert_bytes_eq(&encode_notification(&notification), &wire);
    let Message::Notification(back) = decode(&wire, &WireOptions::default()).unwrap().message
    else {
        panic!("not a NOTIFICATION");
    };
    assert_eq!(back, notification);
    assert_eq!(back.shutdown_message().as_deref(), Some("bye"));
}

#[test]
fn notification_with_longer_data_both_ways() {
    // 3/2 carrying a whole attribute, more than zettabgp's u16 of data.
    let wire = msg(0x03, "03 02 40 63 01 ff");
    let notification = Notification::new(3, 2, vec![0x40, 0x63, 0x01, 0xff]);
    assert_bytes_eq(&encode_notification(&notification), &wire);
    assert_eq!(
        decode(&wire, &WireOptions::default()).unwrap().message,
        Message::Notification(notification)
    );
}

#[test]
fn shutdown_message_is_cut_at_255_bytes_on_a_char_boundary() {
    let long = "é".repeat(200);
    let n = Notification::cease_with_message(2, &long);
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_message().map(|s| s.chars().count()), Some(127));
}

// ---------------------------------------------------------------- ROUTE-REFRESH

#[test]
fn route_refresh_both_ways() {
    let wire = msg(0x05, "0002 00 01");
    let refresh = RouteRefresh::request(Family::IPV6_UNICAST);
    assert_bytes_eq(&encode_route_refresh(&refresh).unwrap(), &wire);
    assert_eq!(
        decode(&wire, &WireOptions::default()).unwrap().message,
        Message::RouteRefresh(refresh)
    );
}

#[test]
fn route_refresh_bad_length_is_7_1_with_the_message() {
    let wire = msg(0x05, "0001 00 01 00");
    let n = decode(&wire, &WireOptions::default())
        .unwrap_err()
        .to_notification();
    assert_eq!((n.code, n.subcode), (7, 1));
    assert_eq!(n.data, wire);
}

// ---------------------------------------------------------------- framing

#[test]
fn header_errors_map_to_1_x() {
    let mut bad_marker = msg(0x04, "");
    bad_marker[3] = 0;
    let n = decode(&bad_marker, &WireOptions::default())
        .unwrap_err()
        .to_notification();
    assert_eq!((n.code, n.subcode), (1, 1));
    let n = decode(&msg(0x07, ""), &WireOptions::default())
        .unwrap_err()
        .to_notification();
    assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![7]));
    let n = decode(&message("1001 02", ""), &WireOptions::default())
        .unwrap_err()
        .to_notification();
    assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0x10, 0x01]));
    // An UPDATE shorter than 23 bytes.
    let n = decode(&message("0015 02", "0000"), &WireOptions::default())
        .unwrap_err()
        .to_notification();
    assert_eq!((n.code, n.subcode), (1, 2));
}

#[test]
fn frame_reader_handles_partial_and_coalesced_reads() {
    let (_, open) = routed_open();
    let mut stream = open.clone();
    stream.extend(encode_keepalive());
    stream.extend(v4_update_wire());
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    // One byte at a time...
    for byte in &stream {
        reader.extend(std::slice::from_ref(byte));
        while let Some(frame) = reader.next_frame().unwrap() {
            frames.push(frame);
        }
    }
    assert_eq!(
        frames,
        vec![open.clone(), encode_keepalive(), v4_update_wire()]
    );
    // ...and all at once.
    reader.extend(&stream);
    let mut all = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        all.push(frame);
    }
    assert_eq!(all, frames);
    assert_eq!(reader.buffered_len(), 0);
}

// ------------------------------------------------- the zettabgp 0.6.0 panics, one by one

/// notes: header length field < 19 underflows in `decode_message_head` (lib.rs:916).
#[test]
fn panic_header_length_below_19_is_bad_length() {
    let mut reader = FrameReader::new();
    reader.extend(&message("0010 04", "000000"));
    assert_eq!(
        reader.next_frame(),
        Err(DecodeError::Header(HeaderError::BadLength { length: 16 }))
    );
}

/// notes: 1–2 stray bytes after the attributes index out of bounds (update/mod.rs:156,162).
#[test]
fn panic_stray_bytes_after_attributes_is_invalid_network_field() {
    for stray in ["18", "18 0a"] {
        let err = decode(&msg(2, &format!("0000 0000 {stray}")), &four_octet()).unwrap_err();
        assert_eq!(err, DecodeError::Update(UpdateError::InvalidNetworkField));
        assert_eq!(err.to_notification().subcode, 10);
    }
}

/// notes: COMMUNITIES length not a multiple of 4 (community.rs:261).
#[test]
fn panic_communities_length_is_treat_as_withdraw() {
    let wire = msg(
        0x02,
        "0000 0014 40 01 01 00 40 02 00 40 03 04 0a000001 c0 08 03 000001",
    );
    let decoded = decode_update_frame(&wire, &four_octet()).unwrap();
    assert_eq!(decoded.findings.len(), 1);
    assert_eq!(decoded.findings[0].type_code, 8);
    assert_eq!(decoded.findings[0].action, AttributeAction::TreatAsWithdraw);
}

/// notes: LARGE_COMMUNITIES length not a multiple of 12 (community.rs:101).
#[test]
fn panic_large_communities_length_is_treat_as_withdraw() {
    let wire = msg(
        0x02,
        "0000 0013 40 01 01 00 40 02 00 40 03 04 0a000001 c0 20 02 0001 08 0a",
    );
    let decoded = decode_update_frame(&wire, &four_octet()).unwrap();
    assert_eq!(decoded.findings[0].type_code, 32);
    assert!(decoded.treat_as_withdraw());
    let Message::Update(update) = decode(&wire, &four_octet()).unwrap().message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.withdrawn, vec![net("10.0.0.0/8")]);
}

/// notes: short MP_REACH / MP_UNREACH and a next-hop length beyond the buffer
/// (multiproto.rs:67,81,152,221).
#[test]
fn panic_short_mp_attributes_reset_with_3_9() {
    let cases = [
        "0000 0005 80 0e 02 0002",            // MP_REACH shorter than AFI+SAFI
        "0000 0007 80 0e 04 0002 01 10",      // next hop length 16, no next hop
        "0000 0009 80 0e 06 0002 01 20 fd00", // next hop length 32, 2 bytes
        "0000 0017 80 0e 14 0002 01 10 fd000000000000000000000000000001", // no reserved byte
        "0000 0004 80 0f 01 00",              // MP_UNREACH shorter than AFI+SAFI
        "0000 0007 80 0f 04 0002 01 81",      // IPv6 prefix length 129
    ];
    for body in cases {
        let err = decode(&msg(2, body), &four_octet()).unwrap_err();
        let n = err.to_notification();
        assert_eq!((n.code, n.subcode), (3, 9), "{body}: {err}");
    }
}

/// notes: AS_PATH bytes [2,1,0] (aspath.rs:339).
#[test]
fn panic_as_path_2_1_0_is_treat_as_withdraw() {
    for options in [four_octet(), WireOptions::default()] {
        let wire = msg(0x02, "0000 000a 40 01 01 00 40 02 03 020100 08 0a");
        let decoded = decode_update_frame(&wire, &options).unwrap();
        assert_eq!(decoded.findings[0].error, UpdateError::MalformedAsPath);
        assert!(decoded.treat_as_withdraw());
    }
}

/// notes: ORIGINATOR_ID shorter than 4 bytes (originatorid.rs:30).
#[test]
fn panic_short_originator_id_is_treat_as_withdraw() {
    let wire = msg(0x02, "0000 0009 40 01 01 00 80 09 02 0a00 08 0a");
    let decoded = decode_update_frame(&wire, &four_octet()).unwrap();
    assert!(decoded
        .findings
        .iter()
        .any(|f| f.type_code == 9 && f.action == AttributeAction::TreatAsWithdraw));
}

/// notes: prefix length ≥ 249 (ipv4.rs:131), and any IPv4 prefix longer than 32.
#[test]
fn panic_long_prefix_length_is_invalid_network_field() {
    for bits in ["f9", "21", "ff"] {
        let wire = msg(0x02, &format!("0000 0000 {bits}"));
        assert_eq!(
            decode(&wire, &four_octet()).unwrap_err(),
            DecodeError::Update(UpdateError::InvalidNetworkField)
        );
    }
    // Withdrawn routes too.
    let wire = msg(0x02, "0001 f9 0000 ");
    assert_eq!(
        decode(&wire, &four_octet()).unwrap_err(),
        DecodeError::Update(UpdateError::InvalidNetworkField)
    );
}

/// notes: random UPDATE bodies; a length that overruns is 3/1, never a panic.
#[test]
fn panic_overrunning_lengths_are_malformed_attribute_list() {
    for body in [
        "ffff 0000",
        "0000 ffff",
        "0000 0004 40 01 05 00",
        "0000 0001 40",
        "0000 0003 50 01 00",
    ] {
        let err = decode(&msg(2, body), &four_octet()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Update(UpdateError::MalformedAttributeList),
            "{body}"
        );
    }
}

/// notes: FQDN with a domain name makes zettabgp reject the whole OPEN (lib.rs:662).
#[test]
fn fqdn_with_domain_is_accepted() {
    let wire = msg(
        0x01,
        "04 fc00 005a 0a000001 13 02 11 49 0f 02 7231 0b 6578616d706c652e636f6d",
    );
    let Message::Open(open) = decode(&wire, &WireOptions::default()).unwrap().message else {
        panic!("not an OPEN");
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::Fqdn {
            hostname: "r1".into(),
            domain: "example.com".into()
        }]
    );
}

/// Belt and braces: a panic inside a zettabgp call is a typed error, not an unwind.
#[test]
fn zettabgp_panic_becomes_codec_error() {
    let result: Result<(), DecodeError> =
        guard_zettabgp(CodecContext::Open, || panic!("index out of bounds"));
    let err = result.unwrap_err();
    assert!(matches!(err, DecodeError::Codec { .. }));
    assert_eq!(err.to_notification().code, 2);
}

/// A reflected IPv4 route as FRR and BIRD reflectors send it (RFC 4456 §8): ORIGINATOR_ID
/// (type 9, optional, 4 bytes) and CLUSTER_LIST (type 10, optional, our cluster first), after
/// the RFC 4271 attributes in type order.
fn reflected_update_wire() -> Vec<u8> {
    msg(
        0x02,
        "0000 002e
         40 01 01 00
         40 02 00
         40 03 04 0a000002
         80 04 04 00000007
         40 05 04 00000064
         80 09 04 0a000002
         80 0a 08 01000001 02000002
         1a 0af40200",
    )
}

fn reflected_attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 2)),
        med: Some(7),
        local_pref: Some(100),
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        cluster_list: vec![Ipv4Addr::new(1, 0, 0, 1), Ipv4Addr::new(2, 0, 0, 2)],
        ..PathAttributes::default()
    }
}

#[test]
fn originator_id_and_cluster_list_both_ways() {
    let nlri = vec![net("10.244.2.0/26")];
    let encoded = encode_updates(&reflected_attrs(), &nlri, &[], &four_octet()).unwrap();
    assert_eq!(encoded.len(), 1);
    assert_bytes_eq(&encoded[0], &reflected_update_wire());
    let decoded = decode(&reflected_update_wire(), &four_octet()).unwrap();
    assert!(decoded.findings.is_empty());
    let Message::Update(update) = decoded.message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.attributes, reflected_attrs());
    assert_eq!(update.nlri, nlri);
}

/// RFC 7606 §7.10 / §7.11: a CLUSTER_LIST that is not a multiple of 4 bytes, or an
/// ORIGINATOR_ID of the wrong length, is treat-as-withdraw; the session stays.
#[test]
fn malformed_cluster_list_and_originator_id_are_treat_as_withdraw() {
    for (type_code, attr) in [(10, "80 0a 06 01000001 0200"), (9, "80 09 05 0a00000200")] {
        let attrs = format!("40 01 01 00 40 02 00 40 03 04 0a000002 {attr}");
        let len = hex(&attrs).len();
        let wire = msg(0x02, &format!("0000 {len:04x} {attrs} 1a 0af40200"));
        let decoded = decode_update_frame(&wire, &four_octet()).unwrap();
        assert!(
            decoded
                .findings
                .iter()
                .any(|f| f.type_code == type_code && f.action == AttributeAction::TreatAsWithdraw),
            "type {type_code}: {:?}",
            decoded.findings
        );
    }
}
