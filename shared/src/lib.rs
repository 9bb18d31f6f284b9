//! The nodewarden wire protocol, framing and TLS configuration shared by agent and controller.
//! Free of I/O: encoding, framing and the per-connection state machine are plain functions and types;
//! certificates and keys come in and go out as PEM/DER bytes, file handling stays in the binaries.

pub mod ca;
pub mod exposition;
pub mod fragments;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod name;
pub mod ops;
pub mod protocol;
pub mod session;
pub mod tls;
pub mod wol;
