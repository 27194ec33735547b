//! Feeds arbitrary bytes to the frame decoder; `corvid_wire::fuzzing::check` panics if a
//! decoded frame does not re-encode to its own bytes or the decoder consumes wrongly.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    corvid_wire::fuzzing::check(data);
});
