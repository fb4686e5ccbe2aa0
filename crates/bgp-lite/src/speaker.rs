//! The tokio shell: TCP connections, timers and the RIBs around the pure [`Session`] FSM.
//!
//! One task owns all state (sessions, Adj-RIB-In, Loc-RIB, Adj-RIB-Out); each TCP connection
//! has a reader and a writer task; a listener task accepts on the configured address only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::rib::{Candidate, LocRib, Path, Peer};
use crate::session::{
    DownReason, Event, Input, Keep, Negotiated, Session, SessionConfig, State, resolve_collision,
};
use crate::wire::{
    AddressFamily, AsPath, Community, LargeCommunity, MAX_MESSAGE_LEN, Message, MpUnreach, NextHop,
    Notification, Options, Origin, PathAttribute, RouteRefresh, Update, pack_announcements,
    pack_withdrawals,
};

/// One neighbor of the speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborConfig {
    /// The neighbor's address.
    pub address: IpAddr,
    /// The neighbor's TCP port (179 by default).
    pub port: u16,
    /// The AS the neighbor must have.
    pub remote_as: u32,
    /// Wait for the neighbor to connect.
    pub passive: bool,
    /// Hold time to propose.
    pub hold_time: u16,
    /// Announce the 4-octet AS capability (off: behave as a 2-octet-only speaker).
    pub four_octet_as: bool,
    /// First reconnect delay (doubles up to 30 s).
    pub connect_retry: Duration,
}

impl NeighborConfig {
    /// A neighbor with defaults: port 179, active, hold time 90 s, 4-octet AS, reconnect after
    /// 1 s.
    pub fn new(address: IpAddr, remote_as: u32) -> NeighborConfig {
        NeighborConfig {
            address,
            port: 179,
            remote_as,
            passive: false,
            hold_time: 90,
            four_octet_as: true,
            connect_retry: Duration::from_secs(1),
        }
    }
}

/// The speaker's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The one address to listen on (never a wildcard unless given); outgoing connections
    /// leave from its IP too. `None`: no listener, outgoing connections only.
    pub listen: Option<SocketAddr>,
    /// The neighbors.
    pub neighbors: Vec<NeighborConfig>,
}

/// A route to announce.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Announcement {
    /// The prefix.
    pub prefix: IpNet,
    /// Next hop; by default the local address of the session (IPv4-mapped for IPv6 prefixes
    /// over an IPv4 session).
    pub next_hop: Option<IpAddr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only; 100 when not given).
    pub local_pref: Option<u32>,
    /// COMMUNITIES.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<LargeCommunity>,
}

impl Announcement {
    /// An announcement of `prefix` with default attributes.
    pub fn new(prefix: IpNet) -> Announcement {
        Announcement {
            prefix: prefix.trunc(),
            next_hop: None,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }
}

/// A route a neighbor announced, as reported in [`SpeakerEvent::Update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The prefix.
    pub prefix: IpNet,
    /// Its next hop.
    pub next_hop: IpAddr,
    /// Its AS path, flattened.
    pub as_path: Vec<u32>,
    /// Its communities.
    pub communities: Vec<Community>,
}

/// What the speaker reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeakerEvent {
    /// A session came up.
    Established {
        /// The neighbor.
        neighbor: IpAddr,
        /// Its AS.
        remote_as: u32,
    },
    /// A neighbor sent routes or withdrawals (one event per UPDATE carrying any).
    Update {
        /// The neighbor.
        neighbor: IpAddr,
        /// Announced routes.
        announce: Vec<Learned>,
        /// Withdrawn prefixes.
        withdraw: Vec<IpNet>,
    },
    /// A session went down (or an OPEN was refused).
    Down {
        /// The neighbor.
        neighbor: IpAddr,
        /// Why, e.g. `received Cease/administrative shutdown (6/2)`.
        reason: String,
    },
}

/// A route of the Loc-RIB as returned by [`Speaker::loc_rib`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibEntry {
    /// The prefix.
    pub prefix: IpNet,
    /// The neighbor of the best route.
    pub neighbor: IpAddr,
    /// The best route's attributes.
    pub path: Path,
}

enum Command {
    Announce(Announcement),
    Withdraw(IpNet),
    LocRib(oneshot::Sender<Vec<RibEntry>>),
    AdjRibIn(IpAddr, oneshot::Sender<Vec<(IpNet, Path)>>),
    AdjRibOut(IpAddr, oneshot::Sender<Vec<IpNet>>),
    State(IpAddr, oneshot::Sender<Option<State>>),
    Refresh(IpAddr),
    Shutdown(oneshot::Sender<()>),
}

/// A running speaker. Dropping it stops the task without Cease; call [`Speaker::shutdown`].
pub struct Speaker {
    commands: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
    listener: Option<JoinHandle<()>>,
    listen: Option<SocketAddr>,
}

impl Speaker {
    /// Binds the listen address (if any), starts every neighbor and returns the speaker with
    /// its event stream.
    pub async fn start(
        config: SpeakerConfig,
    ) -> Result<(Speaker, mpsc::UnboundedReceiver<SpeakerEvent>), Error> {
        let mut seen = HashSet::new();
        for n in &config.neighbors {
            if !seen.insert(n.address) {
                return Err(Error::Config {
                    what: "neighbor",
                    value: n.address.to_string(),
                    reason: "configured twice".into(),
                });
            }
            if n.hold_time == 1 || n.hold_time == 2 {
                return Err(Error::Config {
                    what: "hold time",
                    value: n.hold_time.to_string(),
                    reason: "must be 0 or at least 3 seconds".into(),
                });
            }
        }
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let mut listen = None;
        let mut listener_task = None;
        if let Some(addr) = config.listen {
            let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
                what: format!("cannot listen on {addr}"),
                source,
            })?;
            listen = Some(listener.local_addr().map_err(|source| Error::Io {
                what: "listener address".into(),
                source,
            })?);
            let tx = internal_tx.clone();
            listener_task = Some(tokio::spawn(async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    if tx.send(Internal::Accepted(stream, peer)).is_err() {
                        break;
                    }
                }
            }));
        }
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let neighbors = config
            .neighbors
            .iter()
            .map(|n| {
                let mut sc = SessionConfig::new(config.local_as, config.router_id, n.remote_as);
                sc.hold_time = n.hold_time;
                sc.passive = n.passive;
                sc.four_octet_as = n.four_octet_as;
                sc.connect_retry = n.connect_retry;
                let mut session = Session::new(sc);
                session.handle(now, Input::Start);
                Neighbor {
                    config: n.clone(),
                    session,
                    conn: None,
                    spare: None,
                    attempt: 0,
                    pending_attempt: None,
                    established: None,
                    adj_in: HashMap::new(),
                    adj_out: HashSet::new(),
                    stale_until: None,
                }
            })
            .collect();
        let core = Core {
            local_as: config.local_as,
            router_id: config.router_id,
            source_ip: listen.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()),
            neighbors,
            local: BTreeMap::new(),
            loc_rib: LocRib::new(),
            conns: HashMap::new(),
            next_conn: 1,
            internal_tx,
            events: event_tx,
            writers: Vec::new(),
        };
        let task = tokio::spawn(core.run(internal_rx, cmd_rx));
        Ok((
            Speaker {
                commands: cmd_tx,
                task: Some(task),
                listener: listener_task,
                listen,
            },
            event_rx,
        ))
    }

    /// The address the speaker listens on (with the real port when 0 was configured).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// Announces a route to every neighbor (now and when sessions come up).
    pub fn announce(&self, announcement: Announcement) -> Result<(), Error> {
        self.commands
            .send(Command::Announce(announcement))
            .map_err(|_| Error::Closed)
    }

    /// Withdraws a route announced before.
    pub fn withdraw(&self, prefix: IpNet) -> Result<(), Error> {
        self.commands
            .send(Command::Withdraw(prefix.trunc()))
            .map_err(|_| Error::Closed)
    }

    /// The best routes learned from neighbors.
    pub async fn loc_rib(&self) -> Result<Vec<RibEntry>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::LocRib(tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// The routes a neighbor sent (its Adj-RIB-In).
    pub async fn adj_rib_in(&self, neighbor: IpAddr) -> Result<Vec<(IpNet, Path)>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::AdjRibIn(neighbor, tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// The prefixes announced to a neighbor on its current session (its Adj-RIB-Out).
    pub async fn adj_rib_out(&self, neighbor: IpAddr) -> Result<Vec<IpNet>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::AdjRibOut(neighbor, tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// The FSM state of a neighbor's session (`None` for an unknown neighbor).
    pub async fn state(&self, neighbor: IpAddr) -> Result<Option<State>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::State(neighbor, tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Asks a neighbor to send its routes again (ROUTE-REFRESH for every negotiated family).
    pub fn request_refresh(&self, neighbor: IpAddr) -> Result<(), Error> {
        self.commands
            .send(Command::Refresh(neighbor))
            .map_err(|_| Error::Closed)
    }

    /// Sends Cease (administrative shutdown) to every connected neighbor, waits (at most two
    /// seconds) for the bytes to leave and stops.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(tx))
            .map_err(|_| Error::Closed)?;
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        let _ = rx.await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

enum Internal {
    Accepted(TcpStream, SocketAddr),
    ConnectDone {
        neighbor: usize,
        attempt: u64,
        result: std::io::Result<TcpStream>,
    },
    Data {
        conn: u64,
        bytes: Vec<u8>,
    },
    Closed {
        conn: u64,
    },
}

/// Announcements sharing attributes: the attributes, the IPv6 next hop, the prefixes.
type Group = (Vec<PathAttribute>, Option<NextHop>, Vec<IpNet>);

enum WriterMsg {
    Bytes(Vec<u8>),
    Close,
}

struct Conn {
    id: u64,
    outgoing: bool,
    local: SocketAddr,
    tx: mpsc::UnboundedSender<WriterMsg>,
    reader: JoinHandle<()>,
}

impl Conn {
    fn close(self) {
        let _ = self.tx.send(WriterMsg::Close);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Neighbor {
    config: NeighborConfig,
    session: Session,
    conn: Option<Conn>,
    /// A second session on an incoming connection while `session` is opening (collision).
    spare: Option<(Session, Conn)>,
    attempt: u64,
    pending_attempt: Option<u64>,
    established: Option<Established>,
    adj_in: HashMap<IpNet, (Arc<Path>, bool)>,
    adj_out: HashSet<IpNet>,
    stale_until: Option<Instant>,
}

struct Established {
    negotiated: Negotiated,
    local: SocketAddr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Main,
    Spare,
}

struct Core {
    local_as: u32,
    router_id: Ipv4Addr,
    source_ip: Option<IpAddr>,
    neighbors: Vec<Neighbor>,
    local: BTreeMap<IpNet, Announcement>,
    loc_rib: LocRib,
    conns: HashMap<u64, (usize, Slot)>,
    next_conn: u64,
    internal_tx: mpsc::UnboundedSender<Internal>,
    events: mpsc::UnboundedSender<SpeakerEvent>,
    writers: Vec<JoinHandle<()>>,
}

impl Core {
    async fn run(
        mut self,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        for i in 0..self.neighbors.len() {
            self.drive(i, Instant::now());
        }
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                msg = internal.recv() => {
                    let Some(msg) = msg else { break };
                    self.internal(msg);
                }
                cmd = commands.recv() => {
                    match cmd {
                        Some(Command::Shutdown(done)) => {
                            self.shutdown().await;
                            let _ = done.send(());
                            return;
                        }
                        Some(cmd) => self.command(cmd),
                        None => {
                            self.shutdown().await;
                            return;
                        }
                    }
                }
                () = sleep => self.timeouts(Instant::now()),
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.neighbors
            .iter()
            .flat_map(|n| {
                [
                    n.session.poll_timeout(),
                    n.spare.as_ref().and_then(|(s, _)| s.poll_timeout()),
                    n.stale_until,
                ]
            })
            .flatten()
            .min()
    }

    fn timeouts(&mut self, now: Instant) {
        for i in 0..self.neighbors.len() {
            let n = &mut self.neighbors[i];
            if n.session.poll_timeout().is_some_and(|t| t <= now) {
                n.session.handle_timeout(now);
            }
            if let Some((s, _)) = &mut n.spare
                && s.poll_timeout().is_some_and(|t| t <= now)
            {
                s.handle_timeout(now);
            }
            if n.stale_until.is_some_and(|t| t <= now) {
                n.stale_until = None;
                self.purge_stale(i, None);
            }
            self.drive(i, now);
        }
    }

    async fn shutdown(&mut self) {
        let now = Instant::now();
        for i in 0..self.neighbors.len() {
            let n = &mut self.neighbors[i];
            n.session.handle(now, Input::Stop { subcode: 2 });
            if let Some((s, _)) = &mut n.spare {
                s.handle(now, Input::Stop { subcode: 2 });
            }
            self.drive(i, now);
        }
        for n in &mut self.neighbors {
            if let Some(c) = n.conn.take() {
                c.close();
            }
            if let Some((_, c)) = n.spare.take() {
                c.close();
            }
        }
        let writers = std::mem::take(&mut self.writers);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
    }

    fn emit(&self, event: SpeakerEvent) {
        let _ = self.events.send(event);
    }

    fn new_conn(
        &mut self,
        stream: TcpStream,
        neighbor: usize,
        slot: Slot,
        outgoing: bool,
    ) -> Option<Conn> {
        let local = stream.local_addr().ok()?;
        let _ = stream.set_nodelay(true);
        let id = self.next_conn;
        self.next_conn += 1;
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<WriterMsg>();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    WriterMsg::Bytes(b) => {
                        if write.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    WriterMsg::Close => break,
                }
            }
            let _ = write.shutdown().await;
        });
        self.writers.retain(|w| !w.is_finished());
        self.writers.push(writer);
        let itx = self.internal_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = itx.send(Internal::Closed { conn: id });
                        break;
                    }
                    Ok(n) => {
                        if itx
                            .send(Internal::Data {
                                conn: id,
                                bytes: buf[..n].to_vec(),
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        self.conns.insert(id, (neighbor, slot));
        Some(Conn {
            id,
            outgoing,
            local,
            tx,
            reader,
        })
    }

    fn internal(&mut self, msg: Internal) {
        let now = Instant::now();
        match msg {
            Internal::Accepted(stream, peer) => self.accepted(stream, peer, now),
            Internal::ConnectDone {
                neighbor,
                attempt,
                result,
            } => {
                let n = &mut self.neighbors[neighbor];
                if n.pending_attempt != Some(attempt) {
                    return;
                }
                n.pending_attempt = None;
                match result {
                    Ok(stream) if n.session.state() == State::Connect && n.conn.is_none() => {
                        if let Some(conn) = self.new_conn(stream, neighbor, Slot::Main, true) {
                            let n = &mut self.neighbors[neighbor];
                            n.conn = Some(conn);
                            n.session.handle(now, Input::Connected);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if n.session.state() == State::Connect {
                            n.session.handle(now, Input::ConnectionFailed);
                        }
                    }
                }
                self.drive(neighbor, now);
            }
            Internal::Data { conn, bytes } => {
                let Some(&(i, slot)) = self.conns.get(&conn) else {
                    return;
                };
                let n = &mut self.neighbors[i];
                match slot {
                    Slot::Main if n.conn.as_ref().is_some_and(|c| c.id == conn) => {
                        n.session.handle(now, Input::Data(&bytes))
                    }
                    Slot::Spare => {
                        if let Some((s, c)) = &mut n.spare
                            && c.id == conn
                        {
                            s.handle(now, Input::Data(&bytes));
                        }
                    }
                    _ => {}
                }
                self.drive(i, now);
            }
            Internal::Closed { conn } => {
                let Some((i, slot)) = self.conns.remove(&conn) else {
                    return;
                };
                let n = &mut self.neighbors[i];
                match slot {
                    Slot::Main if n.conn.as_ref().is_some_and(|c| c.id == conn) => {
                        n.session.handle(now, Input::ConnectionFailed)
                    }
                    Slot::Spare if n.spare.as_ref().is_some_and(|(_, c)| c.id == conn) => {
                        if let Some((_, c)) = n.spare.take() {
                            c.close();
                        }
                    }
                    _ => {}
                }
                self.drive(i, now);
            }
        }
    }

    fn accepted(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let peer_ip = match peer.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            ip => ip,
        };
        let Some(i) = self
            .neighbors
            .iter()
            .position(|n| n.config.address == peer_ip)
        else {
            return; // not a neighbor: dropping the stream closes it
        };
        match self.neighbors[i].session.state() {
            State::Idle | State::Connect | State::Active => {
                if let Some(old) = self.neighbors[i].conn.take() {
                    old.close();
                }
                if let Some(conn) = self.new_conn(stream, i, Slot::Main, false) {
                    let n = &mut self.neighbors[i];
                    n.pending_attempt = None;
                    n.conn = Some(conn);
                    n.session.handle(now, Input::Connected);
                }
            }
            State::OpenSent | State::OpenConfirm if self.neighbors[i].spare.is_none() => {
                if let Some(conn) = self.new_conn(stream, i, Slot::Spare, false) {
                    let n = &mut self.neighbors[i];
                    let mut s = Session::new(n.session.config().clone());
                    s.handle(now, Input::Connected);
                    n.spare = Some((s, conn));
                }
            }
            _ => {
                // Established (or a collision already in progress): refuse with Cease 5.
                let bytes = Message::Notification(Notification::cease(5))
                    .to_bytes(Options::MODERN)
                    .unwrap_or_default();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
        self.drive(i, now);
    }

    fn start_connect(&mut self, i: usize) {
        let n = &mut self.neighbors[i];
        n.attempt += 1;
        n.pending_attempt = Some(n.attempt);
        let attempt = n.attempt;
        let target = SocketAddr::new(n.config.address, n.config.port);
        let source = self.source_ip.filter(|ip| ip.is_ipv4() == target.is_ipv4());
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(Duration::from_secs(5), async {
                let socket = if target.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                if let Some(ip) = source {
                    socket.bind(SocketAddr::new(ip, 0))?;
                }
                socket.connect(target).await
            })
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            });
            let _ = tx.send(Internal::ConnectDone {
                neighbor: i,
                attempt,
                result,
            });
        });
    }

    /// Moves the outputs of neighbor `i`'s sessions to the connections and the event stream,
    /// until nothing is left (bounded: every round drains finite queues).
    fn drive(&mut self, i: usize, now: Instant) {
        for _ in 0..64 {
            let mut progressed = false;
            // Main session.
            while let Some(bytes) = self.neighbors[i].session.poll_transmit() {
                progressed = true;
                if let Some(c) = &self.neighbors[i].conn {
                    let _ = c.tx.send(WriterMsg::Bytes(bytes));
                }
            }
            while let Some(event) = self.neighbors[i].session.poll_event() {
                progressed = true;
                self.main_event(i, event, now);
            }
            // Spare session (collision candidate).
            let mut spare_events = Vec::new();
            if let Some((s, c)) = &mut self.neighbors[i].spare {
                while let Some(bytes) = s.poll_transmit() {
                    progressed = true;
                    let _ = c.tx.send(WriterMsg::Bytes(bytes));
                }
                while let Some(e) = s.poll_event() {
                    progressed = true;
                    spare_events.push(e);
                }
            }
            for e in spare_events {
                match e {
                    Event::OpenReceived { router_id } => self.check_collision(i, router_id, now),
                    Event::Established(negotiated) => {
                        // The incoming connection won (the other one never got its OPEN).
                        self.promote_spare(i, now);
                        self.main_event(i, Event::Established(negotiated), now);
                    }
                    Event::Disconnect | Event::Down(_) => {
                        if let Some((_, c)) = self.neighbors[i].spare.take() {
                            self.conns.remove(&c.id);
                            c.close();
                        }
                    }
                    _ => {}
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn check_collision(&mut self, i: usize, remote_id: Ipv4Addr, now: Instant) {
        let n = &mut self.neighbors[i];
        let Some((spare, _)) = &n.spare else { return };
        // Both connections must have an OPEN before deciding (or the main one is gone).
        if spare.state() != State::OpenConfirm && spare.state() != State::Established {
            return;
        }
        match n.session.state() {
            State::OpenSent => return,
            State::Idle | State::Connect | State::Active => {
                // The main connection failed meanwhile: the incoming one is all there is.
                self.promote_spare(i, now);
                return;
            }
            State::OpenConfirm | State::Established => {}
        }
        let main_outgoing = n.conn.as_ref().is_some_and(|c| c.outgoing);
        let keep_spare = main_outgoing
            && n.session.state() != State::Established
            && resolve_collision(self.router_id, remote_id) == Keep::Incoming;
        if keep_spare {
            self.promote_spare(i, now);
        } else if let Some((mut s, c)) = n.spare.take() {
            s.handle(now, Input::Stop { subcode: 7 });
            while let Some(bytes) = s.poll_transmit() {
                let _ = c.tx.send(WriterMsg::Bytes(bytes));
            }
            self.conns.remove(&c.id);
            c.close();
        }
    }

    /// Closes the main connection with Cease/collision and makes the spare session the main one.
    fn promote_spare(&mut self, i: usize, now: Instant) {
        let n = &mut self.neighbors[i];
        if n.spare.is_none() {
            return;
        }
        {
            n.session.handle(now, Input::Stop { subcode: 7 });
            while let Some(bytes) = n.session.poll_transmit() {
                if let Some(c) = &n.conn {
                    let _ = c.tx.send(WriterMsg::Bytes(bytes));
                }
            }
            while n.session.poll_event().is_some() {}
            if let Some(c) = n.conn.take() {
                self.conns.remove(&c.id);
                c.close();
            }
            if let Some((s, c)) = n.spare.take() {
                self.conns.insert(c.id, (i, Slot::Main));
                n.session = s;
                n.conn = Some(c);
                n.pending_attempt = None;
            }
        }
    }

    fn main_event(&mut self, i: usize, event: Event, now: Instant) {
        let address = self.neighbors[i].config.address;
        match event {
            Event::Connect => {
                if let Some(c) = self.neighbors[i].conn.take() {
                    self.conns.remove(&c.id);
                    c.close();
                }
                self.start_connect(i);
            }
            Event::Disconnect => {
                if let Some(c) = self.neighbors[i].conn.take() {
                    self.conns.remove(&c.id);
                    c.close();
                }
            }
            Event::OpenReceived { router_id } => self.check_collision(i, router_id, now),
            Event::Established(negotiated) => {
                let n = &mut self.neighbors[i];
                let Some(local) = n.conn.as_ref().map(|c| c.local) else {
                    return;
                };
                let remote_as = negotiated.remote_as();
                n.established = Some(Established {
                    negotiated: *negotiated,
                    local,
                });
                self.emit(SpeakerEvent::Established {
                    neighbor: address,
                    remote_as,
                });
                self.send_all(i, true);
            }
            Event::Update { update, .. } => self.receive_update(i, update, now),
            Event::RouteRefresh(r) => self.route_refresh(i, r),
            Event::Down(reason) => {
                let n = &mut self.neighbors[i];
                let was = n.established.take();
                n.adj_out.clear();
                let report = was.is_some() || !matches!(reason, DownReason::ConnectionLost);
                // Graceful restart helper (RFC 4724): on a lost connection, keep the routes
                // as stale for the peer's restart time.
                let gr = match (&reason, &was) {
                    (DownReason::ConnectionLost, Some(e)) => e
                        .negotiated
                        .graceful_restart()
                        .map(|g| Duration::from_secs(u64::from(g.restart_time))),
                    _ => None,
                };
                match gr {
                    Some(time) if !n.adj_in.is_empty() => {
                        for (_, stale) in n.adj_in.values_mut() {
                            *stale = true;
                        }
                        n.stale_until = Some(now + time);
                    }
                    _ => {
                        n.stale_until = None;
                        let prefixes: Vec<IpNet> = n.adj_in.drain().map(|(p, _)| p).collect();
                        for p in prefixes {
                            self.loc_rib.remove(&p, address);
                        }
                    }
                }
                if report {
                    self.emit(SpeakerEvent::Down {
                        neighbor: address,
                        reason: reason.describe(),
                    });
                }
            }
        }
    }

    /// A ROUTE-REFRESH from the peer: a request (resend our routes, wrapped in BoRR/EoRR when
    /// the peer supports enhanced route refresh), or the peer's own BoRR/EoRR (RFC 7313: mark
    /// its routes stale, then drop those it did not send again).
    fn route_refresh(&mut self, i: usize, r: RouteRefresh) {
        match r.subtype {
            0 => {
                let n = &mut self.neighbors[i];
                let Some(est) = &n.established else { return };
                if !est.negotiated.families.contains(&r.family) {
                    return;
                }
                let enhanced = est.negotiated.remote.has(70);
                if enhanced {
                    let _ = n.session.send_route_refresh(RouteRefresh {
                        family: r.family,
                        subtype: 1,
                    });
                }
                let prefixes: Vec<IpNet> = self
                    .local
                    .keys()
                    .filter(|p| AddressFamily::of(p) == r.family)
                    .copied()
                    .collect();
                self.send_routes(i, &prefixes);
                if enhanced {
                    let _ = self.neighbors[i].session.send_route_refresh(RouteRefresh {
                        family: r.family,
                        subtype: 2,
                    });
                }
                self.drive(i, Instant::now());
            }
            1 => {
                for (p, (_, stale)) in self.neighbors[i].adj_in.iter_mut() {
                    if AddressFamily::of(p) == r.family {
                        *stale = true;
                    }
                }
            }
            2 => self.purge_stale(i, Some(r.family)),
            _ => {}
        }
    }

    fn purge_stale(&mut self, i: usize, family: Option<AddressFamily>) {
        let n = &mut self.neighbors[i];
        let address = n.config.address;
        let stale: Vec<IpNet> = n
            .adj_in
            .iter()
            .filter(|(p, (_, s))| *s && family.is_none_or(|f| AddressFamily::of(p) == f))
            .map(|(p, _)| *p)
            .collect();
        for p in &stale {
            n.adj_in.remove(p);
        }
        if !n.adj_in.values().any(|(_, s)| *s) {
            n.stale_until = None;
        }
        let withdrawn = stale.clone();
        for p in stale {
            self.loc_rib.remove(&p, address);
        }
        if !withdrawn.is_empty() {
            self.emit(SpeakerEvent::Update {
                neighbor: address,
                announce: Vec::new(),
                withdraw: withdrawn,
            });
        }
    }

    fn receive_update(&mut self, i: usize, update: Update, _now: Instant) {
        if let Some(family) = update.end_of_rib() {
            self.purge_stale(i, Some(family));
            return;
        }
        let n = &mut self.neighbors[i];
        let address = n.config.address;
        let Some(est) = &n.established else { return };
        let peer = Peer {
            address,
            router_id: est.negotiated.remote.router_id,
            remote_as: est.negotiated.remote_as(),
            ebgp: est.negotiated.remote_as() != self.local_as,
        };
        let (classic, mp) = Path::from_update(&update, est.negotiated.options.four_octet_as);
        let withdraw = update.withdrawn_all();
        for p in &withdraw {
            if n.adj_in.remove(p).is_some() {
                self.loc_rib.remove(p, address);
            }
        }
        let mut announce = Vec::new();
        let mut learn = |prefixes: Vec<IpNet>, path: Option<Path>| {
            let Some(path) = path else { return };
            let path = Arc::new(path);
            for p in prefixes {
                announce.push(Learned {
                    prefix: p,
                    next_hop: path.next_hop,
                    as_path: path.as_path.flatten(),
                    communities: path.communities.clone(),
                });
                n.adj_in.insert(p, (path.clone(), false));
                self.loc_rib.insert(
                    p,
                    Candidate {
                        peer,
                        path: path.clone(),
                    },
                );
            }
        };
        learn(update.nlri.iter().map(|p| IpNet::V4(*p)).collect(), classic);
        learn(
            update
                .mp_reach()
                .map(|r| r.nlri.clone())
                .unwrap_or_default(),
            mp,
        );
        if !announce.is_empty() || !withdraw.is_empty() {
            self.emit(SpeakerEvent::Update {
                neighbor: address,
                announce,
                withdraw,
            });
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Announce(a) => {
                let prefix = a.prefix.trunc();
                self.local.insert(prefix, Announcement { prefix, ..a });
                for i in 0..self.neighbors.len() {
                    self.send_routes(i, &[prefix]);
                }
            }
            Command::Withdraw(prefix) => {
                if self.local.remove(&prefix).is_some() {
                    for i in 0..self.neighbors.len() {
                        let n = &mut self.neighbors[i];
                        if n.adj_out.remove(&prefix) {
                            for u in pack_withdrawals(&[prefix], MAX_MESSAGE_LEN) {
                                let _ = n.session.send_update(u);
                            }
                        }
                        self.drive(i, Instant::now());
                    }
                }
            }
            Command::LocRib(reply) => {
                let mut out: Vec<RibEntry> = self
                    .loc_rib
                    .iter()
                    .map(|(p, c)| RibEntry {
                        prefix: *p,
                        neighbor: c.peer.address,
                        path: (*c.path).clone(),
                    })
                    .collect();
                out.sort_by_key(|e| e.prefix);
                let _ = reply.send(out);
            }
            Command::AdjRibIn(addr, reply) => {
                let mut out: Vec<(IpNet, Path)> = self
                    .neighbors
                    .iter()
                    .filter(|n| n.config.address == addr)
                    .flat_map(|n| n.adj_in.iter().map(|(p, (path, _))| (*p, (**path).clone())))
                    .collect();
                out.sort_by_key(|e| e.0);
                let _ = reply.send(out);
            }
            Command::AdjRibOut(addr, reply) => {
                let mut out: Vec<IpNet> = self
                    .neighbors
                    .iter()
                    .filter(|n| n.config.address == addr)
                    .flat_map(|n| n.adj_out.iter().copied())
                    .collect();
                out.sort();
                let _ = reply.send(out);
            }
            Command::State(addr, reply) => {
                let _ = reply.send(
                    self.neighbors
                        .iter()
                        .find(|n| n.config.address == addr)
                        .map(|n| n.session.state()),
                );
            }
            Command::Refresh(addr) => {
                if let Some(i) = self.neighbors.iter().position(|n| n.config.address == addr) {
                    let n = &mut self.neighbors[i];
                    let families = n
                        .established
                        .as_ref()
                        .map(|e| e.negotiated.families.clone())
                        .unwrap_or_default();
                    for family in families {
                        let _ = n
                            .session
                            .send_route_refresh(RouteRefresh { family, subtype: 0 });
                    }
                    self.drive(i, Instant::now());
                }
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Sends every local route to neighbor `i` (and End-of-RIB when `initial`).
    fn send_all(&mut self, i: usize, initial: bool) {
        let prefixes: Vec<IpNet> = self.local.keys().copied().collect();
        self.send_routes(i, &prefixes);
        if initial {
            let n = &mut self.neighbors[i];
            let families = n
                .established
                .as_ref()
                .map(|e| e.negotiated.families.clone())
                .unwrap_or_default();
            for f in families {
                let eor = if f == AddressFamily::IPV4_UNICAST {
                    Update::default()
                } else {
                    Update {
                        attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                            family: f,
                            withdrawn: Vec::new(),
                        })],
                        ..Update::default()
                    }
                };
                let _ = n.session.send_update(eor);
            }
            self.drive(i, Instant::now());
        }
    }

    /// Sends the given local routes to neighbor `i` if it is established (Adj-RIB-Out).
    fn send_routes(&mut self, i: usize, prefixes: &[IpNet]) {
        let local_as = self.local_as;
        let n = &mut self.neighbors[i];
        let Some(est) = &n.established else { return };
        let ebgp = est.negotiated.remote_as() != local_as;
        let opts = est.negotiated.options;
        let local_ip = match est.local.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            ip => ip,
        };
        // Group by the attributes that differ between announcements.
        let mut groups: BTreeMap<(bool, String), Group> = BTreeMap::new();
        for p in prefixes {
            let Some(a) = self.local.get(p) else { continue };
            let family = AddressFamily::of(p);
            if !est.negotiated.families.contains(&family) {
                continue;
            }
            let v6 = matches!(p, IpNet::V6(_));
            let path = if ebgp {
                AsPath::sequence(vec![local_as])
            } else {
                AsPath::default()
            };
            let mut attrs = vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(path.clone()),
            ];
            let mut mp_next_hop = None;
            if v6 {
                let global = match (a.next_hop, local_ip) {
                    (Some(IpAddr::V6(g)), _) => g,
                    (Some(IpAddr::V4(v4)), _) | (None, IpAddr::V4(v4)) => v4.to_ipv6_mapped(),
                    (None, IpAddr::V6(g)) => g,
                };
                mp_next_hop = Some(NextHop::V6 {
                    global,
                    link_local: None,
                });
            } else {
                let nh = match (a.next_hop, local_ip) {
                    (Some(IpAddr::V4(v4)), _) | (None, IpAddr::V4(v4)) => v4,
                    // An IPv4 route over an IPv6 session needs an IPv4 next hop.
                    _ => continue,
                };
                attrs.push(PathAttribute::NextHop(nh));
            }
            if let Some(med) = a.med {
                attrs.push(PathAttribute::Med(med));
            }
            if !ebgp {
                attrs.push(PathAttribute::LocalPref(a.local_pref.unwrap_or(100)));
            }
            if !a.communities.is_empty() {
                attrs.push(PathAttribute::Communities(a.communities.clone()));
            }
            if !opts.four_octet_as && path.needs_four_octets() {
                attrs.push(PathAttribute::As4Path(path));
            }
            if !a.large_communities.is_empty() {
                attrs.push(PathAttribute::LargeCommunities(a.large_communities.clone()));
            }
            let key = (v6, format!("{attrs:?}{mp_next_hop:?}"));
            groups
                .entry(key)
                .or_insert_with(|| (attrs, mp_next_hop, Vec::new()))
                .2
                .push(*p);
        }
        for (_, (attrs, nh, group)) in groups {
            if let Ok(updates) = pack_announcements(&attrs, &group, nh, opts, MAX_MESSAGE_LEN) {
                for u in updates {
                    if n.session.send_update(u).is_ok() {
                        n.adj_out.extend(group.iter().copied());
                    }
                }
            }
        }
        self.drive(i, Instant::now());
    }
}
