//! `strata ipam`: the node-local allocator from the command line, with its state in a redb
//! file so that a sequence of commands shows allocations surviving between processes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use serde_json::{Value, json};
use strata_ipam::{
    Allocation, AllocatorConfig, ClusterPool, FamilyPlan, FixedIps, Ipam, Owner, Quarantine,
    RedbStore, Reservation, StatefulKey,
};

use crate::Format;

/// Arguments of `strata ipam`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: IpamCommand,
}

#[derive(clap::Subcommand, Debug)]
enum IpamCommand {
    /// Carve node pod CIDRs out of cluster CIDRs (as Cilium's operator does).
    Carve(CarveArgs),
    /// Allocate addresses for a pod (next free per family, a given --ip, or a reservation
    /// with --fixed).
    Alloc(AllocArgs),
    /// Release what a pod holds.
    Release(ReleaseArgs),
    /// Reserve a fixed address for a StatefulSet pod (namespace/statefulset/ordinal).
    Reserve(ReserveArgs),
    /// Release reservations of a StatefulSet at and above an ordinal (scale-down or deletion).
    Unreserve(UnreserveArgs),
    /// List allocations, quarantine, reservations and pool usage.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
struct CarveArgs {
    /// A cluster CIDR (IPv4 or IPv6; repeat for more, used in order).
    #[arg(long = "cluster-cidr", required = true)]
    cluster_cidrs: Vec<IpNet>,
    /// Prefix length of each node's IPv4 block (or IPv6 block in an IPv6-only cluster).
    #[arg(long = "node-mask")]
    node_mask: Option<u8>,
    /// Prefix length of each node's IPv6 block.
    #[arg(long = "node-mask-v6")]
    node_mask_v6: Option<u8>,
    /// Node names, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "node_count",
        required_unless_present = "node_count"
    )]
    nodes: Vec<String>,
    /// Number of nodes, named node-0, node-1, …
    #[arg(long = "node-count")]
    node_count: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

/// Where the state lives and how the node's pools look.
#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// The state file (redb); created when missing.
    #[arg(long)]
    state: PathBuf,
    /// A pod CIDR of this node (repeat for more, IPv4 and IPv6).
    #[arg(long = "pool", required = true)]
    pools: Vec<IpNet>,
    /// An address never handed out (gateway, router); repeatable.
    #[arg(long = "exclude")]
    excluded: Vec<IpAddr>,
    /// Hold the last N released addresses back.
    #[arg(long = "quarantine-releases", conflicts_with = "quarantine_seconds")]
    quarantine_releases: Option<usize>,
    /// Hold released addresses back for this many seconds.
    #[arg(long = "quarantine-seconds")]
    quarantine_seconds: Option<u64>,
    /// The cluster-wide reservation pool(s) for StatefulSet fixed addresses.
    #[arg(long = "reservation-pool")]
    reservation_pools: Vec<IpNet>,
    /// This node's name (recorded in reservation bindings).
    #[arg(long, default_value = "local")]
    node: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(clap::Args, Debug)]
struct AllocArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The pod, namespace/pod.
    #[arg(long)]
    owner: String,
    /// Allocate exactly this address.
    #[arg(long, conflicts_with = "fixed")]
    ip: Option<IpAddr>,
    /// Take the reservation namespace/statefulset/ordinal (reserved on first use).
    #[arg(long)]
    fixed: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ReleaseArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The pod, namespace/pod.
    #[arg(long)]
    owner: String,
}

#[derive(clap::Args, Debug)]
struct ReserveArgs {
    /// The state file (redb); created when missing.
    #[arg(long)]
    state: PathBuf,
    /// The cluster-wide reservation pool(s); `--reservation-pool` is an alias.
    #[arg(long = "pool", alias = "reservation-pool", required = true)]
    pools: Vec<IpNet>,
    /// The key, namespace/statefulset/ordinal.
    #[arg(long)]
    owner: String,
    /// Reserve exactly this address.
    #[arg(long)]
    ip: Option<IpAddr>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(clap::Args, Debug)]
struct UnreserveArgs {
    /// The state file (redb).
    #[arg(long)]
    state: PathBuf,
    /// The cluster-wide reservation pool(s).
    #[arg(long = "pool", alias = "reservation-pool", required = true)]
    pools: Vec<IpNet>,
    /// namespace/statefulset/ordinal: releases this ordinal and every higher one.
    #[arg(long)]
    owner: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Runs `strata ipam`.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        IpamCommand::Carve(a) => carve(a),
        IpamCommand::Alloc(a) => alloc(a),
        IpamCommand::Release(a) => release(a),
        IpamCommand::Reserve(a) => reserve(a),
        IpamCommand::Unreserve(a) => unreserve(a),
        IpamCommand::List(a) => list(a),
    }
}

fn carve(a: CarveArgs) -> Result<ExitCode> {
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = a
        .cluster_cidrs
        .iter()
        .partition(|c| matches!(c, IpNet::V4(_)));
    let mask_v6 = a
        .node_mask_v6
        .or(if v4.is_empty() { a.node_mask } else { None });
    let plan = |cidrs: Vec<IpNet>, mask: Option<u8>, flag: &str| -> Result<Option<FamilyPlan>> {
        match (cidrs.is_empty(), mask) {
            (true, _) => Ok(None),
            (false, Some(node_mask)) => Ok(Some(FamilyPlan { cidrs, node_mask })),
            (false, None) => bail!("cluster CIDRs {cidrs:?} need {flag}"),
        }
    };
    let mut cluster = ClusterPool::new(
        plan(v4, a.node_mask, "--node-mask")?,
        plan(v6, mask_v6, "--node-mask-v6")?,
    )?;
    let names: Vec<String> = match a.node_count {
        Some(k) => (0..k).map(|i| format!("node-{i}")).collect(),
        None => a.nodes,
    };
    let mut carved = Vec::with_capacity(names.len());
    for name in names {
        let cidrs = cluster
            .allocate_node(&name)
            .with_context(|| format!("carving node {name}"))?;
        carved.push((name, cidrs));
    }
    match a.format {
        Format::Json => {
            // Nodes in the order given, which a JSON object built from a map would not keep.
            let entries: Vec<String> = carved
                .iter()
                .map(|(name, cidrs)| {
                    let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                    format!("{}:{}", json!(name), json!(cidrs))
                })
                .collect();
            println!("{{\"nodes\":{{{}}}}}", entries.join(","));
        }
        Format::Table => {
            let width = carved
                .iter()
                .map(|(n, _)| n.len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!("{:width$}  CIDRS", "NODE");
            for (name, cidrs) in &carved {
                let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                println!("{name:width$}  {}", cidrs.join(" "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Opened {
    node: Ipam<RedbStore>,
    book: Option<FixedIps<RedbStore>>,
}

fn open(n: &NodeArgs) -> Result<Opened> {
    let store = RedbStore::open(&n.state)?;
    let quarantine = match (n.quarantine_releases, n.quarantine_seconds) {
        (Some(count), _) => Quarantine::Releases(count),
        (None, Some(secs)) => Quarantine::Duration(Duration::from_secs(secs)),
        (None, None) => Quarantine::Off,
    };
    let config = AllocatorConfig {
        pools: n.pools.clone(),
        excluded: n.excluded.clone(),
        quarantine,
    };
    let node = Ipam::open(config, store.clone())
        .with_context(|| format!("opening {} with pools {:?}", n.state.display(), n.pools))?;
    let book = if n.reservation_pools.is_empty() {
        None
    } else {
        Some(open_book(&n.state, &n.reservation_pools, store)?)
    };
    Ok(Opened { node, book })
}

fn open_book(
    state: &std::path::Path,
    pools: &[IpNet],
    store: RedbStore,
) -> Result<FixedIps<RedbStore>> {
    FixedIps::open(pools, store).with_context(|| {
        format!(
            "opening reservations in {} with pools {pools:?}",
            state.display()
        )
    })
}

fn allocation_json(a: &Allocation) -> Value {
    json!({
        "owner": a.owner.as_str(),
        "addrs": a.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "fixed": a.fixed.as_ref().map(ToString::to_string),
    })
}

fn reservation_json(r: &Reservation) -> Value {
    json!({
        "key": r.key.to_string(),
        "addrs": r.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "bound": r.bound.as_ref().map(|b| json!({"node": b.node, "pod": b.pod.as_str()})),
    })
}

fn print_allocation(format: Format, verb: &str, a: &Allocation) {
    match format {
        Format::Json => println!("{}", allocation_json(a)),
        Format::Table => {
            let addrs: Vec<String> = a.addrs.iter().map(ToString::to_string).collect();
            let fixed = a
                .fixed
                .as_ref()
                .map(|k| format!(" (fixed {k})"))
                .unwrap_or_default();
            println!("{verb} {} {}{fixed}", a.owner, addrs.join(" "));
        }
    }
}

fn alloc(a: AllocArgs) -> Result<ExitCode> {
    let owner = Owner::new(&a.owner)?;
    let mut opened = open(&a.node)?;
    let now = SystemTime::now();
    let allocation = match (a.ip, &a.fixed) {
        (Some(ip), _) => opened.node.allocate_addr(now, &owner, ip)?,
        (None, Some(key)) => {
            let key = StatefulKey::new(key)?;
            let Some(book) = opened.book.as_mut() else {
                bail!("--fixed {key} needs --reservation-pool");
            };
            if key.pod() != owner {
                bail!(
                    "reservation {key} belongs to pod {}, not {owner}",
                    key.pod()
                );
            }
            strata_ipam::start_stateful_pod(book, &a.node.node, &mut opened.node, &key)?
        }
        (None, None) => opened.node.allocate(now, &owner)?,
    };
    print_allocation(a.node.format, "allocated", &allocation);
    Ok(ExitCode::SUCCESS)
}

fn release(a: ReleaseArgs) -> Result<ExitCode> {
    let owner = Owner::new(&a.owner)?;
    let mut opened = open(&a.node)?;
    let now = SystemTime::now();
    let fixed = opened.node.allocator().get(&owner).and_then(|x| x.fixed);
    let released = match (fixed, opened.book.as_mut()) {
        (Some(key), Some(book)) => {
            let held = opened.node.allocator().get(&owner);
            strata_ipam::stop_stateful_pod(book, &mut opened.node, now, &key)?;
            held.expect("checked above")
        }
        (Some(key), None) => bail!("{owner} holds reservation {key}: pass --reservation-pool"),
        (None, _) => opened.node.release(now, &owner)?,
    };
    print_allocation(a.node.format, "released", &released);
    Ok(ExitCode::SUCCESS)
}

fn reserve(a: ReserveArgs) -> Result<ExitCode> {
    let key = StatefulKey::new(&a.owner)?;
    let store = RedbStore::open(&a.state)?;
    let mut book = open_book(&a.state, &a.pools, store)?;
    let r = book.reserve(&key, a.ip)?;
    match a.format {
        Format::Json => println!("{}", reservation_json(&r)),
        Format::Table => {
            let addrs: Vec<String> = r.addrs.iter().map(ToString::to_string).collect();
            println!("reserved {} {}", r.key, addrs.join(" "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn unreserve(a: UnreserveArgs) -> Result<ExitCode> {
    let key = StatefulKey::new(&a.owner)?;
    let store = RedbStore::open(&a.state)?;
    let mut book = open_book(&a.state, &a.pools, store)?;
    let released = book.scale_down(&key.namespace, &key.statefulset, key.ordinal)?;
    match a.format {
        Format::Json => println!(
            "{}",
            json!({"released": released.iter().map(reservation_json).collect::<Vec<_>>()})
        ),
        Format::Table => {
            for r in &released {
                println!("unreserved {}", r.key);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(a: ListArgs) -> Result<ExitCode> {
    let opened = open(&a.node)?;
    let core = opened.node.allocator();
    let reservations: Vec<Reservation> = opened
        .book
        .as_ref()
        .map(|b| b.reservations().iter().cloned().collect())
        .unwrap_or_default();
    match a.node.format {
        Format::Json => {
            let pools: Vec<Value> = core
                .pools()
                .iter()
                .map(|p| json!({"cidr": p.cidr().to_string(), "capacity": p.capacity(), "free": p.free()}))
                .collect();
            let quarantine: Vec<Value> = core
                .quarantined()
                .iter()
                .map(|(addr, at)| json!({"addr": addr.to_string(), "released_at_ms": at}))
                .collect();
            println!(
                "{}",
                json!({
                    "pools": pools,
                    "allocations": core.dump().iter().map(allocation_json).collect::<Vec<_>>(),
                    "quarantine": quarantine,
                    "reservations": reservations.iter().map(reservation_json).collect::<Vec<_>>(),
                })
            );
        }
        Format::Table => {
            for p in core.pools() {
                println!("pool {}  {} free of {}", p.cidr(), p.free(), p.capacity());
            }
            for alloc in core.dump() {
                print_allocation(Format::Table, "allocated", &alloc);
            }
            for (addr, at) in core.quarantined() {
                println!("quarantined {addr} since {at} ms");
            }
            for r in &reservations {
                let addrs: Vec<String> = r.addrs.iter().map(ToString::to_string).collect();
                let bound = r
                    .bound
                    .as_ref()
                    .map(|b| format!(" bound to {} on {}", b.pod, b.node))
                    .unwrap_or_default();
                println!("reserved {} {}{bound}", r.key, addrs.join(" "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
