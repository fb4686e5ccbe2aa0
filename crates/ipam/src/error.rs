//! The crate's error type.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{Family, Owner, StatefulKey};

/// Everything that can go wrong in IPAM. Every variant names the values involved; an operation
/// that returns an error has changed nothing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Two pools (or two cluster CIDRs) overlap.
    #[error("CIDR {first} overlaps CIDR {second}")]
    Overlap {
        /// The first CIDR.
        first: IpNet,
        /// The CIDR that overlaps it.
        second: IpNet,
    },
    /// A pool has more addresses than a bitmap pool serves.
    #[error(
        "pool {cidr} has {host_bits} host bits; at most {max_host_bits} are supported (use a longer prefix)"
    )]
    PoolTooLarge {
        /// The pool.
        cidr: IpNet,
        /// Its host bits.
        host_bits: u8,
        /// The supported maximum.
        max_host_bits: u8,
    },
    /// An address is in none of the pools it must come from.
    #[error("address {addr} is outside the pools {pools:?}")]
    OutsidePool {
        /// The address.
        addr: IpAddr,
        /// The pools it was checked against.
        pools: Vec<IpNet>,
    },
    /// An address that is never handed out (network, broadcast, subnet-router anycast, or a
    /// configured gateway or router address).
    #[error("address {addr} is not allocatable ({reason})")]
    NotAllocatable {
        /// The address.
        addr: IpAddr,
        /// Why: "network address", "broadcast address", "excluded address" …
        reason: &'static str,
    },
    /// An address already belongs to an owner.
    #[error("address {addr} is already allocated to {owner}")]
    AddressInUse {
        /// The address.
        addr: IpAddr,
        /// Its current owner.
        owner: Owner,
    },
    /// An address was released recently and sits in quarantine.
    #[error("address {addr} is in quarantine since its release")]
    Quarantined {
        /// The address.
        addr: IpAddr,
    },
    /// The owner already holds addresses.
    #[error("owner {owner} already holds {addrs:?}")]
    DuplicateOwner {
        /// The owner.
        owner: Owner,
        /// What it holds.
        addrs: Vec<IpAddr>,
    },
    /// The owner holds nothing.
    #[error("owner {owner} holds no address")]
    UnknownOwner {
        /// The owner.
        owner: Owner,
    },
    /// No address of a family is free (quarantined ones are not free).
    #[error("no free {family} address in {pools:?} ({quarantined} in quarantine)")]
    Exhausted {
        /// The family.
        family: Family,
        /// The pools of that family.
        pools: Vec<IpNet>,
        /// How many addresses of the family wait in quarantine.
        quarantined: usize,
    },
    /// The node has no pool at all.
    #[error("no pool configured")]
    NoPools,
    /// A per-node mask does not fit the cluster CIDR.
    #[error(
        "node mask /{mask} does not fit cluster CIDR {cidr} (it must be at least /{min} and at most /{max})"
    )]
    MaskDoesNotFit {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The node mask size.
        mask: u8,
        /// The smallest mask allowed (the cluster prefix length).
        min: u8,
        /// The largest mask allowed.
        max: u8,
    },
    /// Every node block of a family is taken.
    #[error("cluster CIDRs {cidrs:?} have no free /{mask} block left ({nodes} nodes hold one)")]
    ClusterExhausted {
        /// The cluster CIDRs of the family.
        cidrs: Vec<IpNet>,
        /// The node mask size.
        mask: u8,
        /// How many nodes hold a block.
        nodes: usize,
    },
    /// A family has cluster CIDRs but no node mask, or the reverse.
    #[error("{family} cluster CIDRs need a node mask size")]
    MissingMask {
        /// The family.
        family: Family,
    },
    /// A node already has its CIDRs.
    #[error("node {node} already holds {cidrs:?}")]
    DuplicateNode {
        /// The node.
        node: String,
        /// Its CIDRs.
        cidrs: Vec<IpNet>,
    },
    /// A node holds no CIDR.
    #[error("node {node} holds no CIDR")]
    UnknownNode {
        /// The node.
        node: String,
    },
    /// An owner or key string is malformed.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidName {
        /// "owner" or "StatefulSet key".
        what: &'static str,
        /// The input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A fixed-IP reservation is bound to another running pod.
    #[error("reservation {key} is claimed by {pod} on node {node}")]
    KeyClaimed {
        /// The reservation key.
        key: StatefulKey,
        /// The pod holding it.
        pod: Owner,
        /// The node that pod runs on.
        node: String,
    },
    /// No reservation exists for a key.
    #[error("no reservation for {key}")]
    UnknownReservation {
        /// The key.
        key: StatefulKey,
    },
    /// A reservation cannot be released while a pod runs with it.
    #[error("reservation {key} is still bound to {pod} on node {node}")]
    ReservationBound {
        /// The key.
        key: StatefulKey,
        /// The pod.
        pod: Owner,
        /// The node.
        node: String,
    },
    /// An address is reserved for another StatefulSet key.
    #[error("address {addr} is reserved for {key}")]
    AddressReserved {
        /// The address.
        addr: IpAddr,
        /// The key holding it.
        key: StatefulKey,
    },
    /// Stored state does not fit the configuration or is unreadable.
    #[error("stored record {key:?} is invalid: {reason}")]
    Corrupt {
        /// The record key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The durable store failed; nothing was applied.
    #[error("store: {message}")]
    Store {
        /// What the store reported.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
