//! Incremental updates touch only what they must; identities survive restarts; host-network and
//! pending pods follow the documented rules.

use std::net::IpAddr;

use strata_policy::*;

fn pod(ns: &str, name: &str, app: &str, ip: Option<&str>) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: Labels::from([("app".to_string(), app.to_string())]),
        ips: ip.map(|i| vec![i.parse().unwrap()]).unwrap_or_default(),
        ports: vec![],
        host_network: false,
    }
}

fn allow_from(ns: &str, name: &str, target: &str, from: &str) -> NetworkPolicy {
    NetworkPolicy {
        namespace: ns.into(),
        name: name.into(),
        pod_selector: LabelSelector::labels([("app", target)]),
        ingress: vec![Rule {
            peers: vec![Peer::Pods {
                pod_selector: Some(LabelSelector::labels([("app", from)])),
                namespace_selector: None,
            }],
            ports: vec![],
        }],
        ..Default::default()
    }
}

fn cluster() -> Cluster {
    let mut c = Cluster::new();
    for (name, app, ip) in [
        ("w1", "web", "10.0.0.1"),
        ("w2", "web", "10.0.0.2"),
        ("d1", "db", "10.0.0.3"),
        ("c1", "cache", "10.0.0.4"),
    ] {
        c.upsert_pod(pod("shop", name, app, Some(ip))).unwrap();
    }
    c.upsert_policy(allow_from("shop", "db", "db", "web"))
        .unwrap();
    c
}

#[test]
fn relabel_into_an_existing_identity_touches_one_endpoint() {
    let mut engine = PolicyEngine::compile(&cluster());
    let web = engine.endpoint(&ObjectKey::new("shop", "w1")).unwrap().0;
    let diff = engine
        .apply(Change::UpsertPod(pod(
            "shop",
            "c1",
            "web",
            Some("10.0.0.4"),
        )))
        .unwrap();
    assert!(diff.allocated.is_empty());
    assert_eq!(diff.released.len(), 1, "the cache identity had one pod");
    assert_eq!(
        diff.ipcache_set,
        vec![IpCacheEntry {
            prefix: "10.0.0.4/32".parse().unwrap(),
            identity: web
        }]
    );
    assert_eq!(diff.endpoints.len(), 1);
    assert_eq!(diff.endpoints[0].endpoint, ObjectKey::new("shop", "c1"));
    assert_eq!(diff.endpoints[0].identity, web);
    // db's map did not change: web's identity was already allowed.
    assert_eq!(diff.entry_changes(), 0);
}

#[test]
fn relabel_into_new_labels_updates_only_the_maps_that_select_them() {
    let mut engine = PolicyEngine::compile(&cluster());
    // A new web-like pod with fresh labels: only db's map (which allows web) is unaffected; a
    // policy allowing "api" gets the new identity.
    engine
        .apply(Change::UpsertPolicy(allow_from(
            "shop", "cache", "cache", "api",
        )))
        .unwrap();
    let diff = engine
        .apply(Change::UpsertPod(pod(
            "shop",
            "w2",
            "api",
            Some("10.0.0.2"),
        )))
        .unwrap();
    assert_eq!(diff.allocated.len(), 1);
    let api = diff.allocated[0].0;
    let changed: Vec<String> = diff
        .endpoints
        .iter()
        .map(|e| e.endpoint.to_string())
        .collect();
    assert_eq!(changed, ["shop/c1", "shop/w2"]);
    let c1 = &diff.endpoints[0];
    assert_eq!(
        c1.ingress.add,
        vec![Entry {
            key: EntryKey::any_protocol(api),
            verdict: Verdict::Allow
        }]
    );
    assert!(c1.ingress.delete.is_empty());
    assert!(diff.removed_endpoints.is_empty());
}

#[test]
fn removing_a_policy_clears_exactly_its_entries() {
    let mut engine = PolicyEngine::compile(&cluster());
    let diff = engine
        .apply(Change::RemovePolicy(ObjectKey::new("shop", "db")))
        .unwrap();
    assert_eq!(diff.endpoints.len(), 1);
    let d = &diff.endpoints[0];
    assert_eq!(d.endpoint, ObjectKey::new("shop", "d1"));
    assert!(!d.ingress_enforced);
    assert_eq!(d.ingress.delete.len(), 1);
    assert!(d.ingress.add.is_empty());
    assert!(
        engine
            .apply(Change::RemovePolicy(ObjectKey::new("shop", "db")))
            .is_err()
    );
}

#[test]
fn identities_are_stable_across_restarts() {
    let c = cluster();
    let mut first = PolicyEngine::compile(&c);
    // Churn so that numbers are no longer the ones a fresh start would pick.
    first
        .apply(Change::UpsertPod(pod("shop", "x", "tmp", Some("10.0.0.9"))))
        .unwrap();
    first
        .apply(Change::UpsertPod(pod(
            "shop",
            "y",
            "late",
            Some("10.0.0.10"),
        )))
        .unwrap();
    first
        .apply(Change::RemovePod(ObjectKey::new("shop", "x")))
        .unwrap();
    let state = serde_json::to_string(&first.allocator().export()).unwrap();
    let restored = IdentityAllocator::restore(&serde_json::from_str(&state).unwrap()).unwrap();
    let second = PolicyEngine::compile_with(first.cluster(), restored);
    assert_eq!(first.snapshot(), second.snapshot());
    let naive = PolicyEngine::compile(first.cluster());
    assert_ne!(
        first.snapshot(),
        naive.snapshot(),
        "without restore the numbers differ"
    );
}

#[test]
fn host_network_and_pending_pods() {
    let mut c = cluster();
    let mut node = pod("kube-system", "agent", "node", Some("192.168.0.1"));
    node.host_network = true;
    c.upsert_pod(node.clone()).unwrap();
    let mut node2 = node.clone();
    node2.name = "exporter".into();
    c.upsert_pod(node2).unwrap();
    c.upsert_pod(pod("shop", "pending", "db", None)).unwrap();
    // Deny everything in kube-system: host-network pods are not endpoints, nothing changes.
    c.upsert_policy(NetworkPolicy {
        namespace: "kube-system".into(),
        name: "deny".into(),
        pod_selector: LabelSelector::everything(),
        policy_types: Some(vec![Direction::Ingress, Direction::Egress]),
        ..Default::default()
    })
    .unwrap();
    // db accepts the node by ipBlock, but not by selector.
    c.upsert_policy(NetworkPolicy {
        namespace: "shop".into(),
        name: "db-from-node".into(),
        pod_selector: LabelSelector::labels([("app", "db")]),
        ingress: vec![Rule {
            peers: vec![Peer::IpBlock(IpBlock {
                cidr: "192.168.0.0/24".parse().unwrap(),
                except: vec![],
            })],
            ports: vec![],
        }],
        ..Default::default()
    })
    .unwrap();
    // cache accepts any IPv4 address.
    c.upsert_policy(NetworkPolicy {
        namespace: "shop".into(),
        name: "cache-from-v4".into(),
        pod_selector: LabelSelector::labels([("app", "cache")]),
        ingress: vec![Rule {
            peers: vec![Peer::IpBlock(IpBlock {
                cidr: "0.0.0.0/0".parse().unwrap(),
                except: vec![],
            })],
            ports: vec![],
        }],
        ..Default::default()
    })
    .unwrap();
    let engine = PolicyEngine::compile(&c);
    let key = |s: &str| s.parse::<ObjectKey>().unwrap();
    let flow = |a: &str, b: &str| Flow::between(&c, &key(a), &key(b), Protocol::Tcp, 80).unwrap();
    let both = |f: &Flow| {
        let o = evaluate(&c, f).unwrap().allowed;
        assert_eq!(o, engine.verdict(f).unwrap() == Verdict::Allow, "{f:?}");
        o
    };
    assert!(
        both(&flow("kube-system/agent", "shop/d1")),
        "ipBlock matches the node address"
    );
    assert!(
        both(&flow("shop/w1", "kube-system/agent")),
        "host-network pods are not isolated"
    );
    assert!(!both(&flow("shop/c1", "shop/d1")));
    assert!(
        both(&flow("shop/w1", "shop/pending")),
        "web may reach db pods, pending or not"
    );
    assert!(
        both(&flow("kube-system/agent", "shop/pending")),
        "the source's address is in the block"
    );
    assert!(
        !both(&flow("shop/pending", "shop/c1")),
        "no address, no ipBlock match"
    );
    assert!(both(&flow("shop/w1", "shop/c1")));
    assert!(both(&flow("shop/c1", "kube-system/agent")));
    assert!(
        both(&flow("shop/pending", "shop/pending")),
        "a pod can always reach itself"
    );
    // The node address is the host identity plus the blocks it is in.
    let node_id = engine.ipcache().lookup("192.168.0.1".parse().unwrap());
    let labels = engine.allocator().labels(node_id).unwrap();
    assert_eq!(labels.subject, Subject::Host);
    assert!(labels.ip_blocks.contains("192.168.0.0/24"));
    // The pending pod is an endpoint with its label identity, absent from the ipcache.
    let (pending_id, p) = engine.endpoint(&key("shop/pending")).unwrap();
    assert!(p.ingress.enforced);
    assert!(
        !engine
            .snapshot()
            .ipcache
            .iter()
            .any(|e| e.identity == pending_id && e.prefix.prefix_len() == 32)
    );
}

#[test]
fn address_clashes_are_rejected_and_change_nothing() {
    let mut engine = PolicyEngine::compile(&cluster());
    let before = engine.snapshot();
    let err = engine
        .apply(Change::UpsertPod(pod(
            "other",
            "dup",
            "x",
            Some("10.0.0.1"),
        )))
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateAddress { .. }), "{err}");
    let mut host = pod("kube-system", "h", "node", Some("10.0.0.2"));
    host.host_network = true;
    assert!(engine.apply(Change::UpsertPod(host)).is_err());
    let mut bad = allow_from("shop", "bad", "db", "web");
    bad.ingress[0].peers = vec![Peer::IpBlock(IpBlock {
        cidr: "10.0.0.0/24".parse().unwrap(),
        except: vec!["10.1.0.0/28".parse().unwrap()],
    })];
    let err = engine.apply(Change::UpsertPolicy(bad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "NetworkPolicy shop/bad: field `spec.ingress[0].from[0].ipBlock.except[0]`: 10.1.0.0/28 is not a strict sub-prefix of 10.0.0.0/24"
    );
    assert_eq!(engine.snapshot(), before);
    // An "external" address that is a pod's is refused by both evaluators.
    let addr: IpAddr = "10.0.0.1".parse().unwrap();
    let flow = Flow {
        source: FlowEnd::External(addr),
        destination: FlowEnd::Pod {
            pod: ObjectKey::new("shop", "d1"),
            address: Some("10.0.0.3".parse().unwrap()),
        },
        protocol: Protocol::Tcp,
        port: 80,
    };
    assert!(engine.verdict(&flow).is_err());
    assert!(evaluate(engine.cluster(), &flow).is_err());
}
