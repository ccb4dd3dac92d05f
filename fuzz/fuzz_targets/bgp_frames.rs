//! A TCP byte stream cut at arbitrary points into the frame reader, then every frame decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routed_fuzz::packet::{decode_message, FrameReader, WireOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut reader = FrameReader::new();
    let options = WireOptions {
        four_octet_as: true,
        extended_message: false,
    };
    for chunk in stream.chunks(usize::from(cut).max(1)) {
        reader.extend(chunk);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    let _ = decode_message(&frame, &options);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
