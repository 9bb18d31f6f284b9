#![no_main]
//! Fuzz target `controller_pairs_file`: a thin call of its harness, which tests/fuzz_corpus.rs replays on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodewarden_controller::fuzzing::pairs_file(data));
