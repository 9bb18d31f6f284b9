#![no_main]
//! Fuzz target `agent_textfile`: a thin call of its harness, which tests/fuzz_corpus.rs replays on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodewarden_agent::fuzzing::textfile(data));
