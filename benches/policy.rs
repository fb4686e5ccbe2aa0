//! Policy compiler speed: compiling 1,000 policies over 10,000 pods in 200 namespaces from
//! scratch, the incremental diff after one pod is relabelled, and the per-packet `lookup`.
//! The size of the compiled state is printed once at start.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_bench::versus::scale::Scenario;
use strata_policy::{
    Change, Cluster, ContainerPort, Direction, Identity, IpBlock, LabelSelector, Labels, Namespace,
    NetworkPolicy, ObjectKey, Peer, Pod, PolicyEngine, PolicyPort, PortSpec, Protocol, Rule,
    lookup,
};

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn port(protocol: Protocol, spec: Option<PortSpec>, end_port: Option<u16>) -> PolicyPort {
    PolicyPort {
        protocol,
        port: spec,
        end_port,
    }
}

fn bench_pod(ns: usize, j: usize) -> Pod {
    Pod {
        namespace: format!("ns{ns}"),
        name: format!("p{j}"),
        labels: labels(&[
            ("app", format!("a{}", j % 10)),
            (
                "tier",
                if j.is_multiple_of(2) { "front" } else { "back" }.to_string(),
            ),
        ]),
        ips: vec![
            format!("10.{ns}.{}.{}", j / 250, j % 250 + 1)
                .parse()
                .unwrap(),
        ],
        ports: vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        host_network: false,
    }
}

/// `namespaces` namespaces of `pods_per_ns` pods and 5 policies each.
fn cluster(namespaces: usize, pods_per_ns: usize) -> Cluster {
    let mut c = Cluster::new();
    for i in 0..namespaces {
        c.upsert_namespace(Namespace {
            name: format!("ns{i}"),
            labels: labels(&[
                ("team", format!("t{}", i % 5)),
                (
                    "env",
                    if i.is_multiple_of(2) { "prod" } else { "dev" }.to_string(),
                ),
            ]),
        });
        for j in 0..pods_per_ns {
            c.upsert_pod(bench_pod(i, j)).unwrap();
        }
        let ns = format!("ns{i}");
        let app = |a: &str| LabelSelector::labels([("app", a)]);
        let policies = [
            NetworkPolicy {
                namespace: ns.clone(),
                name: "default-deny".into(),
                pod_selector: LabelSelector::everything(),
                policy_types: Some(vec![Direction::Ingress, Direction::Egress]),
                ..Default::default()
            },
            NetworkPolicy {
                namespace: ns.clone(),
                name: "a1-from-a0".into(),
                pod_selector: app("a1"),
                ingress: vec![Rule {
                    peers: vec![Peer::Pods {
                        pod_selector: Some(app("a0")),
                        namespace_selector: None,
                    }],
                    ports: vec![port(Protocol::Tcp, Some(PortSpec::Number(80)), None)],
                }],
                ..Default::default()
            },
            NetworkPolicy {
                namespace: ns.clone(),
                name: "a2-from-team".into(),
                pod_selector: app("a2"),
                ingress: vec![Rule {
                    peers: vec![Peer::Pods {
                        pod_selector: Some(app("a1")),
                        namespace_selector: Some(LabelSelector::labels([(
                            "team",
                            format!("t{}", i % 5).as_str(),
                        )])),
                    }],
                    ports: vec![port(
                        Protocol::Tcp,
                        Some(PortSpec::Name("http".into())),
                        None,
                    )],
                }],
                ..Default::default()
            },
            NetworkPolicy {
                namespace: ns.clone(),
                name: "egress".into(),
                pod_selector: LabelSelector::everything(),
                egress: vec![
                    Rule {
                        peers: vec![Peer::Pods {
                            pod_selector: Some(app("a0")),
                            namespace_selector: Some(LabelSelector::labels([("env", "prod")])),
                        }],
                        ports: vec![port(Protocol::Udp, Some(PortSpec::Number(53)), None)],
                    },
                    Rule {
                        peers: vec![Peer::IpBlock(IpBlock {
                            cidr: "0.0.0.0/0".parse().unwrap(),
                            except: vec!["10.0.0.0/8".parse().unwrap()],
                        })],
                        ports: vec![port(Protocol::Tcp, Some(PortSpec::Number(443)), None)],
                    },
                ],
                policy_types: Some(vec![Direction::Egress]),
                ..Default::default()
            },
            NetworkPolicy {
                namespace: ns.clone(),
                name: "a3-node-ports".into(),
                pod_selector: app("a3"),
                ingress: vec![Rule {
                    peers: vec![Peer::IpBlock(IpBlock {
                        cidr: format!("192.168.{}.0/24", i % 256).parse().unwrap(),
                        except: vec![],
                    })],
                    ports: vec![port(
                        Protocol::Tcp,
                        Some(PortSpec::Number(30000)),
                        Some(32767),
                    )],
                }],
                ..Default::default()
            },
        ];
        for p in policies {
            c.upsert_policy(p).unwrap();
        }
    }
    c
}

fn report(engine: &PolicyEngine, label: &str) {
    let snapshot = engine.snapshot();
    let entries: usize = snapshot
        .endpoints
        .values()
        .map(|e| e.policy.ingress.entries.len() + e.policy.egress.entries.len())
        .sum();
    let (endpoints, maps) = engine.counts();
    eprintln!(
        "policy/{label}: {endpoints} endpoints, {} identities, {} ipcache entries, {maps} distinct compiled maps \
         ({} KiB of map entries and index, shared), {entries} entries over all endpoints if unshared",
        snapshot.identities.len(),
        snapshot.ipcache.len(),
        engine.map_heap_bytes() / 1024,
    );
}

fn compile(c: &mut Criterion) {
    let big = cluster(200, 50);
    assert_eq!(big.pods().count(), 10_000);
    assert_eq!(big.policies().count(), 1_000);
    report(&PolicyEngine::compile(&big), "10k pods");
    let mut group = c.benchmark_group("policy");
    group.sample_size(10);
    group.bench_function("compile 1000 policies, 10000 pods, 200 namespaces", |b| {
        b.iter(|| black_box(PolicyEngine::compile(black_box(&big))))
    });
    group.finish();
}

fn relabel(c: &mut Criterion) {
    let big = cluster(200, 50);
    let mut engine = PolicyEngine::compile(&big);
    let mut group = c.benchmark_group("policy");
    // Into labels other pods already have (no new identity), and to brand-new labels (an
    // identity allocated and released, every policy checked against it).
    for (name, other) in [("existing labels", "a9"), ("new labels", "fresh")] {
        let original = bench_pod(7, 3);
        let mut relabelled = original.clone();
        relabelled.labels.insert("app".into(), other.into());
        let mut flip = false;
        group.bench_function(format!("diff after one pod relabelled ({name})"), |b| {
            b.iter(|| {
                flip = !flip;
                let pod = if flip { &relabelled } else { &original };
                black_box(engine.apply(Change::UpsertPod(pod.clone())).unwrap())
            })
        });
        // Leave the pod as it was.
        engine.apply(Change::UpsertPod(original)).unwrap();
    }
    group.finish();
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    for (label, ns, pods) in [("small", 2, 10), ("10k pods", 200, 50)] {
        let cl = cluster(ns, pods);
        let engine = PolicyEngine::compile(&cl);
        let (_, policy) = engine.endpoint(&ObjectKey::new("ns0", "p2")).unwrap();
        let policy = policy.clone();
        let peers: Vec<Identity> = engine
            .snapshot()
            .identities
            .keys()
            .copied()
            .take(64)
            .collect();
        let mut i = 0usize;
        group.bench_function(format!("lookup ({label})"), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let peer = peers[i % peers.len()];
                black_box(lookup(
                    black_box(&policy.ingress),
                    peer,
                    6,
                    black_box(8080 + (i % 3) as u16),
                    false,
                ))
            })
        });
    }
    group.finish();
}

/// The benchmark engineer's cluster (`strata_bench::versus::scale`): one server endpoint with
/// 100,000 ingress entries (10,000 peers, one identity each, 10 entries per peer). Relabelling
/// one peer out of its group changes 10 of the server's entries.
fn relabel_big_map(c: &mut Criterion) {
    let scenario = Scenario::generate(100_000).unwrap();
    assert_eq!(scenario.entries, 100_000);
    let mut engine = PolicyEngine::compile(&scenario.cluster);
    let (out, back) = (scenario.relabel(), scenario.relabel_back());
    let d = engine.apply(out.clone()).unwrap();
    assert_eq!(d.entry_changes(), 10);
    engine.apply(back.clone()).unwrap();
    let mut group = c.benchmark_group("policy");
    group.sample_size(10);
    let mut flip = false;
    group.bench_function("relabel one peer, endpoint with 100k entries", |b| {
        b.iter(|| {
            flip = !flip;
            let change = if flip { &out } else { &back };
            black_box(engine.apply(change.clone()).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, compile, relabel, relabel_big_map, lookups);
criterion_main!(benches);
