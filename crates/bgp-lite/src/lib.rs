//! A small BGP-4 speaker: sans-I/O codec and FSM with a tokio shell.
//!
//! A node announces its pod CIDRs and the host routes of its fixed-IP pods to the routers
//! people run (BIRD, GoBGP, FRR) without an extra daemon. Three layers, each usable alone:
//!
//! - [`wire`]: every message of RFC 4271 and RFC 2918 (OPEN, UPDATE, NOTIFICATION, KEEPALIVE,
//!   ROUTE-REFRESH with the RFC 7313 subtypes), the capabilities of RFC 5492 (multiprotocol for
//!   IPv4/IPv6 unicast, 4-octet AS, route refresh, graceful restart, ADD-PATH, enhanced route
//!   refresh, extended message, unknown ones preserved) and the path attributes a node needs
//!   (ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES,
//!   LARGE_COMMUNITY, MP_(UN)REACH_NLRI with link-local IPv6 next hops, AS4_PATH,
//!   AS4_AGGREGATOR, unknown optional transitive ones passed on with the partial bit). Decoding
//!   never panics; every error maps to its NOTIFICATION ([`DecodeError::code`]) or to the
//!   RFC 7606 [`Action`] (treat-as-withdraw, attribute discard, session reset).
//! - [`session`]: the RFC 4271 §8 FSM as a pure state machine (`handle(now, input)`,
//!   `poll_transmit`, `poll_timeout`, `handle_timeout`, `poll_event`): ConnectRetry with
//!   backoff, Hold and Keepalive timers, hold-time negotiation, bad peer AS and BGP identifier,
//!   collision resolution ([`session::resolve_collision`]). [`rib`]: Loc-RIB best-path
//!   selection.
//! - [`speaker`]: the tokio shell: active and passive neighbors, reconnect with backoff,
//!   collision handling, Adj-RIB-In, Loc-RIB, Adj-RIB-Out, announce and withdraw at runtime, an
//!   event stream, graceful-restart helper, graceful shutdown with Cease.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Instant;
//! use strata_bgp::session::{Event, Input, Session, SessionConfig, State};
//! use strata_bgp::wire::{Message, Open, Options};
//!
//! // The FSM is pure: time and bytes go in, bytes and events come out.
//! let now = Instant::now();
//! let mut session = Session::new(SessionConfig::new(65001, Ipv4Addr::new(10, 0, 0, 1), 65002));
//! session.handle(now, Input::Start);
//! assert_eq!(session.poll_event(), Some(Event::Connect)); // the shell opens TCP
//! session.handle(now, Input::Connected);
//! let our_open = session.poll_transmit().unwrap();
//! assert!(matches!(Message::parse(&our_open, Options::MODERN)?.message, Message::Open(_)));
//!
//! let peer_open = Message::Open(Open::new(65002, 90, Ipv4Addr::new(10, 0, 0, 2), vec![]));
//! session.handle(now, Input::Data(&peer_open.to_bytes(Options::MODERN)?));
//! session.handle(now, Input::Data(&Message::Keepalive.to_bytes(Options::MODERN)?));
//! assert_eq!(session.state(), State::Established);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Interop pitfalls (found with BIRD 2.0.12 and GoBGP 3.10 in the tests)
//!
//! - BIRD on loopback needs `multihop` (else "Invalid remote address"), `strict bind yes` to
//!   listen on its `local` address only, and a low `error wait time` (it waits 60–300 s after
//!   an error before reconnecting by default).
//! - An IPv6 channel over an IPv4 session needs `next hop address` in BIRD; BIRD rejects
//!   IPv4-mapped IPv6 next hops (`::ffff:a.b.c.d`, what this speaker sends by default for IPv6
//!   prefixes over IPv4 sessions) on import: give IPv6 announcements an IPv6 next hop.
//! - BIRD with `enable as4 off` refuses a 4-octet neighbor AS in its configuration yet still
//!   reads the 4-octet AS capability in the peer's OPEN: a 2-octet-only BIRD can only peer with
//!   a 2-octet AS (the AS_TRANS / AS4_PATH path is exercised between two strata speakers).
//! - BIRD imports routes with unresolvable multihop next hops as `unreachable`; they still count.
//! - BIRD sends a new session's routes in UPDATEs of 256 prefixes and holds the last, partial
//!   one back for about 3 s: of 100,000 routes, 99,840 are received and stored here within
//!   about 0.12 s and the last 160 arrive 3 s later. From a strata peer the same 100,000 take
//!   0.3–0.6 s end to end (`cargo bench -p strata-bench --bench bgp`).
//! - GoBGP listens on 0.0.0.0:179, gRPC :50051 and pprof :6060 unless told otherwise
//!   (`local-address-list`, `--api-hosts`, `--pprof-disable`), and treats a 127/8 IPv4 next hop
//!   as a withdraw: announce with a routable next hop.
//! - Real peers send OPENs with many optional parameters (one capability each), FQDN and
//!   extended-next-hop capabilities (kept as unknown), AS_TRANS with the 4-octet capability,
//!   empty AS_PATHs on iBGP, and ROUTE-REFRESH BoRR/EoRR; all are handled.
//! - A tokio runtime reading stdin must be shut down with `shutdown_background` or it waits
//!   forever for the blocking stdin read on exit.
//!
//! TCP MD5 (RFC 2385) is not implemented.
#![deny(missing_docs)]

pub mod error;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod wire;

pub use error::{Action, DecodeError, EncodeError, Error};
