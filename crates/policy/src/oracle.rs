//! The reference evaluator: NetworkPolicy semantics applied directly to one flow, with the
//! reasons. It is the oracle the compiled maps are tested against.
//!
//! Decisions on the points the API leaves open (shared by the compiler):
//!
//! - `ipBlock` is matched against the peer's address, whatever the peer is: a pod whose address
//!   is inside the block is matched (pod addresses carry the blocks they fall in into their
//!   identity, so the compiled maps agree).
//! - Named ports resolve against the destination pod's container ports with the rule's
//!   protocol; a destination that is not a pod (an external address or a host-network pod)
//!   never matches a named port.
//! - Host-network pods are not endpoints: no policy isolates them, and selectors never match
//!   them as peers; they are seen by address only.
//! - A pod without an address (pending) is still an endpoint; as a peer, no `ipBlock` matches
//!   it.
//! - A pod can always reach itself.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::map::Direction;
use crate::model::{Cluster, NetworkPolicy, ObjectKey, Peer, Pod, PolicyPort, PortSpec, Protocol};

/// One end of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FlowEnd {
    /// A pod of the cluster, using `address` (one of its addresses, or `None` when it has
    /// none).
    Pod {
        /// The pod.
        pod: ObjectKey,
        /// The address used by the flow.
        address: Option<IpAddr>,
    },
    /// An address that belongs to no pod.
    External(IpAddr),
}

impl FlowEnd {
    /// The address of this end, if known.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            FlowEnd::Pod { address, .. } => *address,
            FlowEnd::External(a) => Some(*a),
        }
    }
}

impl fmt::Display for FlowEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowEnd::Pod { pod, .. } => pod.fmt(f),
            FlowEnd::External(a) => a.fmt(f),
        }
    }
}

/// A connection attempt: source, destination, protocol and destination port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    /// The source.
    pub source: FlowEnd,
    /// The destination.
    pub destination: FlowEnd,
    /// The protocol.
    pub protocol: Protocol,
    /// The destination port.
    pub port: u16,
}

/// Which rule of which policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    /// The policy.
    pub policy: ObjectKey,
    /// Its direction.
    pub direction: Direction,
    /// Whether it is a deny rule.
    pub deny: bool,
    /// Index of the rule in its list.
    pub rule: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = match (self.direction, self.deny) {
            (Direction::Ingress, false) => "ingress",
            (Direction::Egress, false) => "egress",
            (Direction::Ingress, true) => "ingressDeny",
            (Direction::Egress, true) => "egressDeny",
        };
        write!(f, "NetworkPolicy {} {list}[{}]", self.policy, self.rule)
    }
}

/// The verdict of one side (the source's egress or the destination's ingress) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// This end is not a policy endpoint (an external address or a host-network pod).
    NotAnEndpoint,
    /// Source and destination are the same pod.
    SelfTraffic,
    /// No policy isolates the pod in this direction and no deny rule matched.
    NotIsolated,
    /// Allowed by these rules.
    Allowed(Vec<RuleRef>),
    /// Denied by these deny rules.
    Denied(Vec<RuleRef>),
    /// The pod is isolated by these policies and none of their rules allowed the flow.
    Isolated(Vec<ObjectKey>),
}

impl Side {
    /// Whether this side lets the flow through.
    pub fn allows(&self) -> bool {
        !matches!(self, Side::Denied(_) | Side::Isolated(_))
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[String]| f.write_str(&items.join(", "));
        match self {
            Side::NotAnEndpoint => f.write_str("allowed: not a policy endpoint"),
            Side::SelfTraffic => f.write_str("allowed: a pod can always reach itself"),
            Side::NotIsolated => f.write_str("allowed: no policy isolates the pod"),
            Side::Allowed(rules) => {
                f.write_str("allowed by ")?;
                list(f, &rules.iter().map(|r| r.to_string()).collect::<Vec<_>>())
            }
            Side::Denied(rules) => {
                f.write_str("denied by ")?;
                list(f, &rules.iter().map(|r| r.to_string()).collect::<Vec<_>>())
            }
            Side::Isolated(policies) => {
                f.write_str("denied: isolated by ")?;
                list(
                    f,
                    &policies
                        .iter()
                        .map(|p| format!("NetworkPolicy {p}"))
                        .collect::<Vec<_>>(),
                )?;
                f.write_str(" and no rule allows it")
            }
        }
    }
}

/// The oracle's answer for a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Whether the flow is allowed: egress of the source and ingress of the destination both
    /// allow it.
    pub allowed: bool,
    /// The source's egress side.
    pub egress: Side,
    /// The destination's ingress side.
    pub ingress: Side,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verdict: {}",
            if self.allowed { "allowed" } else { "denied" }
        )?;
        writeln!(f, "  egress of source: {}", self.egress)?;
        write!(f, "  ingress of destination: {}", self.ingress)
    }
}

/// What a rule sees of the peer.
struct PeerView<'a> {
    /// The pod, when it is a policy endpoint (not host-network).
    pod: Option<&'a Pod>,
    address: Option<IpAddr>,
}

fn resolve<'a>(
    cluster: &'a Cluster,
    end: &FlowEnd,
) -> Result<(Option<&'a Pod>, PeerView<'a>), Error> {
    match end {
        FlowEnd::Pod { pod, address } => {
            let p = cluster.pod(pod).ok_or_else(|| Error::NotFound {
                kind: "pod",
                name: pod.to_string(),
            })?;
            let endpoint = (!p.host_network).then_some(p);
            Ok((
                endpoint,
                PeerView {
                    pod: endpoint,
                    address: *address,
                },
            ))
        }
        FlowEnd::External(a) if cluster.is_pod_address(*a) => Err(Error::Invalid {
            object: "flow".into(),
            field: "external end".into(),
            reason: format!("address {a} belongs to a pod: use FlowEnd::Pod"),
        }),
        FlowEnd::External(a) => Ok((
            None,
            PeerView {
                pod: None,
                address: Some(*a),
            },
        )),
    }
}

/// Whether `peer` of a rule in `policy` matches the peer of the flow.
fn peer_matches(
    cluster: &Cluster,
    policy: &NetworkPolicy,
    peer: &Peer,
    view: &PeerView<'_>,
) -> bool {
    match peer {
        Peer::IpBlock(block) => view.address.is_some_and(|a| block.contains(a)),
        Peer::Pods {
            pod_selector,
            namespace_selector,
        } => {
            let Some(pod) = view.pod else { return false };
            let namespace_ok = match namespace_selector {
                None => pod.namespace == policy.namespace,
                Some(sel) => sel.matches(&cluster.namespace_labels(&pod.namespace)),
            };
            namespace_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&pod.labels))
        }
    }
}

fn port_matches(
    port: &PolicyPort,
    protocol: Protocol,
    number: u16,
    destination: Option<&Pod>,
) -> bool {
    if port.protocol != protocol {
        return false;
    }
    match &port.port {
        None => true,
        Some(PortSpec::Number(start)) => match port.end_port {
            Some(end) => (*start..=end).contains(&number),
            None => *start == number,
        },
        Some(PortSpec::Name(name)) => {
            destination.and_then(|d| d.named_port(name, protocol)) == Some(number)
        }
    }
}

/// Evaluates one direction for `endpoint` against `peer`.
fn side(
    cluster: &Cluster,
    endpoint: &Pod,
    direction: Direction,
    peer: &PeerView<'_>,
    flow: &Flow,
    destination: Option<&Pod>,
) -> Side {
    let mut isolating = Vec::new();
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    for policy in cluster.policies() {
        if policy.namespace != endpoint.namespace || !policy.pod_selector.matches(&endpoint.labels)
        {
            continue;
        }
        let rule_matches = |rule: &crate::model::Rule| {
            (rule.peers.is_empty()
                || rule
                    .peers
                    .iter()
                    .any(|p| peer_matches(cluster, policy, p, peer)))
                && (rule.ports.is_empty()
                    || rule
                        .ports
                        .iter()
                        .any(|p| port_matches(p, flow.protocol, flow.port, destination)))
        };
        for (i, rule) in policy.deny_rules(direction).iter().enumerate() {
            if rule_matches(rule) {
                denied.push(RuleRef {
                    policy: policy.key(),
                    direction,
                    deny: true,
                    rule: i,
                });
            }
        }
        if policy.isolates(direction) {
            isolating.push(policy.key());
            for (i, rule) in policy.allow_rules(direction).iter().enumerate() {
                if rule_matches(rule) {
                    allowed.push(RuleRef {
                        policy: policy.key(),
                        direction,
                        deny: false,
                        rule: i,
                    });
                }
            }
        }
    }
    if !denied.is_empty() {
        Side::Denied(denied)
    } else if isolating.is_empty() {
        Side::NotIsolated
    } else if allowed.is_empty() {
        Side::Isolated(isolating)
    } else {
        Side::Allowed(allowed)
    }
}

/// Applies NetworkPolicy semantics to `flow`. Fails when the flow names an unknown pod, or an
/// external end whose address belongs to a pod.
pub fn evaluate(cluster: &Cluster, flow: &Flow) -> Result<Explanation, Error> {
    let (src_endpoint, src_view) = resolve(cluster, &flow.source)?;
    let (dst_endpoint, dst_view) = resolve(cluster, &flow.destination)?;
    let same_pod = matches!((&flow.source, &flow.destination),
        (FlowEnd::Pod { pod: a, .. }, FlowEnd::Pod { pod: b, .. }) if a == b);
    let egress = match src_endpoint {
        None => Side::NotAnEndpoint,
        Some(_) if same_pod => Side::SelfTraffic,
        Some(src) => side(
            cluster,
            src,
            Direction::Egress,
            &dst_view,
            flow,
            dst_endpoint,
        ),
    };
    let ingress = match dst_endpoint {
        None => Side::NotAnEndpoint,
        Some(_) if same_pod => Side::SelfTraffic,
        Some(dst) => side(cluster, dst, Direction::Ingress, &src_view, flow, Some(dst)),
    };
    Ok(Explanation {
        allowed: egress.allows() && ingress.allows(),
        egress,
        ingress,
    })
}
