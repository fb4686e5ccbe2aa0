//! What the datapath gets: the service, backend, reverse-NAT, slot and Maglev maps, their diffs,
//! and [`EntrySet::select`], the pure twin of the datapath's lookup.
//!
//! Every key and value is a plain `Copy` type with public fields and a fixed size, so that a
//! datapath can translate it into a `#[repr(C)]` map entry one field at a time:
//!
//! | map | key | value |
//! |-----|-----|-------|
//! | service | [`Frontend`] (address, port, protocol) | [`ServiceEntry`] |
//! | backend | [`BackendId`] | [`BackendEntry`] |
//! | reverse NAT | [`RevNatId`] | [`RevNatEntry`] |
//! | slot | [`SlotKey`] (reverse-NAT id, slot 1..=count) | [`SlotEntry`] |
//! | Maglev | [`RevNatId`] (outer) → [`MaglevKey`] index `0..M` (inner) | [`BackendId`] |
//!
//! A datapath looks up a new flow in O(1): the frontend finds the service entry; a Maglev
//! service then reads slot `hash mod M` of its table, a random one the slot whose cumulative
//! weight covers `hash mod total_weight`; the backend id finds the backend; replies are
//! rewritten back to the frontend through the reverse-NAT id carried in the connection.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::maglev::{SlotChange, diff_slots};
use crate::model::{Algorithm, BackendState, Frontend, FrontendKind, Protocol};

/// A backend's identifier: stable for as long as some service references the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendId(pub u32);

/// A frontend's reverse-NAT identifier: replies of a connection to the frontend are rewritten
/// back to the frontend's address and port through it. Stable while the frontend exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevNatId(pub u16);

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for RevNatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a frontend has backends to send new flows to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// At least one backend takes new flows.
    Ready,
    /// No backend at all: new flows are rejected with ICMP destination unreachable (what
    /// Kubernetes does for a service without endpoints), never silently dropped.
    NoBackends,
    /// The Local traffic policy applies and no backend on this node takes new flows: new flows
    /// are dropped, as Kubernetes specifies.
    NoLocalBackends,
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceState::Ready => "ready",
            ServiceState::NoBackends => "no-backends",
            ServiceState::NoLocalBackends => "no-local-backends",
        })
    }
}

/// The value of the service map, found by [`Frontend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// The frontend's reverse-NAT id; it also keys the slot and Maglev maps.
    pub rev_nat_id: RevNatId,
    /// How the frontend is reached.
    pub kind: FrontendKind,
    /// How a backend is chosen.
    pub algorithm: Algorithm,
    /// Whether there is a backend to choose.
    pub state: ServiceState,
    /// Number of slots (1..=count) in the slot map; 0 unless `state` is `Ready`.
    pub backend_count: u32,
    /// Sum of the weights in the slots.
    pub total_weight: u32,
    /// ClientIP session affinity timeout in seconds; 0 means no affinity.
    pub affinity_timeout_secs: u32,
    /// The slots hold terminating backends because no active one is left (KEP-1669).
    pub terminating_fallback: bool,
}

/// The value of the backend map, found by [`BackendId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendEntry {
    /// The backend's address.
    pub address: IpAddr,
    /// The backend's port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// Its state.
    pub state: BackendState,
    /// Its weight.
    pub weight: u16,
    /// Whether it runs on this node.
    pub node_local: bool,
}

impl BackendEntry {
    /// The backend's socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// The value of the reverse-NAT map: the frontend a reply must appear to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RevNatEntry {
    /// The frontend address.
    pub address: IpAddr,
    /// The frontend port.
    pub port: u16,
}

/// The key of the slot map: slot `1..=backend_count` of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotKey {
    /// The frontend's reverse-NAT id.
    pub rev_nat_id: RevNatId,
    /// The slot, from 1.
    pub slot: u32,
}

/// The value of the slot map: a backend and the cumulative weight up to and including it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotEntry {
    /// The backend in this slot.
    pub backend_id: BackendId,
    /// Sum of the weights of slots 1..=this one.
    pub weight_end: u32,
}

/// The key of one Maglev slot: a frontend's table and an index `0..M` into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MaglevKey {
    /// The frontend's reverse-NAT id.
    pub rev_nat_id: RevNatId,
    /// The index into the table.
    pub index: u32,
}

/// What the datapath does with a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The destination is not a frontend: the packet passes unchanged.
    NotAService,
    /// Rewrite the destination to the backend and remember `rev_nat_id` for the replies.
    Forward {
        /// The chosen backend.
        backend_id: BackendId,
        /// Its address and port.
        backend: SocketAddr,
        /// The frontend's reverse-NAT id.
        rev_nat_id: RevNatId,
        /// The backend came from a ClientIP affinity record.
        from_affinity: bool,
    },
    /// No backend: answer with ICMP destination unreachable.
    Unreachable {
        /// The frontend's reverse-NAT id.
        rev_nat_id: RevNatId,
    },
    /// Local traffic policy without a local backend: drop.
    Drop {
        /// The frontend's reverse-NAT id.
        rev_nat_id: RevNatId,
    },
}

/// The key of the affinity map: a frontend and a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AffinityKey {
    /// The frontend's reverse-NAT id.
    pub rev_nat_id: RevNatId,
    /// The client's IP address.
    pub client: IpAddr,
}

/// The value of the affinity map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AffinityEntry {
    /// The backend the client is bound to.
    pub backend_id: BackendId,
    /// When the client last used it (the caller's monotonic clock).
    pub last_used: Duration,
}

/// ClientIP session affinity state: the twin of the datapath's LRU affinity map.
///
/// Time is passed in by the caller as a [`Duration`] since any fixed origin of a monotonic
/// clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinityMap {
    #[serde(with = "as_list")]
    entries: BTreeMap<AffinityKey, AffinityEntry>,
}

impl AffinityMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of a client at a frontend, if any (expired or not).
    pub fn get(&self, key: &AffinityKey) -> Option<&AffinityEntry> {
        self.entries.get(key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets entries whose frontend is gone or no longer has affinity, whose timeout has
    /// passed at `now`, or whose backend no longer is in the frontend's slots.
    pub fn prune(&mut self, entries: &EntrySet, now: Duration) {
        self.entries.retain(|key, value| {
            let Some(svc) = entries.service_by_rev_nat(key.rev_nat_id) else {
                return false;
            };
            svc.affinity_timeout_secs > 0
                && now.saturating_sub(value.last_used)
                    <= Duration::from_secs(u64::from(svc.affinity_timeout_secs))
                && Maps::in_slots(entries, svc, value.backend_id)
        });
    }
}

/// A change set for one map: entries to write, then keys to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDiff<K, V> {
    /// Entries to insert or overwrite.
    pub upsert: Vec<(K, V)>,
    /// Keys to delete.
    pub remove: Vec<K>,
}

impl<K, V> Default for MapDiff<K, V> {
    fn default() -> Self {
        Self {
            upsert: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl<K: Ord + Copy, V: PartialEq + Copy> MapDiff<K, V> {
    /// The changes that turn `old` into `new`.
    pub fn between(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Self {
        let mut diff = Self::default();
        for (k, v) in new {
            if old.get(k) != Some(v) {
                diff.upsert.push((*k, *v));
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                diff.remove.push(*k);
            }
        }
        diff
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// Changes to the Maglev maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaglevDiff {
    /// Tables that are new (or changed size): their whole contents.
    pub replace: Vec<(RevNatId, Arc<[BackendId]>)>,
    /// Tables present before and after: only the slots that changed.
    pub update: Vec<(RevNatId, Vec<SlotChange<BackendId>>)>,
    /// Tables that are gone.
    pub remove: Vec<RevNatId>,
}

impl MaglevDiff {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }

    /// Number of Maglev slots written.
    pub fn slots_written(&self) -> usize {
        self.replace.iter().map(|(_, t)| t.len()).sum::<usize>()
            + self.update.iter().map(|(_, c)| c.len()).sum::<usize>()
    }
}

/// The changes that turn one [`EntrySet`] into another.
///
/// A datapath applies them in an order that never lets a lookup dangle: backend upserts first,
/// then slot and Maglev writes, reverse-NAT upserts, service upserts; then service removals,
/// slot and Maglev removals, reverse-NAT removals and backend removals last.
/// [`EntrySet::apply`] does exactly that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDiff {
    /// The service map.
    pub services: MapDiff<Frontend, ServiceEntry>,
    /// The backend map.
    pub backends: MapDiff<BackendId, BackendEntry>,
    /// The reverse-NAT map.
    pub rev_nat: MapDiff<RevNatId, RevNatEntry>,
    /// The slot map.
    pub slots: MapDiff<SlotKey, SlotEntry>,
    /// The Maglev maps.
    pub maglev: MaglevDiff,
}

impl EntryDiff {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.backends.is_empty()
            && self.rev_nat.is_empty()
            && self.slots.is_empty()
            && self.maglev.is_empty()
    }
}

/// All entries of the datapath's service maps. Built by [`crate::LoadBalancer`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySet {
    /// Frontend → service.
    #[serde(with = "as_list")]
    pub services: BTreeMap<Frontend, ServiceEntry>,
    /// Backend id → backend.
    #[serde(with = "as_list")]
    pub backends: BTreeMap<BackendId, BackendEntry>,
    /// Reverse-NAT id → frontend address.
    #[serde(with = "as_list")]
    pub rev_nat: BTreeMap<RevNatId, RevNatEntry>,
    /// (Reverse-NAT id, slot) → backend and cumulative weight.
    #[serde(with = "as_list")]
    pub slots: BTreeMap<SlotKey, SlotEntry>,
    /// Reverse-NAT id → Maglev table of `M` backend ids, for Maglev frontends that are ready.
    #[serde(with = "as_list")]
    pub maglev: BTreeMap<RevNatId, Arc<[BackendId]>>,
}

impl EntrySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes that turn `self` into `newer`.
    pub fn diff(&self, newer: &EntrySet) -> EntryDiff {
        let mut maglev = MaglevDiff::default();
        for (id, table) in &newer.maglev {
            match self.maglev.get(id) {
                Some(old) if old.len() == table.len() => {
                    let changes = diff_slots(old, table);
                    if !changes.is_empty() {
                        maglev.update.push((*id, changes));
                    }
                }
                _ => maglev.replace.push((*id, table.clone())),
            }
        }
        for id in self.maglev.keys() {
            if !newer.maglev.contains_key(id) {
                maglev.remove.push(*id);
            }
        }
        EntryDiff {
            services: MapDiff::between(&self.services, &newer.services),
            backends: MapDiff::between(&self.backends, &newer.backends),
            rev_nat: MapDiff::between(&self.rev_nat, &newer.rev_nat),
            slots: MapDiff::between(&self.slots, &newer.slots),
            maglev,
        }
    }

    /// Applies a diff, in the order documented on [`EntryDiff`].
    pub fn apply(&mut self, diff: &EntryDiff) {
        for (k, v) in &diff.backends.upsert {
            self.backends.insert(*k, *v);
        }
        for (k, v) in &diff.slots.upsert {
            self.slots.insert(*k, *v);
        }
        for (id, table) in &diff.maglev.replace {
            self.maglev.insert(*id, table.clone());
        }
        for (id, changes) in &diff.maglev.update {
            if let Some(table) = self.maglev.get_mut(id) {
                let table = Arc::make_mut(table);
                for c in changes {
                    if let Some(slot) = table.get_mut(c.index as usize) {
                        *slot = c.value;
                    }
                }
            }
        }
        for (k, v) in &diff.rev_nat.upsert {
            self.rev_nat.insert(*k, *v);
        }
        for (k, v) in &diff.services.upsert {
            self.services.insert(*k, *v);
        }
        for k in &diff.services.remove {
            self.services.remove(k);
        }
        for k in &diff.slots.remove {
            self.slots.remove(k);
        }
        for id in &diff.maglev.remove {
            self.maglev.remove(id);
        }
        for k in &diff.rev_nat.remove {
            self.rev_nat.remove(k);
        }
        for k in &diff.backends.remove {
            self.backends.remove(k);
        }
    }

    fn service_by_rev_nat(&self, id: RevNatId) -> Option<&ServiceEntry> {
        let rev = self.rev_nat.get(&id)?;
        // A reverse-NAT entry names the frontend address and port; the protocol is one of three.
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .filter_map(|p| self.services.get(&Frontend::new(rev.address, rev.port, p)))
            .find(|s| s.rev_nat_id == id)
    }

    /// What the datapath does with the first packet of a new flow to `frontend` with hash
    /// `flow_hash` from `client`, when no affinity record exists for the client.
    ///
    /// This is the pure twin of the datapath's service lookup over the ordered maps (the
    /// reference); [`crate::Lookup`] gives the same verdicts from hash maps, in O(1).
    pub fn select(&self, frontend: &Frontend, flow_hash: u32, client: IpAddr) -> Verdict {
        select(self, frontend, flow_hash, client)
    }

    /// Like [`EntrySet::select`], with ClientIP session affinity: a client bound to a backend
    /// that is still in the frontend's slots and was used within the timeout keeps it (and the
    /// binding is refreshed to `now`); otherwise the flow is balanced and the client bound to
    /// the result.
    pub fn select_with_affinity(
        &self,
        frontend: &Frontend,
        flow_hash: u32,
        client: IpAddr,
        affinity: &mut AffinityMap,
        now: Duration,
    ) -> Verdict {
        select_with_affinity(self, frontend, flow_hash, client, affinity, now)
    }
}

/// The lookups a datapath makes, over whatever storage holds the maps.
pub(crate) trait Maps {
    /// The service map.
    fn service(&self, frontend: &Frontend) -> Option<&ServiceEntry>;
    /// The backend map.
    fn backend(&self, id: BackendId) -> Option<&BackendEntry>;
    /// Slot `hash mod M` of a frontend's Maglev table.
    fn maglev_slot(&self, rev_nat_id: RevNatId, flow_hash: u32) -> Option<BackendId>;
    /// The first slot of a frontend whose cumulative weight exceeds `point`.
    fn weighted_slot(&self, svc: &ServiceEntry, point: u32) -> Option<BackendId>;
    /// Whether a backend is in a frontend's slots.
    fn in_slots(&self, svc: &ServiceEntry, id: BackendId) -> bool;
}

impl Maps for EntrySet {
    fn service(&self, frontend: &Frontend) -> Option<&ServiceEntry> {
        self.services.get(frontend)
    }

    fn backend(&self, id: BackendId) -> Option<&BackendEntry> {
        self.backends.get(&id)
    }

    fn maglev_slot(&self, rev_nat_id: RevNatId, flow_hash: u32) -> Option<BackendId> {
        let table = self.maglev.get(&rev_nat_id)?;
        if table.is_empty() {
            return None;
        }
        table.get(flow_hash as usize % table.len()).copied()
    }

    fn weighted_slot(&self, svc: &ServiceEntry, point: u32) -> Option<BackendId> {
        self.slots
            .range(slot_range(svc))
            .find(|(_, s)| s.weight_end > point)
            .map(|(_, s)| s.backend_id)
    }

    fn in_slots(&self, svc: &ServiceEntry, id: BackendId) -> bool {
        self.slots
            .range(slot_range(svc))
            .any(|(_, s)| s.backend_id == id)
    }
}

/// The slot keys `1..=backend_count` of a frontend.
pub(crate) fn slot_range(svc: &ServiceEntry) -> std::ops::RangeInclusive<SlotKey> {
    SlotKey {
        rev_nat_id: svc.rev_nat_id,
        slot: 1,
    }..=SlotKey {
        rev_nat_id: svc.rev_nat_id,
        slot: svc.backend_count.max(1),
    }
}

fn pick<M: Maps>(maps: &M, svc: &ServiceEntry, flow_hash: u32) -> Option<BackendId> {
    match svc.algorithm {
        Algorithm::Maglev => maps.maglev_slot(svc.rev_nat_id, flow_hash),
        Algorithm::Random => {
            if svc.total_weight == 0 || svc.backend_count == 0 {
                return None;
            }
            maps.weighted_slot(svc, flow_hash % svc.total_weight)
        }
    }
}

fn verdict<M: Maps>(maps: &M, svc: &ServiceEntry, flow_hash: u32) -> Verdict {
    let rev_nat_id = svc.rev_nat_id;
    match svc.state {
        ServiceState::NoBackends => return Verdict::Unreachable { rev_nat_id },
        ServiceState::NoLocalBackends => return Verdict::Drop { rev_nat_id },
        ServiceState::Ready => {}
    }
    match pick(maps, svc, flow_hash).and_then(|id| Some((id, maps.backend(id)?))) {
        Some((backend_id, b)) => Verdict::Forward {
            backend_id,
            backend: b.socket_addr(),
            rev_nat_id,
            from_affinity: false,
        },
        // An inconsistent set (a slot naming a missing backend): what a datapath does when its
        // backend lookup misses.
        None => Verdict::Drop { rev_nat_id },
    }
}

pub(crate) fn select<M: Maps>(
    maps: &M,
    frontend: &Frontend,
    flow_hash: u32,
    _client: IpAddr,
) -> Verdict {
    match maps.service(frontend) {
        None => Verdict::NotAService,
        Some(svc) => verdict(maps, svc, flow_hash),
    }
}

pub(crate) fn select_with_affinity<M: Maps>(
    maps: &M,
    frontend: &Frontend,
    flow_hash: u32,
    client: IpAddr,
    affinity: &mut AffinityMap,
    now: Duration,
) -> Verdict {
    let Some(svc) = maps.service(frontend) else {
        return Verdict::NotAService;
    };
    if svc.affinity_timeout_secs == 0 || svc.state != ServiceState::Ready {
        return verdict(maps, svc, flow_hash);
    }
    let key = AffinityKey {
        rev_nat_id: svc.rev_nat_id,
        client,
    };
    let timeout = Duration::from_secs(u64::from(svc.affinity_timeout_secs));
    if let Some(entry) = affinity.entries.get_mut(&key)
        && now.saturating_sub(entry.last_used) <= timeout
        && maps.in_slots(svc, entry.backend_id)
        && let Some(b) = maps.backend(entry.backend_id)
    {
        entry.last_used = now;
        return Verdict::Forward {
            backend_id: entry.backend_id,
            backend: b.socket_addr(),
            rev_nat_id: svc.rev_nat_id,
            from_affinity: true,
        };
    }
    let v = verdict(maps, svc, flow_hash);
    if let Verdict::Forward { backend_id, .. } = v {
        affinity.entries.insert(
            key,
            AffinityEntry {
                backend_id,
                last_used: now,
            },
        );
    }
    v
}

/// Serialises a map with structured keys as a list of `{"key": …, "value": …}` objects (JSON
/// object keys must be strings).
mod as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct PairRef<'a, K, V> {
        key: &'a K,
        value: &'a V,
    }

    #[derive(Deserialize)]
    struct Pair<K, V> {
        key: K,
        value: V,
    }

    pub fn serialize<S: Serializer, K: Serialize, V: Serialize>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|(key, value)| PairRef { key, value }))
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        let pairs: Vec<Pair<K, V>> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().map(|p| (p.key, p.value)).collect())
    }
}
