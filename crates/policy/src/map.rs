//! Compiled policy maps: the entries the datapath receives, and the exact lookup it performs.
//!
//! # Keys
//!
//! Per endpoint and direction the compiler produces a set of [`Entry`]: an [`EntryKey`]
//! `{identity, protocol, port, port_prefix_len}` and a [`Verdict`]. Seen as a bit string for a
//! longest-prefix-match trie, a key is
//!
//! ```text
//! identity (32 bits, big endian) | protocol (8 bits) | port (16 bits, big endian)
//! ```
//!
//! and its prefix length ([`EntryKey::lpm_prefix_len`]) is
//!
//! - `32` when `protocol == 0` (any protocol, any port; then `port == 0` and
//!   `port_prefix_len == 0`),
//! - `40 + port_prefix_len` otherwise (`port_prefix_len == 0`: any port of that protocol;
//!   `16`: exactly `port`; in between: an aligned block of ports, so an `endPort` range becomes a
//!   handful of prefixes, never one entry per port).
//!
//! The identity bits are always fully specified: identity `0` ([`Identity::ANY`]) is not a
//! prefix but a second, separate lookup.
//!
//! # Lookup (what a kernel program mirrors)
//!
//! For a packet of protocol `p` and destination port `d` between the endpoint and a peer whose
//! identity `i` comes from the ipcache (source address for ingress, destination address for
//! egress), [`lookup`] does, on the map of that direction:
//!
//! 1. if the peer is the endpoint itself (`is_self`: the peer address is one of the endpoint's
//!    own addresses, exported as `CompiledEndpoint::addresses`), **allow** (a pod can always
//!    reach itself; an identity cannot say this, as other pods may share it);
//! 2. `a = LPM(i | p | d)` and `b = LPM(0 | p | d)`, exactly two longest-prefix lookups;
//! 3. if `a` or `b` is **deny**, deny (deny wins);
//! 4. else if `a` or `b` is **allow**, allow;
//! 5. else **deny** if the direction is enforced ([`DirectionPolicy::enforced`], the endpoint is
//!    isolated: default deny), **allow** otherwise.
//!
//! A longest-prefix lookup only returns the most specific entry, so a deny that covers a more
//! specific allow of the same identity would be hidden by it. [`PolicyMap`] therefore pushes
//! every deny into the allow entries it covers (they become deny entries), as Cilium does; with
//! that invariant, steps 2 to 4 equal "deny if any matching entry denies, else allow if any
//! matching entry allows".

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::Error;

/// A security identity: a number shared by all endpoints and addresses with the same
/// identity-relevant labels.
///
/// `0` is not an identity but the wildcard "any identity" of map keys. `1..=255` are reserved
/// identities, cluster identities (pods) start at [`Identity::FIRST_CLUSTER`], and local
/// identities (CIDR and other address-derived identities) at [`Identity::FIRST_LOCAL`], as in
/// Cilium.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(pub u32);

impl Identity {
    /// The wildcard of map keys: any identity.
    pub const ANY: Identity = Identity(0);
    /// The local host (also host-network pods).
    pub const HOST: Identity = Identity(1);
    /// Anything outside the cluster not covered by a CIDR identity.
    pub const WORLD: Identity = Identity(2);
    /// Pods not managed by Strata.
    pub const UNMANAGED: Identity = Identity(3);
    /// Health-check endpoints.
    pub const HEALTH: Identity = Identity(4);
    /// Endpoints whose identity is not resolved yet.
    pub const INIT: Identity = Identity(5);
    /// Other nodes of the cluster.
    pub const REMOTE_NODE: Identity = Identity(6);
    /// The Kubernetes API server.
    pub const KUBE_APISERVER: Identity = Identity(7);
    /// First identity allocated to label sets of pods.
    pub const FIRST_CLUSTER: Identity = Identity(256);
    /// First identity allocated to address-derived label sets (CIDR identities).
    pub const FIRST_LOCAL: Identity = Identity(1 << 24);

    /// Whether this is one of the reserved identities `1..=255`.
    pub fn is_reserved(self) -> bool {
        (1..256).contains(&self.0)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Direction of traffic relative to the endpoint owning a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic arriving at the endpoint; the peer is the source.
    Ingress,
    /// Traffic leaving the endpoint; the peer is the destination.
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// The value of a map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let the packet through.
    Allow,
    /// Drop the packet.
    Deny,
}

/// The key of a map entry; see the [module documentation](self) for its bit layout.
///
/// Canonical form (checked by [`EntryKey::new`], kept by every constructor of this crate):
/// `protocol == 0` implies `port == 0 && port_prefix_len == 0`; `port_prefix_len <= 16`; port
/// bits beyond the prefix are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    /// Peer identity; `0` = any identity.
    pub identity: u32,
    /// IANA protocol number (6 TCP, 17 UDP, 132 SCTP); `0` = any protocol.
    pub protocol: u8,
    /// Destination port (first port of the prefix).
    pub port: u16,
    /// Number of significant leading bits of `port`, `0..=16`.
    pub port_prefix_len: u8,
}

impl EntryKey {
    /// A key after checking the canonical form.
    pub fn new(
        identity: Identity,
        protocol: u8,
        port: u16,
        port_prefix_len: u8,
    ) -> Result<Self, Error> {
        let key = EntryKey {
            identity: identity.0,
            protocol,
            port,
            port_prefix_len,
        };
        if key.is_canonical() {
            Ok(key)
        } else {
            Err(Error::InvalidEntryKey { key })
        }
    }

    /// Any protocol and port for `identity`.
    pub fn any_protocol(identity: Identity) -> Self {
        EntryKey {
            identity: identity.0,
            protocol: 0,
            port: 0,
            port_prefix_len: 0,
        }
    }

    /// Any port of `protocol` (non-zero) for `identity`.
    pub fn any_port(identity: Identity, protocol: u8) -> Self {
        EntryKey {
            identity: identity.0,
            protocol,
            port: 0,
            port_prefix_len: 0,
        }
    }

    /// Exactly `port` of `protocol` for `identity`.
    pub fn port(identity: Identity, protocol: u8, port: u16) -> Self {
        EntryKey {
            identity: identity.0,
            protocol,
            port,
            port_prefix_len: 16,
        }
    }

    /// Whether the key is in canonical form.
    pub fn is_canonical(&self) -> bool {
        if self.protocol == 0 {
            return self.port == 0 && self.port_prefix_len == 0;
        }
        self.port_prefix_len <= 16 && self.port & !port_mask(self.port_prefix_len) == 0
    }

    /// The peer identity of the key.
    pub fn peer(&self) -> Identity {
        Identity(self.identity)
    }

    /// Prefix length of the key in the LPM bit string `identity|protocol|port`.
    pub fn lpm_prefix_len(&self) -> u32 {
        if self.protocol == 0 {
            32
        } else {
            40 + u32::from(self.port_prefix_len)
        }
    }

    /// The key as the 7-byte LPM bit string `identity|protocol|port` (big endian).
    pub fn lpm_bytes(&self) -> [u8; 7] {
        let id = self.identity.to_be_bytes();
        let port = self.port.to_be_bytes();
        [id[0], id[1], id[2], id[3], self.protocol, port[0], port[1]]
    }

    /// Whether a packet of `protocol` to `port` matches this key (identity not considered).
    pub fn matches(&self, protocol: u8, port: u16) -> bool {
        self.protocol == 0
            || (self.protocol == protocol && port & port_mask(self.port_prefix_len) == self.port)
    }

    /// Whether every (protocol, port) matched by `other` is matched by `self` (identity not
    /// considered).
    pub fn covers(&self, other: &EntryKey) -> bool {
        self.protocol == 0
            || (self.protocol == other.protocol
                && self.port_prefix_len <= other.port_prefix_len
                && other.port & port_mask(self.port_prefix_len) == self.port)
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity {} ", self.identity)?;
        match (self.protocol, self.port_prefix_len) {
            (0, _) => write!(f, "any protocol"),
            (p, 0) => write!(f, "protocol {p} any port"),
            (p, 16) => write!(f, "protocol {p} port {}", self.port),
            (p, len) => write!(f, "protocol {p} ports {}/{len}", self.port),
        }
    }
}

fn port_mask(len: u8) -> u16 {
    if len == 0 {
        0
    } else {
        u16::MAX << (16 - u32::from(len.min(16)))
    }
}

/// The smallest set of aligned port prefixes `(port, prefix_len)` covering exactly
/// `start..=end` (at most 30 prefixes). Empty when `start > end`.
pub fn port_range_prefixes(start: u16, end: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(start), u32::from(end));
    while lo <= hi {
        // Largest aligned block starting at lo that fits in lo..=hi.
        let mut size_bits = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1u32 << size_bits) - 1 > hi {
            size_bits -= 1;
        }
        out.push((lo as u16, (16 - size_bits) as u8));
        lo += 1 << size_bits;
    }
    out
}

/// Every key of one identity, as a range of the key order (identity first).
pub(crate) fn identity_keys(identity: u32) -> std::ops::RangeInclusive<EntryKey> {
    EntryKey {
        identity,
        protocol: 0,
        port: 0,
        port_prefix_len: 0,
    }..=EntryKey {
        identity,
        protocol: u8::MAX,
        port: u16::MAX,
        port_prefix_len: u8::MAX,
    }
}

/// The entries of one identity after deny push-down: `raw` holds the identity's distinct keys
/// in key order with whether any rule denies exactly that key; an allow covered by a deny of
/// the same identity becomes a deny (what [`PolicyMap::from_entries`] does per identity).
pub(crate) fn push_down(raw: &[(EntryKey, bool)], out: &mut Vec<Entry>) {
    let denies: Vec<EntryKey> = raw.iter().filter(|r| r.1).map(|r| r.0).collect();
    for &(key, deny) in raw {
        let deny = deny || denies.iter().any(|d| d.covers(&key));
        out.push(Entry {
            key,
            verdict: if deny { Verdict::Deny } else { Verdict::Allow },
        });
    }
}

/// One entry of a compiled map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: EntryKey,
    /// The value.
    pub verdict: Verdict,
}

#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

fn index_key(identity: u32, protocol: u8) -> u64 {
    (u64::from(identity) << 8) | u64::from(protocol)
}

/// The map of one endpoint and direction: entries in canonical order plus a lookup index.
///
/// Invariant (kept by [`PolicyMap::from_entries`] and [`PolicyMap::apply`] callers that start
/// from compiler output): no deny entry covers an allow entry of the same identity, so a
/// longest-prefix lookup is exact (see the [module documentation](self)).
#[derive(Clone, Default)]
pub struct PolicyMap {
    entries: BTreeMap<EntryKey, Verdict>,
    // (identity, protocol) -> [(port, prefix_len, verdict)] sorted by prefix_len descending.
    index: FastMap<u64, Vec<(u16, u8, Verdict)>>,
}

impl fmt::Debug for PolicyMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

impl PartialEq for PolicyMap {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for PolicyMap {}

impl PolicyMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from raw rule entries: duplicate keys resolve to deny, then every deny is
    /// pushed into the entries of the same identity it covers, so that longest-prefix lookups
    /// give deny-wins semantics.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut raw: BTreeMap<EntryKey, Verdict> = BTreeMap::new();
        for e in entries {
            let v = raw.entry(e.key).or_insert(e.verdict);
            if e.verdict == Verdict::Deny {
                *v = Verdict::Deny;
            }
        }
        let mut denies: FastMap<u32, Vec<EntryKey>> = FastMap::default();
        for (k, v) in &raw {
            if *v == Verdict::Deny {
                denies.entry(k.identity).or_default().push(*k);
            }
        }
        if !denies.is_empty() {
            for (k, v) in raw.iter_mut() {
                if *v == Verdict::Allow
                    && denies
                        .get(&k.identity)
                        .is_some_and(|ds| ds.iter().any(|d| d.covers(k)))
                {
                    *v = Verdict::Deny;
                }
            }
        }
        let mut map = PolicyMap::new();
        for (k, v) in raw {
            map.insert(k, v);
        }
        map
    }

    /// Inserts or replaces one entry (no deny push-down: the caller keeps the invariant).
    pub fn insert(&mut self, key: EntryKey, verdict: Verdict) {
        if let Some(old) = self.entries.insert(key, verdict) {
            if old == verdict {
                return;
            }
            self.unindex(&key);
        }
        let list = self
            .index
            .entry(index_key(key.identity, key.protocol))
            .or_default();
        let at = list
            .iter()
            .position(|&(_, len, _)| len < key.port_prefix_len)
            .unwrap_or(list.len());
        list.insert(at, (key.port, key.port_prefix_len, verdict));
    }

    /// Removes one entry; returns its verdict.
    pub fn remove(&mut self, key: &EntryKey) -> Option<Verdict> {
        let old = self.entries.remove(key)?;
        self.unindex(key);
        Some(old)
    }

    fn unindex(&mut self, key: &EntryKey) {
        let ik = index_key(key.identity, key.protocol);
        if let Some(list) = self.index.get_mut(&ik) {
            list.retain(|&(p, len, _)| !(p == key.port && len == key.port_prefix_len));
            if list.is_empty() {
                self.index.remove(&ik);
            }
        }
    }

    /// The entries of one peer identity, in key order.
    pub(crate) fn identity_entries(&self, identity: u32) -> impl Iterator<Item = Entry> + '_ {
        self.entries
            .range(identity_keys(identity))
            .map(|(k, v)| Entry {
                key: *k,
                verdict: *v,
            })
    }

    /// The verdict stored under exactly `key`.
    pub fn get(&self, key: &EntryKey) -> Option<Verdict> {
        self.entries.get(key).copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.entries.iter().map(|(k, v)| Entry {
            key: *k,
            verdict: *v,
        })
    }

    /// The longest-prefix match for `identity|protocol|port`, as the datapath's LPM trie
    /// returns it.
    pub fn lpm(&self, identity: Identity, protocol: u8, port: u16) -> Option<Verdict> {
        if protocol != 0
            && let Some(list) = self.index.get(&index_key(identity.0, protocol))
        {
            for &(p, len, v) in list {
                if port & port_mask(len) == p {
                    return Some(v);
                }
            }
        }
        self.index
            .get(&index_key(identity.0, 0))
            .and_then(|list| list.first().map(|&(_, _, v)| v))
    }

    /// Applies a diff: deletes then adds.
    pub fn apply(&mut self, diff: &MapDiff) {
        for k in &diff.delete {
            self.remove(k);
        }
        for e in &diff.add {
            self.insert(e.key, e.verdict);
        }
    }

    /// The diff that turns `self` into `new`: keys to delete and entries to add (an entry whose
    /// verdict changes is only in `add`).
    pub fn diff(&self, new: &PolicyMap) -> MapDiff {
        let mut diff = MapDiff::default();
        for (k, v) in &new.entries {
            if self.entries.get(k) != Some(v) {
                diff.add.push(Entry {
                    key: *k,
                    verdict: *v,
                });
            }
        }
        for k in self.entries.keys() {
            if !new.entries.contains_key(k) {
                diff.delete.push(*k);
            }
        }
        diff
    }

    /// Approximate heap bytes used by the map (entries and index).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(EntryKey, Verdict)>() + 16;
        let index: usize = self
            .index
            .values()
            .map(|l| 32 + l.capacity() * std::mem::size_of::<(u16, u8, Verdict)>())
            .sum();
        self.entries.len() * entry + index
    }
}

impl Serialize for PolicyMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PolicyMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        if let Some(bad) = entries.iter().find(|e| !e.key.is_canonical()) {
            return Err(serde::de::Error::custom(format!(
                "entry key not canonical: {:?}",
                bad.key
            )));
        }
        Ok(PolicyMap::from_entries(entries))
    }
}

/// Changes to one map: keys to delete, entries to add or overwrite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDiff {
    /// Keys to delete.
    pub delete: Vec<EntryKey>,
    /// Entries to insert (or overwrite).
    pub add: Vec<Entry>,
}

impl MapDiff {
    /// Whether the diff changes nothing.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

/// The compiled policy of one direction of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionPolicy {
    /// Whether the endpoint is isolated in this direction (selected by a policy of this
    /// direction): what no entry allows is denied.
    pub enforced: bool,
    /// The entries.
    pub entries: PolicyMap,
}

/// The compiled policy of an endpoint: both directions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// Traffic to the endpoint.
    pub ingress: DirectionPolicy,
    /// Traffic from the endpoint.
    pub egress: DirectionPolicy,
}

impl EndpointPolicy {
    /// The policy of one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The datapath's decision for one packet and one direction of one endpoint; see the
/// [module documentation](self) for the exact order.
pub fn lookup(
    policy: &DirectionPolicy,
    peer: Identity,
    protocol: u8,
    port: u16,
    is_self: bool,
) -> Verdict {
    if is_self {
        return Verdict::Allow;
    }
    let specific = policy.entries.lpm(peer, protocol, port);
    let wildcard = policy.entries.lpm(Identity::ANY, protocol, port);
    match (specific, wildcard) {
        (Some(Verdict::Deny), _) | (_, Some(Verdict::Deny)) => Verdict::Deny,
        (Some(Verdict::Allow), _) | (_, Some(Verdict::Allow)) => Verdict::Allow,
        (None, None) if policy.enforced => Verdict::Deny,
        (None, None) => Verdict::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    fn e(key: EntryKey, verdict: Verdict) -> Entry {
        Entry { key, verdict }
    }

    #[test]
    fn port_ranges_become_few_prefixes() {
        assert_eq!(port_range_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_range_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(
            port_range_prefixes(32000, 32767),
            vec![(32000, 8), (32256, 7)]
        );
        let p = port_range_prefixes(1, 65534);
        assert!(p.len() <= 30, "{}", p.len());
        assert!(port_range_prefixes(5, 4).is_empty());
    }

    #[test]
    fn key_layout_and_canonical_form() {
        let k = EntryKey::port(Identity(0x0102_0304), TCP, 0x0050);
        assert_eq!(k.lpm_bytes(), [1, 2, 3, 4, 6, 0, 0x50]);
        assert_eq!(k.lpm_prefix_len(), 56);
        assert_eq!(EntryKey::any_protocol(Identity(9)).lpm_prefix_len(), 32);
        assert_eq!(EntryKey::any_port(Identity(9), UDP).lpm_prefix_len(), 40);
        assert!(EntryKey::new(Identity(1), 0, 80, 16).is_err());
        assert!(EntryKey::new(Identity(1), TCP, 81, 15).is_err());
        assert!(EntryKey::new(Identity(1), TCP, 80, 17).is_err());
        assert!(EntryKey::new(Identity(1), TCP, 80, 15).is_ok());
    }

    #[test]
    fn deny_is_pushed_into_covered_allows() {
        let x = Identity(300);
        let map = PolicyMap::from_entries([
            e(EntryKey::port(x, TCP, 80), Verdict::Allow),
            e(EntryKey::any_port(x, TCP), Verdict::Deny),
            e(EntryKey::port(x, UDP, 53), Verdict::Allow),
        ]);
        assert_eq!(map.get(&EntryKey::port(x, TCP, 80)), Some(Verdict::Deny));
        assert_eq!(map.get(&EntryKey::port(x, UDP, 53)), Some(Verdict::Allow));
        let dp = DirectionPolicy {
            enforced: true,
            entries: map,
        };
        assert_eq!(lookup(&dp, x, TCP, 80, false), Verdict::Deny);
        assert_eq!(lookup(&dp, x, UDP, 53, false), Verdict::Allow);
        assert_eq!(lookup(&dp, x, UDP, 54, false), Verdict::Deny);
        assert_eq!(lookup(&dp, x, UDP, 54, true), Verdict::Allow);
        let open = DirectionPolicy::default();
        assert_eq!(lookup(&open, x, UDP, 54, false), Verdict::Allow);
    }

    fn arb_key() -> impl Strategy<Value = EntryKey> {
        (
            0u32..3,
            prop_oneof![Just(0u8), Just(TCP), Just(UDP)],
            any::<u16>(),
            0u8..=16,
        )
            .prop_map(|(id, proto, port, len)| {
                if proto == 0 {
                    EntryKey::any_protocol(Identity(id))
                } else {
                    EntryKey {
                        identity: id,
                        protocol: proto,
                        port: port & port_mask(len),
                        port_prefix_len: len,
                    }
                }
            })
    }

    proptest! {
        #[test]
        fn prefixes_cover_exactly_the_range(a in any::<u16>(), b in any::<u16>(), probe in any::<u16>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let prefixes = port_range_prefixes(lo, hi);
            prop_assert!(prefixes.len() <= 30);
            let hits = prefixes.iter().filter(|&&(p, len)| probe & port_mask(len) == p).count();
            prop_assert_eq!(hits, usize::from((lo..=hi).contains(&probe)));
        }

        #[test]
        fn lookup_is_deny_wins_over_all_matching_entries(
            raw in proptest::collection::vec((arb_key(), any::<bool>()), 0..12),
            enforced in any::<bool>(),
            peer in 0u32..3,
            proto in prop_oneof![Just(TCP), Just(UDP)],
            port in any::<u16>(),
        ) {
            let entries: Vec<Entry> = raw.iter().map(|&(k, d)| e(k, if d { Verdict::Deny } else { Verdict::Allow })).collect();
            let dp = DirectionPolicy { enforced, entries: PolicyMap::from_entries(entries.clone()) };
            let matching: Vec<&Entry> = entries.iter().filter(|en| (en.key.identity == peer || en.key.identity == 0) && en.key.matches(proto, port)).collect();
            let expected = if matching.iter().any(|en| en.verdict == Verdict::Deny) {
                Verdict::Deny
            } else if !matching.is_empty() || !enforced {
                Verdict::Allow
            } else {
                Verdict::Deny
            };
            prop_assert_eq!(lookup(&dp, Identity(peer), proto, port, false), expected);
        }

        #[test]
        fn diff_then_apply_gives_the_new_map(
            a in proptest::collection::vec((arb_key(), any::<bool>()), 0..10),
            b in proptest::collection::vec((arb_key(), any::<bool>()), 0..10),
        ) {
            let mk = |v: &Vec<(EntryKey, bool)>| PolicyMap::from_entries(v.iter().map(|&(k, d)| e(k, if d { Verdict::Deny } else { Verdict::Allow })));
            let (old, new) = (mk(&a), mk(&b));
            let mut patched = old.clone();
            patched.apply(&old.diff(&new));
            prop_assert_eq!(&patched, &new);
            for probe in 0u16..4 {
                prop_assert_eq!(patched.lpm(Identity(1), TCP, probe * 1000), new.lpm(Identity(1), TCP, probe * 1000));
            }
        }
    }
}
