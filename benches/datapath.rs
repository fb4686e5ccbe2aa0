//! eBPF datapath speed (needs root; prints why it skips otherwise):
//!
//! - `datapath_test_run/entries/N`: kernel nanoseconds per packet of `to_pod` under
//!   BPF_PROG_TEST_RUN with N policy entries and N ipcache prefixes (N = 10 … 100,000): the
//!   number of map lookups per packet does not depend on N. `lpm-entries/N`: the same with
//!   every entry in the LPM tries (ipcache /24 prefixes, port-range policy entries), where the
//!   trie walk, not the lookup count, grows with N. These take the full policy path on every
//!   packet (verdict reuse off); `established/100000` is a packet of a tracked connection,
//!   which reuses its verdict while the maps are unchanged.
//! - `datapath_sync/relabel`: one relabel (ipcache entry plus the peer's policy entries)
//!   applied to maps holding 100,000 entries.
//! - `datapath_lab/udp64`: real UDP traffic (64-byte payloads) from one pod to another
//!   through the veths and the node namespace: without programs, with the programs and
//!   100,000 entries, and without programs again (the drift between the two baselines is the
//!   noise floor of the comparison); criterion reports packets per second (throughput).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata_datapath::{
    abi::{
        DIR_INGRESS, EP_ENFORCE_INGRESS, Endpoint, IpcacheKey, IpcacheValue, PolicyKey,
        PolicyValue, VERDICT_ALLOW,
    },
    loader::{Datapath, Hook, LoadOptions, is_root},
    netns::Lab,
    packet::{Builder, L4},
    state::{MapDiff, MapState},
};

fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i + 1)))
}

/// Endpoint `endpoint_id` on `ifindex`, `n` peers each with an ipcache /32 and one entry.
fn state(n: u32, ifindex: u32, endpoint_id: u32) -> MapState {
    let mut s = MapState::default();
    s.endpoints.insert(
        ifindex,
        Endpoint {
            endpoint_id,
            identity: 100,
            flags: EP_ENFORCE_INGRESS,
            reserved: 0,
        },
    );
    for i in 0..n {
        s.ipcache.insert(
            IpcacheKey::prefix(addr(i), 32),
            IpcacheValue {
                identity: 1000 + i,
                flags: 0,
            },
        );
        s.policy.insert(
            PolicyKey::entry(
                endpoint_id,
                1000 + i,
                DIR_INGRESS,
                6,
                80 + (i % 100) as u16,
                16,
            ),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        );
    }
    s
}

/// Like [`state`], but every entry goes to the LPM tries: ipcache /24 prefixes (one per
/// peer) and port-range policy entries (prefix length 8 over the port).
fn state_lpm(n: u32) -> MapState {
    let mut s = MapState::default();
    s.endpoints.insert(
        1,
        Endpoint {
            endpoint_id: 1,
            identity: 100,
            flags: EP_ENFORCE_INGRESS,
            reserved: 0,
        },
    );
    for i in 0..n {
        s.ipcache.insert(
            IpcacheKey::prefix(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i << 8))), 24),
            IpcacheValue {
                identity: 1000 + i,
                flags: 0,
            },
        );
        s.policy.insert(
            PolicyKey::entry(1, 1000 + i, DIR_INGRESS, 6, 0x1f00, 8),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        );
    }
    s
}

fn test_run(c: &mut Criterion) {
    if !is_root() {
        eprintln!("datapath_test_run: skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let mut group = c.benchmark_group("datapath_test_run");
    for n in [10u32, 1_000, 10_000, 100_000] {
        let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
        dp.sync(&state(n, 1, 1)).expect("sync");
        // Every repeat takes the full policy path, not the established connection's verdict.
        dp.set_reuse_verdicts(false).expect("config");
        let peer = n / 2;
        let pkt = Builder::v4(addr(peer), "10.255.0.1".parse().unwrap())
            .l4(L4::Tcp {
                sport: 40000,
                dport: 80 + (peer % 100) as u16,
                flags: 0x02,
            })
            .build();
        let first = dp.test_run(Hook::ToPod, &pkt, 1).expect("run");
        assert_eq!(first.code, 0, "the bench packet is allowed by policy");
        group.bench_with_input(BenchmarkId::new("entries", n), &n, |b, _| {
            b.iter_custom(|iters| kernel_time(&dp, &pkt, iters))
        });
    }
    // The same sizes with every entry in the LPM tries (prefixes and port ranges): the lookup
    // count is the same, the trie walk is what grows.
    for n in [10u32, 1_000, 10_000, 100_000] {
        let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
        dp.sync(&state_lpm(n)).expect("sync");
        dp.set_reuse_verdicts(false).expect("config");
        let peer = n / 2;
        let pkt = Builder::v4(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (peer << 8) | 7)),
            "10.255.0.1".parse().unwrap(),
        )
        .l4(L4::Tcp {
            sport: 40000,
            dport: 0x1f90,
            flags: 0x02,
        })
        .build();
        let first = dp.test_run(Hook::ToPod, &pkt, 1).expect("run");
        assert_eq!(first.code, 0, "the bench packet is allowed by policy");
        group.bench_with_input(BenchmarkId::new("lpm-entries", n), &n, |b, _| {
            b.iter_custom(|iters| kernel_time(&dp, &pkt, iters))
        });
        if n == 100_000 {
            // A packet of an established connection: the verdict of its conntrack entry.
            dp.set_reuse_verdicts(true).expect("config");
            group.bench_with_input(BenchmarkId::new("established", n), &n, |b, _| {
                b.iter_custom(|iters| kernel_time(&dp, &pkt, iters))
            });
        }
    }
    group.finish();
}

/// Kernel-measured time of `iters` runs (BPF_PROG_TEST_RUN's own average, without the
/// system call around it).
fn kernel_time(dp: &Datapath, pkt: &[u8], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let repeat = left.min(1_000_000) as u32;
        let r = dp.test_run(Hook::ToPod, pkt, repeat).expect("run");
        total += Duration::from_nanos(r.duration_ns * u64::from(repeat));
        left -= u64::from(repeat);
    }
    total
}

fn sync(c: &mut Criterion) {
    if !is_root() {
        eprintln!("datapath_sync: skipped: loading programs needs root");
        return;
    }
    let n = 100_000;
    let s = state(n, 1, 1);
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    dp.sync(&s).expect("sync");
    // Relabel: peer 4242 gets identity 999_999; its entry follows.
    let mut relabelled = s.clone();
    let key = IpcacheKey::prefix(addr(4242), 32);
    relabelled.ipcache.insert(
        key,
        IpcacheValue {
            identity: 999_999,
            flags: 0,
        },
    );
    let old = PolicyKey::entry(1, 1000 + 4242, DIR_INGRESS, 6, 80 + 42, 16);
    let value = relabelled.policy.remove(&old).expect("entry");
    relabelled.policy.insert(
        PolicyKey::entry(1, 999_999, DIR_INGRESS, 6, 80 + 42, 16),
        value,
    );
    let forward = MapDiff::between(&s, &relabelled);
    let back = MapDiff::between(&relabelled, &s);
    let mut group = c.benchmark_group("datapath_sync");
    let mut flip = false;
    group.bench_function("relabel", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let d = if flip { &back } else { &forward };
                dp.apply_diff(d).expect("apply");
                flip = !flip;
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn lab(c: &mut Criterion) {
    if !is_root() {
        eprintln!("datapath_lab: skipped: network namespaces need root");
        return;
    }
    let pods = vec![
        ("bench/a".to_owned(), Ipv4Addr::new(10, 90, 0, 1)),
        ("bench/b".to_owned(), Ipv4Addr::new(10, 90, 0, 2)),
    ];
    let lab = Lab::create(&pods).expect("lab");
    let stop = AtomicBool::new(false);
    let dst = SocketAddrV4::new(pods[1].1, 7000);
    let mut group = c.benchmark_group("datapath_lab");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    std::thread::scope(|s| {
        let (b, stop_ref) = (&lab.pods[1], &stop);
        let sink = s.spawn(move || {
            b.netns.run(|| {
                // Bound but never read: its queue fills at once and every later packet takes
                // the whole path up to the socket, then is dropped there at a constant cost (a
                // reader's wake-ups would make the cost depend on how far behind it is).
                let _sock = UdpSocket::bind("0.0.0.0:7000").expect("bind");
                let deadline = Instant::now() + Duration::from_secs(900);
                while !stop_ref.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        });
        let a = &lab.pods[0];
        let send = |name: &str, group: &mut criterion::BenchmarkGroup<'_, _>| {
            group.bench_function(name, |bench| {
                bench.iter_custom(|iters| {
                    a.netns
                        .run(|| {
                            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
                            let msg = [0x5au8; 64];
                            let start = Instant::now();
                            for _ in 0..iters {
                                let _ = sock.send_to(&msg, dst);
                            }
                            start.elapsed()
                        })
                        .expect("sender namespace")
                })
            });
        };
        send("udp64/no-program", &mut group);
        let mut dp = lab.load_datapath(0).expect("load");
        let mut st = state(100_000, lab.pods[1].ifindex, 2);
        st.ipcache.insert(
            IpcacheKey::prefix(IpAddr::V4(pods[0].1), 32),
            IpcacheValue {
                identity: 5000,
                flags: 0,
            },
        );
        st.policy.insert(
            PolicyKey::entry(2, 5000, DIR_INGRESS, 17, 7000, 16),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        );
        st.endpoints.insert(
            lab.pods[0].ifindex,
            Endpoint {
                endpoint_id: 1,
                identity: 5000,
                flags: 0,
                reserved: 0,
            },
        );
        dp.sync(&st).expect("sync");
        lab.attach(&mut dp).expect("attach");
        send("udp64/program-100k-entries", &mut group);
        // Detach again and re-measure the baseline, so drift between runs shows.
        let names: Vec<String> = lab.pods.iter().map(|p| p.host_if.clone()).collect();
        lab.node
            .run(|| {
                for n in &names {
                    dp.detach(n).expect("detach");
                }
            })
            .expect("node namespace");
        drop(dp);
        send("udp64/no-program-again", &mut group);
        stop.store(true, Ordering::SeqCst);
        let _ = sink.join();
    });
    group.finish();
}

criterion_group!(benches, test_run, sync, lab);
criterion_main!(benches);
