//! `strata lab probe` observes, over real traffic through the eBPF programs, exactly the JSON
//! `strata policy matrix` compiles; `strata monitor` decodes a running datapath's events.

use std::{path::PathBuf, process::Command};

fn privileged(test: &str) -> bool {
    if strata_datapath::loader::is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (CI=true makes a missing privilege a failure)");
    }
    eprintln!("{test}: skipped: needs root for network namespaces and eBPF");
    false
}

fn cluster_args() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster");
    let mut args = Vec::new();
    for f in ["namespaces.yaml", "pods.yaml", "policies.yaml"] {
        args.push("-f".to_owned());
        args.push(dir.join(f).display().to_string());
    }
    for p in [
        "80/TCP",
        "8080/TCP",
        "5432/TCP",
        "9090/TCP",
        "53/UDP",
        "9000/SCTP",
    ] {
        args.push("--probe".to_owned());
        args.push(p.to_owned());
    }
    args.extend(["--format".to_owned(), "json".to_owned()]);
    args
}

#[test]
fn lab_probe_prints_exactly_the_compiled_matrix() {
    if !privileged("lab_probe_prints_exactly_the_compiled_matrix") {
        return;
    }
    let strata = env!("CARGO_BIN_EXE_strata");
    let want = Command::new(strata)
        .args(["policy", "matrix"])
        .args(cluster_args())
        .output()
        .expect("strata policy matrix");
    assert!(
        want.status.success(),
        "{}",
        String::from_utf8_lossy(&want.stderr)
    );
    let got = Command::new(strata)
        .args(["lab", "probe", "--timeout-ms", "1500"])
        .args(cluster_args())
        .output()
        .expect("strata lab probe");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&got.stderr));
    let want: serde_json::Value = serde_json::from_slice(&want.stdout).expect("matrix JSON");
    let got: serde_json::Value = serde_json::from_slice(&got.stdout).expect("lab JSON");
    assert_eq!(got.as_array().map(Vec::len), Some(6 * 6 * 6));
    assert_eq!(
        got, want,
        "observed reachability differs from the compiled matrix"
    );
}

#[test]
fn lab_compare_reports_that_every_observation_matches() {
    if !privileged("lab_compare_reports_that_every_observation_matches") {
        return;
    }
    // No directory: the embedded copy of examples/cluster.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["lab", "compare"])
        .output()
        .expect("strata lab compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("observations match the compiled policy"),
        "{stdout}"
    );
}

#[test]
fn monitor_decodes_events_of_a_pinned_datapath() {
    if !privileged("monitor_decodes_events_of_a_pinned_datapath") {
        return;
    }
    use strata_datapath::{
        abi::{EP_ENFORCE_INGRESS, Endpoint},
        loader::{Datapath, Hook, LoadOptions, remove_pins},
        packet::{Builder, L4},
        state::MapState,
    };
    struct Pins(PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = remove_pins(&self.0);
        }
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/strata/monitor-test-{}",
        std::process::id()
    )));
    let mut dp = Datapath::load(&LoadOptions {
        pin_dir: Some(pins.0.clone()),
        allow_sample: 0,
    })
    .expect("load");
    let mut state = MapState::default();
    // TEST_RUN runs on the loopback device, ifindex 1.
    state.endpoints.insert(
        1,
        Endpoint {
            endpoint_id: 7,
            identity: 300,
            flags: EP_ENFORCE_INGRESS,
            reserved: 0,
        },
    );
    dp.sync(&state).expect("sync");
    let syn = Builder::v4("10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap())
        .l4(L4::Tcp {
            sport: 41000,
            dport: 443,
            flags: 0x02,
        })
        .build();
    assert_eq!(dp.test_run(Hook::ToPod, &syn, 1).expect("run").code, 2);
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["monitor", "--pin-dir"])
        .arg(&pins.0)
        .args([
            "--count",
            "1",
            "--duration",
            "5",
            "--format",
            "json",
            "--counters",
        ])
        .output()
        .expect("strata monitor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: serde_json::Value =
        serde_json::from_str(stdout.lines().next().expect("an event")).expect("JSON");
    assert_eq!(first["reason"], "drop-policy-default");
    assert_eq!(first["src"], "10.9.0.1");
    assert_eq!(first["dport"], 443);
    assert_eq!(first["endpoint"], 7);
    assert_eq!(first["dst_identity"], 300);
    assert!(
        stdout.contains("\"counter\":\"drop-policy-default\""),
        "{stdout}"
    );
}

#[test]
fn monitor_without_a_running_datapath_names_the_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "monitor",
            "--pin-dir",
            "/nonexistent/strata-pins",
            "--count",
            "1",
        ])
        .output()
        .expect("strata monitor");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/strata-pins"), "{err}");
}
