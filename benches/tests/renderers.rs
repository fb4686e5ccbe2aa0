//! The renderings enforce exactly what the policy oracle says: a small cluster (two
//! namespaces, five pods, pod and namespace selectors, a named port on each side, a port
//! range, an `ipBlock` with an exception, a deny rule) is built as a lab of network
//! namespaces, each variant is applied in its node namespace, and real TCP and UDP probes
//! between every pair of pods must match `strata_policy::evaluate`. Then one pod is relabelled
//! and a policy added, pushed incrementally, and the probes must match the new oracle.
//!
//! Needs root (namespaces, iptables, nftables, eBPF): skips with a message otherwise, and fails
//! when `CI=true`. The namespaces are removed when the lab is dropped, also on failure.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use strata_bench::versus::{
    ir::LocalEndpoint,
    rig::{Enforcer, IptBackend, UpdateMode, Variant, is_root},
    scale::Scenario,
};
use strata_datapath::netns::{Lab, Probe, Proto};
use strata_policy::{
    Change, Cluster, ContainerPort, Direction, Flow, IpBlock, LabelSelector, Labels, Namespace,
    NetworkPolicy, ObjectKey, Peer, Pod, PolicyPort, PortSpec, Protocol, Rule, evaluate,
};

fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (network namespaces, iptables, nftables, eBPF) and CI=true");
    }
    eprintln!("{test}: skipped: needs root (network namespaces, iptables, nftables, eBPF)");
    false
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(ns: &str, name: &str, app: &str, ip: [u8; 4], ports: Vec<ContainerPort>) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(&[("app", app)]),
        ips: vec![IpAddr::V4(Ipv4Addr::from(ip))],
        ports,
        host_network: false,
    }
}

fn port(protocol: Protocol, port: Option<PortSpec>, end_port: Option<u16>) -> PolicyPort {
    PolicyPort {
        protocol,
        port,
        end_port,
    }
}

fn pods_peer(app: Option<&str>, team: Option<&str>) -> Peer {
    Peer::Pods {
        pod_selector: app.map(|a| LabelSelector::labels([("app", a)])),
        namespace_selector: team.map(|t| LabelSelector::labels([("team", t)])),
    }
}

fn cluster() -> Cluster {
    let mut c = Cluster::new();
    for (ns, team) in [("shop", "shop"), ("ops", "ops")] {
        c.upsert_namespace(Namespace {
            name: ns.into(),
            labels: labels(&[("team", team)]),
        });
    }
    let http = |p| ContainerPort {
        name: Some("http".into()),
        port: p,
        protocol: Protocol::Tcp,
    };
    for p in [
        pod("shop", "web", "web", [10, 10, 0, 1], vec![]),
        pod("shop", "api", "api", [10, 10, 0, 2], vec![http(80)]),
        pod("shop", "db", "db", [10, 10, 0, 3], vec![http(5432)]),
        pod("ops", "mon", "mon", [10, 10, 1, 1], vec![]),
        pod("ops", "tool", "tool", [10, 10, 1, 2], vec![]),
    ] {
        c.upsert_pod(p).expect("pod");
    }
    let policies = [
        // db: api on TCP 5432, ops pods on UDP 5000-5010.
        NetworkPolicy {
            namespace: "shop".into(),
            name: "db".into(),
            pod_selector: LabelSelector::labels([("app", "db")]),
            ingress: vec![
                Rule {
                    peers: vec![pods_peer(Some("api"), None)],
                    ports: vec![port(Protocol::Tcp, Some(PortSpec::Number(5432)), None)],
                },
                Rule {
                    peers: vec![pods_peer(None, Some("ops"))],
                    ports: vec![port(
                        Protocol::Udp,
                        Some(PortSpec::Number(5000)),
                        Some(5010),
                    )],
                },
            ],
            ..Default::default()
        },
        // api: web on its named port "http" (80); 10.10.1.0/24 except tool on every port.
        NetworkPolicy {
            namespace: "shop".into(),
            name: "api".into(),
            pod_selector: LabelSelector::labels([("app", "api")]),
            ingress: vec![
                Rule {
                    peers: vec![pods_peer(Some("web"), None)],
                    ports: vec![port(
                        Protocol::Tcp,
                        Some(PortSpec::Name("http".into())),
                        None,
                    )],
                },
                Rule {
                    peers: vec![Peer::IpBlock(IpBlock {
                        cidr: "10.10.1.0/24".parse().unwrap(),
                        except: vec!["10.10.1.2/32".parse().unwrap()],
                    })],
                    ports: vec![],
                },
            ],
            ..Default::default()
        },
        // web egress: shop pods on the named port "http" (80 at api, 5432 at db), anything
        // on UDP 5000.
        NetworkPolicy {
            namespace: "shop".into(),
            name: "web-egress".into(),
            pod_selector: LabelSelector::labels([("app", "web")]),
            policy_types: Some(vec![Direction::Egress]),
            egress: vec![
                Rule {
                    peers: vec![pods_peer(None, Some("shop"))],
                    ports: vec![port(
                        Protocol::Tcp,
                        Some(PortSpec::Name("http".into())),
                        None,
                    )],
                },
                Rule {
                    peers: vec![],
                    ports: vec![port(Protocol::Udp, Some(PortSpec::Number(5000)), None)],
                },
            ],
            ..Default::default()
        },
        // tool: not isolated, but shop pods are denied TCP 80.
        NetworkPolicy {
            namespace: "ops".into(),
            name: "deny-shop".into(),
            pod_selector: LabelSelector::labels([("app", "tool")]),
            policy_types: Some(vec![]),
            ingress_deny: vec![Rule {
                peers: vec![pods_peer(None, Some("shop"))],
                ports: vec![port(Protocol::Tcp, Some(PortSpec::Number(80)), None)],
            }],
            ..Default::default()
        },
    ];
    for p in policies {
        c.upsert_policy(p).expect("policy");
    }
    c
}

const PROBES: [Probe; 5] = [
    Probe {
        port: 80,
        proto: Proto::Tcp,
    },
    Probe {
        port: 5432,
        proto: Proto::Tcp,
    },
    Probe {
        port: 5000,
        proto: Proto::Udp,
    },
    Probe {
        port: 5005,
        proto: Proto::Udp,
    },
    Probe {
        port: 7000,
        proto: Proto::Udp,
    },
];

fn protocol(p: Proto) -> Protocol {
    match p {
        Proto::Tcp => Protocol::Tcp,
        Proto::Udp => Protocol::Udp,
        Proto::Sctp => Protocol::Sctp,
    }
}

/// Probes every pair and returns the mismatches with the oracle, and the number of allowed
/// and denied cells (so a test can check that both kinds occur).
fn compare(lab: &Lab, cluster: &Cluster, keys: &[ObjectKey]) -> (Vec<String>, usize, usize) {
    let seen = lab
        .probe(&PROBES, Duration::from_millis(400))
        .expect("probe");
    let mut bad = Vec::new();
    let (mut allowed, mut denied) = (0, 0);
    for (i, from) in keys.iter().enumerate() {
        for (j, to) in keys.iter().enumerate() {
            for (k, probe) in PROBES.iter().enumerate() {
                let flow =
                    Flow::between(cluster, from, to, protocol(probe.proto), probe.port).unwrap();
                let want = evaluate(cluster, &flow).unwrap().allowed;
                if want {
                    allowed += 1;
                } else {
                    denied += 1;
                }
                if seen[i][j][k] != want {
                    bad.push(format!(
                        "{from} -> {to} {}/{}: observed {}, oracle {}",
                        probe.port,
                        probe.proto.name(),
                        if seen[i][j][k] { "allowed" } else { "denied" },
                        if want { "allowed" } else { "denied" }
                    ));
                }
            }
        }
    }
    (bad, allowed, denied)
}

fn check(variant: Variant, backend: IptBackend) {
    let mut cluster = cluster();
    let keys: Vec<ObjectKey> = cluster.pods().map(|p| p.key()).collect();
    let pods: Vec<(String, Ipv4Addr)> = cluster
        .pods()
        .map(|p| match p.ips[0] {
            IpAddr::V4(a) => (p.key().to_string(), a),
            IpAddr::V6(_) => unreachable!("the test cluster is IPv4"),
        })
        .collect();
    let lab = Lab::create(&pods).expect("lab");
    let locals: Vec<(LocalEndpoint, usize)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                LocalEndpoint {
                    pod: k.clone(),
                    iface: lab.pods[i].host_if.clone(),
                },
                i,
            )
        })
        .collect();
    let mut enforcer =
        Enforcer::apply(&lab, &cluster, &locals, variant, backend).expect("apply variant");
    let (bad, allowed, denied) = compare(&lab, &cluster, &keys);
    assert!(
        bad.is_empty(),
        "{} ({backend:?}): {} mismatches:\n{}",
        variant.name(),
        bad.len(),
        bad.join("\n")
    );
    assert!(
        allowed > 20 && denied > 20,
        "{allowed} allowed, {denied} denied"
    );
    // Relabel web (api's ingress and web's egress no longer apply to it), add a policy letting
    // web reach db on UDP 7000; push both incrementally.
    let mut web = cluster.pod(&ObjectKey::new("shop", "web")).unwrap().clone();
    web.labels.insert("app".into(), "web2".into());
    let extra = NetworkPolicy {
        namespace: "shop".into(),
        name: "db-extra".into(),
        pod_selector: LabelSelector::labels([("app", "db")]),
        ingress: vec![Rule {
            peers: vec![pods_peer(Some("web2"), None)],
            ports: vec![port(Protocol::Udp, Some(PortSpec::Number(7000)), None)],
        }],
        ..Default::default()
    };
    for change in [Change::UpsertPod(web), Change::UpsertPolicy(extra)] {
        match &change {
            Change::UpsertPod(p) => {
                cluster.upsert_pod(p.clone()).unwrap();
            }
            Change::UpsertPolicy(p) => {
                cluster.upsert_policy(p.clone()).unwrap();
            }
            _ => unreachable!(),
        }
        enforcer
            .update(&cluster, &change, UpdateMode::Incremental)
            .expect("incremental update");
    }
    let (bad, _, _) = compare(&lab, &cluster, &keys);
    assert!(
        bad.is_empty(),
        "{} ({backend:?}) after incremental updates: {} mismatches:\n{}",
        variant.name(),
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn iptables_flat_equals_the_oracle() {
    if privileged("iptables_flat_equals_the_oracle") {
        check(Variant::IptablesFlat, IptBackend::Legacy);
        check(Variant::IptablesFlat, IptBackend::Nft);
    }
}

#[test]
fn iptables_calico_style_equals_the_oracle() {
    if privileged("iptables_calico_style_equals_the_oracle") {
        check(Variant::IptablesCalico, IptBackend::Legacy);
        check(Variant::IptablesCalico, IptBackend::Nft);
    }
}

#[test]
fn nftables_equals_the_oracle() {
    if privileged("nftables_equals_the_oracle") {
        check(Variant::Nftables, IptBackend::Legacy);
    }
}

#[test]
fn strata_datapath_equals_the_oracle() {
    if privileged("strata_datapath_equals_the_oracle") {
        check(Variant::Strata, IptBackend::Legacy);
    }
}

/// At a size where the flat chains take the positional path (1,000 rules), an incremental
/// update leaves the kernel in exactly the state a full restore of the new rendering gives.
#[test]
fn incremental_updates_equal_full_restores() {
    if !privileged("incremental_updates_equal_full_restores") {
        return;
    }
    for variant in [
        Variant::IptablesFlat,
        Variant::IptablesCalico,
        Variant::Nftables,
    ] {
        let s = Scenario::generate(1000).expect("scenario");
        let mut states = Vec::new();
        for mode in [UpdateMode::Incremental, UpdateMode::Full] {
            let mut cluster = s.cluster.clone();
            let lab = Lab::create(&[
                (s.client.to_string(), s.client_ip),
                (s.server.to_string(), s.server_ip),
            ])
            .expect("lab");
            let locals: Vec<(LocalEndpoint, usize)> = s
                .locals(&lab.pods[0].host_if, &lab.pods[1].host_if)
                .into_iter()
                .zip([0, 1])
                .collect();
            let mut e = Enforcer::apply(&lab, &cluster, &locals, variant, IptBackend::Legacy)
                .expect("apply");
            let before = e.kernel_state().expect("state");
            for change in [s.relabel(), s.added_policy()] {
                match &change {
                    Change::UpsertPod(p) => {
                        cluster.upsert_pod(p.clone()).unwrap();
                    }
                    Change::UpsertPolicy(p) => {
                        cluster.upsert_policy(p.clone()).unwrap();
                    }
                    _ => unreachable!(),
                }
                e.update(&cluster, &change, mode).expect("update");
            }
            let after = e.kernel_state().expect("state");
            assert_ne!(
                before,
                after,
                "{}: the updates changed nothing",
                variant.name()
            );
            states.push(after);
        }
        if states[0] != states[1] {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (states[0].lines().collect(), states[1].lines().collect());
            let first = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            panic!(
                "{}: incremental and full differ at line {first}:\n  incremental: {:?}\n  full:        {:?}",
                variant.name(),
                a.get(first),
                b.get(first)
            );
        }
    }
}
