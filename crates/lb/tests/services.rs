//! Scenarios: Kubernetes service semantics through the balancer, checked with the select twin.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use strata_lb::{
    AffinityMap, Algorithm, BackendKey, BackendState, Config, Endpoint, EndpointGroup,
    EndpointPort, EntrySet, Error, Frontend, FrontendKind, LoadBalancer, Protocol, Service,
    ServiceName, ServicePort, ServiceState, SessionAffinity, TableSize, TargetPort, TrafficPolicy,
    Verdict, flow_hash,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fe(s: &str) -> Frontend {
    s.parse().unwrap()
}

fn config() -> Config {
    Config {
        node_name: Some("node-a".into()),
        node_zone: None,
        node_addresses: vec![ip("192.168.1.10"), ip("fd00:1::10")],
        table_size: TableSize::new(251).unwrap(),
        algorithm: Algorithm::Maglev,
    }
}

fn endpoint(addr: &str, node: &str, state: BackendState) -> Endpoint {
    let mut e = Endpoint::new(ip(addr));
    e.node_name = Some(node.into());
    e.state = state;
    e
}

fn web() -> Service {
    let mut s = Service::new(ServiceName::new("shop", "web"));
    s.cluster_ips = vec![ip("10.96.0.10"), ip("fd00:96::10")];
    s.external_ips = vec![ip("203.0.113.5")];
    s.load_balancer_ips = vec![ip("198.51.100.7")];
    s.ports = vec![
        ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: Some(TargetPort::Name("web".into())),
            node_port: Some(30080),
        },
        ServicePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            target_port: Some(TargetPort::Number(5353)),
            node_port: None,
        },
        ServicePort {
            name: "sig".into(),
            protocol: Protocol::Sctp,
            port: 3868,
            target_port: None,
            node_port: None,
        },
    ];
    s
}

/// An EndpointSlice: ports named after the service ports.
fn slice(endpoints: Vec<Endpoint>) -> EndpointGroup {
    EndpointGroup {
        ports: vec![
            EndpointPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Tcp,
            },
            EndpointPort {
                name: "dns".into(),
                port: 5353,
                protocol: Protocol::Udp,
            },
            EndpointPort {
                name: "sig".into(),
                port: 3868,
                protocol: Protocol::Sctp,
            },
        ],
        endpoints,
    }
}

fn forward(v: Verdict) -> SocketAddr {
    match v {
        Verdict::Forward { backend, .. } => backend,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn client(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::from([192, 0, 2, (i % 250) as u8 + 1]),
        1024 + i as u16,
    )
}

/// Backends the frontend reaches over many flows.
fn reached(lb: &LoadBalancer, frontend: Frontend) -> BTreeMap<SocketAddr, usize> {
    let mut out = BTreeMap::new();
    for i in 0..2000 {
        let c = client(i);
        let c = if frontend.address.is_ipv6() {
            SocketAddr::new(ip("2001:db8::1"), c.port())
        } else {
            c
        };
        if let Verdict::Forward { backend, .. } =
            lb.select(&frontend, flow_hash(c, frontend), c.ip())
        {
            *out.entry(backend).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn every_kind_of_frontend_on_every_port_and_family() {
    let mut lb = LoadBalancer::new(config());
    let eps = vec![
        endpoint("10.0.1.1", "node-a", BackendState::Active),
        endpoint("10.0.2.1", "node-b", BackendState::Active),
        endpoint("fd00:10::1", "node-b", BackendState::Active),
    ];
    lb.upsert(web(), &[slice(eps)]).unwrap();
    let entries = lb.entries();
    let expect = [
        ("10.96.0.10:80/TCP", FrontendKind::ClusterIp),
        ("[fd00:96::10]:80/TCP", FrontendKind::ClusterIp),
        ("192.168.1.10:30080/TCP", FrontendKind::NodePort),
        ("[fd00:1::10]:30080/TCP", FrontendKind::NodePort),
        ("198.51.100.7:80/TCP", FrontendKind::LoadBalancer),
        ("203.0.113.5:80/TCP", FrontendKind::ExternalIp),
        ("10.96.0.10:53/UDP", FrontendKind::ClusterIp),
        ("[fd00:96::10]:53/UDP", FrontendKind::ClusterIp),
        ("198.51.100.7:53/UDP", FrontendKind::LoadBalancer),
        ("203.0.113.5:53/UDP", FrontendKind::ExternalIp),
        ("10.96.0.10:3868/SCTP", FrontendKind::ClusterIp),
        ("[fd00:96::10]:3868/SCTP", FrontendKind::ClusterIp),
        ("198.51.100.7:3868/SCTP", FrontendKind::LoadBalancer),
        ("203.0.113.5:3868/SCTP", FrontendKind::ExternalIp),
    ];
    assert_eq!(entries.services.len(), expect.len());
    for (f, kind) in expect {
        let e = entries.services[&fe(f)];
        assert_eq!(e.kind, kind, "{f}");
        assert_eq!(e.state, ServiceState::Ready, "{f}");
        let rev = entries.rev_nat[&e.rev_nat_id];
        assert_eq!((rev.address, rev.port), (fe(f).address, fe(f).port));
        assert_eq!(entries.maglev[&e.rev_nat_id].len(), 251);
    }
    // Reverse-NAT ids are unique per frontend.
    let ids: std::collections::BTreeSet<_> =
        entries.services.values().map(|e| e.rev_nat_id).collect();
    assert_eq!(ids.len(), expect.len());
    // Named target port from the slice, per protocol; v4 frontends reach v4 backends only.
    let http = reached(&lb, fe("10.96.0.10:80/TCP"));
    assert_eq!(
        http.keys().copied().collect::<Vec<_>>(),
        [
            "10.0.1.1:8080".parse().unwrap(),
            "10.0.2.1:8080".parse().unwrap()
        ]
    );
    let dns6 = reached(&lb, fe("[fd00:96::10]:53/UDP"));
    assert_eq!(
        dns6.keys().copied().collect::<Vec<_>>(),
        ["[fd00:10::1]:5353".parse::<SocketAddr>().unwrap()]
    );
    let sctp = reached(&lb, fe("203.0.113.5:3868/SCTP"));
    assert_eq!(sctp.len(), 2);
    assert!(sctp.keys().all(|a| a.port() == 3868));
    // Anything else is not a service.
    assert_eq!(
        lb.select(&fe("10.96.0.10:81/TCP"), 1, ip("192.0.2.1")),
        Verdict::NotAService
    );
    // The view lists frontends and backends with ids and states.
    let view = lb.service(&ServiceName::new("shop", "web")).unwrap();
    assert_eq!(view.frontends.len(), expect.len());
    assert_eq!(view.backends.len(), 9);
    assert!(
        view.backends
            .iter()
            .all(|b| b.state == BackendState::Active)
    );
}

#[test]
fn named_target_ports_without_slices_and_numeric_defaults() {
    let mut lb = LoadBalancer::new(config());
    let mut s = Service::new(ServiceName::new("default", "api"));
    s.cluster_ips = vec![ip("10.96.0.20")];
    s.ports = vec![
        ServicePort {
            name: "grpc".into(),
            protocol: Protocol::Tcp,
            port: 9000,
            target_port: Some(TargetPort::Name("grpc-port".into())),
            node_port: None,
        },
        ServicePort {
            name: "metrics".into(),
            protocol: Protocol::Tcp,
            port: 9100,
            target_port: None,
            node_port: None,
        },
    ];
    // A hand-made group carrying container port names, and one with no ports at all.
    let named = EndpointGroup {
        ports: vec![EndpointPort {
            name: "grpc-port".into(),
            port: 7000,
            protocol: Protocol::Tcp,
        }],
        endpoints: vec![Endpoint::new(ip("10.0.3.1"))],
    };
    let bare = EndpointGroup {
        ports: vec![],
        endpoints: vec![Endpoint::new(ip("10.0.3.2"))],
    };
    lb.upsert(s, &[named, bare]).unwrap();
    let grpc = reached(&lb, fe("10.96.0.20:9000/TCP"));
    assert_eq!(
        grpc.keys().copied().collect::<Vec<_>>(),
        ["10.0.3.1:7000".parse::<SocketAddr>().unwrap()]
    );
    let metrics = reached(&lb, fe("10.96.0.20:9100/TCP"));
    assert_eq!(
        metrics.keys().copied().collect::<Vec<_>>(),
        ["10.0.3.2:9100".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn backend_and_reverse_nat_ids_survive_updates() {
    let mut lb = LoadBalancer::new(config());
    let a = endpoint("10.0.1.1", "node-a", BackendState::Active);
    let b = endpoint("10.0.1.2", "node-b", BackendState::Active);
    let c = endpoint("10.0.1.3", "node-b", BackendState::Active);
    lb.upsert(web(), &[slice(vec![a.clone(), b.clone()])])
        .unwrap();
    let key_b = BackendKey {
        address: ip("10.0.1.2"),
        port: 8080,
        protocol: Protocol::Tcp,
    };
    let id_b = lb.backend_id(&key_b).unwrap();
    let rev = lb.rev_nat_id(&fe("10.96.0.10:80/TCP")).unwrap();
    // a leaves, c arrives, b turns terminating: b keeps its id, the frontend its rev-NAT id.
    let mut b2 = b.clone();
    b2.state = BackendState::Terminating;
    let diff = lb.upsert(web(), &[slice(vec![b2, c])]).unwrap();
    assert_eq!(lb.backend_id(&key_b), Some(id_b));
    assert_eq!(lb.rev_nat_id(&fe("10.96.0.10:80/TCP")), Some(rev));
    assert_eq!(
        lb.entries().backends[&id_b].state,
        BackendState::Terminating
    );
    assert!(diff.backends.upsert.iter().any(|(id, _)| *id == id_b));
    assert_eq!(diff.backends.remove.len(), 3, "a's three ports leave");
    assert!(
        diff.rev_nat.is_empty()
            && diff
                .services
                .upsert
                .iter()
                .all(|(_, e)| e.rev_nat_id != rev || e.backend_count == 1)
    );
    // Another service sharing backend b keeps the same id for it.
    let mut other = web();
    other.name = ServiceName::new("shop", "web-canary");
    other.cluster_ips = vec![ip("10.96.0.11")];
    other.external_ips.clear();
    other.load_balancer_ips.clear();
    for p in &mut other.ports {
        p.node_port = None;
    }
    lb.upsert(other, &[slice(vec![b.clone()])]).unwrap();
    assert_eq!(lb.backend_id(&key_b), Some(id_b));
    // Removing the first service keeps b (still used) and frees the rest.
    lb.remove(&ServiceName::new("shop", "web")).unwrap();
    assert_eq!(lb.backend_id(&key_b), Some(id_b));
    assert_eq!(lb.rev_nat_id(&fe("10.96.0.10:80/TCP")), None);
    lb.remove(&ServiceName::new("shop", "web-canary")).unwrap();
    assert_eq!(lb.entries(), &EntrySet::new());
    assert!(lb.is_empty());
}

#[test]
fn terminating_backends_only_when_no_active_is_left() {
    let mut lb = LoadBalancer::new(config());
    let f = fe("10.96.0.10:80/TCP");
    let eps = |states: [BackendState; 3]| {
        vec![slice(
            states
                .iter()
                .enumerate()
                .map(|(i, s)| endpoint(&format!("10.0.1.{}", i + 1), "node-b", *s))
                .collect(),
        )]
    };
    use BackendState::*;
    lb.upsert(web(), &eps([Active, Terminating, Quarantined]))
        .unwrap();
    assert_eq!(
        reached(&lb, f).keys().copied().collect::<Vec<_>>(),
        ["10.0.1.1:8080".parse().unwrap()]
    );
    assert!(!lb.entries().services[&f].terminating_fallback);
    lb.upsert(web(), &eps([Terminating, Terminating, Maintenance]))
        .unwrap();
    assert_eq!(reached(&lb, f).len(), 2);
    assert!(lb.entries().services[&f].terminating_fallback);
    lb.upsert(web(), &eps([Quarantined, Maintenance, Quarantined]))
        .unwrap();
    let e = lb.entries().services[&f];
    assert_eq!(e.state, ServiceState::NoBackends);
    assert!(matches!(
        lb.select(&f, 7, ip("192.0.2.1")),
        Verdict::Unreachable { .. }
    ));
}

#[test]
fn no_backends_is_a_visible_unreachable_state() {
    let mut lb = LoadBalancer::new(config());
    lb.upsert(web(), &[]).unwrap();
    for (f, e) in &lb.entries().services {
        assert_eq!(e.state, ServiceState::NoBackends, "{f}");
        assert_eq!(e.backend_count, 0);
        assert_eq!(
            lb.select(f, 12345, ip("192.0.2.9")),
            Verdict::Unreachable {
                rev_nat_id: e.rev_nat_id
            }
        );
    }
    assert!(lb.entries().maglev.is_empty());
    assert_eq!(lb.entries().rev_nat.len(), lb.entries().services.len());
}

#[test]
fn traffic_policies_local_and_cluster() {
    let mut lb = LoadBalancer::new(config());
    let mut s = web();
    s.external_traffic_policy = TrafficPolicy::Local;
    let eps = vec![
        endpoint("10.0.1.1", "node-a", BackendState::Active),
        endpoint("10.0.2.1", "node-b", BackendState::Active),
    ];
    lb.upsert(s.clone(), &[slice(eps)]).unwrap();
    // External frontends: only the local backend.
    for f in [
        "192.168.1.10:30080/TCP",
        "198.51.100.7:80/TCP",
        "203.0.113.5:80/TCP",
    ] {
        assert_eq!(
            reached(&lb, fe(f)).keys().copied().collect::<Vec<_>>(),
            ["10.0.1.1:8080".parse().unwrap()],
            "{f}"
        );
    }
    // The cluster IP follows internalTrafficPolicy: Cluster.
    assert_eq!(reached(&lb, fe("10.96.0.10:80/TCP")).len(), 2);
    // No local backend: external traffic is dropped, internal still balanced.
    let only_remote = vec![endpoint("10.0.2.1", "node-b", BackendState::Active)];
    lb.upsert(s.clone(), &[slice(only_remote.clone())]).unwrap();
    let np = lb.entries().services[&fe("192.168.1.10:30080/TCP")];
    assert_eq!(np.state, ServiceState::NoLocalBackends);
    assert!(matches!(
        lb.select(&fe("192.168.1.10:30080/TCP"), 1, ip("192.0.2.1")),
        Verdict::Drop { .. }
    ));
    assert_eq!(reached(&lb, fe("10.96.0.10:80/TCP")).len(), 1);
    // internalTrafficPolicy: Local drops cluster-IP traffic without a local backend too.
    s.internal_traffic_policy = TrafficPolicy::Local;
    lb.upsert(s.clone(), &[slice(only_remote)]).unwrap();
    assert!(matches!(
        lb.select(&fe("10.96.0.10:80/TCP"), 1, ip("192.0.2.1")),
        Verdict::Drop { .. }
    ));
    // A local terminating backend is used when no local active one is left (KEP-1669).
    let eps = vec![
        endpoint("10.0.1.1", "node-a", BackendState::Terminating),
        endpoint("10.0.2.1", "node-b", BackendState::Active),
    ];
    lb.upsert(s, &[slice(eps)]).unwrap();
    assert_eq!(
        reached(&lb, fe("192.168.1.10:30080/TCP"))
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        ["10.0.1.1:8080".parse().unwrap()]
    );
}

#[test]
fn zone_hints_keep_flows_in_zone() {
    let mut cfg = config();
    cfg.node_zone = Some("zone-a".into());
    let mut lb = LoadBalancer::new(cfg);
    let mut a = endpoint("10.0.1.1", "node-x", BackendState::Active);
    a.zone_hints = vec!["zone-a".into()];
    let mut b = endpoint("10.0.1.2", "node-y", BackendState::Active);
    b.zone_hints = vec!["zone-b".into()];
    lb.upsert(web(), &[slice(vec![a, b.clone()])]).unwrap();
    assert_eq!(
        reached(&lb, fe("10.96.0.10:80/TCP"))
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        ["10.0.1.1:8080".parse().unwrap()]
    );
    // Without hints for this zone, every backend is used.
    lb.upsert(
        web(),
        &[slice(vec![b.clone(), {
            let mut c = b.clone();
            c.addresses = vec![ip("10.0.1.3")];
            c
        }])],
    )
    .unwrap();
    assert_eq!(reached(&lb, fe("10.96.0.10:80/TCP")).len(), 2);
}

#[test]
fn session_affinity_sticks_until_the_timeout() {
    let mut lb = LoadBalancer::new(config());
    let mut s = web();
    s.session_affinity = SessionAffinity::ClientIp { timeout_secs: 60 };
    let eps: Vec<Endpoint> = (1..=5)
        .map(|i| endpoint(&format!("10.0.1.{i}"), "node-b", BackendState::Active))
        .collect();
    lb.upsert(s.clone(), &[slice(eps.clone())]).unwrap();
    let f = fe("10.96.0.10:80/TCP");
    let mut aff = AffinityMap::new();
    let c = ip("192.0.2.77");
    let t0 = Duration::from_secs(1000);
    let first = lb.select_with_affinity(&f, 1, c, &mut aff, t0);
    let bound = forward(first);
    // Other flows of the same client (other hashes) stick to the same backend.
    for h in 2..200u32 {
        let v = lb.select_with_affinity(
            &f,
            h.wrapping_mul(0x9e37_79b9),
            c,
            &mut aff,
            t0 + Duration::from_secs(u64::from(h % 50)),
        );
        assert_eq!(forward(v), bound);
        assert!(matches!(
            v,
            Verdict::Forward {
                from_affinity: true,
                ..
            }
        ));
    }
    assert_eq!(aff.len(), 1);
    // Idle longer than the timeout: balanced again (and rebound).
    let later = t0 + Duration::from_secs(49 + 61);
    let v = lb.select_with_affinity(&f, 0xdead_beef, c, &mut aff, later);
    assert!(matches!(
        v,
        Verdict::Forward {
            from_affinity: false,
            ..
        }
    ));
    assert_eq!(
        aff.get(&strata_lb::AffinityKey {
            rev_nat_id: lb.rev_nat_id(&f).unwrap(),
            client: c
        })
        .unwrap()
        .last_used,
        later
    );
    // The bound backend leaves: the binding is not used any more, and prune forgets it.
    let bound_now = forward(v);
    let rest: Vec<Endpoint> = eps
        .into_iter()
        .filter(|e| e.addresses[0] != bound_now.ip())
        .collect();
    lb.upsert(s, &[slice(rest)]).unwrap();
    let v = lb.select_with_affinity(&f, 0xdead_beef, c, &mut aff, later);
    assert_ne!(forward(v), bound_now);
    aff.prune(lb.entries(), later + Duration::from_secs(61));
    assert!(aff.is_empty());
    // Without affinity on the service, the map is not consulted or filled.
    let mut lb2 = LoadBalancer::new(config());
    lb2.upsert(
        web(),
        &[slice(vec![endpoint("10.0.1.1", "n", BackendState::Active)])],
    )
    .unwrap();
    let mut aff2 = AffinityMap::new();
    let _ = lb2.select_with_affinity(&f, 1, c, &mut aff2, t0);
    assert!(aff2.is_empty());
}

#[test]
fn weighted_random_follows_weights() {
    let mut lb = LoadBalancer::new(config());
    let mut s = web();
    s.algorithm = Some(Algorithm::Random);
    let mut heavy = endpoint("10.0.1.1", "n", BackendState::Active);
    heavy.weight = 3;
    let light = endpoint("10.0.1.2", "n", BackendState::Active);
    let mut off = endpoint("10.0.1.3", "n", BackendState::Active);
    off.weight = 0;
    lb.upsert(s, &[slice(vec![heavy, light, off])]).unwrap();
    let f = fe("10.96.0.10:80/TCP");
    let e = lb.entries().services[&f];
    assert_eq!((e.backend_count, e.total_weight), (2, 4));
    assert!(!lb.entries().maglev.contains_key(&e.rev_nat_id));
    let mut counts = [0u32; 2];
    for h in 0..4000u32 {
        match forward(lb.select(&f, h, ip("192.0.2.1"))).ip() {
            a if a == ip("10.0.1.1") => counts[0] += 1,
            a if a == ip("10.0.1.2") => counts[1] += 1,
            other => panic!("weight-0 backend {other} chosen"),
        }
    }
    assert_eq!(counts, [3000, 1000]);
}

#[test]
fn bad_input_is_typed_and_changes_nothing() {
    let mut lb = LoadBalancer::new(config());
    lb.upsert(
        web(),
        &[slice(vec![endpoint("10.0.1.1", "n", BackendState::Active)])],
    )
    .unwrap();
    let before = lb.entries().clone();
    // Another service claiming the same cluster IP and port.
    let mut thief = web();
    thief.name = ServiceName::new("other", "thief");
    thief.external_ips.clear();
    thief.load_balancer_ips.clear();
    let err = lb
        .upsert(
            thief,
            &[slice(vec![endpoint("10.0.9.9", "n", BackendState::Active)])],
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::FrontendConflict { owner, .. } if owner == &ServiceName::new("shop", "web")),
        "{err}"
    );
    assert_eq!(lb.entries(), &before);
    // Invalid services.
    let mut dup = web();
    dup.ports[1].port = 80;
    dup.ports[1].protocol = Protocol::Tcp;
    let err = lb.upsert(dup, &[]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidService { field, .. } if field == "ports[1]"),
        "{err}"
    );
    let mut unnamed = web();
    unnamed.ports[2].name.clear();
    let err = lb.upsert(unnamed, &[]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidService { field, .. } if field == "ports[2].name"),
        "{err}"
    );
    let mut aff = web();
    aff.session_affinity = SessionAffinity::ClientIp { timeout_secs: 0 };
    assert!(lb.upsert(aff, &[]).is_err());
    // A table too small for the backends: typed, and nothing changed.
    let mut small = config();
    small.table_size = TableSize::new(2).unwrap();
    let mut lb2 = LoadBalancer::new(small);
    let three: Vec<Endpoint> = (1..=3)
        .map(|i| endpoint(&format!("10.0.1.{i}"), "n", BackendState::Active))
        .collect();
    let err = lb2.upsert(web(), &[slice(three)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyBackends {
                size: 2,
                backends: 3
            }
        ),
        "{err}"
    );
    assert_eq!(lb2.entries(), &EntrySet::new());
    let one = || [slice(vec![endpoint("10.0.1.1", "n", BackendState::Active)])];
    let ok = lb2.upsert(web(), &one()).unwrap();
    let mut fresh = LoadBalancer::new(lb2.config().clone());
    assert_eq!(
        fresh.upsert(web(), &one()).unwrap(),
        ok,
        "the failed update gave its ids back"
    );
    assert!(lb.remove(&ServiceName::new("x", "y")).is_err());
    assert_eq!(lb.entries(), &before);
}

#[test]
fn entry_sets_round_trip_through_json() {
    let mut lb = LoadBalancer::new(config());
    lb.upsert(
        web(),
        &[slice(vec![endpoint("10.0.1.1", "n", BackendState::Active)])],
    )
    .unwrap();
    let json = serde_json::to_string(lb.entries()).unwrap();
    let back: EntrySet = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, lb.entries());
}

#[test]
fn node_ports_follow_the_service_families() {
    let mut lb = LoadBalancer::new(config());
    let mut s = web();
    s.cluster_ips = vec![ip("10.96.0.10")];
    lb.upsert(s, &[]).unwrap();
    let node_ports: Vec<Frontend> = lb
        .entries()
        .services
        .iter()
        .filter(|(_, e)| e.kind == FrontendKind::NodePort)
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(node_ports, [fe("192.168.1.10:30080/TCP")]);
}

#[test]
fn reverse_nat_id_exhaustion_is_typed_and_changes_nothing() {
    let mut lb = LoadBalancer::new(config());
    lb.upsert(web(), &[]).unwrap();
    let before = lb.entries().clone();
    let mut huge = Service::new(ServiceName::new("big", "many-ips"));
    huge.ports = vec![ServicePort::new(Protocol::Tcp, 80)];
    huge.external_ips = (0..70_000u32)
        .map(|i| IpAddr::from((0x6440_0000u32 + i).to_be_bytes()))
        .collect();
    let err = lb.upsert(huge, &[]).unwrap_err();
    assert_eq!(
        err,
        Error::IdsExhausted {
            kind: "reverse-NAT"
        }
    );
    assert_eq!(lb.entries(), &before);
    // The ids were given back: a small service still gets the next one.
    let mut small = Service::new(ServiceName::new("big", "one"));
    small.cluster_ips = vec![ip("10.96.1.1")];
    small.ports = vec![ServicePort::new(Protocol::Tcp, 80)];
    lb.upsert(small, &[]).unwrap();
    let used = before.rev_nat.keys().map(|r| r.0).max().unwrap();
    assert_eq!(
        lb.rev_nat_id(&fe("10.96.1.1:80/TCP")),
        Some(strata_lb::RevNatId(used + 1))
    );
}

#[test]
fn endpoint_updates_and_reverse_nat() {
    let mut lb = LoadBalancer::new(config());
    let name = ServiceName::new("shop", "web");
    assert!(matches!(
        lb.set_endpoints(&name, &[]),
        Err(Error::UnknownService { .. })
    ));
    lb.upsert(web(), &[]).unwrap();
    let f = fe("10.96.0.10:80/TCP");
    assert!(matches!(
        lb.select(&f, 1, ip("192.0.2.1")),
        Verdict::Unreachable { .. }
    ));
    let diff = lb
        .set_endpoints(
            &name,
            &[slice(vec![endpoint(
                "10.0.1.1",
                "node-b",
                BackendState::Active,
            )])],
        )
        .unwrap();
    assert!(!diff.maglev.replace.is_empty());
    let Verdict::Forward {
        backend,
        rev_nat_id,
        ..
    } = lb.select(&f, 1, ip("192.0.2.1"))
    else {
        panic!("no backend after the endpoint update");
    };
    assert_eq!(backend, "10.0.1.1:8080".parse::<SocketAddr>().unwrap());
    // Replies are rewritten back to the frontend.
    let rev = lb.lookup().reverse_nat(rev_nat_id).unwrap();
    assert_eq!((rev.address, rev.port), (f.address, f.port));
    assert_eq!(lb.entries().rev_nat[&rev_nat_id], rev);
    lb.remove(&name).unwrap();
    assert_eq!(lb.lookup().reverse_nat(rev_nat_id), None);
    assert!(lb.lookup().is_empty());
}
