//! Cluster-pool carving: each node gets its pod CIDR(s) out of the cluster CIDRs, as Cilium's
//! operator does in cluster-pool mode.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{Error, Family, Result};

/// The cluster CIDRs of one family and the prefix length of each node's block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyPlan {
    /// Cluster CIDRs, used in order.
    pub cidrs: Vec<IpNet>,
    /// Prefix length of a node's block (e.g. 24 for a /24 per node).
    pub node_mask: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Carver {
    plan: FamilyPlan,
    /// Per cluster CIDR: taken block indices and the lowest index that may be free.
    taken: Vec<(BTreeSet<u128>, u128)>,
}

fn block_count(cidr: IpNet, mask: u8) -> u128 {
    let bits = u32::from(mask - cidr.prefix_len());
    if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

fn block_at(cidr: IpNet, mask: u8, index: u128) -> IpNet {
    match cidr {
        IpNet::V4(net) => {
            let base = u32::from(net.network());
            let addr = base + ((index as u32) << (32 - u32::from(mask)));
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), mask).expect("mask checked"))
        }
        IpNet::V6(net) => {
            let base = u128::from(net.network());
            let shift = 128 - u32::from(mask);
            let addr = base + if shift >= 128 { 0 } else { index << shift };
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), mask).expect("mask checked"))
        }
    }
}

fn index_of(cidr: IpNet, mask: u8, block: IpNet) -> Option<u128> {
    if block.prefix_len() != mask || !cidr.contains(&block) {
        return None;
    }
    let offset = match (cidr.network(), block.network()) {
        (IpAddr::V4(c), IpAddr::V4(b)) => u128::from(u32::from(b) - u32::from(c)),
        (IpAddr::V6(c), IpAddr::V6(b)) => u128::from(b) - u128::from(c),
        _ => return None,
    };
    let shift = u32::from(block.max_prefix_len() - mask);
    Some(if shift >= 128 { 0 } else { offset >> shift })
}

impl Carver {
    fn new(family: Family, plan: FamilyPlan) -> Result<Carver> {
        let max = match family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        let mut cidrs: Vec<IpNet> = plan.cidrs.iter().map(IpNet::trunc).collect();
        for (i, a) in cidrs.iter().enumerate() {
            if Family::of(a.network()) != family {
                return Err(Error::Corrupt {
                    key: a.to_string(),
                    reason: format!("listed as an {family} cluster CIDR"),
                });
            }
            if plan.node_mask < a.prefix_len() || plan.node_mask > max {
                return Err(Error::MaskDoesNotFit {
                    cidr: *a,
                    mask: plan.node_mask,
                    min: a.prefix_len(),
                    max,
                });
            }
            for b in &cidrs[..i] {
                if a.contains(b) || b.contains(a) {
                    return Err(Error::Overlap {
                        first: *b,
                        second: *a,
                    });
                }
            }
        }
        cidrs.shrink_to_fit();
        let taken = cidrs.iter().map(|_| (BTreeSet::new(), 0)).collect();
        Ok(Carver {
            plan: FamilyPlan {
                cidrs,
                node_mask: plan.node_mask,
            },
            taken,
        })
    }

    /// The lowest free block, without taking it.
    fn next_free(&mut self) -> Option<(usize, u128)> {
        let mask = self.plan.node_mask;
        for (i, (taken, hint)) in self.taken.iter_mut().enumerate() {
            let count = block_count(self.plan.cidrs[i], mask);
            while *hint < count && taken.contains(hint) {
                *hint += 1;
            }
            if *hint < count {
                return Some((i, *hint));
            }
        }
        None
    }

    fn take(&mut self, (cidr, index): (usize, u128)) {
        let (taken, hint) = &mut self.taken[cidr];
        taken.insert(index);
        if *hint == index {
            *hint += 1;
        }
    }

    fn give_back(&mut self, block: IpNet) {
        for (i, cidr) in self.plan.cidrs.iter().enumerate() {
            if let Some(index) = index_of(*cidr, self.plan.node_mask, block) {
                let (taken, hint) = &mut self.taken[i];
                taken.remove(&index);
                *hint = (*hint).min(index);
            }
        }
    }

    fn locate(&self, block: IpNet) -> Option<(usize, u128)> {
        self.plan
            .cidrs
            .iter()
            .enumerate()
            .find_map(|(i, cidr)| index_of(*cidr, self.plan.node_mask, block).map(|x| (i, x)))
    }
}

/// Carves node pod CIDRs out of cluster CIDRs: deterministic (the lowest free block, cluster
/// CIDRs in order), never overlapping, dual-stack (one block per configured family).
///
/// ```
/// use strata_ipam::{ClusterPool, FamilyPlan};
/// let mut cluster = ClusterPool::new(
///     Some(FamilyPlan { cidrs: vec!["10.0.0.0/16".parse()?], node_mask: 24 }),
///     Some(FamilyPlan { cidrs: vec!["fd00::/112".parse()?], node_mask: 120 }),
/// )?;
/// let cidrs = cluster.allocate_node("node-0")?;
/// assert_eq!(cidrs, vec!["10.0.0.0/24".parse()?, "fd00::/120".parse()?]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPool {
    v4: Option<Carver>,
    v6: Option<Carver>,
    nodes: BTreeMap<String, Vec<IpNet>>,
}

impl ClusterPool {
    /// A cluster pool with an IPv4 plan, an IPv6 plan, or both.
    pub fn new(v4: Option<FamilyPlan>, v6: Option<FamilyPlan>) -> Result<ClusterPool> {
        let v4 = v4
            .filter(|p| !p.cidrs.is_empty())
            .map(|p| Carver::new(Family::V4, p))
            .transpose()?;
        let v6 = v6
            .filter(|p| !p.cidrs.is_empty())
            .map(|p| Carver::new(Family::V6, p))
            .transpose()?;
        if v4.is_none() && v6.is_none() {
            return Err(Error::NoPools);
        }
        Ok(ClusterPool {
            v4,
            v6,
            nodes: BTreeMap::new(),
        })
    }

    fn carvers(&mut self) -> impl Iterator<Item = &mut Carver> {
        self.v4.iter_mut().chain(self.v6.iter_mut())
    }

    /// Gives `node` one block per family (IPv4 first) and returns them. Nothing changes on
    /// error.
    pub fn allocate_node(&mut self, node: &str) -> Result<Vec<IpNet>> {
        if let Some(cidrs) = self.nodes.get(node) {
            return Err(Error::DuplicateNode {
                node: node.to_owned(),
                cidrs: cidrs.clone(),
            });
        }
        let nodes = self.nodes.len();
        let mut picks = Vec::new();
        for carver in self.carvers() {
            let pick = carver.next_free().ok_or_else(|| Error::ClusterExhausted {
                cidrs: carver.plan.cidrs.clone(),
                mask: carver.plan.node_mask,
                nodes,
            })?;
            picks.push(pick);
        }
        let mut cidrs = Vec::with_capacity(picks.len());
        for (carver, pick) in self.carvers().zip(picks).collect::<Vec<_>>() {
            carver.take(pick);
            cidrs.push(block_at(
                carver.plan.cidrs[pick.0],
                carver.plan.node_mask,
                pick.1,
            ));
        }
        self.nodes.insert(node.to_owned(), cidrs.clone());
        Ok(cidrs)
    }

    /// Records that `node` holds `cidrs` (for example read back from node objects). Each CIDR
    /// must be a free block of this pool.
    pub fn restore_node(&mut self, node: &str, cidrs: &[IpNet]) -> Result<()> {
        if let Some(held) = self.nodes.get(node) {
            return Err(Error::DuplicateNode {
                node: node.to_owned(),
                cidrs: held.clone(),
            });
        }
        let mut picks = Vec::new();
        for &cidr in cidrs {
            let family = Family::of(cidr.network());
            let carver = match family {
                Family::V4 => self.v4.as_ref(),
                Family::V6 => self.v6.as_ref(),
            };
            let pick = carver
                .and_then(|c| c.locate(cidr))
                .ok_or_else(|| Error::OutsidePool {
                    addr: cidr.network(),
                    pools: carver.map(|c| c.plan.cidrs.clone()).unwrap_or_default(),
                })?;
            let carver = carver.expect("located above");
            if carver.taken[pick.0].0.contains(&pick.1) {
                let owner = self
                    .nodes
                    .iter()
                    .find(|(_, held)| held.contains(&cidr))
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default();
                return Err(Error::DuplicateNode {
                    node: owner,
                    cidrs: vec![cidr],
                });
            }
            picks.push((family, pick));
        }
        for (family, pick) in picks {
            match family {
                Family::V4 => self.v4.as_mut(),
                Family::V6 => self.v6.as_mut(),
            }
            .expect("located above")
            .take(pick);
        }
        self.nodes.insert(node.to_owned(), cidrs.to_vec());
        Ok(())
    }

    /// Takes `node`'s blocks back and returns them.
    pub fn release_node(&mut self, node: &str) -> Result<Vec<IpNet>> {
        let cidrs = self.nodes.remove(node).ok_or_else(|| Error::UnknownNode {
            node: node.to_owned(),
        })?;
        for &cidr in &cidrs {
            for carver in self.carvers() {
                carver.give_back(cidr);
            }
        }
        Ok(cidrs)
    }

    /// The blocks a node holds.
    pub fn node(&self, node: &str) -> Option<&[IpNet]> {
        self.nodes.get(node).map(Vec::as_slice)
    }

    /// Every node and its blocks, by node name.
    pub fn nodes(&self) -> &BTreeMap<String, Vec<IpNet>> {
        &self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cidrs: &[&str], node_mask: u8) -> Option<FamilyPlan> {
        Some(FamilyPlan {
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            node_mask,
        })
    }

    #[test]
    fn carves_in_order_and_reuses_released_blocks() {
        let mut pool = ClusterPool::new(plan(&["10.0.0.0/22"], 24), None).unwrap();
        let names = ["a", "b", "c", "d"];
        let got: Vec<String> = names
            .iter()
            .map(|n| pool.allocate_node(n).unwrap()[0].to_string())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
        );
        let err = pool.allocate_node("e").unwrap_err();
        assert!(
            matches!(
                err,
                Error::ClusterExhausted {
                    mask: 24,
                    nodes: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            pool.release_node("b").unwrap()[0].to_string(),
            "10.0.1.0/24"
        );
        assert_eq!(
            pool.allocate_node("e").unwrap()[0].to_string(),
            "10.0.1.0/24"
        );
    }

    #[test]
    fn second_cluster_cidr_used_when_first_is_full() {
        let mut pool = ClusterPool::new(plan(&["10.0.0.0/24", "10.1.0.0/24"], 25), None).unwrap();
        let got: Vec<String> = (0..4)
            .map(|i| pool.allocate_node(&format!("n{i}")).unwrap()[0].to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.0.0.0/25",
                "10.0.0.128/25",
                "10.1.0.0/25",
                "10.1.0.128/25"
            ]
        );
    }

    #[test]
    fn dual_stack_is_atomic() {
        let mut pool =
            ClusterPool::new(plan(&["10.0.0.0/23"], 24), plan(&["fd00::/120"], 120)).unwrap();
        let cidrs = pool.allocate_node("a").unwrap();
        assert_eq!(cidrs.len(), 2);
        // IPv6 is exhausted now: the IPv4 block must not be consumed by the failed call.
        assert!(matches!(
            pool.allocate_node("b"),
            Err(Error::ClusterExhausted { .. })
        ));
        pool.release_node("a").unwrap();
        assert_eq!(
            pool.allocate_node("b").unwrap()[0].to_string(),
            "10.0.0.0/24"
        );
    }

    #[test]
    fn bad_masks_and_overlaps_are_typed() {
        assert!(matches!(
            ClusterPool::new(plan(&["10.0.0.0/16"], 8), None),
            Err(Error::MaskDoesNotFit {
                mask: 8,
                min: 16,
                ..
            })
        ));
        assert!(matches!(
            ClusterPool::new(plan(&["10.0.0.0/16"], 33), None),
            Err(Error::MaskDoesNotFit { .. })
        ));
        assert!(matches!(
            ClusterPool::new(plan(&["10.0.0.0/16", "10.0.1.0/24"], 24), None),
            Err(Error::Overlap { .. })
        ));
        assert!(matches!(
            ClusterPool::new(plan(&["fd00::/64"], 120), None),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn restore_node_claims_exact_blocks() {
        let mut pool = ClusterPool::new(plan(&["10.0.0.0/16"], 24), None).unwrap();
        pool.restore_node("x", &["10.0.0.0/24".parse().unwrap()])
            .unwrap();
        assert_eq!(
            pool.allocate_node("y").unwrap()[0].to_string(),
            "10.0.1.0/24"
        );
        assert!(
            pool.restore_node("z", &["10.0.1.0/24".parse().unwrap()])
                .is_err()
        );
        assert!(
            pool.restore_node("z", &["10.9.0.0/24".parse().unwrap()])
                .is_err()
        );
    }
}
