//! Two real speakers talking over loopback TCP (each test on its own 127.0.0.x addresses).

mod common;

use common::port;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use strata_bgp::speaker::{Announcement, NeighborConfig, Speaker, SpeakerConfig, SpeakerEvent};
use strata_bgp::wire::Community;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn neighbor(addr: &str, port: u16, asn: u32, passive: bool) -> NeighborConfig {
    let mut n = NeighborConfig::new(ip(addr), asn);
    n.port = port;
    n.passive = passive;
    n.hold_time = 9;
    n.connect_retry = Duration::from_millis(200);
    n
}

async fn speaker(
    addr: &str,
    port: u16,
    asn: u32,
    neighbors: Vec<NeighborConfig>,
) -> (Speaker, UnboundedReceiver<SpeakerEvent>) {
    Speaker::start(SpeakerConfig {
        local_as: asn,
        router_id: addr.parse().unwrap(),
        listen: Some(SocketAddr::new(ip(addr), port)),
        neighbors,
    })
    .await
    .expect("speaker starts")
}

/// Waits (at most 20 s) for an event matching `want`, returning it.
async fn wait_for(
    rx: &mut UnboundedReceiver<SpeakerEvent>,
    what: &str,
    want: impl Fn(&SpeakerEvent) -> bool,
) -> SpeakerEvent {
    timeout(Duration::from_secs(20), async {
        loop {
            let e = rx.recv().await.expect("event stream open");
            if want(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn routes_flow_both_ways_and_shutdown_is_a_cease() {
    let (a, b) = ("127.0.10.1", "127.0.10.2");
    let (sb, mut eb) = speaker(
        b,
        port(17901),
        65002,
        vec![neighbor(a, port(17900), 65001, true)],
    )
    .await;
    let (sa, mut ea) = speaker(
        a,
        port(17900),
        65001,
        vec![neighbor(b, port(17901), 65002, false)],
    )
    .await;
    let mut ann = Announcement::new("10.10.0.0/24".parse().unwrap());
    ann.communities = vec![Community::new(65001, 7)];
    sa.announce(ann).unwrap();
    let mut v6 = Announcement::new("2001:db8:10::/48".parse().unwrap());
    v6.next_hop = Some(ip("2001:db8::1"));
    sa.announce(v6).unwrap();
    sb.announce(Announcement::new("10.20.0.0/16".parse().unwrap()))
        .unwrap();
    wait_for(&mut ea, "A established", |e| {
        matches!(
            e,
            SpeakerEvent::Established {
                remote_as: 65002,
                ..
            }
        )
    })
    .await;
    // B learns both of A's routes, A learns B's.
    let mut got = Vec::new();
    while got.len() < 2 {
        if let SpeakerEvent::Update { announce, .. } = wait_for(&mut eb, "B update", |e| {
            matches!(e, SpeakerEvent::Update { .. })
        })
        .await
        {
            got.extend(announce);
        }
    }
    got.sort_by_key(|l| l.prefix);
    assert_eq!(got[0].prefix, "10.10.0.0/24".parse::<IpNet>().unwrap());
    assert_eq!(got[0].next_hop, ip(a));
    assert_eq!(got[0].as_path, vec![65001]);
    assert_eq!(got[0].communities, vec![Community::new(65001, 7)]);
    assert_eq!(got[1].next_hop, ip("2001:db8::1"));
    let e = wait_for(&mut ea, "A update", |e| {
        matches!(e, SpeakerEvent::Update { .. })
    })
    .await;
    let SpeakerEvent::Update { announce, .. } = e else {
        unreachable!()
    };
    assert_eq!(announce[0].prefix, "10.20.0.0/16".parse::<IpNet>().unwrap());
    let rib = sa.loc_rib().await.unwrap();
    assert_eq!(rib.len(), 1);
    assert_eq!(rib[0].neighbor, ip(b));
    assert_eq!(sb.adj_rib_in(ip(a)).await.unwrap().len(), 2);
    assert_eq!(sa.adj_rib_out(ip(b)).await.unwrap().len(), 2);
    assert_eq!(
        sa.state(ip(b)).await.unwrap(),
        Some(strata_bgp::session::State::Established)
    );

    // Runtime withdraw.
    sa.withdraw("10.10.0.0/24".parse().unwrap()).unwrap();
    let e = wait_for(
        &mut eb,
        "withdraw",
        |e| matches!(e, SpeakerEvent::Update { withdraw, .. } if !withdraw.is_empty()),
    )
    .await;
    assert!(
        matches!(e, SpeakerEvent::Update { withdraw, .. } if withdraw == vec!["10.10.0.0/24".parse::<IpNet>().unwrap()])
    );
    assert_eq!(sb.adj_rib_in(ip(a)).await.unwrap().len(), 1);

    // Shutdown: B sees a Cease, and A's routes go.
    sa.shutdown().await.unwrap();
    let e = wait_for(&mut eb, "down", |e| matches!(e, SpeakerEvent::Down { .. })).await;
    let SpeakerEvent::Down { reason, .. } = e else {
        unreachable!()
    };
    assert!(
        reason.contains("Cease") && reason.contains("(6/2)"),
        "{reason}"
    );
    assert!(sb.adj_rib_in(ip(a)).await.unwrap().is_empty());
    assert!(sb.loc_rib().await.unwrap().is_empty());
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn both_sides_active_collide_and_settle_on_one_session() {
    let (a, b) = ("127.0.11.1", "127.0.11.2");
    let (sa, mut ea) = speaker(
        a,
        port(17910),
        65001,
        vec![neighbor(b, port(17911), 65002, false)],
    )
    .await;
    let (sb, mut eb) = speaker(
        b,
        port(17911),
        65002,
        vec![neighbor(a, port(17910), 65001, false)],
    )
    .await;
    wait_for(&mut ea, "A established", |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    wait_for(&mut eb, "B established", |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    sa.announce(Announcement::new("10.11.0.0/24".parse().unwrap()))
        .unwrap();
    wait_for(&mut eb, "route", |e| {
        matches!(e, SpeakerEvent::Update { .. })
    })
    .await;
    // Stays up: no down event for three keepalive periods.
    let quiet = timeout(Duration::from_secs(4), async {
        loop {
            if let Some(SpeakerEvent::Down { reason, .. }) = ea.recv().await {
                return reason;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "session went down: {quiet:?}");
    sa.shutdown().await.unwrap();
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_remote_as_is_refused_with_bad_peer_as() {
    let (a, b) = ("127.0.12.1", "127.0.12.2");
    // B expects AS 65009, A is 65001.
    let (sb, mut eb) = speaker(
        b,
        port(17921),
        65002,
        vec![neighbor(a, port(17920), 65009, true)],
    )
    .await;
    let (sa, mut ea) = speaker(
        a,
        port(17920),
        65001,
        vec![neighbor(b, port(17921), 65002, false)],
    )
    .await;
    let e = wait_for(&mut eb, "B refuses", |e| {
        matches!(e, SpeakerEvent::Down { .. })
    })
    .await;
    assert!(
        matches!(&e, SpeakerEvent::Down { reason, .. } if reason.contains("(2/2)")),
        "{e:?}"
    );
    let e = wait_for(&mut ea, "A told", |e| {
        matches!(e, SpeakerEvent::Down { .. })
    })
    .await;
    assert!(
        matches!(&e, SpeakerEvent::Down { reason, .. } if reason.starts_with("received") && reason.contains("bad peer AS")),
        "{e:?}"
    );
    sa.shutdown().await.unwrap();
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_octet_peer_gets_as_trans_and_as4_path() {
    let (a, b) = ("127.0.13.1", "127.0.13.2");
    let mut old = neighbor(a, port(17930), 4_200_000_001, true);
    old.four_octet_as = false;
    let (sb, mut eb) = speaker(b, port(17931), 65002, vec![old]).await;
    let (sa, _ea) = speaker(
        a,
        port(17930),
        4_200_000_001,
        vec![neighbor(b, port(17931), 65002, false)],
    )
    .await;
    sa.announce(Announcement::new("10.13.0.0/24".parse().unwrap()))
        .unwrap();
    // B does not speak 4-octet AS; it is configured with the real AS (AS_TRANS in the OPEN,
    // but B still checks the 4-octet capability value A sends). The path it reconstructs
    // from AS_PATH [AS_TRANS] + AS4_PATH [4200000001] is the real one.
    let e = wait_for(&mut eb, "update", |e| {
        matches!(e, SpeakerEvent::Update { .. })
    })
    .await;
    let SpeakerEvent::Update { announce, .. } = e else {
        unreachable!()
    };
    assert_eq!(announce[0].as_path, vec![4_200_000_001]);
    sa.shutdown().await.unwrap();
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn reconnects_after_the_peer_restarts() {
    let (a, b) = ("127.0.14.1", "127.0.14.2");
    let (sa, mut ea) = speaker(
        a,
        port(17940),
        65001,
        vec![neighbor(b, port(17941), 65002, false)],
    )
    .await;
    let (sb, _eb) = speaker(
        b,
        port(17941),
        65002,
        vec![neighbor(a, port(17940), 65001, true)],
    )
    .await;
    wait_for(&mut ea, "up", |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    drop(sb); // abrupt: the task is aborted, connections drop without Cease
    wait_for(&mut ea, "down", |e| matches!(e, SpeakerEvent::Down { .. })).await;
    let (sb, _eb) = speaker(
        b,
        port(17941),
        65002,
        vec![neighbor(a, port(17940), 65001, true)],
    )
    .await;
    wait_for(&mut ea, "up again", |e| {
        matches!(e, SpeakerEvent::Established { .. })
    })
    .await;
    sa.shutdown().await.unwrap();
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn ipv6_transport_with_the_session_address_as_next_hop() {
    let start = |port: u16, asn: u32, id: &str, peer_port: u16, peer_as: u32, passive: bool| {
        let mut n = NeighborConfig::new(ip("::1"), peer_as);
        n.port = peer_port;
        n.passive = passive;
        n.connect_retry = Duration::from_millis(200);
        Speaker::start(SpeakerConfig {
            local_as: asn,
            router_id: id.parse().unwrap(),
            listen: Some(SocketAddr::new(ip("::1"), port)),
            neighbors: vec![n],
        })
    };
    let (b, mut eb) = start(port(17991), 65002, "127.0.15.2", port(17990), 65001, true)
        .await
        .unwrap();
    let (a, _ea) = start(port(17990), 65001, "127.0.15.1", port(17991), 65002, false)
        .await
        .unwrap();
    a.announce(Announcement::new("2001:db8:15::/48".parse().unwrap()))
        .unwrap();
    // An IPv4 route over an IPv6 session without an IPv4 next hop is not sent.
    a.announce(Announcement::new("10.15.0.0/24".parse().unwrap()))
        .unwrap();
    let e = wait_for(&mut eb, "update", |e| {
        matches!(e, SpeakerEvent::Update { .. })
    })
    .await;
    let SpeakerEvent::Update { announce, .. } = e else {
        unreachable!()
    };
    assert_eq!(announce.len(), 1);
    assert_eq!(
        announce[0].prefix,
        "2001:db8:15::/48".parse::<IpNet>().unwrap()
    );
    assert_eq!(announce[0].next_hop, ip("::1"));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_restart_helper_keeps_routes_until_end_of_rib() {
    let (a, b) = ("127.0.16.1", "127.0.16.2");
    let (sb, mut eb) = speaker(
        b,
        port(17961),
        65002,
        vec![neighbor(a, port(17960), 65001, true)],
    )
    .await;
    let (sa, _ea) = speaker(
        a,
        port(17960),
        65001,
        vec![neighbor(b, port(17961), 65002, false)],
    )
    .await;
    sa.announce(Announcement::new("10.16.1.0/24".parse().unwrap()))
        .unwrap();
    sa.announce(Announcement::new("10.16.2.0/24".parse().unwrap()))
        .unwrap();
    let mut got = 0;
    while got < 2 {
        if let SpeakerEvent::Update { announce, .. } = wait_for(&mut eb, "routes", |e| {
            matches!(e, SpeakerEvent::Update { .. })
        })
        .await
        {
            got += announce.len();
        }
    }
    // A dies without a NOTIFICATION: B keeps A's routes (stale) while A restarts.
    drop(sa);
    wait_for(&mut eb, "down", |e| matches!(e, SpeakerEvent::Down { .. })).await;
    assert_eq!(sb.adj_rib_in(ip(a)).await.unwrap().len(), 2);
    assert_eq!(sb.loc_rib().await.unwrap().len(), 2);
    // A comes back with only one of the routes: after its End-of-RIB the other goes.
    let (sa, _ea) = speaker(
        a,
        port(17960),
        65001,
        vec![neighbor(b, port(17961), 65002, false)],
    )
    .await;
    sa.announce(Announcement::new("10.16.1.0/24".parse().unwrap()))
        .unwrap();
    let e = wait_for(
        &mut eb,
        "stale purge",
        |e| matches!(e, SpeakerEvent::Update { withdraw, .. } if !withdraw.is_empty()),
    )
    .await;
    assert!(
        matches!(&e, SpeakerEvent::Update { withdraw, .. } if withdraw == &vec!["10.16.2.0/24".parse::<IpNet>().unwrap()]),
        "{e:?}"
    );
    let rib = sb.adj_rib_in(ip(a)).await.unwrap();
    assert_eq!(rib.len(), 1);
    assert_eq!(rib[0].0, "10.16.1.0/24".parse::<IpNet>().unwrap());
    sa.shutdown().await.unwrap();
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn ibgp_sends_an_empty_as_path_and_local_pref() {
    let (a, b) = ("127.0.18.1", "127.0.18.2");
    let (sb, mut eb) = speaker(
        b,
        port(17981),
        65001,
        vec![neighbor(a, port(17980), 65001, true)],
    )
    .await;
    let (sa, _ea) = speaker(
        a,
        port(17980),
        65001,
        vec![neighbor(b, port(17981), 65001, false)],
    )
    .await;
    let mut ann = Announcement::new("10.18.0.0/24".parse().unwrap());
    ann.local_pref = Some(300);
    ann.med = Some(7);
    sa.announce(ann).unwrap();
    let e = wait_for(&mut eb, "update", |e| {
        matches!(e, SpeakerEvent::Update { .. })
    })
    .await;
    assert!(matches!(&e, SpeakerEvent::Update { announce, .. } if announce[0].as_path.is_empty()));
    let rib = sb.adj_rib_in(ip(a)).await.unwrap();
    assert_eq!(rib[0].1.local_pref, Some(300));
    assert_eq!(rib[0].1.med, Some(7));
    assert_eq!(rib[0].1.next_hop, ip(a));
    sa.shutdown().await.unwrap();
    sb.shutdown().await.unwrap();
}
