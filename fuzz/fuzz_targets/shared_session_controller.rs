#![no_main]
//! Fuzz target `shared_session_controller`: a thin call of its harness, which tests/fuzz_corpus.rs replays on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodewarden_shared::fuzzing::session_controller(data));
