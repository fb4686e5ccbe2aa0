//! Scenarios from the Kubernetes documentation's NetworkPolicy page, written as tables of
//! (from, to, probe, expected). Every row is checked against the oracle and the compiled maps.

use strata_policy::*;

/// A pod: `namespace/name`, labels as `k=v,k=v`, address, named ports as `name:port/PROTO`.
fn pod(key: &str, labels: &str, ip: &str, ports: &str) -> Pod {
    let key: ObjectKey = key.parse().unwrap();
    Pod {
        namespace: key.namespace,
        name: key.name,
        labels: kv(labels),
        ips: if ip.is_empty() {
            vec![]
        } else {
            vec![ip.parse().unwrap()]
        },
        ports: ports
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (name, rest) = s.split_once(':').unwrap();
                let (port, proto) = rest.split_once('/').unwrap();
                ContainerPort {
                    name: Some(name.into()),
                    port: port.parse().unwrap(),
                    protocol: proto.parse().unwrap(),
                }
            })
            .collect(),
        host_network: false,
    }
}

fn kv(s: &str) -> Labels {
    s.split(',')
        .filter(|s| !s.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector {
        match_labels: kv(s),
        match_expressions: vec![],
    }
}

fn tcp(port: u16) -> PolicyPort {
    PolicyPort {
        protocol: Protocol::Tcp,
        port: Some(PortSpec::Number(port)),
        end_port: None,
    }
}

fn pods(pod_selector: &str) -> Peer {
    Peer::Pods {
        pod_selector: Some(sel(pod_selector)),
        namespace_selector: None,
    }
}

fn namespaces(ns_selector: &str) -> Peer {
    Peer::Pods {
        pod_selector: None,
        namespace_selector: Some(sel(ns_selector)),
    }
}

fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::IpBlock(IpBlock {
        cidr: cidr.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    })
}

fn policy(key: &str, selector: &str) -> NetworkPolicy {
    let key: ObjectKey = key.parse().unwrap();
    NetworkPolicy {
        namespace: key.namespace,
        name: key.name,
        pod_selector: sel(selector),
        ..Default::default()
    }
}

fn end(cluster: &Cluster, s: &str) -> FlowEnd {
    match s.parse::<ObjectKey>() {
        Ok(key) => FlowEnd::Pod {
            address: cluster.pod(&key).unwrap().ips.first().copied(),
            pod: key,
        },
        Err(_) => FlowEnd::External(s.parse().unwrap()),
    }
}

/// Checks every row `(from, to, "PORT/PROTO", allowed)` against oracle and compiled maps.
fn check(cluster: &Cluster, rows: &[(&str, &str, &str, bool)]) {
    let engine = PolicyEngine::compile(cluster);
    for &(from, to, probe, expected) in rows {
        let (port, proto) = probe.split_once('/').unwrap();
        let flow = Flow {
            source: end(cluster, from),
            destination: end(cluster, to),
            protocol: proto.parse().unwrap(),
            port: port.parse().unwrap(),
        };
        let why = evaluate(cluster, &flow).unwrap();
        assert_eq!(
            why.allowed, expected,
            "oracle: {from} -> {to} {probe}\n{why}"
        );
        let compiled = engine.verdict(&flow).unwrap() == Verdict::Allow;
        assert_eq!(
            compiled, expected,
            "compiled: {from} -> {to} {probe}\n{why}"
        );
    }
}

fn namespace(cluster: &mut Cluster, name: &str, labels: &str) {
    cluster.upsert_namespace(Namespace {
        name: name.into(),
        labels: kv(labels),
    });
}

/// The page's first example, `test-network-policy`.
#[test]
fn the_test_network_policy_example() {
    let mut c = Cluster::new();
    namespace(&mut c, "default", "");
    namespace(&mut c, "myproject", "project=myproject");
    namespace(&mut c, "other", "");
    for p in [
        pod("default/db", "role=db", "10.1.0.1", ""),
        pod("default/frontend", "role=frontend", "10.1.0.2", ""),
        pod("default/backend", "role=backend", "10.1.0.3", ""),
        pod("myproject/app", "app=x", "10.1.0.4", ""),
        pod("other/frontend", "role=frontend", "10.1.0.5", ""),
        pod("default/ext-db", "role=ext", "10.0.0.9", ""),
    ] {
        c.upsert_pod(p).unwrap();
    }
    let mut np = policy("default/test-network-policy", "role=db");
    np.policy_types = Some(vec![Direction::Ingress, Direction::Egress]);
    np.ingress = vec![Rule {
        peers: vec![
            block("172.17.0.0/16", &["172.17.1.0/24"]),
            namespaces("project=myproject"),
            pods("role=frontend"),
        ],
        ports: vec![tcp(6379)],
    }];
    np.egress = vec![Rule {
        peers: vec![block("10.0.0.0/24", &[])],
        ports: vec![tcp(5978)],
    }];
    c.upsert_policy(np).unwrap();
    check(
        &c,
        &[
            ("default/frontend", "default/db", "6379/TCP", true),
            ("default/frontend", "default/db", "6380/TCP", false),
            ("default/frontend", "default/db", "6379/UDP", false),
            ("default/backend", "default/db", "6379/TCP", false),
            ("myproject/app", "default/db", "6379/TCP", true),
            // podSelector alone means the policy's namespace only.
            ("other/frontend", "default/db", "6379/TCP", false),
            ("172.17.0.5", "default/db", "6379/TCP", true),
            ("172.17.1.5", "default/db", "6379/TCP", false),
            ("172.18.0.1", "default/db", "6379/TCP", false),
            // Egress of db: only 10.0.0.0/24 on 5978 (a pod there counts: ipBlock is by address).
            ("default/db", "10.0.0.7", "5978/TCP", true),
            ("default/db", "default/ext-db", "5978/TCP", true),
            ("default/db", "10.0.1.7", "5978/TCP", false),
            ("default/db", "default/frontend", "5978/TCP", false),
            ("default/db", "default/db", "1/TCP", true),
            // Pods not selected are not isolated.
            ("default/backend", "default/frontend", "22/TCP", true),
        ],
    );
}

/// The "default policies" section: deny all ingress, allow all ingress, deny all egress, allow
/// all egress, deny all.
#[test]
fn default_policies() {
    let mut base = Cluster::new();
    namespace(&mut base, "default", "");
    base.upsert_pod(pod("default/a", "app=a", "10.2.0.1", ""))
        .unwrap();
    base.upsert_pod(pod("default/b", "app=b", "10.2.0.2", ""))
        .unwrap();
    base.upsert_pod(pod("other/c", "app=c", "10.2.0.3", ""))
        .unwrap();

    // default-deny-ingress
    let mut c = base.clone();
    let mut np = policy("default/default-deny-ingress", "");
    np.policy_types = Some(vec![Direction::Ingress]);
    c.upsert_policy(np).unwrap();
    check(
        &c,
        &[
            ("default/a", "default/b", "80/TCP", false),
            ("other/c", "default/a", "80/TCP", false),
            ("default/a", "other/c", "80/TCP", true),
            ("8.8.8.8", "default/a", "53/UDP", false),
            ("default/a", "default/a", "80/TCP", true),
        ],
    );

    // allow-all-ingress
    let mut np = policy("default/allow-all-ingress", "");
    np.ingress = vec![Rule::default()];
    np.policy_types = Some(vec![Direction::Ingress]);
    c.upsert_policy(np).unwrap();
    check(
        &c,
        &[
            ("default/a", "default/b", "80/TCP", true),
            ("8.8.8.8", "default/a", "9/SCTP", true),
        ],
    );

    // default-deny-egress
    let mut c = base.clone();
    let mut np = policy("default/default-deny-egress", "");
    np.policy_types = Some(vec![Direction::Egress]);
    c.upsert_policy(np).unwrap();
    check(
        &c,
        &[
            ("default/a", "default/b", "80/TCP", false),
            ("default/a", "8.8.8.8", "53/UDP", false),
            ("other/c", "default/a", "80/TCP", true),
        ],
    );

    // allow-all-egress
    let mut np = policy("default/allow-all-egress", "");
    np.egress = vec![Rule::default()];
    np.policy_types = Some(vec![Direction::Egress]);
    c.upsert_policy(np).unwrap();
    check(&c, &[("default/a", "8.8.8.8", "53/UDP", true)]);

    // default-deny-all
    let mut c = base.clone();
    let mut np = policy("default/default-deny-all", "");
    np.policy_types = Some(vec![Direction::Ingress, Direction::Egress]);
    c.upsert_policy(np).unwrap();
    check(
        &c,
        &[
            ("default/a", "default/b", "80/TCP", false),
            ("default/b", "default/a", "80/TCP", false),
            ("default/a", "other/c", "80/TCP", false),
            ("other/c", "default/a", "80/TCP", false),
            ("other/c", "other/c", "80/TCP", true),
            ("default/a", "default/a", "80/TCP", true),
        ],
    );
}

/// "Targeting a range of ports": egress to 10.0.0.0/24 on TCP 32000-32768.
#[test]
fn port_range() {
    let mut c = Cluster::new();
    c.upsert_pod(pod("default/db", "role=db", "10.3.0.1", ""))
        .unwrap();
    let mut np = policy("default/multi-port-egress", "role=db");
    np.policy_types = Some(vec![Direction::Egress]);
    np.egress = vec![Rule {
        peers: vec![block("10.0.0.0/24", &[])],
        ports: vec![PolicyPort {
            protocol: Protocol::Tcp,
            port: Some(PortSpec::Number(32000)),
            end_port: Some(32768),
        }],
    }];
    c.upsert_policy(np).unwrap();
    check(
        &c,
        &[
            ("default/db", "10.0.0.1", "31999/TCP", false),
            ("default/db", "10.0.0.1", "32000/TCP", true),
            ("default/db", "10.0.0.1", "32500/TCP", true),
            ("default/db", "10.0.0.1", "32768/TCP", true),
            ("default/db", "10.0.0.1", "32769/TCP", false),
            ("default/db", "10.0.0.1", "32000/UDP", false),
            ("default/db", "10.0.1.1", "32000/TCP", false),
        ],
    );
    // Few prefixes, not one entry per port.
    let engine = PolicyEngine::compile(&c);
    let (_, p) = engine.endpoint(&"default/db".parse().unwrap()).unwrap();
    assert!(p.egress.entries.len() <= 3, "{:?}", p.egress.entries);
}

/// "Behavior of to and from selectors": one peer with both selectors is an AND; two peers are
/// an OR. Also targeting a namespace by its name label and named ports.
#[test]
fn selector_and_or_name_label_and_named_ports() {
    let mut c = Cluster::new();
    namespace(&mut c, "default", "");
    namespace(&mut c, "client", "user=alice");
    namespace(&mut c, "guest", "");
    for p in [
        pod("default/server", "app=server", "10.4.0.1", "http:8080/TCP"),
        pod("default/server2", "app=server", "10.4.0.6", "http:9090/TCP"),
        pod("client/client", "role=client", "10.4.0.2", ""),
        pod("client/other", "role=other", "10.4.0.3", ""),
        pod("guest/client", "role=client", "10.4.0.4", ""),
        pod("default/client", "role=client", "10.4.0.5", ""),
    ] {
        c.upsert_pod(p).unwrap();
    }
    let named_http = PolicyPort {
        protocol: Protocol::Tcp,
        port: Some(PortSpec::Name("http".into())),
        end_port: None,
    };
    let mut and = policy("default/and", "app=server");
    and.ingress = vec![Rule {
        peers: vec![Peer::Pods {
            pod_selector: Some(sel("role=client")),
            namespace_selector: Some(sel("user=alice")),
        }],
        ports: vec![named_http.clone()],
    }];
    c.upsert_policy(and).unwrap();
    check(
        &c,
        &[
            ("client/client", "default/server", "8080/TCP", true),
            // Named port resolves per destination pod.
            ("client/client", "default/server2", "9090/TCP", true),
            ("client/client", "default/server2", "8080/TCP", false),
            ("client/other", "default/server", "8080/TCP", false),
            ("guest/client", "default/server", "8080/TCP", false),
            ("default/client", "default/server", "8080/TCP", false),
        ],
    );
    let mut or = policy("default/or", "app=server");
    or.ingress = vec![Rule {
        peers: vec![
            namespaces("kubernetes.io/metadata.name=guest"),
            pods("role=client"),
        ],
        ports: vec![],
    }];
    c.upsert_policy(or).unwrap();
    check(
        &c,
        &[
            ("guest/client", "default/server", "1/UDP", true),
            ("default/client", "default/server", "8080/TCP", true),
            ("client/other", "default/server", "8080/TCP", false),
            ("client/client", "default/server", "8080/TCP", true),
            ("client/client", "default/server", "22/TCP", false),
        ],
    );
}

/// Explicit deny rules (Strata extension) win over allows, also in the compiled maps where a
/// wide deny covers a narrower allow of the same identity.
#[test]
fn deny_wins() {
    let mut c = Cluster::new();
    c.upsert_pod(pod("default/web", "app=web", "10.5.0.1", ""))
        .unwrap();
    c.upsert_pod(pod("default/bad", "app=bad", "10.5.0.2", ""))
        .unwrap();
    let mut allow = policy("default/allow", "app=web");
    allow.ingress = vec![Rule {
        peers: vec![pods("app=bad")],
        ports: vec![tcp(80)],
    }];
    allow.ingress_deny = vec![Rule {
        peers: vec![pods("app=bad")],
        ports: vec![PolicyPort {
            protocol: Protocol::Tcp,
            port: None,
            end_port: None,
        }],
    }];
    c.upsert_policy(allow).unwrap();
    check(
        &c,
        &[
            ("default/bad", "default/web", "80/TCP", false),
            ("default/bad", "default/web", "53/UDP", false),
            ("default/web", "default/web", "80/TCP", true),
        ],
    );
}
