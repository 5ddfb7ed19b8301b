//! Arbitrary bytes, in arbitrary reads, into the frame decoder; the checks
//! are `shoal_core::fuzzing::check_decoder`, shared with `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| shoal_core::fuzzing::check_decoder(input));
