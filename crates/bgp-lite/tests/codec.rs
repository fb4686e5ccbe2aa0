//! Codec test vectors (both directions), truncation loops, 0xa5-prefilled emit buffers, the
//! NOTIFICATION and RFC 7606 mapping of errors, and proptest round trips.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use strata_bgp::Action;
use strata_bgp::wire::*;

fn hdr(len: u16, kind: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = hdr((19 + body.len()) as u16, kind);
    v.extend_from_slice(body);
    v
}

/// Both directions, 0xa5 emit buffer, truncation loop, for one vector.
fn check_vector(bytes: &[u8], value: &Message, opts: Options) {
    let decoded = Message::parse(bytes, opts).expect("vector parses");
    assert_eq!(&decoded.message, value, "bytes -> value");
    assert!(decoded.issues.is_empty());
    assert_eq!(value.to_bytes(opts).unwrap(), bytes, "value -> bytes");
    assert_eq!(value.buffer_len(opts).unwrap(), bytes.len());
    let mut buf = vec![0xa5u8; bytes.len() + 7];
    let n = value.emit(&mut buf, opts).unwrap();
    assert_eq!(n, bytes.len());
    assert_eq!(&buf[..n], bytes);
    assert!(
        buf[n..].iter().all(|b| *b == 0xa5),
        "emit wrote past its length"
    );
    // Too short a buffer is an error, not a panic.
    assert!(value.emit(&mut buf[..n - 1], opts).is_err());
    for cut in 0..bytes.len() {
        let err = Message::parse(&bytes[..cut], opts).expect_err("every prefix fails");
        assert_eq!(err.code().0, 1, "truncation at {cut}: {err}");
        assert_eq!(frame_len(&bytes[..cut], opts), Ok(None));
    }
    assert_eq!(frame_len(bytes, opts), Ok(Some(bytes.len())));
}

#[test]
fn keepalive_vector() {
    check_vector(&hdr(19, 4), &Message::Keepalive, Options::MODERN);
}

#[test]
fn open_vector() {
    let body = [
        4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, 14, // version, AS 65001, hold 90, id, params len
        2, 12, // capabilities parameter
        1, 4, 0, 1, 0, 1, // mp ipv4 unicast
        65, 4, 0, 0, 0xfd, 0xe9, // four-octet AS 65001
    ];
    let value = Message::Open(Open {
        my_as: 65001,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
            Capability::FourOctetAs(65001),
        ],
    });
    check_vector(&msg(1, &body), &value, Options::MODERN);
}

#[test]
fn open_with_one_parameter_per_capability_and_as_trans() {
    // What BIRD and GoBGP send: many parameters, one capability each; AS_TRANS with the
    // 4-octet capability carrying the real AS.
    let body = [
        4, 0x5b, 0xa0, 0, 9, 10, 0, 0, 1, 26, //
        2, 6, 65, 4, 0, 1, 0x86, 0xa0, // AS 100000
        2, 2, 2, 0, // route refresh
        2, 2, 70, 0, // enhanced route refresh
        2, 8, 64, 6, 0x80, 120, 0, 1, 1, 0x80, // graceful restart
    ];
    let d = Message::parse(&msg(1, &body), Options::MODERN).unwrap();
    let Message::Open(open) = d.message else {
        panic!("not an OPEN")
    };
    assert_eq!(open.my_as as u32, AS_TRANS);
    assert_eq!(open.asn(), 100_000);
    assert_eq!(open.hold_time, 9);
    let names: Vec<String> = open.capabilities.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "four-octet-as",
            "route-refresh",
            "enhanced-route-refresh",
            "graceful-restart"
        ]
    );
    assert_eq!(
        open.capabilities[3],
        Capability::GracefulRestart(GracefulRestart {
            flags: 8,
            restart_time: 120,
            families: vec![(AddressFamily::IPV4_UNICAST, 0x80)],
        })
    );
}

fn classic_update_body() -> Vec<u8> {
    vec![
        0, 0, // no withdrawn
        0, 34, // attributes
        0x40, 1, 1, 0, // ORIGIN IGP
        0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, // AS_PATH seq [65001]
        0x40, 3, 4, 192, 0, 2, 1, // NEXT_HOP
        0x80, 4, 4, 0, 0, 0, 100, // MED 100
        0xc0, 8, 4, 0xfd, 0xe8, 0, 1, // COMMUNITIES 65000:1
        24, 10, 1, 2, // 10.1.2.0/24
    ]
}

fn classic_update() -> Update {
    Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![65001])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
            PathAttribute::Med(100),
            PathAttribute::Communities(vec![Community::new(65000, 1)]),
        ],
        nlri: vec!["10.1.2.0/24".parse().unwrap()],
    }
}

#[test]
fn update_vector() {
    check_vector(
        &msg(2, &classic_update_body()),
        &Message::Update(classic_update()),
        Options::MODERN,
    );
}

#[test]
fn update_vector_two_octet() {
    let body = [
        0, 3, 16, 10, 9, // withdrawn 10.9.0.0/16
        0, 27, //
        0x40, 1, 1, 2, // ORIGIN INCOMPLETE
        0x40, 2, 4, 1, 1, 0x5b, 0xa0, // AS_SET {23456}
        0x40, 3, 4, 127, 0, 0, 2, // NEXT_HOP in 127/8 is valid
        0xc0, 17, 6, 2, 1, 0, 1, 0x86, 0xa0, // AS4_PATH seq [100000]
        32, 10, 0, 0, 1, // 10.0.0.1/32
    ];
    let value = Message::Update(Update {
        withdrawn: vec!["10.9.0.0/16".parse().unwrap()],
        attributes: vec![
            PathAttribute::Origin(Origin::Incomplete),
            PathAttribute::AsPath(AsPath {
                segments: vec![Segment {
                    kind: SegmentKind::Set,
                    asns: vec![AS_TRANS],
                }],
            }),
            PathAttribute::NextHop(Ipv4Addr::new(127, 0, 0, 2)),
            PathAttribute::As4Path(AsPath::sequence(vec![100_000])),
        ],
        nlri: vec!["10.0.0.1/32".parse().unwrap()],
    });
    check_vector(&msg(2, &body), &value, Options::LEGACY);
}

#[test]
fn update_vector_ipv6_link_local_and_large_communities() {
    let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    let mut reach = vec![0x80, 14, 44, 0, 2, 1, 32];
    reach.extend_from_slice(&global.octets());
    reach.extend_from_slice(&ll.octets());
    reach.extend_from_slice(&[0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    let mut body = vec![0, 0];
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0]; // ORIGIN, empty AS_PATH (iBGP)
    attrs.extend_from_slice(&[0x40, 5, 4, 0, 0, 0, 200]); // LOCAL_PREF 200
    attrs.extend_from_slice(&reach);
    attrs.extend_from_slice(&[0xc0, 32, 12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
    attrs.extend_from_slice(&[0xe0, 99, 2, 0xab, 0xcd]); // unknown optional transitive, partial
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    let value = Message::Update(Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::default()),
            PathAttribute::LocalPref(200),
            PathAttribute::MpReach(MpReach {
                family: AddressFamily::IPV6_UNICAST,
                next_hop: NextHop::V6 {
                    global,
                    link_local: Some(ll),
                },
                nlri: vec!["2001:db8:1::/48".parse().unwrap()],
            }),
            PathAttribute::LargeCommunities(vec![LargeCommunity {
                global: 1,
                local1: 2,
                local2: 3,
            }]),
            PathAttribute::Unknown(UnknownAttribute {
                flags: 0xe0,
                code: 99,
                value: vec![0xab, 0xcd],
            }),
        ],
        nlri: vec![],
    });
    check_vector(&msg(2, &body), &value, Options::MODERN);
}

#[test]
fn end_of_rib_and_mp_unreach_vector() {
    let eor = Message::Update(Update::default());
    check_vector(&msg(2, &[0, 0, 0, 0]), &eor, Options::MODERN);
    let body = [0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1];
    let value = Update {
        attributes: vec![PathAttribute::MpUnreach(MpUnreach {
            family: AddressFamily::IPV6_UNICAST,
            withdrawn: vec![],
        })],
        ..Update::default()
    };
    assert_eq!(value.end_of_rib(), Some(AddressFamily::IPV6_UNICAST));
    check_vector(&msg(2, &body), &Message::Update(value), Options::MODERN);
}

#[test]
fn notification_and_route_refresh_vectors() {
    check_vector(
        &msg(3, &[6, 2, 1, 2, 3]),
        &Message::Notification(Notification {
            code: 6,
            subcode: 2,
            data: vec![1, 2, 3],
        }),
        Options::MODERN,
    );
    check_vector(
        &msg(5, &[0, 2, 1, 1]),
        &Message::RouteRefresh(RouteRefresh {
            family: AddressFamily::IPV6_UNICAST,
            subtype: 1,
        }),
        Options::MODERN,
    );
}

fn code_of(bytes: &[u8], opts: Options) -> (u8, u8) {
    Message::parse(bytes, opts).expect_err("must fail").code()
}

#[test]
fn header_errors_map_to_notifications() {
    let mut bad_marker = hdr(19, 4);
    bad_marker[3] = 0;
    assert_eq!(code_of(&bad_marker, Options::MODERN), (1, 1));
    let e = Message::parse(&hdr(18, 4), Options::MODERN).unwrap_err();
    assert_eq!(e.notification().data, vec![0, 18]);
    assert_eq!(code_of(&hdr(20, 4), Options::MODERN), (1, 2));
    let bad_type = msg(9, &[]);
    let e = Message::parse(&bad_type, Options::MODERN).unwrap_err();
    assert_eq!((e.code(), e.notification().data), ((1, 3), vec![9]));
    assert_eq!(code_of(&msg(5, &[0, 1, 0, 1, 0]), Options::MODERN), (7, 1));
    let mut too_long = hdr(4097, 2);
    too_long.resize(4097, 0);
    assert_eq!(code_of(&too_long, Options::MODERN), (1, 2));
}

#[test]
fn open_errors_map_to_notifications() {
    let open = |version: u8, hold: u16, id: [u8; 4], params: &[u8]| {
        let mut b = vec![version, 0xfd, 0xe9];
        b.extend_from_slice(&hold.to_be_bytes());
        b.extend_from_slice(&id);
        b.push(params.len() as u8);
        b.extend_from_slice(params);
        msg(1, &b)
    };
    let o = Options::MODERN;
    assert_eq!(code_of(&open(3, 90, [1, 1, 1, 1], &[]), o), (2, 1));
    assert_eq!(code_of(&open(4, 2, [1, 1, 1, 1], &[]), o), (2, 6));
    assert_eq!(code_of(&open(4, 90, [0, 0, 0, 0], &[]), o), (2, 3));
    assert_eq!(code_of(&open(4, 90, [1, 1, 1, 1], &[1, 0]), o), (2, 4));
    assert_eq!(
        code_of(&open(4, 90, [1, 1, 1, 1], &[2, 4, 65, 3, 0, 0]), o),
        (2, 0)
    );
    assert_eq!(code_of(&open(4, 90, [1, 1, 1, 1], &[2, 9]), o), (2, 0));
    // Unknown capabilities are preserved.
    let d = Message::parse(&open(4, 0, [1, 1, 1, 1], &[2, 3, 200, 1, 7]), o).unwrap();
    let Message::Open(open) = d.message else {
        panic!()
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::Unknown {
            code: 200,
            value: vec![7]
        }]
    );
    assert_eq!(open.capabilities[0].name(), "unknown-200");
}

/// An UPDATE with the classic NLRI 10.1.2.0/24 and the given attributes.
fn update_with(attrs: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(&[24, 10, 1, 2]);
    msg(2, &b)
}

const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
const PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NH: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];

fn issue_of(attrs: &[u8]) -> (Action, (u8, u8), Update) {
    let d = Message::parse(&update_with(attrs), Options::MODERN).expect("session survives");
    assert_eq!(d.issues.len(), 1, "{:?}", d.issues);
    let Message::Update(u) = d.message else {
        panic!()
    };
    (d.issues[0].action, d.issues[0].error.code(), u)
}

#[test]
fn rfc7606_treat_as_withdraw() {
    let cases: Vec<(Vec<u8>, (u8, u8))> = vec![
        ([&[0x40, 1, 1, 5][..], &PATH, &NH].concat(), (3, 6)),
        ([&[0x40, 1, 2, 0, 0][..], &PATH, &NH].concat(), (3, 5)),
        ([&ORIGIN[..], &[0x40, 2, 2, 2, 0], &NH].concat(), (3, 11)),
        ([&ORIGIN[..], &[0x40, 2, 3, 9, 1, 0], &NH].concat(), (3, 11)),
        (
            [&ORIGIN[..], &PATH, &[0x40, 3, 4, 0, 0, 0, 0]].concat(),
            (3, 8),
        ),
        (
            [&ORIGIN[..], &PATH, &[0x40, 3, 4, 224, 0, 0, 1]].concat(),
            (3, 8),
        ),
        ([&ORIGIN[..], &PATH].concat(), (3, 3)),
        (
            [&ORIGIN[..], &PATH, &NH, &[0x80, 4, 3, 0, 0, 1]].concat(),
            (3, 5),
        ),
        (
            [&ORIGIN[..], &PATH, &NH, &[0xc0, 8, 3, 0, 0, 1]].concat(),
            (3, 5),
        ),
        (
            [&ORIGIN[..], &PATH, &NH, &[0xc0, 32, 4, 0, 0, 0, 1]].concat(),
            (3, 5),
        ),
        ([&[0xc0, 1, 1, 0][..], &PATH, &NH].concat(), (3, 4)),
        (
            [&ORIGIN[..], &PATH, &NH, &[0x40, 4, 4, 0, 0, 0, 1]].concat(),
            (3, 4),
        ),
        ([&ORIGIN[..], &PATH, &NH, &[0x40, 4, 9]].concat(), (3, 5)),
    ];
    for (attrs, code) in cases {
        let (action, got, u) = issue_of(&attrs);
        assert_eq!((action, got), (Action::TreatAsWithdraw, code), "{attrs:?}");
        assert!(u.nlri.is_empty() && u.attributes.is_empty());
        assert_eq!(u.withdrawn, vec!["10.1.2.0/24".parse::<Ipv4Net>().unwrap()]);
    }
}

#[test]
fn rfc7606_attribute_discard() {
    let base = [&ORIGIN[..], &PATH, &NH].concat();
    for extra in [
        &[0x40, 6, 1, 0][..],             // ATOMIC_AGGREGATE with a value
        &[0xc0, 7, 5, 0, 1, 1, 1, 1][..], // AGGREGATOR of 5 bytes
        &[0xc0, 17, 3, 2, 1, 0][..],      // AS4_PATH malformed
        &[0x40, 1, 1, 1][..],             // a second ORIGIN
    ] {
        let (action, _, u) = issue_of(&[&base[..], extra].concat());
        assert_eq!(action, Action::AttributeDiscard, "{extra:?}");
        assert_eq!(u.attributes.len(), 3);
        assert_eq!(u.origin(), Some(Origin::Igp));
        assert_eq!(u.nlri.len(), 1);
    }
}

#[test]
fn rfc7606_session_reset() {
    let base = [&ORIGIN[..], &PATH, &NH].concat();
    // Unrecognized well-known attribute.
    let e = Message::parse(
        &update_with(&[&base[..], &[0x40, 99, 0]].concat()),
        Options::MODERN,
    );
    assert_eq!(e.unwrap_err().code(), (3, 2));
    // Malformed MP_REACH_NLRI.
    let e = Message::parse(
        &update_with(&[&base[..], &[0x80, 14, 5, 0, 2, 1, 4, 1]].concat()),
        Options::MODERN,
    );
    assert_eq!(e.unwrap_err().code(), (3, 9));
    // Repeated MP_UNREACH_NLRI.
    let unreach = [0x80, 15, 3, 0, 2, 1];
    let e = Message::parse(
        &update_with(&[&base[..], &unreach, &unreach].concat()),
        Options::MODERN,
    );
    assert_eq!(e.unwrap_err().code(), (3, 1));
    // Bad NLRI.
    let mut b = vec![0, 0, 0, 0, 33, 1, 2, 3, 4, 5];
    assert_eq!(code_of(&msg(2, &b), Options::MODERN), (3, 10));
    // Withdrawn length overrunning the message.
    b = vec![0, 9, 0, 0];
    assert_eq!(code_of(&msg(2, &b), Options::MODERN), (3, 1));
}

#[test]
fn as4_path_reconstruction() {
    let as_path = AsPath::sequence(vec![65001, AS_TRANS, AS_TRANS, 65003]);
    let as4 = AsPath::sequence(vec![100_000, 200_000, 65003]);
    assert_eq!(
        AsPath::reconstruct(&as_path, &as4).flatten(),
        vec![65001, 100_000, 200_000, 65003]
    );
    // A longer AS4_PATH is ignored.
    let long = AsPath::sequence(vec![1, 2, 3, 4, 5]);
    assert_eq!(AsPath::reconstruct(&as_path, &long), as_path);
    assert_eq!(
        AsPath::sequence(vec![100_000, 1]).with_as_trans().flatten(),
        vec![AS_TRANS, 1]
    );
}

#[test]
fn packing_fits_the_size_limit() {
    let attrs = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath::sequence(vec![65001])),
        PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
    ];
    let prefixes: Vec<IpNet> = (0..3000u32)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap()))
        .chain((0..500u32).map(|i| {
            IpNet::V6(
                Ipv6Net::new(
                    Ipv6Addr::from(0x2001_0db8u128 << 96 | (i as u128) << 64),
                    64,
                )
                .unwrap(),
            )
        }))
        .collect();
    let nh = NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    };
    let updates = pack_announcements(&attrs, &prefixes, Some(nh), Options::MODERN, 4096).unwrap();
    let mut seen = Vec::new();
    for u in &updates {
        let bytes = Message::Update(u.clone())
            .to_bytes(Options::MODERN)
            .unwrap();
        assert!(bytes.len() <= 4096);
        seen.extend(u.announced());
    }
    assert_eq!(seen, prefixes);
    let w = pack_withdrawals(&prefixes, 4096);
    let mut seen = Vec::new();
    for u in &w {
        assert!(
            Message::Update(u.clone())
                .to_bytes(Options::MODERN)
                .unwrap()
                .len()
                <= 4096
        );
        seen.extend(u.withdrawn_all());
    }
    assert_eq!(seen, prefixes);
}

#[test]
fn too_long_messages_are_encode_errors() {
    let u = Update {
        withdrawn: (0..2000u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap())
            .collect(),
        ..Update::default()
    };
    assert!(
        Message::Update(u.clone())
            .to_bytes(Options::MODERN)
            .is_err()
    );
    let opts = Options {
        extended_message: true,
        ..Options::MODERN
    };
    let bytes = Message::Update(u.clone()).to_bytes(opts).unwrap();
    assert_eq!(
        Message::parse(&bytes, opts).unwrap().message,
        Message::Update(u)
    );
}

// --- proptest -------------------------------------------------------------------------------

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}

fn v6net() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc()))
}

fn as_path(four: bool) -> impl Strategy<Value = AsPath> {
    let asn = if four { 1u32..=u32::MAX } else { 1u32..=65535 };
    prop::collection::vec(
        (
            prop::sample::select(vec![
                SegmentKind::Set,
                SegmentKind::Sequence,
                SegmentKind::ConfedSequence,
                SegmentKind::ConfedSet,
            ]),
            prop::collection::vec(asn, 1..20),
        )
            .prop_map(|(kind, asns)| Segment { kind, asns }),
        0..4,
    )
    .prop_map(|segments| AsPath { segments })
}

fn unicast_nh() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..0xdfff_ffff).prop_map(Ipv4Addr::from)
}

fn update(four: bool) -> impl Strategy<Value = Update> {
    (
        prop::collection::vec(v4net(), 0..20),
        prop::collection::vec(v4net(), 0..20),
        prop::sample::select(vec![Origin::Igp, Origin::Egp, Origin::Incomplete]),
        as_path(four),
        unicast_nh(),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        any::<bool>(),
        (
            prop::option::of((any::<u32>(), any::<u32>())),
            prop::collection::vec(any::<u32>(), 0..10),
        ),
        prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..5),
        prop::option::of((
            prop::collection::vec(v6net(), 0..10),
            any::<u128>(),
            prop::option::of(any::<u128>()),
        )),
        (
            prop::collection::vec(v6net(), 0..10),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        ),
    )
        .prop_map(
            move |(
                w,
                n,
                origin,
                path,
                nh,
                med,
                lp,
                atomic,
                (agg, comms),
                large,
                reach,
                (unreach, unknown),
            )| {
                let mut attributes = vec![
                    PathAttribute::Origin(origin),
                    PathAttribute::AsPath(path),
                    PathAttribute::NextHop(nh),
                ];
                if let Some(m) = med {
                    attributes.push(PathAttribute::Med(m));
                }
                if let Some(l) = lp {
                    attributes.push(PathAttribute::LocalPref(l));
                }
                if atomic {
                    attributes.push(PathAttribute::AtomicAggregate);
                }
                if let Some((asn, a)) = agg {
                    let asn = if four { asn } else { asn & 0xffff };
                    attributes.push(PathAttribute::Aggregator(Aggregator {
                        asn,
                        address: Ipv4Addr::from(a),
                    }));
                }
                if !comms.is_empty() {
                    attributes.push(PathAttribute::Communities(
                        comms.into_iter().map(Community).collect(),
                    ));
                }
                if let Some((nlri, g, ll)) = reach {
                    attributes.push(PathAttribute::MpReach(MpReach {
                        family: AddressFamily::IPV6_UNICAST,
                        next_hop: NextHop::V6 {
                            global: Ipv6Addr::from(g),
                            link_local: ll.map(Ipv6Addr::from),
                        },
                        nlri,
                    }));
                }
                attributes.push(PathAttribute::MpUnreach(MpUnreach {
                    family: AddressFamily::IPV6_UNICAST,
                    withdrawn: unreach,
                }));
                if !large.is_empty() {
                    attributes.push(PathAttribute::LargeCommunities(
                        large
                            .into_iter()
                            .map(|(global, local1, local2)| LargeCommunity {
                                global,
                                local1,
                                local2,
                            })
                            .collect(),
                    ));
                }
                if let Some(value) = unknown {
                    attributes.push(PathAttribute::Unknown(UnknownAttribute {
                        flags: 0xe0,
                        code: 201,
                        value,
                    }));
                }
                Update {
                    withdrawn: w,
                    attributes,
                    nlri: n,
                }
            },
        )
}

fn capability() -> impl Strategy<Value = Capability> {
    let family = (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| AddressFamily { afi, safi });
    prop_oneof![
        family.clone().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::ExtendedMessage),
        Just(Capability::EnhancedRouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            0u8..16,
            0u16..4096,
            prop::collection::vec((family.clone(), any::<u8>()), 0..4)
        )
            .prop_map(
                |(flags, restart_time, families)| Capability::GracefulRestart(GracefulRestart {
                    flags,
                    restart_time,
                    families
                })
            ),
        prop::collection::vec((family, any::<u8>()), 0..4).prop_map(Capability::AddPath),
        (71u8..=255, prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::Keepalive),
        (
            any::<u16>(),
            prop_oneof![Just(0u16), 3u16..],
            1u32..,
            prop::collection::vec(capability(), 0..8)
        )
            .prop_map(|(my_as, hold_time, id, capabilities)| Message::Open(Open {
                my_as,
                hold_time,
                router_id: Ipv4Addr::from(id),
                capabilities
            })),
        update(true).prop_map(Message::Update),
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(code, subcode, data)| Message::Notification(Notification {
                code,
                subcode,
                data
            })),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(afi, subtype, safi)| {
            Message::RouteRefresh(RouteRefresh {
                family: AddressFamily { afi, safi },
                subtype,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_every_message(m in message()) {
        let bytes = m.to_bytes(Options::MODERN).unwrap();
        prop_assert_eq!(bytes.len(), m.buffer_len(Options::MODERN).unwrap());
        let d = Message::parse(&bytes, Options::MODERN).unwrap();
        prop_assert!(d.issues.is_empty(), "{:?}", d.issues);
        prop_assert_eq!(d.message, m);
    }

    #[test]
    fn round_trip_two_octet_updates(u in update(false)) {
        let m = Message::Update(u);
        let bytes = m.to_bytes(Options::LEGACY).unwrap();
        prop_assert_eq!(Message::parse(&bytes, Options::LEGACY).unwrap().message, m);
    }

    #[test]
    fn emit_writes_exactly_its_length(m in message()) {
        let len = m.buffer_len(Options::MODERN).unwrap();
        let mut buf = vec![0xa5u8; len + 16];
        prop_assert_eq!(m.emit(&mut buf, Options::MODERN).unwrap(), len);
        prop_assert!(buf[len..].iter().all(|b| *b == 0xa5));
        prop_assert_eq!(&buf[..len], &m.to_bytes(Options::MODERN).unwrap()[..]);
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), kind in 1u8..=5, four in any::<bool>()) {
        let mut framed = hdr((19 + bytes.len()) as u16, kind);
        framed.extend_from_slice(&bytes);
        let opts = Options { four_octet_as: four, extended_message: false };
        let _ = Message::parse(&framed, opts);
        let _ = Message::parse(&bytes, opts);
        let _ = frame_len(&bytes, opts);
    }

    #[test]
    fn corrupted_messages_fail_cleanly(m in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = m.to_bytes(Options::MODERN).unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(d) = Message::parse(&bytes, Options::MODERN) {
            // Whatever parsed must encode again.
            let _ = d.message.to_bytes(Options::MODERN);
        }
    }
}
