#![no_main]
//! Fuzz target `shared_fragment_delta`: a thin call of its harness, which tests/fuzz_corpus.rs replays on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodewarden_shared::fuzzing::fragment_delta(data));
