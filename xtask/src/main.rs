//! Project automation for Strata: `cargo xtask test`, `cargo xtask demo`, `cargo xtask bench`.
//!
//! Every command first makes sure the system packages the workspace needs are installed (see
//! [`packages::REQUIRED`]), installing the missing ones with apt-get when run as root.

mod bench;
mod fuzz;
mod layering;
mod packages;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test            system packages, dependency direction check, fmt, clippy, tests (privileged
                  ones when root), benches in test mode, bounded fuzzing of the decoders
  fuzz            only the bounded fuzzing
  demo            system packages, then `strata demo` on the embedded example cluster
  bench [ARGS]    system packages, then `cargo bench` on strata-bench (ARGS go to cargo bench);
                  --quick | --report: eBPF versus iptables/nftables, writes BENCHMARKS.md
  packages        only check and install the system packages
  layering        only check that dependencies point the way DESIGN.md says";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root();
    match command.as_str() {
        "test" => test(&root),
        "demo" => {
            packages::ensure()?;
            cargo(&root, &["build", "--release", "-p", "strata-agent"])?;
            let strata = root.join("target/release/strata");
            run_cmd(
                Command::new(strata)
                    .arg("demo")
                    .args(&args[1..])
                    .current_dir(&root),
            )
        }
        "bench" => bench::run(&root, &args[1..]),
        "packages" => packages::ensure(),
        "layering" => layering::check(&root),
        "fuzz" => fuzz::run_bounded(&root),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn test(root: &Path) -> Result<()> {
    packages::ensure()?;
    step("dependency direction (cargo metadata)");
    layering::check(root)?;
    step("cargo fmt --check");
    cargo(root, &["fmt", "--all", "--check"])?;
    step("cargo clippy --all-targets -- -D warnings");
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    step("cargo test --workspace");
    if !packages::is_root() {
        println!("xtask: not root: privileged tests will skip (they run as root, as in CI)");
    }
    cargo(root, &["test", "--workspace"])?;
    step("benches once each in test mode (cargo test --benches)");
    cargo(root, &["test", "-p", "strata-bench", "--benches"])?;
    step("bounded fuzzing of the decoders (cargo +nightly fuzz)");
    fuzz::run_bounded(root)?;
    step("all checks passed");
    Ok(())
}

fn step(name: &str) {
    println!("\n==> xtask: {name}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_cmd(Command::new(cargo).args(args).current_dir(root))
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}
