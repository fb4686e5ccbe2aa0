//! The BGP-4 wire format: every message of RFC 4271 and RFC 2918, the capabilities of RFC 5492
//! and the path attributes a node needs, with RFC 7606 error handling.
//!
//! Parsing goes through [`Message::parse`] (one whole message) and [`frame_len`] (where a
//! message ends in a byte stream); emitting through [`Message::buffer_len`] and
//! [`Message::emit`] (into a caller's buffer) or [`Message::to_bytes`]. No I/O here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Action, DecodeError, EncodeError};

/// Length of the message header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 8654).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message with the extended message capability.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// The AS number a 4-octet AS is replaced with towards 2-octet peers (RFC 6793).
pub const AS_TRANS: u32 = 23456;

/// What the two speakers negotiated and the codec needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Both sides announced the 4-octet AS capability: AS numbers in AS_PATH and AGGREGATOR take
    /// four octets.
    pub four_octet_as: bool,
    /// Both sides announced the extended message capability: UPDATEs may be up to 65535 bytes.
    pub extended_message: bool,
}

impl Options {
    /// 4-octet AS numbers, 4096-byte messages: what modern peers negotiate.
    pub const MODERN: Options = Options {
        four_octet_as: true,
        extended_message: false,
    };
    /// 2-octet AS numbers, 4096-byte messages: a peer without the 4-octet AS capability.
    pub const LEGACY: Options = Options {
        four_octet_as: false,
        extended_message: false,
    };
}

impl Default for Options {
    fn default() -> Self {
        Options::MODERN
    }
}

/// An address family and subsequent address family (AFI/SAFI) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressFamily {
    /// Address family identifier (1 IPv4, 2 IPv6).
    pub afi: u16,
    /// Subsequent address family identifier (1 unicast).
    pub safi: u8,
}

impl AddressFamily {
    /// IPv4 unicast.
    pub const IPV4_UNICAST: AddressFamily = AddressFamily { afi: 1, safi: 1 };
    /// IPv6 unicast.
    pub const IPV6_UNICAST: AddressFamily = AddressFamily { afi: 2, safi: 1 };

    /// The family of a prefix (unicast).
    pub fn of(prefix: &IpNet) -> AddressFamily {
        match prefix {
            IpNet::V4(_) => AddressFamily::IPV4_UNICAST,
            IpNet::V6(_) => AddressFamily::IPV6_UNICAST,
        }
    }
}

/// The message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// OPEN (1).
    Open,
    /// UPDATE (2).
    Update,
    /// NOTIFICATION (3).
    Notification,
    /// KEEPALIVE (4).
    Keepalive,
    /// ROUTE-REFRESH (5, RFC 2918).
    RouteRefresh,
}

impl MessageType {
    /// The type octet.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Open => 1,
            MessageType::Update => 2,
            MessageType::Notification => 3,
            MessageType::Keepalive => 4,
            MessageType::RouteRefresh => 5,
        }
    }

    /// The name used in JSON output (`OPEN`, `UPDATE`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Open => "OPEN",
            MessageType::Update => "UPDATE",
            MessageType::Notification => "NOTIFICATION",
            MessageType::Keepalive => "KEEPALIVE",
            MessageType::RouteRefresh => "ROUTE-REFRESH",
        }
    }

    fn from_code(code: u8) -> Option<MessageType> {
        Some(match code {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }

    /// Smallest and largest total length of this message type.
    fn length_range(self, opts: Options) -> (usize, usize) {
        let max = if opts.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        };
        match self {
            MessageType::Open => (29, MAX_MESSAGE_LEN),
            MessageType::Update => (23, max),
            MessageType::Notification => (21, max),
            MessageType::Keepalive => (19, 19),
            MessageType::RouteRefresh => (23, max),
        }
    }
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918, with the BoRR/EoRR subtypes of RFC 7313).
    RouteRefresh(RouteRefresh),
}

/// The OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field (AS_TRANS for a 4-octet AS).
    pub my_as: u16,
    /// Proposed hold time in seconds (0 or at least 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Capabilities, in the order they appear (RFC 5492).
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn`: fills `my_as` (AS_TRANS when it does not fit) and adds the 4-octet AS
    /// capability in front of `capabilities` unless it is there.
    pub fn new(
        asn: u32,
        hold_time: u16,
        router_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Open {
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.insert(0, Capability::FourOctetAs(asn));
        }
        Open {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS as u16),
            hold_time,
            router_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability if present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Whether the sender supports 4-octet AS numbers.
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// Address families announced with the multiprotocol capability; IPv4 unicast alone when
    /// the OPEN carries none (RFC 4760 §8).
    pub fn families(&self) -> Vec<AddressFamily> {
        let families: Vec<AddressFamily> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if families.is_empty() {
            vec![AddressFamily::IPV4_UNICAST]
        } else {
            families
        }
    }

    /// Whether a capability with this code is present.
    pub fn has(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }
}

/// A capability of RFC 5492.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (1, RFC 4760).
    Multiprotocol(AddressFamily),
    /// Route refresh (2, RFC 2918).
    RouteRefresh,
    /// Extended message (6, RFC 8654).
    ExtendedMessage,
    /// Graceful restart (64, RFC 4724).
    GracefulRestart(GracefulRestart),
    /// 4-octet AS number support with the speaker's AS (65, RFC 6793).
    FourOctetAs(u32),
    /// ADD-PATH (69, RFC 7911): families with their send/receive octet.
    AddPath(Vec<(AddressFamily, u8)>),
    /// Enhanced route refresh (70, RFC 7313).
    EnhancedRouteRefresh,
    /// Any other capability, preserved as it came.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// The graceful restart capability (RFC 4724).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The four restart flag bits (0x8 restart state, 0x4 notification support of RFC 8538).
    pub flags: u8,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    /// Families whose forwarding state is preserved, with their flags octet (0x80 forwarding
    /// state preserved).
    pub families: Vec<(AddressFamily, u8)>,
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => 1,
            Capability::RouteRefresh => 2,
            Capability::ExtendedMessage => 6,
            Capability::GracefulRestart(_) => 64,
            Capability::FourOctetAs(_) => 65,
            Capability::AddPath(_) => 69,
            Capability::EnhancedRouteRefresh => 70,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// The name used in JSON output: `mp-ipv4-unicast`, `mp-ipv6-unicast`, `four-octet-as`,
    /// `route-refresh`, `graceful-restart`, `add-path`, `enhanced-route-refresh`,
    /// `extended-message`, or `unknown-CODE` (a multiprotocol capability for another family is
    /// `mp-AFI-SAFI`).
    pub fn name(&self) -> String {
        match self {
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST) => "mp-ipv4-unicast".into(),
            Capability::Multiprotocol(AddressFamily::IPV6_UNICAST) => "mp-ipv6-unicast".into(),
            Capability::Multiprotocol(f) => format!("mp-{}-{}", f.afi, f.safi),
            Capability::RouteRefresh => "route-refresh".into(),
            Capability::ExtendedMessage => "extended-message".into(),
            Capability::GracefulRestart(_) => "graceful-restart".into(),
            Capability::FourOctetAs(_) => "four-octet-as".into(),
            Capability::AddPath(_) => "add-path".into(),
            Capability::EnhancedRouteRefresh => "enhanced-route-refresh".into(),
            Capability::Unknown { code, .. } => format!("unknown-{code}"),
        }
    }
}

/// The NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

impl Notification {
    /// Cease (6) with a subcode of RFC 4486 (2 administrative shutdown, 5 connection rejected,
    /// 7 connection collision resolution, ...).
    pub fn cease(subcode: u8) -> Notification {
        Notification {
            code: 6,
            subcode,
            data: Vec::new(),
        }
    }

    /// A short human description, e.g. `Cease/administrative shutdown`.
    pub fn describe(&self) -> String {
        let code = match self.code {
            1 => "message header error",
            2 => "OPEN message error",
            3 => "UPDATE message error",
            4 => "hold timer expired",
            5 => "finite state machine error",
            6 => "Cease",
            7 => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        let sub = match (self.code, self.subcode) {
            (2, 2) => "bad peer AS",
            (2, 3) => "bad BGP identifier",
            (2, 6) => "unacceptable hold time",
            (6, 1) => "maximum number of prefixes reached",
            (6, 2) => "administrative shutdown",
            (6, 3) => "peer de-configured",
            (6, 4) => "administrative reset",
            (6, 5) => "connection rejected",
            (6, 6) => "other configuration change",
            (6, 7) => "connection collision resolution",
            (6, 8) => "out of resources",
            _ => "",
        };
        if sub.is_empty() {
            format!("{code} ({}/{})", self.code, self.subcode)
        } else {
            format!("{code}/{sub} ({}/{})", self.code, self.subcode)
        }
    }
}

/// The ROUTE-REFRESH message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// The family to refresh.
    pub family: AddressFamily,
    /// 0 normal request, 1 beginning of route refresh, 2 end of route refresh (RFC 7313).
    pub subtype: u8,
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// IGP (0).
    Igp,
    /// EGP (1).
    Egp,
    /// INCOMPLETE (2).
    Incomplete,
}

impl Origin {
    /// "IGP", "EGP" or "INCOMPLETE".
    pub fn name(self) -> &'static str {
        match self {
            Origin::Igp => "IGP",
            Origin::Egp => "EGP",
            Origin::Incomplete => "INCOMPLETE",
        }
    }
}

/// AS_PATH segment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// AS_SET (1).
    Set,
    /// AS_SEQUENCE (2).
    Sequence,
    /// AS_CONFED_SEQUENCE (3).
    ConfedSequence,
    /// AS_CONFED_SET (4).
    ConfedSet,
}

impl SegmentKind {
    fn code(self) -> u8 {
        match self {
            SegmentKind::Set => 1,
            SegmentKind::Sequence => 2,
            SegmentKind::ConfedSequence => 3,
            SegmentKind::ConfedSet => 4,
        }
    }
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Set or sequence.
    pub kind: SegmentKind,
    /// The AS numbers (at least one).
    pub asns: Vec<u32>,
}

/// An AS_PATH (or AS4_PATH).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// The segments.
    pub segments: Vec<Segment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE (empty when `asns` is empty).
    pub fn sequence(asns: Vec<u32>) -> AsPath {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![Segment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }
    }

    /// Every AS number in order, sets flattened.
    pub fn flatten(&self) -> Vec<u32> {
        self.segments
            .iter()
            .flat_map(|s| s.asns.iter().copied())
            .collect()
    }

    /// Length for best-path selection: each sequence AS counts one, a set counts one,
    /// confederation segments count zero (RFC 4271 §9.1.2.2, RFC 5065).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                _ => 0,
            })
            .sum()
    }

    /// The first AS of the path (the neighbor's AS for eBGP routes).
    pub fn first(&self) -> Option<u32> {
        self.segments
            .iter()
            .find(|s| s.kind == SegmentKind::Sequence)
            .and_then(|s| s.asns.first().copied())
    }

    /// Whether any AS number needs four octets.
    pub fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| *a > 0xffff))
    }

    /// `asn` prepended to the path (a new leading sequence or the existing one grown).
    pub fn prepend(&self, asn: u32) -> AsPath {
        let mut path = self.clone();
        match path.segments.first_mut() {
            Some(seg) if seg.kind == SegmentKind::Sequence && seg.asns.len() < 255 => {
                seg.asns.insert(0, asn)
            }
            _ => path.segments.insert(
                0,
                Segment {
                    kind: SegmentKind::Sequence,
                    asns: vec![asn],
                },
            ),
        }
        path
    }

    /// The path with every 4-octet AS replaced by AS_TRANS, for a 2-octet peer (RFC 6793).
    pub fn with_as_trans(&self) -> AsPath {
        AsPath {
            segments: self
                .segments
                .iter()
                .map(|s| Segment {
                    kind: s.kind,
                    asns: s
                        .asns
                        .iter()
                        .map(|a| if *a > 0xffff { AS_TRANS } else { *a })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Rebuilds the real path from a 2-octet AS_PATH and an AS4_PATH (RFC 6793 §4.2.3): when the
    /// AS4_PATH is not longer, the leading part of the AS_PATH is kept and the rest replaced by
    /// the AS4_PATH; otherwise the AS4_PATH is ignored.
    pub fn reconstruct(as_path: &AsPath, as4_path: &AsPath) -> AsPath {
        let count = |p: &AsPath| {
            p.segments
                .iter()
                .filter(|s| matches!(s.kind, SegmentKind::Sequence | SegmentKind::Set))
                .map(|s| {
                    if s.kind == SegmentKind::Set {
                        1
                    } else {
                        s.asns.len()
                    }
                })
                .sum::<usize>()
        };
        let (n, n4) = (count(as_path), count(as4_path));
        if n4 > n {
            return as_path.clone();
        }
        let mut keep = n - n4;
        let mut segments = Vec::new();
        for seg in &as_path.segments {
            if keep == 0 {
                break;
            }
            match seg.kind {
                SegmentKind::Sequence if seg.asns.len() > keep => {
                    segments.push(Segment {
                        kind: seg.kind,
                        asns: seg.asns[..keep].to_vec(),
                    });
                    keep = 0;
                }
                SegmentKind::Sequence => {
                    keep -= seg.asns.len();
                    segments.push(seg.clone());
                }
                SegmentKind::Set => {
                    keep -= 1;
                    segments.push(seg.clone());
                }
                _ => segments.push(seg.clone()),
            }
        }
        segments.extend(as4_path.segments.iter().cloned());
        AsPath { segments }
    }
}

/// A community of RFC 1997 (`high:low`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// `asn:value`.
    pub fn new(asn: u16, value: u16) -> Community {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

/// A large community of RFC 8092 (`global:local1:local2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (an AS).
    pub global: u32,
    /// First local data part.
    pub local1: u32,
    /// Second local data part.
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

/// AGGREGATOR / AS4_AGGREGATOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    /// The aggregating AS.
    pub asn: u32,
    /// The aggregating speaker.
    pub address: Ipv4Addr,
}

/// The next hop of an MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// An IPv4 next hop (IPv4 unicast).
    V4(Ipv4Addr),
    /// An IPv6 next hop, global and optionally link-local (RFC 2545).
    V6 {
        /// Global (or IPv4-mapped) address.
        global: Ipv6Addr,
        /// Link-local address when 32 bytes are sent.
        link_local: Option<Ipv6Addr>,
    },
}

impl NextHop {
    /// The address routes resolve through (the global one for IPv6).
    pub fn addr(&self) -> IpAddr {
        match self {
            NextHop::V4(a) => IpAddr::V4(*a),
            NextHop::V6 { global, .. } => IpAddr::V6(*global),
        }
    }
}

/// MP_REACH_NLRI (RFC 4760) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    /// The family of the NLRI.
    pub family: AddressFamily,
    /// The next hop.
    pub next_hop: NextHop,
    /// Reachable prefixes (all of `family`).
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    /// The family of the withdrawn prefixes.
    pub family: AddressFamily,
    /// Withdrawn prefixes (all of `family`).
    pub withdrawn: Vec<IpNet>,
}

/// An attribute this speaker does not interpret, kept with its flags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownAttribute {
    /// The flags octet (the extended length bit is recomputed on emit).
    pub flags: u8,
    /// Type code.
    pub code: u8,
    /// Value.
    pub value: Vec<u8>,
}

impl UnknownAttribute {
    /// Whether the attribute is optional transitive (to be passed on).
    pub fn is_transitive(&self) -> bool {
        self.flags & FLAG_OPTIONAL != 0 && self.flags & FLAG_TRANSITIVE != 0
    }

    /// The attribute as passed on to another peer: partial bit set (RFC 4271 §5).
    pub fn passed_on(&self) -> UnknownAttribute {
        UnknownAttribute {
            flags: self.flags | FLAG_PARTIAL,
            ..self.clone()
        }
    }
}

/// Attribute flag: optional.
pub const FLAG_OPTIONAL: u8 = 0x80;
/// Attribute flag: transitive.
pub const FLAG_TRANSITIVE: u8 = 0x40;
/// Attribute flag: partial.
pub const FLAG_PARTIAL: u8 = 0x20;
/// Attribute flag: extended (two-octet) length.
pub const FLAG_EXTENDED: u8 = 0x10;

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathAttribute {
    /// ORIGIN (1).
    Origin(Origin),
    /// AS_PATH (2).
    AsPath(AsPath),
    /// NEXT_HOP (3).
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC (4).
    Med(u32),
    /// LOCAL_PREF (5).
    LocalPref(u32),
    /// ATOMIC_AGGREGATE (6).
    AtomicAggregate,
    /// AGGREGATOR (7).
    Aggregator(Aggregator),
    /// COMMUNITIES (8, RFC 1997); never empty on the wire.
    Communities(Vec<Community>),
    /// MP_REACH_NLRI (14).
    MpReach(MpReach),
    /// MP_UNREACH_NLRI (15).
    MpUnreach(MpUnreach),
    /// AS4_PATH (17, RFC 6793).
    As4Path(AsPath),
    /// AS4_AGGREGATOR (18, RFC 6793).
    As4Aggregator(Aggregator),
    /// LARGE_COMMUNITY (32, RFC 8092); never empty on the wire.
    LargeCommunities(Vec<LargeCommunity>),
    /// Anything else.
    Unknown(UnknownAttribute),
}

impl PathAttribute {
    /// The type code.
    pub fn code(&self) -> u8 {
        match self {
            PathAttribute::Origin(_) => 1,
            PathAttribute::AsPath(_) => 2,
            PathAttribute::NextHop(_) => 3,
            PathAttribute::Med(_) => 4,
            PathAttribute::LocalPref(_) => 5,
            PathAttribute::AtomicAggregate => 6,
            PathAttribute::Aggregator(_) => 7,
            PathAttribute::Communities(_) => 8,
            PathAttribute::MpReach(_) => 14,
            PathAttribute::MpUnreach(_) => 15,
            PathAttribute::As4Path(_) => 17,
            PathAttribute::As4Aggregator(_) => 18,
            PathAttribute::LargeCommunities(_) => 32,
            PathAttribute::Unknown(u) => u.code,
        }
    }

    fn flags(&self) -> u8 {
        match self {
            PathAttribute::Unknown(u) => u.flags & !FLAG_EXTENDED,
            other => expected_flags(other.code()).unwrap_or(FLAG_OPTIONAL),
        }
    }
}

/// Flags (optional and transitive bits) of the attributes this codec knows.
fn expected_flags(code: u8) -> Option<u8> {
    Some(match code {
        1 | 2 | 3 | 5 | 6 => FLAG_TRANSITIVE,
        4 | 14 | 15 => FLAG_OPTIONAL,
        7 | 8 | 17 | 18 | 32 => FLAG_OPTIONAL | FLAG_TRANSITIVE,
        _ => return None,
    })
}

/// What RFC 7606 prescribes when a known attribute is malformed.
fn malformed_action(code: u8) -> Action {
    match code {
        1 | 2 | 3 | 4 | 5 | 8 | 32 => Action::TreatAsWithdraw,
        6 | 7 | 17 | 18 => Action::AttributeDiscard,
        _ => Action::SessionReset,
    }
}

/// The UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 routes (classic field).
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes in order.
    pub attributes: Vec<PathAttribute>,
    /// Reachable IPv4 routes (classic field).
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    /// Every announced prefix: classic NLRI, then MP_REACH_NLRI.
    pub fn announced(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.nlri.iter().map(|p| IpNet::V4(*p)).collect();
        for attr in &self.attributes {
            if let PathAttribute::MpReach(r) = attr {
                out.extend(r.nlri.iter().copied());
            }
        }
        out
    }

    /// Every withdrawn prefix: classic field, then MP_UNREACH_NLRI.
    pub fn withdrawn_all(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.withdrawn.iter().map(|p| IpNet::V4(*p)).collect();
        for attr in &self.attributes {
            if let PathAttribute::MpUnreach(u) = attr {
                out.extend(u.withdrawn.iter().copied());
            }
        }
        out
    }

    /// The End-of-RIB marker's family (RFC 4724 §2), if this UPDATE is one.
    pub fn end_of_rib(&self) -> Option<AddressFamily> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(AddressFamily::IPV4_UNICAST),
            [PathAttribute::MpUnreach(u)] if u.withdrawn.is_empty() => Some(u.family),
            _ => None,
        }
    }

    /// ORIGIN.
    pub fn origin(&self) -> Option<Origin> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::Origin(o) => Some(*o),
            _ => None,
        })
    }

    /// AS_PATH.
    pub fn as_path(&self) -> Option<&AsPath> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::AsPath(p) => Some(p),
            _ => None,
        })
    }

    /// AS4_PATH.
    pub fn as4_path(&self) -> Option<&AsPath> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::As4Path(p) => Some(p),
            _ => None,
        })
    }

    /// The classic NEXT_HOP.
    pub fn next_hop(&self) -> Option<Ipv4Addr> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::NextHop(n) => Some(*n),
            _ => None,
        })
    }

    /// MP_REACH_NLRI.
    pub fn mp_reach(&self) -> Option<&MpReach> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::MpReach(r) => Some(r),
            _ => None,
        })
    }

    /// MULTI_EXIT_DISC.
    pub fn med(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::Med(m) => Some(*m),
            _ => None,
        })
    }

    /// LOCAL_PREF.
    pub fn local_pref(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::LocalPref(m) => Some(*m),
            _ => None,
        })
    }

    /// COMMUNITIES (empty when absent).
    pub fn communities(&self) -> &[Community] {
        self.attributes
            .iter()
            .find_map(|a| match a {
                PathAttribute::Communities(c) => Some(c.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// LARGE_COMMUNITY (empty when absent).
    pub fn large_communities(&self) -> &[LargeCommunity] {
        self.attributes
            .iter()
            .find_map(|a| match a {
                PathAttribute::LargeCommunities(c) => Some(c.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }
}

/// A problem in an UPDATE that RFC 7606 lets the session survive (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeIssue {
    /// What was done about it.
    pub action: Action,
    /// The error, with its NOTIFICATION code and subcode.
    pub error: DecodeError,
}

/// A parsed message with the RFC 7606 issues found in it (UPDATE only; empty otherwise).
///
/// When an issue has [`Action::TreatAsWithdraw`], the UPDATE returned already has its routes
/// moved to the withdrawn fields (classic and MP_UNREACH_NLRI) and its other attributes dropped.
/// Discarded attributes are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The message.
    pub message: Message,
    /// Issues handled without resetting the session.
    pub issues: Vec<AttributeIssue>,
}

impl Decoded {
    /// Whether the UPDATE was treated as a withdraw.
    pub fn treated_as_withdraw(&self) -> bool {
        self.issues
            .iter()
            .any(|i| i.action == Action::TreatAsWithdraw)
    }
}

/// Where the first message in `buf` ends: `Ok(None)` when more bytes are needed, the total
/// length when it is complete, an error when the header is bad (marker, length, type).
pub fn frame_len(buf: &[u8], opts: Options) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        // Check the marker bytes we have, to fail fast on garbage.
        if buf.iter().take(16).any(|b| *b != 0xff) {
            return Err(DecodeError::NotSynchronized);
        }
        return Ok(None);
    }
    let len = check_header(buf, opts)?.1;
    Ok(if buf.len() >= len { Some(len) } else { None })
}

fn check_header(buf: &[u8], opts: Options) -> Result<(MessageType, usize), DecodeError> {
    if buf[..16].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::NotSynchronized);
    }
    let length = u16::from_be_bytes([buf[16], buf[17]]);
    let kind = MessageType::from_code(buf[18]).ok_or(DecodeError::BadType { kind: buf[18] })?;
    let (min, max) = kind.length_range(opts);
    if usize::from(length) < min || usize::from(length) > max {
        return Err(DecodeError::BadLength { length });
    }
    Ok((kind, usize::from(length)))
}

/// A checked reader over untrusted bytes, remembering offsets for error reports.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }
    fn offset(&self) -> usize {
        self.base + self.pos
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.u32().map(Ipv4Addr::from)
    }
    fn ipv6(&mut self) -> Option<Ipv6Addr> {
        let b: [u8; 16] = self.take(16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    }
}

impl Message {
    /// The message type.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Parses exactly one message (header included) from `buf`, which must be exactly as long
    /// as the header says. Never panics; every error carries its NOTIFICATION code.
    pub fn parse(buf: &[u8], opts: Options) -> Result<Decoded, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Incomplete {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let (kind, len) = check_header(buf, opts)?;
        if buf.len() != len {
            if buf.len() < len {
                return Err(DecodeError::Incomplete {
                    needed: len,
                    available: buf.len(),
                });
            }
            return Err(DecodeError::BadLength {
                length: u16::try_from(buf.len()).unwrap_or(u16::MAX),
            });
        }
        let body = &buf[HEADER_LEN..];
        let mut issues = Vec::new();
        let message = match kind {
            MessageType::Open => Message::Open(parse_open(body)?),
            MessageType::Update => Message::Update(parse_update(body, opts, &mut issues)?),
            MessageType::Notification => Message::Notification(Notification {
                code: body[0],
                subcode: body[1],
                data: body[2..].to_vec(),
            }),
            MessageType::Keepalive => Message::Keepalive,
            MessageType::RouteRefresh => {
                if body.len() != 4 {
                    return Err(DecodeError::BadRouteRefreshLength { length: len as u16 });
                }
                Message::RouteRefresh(RouteRefresh {
                    family: AddressFamily {
                        afi: u16::from_be_bytes([body[0], body[1]]),
                        safi: body[3],
                    },
                    subtype: body[2],
                })
            }
        };
        Ok(Decoded { message, issues })
    }

    /// Bytes [`Message::emit`] writes, or why the message cannot be encoded.
    pub fn buffer_len(&self, opts: Options) -> Result<usize, EncodeError> {
        let mut counter = Counter::default();
        self.write(&mut counter, opts);
        counter.finish()
    }

    /// Writes the message into the front of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8], opts: Options) -> Result<usize, EncodeError> {
        let needed = self.buffer_len(opts)?;
        if buf.len() < needed {
            return Err(EncodeError::BufferTooShort {
                needed,
                available: buf.len(),
            });
        }
        let mut out = SliceOut {
            buf,
            pos: 0,
            err: None,
        };
        self.write(&mut out, opts);
        match out.err {
            Some(e) => Err(e),
            None => Ok(out.pos),
        }
    }

    /// The message as a new byte vector.
    pub fn to_bytes(&self, opts: Options) -> Result<Vec<u8>, EncodeError> {
        let mut buf = vec![0; self.buffer_len(opts)?];
        self.emit(&mut buf, opts)?;
        Ok(buf)
    }

    fn write(&self, o: &mut dyn Out, opts: Options) {
        let body_len = counted(|c| self.write_body(c, opts));
        let total = HEADER_LEN + body_len;
        let (_, max) = self.kind().length_range(opts);
        if total > max {
            o.fail(EncodeError::TooLong {
                what: self.kind().name(),
                length: total,
                max,
            });
        }
        o.put(&[0xff; 16]);
        o.put(&(total.min(0xffff) as u16).to_be_bytes());
        o.put(&[self.kind().code()]);
        self.write_body(o, opts);
    }

    fn write_body(&self, o: &mut dyn Out, opts: Options) {
        match self {
            Message::Open(open) => write_open(open, o),
            Message::Update(update) => write_update(update, o, opts),
            Message::Notification(n) => {
                o.put(&[n.code, n.subcode]);
                o.put(&n.data);
            }
            Message::Keepalive => {}
            Message::RouteRefresh(r) => {
                o.put(&r.family.afi.to_be_bytes());
                o.put(&[r.subtype, r.family.safi]);
            }
        }
    }
}

/// Output of the single encoder: a counter (for lengths) or a slice writer.
trait Out {
    fn put(&mut self, bytes: &[u8]);
    fn fail(&mut self, err: EncodeError);
}

#[derive(Default)]
struct Counter {
    n: usize,
    err: Option<EncodeError>,
}

impl Counter {
    fn finish(self) -> Result<usize, EncodeError> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(self.n),
        }
    }
}

impl Out for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.n += bytes.len();
    }
    fn fail(&mut self, err: EncodeError) {
        self.err.get_or_insert(err);
    }
}

struct SliceOut<'a> {
    buf: &'a mut [u8],
    pos: usize,
    err: Option<EncodeError>,
}

impl Out for SliceOut<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => dst.copy_from_slice(bytes),
            None => {
                self.err.get_or_insert(EncodeError::BufferTooShort {
                    needed: end,
                    available: self.buf.len(),
                });
            }
        }
        self.pos = end;
    }
    fn fail(&mut self, err: EncodeError) {
        self.err.get_or_insert(err);
    }
}

/// Bytes a writer function produces (errors are reported again by the real pass).
fn counted(f: impl FnOnce(&mut dyn Out)) -> usize {
    let mut c = Counter::default();
    f(&mut c);
    c.n
}

fn put_len8(o: &mut dyn Out, len: usize, what: &'static str) {
    if len > 255 {
        o.fail(EncodeError::TooLong {
            what,
            length: len,
            max: 255,
        });
    }
    o.put(&[len.min(255) as u8]);
}

fn put_len16(o: &mut dyn Out, len: usize, what: &'static str) {
    if len > 0xffff {
        o.fail(EncodeError::TooLong {
            what,
            length: len,
            max: 0xffff,
        });
    }
    o.put(&(len.min(0xffff) as u16).to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// OPEN

fn write_open(open: &Open, o: &mut dyn Out) {
    o.put(&[4]);
    o.put(&open.my_as.to_be_bytes());
    o.put(&open.hold_time.to_be_bytes());
    o.put(&open.router_id.octets());
    let caps_len = counted(|c| {
        for cap in &open.capabilities {
            write_capability(cap, c)
        }
    });
    if open.capabilities.is_empty() {
        o.put(&[0]);
        return;
    }
    put_len8(o, caps_len + 2, "OPEN optional parameters");
    o.put(&[2]);
    put_len8(o, caps_len, "capabilities parameter");
    for cap in &open.capabilities {
        write_capability(cap, o);
    }
}

fn write_capability(cap: &Capability, o: &mut dyn Out) {
    let value_len = counted(|c| write_capability_value(cap, c));
    o.put(&[cap.code()]);
    put_len8(o, value_len, "capability");
    write_capability_value(cap, o);
}

fn write_family(f: AddressFamily, o: &mut dyn Out) {
    o.put(&f.afi.to_be_bytes());
    o.put(&[f.safi]);
}

fn write_capability_value(cap: &Capability, o: &mut dyn Out) {
    match cap {
        Capability::Multiprotocol(f) => {
            o.put(&f.afi.to_be_bytes());
            o.put(&[0, f.safi]);
        }
        Capability::RouteRefresh
        | Capability::ExtendedMessage
        | Capability::EnhancedRouteRefresh => {}
        Capability::GracefulRestart(gr) => {
            let word = (u16::from(gr.flags & 0x0f) << 12) | (gr.restart_time & 0x0fff);
            o.put(&word.to_be_bytes());
            for (f, flags) in &gr.families {
                write_family(*f, o);
                o.put(&[*flags]);
            }
        }
        Capability::FourOctetAs(asn) => o.put(&asn.to_be_bytes()),
        Capability::AddPath(families) => {
            for (f, sr) in families {
                write_family(*f, o);
                o.put(&[*sr]);
            }
        }
        Capability::Unknown { value, .. } => o.put(value),
    }
}

fn parse_open(body: &[u8]) -> Result<Open, DecodeError> {
    let mut r = Reader::new(body, HEADER_LEN);
    let malformed = |what, offset| DecodeError::MalformedOpen { what, offset };
    // The header check guarantees 10 bytes.
    let version = r.u8().ok_or(malformed("version", r.offset()))?;
    if version != 4 {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let my_as = r.u16().ok_or(malformed("my AS", r.offset()))?;
    let hold_time = r.u16().ok_or(malformed("hold time", r.offset()))?;
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::UnacceptableHoldTime { hold_time });
    }
    let router_id = r.ipv4().ok_or(malformed("BGP identifier", r.offset()))?;
    if router_id.is_unspecified() {
        return Err(DecodeError::BadIdentifier { id: router_id });
    }
    let params_len = r.u8().ok_or(malformed("parameters length", r.offset()))?;
    if usize::from(params_len) != r.remaining() {
        return Err(malformed(
            "optional parameters length differs from message length",
            r.offset() - 1,
        ));
    }
    let mut capabilities = Vec::new();
    while !r.is_empty() {
        let at = r.offset();
        let kind = r.u8().ok_or(malformed("parameter type", at))?;
        let len = r.u8().ok_or(malformed("parameter length", at))?;
        let value = r
            .take(usize::from(len))
            .ok_or(malformed("parameter overruns the message", at))?;
        if kind != 2 {
            return Err(DecodeError::UnsupportedParameter { kind });
        }
        let mut c = Reader::new(value, at + 2);
        while !c.is_empty() {
            let at = c.offset();
            let code = c.u8().ok_or(malformed("capability code", at))?;
            let len = c.u8().ok_or(malformed("capability length", at))?;
            let value = c
                .take(usize::from(len))
                .ok_or(malformed("capability overruns its parameter", at))?;
            capabilities.push(parse_capability(code, value, at)?);
        }
    }
    Ok(Open {
        my_as,
        hold_time,
        router_id,
        capabilities,
    })
}

fn parse_family_list(value: &[u8], at: usize) -> Result<Vec<(AddressFamily, u8)>, DecodeError> {
    if !value.len().is_multiple_of(4) {
        return Err(DecodeError::MalformedOpen {
            what: "capability family list length",
            offset: at,
        });
    }
    Ok(value
        .chunks_exact(4)
        .map(|c| {
            (
                AddressFamily {
                    afi: u16::from_be_bytes([c[0], c[1]]),
                    safi: c[2],
                },
                c[3],
            )
        })
        .collect())
}

fn parse_capability(code: u8, value: &[u8], at: usize) -> Result<Capability, DecodeError> {
    let bad_len = DecodeError::MalformedOpen {
        what: "capability length",
        offset: at,
    };
    Ok(match code {
        1 => {
            let [a, b, _, safi] = *value else {
                return Err(bad_len);
            };
            Capability::Multiprotocol(AddressFamily {
                afi: u16::from_be_bytes([a, b]),
                safi,
            })
        }
        2 | 6 | 70 if !value.is_empty() => return Err(bad_len),
        2 => Capability::RouteRefresh,
        6 => Capability::ExtendedMessage,
        70 => Capability::EnhancedRouteRefresh,
        64 => {
            if value.len() < 2 {
                return Err(bad_len);
            }
            let word = u16::from_be_bytes([value[0], value[1]]);
            Capability::GracefulRestart(GracefulRestart {
                flags: (word >> 12) as u8,
                restart_time: word & 0x0fff,
                families: parse_family_list(&value[2..], at)?,
            })
        }
        65 => {
            let [a, b, c, d] = *value else {
                return Err(bad_len);
            };
            Capability::FourOctetAs(u32::from_be_bytes([a, b, c, d]))
        }
        69 => Capability::AddPath(parse_family_list(value, at)?),
        _ => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Prefixes

fn write_prefix(p: &IpNet, o: &mut dyn Out) {
    let len = p.prefix_len();
    let bytes = usize::from(len).div_ceil(8);
    o.put(&[len]);
    match p {
        IpNet::V4(n) => o.put(&n.network().octets()[..bytes]),
        IpNet::V6(n) => o.put(&n.network().octets()[..bytes]),
    }
}

fn parse_prefix(r: &mut Reader<'_>, v6: bool) -> Result<IpNet, DecodeError> {
    let at = r.offset();
    let bad = |what| DecodeError::InvalidNetworkField { what, offset: at };
    let len = r.u8().ok_or(bad("prefix length missing"))?;
    let max = if v6 { 128 } else { 32 };
    if len > max {
        return Err(bad("prefix length too large"));
    }
    let bytes = r
        .take(usize::from(len).div_ceil(8))
        .ok_or(bad("prefix overruns its field"))?;
    let net = if v6 {
        let mut o = [0u8; 16];
        o[..bytes.len()].copy_from_slice(bytes);
        Ipv6Net::new(Ipv6Addr::from(o), len)
            .map(|n| IpNet::V6(n.trunc()))
            .map_err(|_| bad("prefix length too large"))?
    } else {
        let mut o = [0u8; 4];
        o[..bytes.len()].copy_from_slice(bytes);
        Ipv4Net::new(Ipv4Addr::from(o), len)
            .map(|n| IpNet::V4(n.trunc()))
            .map_err(|_| bad("prefix length too large"))?
    };
    Ok(net)
}

fn parse_v4_prefixes(buf: &[u8], base: usize) -> Result<Vec<Ipv4Net>, DecodeError> {
    let mut r = Reader::new(buf, base);
    let mut out = Vec::new();
    while !r.is_empty() {
        if let IpNet::V4(p) = parse_prefix(&mut r, false)? {
            out.push(p);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// UPDATE

fn write_update(u: &Update, o: &mut dyn Out, opts: Options) {
    let withdrawn_len = counted(|c| {
        for p in &u.withdrawn {
            write_prefix(&IpNet::V4(*p), c)
        }
    });
    put_len16(o, withdrawn_len, "withdrawn routes");
    for p in &u.withdrawn {
        write_prefix(&IpNet::V4(*p), o);
    }
    let attrs_len = counted(|c| {
        for a in &u.attributes {
            write_attribute(a, c, opts)
        }
    });
    put_len16(o, attrs_len, "path attributes");
    for a in &u.attributes {
        write_attribute(a, o, opts);
    }
    for p in &u.nlri {
        write_prefix(&IpNet::V4(*p), o);
    }
}

fn write_attribute(a: &PathAttribute, o: &mut dyn Out, opts: Options) {
    let len = counted(|c| write_attribute_value(a, c, opts));
    let mut flags = a.flags();
    if len > 255 {
        flags |= FLAG_EXTENDED;
    }
    o.put(&[flags, a.code()]);
    if len > 255 {
        put_len16(o, len, "path attribute");
    } else {
        o.put(&[len as u8]);
    }
    write_attribute_value(a, o, opts);
}

fn write_as_path(p: &AsPath, o: &mut dyn Out, four: bool) {
    for seg in &p.segments {
        if seg.asns.is_empty() {
            o.fail(EncodeError::Invalid {
                what: "AS_PATH segment",
                reason: "a segment needs at least one AS",
            });
        }
        for chunk in seg.asns.chunks(255) {
            o.put(&[seg.kind.code(), chunk.len() as u8]);
            for asn in chunk {
                if four {
                    o.put(&asn.to_be_bytes());
                } else {
                    let a = u16::try_from(*asn).unwrap_or(AS_TRANS as u16);
                    o.put(&a.to_be_bytes());
                }
            }
        }
    }
}

fn write_attribute_value(a: &PathAttribute, o: &mut dyn Out, opts: Options) {
    match a {
        PathAttribute::Origin(origin) => o.put(&[match origin {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        }]),
        PathAttribute::AsPath(p) => write_as_path(p, o, opts.four_octet_as),
        PathAttribute::As4Path(p) => write_as_path(p, o, true),
        PathAttribute::NextHop(n) => o.put(&n.octets()),
        PathAttribute::Med(v) | PathAttribute::LocalPref(v) => o.put(&v.to_be_bytes()),
        PathAttribute::AtomicAggregate => {}
        PathAttribute::Aggregator(ag) => {
            if opts.four_octet_as {
                o.put(&ag.asn.to_be_bytes());
            } else {
                o.put(
                    &u16::try_from(ag.asn)
                        .unwrap_or(AS_TRANS as u16)
                        .to_be_bytes(),
                );
            }
            o.put(&ag.address.octets());
        }
        PathAttribute::As4Aggregator(ag) => {
            o.put(&ag.asn.to_be_bytes());
            o.put(&ag.address.octets());
        }
        PathAttribute::Communities(cs) => {
            if cs.is_empty() {
                o.fail(EncodeError::Invalid {
                    what: "COMMUNITIES",
                    reason: "the list is empty",
                });
            }
            for c in cs {
                o.put(&c.0.to_be_bytes());
            }
        }
        PathAttribute::LargeCommunities(cs) => {
            if cs.is_empty() {
                o.fail(EncodeError::Invalid {
                    what: "LARGE_COMMUNITY",
                    reason: "the list is empty",
                });
            }
            for c in cs {
                o.put(&c.global.to_be_bytes());
                o.put(&c.local1.to_be_bytes());
                o.put(&c.local2.to_be_bytes());
            }
        }
        PathAttribute::MpReach(r) => {
            write_family(r.family, o);
            match r.next_hop {
                NextHop::V4(a) => {
                    o.put(&[4]);
                    o.put(&a.octets());
                }
                NextHop::V6 { global, link_local } => {
                    o.put(&[if link_local.is_some() { 32 } else { 16 }]);
                    o.put(&global.octets());
                    if let Some(ll) = link_local {
                        o.put(&ll.octets());
                    }
                }
            }
            o.put(&[0]);
            for p in &r.nlri {
                write_prefix(p, o);
            }
        }
        PathAttribute::MpUnreach(u) => {
            write_family(u.family, o);
            for p in &u.withdrawn {
                write_prefix(p, o);
            }
        }
        PathAttribute::Unknown(u) => o.put(&u.value),
    }
}

fn parse_update(
    body: &[u8],
    opts: Options,
    issues: &mut Vec<AttributeIssue>,
) -> Result<Update, DecodeError> {
    let mut r = Reader::new(body, HEADER_LEN);
    let list = |what, offset| DecodeError::MalformedAttributeList { what, offset };
    let wlen = r.u16().ok_or(list("withdrawn length", r.offset()))?;
    let wbase = r.offset();
    let wbytes = r.take(usize::from(wlen)).ok_or(list(
        "withdrawn routes length overruns the message",
        wbase - 2,
    ))?;
    let alen_at = r.offset();
    let alen = r
        .u16()
        .ok_or(list("total path attribute length missing", alen_at))?;
    let abase = r.offset();
    let abytes = r.take(usize::from(alen)).ok_or(list(
        "total path attribute length overruns the message",
        alen_at,
    ))?;
    let nbase = r.offset();
    let nbytes = &body[r.pos..];

    let mut update = Update {
        withdrawn: parse_v4_prefixes(wbytes, wbase)?,
        attributes: Vec::new(),
        nlri: parse_v4_prefixes(nbytes, nbase)?,
    };

    let mut seen = [false; 256];
    let mut a = Reader::new(abytes, abase);
    while !a.is_empty() {
        let at = a.offset();
        let header = (|| {
            let flags = a.u8()?;
            let code = a.u8()?;
            let len = if flags & FLAG_EXTENDED != 0 {
                a.u16()?
            } else {
                u16::from(a.u8()?)
            };
            Some((flags, code, len))
        })();
        let Some((flags, code, len)) = header else {
            issues.push(AttributeIssue {
                action: Action::TreatAsWithdraw,
                error: list("attribute header overruns the attribute list", at),
            });
            break;
        };
        let Some(value) = a.take(usize::from(len)) else {
            issues.push(AttributeIssue {
                action: Action::TreatAsWithdraw,
                error: DecodeError::AttributeLength { code, length: len },
            });
            break;
        };
        if seen[usize::from(code)] {
            if code == 14 || code == 15 {
                return Err(list("repeated MP_REACH_NLRI or MP_UNREACH_NLRI", at));
            }
            issues.push(AttributeIssue {
                action: Action::AttributeDiscard,
                error: list("repeated attribute", at),
            });
            continue;
        }
        seen[usize::from(code)] = true;
        match parse_attribute(flags, code, len, value, opts) {
            Ok(Some(attr)) => update.attributes.push(attr),
            Ok(None) => {}
            Err((Action::SessionReset, e)) => return Err(e),
            Err((action, error)) => issues.push(AttributeIssue { action, error }),
        }
    }

    let withdraw = issues.iter().any(|i| i.action == Action::TreatAsWithdraw);
    if !withdraw {
        let has_nlri = !update.nlri.is_empty()
            || update
                .attributes
                .iter()
                .any(|a| matches!(a, PathAttribute::MpReach(r) if !r.nlri.is_empty()));
        let mut missing = Vec::new();
        if has_nlri {
            if !seen[1] {
                missing.push(1);
            }
            if !seen[2] {
                missing.push(2);
            }
        }
        if !update.nlri.is_empty() && !seen[3] {
            missing.push(3);
        }
        for code in missing {
            issues.push(AttributeIssue {
                action: Action::TreatAsWithdraw,
                error: DecodeError::MissingWellKnown { code },
            });
        }
    }
    if issues.iter().any(|i| i.action == Action::TreatAsWithdraw) {
        // RFC 7606 §2: every route of the UPDATE is withdrawn; the attributes no longer matter.
        let mut withdrawn = std::mem::take(&mut update.withdrawn);
        withdrawn.append(&mut update.nlri);
        let mut unreach: Vec<MpUnreach> = Vec::new();
        for attr in update.attributes.drain(..) {
            let (family, prefixes) = match attr {
                PathAttribute::MpReach(r) => (r.family, r.nlri),
                PathAttribute::MpUnreach(u) => (u.family, u.withdrawn),
                _ => continue,
            };
            match unreach.iter_mut().find(|u| u.family == family) {
                Some(u) => u.withdrawn.extend(prefixes),
                None => unreach.push(MpUnreach {
                    family,
                    withdrawn: prefixes,
                }),
            }
        }
        update.withdrawn = withdrawn;
        update.attributes = unreach.into_iter().map(PathAttribute::MpUnreach).collect();
    }
    Ok(update)
}

type AttrResult = Result<Option<PathAttribute>, (Action, DecodeError)>;

fn parse_as_path(value: &[u8], four: bool) -> Result<AsPath, DecodeError> {
    let mut r = Reader::new(value, 0);
    let width = if four { 4 } else { 2 };
    let mut segments = Vec::new();
    while !r.is_empty() {
        let bad = |what| DecodeError::MalformedAsPath { what };
        let kind = match r.u8() {
            Some(1) => SegmentKind::Set,
            Some(2) => SegmentKind::Sequence,
            Some(3) => SegmentKind::ConfedSequence,
            Some(4) => SegmentKind::ConfedSet,
            _ => return Err(bad("unknown segment type")),
        };
        let count = r.u8().ok_or(bad("segment header overruns the attribute"))?;
        if count == 0 {
            return Err(bad("empty segment"));
        }
        let bytes = r
            .take(usize::from(count) * width)
            .ok_or(bad("segment overruns the attribute"))?;
        let asns = if four {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .collect()
        };
        segments.push(Segment { kind, asns });
    }
    Ok(AsPath { segments })
}

fn parse_attribute(flags: u8, code: u8, len: u16, value: &[u8], opts: Options) -> AttrResult {
    let Some(expected) = expected_flags(code) else {
        if flags & FLAG_OPTIONAL == 0 {
            return Err((
                Action::SessionReset,
                DecodeError::UnrecognizedWellKnown { code },
            ));
        }
        return Ok(Some(PathAttribute::Unknown(UnknownAttribute {
            flags: flags & !FLAG_EXTENDED,
            code,
            value: value.to_vec(),
        })));
    };
    let action = malformed_action(code);
    let partial_ok = expected == FLAG_OPTIONAL | FLAG_TRANSITIVE;
    if flags & 0xc0 != expected || (flags & FLAG_PARTIAL != 0 && !partial_ok) {
        return Err((action, DecodeError::AttributeFlags { code, flags }));
    }
    let length_err = (action, DecodeError::AttributeLength { code, length: len });
    let u32_of = |v: &[u8]| -> Option<u32> {
        let [a, b, c, d] = *v else { return None };
        Some(u32::from_be_bytes([a, b, c, d]))
    };
    let attr = match code {
        1 => {
            let [v] = *value else { return Err(length_err) };
            PathAttribute::Origin(match v {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                _ => return Err((action, DecodeError::InvalidOrigin { value: v })),
            })
        }
        2 => PathAttribute::AsPath(
            parse_as_path(value, opts.four_octet_as).map_err(|e| (action, e))?,
        ),
        17 => PathAttribute::As4Path(parse_as_path(value, true).map_err(|e| (action, e))?),
        3 => {
            let address = Ipv4Addr::from(u32_of(value).ok_or(length_err)?);
            if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
                return Err((action, DecodeError::InvalidNextHop { address }));
            }
            PathAttribute::NextHop(address)
        }
        4 => PathAttribute::Med(u32_of(value).ok_or(length_err)?),
        5 => PathAttribute::LocalPref(u32_of(value).ok_or(length_err)?),
        6 => {
            if !value.is_empty() {
                return Err(length_err);
            }
            PathAttribute::AtomicAggregate
        }
        7 | 18 => {
            let four = code == 18 || opts.four_octet_as;
            let (asn, addr) = match (four, value.len()) {
                (true, 8) => (u32_of(&value[..4]), u32_of(&value[4..])),
                (false, 6) => (
                    Some(u32::from(u16::from_be_bytes([value[0], value[1]]))),
                    u32_of(&value[2..]),
                ),
                _ => return Err(length_err),
            };
            let (Some(asn), Some(addr)) = (asn, addr) else {
                return Err(length_err);
            };
            let ag = Aggregator {
                asn,
                address: Ipv4Addr::from(addr),
            };
            if code == 7 {
                PathAttribute::Aggregator(ag)
            } else {
                PathAttribute::As4Aggregator(ag)
            }
        }
        8 => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                return Err(length_err);
            }
            PathAttribute::Communities(
                value
                    .chunks_exact(4)
                    .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
            )
        }
        32 => {
            if value.is_empty() || !value.len().is_multiple_of(12) {
                return Err(length_err);
            }
            PathAttribute::LargeCommunities(
                value
                    .chunks_exact(12)
                    .map(|c| LargeCommunity {
                        global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                        local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                        local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                    })
                    .collect(),
            )
        }
        14 => return parse_mp_reach(flags, value),
        15 => return parse_mp_unreach(flags, value),
        _ => unreachable_known(code, flags, value),
    };
    Ok(Some(attr))
}

/// Known codes are all matched above; this keeps the decoder total without a panic path.
fn unreachable_known(code: u8, flags: u8, value: &[u8]) -> PathAttribute {
    PathAttribute::Unknown(UnknownAttribute {
        flags,
        code,
        value: value.to_vec(),
    })
}

fn mp_error(code: u8, what: &'static str) -> (Action, DecodeError) {
    (
        Action::SessionReset,
        DecodeError::OptionalAttribute { code, what },
    )
}

fn parse_mp_reach(flags: u8, value: &[u8]) -> AttrResult {
    let mut r = Reader::new(value, 0);
    let afi = r.u16().ok_or(mp_error(14, "AFI missing"))?;
    let safi = r.u8().ok_or(mp_error(14, "SAFI missing"))?;
    let family = AddressFamily { afi, safi };
    if family != AddressFamily::IPV4_UNICAST && family != AddressFamily::IPV6_UNICAST {
        return Ok(Some(PathAttribute::Unknown(UnknownAttribute {
            flags: flags & !FLAG_EXTENDED,
            code: 14,
            value: value.to_vec(),
        })));
    }
    let nh_len = r.u8().ok_or(mp_error(14, "next hop length missing"))?;
    let nh = r
        .take(usize::from(nh_len))
        .ok_or(mp_error(14, "next hop overruns the attribute"))?;
    let mut n = Reader::new(nh, 0);
    let next_hop = match (family.afi, nh_len) {
        (1, 4) => NextHop::V4(n.ipv4().ok_or(mp_error(14, "next hop"))?),
        (2, 16) => NextHop::V6 {
            global: n.ipv6().ok_or(mp_error(14, "next hop"))?,
            link_local: None,
        },
        (2, 32) => NextHop::V6 {
            global: n.ipv6().ok_or(mp_error(14, "next hop"))?,
            link_local: Some(n.ipv6().ok_or(mp_error(14, "next hop"))?),
        },
        _ => return Err(mp_error(14, "next hop length does not fit the family")),
    };
    r.u8().ok_or(mp_error(14, "reserved octet missing"))?;
    let mut nlri = Vec::new();
    while !r.is_empty() {
        nlri.push(parse_prefix(&mut r, family.afi == 2).map_err(|e| (Action::SessionReset, e))?);
    }
    Ok(Some(PathAttribute::MpReach(MpReach {
        family,
        next_hop,
        nlri,
    })))
}

fn parse_mp_unreach(flags: u8, value: &[u8]) -> AttrResult {
    let mut r = Reader::new(value, 0);
    let afi = r.u16().ok_or(mp_error(15, "AFI missing"))?;
    let safi = r.u8().ok_or(mp_error(15, "SAFI missing"))?;
    let family = AddressFamily { afi, safi };
    if family != AddressFamily::IPV4_UNICAST && family != AddressFamily::IPV6_UNICAST {
        return Ok(Some(PathAttribute::Unknown(UnknownAttribute {
            flags: flags & !FLAG_EXTENDED,
            code: 15,
            value: value.to_vec(),
        })));
    }
    let mut withdrawn = Vec::new();
    while !r.is_empty() {
        withdrawn
            .push(parse_prefix(&mut r, family.afi == 2).map_err(|e| (Action::SessionReset, e))?);
    }
    Ok(Some(PathAttribute::MpUnreach(MpUnreach {
        family,
        withdrawn,
    })))
}

/// Splits announcements sharing one set of attributes into UPDATEs that each fit in
/// `max_len` bytes: IPv4 prefixes in the classic NLRI field, IPv6 prefixes in MP_REACH_NLRI
/// with `v6_next_hop`. `attributes` must not contain MP_REACH_NLRI.
pub fn pack_announcements(
    attributes: &[PathAttribute],
    prefixes: &[IpNet],
    v6_next_hop: Option<NextHop>,
    opts: Options,
    max_len: usize,
) -> Result<Vec<Update>, EncodeError> {
    let base = Message::Update(Update {
        attributes: attributes.to_vec(),
        ..Update::default()
    })
    .buffer_len(opts)?;
    let mp_overhead = 4 + 3 + 1 + 32 + 1; // attribute header, family, next hop, reserved
    let budget = max_len
        .checked_sub(base + mp_overhead)
        .ok_or(EncodeError::TooLong {
            what: "UPDATE attributes",
            length: base,
            max: max_len,
        })?;
    let mut out = Vec::new();
    for family_v6 in [false, true] {
        let mut chunk: Vec<IpNet> = Vec::new();
        let mut used = 0;
        let flush = |chunk: &mut Vec<IpNet>, out: &mut Vec<Update>| {
            if chunk.is_empty() {
                return;
            }
            let mut u = Update {
                attributes: attributes.to_vec(),
                ..Update::default()
            };
            if family_v6 {
                u.attributes.push(PathAttribute::MpReach(MpReach {
                    family: AddressFamily::IPV6_UNICAST,
                    next_hop: v6_next_hop.unwrap_or(NextHop::V6 {
                        global: Ipv6Addr::UNSPECIFIED,
                        link_local: None,
                    }),
                    nlri: std::mem::take(chunk),
                }));
            } else {
                u.nlri = chunk
                    .drain(..)
                    .filter_map(|p| match p {
                        IpNet::V4(p) => Some(p),
                        IpNet::V6(_) => None,
                    })
                    .collect();
            }
            out.push(u);
        };
        for p in prefixes
            .iter()
            .filter(|p| matches!(p, IpNet::V6(_)) == family_v6)
        {
            let size = 1 + usize::from(p.prefix_len()).div_ceil(8);
            if used + size > budget {
                flush(&mut chunk, &mut out);
                used = 0;
            }
            chunk.push(*p);
            used += size;
        }
        flush(&mut chunk, &mut out);
    }
    Ok(out)
}

/// Splits withdrawals into UPDATEs that each fit in `max_len` bytes (IPv4 in the classic
/// field, IPv6 in MP_UNREACH_NLRI).
pub fn pack_withdrawals(prefixes: &[IpNet], max_len: usize) -> Vec<Update> {
    let budget = max_len.saturating_sub(HEADER_LEN + 4 + 4 + 3).max(64);
    let mut out = Vec::new();
    for family_v6 in [false, true] {
        let mut chunk: Vec<IpNet> = Vec::new();
        let mut used = 0;
        let flush = |chunk: &mut Vec<IpNet>, out: &mut Vec<Update>| {
            if chunk.is_empty() {
                return;
            }
            if family_v6 {
                out.push(Update {
                    attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                        family: AddressFamily::IPV6_UNICAST,
                        withdrawn: std::mem::take(chunk),
                    })],
                    ..Update::default()
                });
            } else {
                out.push(Update {
                    withdrawn: chunk
                        .drain(..)
                        .filter_map(|p| match p {
                            IpNet::V4(p) => Some(p),
                            IpNet::V6(_) => None,
                        })
                        .collect(),
                    ..Update::default()
                });
            }
        };
        for p in prefixes
            .iter()
            .filter(|p| matches!(p, IpNet::V6(_)) == family_v6)
        {
            let size = 1 + usize::from(p.prefix_len()).div_ceil(8);
            if used + size > budget {
                flush(&mut chunk, &mut out);
                used = 0;
            }
            chunk.push(*p);
            used += size;
        }
        flush(&mut chunk, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_round_trip(p: IpNet) {
        let mut c = Counter::default();
        write_prefix(&p, &mut c);
        let mut buf = vec![0xa5; c.n];
        let mut out = SliceOut {
            buf: &mut buf,
            pos: 0,
            err: None,
        };
        write_prefix(&p, &mut out);
        assert!(out.err.is_none());
        let mut r = Reader::new(&buf, 0);
        assert_eq!(parse_prefix(&mut r, p.addr().is_ipv6()).unwrap(), p);
        assert!(r.is_empty());
    }

    #[test]
    fn prefixes_use_the_fewest_octets() {
        for p in [
            "0.0.0.0/0",
            "128.0.0.0/1",
            "10.1.2.0/23",
            "10.1.2.3/32",
            "::/0",
            "2001:db8::/33",
            "2001:db8::1/128",
        ] {
            prefix_round_trip(p.parse().unwrap());
        }
        let mut c = Counter::default();
        write_prefix(&"10.1.2.0/23".parse().unwrap(), &mut c);
        assert_eq!(c.n, 4);
        // Host bits on the wire are cleared.
        let mut r = Reader::new(&[24, 10, 1, 2], 0);
        assert_eq!(
            parse_prefix(&mut r, false).unwrap(),
            "10.1.2.0/24".parse::<IpNet>().unwrap()
        );
        let mut r = Reader::new(&[25, 10, 1, 2, 255], 0);
        assert_eq!(
            parse_prefix(&mut r, false).unwrap(),
            "10.1.2.128/25".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3], 10);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.offset(), 12);
        assert_eq!(r.u16(), None);
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.u8(), Some(3));
        assert!(r.is_empty());
    }

    #[test]
    fn as_path_helpers() {
        let p = AsPath::sequence(vec![2, 3]).prepend(1);
        assert_eq!(p.flatten(), vec![1, 2, 3]);
        assert_eq!(p.path_len(), 3);
        assert_eq!(p.first(), Some(1));
        let long = AsPath::sequence((0..255).collect()).prepend(7);
        assert_eq!(long.segments.len(), 2);
        assert_eq!(long.path_len(), 256);
        // More than 255 ASes in one segment are split on the wire.
        let big = AsPath::sequence((1..=600).collect());
        let m = Message::Update(Update {
            attributes: vec![PathAttribute::AsPath(big.clone())],
            ..Update::default()
        });
        let bytes = m.to_bytes(Options::MODERN).unwrap();
        let Message::Update(u) = Message::parse(&bytes, Options::MODERN).unwrap().message else {
            panic!()
        };
        assert_eq!(u.as_path().unwrap().flatten(), big.flatten());
        assert_eq!(u.as_path().unwrap().segments.len(), 3);
    }

    #[test]
    fn notifications_describe_themselves() {
        assert_eq!(
            Notification::cease(2).describe(),
            "Cease/administrative shutdown (6/2)"
        );
        let n = DecodeError::BadType { kind: 9 }.notification();
        assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));
    }
}
