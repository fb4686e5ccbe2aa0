//! The BGP finite state machine of RFC 4271 §8 as a pure state machine (no I/O, no clock).
//!
//! The shell feeds TCP events and received bytes in with [`Session::handle`], fires timers
//! with [`Session::handle_timeout`] at [`Session::poll_timeout`], writes what
//! [`Session::poll_transmit`] returns to the connection, and acts on [`Session::poll_event`]
//! (open a connection, close it, routes learned, session up or down).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::error::{DecodeError, Error};
use crate::wire::{
    AddressFamily, AttributeIssue, Capability, GracefulRestart, MAX_MESSAGE_LEN, Message,
    Notification, Open, Options, RouteRefresh, Update, frame_len,
};

/// Hold time used while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// Configuration of one session (one neighbor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The AS the neighbor must have.
    pub remote_as: u32,
    /// Hold time we propose (0 or at least 3 seconds).
    pub hold_time: u16,
    /// Wait for the neighbor to connect instead of connecting.
    pub passive: bool,
    /// Families we offer (multiprotocol capability).
    pub families: Vec<AddressFamily>,
    /// Announce the 4-octet AS capability (turn off to behave as a 2-octet-only speaker).
    pub four_octet_as: bool,
    /// Restart time to announce in the graceful restart capability (helper side), if any.
    pub graceful_restart: Option<u16>,
    /// First reconnect delay; it doubles after each failure up to `max_backoff` and resets
    /// when the session is established.
    pub connect_retry: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl SessionConfig {
    /// A configuration with the usual defaults: hold time 90 s, active, IPv4 and IPv6 unicast,
    /// 4-octet AS, graceful restart helper with 120 s, reconnect after 1 s up to 30 s.
    pub fn new(local_as: u32, router_id: Ipv4Addr, remote_as: u32) -> SessionConfig {
        SessionConfig {
            local_as,
            router_id,
            remote_as,
            hold_time: 90,
            passive: false,
            families: vec![AddressFamily::IPV4_UNICAST, AddressFamily::IPV6_UNICAST],
            four_octet_as: true,
            graceful_restart: Some(120),
            connect_retry: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// The OPEN this configuration sends.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::EnhancedRouteRefresh);
        if let Some(time) = self.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                flags: 0,
                restart_time: time.min(0x0fff),
                families: Vec::new(),
            }));
        }
        if self.four_octet_as {
            caps.push(Capability::FourOctetAs(self.local_as));
            Open::new(self.local_as, self.hold_time, self.router_id, caps)
        } else {
            Open {
                my_as: u16::try_from(self.local_as).unwrap_or(crate::wire::AS_TRANS as u16),
                hold_time: self.hold_time,
                router_id: self.router_id,
                capabilities: caps,
            }
        }
    }
}

/// The FSM states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running (stopped, or waiting to restart after an error).
    Idle,
    /// Waiting for an outgoing connection.
    Connect,
    /// Waiting for an incoming connection (or the next connect attempt).
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for KEEPALIVE.
    OpenConfirm,
    /// Routes flow.
    Established,
}

/// What both sides agreed on in their OPENs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's OPEN.
    pub remote: Open,
    /// Hold time in seconds (the smaller proposal; 0 means no keepalives).
    pub hold_time: u16,
    /// Codec options for this session.
    pub options: Options,
    /// Families both sides announced.
    pub families: Vec<AddressFamily>,
}

impl Negotiated {
    /// The peer's AS.
    pub fn remote_as(&self) -> u32 {
        self.remote.asn()
    }

    /// The peer's graceful restart capability, if any.
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.remote.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }
}

/// Why a session left the OpenSent, OpenConfirm or Established state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION (an error the peer made, hold timer, or a stop).
    Sent(Notification),
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    /// The TCP connection closed or failed.
    ConnectionLost,
}

impl DownReason {
    /// A short human description.
    pub fn describe(&self) -> String {
        match self {
            DownReason::Sent(n) => format!("sent {}", n.describe()),
            DownReason::Received(n) => format!("received {}", n.describe()),
            DownReason::ConnectionLost => "connection lost".into(),
        }
    }
}

/// Inputs from the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// ManualStart: begin connecting (or listening when passive).
    Start,
    /// ManualStop: send Cease with this subcode (2 administrative shutdown) if connected and go
    /// Idle for good.
    Stop {
        /// Cease subcode (RFC 4486).
        subcode: u8,
    },
    /// A TCP connection to the peer is up (outgoing completed or incoming accepted). In Idle
    /// this also starts the session (the shell accepted a connection for it).
    Connected,
    /// The connection attempt failed or the connection closed.
    ConnectionFailed,
    /// Bytes received on the connection.
    Data(&'a [u8]),
}

/// What the shell must do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Open a TCP connection to the peer (drop any pending attempt).
    Connect,
    /// Close the TCP connection once the queued bytes are written.
    Disconnect,
    /// The peer's OPEN arrived (the shell checks for connection collisions here).
    OpenReceived {
        /// The peer's BGP identifier.
        router_id: Ipv4Addr,
    },
    /// The session is established.
    Established(Box<Negotiated>),
    /// An UPDATE arrived (already handled per RFC 7606; see the issues).
    Update {
        /// The UPDATE.
        update: Update,
        /// Problems handled without resetting the session.
        issues: Vec<AttributeIssue>,
    },
    /// The peer asks us to resend our routes (or marks BoRR/EoRR).
    RouteRefresh(RouteRefresh),
    /// The session went down.
    Down(DownReason),
}

/// One BGP session with one neighbor: the RFC 4271 FSM, pure.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    stopped: bool,
    negotiated: Option<Negotiated>,
    rx: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    backoff: Duration,
    connect_retry: Option<Instant>,
    idle_hold: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
}

impl Session {
    /// A session in Idle; give it [`Input::Start`] to run.
    pub fn new(config: SessionConfig) -> Session {
        let backoff = config.connect_retry;
        Session {
            config,
            state: State::Idle,
            stopped: true,
            negotiated: None,
            rx: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            backoff,
            connect_retry: None,
            idle_hold: None,
            hold: None,
            keepalive: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What was negotiated (from OpenConfirm on).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Start => {
                if self.state == State::Idle {
                    self.stopped = false;
                    self.idle_hold = None;
                    self.start(now);
                }
            }
            Input::Stop { subcode } => {
                if self.is_connected() {
                    let n = Notification::cease(subcode);
                    self.send(&Message::Notification(n.clone()));
                    self.drop_connection(now, DownReason::Sent(n));
                }
                self.stopped = true;
                self.clear_timers();
                self.state = State::Idle;
            }
            Input::Connected => match self.state {
                // An accepted connection while Idle is an automatic start with passive TCP
                // establishment (RFC 4271 event 5) followed by the connection.
                State::Idle | State::Connect | State::Active => {
                    self.stopped = false;
                    self.idle_hold = None;
                    self.connect_retry = None;
                    let open = self.config.open();
                    self.send(&Message::Open(open));
                    self.hold = Some(now + OPEN_HOLD_TIME);
                    self.state = State::OpenSent;
                }
                _ => {}
            },
            Input::ConnectionFailed => match self.state {
                State::Connect | State::Active => {
                    self.state = State::Active;
                    self.connect_retry = Some(now + self.next_backoff());
                }
                State::OpenSent | State::OpenConfirm | State::Established => {
                    self.drop_connection(now, DownReason::ConnectionLost);
                }
                State::Idle => {}
            },
            Input::Data(bytes) => {
                if self.is_connected() {
                    self.rx.extend_from_slice(bytes);
                    self.process_rx(now);
                }
            }
        }
    }

    /// Next message bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.connect_retry,
            self.idle_hold,
            self.hold,
            self.keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.hold.is_some_and(|t| t <= now) {
            self.hold = None;
            if self.is_connected() {
                let n = Notification {
                    code: 4,
                    subcode: 0,
                    data: Vec::new(),
                };
                self.send(&Message::Notification(n.clone()));
                self.drop_connection(now, DownReason::Sent(n));
            }
        }
        if self.keepalive.is_some_and(|t| t <= now) {
            self.keepalive = None;
            if matches!(self.state, State::OpenConfirm | State::Established) {
                self.send(&Message::Keepalive);
                self.arm_keepalive(now);
            }
        }
        if self.connect_retry.is_some_and(|t| t <= now) {
            self.connect_retry = None;
            match self.state {
                State::Connect | State::Active if !self.config.passive => {
                    self.state = State::Connect;
                    self.events.push_back(Event::Connect);
                    self.connect_retry = Some(now + self.next_backoff());
                }
                _ => {}
            }
        }
        if self.idle_hold.is_some_and(|t| t <= now) {
            self.idle_hold = None;
            if self.state == State::Idle && !self.stopped {
                self.start(now);
            }
        }
    }

    /// Queues an UPDATE; only in Established.
    pub fn send_update(&mut self, update: Update) -> Result<(), Error> {
        self.send_message(Message::Update(update))
    }

    /// Queues a ROUTE-REFRESH request; only in Established.
    pub fn send_route_refresh(&mut self, refresh: RouteRefresh) -> Result<(), Error> {
        self.send_message(Message::RouteRefresh(refresh))
    }

    fn send_message(&mut self, message: Message) -> Result<(), Error> {
        let Some(neg) = &self.negotiated else {
            return Err(Error::Config {
                what: "session state",
                value: format!("{:?}", self.state),
                reason: "messages other than OPEN need an established session".into(),
            });
        };
        if self.state != State::Established {
            return Err(Error::Config {
                what: "session state",
                value: format!("{:?}", self.state),
                reason: "messages other than OPEN need an established session".into(),
            });
        }
        let bytes = message
            .to_bytes(neg.options)
            .map_err(|source| Error::Encode { source })?;
        self.transmit.push_back(bytes);
        Ok(())
    }

    fn is_connected(&self) -> bool {
        matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    fn start(&mut self, now: Instant) {
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            self.events.push_back(Event::Connect);
            self.connect_retry = Some(now + self.next_backoff());
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let current = self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
        current
    }

    fn clear_timers(&mut self) {
        self.connect_retry = None;
        self.idle_hold = None;
        self.hold = None;
        self.keepalive = None;
    }

    fn send(&mut self, message: &Message) {
        let opts = self
            .negotiated
            .as_ref()
            .map(|n| n.options)
            .unwrap_or_default();
        // Messages built by the FSM itself (OPEN, KEEPALIVE, NOTIFICATION) always encode; a
        // NOTIFICATION with oversized data is cut rather than lost.
        match message.to_bytes(opts) {
            Ok(bytes) => self.transmit.push_back(bytes),
            Err(_) => {
                if let Message::Notification(n) = message {
                    let cut = Notification {
                        data: Vec::new(),
                        ..n.clone()
                    };
                    if let Ok(bytes) = Message::Notification(cut).to_bytes(opts) {
                        self.transmit.push_back(bytes);
                    }
                }
            }
        }
    }

    /// Leaves a connected state: tells the shell to close, reports why, restarts later.
    fn drop_connection(&mut self, now: Instant, reason: DownReason) {
        self.events.push_back(Event::Disconnect);
        self.events.push_back(Event::Down(reason));
        self.rx.clear();
        self.negotiated = None;
        self.clear_timers();
        self.state = State::Idle;
        if !self.stopped {
            self.idle_hold = Some(now + self.next_backoff());
        }
    }

    fn fail(&mut self, now: Instant, error: DecodeError) {
        let n = error.notification();
        self.send(&Message::Notification(n.clone()));
        self.drop_connection(now, DownReason::Sent(n));
    }

    fn fsm_error(&mut self, now: Instant) {
        // RFC 6608 subcodes: 1 OpenSent, 2 OpenConfirm, 3 Established.
        let subcode = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            _ => 3,
        };
        let n = Notification {
            code: 5,
            subcode,
            data: Vec::new(),
        };
        self.send(&Message::Notification(n.clone()));
        self.drop_connection(now, DownReason::Sent(n));
    }

    fn process_rx(&mut self, now: Instant) {
        // Bounded: each round consumes one whole message or stops.
        while self.is_connected() {
            let opts = self
                .negotiated
                .as_ref()
                .map(|n| n.options)
                .unwrap_or_default();
            let len = match frame_len(&self.rx, opts) {
                Ok(Some(len)) => len,
                Ok(None) => return,
                Err(e) => return self.fail(now, e),
            };
            let decoded = Message::parse(&self.rx[..len], opts);
            self.rx.drain(..len);
            match decoded {
                Ok(d) => self.handle_message(now, d.message, d.issues),
                Err(e) => return self.fail(now, e),
            }
        }
    }

    fn handle_message(&mut self, now: Instant, message: Message, issues: Vec<AttributeIssue>) {
        if let Message::Notification(n) = message {
            self.drop_connection(now, DownReason::Received(n));
            return;
        }
        match (self.state, message) {
            (State::OpenSent, Message::Open(open)) => self.receive_open(now, open),
            (State::OpenConfirm, Message::Keepalive) => {
                self.restart_hold(now);
                self.backoff = self.config.connect_retry;
                self.state = State::Established;
                if let Some(neg) = &self.negotiated {
                    self.events
                        .push_back(Event::Established(Box::new(neg.clone())));
                }
            }
            (State::Established, Message::Keepalive) => self.restart_hold(now),
            (State::Established, Message::Update(update)) => {
                self.restart_hold(now);
                self.events.push_back(Event::Update { update, issues });
            }
            (State::Established, Message::RouteRefresh(r)) => {
                self.restart_hold(now);
                self.events.push_back(Event::RouteRefresh(r));
            }
            _ => self.fsm_error(now),
        }
    }

    fn receive_open(&mut self, now: Instant, open: Open) {
        let asn = open.asn();
        if asn != self.config.remote_as {
            return self.fail(
                now,
                DecodeError::BadPeerAs {
                    asn,
                    expected: self.config.remote_as,
                },
            );
        }
        if open.router_id == self.config.router_id || open.router_id.is_unspecified() {
            return self.fail(now, DecodeError::BadIdentifier { id: open.router_id });
        }
        let hold_time = open.hold_time.min(self.config.hold_time);
        let theirs = open.families();
        let families = self
            .config
            .families
            .iter()
            .copied()
            .filter(|f| theirs.contains(f))
            .collect();
        let options = Options {
            four_octet_as: self.config.four_octet_as && open.four_octet_as(),
            extended_message: false,
        };
        let router_id = open.router_id;
        self.negotiated = Some(Negotiated {
            remote: open,
            hold_time,
            options,
            families,
        });
        self.send(&Message::Keepalive);
        self.state = State::OpenConfirm;
        self.restart_hold(now);
        self.arm_keepalive(now);
        self.events.push_back(Event::OpenReceived { router_id });
    }

    fn hold_duration(&self) -> Option<Duration> {
        let hold = self.negotiated.as_ref()?.hold_time;
        (hold > 0).then(|| Duration::from_secs(u64::from(hold)))
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold = self.hold_duration().map(|d| now + d);
    }

    fn arm_keepalive(&mut self, now: Instant) {
        self.keepalive = self.hold_duration().map(|d| now + d / 3);
    }
}

/// Which connection survives a collision (RFC 4271 §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep the connection we initiated.
    Outgoing,
    /// Keep the connection the peer initiated.
    Incoming,
}

/// Resolves a connection collision: when our identifier is lower, the connection we initiated
/// is closed; otherwise the one the peer initiated is.
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Keep {
    if u32::from(local_id) < u32::from(remote_id) {
        Keep::Incoming
    } else {
        Keep::Outgoing
    }
}

/// Largest message this speaker sends or accepts (no extended message support).
pub const MAX_LEN: usize = MAX_MESSAGE_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let mut c = SessionConfig::new(1, Ipv4Addr::new(1, 1, 1, 1), 2);
        c.connect_retry = Duration::from_secs(1);
        c.max_backoff = Duration::from_secs(5);
        let mut s = Session::new(c);
        let got: Vec<u64> = (0..5).map(|_| s.next_backoff().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn open_of_a_two_octet_speaker_has_no_four_octet_capability() {
        let mut c = SessionConfig::new(4_200_000_000, Ipv4Addr::new(1, 1, 1, 1), 2);
        assert!(c.open().four_octet_as());
        assert_eq!(u32::from(c.open().my_as), crate::wire::AS_TRANS);
        assert_eq!(c.open().asn(), 4_200_000_000);
        c.four_octet_as = false;
        c.local_as = 65001;
        assert!(!c.open().four_octet_as());
        assert_eq!(c.open().asn(), 65001);
        c.graceful_restart = None;
        assert!(!c.open().has(64));
    }
}
