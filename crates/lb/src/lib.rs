//! Service load balancing: frontends, backends, Maglev and NAT entries.
//!
//! Kubernetes services in the shape an eBPF datapath looks up in O(1): a frontend key finds a
//! service, a slot finds a backend, a reverse-NAT id restores the reply. The crate is pure: no
//! I/O, no clock (the caller passes `now` in), no threads.
//!
//! * [`model`]: services, ports, endpoints and their states, as Kubernetes describes them.
//! * [`LoadBalancer`]: applies services and endpoints, keeps [`BackendId`]s and [`RevNatId`]s
//!   stable, and yields [`EntrySet`]s and [`EntryDiff`]s for the datapath.
//! * [`Maglev`] and [`WeightedRandom`], behind the [`Selector`] trait.
//! * [`EntrySet::select`]: the pure twin of the datapath's lookup, and [`Lookup`], the same
//!   verdicts from hash maps in O(1).
//!
//! ```
//! use strata_lb::{
//!     Config, Endpoint, EndpointGroup, Frontend, LoadBalancer, Protocol, Service, ServiceName,
//!     ServicePort, Verdict, flow_hash,
//! };
//!
//! let mut lb = LoadBalancer::new(Config::default());
//! let mut svc = Service::new(ServiceName::new("default", "web"));
//! svc.cluster_ips = vec!["10.96.0.10".parse().unwrap()];
//! svc.ports = vec![ServicePort::new(Protocol::Tcp, 80)];
//! let backends = EndpointGroup {
//!     ports: vec![],
//!     endpoints: ["10.0.1.5", "10.0.2.7"]
//!         .iter()
//!         .map(|a| Endpoint::new(a.parse().unwrap()))
//!         .collect(),
//! };
//! let diff = lb.upsert(svc, &[backends]).unwrap();
//! assert_eq!(diff.backends.upsert.len(), 2);
//!
//! let frontend: Frontend = "10.96.0.10:80/TCP".parse().unwrap();
//! let client = "192.0.2.1:40000".parse().unwrap();
//! match lb.select(&frontend, flow_hash(client, frontend), client.ip()) {
//!     Verdict::Forward { backend, .. } => assert_eq!(backend.port(), 80),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![deny(missing_docs)]

mod balancer;
pub mod entries;
mod error;
mod hash;
mod lookup;
pub mod maglev;
pub mod model;
mod selector;

pub use balancer::{BackendKey, BackendView, Config, FrontendView, LoadBalancer, ServiceView};
pub use entries::{
    AffinityEntry, AffinityKey, AffinityMap, BackendEntry, BackendId, EntryDiff, EntrySet,
    MaglevDiff, MaglevKey, MapDiff, RevNatEntry, RevNatId, ServiceEntry, ServiceState, SlotEntry,
    SlotKey, Verdict,
};
pub use error::{Error, Result};
pub use hash::{flow_hash, hash64};
pub use lookup::Lookup;
pub use maglev::{Maglev, MaglevBackend, SlotChange, TableSize};
pub use model::{
    Algorithm, BackendState, Endpoint, EndpointGroup, EndpointPort, Frontend, FrontendKind,
    Protocol, Service, ServiceName, ServicePort, SessionAffinity, TargetPort, TrafficPolicy,
};
pub use selector::{Selector, WeightedRandom};
