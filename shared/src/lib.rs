//! The nodewarden wire protocol, framing and TLS configuration shared by agent and controller.
//! Free of I/O: encoding, framing and the per-connection state machine are plain functions and types.

pub mod ops;
pub mod wol;
