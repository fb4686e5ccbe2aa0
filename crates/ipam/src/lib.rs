//! Node-local IP address management for Strata.
//!
//! No central service sits on the pod-creation path: an operator carves one pod CIDR per
//! family out of the cluster CIDRs for every node ([`ClusterPool`]), and each node hands out
//! addresses from its own CIDRs ([`Allocator`]), dual-stack, with a quarantine for released
//! addresses. StatefulSet pods keep fixed addresses across deletion and rescheduling on any
//! node through a cluster-wide reservation book ([`Reservations`]). State is durable: the
//! [`Ipam`] and [`FixedIps`] shells write every change to a [`Store`] (in memory, or
//! [`RedbStore`] on disk) before applying it, and a restart restores it exactly.
//!
//! The cores are pure (sans-I/O): time is passed in as `now`, and each mutation is planned as
//! a [`Change`] of [`Record`]s that a shell commits and then applies.
//!
//! ```
//! use std::time::SystemTime;
//! use strata_ipam::{AllocatorConfig, ClusterPool, FamilyPlan, Ipam, MemoryStore, Owner};
//!
//! let mut cluster = ClusterPool::new(
//!     Some(FamilyPlan { cidrs: vec!["10.0.0.0/16".parse()?], node_mask: 24 }),
//!     None,
//! )?;
//! let cidrs = cluster.allocate_node("node-0")?;
//! let config = AllocatorConfig { pools: cidrs, ..Default::default() };
//! let mut node = Ipam::open(config, MemoryStore::new())?;
//! let pod = node.allocate(SystemTime::UNIX_EPOCH, &Owner::new("default/web-1")?)?;
//! assert_eq!(pod.addrs[0].to_string(), "10.0.0.1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod allocator;
mod carve;
mod error;
mod owner;
pub mod pool;
pub mod record;
mod reservation;
mod shell;
mod store;

pub use allocator::{AddrState, Allocation, Allocator, AllocatorConfig, Quarantine, epoch_ms};
pub use carve::{ClusterPool, FamilyPlan};
pub use error::{Error, Result};
pub use owner::{Family, Owner, StatefulKey};
pub use record::{Binding, Change, Op, Record, RecordKey};
pub use reservation::{Reservation, Reservations};
pub use shell::{FixedIps, Ipam, start_stateful_pod, stop_stateful_pod};
pub use store::{MemoryStore, RedbStore, Store};
