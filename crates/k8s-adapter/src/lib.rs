//! Kubernetes objects and manifests translated into Strata SDK inputs.
//!
//! - [`manifest`]: a generic reader of manifest files (multi-document YAML, `kind: List`) that
//!   locates every object and decodes it into a [`k8s_openapi`] type with errors naming the
//!   file, document, object and field.
//! - [`service`]: Services and EndpointSlices → `strata-lb` services and endpoint groups.
#![deny(missing_docs)]

mod error;
pub mod manifest;
pub mod service;

pub use error::Error;
