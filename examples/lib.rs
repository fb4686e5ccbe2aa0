//! Embedding examples for the Strata crates; run one with `cargo run -p strata-examples --example NAME`.
#![deny(missing_docs)]
