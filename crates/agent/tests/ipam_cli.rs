//! `strata ipam` driven as a user would: separate processes sharing one state file.

use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = strata(args);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn carve_prints_the_documented_json() {
    let out = strata(&[
        "ipam",
        "carve",
        "--cluster-cidr",
        "10.0.0.0/16",
        "--cluster-cidr",
        "fd00::/104",
        "--node-mask",
        "24",
        "--node-mask-v6",
        "120",
        "--nodes",
        "n1,n2",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"nodes":{"n1":["10.0.0.0/24","fd00::/120"],"n2":["10.0.1.0/24","fd00::100/120"]}}"#
    );
    let v = ok_json(&[
        "ipam",
        "carve",
        "--cluster-cidr",
        "10.8.0.0/22",
        "--node-mask",
        "24",
        "--node-count",
        "4",
    ]);
    assert_eq!(v["nodes"]["node-3"][0], "10.8.3.0/24");
}

#[test]
fn carve_errors_name_the_values() {
    let out = strata(&[
        "ipam",
        "carve",
        "--cluster-cidr",
        "10.0.0.0/23",
        "--node-mask",
        "24",
        "--node-count",
        "3",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("10.0.0.0/23") && err.contains("/24"), "{err}");
    let out = strata(&[
        "ipam",
        "carve",
        "--cluster-cidr",
        "10.0.0.0/16",
        "--node-mask",
        "12",
        "--nodes",
        "a",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/12") && err.contains("10.0.0.0/16"), "{err}");
}

#[test]
fn allocations_survive_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node.redb");
    let state = state.to_str().unwrap();
    let node = |cmd: &str, owner: &str, extra: &[&str]| {
        let mut args = vec![
            "ipam",
            cmd,
            "--state",
            state,
            "--pool",
            "10.1.0.0/24",
            "--pool",
            "fd01::/120",
            "--reservation-pool",
            "10.96.0.0/24",
            "--owner",
            owner,
        ];
        args.extend_from_slice(extra);
        strata(&args)
    };
    let a = ok_json(&[
        "ipam",
        "alloc",
        "--state",
        state,
        "--pool",
        "10.1.0.0/24",
        "--pool",
        "fd01::/120",
        "--owner",
        "default/a",
    ]);
    assert_eq!(a["addrs"], serde_json::json!(["10.1.0.1", "fd01::1"]));
    // The same owner again, in a new process: a duplicate.
    let dup = node("alloc", "default/a", &[]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("default/a already holds"));
    // A StatefulSet pod with a fixed address, released and allocated again: same address.
    let r = ok_json(&[
        "ipam",
        "reserve",
        "--state",
        state,
        "--pool",
        "10.96.0.0/24",
        "--owner",
        "db/pg/0",
    ]);
    let first = node("alloc", "db/pg-0", &["--fixed", "db/pg/0"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(node("release", "db/pg-0", &[]).status.success());
    let again: serde_json::Value =
        serde_json::from_slice(&node("alloc", "db/pg-0", &["--fixed", "db/pg/0"]).stdout).unwrap();
    assert_eq!(again["addrs"], r["addrs"]);
    let list = ok_json(&[
        "ipam",
        "list",
        "--state",
        state,
        "--pool",
        "10.1.0.0/24",
        "--pool",
        "fd01::/120",
        "--reservation-pool",
        "10.96.0.0/24",
    ]);
    let owners: Vec<&str> = list["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["db/pg-0", "default/a"]);
    assert_eq!(list["reservations"][0]["bound"]["pod"], "db/pg-0");
    // A bad address: typed error naming it, nothing stored.
    let bad = node("alloc", "default/b", &["--ip", "10.2.0.9"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("10.2.0.9"));
    let after = ok_json(&[
        "ipam",
        "list",
        "--state",
        state,
        "--pool",
        "10.1.0.0/24",
        "--pool",
        "fd01::/120",
    ]);
    assert_eq!(after["allocations"].as_array().unwrap().len(), 2);
}
