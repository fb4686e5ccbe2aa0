//! The loader's typed errors and incremental updates: a full map is refused before anything
//! changes, bad entries are refused, a verifier rejection carries the verifier's log, and an
//! incremental diff leaves the kernel maps equal to a full sync.

mod common;

use std::process::Command;

use strata_datapath::{
    Error,
    abi::{
        DIR_INGRESS, EP_ENFORCE_INGRESS, Endpoint, IpcacheKey, IpcacheValue, POLICY_MAX, PolicyKey,
        PolicyValue, VERDICT_ALLOW,
    },
    loader::{Datapath, LoadOptions},
    state::{MapDiff, MapState},
};

fn base() -> MapState {
    let mut s = MapState::default();
    s.endpoints.insert(
        1,
        Endpoint {
            endpoint_id: 1,
            identity: 500,
            flags: EP_ENFORCE_INGRESS,
            reserved: 0,
        },
    );
    for i in 0..50u32 {
        s.ipcache.insert(
            IpcacheKey::prefix(std::net::IpAddr::from([10, 5, (i >> 8) as u8, i as u8]), 32),
            IpcacheValue {
                identity: 600 + i,
                flags: 0,
            },
        );
        s.policy.insert(
            PolicyKey::entry(1, 600 + i, DIR_INGRESS, 6, 80, 16),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        );
    }
    s
}

#[test]
fn a_full_map_is_refused_and_nothing_changes() {
    if !common::privileged("a_full_map_is_refused_and_nothing_changes") {
        return;
    }
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let s = base();
    dp.sync(&s).expect("sync");
    let mut big = s.clone();
    for i in 0..POLICY_MAX {
        big.policy.insert(
            PolicyKey::entry(2, 1000 + i, DIR_INGRESS, 17, 53, 16),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        );
    }
    match dp.sync(&big) {
        Err(Error::MapFull {
            map: "policy_exact",
            wanted,
            capacity,
        }) => {
            assert_eq!(wanted, s.policy.len() + POLICY_MAX as usize);
            assert_eq!(capacity, POLICY_MAX);
        }
        other => panic!("expected a full policy map, got {other:?}"),
    }
    assert_eq!(dp.read_state().expect("read"), s, "kernel maps untouched");
    assert_eq!(dp.state(), &s);
}

#[test]
fn bad_entries_are_refused_and_nothing_changes() {
    if !common::privileged("bad_entries_are_refused_and_nothing_changes") {
        return;
    }
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let s = base();
    dp.sync(&s).expect("sync");
    let mut bad = s.clone();
    bad.policy.insert(
        PolicyKey {
            prefixlen: 97,
            ..PolicyKey::entry(1, 7, DIR_INGRESS, 6, 1, 16)
        },
        PolicyValue {
            verdict: VERDICT_ALLOW,
            rule: 0,
        },
    );
    bad.ipcache.clear();
    let err = dp.sync(&bad).expect_err("refused");
    assert!(
        matches!(err, Error::InvalidEntry { map: "policy", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("prefix length 97"), "{err}");
    assert_eq!(dp.read_state().expect("read"), s);
}

#[test]
fn an_incremental_relabel_equals_a_full_sync() {
    if !common::privileged("an_incremental_relabel_equals_a_full_sync") {
        return;
    }
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let s = base();
    dp.sync(&s).expect("sync");
    // Relabel: the pod at 10.5.0.7 moves from identity 607 to 900.
    let mut relabelled = s.clone();
    relabelled.ipcache.insert(
        IpcacheKey::prefix("10.5.0.7".parse().unwrap(), 32),
        IpcacheValue {
            identity: 900,
            flags: 0,
        },
    );
    relabelled
        .policy
        .remove(&PolicyKey::entry(1, 607, DIR_INGRESS, 6, 80, 16));
    relabelled.policy.insert(
        PolicyKey::entry(1, 900, DIR_INGRESS, 6, 80, 16),
        PolicyValue {
            verdict: VERDICT_ALLOW,
            rule: 0,
        },
    );
    let diff = MapDiff::between(&s, &relabelled);
    assert_eq!(diff.len(), 3);
    let stats = dp.apply_diff(&diff).expect("apply");
    assert_eq!((stats.upserts, stats.removals), (2, 1));
    assert_eq!(dp.read_state().expect("read"), relabelled);
    assert_eq!(dp.state(), &relabelled);
    // And a sync to the same state has nothing left to do.
    assert_eq!(dp.sync(&relabelled).expect("sync").upserts, 0);
}

#[test]
fn a_verifier_rejection_shows_the_verifier_log() {
    if !common::privileged("a_verifier_rejection_shows_the_verifier_log") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("strata-verifier-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let obj = dir.join("broken.o");
    let bpf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let out = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-DSTRATA_TEST_VERIFIER_REJECT",
        ])
        .arg(format!(
            "-I/usr/include/{}-linux-gnu",
            std::env::consts::ARCH
        ))
        .arg("-I")
        .arg(&bpf)
        .arg("-c")
        .arg(bpf.join("policy.c"))
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("clang");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&obj).expect("object");
    let _ = std::fs::remove_dir_all(&dir);
    match Datapath::load_object(&bytes, &LoadOptions::default()) {
        Err(Error::Verifier { program, log, .. }) => {
            assert_eq!(program, "from_pod");
            // The verifier's own words for the unchecked packet read.
            assert!(
                log.contains("outside of the packet") || log.contains("invalid access to packet"),
                "log: {log}"
            );
            assert!(log.lines().count() > 3, "a real verifier log: {log}");
        }
        other => panic!("expected a verifier rejection, got {other:?}"),
    }
}

#[test]
fn removing_absent_keys_in_a_batch_removes_the_others() {
    if !common::privileged("removing_absent_keys_in_a_batch_removes_the_others") {
        return;
    }
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let s = base();
    dp.sync(&s).expect("sync");
    let present: Vec<PolicyKey> = s.policy.keys().take(3).copied().collect();
    let mut diff = MapDiff::default();
    // Absent keys first, between and last: the batch skips them and removes the rest.
    diff.policy
        .remove
        .push(PolicyKey::entry(1, 4242, DIR_INGRESS, 6, 1, 16));
    diff.policy.remove.push(present[0]);
    diff.policy
        .remove
        .push(PolicyKey::entry(1, 4243, DIR_INGRESS, 6, 1, 16));
    diff.policy.remove.extend(&present[1..]);
    diff.policy
        .remove
        .push(PolicyKey::entry(1, 4244, DIR_INGRESS, 6, 1, 16));
    dp.apply_diff(&diff).expect("apply");
    let mut want = s.clone();
    for k in &present {
        want.policy.remove(k);
    }
    assert_eq!(dp.read_state().expect("read"), want);
}

#[test]
fn an_incremental_diff_that_does_not_fit_is_refused_untouched() {
    if !common::privileged("an_incremental_diff_that_does_not_fit_is_refused_untouched") {
        return;
    }
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let s = base();
    dp.sync(&s).expect("sync");
    let mut diff = MapDiff::default();
    for i in 0..POLICY_MAX {
        diff.policy.upsert.push((
            PolicyKey::entry(3, i, DIR_INGRESS, 17, 53, 16),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        ));
    }
    match dp.apply_diff(&diff) {
        Err(Error::MapFull {
            map: "policy_exact",
            wanted,
            capacity,
        }) => {
            assert_eq!(wanted, s.policy.len() + POLICY_MAX as usize);
            assert_eq!(capacity, POLICY_MAX);
        }
        other => panic!("expected a full policy_exact map, got {other:?}"),
    }
    assert_eq!(dp.read_state().expect("read"), s);
}

#[test]
fn a_policy_change_reaches_established_connections() {
    if !common::privileged("a_policy_change_reaches_established_connections") {
        return;
    }
    use strata_datapath::{
        loader::Hook,
        packet::{Builder, L4},
    };
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let s = base();
    dp.sync(&s).expect("sync");
    // 10.5.0.3 has identity 603, allowed on TCP 80 by the base policy.
    let pkt = Builder::v4("10.5.0.3".parse().unwrap(), "10.9.9.9".parse().unwrap())
        .l4(L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: 0x10,
        })
        .build();
    for _ in 0..3 {
        assert_eq!(dp.test_run(Hook::ToPod, &pkt, 1).expect("run").code, 0);
    }
    let generation = dp.generation();
    let mut revoked = s.clone();
    revoked
        .policy
        .remove(&PolicyKey::entry(1, 603, DIR_INGRESS, 6, 80, 16));
    dp.sync(&revoked).expect("sync");
    assert_ne!(
        dp.generation(),
        generation,
        "a change moves to a new generation"
    );
    assert_eq!(
        dp.test_run(Hook::ToPod, &pkt, 1).expect("run").code,
        2,
        "the established connection's cached verdict is not reused after the change"
    );
    // Nothing changed: the generation stays.
    let g = dp.generation();
    dp.sync(&revoked).expect("sync");
    assert_eq!(dp.generation(), g);
}
