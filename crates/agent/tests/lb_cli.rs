//! `strata lb` driven as a user would: real processes, real manifest files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = strata(args);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: [10.0.1.5], nodeName: node-a}
- {addresses: [10.0.2.7], nodeName: node-b}
- {addresses: [10.0.2.8], nodeName: node-b, conditions: {ready: false, serving: true, terminating: true}}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{port: 443}]}
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn maglev_prints_the_documented_json() {
    let out = ok_stdout(&[
        "lb",
        "maglev",
        "--backend",
        "a",
        "--backend",
        "b=2",
        "--backend",
        "c",
        "--table-size",
        "7",
        "--format",
        "json",
    ]);
    let text = out.trim();
    assert!(
        text.starts_with(r#"{"table_size":7,"table":["#),
        "key order: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let table: Vec<&str> = v["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(table.len(), 7);
    let counts = v["counts"].as_object().unwrap();
    assert_eq!(counts.len(), 3);
    for (name, n) in counts {
        assert_eq!(
            table.iter().filter(|s| **s == name.as_str()).count() as u64,
            n.as_u64().unwrap()
        );
    }
    assert!(text.ends_with(&format!(
        r#""counts":{{"a":{},"b":{},"c":{}}}}}"#,
        counts["a"], counts["b"], counts["c"]
    )));
}

#[test]
fn maglev_default_size_balances_and_ignores_flag_order() {
    let a = ok_stdout(&[
        "lb",
        "maglev",
        "--backend",
        "x",
        "--backend",
        "y",
        "--backend",
        "z",
    ]);
    let b = ok_stdout(&[
        "lb",
        "maglev",
        "--backend",
        "z",
        "--backend",
        "x",
        "--backend",
        "y",
    ]);
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["table_size"], 16381);
    assert_eq!(v["table"].as_array().unwrap().len(), 16381);
    for n in v["counts"].as_object().unwrap().values() {
        let n = n.as_u64().unwrap();
        assert!(n == 5460 || n == 5461, "{n}");
    }
    let t = ok_stdout(&[
        "lb",
        "maglev",
        "--backend",
        "x=3",
        "--backend",
        "y",
        "--format",
        "table",
    ]);
    assert!(t.contains("M = 16381") && t.contains("75.0"), "{t}");
}

#[test]
fn maglev_rejects_bad_sizes_and_weights() {
    for size in ["100", "16384", "131072", "262139"] {
        let out = strata(&["lb", "maglev", "--backend", "a", "--table-size", size]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(size) && err.contains("prime"), "{err}");
    }
    let out = strata(&["lb", "maglev", "--backend", "a=heavy"]);
    assert!(!out.status.success());
    let out = strata(&["lb", "maglev", "--backend", "a", "--backend", "a"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("twice"));
    let out = strata(&[
        "lb",
        "maglev",
        "--backend",
        "a",
        "--backend",
        "b",
        "--table-size",
        "131071",
    ]);
    assert!(out.status.success());
}

#[test]
fn services_show_frontends_backends_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "cluster.yaml", CLUSTER);
    let f = f.to_str().unwrap();
    let out = ok_stdout(&[
        "lb",
        "services",
        "-f",
        f,
        "--node",
        "node-a",
        "--node-address",
        "192.168.1.10",
        "--table-size",
        "251",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    let web = services
        .iter()
        .find(|s| s["name"]["name"] == "web")
        .unwrap();
    let frontends = web["frontends"].as_array().unwrap();
    let find = |f: &str| {
        frontends
            .iter()
            .find(|x| {
                let fe = &x["frontend"];
                format!(
                    "{}:{}/{}",
                    fe["address"].as_str().unwrap(),
                    fe["port"],
                    fe["protocol"].as_str().unwrap()
                ) == f
            })
            .unwrap_or_else(|| panic!("no frontend {f}"))
    };
    // ClusterIP follows internalTrafficPolicy (Cluster): both active backends.
    assert_eq!(find("10.96.0.10:80/TCP")["entry"]["backend_count"], 2);
    // The node port follows externalTrafficPolicy: Local: only node-a's backend.
    let np = find("192.168.1.10:30080/TCP");
    assert_eq!(np["kind"], "NodePort");
    assert_eq!(np["entry"]["backend_count"], 1);
    // No IPv6 endpoint: visible state, not a silent drop.
    assert_eq!(find("fd00:96::10:80/TCP")["entry"]["state"], "no-backends");
    let backends = web["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 6);
    assert!(backends.iter().any(|b| b["state"] == "terminating"));
    assert!(backends.iter().all(|b| b["id"].as_u64().unwrap() >= 1));
    let entries = &v["entries"];
    assert_eq!(entries["services"].as_array().unwrap().len(), 6);
    assert_eq!(entries["backends"].as_array().unwrap().len(), 6);
    assert_eq!(entries["rev_nat"].as_array().unwrap().len(), 6);
    let maglev = entries["maglev"].as_array().unwrap();
    assert_eq!(maglev.len(), 3);
    assert!(
        maglev
            .iter()
            .all(|t| t["value"].as_array().unwrap().len() == 251)
    );

    let table = ok_stdout(&[
        "lb",
        "services",
        "-f",
        f,
        "--format",
        "table",
        "--table-size",
        "251",
    ]);
    assert!(
        table.contains("service shop/web") && table.contains("no-backends"),
        "{table}"
    );
    assert!(
        table.contains("10.0.2.8:8080/TCP") && table.contains("terminating"),
        "{table}"
    );
}

#[test]
fn select_chooses_like_the_datapath() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "cluster.yaml", CLUSTER);
    let f = f.to_str().unwrap();
    let pick = |frontend: &str, client: &str, extra: &[&str]| {
        let mut args = vec![
            "lb",
            "select",
            "-f",
            f,
            "--frontend",
            frontend,
            "--client",
            client,
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = strata(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    };
    let mut seen = std::collections::BTreeSet::new();
    for port in 1000..1040 {
        let client = format!("192.0.2.1:{port}");
        let (ok, v) = pick("10.96.0.10:80/TCP", &client, &[]);
        assert!(ok);
        assert_eq!(v["result"]["verdict"], "forward");
        assert_eq!(v["service"], "shop/web");
        let backend = v["result"]["backend"].as_str().unwrap().to_string();
        // Deterministic: the same flow gets the same backend.
        assert_eq!(
            pick("10.96.0.10:80/TCP", &client, &[]).1["result"]["backend"],
            backend.as_str()
        );
        seen.insert(backend);
    }
    // Both active backends take flows; the terminating one does not.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["10.0.1.5:8080", "10.0.2.7:8080"]
    );
    // UDP with a numeric target port.
    let (ok, v) = pick("10.96.0.10:53/UDP", "192.0.2.1:999", &[]);
    assert!(ok);
    assert!(v["result"]["backend"].as_str().unwrap().ends_with(":5353"));
    // Node port with externalTrafficPolicy: Local on node-a: only the local backend.
    let node = ["--node", "node-a", "--node-address", "192.168.1.10"];
    for port in 2000..2010 {
        let (ok, v) = pick(
            "192.168.1.10:30080/TCP",
            &format!("198.51.100.1:{port}"),
            &node,
        );
        assert!(ok);
        assert_eq!(v["result"]["backend"], "10.0.1.5:8080");
    }
    // On a node without a local backend: drop (exit 1).
    let (ok, v) = pick(
        "192.168.1.10:30080/TCP",
        "198.51.100.1:2000",
        &["--node", "node-c", "--node-address", "192.168.1.10"],
    );
    assert!(!ok);
    assert_eq!(v["result"]["verdict"], "drop");
    // No backends at all: unreachable.
    let (ok, v) = pick("10.96.0.20:443/TCP", "192.0.2.1:1", &[]);
    assert!(!ok);
    assert_eq!(v["result"]["verdict"], "unreachable");
    // Not a frontend.
    let (ok, v) = pick("10.96.0.99:80/TCP", "192.0.2.1:1", &[]);
    assert!(!ok);
    assert_eq!(v["result"]["verdict"], "not-a-service");
    // Human output names the backend.
    let text = ok_stdout(&[
        "lb",
        "select",
        "-f",
        f,
        "--frontend",
        "10.96.0.10:80/TCP",
        "--client",
        "192.0.2.1:1000",
    ]);
    assert!(
        text.starts_with("10.0.") && text.contains("shop/web"),
        "{text}"
    );
}

#[test]
fn bad_manifests_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 80, protocol: ICMP}]}\n",
    );
    let out = strata(&["lb", "services", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml")
            && err.contains("document 1")
            && err.contains("spec.ports[0].protocol"),
        "{err}"
    );
    // Two services claiming one frontend: the second is named with its location.
    let g = write(
        dir.path(),
        "clash.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
    );
    let out = strata(&["lb", "services", "-f", g.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clash.yaml: document 2") && err.contains("default/a"),
        "{err}"
    );
    let out = strata(&[
        "lb",
        "services",
        "-f",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}
