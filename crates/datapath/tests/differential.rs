//! Differential test: random and crafted packets through the kernel programs
//! (`BPF_PROG_TEST_RUN`) and through the reference twin must give the same verdicts, the same
//! events, the same output bytes, the same counters and the same conntrack table.
//!
//! Seeds are printed; replay one with `STRATA_DIFF_SEED=<seed>`.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use strata_datapath::{
    abi::{
        self, DIR_EGRESS, DIR_INGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, Endpoint, Event,
        IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, VERDICT_ALLOW, VERDICT_DENY,
    },
    loader::{Datapath, Hook, LoadOptions, monotonic_ns},
    netns::Lab,
    packet::{Builder, L4},
    state::MapState,
    twin::Twin,
};

/// splitmix64: small, seedable, good enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const PORTS: [u16; 8] = [53, 80, 443, 8080, 8081, 9000, 1, 65535];

fn v4_pool() -> Vec<IpAddr> {
    [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.1.7",
        "10.1.2.3",
        "192.168.5.5",
        "8.8.8.8",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

fn v6_pool() -> Vec<IpAddr> {
    [
        "fd00::1",
        "fd00::2",
        "fd00::3",
        "fd00:1::9",
        "fd01::1",
        "2001:db8::1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

fn ipcache(rng: &mut Rng, state: &mut MapState) {
    let prefixes: [(&str, u8); 9] = [
        ("10.0.0.1", 32),
        ("10.0.0.2", 32),
        ("10.0.0.0", 24),
        ("10.0.0.0", 16),
        ("192.168.0.0", 16),
        ("fd00::1", 128),
        ("fd00::", 64),
        ("fd00::", 16),
        ("2001:db8::", 32),
    ];
    for (p, len) in prefixes {
        if rng.chance(85) {
            state.ipcache.insert(
                IpcacheKey::prefix(p.parse().unwrap(), len),
                IpcacheValue {
                    identity: 100 + rng.below(6) as u32,
                    flags: 0,
                },
            );
        }
    }
}

fn policy(rng: &mut Rng, state: &mut MapState, endpoints: u32) {
    let n = 10 + rng.below(50);
    for _ in 0..n {
        let identity = if rng.chance(25) {
            0
        } else {
            100 + rng.below(6) as u32
        };
        let direction = if rng.chance(50) {
            DIR_EGRESS
        } else {
            DIR_INGRESS
        };
        let protocol = *rng.pick(&[0u8, 6, 6, 17, 17, 132, 1, 58]);
        let port = if rng.chance(70) {
            *rng.pick(&PORTS)
        } else {
            rng.next() as u16
        };
        let prefix = if rng.chance(70) {
            16
        } else {
            rng.below(17) as u8
        };
        let verdict = if rng.chance(15) {
            VERDICT_DENY
        } else {
            VERDICT_ALLOW
        };
        state.policy.insert(
            PolicyKey::entry(
                1 + rng.below(u64::from(endpoints)) as u32,
                identity,
                direction,
                protocol,
                port,
                prefix,
            ),
            PolicyValue { verdict, rule: 0 },
        );
    }
}

fn endpoint(state: &mut MapState, ifindex: u32, endpoint_id: u32, flags: u32) {
    state.endpoints.insert(
        ifindex,
        Endpoint {
            endpoint_id,
            identity: 99 + endpoint_id,
            flags,
            reserved: 0,
        },
    );
}

/// A random or crafted frame; `history` holds earlier (src, dst, l4) to craft replies and
/// ICMP errors about them.
fn frame(rng: &mut Rng, history: &mut Vec<(IpAddr, IpAddr, L4)>) -> Vec<u8> {
    let v6 = rng.chance(40);
    let pool = if v6 { v6_pool() } else { v4_pool() };
    let (mut src, mut dst) = (*rng.pick(&pool), *rng.pick(&pool));
    let ports = |rng: &mut Rng| -> u16 {
        if rng.chance(75) {
            *rng.pick(&PORTS)
        } else {
            rng.next() as u16
        }
    };
    let mut l4 = match rng.below(7) {
        0 | 1 => L4::Tcp {
            sport: ports(rng),
            dport: ports(rng),
            flags: *rng.pick(&[0x02u8, 0x10, 0x12, 0x11, 0x04, 0x18, 0x01, 0x14]),
        },
        2 | 3 => L4::Udp {
            sport: ports(rng),
            dport: ports(rng),
        },
        4 => L4::Sctp {
            sport: ports(rng),
            dport: ports(rng),
        },
        5 => {
            let ty = if v6 {
                *rng.pick(&[128u8, 129, 1, 2, 3, 4, 130, 133, 135, 136, 137, 143, 200])
            } else {
                *rng.pick(&[8u8, 0, 3, 11, 12, 5, 13])
            };
            L4::Icmp {
                ty,
                code: 0,
                rest: [0, rng.below(4) as u8, 0, 1],
                quoted: Vec::new(),
            }
        }
        _ => L4::Raw {
            protocol: *rng.pick(&[47u8, 50, 89, 255, 59]),
            bytes: vec![0xab; rng.below(24) as usize],
        },
    };
    // Replies of earlier traffic.
    if !history.is_empty() && rng.chance(30) {
        let (s, d, old) = history[rng.below(history.len() as u64) as usize].clone();
        src = d;
        dst = s;
        l4 = match old {
            L4::Tcp { sport, dport, .. } => L4::Tcp {
                sport: dport,
                dport: sport,
                flags: *rng.pick(&[0x12u8, 0x10, 0x11, 0x04]),
            },
            L4::Udp { sport, dport } => L4::Udp {
                sport: dport,
                dport: sport,
            },
            L4::Sctp { sport, dport } => L4::Sctp {
                sport: dport,
                dport: sport,
            },
            L4::Icmp { ty, rest, .. } => L4::Icmp {
                ty: match ty {
                    8 => 0,
                    128 => 129,
                    t => t,
                },
                code: 0,
                rest,
                quoted: Vec::new(),
            },
            other => other,
        };
    }
    // ICMP errors quoting earlier traffic, sent back to its source.
    if !history.is_empty() && rng.chance(8) {
        let (s, d, old) = history[rng.below(history.len() as u64) as usize].clone();
        let quoted = Builder::new(s, d).l4(old).ip_packet();
        let cut = if rng.chance(20) {
            rng.below(quoted.len() as u64) as usize
        } else {
            quoted.len().min(48)
        };
        src = d;
        dst = s;
        l4 = L4::Icmp {
            ty: if s.is_ipv4() {
                *rng.pick(&[3u8, 11, 12])
            } else {
                *rng.pick(&[1u8, 2, 3, 4])
            },
            code: 0,
            rest: [0; 4],
            quoted: quoted[..cut].to_vec(),
        };
    }
    if src.is_ipv4() != dst.is_ipv4() {
        dst = src;
    }
    let mut b = Builder::new(src, dst).l4(l4.clone());
    if rng.chance(20) {
        b = b.payload(&vec![0x5a; rng.below(64) as usize]);
    }
    if src.is_ipv4() {
        if rng.chance(10) {
            b = b.v4_options(&vec![1; 1 + rng.below(40) as usize]);
        }
        if rng.chance(5) {
            b = b.v4_fragment(*rng.pick(&[0x2000u16, 0x0001, 0x2010, 0x4000]));
        }
    } else if rng.chance(20) {
        let n = rng.below(11) as usize;
        let ext: Vec<(u8, u8)> = (0..n)
            .map(|_| (*rng.pick(&[0u8, 43, 60, 51, 44]), rng.below(3) as u8))
            .collect();
        b = b.v6_ext(&ext);
    }
    let mut f = b.build();
    history.push((src, dst, l4));
    if history.len() > 64 {
        history.remove(0);
    }
    // Damage.
    match rng.below(100) {
        0..=5 => {
            // BPF_PROG_TEST_RUN refuses (EINVAL) an IP frame shorter than its fixed IP header,
            // so truncation starts after it; shorter frames are covered by the twin's tests.
            let min = if src.is_ipv4() { 14 + 20 } else { 14 + 40 };
            let len = min + rng.below((f.len() - min) as u64) as usize;
            f.truncate(len);
        }
        6..=8 => {
            let i = 14 + rng.below((f.len() - 14) as u64) as usize;
            f[i] = rng.next() as u8;
        }
        9 => {
            f[12] = 0x08;
            f[13] = 0x06; // ARP
        }
        10 => f[14] = (f[14] & 0x0f) | 0x50, // bad version
        11 if src.is_ipv4() => f[14] = 0x43, // ihl < 5
        12 => f.extend_from_slice(&[0; 7]),  // trailing padding
        _ => {}
    }
    f
}

fn strip(e: &Event) -> Event {
    Event {
        timestamp_ns: 0,
        ..*e
    }
}

/// Runs `packets` frames on the interfaces `ifindexes` (each an endpoint, ids 1, 2, …) of the
/// calling thread's network namespace.
fn run_seed(dp: &mut Datapath, seed: u64, packets: usize, ifindexes: &[u32]) -> usize {
    let mut rng = Rng(seed);
    let mut state = MapState::default();
    let set_all = |state: &mut MapState, flags: u32| {
        for (i, ifindex) in ifindexes.iter().enumerate() {
            endpoint(state, *ifindex, i as u32 + 1, flags);
        }
    };
    set_all(&mut state, EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS);
    ipcache(&mut rng, &mut state);
    policy(&mut rng, &mut state, ifindexes.len() as u32);
    dp.sync(&state).expect("sync");
    let base_counters = dp.counters().expect("counters");
    let base_ct: BTreeMap<_, _> = dp.conntrack().expect("ct").into_iter().collect();
    let mut twin = Twin::new(&state);
    twin.set_generation(dp.generation());
    // The twin starts from the kernel's conntrack: an earlier seed may have left entries.
    twin_seed_ct(&mut twin, &base_ct);
    let mut history = Vec::new();
    let mut checked = 0;
    for i in 0..packets {
        // Phases: enforcement changes and the endpoint disappears for a while.
        if i == packets / 2 || i == packets * 3 / 4 || i == packets * 7 / 8 {
            let flags = match i {
                x if x == packets / 2 => EP_ENFORCE_INGRESS,
                x if x == packets * 3 / 4 => 0,
                _ => EP_ENFORCE_EGRESS,
            };
            set_all(&mut state, flags);
            if i == packets * 3 / 4 {
                // One interface stops being an endpoint.
                let gone = *rng.pick(ifindexes);
                state.endpoints.remove(&gone);
            }
            dp.sync(&state).expect("sync");
            twin.set_state(&state);
            twin.set_generation(dp.generation());
        }
        let f = frame(&mut rng, &mut history);
        let hook = if rng.chance(50) {
            Hook::FromPod
        } else {
            Hook::ToPod
        };
        let ifindex = *rng.pick(ifindexes);
        let now = monotonic_ns();
        let k = dp.test_run_on(hook, &f, ifindex, 1).unwrap_or_else(|e| {
            panic!("seed {seed} packet {i}: test run failed: {e:?}\nframe {f:02x?}")
        });
        let t = twin.process(now, ifindex, hook.direction(), &f);
        assert_eq!(
            k.code,
            t.action.code(),
            "seed {seed} packet {i} {hook:?}: kernel {} twin {:?} ({:?})\nframe {f:02x?}\nparsed {:?}",
            k.code,
            t.action,
            t.reason,
            t.packet
        );
        assert_eq!(k.output, f, "seed {seed} packet {i}: output bytes differ");
        let events: Vec<Event> = dp.drain_events(16).iter().map(strip).collect();
        let expected: Vec<Event> = t.event.iter().map(strip).collect();
        assert_eq!(
            events, expected,
            "seed {seed} packet {i} {hook:?} ({:?}): events differ\nframe {f:02x?}",
            t.reason
        );
        checked += 1;
    }
    let counters = dp.counters().expect("counters");
    let delta: Vec<(u64, u64)> = counters
        .iter()
        .zip(&base_counters)
        .map(|(a, b)| (a.packets - b.packets, a.bytes - b.bytes))
        .collect();
    let twin_counters: Vec<(u64, u64)> = twin
        .counters()
        .iter()
        .map(|c| (c.packets, c.bytes))
        .collect();
    assert_eq!(delta, twin_counters, "seed {seed}: counters differ");
    let now = monotonic_ns();
    let kernel_ct: BTreeMap<_, _> = dp
        .conntrack()
        .expect("ct")
        .into_iter()
        .filter(|(_, v)| v.expires_ns > now + 1_000_000_000)
        .map(|(k, v)| (k, (v.flags, v.generation)))
        .collect();
    let twin_ct: BTreeMap<_, _> = twin
        .conntrack()
        .iter()
        .filter(|(_, v)| v.expires_ns > now + 1_000_000_000)
        .map(|(k, v)| (*k, (v.flags, v.generation)))
        .collect();
    assert_eq!(kernel_ct, twin_ct, "seed {seed}: conntrack differs");
    checked
}

fn twin_seed_ct(twin: &mut Twin, base: &BTreeMap<abi::CtKey, abi::CtValue>) {
    twin.load_conntrack(base.iter().map(|(k, v)| (*k, *v)));
}

#[test]
fn kernel_and_twin_agree_on_random_and_crafted_packets() {
    if !common::privileged("kernel_and_twin_agree_on_random_and_crafted_packets") {
        return;
    }
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    // Endpoints on three interfaces: loopback and two veths of a lab's node namespace, where
    // the test runs (TEST_RUN takes the interface from the namespace of the calling thread).
    let lab = Lab::create(&[
        ("diff/a".to_owned(), Ipv4Addr::new(10, 79, 0, 1)),
        ("diff/b".to_owned(), Ipv4Addr::new(10, 79, 0, 2)),
    ])
    .expect("lab");
    let ifindexes = [1, lab.pods[0].ifindex, lab.pods[1].ifindex];
    let seeds: Vec<u64> = match std::env::var("STRATA_DIFF_SEED") {
        Ok(s) => vec![s.parse().expect("STRATA_DIFF_SEED is a u64")],
        Err(_) => {
            let base = monotonic_ns() ^ u64::from(std::process::id()).rotate_left(32);
            (0..4)
                .map(|i| base.wrapping_add(i * 0x1_0000_0001))
                .collect()
        }
    };
    let per_seed = if seeds.len() == 1 { 12_000 } else { 3_000 };
    let total: usize = lab
        .node
        .run(|| {
            seeds
                .iter()
                .map(|seed| {
                    println!("differential: seed {seed} (replay with STRATA_DIFF_SEED={seed})");
                    run_seed(&mut dp, *seed, per_seed, &ifindexes)
                })
                .sum()
        })
        .expect("node namespace");
    println!("differential: {total} packets agreed");
    assert!(total >= 10_000);
    // Every decision path was exercised.
    let counters = dp.counters().expect("counters");
    let mut seen = Vec::new();
    for r in abi::Reason::ALL {
        let n: u64 = [0, 1]
            .iter()
            .map(|d| counters[(r as u8 as u32 + abi::REASONS * d) as usize].packets)
            .sum();
        println!("differential: {:>20} {n}", r.name());
        if n > 0 {
            seen.push(r);
        }
    }
    for r in abi::Reason::ALL {
        assert!(seen.contains(&r), "no packet took the path {}", r.name());
    }
}
