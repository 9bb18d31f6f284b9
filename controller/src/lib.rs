//! nodewarden controller: fleet state, the CA, the agent link endpoint, API, CLI.

pub mod actions;
pub mod admin;
pub mod api_actions;
pub mod api_alerts;
pub mod api_devices;
pub mod api_events;
pub mod api_fragments;
pub mod api_prometheus;
pub mod api_stream;
pub mod ca_cli;
pub mod cadir;
pub mod certfile;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod dfs;
pub mod fleet;
pub mod fragments;
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
pub mod http_auth;
pub mod link;
pub mod metrics;
pub mod peer;
pub mod push;
pub mod registry;
pub mod sd;
pub mod server;
pub mod ssh;
pub mod state;
pub mod store;
pub mod table;
pub mod wire;
pub mod wol;
