//! A ClusterIP service with three backends, its Maglev table, one backend removed, and the
//! slots that moved.
//!
//! `cargo run -p strata-examples --example lb`

use std::net::IpAddr;

use strata_lb::{
    Config, Endpoint, EndpointGroup, Frontend, LoadBalancer, Protocol, Service, ServiceName,
    ServicePort, TableSize, TargetPort, Verdict, flow_hash,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut lb = LoadBalancer::new(Config {
        table_size: TableSize::new(251)?,
        ..Config::default()
    });
    let mut web = Service::new(ServiceName::new("shop", "web"));
    web.cluster_ips = vec!["10.96.0.10".parse()?];
    web.ports = vec![ServicePort {
        target_port: Some(TargetPort::Number(8080)),
        ..ServicePort::new(Protocol::Tcp, 80)
    }];
    let pods: Vec<IpAddr> = vec![
        "10.0.1.5".parse()?,
        "10.0.2.7".parse()?,
        "10.0.3.9".parse()?,
    ];
    let group = |pods: &[IpAddr]| EndpointGroup {
        ports: vec![],
        endpoints: pods.iter().map(|p| Endpoint::new(*p)).collect(),
    };

    lb.upsert(web.clone(), &[group(&pods)])?;
    let frontend: Frontend = "10.96.0.10:80/TCP".parse()?;
    let view = lb.service(&web.name).ok_or("service missing")?;
    println!("service {} at {frontend}", web.name);
    for b in &view.backends {
        println!("  backend {} = {}:{}", b.id, b.key.address, b.key.port);
    }
    let rev = lb.rev_nat_id(&frontend).ok_or("frontend missing")?;
    let before = lb.entries().maglev[&rev].clone();
    let mut counts = std::collections::BTreeMap::new();
    for id in before.iter() {
        *counts.entry(id.0).or_insert(0) += 1;
    }
    println!(
        "Maglev table M={}: slots per backend id {counts:?}",
        before.len()
    );

    let client = "192.0.2.1:40000".parse()?;
    if let Verdict::Forward { backend, .. } =
        lb.select(&frontend, flow_hash(client, frontend), client.ip())
    {
        println!("flow from {client} goes to {backend}");
    }

    // The third pod goes away.
    let diff = lb.upsert(web, &[group(&pods[..2])])?;
    let after = &lb.entries().maglev[&rev];
    let removed = view.backends[2].id;
    let moved: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    let extra = moved.iter().filter(|&&i| before[i] != removed).count();
    println!(
        "backend {removed} removed: {} slots moved ({} were its own, {extra} others)",
        moved.len(),
        moved.len() - extra
    );
    let changes: usize = diff.maglev.update.iter().map(|(_, c)| c.len()).sum();
    println!(
        "the datapath writes {changes} Maglev slots, removes {} backend entry",
        diff.backends.remove.len()
    );
    assert_eq!(changes, moved.len());
    Ok(())
}
