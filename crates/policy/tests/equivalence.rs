//! Property tests: the compiled maps agree with the oracle on every flow, and incremental
//! updates give exactly the state of a compilation from scratch.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use strata_policy::*;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const PROBES: [(Protocol, u16); 10] = [
    (Protocol::Tcp, 53),
    (Protocol::Udp, 8080),
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 8080),
    (Protocol::Tcp, 443),
    (Protocol::Udp, 53),
    (Protocol::Sctp, 80),
    (Protocol::Tcp, 85),
    (Protocol::Tcp, 9090),
    (Protocol::Tcp, 8050),
];
const EXTERNAL: [&str; 5] = [
    "203.0.113.7",
    "8.8.8.8",
    "10.0.0.200",
    "fd00::99",
    "192.168.7.7",
];
const HOST_IP: &str = "192.168.0.1";

fn labels_from(pairs: &[(&str, Option<&str>)]) -> Labels {
    pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
        .collect()
}

fn arb_labels() -> impl Strategy<Value = Labels> {
    (
        prop::option::of(prop_oneof![Just("web"), Just("db"), Just("api")]),
        prop::option::of(prop_oneof![Just("front"), Just("back")]),
    )
        .prop_map(|(app, tier)| labels_from(&[("app", app), ("tier", tier)]))
}

fn arb_ns_labels() -> impl Strategy<Value = Labels> {
    (
        prop::option::of(prop_oneof![Just("x"), Just("y")]),
        prop::option::of(prop_oneof![Just("prod"), Just("dev")]),
    )
        .prop_map(|(team, env)| labels_from(&[("team", team), ("env", env)]))
}

fn arb_selector() -> impl Strategy<Value = LabelSelector> {
    let key = prop_oneof![Just("app"), Just("tier"), Just("team"), Just("env")];
    let value = prop_oneof![
        Just("web"),
        Just("db"),
        Just("front"),
        Just("x"),
        Just("prod")
    ];
    let op = prop_oneof![
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist)
    ];
    let expr = (key.clone(), op, prop::collection::vec(value.clone(), 1..3)).prop_map(
        |(k, op, values)| Requirement {
            key: k.to_string(),
            operator: op,
            values: match op {
                Operator::In | Operator::NotIn => values.into_iter().map(String::from).collect(),
                _ => Vec::new(),
            },
        },
    );
    (
        prop::collection::btree_map(
            key.prop_map(String::from),
            value.prop_map(String::from),
            0..2,
        ),
        prop::collection::vec(expr, 0..2),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

fn arb_block() -> impl Strategy<Value = IpBlock> {
    const CIDRS: [&str; 8] = [
        "10.0.0.0/16",
        "10.0.0.0/24",
        "10.0.1.0/24",
        "0.0.0.0/0",
        "192.168.0.0/16",
        "fd00::/64",
        "203.0.113.0/24",
        "10.0.0.4/30",
    ];
    (prop::sample::select(&CIDRS[..]), any::<u32>(), 0u8..3).prop_map(|(cidr, seed, n)| {
        let cidr: ipnet::IpNet = cidr.parse().unwrap();
        let mut except = Vec::new();
        for i in 0..n {
            // A strict sub-prefix of cidr chosen from the seed.
            let extra = 1 + ((seed >> (i * 8)) % 6) as u8;
            let len = (cidr.prefix_len() + extra).min(cidr.max_prefix_len());
            if len <= cidr.prefix_len() {
                continue;
            }
            let subnets: Vec<ipnet::IpNet> = cidr.subnets(len).unwrap().take(16).collect();
            let pick = subnets[(seed as usize >> (i * 4)) % subnets.len()];
            except.push(pick);
        }
        IpBlock { cidr, except }
    })
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        3 => (prop::option::of(arb_selector()), prop::option::of(arb_selector())).prop_map(|(ps, nss)| {
            if ps.is_none() && nss.is_none() {
                Peer::Pods { pod_selector: Some(LabelSelector::everything()), namespace_selector: None }
            } else {
                Peer::Pods { pod_selector: ps, namespace_selector: nss }
            }
        }),
        2 => arb_block().prop_map(Peer::IpBlock),
    ]
}

fn arb_port() -> impl Strategy<Value = PolicyPort> {
    let proto =
        prop_oneof![4 => Just(Protocol::Tcp), 2 => Just(Protocol::Udp), 1 => Just(Protocol::Sctp)];
    let spec = prop_oneof![
        1 => Just((None, None)),
        3 => prop::sample::select(vec![53u16, 80, 443, 8080, 9090]).prop_map(|p| (Some(PortSpec::Number(p)), None)),
        2 => prop::sample::select(vec!["http", "dns", "metrics"]).prop_map(|n| (Some(PortSpec::Name(n.to_string())), None)),
        2 => prop::sample::select(vec![(80u16, 90u16), (8000, 8100), (1, 1024)]).prop_map(|(a, b)| (Some(PortSpec::Number(a)), Some(b))),
    ];
    (proto, spec).prop_map(|(protocol, (port, end_port))| PolicyPort {
        protocol,
        port,
        end_port,
    })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        prop::collection::vec(arb_peer(), 0..3),
        prop::collection::vec(arb_port(), 0..3),
    )
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

fn arb_policy(index: usize) -> impl Strategy<Value = NetworkPolicy> {
    let types = prop_oneof![
        3 => Just(None),
        1 => Just(Some(vec![Direction::Ingress])),
        1 => Just(Some(vec![Direction::Egress])),
        1 => Just(Some(vec![Direction::Ingress, Direction::Egress])),
    ];
    (
        prop::sample::select(&NAMESPACES[..]),
        arb_selector(),
        prop::collection::vec(arb_rule(), 0..3),
        prop::collection::vec(arb_rule(), 0..3),
        types,
        prop::collection::vec(arb_rule(), 0..2),
        prop::collection::vec(arb_rule(), 0..2),
        any::<u8>(),
    )
        .prop_map(
            move |(ns, pod_selector, ingress, egress, policy_types, ind, egd, deny_roll)| {
                let with_deny = deny_roll < 40;
                NetworkPolicy {
                    namespace: ns.to_string(),
                    name: format!("np{index}"),
                    pod_selector,
                    ingress,
                    egress,
                    policy_types,
                    ingress_deny: if with_deny { ind } else { Vec::new() },
                    egress_deny: if with_deny { egd } else { Vec::new() },
                }
            },
        )
}

fn arb_pod(index: usize) -> impl Strategy<Value = Pod> {
    let http = prop::option::of(prop::sample::select(vec![80u16, 8080, 85]));
    let dns = prop::option::of(prop::sample::select(vec![53u16, 5353]));
    let metrics = prop::option::of(prop::sample::select(vec![9090u16, 8050]));
    (
        prop::sample::select(&NAMESPACES[..]),
        arb_labels(),
        0u8..10,
        (http, dns, metrics),
    )
        .prop_map(move |(ns, labels, roll, (http, dns, metrics))| {
            let v4: IpAddr = format!("10.0.{}.{}", index % 2, index + 1).parse().unwrap();
            let v6: IpAddr = format!("fd00::{}", index + 1).parse().unwrap();
            let (ips, host_network) = match roll {
                0 => (Vec::new(), false),
                1 => (vec![HOST_IP.parse().unwrap()], true),
                2 | 3 => (vec![v4, v6], false),
                4 => (vec![v6, v4], false),
                _ => (vec![v4], false),
            };
            let mut ports = Vec::new();
            let mut add = |name: &str, port: Option<u16>, protocol| {
                if let Some(port) = port {
                    ports.push(ContainerPort {
                        name: Some(name.to_string()),
                        port,
                        protocol,
                    });
                }
            };
            add("http", http, Protocol::Tcp);
            add("dns", dns, Protocol::Udp);
            add("metrics", metrics, Protocol::Tcp);
            Pod {
                namespace: ns.to_string(),
                name: format!("p{index}"),
                labels,
                ips,
                ports,
                host_network,
            }
        })
}

#[derive(Debug, Clone)]
struct Input {
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    policies: Vec<NetworkPolicy>,
}

fn arb_input() -> impl Strategy<Value = Input> {
    let namespaces = prop::collection::vec(arb_ns_labels(), 3).prop_map(|labels| {
        labels
            .into_iter()
            .zip(NAMESPACES)
            .map(|(labels, name)| Namespace {
                name: name.to_string(),
                labels,
            })
            .collect::<Vec<_>>()
    });
    let pods = (1usize..7).prop_flat_map(|n| (0..n).map(arb_pod).collect::<Vec<_>>());
    let policies = (0usize..5).prop_flat_map(|n| (0..n).map(arb_policy).collect::<Vec<_>>());
    (namespaces, pods, policies).prop_map(|(namespaces, pods, policies)| Input {
        namespaces,
        pods,
        policies,
    })
}

fn build(input: &Input) -> Cluster {
    let mut c = Cluster::new();
    for ns in &input.namespaces {
        c.upsert_namespace(ns.clone());
    }
    for pod in &input.pods {
        c.upsert_pod(pod.clone()).unwrap();
    }
    for p in &input.policies {
        c.upsert_policy(p.clone()).unwrap();
    }
    c
}

fn flows(cluster: &Cluster) -> Vec<Flow> {
    let keys: Vec<ObjectKey> = cluster.pods().map(|p| p.key()).collect();
    let mut out = Vec::new();
    for (protocol, port) in PROBES {
        for a in &keys {
            for b in &keys {
                out.push(Flow::between(cluster, a, b, protocol, port).unwrap());
            }
            for ext in EXTERNAL {
                let ext = FlowEnd::External(ext.parse().unwrap());
                let pod = cluster.pod(a).unwrap();
                let pick = |want_v6: bool| {
                    pod.ips
                        .iter()
                        .find(|i| i.is_ipv6() == want_v6)
                        .copied()
                        .or(pod.ips.first().copied())
                };
                let address = pick(ext.address().unwrap().is_ipv6());
                let end = FlowEnd::Pod {
                    pod: a.clone(),
                    address,
                };
                out.push(Flow {
                    source: end.clone(),
                    destination: ext.clone(),
                    protocol,
                    port,
                });
                out.push(Flow {
                    source: ext,
                    destination: end,
                    protocol,
                    port,
                });
            }
        }
    }
    out
}

fn check_against_oracle(engine: &PolicyEngine) -> Result<(), TestCaseError> {
    let cluster = engine.cluster();
    for flow in flows(cluster) {
        let oracle = evaluate(cluster, &flow).unwrap();
        let compiled = engine.verdict(&flow).unwrap();
        prop_assert_eq!(
            compiled == Verdict::Allow,
            oracle.allowed,
            "flow {} -> {} {}/{}: oracle says\n{}",
            flow.source,
            flow.destination,
            flow.port,
            flow.protocol,
            oracle
        );
    }
    Ok(())
}

fn fresh(engine: &PolicyEngine) -> Compiled {
    let allocator = IdentityAllocator::restore(&engine.allocator().export()).unwrap();
    PolicyEngine::compile_with(engine.cluster(), allocator).snapshot()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn compiled_lookup_equals_oracle(input in arb_input()) {
        let cluster = build(&input);
        let engine = PolicyEngine::compile(&cluster);
        check_against_oracle(&engine)?;
    }

    #[test]
    fn incremental_updates_equal_full_recompiles(a in arb_input(), b in arb_input(), order in prop::collection::vec(any::<u16>(), 40)) {
        let mut engine = PolicyEngine::compile(&build(&a));
        // The changes that turn `a` into `b`, in a random order.
        let mut changes: Vec<Change> = Vec::new();
        let b_pods: BTreeMap<ObjectKey, &Pod> = b.pods.iter().map(|p| (p.key(), p)).collect();
        let b_pols: BTreeMap<ObjectKey, &NetworkPolicy> = b.policies.iter().map(|p| (p.key(), p)).collect();
        for p in &a.pods {
            if !b_pods.contains_key(&p.key()) {
                changes.push(Change::RemovePod(p.key()));
            }
        }
        for p in &a.policies {
            if !b_pols.contains_key(&p.key()) {
                changes.push(Change::RemovePolicy(p.key()));
            }
        }
        changes.extend(b.pods.iter().cloned().map(Change::UpsertPod));
        changes.extend(b.policies.iter().cloned().map(Change::UpsertPolicy));
        changes.extend(b.namespaces.iter().cloned().map(Change::UpsertNamespace));
        changes.push(Change::RemoveNamespace("c".into()));
        let n = changes.len();
        for (i, o) in order.iter().enumerate() {
            changes.swap(i % n, *o as usize % n);
        }
        for change in changes {
            let before = engine.snapshot();
            match engine.apply(change.clone()) {
                Ok(diff) => {
                    let mut patched = before.clone();
                    patched.apply(&diff);
                    let now = engine.snapshot();
                    prop_assert_eq!(&patched, &now, "diff of {:?} does not lead to the new state", change);
                    prop_assert_eq!(&now, &fresh(&engine), "incremental state after {:?} differs from a fresh compile", change);
                }
                Err(_) => {
                    prop_assert_eq!(&before, &engine.snapshot(), "failed change {:?} altered state", change);
                }
            }
        }
        check_against_oracle(&engine)?;
    }
}
