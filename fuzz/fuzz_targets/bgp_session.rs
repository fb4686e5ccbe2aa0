//! Any byte stream into an established session: the FSM must never panic, and when it drops
//! the session (other than on the peer's NOTIFICATION) it must have queued a NOTIFICATION.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use strata_bgp::session::{DownReason, Event, Input, Session, SessionConfig, State};
use strata_bgp::wire::{Message, Open, Options};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(65001, Ipv4Addr::new(10, 0, 0, 1), 65002));
    s.handle(t0, Input::Start);
    s.handle(t0, Input::Connected);
    let open = Message::Open(Open::new(65002, 90, Ipv4Addr::new(10, 0, 0, 2), vec![]));
    s.handle(t0, Input::Data(&open.to_bytes(Options::MODERN).unwrap()));
    s.handle(
        t0,
        Input::Data(&Message::Keepalive.to_bytes(Options::MODERN).unwrap()),
    );
    assert_eq!(s.state(), State::Established);
    while s.poll_transmit().is_some() {}
    // The first byte splits the input into chunks of varying size.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for chunk in data.chunks(step) {
        s.handle(t0, Input::Data(chunk));
    }
    s.handle_timeout(t0 + Duration::from_secs(1));
    if s.state() != State::Established {
        let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
        let received = events
            .iter()
            .any(|e| matches!(e, Event::Down(DownReason::Received(_))));
        let mut last = None;
        while let Some(b) = s.poll_transmit() {
            last = Some(b);
        }
        if !received {
            let last = last.expect("a NOTIFICATION before dropping the session");
            assert_eq!(last[18], 3, "last message is a NOTIFICATION");
        }
    }
    while s.poll_event().is_some() {}
});
