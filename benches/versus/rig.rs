//! The traffic rig: a client and a server pod joined through a node namespace (the lab of
//! `strata_datapath::netns`), one of five enforcement variants applied in the node
//! namespace, UDP and TCP traffic between the pods, update timings and memory figures.
//!
//! Everything lives in namespaces the rig creates (named with the process id) and is removed
//! when the [`Rig`] is dropped; iptables rules, ipsets and nftables tables vanish with the node
//! namespace. Every traffic loop is bounded by a deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_datapath::{
    loader::Datapath,
    netns::Lab,
    state::MapState,
    translate::{EndpointSpec, Placement, add_endpoint, add_prefix, diff_from_policy},
};
use strata_policy::{Change, Cluster, PolicyEngine};

use super::{
    Error, iptables,
    ir::{self, LocalEndpoint},
    nft,
    scale::Scenario,
};

/// How the node namespace enforces the policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Nothing: the physical limit of the rig.
    NoFilter,
    /// Strata's TC programs and maps.
    Strata,
    /// iptables, one rule per peer and port.
    IptablesFlat,
    /// iptables, Calico-style chains and ipsets.
    IptablesCalico,
    /// nftables with verdict maps.
    Nftables,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 5] = [
        Variant::NoFilter,
        Variant::Strata,
        Variant::IptablesFlat,
        Variant::IptablesCalico,
        Variant::Nftables,
    ];

    /// Short name (used in file names and on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Variant::NoFilter => "none",
            Variant::Strata => "strata",
            Variant::IptablesFlat => "iptables-flat",
            Variant::IptablesCalico => "iptables-calico",
            Variant::Nftables => "nftables",
        }
    }

    /// Human label for tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Variant::NoFilter => "no filter",
            Variant::Strata => "Strata eBPF (TC + maps)",
            Variant::IptablesFlat => "iptables, flat",
            Variant::IptablesCalico => "iptables, Calico-style + ipset",
            Variant::Nftables => "nftables, verdict maps",
        }
    }

    /// Parses [`Variant::name`].
    pub fn from_name(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Whether the process runs as root (effective uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The iptables binaries used: the legacy (xtables) backend, whose linear chain walk is the
/// classic behaviour, or the nf_tables one (Debian's default `iptables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IptBackend {
    /// `iptables-legacy-restore`.
    Legacy,
    /// `iptables-nft-restore`.
    Nft,
}

impl IptBackend {
    /// The restore command.
    pub fn restore(self) -> &'static str {
        match self {
            IptBackend::Legacy => "iptables-legacy-restore",
            IptBackend::Nft => "iptables-nft-restore",
        }
    }
}

/// Runs `program args` inside the named network namespace with `input` on stdin.
pub fn run_in_netns(
    netns: &str,
    program: &str,
    args: &[&str],
    input: &str,
) -> Result<String, Error> {
    let shown = format!("ip netns exec {netns} {program} {}", args.join(" "));
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io {
            operation: format!("spawn {shown}"),
            source: e,
        })?;
    let mut stdin = child.stdin.take();
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(mut w) = stdin.take() {
                let _ = w.write_all(input.as_bytes());
            }
        });
        child.wait_with_output()
    })
    .map_err(|e| Error::Io {
        operation: format!("wait {shown}"),
        source: e,
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Command {
            command: shown,
            detail: format!(
                "{}: {}",
                out.status,
                err.lines().take(8).collect::<Vec<_>>().join(" | ")
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a variant left in the node namespace (kept to compute incremental updates).
enum Applied {
    Nothing,
    Strata {
        datapath: Box<Datapath>,
        engine: Box<PolicyEngine>,
        state: MapState,
    },
    Iptables(iptables::Rendering),
    Nft(nft::Rendering),
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Applied::Nothing => f.write_str("Nothing"),
            Applied::Strata { datapath, .. } => f.debug_tuple("Strata").field(datapath).finish(),
            Applied::Iptables(r) => write!(f, "Iptables({} rules)", r.rule_count()),
            Applied::Nft(r) => write!(f, "Nft({} rules)", r.rule_count()),
        }
    }
}

/// A variant enforcing a cluster's policies for the local endpoints of a lab.
#[derive(Debug)]
pub struct Enforcer {
    variant: Variant,
    backend: IptBackend,
    node: String,
    locals: Vec<(LocalEndpoint, u32)>,
    applied: Applied,
}

/// nftables table name used by the rig.
pub const NFT_TABLE: &str = "strata_bench";

fn render_ipt(variant: Variant, rules: &[ir::EndpointRules]) -> iptables::Rendering {
    if variant == Variant::IptablesFlat {
        iptables::flat(rules)
    } else {
        iptables::calico(rules)
    }
}

fn strata_state(engine: &PolicyEngine, locals: &[(LocalEndpoint, u32)]) -> Result<MapState, Error> {
    let mut state = MapState::default();
    for (i, (l, ifindex)) in locals.iter().enumerate() {
        let (identity, policy) = engine.endpoint(&l.pod).ok_or_else(|| Error::Endpoint {
            pod: l.pod.to_string(),
            reason: "not a compiled endpoint".into(),
        })?;
        add_endpoint(
            &mut state,
            &EndpointSpec {
                ifindex: *ifindex,
                endpoint_id: i as u32 + 1,
                identity: identity.0,
                policy,
            },
        )?;
    }
    for e in engine.ipcache().entries() {
        add_prefix(
            &mut state,
            e.prefix.addr(),
            e.prefix.prefix_len(),
            e.identity.0,
        )?;
    }
    Ok(state)
}

/// How an update is pushed to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Everything re-rendered and replaced (`iptables-restore` without `--noflush`, a full
    /// ipset refill, the nftables table replaced).
    Full,
    /// Only what changed (rule deletions and insertions, set member changes, map element
    /// changes, the Strata map diff).
    Incremental,
}

impl Enforcer {
    /// Applies `variant` for `cluster` in the lab's node namespace; `locals` pairs each local
    /// endpoint with the lab pod index whose interface it is.
    pub fn apply(
        lab: &Lab,
        cluster: &Cluster,
        locals: &[(LocalEndpoint, usize)],
        variant: Variant,
        backend: IptBackend,
    ) -> Result<Enforcer, Error> {
        let locals: Vec<(LocalEndpoint, u32)> = locals
            .iter()
            .map(|(l, i)| (l.clone(), lab.pods[*i].ifindex))
            .collect();
        let node = lab.node.name().to_string();
        let mut e = Enforcer {
            variant,
            backend,
            node,
            locals,
            applied: Applied::Nothing,
        };
        match variant {
            Variant::NoFilter => {}
            Variant::Strata => {
                let engine = PolicyEngine::compile(cluster);
                let state = strata_state(&engine, &e.locals)?;
                let mut dp = lab.load_datapath(0)?;
                dp.sync(&state)?;
                lab.attach(&mut dp)?;
                e.applied = Applied::Strata {
                    datapath: Box::new(dp),
                    engine: Box::new(engine),
                    state,
                };
            }
            Variant::IptablesFlat | Variant::IptablesCalico => {
                let r = render_ipt(variant, &e.lower(cluster)?);
                e.ipt_full(&r, None)?;
                e.applied = Applied::Iptables(r);
            }
            Variant::Nftables => {
                let r = nft::render(NFT_TABLE, &e.lower(cluster)?);
                run_in_netns(&e.node, "nft", &["-f", "-"], &r.full_script())?;
                e.applied = Applied::Nft(r);
            }
        }
        Ok(e)
    }

    fn lower(&self, cluster: &Cluster) -> Result<Vec<ir::EndpointRules>, Error> {
        let locals: Vec<LocalEndpoint> = self.locals.iter().map(|(l, _)| l.clone()).collect();
        ir::lower(cluster, &locals)
    }

    fn ipt_full(
        &self,
        r: &iptables::Rendering,
        old: Option<&iptables::Rendering>,
    ) -> Result<(), Error> {
        if !r.ipsets.is_empty() {
            run_in_netns(&self.node, "ipset", &["restore"], &r.ipset_full_script())?;
        }
        run_in_netns(&self.node, self.backend.restore(), &[], &r.restore_script())?;
        if let Some(old) = old {
            let cleanup = r.ipset_cleanup_script(old);
            if !cleanup.is_empty() {
                run_in_netns(&self.node, "ipset", &["restore"], &cleanup)?;
            }
        }
        Ok(())
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Pushes `change` (already applied to `cluster`) to the kernel. Returns the number of
    /// kernel-side operations it carried (rules, set members, map entries or elements) and
    /// the time spent in the kernel-facing part (the restore commands, `nft`,
    /// `Datapath::apply_diff`).
    pub fn update(
        &mut self,
        cluster: &Cluster,
        change: &Change,
        mode: UpdateMode,
    ) -> Result<(usize, Duration), Error> {
        let variant = self.variant;
        let rules = match &self.applied {
            Applied::Iptables(_) | Applied::Nft(_) => self.lower(cluster)?,
            _ => Vec::new(),
        };
        match &mut self.applied {
            Applied::Nothing => Ok((0, Duration::ZERO)),
            Applied::Strata {
                datapath,
                engine,
                state,
            } => {
                let diff = engine.apply(change.clone())?;
                let placement: Placement = self
                    .locals
                    .iter()
                    .enumerate()
                    .map(|(i, (l, ifindex))| (l.pod.to_string(), (*ifindex, i as u32 + 1)))
                    .collect();
                let maps = diff_from_policy(&diff, &placement, state)?;
                let t = Instant::now();
                let stats = datapath.apply_diff(&maps)?;
                let took = t.elapsed();
                maps.apply(state);
                Ok((stats.upserts + stats.removals, took))
            }
            Applied::Iptables(old) => {
                let old = old.clone();
                let new = render_ipt(variant, &rules);
                let t;
                let ops = match mode {
                    UpdateMode::Full => {
                        t = Instant::now();
                        self.ipt_full(&new, Some(&old))?;
                        new.rule_count() + new.ipset_members()
                    }
                    UpdateMode::Incremental => {
                        let u = new.update_from(&old);
                        t = Instant::now();
                        if !u.ipset_before.is_empty() {
                            run_in_netns(&self.node, "ipset", &["restore"], &u.ipset_before)?;
                        }
                        run_in_netns(
                            &self.node,
                            self.backend.restore(),
                            &["--noflush"],
                            &u.iptables,
                        )?;
                        if !u.ipset_after.is_empty() {
                            run_in_netns(&self.node, "ipset", &["restore"], &u.ipset_after)?;
                        }
                        // Script lines minus `*filter` and `COMMIT`.
                        u.ipset_before.lines().count()
                            + u.iptables.lines().count().saturating_sub(2)
                            + u.ipset_after.lines().count()
                    }
                };
                let took = t.elapsed();
                self.applied = Applied::Iptables(new);
                Ok((ops, took))
            }
            Applied::Nft(old) => {
                let new = nft::render(NFT_TABLE, &rules);
                let (script, ops) = match mode {
                    UpdateMode::Full => (new.full_script(), new.rule_count() + new.element_count()),
                    UpdateMode::Incremental => {
                        let u = new.update_from(old);
                        let ops = nft::operations(&u);
                        (u, ops)
                    }
                };
                let t = Instant::now();
                if !script.is_empty() {
                    run_in_netns(&self.node, "nft", &["-f", "-"], &script)?;
                }
                let took = t.elapsed();
                self.applied = Applied::Nft(new);
                Ok((ops, took))
            }
        }
    }

    /// Memory and size figures of what is loaded.
    pub fn footprint(&self) -> Result<Footprint, Error> {
        let mut f = Footprint::default();
        match &self.applied {
            Applied::Nothing => {}
            Applied::Strata { state, .. } => {
                use std::mem::size_of;
                use strata_datapath::abi::{
                    Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue,
                };
                f.entries = state.policy.len() + state.ipcache.len() + state.endpoints.len();
                // The kernel reports `memlock: 0` for LPM tries: count key and value bytes.
                let bytes = state.policy.len()
                    * (size_of::<PolicyKey>() + size_of::<PolicyValue>())
                    + state.ipcache.len() * (size_of::<IpcacheKey>() + size_of::<IpcacheValue>())
                    + state.endpoints.len() * (size_of::<u32>() + size_of::<Endpoint>());
                f.kernel_bytes = Some(bytes as u64);
                f.other_bytes = Some(bpf_map_memory()?);
            }
            Applied::Iptables(r) => {
                f.rules = r.rule_count();
                f.entries = r.ipset_members();
                if !r.ipsets.is_empty() {
                    let out = run_in_netns(&self.node, "ipset", &["list", "-t"], "")?;
                    f.kernel_bytes = Some(
                        out.lines()
                            .filter_map(|l| l.strip_prefix("Size in memory: "))
                            .filter_map(|v| v.trim().parse::<u64>().ok())
                            .sum(),
                    );
                }
            }
            Applied::Nft(r) => {
                f.rules = r.rule_count();
                f.entries = r.element_count();
            }
        }
        Ok(f)
    }

    /// What the kernel holds for this variant, normalized for comparison: `iptables-save`
    /// rules grouped by chain (in order within each chain) and `ipset save` members sorted,
    /// or `nft list table` with map elements sorted. Empty for the other variants.
    pub fn kernel_state(&self) -> Result<String, Error> {
        match &self.applied {
            Applied::Iptables(_) => {
                let save = match self.backend {
                    IptBackend::Legacy => "iptables-legacy-save",
                    IptBackend::Nft => "iptables-nft-save",
                };
                let rules = run_in_netns(&self.node, save, &["-t", "filter"], "")?;
                let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for l in rules.lines() {
                    if let Some(rest) = l.strip_prefix("-A ") {
                        let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
                        chains.entry(chain.into()).or_default().push(rule.into());
                    } else if let Some(decl) = l.strip_prefix(':') {
                        let name = decl.split_whitespace().next().unwrap_or_default();
                        chains.entry(name.into()).or_default();
                    }
                }
                let sets = run_in_netns(&self.node, "ipset", &["save"], "")?;
                let mut members: Vec<String> = sets
                    .lines()
                    .map(|l| {
                        if l.starts_with("create ") {
                            l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                members.sort();
                let mut out = String::new();
                for (chain, rules) in chains {
                    out.push_str(&format!("chain {chain}\n"));
                    for r in rules {
                        out.push_str(&format!("  {r}\n"));
                    }
                }
                out.push_str(&members.join("\n"));
                Ok(out)
            }
            Applied::Nft(_) => {
                let text =
                    run_in_netns(&self.node, "nft", &["list", "table", "ip", NFT_TABLE], "")?;
                let mut out = String::new();
                let mut elements: Option<Vec<String>> = None;
                for l in text.lines() {
                    let mut line = l.trim().to_string();
                    if let Some(rest) = line.strip_prefix("elements = {") {
                        elements = Some(Vec::new());
                        line = rest.trim().to_string();
                    }
                    match elements.as_mut() {
                        Some(els) => {
                            let done = line.ends_with('}');
                            els.extend(
                                line.trim_end_matches('}')
                                    .split(',')
                                    .map(|e| e.trim().to_string())
                                    .filter(|e| !e.is_empty()),
                            );
                            if done {
                                let mut els = elements.take().unwrap_or_default();
                                els.sort();
                                out.push_str(&format!("elements {}\n", els.join(", ")));
                            }
                        }
                        None => {
                            out.push_str(&line);
                            out.push('\n');
                        }
                    }
                }
                Ok(out)
            }
            _ => Ok(String::new()),
        }
    }

    /// The Strata datapath, when that is the variant.
    pub fn datapath(&self) -> Option<&Datapath> {
        match &self.applied {
            Applied::Strata { datapath, .. } => Some(datapath),
            _ => None,
        }
    }
}

/// Size of a variant's loaded state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Rules (iptables, nftables).
    pub rules: usize,
    /// Set members, map elements or eBPF map entries.
    pub entries: usize,
    /// Bytes of the policy state: Strata's map entries × (key + value) (the kernel reports no
    /// usage for LPM tries), ipsets' kernel "Size in memory"; `None` where nothing is readable.
    pub kernel_bytes: Option<u64>,
    /// Strata: the kernel's `memlock` summed over all the datapath's maps (LPM tries report
    /// 0, hash maps their allocated elements, the conntrack LRU and arrays their full size).
    pub other_bytes: Option<u64>,
}

/// Sums the kernel's `memlock` over the eBPF maps this process holds (`/proc/self/fdinfo`).
fn bpf_map_memory() -> Result<u64, Error> {
    let dir = std::fs::read_dir("/proc/self/fdinfo").map_err(|e| Error::Io {
        operation: "read /proc/self/fdinfo".into(),
        source: e,
    })?;
    let mut all = 0;
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(_), Some(mem)) = (field("map_type:"), field("memlock:")) {
            all += mem;
        }
    }
    Ok(all)
}

/// Pins the calling thread to `cpu` with `taskset` (no-op when the machine has one CPU).
pub fn pin_current_thread(cpu: usize) -> Result<(), Error> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpus < 2 {
        return Ok(());
    }
    let link = std::fs::read_link("/proc/thread-self").map_err(|e| Error::Io {
        operation: "readlink /proc/thread-self".into(),
        source: e,
    })?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or_else(|| Error::Rig("no thread id".into()))?
        .to_string();
    let out = Command::new("taskset")
        .args(["-pc", &(cpu % cpus).to_string(), &tid])
        .output()
        .map_err(|e| Error::Io {
            operation: "taskset".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("taskset -pc {cpu} {tid}"),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Received packets of `iface` in the calling thread's network namespace.
fn rx_packets(iface: &str) -> Result<u64, Error> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").map_err(|e| Error::Io {
        operation: "read /proc/thread-self/net/dev".into(),
        source: e,
    })?;
    text.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == iface).then(|| rest.split_whitespace().nth(1)?.parse::<u64>().ok())?
        })
        .ok_or_else(|| Error::Rig(format!("no counters for {iface}")))
}

/// The rig: a two-pod lab for a scenario with one variant applied.
#[derive(Debug)]
pub struct Rig {
    /// The scenario (its cluster follows the updates).
    pub scenario: Scenario,
    enforcer: Enforcer,
    lab: Lab,
}

/// CPU the traffic sources are pinned to; receivers and the bench thread use the others.
pub const SENDER_CPU: usize = 1;

impl Rig {
    /// Builds the lab (client `lxc0`, server `lxc1`) and applies `variant`.
    pub fn build(scenario: Scenario, variant: Variant, backend: IptBackend) -> Result<Rig, Error> {
        let lab = Lab::create(&[
            (scenario.client.to_string(), scenario.client_ip),
            (scenario.server.to_string(), scenario.server_ip),
        ])?;
        let locals = scenario.locals(&lab.pods[0].host_if, &lab.pods[1].host_if);
        let pairs: Vec<(LocalEndpoint, usize)> = locals.into_iter().zip([0, 1]).collect();
        let enforcer = Enforcer::apply(&lab, &scenario.cluster, &pairs, variant, backend)?;
        Ok(Rig {
            scenario,
            enforcer,
            lab,
        })
    }

    /// The enforcer.
    pub fn enforcer(&self) -> &Enforcer {
        &self.enforcer
    }

    /// UDP packets per second received by the server (its `eth0` counter) while the client
    /// sends 64-byte frames (18-byte payloads) to the measured port for `duration`, after
    /// `warmup`. Returns (received pps, sent pps).
    pub fn udp_pps(&self, warmup: Duration, duration: Duration) -> Result<(f64, f64), Error> {
        let dst = SocketAddrV4::new(self.scenario.server_ip, self.scenario.port());
        let client = &self.lab.pods[0];
        let server = &self.lab.pods[1];
        // A bound socket at the server: packets beyond its buffer are dropped there, no ICMP.
        let sink = server
            .netns
            .run(|| UdpSocket::bind(dst))?
            .map_err(|e| Error::Io {
                operation: format!("bind {dst}"),
                source: e,
            })?;
        let stop = AtomicBool::new(false);
        let sent = AtomicU64::new(0);
        let limit = warmup + duration + Duration::from_secs(5);
        let r = std::thread::scope(|s| -> Result<(f64, f64), Error> {
            let sender = s.spawn(|| {
                client.netns.run(|| -> Result<(), Error> {
                    pin_current_thread(SENDER_CPU)?;
                    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
                        .and_then(|s| s.connect(dst).map(|_| s))
                        .map_err(|e| Error::Io {
                            operation: "udp sender".into(),
                            source: e,
                        })?;
                    let payload = [0x5au8; 18];
                    let deadline = Instant::now() + limit;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            if sock.send(&payload).is_ok() {
                                n += 1;
                            }
                        }
                        sent.store(n, Ordering::Relaxed);
                        if Instant::now() > deadline {
                            break;
                        }
                    }
                    Ok(())
                })?
            });
            let measure = || -> Result<(f64, f64), Error> {
                std::thread::sleep(warmup);
                let (rx0, tx0, t0) = (
                    server.netns.run(|| rx_packets("eth0"))??,
                    sent.load(Ordering::Relaxed),
                    Instant::now(),
                );
                std::thread::sleep(duration);
                let (rx1, tx1, t1) = (
                    server.netns.run(|| rx_packets("eth0"))??,
                    sent.load(Ordering::Relaxed),
                    Instant::now(),
                );
                let secs = (t1 - t0).as_secs_f64();
                Ok(((rx1 - rx0) as f64 / secs, (tx1 - tx0) as f64 / secs))
            };
            let r = measure();
            stop.store(true, Ordering::Relaxed);
            sender
                .join()
                .map_err(|_| Error::Rig("udp sender panicked".into()))??;
            r
        });
        drop(sink);
        r
    }

    /// TCP request/response round trips per second over one connection (1-byte request,
    /// 1-byte response) for `duration` after `warmup`.
    pub fn tcp_rr(&self, warmup: Duration, duration: Duration) -> Result<f64, Error> {
        let addr = SocketAddrV4::new(self.scenario.server_ip, self.scenario.port());
        let client = &self.lab.pods[0];
        let server = &self.lab.pods[1];
        let listener = server
            .netns
            .run(|| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, addr.port())))?
            .map_err(|e| Error::Io {
                operation: format!("listen {addr}"),
                source: e,
            })?;
        let limit = warmup + duration + Duration::from_secs(5);
        std::thread::scope(|s| -> Result<f64, Error> {
            let srv = s.spawn(|| -> Result<(), Error> {
                let io = |e| Error::Io {
                    operation: "tcp server".into(),
                    source: e,
                };
                listener.set_nonblocking(true).map_err(io)?;
                let deadline = Instant::now() + limit;
                let mut conn = loop {
                    match listener.accept() {
                        Ok((c, _)) => break c,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if Instant::now() > deadline {
                                return Err(Error::Rig("no TCP connection".into()));
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => return Err(io(e)),
                    }
                };
                conn.set_nonblocking(false).map_err(io)?;
                conn.set_nodelay(true).map_err(io)?;
                conn.set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(io)?;
                let mut b = [0u8; 1];
                while Instant::now() < deadline {
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if conn.write_all(&b).is_err() {
                                break;
                            }
                        }
                    }
                }
                Ok(())
            });
            let count = client.netns.run(|| -> Result<f64, Error> {
                pin_current_thread(SENDER_CPU)?;
                let io = |e| Error::Io {
                    operation: format!("tcp client to {addr}"),
                    source: e,
                };
                let mut c =
                    TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).map_err(io)?;
                c.set_nodelay(true).map_err(io)?;
                c.set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(io)?;
                let mut b = [0u8; 1];
                let mut rt = |c: &mut TcpStream| -> Result<(), Error> {
                    c.write_all(&[7]).map_err(io)?;
                    c.read_exact(&mut b).map_err(io)
                };
                let end_warm = Instant::now() + warmup;
                while Instant::now() < end_warm {
                    rt(&mut c)?;
                }
                let t0 = Instant::now();
                let end = t0 + duration;
                let mut n = 0u64;
                while Instant::now() < end {
                    rt(&mut c)?;
                    n += 1;
                }
                Ok(n as f64 / t0.elapsed().as_secs_f64())
            })?;
            srv.join()
                .map_err(|_| Error::Rig("tcp server panicked".into()))??;
            count
        })
    }

    /// New TCP connections per second, each one request and response then closed with a
    /// reset (no TIME_WAIT to exhaust the ports), for `duration` after `warmup`: every SYN
    /// is a new flow, so it walks the rules.
    pub fn tcp_crr(&self, warmup: Duration, duration: Duration) -> Result<f64, Error> {
        let addr = SocketAddrV4::new(self.scenario.server_ip, self.scenario.port());
        let client = &self.lab.pods[0];
        let server = &self.lab.pods[1];
        let listener = server
            .netns
            .run(|| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, addr.port())))?
            .map_err(|e| Error::Io {
                operation: format!("listen {addr}"),
                source: e,
            })?;
        let stop = AtomicBool::new(false);
        let limit = warmup + duration + Duration::from_secs(5);
        std::thread::scope(|s| -> Result<f64, Error> {
            let srv = s.spawn(|| -> Result<(), Error> {
                let io = |e| Error::Io {
                    operation: "tcp server".into(),
                    source: e,
                };
                listener.set_nonblocking(true).map_err(io)?;
                let deadline = Instant::now() + limit;
                let mut b = [0u8; 1];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut c, _)) => {
                            c.set_nonblocking(false).map_err(io)?;
                            c.set_read_timeout(Some(Duration::from_millis(500)))
                                .map_err(io)?;
                            if c.read_exact(&mut b).is_ok() {
                                let _ = c.write_all(&b);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::yield_now();
                        }
                        Err(e) => return Err(io(e)),
                    }
                }
                Ok(())
            });
            let rate = client.netns.run(|| -> Result<f64, Error> {
                pin_current_thread(SENDER_CPU)?;
                let io = |e| Error::Io {
                    operation: format!("tcp client to {addr}"),
                    source: e,
                };
                let one = || -> Result<(), Error> {
                    let mut c = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))
                        .map_err(io)?;
                    c.set_nodelay(true).map_err(io)?;
                    c.set_read_timeout(Some(Duration::from_secs(2)))
                        .map_err(io)?;
                    c.write_all(&[7]).map_err(io)?;
                    let mut b = [0u8; 1];
                    c.read_exact(&mut b).map_err(io)?;
                    socket2::SockRef::from(&c)
                        .set_linger(Some(Duration::ZERO))
                        .map_err(io)
                };
                let end_warm = Instant::now() + warmup;
                while Instant::now() < end_warm {
                    one()?;
                }
                let t0 = Instant::now();
                let end = t0 + duration;
                let mut n = 0u64;
                while Instant::now() < end {
                    one()?;
                    n += 1;
                }
                Ok(n as f64 / t0.elapsed().as_secs_f64())
            })?;
            stop.store(true, Ordering::Relaxed);
            srv.join()
                .map_err(|_| Error::Rig("tcp server panicked".into()))??;
            rate
        })
    }

    /// Applies `change` to the scenario and pushes it with `mode`.
    pub fn update(&mut self, change: &Change, mode: UpdateMode) -> Result<UpdateTiming, Error> {
        let t0 = Instant::now();
        self.scenario.apply(change)?;
        let (ops, kernel) = self.enforcer.update(&self.scenario.cluster, change, mode)?;
        Ok(UpdateTiming {
            total: t0.elapsed(),
            kernel,
            ops,
        })
    }

    /// Memory and size figures.
    pub fn footprint(&self) -> Result<Footprint, Error> {
        self.enforcer.footprint()
    }
}

/// What one update cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateTiming {
    /// From the change to the kernel enforcing it (render or compile included).
    pub total: Duration,
    /// The kernel-facing part alone (restore commands, `nft`, `Datapath::apply_diff`).
    pub kernel: Duration,
    /// Kernel-side operations carried.
    pub ops: usize,
}

/// Median, minimum and maximum of repeated samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    /// Median.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub n: usize,
}

impl Stat {
    /// Of these samples (all zero when empty).
    pub fn of(samples: &[f64]) -> Stat {
        if samples.is_empty() {
            return Stat::default();
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Stat {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
}

/// `BPF_PROG_TEST_RUN` nanoseconds per packet of the `to_pod` program for the scenario's
/// server: (measured flow allowed — conntrack hit after the first run; a denied flow — the
/// full policy path every run). `repeat` runs per sample, `samples` samples.
pub fn test_run_ns(
    scenario: &Scenario,
    repeat: u32,
    samples: usize,
) -> Result<(Stat, Stat), Error> {
    use strata_datapath::{
        loader::{Hook, LoadOptions},
        packet::{Builder, L4},
    };
    let engine = PolicyEngine::compile(&scenario.cluster);
    let local = scenario.locals("lo", "lo");
    // BPF_PROG_TEST_RUN runs on the loopback device: the server endpoint is ifindex 1.
    let state = strata_state(&engine, &[(local[1].clone(), 1)])?;
    let mut dp = Datapath::load(&LoadOptions::default())?;
    dp.sync(&state)?;
    let frame = |src: Ipv4Addr, port: u16| {
        Builder::v4(IpAddr::V4(src), IpAddr::V4(scenario.server_ip))
            .l4(L4::Udp {
                sport: 40000,
                dport: port,
            })
            .payload(&[0u8; 18])
            .build()
    };
    let allowed = frame(scenario.client_ip, scenario.port());
    let denied = frame(scenario.client_ip, 5999);
    let mut a = Vec::new();
    let mut d = Vec::new();
    let first = dp.test_run(Hook::ToPod, &allowed, 1)?;
    if first.code != 0 {
        return Err(Error::Rig(format!(
            "measured flow not allowed by the program (code {})",
            first.code
        )));
    }
    for _ in 0..samples {
        a.push(dp.test_run(Hook::ToPod, &allowed, repeat)?.duration_ns as f64);
        let r = dp.test_run(Hook::ToPod, &denied, repeat)?;
        if r.code != 2 {
            return Err(Error::Rig(format!(
                "denied flow passed the program (code {})",
                r.code
            )));
        }
        d.push(r.duration_ns as f64);
    }
    Ok((Stat::of(&a), Stat::of(&d)))
}

/// Results keyed by variant name (helper for the report).
pub type ByVariant<T> = BTreeMap<Variant, T>;
