//! The error type of the crate.

use std::net::IpAddr;

use crate::map::EntryKey;

/// Everything the policy crate rejects. Bad input never changes stored state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A map key is not in canonical form.
    #[error("entry key not canonical: {key:?}")]
    InvalidEntryKey {
        /// The key.
        key: EntryKey,
    },
    /// A field of a policy, selector, pod or namespace holds an invalid value.
    #[error("{object}: field `{field}`: {reason}")]
    Invalid {
        /// The object, such as `NetworkPolicy shop/allow-web`.
        object: String,
        /// The field path, such as `spec.ingress[0].from[1].ipBlock.except[0]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Two pods claim the same address.
    #[error("address {address} is used by both pod {first} and pod {second}")]
    DuplicateAddress {
        /// The address.
        address: IpAddr,
        /// The pod already holding it.
        first: String,
        /// The pod that also claims it.
        second: String,
    },
    /// A pod, namespace or policy named by an update does not exist.
    #[error("{kind} {name} does not exist")]
    NotFound {
        /// `pod`, `namespace` or `policy`.
        kind: &'static str,
        /// Its `namespace/name`.
        name: String,
    },
    /// Restored allocator state is inconsistent.
    #[error("identity allocator state rejected: {reason}")]
    InvalidState {
        /// What is inconsistent.
        reason: String,
    },
}
