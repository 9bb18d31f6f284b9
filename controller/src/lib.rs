//! nodewarden controller: fleet state, the CA, the agent link endpoint, API, CLI.

pub mod admin;
pub mod cadir;
pub mod config;
pub mod link;
pub mod registry;
pub mod store;
