//! Kubernetes NetworkPolicy semantics, security identities and compiled policy map entries.
#![deny(missing_docs)]
