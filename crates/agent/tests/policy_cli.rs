//! `strata policy` end to end: the built binary on manifests written by the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLUSTER: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: demo, labels: {app: a}}
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: b, namespace: demo, labels: {app: b}}
  spec:
    containers:
    - name: web
      ports: [{name: http, containerPort: 80}]
  status: {podIP: 10.0.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: c, namespace: demo, labels: {app: c}}
  status: {podIP: 10.0.0.3}
";

const POLICIES: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: demo}
spec:
  podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-b, namespace: demo}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: http}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored, namespace: demo}
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn setup() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = write(dir.path(), "cluster.yaml", CLUSTER);
    let policies = write(dir.path(), "policies.yaml", POLICIES);
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    (dir, s(cluster), s(policies))
}

#[test]
fn matrix_json_is_exactly_the_contract() {
    let (_dir, cluster, policies) = setup();
    let out = strata(&[
        "policy", "matrix", "-f", &cluster, "-f", &policies, "--probe", "80/TCP", "--probe",
        "81/tcp", "--format", "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("ConfigMap"),
        "{stderr}"
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pods = ["demo/a", "demo/b", "demo/c"];
    let mut expected = Vec::new();
    for port in [80, 81] {
        for from in pods {
            for to in pods {
                let allowed = from == to || (port == 80 && from == "demo/a" && to == "demo/b");
                expected.push(serde_json::json!({
                    "from": from, "to": to, "port": port, "protocol": "TCP", "allowed": allowed
                }));
            }
        }
    }
    assert_eq!(got, serde_json::Value::Array(expected));
}

#[test]
fn matrix_table_and_explain() {
    let (_dir, cluster, policies) = setup();
    let out = strata(&[
        "policy", "matrix", "-f", &cluster, "-f", &policies, "--probe", "80/TCP",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("probe 80/TCP"), "{text}");
    let marks = |row: &str| row.split_whitespace().skip(1).collect::<Vec<_>>().join("");
    assert_eq!(marks(rows[2]), "..X");
    assert_eq!(marks(rows[3]), "X.X");
    assert_eq!(marks(rows[4]), "XX.");

    let out = strata(&[
        "policy",
        "matrix",
        "-f",
        &cluster,
        "-f",
        &policies,
        "--explain",
        "demo/c",
        "demo/b",
        "80/TCP",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("verdict: denied"), "{text}");
    assert!(
        text.contains("isolated by NetworkPolicy demo/a-to-b, NetworkPolicy demo/default-deny"),
        "{text}"
    );
    assert!(text.contains("compiled maps: denied"), "{text}");

    let out = strata(&[
        "policy",
        "matrix",
        "-f",
        &cluster,
        "-f",
        &policies,
        "--explain",
        "demo/a",
        "demo/b",
        "80/TCP",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("allowed by NetworkPolicy demo/a-to-b ingress[0]"),
        "{text}"
    );
}

#[test]
fn compile_json_has_identities_ipcache_and_entries() {
    let (_dir, cluster, policies) = setup();
    let out = strata(&[
        "policy", "compile", "-f", &cluster, "-f", &policies, "--format", "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let endpoints = v["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 3);
    let b = endpoints
        .iter()
        .find(|e| e["endpoint"] == "demo/b")
        .unwrap();
    let a = endpoints
        .iter()
        .find(|e| e["endpoint"] == "demo/a")
        .unwrap();
    assert_eq!(b["ingress"]["enforced"], true);
    assert_eq!(b["egress"]["enforced"], false);
    assert_eq!(
        b["ingress"]["entries"],
        serde_json::json!([{
            "identity": a["identity"], "protocol": 6, "port": 80, "port_prefix_len": 16, "verdict": "allow"
        }])
    );
    let ipcache = v["ipcache"].as_array().unwrap();
    assert!(
        ipcache
            .iter()
            .any(|e| e["prefix"] == "10.0.0.1/32" && e["identity"] == a["identity"])
    );
    assert!(
        ipcache
            .iter()
            .any(|e| e["prefix"] == "0.0.0.0/0" && e["identity"] == 2)
    );
    assert_eq!(v["identities"].as_array().unwrap().len(), 3);
}

#[test]
fn invalid_input_fails_with_a_located_message() {
    let (dir, cluster, _) = setup();
    let bad = write(
        dir.path(),
        "bad.yaml",
        &POLICIES.replace(
            "ports: [{port: http}]",
            "ports: [{port: http, protocol: ICMP}]",
        ),
    );
    let out = strata(&[
        "policy",
        "matrix",
        "-f",
        &cluster,
        "-f",
        bad.to_str().unwrap(),
        "--probe",
        "80/TCP",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: document 2 (NetworkPolicy demo/a-to-b): field `spec.ingress[0].ports[0].protocol`: unknown protocol \"ICMP\""),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = strata(&["policy", "compile", "-f", "/nonexistent/x.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml: cannot read"));

    let out = strata(&["policy", "matrix", "-f", &cluster, "--probe", "80/ICMP"]);
    assert!(!out.status.success());

    let out = strata(&[
        "policy",
        "matrix",
        "-f",
        &cluster,
        "--explain",
        "demo/zz",
        "demo/a",
        "80/TCP",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pod demo/zz is not in the manifests"));
}
