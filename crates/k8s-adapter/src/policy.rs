//! Namespaces, Pods and NetworkPolicies translated into [`strata_policy`] inputs.
//!
//! Every translation error names the file, document, object and field, for example:
//!
//! ```text
//! policies.yaml: document 2 (NetworkPolicy shop/db): field `spec.ingress[0].from[0].ipBlock.cidr`: invalid CIDR "10.0.0/8"
//! ```
//!
//! [`cluster_from_manifests`] builds a new [`Cluster`] and returns
//! it only when every object is valid: nothing is half-loaded.
//!
//! Named ports are taken from `spec.containers[*].ports` (not from init containers). Objects
//! without `metadata.namespace` are in `default`. Pods in phase `Succeeded` or `Failed` are
//! skipped with a warning: they no longer hold their address, which another pod may reuse.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strata_policy::{
    Cluster, ContainerPort, Direction, IpBlock, LabelSelector, Namespace, NetworkPolicy, Peer, Pod,
    PolicyPort, PortSpec, Protocol, Requirement, Rule,
};

use crate::Error;
use crate::manifest::{Kind, Location, Manifests, Warning};

/// The kinds this module understands.
pub fn kinds() -> [Kind; 3] {
    [
        Kind::of::<core::Namespace>(),
        Kind::of::<core::Pod>(),
        Kind::of::<net::NetworkPolicy>(),
    ]
}

/// The result of reading manifests for policy: the cluster and the warnings about skipped
/// objects (kinds not in [`kinds`], and pods that have terminated).
#[derive(Debug, Clone)]
pub struct PolicyInput {
    /// Namespaces, pods and policies.
    pub cluster: Cluster,
    /// One warning per skipped object: terminated pods (phase `Succeeded` or `Failed`), then
    /// objects of a kind not in [`kinds`].
    pub warnings: Vec<Warning>,
}

fn invalid(location: &Location, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid {
        location: Box::new(location.clone()),
        field: field.into(),
        reason: reason.into(),
    }
}

fn from_policy_error(location: &Location, err: strata_policy::Error) -> Error {
    match err {
        strata_policy::Error::Invalid { field, reason, .. } => invalid(location, field, reason),
        other => Error::Policy {
            location: Box::new(location.clone()),
            source: other,
        },
    }
}

fn name_of(location: &Location, meta: &meta::ObjectMeta) -> Result<(String, String), Error> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(location, "metadata.name", "missing"))?;
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    Ok((namespace, name))
}

/// Translates a Namespace.
pub fn namespace(location: &Location, ns: &core::Namespace) -> Result<Namespace, Error> {
    let name = ns
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(location, "metadata.name", "missing"))?;
    Ok(Namespace {
        name,
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    })
}

fn protocol(location: &Location, field: &str, value: Option<&String>) -> Result<Protocol, Error> {
    match value {
        None => Ok(Protocol::Tcp),
        Some(s) => s
            .parse()
            .map_err(|reason: String| invalid(location, field, reason)),
    }
}

fn port_number(location: &Location, field: &str, value: i32) -> Result<u16, Error> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(location, field, format!("port {value} is not in 1..=65535")))
}

/// Translates a Pod: labels, container ports, `status.podIPs` (or `status.podIP`),
/// `spec.hostNetwork`.
pub fn pod(location: &Location, pod: &core::Pod) -> Result<Pod, Error> {
    let (namespace, name) = name_of(location, &pod.metadata)?;
    let mut ports = Vec::new();
    let mut host_network = false;
    if let Some(spec) = &pod.spec {
        host_network = spec.host_network.unwrap_or(false);
        for (c, container) in spec.containers.iter().enumerate() {
            for (i, port) in container.ports.iter().flatten().enumerate() {
                let field = format!("spec.containers[{c}].ports[{i}]");
                let number = port_number(
                    location,
                    &format!("{field}.containerPort"),
                    port.container_port,
                )?;
                let protocol = protocol(
                    location,
                    &format!("{field}.protocol"),
                    port.protocol.as_ref(),
                )?;
                if let Some(n) = &port.name
                    && ports
                        .iter()
                        .any(|p: &ContainerPort| p.name.as_ref() == Some(n))
                {
                    return Err(invalid(
                        location,
                        format!("{field}.name"),
                        format!("port name {n:?} used twice in the pod"),
                    ));
                }
                ports.push(ContainerPort {
                    name: port.name.clone(),
                    port: number,
                    protocol,
                });
            }
        }
    }
    let mut ips = Vec::new();
    if let Some(status) = &pod.status {
        match (&status.pod_ips, &status.pod_ip) {
            (Some(list), _) if !list.is_empty() => {
                for (i, ip) in list.iter().enumerate() {
                    let addr: IpAddr = ip.ip.parse().map_err(|_| {
                        invalid(
                            location,
                            format!("status.podIPs[{i}].ip"),
                            format!("invalid address {:?}", ip.ip),
                        )
                    })?;
                    ips.push(addr);
                }
            }
            (_, Some(ip)) if !ip.is_empty() => {
                let addr: IpAddr = ip.parse().map_err(|_| {
                    invalid(location, "status.podIP", format!("invalid address {ip:?}"))
                })?;
                ips.push(addr);
            }
            _ => {}
        }
    }
    Ok(Pod {
        namespace,
        name,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips,
        ports,
        host_network,
    })
}

fn selector(
    location: &Location,
    field: &str,
    s: &meta::LabelSelector,
) -> Result<LabelSelector, Error> {
    let mut out = LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let operator = e.operator.parse().map_err(|reason: String| {
            invalid(
                location,
                format!("{field}.matchExpressions[{i}].operator"),
                reason,
            )
        })?;
        out.match_expressions.push(Requirement {
            key: e.key.clone(),
            operator,
            values: e.values.clone().unwrap_or_default(),
        });
    }
    out.validate(&location.object_name(), field)
        .map_err(|e| from_policy_error(location, e))?;
    Ok(out)
}

fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn peers(
    location: &Location,
    field: &str,
    list: Option<&Vec<net::NetworkPolicyPeer>>,
) -> Result<Vec<Peer>, Error> {
    let mut out = Vec::new();
    for (i, p) in list.into_iter().flatten().enumerate() {
        let field = format!("{field}[{i}]");
        match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
            (Some(block), None, None) => {
                let cidr = block.cidr.parse().map_err(|_| {
                    invalid(
                        location,
                        format!("{field}.ipBlock.cidr"),
                        format!("invalid CIDR {:?}", block.cidr),
                    )
                })?;
                let mut except = Vec::new();
                for (e, text) in block.except.iter().flatten().enumerate() {
                    except.push(text.parse().map_err(|_| {
                        invalid(
                            location,
                            format!("{field}.ipBlock.except[{e}]"),
                            format!("invalid CIDR {text:?}"),
                        )
                    })?);
                }
                out.push(Peer::IpBlock(IpBlock { cidr, except }));
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    location,
                    field,
                    "ipBlock cannot be combined with podSelector or namespaceSelector",
                ));
            }
            (None, None, None) => {
                return Err(invalid(
                    location,
                    field,
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                ));
            }
            (None, ps, nss) => out.push(Peer::Pods {
                pod_selector: ps
                    .as_ref()
                    .map(|s| selector(location, &format!("{field}.podSelector"), s))
                    .transpose()?,
                namespace_selector: nss
                    .as_ref()
                    .map(|s| selector(location, &format!("{field}.namespaceSelector"), s))
                    .transpose()?,
            }),
        }
    }
    Ok(out)
}

fn ports(
    location: &Location,
    field: &str,
    list: Option<&Vec<net::NetworkPolicyPort>>,
) -> Result<Vec<PolicyPort>, Error> {
    let mut out = Vec::new();
    for (i, p) in list.into_iter().flatten().enumerate() {
        let field = format!("{field}[{i}]");
        let protocol = protocol(location, &format!("{field}.protocol"), p.protocol.as_ref())?;
        let port = match &p.port {
            None => None,
            Some(IntOrString::Int(n)) => Some(PortSpec::Number(port_number(
                location,
                &format!("{field}.port"),
                *n,
            )?)),
            Some(IntOrString::String(s)) if is_port_name(s) => Some(PortSpec::Name(s.clone())),
            Some(IntOrString::String(s)) => {
                return Err(invalid(
                    location,
                    format!("{field}.port"),
                    format!("{s:?} is neither a port number nor a port name"),
                ));
            }
        };
        let end_port = p
            .end_port
            .map(|n| port_number(location, &format!("{field}.endPort"), n))
            .transpose()?;
        out.push(PolicyPort {
            protocol,
            port,
            end_port,
        });
    }
    Ok(out)
}

/// Translates a NetworkPolicy and validates it as the API server would.
pub fn network_policy(
    location: &Location,
    np: &net::NetworkPolicy,
) -> Result<NetworkPolicy, Error> {
    let (namespace, name) = name_of(location, &np.metadata)?;
    let spec = np.spec.clone().unwrap_or_default();
    let pod_selector = match &spec.pod_selector {
        Some(s) => selector(location, "spec.podSelector", s)?,
        None => LabelSelector::everything(),
    };
    let policy_types = match &spec.policy_types {
        None => None,
        Some(types) => {
            let mut out = Vec::new();
            for (i, t) in types.iter().enumerate() {
                out.push(match t.as_str() {
                    "Ingress" => Direction::Ingress,
                    "Egress" => Direction::Egress,
                    other => {
                        return Err(invalid(
                            location,
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {other:?} (expected Ingress or Egress)"),
                        ));
                    }
                });
            }
            Some(out)
        }
    };
    let mut ingress = Vec::new();
    for (r, rule) in spec.ingress.iter().flatten().enumerate() {
        ingress.push(Rule {
            peers: peers(
                location,
                &format!("spec.ingress[{r}].from"),
                rule.from.as_ref(),
            )?,
            ports: ports(
                location,
                &format!("spec.ingress[{r}].ports"),
                rule.ports.as_ref(),
            )?,
        });
    }
    let mut egress = Vec::new();
    for (r, rule) in spec.egress.iter().flatten().enumerate() {
        egress.push(Rule {
            peers: peers(location, &format!("spec.egress[{r}].to"), rule.to.as_ref())?,
            ports: ports(
                location,
                &format!("spec.egress[{r}].ports"),
                rule.ports.as_ref(),
            )?,
        });
    }
    let policy = NetworkPolicy {
        namespace,
        name,
        pod_selector,
        ingress,
        egress,
        policy_types,
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
    };
    policy
        .validate()
        .map_err(|e| from_policy_error(location, e))?;
    Ok(policy)
}

/// Builds a cluster from every Namespace, Pod and NetworkPolicy of `manifests`; other kinds
/// are skipped with a warning. Fails on the first invalid object, returning nothing.
pub fn cluster_from_manifests(manifests: &Manifests) -> Result<PolicyInput, Error> {
    let mut cluster = Cluster::new();
    let mut seen: BTreeMap<(String, String, String), Location> = BTreeMap::new();
    let mut check_unique =
        |kind: &str, ns: &str, name: &str, location: &Location| -> Result<(), Error> {
            if let Some(first) = seen.insert(
                (kind.to_string(), ns.to_string(), name.to_string()),
                location.clone(),
            ) {
                return Err(invalid(
                    location,
                    "metadata.name",
                    format!("{kind} {ns}/{name} is also defined at {first}"),
                ));
            }
            Ok(())
        };
    for doc in manifests.decode_all::<core::Namespace>()? {
        let ns = namespace(&doc.location, &doc.object)?;
        check_unique("Namespace", "", &ns.name, &doc.location)?;
        cluster.upsert_namespace(ns);
    }
    let mut warnings = Vec::new();
    for doc in manifests.decode_all::<core::Pod>()? {
        let phase = doc.object.status.as_ref().and_then(|s| s.phase.as_deref());
        if let Some(phase @ ("Succeeded" | "Failed")) = phase {
            // Terminated pods hold no address any more (it may already be reused).
            warnings.push(Warning {
                location: doc.location.clone(),
                message: format!("skipped: the pod has terminated (phase {phase})"),
            });
            continue;
        }
        let p = pod(&doc.location, &doc.object)?;
        check_unique("Pod", &p.namespace, &p.name, &doc.location)?;
        cluster
            .upsert_pod(p)
            .map_err(|e| from_policy_error(&doc.location, e))?;
    }
    for doc in manifests.decode_all::<net::NetworkPolicy>()? {
        let np = network_policy(&doc.location, &doc.object)?;
        check_unique("NetworkPolicy", &np.namespace, &np.name, &doc.location)?;
        cluster
            .upsert_policy(np)
            .map_err(|e| from_policy_error(&doc.location, e))?;
    }
    warnings.extend(manifests.unrecognized(&kinds()));
    Ok(PolicyInput { cluster, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<PolicyInput, Error> {
        let mut m = Manifests::new();
        m.add_str("t.yaml", text)?;
        cluster_from_manifests(&m)
    }

    const GOOD: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: c
    ports:
    - {name: http, containerPort: 8080}
    - {name: dns, containerPort: 53, protocol: UDP}
status:
  podIP: 10.0.0.1
  podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [a]}]}
      podSelector: {}
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
    ports:
    - {port: http}
    - {port: 9000, endPort: 9100, protocol: SCTP}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: shop}
";

    #[test]
    fn translates_all_fields() {
        let input = load(GOOD).unwrap();
        assert_eq!(input.warnings.len(), 1);
        assert_eq!(input.warnings[0].location.kind, "Service");
        let web = input.cluster.pod(&"shop/web".parse().unwrap()).unwrap();
        assert_eq!(web.ips.len(), 2);
        assert_eq!(web.named_port("dns", Protocol::Udp), Some(53));
        assert_eq!(web.named_port("http", Protocol::Tcp), Some(8080));
        let np = input
            .cluster
            .policy(&"shop/allow".parse().unwrap())
            .unwrap();
        assert_eq!(
            np.policy_types,
            Some(vec![Direction::Ingress, Direction::Egress])
        );
        assert_eq!(np.ingress[0].peers.len(), 2);
        assert_eq!(np.ingress[0].ports[1].protocol, Protocol::Sctp);
        assert_eq!(np.ingress[0].ports[1].end_port, Some(9100));
        assert_eq!(
            input
                .cluster
                .namespace_labels("shop")
                .get("team")
                .map(String::as_str),
            Some("a")
        );
    }

    fn error_of(replace: (&str, &str)) -> String {
        assert!(GOOD.contains(replace.0), "{}", replace.0);
        load(&GOOD.replace(replace.0, replace.1))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_document_object_and_field() {
        assert_eq!(
            error_of(("protocol: SCTP", "protocol: ICMP")),
            "t.yaml: document 3 (NetworkPolicy shop/allow): field `spec.ingress[0].ports[1].protocol`: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP)"
        );
        assert_eq!(
            error_of(("cidr: 192.168.0.0/16", "cidr: 192.168.0/16")),
            "t.yaml: document 3 (NetworkPolicy shop/allow): field `spec.ingress[0].from[1].ipBlock.cidr`: invalid CIDR \"192.168.0/16\""
        );
        assert_eq!(
            error_of(("operator: In", "operator: Near")),
            "t.yaml: document 3 (NetworkPolicy shop/allow): field `spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator`: unknown operator \"Near\" (expected In, NotIn, Exists or DoesNotExist)"
        );
        assert!(error_of(("except: [192.168.1.0/24]", "except: [10.0.0.0/8]")).contains("field `spec.ingress[0].from[1].ipBlock.except[0]`: 10.0.0.0/8 is not a strict sub-prefix"));
        assert!(
            error_of(("endPort: 9100", "endPort: 8000"))
                .contains("field `spec.ingress[0].ports[1].endPort`")
        );
        assert!(
            error_of(("podIPs: [{ip: 10.0.0.1}", "podIPs: [{ip: 10.0.0.300}"))
                .contains("(Pod shop/web): field `status.podIPs[0].ip`")
        );
        assert!(
            error_of(("containerPort: 8080", "containerPort: 80800"))
                .contains("field `spec.containers[0].ports[0].containerPort`")
        );
        assert!(
            error_of(("policyTypes: [Ingress, Egress]", "policyTypes: [Sideways]"))
                .contains("field `spec.policyTypes[0]`")
        );
        assert!(
            error_of(("{port: http}", "{port: HTTP!}"))
                .contains("field `spec.ingress[0].ports[0].port`")
        );
        // Type errors from the decoder carry the field path too.
        assert!(
            error_of(("endPort: 9100", "endPort: [1]"))
                .contains("field `spec.ingress[0].ports[1].endPort`")
        );
    }

    #[test]
    fn terminated_pods_are_skipped_with_a_warning() {
        let done = format!(
            "{GOOD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: job, namespace: shop}}\nstatus: {{phase: Succeeded, podIP: 10.0.0.1}}\n"
        );
        let input = load(&done).unwrap();
        assert!(input.cluster.pod(&"shop/job".parse().unwrap()).is_none());
        assert_eq!(input.warnings.len(), 2);
        assert!(
            input.warnings[0]
                .to_string()
                .contains("(Pod shop/job): skipped: the pod has terminated")
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_field_values_never_panic(
            protocol in "[A-Za-z]{0,5}",
            port in "[a-z0-9-]{0,6}|-?[0-9]{1,6}",
            cidr in "[0-9a-f:./]{0,20}",
            op in "[A-Za-z]{0,12}",
        ) {
            let text = GOOD
                .replace("protocol: SCTP", &format!("protocol: '{protocol}'"))
                .replace("{port: http}", &format!("{{port: {port}}}"))
                .replace("cidr: 192.168.0.0/16", &format!("cidr: '{cidr}'"))
                .replace("operator: In", &format!("operator: '{op}'"));
            if let Err(err) = load(&text) {
                proptest::prop_assert!(err.to_string().starts_with("t.yaml: document "), "{}", err);
            }
        }
    }

    #[test]
    fn duplicate_addresses_and_objects_are_rejected() {
        let dup = format!(
            "{GOOD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: other, namespace: shop}}\nstatus: {{podIP: 10.0.0.1}}\n"
        );
        let err = load(&dup).unwrap_err().to_string();
        assert!(
            err.starts_with("t.yaml: document 5 (Pod shop/other): address 10.0.0.1"),
            "{err}"
        );
        let twice =
            format!("{GOOD}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n");
        assert!(
            load(&twice)
                .unwrap_err()
                .to_string()
                .contains("is also defined at t.yaml: document 1")
        );
    }
}
