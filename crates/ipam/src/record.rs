//! The durable form of IPAM state: records, and changes made of puts and deletes.
//!
//! The cores ([`crate::Allocator`], [`crate::Reservations`]) plan every mutation as a
//! [`Change`]; a shell writes the change to its [`crate::Store`] first and applies it to the
//! core only once the write is durable, so a failed write leaves the core untouched and a
//! restart replays exactly what was acknowledged.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Owner, StatefulKey};

/// Where a reservation is in use: the pod running with it and its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    /// The node that hosts the pod and routes the address.
    pub node: String,
    /// The pod.
    pub pod: Owner,
}

/// One stored fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// An address held by an owner on this node; `fixed` when it is a StatefulSet
    /// reservation's address rather than one from the node's pools.
    Allocation {
        /// The address.
        addr: IpAddr,
        /// The owner.
        owner: Owner,
        /// The reservation it comes from, if any.
        fixed: Option<StatefulKey>,
    },
    /// A released address waiting before it can be handed out again.
    Quarantine {
        /// The address.
        addr: IpAddr,
        /// When it was released, in milliseconds since the Unix epoch.
        released_at_ms: u64,
        /// Release order, for count-based quarantine.
        seq: u64,
    },
    /// Where a pool's next-free search starts.
    Cursor {
        /// The pool.
        pool: IpNet,
        /// The cursor index inside the pool.
        index: u64,
    },
    /// Where a reservation pool's next-free search starts.
    ReservationCursor {
        /// The reservation pool.
        pool: IpNet,
        /// The cursor index inside the pool.
        index: u64,
    },
    /// A cluster-wide fixed-IP reservation for a StatefulSet pod.
    Reservation {
        /// The key.
        key: StatefulKey,
        /// One address per family.
        addrs: Vec<IpAddr>,
        /// The pod currently running with it, if any.
        bound: Option<Binding>,
    },
}

/// The unique key of a record in a store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKey {
    /// Key of [`Record::Allocation`].
    Allocation(IpAddr),
    /// Key of [`Record::Quarantine`].
    Quarantine(IpAddr),
    /// Key of [`Record::Cursor`].
    Cursor(IpNet),
    /// Key of [`Record::ReservationCursor`].
    ReservationCursor(IpNet),
    /// Key of [`Record::Reservation`].
    Reservation(StatefulKey),
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordKey::Allocation(addr) => write!(f, "alloc/{addr}"),
            RecordKey::Quarantine(addr) => write!(f, "quarantine/{addr}"),
            RecordKey::Cursor(pool) => write!(f, "cursor/{pool}"),
            RecordKey::ReservationCursor(pool) => write!(f, "reservation-cursor/{pool}"),
            RecordKey::Reservation(key) => write!(f, "reservation/{key}"),
        }
    }
}

impl Record {
    /// The record's unique key.
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Allocation { addr, .. } => RecordKey::Allocation(*addr),
            Record::Quarantine { addr, .. } => RecordKey::Quarantine(*addr),
            Record::Cursor { pool, .. } => RecordKey::Cursor(*pool),
            Record::ReservationCursor { pool, .. } => RecordKey::ReservationCursor(*pool),
            Record::Reservation { key, .. } => RecordKey::Reservation(key.clone()),
        }
    }

    /// Whether the record belongs to a node allocator (as opposed to the reservation book).
    pub fn is_node_record(&self) -> bool {
        matches!(
            self,
            Record::Allocation { .. } | Record::Quarantine { .. } | Record::Cursor { .. }
        )
    }
}

/// One step of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert or replace the record under its key.
    Put(Record),
    /// Remove the record with this key.
    Delete(RecordKey),
}

impl Op {
    /// The key the op touches.
    pub fn key(&self) -> RecordKey {
        match self {
            Op::Put(record) => record.key(),
            Op::Delete(key) => key.clone(),
        }
    }
}

/// A planned mutation: ops applied in order, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The ops.
    pub ops: Vec<Op>,
}

impl Change {
    /// Whether the change does nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn with_capacity(ops: usize) -> Change {
        Change {
            ops: Vec::with_capacity(ops),
        }
    }

    pub(crate) fn put(&mut self, record: Record) {
        self.ops.push(Op::Put(record));
    }

    pub(crate) fn delete(&mut self, key: RecordKey) {
        self.ops.push(Op::Delete(key));
    }
}
