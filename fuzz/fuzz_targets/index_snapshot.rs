//! Fuzz target `index_snapshot`: see `checks::index_snapshot`.

#![no_main]

#[allow(dead_code)] // each target uses one of the checks
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::index_snapshot(data));
