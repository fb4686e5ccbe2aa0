//! `strata demo`: the story of the SDK on an embedded example cluster.

use std::process::ExitCode;

/// Arguments of `strata demo`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the demo.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    println!("strata demo");
    Ok(ExitCode::SUCCESS)
}
