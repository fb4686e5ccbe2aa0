//! The generated cluster: N compiled policy entries, the measured flow allowed by the last rule
//! a chain reaches.
//!
//! Namespace `bench`: pod `server` (label `app=server`), pod `client`, and peer pods in groups
//! of at most 10 (labels `group=gNNNNN` and a unique `peer=NNNNNN`, so each pod has its own
//! security identity, as pods of different deployments do). Policy `allow-gNNNNN` selects the
//! server and allows its group on 5 ports × {TCP, UDP} (10 entries per peer). The client is the
//! last peer of the last group and the measured ports (TCP and UDP [`Scenario::port`]) are the
//! last of the list, so in the flat rendering the measured flow's rules are the last two of
//! the server's, and in the Calico-style one its policy chain is the last one. With `P` peers
//! the server's ingress map holds `10 × P` entries: N = 10 … 100,000 gives 1 … 10,000 peers.

use std::net::{IpAddr, Ipv4Addr};

use strata_policy::{
    Change, Cluster, LabelSelector, Labels, Namespace, NetworkPolicy, ObjectKey, Peer, Pod,
    PolicyEngine, PolicyPort, PortSpec, Protocol, Rule,
};

use super::{Error, ir::LocalEndpoint};

/// Namespace of every generated object.
pub const NAMESPACE: &str = "bench";
/// Ports allowed by every policy (TCP and UDP each); the measured one is the last.
pub const PORTS: [u16; 5] = [5000, 5001, 5002, 5003, 5004];
/// Peers per group (per policy).
pub const GROUP: usize = 10;
/// Entries per peer (ports × protocols).
pub const ENTRIES_PER_PEER: usize = PORTS.len() * 2;

/// A generated cluster.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The cluster.
    pub cluster: Cluster,
    /// The client pod (the last peer).
    pub client: ObjectKey,
    /// The server pod.
    pub server: ObjectKey,
    /// The client's address.
    pub client_ip: Ipv4Addr,
    /// The server's address.
    pub server_ip: Ipv4Addr,
    /// Number of peers (the client included).
    pub peers: usize,
    /// Compiled entries (the server's ingress map; nothing else has entries).
    pub entries: usize,
}

/// Address of peer `i` (10.64.0.0/10 onwards; the client is the last peer).
pub fn peer_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i as u32)
}

fn group_name(g: usize) -> String {
    format!("g{g:05}")
}

fn peer_pod(i: usize, group: usize) -> Pod {
    Pod {
        namespace: NAMESPACE.into(),
        name: format!("peer-{i:06}"),
        labels: Labels::from([
            ("group".to_string(), group_name(group)),
            ("peer".to_string(), format!("{i:06}")),
        ]),
        ips: vec![IpAddr::V4(peer_ip(i))],
        ports: vec![],
        host_network: false,
    }
}

/// The rule ports: TCP and UDP of each of [`PORTS`], in that order.
pub fn rule_ports() -> Vec<PolicyPort> {
    PORTS
        .iter()
        .flat_map(|&p| {
            [Protocol::Tcp, Protocol::Udp].map(|protocol| PolicyPort {
                protocol,
                port: Some(PortSpec::Number(p)),
                end_port: None,
            })
        })
        .collect()
}

/// The policy allowing group `g` to the server on `ports`.
pub fn group_policy(name: &str, g: usize, ports: Vec<PolicyPort>) -> NetworkPolicy {
    NetworkPolicy {
        namespace: NAMESPACE.into(),
        name: name.into(),
        pod_selector: LabelSelector::labels([("app", "server")]),
        ingress: vec![Rule {
            peers: vec![Peer::Pods {
                pod_selector: Some(LabelSelector::labels([("group", group_name(g).as_str())])),
                namespace_selector: None,
            }],
            ports,
        }],
        ..Default::default()
    }
}

impl Scenario {
    /// The cluster for about `n` entries (rounded to a multiple of 10, at least 10).
    pub fn generate(n: usize) -> Result<Scenario, Error> {
        let peers = (n / ENTRIES_PER_PEER).max(1);
        let groups = peers.div_ceil(GROUP);
        let mut cluster = Cluster::new();
        cluster.upsert_namespace(Namespace {
            name: NAMESPACE.into(),
            labels: Labels::new(),
        });
        let server_ip = Ipv4Addr::new(10, 63, 255, 254);
        cluster.upsert_pod(Pod {
            namespace: NAMESPACE.into(),
            name: "server".into(),
            labels: Labels::from([("app".to_string(), "server".to_string())]),
            ips: vec![IpAddr::V4(server_ip)],
            ports: vec![],
            host_network: false,
        })?;
        for i in 0..peers {
            let mut pod = peer_pod(i, i / GROUP);
            if i + 1 == peers {
                pod.name = "client".into();
            }
            cluster.upsert_pod(pod)?;
        }
        for g in 0..groups {
            cluster.upsert_policy(group_policy(
                &format!("allow-{}", group_name(g)),
                g,
                rule_ports(),
            ))?;
        }
        let engine = PolicyEngine::compile(&cluster);
        let server = ObjectKey::new(NAMESPACE, "server");
        let entries = engine
            .endpoint(&server)
            .map(|(_, p)| p.ingress.entries.len() + p.egress.entries.len())
            .unwrap_or(0);
        Ok(Scenario {
            cluster,
            client: ObjectKey::new(NAMESPACE, "client"),
            server,
            client_ip: peer_ip(peers - 1),
            server_ip,
            peers,
            entries,
        })
    }

    /// The measured port (TCP and UDP).
    pub fn port(&self) -> u16 {
        PORTS[PORTS.len() - 1]
    }

    /// The two local endpoints, client first, with these host-side interfaces.
    pub fn locals(&self, client_if: &str, server_if: &str) -> Vec<LocalEndpoint> {
        vec![
            LocalEndpoint {
                pod: self.client.clone(),
                iface: client_if.into(),
            },
            LocalEndpoint {
                pod: self.server.clone(),
                iface: server_if.into(),
            },
        ]
    }

    /// The first update measured: peer 0 relabelled out of its group (into a group no policy
    /// selects), so its entries, rules, set membership or map elements go away. With one peer,
    /// that peer is the client.
    pub fn relabel(&self) -> Change {
        let mut pod = self.peer(0);
        pod.labels.insert("group".into(), "none".into());
        Change::UpsertPod(pod)
    }

    /// The change undoing [`Scenario::relabel`].
    pub fn relabel_back(&self) -> Change {
        Change::UpsertPod(self.peer(0))
    }

    fn peer(&self, i: usize) -> Pod {
        let mut pod = peer_pod(i, i / GROUP);
        if i + 1 == self.peers {
            pod.name = "client".into();
        }
        pod
    }

    /// The second update measured: a new policy allowing group 0 on TCP port 6000.
    pub fn added_policy(&self) -> Change {
        Change::UpsertPolicy(group_policy(
            "allow-extra",
            0,
            vec![PolicyPort {
                protocol: Protocol::Tcp,
                port: Some(PortSpec::Number(6000)),
                end_port: None,
            }],
        ))
    }

    /// Applies a change to the scenario's cluster (what the renderers re-render from).
    pub fn apply(&mut self, change: &Change) -> Result<(), Error> {
        match change {
            Change::UpsertPod(p) => {
                self.cluster.upsert_pod(p.clone())?;
            }
            Change::UpsertPolicy(p) => {
                self.cluster.upsert_policy(p.clone())?;
            }
            Change::RemovePolicy(k) => {
                self.cluster.remove_policy(k)?;
            }
            other => {
                return Err(Error::Rig(format!("change {other:?} is not generated")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versus::{iptables, ir, nft};

    #[test]
    fn entries_and_the_last_rule() {
        for n in [10, 100, 1000] {
            let s = Scenario::generate(n).unwrap();
            assert_eq!(s.entries, n);
            let rules = ir::lower(&s.cluster, &s.locals("lxc0", "lxc1")).unwrap();
            let flat = iptables::flat(&rules);
            let ingress = &flat.chain("FLAT-INGRESS").unwrap().rules;
            // The server's allows, then its isolation drop; the client's UDP and TCP rules on
            // the measured port come last.
            assert_eq!(ingress.len(), n + 1);
            let c = s.client_ip;
            assert_eq!(
                ingress[n - 1],
                format!("-o lxc1 -s {c}/32 -p udp --dport 5004 -j RETURN")
            );
            assert_eq!(
                ingress[n - 2],
                format!("-o lxc1 -s {c}/32 -p tcp --dport 5004 -j RETURN")
            );
            assert_eq!(ingress[n], "-o lxc1 -j DROP");
            let calico = iptables::calico(&rules);
            let tw = &calico.chain("cali-tw-lxc1").unwrap().rules;
            // Mark reset, (jump, return-on-mark) per policy, final drop.
            assert_eq!(tw.len(), 2 + 2 * n.div_ceil(100));
            let table = nft::render("t", &rules);
            assert_eq!(table.element_count(), n);
            // The lowered rules decide as the oracle for the measured flow and a denied one.
            assert!(ir::decide(&rules[1].ingress, c, 17, 5004));
            assert!(!ir::decide(&rules[1].ingress, c, 17, 5005));
            assert!(!ir::decide(&rules[1].ingress, s.server_ip, 6, 5004));
        }
    }
}
