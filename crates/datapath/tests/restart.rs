//! Restart without loss: a steady UDP flow through an enforced pod pair keeps flowing while
//! the loader is restarted (a new process that reuses the pinned maps and replaces the pinned
//! links in place), and enforcement never stops.

mod common;

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use strata_datapath::{
    abi::{
        DIR_INGRESS, EP_ENFORCE_INGRESS, Endpoint, IpcacheKey, IpcacheValue, PolicyKey,
        PolicyValue, VERDICT_ALLOW,
    },
    loader::{Datapath, LoadOptions},
    netns::{Lab, run_in},
    state::MapState,
};

const CHILD_ENV: &str = "STRATA_RESTART_CHILD";

/// The restarted loader: a separate process (this test binary, re-run on this test only).
#[test]
#[ignore = "helper: run as a separate process by loader_restart_loses_no_packets"]
fn restarted_loader() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        eprintln!("restarted_loader: run by loader_restart_loses_no_packets only");
        return;
    };
    let mut parts = spec.split('|');
    let pin_dir = PathBuf::from(parts.next().expect("pin dir"));
    let node = PathBuf::from(parts.next().expect("node netns"));
    let ifaces: Vec<String> = parts.map(str::to_owned).collect();
    let mut dp = Datapath::load(&LoadOptions {
        pin_dir: Some(pin_dir),
        allow_sample: 0,
    })
    .expect("reload with pinned maps");
    assert!(!dp.state().endpoints.is_empty(), "pinned maps reused");
    run_in(&node, || {
        for i in &ifaces {
            dp.attach(i).expect("replace");
        }
    })
    .expect("node namespace");
    println!("restarted_loader: replaced programs on {ifaces:?}");
}

#[test]
fn loader_restart_loses_no_packets() {
    if !common::privileged("loader_restart_loses_no_packets") {
        return;
    }
    let pods = vec![
        ("a/sender".to_owned(), Ipv4Addr::new(10, 78, 0, 1)),
        ("b/receiver".to_owned(), Ipv4Addr::new(10, 78, 0, 2)),
    ];
    let lab = Lab::create(&pods).expect("lab");
    let mut dp = lab.load_datapath(0).expect("load");
    let mut state = MapState::default();
    for (i, pod) in lab.pods.iter().enumerate() {
        state.endpoints.insert(
            pod.ifindex,
            Endpoint {
                endpoint_id: i as u32 + 1,
                identity: 2000 + i as u32,
                flags: EP_ENFORCE_INGRESS,
                reserved: 0,
            },
        );
        state.ipcache.insert(
            IpcacheKey::prefix(pod.ip.into(), 32),
            IpcacheValue {
                identity: 2000 + i as u32,
                flags: 0,
            },
        );
    }
    state.policy.insert(
        PolicyKey::entry(2, 2000, DIR_INGRESS, 17, 5000, 16),
        PolicyValue {
            verdict: VERDICT_ALLOW,
            rule: 0,
        },
    );
    dp.sync(&state).expect("sync");
    lab.attach(&mut dp).expect("attach");
    drop(dp); // the first loader exits; pinned links keep enforcing

    let spec = format!(
        "{}|{}|{}",
        lab.pin_dir().display(),
        lab.node.path().display(),
        lab.pods
            .iter()
            .map(|p| p.host_if.clone())
            .collect::<Vec<_>>()
            .join("|")
    );
    let exe = std::env::current_exe().expect("test binary");
    let (a, b) = (&lab.pods[0], &lab.pods[1]);
    let stop = AtomicBool::new(false);
    let dst_ok = SocketAddrV4::new(b.ip, 5000);
    let dst_denied = SocketAddrV4::new(b.ip, 5001);
    let (sent, denied_sent, received, denied_received, restarts) = std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            b.netns
                .run(|| {
                    let ok = UdpSocket::bind("0.0.0.0:5000").expect("bind 5000");
                    let no = UdpSocket::bind("0.0.0.0:5001").expect("bind 5001");
                    ok.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                    no.set_nonblocking(true).unwrap();
                    let mut seen = HashSet::new();
                    let mut denied = 0u64;
                    let mut buf = [0u8; 64];
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        if let Ok(n) = ok.recv(&mut buf)
                            && n >= 8
                        {
                            seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                        }
                        while no.recv(&mut buf).is_ok() {
                            denied += 1;
                        }
                    }
                    while let Ok(n) = ok.recv(&mut buf) {
                        if n >= 8 {
                            seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                        }
                    }
                    (seen, denied)
                })
                .expect("receiver namespace")
        });
        std::thread::sleep(Duration::from_millis(100));
        let sender = s.spawn(|| {
            a.netns
                .run(|| {
                    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    let start = Instant::now();
                    let (mut seq, mut denied) = (0u64, 0u64);
                    // 64-byte payloads, one every 200 µs, for 2.5 s.
                    while start.elapsed() < Duration::from_millis(2500) && seq < 100_000 {
                        let mut msg = [0u8; 64];
                        msg[..8].copy_from_slice(&seq.to_be_bytes());
                        sock.send_to(&msg, dst_ok).expect("send");
                        seq += 1;
                        if seq % 50 == 0 {
                            let _ = sock.send_to(&msg, dst_denied);
                            denied += 1;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    (seq, denied)
                })
                .expect("sender namespace")
        });
        let mut restarts = 0;
        for at in [500u64, 1200, 1900] {
            std::thread::sleep(Duration::from_millis(if restarts == 0 { at } else { 700 }));
            let out = Command::new(&exe)
                .args([
                    "--exact",
                    "restarted_loader",
                    "--include-ignored",
                    "--nocapture",
                ])
                .env(CHILD_ENV, &spec)
                .output()
                .expect("spawn restarted loader");
            assert!(
                out.status.success(),
                "restarted loader failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("replaced programs"));
            restarts += 1;
        }
        let (sent, denied_sent) = sender.join().expect("sender");
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        let (seen, denied) = receiver.join().expect("receiver");
        (sent, denied_sent, seen.len() as u64, denied, restarts)
    });
    println!(
        "restart: {restarts} loader restarts, {sent} packets sent, {received} received, \
         {} lost; {denied_sent} to a denied port, {denied_received} arrived",
        sent - received
    );
    assert_eq!(restarts, 3);
    assert!(sent > 1000, "the flow ran");
    assert_eq!(received, sent, "packets lost across loader restarts");
    assert_eq!(denied_received, 0, "enforcement lapsed during a restart");
    assert!(denied_sent > 0);
}
