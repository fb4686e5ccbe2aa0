//! The dependency-direction check of DESIGN.md, over `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Which workspace crates each workspace crate may depend on (any kind of dependency).
/// A crate not listed here may depend on any strata crate except the agent.
const ALLOWED: &[(&str, &[&str])] = &[
    ("strata-ipam", &[]),
    ("strata-policy", &[]),
    ("strata-lb", &[]),
    ("strata-bgp", &[]),
    ("strata-datapath", &["strata-policy", "strata-lb"]),
    ("strata-k8s", &["strata-ipam", "strata-policy", "strata-lb"]),
];

/// Fails when a workspace crate depends on a strata crate DESIGN.md does not allow, or when
/// anything but nothing depends on the agent.
pub fn check(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if !members.contains(dep_name) {
                continue;
            }
            let ok = match allowed.get(name) {
                Some(list) => list.contains(&dep_name),
                None => dep_name != "strata-agent" || name == "xtask",
            };
            if !ok {
                violations.push(format!("{name} depends on {dep_name}"));
            }
        }
    }
    if !violations.is_empty() {
        bail!(
            "dependencies must point the way DESIGN.md says:\n  {}",
            violations.join("\n  ")
        );
    }
    println!(
        "xtask: dependency direction ok ({} workspace crates)",
        members.len()
    );
    Ok(())
}
