//! Helpers for the interop tests: real BIRD and GoBGP processes in Drop guards.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_bgp::speaker::{NeighborConfig, Speaker, SpeakerConfig, SpeakerEvent};
use tokio::sync::mpsc::UnboundedReceiver;

/// A free TCP port for the fixed `label` a test uses: the same label gives the same port within
/// one test process, and two processes running the same tests at once get different ports. The
/// port stays reserved by a listener on 127.255.255.254 (binding it on another 127/8 address
/// is still allowed).
pub fn port(label: u16) -> u16 {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static PORTS: Mutex<Option<HashMap<u16, (u16, std::net::TcpListener)>>> = Mutex::new(None);
    let mut ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    ports
        .get_or_insert_with(HashMap::new)
        .entry(label)
        .or_insert_with(|| {
            let l = std::net::TcpListener::bind("127.255.255.254:0").expect("reserve a port");
            (l.local_addr().unwrap().port(), l)
        })
        .0
}

/// Where `binary` is: on PATH, or in /usr/sbin and /usr/bin (not on a non-root PATH).
pub fn bin(binary: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Whether `binary` is installed; without it the test skips, or fails when CI=true.
pub fn have(binary: &str) -> bool {
    let found = bin(binary).is_some();
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{binary} is not installed and CI=true (install bird2 and gobgpd)");
        }
        eprintln!("skipping: {binary} is not installed (apt-get install bird2 gobgpd)");
    }
    found
}

/// A command for an installed binary (found with [`bin`]).
pub fn cmd(binary: &str) -> Command {
    Command::new(bin(binary).unwrap_or_else(|| PathBuf::from(binary)))
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Async twin of [`wait_until`] for tests holding a speaker.
pub async fn wait_until_async<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f().await
}

/// Waits (at most `limit`) for an event matching `want`.
pub async fn wait_event(
    rx: &mut UnboundedReceiver<SpeakerEvent>,
    limit: Duration,
    want: impl Fn(&SpeakerEvent) -> bool,
) -> Option<SpeakerEvent> {
    tokio::time::timeout(limit, async {
        loop {
            let e = rx.recv().await?;
            if want(&e) {
                return Some(e);
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// A strata speaker for one neighbor.
pub async fn strata(
    addr: &str,
    port: u16,
    asn: u32,
    neighbor: NeighborConfig,
) -> (Speaker, UnboundedReceiver<SpeakerEvent>) {
    Speaker::start(SpeakerConfig {
        local_as: asn,
        router_id: addr.parse().unwrap(),
        listen: Some(SocketAddr::new(addr.parse().unwrap(), port)),
        neighbors: vec![neighbor],
    })
    .await
    .expect("strata speaker starts")
}

pub fn neighbor(addr: &str, port: u16, asn: u32) -> NeighborConfig {
    let mut n = NeighborConfig::new(addr.parse::<IpAddr>().unwrap(), asn);
    n.port = port;
    n.hold_time = 9;
    n.connect_retry = Duration::from_millis(500);
    n
}

/// IPv4 test prefixes 10.B.x.0/24 and IPv6 2001:db8:B:x::/64.
pub fn v4_prefixes(b: u8, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{b}.{}.{}/32", i / 256, i % 256))
        .collect()
}

pub fn v6_prefixes(b: u8, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("2001:db8:{b:x}:{i:x}::/64"))
        .collect()
}

/// A BIRD 2 instance with its own config, control socket and log in a temp dir.
pub struct Bird {
    pub dir: tempfile::TempDir,
    pub proc: Option<Proc>,
}

impl Bird {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("bird.ctl")
    }

    pub fn start(config: &str) -> Bird {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bird.conf"), config).unwrap();
        let mut b = Bird { dir, proc: None };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        if let Some(p) = self.proc.take() {
            drop(p);
        }
        let log = std::fs::File::create(self.dir.path().join("bird.log")).unwrap();
        let p = Proc::spawn(
            "bird",
            cmd("bird")
                .arg("-f")
                .arg("-c")
                .arg(self.dir.path().join("bird.conf"))
                .arg("-s")
                .arg(self.socket())
                .arg("-P")
                .arg(self.dir.path().join("bird.pid"))
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        self.proc = Some(p);
        let sock = self.socket();
        assert!(
            wait_until(Duration::from_secs(10), || sock.exists()
                && self.birdc(&["show", "status"]).contains("Daemon is up")),
            "BIRD did not come up: {}",
            self.log()
        );
    }

    pub fn birdc(&self, args: &[&str]) -> String {
        let out = cmd("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("birdc failed: {e}"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.log")).unwrap_or_default()
    }

    /// Routes BIRD imported from protocol `proto` (all tables).
    pub fn imported(&self, proto: &str) -> usize {
        self.birdc(&["show", "route", "protocol", proto, "count"])
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                // "N of M routes for K networks in table master4"
                let first = l.split_whitespace().next()?;
                if l.contains(" routes for ") {
                    first.parse::<usize>().ok()
                } else {
                    None
                }
            })
            .sum()
    }

    pub fn established(&self, proto: &str) -> bool {
        self.birdc(&["show", "protocols", proto])
            .contains("Established")
    }
}

/// The BIRD configuration of the tests: one BGP protocol `strata` and static routes.
pub struct BirdConf<'a> {
    pub router_id: &'a str,
    pub local: &'a str,
    pub port: u16,
    pub local_as: u32,
    pub neighbor: &'a str,
    pub neighbor_port: u16,
    pub neighbor_as: u32,
    pub extra: &'a str,
    pub v4: Vec<String>,
    pub v6: Vec<String>,
}

impl BirdConf<'_> {
    pub fn render(&self) -> String {
        let mut s = format!(
            "router id {rid};\nlog stderr all;\nprotocol device {{}}\n",
            rid = self.router_id
        );
        let route = |p: &String, i: usize| {
            format!(
                "  route {p} blackhole {{ bgp_community.add(({},{})); }};\n",
                self.local_as.min(65535),
                i % 100
            )
        };
        s.push_str("protocol static s4 {\n  ipv4;\n");
        for (i, p) in self.v4.iter().enumerate() {
            s.push_str(&route(p, i));
        }
        s.push_str("}\nprotocol static s6 {\n  ipv6;\n");
        for (i, p) in self.v6.iter().enumerate() {
            s.push_str(&route(p, i));
        }
        s.push_str("}\n");
        s.push_str(&format!(
            "protocol bgp strata {{\n  local {local} port {port} as {las};\n  neighbor {n} port {np} as {nas};\n  \
             multihop;\n  strict bind yes;\n  error wait time 1, 3;\n  connect retry time 1;\n  hold time 9;\n{extra}\n  ipv4 {{ import all; export all; next hop self; }};\n  \
             ipv6 {{ import all; export all; next hop address 2001:db8::2; }};\n}}\n",
            local = self.local,
            port = self.port,
            las = self.local_as,
            n = self.neighbor,
            np = self.neighbor_port,
            nas = self.neighbor_as,
            extra = self.extra,
        ));
        s
    }
}

/// A GoBGP instance (gobgpd) with its own config, gRPC address and log in a temp dir.
pub struct GoBgp {
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    pub api_host: String,
    pub api_port: u16,
}

impl GoBgp {
    /// Starts gobgpd with one neighbor; `passive` makes GoBGP wait for strata.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        router_id: &str,
        port: u16,
        api_port: u16,
        local_as: u32,
        neighbor: &str,
        neighbor_port: u16,
        neighbor_as: u32,
        passive: bool,
        hold_time: u16,
    ) -> GoBgp {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"[global.config]
  as = {local_as}
  router-id = "{router_id}"
  port = {port}
  local-address-list = ["{router_id}"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{neighbor}"
    peer-as = {neighbor_as}
  [neighbors.transport.config]
    local-address = "{router_id}"
    remote-port = {neighbor_port}
    passive-mode = {passive}
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = {hold_time}
    keepalive-interval = {keepalive}
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#,
            keepalive = (hold_time / 3).max(1),
        );
        std::fs::write(dir.path().join("gobgp.toml"), config).unwrap();
        let proc = Self::spawn(dir.path(), router_id, api_port);
        let g = GoBgp {
            dir,
            proc,
            api_host: router_id.to_string(),
            api_port,
        };
        g.wait_up();
        g
    }

    fn spawn(dir: &Path, router_id: &str, api_port: u16) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gobgpd.log"))
            .unwrap();
        Proc::spawn(
            "gobgpd",
            cmd("gobgpd")
                .arg("-f")
                .arg(dir.join("gobgp.toml"))
                .arg("-p")
                .arg("--pprof-disable")
                .arg(format!("--api-hosts={router_id}:{api_port}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
    }

    fn wait_up(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self
                .cli(&["global"])
                .contains("AS")),
            "gobgpd did not come up: {}",
            self.log()
        );
    }

    /// Kills gobgpd and starts it again with the same configuration.
    pub fn restart(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        self.proc = Self::spawn(self.dir.path(), &self.api_host, self.api_port);
        self.wait_up();
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = cmd("gobgp")
            .args(["-u", &self.api_host, "-p", &self.api_port.to_string()])
            .args(args)
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("gobgp failed: {e}"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gobgpd.log")).unwrap_or_default()
    }

    /// Destinations GoBGP holds from `neighbor` for `family` ("ipv4" or "ipv6").
    pub fn received(&self, neighbor: &str, family: &str) -> usize {
        self.cli(&["neighbor", neighbor, "adj-in", "-a", family, "summary"])
            .lines()
            .find_map(|l| {
                l.strip_prefix("Destination: ")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}
