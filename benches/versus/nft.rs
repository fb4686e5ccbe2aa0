//! The nftables rendering, as `nft -f` input (each script is one transaction).
//!
//! One table; its `forward` base chain accepts replies (`ct state established,related`), then
//! dispatches with verdict maps on the input and output interface to one chain per endpoint
//! and direction. An endpoint chain holds its non-exact denies, then a single lookup of the
//! concatenation `address . protocol . port` in the endpoint's verdict map (every exact
//! peer-address-and-port entry, `drop` or `return`), then the non-exact allows, then `drop`
//! when the direction is isolated. The per-packet cost does not grow with the number of exact
//! entries (kube-proxy's nftables mode is built the same way).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use strata_policy::Direction;

use super::ir::{Atom, EndpointRules};

/// A named verdict map keyed by `ipv4_addr . inet_proto . inet_service`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictMap {
    /// Elements `key : verdict`, in order.
    pub elements: Vec<String>,
}

/// A chain and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Rules in order.
    pub rules: Vec<String>,
}

/// A rendering of one nftables table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendering {
    /// The table (family `ip`).
    pub table: String,
    /// Verdict maps by name.
    pub maps: BTreeMap<String, VerdictMap>,
    /// Regular chains.
    pub chains: Vec<Chain>,
    /// Rules of the `forward` base chain.
    pub forward: Vec<String>,
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        1 => "icmp".into(),
        n => n.to_string(),
    }
}

fn atom_rule(field: &str, a: &Atom, verdict: &str) -> String {
    let mut s = String::new();
    if let Some(p) = a.peer {
        let _ = write!(s, "ip {field} {p} ");
    }
    if let Some(proto) = a.proto {
        let _ = write!(s, "meta l4proto {} ", proto_name(proto));
        if let Some((lo, hi)) = a.ports {
            if lo == hi {
                let _ = write!(s, "th dport {lo} ");
            } else {
                let _ = write!(s, "th dport {lo}-{hi} ");
            }
        }
    }
    s.push_str(verdict);
    s
}

/// Renders the endpoints into table `table`.
pub fn render(table: &str, endpoints: &[EndpointRules]) -> Rendering {
    let mut maps = BTreeMap::new();
    let mut chains = Vec::new();
    let mut from = Vec::new();
    let mut to = Vec::new();
    for ep in endpoints {
        for dir in [Direction::Egress, Direction::Ingress] {
            let (name, field) = match dir {
                Direction::Ingress => (format!("tw-{}", ep.endpoint.iface), "saddr"),
                Direction::Egress => (format!("fw-{}", ep.endpoint.iface), "daddr"),
            };
            let dr = ep.direction(dir);
            let mut rules = Vec::new();
            // Exact entries: key → verdict, deny winning over allow.
            let mut exact: BTreeMap<Atom, &str> = BTreeMap::new();
            let mut order: Vec<Atom> = Vec::new();
            for p in &dr.policies {
                for r in &p.deny {
                    for a in r.atoms() {
                        if a.is_exact() {
                            if exact.insert(a, "drop").is_none() {
                                order.push(a);
                            }
                        } else {
                            rules.push(atom_rule(field, &a, "drop"));
                        }
                    }
                }
            }
            let mut allows = Vec::new();
            for p in &dr.policies {
                for r in &p.allow {
                    for a in r.atoms() {
                        if a.is_exact() {
                            if let std::collections::btree_map::Entry::Vacant(e) = exact.entry(a) {
                                e.insert("return");
                                order.push(a);
                            }
                        } else {
                            allows.push(atom_rule(field, &a, "return"));
                        }
                    }
                }
            }
            if !order.is_empty() {
                let elements = order
                    .iter()
                    .map(|a| {
                        let (lo, _) = a.ports.unwrap_or((0, 0));
                        format!(
                            "{} . {} . {lo} : {}",
                            a.peer.map(|p| p.addr().to_string()).unwrap_or_default(),
                            proto_name(a.proto.unwrap_or(0)),
                            exact[a]
                        )
                    })
                    .collect();
                maps.insert(name.clone(), VerdictMap { elements });
                rules.push(format!("ip {field} . meta l4proto . th dport vmap @{name}"));
            }
            rules.extend(allows);
            if dr.isolated() {
                rules.push("drop".into());
            }
            let elem = format!("\"{}\" : jump {name}", ep.endpoint.iface);
            match dir {
                Direction::Egress => from.push(elem),
                Direction::Ingress => to.push(elem),
            }
            chains.push(Chain { name, rules });
        }
    }
    let mut forward = vec!["ct state established,related accept".to_string()];
    if !from.is_empty() {
        forward.push(format!("iifname vmap {{ {} }}", from.join(", ")));
    }
    if !to.is_empty() {
        forward.push(format!("oifname vmap {{ {} }}", to.join(", ")));
    }
    Rendering {
        table: table.into(),
        maps,
        chains,
        forward,
    }
}

const CHUNK: usize = 4096;

/// Operations in an `nft -f` script: one per rule or chain command line, one per element of
/// an element command.
pub fn operations(script: &str) -> usize {
    script
        .lines()
        .map(|l| {
            if l.contains(" element ") {
                l.split_once('{')
                    .map(|(_, els)| {
                        els.trim_end_matches(['}', ' '])
                            .split(", ")
                            .filter(|e| !e.trim().is_empty())
                            .count()
                    })
                    .unwrap_or(0)
            } else {
                1
            }
        })
        .sum()
}

impl Rendering {
    /// Rules over all chains, the base chain included.
    pub fn rule_count(&self) -> usize {
        self.forward.len() + self.chains.iter().map(|c| c.rules.len()).sum::<usize>()
    }

    /// Elements over all verdict maps.
    pub fn element_count(&self) -> usize {
        self.maps.values().map(|m| m.elements.len()).sum()
    }

    fn add_map(&self, s: &mut String, name: &str, m: &VerdictMap) {
        let _ = writeln!(
            s,
            "add map ip {} {name} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}",
            self.table
        );
        self.add_elements(s, name, m.elements.iter());
    }

    fn add_elements<'a>(&self, s: &mut String, name: &str, els: impl Iterator<Item = &'a String>) {
        let els: Vec<&String> = els.collect();
        for chunk in els.chunks(CHUNK) {
            let joined: Vec<&str> = chunk.iter().map(|e| e.as_str()).collect();
            let _ = writeln!(
                s,
                "add element ip {} {name} {{ {} }}",
                self.table,
                joined.join(", ")
            );
        }
    }

    fn forward_chain(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "add chain ip {} forward {{ type filter hook forward priority 0; policy accept; }}",
            self.table
        );
    }

    /// `nft -f` input replacing the whole table in one transaction.
    pub fn full_script(&self) -> String {
        let t = &self.table;
        let mut s = format!("add table ip {t}\ndelete table ip {t}\nadd table ip {t}\n");
        for (name, m) in &self.maps {
            self.add_map(&mut s, name, m);
        }
        for c in &self.chains {
            let _ = writeln!(s, "add chain ip {t} {}", c.name);
        }
        for c in &self.chains {
            for r in &c.rules {
                let _ = writeln!(s, "add rule ip {t} {} {r}", c.name);
            }
        }
        self.forward_chain(&mut s);
        for r in &self.forward {
            let _ = writeln!(s, "add rule ip {t} forward {r}");
        }
        s
    }

    /// `nft -f` input turning `old` into `self` in one transaction: map element changes,
    /// changed chains flushed and refilled, unused chains and maps deleted.
    pub fn update_from(&self, old: &Rendering) -> String {
        let t = &self.table;
        let mut s = String::new();
        for (name, m) in &self.maps {
            match old.maps.get(name) {
                None => self.add_map(&mut s, name, m),
                Some(o) => {
                    // Keys whose verdict changed are deleted and added again.
                    let key = |e: &String| e.rsplit_once(" : ").map(|x| x.0.to_string());
                    let now: HashSet<&String> = m.elements.iter().collect();
                    let was: HashSet<&String> = o.elements.iter().collect();
                    let gone: Vec<String> = o
                        .elements
                        .iter()
                        .filter(|e| !now.contains(e))
                        .filter_map(key)
                        .collect();
                    for chunk in gone.chunks(CHUNK) {
                        let _ =
                            writeln!(s, "delete element ip {t} {name} {{ {} }}", chunk.join(", "));
                    }
                    self.add_elements(&mut s, name, m.elements.iter().filter(|e| !was.contains(e)));
                }
            }
        }
        let olds: HashMap<&str, &Chain> = old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
        for c in &self.chains {
            if !olds.contains_key(c.name.as_str()) {
                let _ = writeln!(s, "add chain ip {t} {}", c.name);
            }
        }
        for c in &self.chains {
            let changed = match olds.get(c.name.as_str()) {
                None => true,
                Some(o) => o.rules != c.rules,
            };
            if changed {
                let _ = writeln!(s, "flush chain ip {t} {}", c.name);
                for r in &c.rules {
                    let _ = writeln!(s, "add rule ip {t} {} {r}", c.name);
                }
            }
        }
        if self.forward != old.forward {
            let _ = writeln!(s, "flush chain ip {t} forward");
            for r in &self.forward {
                let _ = writeln!(s, "add rule ip {t} forward {r}");
            }
        }
        let news: HashSet<&str> = self.chains.iter().map(|c| c.name.as_str()).collect();
        for c in &old.chains {
            if !news.contains(c.name.as_str()) {
                let _ = writeln!(
                    s,
                    "flush chain ip {t} {}\ndelete chain ip {t} {}",
                    c.name, c.name
                );
            }
        }
        for name in old.maps.keys() {
            if !self.maps.contains_key(name) {
                let _ = writeln!(s, "delete map ip {t} {name}");
            }
        }
        s
    }
}
