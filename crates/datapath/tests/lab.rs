//! Real traffic in network namespaces: the programs attached to the pods' veths enforce the
//! maps, for TCP, UDP and SCTP (raw IP protocol 132), and the lab leaves nothing behind.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use strata_datapath::{
    abi::{
        DIR_INGRESS, EP_ENFORCE_INGRESS, Endpoint, IpcacheKey, IpcacheValue, PolicyKey,
        PolicyValue, VERDICT_ALLOW,
    },
    netns::{Lab, Probe, Proto},
    state::MapState,
};

#[test]
fn programs_enforce_policy_on_real_traffic_and_the_lab_cleans_up() {
    if !common::privileged("programs_enforce_policy_on_real_traffic_and_the_lab_cleans_up") {
        return;
    }
    let pods = vec![
        ("a/client".to_owned(), Ipv4Addr::new(10, 77, 0, 1)),
        ("b/server".to_owned(), Ipv4Addr::new(10, 77, 0, 2)),
        ("c/open".to_owned(), Ipv4Addr::new(10, 77, 0, 3)),
    ];
    let lab = Lab::create(&pods).expect("lab");
    let names: Vec<String> = std::iter::once(lab.node.path().to_owned())
        .chain(lab.pods.iter().map(|p| p.netns.path().to_owned()))
        .map(|p| p.display().to_string())
        .collect();
    let pin_dir = lab.pin_dir().to_owned();
    let mut dp = lab.load_datapath(1).expect("load");
    let mut state = MapState::default();
    for (i, pod) in lab.pods.iter().enumerate() {
        state.endpoints.insert(
            pod.ifindex,
            Endpoint {
                endpoint_id: i as u32 + 1,
                identity: 1000 + i as u32,
                flags: if i == 1 { EP_ENFORCE_INGRESS } else { 0 },
                reserved: 0,
            },
        );
        state.ipcache.insert(
            IpcacheKey::prefix(pod.ip.into(), 32),
            IpcacheValue {
                identity: 1000 + i as u32,
                flags: 0,
            },
        );
    }
    // The server admits the client on TCP 80, UDP 53 and SCTP 132; nothing else.
    for (proto, port) in [(6u8, 80u16), (17, 53), (132, 132)] {
        state.policy.insert(
            PolicyKey::entry(2, 1000, DIR_INGRESS, proto, port, 16),
            PolicyValue {
                verdict: VERDICT_ALLOW,
                rule: 0,
            },
        );
    }
    dp.sync(&state).expect("sync");
    lab.attach(&mut dp).expect("attach");
    let probes = [
        Probe {
            port: 80,
            proto: Proto::Tcp,
        },
        Probe {
            port: 81,
            proto: Proto::Tcp,
        },
        Probe {
            port: 53,
            proto: Proto::Udp,
        },
        Probe {
            port: 132,
            proto: Proto::Sctp,
        },
    ];
    let started = std::time::Instant::now();
    let seen = lab
        .probe(&probes, Duration::from_millis(1200))
        .expect("probe");
    println!(
        "lab: {} probes in {:?}",
        9 * probes.len(),
        started.elapsed()
    );
    println!("lab: observed {seen:?}");
    for (i, row) in seen.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            for (k, probe) in probes.iter().enumerate() {
                // Only the server is isolated; it admits the client on the allowed ports.
                let expected = j != 1 || i == 1 || (i == 0 && probe.port != 81);
                assert_eq!(
                    cell[k],
                    expected,
                    "{} -> {} {}/{}",
                    pods[i].0,
                    pods[j].0,
                    probe.port,
                    probe.proto.name()
                );
            }
        }
    }
    let events = dp.drain_events(10_000);
    assert!(
        events.iter().any(|e| e.reason == 17),
        "default-deny drops reported"
    );
    drop(dp);
    drop(lab);
    for n in names {
        assert!(!std::path::Path::new(&n).exists(), "{n} left behind");
    }
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
}
