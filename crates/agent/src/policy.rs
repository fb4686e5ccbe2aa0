//! `strata policy`: NetworkPolicy reachability matrices and compiled maps from manifests.
//!
//! - `strata policy matrix -f FILE [-f FILE …] --probe PORT/PROTO [--probe …] --format json|table`
//!   prints, for every (source pod, destination pod, probe), the verdict of the compiled maps
//!   (not the oracle). `--explain FROM TO PORT/PROTO` prints the oracle's reasons for one flow.
//! - `strata policy compile -f FILE … --format json` prints identities, ipcache and
//!   per-endpoint entries as the datapath would receive them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;
use strata_k8s::manifest::Manifests;
use strata_policy::{
    Cluster, DirectionPolicy, Flow, ObjectKey, PolicyEngine, Protocol, Verdict, evaluate,
};

use crate::Format;

/// Arguments of `strata policy`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Reachability between every pair of pods, from the compiled maps.
    Matrix(MatrixArgs),
    /// Identities, ipcache and per-endpoint map entries, as JSON.
    Compile(CompileArgs),
}

#[derive(clap::Args, Debug)]
struct MatrixArgs {
    /// Manifest file (multi-document YAML; Namespaces, Pods, NetworkPolicies).
    #[arg(short = 'f', long = "file", required = true)]
    files: Vec<PathBuf>,
    /// A probe such as 80/TCP, 53/UDP or 9000/SCTP.
    #[arg(long = "probe", value_parser = parse_probe, required_unless_present = "explain")]
    probes: Vec<(u16, Protocol)>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Explain one flow with the oracle's reasons: FROM TO PORT/PROTO (pods as ns/name).
    #[arg(long, num_args = 3, value_names = ["FROM", "TO", "PORT/PROTO"])]
    explain: Option<Vec<String>>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CompileFormat {
    /// JSON.
    Json,
}

#[derive(clap::Args, Debug)]
struct CompileArgs {
    /// Manifest file (multi-document YAML; Namespaces, Pods, NetworkPolicies).
    #[arg(short = 'f', long = "file", required = true)]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: CompileFormat,
}

/// Parses a probe such as `80/TCP` (shared with `strata lab`).
pub(crate) fn parse_probe(s: &str) -> Result<(u16, Protocol), String> {
    let (port, proto) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not PORT/PROTO (for example 80/TCP)"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port in 1..=65535"))?;
    let proto: Protocol = proto.to_ascii_uppercase().parse()?;
    Ok((port, proto))
}

/// Runs `strata policy`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Matrix(a) => matrix(a),
        Command::Compile(a) => compile(a),
    }
}

/// Reads manifests into a policy cluster, printing the reader's warnings (shared with
/// `strata lab`).
pub(crate) fn load(files: &[PathBuf]) -> anyhow::Result<Cluster> {
    let manifests = Manifests::read_files(files)?;
    let input = strata_k8s::policy::cluster_from_manifests(&manifests)?;
    for w in &input.warnings {
        eprintln!("strata: warning: {w}");
    }
    Ok(input.cluster)
}

/// One cell of a reachability matrix: the JSON contract of `strata policy matrix`, which
/// `strata lab probe` prints too.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) port: u16,
    pub(crate) protocol: Protocol,
    pub(crate) allowed: bool,
}

fn pod_key(cluster: &Cluster, s: &str) -> anyhow::Result<ObjectKey> {
    let key: ObjectKey = s.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    if cluster.pod(&key).is_none() {
        bail!("pod {key} is not in the manifests");
    }
    Ok(key)
}

fn matrix(args: MatrixArgs) -> anyhow::Result<ExitCode> {
    let cluster = load(&args.files)?;
    let engine = PolicyEngine::compile(&cluster);
    if let Some(explain) = &args.explain {
        let from = pod_key(&cluster, &explain[0])?;
        let to = pod_key(&cluster, &explain[1])?;
        let (port, protocol) = parse_probe(&explain[2]).map_err(|e| anyhow::anyhow!(e))?;
        let flow = Flow::between(&cluster, &from, &to, protocol, port)?;
        let why = evaluate(&cluster, &flow)?;
        let compiled = engine.verdict(&flow)? == Verdict::Allow;
        match args.format {
            Format::Json => {
                let out = serde_json::json!({
                    "from": from.to_string(),
                    "to": to.to_string(),
                    "port": port,
                    "protocol": protocol,
                    "allowed": why.allowed,
                    "compiled_allowed": compiled,
                    "egress": why.egress.to_string(),
                    "ingress": why.ingress.to_string(),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Format::Table => {
                println!("{from} -> {to} {port}/{protocol}");
                println!("{why}");
                println!(
                    "compiled maps: {}",
                    if compiled { "allowed" } else { "denied" }
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let pods: Vec<ObjectKey> = cluster.pods().map(|p| p.key()).collect();
    let mut cells = Vec::with_capacity(pods.len() * pods.len() * args.probes.len());
    for &(port, protocol) in &args.probes {
        for from in &pods {
            for to in &pods {
                let flow = Flow::between(&cluster, from, to, protocol, port)?;
                cells.push(Cell {
                    from: from.to_string(),
                    to: to.to_string(),
                    port,
                    protocol,
                    allowed: engine.verdict(&flow)? == Verdict::Allow,
                });
            }
        }
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&cells)?),
        Format::Table => print!("{}", table(&pods, &args.probes, &cells)),
    }
    Ok(ExitCode::SUCCESS)
}

fn table(pods: &[ObjectKey], probes: &[(u16, Protocol)], cells: &[Cell]) -> String {
    let names: Vec<String> = pods.iter().map(|p| p.to_string()).collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(4);
    let mut out = String::new();
    for (i, (port, proto)) in probes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "probe {port}/{proto} (rows: from, columns: to; . allowed, X denied)"
        );
        let _ = write!(out, "{:width$}", "");
        for n in &names {
            let _ = write!(out, " {n:width$}");
        }
        out.push('\n');
        let block = &cells[i * pods.len() * pods.len()..(i + 1) * pods.len() * pods.len()];
        for (r, from) in names.iter().enumerate() {
            let _ = write!(out, "{from:width$}");
            for c in 0..pods.len() {
                let mark = if block[r * pods.len() + c].allowed {
                    "."
                } else {
                    "X"
                };
                let _ = write!(out, " {mark:width$}");
            }
            out.push('\n');
        }
    }
    out
}

fn direction_json(d: &DirectionPolicy) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = d
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "identity": e.key.identity,
                "protocol": e.key.protocol,
                "port": e.key.port,
                "port_prefix_len": e.key.port_prefix_len,
                "verdict": e.verdict,
            })
        })
        .collect();
    serde_json::json!({ "enforced": d.enforced, "entries": entries })
}

fn compile(args: CompileArgs) -> anyhow::Result<ExitCode> {
    let cluster = load(&args.files)?;
    let engine = PolicyEngine::compile(&cluster);
    let snapshot = engine.snapshot();
    let CompileFormat::Json = args.format;
    let identities: Vec<serde_json::Value> = snapshot
        .identities
        .iter()
        .map(|(id, labels)| serde_json::json!({ "identity": id, "labels": labels.to_strings() }))
        .collect();
    let ipcache: Vec<serde_json::Value> = snapshot
        .ipcache
        .iter()
        .map(|e| serde_json::json!({ "prefix": e.prefix.to_string(), "identity": e.identity }))
        .collect();
    let endpoints: Vec<serde_json::Value> = snapshot
        .endpoints
        .iter()
        .map(|(name, ep)| {
            serde_json::json!({
                "endpoint": name,
                "identity": ep.identity,
                "addresses": ep.addresses,
                "ingress": direction_json(&ep.policy.ingress),
                "egress": direction_json(&ep.policy.egress),
            })
        })
        .collect();
    let out = serde_json::json!({
        "identities": identities,
        "ipcache": ipcache,
        "endpoints": endpoints,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).context("encoding the compiled state")?
    );
    Ok(ExitCode::SUCCESS)
}
