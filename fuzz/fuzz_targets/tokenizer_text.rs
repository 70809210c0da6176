#![no_main]
//! `sentimq::fuzzing::tokenizer_text`: its input format and invariants are documented there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentimq::fuzzing::tokenizer_text(data));
