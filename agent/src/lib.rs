//! nodewarden agent: node_exporter-compatible metrics, and (in later modules) the controller link
//! and the operations the node's own config declares.

pub mod cli;
pub mod collector;
pub mod config;
pub mod enroll;
pub mod exposition;
pub mod fragment_task;
pub mod fragment_watch;
pub mod fragments;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod inventory;
pub mod link;
pub mod nodestate;
pub mod ops;
pub mod process;
pub mod ray;
pub mod scan_checkpoint;
pub mod scrape;
pub mod scrub_cursor;
pub mod webconfig;
