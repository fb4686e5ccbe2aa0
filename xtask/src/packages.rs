//! The system packages the workspace needs: one list, in one place.
//!
//! Later work extends [`REQUIRED`]; `cargo xtask test|demo|bench` install what is missing.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the build, the tests, the demo and the benches need, and why.
pub const REQUIRED: &[(&str, &str)] = &[
    ("clang", "compiles the eBPF programs in crates/datapath/bpf"),
    ("llvm", "llvm-objdump and llvm-strip for the eBPF objects"),
    (
        "libbpf-dev",
        "bpf_helpers.h and friends for the eBPF programs",
    ),
    (
        "linux-libc-dev",
        "the kernel's uapi headers (linux/bpf.h, asm/types.h) for the eBPF programs",
    ),
    ("iproute2", "ip and tc for the network-namespace lab"),
    ("iptables", "the iptables rival in the benches"),
    ("nftables", "the nftables rival in the benches"),
    (
        "ipset",
        "the Calico-style iptables rendering in the benches",
    ),
    ("bird2", "BIRD 2, a real BGP peer in the interop tests"),
    ("gobgpd", "GoBGP, a real BGP peer in the interop tests"),
];

/// Whether this process runs as root (effective uid 0), read from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

/// Checks [`REQUIRED`] and installs the missing packages with apt-get when root; otherwise
/// prints the exact command to run and fails.
pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|(package, _)| !installed(package))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!(
            "missing system packages: {list}\nrun as root:\n  apt-get update && apt-get install -y {list}"
        );
    }
    println!("xtask: installing missing system packages: {list}");
    let status = Command::new("apt-get")
        .arg("update")
        .status()
        .context("cannot run apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed with {status}");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get install")?;
    if !status.success() {
        bail!("apt-get install -y {list} failed with {status}");
    }
    let still: Vec<&str> = missing.into_iter().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "packages still missing after apt-get install: {}",
            still.join(" ")
        );
    }
    Ok(())
}
