//! `.note.stapsdt` section parser and the whole-ELF probe reader: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sidecar::usdt::parse_notes(data);
    let _ = sidecar::usdt::probes(data);
});
