//! Kubernetes NetworkPolicy semantics, security identities and compiled policy map entries.
//!
//! This crate is pure (no I/O, no clock): it takes namespaces, pods and `networking.k8s.io/v1`
//! NetworkPolicies ([`model`]) and produces what an eBPF datapath needs to enforce them with
//! a constant number of map lookups per packet:
//!
//! - security identities ([`identity`]): numbers shared by all pods with equal labels, namespace
//!   labels and named ports; reserved identities (`host`, `world`, …); CIDR identities for
//!   addresses outside the cluster. Every identity also carries the set of policy `ipBlock`s its
//!   addresses fall in, which is how an `ipBlock` that contains pod addresses is enforced exactly;
//! - an ipcache ([`ipcache`]): prefix to identity, longest prefix match;
//! - per endpoint and direction, a map of entries `{peer identity, protocol, port, port prefix
//!   length} → allow | deny` ([`map`]), and the exact lookup order the datapath performs
//!   ([`lookup`]; the algorithm and the key's bit layout are documented in [`map`]);
//! - incremental updates ([`PolicyEngine::apply`]) that return the [`Diff`] to apply, equal to
//!   a recompilation from scratch.
//!
//! [`oracle::evaluate`] applies the NetworkPolicy rules directly to one flow and explains its
//! verdict; the property tests of this crate check that the compiled maps agree with it on
//! random clusters and policies. The decisions on what the API leaves open (ipBlocks over pod
//! addresses, named ports, host-network and pending pods) are listed in [`oracle`].
//!
//! ```
//! use strata_policy::*;
//!
//! let mut cluster = Cluster::new();
//! cluster.upsert_namespace(Namespace { name: "shop".into(), labels: Labels::new() });
//! let pod = |name: &str, app: &str, ip: &str| Pod {
//!     namespace: "shop".into(),
//!     name: name.into(),
//!     labels: Labels::from([("app".to_string(), app.to_string())]),
//!     ips: vec![ip.parse().unwrap()],
//!     ports: vec![],
//!     host_network: false,
//! };
//! cluster.upsert_pod(pod("web", "web", "10.0.0.1")).unwrap();
//! cluster.upsert_pod(pod("db", "db", "10.0.0.2")).unwrap();
//! // Only web may reach db, on TCP 5432.
//! cluster
//!     .upsert_policy(NetworkPolicy {
//!         namespace: "shop".into(),
//!         name: "db".into(),
//!         pod_selector: LabelSelector::labels([("app", "db")]),
//!         ingress: vec![Rule {
//!             peers: vec![Peer::Pods {
//!                 pod_selector: Some(LabelSelector::labels([("app", "web")])),
//!                 namespace_selector: None,
//!             }],
//!             ports: vec![PolicyPort {
//!                 protocol: Protocol::Tcp,
//!                 port: Some(PortSpec::Number(5432)),
//!                 end_port: None,
//!             }],
//!         }],
//!         ..Default::default()
//!     })
//!     .unwrap();
//! let engine = PolicyEngine::compile(&cluster);
//! let web = ObjectKey::new("shop", "web");
//! let db = ObjectKey::new("shop", "db");
//! let to_db = |port| Flow::between(&cluster, &web, &db, Protocol::Tcp, port).unwrap();
//! assert_eq!(engine.verdict(&to_db(5432)).unwrap(), Verdict::Allow);
//! assert_eq!(engine.verdict(&to_db(22)).unwrap(), Verdict::Deny);
//! // The oracle agrees, and says why.
//! let why = evaluate(&cluster, &to_db(22)).unwrap();
//! assert!(!why.allowed);
//! assert!(why.ingress.to_string().contains("isolated by NetworkPolicy shop/db"));
//! // What the datapath gets for db: one ingress entry for web's identity.
//! let (_, policy) = engine.endpoint(&db).unwrap();
//! assert!(policy.ingress.enforced);
//! assert_eq!(policy.ingress.entries.len(), 1);
//! ```
#![deny(missing_docs)]

mod compile;
mod error;
pub mod identity;
pub mod ipcache;
pub mod labels;
pub mod map;
pub mod model;
pub mod oracle;

pub use compile::{Change, Compiled, CompiledEndpoint, Diff, EndpointDiff, PolicyEngine};
pub use error::Error;
pub use identity::{AllocatorState, IdentityAllocator, IdentityLabels, Subject};
pub use ipcache::{IpCache, IpCacheEntry};
pub use labels::{LabelSelector, Labels, Operator, Requirement};
pub use map::{
    Direction, DirectionPolicy, EndpointPolicy, Entry, EntryKey, Identity, MapDiff, PolicyMap,
    Verdict, lookup, port_range_prefixes,
};
pub use model::{
    Cluster, ContainerPort, IpBlock, NAMESPACE_NAME_LABEL, Namespace, NetworkPolicy, ObjectKey,
    Peer, Pod, PolicyPort, PortSpec, Protocol, Rule,
};
pub use oracle::{Explanation, Flow, FlowEnd, RuleRef, Side, evaluate};
