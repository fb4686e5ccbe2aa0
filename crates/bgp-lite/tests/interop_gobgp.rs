//! Interop with a real GoBGP (gobgpd), started by each test on its own 127.0.x.y addresses,
//! BGP and gRPC ports. Skips (or fails with CI=true) when `gobgpd`/`gobgp` are missing.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use ipnet::IpNet;
use strata_bgp::speaker::{Announcement, SpeakerEvent};
use strata_bgp::wire::Community;

const LONG: Duration = Duration::from_secs(40);

fn have_gobgp() -> bool {
    have("gobgpd") && have("gobgp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_exchanges_1000_v4_and_100_v6_prefixes_each_way() {
    if !have_gobgp() {
        return;
    }
    let (s, g) = ("127.0.40.1", "127.0.40.3");
    let gobgp = GoBgp::start(
        g,
        port(17401),
        port(17402),
        65003,
        s,
        port(17400),
        65001,
        true,
        9,
    );
    // GoBGP's routes first (one gobgp call each); a 127/8 next hop would be treated as
    // withdraw by GoBGP, so documentation addresses are used.
    let theirs4 = v4_prefixes(42, 1000);
    let theirs6 = v6_prefixes(42, 100);
    for p in &theirs4 {
        gobgp.cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv4",
            p,
            "nexthop",
            "192.0.2.3",
            "community",
            "65003:1",
        ]);
    }
    for p in &theirs6 {
        gobgp.cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv6",
            p,
            "nexthop",
            "2001:db8::3",
            "community",
            "65003:2",
        ]);
    }
    let (sp, mut ev) = strata(s, port(17400), 65001, neighbor(g, port(17401), 65003)).await;
    let ours: Vec<IpNet> = v4_prefixes(41, 1000)
        .iter()
        .chain(v6_prefixes(41, 100).iter())
        .map(|p| p.parse().unwrap())
        .collect();
    for p in &ours {
        let mut a = Announcement::new(*p);
        a.communities = vec![Community::new(65001, 1)];
        a.next_hop = Some(if p.addr().is_ipv4() {
            "192.0.2.1".parse().unwrap()
        } else {
            "2001:db8::1".parse().unwrap()
        });
        sp.announce(a).unwrap();
    }
    let up = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(up.is_some(), "no session: {}", gobgp.log());
    let gip: IpAddr = g.parse().unwrap();
    assert!(
        wait_until_async(LONG, || async {
            sp.adj_rib_in(gip).await.unwrap().len() == 1100
        })
        .await,
        "strata got {}",
        sp.adj_rib_in(gip).await.unwrap().len()
    );
    assert!(
        wait_until(LONG, || gobgp.received(s, "ipv4") == 1000
            && gobgp.received(s, "ipv6") == 100),
        "GoBGP got {} + {}",
        gobgp.received(s, "ipv4"),
        gobgp.received(s, "ipv6")
    );
    let rib = sp.adj_rib_in(gip).await.unwrap();
    let (_, v4) = rib.iter().find(|(p, _)| p.addr().is_ipv4()).unwrap();
    assert_eq!(v4.communities, vec![Community::new(65003, 1)]);
    assert_eq!(v4.next_hop, "192.0.2.3".parse::<IpAddr>().unwrap());
    let (_, v6) = rib.iter().find(|(p, _)| p.addr().is_ipv6()).unwrap();
    assert_eq!(v6.communities, vec![Community::new(65003, 2)]);
    assert_eq!(v6.next_hop, "2001:db8::3".parse::<IpAddr>().unwrap());
    let shown = gobgp.cli(&["neighbor", s, "adj-in", "-a", "ipv4", "10.41.0.7/32"]);
    assert!(shown.contains("65001:1"), "{shown}");

    // Withdrawals both ways.
    for p in ours.iter().take(500) {
        sp.withdraw(*p).unwrap();
    }
    assert!(
        wait_until(LONG, || gobgp.received(s, "ipv4") == 500),
        "GoBGP still has {}",
        gobgp.received(s, "ipv4")
    );
    for p in theirs4.iter().take(100) {
        gobgp.cli(&["global", "rib", "del", "-a", "ipv4", p]);
    }
    assert!(
        wait_until_async(LONG, || async {
            sp.adj_rib_in(gip).await.unwrap().len() == 1000
        })
        .await,
        "strata still has {}",
        sp.adj_rib_in(gip).await.unwrap().len()
    );
    // Graceful shutdown: GoBGP sees Cease / administrative shutdown.
    sp.shutdown().await.unwrap();
    assert!(
        wait_until(LONG, || gobgp.log().contains("code 6(cease) subcode 2")),
        "{}",
        gobgp.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_connects_to_passive_strata_wrong_as_hold_timer_and_restart() {
    if !have_gobgp() {
        return;
    }
    // GoBGP thinks we are 65009: it refuses our OPEN with Bad Peer AS.
    let (s, g) = ("127.0.41.1", "127.0.41.3");
    let gobgp = GoBgp::start(
        g,
        port(17411),
        port(17412),
        65003,
        s,
        port(17410),
        65009,
        false,
        9,
    );
    let mut n = neighbor(g, port(17411), 65003);
    n.passive = true;
    let (sp, mut ev) = strata(s, port(17410), 65001, n).await;
    let down = wait_event(&mut ev, LONG, |e| matches!(e, SpeakerEvent::Down { .. })).await;
    assert!(
        matches!(&down, Some(SpeakerEvent::Down { reason, .. }) if reason.contains("(2/2)")),
        "{down:?} {}",
        gobgp.log()
    );
    sp.shutdown().await.unwrap();
    drop(gobgp);

    // A good session, GoBGP active and strata passive; then GoBGP paused: our hold timer fires.
    let (s, g) = ("127.0.41.5", "127.0.41.7");
    let gobgp = GoBgp::start(
        g,
        port(17415),
        port(17416),
        65003,
        s,
        port(17414),
        65001,
        false,
        3,
    );
    let mut n = neighbor(g, port(17415), 65003);
    n.passive = true;
    n.hold_time = 3;
    let (sp, mut ev) = strata(s, port(17414), 65001, n).await;
    let up = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(up.is_some(), "no session: {}", gobgp.log());
    gobgp.proc.signal("STOP");
    let down = wait_event(&mut ev, Duration::from_secs(10), |e| {
        matches!(e, SpeakerEvent::Down { .. })
    })
    .await;
    gobgp.proc.signal("CONT");
    assert!(
        matches!(&down, Some(SpeakerEvent::Down { reason, .. }) if reason.contains("(4/0)")),
        "{down:?}"
    );
    let again = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(again.is_some(), "no session after SIGCONT: {}", gobgp.log());

    // Peer restart: gobgpd killed and started again reconnects to the passive strata.
    let mut gobgp = gobgp;
    gobgp.restart();
    let down = wait_event(&mut ev, LONG, |e| matches!(e, SpeakerEvent::Down { .. })).await;
    assert!(down.is_some());
    let again = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(again.is_some(), "no session after restart: {}", gobgp.log());
    sp.shutdown().await.unwrap();
}
