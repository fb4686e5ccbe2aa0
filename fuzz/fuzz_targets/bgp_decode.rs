//! Any bytes through the BGP decoder: it must never panic, and what decodes must encode again
//! and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_bgp::wire::{Message, Options, frame_len};

fuzz_target!(|data: &[u8]| {
    for opts in [Options::MODERN, Options::LEGACY] {
        let _ = frame_len(data, opts);
        if let Ok(decoded) = Message::parse(data, opts) {
            if let Ok(bytes) = decoded.message.to_bytes(opts) {
                let again = Message::parse(&bytes, opts).expect("re-encoded message decodes");
                assert_eq!(again.message, decoded.message, "round trip");
            }
        }
    }
});
