#![no_main]
//! `sentimq::fuzzing::config_file`: its input format and invariants are documented there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentimq::fuzzing::config_file(data));
