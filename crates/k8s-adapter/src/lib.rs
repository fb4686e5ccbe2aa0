//! Kubernetes objects and manifests translated into Strata SDK inputs.
#![deny(missing_docs)]
