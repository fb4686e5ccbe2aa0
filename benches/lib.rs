//! Shared helpers for the Strata benches (the benches themselves are the `[[bench]]` targets).
#![deny(missing_docs)]

pub mod versus;
