//! The service maps laid out as a datapath holds them, for O(1) selection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::entries::{
    AffinityMap, BackendEntry, BackendId, EntryDiff, EntrySet, Maps, RevNatEntry, RevNatId,
    ServiceEntry, SlotEntry, Verdict, select, select_with_affinity,
};
use crate::model::Frontend;

/// The entries of an [`EntrySet`] in hash maps keyed like the kernel's (frontend → service,
/// backend id → backend, reverse-NAT id → Maglev table and slot array), so that selecting a
/// backend costs a constant number of lookups.
///
/// It gives exactly the verdicts of [`EntrySet::select`] on the same entries (the property
/// tests check it) and follows an [`EntrySet`] through its [`EntryDiff`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    services: FxHashMap<Frontend, ServiceEntry>,
    backends: FxHashMap<BackendId, BackendEntry>,
    /// Slot `s` of a frontend is at index `s − 1`.
    slots: FxHashMap<RevNatId, Vec<Option<SlotEntry>>>,
    maglev: FxHashMap<RevNatId, Arc<[BackendId]>>,
    rev_nat: FxHashMap<RevNatId, RevNatEntry>,
}

impl Lookup {
    /// The lookup form of `entries`.
    pub fn new(entries: &EntrySet) -> Self {
        let mut out = Self {
            services: entries.services.iter().map(|(k, v)| (*k, *v)).collect(),
            backends: entries.backends.iter().map(|(k, v)| (*k, *v)).collect(),
            slots: FxHashMap::default(),
            maglev: entries
                .maglev
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            rev_nat: entries.rev_nat.iter().map(|(k, v)| (*k, *v)).collect(),
        };
        for (k, v) in &entries.slots {
            out.put_slot(k.rev_nat_id, k.slot, Some(*v));
        }
        out
    }

    fn put_slot(&mut self, rev: RevNatId, slot: u32, value: Option<SlotEntry>) {
        let Some(index) = (slot as usize).checked_sub(1) else {
            return;
        };
        let v = self.slots.entry(rev).or_default();
        if v.len() <= index {
            if value.is_none() {
                return;
            }
            v.resize(index + 1, None);
        }
        v[index] = value;
        while v.last() == Some(&None) {
            v.pop();
        }
        if v.is_empty() {
            self.slots.remove(&rev);
        }
    }

    /// Applies a diff, as [`EntrySet::apply`] does to the ordered maps.
    pub fn apply(&mut self, diff: &EntryDiff) {
        self.apply_sharing(diff, None);
    }

    /// Applies a diff; with `entries` (the set the same diff was just applied to), new and
    /// changed Maglev tables are shared with it instead of being patched a second time.
    pub(crate) fn apply_sharing(&mut self, diff: &EntryDiff, entries: Option<&EntrySet>) {
        for (k, v) in &diff.backends.upsert {
            self.backends.insert(*k, *v);
        }
        for (k, v) in &diff.slots.upsert {
            self.put_slot(k.rev_nat_id, k.slot, Some(*v));
        }
        for (id, table) in &diff.maglev.replace {
            let shared = entries.and_then(|e| e.maglev.get(id)).unwrap_or(table);
            self.maglev.insert(*id, shared.clone());
        }
        for (id, changes) in &diff.maglev.update {
            if let Some(shared) = entries.and_then(|e| e.maglev.get(id)) {
                self.maglev.insert(*id, shared.clone());
            } else if let Some(table) = self.maglev.get_mut(id) {
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
            self.put_slot(k.rev_nat_id, k.slot, None);
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

    /// The frontend address and port that replies of a connection with reverse-NAT id `id`
    /// must carry as their source: the reverse-NAT twin.
    pub fn reverse_nat(&self, id: RevNatId) -> Option<RevNatEntry> {
        self.rev_nat.get(&id).copied()
    }

    /// Number of frontends.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no frontend.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Same as [`EntrySet::select`], in O(1).
    pub fn select(&self, frontend: &Frontend, flow_hash: u32, client: IpAddr) -> Verdict {
        select(self, frontend, flow_hash, client)
    }

    /// Same as [`EntrySet::select_with_affinity`], in O(1) plus the affinity lookup.
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

    fn frontend_slots(&self, svc: &ServiceEntry) -> impl Iterator<Item = &SlotEntry> {
        self.slots
            .get(&svc.rev_nat_id)
            .into_iter()
            .flat_map(|v| v.iter().take(svc.backend_count as usize).flatten())
    }
}

impl Maps for Lookup {
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
        let slots = self.slots.get(&svc.rev_nat_id)?;
        let count = (svc.backend_count as usize).min(slots.len());
        // Binary search over the cumulative weights; a hole (inconsistent set) ends the search.
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match slots[mid] {
                Some(s) if s.weight_end <= point => lo = mid + 1,
                Some(_) => hi = mid,
                None => return None,
            }
        }
        slots.get(lo).copied().flatten().map(|s| s.backend_id)
    }

    fn in_slots(&self, svc: &ServiceEntry, id: BackendId) -> bool {
        self.frontend_slots(svc).any(|s| s.backend_id == id)
    }
}
