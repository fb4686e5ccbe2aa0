//! Kubernetes Services and EndpointSlices (`discovery.k8s.io/v1`) translated into
//! [`strata_lb`] inputs, from [`k8s_openapi`] objects or from manifests.
//!
//! What is taken from a Service: its type (an `ExternalName` service has no frontend and is
//! skipped), cluster IPs (`None` for a headless service gives no cluster IP frontend), external
//! IPs, load balancer ingress IPs (`status.loadBalancer.ingress[].ip`, and the deprecated
//! `spec.loadBalancerIP`), ports with protocols, numeric or named target ports and node ports
//! (for `NodePort` and `LoadBalancer` services), `sessionAffinity: ClientIP` with its timeout
//! (10800 s unless set), both traffic policies, and Cilium's `service.cilium.io/lb-algorithm`
//! annotation (`maglev` or `random`).
//!
//! What is taken from an EndpointSlice: the service it belongs to (the
//! `kubernetes.io/service-name` label), its ports, and per endpoint its addresses, conditions,
//! node, zone and zone hints. Conditions become states: `ready` → active; not ready but
//! `serving` and `terminating` → terminating (used only when no active endpoint is left);
//! anything else → quarantined (takes no new flow). Slices of `addressType: FQDN` carry no
//! address the datapath can use and are skipped.
//!
//! ```
//! use strata_k8s::manifest::Manifests;
//! use strata_k8s::service::from_manifests;
//!
//! let mut manifests = Manifests::new();
//! manifests
//!     .add_str(
//!         "web.yaml",
//!         "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
//!          spec: {clusterIP: 10.96.0.10, ports: [{port: 80, targetPort: 8080}]}\n---\n\
//!          apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
//!          metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
//!          addressType: IPv4\nports: [{name: '', port: 8080}]\n\
//!          endpoints: [{addresses: [10.0.1.5]}]\n",
//!     )
//!     .unwrap();
//! let inputs = from_manifests(&manifests).unwrap();
//! assert_eq!(inputs.services.len(), 1);
//! assert_eq!(inputs.services[0].endpoints[0].endpoints.len(), 1);
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::Resource;
use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strata_lb::{
    Algorithm, BackendState, Endpoint, EndpointGroup, EndpointPort, Protocol, Service, ServiceName,
    ServicePort, SessionAffinity, TargetPort, TrafficPolicy,
};

use crate::Error;
use crate::manifest::{Kind, Location, Manifests, Warning};

/// The annotation that chooses a service's selection algorithm (Cilium's name for it).
pub const LB_ALGORITHM_ANNOTATION: &str = "service.cilium.io/lb-algorithm";
/// The label that ties an EndpointSlice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default ClientIP affinity timeout, in seconds.
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10_800;

/// A service with its endpoints, ready for [`strata_lb::LoadBalancer::upsert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    /// Where the Service object comes from.
    pub location: Location,
    /// The service.
    pub service: Service,
    /// Its EndpointSlices, translated.
    pub endpoints: Vec<EndpointGroup>,
}

/// Everything service-related found in a set of manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInputs {
    /// The services, in reading order, each with its slices.
    pub services: Vec<ServiceInput>,
    /// Objects that were read but not used: `ExternalName` services, FQDN slices, slices of
    /// services that are not in the manifests.
    pub warnings: Vec<Warning>,
}

/// An EndpointSlice, translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInput {
    /// The service the slice belongs to.
    pub service: ServiceName,
    /// Its ports and endpoints; `None` for an `FQDN` slice.
    pub group: Option<EndpointGroup>,
}

fn object_location(api_version: &str, kind: &str, meta: &ObjectMeta) -> Location {
    Location {
        file: PathBuf::from("<object>"),
        document: 0,
        item: None,
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    }
}

fn invalid(location: &Location, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid {
        location: Box::new(location.clone()),
        field: field.into(),
        reason: reason.into(),
    }
}

fn parse_ip(location: &Location, field: &str, text: &str) -> Result<IpAddr, Error> {
    text.parse()
        .map_err(|_| invalid(location, field, format!("{text:?} is not an IP address")))
}

fn protocol(location: &Location, field: &str, text: Option<&str>) -> Result<Protocol, Error> {
    match text.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(invalid(
            location,
            field,
            format!("protocol {other:?} is not TCP, UDP or SCTP"),
        )),
    }
}

fn port(location: &Location, field: &str, value: i32) -> Result<u16, Error> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            invalid(
                location,
                field,
                format!("{value} is not a port in 1..=65535"),
            )
        })
}

fn traffic_policy(
    location: &Location,
    field: &str,
    text: Option<&str>,
) -> Result<TrafficPolicy, Error> {
    match text {
        None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(invalid(
            location,
            field,
            format!("{other:?} is not Cluster or Local"),
        )),
    }
}

fn name_of(location: &Location, meta: &ObjectMeta) -> Result<ServiceName, Error> {
    let name = meta
        .name
        .clone()
        .ok_or_else(|| invalid(location, "metadata.name", "missing"))?;
    Ok(ServiceName::new(
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name,
    ))
}

/// Translates a Service object; `Ok(None)` for an `ExternalName` service, which has no
/// frontend. Errors name the object and the field.
pub fn service(svc: &K8sService) -> Result<Option<Service>, Error> {
    let location = object_location(K8sService::API_VERSION, K8sService::KIND, &svc.metadata);
    service_at(&location, svc)
}

/// Like [`service`], with errors located at `location` (a manifest's file and document).
pub fn service_at(location: &Location, svc: &K8sService) -> Result<Option<Service>, Error> {
    let name = name_of(location, &svc.metadata)?;
    let mut out = Service::new(name);
    let Some(spec) = &svc.spec else {
        return Err(invalid(location, "spec", "missing"));
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let with_node_ports = match type_ {
        "ExternalName" => return Ok(None),
        "ClusterIP" => false,
        "NodePort" => true,
        "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
        other => {
            return Err(invalid(
                location,
                "spec.type",
                format!("{other:?} is not ClusterIP, NodePort, LoadBalancer or ExternalName"),
            ));
        }
    };
    let cluster_ips: Vec<(String, &String)> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip))
            .collect(),
        _ => spec
            .cluster_ip
            .iter()
            .map(|ip| ("spec.clusterIP".to_string(), ip))
            .collect(),
    };
    for (field, ip) in cluster_ips {
        if ip.is_empty() || ip == "None" {
            continue;
        }
        out.cluster_ips.push(parse_ip(location, &field, ip)?);
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        out.external_ips
            .push(parse_ip(location, &format!("spec.externalIPs[{i}]"), ip)?);
    }
    if type_ == "LoadBalancer" {
        if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
            out.load_balancer_ips
                .push(parse_ip(location, "spec.loadBalancerIP", ip)?);
        }
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            if let Some(ip) = &ing.ip {
                let ip = parse_ip(
                    location,
                    &format!("status.loadBalancer.ingress[{i}].ip"),
                    ip,
                )?;
                if !out.load_balancer_ips.contains(&ip) {
                    out.load_balancer_ips.push(ip);
                }
            }
        }
    }
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let target_port = match &p.target_port {
            None => None,
            Some(IntOrString::Int(n)) => Some(TargetPort::Number(port(
                location,
                &field("targetPort"),
                *n,
            )?)),
            Some(IntOrString::String(s)) => match s.parse::<i32>() {
                Ok(n) => Some(TargetPort::Number(port(location, &field("targetPort"), n)?)),
                Err(_) if s.is_empty() => {
                    return Err(invalid(location, field("targetPort"), "empty name"));
                }
                Err(_) => Some(TargetPort::Name(s.clone())),
            },
        };
        let node_port = match (with_node_ports, p.node_port) {
            (true, Some(n)) => Some(port(location, &field("nodePort"), n)?),
            _ => None,
        };
        out.ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol: protocol(location, &field("protocol"), p.protocol.as_deref())?,
            port: port(location, &field("port"), p.port)?,
            target_port,
            node_port,
        });
    }
    out.session_affinity = match spec.session_affinity.as_deref() {
        None | Some("None") => SessionAffinity::None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_secs = match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT_SECS,
                Some(t) if (1..=86_400).contains(&t) => t as u32,
                Some(t) => {
                    return Err(invalid(
                        location,
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{t} is outside 1..=86400"),
                    ));
                }
            };
            SessionAffinity::ClientIp { timeout_secs }
        }
        Some(other) => {
            return Err(invalid(
                location,
                "spec.sessionAffinity",
                format!("{other:?} is not None or ClientIP"),
            ));
        }
    };
    out.external_traffic_policy = traffic_policy(
        location,
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    )?;
    out.internal_traffic_policy = traffic_policy(
        location,
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    )?;
    if let Some(a) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_ALGORITHM_ANNOTATION))
    {
        out.algorithm = Some(a.parse::<Algorithm>().map_err(|_| {
            invalid(
                location,
                format!("metadata.annotations[{LB_ALGORITHM_ANNOTATION}]"),
                format!("{a:?} is not maglev or random"),
            )
        })?);
    }
    Ok(Some(out))
}

/// Translates an EndpointSlice. Errors name the object and the field.
pub fn endpoint_slice(slice: &EndpointSlice) -> Result<SliceInput, Error> {
    let location = object_location(
        EndpointSlice::API_VERSION,
        EndpointSlice::KIND,
        &slice.metadata,
    );
    endpoint_slice_at(&location, slice)
}

/// Like [`endpoint_slice`], with errors located at `location`.
pub fn endpoint_slice_at(location: &Location, slice: &EndpointSlice) -> Result<SliceInput, Error> {
    let meta = &slice.metadata;
    let service_name = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .ok_or_else(|| {
            invalid(
                location,
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "missing: the slice names no service",
            )
        })?;
    let service = ServiceName::new(
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        service_name.clone(),
    );
    let want_v4 = match slice.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        "FQDN" => {
            return Ok(SliceInput {
                service,
                group: None,
            });
        }
        other => {
            return Err(invalid(
                location,
                "addressType",
                format!("{other:?} is not IPv4, IPv6 or FQDN"),
            ));
        }
    };
    let mut group = EndpointGroup::default();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let field = |f: &str| format!("ports[{i}].{f}");
        // A port without a number means "all ports"; it cannot be programmed.
        let Some(n) = p.port else { continue };
        group.ports.push(EndpointPort {
            name: p.name.clone().unwrap_or_default(),
            port: port(location, &field("port"), n)?,
            protocol: protocol(location, &field("protocol"), p.protocol.as_deref())?,
        });
    }
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let mut addresses = Vec::with_capacity(ep.addresses.len());
        for (j, a) in ep.addresses.iter().enumerate() {
            let field = format!("endpoints[{i}].addresses[{j}]");
            let ip = parse_ip(location, &field, a)?;
            if ip.is_ipv4() != want_v4 {
                return Err(invalid(
                    location,
                    field,
                    format!("{ip} does not match addressType {}", slice.address_type),
                ));
            }
            addresses.push(ip);
        }
        let c = ep.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        let state = if ready && !terminating {
            BackendState::Active
        } else if serving && terminating {
            BackendState::Terminating
        } else {
            BackendState::Quarantined
        };
        group.endpoints.push(Endpoint {
            addresses,
            state,
            node_name: ep.node_name.clone(),
            zone: ep.zone.clone(),
            zone_hints: ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z.iter().map(|z| z.name.clone()).collect())
                .unwrap_or_default(),
            weight: 1,
        });
    }
    Ok(SliceInput {
        service,
        group: Some(group),
    })
}

/// The kinds this module reads, for [`Manifests::unrecognized`].
pub fn kinds() -> [Kind; 2] {
    [Kind::of::<K8sService>(), Kind::of::<EndpointSlice>()]
}

/// Every Service of the manifests with its EndpointSlices. Fails on the first invalid object,
/// naming it; a slice whose service is not in the manifests becomes a warning.
pub fn from_manifests(manifests: &Manifests) -> Result<ServiceInputs, Error> {
    let mut out = ServiceInputs::default();
    let mut index: BTreeMap<ServiceName, usize> = BTreeMap::new();
    for located in manifests.decode_all::<K8sService>()? {
        match service_at(&located.location, &located.object)? {
            Some(service) => {
                if index.contains_key(&service.name) {
                    return Err(invalid(
                        &located.location,
                        "metadata.name",
                        format!("service {} appears twice", service.name),
                    ));
                }
                index.insert(service.name.clone(), out.services.len());
                out.services.push(ServiceInput {
                    location: located.location,
                    service,
                    endpoints: Vec::new(),
                });
            }
            None => out.warnings.push(Warning {
                location: located.location,
                message: "skipped: an ExternalName service has no frontend".to_string(),
            }),
        }
    }
    for located in manifests.decode_all::<EndpointSlice>()? {
        let slice = endpoint_slice_at(&located.location, &located.object)?;
        match (slice.group, index.get(&slice.service)) {
            (None, _) => out.warnings.push(Warning {
                location: located.location,
                message: "skipped: an FQDN slice has no address to balance to".to_string(),
            }),
            (Some(_), None) => out.warnings.push(Warning {
                location: located.location,
                message: format!("skipped: service {} is not in the manifests", slice.service),
            }),
            (Some(group), Some(&i)) => out.services[i].endpoints.push(group),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {service.cilium.io/lb-algorithm: random}
spec:
  type: LoadBalancer
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  externalIPs: [203.0.113.5]
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  ports:
  - {name: http, port: 80, targetPort: web, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
  - {name: sig, port: 3868, protocol: SCTP}
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.7}, {hostname: lb.example.com}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [10.0.1.1]
  nodeName: node-a
  zone: zone-a
  hints: {forZones: [{name: zone-a}]}
- addresses: [10.0.1.2]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.0.1.3]
  conditions: {ready: false}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: ext, namespace: shop}
  spec: {type: ExternalName, externalName: example.com}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: orphan, namespace: shop, labels: {kubernetes.io/service-name: nope}}
  addressType: IPv4
  endpoints: []
"#;

    fn read(text: &str) -> Result<ServiceInputs, Error> {
        let mut m = Manifests::new();
        m.add_str("test.yaml", text)?;
        from_manifests(&m)
    }

    #[test]
    fn a_full_service_translates() {
        let inputs = read(MANIFEST).unwrap();
        assert_eq!(inputs.services.len(), 1);
        let s = &inputs.services[0].service;
        assert_eq!(s.name, ServiceName::new("shop", "web"));
        assert_eq!(s.cluster_ips.len(), 2);
        assert_eq!(
            s.external_ips,
            vec!["203.0.113.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            s.load_balancer_ips,
            vec!["198.51.100.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.algorithm, Some(Algorithm::Random));
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(
            s.session_affinity,
            SessionAffinity::ClientIp {
                timeout_secs: DEFAULT_AFFINITY_TIMEOUT_SECS
            }
        );
        assert_eq!(s.ports[0].target_port, Some(TargetPort::Name("web".into())));
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(s.ports[1].target_port, Some(TargetPort::Number(5353)));
        assert_eq!(s.ports[2].protocol, Protocol::Sctp);
        assert_eq!(s.ports[2].target_port, None);
        let eps = &inputs.services[0].endpoints;
        assert_eq!(eps.len(), 1);
        let states: Vec<BackendState> = eps[0].endpoints.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                BackendState::Active,
                BackendState::Terminating,
                BackendState::Quarantined
            ]
        );
        assert_eq!(eps[0].endpoints[0].node_name.as_deref(), Some("node-a"));
        assert_eq!(eps[0].endpoints[0].zone_hints, ["zone-a"]);
        assert_eq!(eps[0].ports[0].protocol, Protocol::Tcp);
        // ExternalName and the orphan slice are warnings, not errors.
        assert_eq!(inputs.warnings.len(), 2, "{:?}", inputs.warnings);
        assert!(inputs.warnings[0].to_string().contains("ExternalName"));
        assert!(inputs.warnings[1].to_string().contains("shop/nope"));
    }

    #[test]
    fn errors_name_file_document_object_and_field() {
        let cases = [
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 70000}]}\n",
                "spec.ports[0].port",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, protocol: ICMP}]}\n",
                "spec.ports[0].protocol",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.300}\n",
                "spec.clusterIP",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {externalTrafficPolicy: Nearby}\n",
                "spec.externalTrafficPolicy",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}}\n",
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            ),
            (
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: []\n",
                "metadata.labels[kubernetes.io/service-name]",
            ),
            (
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]\n",
                "endpoints[0].addresses[0]",
            ),
        ];
        for (text, want) in cases {
            let doc = format!("---\n# padding\n---\n{text}");
            let err = read(&doc).unwrap_err();
            match &err {
                Error::Invalid {
                    location, field, ..
                } => {
                    assert_eq!(field, want);
                    assert_eq!(location.document, 1, "{err}");
                }
                other => panic!("{want}: unexpected {other}"),
            }
            let text = err.to_string();
            assert!(
                text.contains("test.yaml") && text.contains("document 2"),
                "{text}"
            );
        }
        // A type error from the decoder is located too.
        let err = read(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: eighty}]}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("spec.ports[0].port"), "{err}");
    }

    #[test]
    fn typed_objects_translate_without_manifests() {
        let mut m = Manifests::new();
        m.add_str("x.yaml", MANIFEST).unwrap();
        let svc = &m.decode_all::<K8sService>().unwrap()[0].object;
        let s = service(svc).unwrap().unwrap();
        assert_eq!(s.ports.len(), 3);
        let slice = &m.decode_all::<EndpointSlice>().unwrap()[0].object;
        let input = endpoint_slice(slice).unwrap();
        assert_eq!(input.service, ServiceName::new("shop", "web"));
        let mut bad = svc.clone();
        bad.spec.as_mut().unwrap().type_ = Some("Weird".into());
        let err = service(&bad).unwrap_err();
        assert!(
            err.to_string().contains("<object>") && err.to_string().contains("spec.type"),
            "{err}"
        );
    }

    #[test]
    fn headless_and_cluster_ip_services() {
        let inputs = read(
            "apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80, nodePort: 30000}]}\n",
        )
        .unwrap();
        let s = &inputs.services[0].service;
        assert_eq!(s.name, ServiceName::new("default", "h"));
        assert!(s.cluster_ips.is_empty());
        // nodePort is ignored on a ClusterIP service.
        assert_eq!(s.ports[0].node_port, None);
    }
}
