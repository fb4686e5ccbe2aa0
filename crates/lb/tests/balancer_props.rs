//! Properties of the balancer under random sequences of updates: the incremental diff is the
//! full diff, the entries stay consistent, and the result selects exactly like a balancer built
//! from scratch with the final services.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use strata_lb::{
    AffinityMap, Algorithm, BackendId, BackendKey, BackendState, Config, Endpoint, EndpointGroup,
    EntryDiff, EntrySet, Frontend, LoadBalancer, Lookup, Maglev, MaglevBackend, Protocol, Selector,
    Service, ServiceName, ServicePort, ServiceState, SessionAffinity, SlotKey, TableSize,
    TrafficPolicy, Verdict, WeightedRandom, flow_hash,
};

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        svc: u8,
        backends: Vec<(u8, u8, u8)>,
        local: bool,
        random: bool,
        affinity: bool,
    },
    Remove {
        svc: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, proptest::collection::vec((0u8..12, 0u8..4, 0u8..3), 0..8), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(svc, backends, local, random, affinity)| Op::Upsert { svc, backends, local, random, affinity }),
        1 => (0u8..6).prop_map(|svc| Op::Remove { svc }),
    ]
}

fn config() -> Config {
    Config {
        node_name: Some("node-0".into()),
        node_zone: None,
        node_addresses: vec![IpAddr::from([192, 168, 0, 1])],
        table_size: TableSize::new(251).unwrap(),
        algorithm: Algorithm::Maglev,
    }
}

fn name(svc: u8) -> ServiceName {
    ServiceName::new("ns", format!("svc-{svc}"))
}

fn service(svc: u8, local: bool, random: bool, affinity: bool) -> Service {
    let mut s = Service::new(name(svc));
    s.cluster_ips = vec![IpAddr::from([10, 96, 0, svc])];
    let mut p = ServicePort::new(Protocol::Tcp, 80);
    p.node_port = Some(30000 + u16::from(svc));
    s.ports = vec![p];
    if local {
        s.external_traffic_policy = TrafficPolicy::Local;
    }
    if random {
        s.algorithm = Some(Algorithm::Random);
    }
    if affinity {
        s.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    }
    s
}

fn endpoints(backends: &[(u8, u8, u8)]) -> Vec<EndpointGroup> {
    let states = [
        BackendState::Active,
        BackendState::Terminating,
        BackendState::Quarantined,
        BackendState::Maintenance,
    ];
    vec![EndpointGroup {
        ports: vec![],
        endpoints: backends
            .iter()
            .map(|(b, st, node)| {
                let mut e = Endpoint::new(IpAddr::from([10, 0, 0, *b]));
                e.state = states[usize::from(*st)];
                e.node_name = Some(format!("node-{node}"));
                e.weight = 1 + u16::from(*b % 3);
                e
            })
            .collect(),
    }]
}

fn sorted(d: &EntryDiff) -> String {
    // Compare diffs regardless of the order of their entries.
    let mut lines: Vec<String> = Vec::new();
    for (k, v) in &d.services.upsert {
        lines.push(format!("s+ {k:?} {v:?}"));
    }
    for k in &d.services.remove {
        lines.push(format!("s- {k:?}"));
    }
    for (k, v) in &d.backends.upsert {
        lines.push(format!("b+ {k:?} {v:?}"));
    }
    for k in &d.backends.remove {
        lines.push(format!("b- {k:?}"));
    }
    for (k, v) in &d.rev_nat.upsert {
        lines.push(format!("r+ {k:?} {v:?}"));
    }
    for k in &d.rev_nat.remove {
        lines.push(format!("r- {k:?}"));
    }
    for (k, v) in &d.slots.upsert {
        lines.push(format!("l+ {k:?} {v:?}"));
    }
    for k in &d.slots.remove {
        lines.push(format!("l- {k:?}"));
    }
    for (k, v) in &d.maglev.replace {
        lines.push(format!("m= {k:?} {v:?}"));
    }
    for (k, v) in &d.maglev.update {
        lines.push(format!("m~ {k:?} {v:?}"));
    }
    for k in &d.maglev.remove {
        lines.push(format!("m- {k:?}"));
    }
    lines.sort();
    lines.join("\n")
}

fn check_consistent(e: &EntrySet) -> Result<(), TestCaseError> {
    let mut revs = BTreeSet::new();
    for (f, s) in &e.services {
        prop_assert!(
            revs.insert(s.rev_nat_id),
            "rev-NAT id {:?} shared",
            s.rev_nat_id
        );
        let r = e.rev_nat.get(&s.rev_nat_id).expect("rev-NAT entry");
        prop_assert_eq!((r.address, r.port), (f.address, f.port));
        prop_assert_eq!(s.state == ServiceState::Ready, s.backend_count > 0);
        prop_assert_eq!(
            e.maglev.contains_key(&s.rev_nat_id),
            s.state == ServiceState::Ready && s.algorithm == Algorithm::Maglev
        );
    }
    prop_assert_eq!(revs.len(), e.rev_nat.len());
    for slot in e.slots.values() {
        prop_assert!(e.backends.contains_key(&slot.backend_id));
    }
    for table in e.maglev.values() {
        prop_assert!(table.iter().all(|id| e.backends.contains_key(id)));
    }
    let addrs: BTreeSet<SocketAddr> = e.backends.values().map(|b| b.socket_addr()).collect();
    prop_assert_eq!(addrs.len(), e.backends.len(), "one id per backend");
    Ok(())
}

/// The incrementally kept lookup form equals a fresh one and selects exactly like the ordered
/// reference maps, with and without affinity.
fn check_lookup(
    lb: &LoadBalancer,
    aff_lookup: &mut AffinityMap,
    aff_entries: &mut AffinityMap,
    now: &mut Duration,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(lb.lookup(), &Lookup::new(lb.entries()));
    for f in lb.entries().services.keys() {
        for i in 0..16u32 {
            let c = IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 4) as u8));
            let h = i.wrapping_mul(0x9e37_79b9) ^ u32::from(f.port);
            prop_assert_eq!(lb.select(f, h, c), lb.entries().select(f, h, c));
            *now += Duration::from_secs(u64::from(i % 3) * 7);
            let a = lb.select_with_affinity(f, h, c, aff_lookup, *now);
            let b = lb
                .entries()
                .select_with_affinity(f, h, c, aff_entries, *now);
            prop_assert_eq!(a, b);
        }
    }
    prop_assert_eq!(&*aff_lookup, &*aff_entries);
    // The datapath form selects as the algorithms behind the `Selector` trait do.
    let e = lb.entries();
    for svc in e.services.values().filter(|s| s.backend_count > 0) {
        let slots: Vec<(BackendId, u32)> = (1..=svc.backend_count)
            .map(|slot| {
                let s = e.slots[&SlotKey {
                    rev_nat_id: svc.rev_nat_id,
                    slot,
                }];
                (s.backend_id, s.weight_end)
            })
            .scan(0, |prev, (id, end)| {
                let w = end - *prev;
                *prev = end;
                Some((id, w))
            })
            .collect();
        let selector: Box<dyn Selector<Backend = BackendId>> = match svc.algorithm {
            Algorithm::Random => Box::new(WeightedRandom::build(&slots).unwrap()),
            Algorithm::Maglev => {
                let backends: Vec<MaglevBackend<BackendId>> = slots
                    .iter()
                    .map(|(id, w)| {
                        let b = e.backends[id];
                        let key = BackendKey {
                            address: b.address,
                            port: b.port,
                            protocol: b.protocol,
                        };
                        MaglevBackend::new(key.maglev_key(), *id, *w)
                    })
                    .collect();
                Box::new(Maglev::build(lb.config().table_size, &backends).unwrap())
            }
        };
        for h in (0..200u32).map(|i| i.wrapping_mul(0x2545_f491)) {
            let twin = match lb.lookup().select(
                e.services
                    .iter()
                    .find(|(_, v)| v.rev_nat_id == svc.rev_nat_id)
                    .unwrap()
                    .0,
                h,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ) {
                Verdict::Forward { backend_id, .. } => Some(backend_id),
                _ => None,
            };
            prop_assert_eq!(twin, selector.pick(h).copied());
        }
    }
    Ok(())
}

fn verdicts(lb: &LoadBalancer) -> BTreeMap<(Frontend, u32), String> {
    let mut out = BTreeMap::new();
    for f in lb.entries().services.keys() {
        for h in (0..64u32).map(|i| i.wrapping_mul(0x9e37_79b9)) {
            let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 4000);
            let v = match lb.select(f, h ^ flow_hash(c, *f), c.ip()) {
                Verdict::Forward { backend, .. } => format!("forward {backend}"),
                Verdict::Unreachable { .. } => "unreachable".into(),
                Verdict::Drop { .. } => "drop".into(),
                Verdict::NotAService => "none".into(),
            };
            out.insert((*f, h), v);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn incremental_entries_match_a_fresh_build(ops in proptest::collection::vec(op(), 1..25)) {
        let mut lb = LoadBalancer::new(config());
        let (mut aff_lookup, mut aff_entries) = (AffinityMap::new(), AffinityMap::new());
        let mut now = Duration::from_secs(100);
        let mut last: BTreeMap<u8, (Service, Vec<EndpointGroup>)> = BTreeMap::new();
        for op in ops {
            let before = lb.entries().clone();
            match op {
                Op::Upsert { svc, backends, local, random, affinity } => {
                    let s = service(svc, local, random, affinity);
                    let eps = endpoints(&backends);
                    let diff = lb.upsert(s.clone(), &eps).unwrap();
                    prop_assert_eq!(sorted(&diff), sorted(&before.diff(lb.entries())));
                    last.insert(svc, (s, eps));
                }
                Op::Remove { svc } => {
                    match lb.remove(&name(svc)) {
                        Ok(diff) => {
                            prop_assert_eq!(sorted(&diff), sorted(&before.diff(lb.entries())));
                            last.remove(&svc);
                        }
                        Err(_) => {
                            prop_assert!(!last.contains_key(&svc));
                            prop_assert_eq!(&before, lb.entries());
                        }
                    }
                }
            }
            check_consistent(lb.entries())?;
            check_lookup(&lb, &mut aff_lookup, &mut aff_entries, &mut now)?;
            let mut patched = before.clone();
            patched.apply(&before.diff(lb.entries()));
            prop_assert_eq!(&patched, lb.entries());
        }
        let mut fresh = LoadBalancer::new(config());
        for (s, eps) in last.values() {
            fresh.upsert(s.clone(), eps).unwrap();
        }
        let (a, b) = (verdicts(&fresh), verdicts(&lb));
        prop_assert_eq!(a.len(), b.len());
        for (k, v) in &a {
            prop_assert_eq!(Some(v), b.get(k), "flow {:?}", k);
        }
    }

    #[test]
    fn frontend_parsing_never_panics(s in ".{0,40}") {
        let _ = s.parse::<Frontend>();
        let _ = s.parse::<Protocol>();
    }
}
