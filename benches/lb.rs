//! Load-balancing speed: Maglev table builds, the diff of a 10,000-service cluster after one
//! endpoint change, and `select`, the datapath twin's per-flow lookup.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use strata_lb::{
    Algorithm, Config, Endpoint, EndpointGroup, Frontend, LoadBalancer, Maglev, MaglevBackend,
    Protocol, Service, ServiceName, ServicePort, TableSize, flow_hash,
};

fn backends(n: u32) -> Vec<MaglevBackend<u32>> {
    (0..n)
        .map(|i| {
            MaglevBackend::new(
                format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255),
                i,
                1,
            )
        })
        .collect()
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb/maglev build");
    for (m, n) in [(65_537u64, 1000u32), (16_381, 100)] {
        let size = TableSize::new(m).unwrap();
        let input = backends(n);
        group.bench_function(format!("M={m} N={n}"), |b| {
            b.iter(|| Maglev::build(size, black_box(&input)).unwrap())
        });
    }
    group.finish();
}

const SERVICES: u32 = 10_000;
const PER_SERVICE: u32 = 10;

fn service(i: u32) -> Service {
    let mut s = Service::new(ServiceName::new("bench", format!("svc-{i}")));
    s.cluster_ips = vec![IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i))];
    s.ports = vec![ServicePort::new(Protocol::Tcp, 80)];
    s
}

fn endpoints(i: u32, shift: u32) -> Vec<EndpointGroup> {
    vec![EndpointGroup {
        ports: vec![],
        endpoints: (0..PER_SERVICE)
            .map(|j| Endpoint::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 16 + j + shift))))
            .collect(),
    }]
}

fn cluster(size: TableSize, algorithm: Algorithm, services: u32) -> LoadBalancer {
    let mut lb = LoadBalancer::new(Config {
        table_size: size,
        algorithm,
        ..Config::default()
    });
    for i in 0..services {
        lb.upsert(service(i), &endpoints(i, 0)).unwrap();
    }
    lb
}

fn cluster_diff(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb/one endpoint change: upsert + diff");
    group.sample_size(50);
    // 10,000 services with Maglev at M = 1021 and with random; the Maglev rebuild of the one
    // changed service dominates, so M = 16381 is measured on 1,000 services (the cluster size
    // does not enter the cost; 10,000 tables of 16381 slots would need 1.3 GB here).
    for (m, algorithm, services) in [
        (1021u64, Algorithm::Maglev, SERVICES),
        (16_381, Algorithm::Random, SERVICES),
        (16_381, Algorithm::Maglev, 1000),
    ] {
        let mut lb = cluster(TableSize::new(m).unwrap(), algorithm, services);
        let target = services / 2;
        let mut flip = 0u32;
        group.bench_function(format!("{algorithm} M={m}, {services} services"), |b| {
            b.iter(|| {
                // One endpoint of one service is replaced, then put back.
                flip ^= 1;
                let diff = lb
                    .upsert(service(target), &endpoints(target, flip))
                    .unwrap();
                black_box(diff)
            })
        });
    }
    group.finish();
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb/select");
    // 100 services keep the maps in cache (the per-lookup cost); 10,000 services spread flows
    // over 40 MB of Maglev tables, so most lookups miss the cache, as in a busy datapath.
    for (services, algorithm) in [
        (100u32, Algorithm::Maglev),
        (100, Algorithm::Random),
        (SERVICES, Algorithm::Maglev),
        (SERVICES, Algorithm::Random),
    ] {
        let lb = cluster(TableSize::new(1021).unwrap(), algorithm, services);
        let lookup = lb.lookup();
        let flows: Vec<(Frontend, u32, IpAddr)> = (0..1024u32)
            .map(|i| {
                let f = Frontend::new(
                    IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + (i * 9973) % services)),
                    80,
                    Protocol::Tcp,
                );
                let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)), 40_000);
                (f, flow_hash(c, f), c.ip())
            })
            .collect();
        let mut k = 0usize;
        group.bench_function(format!("{algorithm}, {services} services"), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                let (f, h, c) = &flows[k];
                black_box(lookup.select(f, *h, *c))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, maglev_build, cluster_diff, select);
criterion_main!(benches);
