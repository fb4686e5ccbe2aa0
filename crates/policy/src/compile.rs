//! The compiler: a [`Cluster`] turned into identities, an ipcache and per-endpoint maps, kept
//! up to date incrementally by [`PolicyEngine::apply`].
//!
//! Endpoints with equal namespace, labels and named ports select the same policies and resolve
//! ingress named ports the same way, so their maps are compiled once and shared (a "subject").
//! An update recomputes only what it can change:
//!
//! - the identities of the pods it touches (a pod, the pods of a relabelled namespace, the
//!   pods inside an `ipBlock` that appeared or disappeared);
//! - the subjects selected by a changed policy (old and new version), by a policy whose peers
//!   match an identity that was allocated or released, and the subjects of touched pods;
//! - the ipcache prefixes whose source changed.
//!
//! A subject is recompiled from scratch only when it first appears. Otherwise it keeps, per
//! selecting policy, the entries each rule contributes and, per key, how many rule entries
//! allow and deny it; an update recomputes only the contributions of the policies concerned
//! (changed, or whose peers match an allocated or released identity), re-resolves the deny
//! push-down of the identities whose keys changed, and patches the map in place: the cost is
//! proportional to the change, not to the size of the map.
//!
//! The resulting [`Diff`] (identities, ipcache entries, per-endpoint map entries to add and
//! delete) applied to the previous [`Compiled`] snapshot gives exactly the snapshot of a
//! compilation from scratch with the same identity numbers (tested by proptest).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::identity::{IdentityAllocator, IdentityLabels, Subject};
use crate::ipcache::{IpCache, IpCacheEntry};
use crate::labels::{LabelSelector, Labels};
use crate::map::{
    Direction, DirectionPolicy, EndpointPolicy, Entry, EntryKey, Identity, MapDiff, PolicyMap,
    Verdict, identity_keys, lookup, port_range_prefixes, push_down,
};
use crate::model::{
    Cluster, IpBlock, Namespace, NetworkPolicy, ObjectKey, Peer, Pod, PortSpec, Protocol, Rule,
};
use crate::oracle::{Flow, FlowEnd};

/// One change to the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add or replace a namespace.
    UpsertNamespace(Namespace),
    /// Remove a namespace.
    RemoveNamespace(String),
    /// Add or replace (relabel, re-address) a pod.
    UpsertPod(Pod),
    /// Remove a pod.
    RemovePod(ObjectKey),
    /// Add or replace a policy.
    UpsertPolicy(NetworkPolicy),
    /// Remove a policy.
    RemovePolicy(ObjectKey),
}

/// What the datapath holds for one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledEndpoint {
    /// The endpoint's own identity (that of its first address; of its labels when it has no
    /// address yet).
    pub identity: Identity,
    /// Its addresses; traffic between the endpoint and one of these is "self" and always
    /// allowed.
    pub addresses: Vec<IpAddr>,
    /// Its maps.
    pub policy: EndpointPolicy,
}

/// A full snapshot of the compiled state, as the datapath would receive it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiled {
    /// Identities in use and their labels.
    pub identities: BTreeMap<Identity, IdentityLabels>,
    /// The ipcache.
    pub ipcache: Vec<IpCacheEntry>,
    /// Per endpoint (`namespace/name`).
    pub endpoints: BTreeMap<String, CompiledEndpoint>,
}

/// The changes of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDiff {
    /// The endpoint.
    pub endpoint: ObjectKey,
    /// Its identity now.
    pub identity: Identity,
    /// Its addresses now.
    pub addresses: Vec<IpAddr>,
    /// Whether ingress is enforced now.
    pub ingress_enforced: bool,
    /// Whether egress is enforced now.
    pub egress_enforced: bool,
    /// Ingress entries to delete and add.
    pub ingress: MapDiff,
    /// Egress entries to delete and add.
    pub egress: MapDiff,
}

/// The changes made by one update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Identities allocated, with their labels.
    pub allocated: Vec<(Identity, IdentityLabels)>,
    /// Identities released.
    pub released: Vec<Identity>,
    /// ipcache entries to insert or overwrite.
    pub ipcache_set: Vec<IpCacheEntry>,
    /// ipcache prefixes to delete.
    pub ipcache_delete: Vec<IpNet>,
    /// Endpoints created or changed.
    pub endpoints: Vec<EndpointDiff>,
    /// Endpoints deleted.
    pub removed_endpoints: Vec<ObjectKey>,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty()
            && self.released.is_empty()
            && self.ipcache_set.is_empty()
            && self.ipcache_delete.is_empty()
            && self.endpoints.is_empty()
            && self.removed_endpoints.is_empty()
    }

    /// Number of map entries added and deleted over all endpoints.
    pub fn entry_changes(&self) -> usize {
        self.endpoints
            .iter()
            .map(|e| {
                e.ingress.add.len()
                    + e.ingress.delete.len()
                    + e.egress.add.len()
                    + e.egress.delete.len()
            })
            .sum()
    }
}

impl Compiled {
    /// Applies a diff, as a datapath would to its maps.
    pub fn apply(&mut self, diff: &Diff) {
        for id in &diff.released {
            self.identities.remove(id);
        }
        for (id, labels) in &diff.allocated {
            self.identities.insert(*id, labels.clone());
        }
        let mut ipcache: BTreeMap<IpNet, Identity> = self
            .ipcache
            .iter()
            .map(|e| (e.prefix, e.identity))
            .collect();
        for p in &diff.ipcache_delete {
            ipcache.remove(p);
        }
        for e in &diff.ipcache_set {
            ipcache.insert(e.prefix, e.identity);
        }
        self.ipcache = ipcache
            .into_iter()
            .map(|(prefix, identity)| IpCacheEntry { prefix, identity })
            .collect();
        for key in &diff.removed_endpoints {
            self.endpoints.remove(&key.to_string());
        }
        for d in &diff.endpoints {
            let ep = self
                .endpoints
                .entry(d.endpoint.to_string())
                .or_insert_with(|| CompiledEndpoint {
                    identity: d.identity,
                    addresses: Vec::new(),
                    policy: EndpointPolicy::default(),
                });
            ep.identity = d.identity;
            ep.addresses = d.addresses.clone();
            ep.policy.ingress.enforced = d.ingress_enforced;
            ep.policy.egress.enforced = d.egress_enforced;
            ep.policy.ingress.entries.apply(&d.ingress);
            ep.policy.egress.entries.apply(&d.egress);
        }
    }
}

/// What selects the policy of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SubjectKey {
    namespace: String,
    labels: Labels,
    named_ports: BTreeMap<String, (Protocol, u16)>,
}

struct SubjectState {
    policy: Arc<EndpointPolicy>,
    endpoints: BTreeSet<ObjectKey>,
    raw: SubjectRaw,
}

/// Per key of a map before deny push-down: how many rule entries allow it, how many deny it.
type RawCounts = BTreeMap<EntryKey, (u32, u32)>;

/// What one policy contributes to a subject it selects, per direction (ingress, egress).
#[derive(Clone, Default)]
struct PolicyContrib {
    isolates: [bool; 2],
    rules: [Vec<Arc<Vec<Entry>>>; 2],
}

/// How a subject's maps are made, kept so that a change to one policy's contribution (a peer
/// identity entering or leaving a rule, a policy changed) updates only the keys it touches.
#[derive(Default)]
struct SubjectRaw {
    /// Per policy selecting the subject.
    contrib: HashMap<ObjectKey, PolicyContrib>,
    /// Per direction, every rule entry counted by key and verdict.
    counts: [RawCounts; 2],
    /// Per direction, number of selecting policies that isolate.
    isolating: [u32; 2],
}

/// Per namespace, label key and value: the items (identities, subjects) whose labels have it.
/// Lets a selector with `matchLabels` look at the few candidates instead of a whole namespace.
type LabelIndex<T> = HashMap<String, HashMap<String, HashMap<String, BTreeSet<T>>>>;

fn index_labels<T: Ord + Clone>(index: &mut LabelIndex<T>, ns: &str, labels: &Labels, item: &T) {
    let by_key = index.entry(ns.to_string()).or_default();
    for (k, v) in labels {
        by_key
            .entry(k.clone())
            .or_default()
            .entry(v.clone())
            .or_default()
            .insert(item.clone());
    }
}

fn unindex_labels<T: Ord>(index: &mut LabelIndex<T>, ns: &str, labels: &Labels, item: &T) {
    let Some(by_key) = index.get_mut(ns) else {
        return;
    };
    for (k, v) in labels {
        if let Some(by_value) = by_key.get_mut(k) {
            if let Some(set) = by_value.get_mut(v) {
                set.remove(item);
                if set.is_empty() {
                    by_value.remove(v);
                }
            }
            if by_value.is_empty() {
                by_key.remove(k);
            }
        }
    }
    if by_key.is_empty() {
        index.remove(ns);
    }
}

/// The candidates for `selector` in namespace `ns`: `None` when the selector has no
/// `matchLabels` (every item of the namespace is a candidate), else the smallest set of items
/// having one of its labels (`Some(None)`: no item has it). Candidates still need `matches`.
fn candidates<'a, T>(
    index: &'a LabelIndex<T>,
    ns: &str,
    selector: &LabelSelector,
) -> Option<Option<&'a BTreeSet<T>>> {
    if selector.match_labels.is_empty() {
        return None;
    }
    let by_key = index.get(ns);
    Some(
        selector
            .match_labels
            .iter()
            .map(|(k, v)| by_key.and_then(|m| m.get(k)).and_then(|m| m.get(v)))
            .min_by_key(|set| set.map_or(0, BTreeSet::len))
            .flatten(),
    )
}

/// Subjects to recompute: `None` from scratch (a new subject), else only the contributions
/// of these policies.
type Dirty = BTreeMap<SubjectKey, Option<BTreeSet<ObjectKey>>>;

fn mark(dirty: &mut Dirty, subject: SubjectKey, policy: Option<&ObjectKey>) {
    use std::collections::btree_map::Entry as Slot;
    match (dirty.entry(subject), policy) {
        (Slot::Occupied(mut o), Some(k)) => {
            if let Some(set) = o.get_mut() {
                set.insert(k.clone());
            }
        }
        (Slot::Occupied(mut o), None) => *o.get_mut() = None,
        (Slot::Vacant(v), k) => {
            v.insert(k.map(|k| BTreeSet::from([k.clone()])));
        }
    }
}

fn count(counts: &mut RawCounts, entry: &Entry) {
    let c = counts.entry(entry.key).or_default();
    match entry.verdict {
        Verdict::Allow => c.0 += 1,
        Verdict::Deny => c.1 += 1,
    }
}

fn uncount(counts: &mut RawCounts, entry: &Entry) {
    if let Some(c) = counts.get_mut(&entry.key) {
        match entry.verdict {
            Verdict::Allow => c.0 -= 1,
            Verdict::Deny => c.1 -= 1,
        }
        if *c == (0, 0) {
            counts.remove(&entry.key);
        }
    }
}

/// The final entries of one identity from the raw counts.
fn resolve_identity(counts: &RawCounts, identity: u32, out: &mut Vec<Entry>) {
    let raw: Vec<(EntryKey, bool)> = counts
        .range(identity_keys(identity))
        .map(|(k, c)| (*k, c.1 > 0))
        .collect();
    push_down(&raw, out);
}

/// The map made from raw counts (deny push-down per identity).
fn build_map(counts: &RawCounts) -> PolicyMap {
    let mut map = PolicyMap::new();
    let mut group: Vec<(EntryKey, bool)> = Vec::new();
    let mut out = Vec::new();
    let mut flush = |group: &mut Vec<(EntryKey, bool)>, map: &mut PolicyMap| {
        out.clear();
        push_down(group, &mut out);
        for e in &out {
            map.insert(e.key, e.verdict);
        }
        group.clear();
    };
    for (k, c) in counts {
        if group.first().is_some_and(|g| g.0.identity != k.identity) {
            flush(&mut group, &mut map);
        }
        group.push((*k, c.1 > 0));
    }
    flush(&mut group, &mut map);
    map
}

/// Entries in `old` and not in `new`, and in `new` and not in `old` (as multisets).
fn rules_diff(old: &[Arc<Vec<Entry>>], new: &[Arc<Vec<Entry>>]) -> (Vec<Entry>, Vec<Entry>) {
    let flat = |rules: &[Arc<Vec<Entry>>]| {
        let mut v: Vec<Entry> = rules.iter().flat_map(|r| r.iter().copied()).collect();
        v.sort_unstable();
        v
    };
    let (old, new) = (flat(old), flat(new));
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                removed.push(*a);
                i += 1;
            }
            (Some(a), None) => {
                removed.push(*a);
                i += 1;
            }
            (_, Some(b)) => {
                added.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (removed, added)
}

fn same_rules(old: &[Arc<Vec<Entry>>], new: &[Arc<Vec<Entry>>]) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
}

/// The state of an endpoint before an update: a snapshot, or (for an endpoint the update does
/// not touch, in a subject updated in place) "as the subject was", whose changes are the
/// subject's diff.
enum Before {
    Snapshot(Visible),
    Subject(SubjectKey),
}

#[derive(Clone)]
struct EndpointState {
    subject: SubjectKey,
    identity: Identity,
    addresses: Vec<IpAddr>,
    /// Per address (or `None` for the label identity of a pod without address).
    held: Vec<(Option<IpAddr>, Identity)>,
}

type Visible = Option<(Identity, Vec<IpAddr>, Arc<EndpointPolicy>)>;

#[derive(Default)]
struct Events {
    allocated: BTreeMap<Identity, IdentityLabels>,
    released: BTreeMap<Identity, IdentityLabels>,
}

/// Memo of rule entries within one update, keyed by (policy, direction, deny, rule index).
type Memo = HashMap<(ObjectKey, Direction, bool, usize), Arc<Vec<Entry>>>;

/// The stateful compiler.
pub struct PolicyEngine {
    cluster: Cluster,
    allocator: IdentityAllocator,
    ipcache: IpCache,
    blocks: BTreeMap<String, (IpBlock, usize)>,
    cidr_ids: BTreeMap<IpNet, Identity>,
    host_addrs: HashMap<IpAddr, (Identity, BTreeSet<ObjectKey>)>,
    host_pods: HashMap<ObjectKey, Vec<IpAddr>>,
    endpoints: BTreeMap<ObjectKey, EndpointState>,
    subjects: HashMap<SubjectKey, SubjectState>,
    subjects_by_ns: HashMap<String, BTreeSet<SubjectKey>>,
    subjects_by_label: LabelIndex<SubjectKey>,
    pod_ids_by_ns: HashMap<String, BTreeSet<Identity>>,
    pod_ids_by_label: LabelIndex<Identity>,
    ids_by_block: HashMap<String, BTreeSet<Identity>>,
    ids_by_port_name: HashMap<String, BTreeSet<Identity>>,
}

impl Default for PolicyEngine {
    fn default() -> Self {
        Self::with_allocator(IdentityAllocator::new())
    }
}

fn default_prefixes() -> [IpNet; 2] {
    [
        "0.0.0.0/0".parse().expect("valid"),
        "::/0".parse().expect("valid"),
    ]
}

impl PolicyEngine {
    /// An engine with an empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine with an empty cluster whose identities come from `allocator` (for example one
    /// restored from [`crate::AllocatorState`], to keep numbers across restarts).
    pub fn with_allocator(allocator: IdentityAllocator) -> Self {
        let mut engine = PolicyEngine {
            cluster: Cluster::new(),
            allocator,
            ipcache: IpCache::new(),
            blocks: BTreeMap::new(),
            cidr_ids: BTreeMap::new(),
            host_addrs: HashMap::new(),
            host_pods: HashMap::new(),
            endpoints: BTreeMap::new(),
            subjects: HashMap::new(),
            subjects_by_ns: HashMap::new(),
            subjects_by_label: HashMap::new(),
            pod_ids_by_ns: HashMap::new(),
            pod_ids_by_label: HashMap::new(),
            ids_by_block: HashMap::new(),
            ids_by_port_name: HashMap::new(),
        };
        for p in default_prefixes() {
            engine.cidr_ids.insert(p, Identity::WORLD);
            engine.ipcache.insert(p, Identity::WORLD);
        }
        engine
    }

    /// Compiles `cluster` from scratch.
    pub fn compile(cluster: &Cluster) -> Self {
        Self::compile_with(cluster, IdentityAllocator::new())
    }

    /// Compiles `cluster` from scratch with identities from `allocator`; restored identities
    /// nobody uses are forgotten.
    pub fn compile_with(cluster: &Cluster, allocator: IdentityAllocator) -> Self {
        let mut engine = Self::with_allocator(allocator);
        engine.cluster = cluster.clone();
        for policy in cluster.policies() {
            for block in policy.ip_blocks() {
                engine
                    .blocks
                    .entry(block.key())
                    .or_insert_with(|| (block.clone(), 0))
                    .1 += 1;
            }
        }
        let touched = cluster.pods().map(|p| p.key()).collect();
        let policies = cluster.policies().map(|p| (p.key(), None)).collect();
        engine.sync(touched, policies, true);
        engine.allocator.forget_unused();
        engine
    }

    /// Applies one change and returns what changed in the compiled state. Invalid input is an
    /// error and leaves the engine untouched.
    pub fn apply(&mut self, change: Change) -> Result<Diff, Error> {
        let mut touched = BTreeSet::new();
        let mut policies = Vec::new();
        let mut blocks_changed = false;
        match change {
            Change::UpsertNamespace(ns) => {
                let name = ns.name.clone();
                self.cluster.upsert_namespace(ns);
                touched.extend(self.cluster.pods_in(&name).map(|p| p.key()));
            }
            Change::RemoveNamespace(name) => {
                self.cluster.remove_namespace(&name)?;
                touched.extend(self.cluster.pods_in(&name).map(|p| p.key()));
            }
            Change::UpsertPod(pod) => {
                touched.insert(pod.key());
                self.cluster.upsert_pod(pod)?;
            }
            Change::RemovePod(key) => {
                self.cluster.remove_pod(&key)?;
                touched.insert(key);
            }
            Change::UpsertPolicy(policy) => {
                let key = policy.key();
                let new_blocks: Vec<IpBlock> = policy.ip_blocks().cloned().collect();
                let old = self.cluster.upsert_policy(policy)?;
                blocks_changed |= self.count_blocks(new_blocks.iter(), true);
                if let Some(old) = &old {
                    blocks_changed |= self.count_blocks(old.ip_blocks(), false);
                }
                policies.push((key, old));
            }
            Change::RemovePolicy(key) => {
                let old = self.cluster.remove_policy(&key)?;
                blocks_changed |= self.count_blocks(old.ip_blocks(), false);
                policies.push((key, Some(old)));
            }
        }
        Ok(self.sync(touched, policies, blocks_changed))
    }

    /// Adds (or removes) references to blocks; returns whether the set of distinct blocks
    /// changed.
    fn count_blocks<'a>(&mut self, blocks: impl Iterator<Item = &'a IpBlock>, add: bool) -> bool {
        let mut changed = false;
        for block in blocks {
            let key = block.key();
            if add {
                let slot = self.blocks.entry(key).or_insert_with(|| (block.clone(), 0));
                slot.1 += 1;
                changed |= slot.1 == 1;
            } else if let Some(slot) = self.blocks.get_mut(&key) {
                slot.1 -= 1;
                if slot.1 == 0 {
                    self.blocks.remove(&key);
                    changed = true;
                }
            }
        }
        changed
    }

    fn memberships(&self, address: IpAddr) -> BTreeSet<String> {
        self.blocks
            .iter()
            .filter(|(_, (b, _))| b.contains(address))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn prefix_memberships(&self, prefix: &IpNet) -> BTreeSet<String> {
        self.blocks
            .iter()
            .filter(|(_, (b, _))| {
                b.cidr.contains(prefix) && !b.except.iter().any(|e| e.contains(prefix))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn acquire(&mut self, labels: &IdentityLabels, ev: &mut Events) -> Identity {
        let (id, new) = self.allocator.acquire(labels);
        if new && ev.released.remove(&id).is_none() {
            ev.allocated.insert(id, labels.clone());
        }
        id
    }

    fn release(&mut self, id: Identity, ev: &mut Events) {
        let labels = self.allocator.labels_ref(id).cloned();
        if self.allocator.release(id)
            && let Some(labels) = labels
            && ev.allocated.remove(&id).is_none()
        {
            ev.released.insert(id, labels);
        }
    }

    fn visible(&self, key: &ObjectKey) -> Visible {
        let ep = self.endpoints.get(key)?;
        let subject = self.subjects.get(&ep.subject)?;
        Some((ep.identity, ep.addresses.clone(), subject.policy.clone()))
    }

    fn sync(
        &mut self,
        mut touched: BTreeSet<ObjectKey>,
        policies: Vec<(ObjectKey, Option<NetworkPolicy>)>,
        blocks_changed: bool,
    ) -> Diff {
        let mut ev = Events::default();
        let mut dirty_prefixes: BTreeSet<IpNet> = BTreeSet::new();
        let mut dirty_subjects: Dirty = BTreeMap::new();
        let mut old_visible: BTreeMap<ObjectKey, Before> = BTreeMap::new();

        if blocks_changed {
            // Every pod whose address may have changed membership, and every prefix.
            for pod in self.cluster.pods() {
                if !pod.ips.is_empty() {
                    let m: Vec<IpAddr> = pod.ips.clone();
                    if m.iter().any(|a| {
                        self.held_memberships(&pod.key(), *a) != Some(self.memberships(*a))
                    }) {
                        touched.insert(pod.key());
                    }
                }
            }
            self.recompute_cidrs(&mut ev, &mut dirty_prefixes);
        }
        for key in &touched {
            self.recompute_pod(
                key,
                &mut ev,
                &mut dirty_prefixes,
                &mut dirty_subjects,
                &mut old_visible,
            );
        }

        // Indexes of identities.
        for (id, labels) in &ev.released {
            self.unindex_identity(*id, labels);
        }
        for (id, labels) in &ev.allocated {
            self.index_identity(*id, labels);
        }

        // Subjects to recompute.
        let mut selected = BTreeSet::new();
        for (key, old) in &policies {
            if let Some(old) = old {
                self.selected_subjects(old, &mut selected);
            }
            if let Some(new) = self.cluster.policy(key) {
                self.selected_subjects(new, &mut selected);
            }
            for subject in std::mem::take(&mut selected) {
                mark(&mut dirty_subjects, subject, Some(key));
            }
        }
        if !ev.allocated.is_empty() || !ev.released.is_empty() {
            let changed: Vec<&IdentityLabels> =
                ev.allocated.values().chain(ev.released.values()).collect();
            for policy in self.cluster.policies() {
                if changed.iter().any(|l| refers_to(policy, l)) {
                    self.selected_subjects(policy, &mut selected);
                    let key = policy.key();
                    for subject in std::mem::take(&mut selected) {
                        mark(&mut dirty_subjects, subject, Some(&key));
                    }
                }
            }
        }
        let mut memo = Memo::new();
        let mut subject_diffs: HashMap<SubjectKey, [MapDiff; 2]> = HashMap::new();
        for (subject, refresh) in dirty_subjects {
            let Some(state) = self.subjects.get(&subject) else {
                continue;
            };
            let Some(policies) = refresh else {
                let (new, raw) = self.compile_subject(&subject, &mut memo);
                if *state.policy != new {
                    for ep in &state.endpoints {
                        if !old_visible.contains_key(ep) {
                            old_visible.insert(ep.clone(), Before::Snapshot(self.visible(ep)));
                        }
                    }
                }
                let state = self.subjects.get_mut(&subject).expect("present");
                state.raw = raw;
                if *state.policy != new {
                    state.policy = Arc::new(new);
                }
                continue;
            };
            if let Some(diffs) = self.refresh_subject(&subject, &policies, &mut memo) {
                for ep in &self.subjects[&subject].endpoints {
                    if !old_visible.contains_key(ep) {
                        old_visible.insert(ep.clone(), Before::Subject(subject.clone()));
                    }
                }
                subject_diffs.insert(subject, diffs);
            }
        }

        // The diff.
        let mut diff = Diff::default();
        for (key, before) in old_visible {
            let old = match before {
                Before::Snapshot(old) => old,
                Before::Subject(subject) => {
                    let (identity, addresses, policy) =
                        self.visible(&key).expect("untouched endpoint");
                    let [ingress, egress] = subject_diffs[&subject].clone();
                    diff.endpoints.push(EndpointDiff {
                        endpoint: key,
                        identity,
                        addresses,
                        ingress_enforced: policy.ingress.enforced,
                        egress_enforced: policy.egress.enforced,
                        ingress,
                        egress,
                    });
                    continue;
                }
            };
            let new = self.visible(&key);
            match (old, new) {
                (Some(_), None) => diff.removed_endpoints.push(key),
                (None, None) => {}
                (old, Some((identity, addresses, policy))) => {
                    let empty = Arc::new(EndpointPolicy::default());
                    let (old_id, old_addrs, old_policy) =
                        old.unwrap_or((Identity::ANY, Vec::new(), empty));
                    if old_id == identity
                        && old_addrs == addresses
                        && (Arc::ptr_eq(&old_policy, &policy) || old_policy == policy)
                    {
                        continue;
                    }
                    diff.endpoints.push(EndpointDiff {
                        endpoint: key,
                        identity,
                        addresses,
                        ingress_enforced: policy.ingress.enforced,
                        egress_enforced: policy.egress.enforced,
                        ingress: old_policy.ingress.entries.diff(&policy.ingress.entries),
                        egress: old_policy.egress.entries.diff(&policy.egress.entries),
                    });
                }
            }
        }
        for prefix in dirty_prefixes {
            let new = self.ipcache_source(&prefix);
            let old = self.ipcache.get(&prefix);
            if new == old {
                continue;
            }
            match new {
                Some(identity) => {
                    self.ipcache.insert(prefix, identity);
                    diff.ipcache_set.push(IpCacheEntry { prefix, identity });
                }
                None => {
                    self.ipcache.remove(&prefix);
                    diff.ipcache_delete.push(prefix);
                }
            }
        }
        diff.allocated = ev.allocated.into_iter().collect();
        diff.released = ev.released.into_keys().collect();
        diff
    }

    fn held_memberships(&self, key: &ObjectKey, address: IpAddr) -> Option<BTreeSet<String>> {
        let id = if let Some(ep) = self.endpoints.get(key) {
            ep.held.iter().find(|(a, _)| *a == Some(address))?.1
        } else {
            self.host_addrs.get(&address)?.0
        };
        match self.allocator.labels(id) {
            Some(l) => Some(l.ip_blocks),
            None => Some(BTreeSet::new()),
        }
    }

    fn ipcache_source(&self, prefix: &IpNet) -> Option<Identity> {
        if prefix.prefix_len() == prefix.max_prefix_len() {
            let addr = prefix.addr();
            if let Some(pod) = self.cluster.pod_by_address(addr)
                && let Some(ep) = self.endpoints.get(&pod.key())
                && let Some((_, id)) = ep.held.iter().find(|(a, _)| *a == Some(addr))
            {
                return Some(*id);
            }
            if let Some((id, _)) = self.host_addrs.get(&addr) {
                return Some(*id);
            }
        }
        self.cidr_ids.get(prefix).copied()
    }

    fn recompute_cidrs(&mut self, ev: &mut Events, dirty: &mut BTreeSet<IpNet>) {
        let mut wanted: BTreeSet<IpNet> = default_prefixes().into_iter().collect();
        for (block, _) in self.blocks.values() {
            wanted.insert(block.cidr);
            wanted.extend(block.except.iter().copied());
        }
        let mut new_ids = BTreeMap::new();
        for prefix in &wanted {
            let labels = IdentityLabels {
                subject: Subject::World,
                ip_blocks: self.prefix_memberships(prefix),
            };
            new_ids.insert(*prefix, self.acquire(&labels, ev));
        }
        let old = std::mem::replace(&mut self.cidr_ids, new_ids);
        for (prefix, id) in old {
            self.release(id, ev);
            if self.cidr_ids.get(&prefix) != Some(&id) {
                dirty.insert(prefix);
            }
        }
        for prefix in wanted {
            dirty.insert(prefix);
        }
    }

    fn pod_labels(&self, pod: &Pod, address: Option<IpAddr>) -> IdentityLabels {
        IdentityLabels {
            subject: Subject::Pod {
                namespace: pod.namespace.clone(),
                namespace_labels: self.cluster.namespace_labels(&pod.namespace),
                labels: pod.labels.clone(),
                named_ports: named_ports(pod),
            },
            ip_blocks: address.map(|a| self.memberships(a)).unwrap_or_default(),
        }
    }

    fn recompute_pod(
        &mut self,
        key: &ObjectKey,
        ev: &mut Events,
        dirty_prefixes: &mut BTreeSet<IpNet>,
        dirty_subjects: &mut Dirty,
        old_visible: &mut BTreeMap<ObjectKey, Before>,
    ) {
        if !old_visible.contains_key(key) {
            old_visible.insert(key.clone(), Before::Snapshot(self.visible(key)));
        }
        let pod = self.cluster.pod(key).cloned();
        // New state first (acquire before release keeps unchanged identities).
        let new_state = match &pod {
            Some(p) if !p.host_network => {
                let mut held = Vec::new();
                if p.ips.is_empty() {
                    let labels = self.pod_labels(p, None);
                    held.push((None, self.acquire(&labels, ev)));
                }
                for ip in &p.ips {
                    let labels = self.pod_labels(p, Some(*ip));
                    held.push((Some(*ip), self.acquire(&labels, ev)));
                    dirty_prefixes.insert(IpNet::from(*ip));
                }
                Some(EndpointState {
                    subject: SubjectKey {
                        namespace: p.namespace.clone(),
                        labels: p.labels.clone(),
                        named_ports: named_ports(p),
                    },
                    identity: held[0].1,
                    addresses: p.ips.clone(),
                    held,
                })
            }
            _ => None,
        };
        let new_host: Vec<IpAddr> = match &pod {
            Some(p) if p.host_network => p.ips.clone(),
            _ => Vec::new(),
        };
        // Host-network addresses.
        let old_host = self.host_pods.remove(key).unwrap_or_default();
        let mut host_touched: BTreeSet<IpAddr> = old_host.iter().copied().collect();
        host_touched.extend(new_host.iter().copied());
        for a in &old_host {
            if let Some((_, users)) = self.host_addrs.get_mut(a) {
                users.remove(key);
            }
        }
        if !new_host.is_empty() {
            self.host_pods.insert(key.clone(), new_host.clone());
        }
        for a in &new_host {
            // `Identity::ANY` marks a slot that holds no reference yet.
            self.host_addrs
                .entry(*a)
                .or_insert_with(|| (Identity::ANY, BTreeSet::new()))
                .1
                .insert(key.clone());
        }
        for a in host_touched {
            dirty_prefixes.insert(IpNet::from(a));
            let Some((held, users)) = self.host_addrs.get(&a) else {
                continue;
            };
            let held = *held;
            if users.is_empty() {
                self.host_addrs.remove(&a);
                if held != Identity::ANY {
                    self.release(held, ev);
                }
                continue;
            }
            let labels = IdentityLabels {
                subject: Subject::Host,
                ip_blocks: self.memberships(a),
            };
            let id = self.acquire(&labels, ev);
            self.host_addrs.get_mut(&a).expect("present").0 = id;
            if held != Identity::ANY {
                self.release(held, ev);
            }
        }
        // Endpoint.
        let old_state = self.endpoints.remove(key);
        if let Some(old) = &old_state {
            for (addr, id) in &old.held {
                self.release(*id, ev);
                if let Some(a) = addr {
                    dirty_prefixes.insert(IpNet::from(*a));
                }
            }
            if new_state.as_ref().map(|s| &s.subject) != Some(&old.subject) {
                let subject = self
                    .subjects
                    .get_mut(&old.subject)
                    .expect("subject of endpoint");
                subject.endpoints.remove(key);
                if subject.endpoints.is_empty() {
                    self.subjects.remove(&old.subject);
                    if let Some(set) = self.subjects_by_ns.get_mut(&old.subject.namespace) {
                        set.remove(&old.subject);
                    }
                    unindex_labels(
                        &mut self.subjects_by_label,
                        &old.subject.namespace,
                        &old.subject.labels,
                        &old.subject,
                    );
                }
            }
        }
        if let Some(state) = new_state {
            let subject = state.subject.clone();
            match self.subjects.get_mut(&subject) {
                Some(s) => {
                    s.endpoints.insert(key.clone());
                }
                None => {
                    self.subjects.insert(
                        subject.clone(),
                        SubjectState {
                            policy: Arc::new(EndpointPolicy::default()),
                            endpoints: BTreeSet::from([key.clone()]),
                            raw: SubjectRaw::default(),
                        },
                    );
                    self.subjects_by_ns
                        .entry(subject.namespace.clone())
                        .or_default()
                        .insert(subject.clone());
                    index_labels(
                        &mut self.subjects_by_label,
                        &subject.namespace,
                        &subject.labels,
                        &subject,
                    );
                    mark(dirty_subjects, subject, None);
                }
            }
            self.endpoints.insert(key.clone(), state);
        }
    }

    fn index_identity(&mut self, id: Identity, labels: &IdentityLabels) {
        if let Subject::Pod {
            namespace,
            named_ports,
            labels,
            ..
        } = &labels.subject
        {
            self.pod_ids_by_ns
                .entry(namespace.clone())
                .or_default()
                .insert(id);
            index_labels(&mut self.pod_ids_by_label, namespace, labels, &id);
            for name in named_ports.keys() {
                self.ids_by_port_name
                    .entry(name.clone())
                    .or_default()
                    .insert(id);
            }
        }
        for block in &labels.ip_blocks {
            self.ids_by_block
                .entry(block.clone())
                .or_default()
                .insert(id);
        }
    }

    fn unindex_identity(&mut self, id: Identity, labels: &IdentityLabels) {
        fn drop_from(map: &mut HashMap<String, BTreeSet<Identity>>, key: &str, id: Identity) {
            if let Some(set) = map.get_mut(key) {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        if let Subject::Pod {
            namespace,
            named_ports,
            labels,
            ..
        } = &labels.subject
        {
            drop_from(&mut self.pod_ids_by_ns, namespace, id);
            unindex_labels(&mut self.pod_ids_by_label, namespace, labels, &id);
            for name in named_ports.keys() {
                drop_from(&mut self.ids_by_port_name, name, id);
            }
        }
        for block in &labels.ip_blocks {
            drop_from(&mut self.ids_by_block, block, id);
        }
    }

    fn selected_subjects(&self, policy: &NetworkPolicy, out: &mut BTreeSet<SubjectKey>) {
        let set = match candidates(
            &self.subjects_by_label,
            &policy.namespace,
            &policy.pod_selector,
        ) {
            Some(narrowed) => narrowed,
            None => self.subjects_by_ns.get(&policy.namespace),
        };
        if let Some(set) = set {
            out.extend(
                set.iter()
                    .filter(|s| policy.pod_selector.matches(&s.labels))
                    .cloned(),
            );
        }
    }

    fn peer_identities(&self, policy: &NetworkPolicy, peer: &Peer) -> Vec<Identity> {
        match peer {
            Peer::IpBlock(block) => self
                .ids_by_block
                .get(&block.key())
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            Peer::Pods {
                pod_selector,
                namespace_selector,
            } => {
                let mut out = Vec::new();
                let mut take = |ids: &BTreeSet<Identity>| {
                    for id in ids {
                        if let Some(IdentityLabels {
                            subject: Subject::Pod { labels, .. },
                            ..
                        }) = self.allocator.labels_ref(*id)
                            && pod_selector.as_ref().is_none_or(|s| s.matches(labels))
                        {
                            out.push(*id);
                        }
                    }
                };
                let mut take_ns = |ns: &str, all: &BTreeSet<Identity>| match pod_selector
                    .as_ref()
                    .and_then(|s| candidates(&self.pod_ids_by_label, ns, s))
                {
                    Some(Some(narrowed)) => take(narrowed),
                    Some(None) => {}
                    None => take(all),
                };
                match namespace_selector {
                    None => {
                        if let Some(ids) = self.pod_ids_by_ns.get(&policy.namespace) {
                            take_ns(&policy.namespace, ids);
                        }
                    }
                    Some(sel) => {
                        for (ns, ids) in &self.pod_ids_by_ns {
                            if sel.matches(&self.cluster.namespace_labels(ns)) {
                                take_ns(ns, ids);
                            }
                        }
                    }
                }
                out
            }
        }
    }

    /// Entries of one rule for a subject.
    fn rule_entries(
        &self,
        policy: &NetworkPolicy,
        direction: Direction,
        rule: &Rule,
        verdict: Verdict,
        subject: &SubjectKey,
        out: &mut Vec<Entry>,
    ) {
        let peers: Option<Vec<Identity>> = if rule.peers.is_empty() {
            None
        } else {
            let mut ids: Vec<Identity> = rule
                .peers
                .iter()
                .flat_map(|p| self.peer_identities(policy, p))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Some(ids)
        };
        let peer_list: Vec<Identity> = peers.clone().unwrap_or_else(|| vec![Identity::ANY]);
        let mut push = |key: EntryKey| out.push(Entry { key, verdict });
        if rule.ports.is_empty() {
            for id in &peer_list {
                push(EntryKey::any_protocol(*id));
            }
            return;
        }
        for port in &rule.ports {
            let proto = port.protocol.number();
            match &port.port {
                None => {
                    for id in &peer_list {
                        push(EntryKey::any_port(*id, proto));
                    }
                }
                Some(PortSpec::Number(start)) => {
                    let end = port.end_port.unwrap_or(*start);
                    for (p, len) in port_range_prefixes(*start, end) {
                        for id in &peer_list {
                            push(EntryKey {
                                identity: id.0,
                                protocol: proto,
                                port: p,
                                port_prefix_len: len,
                            });
                        }
                    }
                }
                Some(PortSpec::Name(name)) => match direction {
                    Direction::Ingress => {
                        if let Some(&(p, number)) = subject.named_ports.get(name)
                            && p == port.protocol
                        {
                            for id in &peer_list {
                                push(EntryKey::port(*id, proto, number));
                            }
                        }
                    }
                    Direction::Egress => {
                        let candidates: Vec<Identity> = match &peers {
                            Some(ids) => ids.clone(),
                            None => self
                                .ids_by_port_name
                                .get(name)
                                .map(|s| s.iter().copied().collect())
                                .unwrap_or_default(),
                        };
                        for id in candidates {
                            if let Some(IdentityLabels {
                                subject: Subject::Pod { named_ports, .. },
                                ..
                            }) = self.allocator.labels_ref(id)
                                && let Some(&(p, number)) = named_ports.get(name)
                                && p == port.protocol
                            {
                                push(EntryKey::port(id, proto, number));
                            }
                        }
                    }
                },
            }
        }
    }

    /// What `policy` (which selects `subject`) contributes to its maps.
    fn policy_contrib(
        &self,
        policy: &NetworkPolicy,
        subject: &SubjectKey,
        memo: &mut Memo,
    ) -> PolicyContrib {
        let mut contrib = PolicyContrib::default();
        for (d, direction) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            contrib.isolates[d] = policy.isolates(direction);
            let lists = [
                (false, policy.allow_rules(direction), Verdict::Allow),
                (true, policy.deny_rules(direction), Verdict::Deny),
            ];
            for (deny, rules, verdict) in lists {
                for (i, rule) in rules.iter().enumerate() {
                    let per_subject = direction == Direction::Ingress
                        && rule
                            .ports
                            .iter()
                            .any(|p| matches!(p.port, Some(PortSpec::Name(_))));
                    let entries = if per_subject {
                        let mut v = Vec::new();
                        self.rule_entries(policy, direction, rule, verdict, subject, &mut v);
                        Arc::new(v)
                    } else {
                        let key = (policy.key(), direction, deny, i);
                        match memo.get(&key) {
                            Some(c) => c.clone(),
                            None => {
                                let mut v = Vec::new();
                                self.rule_entries(
                                    policy, direction, rule, verdict, subject, &mut v,
                                );
                                let v = Arc::new(v);
                                memo.insert(key, v.clone());
                                v
                            }
                        }
                    };
                    if !entries.is_empty() {
                        contrib.rules[d].push(entries);
                    }
                }
            }
        }
        contrib
    }

    fn compile_subject(
        &self,
        subject: &SubjectKey,
        memo: &mut Memo,
    ) -> (EndpointPolicy, SubjectRaw) {
        let mut raw = SubjectRaw::default();
        for policy in self.cluster.policies_in(&subject.namespace) {
            if !policy.pod_selector.matches(&subject.labels) {
                continue;
            }
            let contrib = self.policy_contrib(policy, subject, memo);
            for d in 0..2 {
                raw.isolating[d] += u32::from(contrib.isolates[d]);
                for rule in &contrib.rules[d] {
                    for e in rule.iter() {
                        count(&mut raw.counts[d], e);
                    }
                }
            }
            raw.contrib.insert(policy.key(), contrib);
        }
        let policy = EndpointPolicy {
            ingress: DirectionPolicy {
                enforced: raw.isolating[0] > 0,
                entries: build_map(&raw.counts[0]),
            },
            egress: DirectionPolicy {
                enforced: raw.isolating[1] > 0,
                entries: build_map(&raw.counts[1]),
            },
        };
        (policy, raw)
    }

    /// Recomputes the contributions of `policies` to an existing subject and updates its maps
    /// in place, touching only the identities whose keys changed. Returns the maps' changes
    /// (ingress, egress), or `None` when nothing changed.
    fn refresh_subject(
        &mut self,
        subject: &SubjectKey,
        policies: &BTreeSet<ObjectKey>,
        memo: &mut Memo,
    ) -> Option<[MapDiff; 2]> {
        let news: Vec<(ObjectKey, Option<PolicyContrib>)> = policies
            .iter()
            .map(|key| {
                let new = self
                    .cluster
                    .policy(key)
                    .filter(|p| {
                        p.namespace == subject.namespace && p.pod_selector.matches(&subject.labels)
                    })
                    .map(|p| self.policy_contrib(p, subject, memo));
                (key.clone(), new)
            })
            .collect();
        let state = self.subjects.get_mut(subject)?;
        let raw = &mut state.raw;
        let mut affected: [BTreeSet<u32>; 2] = Default::default();
        for (key, new) in news {
            let old = raw.contrib.remove(&key);
            for (d, affected) in affected.iter_mut().enumerate() {
                let was = old.as_ref().is_some_and(|c| c.isolates[d]);
                let is = new.as_ref().is_some_and(|c| c.isolates[d]);
                raw.isolating[d] = raw.isolating[d] + u32::from(is) - u32::from(was);
                let old_rules = old.as_ref().map_or(&[][..], |c| &c.rules[d][..]);
                let new_rules = new.as_ref().map_or(&[][..], |c| &c.rules[d][..]);
                if same_rules(old_rules, new_rules) {
                    continue;
                }
                let (removed, added) = rules_diff(old_rules, new_rules);
                for e in &removed {
                    uncount(&mut raw.counts[d], e);
                    affected.insert(e.key.identity);
                }
                for e in &added {
                    count(&mut raw.counts[d], e);
                    affected.insert(e.key.identity);
                }
            }
            if let Some(new) = new {
                raw.contrib.insert(key, new);
            }
        }
        let enforced = [raw.isolating[0] > 0, raw.isolating[1] > 0];
        let mut diffs: [MapDiff; 2] = Default::default();
        let mut finals = Vec::new();
        for (d, direction) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let map = &state.policy.direction(direction).entries;
            for &identity in &affected[d] {
                finals.clear();
                resolve_identity(&raw.counts[d], identity, &mut finals);
                let current: Vec<Entry> = map.identity_entries(identity).collect();
                let (mut i, mut j) = (0, 0);
                while i < current.len() || j < finals.len() {
                    match (current.get(i), finals.get(j)) {
                        (Some(c), Some(f)) if c.key == f.key => {
                            if c.verdict != f.verdict {
                                diffs[d].add.push(*f);
                            }
                            i += 1;
                            j += 1;
                        }
                        (Some(c), Some(f)) if c.key < f.key => {
                            diffs[d].delete.push(c.key);
                            i += 1;
                        }
                        (Some(c), None) => {
                            diffs[d].delete.push(c.key);
                            i += 1;
                        }
                        (_, Some(f)) => {
                            diffs[d].add.push(*f);
                            j += 1;
                        }
                        (None, None) => break,
                    }
                }
            }
        }
        let policy = &state.policy;
        if diffs.iter().all(MapDiff::is_empty)
            && policy.ingress.enforced == enforced[0]
            && policy.egress.enforced == enforced[1]
        {
            return None;
        }
        let policy = Arc::make_mut(&mut state.policy);
        policy.ingress.enforced = enforced[0];
        policy.egress.enforced = enforced[1];
        policy.ingress.entries.apply(&diffs[0]);
        policy.egress.entries.apply(&diffs[1]);
        Some(diffs)
    }

    /// The input as currently known.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The identity allocator (export its state with [`IdentityAllocator::export`]).
    pub fn allocator(&self) -> &IdentityAllocator {
        &self.allocator
    }

    /// The ipcache.
    pub fn ipcache(&self) -> &IpCache {
        &self.ipcache
    }

    /// The compiled policy and identity of an endpoint.
    pub fn endpoint(&self, key: &ObjectKey) -> Option<(Identity, &EndpointPolicy)> {
        let ep = self.endpoints.get(key)?;
        Some((ep.identity, &self.subjects.get(&ep.subject)?.policy))
    }

    /// Number of endpoints and of distinct compiled policies (shared by endpoints).
    pub fn counts(&self) -> (usize, usize) {
        (self.endpoints.len(), self.subjects.len())
    }

    /// Approximate heap bytes of the compiled maps (each shared map counted once).
    pub fn map_heap_bytes(&self) -> usize {
        self.subjects
            .values()
            .map(|s| s.policy.ingress.entries.heap_bytes() + s.policy.egress.entries.heap_bytes())
            .sum()
    }

    /// A full snapshot of the compiled state.
    pub fn snapshot(&self) -> Compiled {
        Compiled {
            identities: self
                .allocator
                .in_use()
                .map(|(id, l)| (id, l.clone()))
                .collect(),
            ipcache: self.ipcache.entries(),
            endpoints: self
                .endpoints
                .iter()
                .map(|(k, ep)| {
                    (
                        k.to_string(),
                        CompiledEndpoint {
                            identity: ep.identity,
                            addresses: ep.addresses.clone(),
                            policy: (*self.subjects[&ep.subject].policy).clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The identity the datapath sees for one end of a flow: the ipcache entry of its
    /// address, or for an addressless pod its own (label) identity.
    pub fn identity_of(&self, end: &FlowEnd) -> Identity {
        match end.address() {
            Some(a) => self.ipcache.lookup(a),
            None => match end {
                FlowEnd::Pod { pod, .. } => self
                    .endpoints
                    .get(pod)
                    .map(|ep| ep.identity)
                    .unwrap_or(Identity::HOST),
                FlowEnd::External(_) => Identity::WORLD,
            },
        }
    }

    /// The verdict of the compiled maps for a flow: the source's egress map and the
    /// destination's ingress map, each through [`lookup`]. Fails when a pod is unknown, or an
    /// external end's address belongs to a pod.
    pub fn verdict(&self, flow: &Flow) -> Result<Verdict, Error> {
        let endpoint = |end: &FlowEnd| -> Result<Option<&EndpointPolicy>, Error> {
            match end {
                FlowEnd::External(a) if self.cluster.is_pod_address(*a) => Err(Error::Invalid {
                    object: "flow".into(),
                    field: "external end".into(),
                    reason: format!("address {a} belongs to a pod: use FlowEnd::Pod"),
                }),
                FlowEnd::External(_) => Ok(None),
                FlowEnd::Pod { pod, .. } => {
                    if self.cluster.pod(pod).is_none() {
                        return Err(Error::NotFound {
                            kind: "pod",
                            name: pod.to_string(),
                        });
                    }
                    Ok(self.endpoint(pod).map(|(_, p)| p))
                }
            }
        };
        let same = matches!((&flow.source, &flow.destination),
            (FlowEnd::Pod { pod: a, .. }, FlowEnd::Pod { pod: b, .. }) if a == b);
        let proto = flow.protocol.number();
        let egress = match endpoint(&flow.source)? {
            Some(p) => lookup(
                &p.egress,
                self.identity_of(&flow.destination),
                proto,
                flow.port,
                same,
            ),
            None => Verdict::Allow,
        };
        let ingress = match endpoint(&flow.destination)? {
            Some(p) => lookup(
                &p.ingress,
                self.identity_of(&flow.source),
                proto,
                flow.port,
                same,
            ),
            None => Verdict::Allow,
        };
        Ok(if egress == Verdict::Allow && ingress == Verdict::Allow {
            Verdict::Allow
        } else {
            Verdict::Deny
        })
    }
}

fn named_ports(pod: &Pod) -> BTreeMap<String, (Protocol, u16)> {
    pod.ports
        .iter()
        .filter_map(|p| p.name.clone().map(|n| (n, (p.protocol, p.port))))
        .collect()
}

/// Whether a policy's rules could select an identity with `labels`.
fn refers_to(policy: &NetworkPolicy, labels: &IdentityLabels) -> bool {
    let rules = [
        (Direction::Ingress, &policy.ingress),
        (Direction::Egress, &policy.egress),
        (Direction::Ingress, &policy.ingress_deny),
        (Direction::Egress, &policy.egress_deny),
    ];
    rules.into_iter().any(|(direction, rules)| {
        rules.iter().any(|rule| {
            if rule.peers.is_empty() {
                direction == Direction::Egress
                    && matches!(&labels.subject, Subject::Pod { named_ports, .. } if rule.ports.iter().any(|p| matches!(&p.port, Some(PortSpec::Name(n)) if named_ports.contains_key(n))))
            } else {
                rule.peers.iter().any(|peer| match peer {
                    Peer::IpBlock(b) => labels.ip_blocks.contains(&b.key()),
                    Peer::Pods {
                        pod_selector,
                        namespace_selector,
                    } => match &labels.subject {
                        Subject::Pod {
                            namespace,
                            namespace_labels,
                            labels,
                            ..
                        } => {
                            (match namespace_selector {
                                None => *namespace == policy.namespace,
                                Some(s) => s.matches(namespace_labels),
                            }) && pod_selector.as_ref().is_none_or(|s| s.matches(labels))
                        }
                        _ => false,
                    },
                })
            }
        })
    })
}

impl Flow {
    /// The flow from pod `source` to pod `destination`: the destination's first address, and
    /// the source's first address of the same family (else its first address; `None` for a
    /// pod without address).
    pub fn between(
        cluster: &Cluster,
        source: &ObjectKey,
        destination: &ObjectKey,
        protocol: Protocol,
        port: u16,
    ) -> Result<Flow, Error> {
        let get = |k: &ObjectKey| {
            cluster.pod(k).ok_or_else(|| Error::NotFound {
                kind: "pod",
                name: k.to_string(),
            })
        };
        let (src, dst) = (get(source)?, get(destination)?);
        let dst_addr = dst.ips.first().copied();
        let src_addr = dst_addr
            .and_then(|d| src.ips.iter().find(|a| a.is_ipv6() == d.is_ipv6()).copied())
            .or_else(|| src.ips.first().copied());
        Ok(Flow {
            source: FlowEnd::Pod {
                pod: source.clone(),
                address: src_addr,
            },
            destination: FlowEnd::Pod {
                pod: destination.clone(),
                address: dst_addr,
            },
            protocol,
            port,
        })
    }
}
