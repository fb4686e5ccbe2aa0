//! One CIDR as a bitmap of addresses, with a next-free search from a rotating cursor.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::{Error, Result};

/// The largest number of host bits a [`Pool`] serves (16,777,216 addresses, a 2 MiB bitmap).
pub const MAX_HOST_BITS: u8 = 24;

/// Why an address of a pool is never handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The IPv4 network address of a prefix shorter than /31.
    Network,
    /// The IPv4 broadcast address of a prefix shorter than /31.
    Broadcast,
    /// The IPv6 subnet-router anycast address (all host bits zero, RFC 4291 §2.6.1).
    SubnetRouter,
    /// A configured gateway or router address.
    Excluded,
}

impl Unusable {
    /// A short description for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Unusable::Network => "network address",
            Unusable::Broadcast => "broadcast address",
            Unusable::SubnetRouter => "subnet-router anycast address",
            Unusable::Excluded => "excluded address",
        }
    }
}

/// A bitmap over the addresses of one CIDR: a set bit is an address that is not free (allocated,
/// quarantined, or never allocatable).
///
/// `allocate_next` finds the first free address at or after a cursor that moves past every
/// address handed out, so released addresses are reused last (round robin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    cidr: IpNet,
    base: u128,
    size: u64,
    words: Vec<u64>,
    taken: u64,
    cursor: u64,
    unusable: Vec<(u64, Unusable)>,
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Pool {
    /// A pool over `cidr` (normalised to its network), never handing out the network and
    /// broadcast (IPv4 shorter than /31), subnet-router anycast (IPv6) and `excluded` addresses
    /// that fall inside it.
    pub fn new(cidr: IpNet, excluded: &[IpAddr]) -> Result<Pool> {
        let cidr = cidr.trunc();
        let host_bits = cidr.max_prefix_len() - cidr.prefix_len();
        if host_bits > MAX_HOST_BITS {
            return Err(Error::PoolTooLarge {
                cidr,
                host_bits,
                max_host_bits: MAX_HOST_BITS,
            });
        }
        let size = 1u64 << host_bits;
        let nwords = size.div_ceil(64) as usize;
        let mut pool = Pool {
            cidr,
            base: to_u128(cidr.network()),
            size,
            words: vec![0; nwords],
            taken: 0,
            cursor: 0,
            unusable: Vec::new(),
        };
        // Bits past the end of a short last word are permanently set.
        if !size.is_multiple_of(64) {
            pool.words[nwords - 1] = !0u64 << (size % 64);
        }
        match cidr {
            IpNet::V4(_) if host_bits >= 2 => {
                pool.mark_unusable(0, Unusable::Network);
                pool.mark_unusable(size - 1, Unusable::Broadcast);
            }
            IpNet::V6(_) if host_bits >= 1 => pool.mark_unusable(0, Unusable::SubnetRouter),
            _ => {}
        }
        for &addr in excluded {
            if let Some(index) = pool.index_of(addr)
                && !pool.is_taken(index)
            {
                pool.mark_unusable(index, Unusable::Excluded);
            }
        }
        pool.unusable.sort_unstable_by_key(|(index, _)| *index);
        Ok(pool)
    }

    fn mark_unusable(&mut self, index: u64, why: Unusable) {
        self.set(index);
        self.unusable.push((index, why));
    }

    /// The pool's CIDR.
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// Number of addresses in the CIDR.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of addresses that could ever be handed out.
    pub fn capacity(&self) -> u64 {
        self.size - self.unusable.len() as u64
    }

    /// Number of allocatable addresses currently free.
    pub fn free(&self) -> u64 {
        self.size - self.taken
    }

    /// The cursor: where the next search for a free address starts.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Moves the cursor (used when restoring state).
    pub fn set_cursor(&mut self, cursor: u64) {
        self.cursor = cursor % self.size;
    }

    /// The index of `addr` inside the pool, if it is inside.
    pub fn index_of(&self, addr: IpAddr) -> Option<u64> {
        let same_family = matches!(
            (addr, self.cidr),
            (IpAddr::V4(_), IpNet::V4(_)) | (IpAddr::V6(_), IpNet::V6(_))
        );
        let offset = to_u128(addr).wrapping_sub(self.base);
        (same_family && offset < u128::from(self.size)).then_some(offset as u64)
    }

    /// The address at `index` (which must be below [`Pool::size`]).
    pub fn addr_at(&self, index: u64) -> IpAddr {
        let value = self.base + u128::from(index);
        match self.cidr {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }

    /// Why the address at `index` is never handed out, if it is not.
    pub fn unusable(&self, index: u64) -> Option<Unusable> {
        self.unusable
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|pos| self.unusable[pos].1)
    }

    /// Whether the address at `index` is not free.
    pub fn is_taken(&self, index: u64) -> bool {
        self.words[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    /// Marks the address at `index` taken; returns false when it already was.
    pub fn set(&mut self, index: u64) -> bool {
        let word = &mut self.words[(index / 64) as usize];
        let bit = 1 << (index % 64);
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        self.taken += 1;
        true
    }

    /// Marks the address at `index` free; returns false when it already was.
    pub fn clear(&mut self, index: u64) -> bool {
        let word = &mut self.words[(index / 64) as usize];
        let bit = 1 << (index % 64);
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        self.taken -= 1;
        true
    }

    /// The first free index at or after the cursor, wrapping around, without taking it.
    pub fn next_free(&self) -> Option<u64> {
        if self.taken == self.size {
            return None;
        }
        let nwords = self.words.len();
        let start_word = (self.cursor / 64) as usize;
        // First word: ignore bits below the cursor.
        let first = self.words[start_word] | ((1u64 << (self.cursor % 64)) - 1);
        if first != !0 {
            return Some(start_word as u64 * 64 + u64::from(first.trailing_ones()));
        }
        for step in 1..=nwords {
            let w = (start_word + step) % nwords;
            let word = self.words[w];
            if word != !0 {
                return Some(w as u64 * 64 + u64::from(word.trailing_ones()));
            }
        }
        None
    }

    /// Takes the first free address at or after the cursor and moves the cursor past it.
    pub fn allocate_next(&mut self) -> Option<u64> {
        let index = self.next_free()?;
        self.set(index);
        self.cursor = (index + 1) % self.size;
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn v4_pool_skips_network_broadcast_and_excluded() {
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        let mut pool = Pool::new(net("10.0.0.0/29"), &[gw]).unwrap();
        assert_eq!(pool.capacity(), 5);
        let mut got = Vec::new();
        while let Some(i) = pool.allocate_next() {
            got.push(pool.addr_at(i).to_string());
        }
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(pool.unusable(0), Some(Unusable::Network));
        assert_eq!(pool.unusable(7), Some(Unusable::Broadcast));
        assert_eq!(pool.unusable(1), Some(Unusable::Excluded));
    }

    #[test]
    fn point_to_point_and_v6_pools() {
        let mut p31 = Pool::new(net("10.0.0.0/31"), &[]).unwrap();
        assert_eq!(p31.capacity(), 2);
        assert_eq!(p31.allocate_next(), Some(0));
        let mut p6 = Pool::new(net("fd00::/126"), &[]).unwrap();
        assert_eq!(p6.capacity(), 3);
        assert_eq!(p6.allocate_next(), Some(1));
    }

    #[test]
    fn cursor_rotates_and_wraps() {
        let mut pool = Pool::new(net("10.0.0.0/24"), &[]).unwrap();
        let a = pool.allocate_next().unwrap();
        let b = pool.allocate_next().unwrap();
        assert_eq!((a, b), (1, 2));
        pool.clear(a);
        // The released address comes back only after the cursor wrapped.
        assert_eq!(pool.allocate_next(), Some(3));
        pool.set_cursor(250);
        let mut last = Vec::new();
        for _ in 0..6 {
            last.push(pool.allocate_next().unwrap());
        }
        assert_eq!(last, [250, 251, 252, 253, 254, 1]);
    }

    #[test]
    fn too_large_pool_is_typed() {
        assert!(matches!(
            Pool::new(net("fd00::/64"), &[]),
            Err(Error::PoolTooLarge { host_bits: 64, .. })
        ));
        assert!(Pool::new(net("10.0.0.0/8"), &[]).is_ok());
    }

    #[test]
    fn full_pool_returns_none() {
        let mut pool = Pool::new(net("10.0.0.0/30"), &[]).unwrap();
        assert!(pool.allocate_next().is_some());
        assert!(pool.allocate_next().is_some());
        assert_eq!(pool.allocate_next(), None);
        assert_eq!(pool.free(), 0);
    }
}
