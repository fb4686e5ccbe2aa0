//! The ipcache: address prefixes to identities, looked up by longest prefix (the datapath's
//! LPM trie).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::map::Identity;

/// Prefix to identity, with longest-prefix-match lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpCache {
    entries: HashMap<IpNet, Identity>,
    // (is_v6, prefix length) -> number of entries, to probe only present lengths.
    lengths: BTreeMap<(bool, u8), usize>,
}

/// One ipcache entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpCacheEntry {
    /// The prefix.
    pub prefix: IpNet,
    /// Its identity.
    pub identity: Identity,
}

impl IpCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the identity of `prefix` (host bits are cleared); returns the previous one.
    pub fn insert(&mut self, prefix: IpNet, identity: Identity) -> Option<Identity> {
        let prefix = prefix.trunc();
        let old = self.entries.insert(prefix, identity);
        if old.is_none() {
            *self
                .lengths
                .entry((prefix.addr().is_ipv6(), prefix.prefix_len()))
                .or_default() += 1;
        }
        old
    }

    /// Removes `prefix`; returns its identity.
    pub fn remove(&mut self, prefix: &IpNet) -> Option<Identity> {
        let prefix = prefix.trunc();
        let old = self.entries.remove(&prefix)?;
        let key = (prefix.addr().is_ipv6(), prefix.prefix_len());
        if let Some(n) = self.lengths.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.lengths.remove(&key);
            }
        }
        Some(old)
    }

    /// The identity of exactly `prefix`.
    pub fn get(&self, prefix: &IpNet) -> Option<Identity> {
        self.entries.get(&prefix.trunc()).copied()
    }

    /// Longest-prefix match of `address`; [`Identity::WORLD`] when nothing covers it.
    pub fn lookup(&self, address: IpAddr) -> Identity {
        let v6 = address.is_ipv6();
        for &(_, len) in self
            .lengths
            .range((v6, 0)..=(v6, u8::MAX))
            .rev()
            .map(|(k, _)| k)
        {
            let Ok(net) = IpNet::new(address, len) else {
                continue;
            };
            if let Some(id) = self.entries.get(&net.trunc()) {
                return *id;
            }
        }
        Identity::WORLD
    }

    /// Entries sorted by prefix.
    pub fn entries(&self) -> Vec<IpCacheEntry> {
        let mut v: Vec<IpCacheEntry> = self
            .entries
            .iter()
            .map(|(p, i)| IpCacheEntry {
                prefix: *p,
                identity: *i,
            })
            .collect();
        v.sort();
        v
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn longest_prefix_wins() {
        let mut c = IpCache::new();
        c.insert("10.0.0.0/8".parse().unwrap(), Identity(100));
        c.insert("10.1.0.0/16".parse().unwrap(), Identity(101));
        c.insert("10.1.2.3/32".parse().unwrap(), Identity(300));
        c.insert("fd00::/8".parse().unwrap(), Identity(102));
        assert_eq!(c.lookup("10.1.2.3".parse().unwrap()), Identity(300));
        assert_eq!(c.lookup("10.1.2.4".parse().unwrap()), Identity(101));
        assert_eq!(c.lookup("10.2.0.1".parse().unwrap()), Identity(100));
        assert_eq!(c.lookup("11.0.0.1".parse().unwrap()), Identity::WORLD);
        assert_eq!(c.lookup("fd00::1".parse().unwrap()), Identity(102));
        assert_eq!(
            c.remove(&"10.1.0.0/16".parse().unwrap()),
            Some(Identity(101))
        );
        assert_eq!(c.lookup("10.1.2.4".parse().unwrap()), Identity(100));
    }

    proptest! {
        #[test]
        fn lookup_equals_linear_scan(
            prefixes in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..20),
            probe in any::<u32>(),
        ) {
            let mut c = IpCache::new();
            let mut all = Vec::new();
            for (i, (a, len)) in prefixes.iter().enumerate() {
                let net = IpNet::new(IpAddr::from(a.to_be_bytes()), *len).unwrap().trunc();
                c.insert(net, Identity(1000 + i as u32));
                all.retain(|(n, _)| *n != net);
                all.push((net, Identity(1000 + i as u32)));
            }
            let addr = IpAddr::from(probe.to_be_bytes());
            let expected = all.iter().filter(|(n, _)| n.contains(&addr)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, i)| *i).unwrap_or(Identity::WORLD);
            prop_assert_eq!(c.lookup(addr), expected);
        }
    }
}
