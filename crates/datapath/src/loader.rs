//! The aya shell: loads the embedded object, pins maps under `/sys/fs/bpf/strata/…`, attaches
//! the programs to an interface's clsact hooks (TCX links, pinned, replaced atomically by a new
//! loader), keeps the configuration maps equal to a [`MapState`] by diff, reads counters,
//! conntrack and events, and runs packets through `BPF_PROG_TEST_RUN`.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions,
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
    },
};

use crate::{
    Error, OBJECT,
    abi::{
        COUNTERS, Config, Counter, CtKey, CtValue, ENDPOINTS_MAX, Endpoint, Event, IPCACHE_MAX,
        IpcacheKey, IpcacheKeyData, IpcacheValue, POLICY_MAX, POLICY_PREFIX_FULL, PolicyKey,
        PolicyKeyData, PolicyValue,
    },
    state::{MapDiff, MapState},
    sys,
};

/// Where pinned objects live by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/strata";

/// The maps of the object, in pin order.
pub const MAPS: [&str; 9] = [
    "endpoints",
    "ipcache",
    "ipcache_hosts",
    "policy",
    "policy_exact",
    "conntrack",
    "counters",
    "config",
    "events",
];

/// A program of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `from_pod`: clsact ingress of the host-side veth (the pod's egress policy).
    FromPod,
    /// `to_pod`: clsact egress of the host-side veth (the pod's ingress policy).
    ToPod,
}

impl Hook {
    /// The program's name in the object.
    pub fn program(self) -> &'static str {
        match self {
            Hook::FromPod => "from_pod",
            Hook::ToPod => "to_pod",
        }
    }

    /// The direction constant the program uses.
    pub fn direction(self) -> u8 {
        match self {
            Hook::FromPod => crate::abi::DIR_EGRESS,
            Hook::ToPod => crate::abi::DIR_INGRESS,
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::FromPod => TcAttachType::Ingress,
            Hook::ToPod => TcAttachType::Egress,
        }
    }
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin (and reuse) maps and links under this directory; `None` keeps them private to this
    /// process (tests, benches).
    pub pin_dir: Option<PathBuf>,
    /// One allow event per this many allowed packets (0: none). Drops always emit events.
    pub allow_sample: u32,
}

impl LoadOptions {
    /// Pinned under [`DEFAULT_PIN_DIR`].
    pub fn pinned() -> LoadOptions {
        LoadOptions {
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            allow_sample: 0,
        }
    }
}

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The program's return code (0 pass, 2 drop).
    pub code: u32,
    /// The packet after the program.
    pub output: Vec<u8>,
    /// Average nanoseconds per run, as the kernel measured.
    pub duration_ns: u64,
}

/// What a sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries inserted or overwritten.
    pub upserts: usize,
    /// Entries removed.
    pub removals: usize,
}

/// The loaded datapath.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    shadow: MapState,
    events: Option<RingBuf<MapData>>,
    links: BTreeMap<(String, &'static str), PinnedLink>,
    config: Config,
    generation: u32,
    reuse_verdicts: bool,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pin_dir", &self.pin_dir)
            .field("endpoints", &self.shadow.endpoints.len())
            .field("ipcache", &self.shadow.ipcache.len())
            .field("policy", &self.shadow.policy.len())
            .finish()
    }
}

/// Removing a key that is already gone is not an error (the map ends as wanted).
fn absent_ok(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn map_err(map: &'static str, operation: &'static str, e: MapError) -> Error {
    if let MapError::SyscallError(s) = &e {
        let code = s.io_error.raw_os_error();
        if code == Some(libc::E2BIG) || code == Some(libc::ENOSPC) {
            return Error::MapFull {
                map,
                wanted: 0,
                capacity: 0,
            };
        }
    }
    Error::Map {
        map,
        operation,
        source: Box::new(e),
    }
}

fn io_err(operation: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        operation,
        path: path.display().to_string(),
        source,
    }
}

/// Makes sure a BPF filesystem is mounted at /sys/fs/bpf (mounting one if not) and that
/// `dir` exists on it.
pub fn ensure_pin_dir(dir: &Path) -> Result<(), Error> {
    let root = Path::new("/sys/fs/bpf");
    if !sys::is_bpffs(root).map_err(|e| io_err("statfs", root, e))? {
        std::fs::create_dir_all(root).map_err(|e| io_err("mkdir", root, e))?;
        sys::mount_bpffs(root).map_err(|e| io_err("mount bpffs", root, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err("mkdir", dir, e))?;
    Ok(())
}

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    sys::euid() == 0
}

impl Datapath {
    /// Loads the embedded object and its two programs. With a pin directory, maps already
    /// pinned there are reused (state survives a restart) and new ones are pinned.
    pub fn load(options: &LoadOptions) -> Result<Datapath, Error> {
        Datapath::load_object(OBJECT, options)
    }

    /// Loads another build of `bpf/policy.c` (same maps and programs), e.g. one compiled with
    /// different flags; a verifier rejection is [`Error::Verifier`] with the verifier's log.
    pub fn load_object(object: &[u8], options: &LoadOptions) -> Result<Datapath, Error> {
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&'static str, PathBuf)> = match &options.pin_dir {
            Some(dir) => {
                ensure_pin_dir(dir)?;
                MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object).map_err(|e| Error::Load {
            source: Box::new(e),
        })?;
        for hook in [Hook::FromPod, Hook::ToPod] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(hook.program())
                .ok_or(Error::MissingProgram {
                    program: hook.program(),
                })?
                .try_into()
                .map_err(|e| Error::Program {
                    operation: "lookup",
                    program: hook.program().to_owned(),
                    source: Box::new(e),
                })?;
            prog.load().map_err(|e| match e {
                ProgramError::LoadError {
                    io_error,
                    verifier_log,
                } => Error::Verifier {
                    program: hook.program().to_owned(),
                    log: verifier_log.to_string(),
                    source: io_error,
                },
                other => Error::Program {
                    operation: "load",
                    program: hook.program().to_owned(),
                    source: Box::new(other),
                },
            })?;
        }
        let events = ebpf
            .take_map("events")
            .ok_or(Error::MissingMap { map: "events" })?;
        let events = RingBuf::try_from(events).map_err(|e| map_err("events", "open", e))?;
        let mut dp = Datapath {
            ebpf,
            pin_dir: options.pin_dir.clone(),
            shadow: MapState::default(),
            events: Some(events),
            links: BTreeMap::new(),
            config: Config::default(),
            generation: 0,
            reuse_verdicts: true,
        };
        dp.shadow = dp.read_state()?;
        // A pinned config carries the generation of a previous loader: continue after it.
        let previous: Array<_, Config> = dp.typed_map("config")?;
        let previous = previous
            .get(&0, 0)
            .map_err(|e| map_err("config", "read", e))?;
        dp.config = Config {
            allow_sample: options.allow_sample,
            generation: 0,
        };
        dp.generation = previous.generation;
        dp.bump_generation()?;
        Ok(dp)
    }

    /// The pin directory, if pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// The configuration maps as this loader believes them to be.
    pub fn state(&self) -> &MapState {
        &self.shadow
    }

    /// Reads the endpoints, ipcache and policy maps back from the kernel.
    pub fn read_state(&self) -> Result<MapState, Error> {
        let mut s = MapState::default();
        let eps: HashMap<_, u32, Endpoint> = self.typed_map("endpoints")?;
        for kv in eps.iter() {
            let (k, v) = kv.map_err(|e| map_err("endpoints", "read", e))?;
            s.endpoints.insert(k, v);
        }
        let ipc: LpmTrie<_, IpcacheKeyData, IpcacheValue> = self.typed_map("ipcache")?;
        for kv in ipc.iter() {
            let (k, v) = kv.map_err(|e| map_err("ipcache", "read", e))?;
            s.ipcache.insert(
                IpcacheKey {
                    prefixlen: k.prefix_len(),
                    addr: k.data(),
                },
                v,
            );
        }
        let hosts: HashMap<_, IpcacheKeyData, IpcacheValue> = self.typed_map("ipcache_hosts")?;
        for kv in hosts.iter() {
            let (k, v) = kv.map_err(|e| map_err("ipcache_hosts", "read", e))?;
            s.ipcache.insert(
                IpcacheKey {
                    prefixlen: 128,
                    addr: k,
                },
                v,
            );
        }
        let exact: HashMap<_, PolicyKeyData, PolicyValue> = self.typed_map("policy_exact")?;
        for kv in exact.iter() {
            let (k, v) = kv.map_err(|e| map_err("policy_exact", "read", e))?;
            s.policy
                .insert(PolicyKey::from_data(POLICY_PREFIX_FULL, k), v);
        }
        let pol: LpmTrie<_, PolicyKeyData, PolicyValue> = self.typed_map("policy")?;
        for kv in pol.iter() {
            let (k, v) = kv.map_err(|e| map_err("policy", "read", e))?;
            s.policy
                .insert(PolicyKey::from_data(k.prefix_len(), k.data()), v);
        }
        Ok(s)
    }

    fn typed_map<'a, T>(&'a self, name: &'static str) -> Result<T, Error>
    where
        T: TryFrom<&'a aya::maps::Map, Error = MapError>,
    {
        let m = self.ebpf.map(name).ok_or(Error::MissingMap { map: name })?;
        T::try_from(m).map_err(|_| Error::MissingMap { map: name })
    }

    fn typed_map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, Error>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let m = self
            .ebpf
            .map_mut(name)
            .ok_or(Error::MissingMap { map: name })?;
        T::try_from(m).map_err(|_| Error::MissingMap { map: name })
    }

    /// Emits one allow event per `every` allowed packets (0: none); drops always emit.
    pub fn set_allow_sample(&mut self, every: u32) -> Result<(), Error> {
        self.config.allow_sample = every;
        self.write_config()
    }

    /// The generation of the endpoints, ipcache and policy maps. Conntrack entries stamped
    /// with it reuse their verdict; every change to those maps moves to a new generation.
    pub fn generation(&self) -> u32 {
        self.config.generation
    }

    /// Whether packets of a tracked connection reuse its verdict while the maps are unchanged
    /// (on by default). Off, every forward packet is looked up (generation 0), as the benches
    /// use to measure the full policy path.
    pub fn set_reuse_verdicts(&mut self, on: bool) -> Result<(), Error> {
        self.reuse_verdicts = on;
        self.config.generation = if on { self.generation } else { 0 };
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), Error> {
        let config = self.config;
        let mut cfg: Array<_, Config> = self.typed_map_mut("config")?;
        cfg.set(0, config, 0)
            .map_err(|e| map_err("config", "update", e))
    }

    /// Moves to a new generation (never 0, which means "never reuse a verdict").
    fn bump_generation(&mut self) -> Result<(), Error> {
        self.generation = match self.generation.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        self.config.generation = if self.reuse_verdicts {
            self.generation
        } else {
            0
        };
        self.write_config()
    }

    /// Makes the kernel maps equal `desired`, touching only entries that differ. Entries are
    /// added before stale ones are removed, so a relabel never opens a gap. A state that does
    /// not fit a map is refused before anything changes ([`Error::MapFull`]); if the kernel
    /// rejects an update midway, the operations already done are undone and the error returned.
    pub fn sync(&mut self, desired: &MapState) -> Result<SyncStats, Error> {
        let hosts = desired.ipcache.keys().filter(|k| is_host(k)).count();
        let exact = desired.policy.keys().filter(|k| is_exact(k)).count();
        for (map, wanted, capacity) in [
            ("endpoints", desired.endpoints.len(), ENDPOINTS_MAX),
            ("ipcache_hosts", hosts, IPCACHE_MAX),
            ("ipcache", desired.ipcache.len() - hosts, IPCACHE_MAX),
            ("policy_exact", exact, POLICY_MAX),
            ("policy", desired.policy.len() - exact, POLICY_MAX),
        ] {
            if wanted > capacity as usize {
                return Err(Error::MapFull {
                    map,
                    wanted,
                    capacity,
                });
            }
        }
        check_entries(desired.ipcache.keys(), desired.policy.keys())?;
        let diff = MapDiff::between(&self.shadow, desired);
        let stats = SyncStats {
            upserts: diff.endpoints.upsert.len()
                + diff.ipcache.upsert.len()
                + diff.policy.upsert.len(),
            removals: diff.endpoints.remove.len()
                + diff.ipcache.remove.len()
                + diff.policy.remove.len(),
        };
        if let Err(e) = self.apply(&diff) {
            // Undo: bring the kernel back to the shadow (best effort), report the first error.
            let undo = MapDiff::between(desired, &self.shadow);
            let _ = self.apply_lenient(&undo);
            let _ = self.bump_generation();
            return Err(match e {
                Error::MapFull { map, .. } => Error::MapFull {
                    map,
                    wanted: match map {
                        "endpoints" => desired.endpoints.len(),
                        "ipcache_hosts" => hosts,
                        "ipcache" => desired.ipcache.len() - hosts,
                        "policy_exact" => exact,
                        _ => desired.policy.len() - exact,
                    },
                    capacity: match map {
                        "endpoints" => ENDPOINTS_MAX,
                        "ipcache" | "ipcache_hosts" => IPCACHE_MAX,
                        _ => POLICY_MAX,
                    },
                },
                other => other,
            });
        }
        self.shadow = desired.clone();
        if !diff.is_empty() {
            self.bump_generation()?;
        }
        Ok(stats)
    }

    /// Applies an incremental diff (e.g. one relabel) without comparing whole states: checks
    /// capacities and entries first (nothing changes on a refusal), applies, and on a kernel
    /// error undoes what was done.
    pub fn apply_diff(&mut self, diff: &MapDiff) -> Result<SyncStats, Error> {
        fn grows<K: Ord, V>(
            m: &std::collections::BTreeMap<K, V>,
            c: &crate::state::Changes<K, V>,
            class: impl Fn(&K) -> bool,
            capacity: u32,
        ) -> usize {
            // Counting a class walks the whole map: only when the map as a whole could
            // overflow this capacity.
            let all_added = c.upsert.iter().filter(|(k, _)| !m.contains_key(k)).count();
            if m.len() + all_added <= capacity as usize {
                return 0;
            }
            let now = m.keys().filter(|k| class(k)).count();
            let added = c
                .upsert
                .iter()
                .filter(|(k, _)| class(k) && !m.contains_key(k))
                .count();
            let removed = c
                .remove
                .iter()
                .filter(|k| class(k) && m.contains_key(k))
                .count();
            (now + added).saturating_sub(removed)
        }
        let (ipc, pol) = (&self.shadow.ipcache, &self.shadow.policy);
        let sizes = [
            (
                "endpoints",
                grows(
                    &self.shadow.endpoints,
                    &diff.endpoints,
                    |_| true,
                    ENDPOINTS_MAX,
                ),
                ENDPOINTS_MAX,
            ),
            (
                "ipcache_hosts",
                grows(ipc, &diff.ipcache, is_host, IPCACHE_MAX),
                IPCACHE_MAX,
            ),
            (
                "ipcache",
                grows(ipc, &diff.ipcache, |k| !is_host(k), IPCACHE_MAX),
                IPCACHE_MAX,
            ),
            (
                "policy_exact",
                grows(pol, &diff.policy, is_exact, POLICY_MAX),
                POLICY_MAX,
            ),
            (
                "policy",
                grows(pol, &diff.policy, |k| !is_exact(k), POLICY_MAX),
                POLICY_MAX,
            ),
        ];
        for (map, wanted, capacity) in sizes {
            if wanted > capacity as usize {
                return Err(Error::MapFull {
                    map,
                    wanted,
                    capacity,
                });
            }
        }
        check_entries(
            diff.ipcache.upsert.iter().map(|(k, _)| k),
            diff.policy.upsert.iter().map(|(k, _)| k),
        )?;
        let mut target = self.shadow.clone_for(diff);
        diff.apply(&mut target);
        if let Err(e) = self.apply(diff) {
            let undo = MapDiff::between(&target, &self.shadow.clone_for(diff));
            let _ = self.apply_lenient(&undo);
            // Verdicts cached while the maps were half-changed must not be reused.
            let _ = self.bump_generation();
            return Err(match e {
                Error::MapFull { map, .. } => {
                    let (_, wanted, capacity) = sizes
                        .into_iter()
                        .find(|(m, _, _)| *m == map)
                        .unwrap_or((map, 0, 0));
                    Error::MapFull {
                        map,
                        wanted,
                        capacity,
                    }
                }
                other => other,
            });
        }
        diff.apply(&mut self.shadow);
        if !diff.is_empty() {
            self.bump_generation()?;
        }
        Ok(SyncStats {
            upserts: diff.endpoints.upsert.len()
                + diff.ipcache.upsert.len()
                + diff.policy.upsert.len(),
            removals: diff.endpoints.remove.len()
                + diff.ipcache.remove.len()
                + diff.policy.remove.len(),
        })
    }

    fn map_fd(&self, name: &'static str) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        use aya::maps::Map;
        use std::os::fd::AsFd;
        match self.ebpf.map(name) {
            Some(Map::HashMap(d) | Map::LpmTrie(d)) => Ok(d.fd().as_fd()),
            _ => Err(Error::MissingMap { map: name }),
        }
    }

    /// Writes entries with one `BPF_MAP_UPDATE_BATCH`; `Ok(false)` when the kernel has no batch
    /// support for this map (the caller then writes one by one).
    fn upsert_batch(
        &self,
        map: &'static str,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<bool, Error> {
        if entries.is_empty() {
            return Ok(true);
        }
        let keys: Vec<u8> = entries
            .iter()
            .flat_map(|(k, _)| k.iter().copied())
            .collect();
        let values: Vec<u8> = entries
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        match sys::map_update_batch(self.map_fd(map)?, &keys, &values, entries.len()) {
            Ok(()) => Ok(true),
            Err(e) if e.done == 0 && batch_unsupported(&e.error) => Ok(false),
            Err(e) => Err(batch_err(map, "BPF_MAP_UPDATE_BATCH", e.error)),
        }
    }

    /// Deletes keys with `BPF_MAP_DELETE_BATCH`, skipping keys already absent; `Ok(false)` when
    /// the kernel has no batch support for this map.
    fn remove_batch(&self, map: &'static str, keys: &[Vec<u8>]) -> Result<bool, Error> {
        let mut start = 0;
        // Each round either finishes or skips one absent key: bounded by the key count.
        for _ in 0..=keys.len() {
            if start >= keys.len() {
                return Ok(true);
            }
            let rest: Vec<u8> = keys[start..].iter().flatten().copied().collect();
            match sys::map_delete_batch(self.map_fd(map)?, &rest, keys.len() - start) {
                Ok(()) => return Ok(true),
                Err(e) if e.error.raw_os_error() == Some(libc::ENOENT) => start += e.done + 1,
                Err(e) if start == 0 && e.done == 0 && batch_unsupported(&e.error) => {
                    return Ok(false);
                }
                Err(e) => return Err(batch_err(map, "BPF_MAP_DELETE_BATCH", e.error)),
            }
        }
        Ok(true)
    }

    fn apply(&mut self, d: &MapDiff) -> Result<(), Error> {
        // Additions first (ipcache, policy, endpoints), then removals in reverse order, so a
        // relabel never opens a gap. Each step is one batched system call where the kernel
        // supports it, element by element otherwise.
        let host_up: Vec<_> = d
            .ipcache
            .upsert
            .iter()
            .filter(|(k, _)| is_host(k))
            .collect();
        let host_bytes: Vec<_> = host_up
            .iter()
            .map(|(k, v)| (k.addr.to_vec(), ipcache_value_bytes(v)))
            .collect();
        if !self.upsert_batch("ipcache_hosts", &host_bytes)? {
            let mut m: HashMap<_, IpcacheKeyData, IpcacheValue> =
                self.typed_map_mut("ipcache_hosts")?;
            for (k, v) in &host_up {
                m.insert(k.addr, v, 0)
                    .map_err(|e| map_err("ipcache_hosts", "insert", e))?;
            }
        }
        let prefix_up: Vec<_> = d
            .ipcache
            .upsert
            .iter()
            .filter(|(k, _)| !is_host(k))
            .collect();
        let prefix_bytes: Vec<_> = prefix_up
            .iter()
            .map(|(k, v)| (ipcache_key_bytes(k), ipcache_value_bytes(v)))
            .collect();
        if !self.upsert_batch("ipcache", &prefix_bytes)? {
            let mut m: LpmTrie<_, IpcacheKeyData, IpcacheValue> = self.typed_map_mut("ipcache")?;
            for (k, v) in &prefix_up {
                m.insert(&Key::new(k.prefixlen, k.addr), v, 0)
                    .map_err(|e| map_err("ipcache", "insert", e))?;
            }
        }
        let exact_up: Vec<_> = d
            .policy
            .upsert
            .iter()
            .filter(|(k, _)| is_exact(k))
            .collect();
        let exact_bytes: Vec<_> = exact_up
            .iter()
            .map(|(k, v)| (k.data_bytes().to_vec(), policy_value_bytes(v)))
            .collect();
        if !self.upsert_batch("policy_exact", &exact_bytes)? {
            let mut m: HashMap<_, PolicyKeyData, PolicyValue> =
                self.typed_map_mut("policy_exact")?;
            for (k, v) in &exact_up {
                m.insert(k.data(), v, 0)
                    .map_err(|e| map_err("policy_exact", "insert", e))?;
            }
        }
        let lpm_up: Vec<_> = d
            .policy
            .upsert
            .iter()
            .filter(|(k, _)| !is_exact(k))
            .collect();
        let lpm_bytes: Vec<_> = lpm_up
            .iter()
            .map(|(k, v)| (policy_key_bytes(k), policy_value_bytes(v)))
            .collect();
        if !self.upsert_batch("policy", &lpm_bytes)? {
            let mut m: LpmTrie<_, PolicyKeyData, PolicyValue> = self.typed_map_mut("policy")?;
            for (k, v) in &lpm_up {
                m.insert(&Key::new(k.prefixlen, k.data()), v, 0)
                    .map_err(|e| map_err("policy", "insert", e))?;
            }
        }
        let ep_bytes: Vec<_> = d
            .endpoints
            .upsert
            .iter()
            .map(|(k, v)| (k.to_ne_bytes().to_vec(), endpoint_bytes(v)))
            .collect();
        if !self.upsert_batch("endpoints", &ep_bytes)? {
            let mut m: HashMap<_, u32, Endpoint> = self.typed_map_mut("endpoints")?;
            for (k, v) in &d.endpoints.upsert {
                m.insert(k, v, 0)
                    .map_err(|e| map_err("endpoints", "insert", e))?;
            }
        }
        let keys: Vec<_> = d
            .endpoints
            .remove
            .iter()
            .map(|k| k.to_ne_bytes().to_vec())
            .collect();
        if !self.remove_batch("endpoints", &keys)? {
            let mut m: HashMap<_, u32, Endpoint> = self.typed_map_mut("endpoints")?;
            for k in &d.endpoints.remove {
                absent_ok(m.remove(k)).map_err(|e| map_err("endpoints", "remove", e))?;
            }
        }
        let exact_rm: Vec<_> = d.policy.remove.iter().filter(|k| is_exact(k)).collect();
        let keys: Vec<_> = exact_rm.iter().map(|k| k.data_bytes().to_vec()).collect();
        if !self.remove_batch("policy_exact", &keys)? {
            let mut m: HashMap<_, PolicyKeyData, PolicyValue> =
                self.typed_map_mut("policy_exact")?;
            for k in &exact_rm {
                absent_ok(m.remove(&k.data())).map_err(|e| map_err("policy_exact", "remove", e))?;
            }
        }
        let lpm_rm: Vec<_> = d.policy.remove.iter().filter(|k| !is_exact(k)).collect();
        let keys: Vec<_> = lpm_rm.iter().map(|k| policy_key_bytes(k)).collect();
        if !self.remove_batch("policy", &keys)? {
            let mut m: LpmTrie<_, PolicyKeyData, PolicyValue> = self.typed_map_mut("policy")?;
            for k in &lpm_rm {
                absent_ok(m.remove(&Key::new(k.prefixlen, k.data())))
                    .map_err(|e| map_err("policy", "remove", e))?;
            }
        }
        let prefix_rm: Vec<_> = d.ipcache.remove.iter().filter(|k| !is_host(k)).collect();
        let keys: Vec<_> = prefix_rm.iter().map(|k| ipcache_key_bytes(k)).collect();
        if !self.remove_batch("ipcache", &keys)? {
            let mut m: LpmTrie<_, IpcacheKeyData, IpcacheValue> = self.typed_map_mut("ipcache")?;
            for k in &prefix_rm {
                absent_ok(m.remove(&Key::new(k.prefixlen, k.addr)))
                    .map_err(|e| map_err("ipcache", "remove", e))?;
            }
        }
        let host_rm: Vec<_> = d.ipcache.remove.iter().filter(|k| is_host(k)).collect();
        let keys: Vec<_> = host_rm.iter().map(|k| k.addr.to_vec()).collect();
        if !self.remove_batch("ipcache_hosts", &keys)? {
            let mut m: HashMap<_, IpcacheKeyData, IpcacheValue> =
                self.typed_map_mut("ipcache_hosts")?;
            for k in &host_rm {
                absent_ok(m.remove(&k.addr)).map_err(|e| map_err("ipcache_hosts", "remove", e))?;
            }
        }
        Ok(())
    }

    fn apply_lenient(&mut self, d: &MapDiff) -> Result<(), Error> {
        let mut first = Ok(());
        for one in split(d) {
            if let Err(e) = self.apply(&one)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Counters summed over CPUs, index `reason + 32 * direction`.
    pub fn counters(&self) -> Result<Vec<Counter>, Error> {
        let m: PerCpuArray<_, Counter> = self.typed_map("counters")?;
        let mut out = Vec::with_capacity(COUNTERS as usize);
        for i in 0..COUNTERS {
            let per_cpu = m.get(&i, 0).map_err(|e| map_err("counters", "read", e))?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            out.push(sum);
        }
        Ok(out)
    }

    /// The conntrack table.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtValue)>, Error> {
        let m: HashMap<_, CtKey, CtValue> = self.typed_map("conntrack")?;
        m.iter()
            .map(|kv| kv.map_err(|e| map_err("conntrack", "read", e)))
            .collect()
    }

    /// Takes up to `max` events from the ring buffer without waiting.
    pub fn drain_events(&mut self, max: usize) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(rb) = self.events.as_mut() {
            while out.len() < max {
                let Some(item) = rb.next() else { break };
                if let Some(e) = Event::decode(&item) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// Runs one frame through a program with `BPF_PROG_TEST_RUN` (on the loopback device of
    /// the current network namespace, ifindex 1).
    pub fn test_run(&self, hook: Hook, frame: &[u8], repeat: u32) -> Result<RunResult, Error> {
        self.test_run_on(hook, frame, 1, repeat)
    }

    /// Runs one frame through a program with `BPF_PROG_TEST_RUN` as if it arrived on
    /// interface `ifindex` of the calling thread's network namespace (which must exist).
    pub fn test_run_on(
        &self,
        hook: Hook,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<RunResult, Error> {
        // The leading fields of `struct __sk_buff` up to `ifindex` (offset 40): all zero but
        // `ifindex`, which the kernel accepts as input.
        let mut ctx = [0u8; 44];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let prog: &SchedClassifier = self
            .ebpf
            .program(hook.program())
            .ok_or(Error::MissingProgram {
                program: hook.program(),
            })?
            .try_into()
            .map_err(|e| Error::Program {
                operation: "lookup",
                program: hook.program().to_owned(),
                source: Box::new(e),
            })?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: (ifindex > 1).then_some(&ctx[..]),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::Program {
                operation: "BPF_PROG_TEST_RUN",
                program: hook.program().to_owned(),
                source: Box::new(e),
            })?;
        out.truncate(r.data_size_out as usize);
        Ok(RunResult {
            code: r.return_value,
            output: out,
            duration_ns: r.duration.as_nanos() as u64,
        })
    }

    /// Attaches both programs to interface `ifname` (in this thread's network namespace):
    /// `from_pod` on its ingress hook, `to_pod` on its egress hook, as TCX links. With a pin
    /// directory the links are pinned under `links/`, and a link already pinned there (from an
    /// earlier loader) is updated in place to the new program: traffic is never unenforced.
    pub fn attach(&mut self, ifname: &str) -> Result<(), Error> {
        for hook in [Hook::FromPod, Hook::ToPod] {
            let pin = self
                .pin_dir
                .as_ref()
                .map(|d| d.join("links").join(format!("{ifname}-{}", hook.program())));
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(hook.program())
                .ok_or(Error::MissingProgram {
                    program: hook.program(),
                })?
                .try_into()
                .map_err(|e| Error::Program {
                    operation: "lookup",
                    program: hook.program().to_owned(),
                    source: Box::new(e),
                })?;
            let perr = |operation: &'static str, e: ProgramError| Error::Program {
                operation,
                program: hook.program().to_owned(),
                source: Box::new(e),
            };
            if let Some(pin) = &pin
                && pin.exists()
            {
                let old = PinnedLink::from_pin(pin).map_err(|e| Error::Io {
                    operation: "open pinned link",
                    path: pin.display().to_string(),
                    source: io::Error::other(e.to_string()),
                })?;
                let link = FdLink::from(old).try_into().map_err(|e| Error::Io {
                    operation: "open pinned link",
                    path: pin.display().to_string(),
                    source: io::Error::other(format!("{e}")),
                })?;
                prog.attach_to_link(link).map_err(|e| perr("replace", e))?;
                continue;
            }
            let id = prog
                .attach_with_options(
                    ifname,
                    hook.attach_type(),
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|e| perr("attach", e))?;
            if let Some(pin) = pin {
                let parent = pin.parent().unwrap_or(Path::new("/"));
                std::fs::create_dir_all(parent).map_err(|e| io_err("mkdir", parent, e))?;
                let link = prog.take_link(id).map_err(|e| perr("take link", e))?;
                let fd: FdLink = link.try_into().map_err(|e| Error::Io {
                    operation: "link fd",
                    path: ifname.to_owned(),
                    source: io::Error::other(format!("{e}")),
                })?;
                let pinned = fd.pin(&pin).map_err(|e| Error::Io {
                    operation: "pin link",
                    path: pin.display().to_string(),
                    source: io::Error::other(e.to_string()),
                })?;
                self.links
                    .insert((ifname.to_owned(), hook.program()), pinned);
            }
        }
        Ok(())
    }

    /// Detaches the programs from `ifname` by removing their pinned links (pinned mode). In
    /// unpinned mode the links go away when the [`Datapath`] is dropped.
    pub fn detach(&mut self, ifname: &str) -> Result<(), Error> {
        for hook in [Hook::FromPod, Hook::ToPod] {
            self.links.remove(&(ifname.to_owned(), hook.program()));
            if let Some(dir) = &self.pin_dir {
                let pin = dir
                    .join("links")
                    .join(format!("{ifname}-{}", hook.program()));
                match std::fs::remove_file(&pin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("unpin link", &pin, e)),
                }
            }
        }
        Ok(())
    }
}

/// The kernel has no batch operation for this map type (fall back to one by one).
fn batch_unsupported(e: &io::Error) -> bool {
    // ENOTSUPP (524) is the kernel-internal "not supported" some map types return.
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524)
    )
}

fn batch_err(map: &'static str, operation: &'static str, e: io::Error) -> Error {
    let code = e.raw_os_error();
    if code == Some(libc::E2BIG) || code == Some(libc::ENOSPC) {
        return Error::MapFull {
            map,
            wanted: 0,
            capacity: 0,
        };
    }
    Error::Io {
        operation,
        path: map.to_owned(),
        source: e,
    }
}

fn ipcache_key_bytes(k: &IpcacheKey) -> Vec<u8> {
    let mut b = k.prefixlen.to_ne_bytes().to_vec();
    b.extend_from_slice(&k.addr);
    b
}

fn ipcache_value_bytes(v: &IpcacheValue) -> Vec<u8> {
    let mut b = v.identity.to_ne_bytes().to_vec();
    b.extend_from_slice(&v.flags.to_ne_bytes());
    b
}

fn policy_key_bytes(k: &PolicyKey) -> Vec<u8> {
    let mut b = k.prefixlen.to_ne_bytes().to_vec();
    b.extend_from_slice(&k.data_bytes());
    b
}

fn policy_value_bytes(v: &PolicyValue) -> Vec<u8> {
    let mut b = v.verdict.to_ne_bytes().to_vec();
    b.extend_from_slice(&v.rule.to_ne_bytes());
    b
}

fn endpoint_bytes(v: &Endpoint) -> Vec<u8> {
    [v.endpoint_id, v.identity, v.flags, v.reserved]
        .iter()
        .flat_map(|x| x.to_ne_bytes())
        .collect()
}

/// Host entries (full-length prefixes) live in the `ipcache_hosts` hash.
fn is_host(k: &IpcacheKey) -> bool {
    k.prefixlen == 128
}

/// Fully specified policy entries live in the `policy_exact` hash.
fn is_exact(k: &PolicyKey) -> bool {
    k.prefixlen == POLICY_PREFIX_FULL
}

fn check_entries<'a>(
    ipcache: impl IntoIterator<Item = &'a IpcacheKey>,
    policy: impl IntoIterator<Item = &'a PolicyKey>,
) -> Result<(), Error> {
    for k in ipcache {
        if k.prefixlen > 128 {
            return Err(Error::InvalidEntry {
                map: "ipcache",
                detail: format!("prefix length {} > 128", k.prefixlen),
            });
        }
    }
    for k in policy {
        if k.prefixlen > 96 {
            return Err(Error::InvalidEntry {
                map: "policy",
                detail: format!(
                    "endpoint {} identity {}: prefix length {} > 96",
                    k.endpoint_id, k.identity, k.prefixlen
                ),
            });
        }
    }
    Ok(())
}

/// Splits a diff into one diff per operation (so that undo goes as far as it can).
fn split(d: &MapDiff) -> Vec<MapDiff> {
    let mut out = Vec::new();
    // One single-op diff per upsert and per remove of each map, in this order.
    macro_rules! one_each {
        ($($map:ident . $list:ident),*) => {$(
            for op in &d.$map.$list {
                let mut x = MapDiff::default();
                x.$map.$list.push(*op);
                out.push(x);
            }
        )*};
    }
    one_each!(
        endpoints.upsert,
        endpoints.remove,
        ipcache.upsert,
        ipcache.remove,
        policy.upsert,
        policy.remove
    );
    out
}

/// Removes every pinned map and link under `dir` (and `dir` itself when empty).
pub fn remove_pins(dir: &Path) -> Result<(), Error> {
    let links = dir.join("links");
    if links.exists() {
        for e in std::fs::read_dir(&links).map_err(|e| io_err("readdir", &links, e))? {
            let e = e.map_err(|e| io_err("readdir", &links, e))?;
            std::fs::remove_file(e.path()).map_err(|err| io_err("unpin", &e.path(), err))?;
        }
        std::fs::remove_dir(&links).map_err(|e| io_err("rmdir", &links, e))?;
    }
    for m in MAPS {
        let p = dir.join(m);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("unpin", &p, e)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("rmdir", dir, e)),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`, for feeding the twin.
pub fn monotonic_ns() -> u64 {
    sys::monotonic_ns()
}

/// Reads the events of a running datapath from its pinned ring buffer (what `strata monitor`
/// does), without loading anything.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader").finish_non_exhaustive()
    }
}

impl EventReader {
    /// Opens `<pin_dir>/events`.
    pub fn open(pin_dir: &Path) -> Result<EventReader, Error> {
        let path = pin_dir.join("events");
        let data = MapData::from_pin(&path).map_err(|e| map_err("events", "open pinned", e))?;
        let map =
            aya::maps::Map::from_map_data(data).map_err(|e| map_err("events", "open pinned", e))?;
        let ring = RingBuf::try_from(map).map_err(|e| map_err("events", "open pinned", e))?;
        Ok(EventReader { ring })
    }

    /// Takes up to `max` pending events without waiting.
    pub fn poll(&mut self, max: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = self.ring.next() else { break };
            if let Some(e) = Event::decode(&item) {
                out.push(e);
            }
        }
        out
    }
}

/// Reads the counters of a running datapath from its pinned map, summed over CPUs.
pub fn read_pinned_counters(pin_dir: &Path) -> Result<Vec<Counter>, Error> {
    let path = pin_dir.join("counters");
    let data = MapData::from_pin(&path).map_err(|e| map_err("counters", "open pinned", e))?;
    let map =
        aya::maps::Map::from_map_data(data).map_err(|e| map_err("counters", "open pinned", e))?;
    let m: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(map).map_err(|e| map_err("counters", "open pinned", e))?;
    let mut out = Vec::with_capacity(COUNTERS as usize);
    for i in 0..COUNTERS {
        let per_cpu = m.get(&i, 0).map_err(|e| map_err("counters", "read", e))?;
        let mut sum = Counter::default();
        for c in per_cpu.iter() {
            sum.packets += c.packets;
            sum.bytes += c.bytes;
        }
        out.push(sum);
    }
    Ok(out)
}
