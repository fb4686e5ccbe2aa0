//! The crate's error type.

use crate::model::{Frontend, ServiceName};

/// Everything that can go wrong in `strata-lb`.
///
/// Every variant names what was wrong and where; an operation that fails leaves the state it
/// was called on untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Maglev table size that is not a prime between 2 and [`crate::TableSize::MAX`].
    #[error(
        "Maglev table size {size} is invalid: it must be a prime between 2 and {max}",
        max = crate::TableSize::MAX
    )]
    TableSize {
        /// The size that was asked for.
        size: u64,
    },
    /// More backends than slots in the Maglev table.
    #[error("{backends} backends do not fit in a Maglev table of {size} slots")]
    TooManyBackends {
        /// The table size.
        size: u32,
        /// The number of backends with a non-zero weight.
        backends: usize,
    },
    /// A selection table was asked for without any backend of non-zero weight.
    #[error("no backend with a non-zero weight to build a selection table from")]
    NoBackends,
    /// The weights of a backend set add up to more than `u32::MAX`.
    #[error("the weights of {backends} backends add up to more than 2^32 - 1")]
    WeightOverflow {
        /// How many backends were being weighed.
        backends: usize,
    },
    /// Two backends handed to a selection table share the same key.
    #[error("backend key {key:?} appears twice")]
    DuplicateBackend {
        /// The key, lossily decoded as UTF-8.
        key: String,
    },
    /// A service definition is invalid.
    #[error("service {service}: {field}: {reason}")]
    InvalidService {
        /// The service.
        service: ServiceName,
        /// The field that is wrong, for example `ports[1].port`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A frontend is already claimed by another service.
    #[error("service {service}: frontend {frontend} is already used by service {owner}")]
    FrontendConflict {
        /// The service being applied.
        service: ServiceName,
        /// The contested frontend.
        frontend: Frontend,
        /// The service that owns it.
        owner: ServiceName,
    },
    /// An identifier space (backend ids or reverse-NAT ids) is exhausted.
    #[error("no free {kind} identifier left")]
    IdsExhausted {
        /// Which identifier space: `"backend"` or `"reverse-NAT"`.
        kind: &'static str,
    },
    /// A service that is not known was named.
    #[error("unknown service {service}")]
    UnknownService {
        /// The service.
        service: ServiceName,
    },
    /// A textual frontend, protocol or backend could not be parsed.
    #[error("cannot parse {what} from {input:?}: {reason}")]
    Parse {
        /// What was being parsed, for example `"frontend"`.
        what: &'static str,
        /// The input text.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
