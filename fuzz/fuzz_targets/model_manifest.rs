#![no_main]
//! `sentimq::fuzzing::model_manifest`: its input format and invariants are documented there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentimq::fuzzing::model_manifest(data));
