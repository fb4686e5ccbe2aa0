//! Results of a run: JSON, BENCHMARKS.md tables and SVG plots (plotters).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Error, rig::Stat};

/// The machine and the conditions of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// Total memory.
    pub memory: String,
    /// `uptime` before the run.
    pub load_before: String,
    /// `uptime` after the run.
    pub load_after: String,
    /// UTC start of the run.
    pub started: String,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Versions of iptables, nft and ipset.
    pub tools: Vec<String>,
}

/// Traffic through one variant at one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrafficPoint {
    /// Variant name.
    pub variant: String,
    /// Compiled entries.
    pub n: usize,
    /// UDP packets per second received by the server.
    pub udp_pps: Stat,
    /// UDP packets per second the client sent.
    pub udp_sent_pps: Stat,
    /// TCP round trips per second.
    pub tcp_rr: Stat,
    /// New TCP connections (connect, request, response, close) per second.
    pub tcp_crr: Stat,
    /// Time to load the variant's whole state, milliseconds (render/compile included).
    pub setup_ms: f64,
}

/// One update timing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpdatePoint {
    /// Variant name.
    pub variant: String,
    /// `full` or `incremental`.
    pub mode: String,
    /// `relabel` or `policy`.
    pub change: String,
    /// Compiled entries.
    pub n: usize,
    /// Wall milliseconds from the change to the kernel enforcing it.
    pub ms: Stat,
    /// Milliseconds of the kernel-facing part alone.
    pub kernel_ms: Stat,
    /// Kernel-side operations carried (rules, set members, map entries, script lines).
    pub ops: usize,
}

/// `BPF_PROG_TEST_RUN` cost at one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestRunPoint {
    /// Compiled entries.
    pub n: usize,
    /// ns per packet, measured (allowed, conntrack hit) flow.
    pub allowed_ns: Stat,
    /// ns per packet, denied flow (ipcache and both policy lookups every time).
    pub denied_ns: Stat,
}

/// Size of one variant's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FootprintPoint {
    /// Variant name.
    pub variant: String,
    /// Compiled entries.
    pub n: usize,
    /// Rules.
    pub rules: usize,
    /// Set members, map elements or eBPF map entries.
    pub entries: usize,
    /// Bytes of the policy state, where known (see [`super::rig::Footprint`]).
    pub kernel_bytes: Option<u64>,
    /// Strata's other (constant, preallocated) maps.
    pub other_bytes: Option<u64>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    /// `quick` or `report`.
    pub mode: String,
    /// Repetitions per figure.
    pub repeats: usize,
    /// Measurement window per repetition, milliseconds.
    pub window_ms: u64,
    /// iptables backend used.
    pub iptables_backend: String,
    /// Machine and load.
    pub machine: Machine,
    /// Traffic figures.
    pub traffic: Vec<TrafficPoint>,
    /// Update timings.
    pub updates: Vec<UpdatePoint>,
    /// Program cost.
    pub test_run: Vec<TestRunPoint>,
    /// Sizes.
    pub footprint: Vec<FootprintPoint>,
    /// Measurements that failed, with the error (reported, never hidden).
    pub failures: Vec<String>,
}

/// Human-readable count: 1,234,567.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn spread(s: &Stat) -> String {
    if s.median == 0.0 {
        return "–".into();
    }
    format!(
        "{} (±{:.0}%)",
        thousands(s.median),
        100.0 * (s.max - s.min) / 2.0 / s.median
    )
}

/// Three significant digits (at least one decimal below 100).
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn ms(s: &Stat) -> String {
    if s.median >= 100.0 {
        format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max)
    } else if s.median >= 1.0 {
        format!("{:.1} [{:.1}–{:.1}]", s.median, s.min, s.max)
    } else {
        format!("{:.3} [{:.3}–{:.3}]", s.median, s.min, s.max)
    }
}

const LABELS: [(&str, &str); 5] = [
    ("none", "no filter"),
    ("strata", "Strata eBPF"),
    ("iptables-flat", "iptables flat"),
    ("iptables-calico", "iptables Calico-style + ipset"),
    ("nftables", "nftables verdict maps"),
];

fn label(v: &str) -> &str {
    LABELS
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, l)| *l)
        .unwrap_or(v)
}

impl Results {
    /// Sizes measured, ascending.
    pub fn sizes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.traffic.iter().map(|t| t.n).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The traffic point of a variant at a size.
    pub fn traffic(&self, variant: &str, n: usize) -> Option<&TrafficPoint> {
        self.traffic
            .iter()
            .find(|t| t.variant == variant && t.n == n)
    }

    /// Median UDP pps ratio `a / b` at size `n`.
    pub fn pps_ratio(&self, a: &str, b: &str, n: usize) -> Option<f64> {
        let (x, y) = (self.traffic(a, n)?, self.traffic(b, n)?);
        (y.udp_pps.median > 0.0).then(|| x.udp_pps.median / y.udp_pps.median)
    }

    /// The headline sentences (targets of the issue), computed from the figures.
    pub fn headlines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let sizes = self.sizes();
        let Some(&big) = sizes.last() else {
            return out;
        };
        if let Some(r) = self.pps_ratio("strata", "none", big) {
            out.push(format!(
                "At N = {}, Strata forwards {:.1}% of the unfiltered UDP packet rate (target: at least 90%): {}.",
                thousands(big as f64),
                100.0 * r,
                if r >= 0.9 { "met" } else { "not met" }
            ));
        }
        let mid = if sizes.contains(&10_000) { 10_000 } else { big };
        if let Some(r) = self.pps_ratio("strata", "iptables-flat", mid) {
            let at_big = if mid != big {
                self.pps_ratio("strata", "iptables-flat", big)
                    .map(|b| format!(" (at N = {}: {:.1}×)", thousands(big as f64), b))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            out.push(format!(
                "At N = {}, Strata forwards {:.1}× the UDP packets per second of flat iptables (target: at least 30×): {}{at_big}.",
                thousands(mid as f64),
                r,
                if r >= 30.0 { "met" } else { "not met" }
            ));
        }
        if let Some(&small) = sizes.first()
            && small != big
        {
            let keep = |v: &str| {
                let (a, b) = (self.traffic(v, small)?, self.traffic(v, big)?);
                (a.udp_pps.median > 0.0).then(|| 100.0 * b.udp_pps.median / a.udp_pps.median)
            };
            let parts: Vec<String> = ["strata", "iptables-flat", "iptables-calico", "nftables"]
                .iter()
                .filter_map(|v| keep(v).map(|k| format!("{} {k:.1}%", label(v))))
                .collect();
            if !parts.is_empty() {
                out.push(format!(
                    "Rate at N = {} as a share of the same variant's rate at N = {}: {}.",
                    thousands(big as f64),
                    thousands(small as f64),
                    parts.join(", ")
                ));
            }
        }
        for other in ["iptables-calico", "nftables"] {
            if let (Some(r), Some(s)) = (
                self.pps_ratio(other, "none", big),
                self.pps_ratio("strata", other, big),
            ) {
                out.push(format!(
                    "At N = {}, {} keeps {:.1}% of the unfiltered rate; Strata forwards {:.2}× its rate.",
                    thousands(big as f64),
                    label(other),
                    100.0 * r,
                    s
                ));
            }
        }
        if let (Some(a), Some(b)) = (
            self.traffic("strata", big),
            self.traffic("iptables-flat", big),
        ) && b.tcp_crr.median > 0.0
        {
            out.push(format!(
                "New TCP connections at N = {}: Strata {} per second, flat iptables {} ({:.1}×).",
                thousands(big as f64),
                thousands(a.tcp_crr.median),
                thousands(b.tcp_crr.median),
                a.tcp_crr.median / b.tcp_crr.median
            ));
        }
        let update = |v: &str, m: &str| {
            self.updates
                .iter()
                .find(|u| u.variant == v && u.mode == m && u.change == "relabel" && u.n == big)
        };
        if let (Some(st), Some(fl), Some(ca), Some(nf)) = (
            update("strata", "map diff"),
            update("iptables-flat", "incremental"),
            update("iptables-calico", "incremental"),
            update("nftables", "incremental"),
        ) {
            out.push(format!(
                "One pod relabelled at N = {}: Strata {} ms from the change to the maps ({} ms of it in `Datapath::apply_diff`, the rest in the policy compiler), flat iptables {} ms, Calico-style {} ms, nftables {} ms (incremental updates, render included).",
                thousands(big as f64),
                short(st.ms.median),
                short(st.kernel_ms.median),
                short(fl.ms.median),
                short(ca.ms.median),
                short(nf.ms.median)
            ));
        }
        out
    }

    /// The README's section: the main plot, a table of UDP rates and the headlines, wrapped
    /// at 100 columns.
    pub fn readme_section(&self, plots: &str) -> String {
        let mut s = String::from("### eBPF versus iptables and nftables\n\n");
        s.push_str(&wrap(
            &format!(
                "`cargo xtask bench --{}` (as root) applies one generated cluster — N compiled policy entries, the measured flow allowed by the last rule a chain reaches — five ways in a node namespace between two pod namespaces, and sends real packets through it. Method, machine, load and every table (TCP, update latency, BPF_PROG_TEST_RUN, state size): [BENCHMARKS.md](BENCHMARKS.md). Run started {} UTC; load before: {}.",
                self.mode,
                self.machine.started,
                self.machine
                    .load_before
                    .split("load average:")
                    .nth(1)
                    .map(|l| format!("load average {}", l.trim()))
                    .unwrap_or_default()
            ),
            "",
        ));
        let _ = writeln!(
            s,
            "\n![UDP packets per second against N]({plots}/pps.svg)\n"
        );
        let _ = writeln!(
            s,
            "UDP packets per second received (64-byte frames, median of {} runs):\n",
            self.repeats
        );
        self.traffic_table(&mut s, |t| thousands(t.udp_pps.median));
        for h in self.headlines() {
            s.push_str(&wrap(&h, "- "));
        }
        s
    }

    /// BENCHMARKS.md.
    pub fn markdown(&self, plots: &str) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks: eBPF versus iptables and nftables\n");
        let _ = writeln!(
            s,
            "Generated by `cargo xtask bench --{}` (the `traffic` bench of `strata-bench`); every figure below comes from that run. Re-run it to reproduce; the raw figures are in `{plots}/versus.json`.\n",
            self.mode
        );
        let _ = writeln!(s, "## Machine\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| CPU | {} ({} online CPUs) |", m.cpu, m.cores);
        let _ = writeln!(s, "| Kernel | {} |", m.kernel);
        let _ = writeln!(s, "| Memory | {} |", m.memory);
        let _ = writeln!(s, "| Started (UTC) | {} |", m.started);
        let _ = writeln!(s, "| Duration | {:.0} s |", m.seconds);
        let _ = writeln!(s, "| Load before (`uptime`) | {} |", m.load_before);
        let _ = writeln!(s, "| Load after (`uptime`) | {} |", m.load_after);
        let _ = writeln!(s, "| Tools | {} |", m.tools.join("; "));
        let _ = writeln!(s, "| iptables backend | `{}` |\n", self.iptables_backend);
        if !self.headlines().is_empty() {
            let _ = writeln!(s, "## Headlines\n");
            for h in self.headlines() {
                let _ = writeln!(s, "- {h}");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "![UDP packets per second against N]({plots}/pps.svg)\n");
        let _ = writeln!(s, "## Method\n");
        let _ = writeln!(
            s,
            "{}",
            METHOD
                .replace("{repeats}", &self.repeats.to_string())
                .replace("{window}", &self.window_ms.to_string())
        );
        let _ = writeln!(
            s,
            "## UDP packets per second received by the server (median, ±half the min–max spread)\n"
        );
        self.traffic_table(&mut s, |t| spread(&t.udp_pps));
        let _ = writeln!(s, "## UDP packets per second sent by the client\n");
        self.traffic_table(&mut s, |t| spread(&t.udp_sent_pps));
        let _ = writeln!(
            s,
            "## TCP round trips per second (one connection, 1-byte request and response)\n"
        );
        let _ = writeln!(
            s,
            "Replies and every packet after the handshake are accepted by conntrack (`ESTABLISHED`) before any policy rule in the iptables and nftables variants, and by Strata's conntrack map; this table therefore shows the per-connection state cost, not the rule walk.\n"
        );
        self.traffic_table(&mut s, |t| spread(&t.tcp_rr));
        let _ = writeln!(
            s,
            "## New TCP connections per second (connect, 1-byte request and response, close)\n\nEvery SYN is a new flow: it walks the rules (iptables, nftables) or the policy maps (Strata) before conntrack takes over.\n"
        );
        self.traffic_table(&mut s, |t| spread(&t.tcp_crr));
        let _ = writeln!(
            s,
            "## Time to load the whole state (ms, render or compile included)\n"
        );
        self.traffic_table(&mut s, |t| format!("{:.0}", t.setup_ms));
        let _ = writeln!(
            s,
            "## Update latency\n\nPer cell: milliseconds from the change to the kernel enforcing it, median [min–max]; the median of the kernel-facing part alone (restore commands, `nft`, `Datapath::apply_diff`); the operations carried.\n"
        );
        let _ = writeln!(s, "![Update latency against N]({plots}/update.svg)\n");
        let mut kinds: Vec<(String, String, String)> = self
            .updates
            .iter()
            .map(|u| (u.change.clone(), u.variant.clone(), u.mode.clone()))
            .collect();
        kinds.sort();
        kinds.dedup();
        let sizes = self.sizes();
        let _ = write!(s, "| change | variant | sync |");
        for n in &sizes {
            let _ = write!(s, " N = {} |", thousands(*n as f64));
        }
        let _ = write!(s, "\n|---|---|---|");
        for _ in &sizes {
            s.push_str("---|");
        }
        s.push('\n');
        for (change, variant, mode) in &kinds {
            let _ = write!(s, "| {change} | {} | {mode} |", label(variant));
            for n in &sizes {
                match self.updates.iter().find(|u| {
                    &u.change == change && &u.variant == variant && &u.mode == mode && u.n == *n
                }) {
                    Some(u) => {
                        let _ = write!(
                            s,
                            " {}; kernel {}; {} ops |",
                            ms(&u.ms),
                            short(u.kernel_ms.median),
                            thousands(u.ops as f64)
                        );
                    }
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "## BPF_PROG_TEST_RUN, `to_pod`, ns per packet (median [min–max])\n"
        );
        let _ = writeln!(
            s,
            "| N | measured flow (allowed, conntrack hit) | denied flow (ipcache + 2 policy lookups) |\n|---|---|---|"
        );
        for t in &self.test_run {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                thousands(t.n as f64),
                ms(&t.allowed_ns),
                ms(&t.denied_ns)
            );
        }
        s.push('\n');
        let _ = writeln!(s, "## State size\n");
        let _ = writeln!(
            s,
            "Rules, then set members / map elements / eBPF map entries, then bytes of the policy state where they can be known: Strata: map entries × (key + value size) of the endpoint, ipcache and policy maps (this kernel reports `memlock: 0` for LPM tries in `/proc/self/fdinfo`), and in brackets the kernel's `memlock` summed over all the datapath's maps (hash maps count their allocated elements, the conntrack LRU is preallocated in full); ipset: the kernel's \"Size in memory\". The kernel does not report the memory of an iptables table or an nftables set.\n"
        );
        let _ = write!(s, "| variant |");
        for n in &sizes {
            let _ = write!(s, " N = {} |", thousands(*n as f64));
        }
        let _ = write!(s, "\n|---|");
        for _ in &sizes {
            s.push_str("---|");
        }
        s.push('\n');
        for (v, l) in LABELS.iter().skip(1) {
            let _ = write!(s, "| {l} |");
            for n in &sizes {
                match self.footprint.iter().find(|f| f.variant == *v && f.n == *n) {
                    Some(f) => {
                        let _ = write!(
                            s,
                            " {} rules, {} entries",
                            thousands(f.rules as f64),
                            thousands(f.entries as f64)
                        );
                        if let Some(b) = f.kernel_bytes {
                            let _ = write!(s, ", {} KiB", thousands(b as f64 / 1024.0));
                        }
                        if let Some(b) = f.other_bytes {
                            let _ = write!(s, " (+{} KiB)", thousands(b as f64 / 1024.0));
                        }
                        s.push_str(" |");
                    }
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
        if !self.failures.is_empty() {
            let _ = writeln!(s, "## Failed measurements\n");
            for f in &self.failures {
                let _ = writeln!(s, "- {f}");
            }
            s.push('\n');
        }
        s
    }

    fn traffic_table(&self, s: &mut String, cell: impl Fn(&TrafficPoint) -> String) {
        let sizes = self.sizes();
        let _ = write!(s, "| variant |");
        for n in &sizes {
            let _ = write!(s, " N = {} |", thousands(*n as f64));
        }
        let _ = write!(s, "\n|---|");
        for _ in &sizes {
            s.push_str("---:|");
        }
        s.push('\n');
        for (v, l) in LABELS {
            if !self.traffic.iter().any(|t| t.variant == v) {
                continue;
            }
            let _ = write!(s, "| {l} |");
            for n in &sizes {
                match self.traffic(v, *n) {
                    Some(t) => {
                        let _ = write!(s, " {} |", cell(t));
                    }
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }

    /// Draws `pps.svg` (UDP pps against N, log-log, one line per variant with min–max bars)
    /// and `update.svg` (relabel latency against N, per variant and sync mode) into `dir`.
    pub fn plot(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            operation: format!("mkdir {}", dir.display()),
            source: e,
        })?;
        let mut series = Vec::new();
        for (v, l) in LABELS {
            let pts: Vec<(f64, Stat)> = self
                .traffic
                .iter()
                .filter(|t| t.variant == v && t.udp_pps.median > 0.0)
                .map(|t| (t.n as f64, t.udp_pps))
                .collect();
            if !pts.is_empty() {
                series.push((l.to_string(), pts));
            }
        }
        line_plot(
            &dir.join("pps.svg"),
            "UDP packets/s received (64-byte frames) vs compiled entries N",
            "packets per second",
            &series,
            SeriesLabelPosition::LowerLeft,
        )?;
        let mut series = Vec::new();
        let mut kinds: Vec<(String, String, String)> = self
            .updates
            .iter()
            .filter(|u| u.change == "relabel")
            .map(|u| (u.variant.clone(), u.mode.clone(), u.change.clone()))
            .collect();
        kinds.sort();
        kinds.dedup();
        for (v, m, c) in kinds {
            let pts: Vec<(f64, Stat)> = self
                .updates
                .iter()
                .filter(|u| u.variant == v && u.mode == m && u.change == c && u.ms.median > 0.0)
                .map(|u| (u.n as f64, u.ms))
                .collect();
            if !pts.is_empty() {
                series.push((format!("{}, {m}", label(&v)), pts));
            }
        }
        line_plot(
            &dir.join("update.svg"),
            "One pod relabelled: change to enforcement, vs compiled entries N",
            "milliseconds",
            &series,
            SeriesLabelPosition::UpperLeft,
        )
    }
}

/// Wraps `text` at 100 columns; the first line starts with `first`, the others are indented
/// as deep.
fn wrap(text: &str, first: &str) -> String {
    let indent = " ".repeat(first.chars().count());
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > 100 {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

const COLORS: [RGBColor; 10] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn line_plot(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, Stat)>)],
    legend: SeriesLabelPosition,
) -> Result<(), Error> {
    let err = |e: String| Error::Rig(format!("plot {}: {e}", path.display()));
    let all: Vec<&(f64, Stat)> = series.iter().flat_map(|s| s.1.iter()).collect();
    if all.is_empty() {
        return Err(err("no data".into()));
    }
    let x_max = all.iter().map(|p| p.0).fold(10.0, f64::max) * 2.0;
    let y_min = all
        .iter()
        .map(|p| p.1.min)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        / 2.0;
    let y_max = all.iter().map(|p| p.1.max).fold(0.0, f64::max) * 2.0;
    let height = 520 + 22 * series.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((5.0..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .y_labels(12)
        .light_line_style(WHITE)
        .x_desc("N (compiled policy entries, log scale)")
        .y_desc(y_label)
        .x_label_formatter(&|x| thousands(*x))
        .y_label_formatter(&|y| {
            if *y >= 10.0 {
                thousands(*y)
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(x, s)| (*x, s.median)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                pts.iter()
                    .map(|(x, s)| Circle::new((*x, s.median), 3, color.filled())),
            )
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                pts.iter()
                    .map(|(x, s)| ErrorBar::new_vertical(*x, s.min, s.median, s.max, color, 6)),
            )
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

const METHOD: &str = "\
- **Cluster** (`strata_bench::versus::scale`): namespace `bench` with a server pod, peer pods \
in groups of 10 (each pod its own security identity), and one NetworkPolicy per group \
allowing it to the server on 5 ports × {TCP, UDP}. N is the number of entries strata-policy \
compiles for the server (10 per peer): N = 10 … 100,000 means 1 … 10,000 peers and 1 … 1,000 \
policies. The client is the last peer of the last group and uses the last port, so its flow \
is allowed by the last rule of the flat chain and by the last policy chain of the Calico-style \
rendering (the worst case of a linear walk).
- **Rig** (`strata_bench::versus::rig`): a node namespace and two pod namespaces joined by veth \
pairs (the `strata_datapath::netns` lab: /32 routes, proxy ARP), everything created by the bench \
and removed when it ends. The sender thread is pinned to CPU 1 (`taskset`).
- **Variants**, all applied in the node namespace to the same cluster: no filter; Strata's TC \
programs on the pods' host-side veths with the compiled maps (`strata_datapath::loader`); \
iptables flat (one `-s addr -p proto --dport port -j RETURN` rule per peer and port, denies first, \
an isolation `DROP` per endpoint); iptables Calico-style (dispatch → per-endpoint chain → one \
chain per policy, peers as `hash:ip` ipsets, ports as `multiport`, accept via a mark); nftables \
(dispatch by `iifname`/`oifname` verdict maps, one concatenated `ip saddr . meta l4proto . th \
dport` verdict-map lookup per endpoint). All iptables and nftables variants accept \
`ESTABLISHED,RELATED` first, as real controllers do. The renderings are checked against the \
policy oracle with real traffic in `benches/tests/renderers.rs`.
- **UDP**: the client sends 64-byte frames (18-byte payload) to the server for {window} ms after \
a warm-up; the figure is the server `eth0` receive counter over the window. A one-way UDP flow \
never becomes `ESTABLISHED`, so every packet walks the rules.
- **TCP**: one connection, 1-byte request and response, round trips counted over {window} ms; \
and new connections (connect, request, response, close with a reset) counted over {window} ms.
- **Updates**: from the change to the kernel enforcing it, wall time: peer 0 relabelled out of \
its group (no policy selects it any more), and one policy added (group 0 on TCP 6000); each is \
undone (unmeasured) before the next sample. iptables *full*: re-render, ipset refill and \
`iptables-restore` of the whole table; *incremental*: ipset member changes and one \
`iptables-restore --noflush` deleting and inserting rules by position (small chains rewritten). \
nftables: one `nft -f` transaction of element and chain changes (*incremental*) or the table \
replaced (*full*). Strata: `PolicyEngine::apply` (incremental compile), its diff translated for \
the node's endpoints (`translate::diff_from_policy`) and applied to the kernel maps \
(`Datapath::apply_diff`). The kernel-facing part of \
iptables and nftables updates includes starting `ipset`, `iptables-restore` and `nft` (through \
`ip netns exec`), as controllers that drive them do; Strata's is in-process system calls.
- **BPF_PROG_TEST_RUN**: the `to_pod` program on the server endpoint with the compiled maps, \
10⁵ (`--quick`) or 10⁶ (`--report`) repetitions per sample, the kernel's own ns-per-run average; \
the allowed flow hits conntrack after its first run, the denied flow takes the ipcache and both \
policy lookups every run.
- **Machine**: shared with other work; the load before and after the run is shown above. \
Compare variants within one run: they are sampled round-robin, so load changes spread over all.
- Each figure is the median of {repeats} runs; the spread is min–max.
";
