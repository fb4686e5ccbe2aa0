//! The pure FSM: timers, hold-time negotiation, errors and their NOTIFICATIONs, collisions.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use strata_bgp::session::*;
use strata_bgp::wire::*;

const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config() -> SessionConfig {
    SessionConfig::new(65001, Ipv4Addr::new(10, 0, 0, 1), 65002)
}

fn open_bytes(asn: u32, hold: u16, id: Ipv4Addr) -> Vec<u8> {
    Message::Open(Open::new(
        asn,
        hold,
        id,
        vec![
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
            Capability::RouteRefresh,
        ],
    ))
    .to_bytes(Options::MODERN)
    .unwrap()
}

fn keepalive() -> Vec<u8> {
    Message::Keepalive.to_bytes(Options::MODERN).unwrap()
}

fn sent(s: &mut Session) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(b) = s.poll_transmit() {
        out.push(Message::parse(&b, Options::MODERN).unwrap().message);
    }
    out
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A session driven to Established with a peer proposing `hold`.
fn established(t0: Instant, hold: u16) -> Session {
    let mut s = Session::new(config());
    s.handle(t0, Input::Start);
    s.handle(t0, Input::Connected);
    s.handle(t0, Input::Data(&open_bytes(65002, hold, PEER_ID)));
    s.handle(t0, Input::Data(&keepalive()));
    assert_eq!(s.state(), State::Established);
    sent(&mut s);
    events(&mut s);
    s
}

fn notification_sent(s: &mut Session) -> (u8, u8) {
    let msgs = sent(s);
    match msgs.last() {
        Some(Message::Notification(n)) => (n.code, n.subcode),
        other => panic!("no NOTIFICATION sent: {other:?}"),
    }
}

#[test]
fn active_start_connect_retry_with_backoff() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    assert_eq!(s.poll_timeout(), None);
    s.handle(t0, Input::Start);
    assert_eq!(s.state(), State::Connect);
    assert_eq!(events(&mut s), vec![Event::Connect]);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    s.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(events(&mut s), vec![Event::Connect]);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    // The attempt fails: Active, and the next attempt waits longer.
    s.handle(t0 + Duration::from_secs(2), Input::ConnectionFailed);
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(6)));
    s.handle_timeout(t0 + Duration::from_secs(6));
    assert_eq!(s.state(), State::Connect);
    assert_eq!(events(&mut s), vec![Event::Connect]);
}

#[test]
fn passive_waits_for_the_peer() {
    let t0 = Instant::now();
    let mut c = config();
    c.passive = true;
    let mut s = Session::new(c);
    s.handle(t0, Input::Start);
    assert_eq!(s.state(), State::Active);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), None);
    s.handle(t0, Input::Connected);
    assert_eq!(s.state(), State::OpenSent);
    let msgs = sent(&mut s);
    let Message::Open(open) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.hold_time, 90);
    assert!(open.four_octet_as());
    assert_eq!(
        open.families(),
        vec![AddressFamily::IPV4_UNICAST, AddressFamily::IPV6_UNICAST]
    );
    // OpenSent waits at most four minutes for the OPEN.
    assert_eq!(s.poll_timeout(), Some(t0 + OPEN_HOLD_TIME));
}

#[test]
fn open_exchange_negotiates_hold_time_and_keepalives() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    s.handle(t0, Input::Start);
    s.handle(t0, Input::Connected);
    sent(&mut s);
    events(&mut s);
    s.handle(t0, Input::Data(&open_bytes(65002, 30, PEER_ID)));
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(sent(&mut s), vec![Message::Keepalive]);
    assert_eq!(
        events(&mut s),
        vec![Event::OpenReceived { router_id: PEER_ID }]
    );
    let neg = s.negotiated().unwrap();
    assert_eq!(neg.hold_time, 30);
    assert_eq!(neg.families, vec![AddressFamily::IPV4_UNICAST]);
    assert!(neg.options.four_octet_as);
    s.handle(t0, Input::Data(&keepalive()));
    assert_eq!(s.state(), State::Established);
    assert!(matches!(&events(&mut s)[..], [Event::Established(n)] if n.remote_as() == 65002));
    // Keepalive every hold/3 = 10 s.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(sent(&mut s), vec![Message::Keepalive]);
    s.handle_timeout(t0 + Duration::from_secs(20));
    assert_eq!(sent(&mut s), vec![Message::Keepalive]);
    // Nothing received for 30 s: hold timer expires.
    s.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(notification_sent(&mut s), (4, 0));
    assert_eq!(s.state(), State::Idle);
    let ev = events(&mut s);
    assert_eq!(ev[0], Event::Disconnect);
    assert!(matches!(&ev[1], Event::Down(DownReason::Sent(n)) if n.code == 4));
    // Automatic restart after the backoff.
    let t = s.poll_timeout().unwrap();
    s.handle_timeout(t);
    assert_eq!(s.state(), State::Connect);
    assert_eq!(events(&mut s), vec![Event::Connect]);
}

#[test]
fn received_messages_restart_the_hold_timer() {
    let t0 = Instant::now();
    let mut s = established(t0, 9);
    for i in 1..=5u64 {
        s.handle(t0 + Duration::from_secs(8 * i), Input::Data(&keepalive()));
    }
    s.handle_timeout(t0 + Duration::from_secs(45));
    assert_eq!(s.state(), State::Established);
    s.handle_timeout(t0 + Duration::from_secs(49));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn hold_time_zero_means_no_timers() {
    let t0 = Instant::now();
    let s = established(t0, 0);
    assert_eq!(s.negotiated().unwrap().hold_time, 0);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn bad_peer_as_and_bad_identifier() {
    let t0 = Instant::now();
    for (open, code) in [
        (open_bytes(65009, 90, PEER_ID), (2, 2)),
        (open_bytes(65002, 90, Ipv4Addr::new(10, 0, 0, 1)), (2, 3)),
        (open_bytes(65002, 2, PEER_ID), (2, 6)),
    ] {
        let mut s = Session::new(config());
        s.handle(t0, Input::Start);
        s.handle(t0, Input::Connected);
        sent(&mut s);
        events(&mut s);
        s.handle(t0, Input::Data(&open));
        assert_eq!(notification_sent(&mut s), code);
        assert_eq!(s.state(), State::Idle);
        let ev = events(&mut s);
        assert!(
            matches!(&ev[1], Event::Down(DownReason::Sent(n)) if (n.code, n.subcode) == code),
            "{ev:?}"
        );
    }
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    s.handle(t0, Input::Start);
    s.handle(t0, Input::Connected);
    sent(&mut s);
    let update = Message::Update(Update::default())
        .to_bytes(Options::MODERN)
        .unwrap();
    s.handle(t0, Input::Data(&update));
    assert_eq!(notification_sent(&mut s), (5, 1));
    let mut s = established(t0, 90);
    s.handle(t0, Input::Data(&open_bytes(65002, 90, PEER_ID)));
    assert_eq!(notification_sent(&mut s), (5, 3));
}

#[test]
fn garbage_is_a_header_error() {
    let t0 = Instant::now();
    let mut s = established(t0, 90);
    s.handle(t0, Input::Data(&[0u8; 19]));
    assert_eq!(notification_sent(&mut s), (1, 1));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn received_notification_and_stop() {
    let t0 = Instant::now();
    let mut s = established(t0, 90);
    let cease = Message::Notification(Notification::cease(2))
        .to_bytes(Options::MODERN)
        .unwrap();
    s.handle(t0, Input::Data(&cease));
    assert!(sent(&mut s).is_empty());
    assert!(
        events(&mut s)
            .iter()
            .any(|e| matches!(e, Event::Down(DownReason::Received(n)) if n.code == 6))
    );
    let mut s = established(t0, 90);
    s.handle(t0, Input::Stop { subcode: 2 });
    assert_eq!(notification_sent(&mut s), (6, 2));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.poll_timeout(), None, "a stopped session does not restart");
}

#[test]
fn updates_arrive_in_pieces_and_rfc7606_keeps_the_session() {
    let t0 = Instant::now();
    let mut s = established(t0, 90);
    let update = Message::Update(Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![65002])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 2)),
        ],
        nlri: vec!["10.2.0.0/16".parse().unwrap()],
        ..Update::default()
    })
    .to_bytes(Options::MODERN)
    .unwrap();
    let mut twice = update.clone();
    twice.extend_from_slice(&update);
    for b in &twice {
        s.handle(t0, Input::Data(std::slice::from_ref(b)));
    }
    let ev = events(&mut s);
    assert_eq!(ev.len(), 2);
    assert!(
        matches!(&ev[0], Event::Update { update, issues } if update.nlri.len() == 1 && issues.is_empty())
    );
    // An invalid ORIGIN: treat-as-withdraw, the session stays.
    let mut bad = update.clone();
    let origin_value = 19 + 4 + 3;
    bad[origin_value] = 9;
    s.handle(t0, Input::Data(&bad));
    assert_eq!(s.state(), State::Established);
    let ev = events(&mut s);
    assert!(matches!(&ev[0], Event::Update { update, issues }
        if update.nlri.is_empty() && update.withdrawn.len() == 1 && issues.len() == 1));
    assert!(sent(&mut s).is_empty());
}

#[test]
fn sending_updates_needs_an_established_session() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    assert!(s.send_update(Update::default()).is_err());
    let mut s = established(t0, 90);
    s.send_update(Update::default()).unwrap();
    assert_eq!(sent(&mut s), vec![Message::Update(Update::default())]);
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 2);
    assert_eq!(resolve_collision(low, high), Keep::Incoming);
    assert_eq!(resolve_collision(high, low), Keep::Outgoing);
}

proptest! {
    #[test]
    fn random_bytes_never_break_the_fsm(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let t0 = Instant::now();
        let mut s = established(t0, 90);
        for c in &chunks {
            s.handle(t0, Input::Data(c));
        }
        if s.state() != State::Established {
            prop_assert_eq!(s.state(), State::Idle);
            let msgs = sent(&mut s);
            prop_assert!(matches!(msgs.last(), Some(Message::Notification(_))));
        }
    }
}
