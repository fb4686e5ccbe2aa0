//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/ for a bounded time.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Seconds each target runs.
const SECONDS_PER_TARGET: u32 = 30;

/// Installs cargo-fuzz when missing, then runs each target of `fuzz/` for
/// [`SECONDS_PER_TARGET`] seconds on the nightly toolchain; a crash fails.
pub fn run_bounded(root: &Path) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let have_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_fuzz {
        println!("xtask: installing cargo-fuzz");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("cannot run cargo install cargo-fuzz")?;
        if !status.success() {
            bail!("cargo install cargo-fuzz failed with {status}");
        }
    }
    let list = Command::new("cargo")
        .args(["+nightly", "fuzz", "list"])
        .current_dir(&fuzz_dir)
        .output()
        .context("cannot list the fuzz targets (is the nightly toolchain installed?)")?;
    if !list.status.success() {
        bail!(
            "cargo +nightly fuzz list failed: {}",
            String::from_utf8_lossy(&list.stderr)
        );
    }
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets found in {}", fuzz_dir.display());
    }
    for target in &targets {
        println!("\n==> xtask: fuzz {target} for {SECONDS_PER_TARGET} s");
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={SECONDS_PER_TARGET}"))
            .current_dir(&fuzz_dir)
            .status()
            .with_context(|| format!("cannot run fuzz target {target}"))?;
        if !status.success() {
            bail!(
                "fuzz target {target} failed with {status}; the crashing input is in fuzz/artifacts/{target}/"
            );
        }
    }
    Ok(())
}
