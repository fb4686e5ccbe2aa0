//! Property: whatever sequence of announcements and withdrawals one speaker gets at runtime,
//! its peer's Adj-RIB-In converges to exactly the announced set (two real speakers over
//! loopback, one session for every case).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use proptest::prelude::*;
use strata_bgp::speaker::{Announcement, NeighborConfig, Speaker, SpeakerConfig, SpeakerEvent};

fn pool() -> Vec<IpNet> {
    (0..12u32)
        .map(|i| format!("10.99.{i}.0/24").parse().unwrap())
        .chain((0..4u32).map(|i| format!("2001:db8:99:{i:x}::/64").parse().unwrap()))
        .collect()
}

struct Pair {
    runtime: tokio::runtime::Runtime,
    a: Speaker,
    b: Speaker,
    b_addr: IpAddr,
    a_addr: IpAddr,
}

fn pair() -> Pair {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a_addr, b_addr): (IpAddr, IpAddr) =
        ("127.0.17.1".parse().unwrap(), "127.0.17.2".parse().unwrap());
    let (a, b) = runtime.block_on(async {
        let mut nb = NeighborConfig::new(a_addr, 65001);
        nb.port = common::port(17970);
        nb.passive = true;
        let (b, _eb) = Speaker::start(SpeakerConfig {
            local_as: 65002,
            router_id: "127.0.17.2".parse().unwrap(),
            listen: Some(SocketAddr::new(b_addr, common::port(17971))),
            neighbors: vec![nb],
        })
        .await
        .unwrap();
        let mut na = NeighborConfig::new(b_addr, 65002);
        na.port = common::port(17971);
        na.connect_retry = Duration::from_millis(100);
        let (a, mut ea) = Speaker::start(SpeakerConfig {
            local_as: 65001,
            router_id: "127.0.17.1".parse().unwrap(),
            listen: Some(SocketAddr::new(a_addr, common::port(17970))),
            neighbors: vec![na],
        })
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(e) = ea.recv().await {
                if matches!(e, SpeakerEvent::Established { .. }) {
                    break;
                }
            }
        })
        .await
        .expect("session up");
        (a, b)
    });
    Pair {
        runtime,
        a,
        b,
        b_addr,
        a_addr,
    }
}

#[test]
fn peer_adj_rib_in_converges_to_the_announced_set() {
    let p = pair();
    let pool = pool();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    let ops = prop::collection::vec(
        (any::<bool>(), 0..pool.len(), prop::option::of(0u32..3)),
        1..30,
    );
    runner
        .run(&ops, |ops| {
            let mut expected = BTreeSet::new();
            // Start each case from nothing.
            for prefix in &pool {
                p.a.withdraw(*prefix).unwrap();
            }
            for (announce, i, med) in ops {
                let prefix = pool[i];
                if announce {
                    let mut a = Announcement::new(prefix);
                    a.med = med;
                    if prefix.addr().is_ipv6() {
                        a.next_hop = Some("2001:db8::1".parse().unwrap());
                    }
                    p.a.announce(a).unwrap();
                    expected.insert(prefix);
                } else {
                    p.a.withdraw(prefix).unwrap();
                    expected.remove(&prefix);
                }
            }
            let got = p.runtime.block_on(async {
                let fetch = || async {
                    p.b.adj_rib_in(p.a_addr)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|(prefix, _)| prefix)
                        .collect::<BTreeSet<IpNet>>()
                };
                let start = Instant::now();
                loop {
                    let got = fetch().await;
                    if got == expected || start.elapsed() > Duration::from_secs(5) {
                        // Settled, not passing through: look again a little later.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return fetch().await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            prop_assert_eq!(&got, &expected);
            let out: BTreeSet<IpNet> = p
                .runtime
                .block_on(p.a.adj_rib_out(p.b_addr))
                .unwrap()
                .into_iter()
                .collect();
            prop_assert_eq!(out, expected);
            Ok(())
        })
        .unwrap();
    let Pair { runtime, a, b, .. } = p;
    runtime.block_on(async {
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    });
}
