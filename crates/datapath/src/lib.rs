//! eBPF datapath programs, map ABI, aya loader and reference twin.
#![deny(missing_docs)]
