//! The reference datapath: a pure Rust twin of every decision `bpf/policy.c` makes.
//!
//! Same parse, same ipcache and policy longest-prefix lookups, same conntrack transitions, same
//! counters and events, over a [`MapState`]. Time is passed in (`now_ns`, the clock of
//! `bpf_ktime_get_ns`). `tests/differential.rs` runs packets through both and demands equality.

use std::collections::HashMap;

use crate::abi::CT_UNENFORCED;
use crate::abi::{
    COUNTERS, CT_CLOSING, CT_LIFETIME_CLOSING_NS, CT_LIFETIME_OTHER_NS, CT_LIFETIME_TCP_NS,
    Counter, CtKey, CtValue, DIR_EGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, Event,
    IDENTITY_WORLD, MAX_EXT_HEADERS, POLICY_PREFIX_FULL, PolicyKey, REASONS, Reason, VERDICT_ALLOW,
    VERDICT_DENY, mask_bytes,
};
use crate::state::MapState;

const ETH_HLEN: usize = 14;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;
const PROTO_HOPOPTS: u8 = 0;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_AH: u8 = 51;
const PROTO_DSTOPTS: u8 = 60;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// What TC is told to do with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `TC_ACT_OK` (0).
    Pass,
    /// `TC_ACT_SHOT` (2).
    Drop,
}

impl Action {
    /// The TC return code.
    pub fn code(self) -> u32 {
        match self {
            Action::Pass => 0,
            Action::Drop => 2,
        }
    }
}

/// Fields parsed from a packet (zero where parsing stopped first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// Source address (IPv6 or IPv4-mapped).
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Source port (or ICMP echo request id), host order.
    pub sport: u16,
    /// Destination port (or ICMP echo reply id), host order.
    pub dport: u16,
    /// IP protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// 4, 6, or 0 when not reached.
    pub family: u8,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// The quoted packet of an ICMP error, when it parsed.
    pub inner: Option<Inner>,
}

/// The packet quoted by an ICMP error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inner {
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// Protocol.
    pub protocol: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parse {
    Ok,
    NonIp,
    Malformed,
    Fragment,
    ExtHeaders,
    Ndp,
}

fn load(frame: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    frame.get(off..off.checked_add(len)?)
}

fn v4_mapped(v4: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..16].copy_from_slice(&v4[..4]);
    a
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn parse_inner_v4(frame: &[u8], off: usize) -> Option<Inner> {
    let ip = load(frame, off, 20)?;
    if ip[0] >> 4 != 4 || ip[0] & 0xf < 5 {
        return None;
    }
    let mut inner = Inner {
        saddr: v4_mapped(&ip[12..16]),
        daddr: v4_mapped(&ip[16..20]),
        protocol: ip[9],
        ..Inner::default()
    };
    if has_ports(ip[9]) {
        let ports = load(frame, off + usize::from(ip[0] & 0xf) * 4, 4)?;
        inner.sport = be16(&ports[0..2]);
        inner.dport = be16(&ports[2..4]);
    }
    Some(inner)
}

fn parse_inner_v6(frame: &[u8], off: usize) -> Option<Inner> {
    let ip = load(frame, off, 40)?;
    if ip[0] >> 4 != 6 {
        return None;
    }
    let mut inner = Inner {
        saddr: ip[8..24].try_into().ok()?,
        daddr: ip[24..40].try_into().ok()?,
        protocol: ip[6],
        ..Inner::default()
    };
    if has_ports(ip[6]) {
        let ports = load(frame, off + 40, 4)?;
        inner.sport = be16(&ports[0..2]);
        inner.dport = be16(&ports[2..4]);
    }
    Some(inner)
}

fn parse_l4(frame: &[u8], off: usize, p: &mut Packet) -> Parse {
    match p.protocol {
        PROTO_TCP => {
            let Some(l4) = load(frame, off, 14) else {
                return Parse::Malformed;
            };
            p.sport = be16(&l4[0..2]);
            p.dport = be16(&l4[2..4]);
            p.tcp_flags = l4[13];
            Parse::Ok
        }
        PROTO_UDP | PROTO_SCTP => {
            let Some(l4) = load(frame, off, 8) else {
                return Parse::Malformed;
            };
            p.sport = be16(&l4[0..2]);
            p.dport = be16(&l4[2..4]);
            Parse::Ok
        }
        PROTO_ICMP => {
            let Some(l4) = load(frame, off, 8) else {
                return Parse::Malformed;
            };
            match l4[0] {
                8 => p.sport = be16(&l4[4..6]),
                0 => p.dport = be16(&l4[4..6]),
                3 | 11 | 12 => p.inner = parse_inner_v4(frame, off + 8),
                _ => {}
            }
            Parse::Ok
        }
        PROTO_ICMPV6 => {
            let Some(l4) = load(frame, off, 8) else {
                return Parse::Malformed;
            };
            match l4[0] {
                128 => p.sport = be16(&l4[4..6]),
                129 => p.dport = be16(&l4[4..6]),
                1..=4 => p.inner = parse_inner_v6(frame, off + 8),
                // Neighbour discovery and multicast listener discovery.
                130..=137 | 143 => return Parse::Ndp,
                _ => {}
            }
            Parse::Ok
        }
        _ => Parse::Ok,
    }
}

fn is_ext(nh: u8) -> bool {
    matches!(nh, PROTO_HOPOPTS | PROTO_ROUTING | PROTO_DSTOPTS | PROTO_AH)
}

fn parse(frame: &[u8], p: &mut Packet) -> Parse {
    let Some(eth_proto) = load(frame, 12, 2) else {
        return Parse::NonIp;
    };
    match be16(eth_proto) {
        0x0800 => {
            let Some(ip) = load(frame, ETH_HLEN, 20) else {
                return Parse::Malformed;
            };
            if ip[0] >> 4 != 4 || ip[0] & 0xf < 5 {
                return Parse::Malformed;
            }
            let hlen = usize::from(ip[0] & 0xf) * 4;
            let tot = usize::from(be16(&ip[2..4]));
            if tot < hlen || ETH_HLEN + tot > frame.len() {
                return Parse::Malformed;
            }
            p.family = 4;
            p.protocol = ip[9];
            p.saddr = v4_mapped(&ip[12..16]);
            p.daddr = v4_mapped(&ip[16..20]);
            if be16(&ip[6..8]) & 0x3fff != 0 {
                return Parse::Fragment;
            }
            parse_l4(frame, ETH_HLEN + hlen, p)
        }
        0x86dd => {
            let Some(ip) = load(frame, ETH_HLEN, 40) else {
                return Parse::Malformed;
            };
            if ip[0] >> 4 != 6 {
                return Parse::Malformed;
            }
            let payload = usize::from(be16(&ip[4..6]));
            if ETH_HLEN + 40 + payload > frame.len() {
                return Parse::Malformed;
            }
            p.family = 6;
            p.saddr.copy_from_slice(&ip[8..24]);
            p.daddr.copy_from_slice(&ip[24..40]);
            let mut nh = ip[6];
            let mut off = ETH_HLEN + 40;
            for _ in 0..MAX_EXT_HEADERS {
                if nh == PROTO_FRAGMENT {
                    p.protocol = nh;
                    return Parse::Fragment;
                }
                if !is_ext(nh) {
                    break;
                }
                let Some(ext) = load(frame, off, 2) else {
                    return Parse::Malformed;
                };
                off += if nh == PROTO_AH {
                    (usize::from(ext[1]) + 2) * 4
                } else {
                    (usize::from(ext[1]) + 1) * 8
                };
                nh = ext[0];
            }
            p.protocol = nh;
            if nh == PROTO_FRAGMENT {
                return Parse::Fragment;
            }
            if is_ext(nh) {
                return Parse::ExtHeaders;
            }
            parse_l4(frame, off, p)
        }
        _ => Parse::NonIp,
    }
}

/// Parses a frame as the program does: the packet's fields (as far as parsing got) and, when
/// parsing stops the packet, the reason.
pub fn parse_frame(frame: &[u8]) -> (Packet, Option<Reason>) {
    let mut p = Packet::default();
    let r = match parse(frame, &mut p) {
        Parse::Ok => None,
        Parse::NonIp => Some(Reason::PassNonIp),
        Parse::Malformed => Some(Reason::DropMalformed),
        Parse::Fragment => Some(Reason::DropFragment),
        Parse::ExtHeaders => Some(Reason::DropExtHeaders),
        Parse::Ndp => Some(Reason::AllowNdp),
    };
    (p, r)
}

/// Longest-prefix match over `bits` of `data` in `entries` keyed by (prefix length, masked data).
fn lpm<const N: usize, V: Copy>(
    entries: &HashMap<(u32, [u8; N]), V>,
    data: [u8; N],
    bits: u32,
) -> Option<V> {
    (0..=bits).rev().find_map(|plen| {
        let mut d = data;
        mask_bytes(&mut d, plen);
        entries.get(&(plen, d)).copied()
    })
}

/// The outcome of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Pass or drop.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// The packet's fields as parsed.
    pub packet: Packet,
    /// The event the program emits (drops always; allows only if sampled, which the twin
    /// reports as `None` since sampling is random).
    pub event: Option<Event>,
}

/// The reference datapath over a [`MapState`], with its own conntrack and counters.
#[derive(Clone, Debug)]
pub struct Twin {
    endpoints: HashMap<u32, crate::abi::Endpoint>,
    ipcache: HashMap<(u32, [u8; 16]), u32>,
    policy: HashMap<(u32, [u8; 12]), u32>,
    conntrack: HashMap<CtKey, CtValue>,
    counters: Vec<Counter>,
    generation: u32,
}

impl Twin {
    /// A twin over these map contents, with empty conntrack and zero counters.
    pub fn new(state: &MapState) -> Twin {
        let mut t = Twin {
            endpoints: HashMap::new(),
            ipcache: HashMap::new(),
            policy: HashMap::new(),
            conntrack: HashMap::new(),
            counters: vec![Counter::default(); COUNTERS as usize],
            generation: 0,
        };
        t.set_state(state);
        t
    }

    /// Replaces the map contents, keeping conntrack and counters (what a sync does).
    pub fn set_state(&mut self, state: &MapState) {
        self.endpoints = state.endpoints.clone().into_iter().collect();
        self.ipcache = state
            .ipcache
            .iter()
            .map(|(k, v)| {
                let mut a = k.addr;
                mask_bytes(&mut a, k.prefixlen);
                ((k.prefixlen, a), v.identity)
            })
            .collect();
        self.policy = state
            .policy
            .iter()
            .map(|(k, v)| {
                let mut d = k.data_bytes();
                mask_bytes(&mut d, k.prefixlen);
                ((k.prefixlen, d), v.verdict)
            })
            .collect();
    }

    /// Sets the maps' generation, as the loader does after each change (see
    /// [`crate::loader::Datapath::generation`]). The program reuses the verdict of a conntrack
    /// entry of the current generation; the twin always evaluates, which must give the same.
    pub fn set_generation(&mut self, generation: u32) {
        self.generation = generation;
    }

    /// The counters, index `reason + 32 * direction`.
    pub fn counters(&self) -> &[Counter] {
        &self.counters
    }

    /// Adds conntrack entries (e.g. read back from the kernel).
    pub fn load_conntrack(&mut self, entries: impl IntoIterator<Item = (CtKey, CtValue)>) {
        self.conntrack.extend(entries);
    }

    /// The conntrack table.
    pub fn conntrack(&self) -> &HashMap<CtKey, CtValue> {
        &self.conntrack
    }

    /// Identity of an address (16-byte form): the ipcache's longest prefix, else world.
    pub fn identity_of(&self, addr: [u8; 16]) -> u32 {
        lpm(&self.ipcache, addr, 128).unwrap_or(IDENTITY_WORLD)
    }

    fn policy_verdict(&self, endpoint_id: u32, identity: u32, dir: u8, p: &Packet) -> u32 {
        let key = PolicyKey {
            prefixlen: POLICY_PREFIX_FULL,
            endpoint_id,
            identity,
            direction: dir,
            protocol: p.protocol,
            port_be: if has_ports(p.protocol) {
                p.dport.to_be()
            } else {
                0
            },
        };
        lpm(&self.policy, key.data_bytes(), POLICY_PREFIX_FULL).unwrap_or(0)
    }

    fn ct_live(&self, key: &CtKey, now: u64) -> bool {
        self.conntrack.get(key).is_some_and(|v| v.expires_ns > now)
    }

    /// Decides one frame arriving on `ifindex` in direction `dir` at time `now_ns`, updating
    /// conntrack and counters as the program does.
    pub fn process(&mut self, now_ns: u64, ifindex: u32, dir: u8, frame: &[u8]) -> Decision {
        let (reason, packet, peer, ep) = self.decide(now_ns, ifindex, dir, frame);
        let idx = (u32::from(reason as u8) + REASONS * u32::from(dir)) as usize;
        if let Some(c) = self.counters.get_mut(idx) {
            c.packets += 1;
            c.bytes += frame.len() as u64;
        }
        let event = (reason.is_drop()).then(|| {
            let (eid, eident) = ep.map_or((0, 0), |e| (e.endpoint_id, e.identity));
            let (src_identity, dst_identity) = if dir == DIR_EGRESS {
                (eident, peer)
            } else {
                (peer, eident)
            };
            Event {
                timestamp_ns: 0,
                ifindex,
                endpoint_id: eid,
                src_identity,
                dst_identity,
                saddr: packet.saddr,
                daddr: packet.daddr,
                sport: packet.sport,
                dport: packet.dport,
                protocol: packet.protocol,
                family: packet.family,
                direction: dir,
                reason: reason as u8,
                length: frame.len() as u32,
                reserved: 0,
            }
        });
        Decision {
            action: if reason.is_drop() {
                Action::Drop
            } else {
                Action::Pass
            },
            reason,
            packet,
            event,
        }
    }

    fn decide(
        &mut self,
        now: u64,
        ifindex: u32,
        dir: u8,
        frame: &[u8],
    ) -> (Reason, Packet, u32, Option<crate::abi::Endpoint>) {
        let Some(ep) = self.endpoints.get(&ifindex).copied() else {
            return (Reason::PassNoEndpoint, Packet::default(), 0, None);
        };
        let (p, parse_reason) = parse_frame(frame);
        if let Some(r) = parse_reason {
            return (r, p, 0, Some(ep));
        }
        let peer = self.identity_of(if dir == DIR_EGRESS { p.daddr } else { p.saddr });

        if let Some(inner) = p.inner {
            let key = CtKey {
                saddr: inner.saddr,
                daddr: inner.daddr,
                sport_be: inner.sport.to_be(),
                dport_be: inner.dport.to_be(),
                protocol: inner.protocol,
                direction: dir ^ 1,
                reserved: 0,
                ifindex,
            };
            if self.ct_live(&key, now) {
                return (Reason::AllowCtRelated, p, peer, Some(ep));
            }
        }

        let reply = CtKey {
            saddr: p.daddr,
            daddr: p.saddr,
            sport_be: p.dport.to_be(),
            dport_be: p.sport.to_be(),
            protocol: p.protocol,
            direction: dir ^ 1,
            reserved: 0,
            ifindex,
        };
        if let Some(v) = self.conntrack.get_mut(&reply)
            && v.expires_ns > now
        {
            if p.protocol == PROTO_TCP
                && p.tcp_flags & (TCP_FIN | TCP_RST) != 0
                && v.flags & CT_CLOSING == 0
            {
                v.flags |= CT_CLOSING;
                v.expires_ns = now + CT_LIFETIME_CLOSING_NS;
            }
            return (Reason::AllowCtReply, p, peer, Some(ep));
        }

        let enforce = if dir == DIR_EGRESS {
            EP_ENFORCE_EGRESS
        } else {
            EP_ENFORCE_INGRESS
        };
        let v1 = self.policy_verdict(ep.endpoint_id, peer, dir, &p);
        let v2 = self.policy_verdict(ep.endpoint_id, 0, dir, &p);
        if v1 == VERDICT_DENY || v2 == VERDICT_DENY {
            return (Reason::DropPolicyDeny, p, peer, Some(ep));
        }
        let reason = if v1 == VERDICT_ALLOW || v2 == VERDICT_ALLOW {
            Reason::AllowPolicy
        } else if ep.flags & enforce != 0 {
            return (Reason::DropPolicyDefault, p, peer, Some(ep));
        } else {
            Reason::AllowUnenforced
        };

        let fwd = CtKey {
            saddr: p.saddr,
            daddr: p.daddr,
            sport_be: p.sport.to_be(),
            dport_be: p.dport.to_be(),
            protocol: p.protocol,
            direction: dir,
            reserved: 0,
            ifindex,
        };
        let unenforced = if reason == Reason::AllowUnenforced {
            CT_UNENFORCED
        } else {
            0
        };
        let closing_now = p.protocol == PROTO_TCP && p.tcp_flags & (TCP_FIN | TCP_RST) != 0;
        let lifetime = if p.protocol == PROTO_TCP {
            CT_LIFETIME_TCP_NS
        } else {
            CT_LIFETIME_OTHER_NS
        };
        let value = match self
            .conntrack
            .get(&fwd)
            .copied()
            .filter(|o| o.expires_ns > now)
        {
            Some(o) => {
                let flags = (o.flags & !CT_UNENFORCED) | unenforced;
                if o.flags & CT_CLOSING != 0 {
                    CtValue {
                        flags,
                        generation: self.generation,
                        ..o
                    }
                } else if closing_now {
                    CtValue {
                        expires_ns: now + CT_LIFETIME_CLOSING_NS,
                        flags: flags | CT_CLOSING,
                        generation: self.generation,
                    }
                } else {
                    CtValue {
                        expires_ns: now + lifetime,
                        flags,
                        generation: self.generation,
                    }
                }
            }
            None if closing_now => CtValue {
                expires_ns: now + CT_LIFETIME_CLOSING_NS,
                flags: CT_CLOSING | unenforced,
                generation: self.generation,
            },
            None => CtValue {
                expires_ns: now + lifetime,
                flags: unenforced,
                generation: self.generation,
            },
        };
        self.conntrack.insert(fwd, value);
        (reason, p, peer, Some(ep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{DIR_INGRESS, Endpoint, IpcacheKey, IpcacheValue, PolicyValue};
    use crate::packet::{Builder, L4};

    fn state() -> MapState {
        let mut s = MapState::default();
        s.endpoints.insert(
            5,
            Endpoint {
                endpoint_id: 1,
                identity: 100,
                flags: EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS,
                reserved: 0,
            },
        );
        s.ipcache.insert(
            IpcacheKey::prefix("10.0.0.2".parse().unwrap(), 32),
            IpcacheValue {
                identity: 200,
                flags: 0,
            },
        );
        s.policy.insert(
            PolicyKey::entry(1, 200, DIR_INGRESS, 6, 80, 16),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        );
        s
    }

    fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        Builder::v4(src.parse().unwrap(), dst.parse().unwrap())
            .l4(L4::Tcp {
                sport,
                dport,
                flags,
            })
            .build()
    }

    #[test]
    fn allowed_connection_replies_pass_and_others_drop() {
        let mut t = Twin::new(&state());
        let syn = tcp("10.0.0.2", "10.0.0.1", 40000, 80, 0x02);
        assert_eq!(
            t.process(1, 5, DIR_INGRESS, &syn).reason,
            Reason::AllowPolicy
        );
        let synack = tcp("10.0.0.1", "10.0.0.2", 80, 40000, 0x12);
        assert_eq!(
            t.process(2, 5, DIR_EGRESS, &synack).reason,
            Reason::AllowCtReply
        );
        let other = tcp("10.0.0.2", "10.0.0.1", 40000, 81, 0x02);
        let d = t.process(3, 5, DIR_INGRESS, &other);
        assert_eq!(
            (d.action, d.reason),
            (Action::Drop, Reason::DropPolicyDefault)
        );
        assert_eq!(d.event.map(|e| e.src_identity), Some(200));
        let unknown = tcp("10.9.9.9", "10.0.0.1", 1, 80, 0x02);
        assert_eq!(
            t.process(4, 5, DIR_INGRESS, &unknown).reason,
            Reason::DropPolicyDefault
        );
    }

    #[test]
    fn conntrack_entries_expire_and_fin_shortens_them() {
        let mut t = Twin::new(&state());
        let syn = tcp("10.0.0.2", "10.0.0.1", 40000, 80, 0x02);
        t.process(0, 5, DIR_INGRESS, &syn);
        let fin = tcp("10.0.0.1", "10.0.0.2", 80, 40000, 0x11);
        assert_eq!(
            t.process(1, 5, DIR_EGRESS, &fin).reason,
            Reason::AllowCtReply
        );
        let reply = tcp("10.0.0.1", "10.0.0.2", 80, 40000, 0x10);
        let late = 1 + CT_LIFETIME_CLOSING_NS;
        assert_eq!(
            t.process(late, 5, DIR_EGRESS, &reply).reason,
            Reason::DropPolicyDefault
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let mut s = state();
        s.policy.insert(
            PolicyKey::entry(1, 0, DIR_INGRESS, 0, 0, 0),
            PolicyValue {
                verdict: VERDICT_DENY,
                rule: 0,
            },
        );
        let mut t = Twin::new(&s);
        let syn = tcp("10.0.0.2", "10.0.0.1", 40000, 80, 0x02);
        assert_eq!(
            t.process(1, 5, DIR_INGRESS, &syn).reason,
            Reason::DropPolicyDeny
        );
    }

    proptest::proptest! {
        /// Untrusted bytes never panic the parser or the twin, and every frame is decided.
        #[test]
        fn arbitrary_frames_are_decided_without_panicking(
            frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            v6 in proptest::prelude::any::<bool>(),
            dir in 0u8..2,
        ) {
            let mut f = frame;
            if f.len() >= 14 {
                f[12] = if v6 { 0x86 } else { 0x08 };
                f[13] = if v6 { 0xdd } else { 0x00 };
            }
            let mut t = Twin::new(&state());
            let d = t.process(1, 5, dir, &f);
            let total: u64 = t.counters().iter().map(|c| c.packets).sum();
            proptest::prop_assert_eq!(total, 1);
            proptest::prop_assert_eq!(d.action == Action::Drop, d.reason.is_drop());
        }
    }

    #[test]
    fn fragments_and_truncations_have_their_reasons() {
        let mut f = tcp("10.0.0.2", "10.0.0.1", 1, 80, 2);
        f[14 + 6] = 0x20; // MF
        assert_eq!(parse_frame(&f).1, Some(Reason::DropFragment));
        let full = tcp("10.0.0.2", "10.0.0.1", 1, 80, 2);
        assert_eq!(
            parse_frame(&full[..full.len() - 1]).1,
            Some(Reason::DropMalformed)
        );
    }
}
