//! `strata demo`: the story of the SDK on an embedded example cluster.
//!
//! Part one is IPAM: three nodes carved from the cluster CIDRs, pods allocated node-locally, a
//! StatefulSet pod deleted and recreated on another node with the same address, and a restart
//! of every node's state from disk that restores each allocation.
//!
//! Part two is NetworkPolicy on the example cluster of `examples/cluster/` (embedded in the
//! binary): the matrix the compiler expects beside the one observed with real traffic through
//! the eBPF programs in network namespaces (as root), mismatches highlighted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, ensure};
use strata_ipam::{
    Allocation, AllocatorConfig, ClusterPool, FamilyPlan, FixedIps, Ipam, Owner, Quarantine,
    RedbStore, StatefulKey, start_stateful_pod, stop_stateful_pod,
};

/// Arguments of `strata demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep the demo's state files in this directory instead of a temporary one.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Use the manifests in this directory instead of the embedded example cluster.
    #[arg(long)]
    cluster: Option<PathBuf>,
}

const CLUSTER_V4: &str = "10.244.0.0/16";
const CLUSTER_V6: &str = "fd00:244::/104";
const RESERVATIONS: [&str; 2] = ["10.96.128.0/24", "fd00:96::/120"];
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Runs the demo.
pub fn run(args: Args) -> Result<ExitCode> {
    let temp;
    let dir = match args.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    ipam_story(&dir)?;

    println!("\n== NetworkPolicy: compiled into eBPF maps, checked with real traffic ==\n");
    let cluster_dir = match args.cluster {
        Some(dir) => dir,
        None => {
            let dir = dir.join("cluster");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::lab::write_demo_cluster(&dir)?;
            dir
        }
    };
    let matched = crate::lab::demo_traffic(&cluster_dir)?;
    if !matched {
        println!("\npolicy story: MISMATCH between the compiled and the observed matrix");
        return Ok(ExitCode::FAILURE);
    }
    println!("\npolicy story: OK");
    Ok(ExitCode::SUCCESS)
}

fn show(a: &Allocation) -> String {
    let addrs: Vec<String> = a.addrs.iter().map(ToString::to_string).collect();
    addrs.join(", ")
}

struct Cluster {
    nodes: BTreeMap<&'static str, Ipam<RedbStore>>,
    book: FixedIps<RedbStore>,
}

fn open_cluster(dir: &Path, configs: &BTreeMap<&'static str, AllocatorConfig>) -> Result<Cluster> {
    let mut nodes = BTreeMap::new();
    for (name, config) in configs {
        let store = RedbStore::open(&dir.join(format!("{name}.redb")))?;
        nodes.insert(*name, Ipam::open(config.clone(), store)?);
    }
    let pools: Vec<_> = RESERVATIONS
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let book = FixedIps::open(&pools, RedbStore::open(&dir.join("reservations.redb"))?)?;
    Ok(Cluster { nodes, book })
}

fn ipam_story(dir: &Path) -> Result<()> {
    println!("== IPAM: node-local allocation, no central service on the pod-creation path ==\n");
    let mut pool = ClusterPool::new(
        Some(FamilyPlan {
            cidrs: vec![CLUSTER_V4.parse()?],
            node_mask: 24,
        }),
        Some(FamilyPlan {
            cidrs: vec![CLUSTER_V6.parse()?],
            node_mask: 120,
        }),
    )?;
    println!("cluster CIDRs {CLUSTER_V4} (/24 per node) and {CLUSTER_V6} (/120 per node)");
    let mut configs = BTreeMap::new();
    for name in NODES {
        let cidrs = pool.allocate_node(name)?;
        let shown: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        println!("  {name}: {}", shown.join(", "));
        let gateway = match cidrs[0] {
            ipnet::IpNet::V4(net) => net.hosts().next().map(std::net::IpAddr::V4),
            ipnet::IpNet::V6(_) => None,
        };
        configs.insert(
            name,
            AllocatorConfig {
                pools: cidrs,
                excluded: gateway.into_iter().collect(),
                quarantine: Quarantine::Releases(16),
            },
        );
    }
    let mut cluster = open_cluster(dir, &configs)?;
    let now = SystemTime::now();

    println!("\npods allocated by their own node (the .1 of each IPv4 block is the gateway):");
    let pods = [
        ("node-a", "shop/frontend-7d4f"),
        ("node-a", "shop/cart-5c9b"),
        ("node-b", "shop/checkout-66f2"),
        ("node-b", "payments/api-0a1e"),
        ("node-c", "payments/ledger-4b2d"),
    ];
    for (node, pod) in pods {
        let ipam = cluster.nodes.get_mut(node).expect("node exists");
        let a = ipam.allocate(now, &Owner::new(pod)?)?;
        println!("  {node}  {pod:<22} {}", show(&a));
    }

    println!(
        "\nStatefulSet payments/db: fixed addresses from the reservation pools {}",
        RESERVATIONS.join(", ")
    );
    let key = StatefulKey::new("payments/db/0")?;
    let first = {
        let node = cluster.nodes.get_mut("node-a").expect("node exists");
        start_stateful_pod(&mut cluster.book, "node-a", node, &key)?
    };
    println!(
        "  {} starts on node-a           {}",
        key.pod(),
        show(&first)
    );
    let routes: Vec<String> = cluster.nodes["node-a"]
        .allocator()
        .host_routes()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!("  node-a routes it as host routes {}", routes.join(", "));
    {
        let node = cluster.nodes.get_mut("node-a").expect("node exists");
        stop_stateful_pod(&mut cluster.book, node, now, &key)?;
    }
    println!("  {} deleted (node-a drained)", key.pod());
    let second = {
        let node = cluster.nodes.get_mut("node-c").expect("node exists");
        start_stateful_pod(&mut cluster.book, "node-c", node, &key)?
    };
    println!(
        "  {} recreated on node-c        {}",
        key.pod(),
        show(&second)
    );
    ensure!(
        first.addrs == second.addrs,
        "the StatefulSet pod changed address"
    );
    println!("  same address, no sticky scheduling: node-c now announces the host routes");

    let before: BTreeMap<&str, Vec<Allocation>> = cluster
        .nodes
        .iter()
        .map(|(n, ipam)| (*n, ipam.allocator().dump()))
        .collect();
    let total: usize = before.values().map(Vec::len).sum();
    drop(cluster);
    println!(
        "\nrestart: every node reopens its state from disk ({})",
        dir.display()
    );
    let cluster = open_cluster(dir, &configs)?;
    for (name, ipam) in &cluster.nodes {
        ensure!(
            ipam.allocator().dump() == before[name],
            "{name} did not restore its allocations"
        );
        ipam.allocator()
            .audit()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    let bound = cluster
        .book
        .reservations()
        .get(&key)
        .and_then(|r| r.bound.clone());
    ensure!(
        bound.as_ref().map(|b| b.node.as_str()) == Some("node-c"),
        "the reservation binding was not restored"
    );
    println!(
        "  {total} allocations restored exactly on {} nodes; {} still bound to node-c",
        cluster.nodes.len(),
        key
    );
    println!("\nIPAM story: OK");
    Ok(())
}
