//! A process holding the durable store is killed (SIGKILL) at arbitrary points while it
//! allocates and releases; after each crash the store must hold every acknowledged operation,
//! and no address may have two owners.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use strata_ipam::{AllocatorConfig, Ipam, Owner, Quarantine, RedbStore};

const CHILD_ENV: &str = "STRATA_IPAM_CRASH_CHILD";

fn config() -> AllocatorConfig {
    AllocatorConfig {
        pools: vec![
            "10.0.0.0/22".parse().unwrap(),
            "fd00::/118".parse().unwrap(),
        ],
        excluded: vec!["10.0.0.1".parse().unwrap()],
        quarantine: Quarantine::Releases(8),
    }
}

/// The child: allocate and release in a bounded loop, acknowledging each durable operation on
/// stdout.
fn child(path: &Path, start: u64) {
    let mut ipam = Ipam::open(config(), RedbStore::open(path).unwrap()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in start..start + 100_000 {
        let owner = Owner::new(&format!("ns/pod-{i}")).unwrap();
        let a = ipam.allocate(SystemTime::UNIX_EPOCH, &owner).unwrap();
        let addrs: Vec<String> = a.addrs.iter().map(ToString::to_string).collect();
        writeln!(out, "alloc {owner} {}", addrs.join(",")).unwrap();
        out.flush().unwrap();
        if i % 3 == 0 {
            let victim = Owner::new(&format!("ns/pod-{}", i / 2)).unwrap();
            if ipam.allocator().get(&victim).is_some() {
                ipam.release(SystemTime::UNIX_EPOCH, &victim).unwrap();
                writeln!(out, "release {victim}").unwrap();
                out.flush().unwrap();
            }
        }
    }
}

#[test]
fn crash_child() {
    // Runs only as the child of `killed_process_loses_nothing_acknowledged`.
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let start = std::env::var("STRATA_IPAM_CRASH_START")
            .unwrap()
            .parse()
            .unwrap();
        child(Path::new(&path), start);
    }
}

#[test]
fn killed_process_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipam.redb");
    let mut acked: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut next = 0u64;
    for (round, kill_after) in [37usize, 101, 13, 250].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env("STRATA_IPAM_CRASH_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        let read = |line: String, acked: &mut BTreeMap<String, Vec<IpAddr>>, next: &mut u64| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("alloc"), Some(owner), Some(addrs)) => {
                    let addrs = addrs.split(',').map(|a| a.parse().unwrap()).collect();
                    acked.insert(owner.to_owned(), addrs);
                    *next = owner.trim_start_matches("ns/pod-").parse::<u64>().unwrap() + 1;
                    true
                }
                (Some("release"), Some(owner), None) => {
                    acked.remove(owner);
                    false
                }
                _ => false,
            }
        };
        while seen < kill_after && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            seen += usize::from(read(line, &mut acked, &mut next));
        }
        assert_eq!(
            seen, kill_after,
            "round {round}: the child stopped acknowledging"
        );
        child.kill().unwrap(); // SIGKILL, mid-flight
        child.wait().unwrap();
        // Whatever the child acknowledged before it died is still in the pipe: read it all.
        for line in lines.map_while(Result::ok) {
            read(line, &mut acked, &mut next);
        }

        let ipam = Ipam::open(config(), RedbStore::open(&path).unwrap()).unwrap();
        ipam.allocator().audit().unwrap();
        // The operation in flight at the kill (an allocation or a release) may or may not have
        // landed; every other acknowledged operation must be there, and nothing else.
        let stored: BTreeMap<String, Vec<IpAddr>> = ipam
            .allocator()
            .dump()
            .into_iter()
            .map(|a| (a.owner.to_string(), a.addrs))
            .collect();
        let mut differences = Vec::new();
        for (owner, addrs) in &acked {
            match stored.get(owner) {
                Some(got) => assert_eq!(got, addrs, "round {round}: {owner} changed address"),
                None => differences.push(format!("acknowledged {owner} missing")),
            }
        }
        for owner in stored.keys().filter(|o| !acked.contains_key(*o)) {
            differences.push(format!("unacknowledged {owner} present"));
        }
        assert!(differences.len() <= 1, "round {round}: {differences:?}");
        acked = stored;
        next = acked
            .keys()
            .map(|o| o.trim_start_matches("ns/pod-").parse::<u64>().unwrap() + 1)
            .max()
            .unwrap_or(0)
            .max(next);
    }
}
