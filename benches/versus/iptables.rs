//! iptables renderings, as `iptables-restore` and `ipset restore` input.
//!
//! Both renderings accept replies of allowed connections first (`ESTABLISHED,RELATED`, as
//! every policy controller does), then check the source endpoint's egress and the destination
//! endpoint's ingress in the node's `FORWARD` chain:
//!
//! - [`flat`]: two chains, one rule per peer prefix and port (`-s 10.0.0.7/32 -p tcp --dport
//!   80 -j RETURN`), denies before allows, a final `DROP` per isolated endpoint: what simple
//!   policy controllers generate, walked linearly by every packet of a new flow.
//! - [`calico`]: Calico's layout: dispatch chains jumping per interface to a per-endpoint
//!   chain, which jumps to one chain per policy; a policy chain has one rule per rule × peer ×
//!   protocol, peers as ipsets (`hash:ip` for selected pods, `hash:net` with `nomatch`
//!   exceptions for `ipBlock`s, `hash:ip,port` for named ports), ports as `multiport`; an
//!   accepting rule sets a mark and the endpoint chain returns on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};

use strata_policy::Direction;

use super::ir::{Atom, DirectionRules, EndpointRules, PeerMatch, PortMatch, RuleMatch};

/// An ipset: its type and members (`ipset add` arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSet {
    /// `hash:ip`, `hash:net` or `hash:ip,port`.
    pub kind: &'static str,
    /// Members, in order.
    pub members: Vec<String>,
}

/// A chain and its rules (the text after `-A <chain>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Chain name (`FORWARD` is the built-in one).
    pub name: String,
    /// Rules in order.
    pub rules: Vec<String>,
}

/// A rendering of the filter table and the ipsets it uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendering {
    /// ipsets by name.
    pub ipsets: BTreeMap<String, IpSet>,
    /// Chains, `FORWARD` first.
    pub chains: Vec<Chain>,
}

/// The scripts of one incremental update, to run in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// `ipset restore` input run first: new sets, member changes.
    pub ipset_before: String,
    /// `iptables-restore --noflush` input.
    pub iptables: String,
    /// `ipset restore` input run last: sets no longer referenced are destroyed.
    pub ipset_after: String,
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

fn peer_flag(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "-s",
        Direction::Egress => "-d",
    }
}

fn iface_flag(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "-o",
        Direction::Egress => "-i",
    }
}

fn atom_match(d: Direction, a: &Atom) -> String {
    let mut s = String::new();
    if let Some(p) = a.peer {
        let _ = write!(s, " {} {p}", peer_flag(d));
    }
    if let Some(proto) = a.proto {
        let _ = write!(s, " -p {}", proto_name(proto));
        if let Some((lo, hi)) = a.ports {
            if lo == hi {
                let _ = write!(s, " --dport {lo}");
            } else {
                let _ = write!(s, " --dport {lo}:{hi}");
            }
        }
    }
    s
}

const FORWARD_HEAD: &str = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";

/// The flat rendering: `FLAT-EGRESS` then `FLAT-INGRESS`, one rule per atom.
pub fn flat(endpoints: &[EndpointRules]) -> Rendering {
    let mut chains = vec![Chain {
        name: "FORWARD".into(),
        rules: vec![
            FORWARD_HEAD.into(),
            "-j FLAT-EGRESS".into(),
            "-j FLAT-INGRESS".into(),
        ],
    }];
    for (d, name) in [
        (Direction::Egress, "FLAT-EGRESS"),
        (Direction::Ingress, "FLAT-INGRESS"),
    ] {
        let mut rules = Vec::new();
        for ep in endpoints {
            let iface = format!("{} {}", iface_flag(d), ep.endpoint.iface);
            let dr = ep.direction(d);
            for p in &dr.policies {
                for r in &p.deny {
                    for a in r.atoms() {
                        rules.push(format!("{iface}{} -j DROP", atom_match(d, &a)));
                    }
                }
            }
            for p in &dr.policies {
                for r in &p.allow {
                    for a in r.atoms() {
                        rules.push(format!("{iface}{} -j RETURN", atom_match(d, &a)));
                    }
                }
            }
            if dr.isolated() {
                rules.push(format!("{iface} -j DROP"));
            }
        }
        chains.push(Chain {
            name: name.into(),
            rules,
        });
    }
    Rendering {
        ipsets: BTreeMap::new(),
        chains,
    }
}

const MARK: &str = "0x10000/0x10000";

fn hashed(prefix: &str, content: &impl Hash) -> String {
    let mut h = DefaultHasher::new();
    content.hash(&mut h);
    format!("{prefix}{:016x}", h.finish())
}

struct Sets<'a>(&'a mut BTreeMap<String, IpSet>);

impl Sets<'_> {
    /// Adds the set named after `origin` (what chose its members, as Calico names sets
    /// after selectors), so that membership changes keep the name.
    fn add(&mut self, kind: &'static str, origin: &str, members: Vec<String>) -> String {
        let name = hashed("s", &(kind, origin));
        self.0
            .entry(name.clone())
            .or_insert(IpSet { kind, members });
        name
    }

    fn peer(&mut self, p: &PeerMatch) -> Option<String> {
        match p {
            PeerMatch::Pods { addrs, .. } if addrs.is_empty() => None,
            PeerMatch::Pods { selector, addrs } => Some(self.add(
                "hash:ip",
                selector,
                addrs.iter().map(|x| x.to_string()).collect(),
            )),
            PeerMatch::Block { cidr, except } => {
                let mut m = vec![cidr.to_string()];
                m.extend(except.iter().map(|e| format!("{e} nomatch")));
                let origin = m.join(",");
                Some(self.add("hash:net", &origin, m))
            }
        }
    }
}

/// Port matches of a rule, grouped as Calico does: `multiport` chunks of at most 15 ports per
/// protocol, a protocol alone, or a named-port ipset.
fn port_matches(ports: &[PortMatch], dir: Direction, sets: &mut Sets<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut ranges: BTreeMap<u8, Vec<(u16, u16)>> = BTreeMap::new();
    for p in ports {
        match p {
            PortMatch::Range { proto, lo, hi } => {
                ranges.entry(*proto).or_default().push((*lo, *hi))
            }
            PortMatch::Protocol(proto) => out.push(format!(" -p {}", proto_name(*proto))),
            PortMatch::Named {
                proto,
                name,
                members,
            } => {
                if members.is_empty() {
                    continue;
                }
                let set = sets.add(
                    "hash:ip,port",
                    &format!("named {name} {proto}"),
                    members
                        .iter()
                        .map(|(a, n)| format!("{a},{}:{n}", proto_name(*proto)))
                        .collect(),
                );
                // Egress only (ingress named ports are resolved): destination address and port.
                let _ = dir;
                out.push(format!(
                    " -p {} -m set --match-set {set} dst,dst",
                    proto_name(*proto)
                ));
            }
        }
    }
    for (proto, rs) in ranges {
        let mut chunk: Vec<String> = Vec::new();
        let mut weight = 0;
        let flush = |chunk: &mut Vec<String>, out: &mut Vec<String>| {
            if chunk.len() == 1 && !chunk[0].contains(':') {
                out.push(format!(" -p {} --dport {}", proto_name(proto), chunk[0]));
            } else if !chunk.is_empty() {
                out.push(format!(
                    " -p {} -m multiport --dports {}",
                    proto_name(proto),
                    chunk.join(",")
                ));
            }
            chunk.clear();
        };
        for (lo, hi) in rs {
            let w = if lo == hi { 1 } else { 2 };
            if weight + w > 15 {
                flush(&mut chunk, &mut out);
                weight = 0;
            }
            weight += w;
            chunk.push(if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}:{hi}")
            });
        }
        flush(&mut chunk, &mut out);
    }
    out
}

fn rule_lines(r: &RuleMatch, dir: Direction, target: &str, sets: &mut Sets<'_>) -> Vec<String> {
    let side = match dir {
        Direction::Ingress => "src",
        Direction::Egress => "dst",
    };
    let peers: Vec<String> = match &r.peers {
        None => vec![String::new()],
        Some(ps) => ps
            .iter()
            .filter_map(|p| sets.peer(p))
            .map(|s| format!(" -m set --match-set {s} {side}"))
            .collect(),
    };
    let ports: Vec<String> = match &r.ports {
        None => vec![String::new()],
        Some(ps) => port_matches(ps, dir, sets),
    };
    let mut out = Vec::new();
    for p in &peers {
        for q in &ports {
            // `-p` must come before the set match only for readability; iptables accepts
            // either order.
            out.push(format!("{}{p}{q} {target}", "").trim_start().to_string());
        }
    }
    out
}

fn calico_direction(
    ep: &EndpointRules,
    dir: Direction,
    dr: &DirectionRules,
    sets: &mut Sets<'_>,
    policy_chains: &mut Vec<Chain>,
    seen: &mut HashSet<String>,
) -> Chain {
    let (prefix, tag) = match dir {
        Direction::Ingress => ("cali-tw-", "i"),
        Direction::Egress => ("cali-fw-", "e"),
    };
    let mut rules = vec![format!("-j MARK --set-xmark 0x0/{}", "0x10000")];
    let mut add_chain = |kind: &str, body: Vec<String>, rules: &mut Vec<String>| {
        let name = hashed(&format!("cali-p{kind}{tag}"), &body);
        let name = name[..name.len().min(28)].to_string();
        if seen.insert(name.clone()) {
            policy_chains.push(Chain {
                name: name.clone(),
                rules: body,
            });
        }
        rules.push(format!("-j {name}"));
    };
    for p in &dr.policies {
        if p.deny.is_empty() {
            continue;
        }
        let body: Vec<String> = p
            .deny
            .iter()
            .flat_map(|r| rule_lines(r, dir, "-j DROP", sets))
            .collect();
        add_chain("d", body, &mut rules);
    }
    for p in &dr.policies {
        if !p.isolates {
            continue;
        }
        let mut body = Vec::new();
        for r in &p.allow {
            for line in rule_lines(r, dir, &format!("-j MARK --set-xmark {MARK}"), sets) {
                body.push(line);
                body.push(format!("-m mark --mark {MARK} -j RETURN"));
            }
        }
        add_chain("i", body, &mut rules);
        rules.push(format!("-m mark --mark {MARK} -j RETURN"));
    }
    if dr.isolated() {
        rules.push("-j DROP".into());
    }
    Chain {
        name: format!("{prefix}{}", ep.endpoint.iface),
        rules,
    }
}

/// The Calico-style rendering.
pub fn calico(endpoints: &[EndpointRules]) -> Rendering {
    let mut ipsets = BTreeMap::new();
    let mut sets = Sets(&mut ipsets);
    let mut from = Vec::new();
    let mut to = Vec::new();
    let mut endpoint_chains = Vec::new();
    let mut policy_chains = Vec::new();
    let mut seen = HashSet::new();
    for ep in endpoints {
        for dir in [Direction::Egress, Direction::Ingress] {
            let c = calico_direction(
                ep,
                dir,
                ep.direction(dir),
                &mut sets,
                &mut policy_chains,
                &mut seen,
            );
            match dir {
                Direction::Egress => from.push(format!("-i {} -g {}", ep.endpoint.iface, c.name)),
                Direction::Ingress => to.push(format!("-o {} -g {}", ep.endpoint.iface, c.name)),
            }
            endpoint_chains.push(c);
        }
    }
    let mut chains = vec![
        Chain {
            name: "FORWARD".into(),
            rules: vec![
                FORWARD_HEAD.into(),
                "-j cali-from-wl-dispatch".into(),
                "-j cali-to-wl-dispatch".into(),
            ],
        },
        Chain {
            name: "cali-from-wl-dispatch".into(),
            rules: from,
        },
        Chain {
            name: "cali-to-wl-dispatch".into(),
            rules: to,
        },
    ];
    chains.extend(endpoint_chains);
    chains.extend(policy_chains);
    Rendering { ipsets, chains }
}

fn ipset_create(name: &str, set: &IpSet) -> String {
    let max = (set.members.len() * 2).max(65_536);
    format!(
        "create {name} {} family inet hashsize 1024 maxelem {max}\n",
        set.kind
    )
}

impl Rendering {
    /// Number of rules over all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    /// Number of ipset members over all sets.
    pub fn ipset_members(&self) -> usize {
        self.ipsets.values().map(|s| s.members.len()).sum()
    }

    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// `iptables-restore` input replacing the whole filter table.
    pub fn restore_script(&self) -> String {
        let mut s = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        for c in &self.chains[1..] {
            let _ = writeln!(s, ":{} - [0:0]", c.name);
        }
        for c in &self.chains {
            for r in &c.rules {
                let _ = writeln!(s, "-A {} {r}", c.name);
            }
        }
        s.push_str("COMMIT\n");
        s
    }

    /// `ipset restore` input making every set exist with exactly its members (created,
    /// or flushed and refilled): the ipset half of a full sync.
    pub fn ipset_full_script(&self) -> String {
        let mut s = String::new();
        for (name, set) in &self.ipsets {
            s.push_str(&ipset_create(name, set).replacen("create", "create -exist", 1));
            let _ = writeln!(s, "flush {name}");
            for m in &set.members {
                let _ = writeln!(s, "add {name} {m}");
            }
        }
        s
    }

    /// `ipset restore` input destroying the sets of `old` that this rendering does not use.
    pub fn ipset_cleanup_script(&self, old: &Rendering) -> String {
        let mut s = String::new();
        for name in old.ipsets.keys() {
            if !self.ipsets.contains_key(name) {
                let _ = writeln!(s, "destroy {name}");
            }
        }
        s
    }

    /// The incremental update from `old` to `self`: new and changed ipset members, then one
    /// `iptables-restore --noflush` transaction deleting and inserting rules by position in
    /// changed chains (small chains are rewritten), then removal of unused sets.
    pub fn update_from(&self, old: &Rendering) -> Update {
        let mut u = Update::default();
        for (name, set) in &self.ipsets {
            match old.ipsets.get(name) {
                None => {
                    u.ipset_before.push_str(&ipset_create(name, set));
                    for m in &set.members {
                        let _ = writeln!(u.ipset_before, "add {name} {m}");
                    }
                }
                Some(o) => {
                    let now: HashSet<&String> = set.members.iter().collect();
                    let was: HashSet<&String> = o.members.iter().collect();
                    for m in o.members.iter().filter(|m| !now.contains(m)) {
                        let _ = writeln!(u.ipset_before, "del {name} {m}");
                    }
                    for m in set.members.iter().filter(|m| !was.contains(m)) {
                        let _ = writeln!(u.ipset_before, "add {name} {m}");
                    }
                }
            }
        }
        u.ipset_after = self.ipset_cleanup_script(old);
        let olds: HashMap<&str, &Chain> = old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
        let news: HashSet<&str> = self.chains.iter().map(|c| c.name.as_str()).collect();
        let mut s = String::from("*filter\n");
        for c in &self.chains {
            if !olds.contains_key(c.name.as_str()) {
                let _ = writeln!(s, "-N {}", c.name);
            }
        }
        for c in &self.chains {
            match olds.get(c.name.as_str()) {
                None => {
                    for r in &c.rules {
                        let _ = writeln!(s, "-A {} {r}", c.name);
                    }
                }
                Some(o) if o.rules == c.rules => {}
                Some(o) => chain_update(&mut s, o, c),
            }
        }
        for c in &old.chains {
            if !news.contains(c.name.as_str()) {
                let _ = writeln!(s, "-F {}", c.name);
                let _ = writeln!(s, "-X {}", c.name);
            }
        }
        s.push_str("COMMIT\n");
        u.iptables = s;
        u
    }
}

/// Indices (into `seq`) of one longest strictly increasing subsequence.
fn longest_increasing(seq: &[usize]) -> Vec<usize> {
    // tails[k]: index of the smallest tail of an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev = vec![usize::MAX; seq.len()];
    for i in 0..seq.len() {
        let k = tails.partition_point(|&t| seq[t] < seq[i]);
        if k > 0 {
            prev[i] = tails[k - 1];
        }
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut out = Vec::with_capacity(tails.len());
    let mut cur = tails.last().copied().unwrap_or(usize::MAX);
    while cur != usize::MAX {
        out.push(cur);
        cur = prev[cur];
    }
    out.reverse();
    out
}

/// Deletes (by position, last first) the rules of `old` that are not kept, then inserts the
/// rules of `new` that are not kept at their final positions. Kept rules are a longest run of
/// rules common to both in the same order (rules that moved are deleted and inserted again).
/// Short chains and chains with repeated rules are rewritten.
fn chain_update(s: &mut String, old: &Chain, new: &Chain) {
    let rewrite = |s: &mut String| {
        let _ = writeln!(s, "-F {}", new.name);
        for r in &new.rules {
            let _ = writeln!(s, "-A {} {r}", new.name);
        }
    };
    let old_pos: HashMap<&String, usize> =
        old.rules.iter().enumerate().map(|(i, r)| (r, i)).collect();
    let new_set: HashSet<&String> = new.rules.iter().collect();
    if old.rules.len() < 64 || old_pos.len() != old.rules.len() || new_set.len() != new.rules.len()
    {
        return rewrite(s);
    }
    // Old positions of the common rules, in new order; the kept ones are increasing.
    let common: Vec<(usize, usize)> = new
        .rules
        .iter()
        .enumerate()
        .filter_map(|(j, r)| old_pos.get(r).map(|&i| (j, i)))
        .collect();
    let seq: Vec<usize> = common.iter().map(|c| c.1).collect();
    let mut kept_old = vec![false; old.rules.len()];
    let mut kept_new = vec![false; new.rules.len()];
    for k in longest_increasing(&seq) {
        kept_new[common[k].0] = true;
        kept_old[common[k].1] = true;
    }
    for (i, kept) in kept_old.iter().enumerate().rev() {
        if !kept {
            let _ = writeln!(s, "-D {} {}", old.name, i + 1);
        }
    }
    for (j, kept) in kept_new.iter().enumerate() {
        if !kept {
            let _ = writeln!(s, "-I {} {} {}", new.name, j + 1, new.rules[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(rules: &[&str]) -> Chain {
        Chain {
            name: "C".into(),
            rules: rules.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// Replays `-D pos` / `-I pos rule` lines on a vector.
    fn replay(old: &Chain, script: &str) -> Vec<String> {
        let mut v = old.rules.clone();
        for line in script.lines() {
            let w: Vec<&str> = line.splitn(4, ' ').collect();
            match w[0] {
                "-D" => {
                    v.remove(w[2].parse::<usize>().unwrap() - 1);
                }
                "-I" => v.insert(w[2].parse::<usize>().unwrap() - 1, w[3].into()),
                "-F" => v.clear(),
                "-A" => v.push(line.splitn(3, ' ').nth(2).unwrap().into()),
                _ => panic!("{line}"),
            }
        }
        v
    }

    #[test]
    fn positional_updates_give_the_new_chain() {
        let old_rules: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
        let mut new_rules = old_rules.clone();
        new_rules.remove(10);
        new_rules.remove(50);
        new_rules.insert(0, "x0".into());
        new_rules.insert(30, "x1".into());
        new_rules.push("x2".into());
        let old = chain(&old_rules.iter().map(String::as_str).collect::<Vec<_>>());
        let new = chain(&new_rules.iter().map(String::as_str).collect::<Vec<_>>());
        let mut s = String::new();
        chain_update(&mut s, &old, &new);
        assert!(s.contains("-D C 52"), "{s}");
        assert_eq!(replay(&old, &s), new.rules);
        // A rule moved far away is deleted and inserted, not the whole chain rewritten.
        let mut moved = old_rules.clone();
        let r = moved.remove(3);
        moved.insert(90, r);
        let moved = chain(&moved.iter().map(String::as_str).collect::<Vec<_>>());
        let mut s = String::new();
        chain_update(&mut s, &old, &moved);
        assert_eq!(s.lines().count(), 2, "{s}");
        assert_eq!(replay(&old, &s), moved.rules);
        let small = chain(&["a", "b"]);
        let mut s = String::new();
        chain_update(&mut s, &small, &chain(&["b", "a"]));
        assert_eq!(replay(&small, &s), ["b", "a"]);
    }
}
