//! Fixed IPs for StatefulSets without a sticky scheduler: a cluster-wide book of reservations
//! keyed by `namespace/statefulset/ordinal`, drawn from a pool of their own.
//!
//! A reservation lives until the StatefulSet is deleted or scaled below its ordinal. While its
//! pod runs, the reservation is *bound* to that pod and node; the node then holds the address
//! (see [`crate::Allocator::plan_allocate_fixed`]) and routes it as a host route.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::pool::Pool;
use crate::record::{Binding, Change, Op, Record, RecordKey};
use crate::{Error, Family, Owner, Result, StatefulKey};

/// One reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Its key.
    pub key: StatefulKey,
    /// One address per family of the reservation pools.
    pub addrs: Vec<IpAddr>,
    /// The pod running with it, if any.
    pub bound: Option<Binding>,
}

/// The cluster-wide reservation book. Pure, like [`crate::Allocator`]: `plan_*` methods return
/// a [`Change`] and [`Reservations::apply`] performs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservations {
    pools: Vec<Pool>,
    by_key: BTreeMap<StatefulKey, Reservation>,
    by_addr: HashMap<IpAddr, StatefulKey>,
}

impl Reservations {
    /// An empty book over the reservation pools (not overlapping any node pool).
    pub fn new(pools: &[IpNet]) -> Result<Reservations> {
        if pools.is_empty() {
            return Err(Error::NoPools);
        }
        let mut built: Vec<Pool> = Vec::new();
        for &cidr in pools {
            let cidr = cidr.trunc();
            if let Some(other) = built
                .iter()
                .find(|p| p.cidr().contains(&cidr) || cidr.contains(&p.cidr()))
            {
                return Err(Error::Overlap {
                    first: other.cidr(),
                    second: cidr,
                });
            }
            built.push(Pool::new(cidr, &[])?);
        }
        Ok(Reservations {
            pools: built,
            by_key: BTreeMap::new(),
            by_addr: HashMap::new(),
        })
    }

    /// Rebuilds the book from stored records (others are ignored).
    pub fn restore(pools: &[IpNet], records: &[Record]) -> Result<Reservations> {
        let mut book = Reservations::new(pools)?;
        for record in records {
            match record {
                Record::Reservation { key, addrs, .. } => {
                    for &addr in addrs {
                        let ok = book
                            .pool_index(addr)
                            .is_some_and(|(p, i)| !book.pools[p].is_taken(i));
                        if !ok {
                            return Err(Error::Corrupt {
                                key: record.key().to_string(),
                                reason: format!(
                                    "{addr} ({key}) is taken twice or outside the reservation pools"
                                ),
                            });
                        }
                    }
                }
                Record::ReservationCursor { pool, .. } => {
                    if !book.pools.iter().any(|p| p.cidr() == *pool) {
                        return Err(Error::Corrupt {
                            key: record.key().to_string(),
                            reason: "no such reservation pool".to_owned(),
                        });
                    }
                }
                _ => continue,
            }
            book.apply(&Change {
                ops: vec![Op::Put(record.clone())],
            });
        }
        Ok(book)
    }

    fn pool_index(&self, addr: IpAddr) -> Option<(usize, u64)> {
        self.pools
            .iter()
            .enumerate()
            .find_map(|(p, pool)| pool.index_of(addr).map(|i| (p, i)))
    }

    /// A reservation.
    pub fn get(&self, key: &StatefulKey) -> Option<&Reservation> {
        self.by_key.get(key)
    }

    /// Every reservation, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Reservation> {
        self.by_key.values()
    }

    /// Plans reserving addresses for `key`, one per family, `requested` for its family when
    /// given. Reserving an existing key returns it unchanged (an empty change), unless
    /// `requested` contradicts it.
    pub fn plan_reserve(
        &self,
        key: &StatefulKey,
        requested: Option<IpAddr>,
    ) -> Result<(Change, Reservation)> {
        if let Some(existing) = self.by_key.get(key) {
            if let Some(addr) = requested
                && !existing.addrs.contains(&addr)
            {
                return Err(Error::DuplicateOwner {
                    owner: key.pod(),
                    addrs: existing.addrs.clone(),
                });
            }
            return Ok((Change::default(), existing.clone()));
        }
        let mut families: Vec<Family> = self
            .pools
            .iter()
            .map(|p| Family::of(p.cidr().network()))
            .collect();
        families.sort();
        families.dedup();
        let mut change = Change::default();
        let mut addrs = Vec::new();
        for family in families {
            let wanted = requested.filter(|a| Family::of(*a) == family);
            let addr = match wanted {
                Some(addr) => {
                    let (p, index) = self.pool_index(addr).ok_or_else(|| Error::OutsidePool {
                        addr,
                        pools: self.pools.iter().map(Pool::cidr).collect(),
                    })?;
                    if let Some(why) = self.pools[p].unusable(index) {
                        return Err(Error::NotAllocatable {
                            addr,
                            reason: why.describe(),
                        });
                    }
                    if let Some(other) = self.by_addr.get(&addr) {
                        return Err(Error::AddressReserved {
                            addr,
                            key: other.clone(),
                        });
                    }
                    addr
                }
                None => {
                    let family_pools = self
                        .pools
                        .iter()
                        .filter(|p| Family::of(p.cidr().network()) == family);
                    let mut found = None;
                    for pool in family_pools {
                        if let Some(index) = pool.next_free() {
                            found = Some((pool, index));
                            break;
                        }
                    }
                    let (pool, index) = found.ok_or_else(|| Error::Exhausted {
                        family,
                        pools: self.pools.iter().map(Pool::cidr).collect(),
                        quarantined: 0,
                    })?;
                    change.put(Record::ReservationCursor {
                        pool: pool.cidr(),
                        index: (index + 1) % pool.size(),
                    });
                    pool.addr_at(index)
                }
            };
            addrs.push(addr);
        }
        if let Some(addr) = requested
            && !addrs.contains(&addr)
        {
            return Err(Error::OutsidePool {
                addr,
                pools: self.pools.iter().map(Pool::cidr).collect(),
            });
        }
        let reservation = Reservation {
            key: key.clone(),
            addrs,
            bound: None,
        };
        change.put(Record::Reservation {
            key: key.clone(),
            addrs: reservation.addrs.clone(),
            bound: None,
        });
        Ok((change, reservation))
    }

    /// Plans binding `key` to `pod` running on `node`. Binding to the pod it is already bound
    /// to is a no-op; a key bound to another pod or node is [`Error::KeyClaimed`].
    pub fn plan_bind(
        &self,
        key: &StatefulKey,
        node: &str,
        pod: &Owner,
    ) -> Result<(Change, Reservation)> {
        let reservation = self
            .by_key
            .get(key)
            .ok_or_else(|| Error::UnknownReservation { key: key.clone() })?;
        let binding = Binding {
            node: node.to_owned(),
            pod: pod.clone(),
        };
        match &reservation.bound {
            Some(b) if *b == binding => return Ok((Change::default(), reservation.clone())),
            Some(b) => {
                return Err(Error::KeyClaimed {
                    key: key.clone(),
                    pod: b.pod.clone(),
                    node: b.node.clone(),
                });
            }
            None => {}
        }
        let bound = Reservation {
            bound: Some(binding),
            ..reservation.clone()
        };
        let mut change = Change::default();
        change.put(Record::Reservation {
            key: key.clone(),
            addrs: bound.addrs.clone(),
            bound: bound.bound.clone(),
        });
        Ok((change, bound))
    }

    /// Plans unbinding `key` from `pod` (the pod was deleted). The reservation stays.
    pub fn plan_unbind(&self, key: &StatefulKey, pod: &Owner) -> Result<Change> {
        let reservation = self
            .by_key
            .get(key)
            .ok_or_else(|| Error::UnknownReservation { key: key.clone() })?;
        let mut change = Change::default();
        match &reservation.bound {
            Some(b) if b.pod == *pod => change.put(Record::Reservation {
                key: key.clone(),
                addrs: reservation.addrs.clone(),
                bound: None,
            }),
            Some(b) => {
                return Err(Error::KeyClaimed {
                    key: key.clone(),
                    pod: b.pod.clone(),
                    node: b.node.clone(),
                });
            }
            None => {}
        }
        Ok(change)
    }

    /// Plans releasing the reservations of `namespace/statefulset` whose ordinal is at least
    /// `replicas` (a scale-down; 0 for a deleted StatefulSet). Fails, changing nothing, when one
    /// of them is still bound to a running pod.
    pub fn plan_scale_down(
        &self,
        namespace: &str,
        statefulset: &str,
        replicas: u32,
    ) -> Result<(Change, Vec<Reservation>)> {
        let mut change = Change::default();
        let mut released = Vec::new();
        for r in self.by_key.values().filter(|r| {
            r.key.namespace == namespace
                && r.key.statefulset == statefulset
                && r.key.ordinal >= replicas
        }) {
            if let Some(b) = &r.bound {
                return Err(Error::ReservationBound {
                    key: r.key.clone(),
                    pod: b.pod.clone(),
                    node: b.node.clone(),
                });
            }
            change.delete(RecordKey::Reservation(r.key.clone()));
            released.push(r.clone());
        }
        Ok((change, released))
    }

    /// Plans releasing one reservation (it must not be bound).
    pub fn plan_release(&self, key: &StatefulKey) -> Result<(Change, Reservation)> {
        let r = self
            .by_key
            .get(key)
            .ok_or_else(|| Error::UnknownReservation { key: key.clone() })?;
        if let Some(b) = &r.bound {
            return Err(Error::ReservationBound {
                key: key.clone(),
                pod: b.pod.clone(),
                node: b.node.clone(),
            });
        }
        let mut change = Change::default();
        change.delete(RecordKey::Reservation(key.clone()));
        Ok((change, r.clone()))
    }

    /// Applies a change planned by this book (or read back from its store).
    pub fn apply(&mut self, change: &Change) {
        for op in &change.ops {
            match op {
                Op::Put(Record::Reservation { key, addrs, bound }) => {
                    if !self.by_key.contains_key(key) {
                        for &addr in addrs {
                            if let Some((p, i)) = self.pool_index(addr) {
                                self.pools[p].set(i);
                            }
                            self.by_addr.insert(addr, key.clone());
                        }
                    }
                    self.by_key.insert(
                        key.clone(),
                        Reservation {
                            key: key.clone(),
                            addrs: addrs.clone(),
                            bound: bound.clone(),
                        },
                    );
                }
                Op::Put(Record::ReservationCursor { pool, index }) => {
                    if let Some(p) = self.pools.iter_mut().find(|p| p.cidr() == *pool) {
                        p.set_cursor(*index);
                    }
                }
                Op::Delete(RecordKey::Reservation(key)) => {
                    if let Some(r) = self.by_key.remove(key) {
                        for addr in r.addrs {
                            if let Some((p, i)) = self.pool_index(addr) {
                                self.pools[p].clear(i);
                            }
                            self.by_addr.remove(&addr);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The whole state as records, sorted by key.
    pub fn records(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self
            .by_key
            .values()
            .map(|r| Record::Reservation {
                key: r.key.clone(),
                addrs: r.addrs.clone(),
                bound: r.bound.clone(),
            })
            .chain(self.pools.iter().map(|p| Record::ReservationCursor {
                pool: p.cidr(),
                index: p.cursor(),
            }))
            .collect();
        records.sort_by_key(|r| r.key().to_string());
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> StatefulKey {
        StatefulKey::new(s).unwrap()
    }

    fn apply<T>(
        book: &mut Reservations,
        plan: impl FnOnce(&Reservations) -> Result<(Change, T)>,
    ) -> T {
        let (change, value) = plan(book).unwrap();
        book.apply(&change);
        value
    }

    #[test]
    fn reserve_is_idempotent_and_dual_stack() {
        let pools = [
            "10.96.0.0/24".parse().unwrap(),
            "fd96::/120".parse().unwrap(),
        ];
        let mut book = Reservations::new(&pools).unwrap();
        let r = apply(&mut book, |b| b.plan_reserve(&key("db/pg/0"), None));
        assert_eq!(r.addrs.len(), 2);
        let (change, again) = book.plan_reserve(&key("db/pg/0"), None).unwrap();
        assert!(change.is_empty());
        assert_eq!(again, r);
        let other = apply(&mut book, |b| b.plan_reserve(&key("db/pg/1"), None));
        assert_ne!(other.addrs, r.addrs);
        assert!(matches!(
            book.plan_reserve(&key("db/pg/2"), Some(r.addrs[0])),
            Err(Error::AddressReserved { .. })
        ));
    }

    #[test]
    fn binding_conflicts_and_scale_down() {
        let mut book = Reservations::new(&["10.96.0.0/28".parse().unwrap()]).unwrap();
        for i in 0..3 {
            apply(&mut book, |b| {
                b.plan_reserve(&key(&format!("db/pg/{i}")), None)
            });
        }
        let k = key("db/pg/2");
        apply(&mut book, |b| b.plan_bind(&k, "node-a", &k.pod()));
        let err = book.plan_bind(&k, "node-b", &k.pod()).unwrap_err();
        assert!(
            matches!(err, Error::KeyClaimed { ref node, .. } if node == "node-a"),
            "{err}"
        );
        let before = book.clone();
        assert!(matches!(
            book.plan_scale_down("db", "pg", 1),
            Err(Error::ReservationBound { .. })
        ));
        assert_eq!(book, before);
        let change = book.plan_unbind(&k, &k.pod()).unwrap();
        book.apply(&change);
        let released = apply(&mut book, |b| b.plan_scale_down("db", "pg", 1));
        assert_eq!(released.len(), 2);
        assert_eq!(book.iter().count(), 1);
        let restored =
            Reservations::restore(&["10.96.0.0/28".parse().unwrap()], &book.records()).unwrap();
        assert_eq!(restored, book);
    }
}
