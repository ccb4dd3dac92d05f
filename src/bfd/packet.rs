//! BFD Control packets (RFC 5880 §4.1): encoding, and decoding with the §6.8.6 checks.
//!
//! Data flow: the driver hands `decode` the bytes of one UDP datagram; a packet that
//! passes every check becomes a `ControlPacket` for the session state machine, anything
//! else a `DecodeError` the driver counts and drops (a malformed packet never reaches the
//! FSM and never ends anything). `encode` writes the 24-byte mandatory section.
//!
//! Departures: authentication (the A bit) is not supported; a packet with A set is
//! discarded (RFC 5880 §6.8.6 allows it: we have no authentication configured).
//! The demand bit is parsed and reported but never acted on (no demand mode).

/// The mandatory section's length; the smallest valid packet.
pub const HEADER_LEN: usize = 24;
/// The only version there is.
pub const VERSION: u8 = 1;

/// Session states on the wire (§4.1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits & 0x3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// The name BIRD and FRR show.
    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

/// Diagnostic codes (§4.1); unknown values are kept as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Diagnostic {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    Other(u8),
}

impl Diagnostic {
    fn from_bits(bits: u8) -> Diagnostic {
        match bits & 0x1f {
            0 => Diagnostic::None,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledSessionDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            other => Diagnostic::Other(other),
        }
    }

    fn bits(self) -> u8 {
        match self {
            Diagnostic::None => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Other(other) => other & 0x1f,
        }
    }
}

/// One BFD Control packet's mandatory section. Intervals are in microseconds, as on the
/// wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    pub diagnostic: Diagnostic,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    pub control_plane_independent: bool,
    pub demand: bool,
    pub detect_multiplier: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a datagram was discarded (RFC 5880 §6.8.6), one variant per check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than 24 bytes")]
    TooShort,
    #[error("version is not 1")]
    BadVersion,
    #[error("length field below 24 or beyond the datagram")]
    BadLength,
    #[error("authentication present but none configured")]
    Authentication,
    #[error("detect multiplier is zero")]
    ZeroMultiplier,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("your discriminator is zero in state Init or Up")]
    ZeroYourDiscriminator,
}

impl DecodeError {
    /// Every kind, for counters.
    pub const ALL: [DecodeError; 8] = [
        DecodeError::TooShort,
        DecodeError::BadVersion,
        DecodeError::BadLength,
        DecodeError::Authentication,
        DecodeError::ZeroMultiplier,
        DecodeError::Multipoint,
        DecodeError::ZeroMyDiscriminator,
        DecodeError::ZeroYourDiscriminator,
    ];

    /// A short stable name for counters and JSON.
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::TooShort => "too_short",
            DecodeError::BadVersion => "bad_version",
            DecodeError::BadLength => "bad_length",
            DecodeError::Authentication => "authentication",
            DecodeError::ZeroMultiplier => "zero_multiplier",
            DecodeError::Multipoint => "multipoint",
            DecodeError::ZeroMyDiscriminator => "zero_my_discriminator",
            DecodeError::ZeroYourDiscriminator => "zero_your_discriminator",
        }
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_be_bytes(word)
}

/// Decode and validate one datagram (RFC 5880 §6.8.6, the checks before any session
/// lookup). Bytes past the Length field are ignored, as the RFC asks.
pub fn decode(bytes: &[u8]) -> Result<ControlPacket, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    if bytes[0] >> 5 != VERSION {
        return Err(DecodeError::BadVersion);
    }
    let length = usize::from(bytes[3]);
    if length < HEADER_LEN || length > bytes.len() {
        return Err(DecodeError::BadLength);
    }
    let flags = bytes[1];
    if flags & 0x04 != 0 {
        return Err(DecodeError::Authentication);
    }
    let detect_multiplier = bytes[2];
    if detect_multiplier == 0 {
        return Err(DecodeError::ZeroMultiplier);
    }
    if flags & 0x01 != 0 {
        return Err(DecodeError::Multipoint);
    }
    let state = State::from_bits(flags >> 6);
    let my_discriminator = be32(bytes, 4);
    if my_discriminator == 0 {
        return Err(DecodeError::ZeroMyDiscriminator);
    }
    let your_discriminator = be32(bytes, 8);
    if your_discriminator == 0 && matches!(state, State::Init | State::Up) {
        return Err(DecodeError::ZeroYourDiscriminator);
    }
    Ok(ControlPacket {
        diagnostic: Diagnostic::from_bits(bytes[0]),
        state,
        poll: flags & 0x20 != 0,
        final_: flags & 0x10 != 0,
        control_plane_independent: flags & 0x08 != 0,
        demand: flags & 0x02 != 0,
        detect_multiplier,
        my_discriminator,
        your_discriminator,
        desired_min_tx_us: be32(bytes, 12),
        required_min_rx_us: be32(bytes, 16),
        required_min_echo_rx_us: be32(bytes, 20),
    })
}

/// Encode the mandatory section (no authentication).
pub fn encode(packet: &ControlPacket) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = (VERSION << 5) | packet.diagnostic.bits();
    out[1] = (packet.state.bits() << 6)
        | (u8::from(packet.poll) << 5)
        | (u8::from(packet.final_) << 4)
        | (u8::from(packet.control_plane_independent) << 3)
        | (u8::from(packet.demand) << 1);
    out[2] = packet.detect_multiplier;
    out[3] = HEADER_LEN as u8;
    out[4..8].copy_from_slice(&packet.my_discriminator.to_be_bytes());
    out[8..12].copy_from_slice(&packet.your_discriminator.to_be_bytes());
    out[12..16].copy_from_slice(&packet.desired_min_tx_us.to_be_bytes());
    out[16..20].copy_from_slice(&packet.required_min_rx_us.to_be_bytes());
    out[20..24].copy_from_slice(&packet.required_min_echo_rx_us.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Up packet with Poll, multiplier 3, 300 ms both ways (hand-assembled from §4.1).
    const UP_POLL: [u8; 24] = [
        0x20, 0xe0, 0x03, 0x18, // vers 1 diag 0 | Up P | mult 3 | len 24
        0x00, 0x00, 0x00, 0x01, // my disc 1
        0x00, 0x00, 0x00, 0x02, // your disc 2
        0x00, 0x04, 0x93, 0xe0, // desired min tx 300000 us
        0x00, 0x04, 0x93, 0xe0, // required min rx 300000 us
        0x00, 0x00, 0x00, 0x00, // echo 0
    ];

    /// A first packet as FRR's bfdd defaults make it (hand-assembled): Down, diag 0, mult 3,
    /// 1 s tx (slow start), 300 ms rx, echo 50 ms, your discriminator 0.
    const FRR_DOWN: [u8; 24] = [
        0x20, 0x40, 0x03, 0x18, 0x5a, 0x3c, 0x21, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x42,
        0x40, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x00, 0xc3, 0x50,
    ];

    fn up_poll() -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::None,
            state: State::Up,
            poll: true,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_multiplier: 3,
            my_discriminator: 1,
            your_discriminator: 2,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
    }

    #[test]
    fn up_poll_packet_decodes_and_encodes_to_the_same_bytes() {
        assert_eq!(decode(&UP_POLL), Ok(up_poll()));
        assert_eq!(encode(&up_poll()), UP_POLL);
    }

    #[test]
    fn frr_first_down_packet_round_trips() {
        let packet = decode(&FRR_DOWN).unwrap();
        assert_eq!(packet.state, State::Down);
        assert_eq!(packet.your_discriminator, 0);
        assert_eq!(packet.desired_min_tx_us, 1_000_000);
        assert_eq!(packet.required_min_echo_rx_us, 50_000);
        assert_eq!(encode(&packet), FRR_DOWN);
    }

    #[test]
    fn final_and_diagnostic_bits_round_trip() {
        let mut packet = up_poll();
        packet.poll = false;
        packet.final_ = true;
        packet.state = State::Down;
        packet.diagnostic = Diagnostic::ControlDetectionTimeExpired;
        let bytes = encode(&packet);
        assert_eq!(bytes[0], 0x21);
        assert_eq!(bytes[1], 0x50);
        assert_eq!(decode(&bytes), Ok(packet));
    }

    #[test]
    fn trailing_bytes_beyond_length_are_ignored() {
        let mut bytes = UP_POLL.to_vec();
        bytes.extend_from_slice(&[0xff; 8]);
        assert_eq!(decode(&bytes), Ok(up_poll()));
    }

    #[test]
    fn every_discard_rule_of_6_8_6_has_its_error() {
        let with = |f: fn(&mut [u8; 24])| {
            let mut b = UP_POLL;
            f(&mut b);
            decode(&b)
        };
        assert_eq!(decode(&UP_POLL[..23]), Err(DecodeError::TooShort));
        assert_eq!(with(|b| b[0] = 0x40), Err(DecodeError::BadVersion));
        assert_eq!(with(|b| b[3] = 23), Err(DecodeError::BadLength));
        assert_eq!(with(|b| b[3] = 25), Err(DecodeError::BadLength));
        assert_eq!(with(|b| b[1] |= 0x04), Err(DecodeError::Authentication));
        assert_eq!(with(|b| b[2] = 0), Err(DecodeError::ZeroMultiplier));
        assert_eq!(with(|b| b[1] |= 0x01), Err(DecodeError::Multipoint));
        assert_eq!(
            with(|b| b[4..8].fill(0)),
            Err(DecodeError::ZeroMyDiscriminator)
        );
        assert_eq!(
            with(|b| b[8..12].fill(0)),
            Err(DecodeError::ZeroYourDiscriminator)
        );
        // Your discriminator 0 is fine while Down.
        assert!(with(|b| {
            b[8..12].fill(0);
            b[1] = 0x40;
        })
        .is_ok());
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder; what decodes re-encodes to its first
        /// 24 bytes (apart from the length byte).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(packet) = decode(&bytes) {
                let again = encode(&packet);
                proptest::prop_assert_eq!(&again[4..], &bytes[4..24]);
                proptest::prop_assert_eq!(decode(&again), Ok(packet));
            }
        }
    }
}
