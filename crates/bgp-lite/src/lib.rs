//! A small BGP-4 speaker: sans-I/O codec and FSM with a tokio shell.
#![deny(missing_docs)]

pub mod error;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod wire;

pub use error::{Action, DecodeError, EncodeError, Error};
