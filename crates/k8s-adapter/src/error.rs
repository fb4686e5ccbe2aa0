//! The error type of the crate.

use std::path::PathBuf;

use crate::manifest::Location;

/// Everything that can go wrong while reading manifests and translating them into SDK inputs.
///
/// Every variant names where the problem is: the file, the index of the YAML document in it
/// (displayed from 1), the item inside a `kind: List`, the object and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A manifest file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("{}: document {}: invalid YAML: {source}", file.display(), document + 1)]
    Yaml {
        /// The file.
        file: PathBuf,
        /// Index of the document in the file, from 0.
        document: usize,
        /// The parser error (it carries the line and column).
        #[source]
        source: serde_yaml::Error,
    },
    /// A document is valid YAML but not a Kubernetes object (not a mapping, no `kind`, …).
    #[error("{}: document {}{}: {reason}", file.display(), document + 1, item.map(|i| format!(" item {}", i + 1)).unwrap_or_default())]
    NotAnObject {
        /// The file.
        file: PathBuf,
        /// Index of the document in the file, from 0.
        document: usize,
        /// Index inside a `kind: List`, from 0.
        item: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// An object does not decode into its Kubernetes type.
    #[error("{location}: field `{field}`: {message}")]
    Decode {
        /// Where the object is.
        location: Box<Location>,
        /// Path of the offending field, such as `spec.ingress[0].ports[1].port`.
        field: String,
        /// The decoder's message.
        message: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// An object decodes but a field holds a value the SDK rejects (an unknown protocol, a bad
    /// CIDR, a selector operator that does not exist …).
    #[error("{location}: field `{field}`: {reason}")]
    Invalid {
        /// Where the object is.
        location: Box<Location>,
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The objects are individually valid but the policy model rejects them together (for
    /// example two pods with the same IP address).
    #[error("{location}: {source}")]
    Policy {
        /// The object that could not be added.
        location: Box<Location>,
        /// The policy crate's error.
        #[source]
        source: strata_policy::Error,
    },
}
