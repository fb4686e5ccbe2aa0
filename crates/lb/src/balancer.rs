//! The load balancer's control plane: services and endpoints in, entry sets and diffs out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entries::{
    AffinityMap, BackendEntry, BackendId, EntryDiff, EntrySet, MapDiff, RevNatEntry, RevNatId,
    ServiceEntry, ServiceState, SlotEntry, SlotKey, Verdict,
};
use crate::error::{Error, Result};
use crate::lookup::Lookup;
use crate::maglev::{Maglev, MaglevBackend, TableSize};
use crate::model::{
    Algorithm, BackendState, EndpointGroup, Frontend, FrontendKind, Protocol, Service, ServiceName,
    SessionAffinity, TargetPort, TrafficPolicy,
};

/// Settings of a [`LoadBalancer`]: who this node is, and the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// This node's name, which decides which backends are local.
    pub node_name: Option<String>,
    /// This node's zone, for topology-aware routing hints.
    pub node_zone: Option<String>,
    /// This node's addresses: every node port listens on each of them.
    pub node_addresses: Vec<IpAddr>,
    /// The Maglev table size.
    pub table_size: TableSize,
    /// The algorithm of services that do not name one.
    pub algorithm: Algorithm,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: None,
            node_zone: None,
            node_addresses: Vec::new(),
            table_size: TableSize::DEFAULT,
            algorithm: Algorithm::Maglev,
        }
    }
}

/// A backend's identity: address, port and protocol. Its Maglev key is derived from it, so
/// tables do not depend on the ids a particular agent handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendKey {
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl BackendKey {
    /// The stable bytes the Maglev permutation of this backend is derived from.
    pub fn maglev_key(&self) -> Vec<u8> {
        let mut k = match self.address {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        k.extend_from_slice(&self.port.to_be_bytes());
        k.push(self.protocol.number());
        k
    }
}

/// What the balancer knows about one backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    /// Its stable id.
    pub id: BackendId,
    /// Address, port and protocol.
    pub key: BackendKey,
    /// The service port it serves (its name).
    pub port_name: String,
    /// Its state.
    pub state: BackendState,
    /// Its weight.
    pub weight: u16,
    /// Its node.
    pub node_name: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
}

/// One frontend of a service as the balancer programmed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendView {
    /// Address, port and protocol.
    pub frontend: Frontend,
    /// How it is reached.
    pub kind: FrontendKind,
    /// The service port it belongs to (its name).
    pub port_name: String,
    /// Its service-map entry.
    pub entry: ServiceEntry,
    /// The backends in its slots, in slot order.
    pub backends: Vec<BackendId>,
}

/// A service as the balancer programmed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// The service's name.
    pub name: ServiceName,
    /// Its frontends.
    pub frontends: Vec<FrontendView>,
    /// Its backends, per service port.
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone)]
struct BackendAttrs {
    state: BackendState,
    weight: u16,
    node_name: Option<String>,
    zone: Option<String>,
    zone_hints: Vec<String>,
}

#[derive(Debug, Clone)]
struct FrontendRecord {
    frontend: Frontend,
    kind: FrontendKind,
    port_index: usize,
}

#[derive(Debug, Clone)]
struct ServiceRecord {
    service: Service,
    frontends: Vec<FrontendRecord>,
    /// Per service port: its backends.
    port_backends: Vec<BTreeMap<BackendKey, BackendAttrs>>,
}

impl ServiceRecord {
    fn backend_keys(&self) -> BTreeSet<BackendKey> {
        self.port_backends
            .iter()
            .flat_map(|m| m.keys().copied())
            .collect()
    }
}

/// Hands out the lowest free identifier.
#[derive(Debug, Clone)]
struct IdPool {
    next: u32,
    max: u32,
    free: BTreeSet<u32>,
}

impl IdPool {
    fn new(max: u32) -> Self {
        Self {
            next: 1,
            max,
            free: BTreeSet::new(),
        }
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        if self.next > self.max {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    fn give_back(&mut self, id: u32) {
        self.free.insert(id);
    }
}

/// Services and their endpoints in; the datapath's entries, their diffs and selections out.
///
/// Identifiers are stable: a backend (address, port, protocol) keeps its [`BackendId`] as long
/// as one service references it, a frontend keeps its [`RevNatId`] as long as it exists. A
/// failed update returns an error and changes nothing.
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    config: Config,
    services: BTreeMap<ServiceName, ServiceRecord>,
    frontend_owner: HashMap<Frontend, ServiceName>,
    rev_nat_ids: HashMap<Frontend, RevNatId>,
    rev_nat_pool: IdPool,
    /// Backend key → (id, number of services referencing it).
    backend_ids: HashMap<BackendKey, (BackendId, usize)>,
    backend_pool: IdPool,
    entries: EntrySet,
    lookup: Lookup,
}

fn invalid(service: &Service, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidService {
        service: service.name.clone(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn validate(service: &Service) -> Result<()> {
    let mut seen_ports = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    for (i, p) in service.ports.iter().enumerate() {
        if p.port == 0 {
            return Err(invalid(
                service,
                format!("ports[{i}].port"),
                "must not be 0",
            ));
        }
        if p.node_port == Some(0) {
            return Err(invalid(
                service,
                format!("ports[{i}].nodePort"),
                "must not be 0",
            ));
        }
        if let Some(TargetPort::Number(0)) = p.target_port {
            return Err(invalid(
                service,
                format!("ports[{i}].targetPort"),
                "must not be 0",
            ));
        }
        if !seen_ports.insert((p.port, p.protocol)) {
            return Err(invalid(
                service,
                format!("ports[{i}]"),
                format!("port {}/{} appears twice", p.port, p.protocol),
            ));
        }
        if service.ports.len() > 1 && p.name.is_empty() {
            return Err(invalid(
                service,
                format!("ports[{i}].name"),
                "must be set when the service has several ports",
            ));
        }
        if !seen_names.insert(p.name.as_str()) {
            return Err(invalid(
                service,
                format!("ports[{i}].name"),
                format!("name {:?} appears twice", p.name),
            ));
        }
    }
    if let SessionAffinity::ClientIp { timeout_secs } = service.session_affinity
        && !(1..=86_400).contains(&timeout_secs)
    {
        return Err(invalid(
            service,
            "sessionAffinityConfig.clientIP.timeoutSeconds",
            format!("{timeout_secs} is outside 1..=86400"),
        ));
    }
    for (field, ips) in [
        ("clusterIPs", &service.cluster_ips),
        ("externalIPs", &service.external_ips),
        ("status.loadBalancer.ingress", &service.load_balancer_ips),
    ] {
        if let Some((i, ip)) = ips
            .iter()
            .enumerate()
            .find(|(_, ip)| ip.is_unspecified() || ip.is_multicast())
        {
            return Err(invalid(
                service,
                format!("{field}[{i}]"),
                format!("{ip} is not a unicast address"),
            ));
        }
    }
    Ok(())
}

/// The backend port of service port `index` in `group`, or `None` when the group does not serve
/// it (EndpointSlice ports carry the service port's name; hand-made groups may instead carry a
/// named target port, or no port at all to take the numeric target port).
fn resolve_port(service: &Service, index: usize, group: &EndpointGroup) -> Option<u16> {
    let sp = &service.ports[index];
    if group.ports.is_empty() {
        return match &sp.target_port {
            None => Some(sp.port),
            Some(TargetPort::Number(n)) => Some(*n),
            Some(TargetPort::Name(_)) => None,
        };
    }
    let by_name = |name: &str| {
        group
            .ports
            .iter()
            .find(|p| p.name == name && p.protocol == sp.protocol)
            .map(|p| p.port)
    };
    by_name(&sp.name).or_else(|| match &sp.target_port {
        Some(TargetPort::Name(n)) => by_name(n),
        _ => None,
    })
}

/// Active backends of non-zero weight; failing that, terminating ones (KEP-1669). The flag says
/// whether the fallback was taken.
fn usable<'a>(
    set: &[(&BackendKey, &'a BackendAttrs)],
) -> (Vec<(BackendKey, &'a BackendAttrs)>, bool) {
    let pick = |state| {
        set.iter()
            .filter(|(_, a)| a.state == state && a.weight > 0)
            .map(|(k, a)| (**k, *a))
            .collect::<Vec<_>>()
    };
    let active = pick(BackendState::Active);
    if active.is_empty() {
        (pick(BackendState::Terminating), true)
    } else {
        (active, false)
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// A frontend's slots: backends (by id, in id order) and weights, plus its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Choice {
    state: ServiceState,
    terminating_fallback: bool,
    /// (id, key, weight), sorted by key.
    backends: Vec<(BackendId, BackendKey, u16)>,
}

impl LoadBalancer {
    /// An empty balancer.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            services: BTreeMap::new(),
            frontend_owner: HashMap::new(),
            rev_nat_ids: HashMap::new(),
            rev_nat_pool: IdPool::new(u32::from(u16::MAX)),
            backend_ids: HashMap::new(),
            backend_pool: IdPool::new(u32::MAX - 1),
            entries: EntrySet::new(),
            lookup: Lookup::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The datapath's entries for everything applied so far.
    pub fn entries(&self) -> &EntrySet {
        &self.entries
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The id of a backend, if some service references it.
    pub fn backend_id(&self, key: &BackendKey) -> Option<BackendId> {
        self.backend_ids.get(key).map(|(id, _)| *id)
    }

    /// The reverse-NAT id of a frontend, if it exists.
    pub fn rev_nat_id(&self, frontend: &Frontend) -> Option<RevNatId> {
        self.rev_nat_ids.get(frontend).copied()
    }

    /// Adds or replaces a service and its endpoints (all its EndpointSlices), and returns the
    /// changes to the datapath's entries.
    ///
    /// Errors: [`Error::InvalidService`], [`Error::FrontendConflict`],
    /// [`Error::IdsExhausted`], [`Error::TooManyBackends`], [`Error::WeightOverflow`]. On error
    /// nothing changes.
    pub fn upsert(&mut self, service: Service, endpoints: &[EndpointGroup]) -> Result<EntryDiff> {
        validate(&service)?;
        let frontends = self.frontends_of(&service)?;
        let port_backends = Self::backends_of(&service, endpoints);
        let record = ServiceRecord {
            service,
            frontends,
            port_backends,
        };
        let name = record.service.name.clone();
        let old_record = self.services.get(&name);
        let old_fronts: Vec<Frontend> = old_record
            .map(|r| r.frontends.iter().map(|f| f.frontend).collect())
            .unwrap_or_default();
        let old_keys = old_record.map(|r| r.backend_keys()).unwrap_or_default();
        let new_keys = record.backend_keys();

        // Identifiers, undone on failure by restoring the pools.
        let pools = (self.backend_pool.clone(), self.rev_nat_pool.clone());
        let mut new_backend_ids: Vec<(BackendKey, BackendId)> = Vec::new();
        let mut new_rev_nat: Vec<(Frontend, RevNatId)> = Vec::new();
        let allocated = (|| -> Result<()> {
            for key in &new_keys {
                if !self.backend_ids.contains_key(key) {
                    let id = self
                        .backend_pool
                        .take()
                        .ok_or(Error::IdsExhausted { kind: "backend" })?;
                    new_backend_ids.push((*key, BackendId(id)));
                }
            }
            for f in &record.frontends {
                if !self.rev_nat_ids.contains_key(&f.frontend) {
                    let id = self.rev_nat_pool.take().ok_or(Error::IdsExhausted {
                        kind: "reverse-NAT",
                    })?;
                    new_rev_nat.push((f.frontend, RevNatId(id as u16)));
                }
            }
            Ok(())
        })();
        if let Err(e) = allocated {
            (self.backend_pool, self.rev_nat_pool) = pools;
            return Err(e);
        }
        let id_of_new: HashMap<BackendKey, BackendId> = new_backend_ids.iter().copied().collect();
        let backend_id = |key: &BackendKey| {
            id_of_new
                .get(key)
                .copied()
                .or_else(|| self.backend_ids.get(key).map(|(id, _)| *id))
        };
        let rev_of_new: HashMap<Frontend, RevNatId> = new_rev_nat.iter().copied().collect();
        let rev_nat_id = |f: &Frontend| {
            rev_of_new
                .get(f)
                .copied()
                .or_else(|| self.rev_nat_ids.get(f).copied())
        };
        let partial = match self.build_entries(&record, &backend_id, &rev_nat_id) {
            Ok(p) => p,
            Err(e) => {
                (self.backend_pool, self.rev_nat_pool) = pools;
                return Err(e);
            }
        };
        let old_partial = self.extract(&old_fronts);
        let mut diff = old_partial.diff(&partial);

        // Backends: refcounts, new entries, changed attributes, and ones nobody uses any more.
        let mut backend_diff = MapDiff::default();
        for (key, id) in &new_backend_ids {
            self.backend_ids.insert(*key, (*id, 0));
        }
        for key in &new_keys {
            let entry = self.backend_entry(&record, key);
            let (id, count) = self.backend_ids.get_mut(key).expect("allocated above");
            if !old_keys.contains(key) {
                *count += 1;
            }
            if self.entries.backends.get(id) != Some(&entry) {
                backend_diff.upsert.push((*id, entry));
            }
        }
        for key in old_keys.difference(&new_keys) {
            if let Some((id, count)) = self.backend_ids.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    backend_diff.remove.push(*id);
                    self.backend_pool.give_back(id.0);
                    self.backend_ids.remove(key);
                }
            }
        }
        diff.backends = backend_diff;

        // Frontends: ownership and reverse-NAT ids.
        for f in &old_fronts {
            self.frontend_owner.remove(f);
        }
        let new_front_set: BTreeSet<Frontend> =
            record.frontends.iter().map(|f| f.frontend).collect();
        for f in &old_fronts {
            if !new_front_set.contains(f)
                && let Some(id) = self.rev_nat_ids.remove(f)
            {
                self.rev_nat_pool.give_back(u32::from(id.0));
            }
        }
        for (f, id) in &new_rev_nat {
            self.rev_nat_ids.insert(*f, *id);
        }
        for f in &record.frontends {
            self.frontend_owner.insert(f.frontend, name.clone());
        }
        self.entries.apply(&diff);
        self.lookup.apply_sharing(&diff, Some(&self.entries));
        self.services.insert(name, record);
        Ok(diff)
    }

    /// Replaces the endpoints of a known service (what an EndpointSlice watcher does) and
    /// returns the changes to the datapath's entries.
    ///
    /// Errors: [`Error::UnknownService`], and those of [`LoadBalancer::upsert`].
    pub fn set_endpoints(
        &mut self,
        name: &ServiceName,
        endpoints: &[EndpointGroup],
    ) -> Result<EntryDiff> {
        let service = self
            .services
            .get(name)
            .ok_or_else(|| Error::UnknownService {
                service: name.clone(),
            })?
            .service
            .clone();
        self.upsert(service, endpoints)
    }

    /// Removes a service and returns the changes to the datapath's entries.
    ///
    /// Errors: [`Error::UnknownService`].
    pub fn remove(&mut self, name: &ServiceName) -> Result<EntryDiff> {
        let Some(record) = self.services.remove(name) else {
            return Err(Error::UnknownService {
                service: name.clone(),
            });
        };
        let fronts: Vec<Frontend> = record.frontends.iter().map(|f| f.frontend).collect();
        let mut diff = self.extract(&fronts).diff(&EntrySet::new());
        diff.backends = MapDiff::default();
        for key in record.backend_keys() {
            if let Some((id, count)) = self.backend_ids.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    diff.backends.remove.push(*id);
                    self.backend_pool.give_back(id.0);
                    self.backend_ids.remove(&key);
                }
            }
        }
        for f in &fronts {
            self.frontend_owner.remove(f);
            if let Some(id) = self.rev_nat_ids.remove(f) {
                self.rev_nat_pool.give_back(u32::from(id.0));
            }
        }
        self.entries.apply(&diff);
        self.lookup.apply_sharing(&diff, Some(&self.entries));
        Ok(diff)
    }

    /// The service names, in order.
    pub fn service_names(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }

    /// A service as programmed: frontends with their entries and slots, backends with ids and
    /// states.
    pub fn service(&self, name: &ServiceName) -> Option<ServiceView> {
        let record = self.services.get(name)?;
        let frontends = record
            .frontends
            .iter()
            .filter_map(|f| {
                let entry = *self.entries.services.get(&f.frontend)?;
                let backends = (1..=entry.backend_count)
                    .filter_map(|slot| {
                        self.entries
                            .slots
                            .get(&SlotKey {
                                rev_nat_id: entry.rev_nat_id,
                                slot,
                            })
                            .map(|s| s.backend_id)
                    })
                    .collect();
                Some(FrontendView {
                    frontend: f.frontend,
                    kind: f.kind,
                    port_name: record.service.ports[f.port_index].name.clone(),
                    entry,
                    backends,
                })
            })
            .collect();
        let mut backends = Vec::new();
        for (i, port) in record.port_backends.iter().enumerate() {
            for (key, attrs) in port {
                if let Some(id) = self.backend_id(key) {
                    backends.push(BackendView {
                        id,
                        key: *key,
                        port_name: record.service.ports[i].name.clone(),
                        state: attrs.state,
                        weight: attrs.weight,
                        node_name: attrs.node_name.clone(),
                        zone: attrs.zone.clone(),
                    });
                }
            }
        }
        Some(ServiceView {
            name: name.clone(),
            frontends,
            backends,
        })
    }

    /// The entries in their O(1) lookup form.
    pub fn lookup(&self) -> &Lookup {
        &self.lookup
    }

    /// The verdict for the first packet of a new flow; see [`EntrySet::select`] (this one
    /// goes through [`Lookup`]).
    pub fn select(&self, frontend: &Frontend, flow_hash: u32, client: IpAddr) -> Verdict {
        self.lookup.select(frontend, flow_hash, client)
    }

    /// The verdict with ClientIP session affinity; see [`EntrySet::select_with_affinity`].
    pub fn select_with_affinity(
        &self,
        frontend: &Frontend,
        flow_hash: u32,
        client: IpAddr,
        affinity: &mut AffinityMap,
        now: Duration,
    ) -> Verdict {
        self.lookup
            .select_with_affinity(frontend, flow_hash, client, affinity, now)
    }

    /// The frontends of a service, checked against each other and against other services.
    fn frontends_of(&self, service: &Service) -> Result<Vec<FrontendRecord>> {
        let mut out: Vec<FrontendRecord> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, p) in service.ports.iter().enumerate() {
            let mut push = |address: IpAddr, port: u16, kind: FrontendKind| {
                let frontend = Frontend::new(address, port, p.protocol);
                if seen.insert(frontend) {
                    out.push(FrontendRecord {
                        frontend,
                        kind,
                        port_index: i,
                    });
                }
            };
            for ip in &service.cluster_ips {
                push(*ip, p.port, FrontendKind::ClusterIp);
            }
            if let Some(np) = p.node_port {
                // Node ports listen on the node addresses of the service's IP families (those of
                // its cluster IPs; every family for a service without one).
                for ip in &self.config.node_addresses {
                    if service.cluster_ips.is_empty()
                        || service.cluster_ips.iter().any(|c| same_family(*c, *ip))
                    {
                        push(*ip, np, FrontendKind::NodePort);
                    }
                }
            }
            for ip in &service.load_balancer_ips {
                push(*ip, p.port, FrontendKind::LoadBalancer);
            }
            for ip in &service.external_ips {
                push(*ip, p.port, FrontendKind::ExternalIp);
            }
        }
        for f in &out {
            if let Some(owner) = self.frontend_owner.get(&f.frontend)
                && *owner != service.name
            {
                return Err(Error::FrontendConflict {
                    service: service.name.clone(),
                    frontend: f.frontend,
                    owner: owner.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The backends of each service port. A backend listed twice keeps its best state.
    fn backends_of(
        service: &Service,
        endpoints: &[EndpointGroup],
    ) -> Vec<BTreeMap<BackendKey, BackendAttrs>> {
        (0..service.ports.len())
            .map(|i| {
                let mut map: BTreeMap<BackendKey, BackendAttrs> = BTreeMap::new();
                for group in endpoints {
                    let Some(port) = resolve_port(service, i, group) else {
                        continue;
                    };
                    for ep in &group.endpoints {
                        for addr in &ep.addresses {
                            let key = BackendKey {
                                address: *addr,
                                port,
                                protocol: service.ports[i].protocol,
                            };
                            let attrs = BackendAttrs {
                                state: ep.state,
                                weight: ep.weight,
                                node_name: ep.node_name.clone(),
                                zone: ep.zone.clone(),
                                zone_hints: ep.zone_hints.clone(),
                            };
                            match map.get(&key) {
                                Some(old) if old.state <= attrs.state => {}
                                _ => {
                                    map.insert(key, attrs);
                                }
                            }
                        }
                    }
                }
                map
            })
            .collect()
    }

    fn backend_entry(&self, record: &ServiceRecord, key: &BackendKey) -> BackendEntry {
        let attrs = record
            .port_backends
            .iter()
            .find_map(|m| m.get(key))
            .expect("key comes from the record");
        BackendEntry {
            address: key.address,
            port: key.port,
            protocol: key.protocol,
            state: attrs.state,
            weight: attrs.weight,
            node_local: self.is_local(attrs),
        }
    }

    fn is_local(&self, attrs: &BackendAttrs) -> bool {
        matches!((&self.config.node_name, &attrs.node_name), (Some(a), Some(b)) if a == b)
    }

    /// The slots of one frontend: Kubernetes' rules in order.
    fn choose(
        &self,
        record: &ServiceRecord,
        f: &FrontendRecord,
        backend_id: &dyn Fn(&BackendKey) -> Option<BackendId>,
    ) -> Choice {
        let svc = &record.service;
        let policy = if f.kind.is_external() {
            svc.external_traffic_policy
        } else {
            svc.internal_traffic_policy
        };
        let family: Vec<(&BackendKey, &BackendAttrs)> = record.port_backends[f.port_index]
            .iter()
            .filter(|(k, _)| same_family(k.address, f.frontend.address))
            .collect();
        let empty = |state| Choice {
            state,
            terminating_fallback: false,
            backends: Vec::new(),
        };
        if usable(&family).0.is_empty() {
            return empty(ServiceState::NoBackends);
        }
        let scoped: Vec<(&BackendKey, &BackendAttrs)> = match policy {
            TrafficPolicy::Cluster => family,
            TrafficPolicy::Local => family
                .into_iter()
                .filter(|(_, a)| self.is_local(a))
                .collect(),
        };
        let (mut chosen, terminating_fallback) = usable(&scoped);
        if chosen.is_empty() {
            return empty(ServiceState::NoLocalBackends);
        }
        // Topology-aware hints: when every chosen backend carries hints and some are meant for
        // this node's zone, keep only those.
        if let Some(zone) = &self.config.node_zone
            && chosen.iter().all(|(_, a)| !a.zone_hints.is_empty())
            && chosen.iter().any(|(_, a)| a.zone_hints.contains(zone))
        {
            chosen.retain(|(_, a)| a.zone_hints.contains(zone));
        }
        let mut backends: Vec<(BackendId, BackendKey, u16)> = chosen
            .into_iter()
            .filter_map(|(k, a)| Some((backend_id(&k)?, k, a.weight)))
            .collect();
        // Slot order follows the backends' keys, not their ids, so the slots (and a weighted
        // random pick) depend only on the backend set, like the Maglev table.
        backends.sort_unstable_by_key(|(_, key, _)| *key);
        Choice {
            state: ServiceState::Ready,
            terminating_fallback,
            backends,
        }
    }

    /// The service, reverse-NAT, slot and Maglev entries of one service (no backend map).
    fn build_entries(
        &self,
        record: &ServiceRecord,
        backend_id: &dyn Fn(&BackendKey) -> Option<BackendId>,
        rev_nat_id: &dyn Fn(&Frontend) -> Option<RevNatId>,
    ) -> Result<EntrySet> {
        let svc = &record.service;
        let algorithm = svc.algorithm.unwrap_or(self.config.algorithm);
        let affinity_timeout_secs = match svc.session_affinity {
            SessionAffinity::None => 0,
            SessionAffinity::ClientIp { timeout_secs } => timeout_secs,
        };
        let mut out = EntrySet::new();
        let mut tables: HashMap<Vec<(BackendId, u16)>, Arc<[BackendId]>> = HashMap::new();
        for f in &record.frontends {
            let rev = rev_nat_id(&f.frontend).expect("allocated before building");
            let choice = self.choose(record, f, backend_id);
            let mut total_weight: u32 = 0;
            for (slot, (id, _, w)) in choice.backends.iter().enumerate() {
                total_weight =
                    total_weight
                        .checked_add(u32::from(*w))
                        .ok_or(Error::WeightOverflow {
                            backends: choice.backends.len(),
                        })?;
                out.slots.insert(
                    SlotKey {
                        rev_nat_id: rev,
                        slot: slot as u32 + 1,
                    },
                    SlotEntry {
                        backend_id: *id,
                        weight_end: total_weight,
                    },
                );
            }
            if algorithm == Algorithm::Maglev && !choice.backends.is_empty() {
                let sig: Vec<(BackendId, u16)> =
                    choice.backends.iter().map(|(id, _, w)| (*id, *w)).collect();
                let table = match tables.get(&sig) {
                    Some(t) => t.clone(),
                    None => {
                        let input: Vec<MaglevBackend<BackendId>> = choice
                            .backends
                            .iter()
                            .map(|(id, k, w)| {
                                MaglevBackend::new(k.maglev_key(), *id, u32::from(*w))
                            })
                            .collect();
                        let t: Arc<[BackendId]> = Maglev::build(self.config.table_size, &input)?
                            .into_slots()
                            .into();
                        tables.insert(sig, t.clone());
                        t
                    }
                };
                out.maglev.insert(rev, table);
            }
            out.rev_nat.insert(
                rev,
                RevNatEntry {
                    address: f.frontend.address,
                    port: f.frontend.port,
                },
            );
            out.services.insert(
                f.frontend,
                ServiceEntry {
                    rev_nat_id: rev,
                    kind: f.kind,
                    algorithm,
                    state: choice.state,
                    backend_count: choice.backends.len() as u32,
                    total_weight,
                    affinity_timeout_secs,
                    terminating_fallback: choice.terminating_fallback,
                },
            );
        }
        Ok(out)
    }

    /// The current service, reverse-NAT, slot and Maglev entries of some frontends.
    fn extract(&self, frontends: &[Frontend]) -> EntrySet {
        let mut out = EntrySet::new();
        for f in frontends {
            let Some(svc) = self.entries.services.get(f) else {
                continue;
            };
            let rev = svc.rev_nat_id;
            out.services.insert(*f, *svc);
            if let Some(r) = self.entries.rev_nat.get(&rev) {
                out.rev_nat.insert(rev, *r);
            }
            if let Some(t) = self.entries.maglev.get(&rev) {
                out.maglev.insert(rev, t.clone());
            }
            let lo = SlotKey {
                rev_nat_id: rev,
                slot: 0,
            };
            let hi = SlotKey {
                rev_nat_id: rev,
                slot: u32::MAX,
            };
            for (k, v) in self.entries.slots.range(lo..=hi) {
                out.slots.insert(*k, *v);
            }
        }
        out
    }
}
