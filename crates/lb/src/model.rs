//! The input model: services, their ports and frontends, and the endpoints behind them.
//!
//! These types mirror what Kubernetes says about a Service and its EndpointSlices, without
//! depending on Kubernetes: `strata-k8s` translates the API objects into them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A transport protocol a frontend listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number, as found in the IPv4 protocol / IPv6 next-header field.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol of an IP protocol number, if it is one of the three.
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(Error::Parse {
                what: "protocol",
                input: s.to_string(),
                reason: "expected TCP, UDP or SCTP",
            }),
        }
    }
}

/// The address a client connects to: IP, port and protocol. The key of the service map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Frontend {
    /// The IPv4 or IPv6 address.
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl Frontend {
    /// A frontend from its three parts.
    pub const fn new(address: IpAddr, port: u16, protocol: Protocol) -> Self {
        Self {
            address,
            port,
            protocol,
        }
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            SocketAddr::new(self.address, self.port),
            self.protocol
        )
    }
}

impl FromStr for Frontend {
    type Err = Error;
    /// Parses `IP:PORT/PROTO`, with IPv6 in brackets: `10.0.0.1:80/TCP`, `[fd00::1]:53/UDP`.
    /// Without `/PROTO` the protocol is TCP.
    fn from_str(s: &str) -> Result<Self, Error> {
        let (addr, proto) = match s.rsplit_once('/') {
            Some((a, p)) => (a, p.parse()?),
            None => (s, Protocol::Tcp),
        };
        let sock: SocketAddr = addr.parse().map_err(|_| Error::Parse {
            what: "frontend",
            input: s.to_string(),
            reason: "expected IP:PORT/PROTO, IPv6 as [IP]:PORT/PROTO",
        })?;
        Ok(Frontend::new(sock.ip(), sock.port(), proto))
    }
}

/// How a frontend is reached, which decides the traffic policy that applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum FrontendKind {
    /// The cluster IP (internal traffic policy applies).
    ClusterIp,
    /// A node port on one of this node's addresses (external traffic policy applies).
    NodePort,
    /// A load balancer ingress IP (external traffic policy applies).
    LoadBalancer,
    /// An external IP of the service (external traffic policy applies).
    ExternalIp,
}

impl FrontendKind {
    /// Whether the external traffic policy governs this frontend (the internal one otherwise).
    pub const fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::LoadBalancer => "LoadBalancer",
            FrontendKind::ExternalIp => "ExternalIP",
        })
    }
}

/// A service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceName {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ServiceName {
    /// A service name from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The port a service port forwards to on its backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A named port of the backends (a container port name).
    Name(String),
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    /// The port's name (may be empty when the service has a single port).
    pub name: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The port on cluster, load balancer and external IPs.
    pub port: u16,
    /// Where it goes on the backends; `None` means the same number as `port`.
    pub target_port: Option<TargetPort>,
    /// The node port, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
}

impl ServicePort {
    /// An unnamed port forwarding to the same port number, without a node port.
    pub fn new(protocol: Protocol, port: u16) -> Self {
        Self {
            name: String::new(),
            protocol,
            port,
            target_port: None,
            node_port: None,
        }
    }
}

/// Session affinity of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SessionAffinity {
    /// Every new flow is balanced on its own.
    #[default]
    None,
    /// Flows from the same client IP go to the same backend while the client keeps using it
    /// within `timeout_secs` seconds (Kubernetes' default is 10800).
    ClientIp {
        /// Idle time after which the affinity is forgotten, in seconds.
        timeout_secs: u32,
    },
}

/// External or internal traffic policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any ready backend in the cluster.
    #[default]
    Cluster,
    /// Only backends on this node; without one the traffic is dropped.
    Local,
}

/// A selection algorithm.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Weighted random over the backend slots (the flow hash is the random number).
    Random,
    /// Maglev consistent hashing.
    #[default]
    Maglev,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Random => "random",
            Algorithm::Maglev => "maglev",
        })
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "random" => Ok(Algorithm::Random),
            "maglev" => Ok(Algorithm::Maglev),
            _ => Err(Error::Parse {
                what: "algorithm",
                input: s.to_string(),
                reason: "expected random or maglev",
            }),
        }
    }
}

/// A service: its addresses, ports and policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Namespace and name.
    pub name: ServiceName,
    /// Cluster IPs (one per family; empty for a headless service, which gets no frontend).
    pub cluster_ips: Vec<IpAddr>,
    /// External IPs.
    pub external_ips: Vec<IpAddr>,
    /// Load balancer ingress IPs.
    pub load_balancer_ips: Vec<IpAddr>,
    /// The ports.
    pub ports: Vec<ServicePort>,
    /// Session affinity.
    pub session_affinity: SessionAffinity,
    /// Policy of node port, load balancer and external IP frontends.
    pub external_traffic_policy: TrafficPolicy,
    /// Policy of cluster IP frontends.
    pub internal_traffic_policy: TrafficPolicy,
    /// The selection algorithm, or `None` for the balancer's default.
    pub algorithm: Option<Algorithm>,
}

impl Service {
    /// A service without addresses or ports, with default policies.
    pub fn new(name: ServiceName) -> Self {
        Self {
            name,
            cluster_ips: Vec::new(),
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            ports: Vec::new(),
            session_affinity: SessionAffinity::None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            algorithm: None,
        }
    }
}

/// The state of a backend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Ready: takes new flows.
    #[default]
    Active,
    /// Shutting down but still serving: takes new flows only when no active backend is left
    /// (KEP-1669).
    Terminating,
    /// Failed health checks: takes no new flow.
    Quarantined,
    /// Drained by an operator: takes no new flow.
    Maintenance,
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendState::Active => "active",
            BackendState::Terminating => "terminating",
            BackendState::Quarantined => "quarantined",
            BackendState::Maintenance => "maintenance",
        })
    }
}

/// A named port of an endpoint group (an EndpointSlice port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointPort {
    /// The name: the service port's name in an EndpointSlice, or a container port name.
    pub name: String,
    /// The port number on the endpoints.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// One endpoint (a pod, usually) with its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its addresses (Kubernetes puts exactly one in each endpoint).
    pub addresses: Vec<IpAddr>,
    /// Its state.
    pub state: BackendState,
    /// The node it runs on, for the Local traffic policies.
    pub node_name: Option<String>,
    /// The zone it runs in.
    pub zone: Option<String>,
    /// Zones that should use this endpoint (topology-aware routing hints).
    pub zone_hints: Vec<String>,
    /// Its weight (1 unless said otherwise; 0 takes no new flow).
    pub weight: u16,
}

impl Endpoint {
    /// An active endpoint of weight 1 with one address and no topology.
    pub fn new(address: IpAddr) -> Self {
        Self {
            addresses: vec![address],
            state: BackendState::Active,
            node_name: None,
            zone: None,
            zone_hints: Vec::new(),
            weight: 1,
        }
    }
}

/// A group of endpoints sharing a list of ports: the contents of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct EndpointGroup {
    /// The ports. An EndpointSlice names them after the service ports.
    pub ports: Vec<EndpointPort>,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_text_round_trip() {
        for s in ["10.0.0.1:80/TCP", "[fd00::1]:53/UDP", "192.0.2.7:9/SCTP"] {
            let fe: Frontend = s.parse().unwrap();
            assert_eq!(fe.to_string(), s);
        }
        let fe: Frontend = "10.0.0.1:80".parse().unwrap();
        assert_eq!(fe.protocol, Protocol::Tcp);
        assert_eq!(
            "10.0.0.1:80/udp".parse::<Frontend>().unwrap().protocol,
            Protocol::Udp
        );
        assert!(matches!(
            "10.0.0.1/TCP".parse::<Frontend>(),
            Err(Error::Parse {
                what: "frontend",
                ..
            })
        ));
        assert!(matches!(
            "10.0.0.1:80/ICMP".parse::<Frontend>(),
            Err(Error::Parse {
                what: "protocol",
                ..
            })
        ));
    }

    #[test]
    fn protocol_numbers() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!(Protocol::from_number(1), None);
    }
}
