//! Selection algorithms behind one trait: weighted random and Maglev.

use crate::error::{Error, Result};
use crate::maglev::Maglev;

/// Picks a backend for a flow from its hash.
///
/// A selector is built once per backend set by the control plane; picking is what the datapath
/// does per new flow, so it must be cheap and must not allocate.
pub trait Selector {
    /// What the selector hands back for a flow (a `BackendId`, a name, …).
    type Backend;

    /// The backend for a flow with hash `flow_hash`, or `None` when there is none.
    fn pick(&self, flow_hash: u32) -> Option<&Self::Backend>;
}

impl<T: Clone> Selector for Maglev<T> {
    type Backend = T;

    fn pick(&self, flow_hash: u32) -> Option<&T> {
        Some(self.lookup(flow_hash))
    }
}

/// Weighted random: a backend of weight `w` out of a total `W` takes a flow with probability
/// `w / W`, the flow hash serving as the random number.
///
/// Backends keep the order they were given in: cumulative weights are laid out in that order and
/// a flow goes to the first backend whose cumulative weight exceeds `flow_hash mod W`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedRandom<T> {
    backends: Vec<T>,
    /// `ends[i]` is the sum of the weights of backends `0..=i`.
    ends: Vec<u32>,
}

impl<T: Clone> WeightedRandom<T> {
    /// Builds the selector from `(backend, weight)` pairs; weight-0 backends take no flow.
    ///
    /// Errors: [`Error::NoBackends`] when no backend has a non-zero weight,
    /// [`Error::WeightOverflow`] when the weights add up to more than `u32::MAX`.
    pub fn build(backends: &[(T, u32)]) -> Result<Self> {
        let mut out = Vec::with_capacity(backends.len());
        let mut ends = Vec::with_capacity(backends.len());
        let mut total: u32 = 0;
        for (b, w) in backends {
            if *w == 0 {
                continue;
            }
            total = total.checked_add(*w).ok_or(Error::WeightOverflow {
                backends: backends.len(),
            })?;
            out.push(b.clone());
            ends.push(total);
        }
        if out.is_empty() {
            return Err(Error::NoBackends);
        }
        Ok(Self {
            backends: out,
            ends,
        })
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u32 {
        self.ends.last().copied().unwrap_or(0)
    }
}

/// The index of the first cumulative weight above `point`: the slot a weighted pick lands on.
pub(crate) fn weighted_index(count: usize, point: u32, end_at: impl Fn(usize) -> u32) -> usize {
    // Binary search over `end_at(0..count)`, which is increasing; at most 33 steps.
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if end_at(mid) <= point {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.min(count.saturating_sub(1))
}

impl<T: Clone> Selector for WeightedRandom<T> {
    type Backend = T;

    fn pick(&self, flow_hash: u32) -> Option<&T> {
        let total = self.total_weight();
        if total == 0 {
            return None;
        }
        let i = weighted_index(self.ends.len(), flow_hash % total, |i| self.ends[i]);
        self.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::{MaglevBackend, TableSize};

    fn histogram<S: Selector<Backend = char>>(s: &S, n: u32) -> [u32; 3] {
        let mut h = [0; 3];
        for x in 0..n {
            let c = *s.pick(x.wrapping_mul(2_654_435_761)).unwrap();
            h[(c as u8 - b'a') as usize] += 1;
        }
        h
    }

    #[test]
    fn weighted_random_follows_weights_exactly_over_a_period() {
        let s = WeightedRandom::build(&[('a', 1), ('b', 0), ('c', 3)]).unwrap();
        assert_eq!(s.total_weight(), 4);
        // Hashes 0..4 cover one period of `hash mod W`.
        let picks: Vec<char> = (0..4).map(|h| *s.pick(h).unwrap()).collect();
        assert_eq!(picks, ['a', 'c', 'c', 'c']);
        let h = histogram(&s, 40_000);
        assert_eq!(h[1], 0);
        assert!((h[2] as f64 / h[0] as f64 - 3.0).abs() < 0.2, "{h:?}");
        assert_eq!(
            WeightedRandom::<char>::build(&[('a', 0)]).unwrap_err(),
            Error::NoBackends
        );
        assert_eq!(
            WeightedRandom::build(&[('a', u32::MAX), ('b', 1)]).unwrap_err(),
            Error::WeightOverflow { backends: 2 }
        );
    }

    #[test]
    fn both_algorithms_behind_one_trait() {
        let maglev = Maglev::build(
            TableSize::new(251).unwrap(),
            &[
                MaglevBackend::new("a", 'a', 1),
                MaglevBackend::new("b", 'b', 1),
                MaglevBackend::new("c", 'c', 1),
            ],
        )
        .unwrap();
        let random = WeightedRandom::build(&[('a', 1), ('b', 1), ('c', 1)]).unwrap();
        for h in [histogram(&maglev, 30_000), histogram(&random, 30_000)] {
            for n in h {
                assert!((8_000..12_000).contains(&n), "{h:?}");
            }
        }
    }

    #[test]
    fn weighted_index_edges() {
        let ends = [2u32, 5, 9];
        let at = |i: usize| ends[i];
        assert_eq!(weighted_index(3, 0, at), 0);
        assert_eq!(weighted_index(3, 1, at), 0);
        assert_eq!(weighted_index(3, 2, at), 1);
        assert_eq!(weighted_index(3, 4, at), 1);
        assert_eq!(weighted_index(3, 5, at), 2);
        assert_eq!(weighted_index(3, 8, at), 2);
    }
}
