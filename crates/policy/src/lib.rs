//! Kubernetes NetworkPolicy semantics, security identities and compiled policy map entries.
#![deny(missing_docs)]

mod error;
pub mod map;

pub use error::Error;
pub use map::{
    Direction, DirectionPolicy, EndpointPolicy, Entry, EntryKey, Identity, MapDiff, PolicyMap,
    Verdict, lookup, port_range_prefixes,
};
