//! `cargo xtask bench`: the benches of strata-bench.
//!
//! - `--quick`: the eBPF-versus-iptables/nftables traffic bench on a reduced set (N = 10,
//!   1,000, 10,000; 3 runs of 300 ms per figure), a few minutes.
//! - `--report`: the full set (N = 10 … 100,000, every variant, 5 runs of 1 s per figure).
//!
//! Both write BENCHMARKS.md at the workspace root and the SVG plots and raw JSON under
//! docs/plots/ (the bench itself does it: `cargo bench -p strata-bench --bench traffic --
//! --quick|--report --out ROOT`). Extra arguments go to the bench (`--sizes 10,100`,
//! `--variants none,strata`, `--backend legacy|nft`, `--repeats 3`). Without either flag,
//! every criterion bench of strata-bench runs (`cargo bench -p strata-bench ARGS`).

use std::path::Path;

use anyhow::{Result, bail};

/// Runs the benches as described in the module documentation.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    crate::packages::ensure()?;
    let traffic = args.iter().any(|a| a == "--quick" || a == "--report");
    if !traffic {
        let mut cmd = vec!["bench", "-p", "strata-bench"];
        cmd.extend(args.iter().map(String::as_str));
        return crate::cargo(root, &cmd);
    }
    if !crate::packages::is_root() {
        bail!(
            "the traffic bench needs root (network namespaces, iptables, nftables, eBPF programs); \
             run `cargo xtask bench {}` as root",
            args.join(" ")
        );
    }
    let out = root.display().to_string();
    let mut cmd = vec![
        "bench",
        "-p",
        "strata-bench",
        "--bench",
        "traffic",
        "--",
        "--out",
        out.as_str(),
    ];
    cmd.extend(args.iter().map(String::as_str));
    crate::cargo(root, &cmd)?;
    println!(
        "xtask: wrote {} and {}",
        root.join("BENCHMARKS.md").display(),
        root.join("docs/plots").display()
    );
    Ok(())
}
