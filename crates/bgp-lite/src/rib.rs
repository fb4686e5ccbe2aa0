//! Routing information bases without I/O: the paths learned from neighbors, the Loc-RIB with
//! best-path selection (RFC 4271 §9.1.2, the parts a node needs).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::wire::{AsPath, Community, LargeCommunity, Origin, UnknownAttribute, Update};

/// The attributes of a route, shared by every prefix of one UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    /// Next hop.
    pub next_hop: IpAddr,
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH (already merged with AS4_PATH for 2-octet peers).
    pub as_path: AsPath,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// COMMUNITIES.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<LargeCommunity>,
    /// Unknown optional transitive attributes, to pass on with the partial bit.
    pub unknown: Vec<UnknownAttribute>,
}

impl Path {
    /// The paths of an UPDATE: one for the classic NLRI (NEXT_HOP) and one for
    /// MP_REACH_NLRI (its next hop). `four_octet_as` tells whether AS4_PATH must be merged.
    pub fn from_update(update: &Update, four_octet_as: bool) -> (Option<Path>, Option<Path>) {
        let as_path = match (update.as_path(), update.as4_path()) {
            (Some(p), Some(p4)) if !four_octet_as => AsPath::reconstruct(p, p4),
            (Some(p), _) => p.clone(),
            (None, _) => AsPath::default(),
        };
        let unknown = update
            .attributes
            .iter()
            .filter_map(|a| match a {
                crate::wire::PathAttribute::Unknown(u) if u.is_transitive() => Some(u.passed_on()),
                _ => None,
            })
            .collect();
        let make = |next_hop: IpAddr| Path {
            next_hop,
            origin: update.origin().unwrap_or(Origin::Incomplete),
            as_path: as_path.clone(),
            med: update.med(),
            local_pref: update.local_pref(),
            communities: update.communities().to_vec(),
            large_communities: update.large_communities().to_vec(),
            unknown: Vec::<UnknownAttribute>::clone(&unknown),
        };
        let classic = (!update.nlri.is_empty())
            .then(|| update.next_hop())
            .flatten()
            .map(|nh| make(IpAddr::V4(nh)));
        let mp = update
            .mp_reach()
            .filter(|r| !r.nlri.is_empty())
            .map(|r| make(r.next_hop.addr()));
        (classic, mp)
    }
}

/// The neighbor a route was learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Neighbor address.
    pub address: IpAddr,
    /// Neighbor BGP identifier.
    pub router_id: Ipv4Addr,
    /// Neighbor AS.
    pub remote_as: u32,
    /// Whether the session is external.
    pub ebgp: bool,
}

/// One candidate route for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where it came from.
    pub peer: Peer,
    /// Its attributes.
    pub path: Arc<Path>,
}

/// Compares two candidates; `Less` means `a` is preferred. In order: higher LOCAL_PREF
/// (default 100), shorter AS_PATH, lower ORIGIN, lower MED (only between routes from the same
/// neighboring AS), eBGP over iBGP, lower BGP identifier, lower neighbor address.
pub fn compare(a: &Candidate, b: &Candidate) -> Ordering {
    let lp = |c: &Candidate| c.path.local_pref.unwrap_or(100);
    lp(b)
        .cmp(&lp(a))
        .then_with(|| a.path.as_path.path_len().cmp(&b.path.as_path.path_len()))
        .then_with(|| a.path.origin.cmp(&b.path.origin))
        .then_with(|| {
            if a.path.as_path.first() == b.path.as_path.first() {
                a.path.med.unwrap_or(0).cmp(&b.path.med.unwrap_or(0))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| b.peer.ebgp.cmp(&a.peer.ebgp))
        .then_with(|| u32::from(a.peer.router_id).cmp(&u32::from(b.peer.router_id)))
        .then_with(|| a.peer.address.cmp(&b.peer.address))
}

/// The Loc-RIB: every candidate per prefix and the best one.
#[derive(Debug, Default, Clone)]
pub struct LocRib {
    routes: HashMap<IpNet, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    candidates: Vec<Candidate>,
    best: usize,
}

impl Entry {
    fn select(&mut self) {
        let mut best = 0;
        for i in 1..self.candidates.len() {
            if compare(&self.candidates[i], &self.candidates[best]) == Ordering::Less {
                best = i;
            }
        }
        self.best = best;
    }
}

impl LocRib {
    /// An empty Loc-RIB.
    pub fn new() -> LocRib {
        LocRib::default()
    }

    /// Adds or replaces the candidate of `candidate.peer` for `prefix`; returns whether the best
    /// route changed.
    pub fn insert(&mut self, prefix: IpNet, candidate: Candidate) -> bool {
        let entry = self.routes.entry(prefix).or_insert_with(|| Entry {
            candidates: Vec::with_capacity(1),
            best: 0,
        });
        let before = entry.candidates.get(entry.best).cloned();
        match entry
            .candidates
            .iter_mut()
            .find(|c| c.peer.address == candidate.peer.address)
        {
            Some(c) => *c = candidate,
            None => entry.candidates.push(candidate),
        }
        entry.select();
        before.as_ref() != entry.candidates.get(entry.best)
    }

    /// Removes the candidate of `peer` for `prefix`; returns whether the best route changed.
    pub fn remove(&mut self, prefix: &IpNet, peer: IpAddr) -> bool {
        let Some(entry) = self.routes.get_mut(prefix) else {
            return false;
        };
        let Some(pos) = entry.candidates.iter().position(|c| c.peer.address == peer) else {
            return false;
        };
        let was_best = pos == entry.best;
        entry.candidates.swap_remove(pos);
        if entry.candidates.is_empty() {
            self.routes.remove(prefix);
        } else {
            entry.select();
        }
        was_best
    }

    /// The best route for `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<&Candidate> {
        self.routes.get(prefix).map(|e| &e.candidates[e.best])
    }

    /// Every candidate for `prefix`.
    pub fn candidates(&self, prefix: &IpNet) -> &[Candidate] {
        self.routes
            .get(prefix)
            .map(|e| e.candidates.as_slice())
            .unwrap_or(&[])
    }

    /// Number of prefixes with at least one route.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every prefix with its best route.
    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &Candidate)> {
        self.routes.iter().map(|(p, e)| (p, &e.candidates[e.best]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(
        addr: u8,
        lp: Option<u32>,
        path: Vec<u32>,
        origin: Origin,
        med: Option<u32>,
    ) -> Candidate {
        Candidate {
            peer: Peer {
                address: IpAddr::from([127, 0, 0, addr]),
                router_id: Ipv4Addr::new(10, 0, 0, addr),
                remote_as: path.first().copied().unwrap_or(1),
                ebgp: true,
            },
            path: Arc::new(Path {
                next_hop: IpAddr::from([192, 0, 2, addr]),
                origin,
                as_path: AsPath::sequence(path),
                med,
                local_pref: lp,
                communities: vec![],
                large_communities: vec![],
                unknown: vec![],
            }),
        }
    }

    #[test]
    fn selection_order() {
        let p: IpNet = "10.0.0.0/24".parse().unwrap();
        let mut rib = LocRib::new();
        assert!(rib.insert(p, cand(1, None, vec![1, 2, 3], Origin::Igp, None)));
        // Shorter path wins.
        assert!(rib.insert(p, cand(2, None, vec![1, 2], Origin::Igp, None)));
        assert_eq!(
            rib.best(&p).unwrap().peer.address,
            IpAddr::from([127, 0, 0, 2])
        );
        // Higher local pref beats a shorter path.
        assert!(rib.insert(
            p,
            cand(3, Some(200), vec![5, 6, 7, 8], Origin::Incomplete, None)
        ));
        assert_eq!(
            rib.best(&p).unwrap().peer.address,
            IpAddr::from([127, 0, 0, 3])
        );
        assert!(rib.remove(&p, IpAddr::from([127, 0, 0, 3])));
        // Origin, then MED within the same neighbor AS.
        assert!(!rib.insert(p, cand(4, None, vec![1, 9], Origin::Igp, Some(5))));
        assert!(rib.insert(p, cand(2, None, vec![1, 2], Origin::Igp, Some(10))));
        assert_eq!(
            rib.best(&p).unwrap().peer.address,
            IpAddr::from([127, 0, 0, 4])
        );
        assert!(!rib.insert(p, cand(5, None, vec![1, 9], Origin::Egp, Some(0))));
        assert_eq!(
            rib.best(&p).unwrap().peer.address,
            IpAddr::from([127, 0, 0, 4])
        );
        // Lower router id breaks the tie.
        assert!(rib.insert(p, cand(0, None, vec![1, 8], Origin::Igp, Some(5))));
        assert_eq!(
            rib.best(&p).unwrap().peer.address,
            IpAddr::from([127, 0, 0, 0])
        );
        for a in [0, 1, 2, 4, 5] {
            rib.remove(&p, IpAddr::from([127, 0, 0, a]));
        }
        assert!(rib.is_empty());
    }

    proptest! {
        #[test]
        fn best_does_not_depend_on_arrival_order(
            routes in prop::collection::vec((any::<Option<u8>>(), 1usize..5, 0u8..3, any::<Option<u8>>()), 1..8),
            seed in any::<u64>(),
        ) {
            let p: IpNet = "10.0.0.0/8".parse().unwrap();
            let cands: Vec<Candidate> = routes.iter().enumerate().map(|(i, (lp, len, origin, med))| {
                let origin = [Origin::Igp, Origin::Egp, Origin::Incomplete][*origin as usize];
                // Same neighbor AS everywhere, so MED comparison is transitive.
                cand(i as u8 + 1, lp.map(u32::from), vec![7; *len], origin, med.map(u32::from))
            }).collect();
            let mut a = LocRib::new();
            for c in &cands { a.insert(p, c.clone()); }
            let mut shuffled = cands.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut b = LocRib::new();
            for c in &shuffled { b.insert(p, c.clone()); }
            prop_assert_eq!(a.best(&p), b.best(&p));
            let best = a.best(&p).unwrap().clone();
            for c in &cands { prop_assert!(compare(&best, c) != Ordering::Greater); }
            for c in &cands { a.remove(&p, c.peer.address); }
            prop_assert!(a.is_empty());
        }
    }
}
