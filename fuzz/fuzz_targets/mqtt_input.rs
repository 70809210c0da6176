#![no_main]
//! `sentimq::fuzzing::mqtt_input`: its input format and invariants are documented there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentimq::fuzzing::mqtt_input(data));
