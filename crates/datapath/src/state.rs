//! The desired contents of the datapath's configuration maps, and the diff between two of them.
//!
//! The loader keeps the kernel maps equal to a [`MapState`] by applying [`MapDiff`]s; the twin
//! decides over a [`MapState`] directly.

use std::collections::BTreeMap;

use crate::abi::{Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue};

/// Contents of the endpoints, ipcache and policy maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    /// Interface index of the host-side veth → endpoint.
    pub endpoints: BTreeMap<u32, Endpoint>,
    /// Prefix → identity.
    pub ipcache: BTreeMap<IpcacheKey, IpcacheValue>,
    /// Policy entries.
    pub policy: BTreeMap<PolicyKey, PolicyValue>,
}

impl MapState {
    /// A copy of only the entries `diff` touches (what undoing it needs), cheap for small
    /// diffs of large states.
    pub fn clone_for(&self, diff: &MapDiff) -> MapState {
        fn pick<K: Ord + Copy, V: Copy>(m: &BTreeMap<K, V>, c: &Changes<K, V>) -> BTreeMap<K, V> {
            c.upsert
                .iter()
                .map(|(k, _)| k)
                .chain(c.remove.iter())
                .filter_map(|k| m.get(k).map(|v| (*k, *v)))
                .collect()
        }
        MapState {
            endpoints: pick(&self.endpoints, &diff.endpoints),
            ipcache: pick(&self.ipcache, &diff.ipcache),
            policy: pick(&self.policy, &diff.policy),
        }
    }
}

/// Changes to one map: entries to insert or overwrite, keys to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes<K, V> {
    /// Entries to insert or overwrite.
    pub upsert: Vec<(K, V)>,
    /// Keys to delete.
    pub remove: Vec<K>,
}

impl<K, V> Default for Changes<K, V> {
    fn default() -> Self {
        Changes {
            upsert: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl<K, V> Changes<K, V> {
    /// Number of map operations.
    pub fn len(&self) -> usize {
        self.upsert.len() + self.remove.len()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn changes<K: Ord + Copy, V: PartialEq + Copy>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Changes<K, V> {
    let mut c = Changes::default();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            c.upsert.push((*k, *v));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            c.remove.push(*k);
        }
    }
    c
}

/// What turns one [`MapState`] into another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapDiff {
    /// Endpoint changes.
    pub endpoints: Changes<u32, Endpoint>,
    /// Ipcache changes.
    pub ipcache: Changes<IpcacheKey, IpcacheValue>,
    /// Policy changes.
    pub policy: Changes<PolicyKey, PolicyValue>,
}

impl MapDiff {
    /// The diff from `old` to `new`.
    pub fn between(old: &MapState, new: &MapState) -> MapDiff {
        MapDiff {
            endpoints: changes(&old.endpoints, &new.endpoints),
            ipcache: changes(&old.ipcache, &new.ipcache),
            policy: changes(&old.policy, &new.policy),
        }
    }

    /// Number of map operations.
    pub fn len(&self) -> usize {
        self.endpoints.len() + self.ipcache.len() + self.policy.len()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies the diff to a state (what the loader does to the kernel maps).
    pub fn apply(&self, state: &mut MapState) {
        fn one<K: Ord + Copy, V: Copy>(m: &mut BTreeMap<K, V>, c: &Changes<K, V>) {
            for k in &c.remove {
                m.remove(k);
            }
            for (k, v) in &c.upsert {
                m.insert(*k, *v);
            }
        }
        one(&mut state.endpoints, &self.endpoints);
        one(&mut state.ipcache, &self.ipcache);
        one(&mut state.policy, &self.policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::VERDICT_ALLOW;
    use proptest::prelude::*;

    fn state(entries: &[(u32, u16, u32)]) -> MapState {
        let mut s = MapState::default();
        for &(ep, port, verdict) in entries {
            s.policy.insert(
                PolicyKey::entry(ep, 0, 1, 6, port, 16),
                PolicyValue { verdict, rule: 0 },
            );
        }
        s
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        let s = state(&[(1, 80, VERDICT_ALLOW)]);
        assert!(MapDiff::between(&s, &s).is_empty());
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_target(
            a in proptest::collection::vec((0u32..4, 0u16..8, 1u32..3), 0..30),
            b in proptest::collection::vec((0u32..4, 0u16..8, 1u32..3), 0..30),
        ) {
            let (old, new) = (state(&a), state(&b));
            let d = MapDiff::between(&old, &new);
            let mut s = old.clone();
            d.apply(&mut s);
            prop_assert_eq!(&s, &new);
            // Minimal: every operation changes something.
            for (k, v) in &d.policy.upsert {
                prop_assert_ne!(old.policy.get(k), Some(v));
            }
            for k in &d.policy.remove {
                prop_assert!(!new.policy.contains_key(k));
            }
        }
    }
}
