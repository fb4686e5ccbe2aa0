//! Node-local IP address management.
#![deny(missing_docs)]
