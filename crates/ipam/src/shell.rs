//! Durable shells: a core plus a [`Store`]. Every mutation is planned by the core, committed to
//! the store, and applied to the core only once the commit succeeded, so an error (bad input or
//! a failed write) leaves both untouched, and a restart restores exactly what was acknowledged.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::record::{Change, Record};
use crate::reservation::{Reservation, Reservations};
use crate::store::Store;
use crate::{Allocation, Allocator, AllocatorConfig, Owner, Result, StatefulKey};

/// A node's allocator with durable state.
///
/// ```
/// use std::time::SystemTime;
/// use strata_ipam::{AllocatorConfig, Ipam, MemoryStore, Owner};
/// let config = AllocatorConfig { pools: vec!["10.0.1.0/24".parse()?], ..Default::default() };
/// let store = MemoryStore::new();
/// let mut ipam = Ipam::open(config.clone(), store.clone())?;
/// let pod = Owner::new("default/web-1")?;
/// let got = ipam.allocate(SystemTime::UNIX_EPOCH, &pod)?;
/// drop(ipam); // a restart
/// let ipam = Ipam::open(config, store)?;
/// assert_eq!(ipam.allocator().get(&pod), Some(got));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Ipam<S: Store> {
    core: Allocator,
    store: S,
}

impl<S: Store> Ipam<S> {
    /// Opens the allocator, restoring every allocation, quarantine entry and cursor from the
    /// store.
    pub fn open(config: AllocatorConfig, store: S) -> Result<Ipam<S>> {
        let records = store.load()?;
        let core = Allocator::restore(config, &records)?;
        Ok(Ipam { core, store })
    }

    /// The core, for look-ups.
    pub fn allocator(&self) -> &Allocator {
        &self.core
    }

    fn commit(&mut self, change: Change) -> Result<()> {
        self.store.commit(&change.ops)?;
        self.core.apply(&change);
        Ok(())
    }

    fn expire(&mut self, now: SystemTime) -> Result<()> {
        let change = self.core.plan_expire(now);
        if !change.is_empty() {
            self.commit(change)?;
        }
        Ok(())
    }

    /// Allocates the next free address of each family for `owner`.
    pub fn allocate(&mut self, now: SystemTime, owner: &Owner) -> Result<Allocation> {
        self.expire(now)?;
        let (change, allocation) = self.core.plan_allocate(owner)?;
        self.commit(change)?;
        Ok(allocation)
    }

    /// Allocates exactly `addr` for `owner`.
    pub fn allocate_addr(
        &mut self,
        now: SystemTime,
        owner: &Owner,
        addr: IpAddr,
    ) -> Result<Allocation> {
        self.expire(now)?;
        let (change, allocation) = self.core.plan_allocate_addr(owner, addr)?;
        self.commit(change)?;
        Ok(allocation)
    }

    /// Gives a reservation's addresses to `owner` on this node.
    pub fn allocate_fixed(
        &mut self,
        owner: &Owner,
        key: &StatefulKey,
        addrs: &[IpAddr],
    ) -> Result<Allocation> {
        let (change, allocation) = self.core.plan_allocate_fixed(owner, key, addrs)?;
        self.commit(change)?;
        Ok(allocation)
    }

    /// Releases what `owner` holds.
    pub fn release(&mut self, now: SystemTime, owner: &Owner) -> Result<Allocation> {
        self.expire(now)?;
        let (change, allocation) = self.core.plan_release(now, owner)?;
        self.commit(change)?;
        Ok(allocation)
    }
}

/// The cluster-wide reservation book with durable state.
#[derive(Debug)]
pub struct FixedIps<S: Store> {
    core: Reservations,
    store: S,
}

impl<S: Store> FixedIps<S> {
    /// Opens the book over `pools`, restoring every reservation from the store.
    pub fn open(pools: &[IpNet], store: S) -> Result<FixedIps<S>> {
        let records: Vec<Record> = store.load()?;
        let core = Reservations::restore(pools, &records)?;
        Ok(FixedIps { core, store })
    }

    /// The core, for look-ups.
    pub fn reservations(&self) -> &Reservations {
        &self.core
    }

    fn commit(&mut self, change: Change) -> Result<()> {
        if !change.is_empty() {
            self.store.commit(&change.ops)?;
            self.core.apply(&change);
        }
        Ok(())
    }

    /// Reserves addresses for `key` (idempotent).
    pub fn reserve(&mut self, key: &StatefulKey, requested: Option<IpAddr>) -> Result<Reservation> {
        let (change, r) = self.core.plan_reserve(key, requested)?;
        self.commit(change)?;
        Ok(r)
    }

    /// Binds `key` to `pod` on `node`.
    pub fn bind(&mut self, key: &StatefulKey, node: &str, pod: &Owner) -> Result<Reservation> {
        let (change, r) = self.core.plan_bind(key, node, pod)?;
        self.commit(change)?;
        Ok(r)
    }

    /// Unbinds `key` from `pod`.
    pub fn unbind(&mut self, key: &StatefulKey, pod: &Owner) -> Result<()> {
        let change = self.core.plan_unbind(key, pod)?;
        self.commit(change)
    }

    /// Releases one unbound reservation.
    pub fn release(&mut self, key: &StatefulKey) -> Result<Reservation> {
        let (change, r) = self.core.plan_release(key)?;
        self.commit(change)?;
        Ok(r)
    }

    /// Releases the reservations at or above `replicas` of a StatefulSet.
    pub fn scale_down(
        &mut self,
        namespace: &str,
        statefulset: &str,
        replicas: u32,
    ) -> Result<Vec<Reservation>> {
        let (change, released) = self
            .core
            .plan_scale_down(namespace, statefulset, replicas)?;
        self.commit(change)?;
        Ok(released)
    }
}

/// Starts a StatefulSet pod on a node with its fixed address: reserve (if new), bind to the
/// pod and node, then hold the addresses on the node. Starting a pod that already runs there
/// returns its allocation. When the node refuses, a binding made by this call is undone, so
/// the key stays free for another attempt.
pub fn start_stateful_pod<R: Store, N: Store>(
    book: &mut FixedIps<R>,
    node_name: &str,
    node: &mut Ipam<N>,
    key: &StatefulKey,
) -> Result<Allocation> {
    let pod = key.pod();
    let reservation = book.reserve(key, None)?;
    let was_bound = reservation.bound.is_some();
    book.bind(key, node_name, &pod)?;
    if let Some(held) = node.allocator().get(&pod)
        && held.fixed.as_ref() == Some(key)
        && held.addrs == reservation.addrs
    {
        return Ok(held);
    }
    match node.allocate_fixed(&pod, key, &reservation.addrs) {
        Ok(allocation) => Ok(allocation),
        Err(err) => {
            if !was_bound {
                book.unbind(key, &pod)?;
            }
            Err(err)
        }
    }
}

/// Stops a StatefulSet pod: the node lets the addresses go and the reservation is unbound, ready
/// for the pod's next incarnation on any node.
pub fn stop_stateful_pod<R: Store, N: Store>(
    book: &mut FixedIps<R>,
    node: &mut Ipam<N>,
    now: SystemTime,
    key: &StatefulKey,
) -> Result<()> {
    let pod = key.pod();
    node.release(now, &pod)?;
    book.unbind(key, &pod)
}
