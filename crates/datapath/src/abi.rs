//! The map ABI: Rust mirrors of the keys, values and records in `bpf/strata.h`.
//!
//! Each type is `#[repr(C)]` and lists its fields through [`Layout`], which
//! `tests/btf_abi.rs` compares with the BTF of the compiled object: a drift between a Rust type
//! and its C struct fails the test suite.

use std::net::{IpAddr, Ipv6Addr};

/// Direction as seen by the endpoint: traffic leaving the pod (clsact ingress of its veth).
pub const DIR_EGRESS: u8 = 0;
/// Direction as seen by the endpoint: traffic entering the pod (clsact egress of its veth).
pub const DIR_INGRESS: u8 = 1;

/// Endpoint flag: the endpoint's ingress policy is enforced.
pub const EP_ENFORCE_INGRESS: u32 = 1;
/// Endpoint flag: the endpoint's egress policy is enforced.
pub const EP_ENFORCE_EGRESS: u32 = 2;

/// Policy value verdict: allow.
pub const VERDICT_ALLOW: u32 = 1;
/// Policy value verdict: deny (wins over allow).
pub const VERDICT_DENY: u32 = 2;

/// Identity of an address no ipcache prefix covers.
pub const IDENTITY_WORLD: u32 = 2;

/// Conntrack flag: a FIN or RST was seen, the entry lives [`CT_LIFETIME_CLOSING_NS`] more.
pub const CT_CLOSING: u32 = 1;
/// Conntrack flag: the connection was allowed because its direction is not enforced.
pub const CT_UNENFORCED: u32 = 2;
/// Lifetime of a TCP conntrack entry, refreshed by each forward packet.
pub const CT_LIFETIME_TCP_NS: u64 = 21_600 * 1_000_000_000;
/// Lifetime of a closing TCP conntrack entry.
pub const CT_LIFETIME_CLOSING_NS: u64 = 10 * 1_000_000_000;
/// Lifetime of a non-TCP conntrack entry, refreshed by each forward packet.
pub const CT_LIFETIME_OTHER_NS: u64 = 60 * 1_000_000_000;

/// Most IPv6 extension headers walked before a packet is dropped.
pub const MAX_EXT_HEADERS: usize = 8;

/// Number of reasons per direction in the counters map.
pub const REASONS: u32 = 32;
/// Entries of the counters map: `reason + REASONS * direction`.
pub const COUNTERS: u32 = 2 * REASONS;

/// Capacity of the endpoints map.
pub const ENDPOINTS_MAX: u32 = 4096;
/// Capacity of the ipcache LPM trie.
pub const IPCACHE_MAX: u32 = 262_144;
/// Capacity of the policy LPM trie.
pub const POLICY_MAX: u32 = 262_144;
/// Capacity of the conntrack LRU hash.
pub const CT_MAX: u32 = 262_144;

/// Prefix length of a policy key whose protocol and port are wildcards.
pub const POLICY_PREFIX_ANY_PROTOCOL: u32 = 72;
/// Prefix length of a policy key with a protocol and a port prefix of length 0.
pub const POLICY_PREFIX_PROTOCOL: u32 = 80;
/// Prefix length of a fully specified policy key (the length of every packet lookup).
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Why a packet was passed or dropped; the counter index within a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum Reason {
    /// Allowed by a policy entry.
    AllowPolicy = 0,
    /// Reply of a tracked connection.
    AllowCtReply = 1,
    /// ICMP error about a tracked connection.
    AllowCtRelated = 2,
    /// No entry matched and the endpoint is not isolated in this direction.
    AllowUnenforced = 3,
    /// IPv6 neighbour and multicast listener discovery (ICMPv6 130-137, 143), always allowed.
    AllowNdp = 4,
    /// The interface is not an endpoint.
    PassNoEndpoint = 5,
    /// Not IPv4 or IPv6.
    PassNonIp = 6,
    /// An explicit deny entry matched.
    DropPolicyDeny = 16,
    /// Policy enforced and nothing allowed the packet.
    DropPolicyDefault = 17,
    /// A header was truncated or invalid.
    DropMalformed = 18,
    /// An IPv4 or IPv6 fragment (fragments are dropped, not tracked).
    DropFragment = 19,
    /// More IPv6 extension headers than [`MAX_EXT_HEADERS`].
    DropExtHeaders = 20,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 12] = [
        Reason::AllowPolicy,
        Reason::AllowCtReply,
        Reason::AllowCtRelated,
        Reason::AllowUnenforced,
        Reason::AllowNdp,
        Reason::PassNoEndpoint,
        Reason::PassNonIp,
        Reason::DropPolicyDeny,
        Reason::DropPolicyDefault,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropExtHeaders,
    ];

    /// The reason with this number, if any.
    pub fn from_u8(value: u8) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u8 == value)
    }

    /// Whether packets with this reason are dropped.
    pub fn is_drop(self) -> bool {
        self as u8 >= 16
    }

    /// A short stable name (`allow-policy`, `drop-policy-default`, …).
    pub fn name(self) -> &'static str {
        match self {
            Reason::AllowPolicy => "allow-policy",
            Reason::AllowCtReply => "allow-ct-reply",
            Reason::AllowCtRelated => "allow-ct-related",
            Reason::AllowUnenforced => "allow-unenforced",
            Reason::AllowNdp => "allow-ndp",
            Reason::PassNoEndpoint => "pass-no-endpoint",
            Reason::PassNonIp => "pass-non-ip",
            Reason::DropPolicyDeny => "drop-policy-deny",
            Reason::DropPolicyDefault => "drop-policy-default",
            Reason::DropMalformed => "drop-malformed",
            Reason::DropFragment => "drop-fragment",
            Reason::DropExtHeaders => "drop-ext-headers",
        }
    }
}

/// One field of an ABI struct: name, byte offset, byte size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Field name, as in C.
    pub name: &'static str,
    /// Offset in bytes.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// A `#[repr(C)]` type mirroring a C struct of `bpf/strata.h`.
pub trait Layout {
    /// The C struct's name.
    const C_NAME: &'static str;
    /// The fields in declaration order.
    fn fields() -> Vec<Field>;
    /// Size in bytes.
    fn size() -> usize;
}

macro_rules! abi_struct {
    ($(#[$meta:meta])* $name:ident = $c:literal { $($(#[$fmeta:meta])* $field:ident : $ty:ty),+ $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)+
        }

        impl Layout for $name {
            const C_NAME: &'static str = $c;
            fn fields() -> Vec<Field> {
                vec![$(Field {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    size: std::mem::size_of::<$ty>(),
                }),+]
            }
            fn size() -> usize {
                std::mem::size_of::<$name>()
            }
        }
    };
}

abi_struct! {
    /// Value of the endpoints map (key: ifindex of the host-side veth).
    Endpoint = "strata_endpoint" {
        /// Endpoint id, the first field of its policy keys.
        endpoint_id: u32,
        /// The endpoint's security identity.
        identity: u32,
        /// [`EP_ENFORCE_INGRESS`] | [`EP_ENFORCE_EGRESS`].
        flags: u32,
        /// Zero.
        reserved: u32,
    }
}

abi_struct! {
    /// Full ipcache LPM key (prefix length then an IPv6 or IPv4-mapped address).
    IpcacheKey = "strata_ipcache_key" {
        /// Prefix length in bits over `addr`.
        prefixlen: u32,
        /// IPv6 address, or `::ffff:a.b.c.d`.
        addr: [u8; 16],
    }
}

abi_struct! {
    /// Value of the ipcache.
    IpcacheValue = "strata_ipcache_value" {
        /// Security identity of the prefix.
        identity: u32,
        /// Zero.
        flags: u32,
    }
}

abi_struct! {
    /// Full policy LPM key.
    PolicyKey = "strata_policy_key" {
        /// 72 (any protocol), or 80 + port prefix length.
        prefixlen: u32,
        /// Endpoint id.
        endpoint_id: u32,
        /// Peer identity, 0 for any peer.
        identity: u32,
        /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
        direction: u8,
        /// IP protocol number, 0 when `prefixlen` is 72.
        protocol: u8,
        /// Port in network byte order.
        port_be: u16,
    }
}

abi_struct! {
    /// Value of the policy LPM trie.
    PolicyValue = "strata_policy_value" {
        /// [`VERDICT_ALLOW`] or [`VERDICT_DENY`].
        verdict: u32,
        /// Free for the caller (e.g. the rule that produced the entry).
        rule: u32,
    }
}

abi_struct! {
    /// Conntrack key: a tuple as one endpoint saw it in one direction.
    CtKey = "strata_ct_key" {
        /// Source address (IPv6 or IPv4-mapped).
        saddr: [u8; 16],
        /// Destination address.
        daddr: [u8; 16],
        /// Source port (ICMP echo request: id), network order.
        sport_be: u16,
        /// Destination port (ICMP echo reply: id), network order.
        dport_be: u16,
        /// IP protocol number.
        protocol: u8,
        /// Direction in which the endpoint saw this tuple.
        direction: u8,
        /// Zero.
        reserved: u16,
        /// Interface index of the endpoint's veth.
        ifindex: u32,
    }
}

abi_struct! {
    /// Conntrack value.
    CtValue = "strata_ct_value" {
        /// `bpf_ktime_get_ns` after which the entry is dead.
        expires_ns: u64,
        /// [`CT_CLOSING`] | [`CT_UNENFORCED`].
        flags: u32,
        /// The maps' generation when the entry was last allowed: equal to the config's, its
        /// verdict is reused without policy lookups.
        generation: u32,
    }
}

abi_struct! {
    /// One per-CPU counter.
    Counter = "strata_counter" {
        /// Packets.
        packets: u64,
        /// Bytes (`skb->len`, Ethernet header included).
        bytes: u64,
    }
}

abi_struct! {
    /// The config map's single value.
    Config = "strata_config" {
        /// One allow event per this many allowed packets (0: none, 1: all). Drops always.
        allow_sample: u32,
        /// Generation of the endpoints, ipcache and policy maps (0: never reuse verdicts).
        generation: u32,
    }
}

abi_struct! {
    /// A ring-buffer record, one per dropped (and sampled allowed) packet.
    Event = "strata_event" {
        /// `bpf_ktime_get_ns` at the decision.
        timestamp_ns: u64,
        /// Interface index.
        ifindex: u32,
        /// Endpoint id.
        endpoint_id: u32,
        /// Source identity.
        src_identity: u32,
        /// Destination identity.
        dst_identity: u32,
        /// Source address.
        saddr: [u8; 16],
        /// Destination address.
        daddr: [u8; 16],
        /// Source port, host order.
        sport: u16,
        /// Destination port, host order.
        dport: u16,
        /// IP protocol number.
        protocol: u8,
        /// 4 or 6 (0 when not parsed).
        family: u8,
        /// Direction.
        direction: u8,
        /// [`Reason`] number.
        reason: u8,
        /// Packet length.
        length: u32,
        /// Zero.
        reserved: u32,
    }
}

impl Event {
    /// Size of a ring-buffer record.
    pub const SIZE: usize = std::mem::size_of::<Event>();

    /// Decodes a ring-buffer record (native byte order); `None` when shorter than an event.
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        let b = bytes.get(..Event::SIZE)?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let mut saddr = [0u8; 16];
        let mut daddr = [0u8; 16];
        saddr.copy_from_slice(&b[24..40]);
        daddr.copy_from_slice(&b[40..56]);
        let ts = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        Some(Event {
            timestamp_ns: ts,
            ifindex: u32_at(8),
            endpoint_id: u32_at(12),
            src_identity: u32_at(16),
            dst_identity: u32_at(20),
            saddr,
            daddr,
            sport: u16_at(56),
            dport: u16_at(58),
            protocol: b[60],
            family: b[61],
            direction: b[62],
            reason: b[63],
            length: u32_at(64),
            reserved: u32_at(68),
        })
    }
}

/// The data part of an ipcache LPM key, as aya's `lpm_trie::Key` wants it.
pub type IpcacheKeyData = [u8; 16];

abi_struct! {
    /// The data part of a policy LPM key (the fields after `prefixlen`), also the key of the
    /// exact-match policy hash (`policy_exact`).
    PolicyKeyData = "strata_policy_match" {
        /// Endpoint id.
        endpoint_id: u32,
        /// Peer identity, 0 for any.
        identity: u32,
        /// Direction.
        direction: u8,
        /// Protocol.
        protocol: u8,
        /// Port, network order.
        port_be: u16,
    }
}

impl PolicyKey {
    /// The data part, for aya's LPM key.
    pub fn data(&self) -> PolicyKeyData {
        PolicyKeyData {
            endpoint_id: self.endpoint_id,
            identity: self.identity,
            direction: self.direction,
            protocol: self.protocol,
            port_be: self.port_be,
        }
    }

    /// The key from a prefix length and its data.
    pub fn from_data(prefixlen: u32, d: PolicyKeyData) -> Self {
        PolicyKey {
            prefixlen,
            endpoint_id: d.endpoint_id,
            identity: d.identity,
            direction: d.direction,
            protocol: d.protocol,
            port_be: d.port_be,
        }
    }

    /// The key's data as the bytes the LPM trie compares, in order.
    pub fn data_bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.endpoint_id.to_ne_bytes());
        b[4..8].copy_from_slice(&self.identity.to_ne_bytes());
        b[8] = self.direction;
        b[9] = self.protocol;
        b[10..12].copy_from_slice(&self.port_be.to_ne_bytes());
        b
    }

    /// A key for an entry: `protocol` 0 means any protocol (and any port); otherwise the
    /// entry covers ports whose first `port_prefix` bits equal those of `port` (0..=16).
    /// Bits of `port` beyond the prefix are cleared, so equal ranges give equal keys.
    pub fn entry(
        endpoint_id: u32,
        identity: u32,
        direction: u8,
        protocol: u8,
        port: u16,
        port_prefix: u8,
    ) -> PolicyKey {
        if protocol == 0 {
            return PolicyKey {
                prefixlen: POLICY_PREFIX_ANY_PROTOCOL,
                endpoint_id,
                identity,
                direction,
                protocol: 0,
                port_be: 0,
            };
        }
        let plen = u32::from(port_prefix.min(16));
        let mask: u16 = if plen == 0 {
            0
        } else {
            u16::MAX << (16 - plen)
        };
        PolicyKey {
            prefixlen: POLICY_PREFIX_PROTOCOL + plen,
            endpoint_id,
            identity,
            direction,
            protocol,
            port_be: (port & mask).to_be(),
        }
    }
}

/// An address in the 16-byte form the maps use (IPv4 as `::ffff:a.b.c.d`).
pub fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of a 16-byte map address (IPv4-mapped becomes IPv4).
pub fn addr_from_bytes(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl IpcacheKey {
    /// The key of a prefix: IPv4 prefixes are stored as IPv4-mapped IPv6 (+96 bits).
    /// Address bits beyond the prefix are cleared.
    pub fn prefix(ip: IpAddr, len: u8) -> IpcacheKey {
        let (mut addr, prefixlen) = match ip {
            IpAddr::V4(_) => (addr_bytes(ip), 96 + u32::from(len.min(32))),
            IpAddr::V6(_) => (addr_bytes(ip), u32::from(len.min(128))),
        };
        mask_bytes(&mut addr, prefixlen);
        IpcacheKey { prefixlen, addr }
    }
}

/// Clears every bit of `bytes` beyond the first `bits`.
pub fn mask_bytes(bytes: &mut [u8], bits: u32) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = (i as u32) * 8;
        if start >= bits {
            *b = 0;
        } else if start + 8 > bits {
            *b &= 0xffu8 << (8 - (bits - start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_key_data_matches_full_key_offsets() {
        let full = PolicyKey::fields();
        assert_eq!(std::mem::size_of::<PolicyKeyData>() + 4, PolicyKey::size());
        assert_eq!(
            full[1].offset - 4,
            std::mem::offset_of!(PolicyKeyData, endpoint_id)
        );
        assert_eq!(
            full[2].offset - 4,
            std::mem::offset_of!(PolicyKeyData, identity)
        );
        assert_eq!(
            full[3].offset - 4,
            std::mem::offset_of!(PolicyKeyData, direction)
        );
        assert_eq!(
            full[4].offset - 4,
            std::mem::offset_of!(PolicyKeyData, protocol)
        );
        assert_eq!(
            full[5].offset - 4,
            std::mem::offset_of!(PolicyKeyData, port_be)
        );
    }

    #[test]
    fn entry_keys_clear_bits_beyond_the_prefix() {
        let k = PolicyKey::entry(7, 0, DIR_INGRESS, 6, 0x1f90 | 0x7, 13);
        assert_eq!(k.prefixlen, 93);
        assert_eq!(u16::from_be(k.port_be), 0x1f90);
        let any = PolicyKey::entry(7, 9, DIR_EGRESS, 0, 80, 16);
        assert_eq!(any.prefixlen, 72);
        assert_eq!((any.protocol, any.port_be), (0, 0));
    }

    #[test]
    fn ipcache_prefix_masks_and_maps_v4() {
        let k = IpcacheKey::prefix("10.1.2.3".parse().unwrap(), 16);
        assert_eq!(k.prefixlen, 112);
        assert_eq!(
            addr_from_bytes(k.addr),
            "10.1.0.0".parse::<IpAddr>().unwrap()
        );
        let k6 = IpcacheKey::prefix("fd00::1:2".parse().unwrap(), 64);
        assert_eq!(k6.prefixlen, 64);
        assert_eq!(
            addr_from_bytes(k6.addr),
            "fd00::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn event_offsets_match_the_decoder() {
        let f = Event::fields();
        let off = |n: &str| f.iter().find(|x| x.name == n).map(|x| x.offset);
        assert_eq!(off("saddr"), Some(24));
        assert_eq!(off("sport"), Some(56));
        assert_eq!(off("reason"), Some(63));
        assert_eq!(off("length"), Some(64));
        assert_eq!(Event::SIZE, 72);
        assert_eq!(Event::decode(&[0u8; 71]), None);
        let mut b = [0u8; 72];
        b[0..8].copy_from_slice(&1u64.to_ne_bytes());
        b[8..12].copy_from_slice(&7u32.to_ne_bytes());
        b[63] = 17;
        b[64..68].copy_from_slice(&74u32.to_ne_bytes());
        let e = Event::decode(&b).expect("decodes");
        assert_eq!(
            (e.timestamp_ns, e.ifindex, e.reason, e.length),
            (1, 7, 17, 74)
        );
    }

    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_u8(r as u8), Some(r));
            assert_eq!(r.is_drop(), r.name().starts_with("drop"));
        }
        assert_eq!(Reason::from_u8(7), None);
    }
}
