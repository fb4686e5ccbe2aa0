//! `strata lb`: Maglev tables, services from manifests with the entries the datapath would get,
//! and the backend the datapath would choose for a flow.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;
use strata_k8s::manifest::Manifests;
use strata_lb::{
    Algorithm, Config, EntrySet, Frontend, LoadBalancer, Maglev, MaglevBackend, ServiceView,
    TableSize, Verdict, flow_hash,
};

use crate::Format;

/// Arguments of `strata lb`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: LbCommand,
}

#[derive(clap::Subcommand, Debug)]
enum LbCommand {
    /// Build a Maglev table for named, optionally weighted, backends.
    Maglev(MaglevArgs),
    /// Read Services and EndpointSlices; show frontends, backends and the datapath's entries.
    Services(ServicesArgs),
    /// Show the backend the datapath would choose for a new flow.
    Select(SelectArgs),
}

#[derive(clap::Args, Debug)]
struct MaglevArgs {
    /// A backend, NAME or NAME=WEIGHT (weight 1 by default); repeat for more.
    #[arg(long = "backend", required = true)]
    backends: Vec<String>,
    /// The table size M: a prime up to 131071.
    #[arg(long = "table-size", default_value_t = TableSize::DEFAULT.get())]
    table_size: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

/// Which manifests to read and how this node looks.
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// A manifest file with Services and EndpointSlices (multi-document YAML, kind: List);
    /// repeat for more.
    #[arg(short = 'f', long = "file", required = true)]
    files: Vec<PathBuf>,
    /// This node's name (decides which backends are local for the Local traffic policies).
    #[arg(long)]
    node: Option<String>,
    /// This node's zone (for topology-aware hints).
    #[arg(long)]
    zone: Option<String>,
    /// An address of this node: node ports listen on each; repeatable.
    #[arg(long = "node-address")]
    node_addresses: Vec<IpAddr>,
    /// The Maglev table size M: a prime up to 131071.
    #[arg(long = "table-size", default_value_t = TableSize::DEFAULT.get())]
    table_size: u32,
    /// The algorithm of services without the service.cilium.io/lb-algorithm annotation.
    #[arg(long, default_value = "maglev")]
    algorithm: Algorithm,
}

#[derive(clap::Args, Debug)]
struct ServicesArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(clap::Args, Debug)]
struct SelectArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The frontend the client connects to: IP:PORT/PROTO, IPv6 as [IP]:PORT/PROTO.
    #[arg(long)]
    frontend: Frontend,
    /// The client's address and port.
    #[arg(long)]
    client: SocketAddr,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Runs `strata lb`.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        LbCommand::Maglev(a) => maglev(a),
        LbCommand::Services(a) => services(a),
        LbCommand::Select(a) => select(a),
    }
}

fn table_size(size: u32) -> Result<TableSize> {
    TableSize::new(u64::from(size)).context("--table-size")
}

/// The exact JSON of `strata lb maglev`: `{"table_size":M,"table":[…],"counts":{…}}`.
#[derive(Serialize)]
struct MaglevOutput<'a> {
    table_size: u32,
    table: &'a [String],
    counts: BTreeMap<String, usize>,
}

fn maglev(args: MaglevArgs) -> Result<ExitCode> {
    let size = table_size(args.table_size)?;
    let mut backends = Vec::with_capacity(args.backends.len());
    for spec in &args.backends {
        let (name, weight) = match spec.split_once('=') {
            Some((n, w)) => (
                n,
                w.parse::<u32>()
                    .with_context(|| format!("--backend {spec}: weight {w:?} is not a number"))?,
            ),
            None => (spec.as_str(), 1),
        };
        if name.is_empty() {
            bail!("--backend {spec:?}: empty name");
        }
        backends.push(MaglevBackend::new(
            name.as_bytes(),
            name.to_string(),
            weight,
        ));
    }
    let table = Maglev::build(size, &backends).context("building the Maglev table")?;
    let mut counts: BTreeMap<String, usize> =
        backends.iter().map(|b| (b.value.clone(), 0)).collect();
    counts.extend(table.counts());
    match args.format {
        Format::Json => {
            let out = MaglevOutput {
                table_size: size.get(),
                table: table.slots(),
                counts,
            };
            println!("{}", serde_json::to_string(&out)?);
        }
        Format::Table => {
            let m = f64::from(size.get());
            println!("Maglev table, M = {}", size.get());
            println!(
                "{:<24} {:>8} {:>8} {:>8}",
                "BACKEND", "WEIGHT", "SLOTS", "SHARE"
            );
            for b in &backends {
                let n = counts[&b.value];
                println!(
                    "{:<24} {:>8} {:>8} {:>7.2}%",
                    b.value,
                    b.weight,
                    n,
                    100.0 * n as f64 / m
                );
            }
            let head: Vec<&str> = table.slots().iter().take(16).map(String::as_str).collect();
            println!("first slots: {}", head.join(" "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the manifests and applies every service to a balancer.
fn load(cluster: &ClusterArgs) -> Result<(LoadBalancer, Vec<String>)> {
    let manifests = Manifests::read_files(&cluster.files)?;
    let inputs = strata_k8s::service::from_manifests(&manifests)?;
    let mut warnings: Vec<String> = inputs.warnings.iter().map(ToString::to_string).collect();
    warnings.extend(
        manifests
            .unrecognized(&strata_k8s::service::kinds())
            .iter()
            .map(ToString::to_string),
    );
    let config = Config {
        node_name: cluster.node.clone(),
        node_zone: cluster.zone.clone(),
        node_addresses: cluster.node_addresses.clone(),
        table_size: table_size(cluster.table_size)?,
        algorithm: cluster.algorithm,
    };
    let mut lb = LoadBalancer::new(config);
    for input in inputs.services {
        lb.upsert(input.service, &input.endpoints)
            .with_context(|| input.location.to_string())?;
    }
    Ok((lb, warnings))
}

fn services(args: ServicesArgs) -> Result<ExitCode> {
    let (lb, warnings) = load(&args.cluster)?;
    for w in &warnings {
        eprintln!("strata: warning: {w}");
    }
    let views: Vec<ServiceView> = lb.service_names().filter_map(|n| lb.service(n)).collect();
    match args.format {
        Format::Json => {
            let out = json!({
                "services": views,
                "entries": lb.entries(),
                "warnings": warnings,
            });
            println!("{}", serde_json::to_string(&out)?);
        }
        Format::Table => print_services(&views, lb.entries()),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_services(views: &[ServiceView], entries: &EntrySet) {
    for v in views {
        println!("service {}", v.name);
        println!(
            "  {:<28} {:<12} {:<8} {:>7} {:<18} {:<7} {:>8} {:>9}  SLOTS",
            "FRONTEND", "KIND", "PORT", "REVNAT", "STATE", "ALG", "BACKENDS", "AFFINITY"
        );
        for f in &v.frontends {
            let ids: Vec<String> = f.backends.iter().map(ToString::to_string).collect();
            println!(
                "  {:<28} {:<12} {:<8} {:>7} {:<18} {:<7} {:>8} {:>9}  {}",
                f.frontend.to_string(),
                f.kind.to_string(),
                if f.port_name.is_empty() {
                    "-"
                } else {
                    &f.port_name
                },
                f.entry.rev_nat_id.to_string(),
                format!(
                    "{}{}",
                    f.entry.state,
                    if f.entry.terminating_fallback {
                        " (terminating)"
                    } else {
                        ""
                    }
                ),
                f.entry.algorithm.to_string(),
                f.entry.backend_count,
                if f.entry.affinity_timeout_secs > 0 {
                    format!("{}s", f.entry.affinity_timeout_secs)
                } else {
                    "-".to_string()
                },
                ids.join(",")
            );
        }
        println!(
            "  {:<6} {:<32} {:<8} {:<12} {:>6} {:<12} {:<10}",
            "ID", "BACKEND", "PORT", "STATE", "WEIGHT", "NODE", "ZONE"
        );
        for b in &v.backends {
            println!(
                "  {:<6} {:<32} {:<8} {:<12} {:>6} {:<12} {:<10}",
                b.id.to_string(),
                format!(
                    "{}/{}",
                    SocketAddr::new(b.key.address, b.key.port),
                    b.key.protocol
                ),
                if b.port_name.is_empty() {
                    "-"
                } else {
                    &b.port_name
                },
                b.state.to_string(),
                b.weight,
                b.node_name.as_deref().unwrap_or("-"),
                b.zone.as_deref().unwrap_or("-"),
            );
        }
        println!();
    }
    println!(
        "entries: {} service, {} backend, {} reverse-NAT, {} slot, {} Maglev tables",
        entries.services.len(),
        entries.backends.len(),
        entries.rev_nat.len(),
        entries.slots.len(),
        entries.maglev.len()
    );
    for (rev, table) in &entries.maglev {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for id in table.iter() {
            *counts.entry(id.0).or_insert(0) += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(id, n)| format!("{id}:{n}")).collect();
        println!(
            "  maglev[{rev}] M={} slots per backend id: {}",
            table.len(),
            parts.join(" ")
        );
    }
}

fn select(args: SelectArgs) -> Result<ExitCode> {
    let (lb, _warnings) = load(&args.cluster)?;
    let frontend = args.frontend;
    let hash = flow_hash(args.client, frontend);
    let verdict = lb.select(&frontend, hash, args.client.ip());
    let service = lb
        .service_names()
        .find(|n| {
            lb.service(n)
                .is_some_and(|v| v.frontends.iter().any(|f| f.frontend == frontend))
        })
        .map(ToString::to_string);
    match args.format {
        Format::Json => {
            let out = json!({
                "frontend": frontend.to_string(),
                "client": args.client.to_string(),
                "flow_hash": hash,
                "service": service,
                "result": verdict,
            });
            println!("{}", serde_json::to_string(&out)?);
        }
        Format::Table => match verdict {
            Verdict::Forward {
                backend,
                backend_id,
                rev_nat_id,
                ..
            } => println!(
                "{backend} (backend id {backend_id}, service {}, rev-NAT id {rev_nat_id}, flow hash {hash:#010x})",
                service.as_deref().unwrap_or("-")
            ),
            Verdict::Unreachable { .. } => println!(
                "no backend: service {} has none; the datapath answers ICMP destination unreachable",
                service.as_deref().unwrap_or("-")
            ),
            Verdict::Drop { .. } => println!(
                "no backend: service {} has no local backend under the Local traffic policy; the datapath drops",
                service.as_deref().unwrap_or("-")
            ),
            Verdict::NotAService => println!("{frontend} is not a service frontend"),
        },
    }
    Ok(match verdict {
        Verdict::Forward { .. } => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}
