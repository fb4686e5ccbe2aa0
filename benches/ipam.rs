//! IPAM speed: allocate + release on a /16, carving 5,000 node CIDRs out of a /8, and restoring
//! 65,536 allocations from the durable store.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use strata_ipam::pool::Pool;
use strata_ipam::{
    Allocator, AllocatorConfig, ClusterPool, FamilyPlan, Ipam, Op, Owner, Record, RedbStore, Store,
};

fn alloc_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipam/allocate+release /16");
    group.throughput(Throughput::Elements(1));
    // The bitmap core: next-free search from the cursor, then release.
    let mut pool = Pool::new("10.0.0.0/16".parse().unwrap(), &[]).unwrap();
    // Half full, scattered, so the search has work to do.
    for i in (0..65_536).step_by(2) {
        pool.set(i);
    }
    group.bench_function("bitmap pool", |b| {
        b.iter(|| {
            let index = pool.allocate_next().unwrap();
            pool.clear(black_box(index));
        })
    });
    // The allocator core with owners, planned changes and quarantine bookkeeping.
    let config = AllocatorConfig {
        pools: vec!["10.0.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    let mut allocator = Allocator::new(config).unwrap();
    let owners: Vec<Owner> = (0..1024)
        .map(|i| Owner::new(&format!("ns/pod-{i}")).unwrap())
        .collect();
    let mut i = 0usize;
    group.bench_function("allocator (owner maps, planned changes)", |b| {
        b.iter(|| {
            let owner = &owners[i % owners.len()];
            i += 1;
            let (change, _) = allocator.plan_allocate(owner).unwrap();
            allocator.apply(&change);
            let (change, _) = allocator
                .plan_release(SystemTime::UNIX_EPOCH, owner)
                .unwrap();
            allocator.apply(&change);
        })
    });
    group.finish();
}

fn carve(c: &mut Criterion) {
    c.bench_function("ipam/carve 5,000 /24 node CIDRs out of a /8", |b| {
        b.iter_batched(
            || {
                ClusterPool::new(
                    Some(FamilyPlan {
                        cidrs: vec!["10.0.0.0/8".parse().unwrap()],
                        node_mask: 24,
                    }),
                    None,
                )
                .unwrap()
            },
            |mut pool| {
                for n in 0..5_000 {
                    black_box(pool.allocate_node(&format!("node-{n}")).unwrap());
                }
                pool
            },
            BatchSize::PerIteration,
        )
    });
}

fn restore(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restore.redb");
    let config = AllocatorConfig {
        pools: vec!["10.0.0.0/15".parse().unwrap()],
        ..Default::default()
    };
    {
        let mut store = RedbStore::open(&path).unwrap();
        let pool = Pool::new("10.0.0.0/15".parse().unwrap(), &[]).unwrap();
        let ops: Vec<Op> = (1..=65_536u64)
            .map(|i| {
                Op::Put(Record::Allocation {
                    addr: pool.addr_at(i),
                    owner: Owner::new(&format!("ns/pod-{i}")).unwrap(),
                    fixed: None,
                })
            })
            .collect();
        store.commit(&ops).unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    c.bench_function("ipam/restore 65,536 allocations from redb", |b| {
        b.iter(|| {
            let ipam = Ipam::open(config.clone(), store.clone()).unwrap();
            assert_eq!(ipam.allocator().pools()[0].free(), 131_072 - 2 - 65_536);
            ipam
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = alloc_release, carve, restore
}
criterion_main!(benches);
