//! NetworkPolicies lowered, per local endpoint and direction, into matches over IPv4
//! addresses and ports: what every rendering starts from.
//!
//! The semantics are those of `strata_policy::oracle` (checked in `tests/renderers.rs` against
//! real traffic): per direction, a deny rule of any policy selecting the endpoint drops; else,
//! if some policy isolates the direction, one of their allow rules must match; else the
//! traffic passes. Pod peers are matched by their IPv4 addresses, `ipBlock`s by prefix minus
//! exceptions, named ports against the destination pod (the endpoint itself for ingress, each
//! candidate pod for egress). IPv6 peers and addresses are left out: the rig is IPv4 only.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use strata_policy::{Cluster, Direction, NetworkPolicy, ObjectKey, Peer, Pod, PortSpec, Rule};

use super::{Error, cidr};

/// A pod of the cluster that has an interface on the measured node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The pod.
    pub pod: ObjectKey,
    /// Its host-side interface in the node namespace.
    pub iface: String,
}

/// The peers one entry of a rule's `from`/`to` matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMatch {
    /// The IPv4 addresses of the pods a selector picks.
    Pods {
        /// The selector, as text (stable while members come and go: names the ipset).
        selector: String,
        /// Member addresses, sorted (possibly none).
        addrs: Vec<Ipv4Addr>,
    },
    /// An IPv4 `ipBlock`: the prefix minus its exceptions.
    Block {
        /// The prefix.
        cidr: Ipv4Net,
        /// Excluded sub-prefixes.
        except: Vec<Ipv4Net>,
    },
}

impl PeerMatch {
    /// Whether `address` is matched.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        match self {
            PeerMatch::Pods { addrs, .. } => addrs.binary_search(&address).is_ok(),
            PeerMatch::Block { cidr, except } => {
                cidr.contains(&address) && !except.iter().any(|e| e.contains(&address))
            }
        }
    }

    /// The matched addresses as disjoint prefixes.
    pub fn nets(&self) -> Vec<Ipv4Net> {
        match self {
            PeerMatch::Pods { addrs, .. } => addrs.iter().map(|&ip| Ipv4Net::from(ip)).collect(),
            PeerMatch::Block { cidr, except } => cidr::subtract(*cidr, except),
        }
    }
}

/// The destination ports one entry of a rule's `ports` matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// Ports `lo..=hi` of protocol `proto`.
    Range {
        /// IP protocol number.
        proto: u8,
        /// First port.
        lo: u16,
        /// Last port.
        hi: u16,
    },
    /// Every port of `proto`.
    Protocol(u8),
    /// An egress named port: the destination must be one of `members` (address, port).
    Named {
        /// IP protocol number.
        proto: u8,
        /// The port name.
        name: String,
        /// Pods having the named port: their addresses with the port number.
        members: Vec<(Ipv4Addr, u16)>,
    },
}

/// One rule: a flow matches when one peer and one port match (`None`: any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    /// Peers (`None`: every peer).
    pub peers: Option<Vec<PeerMatch>>,
    /// Ports (`None`: every port and protocol).
    pub ports: Option<Vec<PortMatch>>,
}

/// What one policy contributes to one endpoint and direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRules {
    /// The policy.
    pub policy: ObjectKey,
    /// Whether the policy isolates the endpoint in this direction.
    pub isolates: bool,
    /// Deny rules (any match drops).
    pub deny: Vec<RuleMatch>,
    /// Allow rules (used only when the policy isolates).
    pub allow: Vec<RuleMatch>,
}

/// One direction of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectionRules {
    /// Policies selecting the endpoint, in the cluster's order.
    pub policies: Vec<PolicyRules>,
}

impl DirectionRules {
    /// Whether some policy isolates this direction (unmatched traffic is dropped).
    pub fn isolated(&self) -> bool {
        self.policies.iter().any(|p| p.isolates)
    }
}

/// A local endpoint with both directions lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRules {
    /// The endpoint.
    pub endpoint: LocalEndpoint,
    /// Its IPv4 addresses.
    pub addresses: Vec<Ipv4Addr>,
    /// Traffic to the endpoint (peer = source).
    pub ingress: DirectionRules,
    /// Traffic from the endpoint (peer = destination).
    pub egress: DirectionRules,
}

impl EndpointRules {
    /// One direction.
    pub fn direction(&self, d: Direction) -> &DirectionRules {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

fn v4(ips: &[IpAddr]) -> Vec<Ipv4Addr> {
    ips.iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect()
}

fn peer(cluster: &Cluster, policy: &NetworkPolicy, p: &Peer) -> Option<PeerMatch> {
    match p {
        Peer::IpBlock(b) => match b.cidr {
            IpNet::V4(cidr) => Some(PeerMatch::Block {
                cidr,
                except: b
                    .except
                    .iter()
                    .filter_map(|e| match e {
                        IpNet::V4(e) => Some(*e),
                        IpNet::V6(_) => None,
                    })
                    .collect(),
            }),
            IpNet::V6(_) => None,
        },
        Peer::Pods {
            pod_selector,
            namespace_selector,
        } => {
            let mut addrs: Vec<Ipv4Addr> = cluster
                .pods()
                .filter(|q| !q.host_network)
                .filter(|q| match namespace_selector {
                    None => q.namespace == policy.namespace,
                    Some(sel) => sel.matches(&cluster.namespace_labels(&q.namespace)),
                })
                .filter(|q| pod_selector.as_ref().is_none_or(|s| s.matches(&q.labels)))
                .flat_map(|q| v4(&q.ips))
                .collect();
            addrs.sort_unstable();
            addrs.dedup();
            let selector = match namespace_selector {
                None => format!("ns={} pods={pod_selector:?}", policy.namespace),
                Some(ns) => format!("ns={ns:?} pods={pod_selector:?}"),
            };
            Some(PeerMatch::Pods { selector, addrs })
        }
    }
}

fn rule(
    cluster: &Cluster,
    policy: &NetworkPolicy,
    r: &Rule,
    direction: Direction,
    endpoint: &Pod,
) -> RuleMatch {
    let peers = (!r.peers.is_empty()).then(|| {
        r.peers
            .iter()
            .filter_map(|p| peer(cluster, policy, p))
            .collect()
    });
    let ports = (!r.ports.is_empty()).then(|| {
        r.ports
            .iter()
            .filter_map(|p| {
                let proto = p.protocol.number();
                match (&p.port, direction) {
                    (None, _) => Some(PortMatch::Protocol(proto)),
                    (Some(PortSpec::Number(lo)), _) => Some(PortMatch::Range {
                        proto,
                        lo: *lo,
                        hi: p.end_port.unwrap_or(*lo).max(*lo),
                    }),
                    (Some(PortSpec::Name(name)), Direction::Ingress) => endpoint
                        .named_port(name, p.protocol)
                        .map(|n| PortMatch::Range {
                            proto,
                            lo: n,
                            hi: n,
                        }),
                    (Some(PortSpec::Name(name)), Direction::Egress) => {
                        let mut members: Vec<(Ipv4Addr, u16)> = cluster
                            .pods()
                            .filter(|q| !q.host_network)
                            .filter_map(|q| q.named_port(name, p.protocol).map(|n| (q, n)))
                            .flat_map(|(q, n)| v4(&q.ips).into_iter().map(move |a| (a, n)))
                            .collect();
                        members.sort_unstable();
                        members.dedup();
                        Some(PortMatch::Named {
                            proto,
                            name: name.clone(),
                            members,
                        })
                    }
                }
            })
            .collect()
    });
    RuleMatch { peers, ports }
}

fn direction_rules(cluster: &Cluster, pod: &Pod, direction: Direction) -> DirectionRules {
    let mut policies = Vec::new();
    for policy in cluster.policies() {
        if policy.namespace != pod.namespace || !policy.pod_selector.matches(&pod.labels) {
            continue;
        }
        let isolates = policy.isolates(direction);
        let deny: Vec<RuleMatch> = policy
            .deny_rules(direction)
            .iter()
            .map(|r| rule(cluster, policy, r, direction, pod))
            .collect();
        let allow: Vec<RuleMatch> = if isolates {
            policy
                .allow_rules(direction)
                .iter()
                .map(|r| rule(cluster, policy, r, direction, pod))
                .collect()
        } else {
            Vec::new()
        };
        if isolates || !deny.is_empty() {
            policies.push(PolicyRules {
                policy: policy.key(),
                isolates,
                deny,
                allow,
            });
        }
    }
    DirectionRules { policies }
}

/// Lowers the policies of `cluster` for the local endpoints, in the order given.
pub fn lower(cluster: &Cluster, locals: &[LocalEndpoint]) -> Result<Vec<EndpointRules>, Error> {
    locals
        .iter()
        .map(|l| {
            let pod = cluster.pod(&l.pod).ok_or_else(|| Error::Endpoint {
                pod: l.pod.to_string(),
                reason: "no such pod".into(),
            })?;
            if pod.host_network {
                return Err(Error::Endpoint {
                    pod: l.pod.to_string(),
                    reason: "host-network pods are not endpoints".into(),
                });
            }
            let addresses = v4(&pod.ips);
            if addresses.is_empty() {
                return Err(Error::Endpoint {
                    pod: l.pod.to_string(),
                    reason: "no IPv4 address".into(),
                });
            }
            Ok(EndpointRules {
                endpoint: l.clone(),
                addresses,
                ingress: direction_rules(cluster, pod, Direction::Ingress),
                egress: direction_rules(cluster, pod, Direction::Egress),
            })
        })
        .collect()
}

/// One fully expanded match: a peer prefix (or any), a protocol (or any) and a port range (or
/// any). A rule expands into the atoms of its peers × ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Atom {
    /// Peer prefix (`None`: any peer).
    pub peer: Option<Ipv4Net>,
    /// IP protocol (`None`: any).
    pub proto: Option<u8>,
    /// Port range (`None`: any port).
    pub ports: Option<(u16, u16)>,
}

impl Atom {
    /// Whether the atom is one address, one protocol and one port (an element of a
    /// concatenated set rather than a rule).
    pub fn is_exact(&self) -> bool {
        self.peer.is_some_and(|p| p.prefix_len() == 32)
            && self.proto.is_some()
            && self.ports.is_some_and(|(lo, hi)| lo == hi)
    }
}

impl RuleMatch {
    /// The rule's atoms, in rule order (peers outer, ports inner), without duplicates.
    pub fn atoms(&self) -> Vec<Atom> {
        let peer_nets: Option<Vec<Ipv4Net>> = self
            .peers
            .as_ref()
            .map(|ps| ps.iter().flat_map(PeerMatch::nets).collect());
        let peer_ok = |a: Ipv4Addr| {
            self.peers
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.contains(a)))
        };
        let mut out = Vec::new();
        match (&peer_nets, &self.ports) {
            (None, None) => out.push(Atom {
                peer: None,
                proto: None,
                ports: None,
            }),
            (Some(nets), None) => out.extend(nets.iter().map(|n| Atom {
                peer: Some(*n),
                proto: None,
                ports: None,
            })),
            (_, Some(ports)) => {
                let peers: Vec<Option<Ipv4Net>> = match &peer_nets {
                    None => vec![None],
                    Some(nets) => nets.iter().copied().map(Some).collect(),
                };
                for p in &peers {
                    for port in ports {
                        match port {
                            PortMatch::Range { proto, lo, hi } => out.push(Atom {
                                peer: *p,
                                proto: Some(*proto),
                                ports: Some((*lo, *hi)),
                            }),
                            PortMatch::Protocol(proto) => out.push(Atom {
                                peer: *p,
                                proto: Some(*proto),
                                ports: None,
                            }),
                            PortMatch::Named { .. } => {}
                        }
                    }
                }
                // Named ports pair a destination address with its port: one atom per member
                // the peers match.
                for port in ports {
                    if let PortMatch::Named { proto, members, .. } = port {
                        for &(a, n) in members {
                            if peer_ok(a) {
                                out.push(Atom {
                                    peer: Some(Ipv4Net::from(a)),
                                    proto: Some(*proto),
                                    ports: Some((n, n)),
                                });
                            }
                        }
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(*a));
        out
    }
}

/// How a lowered direction decides a flow from or to `peer` (the reference for the renderers'
/// unit tests; the integration test compares real traffic with the oracle itself).
pub fn decide(rules: &DirectionRules, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
    let hit = |r: &RuleMatch| {
        r.atoms().iter().any(|a| {
            a.peer.is_none_or(|n| n.contains(&peer))
                && a.proto.is_none_or(|p| p == proto)
                && a.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&port))
        })
    };
    if rules.policies.iter().any(|p| p.deny.iter().any(hit)) {
        return false;
    }
    !rules.isolated() || rules.policies.iter().any(|p| p.allow.iter().any(hit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_policy::{
        ContainerPort, Flow, IpBlock, LabelSelector, Labels, Namespace, PolicyPort, Protocol,
        evaluate,
    };

    /// A small deterministic generator (xorshift), so failures replay.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const APPS: [&str; 3] = ["a", "b", "c"];
    const PORTS: [u16; 4] = [80, 81, 443, 5000];

    fn selector(rng: &mut Rng) -> LabelSelector {
        if rng.chance(25) {
            LabelSelector::everything()
        } else {
            LabelSelector::labels([("app", APPS[rng.below(3) as usize])])
        }
    }

    fn rule(rng: &mut Rng) -> Rule {
        let mut peers = Vec::new();
        for _ in 0..rng.below(3) {
            peers.push(match rng.below(4) {
                0 => Peer::IpBlock(IpBlock {
                    cidr: "10.1.0.0/24".parse().unwrap(),
                    except: if rng.chance(50) {
                        vec![format!("10.1.0.{}/32", rng.below(6) + 1).parse().unwrap()]
                    } else {
                        vec![]
                    },
                }),
                1 => Peer::Pods {
                    pod_selector: None,
                    namespace_selector: Some(LabelSelector::labels([(
                        "team",
                        ["x", "y"][rng.below(2) as usize],
                    )])),
                },
                2 => Peer::Pods {
                    pod_selector: Some(selector(rng)),
                    namespace_selector: Some(LabelSelector::everything()),
                },
                _ => Peer::Pods {
                    pod_selector: Some(selector(rng)),
                    namespace_selector: None,
                },
            });
        }
        let mut ports = Vec::new();
        for _ in 0..rng.below(3) {
            let protocol = if rng.chance(50) {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            ports.push(match rng.below(4) {
                0 => PolicyPort {
                    protocol,
                    port: None,
                    end_port: None,
                },
                1 => PolicyPort {
                    protocol,
                    port: Some(PortSpec::Number(80)),
                    end_port: Some(443),
                },
                2 => PolicyPort {
                    protocol,
                    port: Some(PortSpec::Name("web".into())),
                    end_port: None,
                },
                _ => PolicyPort {
                    protocol,
                    port: Some(PortSpec::Number(PORTS[rng.below(4) as usize])),
                    end_port: None,
                },
            });
        }
        Rule { peers, ports }
    }

    fn cluster(rng: &mut Rng) -> Cluster {
        let mut c = Cluster::new();
        for (ns, team) in [("n1", "x"), ("n2", "y")] {
            c.upsert_namespace(Namespace {
                name: ns.into(),
                labels: Labels::from([("team".to_string(), team.to_string())]),
            });
        }
        for i in 0..6u8 {
            let protocol = if rng.chance(50) {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            c.upsert_pod(Pod {
                namespace: ["n1", "n2"][rng.below(2) as usize].into(),
                name: format!("p{i}"),
                labels: Labels::from([("app".to_string(), APPS[rng.below(3) as usize].into())]),
                ips: vec![IpAddr::V4(Ipv4Addr::new(10, 1, 0, i + 1))],
                ports: if rng.chance(60) {
                    vec![ContainerPort {
                        name: Some("web".into()),
                        port: PORTS[rng.below(4) as usize],
                        protocol,
                    }]
                } else {
                    vec![]
                },
                host_network: false,
            })
            .unwrap();
        }
        for i in 0..rng.below(4) + 1 {
            let mut p = NetworkPolicy {
                namespace: ["n1", "n2"][rng.below(2) as usize].into(),
                name: format!("pol{i}"),
                pod_selector: selector(rng),
                ..Default::default()
            };
            for _ in 0..rng.below(3) {
                p.ingress.push(rule(rng));
            }
            for _ in 0..rng.below(3) {
                p.egress.push(rule(rng));
            }
            if rng.chance(20) {
                p.ingress_deny.push(rule(rng));
            }
            if rng.chance(20) {
                p.egress_deny.push(rule(rng));
            }
            p.policy_types = match rng.below(4) {
                0 => Some(vec![Direction::Ingress]),
                1 => Some(vec![Direction::Egress]),
                2 => Some(vec![Direction::Ingress, Direction::Egress]),
                _ => None,
            };
            c.upsert_policy(p).unwrap();
        }
        c
    }

    /// The lowered rules decide every pod-to-pod flow as the oracle does, on random clusters
    /// with every feature the renderers handle.
    #[test]
    fn lowering_decides_as_the_oracle() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let c = cluster(&mut rng);
            let pods: Vec<&Pod> = c.pods().collect();
            let locals: Vec<LocalEndpoint> = pods
                .iter()
                .map(|p| LocalEndpoint {
                    pod: p.key(),
                    iface: format!("if{}", p.name),
                })
                .collect();
            let lowered = lower(&c, &locals).unwrap();
            for (i, src) in pods.iter().enumerate() {
                for (j, dst) in pods.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let (IpAddr::V4(sa), IpAddr::V4(da)) = (src.ips[0], dst.ips[0]) else {
                        unreachable!()
                    };
                    for proto in [Protocol::Tcp, Protocol::Udp] {
                        for port in [80, 81, 443, 444, 5000] {
                            let flow =
                                Flow::between(&c, &src.key(), &dst.key(), proto, port).unwrap();
                            let want = evaluate(&c, &flow).unwrap().allowed;
                            let n = proto.number();
                            let got = decide(&lowered[i].egress, da, n, port)
                                && decide(&lowered[j].ingress, sa, n, port);
                            assert_eq!(
                                got,
                                want,
                                "seed {seed}: {} -> {} {port}/{proto}\n{c:#?}",
                                src.key(),
                                dst.key()
                            );
                        }
                    }
                }
            }
        }
    }
}
