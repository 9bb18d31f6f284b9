//! nodewarden controller: fleet state, the CA, the agent link endpoint, API, CLI.

pub mod actions;
pub mod ssh;
pub mod wol;
