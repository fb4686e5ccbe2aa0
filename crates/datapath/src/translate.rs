//! Translation of strata-policy's compiled output into the map ABI.
//!
//! strata-policy compiles, per endpoint and direction, entries keyed by
//! `{identity, protocol, port, port_prefix_len}` for an LPM over `identity|protocol|port` with
//! prefix `32` (any protocol) or `40 + port_prefix_len`. The kernel key prepends
//! `endpoint_id (32 bits) | direction (8 bits)` to the same bit string, so every prefix length
//! grows by 40 and the kernel's two lookups (peer identity, then identity 0; deny wins) are
//! exactly [`strata_policy::lookup`]'s steps 2 to 5.

use std::{collections::BTreeMap, net::IpAddr};

use strata_policy::{Compiled, Diff, Direction, EndpointPolicy, Verdict};

use crate::{
    Error,
    abi::{
        DIR_EGRESS, DIR_INGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, Endpoint, IpcacheKey,
        IpcacheValue, PolicyKey, PolicyValue, VERDICT_ALLOW, VERDICT_DENY,
    },
    state::MapState,
};

/// The kernel's direction constant for a policy direction.
pub fn direction(d: Direction) -> u8 {
    match d {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    }
}

/// The kernel's verdict constant.
pub fn verdict(v: Verdict) -> u32 {
    match v {
        Verdict::Allow => VERDICT_ALLOW,
        Verdict::Deny => VERDICT_DENY,
    }
}

/// One endpoint as the datapath needs it.
#[derive(Clone, Copy, Debug)]
pub struct EndpointSpec<'a> {
    /// Interface index of the endpoint's host-side veth.
    pub ifindex: u32,
    /// Endpoint id (unique per node, non-zero).
    pub endpoint_id: u32,
    /// The endpoint's security identity.
    pub identity: u32,
    /// Its compiled policy.
    pub policy: &'a EndpointPolicy,
}

/// Adds the endpoint and its policy entries to `state`. Fails, leaving `state` untouched,
/// when an entry key is not canonical or the endpoint id is 0 or already used.
pub fn add_endpoint(state: &mut MapState, spec: &EndpointSpec<'_>) -> Result<(), Error> {
    if spec.endpoint_id == 0 {
        return Err(Error::InvalidEntry {
            map: "endpoints",
            detail: format!("endpoint on ifindex {} has id 0", spec.ifindex),
        });
    }
    if state
        .endpoints
        .values()
        .any(|e| e.endpoint_id == spec.endpoint_id)
        || state.endpoints.contains_key(&spec.ifindex)
    {
        return Err(Error::InvalidEntry {
            map: "endpoints",
            detail: format!(
                "endpoint id {} or ifindex {} already present",
                spec.endpoint_id, spec.ifindex
            ),
        });
    }
    let mut entries = Vec::new();
    for d in [Direction::Ingress, Direction::Egress] {
        for e in spec.policy.direction(d).entries.iter() {
            if !e.key.is_canonical() {
                return Err(Error::InvalidEntry {
                    map: "policy",
                    detail: format!(
                        "endpoint {} {d}: key {} is not canonical",
                        spec.endpoint_id, e.key
                    ),
                });
            }
            entries.push((
                PolicyKey::entry(
                    spec.endpoint_id,
                    e.key.identity,
                    direction(d),
                    e.key.protocol,
                    e.key.port,
                    e.key.port_prefix_len,
                ),
                PolicyValue {
                    verdict: verdict(e.verdict),
                    rule: 0,
                },
            ));
        }
    }
    let mut flags = 0;
    if spec.policy.ingress.enforced {
        flags |= EP_ENFORCE_INGRESS;
    }
    if spec.policy.egress.enforced {
        flags |= EP_ENFORCE_EGRESS;
    }
    state.endpoints.insert(
        spec.ifindex,
        Endpoint {
            endpoint_id: spec.endpoint_id,
            identity: spec.identity,
            flags,
            reserved: 0,
        },
    );
    state.policy.extend(entries);
    Ok(())
}

/// Adds an ipcache prefix. Fails on a prefix length beyond the address family's.
pub fn add_prefix(
    state: &mut MapState,
    addr: IpAddr,
    prefix_len: u8,
    identity: u32,
) -> Result<(), Error> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(Error::InvalidEntry {
            map: "ipcache",
            detail: format!("{addr}/{prefix_len}: prefix length beyond {max}"),
        });
    }
    state.ipcache.insert(
        IpcacheKey::prefix(addr, prefix_len),
        IpcacheValue { identity, flags: 0 },
    );
    Ok(())
}

/// Where the endpoints of this node live: `namespace/name` → (ifindex of the host-side veth,
/// endpoint id). Endpoints of the compiled state that are not here live on other nodes and
/// are skipped.
pub type Placement = BTreeMap<String, (u32, u32)>;

fn policy_key(endpoint_id: u32, d: Direction, k: &strata_policy::EntryKey) -> PolicyKey {
    PolicyKey::entry(
        endpoint_id,
        k.identity,
        direction(d),
        k.protocol,
        k.port,
        k.port_prefix_len,
    )
}

/// The map contents for a full compiled snapshot: this node's endpoints and the whole ipcache.
pub fn state_from_compiled(compiled: &Compiled, placement: &Placement) -> Result<MapState, Error> {
    let mut state = MapState::default();
    for (name, &(ifindex, endpoint_id)) in placement {
        let ep = compiled
            .endpoints
            .get(name)
            .ok_or_else(|| Error::InvalidEntry {
                map: "endpoints",
                detail: format!("{name} is placed on this node but not compiled"),
            })?;
        add_endpoint(
            &mut state,
            &EndpointSpec {
                ifindex,
                endpoint_id,
                identity: ep.identity.0,
                policy: &ep.policy,
            },
        )?;
    }
    for e in &compiled.ipcache {
        add_prefix(
            &mut state,
            e.prefix.addr(),
            e.prefix.prefix_len(),
            e.identity.0,
        )?;
    }
    Ok(state)
}

/// The map operations for one incremental update of the policy engine (`PolicyEngine::apply`),
/// given the maps' `current` contents: no full rebuild, only what the update changed.
pub fn diff_from_policy(
    diff: &Diff,
    placement: &Placement,
    current: &MapState,
) -> Result<crate::state::MapDiff, Error> {
    let mut out = crate::state::MapDiff::default();
    for e in &diff.ipcache_set {
        let prefix = e.prefix;
        let mut one = MapState::default();
        add_prefix(&mut one, prefix.addr(), prefix.prefix_len(), e.identity.0)?;
        out.ipcache.upsert.extend(one.ipcache);
    }
    for p in &diff.ipcache_delete {
        out.ipcache
            .remove
            .push(IpcacheKey::prefix(p.addr(), p.prefix_len()));
    }
    for ep in &diff.endpoints {
        let Some(&(ifindex, endpoint_id)) = placement.get(&ep.endpoint.to_string()) else {
            continue;
        };
        let mut flags = 0;
        if ep.ingress_enforced {
            flags |= EP_ENFORCE_INGRESS;
        }
        if ep.egress_enforced {
            flags |= EP_ENFORCE_EGRESS;
        }
        out.endpoints.upsert.push((
            ifindex,
            Endpoint {
                endpoint_id,
                identity: ep.identity.0,
                flags,
                reserved: 0,
            },
        ));
        for (d, m) in [
            (Direction::Ingress, &ep.ingress),
            (Direction::Egress, &ep.egress),
        ] {
            for k in &m.delete {
                out.policy.remove.push(policy_key(endpoint_id, d, k));
            }
            for e in &m.add {
                if !e.key.is_canonical() {
                    return Err(Error::InvalidEntry {
                        map: "policy",
                        detail: format!("{} {d}: key {} is not canonical", ep.endpoint, e.key),
                    });
                }
                out.policy.upsert.push((
                    policy_key(endpoint_id, d, &e.key),
                    PolicyValue {
                        verdict: verdict(e.verdict),
                        rule: 0,
                    },
                ));
            }
        }
    }
    for gone in &diff.removed_endpoints {
        let Some(&(ifindex, endpoint_id)) = placement.get(&gone.to_string()) else {
            continue;
        };
        out.endpoints.remove.push(ifindex);
        out.policy.remove.extend(
            current
                .policy
                .keys()
                .filter(|k| k.endpoint_id == endpoint_id)
                .copied(),
        );
    }
    // A key both removed and re-added (e.g. a verdict change) is an upsert only.
    let upserted: std::collections::BTreeSet<PolicyKey> =
        out.policy.upsert.iter().map(|(k, _)| *k).collect();
    out.policy.remove.retain(|k| !upserted.contains(k));
    let upserted: std::collections::BTreeSet<IpcacheKey> =
        out.ipcache.upsert.iter().map(|(k, _)| *k).collect();
    out.ipcache.remove.retain(|k| !upserted.contains(k));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Builder, L4};
    use crate::twin::{Action, Twin};
    use proptest::prelude::*;
    use strata_policy::{DirectionPolicy, EntryKey, Identity, PolicyMap, lookup};

    fn arb_key() -> impl Strategy<Value = EntryKey> {
        (
            prop_oneof![Just(0u32), 256u32..260],
            prop_oneof![Just(0u8), Just(6u8), Just(17u8), Just(132u8)],
            any::<u16>(),
            0u8..=16,
        )
            .prop_map(|(id, proto, port, plen)| {
                if proto == 0 {
                    EntryKey::any_protocol(Identity(id))
                } else {
                    let mask = if plen == 0 {
                        0
                    } else {
                        u16::MAX << (16 - plen)
                    };
                    EntryKey::new(Identity(id), proto, port & mask, plen).expect("canonical")
                }
            })
    }

    fn arb_direction() -> impl Strategy<Value = DirectionPolicy> {
        (
            any::<bool>(),
            proptest::collection::vec((arb_key(), any::<bool>()), 0..12),
        )
            .prop_map(|(enforced, entries)| {
                let mut m = PolicyMap::new();
                for (k, allow) in entries {
                    m.insert(k, if allow { Verdict::Allow } else { Verdict::Deny });
                }
                DirectionPolicy {
                    enforced,
                    entries: m,
                }
            })
    }

    proptest! {
        /// The twin (hence, by the differential test, the kernel) decides as the compiler's
        /// `lookup` for every peer, protocol and port.
        #[test]
        fn twin_equals_the_compilers_lookup(
            ingress in arb_direction(),
            egress in arb_direction(),
            probes in proptest::collection::vec(
                (256u32..261, prop_oneof![Just(6u8), Just(17u8), Just(132u8)], any::<u16>(), any::<bool>()),
                1..24,
            ),
        ) {
            let policy = EndpointPolicy { ingress, egress };
            let mut state = MapState::default();
            add_endpoint(&mut state, &EndpointSpec {
                ifindex: 9, endpoint_id: 3, identity: 300, policy: &policy,
            }).expect("add");
            for id in 256u32..261 {
                let ip = IpAddr::from([10, 1, 0, (id - 250) as u8]);
                add_prefix(&mut state, ip, 32, id).expect("prefix");
            }
            let me: IpAddr = "10.9.9.9".parse().unwrap();
            for (i, (peer, proto, port, ingress_dir)) in probes.into_iter().enumerate() {
                // Fresh twin per probe: no conntrack carry-over between probes.
                let mut twin = Twin::new(&state);
                let peer_ip = IpAddr::from([10, 1, 0, (peer - 250) as u8]);
                let l4 = match proto {
                    6 => L4::Tcp { sport: 40000 + i as u16, dport: port, flags: 2 },
                    17 => L4::Udp { sport: 40000 + i as u16, dport: port },
                    _ => L4::Sctp { sport: 40000 + i as u16, dport: port },
                };
                let (dir, src, dst, d) = if ingress_dir {
                    (DIR_INGRESS, peer_ip, me, Direction::Ingress)
                } else {
                    (DIR_EGRESS, me, peer_ip, Direction::Egress)
                };
                let f = Builder::new(src, dst).l4(l4).build();
                let got = twin.process(0, 9, dir, &f).action;
                let want = lookup(policy.direction(d), Identity(peer), proto, port, false);
                prop_assert_eq!(got == Action::Pass, want == Verdict::Allow,
                    "peer {} proto {} port {} {:?}", peer, proto, port, d);
            }
        }
    }

    fn pod(name: &str, app: &str, ip: &str) -> strata_policy::Pod {
        strata_policy::Pod {
            namespace: "shop".into(),
            name: name.into(),
            labels: strata_policy::Labels::from([("app".to_string(), app.to_string())]),
            ips: vec![ip.parse().expect("address")],
            ports: Vec::new(),
            host_network: false,
        }
    }

    #[test]
    fn incremental_updates_equal_a_full_translation() {
        use strata_policy::{
            Change, Cluster, LabelSelector, Labels, Namespace, NetworkPolicy, Peer, PolicyEngine,
            PolicyPort, PortSpec, Protocol, Rule,
        };
        let mut cluster = Cluster::new();
        cluster.upsert_namespace(Namespace {
            name: "shop".into(),
            labels: Labels::new(),
        });
        for (n, app, ip) in [
            ("a", "web", "10.1.0.1"),
            ("b", "api", "10.1.0.2"),
            ("c", "db", "10.1.0.3"),
        ] {
            cluster.upsert_pod(pod(n, app, ip)).expect("pod");
        }
        cluster
            .upsert_policy(NetworkPolicy {
                namespace: "shop".into(),
                name: "api-from-web".into(),
                pod_selector: LabelSelector::labels([("app", "api")]),
                ingress: vec![Rule {
                    peers: vec![Peer::Pods {
                        pod_selector: Some(LabelSelector::labels([("app", "web")])),
                        namespace_selector: None,
                    }],
                    ports: vec![PolicyPort {
                        protocol: Protocol::Tcp,
                        port: Some(PortSpec::Number(80)),
                        end_port: Some(90),
                    }],
                }],
                ..Default::default()
            })
            .expect("policy");
        let mut engine = PolicyEngine::compile(&cluster);
        let placement: Placement = [
            ("shop/a".to_owned(), (11, 1)),
            ("shop/b".to_owned(), (12, 2)),
            ("shop/c".to_owned(), (13, 3)),
        ]
        .into_iter()
        .collect();
        let mut state = state_from_compiled(&engine.snapshot(), &placement).expect("full");
        // Relabel c into a web pod, then remove a, then drop the policy.
        let changes = [
            Change::UpsertPod(pod("c", "web", "10.1.0.3")),
            Change::RemovePod(strata_policy::ObjectKey::new("shop", "a")),
            Change::RemovePolicy(strata_policy::ObjectKey::new("shop", "api-from-web")),
        ];
        for change in changes {
            let diff = engine.apply(change).expect("apply");
            let md = diff_from_policy(&diff, &placement, &state).expect("translate");
            assert!(!md.is_empty(), "the change reaches the maps");
            md.apply(&mut state);
            let mut still: Placement = placement.clone();
            still.retain(|k, _| engine.snapshot().endpoints.contains_key(k));
            let full = state_from_compiled(&engine.snapshot(), &still).expect("full");
            assert_eq!(state, full);
        }
    }

    #[test]
    fn bad_input_leaves_state_untouched() {
        let policy = EndpointPolicy::default();
        let mut state = MapState::default();
        let spec = EndpointSpec {
            ifindex: 1,
            endpoint_id: 0,
            identity: 5,
            policy: &policy,
        };
        assert!(add_endpoint(&mut state, &spec).is_err());
        assert_eq!(state, MapState::default());
        assert!(add_prefix(&mut state, "10.0.0.0".parse().unwrap(), 33, 7).is_err());
        assert_eq!(state, MapState::default());
    }
}
