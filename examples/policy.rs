//! Embedding `strata-policy`: a namespace, three pods, a default-deny policy and one allow
//! policy, compiled into datapath maps and queried, with the oracle's explanation.
//!
//! Run with `cargo run -p strata-examples --example policy`.

use strata_policy::{
    Cluster, ContainerPort, Flow, LabelSelector, Labels, Namespace, NetworkPolicy, ObjectKey, Peer,
    Pod, PolicyEngine, PolicyPort, PortSpec, Protocol, Rule, Verdict, evaluate,
};

fn pod(name: &str, app: &str, ip: &str) -> Pod {
    Pod {
        namespace: "shop".into(),
        name: name.into(),
        labels: Labels::from([("app".to_string(), app.to_string())]),
        ips: vec![ip.parse().expect("valid address")],
        ports: vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        host_network: false,
    }
}

fn main() -> Result<(), strata_policy::Error> {
    let mut cluster = Cluster::new();
    cluster.upsert_namespace(Namespace {
        name: "shop".into(),
        labels: Labels::new(),
    });
    cluster.upsert_pod(pod("frontend", "frontend", "10.0.0.10"))?;
    cluster.upsert_pod(pod("api", "api", "10.0.0.11"))?;
    cluster.upsert_pod(pod("db", "db", "10.0.0.12"))?;

    // Nothing gets in, unless allowed.
    cluster.upsert_policy(NetworkPolicy {
        namespace: "shop".into(),
        name: "default-deny".into(),
        pod_selector: LabelSelector::everything(),
        ..Default::default()
    })?;
    // The frontend may call the API on its named port `http`.
    cluster.upsert_policy(NetworkPolicy {
        namespace: "shop".into(),
        name: "frontend-to-api".into(),
        pod_selector: LabelSelector::labels([("app", "api")]),
        ingress: vec![Rule {
            peers: vec![Peer::Pods {
                pod_selector: Some(LabelSelector::labels([("app", "frontend")])),
                namespace_selector: None,
            }],
            ports: vec![PolicyPort {
                protocol: Protocol::Tcp,
                port: Some(PortSpec::Name("http".into())),
                end_port: None,
            }],
        }],
        ..Default::default()
    })?;

    let engine = PolicyEngine::compile(&cluster);
    let api = ObjectKey::new("shop", "api");
    let (identity, policy) = engine.endpoint(&api).expect("api is an endpoint");
    println!(
        "shop/api has identity {identity}; ingress enforced: {}",
        policy.ingress.enforced
    );
    for entry in policy.ingress.entries.iter() {
        println!("  ingress entry: {} -> {:?}", entry.key, entry.verdict);
    }

    let probes = [
        ("frontend", "api", 8080),
        ("frontend", "api", 22),
        ("db", "api", 8080),
        ("api", "db", 5432),
    ];
    for (from, to, port) in probes {
        let flow = Flow::between(
            &cluster,
            &ObjectKey::new("shop", from),
            &ObjectKey::new("shop", to),
            Protocol::Tcp,
            port,
        )?;
        let verdict = engine.verdict(&flow)?;
        let why = evaluate(&cluster, &flow)?;
        assert_eq!(verdict == Verdict::Allow, why.allowed);
        println!("shop/{from} -> shop/{to} {port}/TCP: {verdict:?}");
        println!("  {}", why.ingress);
    }
    Ok(())
}
