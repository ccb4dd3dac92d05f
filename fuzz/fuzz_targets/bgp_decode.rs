//! One BGP message (header included) into the decoder, with and without the 4-octet-AS and
//! extended-message capabilities negotiated. Any panic is a bug: wire input must only ever
//! produce a message or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routed_fuzz::packet::{decode_message, WireOptions};

fuzz_target!(|data: &[u8]| {
    for (four_octet_as, extended_message) in [(true, false), (false, false), (true, true)] {
        let options = WireOptions {
            four_octet_as,
            extended_message,
        };
        if let Ok(decoded) = decode_message(data, &options) {
            // What decodes must re-encode without panicking.
            let _ = routed_fuzz::packet::encode_message(&decoded.message, &options);
        }
    }
});
