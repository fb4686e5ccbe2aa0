//! Security identities: label sets and the [`IdentityAllocator`].
//!
//! An identity stands for everything the policy decision may depend on about a peer address:
//!
//! - for a pod: its namespace, the namespace's labels, the pod's labels and its named container
//!   ports (so that a named port resolves the same way for every pod of the identity);
//! - for anything else: whether it is the host (host-network pods) or the world;
//! - in both cases, the set of `ipBlock`s of the policies that contain the address.
//!
//! Pods with equal identity-relevant labels share one identity. The allocator hands out
//! numbers stably: the same labels keep the same number while in use, and the mapping can be
//! exported and restored across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::labels::Labels;
use crate::map::Identity;
use crate::model::Protocol;

/// What kind of thing an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    /// Pods (not host-network).
    Pod {
        /// Namespace.
        namespace: String,
        /// The namespace's labels.
        namespace_labels: Labels,
        /// The pod's labels.
        labels: Labels,
        /// Named container ports: name to (protocol, port).
        named_ports: BTreeMap<String, (Protocol, u16)>,
    },
    /// The host: host-network pods' addresses.
    Host,
    /// Addresses outside the cluster.
    World,
}

/// The labels an identity is allocated for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentityLabels {
    /// Pod, host or world.
    pub subject: Subject,
    /// Keys ([`crate::IpBlock::key`]) of the policy `ipBlock`s containing the address.
    pub ip_blocks: BTreeSet<String>,
}

impl IdentityLabels {
    /// The reserved identity of these labels, if they have one (`host` and `world` without
    /// ipBlocks).
    pub fn reserved(&self) -> Option<Identity> {
        if !self.ip_blocks.is_empty() {
            return None;
        }
        match self.subject {
            Subject::Host => Some(Identity::HOST),
            Subject::World => Some(Identity::WORLD),
            Subject::Pod { .. } => None,
        }
    }

    /// Cilium-style label strings, for display.
    pub fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.subject {
            Subject::Pod {
                namespace,
                namespace_labels,
                labels,
                named_ports,
            } => {
                out.push(format!("k8s:io.kubernetes.pod.namespace={namespace}"));
                for (k, v) in namespace_labels {
                    out.push(format!("k8s:io.cilium.k8s.namespace.labels.{k}={v}"));
                }
                for (k, v) in labels {
                    out.push(format!("k8s:{k}={v}"));
                }
                for (name, (proto, port)) in named_ports {
                    out.push(format!("strata:port.{name}={proto}/{port}"));
                }
            }
            Subject::Host => out.push("reserved:host".into()),
            Subject::World => out.push("reserved:world".into()),
        }
        for block in &self.ip_blocks {
            out.push(format!("cidr:{block}"));
        }
        out
    }
}

#[derive(Clone, Debug)]
struct Slot {
    labels: IdentityLabels,
    refs: usize,
}

/// Allocates identities to label sets, reference counted, with stable numbers.
///
/// Reserved label sets map to reserved identities (never counted). Pod label sets get numbers
/// from [`Identity::FIRST_CLUSTER`], other label sets from [`Identity::FIRST_LOCAL`]; numbers
/// of released identities are not reused before the counters wrap, so a datapath that still
/// holds an old number never confuses it with a new label set.
#[derive(Clone, Debug)]
pub struct IdentityAllocator {
    by_labels: HashMap<IdentityLabels, Identity>,
    slots: BTreeMap<Identity, Slot>,
    next_cluster: u32,
    next_local: u32,
}

impl Default for IdentityAllocator {
    fn default() -> Self {
        IdentityAllocator {
            by_labels: HashMap::new(),
            slots: BTreeMap::new(),
            next_cluster: Identity::FIRST_CLUSTER.0,
            next_local: Identity::FIRST_LOCAL.0,
        }
    }
}

/// Exported allocator state: the label sets in use (or restored and not yet reclaimed) with
/// their numbers, and the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorState {
    /// Identity numbers and their labels.
    pub identities: Vec<(Identity, IdentityLabels)>,
    /// Next pod identity number.
    pub next_cluster: u32,
    /// Next local identity number.
    pub next_local: u32,
}

impl IdentityAllocator {
    /// An empty allocator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores exported state. The restored identities are remembered with no users: the
    /// first [`acquire`](Self::acquire) of their labels gets the same number back, and
    /// [`forget_unused`](Self::forget_unused) drops the ones nobody claimed.
    pub fn restore(state: &AllocatorState) -> Result<Self, Error> {
        let mut a = IdentityAllocator {
            next_cluster: state.next_cluster.max(Identity::FIRST_CLUSTER.0),
            next_local: state.next_local.max(Identity::FIRST_LOCAL.0),
            ..Self::default()
        };
        for (id, labels) in &state.identities {
            let bad = |reason: String| Err(Error::InvalidState { reason });
            if labels.reserved().is_some() || id.is_reserved() || *id == Identity::ANY {
                return bad(format!("identity {id} is reserved"));
            }
            let local = !matches!(labels.subject, Subject::Pod { .. });
            if local != (id.0 >= Identity::FIRST_LOCAL.0) {
                return bad(format!(
                    "identity {id} is in the wrong range for its labels"
                ));
            }
            if a.slots.contains_key(id) || a.by_labels.contains_key(labels) {
                return bad(format!("identity {id} or its labels listed twice"));
            }
            a.by_labels.insert(labels.clone(), *id);
            a.slots.insert(
                *id,
                Slot {
                    labels: labels.clone(),
                    refs: 0,
                },
            );
            if local {
                a.next_local = a.next_local.max(id.0 + 1);
            } else {
                a.next_cluster = a.next_cluster.max(id.0 + 1);
            }
        }
        Ok(a)
    }

    /// Exports the state (identities in use, and restored ones not yet reclaimed).
    pub fn export(&self) -> AllocatorState {
        AllocatorState {
            identities: self
                .slots
                .iter()
                .map(|(id, s)| (*id, s.labels.clone()))
                .collect(),
            next_cluster: self.next_cluster,
            next_local: self.next_local,
        }
    }

    /// Takes a reference on the identity of `labels`, allocating it when new; returns the
    /// identity and whether it was newly allocated (or revived from restored state).
    pub fn acquire(&mut self, labels: &IdentityLabels) -> (Identity, bool) {
        if let Some(id) = labels.reserved() {
            return (id, false);
        }
        if let Some(&id) = self.by_labels.get(labels) {
            let slot = self.slots.get_mut(&id).expect("slot of a known identity");
            slot.refs += 1;
            return (id, slot.refs == 1);
        }
        let local = !matches!(labels.subject, Subject::Pod { .. });
        let id = loop {
            let (counter, first, last) = if local {
                (&mut self.next_local, Identity::FIRST_LOCAL.0, u32::MAX)
            } else {
                (
                    &mut self.next_cluster,
                    Identity::FIRST_CLUSTER.0,
                    Identity::FIRST_LOCAL.0 - 1,
                )
            };
            let candidate = Identity(*counter);
            *counter = if *counter >= last {
                first
            } else {
                *counter + 1
            };
            if !self.slots.contains_key(&candidate) {
                break candidate;
            }
        };
        self.by_labels.insert(labels.clone(), id);
        self.slots.insert(
            id,
            Slot {
                labels: labels.clone(),
                refs: 1,
            },
        );
        (id, true)
    }

    /// Drops a reference; returns `true` when the identity was released (no users left).
    /// Reserved identities and unknown numbers are ignored.
    pub fn release(&mut self, id: Identity) -> bool {
        let Some(slot) = self.slots.get_mut(&id) else {
            return false;
        };
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs > 0 {
            return false;
        }
        let slot = self.slots.remove(&id).expect("present");
        self.by_labels.remove(&slot.labels);
        true
    }

    /// Drops restored identities nobody acquired; returns them.
    pub fn forget_unused(&mut self) -> Vec<Identity> {
        let unused: Vec<Identity> = self
            .slots
            .iter()
            .filter(|(_, s)| s.refs == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in &unused {
            let slot = self.slots.remove(id).expect("present");
            self.by_labels.remove(&slot.labels);
        }
        unused
    }

    /// The labels of `id` (reserved identities included).
    pub fn labels(&self, id: Identity) -> Option<IdentityLabels> {
        match id {
            Identity::HOST => Some(IdentityLabels {
                subject: Subject::Host,
                ip_blocks: BTreeSet::new(),
            }),
            Identity::WORLD => Some(IdentityLabels {
                subject: Subject::World,
                ip_blocks: BTreeSet::new(),
            }),
            _ => self.slots.get(&id).map(|s| s.labels.clone()),
        }
    }

    /// The labels of an allocated (not reserved) identity, by reference.
    pub fn labels_ref(&self, id: Identity) -> Option<&IdentityLabels> {
        self.slots.get(&id).map(|s| &s.labels)
    }

    /// The identity of `labels`, if allocated.
    pub fn get(&self, labels: &IdentityLabels) -> Option<Identity> {
        labels
            .reserved()
            .or_else(|| self.by_labels.get(labels).copied())
    }

    /// Identities with users (allocated ones, not reserved), in order.
    pub fn in_use(&self) -> impl Iterator<Item = (Identity, &IdentityLabels)> {
        self.slots
            .iter()
            .filter(|(_, s)| s.refs > 0)
            .map(|(id, s)| (*id, &s.labels))
    }

    /// Number of allocated identities.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no identity is allocated.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(app: &str) -> IdentityLabels {
        IdentityLabels {
            subject: Subject::Pod {
                namespace: "ns".into(),
                namespace_labels: Labels::new(),
                labels: Labels::from([("app".to_string(), app.to_string())]),
                named_ports: BTreeMap::new(),
            },
            ip_blocks: BTreeSet::new(),
        }
    }

    #[test]
    fn shared_counted_and_stable_across_restore() {
        let mut a = IdentityAllocator::new();
        let (web, new) = a.acquire(&pod("web"));
        assert!(new);
        assert_eq!(web, Identity::FIRST_CLUSTER);
        assert_eq!(a.acquire(&pod("web")), (web, false));
        let (db, _) = a.acquire(&pod("db"));
        assert_ne!(web, db);
        let world = IdentityLabels {
            subject: Subject::World,
            ip_blocks: BTreeSet::from(["10.0.0.0/8".to_string()]),
        };
        let (cidr, _) = a.acquire(&world);
        assert!(cidr.0 >= Identity::FIRST_LOCAL.0);
        assert_eq!(
            a.acquire(&IdentityLabels {
                subject: Subject::World,
                ip_blocks: BTreeSet::new()
            }),
            (Identity::WORLD, false)
        );

        let state = a.export();
        let json = serde_json::to_string(&state).unwrap();
        let restored: AllocatorState = serde_json::from_str(&json).unwrap();
        let mut b = IdentityAllocator::restore(&restored).unwrap();
        // Acquire in another order: same numbers.
        assert_eq!(b.acquire(&world).0, cidr);
        assert_eq!(b.acquire(&pod("db")).0, db);
        assert!(b.acquire(&pod("new")).0 > db);
        assert_eq!(b.forget_unused(), vec![web]);

        assert!(!a.release(web));
        assert!(a.release(web));
        assert!(a.labels(web).is_none());
        assert_ne!(
            a.acquire(&pod("web")).0,
            web,
            "numbers are not reused at once"
        );
    }

    #[test]
    fn restore_rejects_inconsistent_state() {
        let state = AllocatorState {
            identities: vec![(Identity(300), pod("a")), (Identity(301), pod("a"))],
            next_cluster: 0,
            next_local: 0,
        };
        assert!(IdentityAllocator::restore(&state).is_err());
        let state = AllocatorState {
            identities: vec![(Identity(2), pod("a"))],
            ..Default::default()
        };
        assert!(IdentityAllocator::restore(&state).is_err());
        let state = AllocatorState {
            identities: vec![(Identity(Identity::FIRST_LOCAL.0 + 3), pod("a"))],
            ..Default::default()
        };
        assert!(IdentityAllocator::restore(&state).is_err());
    }
}
