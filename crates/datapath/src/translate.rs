//! Translation of strata-policy's compiled output into the map ABI.
//!
//! strata-policy compiles, per endpoint and direction, entries keyed by
//! `{identity, protocol, port, port_prefix_len}` for an LPM over `identity|protocol|port` with
//! prefix `32` (any protocol) or `40 + port_prefix_len`. The kernel key prepends
//! `endpoint_id (32 bits) | direction (8 bits)` to the same bit string, so every prefix length
//! grows by 40 and the kernel's two lookups (peer identity, then identity 0; deny wins) are
//! exactly [`strata_policy::lookup`]'s steps 2 to 5.

use std::net::IpAddr;

use strata_policy::{Direction, EndpointPolicy, Verdict};

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
