//! One UDP payload into the BFD decoder (`src/bfd/packet.rs`). Any panic is a bug; what
//! decodes must encode to the same 24 bytes (the length byte aside) and decode again to the
//! same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routed_fuzz::bfd_packet::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = decode(data) {
        let again = encode(&packet);
        assert_eq!(&again[4..], &data[4..24]);
        assert_eq!(decode(&again), Ok(packet));
    }
});
