//! The network-namespace lab: a "node" namespace and one namespace per pod, joined by veth
//! pairs, configured over rtnetlink (netlink-sys sockets opened inside each namespace), with
//! real probes between the pods.
//!
//! Nothing here touches the root namespace's interfaces or routes: every link, address and
//! route is created inside a namespace this module made. Namespaces are bind-mounted under
//! `/run/netns/` with a per-process prefix (`strata-<pid>-<n>-…`) and removed on drop; the
//! registry behind [`cleanup_registered`] lets a Ctrl-C handler remove them too.
//!
//! Pod `i` gets `eth0` with its address as a /32 and a default route on the link; its peer
//! `lxc<i>` stays in the node namespace, which routes each pod's /32 to its `lxc` and answers
//! ARP for the others (proxy ARP), as Cilium's routing mode does. IPv4 only.

use std::{
    collections::HashSet,
    io::{self, Read},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder, packet_route::route::RouteScope,
};

use crate::{
    Error,
    loader::{Datapath, remove_pins},
    sys,
};

static REGISTRY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn register(path: &Path) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push(path.to_owned());
    }
}

fn unregister(path: &Path) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|p| p != path);
    }
}

/// Removes every namespace and pin directory this process created and has not removed yet
/// (for a Ctrl-C handler; drops do the same in the normal course).
pub fn cleanup_registered() {
    let paths: Vec<PathBuf> = REGISTRY
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    for p in paths.iter().rev() {
        if p.starts_with("/sys/fs/bpf") {
            let _ = remove_pins(p);
        } else {
            let _ = sys::delete_netns(p);
        }
    }
}

/// A unique name prefix for this process: `strata-<pid>-<n>`.
pub fn unique_prefix() -> String {
    format!(
        "strata-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn io_err(operation: &'static str, path: impl std::fmt::Display, source: io::Error) -> Error {
    Error::Io {
        operation,
        path: path.to_string(),
        source,
    }
}

fn nl_err(operation: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Netlink {
        operation,
        detail: e.to_string(),
    }
}

/// Runs `f` on a thread inside the network namespace bound at `path` (one this process did not
/// necessarily create, e.g. a lab's node namespace in a restarted loader).
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(path: &Path, f: F) -> Result<T, Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::enter_netns(path).map_err(|e| io_err("setns", path.display(), e))?;
            Ok(f())
        })
        .join()
        .map_err(|_| nl_err("run in namespace", "thread panicked"))?
    })
}

/// A named network namespace, removed on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates `/run/netns/<name>`.
    pub fn create(name: &str) -> Result<Netns, Error> {
        let path = Path::new("/run/netns").join(name);
        sys::create_netns(&path).map_err(|e| io_err("create netns", path.display(), e))?;
        register(&path);
        Ok(Netns {
            name: name.to_owned(),
            path,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, Error> {
        run_in(&self.path, f)
    }

    /// Runs an rtnetlink session inside the namespace.
    fn netlink<T: Send>(
        &self,
        f: impl AsyncFnOnce(Handle) -> Result<T, Error> + Send,
    ) -> Result<T, Error> {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| io_err("tokio runtime", "netlink", e))?;
            rt.block_on(async {
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(|e| io_err("netlink socket", "", e))?;
                let task = tokio::spawn(conn);
                let r = f(handle).await;
                task.abort();
                r
            })
        })?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sys::delete_netns(&self.path);
        unregister(&self.path);
    }
}

/// A pod of the lab.
#[derive(Debug)]
pub struct LabPod {
    /// Name (e.g. `ns/pod`).
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Host-side veth in the node namespace.
    pub host_if: String,
    /// Interface index of the host-side veth (the endpoints map key).
    pub ifindex: u32,
    /// The pod's namespace.
    pub netns: Netns,
}

/// The lab: pods in their namespaces, wired to a node namespace.
#[derive(Debug)]
pub struct Lab {
    /// The pods, in the order given.
    pub pods: Vec<LabPod>,
    /// The node namespace (where the programs attach).
    pub node: Netns,
    pin_dir: PathBuf,
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, Error> {
    use futures_util::TryStreamExt;
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(nl_err("link get", format!("no link {name}"))),
        Err(e) => Err(nl_err("link get", format!("{name}: {e}"))),
    }
}

async fn up(handle: &Handle, index: u32) -> Result<(), Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| nl_err("link up", e))
}

impl Lab {
    /// Builds the lab for these pods (name, IPv4 address). Everything is removed when the lab
    /// is dropped, also if creation fails halfway.
    pub fn create(pods: &[(String, Ipv4Addr)]) -> Result<Lab, Error> {
        let prefix = unique_prefix();
        let node = Netns::create(&format!("{prefix}-node"))?;
        let pin_dir = PathBuf::from(crate::loader::DEFAULT_PIN_DIR).join(&prefix);
        let mut lab = Lab {
            pods: Vec::new(),
            node,
            pin_dir,
        };
        let mut nets = Vec::new();
        for (i, _) in pods.iter().enumerate() {
            nets.push(Netns::create(&format!("{prefix}-pod{i}"))?);
        }
        let node_paths: Vec<PathBuf> = nets.iter().map(|n| n.path().to_owned()).collect();
        let ips: Vec<Ipv4Addr> = pods.iter().map(|p| p.1).collect();
        let ifindexes = lab.node.netlink(async |h: Handle| {
            let lo = link_index(&h, "lo").await?;
            up(&h, lo).await?;
            h.address()
                .add(lo, IpAddr::V4(Ipv4Addr::new(169, 254, 0, 1)), 32)
                .execute()
                .await
                .map_err(|e| nl_err("address add", e))?;
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(|e| io_err("sysctl", "net.ipv4.ip_forward", e))?;
            let mut out = Vec::new();
            for (i, path) in node_paths.iter().enumerate() {
                let host = format!("lxc{i}");
                let peer = format!("p{i}");
                h.link()
                    .add(LinkVeth::new(&host, &peer).build())
                    .execute()
                    .await
                    .map_err(|e| nl_err("veth add", format!("{host}: {e}")))?;
                let ns = std::fs::File::open(path)
                    .map_err(|e| io_err("open netns", path.display(), e))?;
                {
                    use std::os::fd::AsRawFd;
                    h.link()
                        .set(
                            LinkUnspec::new_with_name(&peer)
                                .setns_by_fd(ns.as_raw_fd())
                                .build(),
                        )
                        .execute()
                        .await
                        .map_err(|e| nl_err("link set netns", format!("{peer}: {e}")))?;
                }
                let idx = link_index(&h, &host).await?;
                up(&h, idx).await?;
                std::fs::write(format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1")
                    .map_err(|e| io_err("sysctl", format!("{host}.proxy_arp"), e))?;
                // Proxy ARP answers are delayed up to 0.8 s by default: answer at once.
                std::fs::write(format!("/proc/sys/net/ipv4/neigh/{host}/proxy_delay"), "0")
                    .map_err(|e| io_err("sysctl", format!("{host}.proxy_delay"), e))?;
                h.route()
                    .add(
                        RouteMessageBuilder::<Ipv4Addr>::new()
                            .destination_prefix(ips[i], 32)
                            .output_interface(idx)
                            .scope(RouteScope::Link)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| nl_err("route add", format!("{}/32 dev {host}: {e}", ips[i])))?;
                out.push((host, idx));
            }
            Ok(out)
        })?;
        for (i, (netns, (host_if, ifindex))) in nets.into_iter().zip(ifindexes).enumerate() {
            let ip = ips[i];
            netns.netlink(async |h: Handle| {
                let lo = link_index(&h, "lo").await?;
                up(&h, lo).await?;
                let idx = link_index(&h, &format!("p{i}")).await?;
                h.link()
                    .set(
                        LinkUnspec::new_with_index(idx)
                            .name("eth0".to_owned())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| nl_err("link rename", e))?;
                up(&h, idx).await?;
                h.address()
                    .add(idx, IpAddr::V4(ip), 32)
                    .execute()
                    .await
                    .map_err(|e| nl_err("address add", format!("{ip}: {e}")))?;
                h.route()
                    .add(
                        RouteMessageBuilder::<Ipv4Addr>::new()
                            .output_interface(idx)
                            .scope(RouteScope::Link)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| nl_err("route add", format!("default dev eth0: {e}")))?;
                Ok(())
            })?;
            lab.pods.push(LabPod {
                name: pods[i].0.clone(),
                ip,
                host_if,
                ifindex,
                netns,
            });
        }
        Ok(lab)
    }

    /// The directory under /sys/fs/bpf/strata/ where this lab's datapath pins its maps and
    /// links (removed on drop).
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Loads a datapath pinned in [`Lab::pin_dir`] (reusing maps pinned there).
    pub fn load_datapath(&self, allow_sample: u32) -> Result<Datapath, Error> {
        register(&self.pin_dir);
        Datapath::load(&crate::loader::LoadOptions {
            pin_dir: Some(self.pin_dir.clone()),
            allow_sample,
        })
    }

    /// Attaches the datapath to every pod's host-side veth (inside the node namespace).
    pub fn attach(&self, dp: &mut Datapath) -> Result<(), Error> {
        let names: Vec<String> = self.pods.iter().map(|p| p.host_if.clone()).collect();
        self.node.run(|| {
            for n in &names {
                dp.attach(n)?;
            }
            Ok(())
        })?
    }

    /// Sends every probe from every pod to every pod (itself included), concurrently, and
    /// reports what arrived: `result[from][to][probe]`.
    pub fn probe(&self, probes: &[Probe], timeout: Duration) -> Result<Vec<Vec<Vec<bool>>>, Error> {
        let stop = AtomicBool::new(false);
        let ready = AtomicUsize::new(0);
        let sctp_seen: Vec<Mutex<HashSet<(Ipv4Addr, u16, u16)>>> = self
            .pods
            .iter()
            .map(|_| Mutex::new(HashSet::new()))
            .collect();
        let n = self.pods.len();
        let mut results = vec![vec![vec![false; probes.len()]; n]; n];
        let listeners_per_pod = probes.iter().filter(|p| p.proto != Proto::Sctp).count()
            + usize::from(probes.iter().any(|p| p.proto == Proto::Sctp));
        std::thread::scope(|s| -> Result<(), Error> {
            let mut listeners = Vec::new();
            for (j, pod) in self.pods.iter().enumerate() {
                for probe in probes.iter().filter(|p| p.proto != Proto::Sctp) {
                    let (stop, ready) = (&stop, &ready);
                    let probe = *probe;
                    listeners.push(s.spawn(move || pod.netns.run(|| listen(probe, stop, ready))?));
                }
                if probes.iter().any(|p| p.proto == Proto::Sctp) {
                    let (stop, ready, seen) = (&stop, &ready, &sctp_seen[j]);
                    listeners
                        .push(s.spawn(move || pod.netns.run(|| listen_sctp(seen, stop, ready))?));
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while ready.load(Ordering::SeqCst) < listeners_per_pod * n {
                if Instant::now() > deadline || listeners.iter().any(|l| l.is_finished()) {
                    stop.store(true, Ordering::SeqCst);
                    for l in listeners {
                        l.join()
                            .map_err(|_| nl_err("listener", "thread panicked"))??;
                    }
                    return Err(nl_err("listen", "listeners did not start"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut senders = Vec::new();
            for (i, from) in self.pods.iter().enumerate() {
                for (j, to) in self.pods.iter().enumerate() {
                    for (k, probe) in probes.iter().enumerate() {
                        let seen = &sctp_seen[j];
                        let tag = 20000 + ((i * n + j) * probes.len() + k) as u16;
                        let (src, dst, probe) = (from.ip, to.ip, *probe);
                        senders.push((
                            (i, j, k),
                            s.spawn(move || {
                                from.netns
                                    .run(|| send(probe, src, dst, tag, seen, timeout))?
                            }),
                        ));
                    }
                }
            }
            let mut first_err = None;
            for ((i, j, k), h) in senders {
                match h.join() {
                    Ok(Ok(ok)) => results[i][j][k] = ok,
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => {
                        first_err.get_or_insert(nl_err("probe", "thread panicked"));
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
            for l in listeners {
                match l.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => {
                        first_err.get_or_insert(nl_err("listener", "thread panicked"));
                    }
                }
            }
            first_err.map_or(Ok(()), Err)
        })?;
        Ok(results)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Pods first (their veths vanish with them), then the node, then the pins.
        self.pods.clear();
        let _ = remove_pins(&self.pin_dir);
        unregister(&self.pin_dir);
    }
}

/// A probe's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP connect to a listener.
    Tcp,
    /// UDP request and response.
    Udp,
    /// Raw IP protocol 132 packets observed at the destination.
    Sctp,
}

impl Proto {
    /// `TCP`, `UDP` or `SCTP`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
}

/// A probe: a port and a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    /// Destination port.
    pub port: u16,
    /// Transport.
    pub proto: Proto,
}

fn listen(probe: Probe, stop: &AtomicBool, ready: &AtomicUsize) -> Result<(), Error> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, probe.port));
    match probe.proto {
        Proto::Tcp => {
            let l = TcpListener::bind(addr).map_err(|e| io_err("bind", addr, e))?;
            l.set_nonblocking(true)
                .map_err(|e| io_err("nonblocking", addr, e))?;
            ready.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(e) => return Err(io_err("accept", addr, e)),
                }
            }
        }
        Proto::Udp => {
            let sock = UdpSocket::bind(addr).map_err(|e| io_err("bind", addr, e))?;
            sock.set_read_timeout(Some(Duration::from_millis(5)))
                .map_err(|e| io_err("timeout", addr, e))?;
            ready.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((len, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..len], peer);
                }
            }
        }
        Proto::Sctp => {}
    }
    Ok(())
}

fn raw_sctp() -> io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(132)),
    )
}

fn listen_sctp(
    seen: &Mutex<HashSet<(Ipv4Addr, u16, u16)>>,
    stop: &AtomicBool,
    ready: &AtomicUsize,
) -> Result<(), Error> {
    let mut sock = raw_sctp().map_err(|e| io_err("raw socket", "ip proto 132", e))?;
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .map_err(|e| io_err("timeout", "raw socket", e))?;
    ready.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if let Ok(len) = sock.read(&mut buf)
            && len >= 20
        {
            let hl = usize::from(buf[0] & 0xf) * 4;
            if len >= hl + 4 {
                let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                let sport = u16::from_be_bytes([buf[hl], buf[hl + 1]]);
                let dport = u16::from_be_bytes([buf[hl + 2], buf[hl + 3]]);
                if let Ok(mut s) = seen.lock() {
                    s.insert((src, sport, dport));
                }
            }
        }
    }
    Ok(())
}

fn send(
    probe: Probe,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    tag: u16,
    seen: &Mutex<HashSet<(Ipv4Addr, u16, u16)>>,
    timeout: Duration,
) -> Result<bool, Error> {
    let addr = SocketAddr::V4(SocketAddrV4::new(dst, probe.port));
    let deadline = Instant::now() + timeout;
    match probe.proto {
        Proto::Tcp => Ok(TcpStream::connect_timeout(&addr, timeout).is_ok()),
        Proto::Udp => {
            let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
                .map_err(|e| io_err("bind", "udp probe", e))?;
            sock.set_read_timeout(Some(timeout / 4))
                .map_err(|e| io_err("timeout", "udp probe", e))?;
            let msg = tag.to_be_bytes();
            let mut buf = [0u8; 64];
            for _ in 0..4 {
                if Instant::now() >= deadline {
                    break;
                }
                let _ = sock.send_to(&msg, addr);
                if let Ok((len, from)) = sock.recv_from(&mut buf)
                    && from == addr
                    && buf[..len] == msg
                {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Proto::Sctp => {
            let sock = raw_sctp().map_err(|e| io_err("raw socket", "ip proto 132", e))?;
            // SCTP common header (ports, zero tag and checksum) and an 4-byte empty chunk.
            let mut pkt = [0u8; 16];
            pkt[0..2].copy_from_slice(&tag.to_be_bytes());
            pkt[2..4].copy_from_slice(&probe.port.to_be_bytes());
            let to: socket2::SockAddr = SocketAddr::V4(SocketAddrV4::new(dst, 0)).into();
            let mut next_send = Instant::now();
            while Instant::now() < deadline {
                if Instant::now() >= next_send {
                    let _ = sock.send_to(&pkt, &to);
                    next_send = Instant::now() + timeout / 4;
                }
                if seen
                    .lock()
                    .map(|s| s.contains(&(src, tag, probe.port)))
                    .unwrap_or(false)
                {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(false)
        }
    }
}
