//! The node-local allocator: a pure core that plans every mutation as a [`Change`] and applies
//! it only when told to (see [`crate::Ipam`] for the durable shell).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::pool::Pool;
use crate::record::{Change, Op, Record, RecordKey};
use crate::{Error, Family, Owner, Result, StatefulKey};

/// How long a released address waits before it can be handed out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Quarantine {
    /// Released addresses are free at once.
    #[default]
    Off,
    /// The last `n` released addresses are held back; the oldest leaves when another arrives.
    Releases(usize),
    /// A released address is held back for this long (measured with the `now` passed in).
    Duration(Duration),
}

/// A node allocator's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllocatorConfig {
    /// The node's pod CIDRs, IPv4 and IPv6; several per family are used in order.
    pub pools: Vec<IpNet>,
    /// Addresses never handed out (gateway, router …).
    pub excluded: Vec<IpAddr>,
    /// The quarantine of released addresses.
    pub quarantine: Quarantine,
}

/// What an owner holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The owner.
    pub owner: Owner,
    /// One address per family (IPv4 first).
    pub addrs: Vec<IpAddr>,
    /// The StatefulSet reservation the addresses come from, if any.
    pub fixed: Option<StatefulKey>,
}

/// The state of one address as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AddrState {
    /// Inside a pool and free.
    Free,
    /// Held by an owner.
    Allocated {
        /// The owner.
        owner: Owner,
        /// The reservation, for a fixed address.
        fixed: Option<StatefulKey>,
    },
    /// Released and waiting.
    Quarantined {
        /// When it was released, in milliseconds since the Unix epoch.
        released_at_ms: u64,
    },
    /// Never handed out.
    NotAllocatable {
        /// Why.
        reason: String,
    },
    /// In no pool of this node.
    Outside,
}

/// What one owner holds: at most one address per family, without a heap allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Pair {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
}

impl Pair {
    fn slot(&mut self, addr: IpAddr) -> &mut Option<IpAddr> {
        match addr {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        }
    }

    fn has(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.v4.is_some(),
            Family::V6 => self.v6.is_some(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4.into_iter().chain(self.v6)
    }

    fn to_vec(self) -> Vec<IpAddr> {
        self.iter().collect()
    }

    fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    owner: Owner,
    fixed: Option<StatefulKey>,
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn epoch_ms(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The node-local allocator core. Pure: time comes in as `now`, and every `plan_*` method only
/// reads the state and returns a [`Change`]; [`Allocator::apply`] performs it.
///
/// Invariants (checked by [`Allocator::audit`]): an address has at most one owner, an owner
/// holds at most one address per family, and a pool's bitmap marks exactly its unusable,
/// allocated and quarantined addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocator {
    config: AllocatorConfig,
    pools: Vec<Pool>,
    by_owner: HashMap<Owner, Pair>,
    by_addr: HashMap<IpAddr, Held>,
    /// Quarantined addresses by release order.
    quarantine: BTreeMap<u64, (IpAddr, u64)>,
    quarantined: HashMap<IpAddr, u64>,
}

impl Allocator {
    /// An empty allocator. Fails on overlapping or oversized pools.
    pub fn new(config: AllocatorConfig) -> Result<Allocator> {
        if config.pools.is_empty() {
            return Err(Error::NoPools);
        }
        let mut pools: Vec<Pool> = Vec::with_capacity(config.pools.len());
        for &cidr in &config.pools {
            let cidr = cidr.trunc();
            if let Some(other) = pools
                .iter()
                .find(|p| p.cidr().contains(&cidr) || cidr.contains(&p.cidr()))
            {
                return Err(Error::Overlap {
                    first: other.cidr(),
                    second: cidr,
                });
            }
            pools.push(Pool::new(cidr, &config.excluded)?);
        }
        Ok(Allocator {
            config,
            pools,
            by_owner: HashMap::default(),
            by_addr: HashMap::default(),
            quarantine: BTreeMap::new(),
            quarantined: HashMap::default(),
        })
    }

    /// Rebuilds an allocator from stored records (records of other kinds are ignored). Fails
    /// with [`Error::Corrupt`] when a record contradicts the configuration or another record.
    pub fn restore(config: AllocatorConfig, records: &[Record]) -> Result<Allocator> {
        let mut allocator = Allocator::new(config)?;
        let corrupt = |record: &Record, reason: String| Error::Corrupt {
            key: record.key().to_string(),
            reason,
        };
        for record in records.iter().filter(|r| r.is_node_record()) {
            match record {
                Record::Allocation { addr, owner, fixed } => {
                    if let Some(held) = allocator.by_owner.get(owner)
                        && held.has(Family::of(*addr))
                    {
                        let held = held.to_vec();
                        return Err(corrupt(record, format!("{owner} already holds {held:?}")));
                    }
                    match allocator.pool_index(*addr) {
                        Some((p, index)) => {
                            if let Some(why) = allocator.pools[p].unusable(index) {
                                return Err(corrupt(record, why.describe().to_owned()));
                            }
                            if fixed.is_none() && allocator.pools[p].is_taken(index) {
                                return Err(corrupt(record, "address taken twice".to_owned()));
                            }
                        }
                        None if fixed.is_none() => {
                            return Err(corrupt(
                                record,
                                format!("outside the pools {:?}", allocator.config.pools),
                            ));
                        }
                        None => {}
                    }
                }
                Record::Quarantine { addr, .. } => match allocator.pool_index(*addr) {
                    Some((p, index)) if !allocator.pools[p].is_taken(index) => {}
                    _ => return Err(corrupt(record, "not a free pool address".to_owned())),
                },
                Record::Cursor { pool, index } => {
                    match allocator.pools.iter().find(|p| p.cidr() == *pool) {
                        Some(p) if *index < p.size() => {}
                        _ => return Err(corrupt(record, "no such pool or index".to_owned())),
                    }
                }
                _ => {}
            }
            let mut change = Change::default();
            change.put(record.clone());
            allocator.apply(&change);
        }
        Ok(allocator)
    }

    /// The configuration.
    pub fn config(&self) -> &AllocatorConfig {
        &self.config
    }

    /// The pools.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    fn pool_index(&self, addr: IpAddr) -> Option<(usize, u64)> {
        self.pools
            .iter()
            .enumerate()
            .find_map(|(p, pool)| pool.index_of(addr).map(|i| (p, i)))
    }

    fn families(&self) -> impl Iterator<Item = Family> + '_ {
        [Family::V4, Family::V6].into_iter().filter(|f| {
            self.pools
                .iter()
                .any(|p| Family::of(p.cidr().network()) == *f)
        })
    }

    fn duplicate_owner(&self, owner: &Owner) -> Result<()> {
        match self.by_owner.get(owner) {
            Some(addrs) => Err(Error::DuplicateOwner {
                owner: owner.clone(),
                addrs: addrs.to_vec(),
            }),
            None => Ok(()),
        }
    }

    /// Plans the next free address of every family the node has for `owner` (dual-stack: one
    /// per family). Quarantined addresses are not free; call [`Allocator::plan_expire`] first to
    /// let expired ones go.
    pub fn plan_allocate(&self, owner: &Owner) -> Result<(Change, Allocation)> {
        self.duplicate_owner(owner)?;
        let mut change = Change::with_capacity(4);
        let mut addrs = Vec::new();
        for family in self.families() {
            let mut found = None;
            for pool in self
                .pools
                .iter()
                .filter(|p| Family::of(p.cidr().network()) == family)
            {
                if let Some(index) = pool.next_free() {
                    found = Some((pool, index));
                    break;
                }
            }
            let Some((pool, index)) = found else {
                return Err(Error::Exhausted {
                    family,
                    pools: self
                        .pools
                        .iter()
                        .map(Pool::cidr)
                        .filter(|c| Family::of(c.network()) == family)
                        .collect(),
                    quarantined: self
                        .quarantined
                        .keys()
                        .filter(|a| Family::of(**a) == family)
                        .count(),
                });
            };
            let addr = pool.addr_at(index);
            addrs.push(addr);
            change.put(Record::Allocation {
                addr,
                owner: owner.clone(),
                fixed: None,
            });
            change.put(Record::Cursor {
                pool: pool.cidr(),
                index: (index + 1) % pool.size(),
            });
        }
        Ok((
            change,
            Allocation {
                owner: owner.clone(),
                addrs,
                fixed: None,
            },
        ))
    }

    /// Plans giving exactly `addr` (one family) to `owner`.
    pub fn plan_allocate_addr(&self, owner: &Owner, addr: IpAddr) -> Result<(Change, Allocation)> {
        self.duplicate_owner(owner)?;
        let (p, index) = self.pool_index(addr).ok_or_else(|| Error::OutsidePool {
            addr,
            pools: self.config.pools.clone(),
        })?;
        self.check_free(p, index, addr)?;
        let mut change = Change::default();
        change.put(Record::Allocation {
            addr,
            owner: owner.clone(),
            fixed: None,
        });
        Ok((
            change,
            Allocation {
                owner: owner.clone(),
                addrs: vec![addr],
                fixed: None,
            },
        ))
    }

    fn check_free(&self, p: usize, index: u64, addr: IpAddr) -> Result<()> {
        if let Some(why) = self.pools[p].unusable(index) {
            return Err(Error::NotAllocatable {
                addr,
                reason: why.describe(),
            });
        }
        if let Some(held) = self.by_addr.get(&addr) {
            return Err(Error::AddressInUse {
                addr,
                owner: held.owner.clone(),
            });
        }
        if self.quarantined.contains_key(&addr) {
            return Err(Error::Quarantined { addr });
        }
        Ok(())
    }

    /// Plans giving a StatefulSet reservation's addresses to `owner` on this node. The
    /// addresses normally lie outside the node's pools (they come from the cluster-wide
    /// reservation pool); one that lies inside must be free.
    pub fn plan_allocate_fixed(
        &self,
        owner: &Owner,
        key: &StatefulKey,
        addrs: &[IpAddr],
    ) -> Result<(Change, Allocation)> {
        self.duplicate_owner(owner)?;
        let mut change = Change::default();
        for (i, &addr) in addrs.iter().enumerate() {
            if addrs[..i]
                .iter()
                .any(|a| Family::of(*a) == Family::of(addr))
            {
                return Err(Error::DuplicateOwner {
                    owner: owner.clone(),
                    addrs: addrs.to_vec(),
                });
            }
            if let Some(held) = self.by_addr.get(&addr) {
                return Err(Error::AddressInUse {
                    addr,
                    owner: held.owner.clone(),
                });
            }
            if let Some((p, index)) = self.pool_index(addr) {
                self.check_free(p, index, addr)?;
            }
            change.put(Record::Allocation {
                addr,
                owner: owner.clone(),
                fixed: Some(key.clone()),
            });
        }
        Ok((
            change,
            Allocation {
                owner: owner.clone(),
                addrs: addrs.to_vec(),
                fixed: Some(key.clone()),
            },
        ))
    }

    /// Plans releasing everything `owner` holds. Pool addresses go to quarantine when it is on;
    /// fixed addresses simply leave the node (their reservation keeps them).
    pub fn plan_release(&self, now: SystemTime, owner: &Owner) -> Result<(Change, Allocation)> {
        let addrs = self
            .by_owner
            .get(owner)
            .ok_or_else(|| Error::UnknownOwner {
                owner: owner.clone(),
            })?;
        let released_at_ms = epoch_ms(now);
        let mut change = Change::with_capacity(4);
        let mut seq = self.next_seq();
        let mut fixed = None;
        let mut entering = 0usize;
        for addr in addrs.iter() {
            change.delete(RecordKey::Allocation(addr));
            let held = &self.by_addr[&addr];
            fixed = held.fixed.clone();
            let quarantine = match self.config.quarantine {
                Quarantine::Off | Quarantine::Releases(0) => false,
                Quarantine::Releases(_) | Quarantine::Duration(_) => true,
            };
            if held.fixed.is_none() && quarantine && self.pool_index(addr).is_some() {
                change.put(Record::Quarantine {
                    addr,
                    released_at_ms,
                    seq,
                });
                seq += 1;
                entering += 1;
            }
        }
        if let Quarantine::Releases(limit) = self.config.quarantine {
            let excess = (self.quarantine.len() + entering).saturating_sub(limit);
            for (_, (addr, _)) in self.quarantine.iter().take(excess) {
                change.delete(RecordKey::Quarantine(*addr));
            }
        }
        Ok((
            change,
            Allocation {
                owner: owner.clone(),
                addrs: addrs.to_vec(),
                fixed,
            },
        ))
    }

    /// Plans letting go of quarantined addresses that the configuration no longer holds back:
    /// those whose time is up (time-based), the oldest beyond the count (count-based, after the
    /// count was lowered), or all of them (quarantine off).
    pub fn plan_expire(&self, now: SystemTime) -> Change {
        let mut change = Change::default();
        let expired: Vec<IpAddr> = match self.config.quarantine {
            Quarantine::Off => self.quarantine.values().map(|(a, _)| *a).collect(),
            Quarantine::Releases(limit) => {
                let excess = self.quarantine.len().saturating_sub(limit);
                self.quarantine
                    .values()
                    .take(excess)
                    .map(|(a, _)| *a)
                    .collect()
            }
            Quarantine::Duration(hold) => {
                let now_ms = epoch_ms(now);
                let hold_ms = hold.as_millis() as u64;
                self.quarantine
                    .values()
                    .filter(|(_, at)| at.saturating_add(hold_ms) <= now_ms)
                    .map(|(a, _)| *a)
                    .collect()
            }
        };
        for addr in expired {
            change.delete(RecordKey::Quarantine(addr));
        }
        change
    }

    fn next_seq(&self) -> u64 {
        self.quarantine
            .last_key_value()
            .map_or(0, |(seq, _)| seq + 1)
    }

    /// Applies a change planned by this allocator (or read back from its store).
    pub fn apply(&mut self, change: &Change) {
        for op in &change.ops {
            match op {
                Op::Put(Record::Allocation { addr, owner, fixed }) => {
                    if let Some((p, index)) = self.pool_index(*addr) {
                        self.pools[p].set(index);
                    }
                    *self.by_owner.entry(owner.clone()).or_default().slot(*addr) = Some(*addr);
                    self.by_addr.insert(
                        *addr,
                        Held {
                            owner: owner.clone(),
                            fixed: fixed.clone(),
                        },
                    );
                }
                Op::Put(Record::Quarantine {
                    addr,
                    released_at_ms,
                    seq,
                }) => {
                    if let Some((p, index)) = self.pool_index(*addr) {
                        self.pools[p].set(index);
                    }
                    self.quarantine.insert(*seq, (*addr, *released_at_ms));
                    self.quarantined.insert(*addr, *seq);
                }
                Op::Put(Record::Cursor { pool, index }) => {
                    if let Some(p) = self.pools.iter_mut().find(|p| p.cidr() == *pool) {
                        p.set_cursor(*index);
                    }
                }
                Op::Delete(RecordKey::Allocation(addr)) => {
                    if let Some(held) = self.by_addr.remove(addr) {
                        if let Some(addrs) = self.by_owner.get_mut(&held.owner) {
                            addrs.slot(*addr).take();
                            if addrs.is_empty() {
                                self.by_owner.remove(&held.owner);
                            }
                        }
                        if let Some((p, index)) = self.pool_index(*addr) {
                            self.pools[p].clear(index);
                        }
                    }
                }
                Op::Delete(RecordKey::Quarantine(addr)) => {
                    if let Some(seq) = self.quarantined.remove(addr) {
                        self.quarantine.remove(&seq);
                        if let Some((p, index)) = self.pool_index(*addr)
                            && !self.by_addr.contains_key(addr)
                        {
                            self.pools[p].clear(index);
                        }
                    }
                }
                Op::Put(_) | Op::Delete(_) => {}
            }
        }
    }

    /// What `owner` holds.
    pub fn get(&self, owner: &Owner) -> Option<Allocation> {
        self.by_owner.get(owner).map(|addrs| Allocation {
            owner: owner.clone(),
            addrs: addrs.to_vec(),
            fixed: addrs
                .iter()
                .next()
                .and_then(|a| self.by_addr.get(&a))
                .and_then(|h| h.fixed.clone()),
        })
    }

    /// Who holds `addr`.
    pub fn owner_of(&self, addr: IpAddr) -> Option<&Owner> {
        self.by_addr.get(&addr).map(|h| &h.owner)
    }

    /// The state of `addr`.
    pub fn state(&self, addr: IpAddr) -> AddrState {
        if let Some(held) = self.by_addr.get(&addr) {
            return AddrState::Allocated {
                owner: held.owner.clone(),
                fixed: held.fixed.clone(),
            };
        }
        if let Some(seq) = self.quarantined.get(&addr) {
            return AddrState::Quarantined {
                released_at_ms: self.quarantine[seq].1,
            };
        }
        match self.pool_index(addr) {
            None => AddrState::Outside,
            Some((p, index)) => match self.pools[p].unusable(index) {
                Some(why) => AddrState::NotAllocatable {
                    reason: why.describe().to_owned(),
                },
                None => AddrState::Free,
            },
        }
    }

    /// Every allocation, ordered by owner.
    pub fn dump(&self) -> Vec<Allocation> {
        let mut owners: Vec<&Owner> = self.by_owner.keys().collect();
        owners.sort();
        owners.into_iter().filter_map(|o| self.get(o)).collect()
    }

    /// Quarantined addresses with their release time (ms since the epoch), oldest first.
    pub fn quarantined(&self) -> Vec<(IpAddr, u64)> {
        self.quarantine.values().copied().collect()
    }

    /// Host routes (/32, /128) for the fixed addresses this node hosts, for announcement.
    pub fn host_routes(&self) -> Vec<IpNet> {
        let mut routes: Vec<IpNet> = self
            .by_addr
            .iter()
            .filter(|(_, h)| h.fixed.is_some())
            .map(|(a, _)| IpNet::from(*a))
            .collect();
        routes.sort();
        routes
    }

    /// The whole state as records, sorted by key: what a store holds for this allocator.
    pub fn records(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self
            .by_addr
            .iter()
            .map(|(addr, h)| Record::Allocation {
                addr: *addr,
                owner: h.owner.clone(),
                fixed: h.fixed.clone(),
            })
            .chain(
                self.quarantine
                    .iter()
                    .map(|(seq, (addr, at))| Record::Quarantine {
                        addr: *addr,
                        released_at_ms: *at,
                        seq: *seq,
                    }),
            )
            .chain(self.pools.iter().map(|p| Record::Cursor {
                pool: p.cidr(),
                index: p.cursor(),
            }))
            .collect();
        records.sort_by_key(|r| r.key().to_string());
        records
    }

    /// Checks the invariants; returns a description of the first violation.
    pub fn audit(&self) -> std::result::Result<(), String> {
        for (addr, held) in &self.by_addr {
            if !self
                .by_owner
                .get(&held.owner)
                .is_some_and(|a| a.iter().any(|x| x == *addr))
            {
                return Err(format!(
                    "{addr} points to {} which does not hold it",
                    held.owner
                ));
            }
            if self.quarantined.contains_key(addr) {
                return Err(format!("{addr} is allocated and quarantined"));
            }
        }
        for (owner, addrs) in &self.by_owner {
            let misplaced =
                addrs.v4.is_some_and(|a| a.is_ipv6()) || addrs.v6.is_some_and(|a| a.is_ipv4());
            if misplaced || addrs.is_empty() {
                return Err(format!("{owner} holds {:?}", addrs.to_vec()));
            }
            for addr in addrs.iter() {
                if self.by_addr.get(&addr).map(|h| &h.owner) != Some(owner) {
                    return Err(format!("{owner} holds {addr} owned by someone else"));
                }
            }
        }
        for pool in &self.pools {
            let mut expected = 0u64;
            for index in 0..pool.size() {
                let addr = pool.addr_at(index);
                let should = pool.unusable(index).is_some()
                    || self.by_addr.contains_key(&addr)
                    || self.quarantined.contains_key(&addr);
                if should != pool.is_taken(index) {
                    return Err(format!("bitmap of {} wrong at {addr}", pool.cidr()));
                }
                expected += u64::from(should);
            }
            if pool.size() - pool.free() != expected {
                return Err(format!("count of {} wrong", pool.cidr()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(s: &str) -> Owner {
        Owner::new(s).unwrap()
    }

    fn alloc(config: AllocatorConfig) -> Allocator {
        Allocator::new(config).unwrap()
    }

    fn run(
        a: &mut Allocator,
        plan: impl FnOnce(&Allocator) -> Result<(Change, Allocation)>,
    ) -> Allocation {
        let (change, allocation) = plan(a).unwrap();
        a.apply(&change);
        allocation
    }

    fn config(pools: &[&str]) -> AllocatorConfig {
        AllocatorConfig {
            pools: pools.iter().map(|p| p.parse().unwrap()).collect(),
            excluded: vec!["10.0.0.1".parse().unwrap()],
            quarantine: Quarantine::Off,
        }
    }

    #[test]
    fn dual_stack_allocation_yields_one_address_per_family() {
        let mut a = alloc(config(&["10.0.0.0/24", "fd00::/120"]));
        let got = run(&mut a, |a| a.plan_allocate(&owner("default/a")));
        assert_eq!(
            got.addrs,
            [
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!(
            a.owner_of("fd00::1".parse().unwrap()),
            Some(&owner("default/a"))
        );
        a.audit().unwrap();
    }

    #[test]
    fn errors_leave_state_unchanged() {
        let mut a = alloc(config(&["10.0.0.0/30"]));
        run(&mut a, |a| a.plan_allocate(&owner("default/a")));
        let before = a.clone();
        let b = owner("default/b");
        assert!(matches!(
            a.plan_allocate(&owner("default/a")),
            Err(Error::DuplicateOwner { .. })
        ));
        assert!(matches!(
            a.plan_allocate(&b),
            Err(Error::Exhausted {
                family: Family::V4,
                ..
            })
        ));
        assert!(matches!(
            a.plan_allocate_addr(&b, "10.0.0.3".parse().unwrap()),
            Err(Error::NotAllocatable {
                reason: "broadcast address",
                ..
            })
        ));
        assert!(matches!(
            a.plan_allocate_addr(&b, "10.0.0.1".parse().unwrap()),
            Err(Error::NotAllocatable {
                reason: "excluded address",
                ..
            })
        ));
        assert!(matches!(
            a.plan_allocate_addr(&b, "10.0.0.2".parse().unwrap()),
            Err(Error::AddressInUse { .. })
        ));
        assert!(matches!(
            a.plan_allocate_addr(&b, "10.9.0.2".parse().unwrap()),
            Err(Error::OutsidePool { .. })
        ));
        assert!(matches!(
            a.plan_release(SystemTime::UNIX_EPOCH, &b),
            Err(Error::UnknownOwner { .. })
        ));
        assert_eq!(a, before);
    }

    #[test]
    fn overlapping_pools_are_rejected() {
        assert!(matches!(
            Allocator::new(config(&["10.0.0.0/16", "10.0.1.0/24"])),
            Err(Error::Overlap { .. })
        ));
    }

    #[test]
    fn count_quarantine_holds_the_last_releases() {
        let mut cfg = config(&["10.0.0.0/29"]);
        cfg.quarantine = Quarantine::Releases(2);
        let mut a = alloc(cfg);
        let t = SystemTime::UNIX_EPOCH;
        let names: Vec<Owner> = (0..5).map(|i| owner(&format!("ns/p{i}"))).collect();
        for n in &names {
            run(&mut a, |a| a.plan_allocate(n));
        }
        // Pool full (5 usable). Release three: only the oldest of them comes free.
        for n in &names[..3] {
            run(&mut a, |a| a.plan_release(t, n));
        }
        assert_eq!(a.quarantined().len(), 2);
        let got = run(&mut a, |a| a.plan_allocate(&owner("ns/new")));
        assert_eq!(got.addrs[0].to_string(), "10.0.0.2");
        assert!(matches!(
            a.plan_allocate(&owner("ns/other")),
            Err(Error::Exhausted { quarantined: 2, .. })
        ));
        a.audit().unwrap();
    }

    #[test]
    fn time_quarantine_expires_with_now() {
        let mut cfg = config(&["10.0.0.0/30"]);
        cfg.quarantine = Quarantine::Duration(Duration::from_secs(30));
        let mut a = alloc(cfg);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        run(&mut a, |a| a.plan_allocate(&owner("ns/a")));
        run(&mut a, |a| a.plan_release(t0, &owner("ns/a")));
        assert!(matches!(
            a.plan_allocate_addr(&owner("ns/b"), "10.0.0.2".parse().unwrap()),
            Err(Error::Quarantined { .. })
        ));
        assert!(a.plan_expire(t0 + Duration::from_secs(29)).is_empty());
        let change = a.plan_expire(t0 + Duration::from_secs(30));
        a.apply(&change);
        assert_eq!(
            run(&mut a, |a| a.plan_allocate(&owner("ns/b"))).addrs[0].to_string(),
            "10.0.0.2"
        );
        a.audit().unwrap();
    }

    #[test]
    fn restore_rebuilds_the_same_state_and_rejects_contradictions() {
        let mut cfg = config(&["10.0.0.0/24", "fd00::/120"]);
        cfg.quarantine = Quarantine::Releases(3);
        let mut a = alloc(cfg.clone());
        for i in 0..10 {
            run(&mut a, |a| a.plan_allocate(&owner(&format!("ns/p{i}"))));
        }
        for i in 0..4 {
            run(&mut a, |a| {
                a.plan_release(SystemTime::UNIX_EPOCH, &owner(&format!("ns/p{i}")))
            });
        }
        let key = StatefulKey::new("ns/db/0").unwrap();
        run(&mut a, |a| {
            a.plan_allocate_fixed(&owner("ns/db-0"), &key, &["10.99.0.7".parse().unwrap()])
        });
        let restored = Allocator::restore(cfg.clone(), &a.records()).unwrap();
        assert_eq!(restored, a);
        assert_eq!(
            restored.host_routes(),
            vec!["10.99.0.7/32".parse::<IpNet>().unwrap()]
        );

        let bad = vec![Record::Allocation {
            addr: "10.1.0.1".parse().unwrap(),
            owner: owner("ns/x"),
            fixed: None,
        }];
        assert!(matches!(
            Allocator::restore(cfg, &bad),
            Err(Error::Corrupt { .. })
        ));
    }
}
