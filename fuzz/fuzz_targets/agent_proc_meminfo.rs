#![no_main]
//! Fuzz target `agent_proc_meminfo`: a thin call of its harness, which tests/fuzz_corpus.rs replays on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodewarden_agent::fuzzing::proc_meminfo(data));
