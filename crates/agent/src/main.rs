//! `strata`: the Strata reference agent and its command line.
//!
//! Each subcommand lives in a module of its own; this file only parses and dispatches.

mod bgp;
mod demo;
mod ipam;
mod lab;
mod lb;
mod monitor;
mod policy;

use clap::{Parser, Subcommand};

/// The `strata` command.
#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Strata networking SDK: reference agent and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format shared by the subcommands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Machine-readable JSON.
    Json,
    /// A table for people.
    Table,
}

/// Top-level subcommands. Parsed once per process, so variant sizes do not matter.
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Tell the Strata story on the embedded example cluster.
    Demo(demo::Args),
    /// Node-local IP address management: carve, alloc, release, reserve, list.
    Ipam(ipam::Args),
    /// Service load balancing: Maglev tables, services from manifests, backend selection.
    Lb(lb::Args),
    /// BGP speaker and message decoder.
    Bgp(bgp::Args),
    /// NetworkPolicy: reachability matrix and compiled maps from manifests.
    Policy(policy::Args),
    /// Real traffic between the manifests' pods in network namespaces, through the eBPF programs.
    Lab(lab::Args),
    /// Live drop and allow events of the running eBPF datapath.
    Monitor(monitor::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Ipam(args) => ipam::run(args),
        Command::Lb(args) => lb::run(args),
        Command::Bgp(args) => bgp::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Monitor(args) => monitor::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("strata: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
