//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4), with weights.
//!
//! Every backend gets a permutation of the `M` table slots from two hashes of a stable key:
//! `offset = h1(key) mod M`, `skip = h2(key) mod (M − 1) + 1`, slot `j` of the permutation is
//! `(offset + j·skip) mod M`. Backends then take turns, each filling its next preferred free
//! slot, until the table is full. With `M` prime every skip is coprime with `M`, so every
//! permutation visits every slot.
//!
//! Weights: in each round backend `i` earns `wᵢ` credits and takes a turn whenever it holds at
//! least `w_max`, so the heaviest backends take a turn every round and the others in proportion.
//! With equal weights this is exactly the paper's algorithm.
//!
//! Backends take turns in the order of their keys, so the table depends only on the set of
//! (key, weight) pairs, never on the order in which they were handed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::{SEED_OFFSET, SEED_SKIP, hash64};

/// A validated Maglev table size: a prime `M` with `2 ≤ M ≤ 131071`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u32")]
pub struct TableSize(u32);

impl TableSize {
    /// The default size, 16381 (Cilium's default as well).
    pub const DEFAULT: TableSize = TableSize(16381);
    /// The largest size accepted, 131071 (2¹⁷ − 1, a Mersenne prime).
    pub const MAX: u32 = 131_071;

    /// Validates a size: it must be prime and at most [`TableSize::MAX`].
    pub fn new(size: u64) -> Result<Self> {
        if size > u64::from(Self::MAX) || !is_prime(size) {
            return Err(Error::TableSize { size });
        }
        Ok(TableSize(size as u32))
    }

    /// The number of slots.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for TableSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u64> for TableSize {
    type Error = Error;
    fn try_from(size: u64) -> Result<Self> {
        Self::new(size)
    }
}

impl From<TableSize> for u32 {
    fn from(size: TableSize) -> u32 {
        size.0
    }
}

impl std::fmt::Display for TableSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// One backend handed to [`Maglev::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevBackend<T> {
    /// The stable key the permutation is derived from (a name, or an address and port).
    pub key: Vec<u8>,
    /// What the table stores for this backend (a name, a `BackendId`, …).
    pub value: T,
    /// The weight; a backend of weight 0 gets no slot.
    pub weight: u32,
}

impl<T> MaglevBackend<T> {
    /// A backend with a key, the value to store and a weight.
    pub fn new(key: impl Into<Vec<u8>>, value: T, weight: u32) -> Self {
        Self {
            key: key.into(),
            value,
            weight,
        }
    }
}

/// One slot that differs between two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotChange<T> {
    /// The slot index, `0 ≤ index < M`.
    pub index: u32,
    /// The value of the slot in the newer table.
    pub value: T,
}

/// A Maglev lookup table: `M` slots, each holding one backend's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maglev<T> {
    size: TableSize,
    table: Vec<T>,
}

/// Fills the table with indices into `backends`; see the module documentation.
fn populate(size: TableSize, keys: &[&[u8]], weights: &[u32]) -> Result<Vec<u32>> {
    let m = u64::from(size.get());
    // Backends of weight zero take no turn; order the rest by key.
    let mut order: Vec<usize> = (0..keys.len()).filter(|&i| weights[i] > 0).collect();
    if order.is_empty() {
        return Err(Error::NoBackends);
    }
    if order.len() as u64 > m {
        return Err(Error::TooManyBackends {
            size: size.get(),
            backends: order.len(),
        });
    }
    order.sort_unstable_by(|&a, &b| keys[a].cmp(keys[b]));
    if let Some(w) = order.windows(2).find(|w| keys[w[0]] == keys[w[1]]) {
        return Err(Error::DuplicateBackend {
            key: String::from_utf8_lossy(keys[w[0]]).into_owned(),
        });
    }
    let n = order.len();
    let mut pos: Vec<u64> = Vec::with_capacity(n);
    let mut skip: Vec<u64> = Vec::with_capacity(n);
    for &i in &order {
        pos.push(hash64(keys[i], SEED_OFFSET) % m);
        skip.push(hash64(keys[i], SEED_SKIP) % (m - 1) + 1);
    }
    let w: Vec<u64> = order.iter().map(|&i| u64::from(weights[i])).collect();
    let w_max = w.iter().copied().max().unwrap_or(1);
    let mut credit = vec![0u64; n];
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; m as usize];
    let mut filled = 0u64;
    // Every round the heaviest backend takes a turn and every turn fills one slot, so there are
    // at most `m` rounds; each turn finds a free slot within `m` steps of its permutation.
    'rounds: for _round in 0..m {
        for j in 0..n {
            credit[j] += w[j];
            if credit[j] < w_max {
                continue;
            }
            credit[j] -= w_max;
            for _step in 0..m {
                let c = pos[j] as usize;
                pos[j] += skip[j];
                if pos[j] >= m {
                    pos[j] -= m;
                }
                if table[c] == EMPTY {
                    table[c] = order[j] as u32;
                    break;
                }
            }
            filled += 1;
            if filled == m {
                break 'rounds;
            }
        }
    }
    debug_assert!(table.iter().all(|&s| s != EMPTY));
    Ok(table)
}

impl<T: Clone> Maglev<T> {
    /// Builds the table of `size` slots for `backends`.
    ///
    /// Errors: [`Error::NoBackends`] when no backend has a non-zero weight,
    /// [`Error::TooManyBackends`] when there are more such backends than slots,
    /// [`Error::DuplicateBackend`] when two backends share a key.
    pub fn build(size: TableSize, backends: &[MaglevBackend<T>]) -> Result<Self> {
        let keys: Vec<&[u8]> = backends.iter().map(|b| b.key.as_slice()).collect();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let indices = populate(size, &keys, &weights)?;
        let table = indices
            .into_iter()
            .map(|i| backends[i as usize].value.clone())
            .collect();
        Ok(Self { size, table })
    }

    /// The table size `M`.
    pub fn size(&self) -> TableSize {
        self.size
    }

    /// The slots, `M` of them.
    pub fn slots(&self) -> &[T] {
        &self.table
    }

    /// Consumes the table and returns its slots.
    pub fn into_slots(self) -> Vec<T> {
        self.table
    }

    /// The backend of the slot `hash mod M`.
    pub fn lookup(&self, hash: u32) -> &T {
        &self.table[hash as usize % self.table.len()]
    }
}

impl<T: Clone + PartialEq> Maglev<T> {
    /// The slots of `newer` that differ from `self`: what a datapath must write to go from
    /// this table to `newer`. Tables of different sizes differ in every slot.
    pub fn diff(&self, newer: &Self) -> Vec<SlotChange<T>> {
        diff_slots(&self.table, &newer.table)
    }
}

/// The slots of `newer` that differ from `older` (all of them when the lengths differ).
pub(crate) fn diff_slots<T: Clone + PartialEq>(older: &[T], newer: &[T]) -> Vec<SlotChange<T>> {
    let same_size = older.len() == newer.len();
    newer
        .iter()
        .enumerate()
        .filter(|(i, v)| !same_size || older[*i] != **v)
        .map(|(i, v)| SlotChange {
            index: i as u32,
            value: v.clone(),
        })
        .collect()
}

impl<T: Clone + Ord> Maglev<T> {
    /// How many slots each backend owns.
    pub fn counts(&self) -> BTreeMap<T, usize> {
        let mut counts = BTreeMap::new();
        for v in &self.table {
            *counts.entry(v.clone()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> Vec<MaglevBackend<String>> {
        names
            .iter()
            .map(|n| MaglevBackend::new(n.as_bytes(), n.to_string(), 1))
            .collect()
    }

    #[test]
    fn table_size_accepts_primes_only() {
        assert_eq!(TableSize::new(16381).unwrap().get(), 16381);
        assert_eq!(TableSize::new(131_071).unwrap().get(), 131_071);
        assert_eq!(TableSize::new(65537).unwrap().get(), 65537);
        assert_eq!(TableSize::new(2).unwrap().get(), 2);
        for bad in [0, 1, 4, 16384, 65536, 131_072, 262_139, u64::MAX] {
            assert_eq!(TableSize::new(bad), Err(Error::TableSize { size: bad }));
        }
        assert_eq!(TableSize::default(), TableSize::DEFAULT);
        assert!(serde_json::from_str::<TableSize>("100").is_err());
        assert_eq!(
            serde_json::from_str::<TableSize>("251").unwrap(),
            TableSize::new(251).unwrap()
        );
    }

    #[test]
    fn small_table_is_the_papers_algorithm() {
        // M = 7 and three backends, worked by hand from the offsets and skips.
        let size = TableSize::new(7).unwrap();
        let backends = named(&["b0", "b1", "b2"]);
        let table = Maglev::build(size, &backends).unwrap();
        let m = 7u64;
        let perm = |k: &str, j: u64| {
            let off = hash64(k.as_bytes(), SEED_OFFSET) % m;
            let skip = hash64(k.as_bytes(), SEED_SKIP) % (m - 1) + 1;
            ((off + j * skip) % m) as usize
        };
        // Reference: the paper's pseudo-code (Pseudocode 1) verbatim.
        let mut next = [0u64; 3];
        let mut entry: Vec<Option<usize>> = vec![None; 7];
        let mut n = 0;
        'outer: loop {
            for (i, name) in ["b0", "b1", "b2"].iter().enumerate() {
                let mut c = perm(name, next[i]);
                while entry[c].is_some() {
                    next[i] += 1;
                    c = perm(name, next[i]);
                }
                entry[c] = Some(i);
                next[i] += 1;
                n += 1;
                if n == 7 {
                    break 'outer;
                }
            }
        }
        let expected: Vec<String> = entry
            .into_iter()
            .map(|e| format!("b{}", e.unwrap()))
            .collect();
        assert_eq!(table.slots(), expected.as_slice());
    }

    #[test]
    fn errors_are_typed() {
        let size = TableSize::new(3).unwrap();
        assert_eq!(
            Maglev::<String>::build(size, &[]).unwrap_err(),
            Error::NoBackends
        );
        assert_eq!(
            Maglev::build(size, &named(&["a", "b", "c", "d"])).unwrap_err(),
            Error::TooManyBackends {
                size: 3,
                backends: 4
            }
        );
        assert_eq!(
            Maglev::build(size, &named(&["a", "a"])).unwrap_err(),
            Error::DuplicateBackend { key: "a".into() }
        );
        let zero = vec![MaglevBackend::new("a", 1u32, 0)];
        assert_eq!(Maglev::build(size, &zero).unwrap_err(), Error::NoBackends);
    }

    #[test]
    fn zero_weight_backends_get_no_slot() {
        let size = TableSize::new(251).unwrap();
        let backends = vec![
            MaglevBackend::new("a", 'a', 1),
            MaglevBackend::new("b", 'b', 0),
            MaglevBackend::new("c", 'c', 1),
        ];
        let counts = Maglev::build(size, &backends).unwrap().counts();
        assert_eq!(counts.get(&'b'), None);
        assert_eq!(counts.values().sum::<usize>(), 251);
    }

    #[test]
    fn diff_lists_changed_slots() {
        let size = TableSize::new(251).unwrap();
        let a = Maglev::build(size, &named(&["x", "y", "z"])).unwrap();
        let b = Maglev::build(size, &named(&["x", "y"])).unwrap();
        let changes = a.diff(&b);
        assert!(!changes.is_empty());
        let mut patched = a.slots().to_vec();
        for c in &changes {
            patched[c.index as usize] = c.value.clone();
        }
        assert_eq!(patched, b.slots());
        assert!(a.diff(&a).is_empty());
    }
}
