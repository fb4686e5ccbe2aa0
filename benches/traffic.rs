//! eBPF against iptables and nftables, with real packets (plain harness).
//!
//! - `cargo bench -p strata-bench --bench traffic -- --quick|--report [--out DIR]
//!   [--sizes 10,1000] [--variants none,strata,…] [--backend legacy|nft]` measures and writes
//!   `DIR/BENCHMARKS.md`, `DIR/docs/plots/{pps,update}.svg` and `DIR/docs/plots/versus.json`
//!   (`cargo xtask bench --quick|--report` runs it with `DIR` = the workspace root);
//!   `--rerender` writes them again from `DIR/docs/plots/versus.json` without measuring.
//! - Without `--bench` (`cargo test --benches`): one quick pass over a small cluster — the
//!   renderings, and as root every variant with short windows — so the bench never rots.
//!
//! Needs root for the namespaces, iptables, nftables and eBPF; without it, says so and skips.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_bench::versus::{
    Error, iptables, ir, nft,
    report::{FootprintPoint, Machine, Results, TestRunPoint, TrafficPoint, UpdatePoint},
    rig::{self, IptBackend, Rig, Stat, UpdateMode, Variant},
    scale::Scenario,
};
use strata_policy::{Change, ObjectKey};

struct Plan {
    mode: &'static str,
    sizes: Vec<usize>,
    variants: Vec<Variant>,
    repeats: usize,
    window: Duration,
    warmup: Duration,
    test_run_repeat: u32,
    backend: IptBackend,
    out: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Plan, String> {
    let report = args.iter().any(|a| a == "--report");
    let mut plan = if report {
        Plan {
            mode: "report",
            sizes: vec![10, 100, 1_000, 10_000, 100_000],
            variants: Variant::ALL.to_vec(),
            repeats: 5,
            window: Duration::from_millis(1000),
            warmup: Duration::from_millis(200),
            test_run_repeat: 1_000_000,
            backend: IptBackend::Legacy,
            out: None,
        }
    } else {
        Plan {
            mode: "quick",
            sizes: vec![10, 1_000, 10_000],
            variants: Variant::ALL.to_vec(),
            repeats: 3,
            window: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            test_run_repeat: 100_000,
            backend: IptBackend::Legacy,
            out: None,
        }
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--out" => plan.out = Some(PathBuf::from(value()?)),
            "--sizes" => {
                plan.sizes = value()?
                    .split(',')
                    .map(|s| {
                        s.replace('_', "")
                            .parse()
                            .map_err(|e| format!("--sizes: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--variants" => {
                plan.variants = value()?
                    .split(',')
                    .map(|s| Variant::from_name(s).ok_or(format!("unknown variant {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--backend" => {
                plan.backend = match value()?.as_str() {
                    "legacy" => IptBackend::Legacy,
                    "nft" => IptBackend::Nft,
                    other => return Err(format!("unknown backend {other}")),
                }
            }
            "--repeats" => {
                plan.repeats = value()?.parse().map_err(|e| format!("--repeats: {e}"))?
            }
            _ => {}
        }
    }
    Ok(plan)
}

fn cmd_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel: cmd_line("uname", &["-r"]),
        memory: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
            .unwrap_or_default(),
        load_before: cmd_line("uptime", &[]),
        load_after: String::new(),
        started: cmd_line("date", &["-u", "+%Y-%m-%d %H:%M:%S"]),
        seconds: 0.0,
        tools: vec![
            cmd_line("iptables-legacy", &["--version"]),
            cmd_line("nft", &["--version"]),
            cmd_line("ipset", &["--version"]),
        ],
    }
}

/// Removes the namespaces on SIGINT, SIGTERM and SIGHUP (drops do it on every other exit).
fn cleanup_on_interrupt() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let signal = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return None;
            };
            tokio::select! {
                _ = int.recv() => Some(130),
                _ = term.recv() => Some(143),
                _ = hup.recv() => Some(129),
            }
        });
        if let Some(code) = signal {
            eprintln!("versus: interrupted, removing the namespaces");
            strata_datapath::netns::cleanup_registered();
            std::process::exit(code);
        }
    });
}

fn modes(v: Variant) -> &'static [(UpdateMode, &'static str)] {
    match v {
        Variant::NoFilter => &[],
        Variant::Strata => &[(UpdateMode::Incremental, "map diff")],
        _ => &[
            (UpdateMode::Full, "full"),
            (UpdateMode::Incremental, "incremental"),
        ],
    }
}

fn changes(s: &Scenario) -> Vec<(&'static str, Change, Change)> {
    vec![
        ("relabel", s.relabel(), s.relabel_back()),
        (
            "policy",
            s.added_policy(),
            Change::RemovePolicy(ObjectKey::new(
                strata_bench::versus::scale::NAMESPACE,
                "allow-extra",
            )),
        ),
    ]
}

/// Traffic samples of one variant.
#[derive(Clone, Default)]
struct Samples {
    rx: Vec<f64>,
    tx: Vec<f64>,
    rr: Vec<f64>,
    crr: Vec<f64>,
}

/// Measures every variant at one size. All variants are built first (one lab each) and
/// sampled round-robin, so that a change of machine load during the run spreads over every
/// variant instead of biasing one.
fn measure_size(plan: &Plan, scenario: &Scenario, res: &mut Results) {
    let n = scenario.entries;
    let mut rigs: Vec<(Variant, Rig, f64)> = Vec::new();
    for &v in &plan.variants {
        let t0 = Instant::now();
        match Rig::build(scenario.clone(), v, plan.backend) {
            Ok(rig) => rigs.push((v, rig, t0.elapsed().as_secs_f64() * 1e3)),
            Err(e) => fail(res, n, v, "setup", &e),
        }
    }
    let mut samples: Vec<Samples> = vec![Samples::default(); rigs.len()];
    let mut failed = vec![false; rigs.len()];
    for _ in 0..plan.repeats {
        for (i, (v, rig, _)) in rigs.iter().enumerate() {
            if failed[i] {
                continue;
            }
            match rig.udp_pps(plan.warmup, plan.window) {
                Ok((r, t)) => {
                    samples[i].rx.push(r);
                    samples[i].tx.push(t);
                }
                Err(e) => {
                    failed[i] = true;
                    fail(res, n, *v, "UDP", &e);
                }
            }
        }
    }
    for _ in 0..plan.repeats {
        for (i, (v, rig, _)) in rigs.iter().enumerate() {
            if failed[i] {
                continue;
            }
            match rig.tcp_rr(plan.warmup, plan.window) {
                Ok(r) => samples[i].rr.push(r),
                Err(e) => {
                    failed[i] = true;
                    fail(res, n, *v, "TCP", &e);
                }
            }
            if failed[i] {
                continue;
            }
            match rig.tcp_crr(plan.warmup, plan.window) {
                Ok(r) => samples[i].crr.push(r),
                Err(e) => {
                    failed[i] = true;
                    fail(res, n, *v, "TCP connections", &e);
                }
            }
        }
    }
    for (i, (v, rig, setup_ms)) in rigs.iter_mut().enumerate() {
        if failed[i] {
            continue;
        }
        let p = TrafficPoint {
            variant: v.name().into(),
            n,
            udp_pps: Stat::of(&samples[i].rx),
            udp_sent_pps: Stat::of(&samples[i].tx),
            tcp_rr: Stat::of(&samples[i].rr),
            tcp_crr: Stat::of(&samples[i].crr),
            setup_ms: *setup_ms,
        };
        eprintln!(
            "versus: N={n:>6} {:<16} udp {:>9.0} pps (sent {:>9.0})  tcp {:>7.0} rt/s  {:>6.0} conn/s  setup {:>6.0} ms",
            v.name(),
            p.udp_pps.median,
            p.udp_sent_pps.median,
            p.tcp_rr.median,
            p.tcp_crr.median,
            setup_ms
        );
        res.traffic.push(p);
        if let Err(e) = measure_updates(plan, scenario, *v, rig, res) {
            fail(res, n, *v, "updates", &e);
        }
    }
}

fn fail(res: &mut Results, n: usize, v: Variant, what: &str, e: &Error) {
    eprintln!("versus: N={n} {} {what}: FAILED: {e}", v.name());
    res.failures
        .push(format!("N = {n}, {}, {what}: {e}", v.name()));
}

fn measure_updates(
    plan: &Plan,
    scenario: &Scenario,
    v: Variant,
    rig: &mut Rig,
    res: &mut Results,
) -> Result<(), Error> {
    let n = scenario.entries;
    if v != Variant::NoFilter {
        let f = rig.footprint()?;
        res.footprint.push(FootprintPoint {
            variant: v.name().into(),
            n,
            rules: f.rules,
            entries: f.entries,
            kernel_bytes: f.kernel_bytes,
            other_bytes: f.other_bytes,
        });
    }
    for (change_name, change, undo) in changes(scenario) {
        for &(mode, mode_name) in modes(v) {
            let (mut samples, mut kernel) = (Vec::new(), Vec::new());
            let mut ops = 0;
            for _ in 0..plan.repeats {
                let t = rig.update(&change, mode)?;
                samples.push(t.total.as_secs_f64() * 1e3);
                kernel.push(t.kernel.as_secs_f64() * 1e3);
                ops = t.ops;
                rig.update(&undo, UpdateMode::Incremental)?;
            }
            let u = UpdatePoint {
                variant: v.name().into(),
                mode: mode_name.into(),
                change: change_name.into(),
                n,
                ms: Stat::of(&samples),
                kernel_ms: Stat::of(&kernel),
                ops,
            };
            eprintln!(
                "versus: N={n:>6} {:<16} update {change_name:<8} {mode_name:<12} {:>9.3} ms (kernel part {:>9.3} ms, {ops} ops)",
                v.name(),
                u.ms.median,
                u.kernel_ms.median
            );
            res.updates.push(u);
        }
    }
    Ok(())
}

fn out_dir(plan: &Plan) -> PathBuf {
    plan.out.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/strata-versus")
    })
}

/// Writes BENCHMARKS.md, the plots, the README section and (`json`) the raw figures.
fn write_outputs(plan: &Plan, res: &Results, json: bool) -> Result<(), String> {
    let out = out_dir(plan);
    let plots = out.join("docs/plots");
    res.plot(&plots).map_err(|e| e.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(res).map_err(|e| e.to_string())?;
        std::fs::write(plots.join("versus.json"), text).map_err(|e| e.to_string())?;
    }
    std::fs::write(out.join("BENCHMARKS.md"), res.markdown("docs/plots"))
        .map_err(|e| e.to_string())?;
    std::fs::write(
        plots.join("readme-section.md"),
        res.readme_section("docs/plots"),
    )
    .map_err(|e| e.to_string())?;
    println!("versus: wrote {}", out.join("BENCHMARKS.md").display());
    Ok(())
}

/// `--rerender`: the outputs again from `docs/plots/versus.json` of an earlier run (no
/// measurement; for a change of layout).
fn rerender(plan: &Plan) -> Result<(), String> {
    let path = out_dir(plan).join("docs/plots/versus.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let res: Results =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    write_outputs(plan, &res, false)
}

fn bench(plan: &Plan) -> Result<(), String> {
    if !rig::is_root() {
        println!("versus: skipped: needs root (network namespaces, iptables, nftables, eBPF)");
        return Ok(());
    }
    cleanup_on_interrupt();
    let started = Instant::now();
    let mut res = Results {
        mode: plan.mode.into(),
        repeats: plan.repeats,
        window_ms: plan.window.as_millis() as u64,
        iptables_backend: plan.backend.restore().into(),
        machine: machine(),
        ..Results::default()
    };
    for &n in &plan.sizes {
        let scenario = Scenario::generate(n).map_err(|e| e.to_string())?;
        measure_size(plan, &scenario, &mut res);
        if plan.variants.contains(&Variant::Strata) {
            match rig::test_run_ns(&scenario, plan.test_run_repeat, plan.repeats) {
                Ok((a, d)) => {
                    eprintln!(
                        "versus: N={n:>6} BPF_PROG_TEST_RUN allowed {:.1} ns, denied {:.1} ns",
                        a.median, d.median
                    );
                    res.test_run.push(TestRunPoint {
                        n: scenario.entries,
                        allowed_ns: a,
                        denied_ns: d,
                    });
                }
                Err(e) => res
                    .failures
                    .push(format!("N = {n}, BPF_PROG_TEST_RUN: {e}")),
            }
        }
    }
    res.machine.load_after = cmd_line("uptime", &[]);
    res.machine.seconds = started.elapsed().as_secs_f64();
    for h in res.headlines() {
        println!("versus: {h}");
    }
    write_outputs(plan, &res, true)?;
    if !res.failures.is_empty() {
        return Err(format!(
            "{} measurements failed: {:?}",
            res.failures.len(),
            res.failures
        ));
    }
    Ok(())
}

/// Test mode: renders a small cluster three ways, and as root runs every variant briefly.
fn smoke() -> Result<(), String> {
    let s = Scenario::generate(100).map_err(|e| e.to_string())?;
    let rules = ir::lower(&s.cluster, &s.locals("lxc0", "lxc1")).map_err(|e| e.to_string())?;
    let flat = iptables::flat(&rules);
    let calico = iptables::calico(&rules);
    let table = nft::render(rig::NFT_TABLE, &rules);
    if flat.rule_count() < 100 || calico.ipset_members() < 10 || table.element_count() != 100 {
        return Err(format!(
            "renderings too small: flat {} rules, calico {} members, nft {} elements",
            flat.rule_count(),
            calico.ipset_members(),
            table.element_count()
        ));
    }
    if !rig::is_root() {
        println!(
            "versus: traffic skipped: needs root (network namespaces, iptables, nftables, eBPF)"
        );
        return Ok(());
    }
    cleanup_on_interrupt();
    let plan = Plan {
        mode: "test",
        sizes: vec![100],
        variants: Variant::ALL.to_vec(),
        repeats: 1,
        window: Duration::from_millis(50),
        warmup: Duration::from_millis(20),
        test_run_repeat: 1000,
        backend: IptBackend::Legacy,
        out: None,
    };
    let mut res = Results::default();
    measure_size(&plan, &s, &mut res);
    if !res.failures.is_empty() {
        return Err(format!("failures: {:?}", res.failures));
    }
    if res.traffic.len() != plan.variants.len() {
        return Err(format!(
            "{} of {} variants measured",
            res.traffic.len(),
            plan.variants.len()
        ));
    }
    for t in &res.traffic {
        if t.udp_pps.median <= 0.0 || t.tcp_rr.median <= 0.0 || t.tcp_crr.median <= 0.0 {
            return Err(format!(
                "{}: no traffic went through the allowed flow",
                t.variant
            ));
        }
    }
    rig::test_run_ns(&s, plan.test_run_repeat, 1).map_err(|e| e.to_string())?;
    println!(
        "versus: test mode: {} variants passed traffic",
        res.traffic.len()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.iter().any(|a| a == "--bench") {
        parse(&args).and_then(|plan| {
            if args.iter().any(|a| a == "--rerender") {
                rerender(&plan)
            } else {
                bench(&plan)
            }
        })
    } else {
        smoke()
    };
    if let Err(e) = result {
        eprintln!("versus: error: {e}");
        std::process::exit(1);
    }
}
