//! The inputs: namespaces, pods and network policies, gathered in a [`Cluster`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::labels::{LabelSelector, Labels};
use crate::map::Direction;

/// The label Kubernetes puts on every namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A transport protocol NetworkPolicy can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Protocol {
    /// All protocols.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Kubernetes spelling: `TCP`, `UDP`, `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!(
                "unknown protocol {other:?} (expected TCP, UDP or SCTP)"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ObjectKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ObjectKey::new(ns, name))
            }
            _ => Err(format!("{s:?} is not of the form namespace/name")),
        }
    }
}

/// A namespace and its labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels ([`NAMESPACE_NAME_LABEL`] is added when absent, as Kubernetes does).
    pub labels: Labels,
}

/// A named or numbered container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerPort {
    /// The port's name, if any (unique within the pod).
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// A pod: the unit policies select.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Addresses (`status.podIPs`, the first being `status.podIP`); empty while pending.
    pub ips: Vec<IpAddr>,
    /// Container ports of all containers.
    pub ports: Vec<ContainerPort>,
    /// Whether the pod uses the node's network namespace. Such pods are not policy endpoints:
    /// policies do not select them and selectors do not match them as peers; as peers they are
    /// seen by address only (the host identity, and ipBlocks containing their address).
    pub host_network: bool,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }

    /// The container port called `name` with `protocol`, if any.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// `port` of a NetworkPolicyPort: a number or a container port name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortSpec {
    /// A port number.
    Number(u16),
    /// A container port name, resolved against the destination pod.
    Name(String),
}

/// One entry of a rule's `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyPort {
    /// Protocol (Kubernetes default: TCP).
    pub protocol: Protocol,
    /// Port; `None` = all ports of the protocol.
    pub port: Option<PortSpec>,
    /// Last port of a range starting at a numeric `port`.
    pub end_port: Option<u16>,
}

/// An `ipBlock` peer: a CIDR minus exceptions, matched against the peer's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpBlock {
    /// The CIDR.
    pub cidr: IpNet,
    /// Sub-prefixes of `cidr` excluded.
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Whether `address` is in the block.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.cidr.contains(&address) && !self.except.iter().any(|e| e.contains(&address))
    }

    /// Canonical text, also used as the identity label of the block: `cidr` or
    /// `cidr except a,b` with exceptions sorted.
    pub fn key(&self) -> String {
        if self.except.is_empty() {
            self.cidr.to_string()
        } else {
            let mut except: Vec<IpNet> = self.except.clone();
            except.sort();
            except.dedup();
            let except: Vec<String> = except.iter().map(|e| e.to_string()).collect();
            format!("{} except {}", self.cidr, except.join(","))
        }
    }
}

/// A peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Peer {
    /// Pods chosen by selectors: `podSelector` alone = pods of the policy's namespace;
    /// `namespaceSelector` alone = all pods of the selected namespaces; both = the selected
    /// pods of the selected namespaces.
    Pods {
        /// `podSelector`.
        pod_selector: Option<LabelSelector>,
        /// `namespaceSelector`.
        namespace_selector: Option<LabelSelector>,
    },
    /// An `ipBlock`.
    IpBlock(IpBlock),
}

/// An ingress or egress rule. Empty `peers` = every peer (any address); empty `ports` = every
/// port and protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// `from` (ingress) or `to` (egress).
    pub peers: Vec<Peer>,
    /// `ports`.
    pub ports: Vec<PolicyPort>,
}

/// A `networking.k8s.io/v1` NetworkPolicy, plus Strata's deny rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods of the namespace the policy applies to.
    pub pod_selector: LabelSelector,
    /// Ingress allow rules.
    pub ingress: Vec<Rule>,
    /// Egress allow rules.
    pub egress: Vec<Rule>,
    /// `policyTypes`; `None` = the Kubernetes default (Ingress, plus Egress when there are
    /// egress rules).
    pub policy_types: Option<Vec<Direction>>,
    /// Strata extension (Kubernetes has none): ingress deny rules. They apply to the selected
    /// pods whatever `policy_types` says, do not isolate, and win over every allow.
    pub ingress_deny: Vec<Rule>,
    /// Strata extension: egress deny rules, as `ingress_deny`.
    pub egress_deny: Vec<Rule>,
}

impl NetworkPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }

    /// Whether the policy isolates its pods in `direction` (policyTypes and their defaults).
    pub fn isolates(&self, direction: Direction) -> bool {
        match &self.policy_types {
            Some(types) => types.contains(&direction),
            None => direction == Direction::Ingress || !self.egress.is_empty(),
        }
    }

    /// The allow rules of `direction`, empty when the policy does not isolate in it.
    pub fn allow_rules(&self, direction: Direction) -> &[Rule] {
        if !self.isolates(direction) {
            return &[];
        }
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The deny rules of `direction`.
    pub fn deny_rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress_deny,
            Direction::Egress => &self.egress_deny,
        }
    }

    /// Every ipBlock of the policy.
    pub fn ip_blocks(&self) -> impl Iterator<Item = &IpBlock> {
        [
            &self.ingress,
            &self.egress,
            &self.ingress_deny,
            &self.egress_deny,
        ]
        .into_iter()
        .flatten()
        .flat_map(|r| r.peers.iter())
        .filter_map(|p| match p {
            Peer::IpBlock(b) => Some(b),
            Peer::Pods { .. } => None,
        })
    }

    /// Checks the policy as the API server would; errors name the field.
    pub fn validate(&self) -> Result<(), Error> {
        let object = format!("NetworkPolicy {}", self.key());
        let invalid = |field: String, reason: String| Error::Invalid {
            object: object.clone(),
            field,
            reason,
        };
        self.pod_selector.validate(&object, "spec.podSelector")?;
        let groups = [
            ("spec.ingress", "from", &self.ingress),
            ("spec.egress", "to", &self.egress),
            ("spec.ingressDeny", "from", &self.ingress_deny),
            ("spec.egressDeny", "to", &self.egress_deny),
        ];
        for (group, peers_name, rules) in groups {
            for (r, rule) in rules.iter().enumerate() {
                for (p, peer) in rule.peers.iter().enumerate() {
                    let field = format!("{group}[{r}].{peers_name}[{p}]");
                    match peer {
                        Peer::Pods {
                            pod_selector,
                            namespace_selector,
                        } => {
                            if pod_selector.is_none() && namespace_selector.is_none() {
                                return Err(invalid(
                                    field,
                                    "a peer needs podSelector, namespaceSelector or ipBlock".into(),
                                ));
                            }
                            if let Some(s) = pod_selector {
                                s.validate(&object, &format!("{field}.podSelector"))?;
                            }
                            if let Some(s) = namespace_selector {
                                s.validate(&object, &format!("{field}.namespaceSelector"))?;
                            }
                        }
                        Peer::IpBlock(block) => {
                            if block.cidr.trunc() != block.cidr {
                                return Err(invalid(
                                    format!("{field}.ipBlock.cidr"),
                                    format!("{} has host bits set", block.cidr),
                                ));
                            }
                            for (e, except) in block.except.iter().enumerate() {
                                if except.trunc() != *except
                                    || !block.cidr.contains(except)
                                    || except.prefix_len() <= block.cidr.prefix_len()
                                {
                                    return Err(invalid(
                                        format!("{field}.ipBlock.except[{e}]"),
                                        format!(
                                            "{except} is not a strict sub-prefix of {}",
                                            block.cidr
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
                for (i, port) in rule.ports.iter().enumerate() {
                    let field = format!("{group}[{r}].ports[{i}]");
                    match (&port.port, port.end_port) {
                        (Some(PortSpec::Number(0)), _) => {
                            return Err(invalid(
                                format!("{field}.port"),
                                "port 0 is not a port".into(),
                            ));
                        }
                        (Some(PortSpec::Name(n)), _) if n.is_empty() => {
                            return Err(invalid(format!("{field}.port"), "empty port name".into()));
                        }
                        (Some(PortSpec::Number(start)), Some(end)) if end < *start => {
                            return Err(invalid(
                                format!("{field}.endPort"),
                                format!("endPort {end} is below port {start}"),
                            ));
                        }
                        (Some(PortSpec::Name(_)) | None, Some(_)) => {
                            return Err(invalid(
                                format!("{field}.endPort"),
                                "endPort needs a numeric port".into(),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// The whole input: namespaces, pods and policies, with their cross-object invariants (no two
/// non-host-network pods share an address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<ObjectKey, Pod>,
    policies: BTreeMap<ObjectKey, NetworkPolicy>,
    addresses: HashMap<IpAddr, ObjectKey>,
    host_addresses: HashMap<IpAddr, BTreeSet<ObjectKey>>,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, mut namespace: Namespace) {
        namespace
            .labels
            .entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| namespace.name.clone());
        self.namespaces.insert(namespace.name.clone(), namespace);
    }

    /// Removes a namespace (its pods and policies stay; the namespace reverts to its default
    /// labels).
    pub fn remove_namespace(&mut self, name: &str) -> Result<Namespace, Error> {
        self.namespaces.remove(name).ok_or_else(|| Error::NotFound {
            kind: "namespace",
            name: name.to_string(),
        })
    }

    /// Checks that `pod` can be upserted: its addresses are not used by another pod (host-network
    /// pods may share the node's addresses among themselves, not with other pods).
    pub fn check_pod(&self, pod: &Pod) -> Result<(), Error> {
        let key = pod.key();
        for (i, ip) in pod.ips.iter().enumerate() {
            let clash = if pod.host_network {
                self.addresses.get(ip).filter(|k| **k != key)
            } else {
                self.host_addresses
                    .get(ip)
                    .and_then(|users| users.iter().find(|k| **k != key))
            };
            if let Some(other) = clash {
                return Err(Error::DuplicateAddress {
                    address: *ip,
                    first: other.to_string(),
                    second: key.to_string(),
                });
            }
            if pod.host_network {
                continue;
            }
            if pod.ips[..i].contains(ip) {
                return Err(Error::Invalid {
                    object: format!("Pod {key}"),
                    field: format!("status.podIPs[{i}]"),
                    reason: format!("address {ip} listed twice"),
                });
            }
            if let Some(other) = self.addresses.get(ip)
                && *other != key
            {
                return Err(Error::DuplicateAddress {
                    address: *ip,
                    first: other.to_string(),
                    second: key.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&mut self, pod: Pod) -> Result<Option<Pod>, Error> {
        self.check_pod(&pod)?;
        let key = pod.key();
        let old = self.remove_pod(&key).ok();
        for ip in &pod.ips {
            if pod.host_network {
                self.host_addresses
                    .entry(*ip)
                    .or_default()
                    .insert(key.clone());
            } else {
                self.addresses.insert(*ip, key.clone());
            }
        }
        self.pods.insert(key, pod);
        Ok(old)
    }

    /// Removes a pod.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> Result<Pod, Error> {
        let pod = self.pods.remove(key).ok_or_else(|| Error::NotFound {
            kind: "pod",
            name: key.to_string(),
        })?;
        for ip in &pod.ips {
            if pod.host_network {
                if let Some(users) = self.host_addresses.get_mut(ip) {
                    users.remove(key);
                    if users.is_empty() {
                        self.host_addresses.remove(ip);
                    }
                }
            } else {
                self.addresses.remove(ip);
            }
        }
        Ok(pod)
    }

    /// Adds or replaces a policy after validating it.
    pub fn upsert_policy(&mut self, policy: NetworkPolicy) -> Result<Option<NetworkPolicy>, Error> {
        policy.validate()?;
        Ok(self.policies.insert(policy.key(), policy))
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, key: &ObjectKey) -> Result<NetworkPolicy, Error> {
        self.policies.remove(key).ok_or_else(|| Error::NotFound {
            kind: "policy",
            name: key.to_string(),
        })
    }

    /// The labels of namespace `name`: declared ones, or just [`NAMESPACE_NAME_LABEL`] for a
    /// namespace that was not declared.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]),
        }
    }

    /// Declared namespaces.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// Pods in key order.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// One pod.
    pub fn pod(&self, key: &ObjectKey) -> Option<&Pod> {
        self.pods.get(key)
    }

    /// Policies in key order.
    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.policies.values()
    }

    /// Policies of one namespace.
    pub fn policies_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a NetworkPolicy> {
        self.policies
            .range(ObjectKey::new(namespace, "")..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, p)| p)
    }

    /// Pods of one namespace.
    pub fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Pod> {
        self.pods
            .range(ObjectKey::new(namespace, "")..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, p)| p)
    }

    /// One policy.
    pub fn policy(&self, key: &ObjectKey) -> Option<&NetworkPolicy> {
        self.policies.get(key)
    }

    /// Whether `address` belongs to any pod, host-network pods included.
    pub fn is_pod_address(&self, address: IpAddr) -> bool {
        self.addresses.contains_key(&address) || self.host_addresses.contains_key(&address)
    }

    /// The pod (not host-network) holding `address`.
    pub fn pod_by_address(&self, address: IpAddr) -> Option<&Pod> {
        self.addresses.get(&address).and_then(|k| self.pods.get(k))
    }
}
