//! Kubernetes objects and manifests translated into Strata SDK inputs.
//!
//! - [`manifest`]: a generic reader of manifest files (multi-document YAML, `kind: List`) that
//!   locates every object and decodes it into a [`k8s_openapi`] type with errors naming the
//!   file, document, object and field.
//! - [`policy`]: Namespaces, Pods and NetworkPolicies translated into a
//!   [`strata_policy::Cluster`].
//! - [`service`]: Services and EndpointSlices → `strata-lb` services and endpoint groups.
//!
//! ```
//! use strata_k8s::manifest::Manifests;
//!
//! let mut manifests = Manifests::new();
//! manifests
//!     .add_str(
//!         "demo.yaml",
//!         "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
//!          apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: demo, labels: {app: a}}\n\
//!          spec: {containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}\n\
//!          status: {podIP: 10.0.0.1}\n",
//!     )
//!     .unwrap();
//! let input = strata_k8s::policy::cluster_from_manifests(&manifests).unwrap();
//! assert_eq!(input.cluster.pods().count(), 1);
//! assert!(input.warnings.is_empty());
//! ```
#![deny(missing_docs)]

mod error;
pub mod manifest;
pub mod policy;
pub mod service;

pub use error::Error;
