//! nodewarden controller: fleet state, the CA, the agent link endpoint, API, CLI.

pub mod actions;
pub mod admin;
pub mod api_actions;
pub mod cadir;
pub mod client;
pub mod config;
pub mod fleet;
pub mod link;
pub mod registry;
pub mod ssh;
pub mod store;
pub mod wol;
