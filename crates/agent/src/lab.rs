//! `strata lab probe`: real traffic between the manifests' pods, each in a network namespace
//! of its own, through the eBPF programs loaded with the compiled policy; and the real-traffic
//! half of `strata demo` ([`demo_traffic`]).
//!
//! Output is exactly the JSON of `strata policy matrix`: an array of
//! `{"from":"ns/pod","to":"ns/pod","port":80,"protocol":"TCP","allowed":true}`, probes outer,
//! then sources, then destinations, self pairs included.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use strata_datapath::{
    netns::{Lab, Probe, Proto, cleanup_registered},
    translate::{Placement, state_from_compiled},
};
use strata_policy::{Cluster, Flow, ObjectKey, PolicyEngine, Protocol, Verdict};

use crate::Format;
use crate::policy::{Cell, load, parse_probe};

/// Arguments of `strata lab`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Build the pods in network namespaces, load the programs, send real probes.
    Probe(ProbeArgs),
    /// The demo's real-traffic half: compiled matrix beside the observed one for a cluster
    /// directory (every *.yaml in it); exit status 1 on any mismatch.
    Compare(CompareArgs),
}

#[derive(clap::Args, Debug)]
struct CompareArgs {
    /// Directory of manifests (default: the embedded demo cluster of examples/cluster).
    dir: Option<PathBuf>,
}

/// The demo cluster's manifests (examples/cluster), embedded in the binary.
pub const DEMO_CLUSTER: [(&str, &str); 3] = [
    (
        "namespaces.yaml",
        include_str!("../../../examples/cluster/namespaces.yaml"),
    ),
    (
        "pods.yaml",
        include_str!("../../../examples/cluster/pods.yaml"),
    ),
    (
        "policies.yaml",
        include_str!("../../../examples/cluster/policies.yaml"),
    ),
];

/// Writes the embedded demo cluster into `dir` (for [`demo_traffic`]).
pub fn write_demo_cluster(dir: &Path) -> anyhow::Result<()> {
    for (name, text) in DEMO_CLUSTER {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
struct ProbeArgs {
    /// Manifest file (multi-document YAML; Namespaces, Pods, NetworkPolicies).
    #[arg(short = 'f', long = "file", required = true)]
    files: Vec<PathBuf>,
    /// A probe such as 80/TCP, 53/UDP or 9000/SCTP.
    #[arg(long = "probe", value_parser = parse_probe, required = true)]
    probes: Vec<(u16, Protocol)>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Probe timeout in milliseconds (denied probes take this long).
    #[arg(long, default_value_t = 600)]
    timeout_ms: u64,
    /// Also emit one allow event per this many allowed packets (0: drops only), for
    /// `strata monitor`.
    #[arg(long, default_value_t = 0)]
    sample: u32,
    /// Keep the lab and its programs up this many seconds after probing (watch it with
    /// `strata monitor`; enter a pod with `ip netns exec`).
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
}

/// How to run the probes.
#[derive(Clone, Copy, Debug)]
struct Observe {
    timeout: Duration,
    sample: u32,
    hold: Duration,
}

/// Runs `strata lab`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Probe(a) => probe(a),
        Command::Compare(a) => {
            let matched = match a.dir {
                Some(dir) => demo_traffic(&dir)?,
                None => {
                    let tmp = tempfile::tempdir().context("temporary directory")?;
                    write_demo_cluster(tmp.path())?;
                    demo_traffic(tmp.path())?
                }
            };
            Ok(if matched {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Sctp => Proto::Sctp,
    }
}

/// The compiled (expected) matrix.
fn expected(cluster: &Cluster, probes: &[(u16, Protocol)]) -> anyhow::Result<Vec<Cell>> {
    let engine = PolicyEngine::compile(cluster);
    let pods: Vec<ObjectKey> = cluster.pods().map(|p| p.key()).collect();
    let mut cells = Vec::new();
    for &(port, protocol) in probes {
        for from in &pods {
            for to in &pods {
                let flow = Flow::between(cluster, from, to, protocol, port)?;
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
    Ok(cells)
}

/// Removes the lab's namespaces and pins on Ctrl-C, then exits with 130.
fn cleanup_on_interrupt() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("strata: interrupted, removing the lab");
            cleanup_registered();
            std::process::exit(130);
        }
    });
}

/// Builds the lab, loads the programs with the compiled maps, probes. Returns the observed
/// matrix in the order of [`expected`] and the time the probes took.
fn observe(
    cluster: &Cluster,
    probes: &[(u16, Protocol)],
    how: Observe,
) -> anyhow::Result<(Vec<Cell>, Duration)> {
    let engine = PolicyEngine::compile(cluster);
    let snapshot = engine.snapshot();
    let keys: Vec<ObjectKey> = cluster.pods().map(|p| p.key()).collect();
    let mut pods = Vec::new();
    for p in cluster.pods() {
        let Some(IpAddr::V4(ip)) = p.ips.iter().copied().find(IpAddr::is_ipv4) else {
            bail!(
                "pod {} has no IPv4 address (status.podIP); the lab needs one",
                p.key()
            );
        };
        pods.push((p.key().to_string(), ip));
    }
    cleanup_on_interrupt();
    let lab = Lab::create(&pods).context("building the network-namespace lab")?;
    let placement: Placement = pods
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), (lab.pods[i].ifindex, i as u32 + 1)))
        .collect();
    let state = state_from_compiled(&snapshot, &placement)
        .context("translating the compiled policy into the maps")?;
    let mut dp = lab
        .load_datapath(how.sample)
        .context("loading the eBPF programs")?;
    dp.sync(&state).context("writing the compiled maps")?;
    lab.attach(&mut dp)
        .context("attaching to the pods' veths")?;
    let lab_probes: Vec<Probe> = probes
        .iter()
        .map(|&(port, p)| Probe {
            port,
            proto: proto(p),
        })
        .collect();
    let started = Instant::now();
    let seen = lab.probe(&lab_probes, how.timeout).context("probing")?;
    let took = started.elapsed();
    if !how.hold.is_zero() {
        eprintln!(
            "strata: holding the lab for {} s (maps and links under {}; namespaces {}-…)",
            how.hold.as_secs(),
            lab.pin_dir().display(),
            lab.node.name().trim_end_matches("-node")
        );
        std::thread::sleep(how.hold);
    }
    let mut cells = Vec::new();
    for (k, &(port, protocol)) in probes.iter().enumerate() {
        for (i, from) in keys.iter().enumerate() {
            for (j, to) in keys.iter().enumerate() {
                cells.push(Cell {
                    from: from.to_string(),
                    to: to.to_string(),
                    port,
                    protocol,
                    allowed: seen[i][j][k],
                });
            }
        }
    }
    drop(dp);
    drop(lab);
    Ok((cells, took))
}

fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    if !strata_datapath::loader::is_root() {
        bail!("strata lab probe needs root (network namespaces and eBPF programs)");
    }
    let cluster = load(&args.files)?;
    let (cells, took) = observe(
        &cluster,
        &args.probes,
        Observe {
            timeout: Duration::from_millis(args.timeout_ms),
            sample: args.sample,
            hold: Duration::from_secs(args.hold_secs),
        },
    )?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&cells)?),
        Format::Table => print!("{}", table(&cells, &args.probes)),
    }
    eprintln!(
        "strata: {} probes over real traffic in {:.0} ms",
        cells.len(),
        took.as_secs_f64() * 1000.0
    );
    Ok(ExitCode::SUCCESS)
}

/// A grid per probe, as `strata policy matrix --format table` prints it: `.` allowed, `X`
/// denied.
fn table(cells: &[Cell], probes: &[(u16, Protocol)]) -> String {
    let mut names: Vec<String> = Vec::new();
    for c in cells {
        if !names.contains(&c.from) {
            names.push(c.from.clone());
        }
    }
    let n = names.len();
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
        for name in &names {
            let _ = write!(out, " {name:width$}");
        }
        out.push('\n');
        for (r, name) in names.iter().enumerate() {
            let _ = write!(out, "{name:width$}");
            for c in 0..n {
                let mark = if cells[i * n * n + r * n + c].allowed {
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

/// The compiled and the observed grids side by side, one block per probe; an observed cell
/// that differs from the compiled one shows `!` (in red on a terminal).
fn side_by_side(want: &[Cell], got: &[Cell], probes: &[(u16, Protocol)]) -> String {
    let mut names: Vec<String> = Vec::new();
    for c in want {
        if !names.contains(&c.from) {
            names.push(c.from.clone());
        }
    }
    let n = names.len();
    let labels: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name} ({})", i + 1))
        .collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0).max(14);
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let grid_width = 2 * n.max(4);
    let heading: String = (1..=n).map(|i| format!("{:<2}", i % 100)).collect();
    let mut out = String::new();
    for (k, (port, proto)) in probes.iter().enumerate() {
        let title = format!("{port}/{proto}");
        let _ = writeln!(
            out,
            "{title:width$}   {:grid_width$}   observed",
            "compiled"
        );
        let _ = writeln!(out, "{:width$}   {heading:grid_width$}   {heading}", "");
        for (r, label) in labels.iter().enumerate() {
            let mut left = String::new();
            let mut right = String::new();
            for c in 0..n {
                let idx = k * n * n + r * n + c;
                let w = want[idx].allowed;
                let g = got[idx].allowed;
                left.push_str(if w { ". " } else { "X " });
                if w == g {
                    right.push_str(if g { ". " } else { "X " });
                } else if color {
                    right.push_str("\x1b[1;31m!\x1b[0m ");
                } else {
                    right.push_str("! ");
                }
            }
            let _ = writeln!(out, "{label:width$}   {left:grid_width$}   {right}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "(rows: from, columns: to; . allowed, X denied, ! observed differs from compiled)"
    );
    out
}

/// The probes of the demo cluster.
pub const DEMO_PROBES: [(u16, Protocol); 6] = [
    (80, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (5432, Protocol::Tcp),
    (9090, Protocol::Tcp),
    (53, Protocol::Udp),
    (9000, Protocol::Sctp),
];

/// The real-traffic half of `strata demo`: compiles the manifests of `cluster_dir` (every
/// `*.yaml`), prints the compiler's matrix beside what real traffic through the eBPF programs
/// observed (mismatches highlighted), and returns whether all matched. Without root it prints
/// the compiled matrix, says that the real-traffic half needs root and returns `Ok(true)`.
pub fn demo_traffic(cluster_dir: &Path) -> anyhow::Result<bool> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cluster_dir)
        .with_context(|| format!("reading {}", cluster_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let cluster = load(&files)?;
    let want = expected(&cluster, &DEMO_PROBES)?;
    if !strata_datapath::loader::is_root() {
        println!("Compiled reachability (from the policy maps):");
        print!("{}", table(&want, &DEMO_PROBES));
        println!(
            "\nThe real-traffic half (pods in network namespaces, eBPF programs, probes) needs \
             root; run `sudo strata demo` to see it."
        );
        return Ok(true);
    }
    let (got, took) = observe(
        &cluster,
        &DEMO_PROBES,
        Observe {
            timeout: Duration::from_millis(800),
            sample: 0,
            hold: Duration::ZERO,
        },
    )?;
    let mismatches: Vec<&Cell> = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g.allowed != w.allowed)
        .map(|(g, _)| g)
        .collect();
    let by_probe: BTreeMap<(u16, &str), usize> =
        mismatches.iter().fold(BTreeMap::new(), |mut m, c| {
            *m.entry((c.port, c.protocol.as_str())).or_default() += 1;
            m
        });
    println!(
        "Compiled policy beside real traffic through the eBPF programs ({} probes in {:.0} ms; \
         TCP connect, UDP echo, SCTP as raw IP protocol 132):\n",
        got.len(),
        took.as_secs_f64() * 1000.0
    );
    print!("{}", side_by_side(&want, &got, &DEMO_PROBES));
    if mismatches.is_empty() {
        println!(
            "\nAll {} observations match the compiled policy.",
            got.len()
        );
    } else {
        println!("\n{} mismatches:", mismatches.len());
        for ((port, proto), n) in by_probe {
            println!("  {port}/{proto}: {n}");
        }
        for c in &mismatches {
            println!(
                "  {} -> {} {}/{}: observed {}",
                c.from,
                c.to,
                c.port,
                c.protocol.as_str(),
                if c.allowed { "allowed" } else { "denied" }
            );
        }
    }
    Ok(mismatches.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(allowed: &[bool]) -> Vec<Cell> {
        let names = ["a/x", "b/y"];
        let mut out = Vec::new();
        let mut it = allowed.iter();
        for from in names {
            for to in names {
                out.push(Cell {
                    from: from.to_owned(),
                    to: to.to_owned(),
                    port: 80,
                    protocol: Protocol::Tcp,
                    allowed: *it.next().expect("four cells"),
                });
            }
        }
        out
    }

    #[test]
    fn side_by_side_marks_exactly_the_mismatches() {
        let want = cells(&[true, false, true, true]);
        let got = cells(&[true, true, true, true]);
        let out = side_by_side(&want, &got, &[(80, Protocol::Tcp)]);
        let row = out
            .lines()
            .find(|l| l.starts_with("a/x (1)"))
            .expect("row of a/x");
        assert!(row.contains(". X") && row.contains(". !"), "{out}");
        assert_eq!(
            out.matches('!').count(),
            2,
            "one cell plus the legend: {out}"
        );
        let same = side_by_side(&want, &want, &[(80, Protocol::Tcp)]);
        assert_eq!(same.matches('!').count(), 1, "only the legend: {same}");
    }

    #[test]
    fn probes_parse_as_the_matrix_command_does() {
        assert_eq!(parse_probe("80/tcp"), Ok((80, Protocol::Tcp)));
        assert_eq!(parse_probe("9000/SCTP"), Ok((9000, Protocol::Sctp)));
        assert!(parse_probe("0/TCP").is_err());
        assert!(parse_probe("80").is_err());
    }
}
