//! Property tests: random sequences of allocate / release / reserve / restart never give an
//! address to two owners, never leak one, and a restart restores the same state; a store that
//! fails a write leaves everything as it was.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use strata_ipam::{
    AllocatorConfig, Error, FixedIps, Ipam, MemoryStore, Op, Owner, Quarantine, Record,
    StatefulKey, Store, start_stateful_pod, stop_stateful_pod,
};

/// A store that fails the n-th commit (counting from 0), otherwise writes through.
#[derive(Clone)]
struct Faulty {
    inner: MemoryStore,
    fail_at: Option<usize>,
    commits: usize,
}

impl Store for Faulty {
    fn load(&self) -> strata_ipam::Result<Vec<Record>> {
        self.inner.load()
    }
    fn commit(&mut self, ops: &[Op]) -> strata_ipam::Result<()> {
        let n = self.commits;
        self.commits += 1;
        if Some(n) == self.fail_at {
            return Err(Error::Store {
                message: format!("injected failure at commit {n}"),
            });
        }
        self.inner.commit(ops)
    }
}

#[derive(Debug, Clone)]
enum Step {
    Allocate(u8),
    AllocateAddr(u8, u8),
    Release(u8),
    StartStateful(u8, bool),
    StopStateful(u8, bool),
    Advance(u16),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<u8>().prop_map(|o| Step::Allocate(o % 24)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(o, a)| Step::AllocateAddr(o % 24, a % 32)),
        3 => any::<u8>().prop_map(|o| Step::Release(o % 24)),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(k, n)| Step::StartStateful(k % 4, n)),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(k, n)| Step::StopStateful(k % 4, n)),
        1 => any::<u16>().prop_map(Step::Advance),
        1 => Just(Step::Restart),
    ]
}

fn quarantine() -> impl Strategy<Value = Quarantine> {
    prop_oneof![
        Just(Quarantine::Off),
        (0usize..4).prop_map(Quarantine::Releases),
        (1u64..5_000).prop_map(|ms| Quarantine::Duration(Duration::from_millis(ms))),
    ]
}

struct Cluster {
    configs: [AllocatorConfig; 2],
    stores: [Faulty; 2],
    nodes: [Ipam<Faulty>; 2],
    book_store: Faulty,
    book: FixedIps<Faulty>,
}

const RESERVATION_POOLS: &[&str] = &["10.96.0.0/28", "fd96::/124"];

fn reservation_pools() -> Vec<ipnet::IpNet> {
    RESERVATION_POOLS
        .iter()
        .map(|p| p.parse().unwrap())
        .collect()
}

impl Cluster {
    fn new(q: Quarantine, fail_at: Option<usize>) -> Cluster {
        let configs = [
            AllocatorConfig {
                pools: vec![
                    "10.0.0.0/28".parse().unwrap(),
                    "fd00::/124".parse().unwrap(),
                ],
                excluded: vec!["10.0.0.1".parse().unwrap()],
                quarantine: q,
            },
            AllocatorConfig {
                pools: vec!["10.0.1.0/28".parse().unwrap()],
                excluded: vec![],
                quarantine: q,
            },
        ];
        let store = |fail_at| Faulty {
            inner: MemoryStore::new(),
            fail_at,
            commits: 0,
        };
        let stores = [store(fail_at), store(None)];
        let nodes = [
            Ipam::open(configs[0].clone(), stores[0].clone()).unwrap(),
            Ipam::open(configs[1].clone(), stores[1].clone()).unwrap(),
        ];
        let book_store = store(None);
        let book = FixedIps::open(&reservation_pools(), book_store.clone()).unwrap();
        Cluster {
            configs,
            stores,
            nodes,
            book_store,
            book,
        }
    }

    fn restart(&mut self) {
        for i in 0..2 {
            let before = self.nodes[i].allocator().clone();
            let store = Faulty {
                fail_at: None,
                ..self.stores[i].clone()
            };
            self.nodes[i] = Ipam::open(self.configs[i].clone(), store).unwrap();
            assert_eq!(self.nodes[i].allocator(), &before, "restart of node {i}");
        }
        let before = self.book.reservations().clone();
        self.book = FixedIps::open(&reservation_pools(), self.book_store.clone()).unwrap();
        assert_eq!(self.book.reservations(), &before);
    }

    /// No address has two owners across the whole cluster; each node passes its audit.
    fn check(&self) {
        let mut seen: HashMap<IpAddr, Owner> = HashMap::new();
        for node in &self.nodes {
            node.allocator().audit().unwrap();
            for a in node.allocator().dump() {
                for addr in a.addrs {
                    if let Some(other) = seen.insert(addr, a.owner.clone()) {
                        panic!("{addr} held by {other} and {}", a.owner);
                    }
                }
            }
        }
        for r in self.book.reservations().iter() {
            let holders: Vec<_> = self
                .nodes
                .iter()
                .filter_map(|n| n.allocator().get(&r.key.pod()))
                .filter(|a| a.fixed.as_ref() == Some(&r.key))
                .collect();
            assert_eq!(holders.len(), usize::from(r.bound.is_some()), "{}", r.key);
        }
    }
}

fn owner(i: u8) -> Owner {
    Owner::new(&format!("ns/pod-{i}")).unwrap()
}

fn key(i: u8) -> StatefulKey {
    StatefulKey::new(&format!("ns/db/{i}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_keep_every_invariant(q in quarantine(), steps in prop::collection::vec(step(), 1..80)) {
        let mut c = Cluster::new(q, None);
        let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for s in steps {
            let n = |b: bool| usize::from(b);
            match s {
                Step::Allocate(o) => { let _ = c.nodes[usize::from(o % 2)].allocate(now, &owner(o)); }
                Step::AllocateAddr(o, a) => {
                    let addr: IpAddr = format!("10.0.{}.{}", o % 2, a % 16).parse().unwrap();
                    let _ = c.nodes[usize::from(o % 2)].allocate_addr(now, &owner(o), addr);
                }
                Step::Release(o) => { let _ = c.nodes[usize::from(o % 2)].release(now, &owner(o)); }
                Step::StartStateful(k, node) => {
                    let name = format!("node-{}", n(node));
                    let _ = start_stateful_pod(&mut c.book, &name, &mut c.nodes[n(node)], &key(k));
                }
                Step::StopStateful(k, node) => {
                    let _ = stop_stateful_pod(&mut c.book, &mut c.nodes[n(node)], now, &key(k));
                }
                Step::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                Step::Restart => c.restart(),
            }
            c.check();
        }
        c.restart();
        c.check();
    }

    #[test]
    fn a_failed_write_changes_nothing(fail_at in 0usize..40, steps in prop::collection::vec(step(), 1..60)) {
        let mut c = Cluster::new(Quarantine::Releases(2), Some(fail_at));
        let now = SystemTime::UNIX_EPOCH;
        for s in steps {
            let before = c.nodes[0].allocator().clone();
            let result = match s {
                Step::Allocate(o) | Step::AllocateAddr(o, _) => c.nodes[0].allocate(now, &owner(o)).map(|_| ()),
                Step::Release(o) => c.nodes[0].release(now, &owner(o)).map(|_| ()),
                _ => continue,
            };
            if let Err(err) = result {
                prop_assert_eq!(c.nodes[0].allocator(), &before, "{}", err);
            }
            // What the store holds always equals the live state.
            let reopened = Ipam::open(c.configs[0].clone(), c.stores[0].inner.clone()).unwrap();
            prop_assert_eq!(reopened.allocator(), c.nodes[0].allocator());
        }
    }
}

#[test]
fn statefulset_pod_keeps_its_address_on_another_node() {
    let mut c = Cluster::new(Quarantine::Off, None);
    let k = key(0);
    let first = start_stateful_pod(&mut c.book, "node-0", &mut c.nodes[0], &k).unwrap();
    // A second incarnation while the first still runs: the key is claimed.
    let err = start_stateful_pod(&mut c.book, "node-1", &mut c.nodes[1], &k).unwrap_err();
    assert!(matches!(err, Error::KeyClaimed { .. }), "{err}");
    stop_stateful_pod(&mut c.book, &mut c.nodes[0], SystemTime::UNIX_EPOCH, &k).unwrap();
    let second = start_stateful_pod(&mut c.book, "node-1", &mut c.nodes[1], &k).unwrap();
    assert_eq!(first.addrs, second.addrs);
    assert_eq!(first.addrs.len(), 2);
    assert_eq!(
        c.nodes[1].allocator().host_routes().len(),
        2,
        "the new node routes the fixed address"
    );
    assert!(c.nodes[0].allocator().host_routes().is_empty());
    c.restart();
    c.check();
}
