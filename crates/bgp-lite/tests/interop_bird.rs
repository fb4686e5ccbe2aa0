//! Interop with a real BIRD 2, started by each test on its own 127.0.x.y addresses and ports.
//! Skips (or fails with CI=true) when `bird`/`birdc` are missing.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use ipnet::IpNet;
use strata_bgp::speaker::{Announcement, SpeakerEvent};
use strata_bgp::wire::Community;

const LONG: Duration = Duration::from_secs(30);

fn have_bird() -> bool {
    have("bird") && have("birdc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_exchanges_1000_v4_and_100_v6_prefixes_each_way() {
    if !have_bird() {
        return;
    }
    let (s, b) = ("127.0.30.1", "127.0.30.2");
    let bird = Bird::start(
        &BirdConf {
            router_id: b,
            local: b,
            port: port(17301),
            local_as: 65002,
            neighbor: s,
            neighbor_port: port(17300),
            neighbor_as: 65001,
            extra: "  passive on;",
            v4: v4_prefixes(32, 1000),
            v6: v6_prefixes(32, 100),
        }
        .render(),
    );
    let (sp, mut ev) = strata(s, port(17300), 65001, neighbor(b, port(17301), 65002)).await;
    let ours: Vec<IpNet> = v4_prefixes(31, 1000)
        .iter()
        .chain(v6_prefixes(31, 100).iter())
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
    assert!(up.is_some(), "no session: {}", bird.log());
    let bip: IpAddr = b.parse().unwrap();
    assert!(
        wait_until_async(LONG, || async {
            sp.adj_rib_in(bip).await.unwrap().len() == 1100
        })
        .await,
        "strata got {} routes from BIRD",
        sp.adj_rib_in(bip).await.unwrap().len()
    );
    assert!(
        wait_until(LONG, || bird.imported("strata") == 1100),
        "BIRD imported {}",
        bird.imported("strata")
    );
    // Communities both ways.
    let shown = bird.birdc(&["show", "route", "10.31.0.5/32", "all"]);
    assert!(shown.contains("(65001,1)"), "{shown}");
    let rib = sp.adj_rib_in(bip).await.unwrap();
    let (_, path) = rib
        .iter()
        .find(|(p, _)| *p == "10.32.0.5/32".parse::<IpNet>().unwrap())
        .unwrap();
    assert_eq!(path.communities, vec![Community::new(65002, 5)]);
    assert_eq!(path.as_path.flatten(), vec![65002]);
    let (_, v6) = rib.iter().find(|(p, _)| p.addr().is_ipv6()).unwrap();
    assert_eq!(v6.next_hop, "2001:db8::2".parse::<IpAddr>().unwrap());
    assert_eq!(sp.loc_rib().await.unwrap().len(), 1100);

    // Route refresh both ways (enhanced: BoRR, routes, EoRR). BIRD asks us: it receives our
    // routes again; we ask BIRD: its routes come again, nothing is lost as stale.
    let imports = |bird: &Bird| -> usize {
        bird.birdc(&["show", "protocols", "all", "strata"])
            .lines()
            .find(|l| l.contains("Import updates:"))
            .and_then(|l| l.split_whitespace().nth(2).and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    let before = imports(&bird);
    bird.birdc(&["reload", "in", "strata"]);
    assert!(
        wait_until(LONG, || imports(&bird) >= before + 1000),
        "BIRD import updates {before} -> {}",
        imports(&bird)
    );
    assert_eq!(bird.imported("strata"), 1100);
    sp.request_refresh(bip).unwrap();
    let again = wait_event(
        &mut ev,
        LONG,
        |e| matches!(e, SpeakerEvent::Update { announce, .. } if !announce.is_empty()),
    )
    .await;
    assert!(again.is_some(), "BIRD did not resend its routes");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sp.adj_rib_in(bip).await.unwrap().len(), 1100);

    // Withdrawals from strata: BIRD drops them.
    for p in ours.iter().take(500) {
        sp.withdraw(*p).unwrap();
    }
    assert!(
        wait_until(LONG, || bird.imported("strata") == 600),
        "BIRD still has {}",
        bird.imported("strata")
    );
    // Withdrawals from BIRD: disabling its IPv4 statics withdraws 1000 routes.
    bird.birdc(&["disable", "s4"]);
    assert!(
        wait_until_async(LONG, || async {
            sp.adj_rib_in(bip).await.unwrap().len() == 100
        })
        .await,
        "strata still has {}",
        sp.adj_rib_in(bip).await.unwrap().len()
    );
    // Graceful shutdown: BIRD sees our Cease.
    sp.shutdown().await.unwrap();
    assert!(
        wait_until(LONG, || bird
            .birdc(&["show", "protocols", "all", "strata"])
            .contains("Administrative shutdown")),
        "{}",
        bird.birdc(&["show", "protocols", "all", "strata"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_connects_to_passive_strata_and_hold_timer_expires_when_paused() {
    if !have_bird() {
        return;
    }
    let (s, b) = ("127.0.31.1", "127.0.31.2");
    let bird = Bird::start(
        &BirdConf {
            router_id: b,
            local: b,
            port: port(17311),
            local_as: 65002,
            neighbor: s,
            neighbor_port: port(17310),
            neighbor_as: 65001,
            extra: "",
            v4: v4_prefixes(33, 3),
            v6: vec![],
        }
        .render(),
    );
    let mut n = neighbor(b, port(17311), 65002);
    n.passive = true;
    n.hold_time = 3;
    let (sp, mut ev) = strata(s, port(17310), 65001, n).await;
    let up = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(up.is_some(), "no session: {}", bird.log());
    let bird_proc = bird.proc.as_ref().unwrap();
    bird_proc.signal("STOP");
    let down = wait_event(&mut ev, Duration::from_secs(10), |e| {
        matches!(e, SpeakerEvent::Down { .. })
    })
    .await;
    bird_proc.signal("CONT");
    match down {
        Some(SpeakerEvent::Down { reason, .. }) => {
            assert!(
                reason.contains("hold timer expired") && reason.contains("(4/0)"),
                "{reason}"
            )
        }
        other => panic!("no hold timer expiry: {other:?}"),
    }
    let again = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(again.is_some(), "no session after SIGCONT: {}", bird.log());
    sp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_refuses_a_wrong_remote_as_with_bad_peer_as() {
    if !have_bird() {
        return;
    }
    let (s, b) = ("127.0.32.1", "127.0.32.2");
    let bird = Bird::start(
        &BirdConf {
            router_id: b,
            local: b,
            port: port(17321),
            local_as: 65002,
            neighbor: s,
            neighbor_port: port(17320),
            neighbor_as: 65009, // we are 65001
            extra: "  passive on;",
            v4: vec![],
            v6: vec![],
        }
        .render(),
    );
    let (sp, mut ev) = strata(s, port(17320), 65001, neighbor(b, port(17321), 65002)).await;
    let down = wait_event(&mut ev, LONG, |e| matches!(e, SpeakerEvent::Down { .. })).await;
    match down {
        Some(SpeakerEvent::Down { reason, .. }) => {
            assert!(
                reason.starts_with("received") && reason.contains("(2/2)"),
                "{reason}"
            )
        }
        other => panic!("no refusal: {other:?} {}", bird.log()),
    }
    sp.shutdown().await.unwrap();

    // And the other way: strata expects 65009, BIRD (65002) is told Bad peer AS.
    let (s2, b2) = ("127.0.32.3", "127.0.32.4");
    let bird2 = Bird::start(
        &BirdConf {
            router_id: b2,
            local: b2,
            port: port(17323),
            local_as: 65002,
            neighbor: s2,
            neighbor_port: port(17322),
            neighbor_as: 65001,
            extra: "  passive on;",
            v4: vec![],
            v6: vec![],
        }
        .render(),
    );
    let (sp2, mut ev2) = strata(s2, port(17322), 65001, neighbor(b2, port(17323), 65009)).await;
    let down = wait_event(&mut ev2, LONG, |e| matches!(e, SpeakerEvent::Down { .. })).await;
    assert!(
        matches!(&down, Some(SpeakerEvent::Down { reason, .. }) if reason.starts_with("sent") && reason.contains("(2/2)")),
        "{down:?}"
    );
    assert!(
        wait_until(LONG, || bird2
            .birdc(&["show", "protocols", "all", "strata"])
            .contains("Bad peer AS")),
        "{}",
        bird2.birdc(&["show", "protocols", "all", "strata"])
    );
    sp2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_two_octet_peer_restarts_and_reconnects() {
    if !have_bird() {
        return;
    }
    let (s, b) = ("127.0.33.1", "127.0.33.2");
    // BIRD without 4-octet AS support: the session encodes AS numbers in two octets.
    let mut bird = Bird::start(
        &BirdConf {
            router_id: b,
            local: b,
            port: port(17331),
            local_as: 65002,
            neighbor: s,
            neighbor_port: port(17330),
            // BIRD with as4 off refuses a 4-octet neighbor AS in its config yet still reads
            // the 4-octet AS capability of the peer's OPEN: the peer must have a 2-octet AS.
            neighbor_as: 65001,
            extra: "  enable as4 off;",
            v4: v4_prefixes(34, 10),
            v6: vec![],
        }
        .render(),
    );
    let (sp, mut ev) = strata(s, port(17330), 65001, neighbor(b, port(17331), 65002)).await;
    sp.announce(Announcement::new("10.35.0.0/24".parse().unwrap()))
        .unwrap();
    let up = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(up.is_some(), "no session: {}", bird.log());
    assert!(
        wait_until(LONG, || bird.imported("strata") == 1),
        "{}",
        bird.log()
    );
    let shown = bird.birdc(&["show", "route", "10.35.0.0/24", "all"]);
    assert!(shown.contains("BGP.as_path: 65001"), "{shown}");
    let proto = bird.birdc(&["show", "protocols", "all", "strata"]);
    assert!(!proto.contains("AS4"), "session should be 2-octet: {proto}");
    let bip: IpAddr = b.parse().unwrap();
    assert!(
        wait_until_async(LONG, || async {
            sp.adj_rib_in(bip).await.unwrap().len() == 10
        })
        .await
    );
    let rib = sp.adj_rib_in(bip).await.unwrap();
    assert_eq!(rib[0].1.as_path.flatten(), vec![65002]);

    // Peer restart: BIRD is killed and started again; the session comes back, the routes too.
    bird.restart();
    let down = wait_event(&mut ev, LONG, |e| matches!(e, SpeakerEvent::Down { .. })).await;
    assert!(down.is_some());
    let again = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(again.is_some(), "no session after restart: {}", bird.log());
    // BIRD sends its routes again (they were kept as stale meanwhile: graceful restart helper).
    let resent = wait_event(
        &mut ev,
        LONG,
        |e| matches!(e, SpeakerEvent::Update { announce, .. } if !announce.is_empty()),
    )
    .await;
    assert!(resent.is_some());
    assert!(
        wait_until_async(LONG, || async {
            sp.adj_rib_in(bip).await.unwrap().len() == 10
        })
        .await
    );
    assert!(wait_until(LONG, || bird.imported("strata") == 1));
    sp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_and_strata_both_connect_and_resolve_the_collision() {
    if !have_bird() {
        return;
    }
    let (s, b) = ("127.0.34.1", "127.0.34.2");
    let bird = Bird::start(
        &BirdConf {
            router_id: b,
            local: b,
            port: port(17341),
            local_as: 65002,
            neighbor: s,
            neighbor_port: port(17340),
            neighbor_as: 65001,
            extra: "",
            v4: v4_prefixes(36, 5),
            v6: vec![],
        }
        .render(),
    );
    let mut n = neighbor(b, port(17341), 65002);
    n.connect_retry = Duration::from_millis(100);
    let (sp, mut ev) = strata(s, port(17340), 65001, n).await;
    sp.announce(Announcement::new("10.37.0.0/24".parse().unwrap()))
        .unwrap();
    let up = wait_event(&mut ev, LONG, |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    assert!(up.is_some(), "no session: {}", bird.log());
    let bip: IpAddr = b.parse().unwrap();
    assert!(
        wait_until_async(LONG, || async {
            sp.adj_rib_in(bip).await.unwrap().len() == 5
        })
        .await
    );
    assert!(wait_until(LONG, || bird.imported("strata") == 1));
    // One session survives: no flapping for a few keepalive periods.
    let flap = wait_event(&mut ev, Duration::from_secs(5), |e| {
        matches!(e, SpeakerEvent::Down { .. })
    })
    .await;
    assert!(flap.is_none(), "{flap:?}");
    assert!(bird.established("strata"));
    sp.shutdown().await.unwrap();
}
