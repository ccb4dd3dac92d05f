//! Byte vectors captured from real speakers: BIRD 2.0.12, FRR 8.4.4 (bgpd, default
//! capabilities, hostname set) and GoBGP 3.10.0, each in a network namespace, peering over eBGP
//! (AS 65001 / 65002 / 65003, router id 10.0.0.1, announcing 192.0.2.0/24 and 198.51.100.0/24)
//! with a scripted peer (AS 64512, 10.0.0.2) that recorded every message it received on
//! 2026-11-22. The ROUTE-REFRESH messages were triggered with `birdc reload in` and
//! `vtysh -c 'clear bgp ipv4 unicast 10.0.0.2 soft in'`; the NOTIFICATIONs answer a bad
//! marker (BIRD), a KEEPALIVE of length 20 (FRR) and an UPDATE whose attribute length
//! overruns the message (GoBGP). GoBGP's `softresetin` sends no ROUTE-REFRESH.
//!
//! Each vector is decoded and checked field by field (the expected values are read off the
//! bytes by hand, RFC 4271 §4), then encoded again: byte for byte where our encoder uses the
//! same layout, otherwise decode(encode(x)) == x and the layout difference is named.

use std::net::Ipv4Addr;

use ipnetwork::IpNetwork;

use super::*;

/// Hex (spaces ignored) to bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// Every daemon sent the 4-octet AS capability and so did we.
fn session() -> WireOptions {
    WireOptions {
        four_octet_as: true,
        extended_message: false,
    }
}

fn decoded(wire: &[u8]) -> Message {
    let decoded = decode_message(wire, &session()).unwrap();
    assert!(decoded.findings.is_empty(), "{:?}", decoded.findings);
    decoded.message
}

/// Encode and compare with the captured bytes.
fn assert_encodes_to(message: &Message, wire: &[u8]) {
    let encoded = encode_message(message, &session()).unwrap();
    assert_eq!(encoded.len(), 1);
    assert_eq!(hex_string(&encoded[0]), hex_string(wire));
}

/// A captured NOTIFICATION both ways: it decodes to `expected` and encodes back to the bytes.
fn assert_notification(wire: &[u8], expected: Notification) -> Message {
    let message = decoded(wire);
    assert_eq!(message, Message::Notification(expected));
    assert_encodes_to(&message, wire);
    message
}

/// Encode, decode again: the same message (for layouts our encoder does not reproduce).
fn assert_round_trips(message: &Message) {
    let encoded = encode_message(message, &session()).unwrap();
    assert_eq!(encoded.len(), 1);
    assert_eq!(&decoded(&encoded[0]), message);
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const KEEPALIVE: &str = "ffffffffffffffffffffffffffffffff 0013 04";
const END_OF_RIB: &str = "ffffffffffffffffffffffffffffffff 0017 02 0000 0000";
const ROUTE_REFRESH: &str = "ffffffffffffffffffffffffffffffff 0017 05 0001 00 01";

fn gr(restarting: bool, notification: bool) -> Capability {
    Capability::GracefulRestart(GracefulRestart {
        restarting,
        notification,
        restart_time: 120,
        families: vec![GracefulRestartFamily {
            family: Family::IPV4_UNICAST,
            forwarding_state: false,
        }],
    })
}

fn announcement(origin: Origin, asn: u32, med: Option<u32>) -> PathAttributes {
    PathAttributes {
        origin: Some(origin),
        as_path: Some(AsPath::from_sequence(vec![asn])),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        med,
        ..PathAttributes::default()
    }
}

fn assert_update(wire: &[u8], attributes: PathAttributes, nlri: &[&str]) -> Message {
    let message = decoded(wire);
    let Message::Update(update) = &message else {
        panic!("not an UPDATE: {message:?}");
    };
    assert!(update.withdrawn.is_empty());
    assert_eq!(update.end_of_rib, None);
    assert_eq!(update.attributes, attributes);
    assert_eq!(update.nlri, nlri.iter().map(|n| net(n)).collect::<Vec<_>>());
    message
}

#[test]
fn keepalive_end_of_rib_and_route_refresh_from_all_three() {
    // Identical bytes from every daemon that sent them.
    let keepalive = hex(KEEPALIVE);
    assert_eq!(decoded(&keepalive), Message::Keepalive);
    assert_encodes_to(&Message::Keepalive, &keepalive);

    let eor = hex(END_OF_RIB);
    let message = decoded(&eor);
    let Message::Update(update) = &message else {
        panic!("not an UPDATE");
    };
    assert_eq!(update.end_of_rib, Some(Family::IPV4_UNICAST));
    assert_encodes_to(&message, &eor);

    let refresh = hex(ROUTE_REFRESH);
    let message = decoded(&refresh);
    assert_eq!(
        message,
        Message::RouteRefresh(RouteRefresh::request(Family::IPV4_UNICAST))
    );
    assert_encodes_to(&message, &refresh);
}

// ---------------------------------------------------------------- BIRD 2.0.12

#[test]
fn bird_open_captured() {
    // One capabilities parameter holding every capability (BIRD's layout).
    let wire = hex("ffffffffffffffffffffffffffffffff 0039 01
         04 fde9 00f0 0a000001 1c
         02 1a
            01 04 0001 00 01
            02 00
            40 06 0078 0001 01 00
            41 04 0000fde9
            46 00
            47 00");
    let message = decoded(&wire);
    let Message::Open(open) = &message else {
        panic!("not an OPEN");
    };
    assert_eq!(open.asn, 65001);
    assert_eq!(open.hold_time, 240);
    assert_eq!(open.bgp_id, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::RouteRefresh,
            gr(false, false),
            Capability::FourOctetAs(65001),
            Capability::EnhancedRouteRefresh,
            // Long-lived graceful restart (RFC 9494), no families.
            Capability::Unknown {
                code: 71,
                data: vec![]
            },
        ]
    );
    // We write one capability per parameter: same content, different layout.
    assert_round_trips(&message);
}

#[test]
fn bird_update_captured_both_ways() {
    let wire = hex("ffffffffffffffffffffffffffffffff 0033 02
         0000 0014
         40 01 01 00
         40 02 06 02 01 0000fde9
         40 03 04 0a000001
         18 c63364 18 c00002");
    let message = assert_update(
        &wire,
        announcement(Origin::Igp, 65001, None),
        &["198.51.100.0/24", "192.0.2.0/24"],
    );
    assert_encodes_to(&message, &wire);
}

#[test]
fn bird_notification_captured_both_ways() {
    // Bad marker: Message Header Error / Connection Not Synchronized, no data.
    let wire = hex("ffffffffffffffffffffffffffffffff 0015 03 01 01");
    assert_notification(&wire, Notification::new(1, 1, vec![]));
}

// ---------------------------------------------------------------- FRR 8.4.4

#[test]
fn frr_open_captured_both_ways() {
    // One capability per parameter (FRR's layout); hostname without a domain; GR with the
    // R and N bits (FRR sets R on a fresh start); LLGR with one family.
    let wire = hex("ffffffffffffffffffffffffffffffff 0067 01
         04 fdea 00b4 0a000001 4a
         02 06 01 04 0001 00 01
         02 02 80 00
         02 02 02 00
         02 02 46 00
         02 06 41 04 0000fdea
         02 02 06 00
         02 06 45 04 0001 01 01
         02 0b 49 09 07 66727270656572 00
         02 08 40 06 c078 0001 01 00
         02 09 47 07 0001 01 80 000000");
    let message = decoded(&wire);
    let Message::Open(open) = &message else {
        panic!("not an OPEN");
    };
    assert_eq!(open.asn, 65002);
    assert_eq!(open.hold_time, 180);
    assert_eq!(open.bgp_id, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Unknown {
                code: 128,
                data: vec![]
            },
            Capability::RouteRefresh,
            Capability::EnhancedRouteRefresh,
            Capability::FourOctetAs(65002),
            Capability::ExtendedMessage,
            Capability::AddPath(vec![AddPathFamily {
                family: Family::IPV4_UNICAST,
                send: false,
                receive: true,
            }]),
            Capability::Fqdn {
                hostname: "frrpeer".into(),
                domain: String::new(),
            },
            gr(true, true),
            Capability::Unknown {
                code: 71,
                data: hex("0001 01 80 000000"),
            },
        ]
    );
    assert_encodes_to(&message, &wire);
}

#[test]
fn frr_update_captured() {
    // FRR sets the extended-length flag on AS_PATH and sends MED 0.
    let wire = hex("ffffffffffffffffffffffffffffffff 003b 02
         0000 001c
         40 01 01 00
         50 02 0006 02 01 0000fdea
         40 03 04 0a000001
         80 04 04 00000000
         18 c00002 18 c63364");
    let message = assert_update(
        &wire,
        announcement(Origin::Igp, 65002, Some(0)),
        &["192.0.2.0/24", "198.51.100.0/24"],
    );
    // We set extended length only when an attribute needs it: one byte shorter.
    let encoded = encode_message(&message, &session()).unwrap();
    assert_eq!(encoded[0].len(), wire.len() - 1);
    assert_round_trips(&message);
}

#[test]
fn frr_notification_captured_both_ways() {
    // KEEPALIVE of length 20: Message Header Error / Bad Message Length, data = the length.
    let wire = hex("ffffffffffffffffffffffffffffffff 0017 03 01 02 0014");
    let message = assert_notification(&wire, Notification::new(1, 2, vec![0x00, 0x14]));
    // And our decoder answers that same KEEPALIVE with the same NOTIFICATION.
    let bad = hex("ffffffffffffffffffffffffffffffff 0014 04 00");
    let ours = decode_message(&bad, &session())
        .unwrap_err()
        .to_notification();
    assert_eq!(Message::Notification(ours), message);
}

// ---------------------------------------------------------------- GoBGP 3.10.0

#[test]
fn gobgp_open_captured() {
    // One capabilities parameter (GoBGP's layout); the hostname is the capturing machine's;
    // extended next hop (RFC 8950) for IPv4 unicast over IPv6 is advertised by default.
    let wire = hex("ffffffffffffffffffffffffffffffff 0043 01
         04 fdeb 005a 0a000001 26
         02 24
            02 00
            49 04 02 766d 00
            01 04 0001 00 01
            41 04 0000fdeb
            40 06 0078 0001 01 00
            05 06 0001 0001 0002");
    let message = decoded(&wire);
    let Message::Open(open) = &message else {
        panic!("not an OPEN");
    };
    assert_eq!(open.asn, 65003);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.bgp_id, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::RouteRefresh,
            Capability::Fqdn {
                hostname: "vm".into(),
                domain: String::new(),
            },
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(65003),
            gr(false, false),
            Capability::Unknown {
                code: 5,
                data: hex("0001 0001 0002"),
            },
        ]
    );
    assert_round_trips(&message);
}

#[test]
fn gobgp_update_captured_both_ways() {
    let wire = hex("ffffffffffffffffffffffffffffffff 0033 02
         0000 0014
         40 01 01 02
         40 02 06 02 01 0000fdeb
         40 03 04 0a000001
         18 c00002 18 c63364");
    let message = assert_update(
        &wire,
        announcement(Origin::Incomplete, 65003, None),
        &["192.0.2.0/24", "198.51.100.0/24"],
    );
    assert_encodes_to(&message, &wire);
}

#[test]
fn gobgp_notification_captured_both_ways() {
    // UPDATE "0000 ffff": UPDATE Message Error / Malformed Attribute List, no data.
    let wire = hex("ffffffffffffffffffffffffffffffff 0015 03 03 01");
    let message = assert_notification(&wire, Notification::new(3, 1, vec![]));
    // Our decoder gives the same answer to the same UPDATE.
    let bad = hex("ffffffffffffffffffffffffffffffff 0017 02 0000 ffff");
    let ours = decode_message(&bad, &session())
        .unwrap_err()
        .to_notification();
    assert_eq!(Message::Notification(ours), message);
}
