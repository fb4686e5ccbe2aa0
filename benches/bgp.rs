//! BGP benches: decode + encode of a full-size UPDATE, and 100,000 prefixes received from a
//! real peer (BIRD 2 when installed) and stored in the speaker's RIBs, with the resident memory
//! it took.
//!
//! `cargo bench -p strata-bench --bench bgp`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::{IpNet, Ipv4Net};
use strata_bgp::speaker::{Announcement, NeighborConfig, Speaker, SpeakerConfig, SpeakerEvent};
use strata_bgp::wire::{
    AsPath, Community, Message, Options, Origin, PathAttribute, pack_announcements,
};

/// A 4096-byte-limit UPDATE packed with /32 host routes, with the usual attributes.
fn full_update() -> Vec<u8> {
    let attrs = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath::sequence(vec![65001, 65002, 65003])),
        PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
        PathAttribute::Med(10),
        PathAttribute::Communities(vec![Community::new(65001, 1), Community::new(65001, 2)]),
    ];
    let prefixes: Vec<IpNet> = (0..2000u32)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()))
        .collect();
    let first = pack_announcements(&attrs, &prefixes, None, Options::MODERN, 4096)
        .unwrap()
        .remove(0);
    Message::Update(first).to_bytes(Options::MODERN).unwrap()
}

fn codec(c: &mut Criterion) {
    let bytes = full_update();
    let mut group = c.benchmark_group("bgp");
    group.throughput(Throughput::Elements(1));
    group.bench_function(
        format!("decode+encode UPDATE of {} bytes", bytes.len()),
        |b| {
            let mut out = vec![0u8; 4096];
            b.iter(|| {
                let decoded = Message::parse(black_box(&bytes), Options::MODERN).unwrap();
                let n = decoded.message.emit(&mut out, Options::MODERN).unwrap();
                black_box(n)
            })
        },
    );
    group.finish();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Bird(Child, tempfile::TempDir);

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PREFIXES: u32 = 100_000;

/// A free TCP port, kept reserved by a listener on 127.255.255.254 for the life of the process
/// (binding it on another 127/8 address is still allowed).
fn free_port() -> u16 {
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::net::TcpListener>> = Mutex::new(Vec::new());
    let l = std::net::TcpListener::bind("127.255.255.254:0").expect("reserve a port");
    let port = l.local_addr().unwrap().port();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    port
}

fn start_bird(bird_port: u16, our_port: u16) -> Option<Bird> {
    if !Path::new("/usr/sbin/bird").exists() {
        eprintln!("bgp bench: BIRD not installed, skipping the 100k-prefix bench");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut conf =
        String::from("router id 127.0.60.2;\nprotocol device {}\nprotocol static s4 {\n  ipv4;\n");
    for i in 0..PREFIXES {
        let a = Ipv4Addr::from(0x0a00_0000 + i);
        conf.push_str(&format!("  route {a}/32 blackhole;\n"));
    }
    conf.push_str(&format!(
        "}}\nprotocol bgp strata {{\n  local 127.0.60.2 port {bird_port} as 65002;\n  \
         neighbor 127.0.60.1 port {our_port} as 65001;\n  multihop;\n  strict bind yes;\n  \
         passive on;\n  error wait time 1, 2;\n  ipv4 {{ import none; export all; next hop self; }};\n}}\n",
    ));
    std::fs::write(dir.path().join("bird.conf"), conf).unwrap();
    let child = Command::new("/usr/sbin/bird")
        .arg("-f")
        .arg("-c")
        .arg(dir.path().join("bird.conf"))
        .arg("-s")
        .arg(dir.path().join("bird.ctl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let bird = Bird(child, dir);
    // BIRD reads the config and fills its table; give it a bounded while.
    let ctl = bird.1.path().join("bird.ctl");
    for _ in 0..100 {
        if ctl.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(bird)
}

/// One full receive: connect to the peer at 127.0.`net`.2:`port`, take in PREFIXES routes into
/// Adj-RIB-In and Loc-RIB; returns the time and the growth of resident memory.
async fn receive_all(net: u8, port: u16, listen_port: u16) -> (Duration, Duration, u64, u64) {
    let mut n = NeighborConfig::new(IpAddr::from([127, 0, net, 2]), 65002);
    n.port = port;
    n.connect_retry = Duration::from_millis(100);
    let before = rss_kib();
    let start = Instant::now();
    let (speaker, mut events) = Speaker::start(SpeakerConfig {
        local_as: 65001,
        router_id: Ipv4Addr::new(127, 0, net, 1),
        listen: Some(SocketAddr::from(([127, 0, net, 1], listen_port))),
        neighbors: vec![n],
    })
    .await
    .unwrap();
    let mut got = 0usize;
    let mut almost = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got < PREFIXES as usize {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(SpeakerEvent::Update { announce, .. })) => {
                got += announce.len();
                if got + 256 > PREFIXES as usize && almost.is_none() {
                    almost = Some(start.elapsed());
                }
            }
            Ok(Some(_)) => {}
            _ => panic!("only {got} prefixes arrived"),
        }
    }
    let elapsed = start.elapsed();
    let after = rss_kib();
    let grown = after.saturating_sub(before);
    assert_eq!(speaker.loc_rib().await.unwrap().len(), PREFIXES as usize);
    speaker.shutdown().await.unwrap();
    (elapsed, almost.unwrap_or(elapsed), after, grown)
}

fn receive(c: &mut Criterion) {
    let (bird_port, our_port) = (free_port(), free_port());
    let Some(_bird) = start_bird(bird_port, our_port) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("bgp");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("receive 100k prefixes from BIRD", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (t, almost, rss, grown) = runtime.block_on(receive_all(60, bird_port, our_port));
                eprintln!(
                    "bgp: 100000 prefixes from BIRD received and stored in {:.3} s (all but the last UPDATE in {:.3} s), process resident {} MiB (+{} MiB)",
                    t.as_secs_f64(),
                    almost.as_secs_f64(),
                    rss / 1024,
                    grown / 1024
                );
                total += t;
                // BIRD waits `error wait time` after our Cease before accepting again.
                std::thread::sleep(Duration::from_millis(1500));
            }
            total
        })
    });
    group.finish();
}

/// The same 100k prefixes from a strata speaker in this process: the receiving side's own
/// cost, without BIRD's export pacing.
fn receive_from_strata(c: &mut Criterion) {
    let (peer_port, our_port) = (free_port(), free_port());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let peer = runtime.block_on(async {
        let mut n = NeighborConfig::new(IpAddr::from([127, 0, 61, 1]), 65001);
        n.port = our_port;
        n.passive = true;
        let (peer, events) = Speaker::start(SpeakerConfig {
            local_as: 65002,
            router_id: Ipv4Addr::new(127, 0, 61, 2),
            listen: Some(SocketAddr::from(([127, 0, 61, 2], peer_port))),
            neighbors: vec![n],
        })
        .await
        .unwrap();
        for i in 0..PREFIXES {
            let mut a = Announcement::new(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap(),
            ));
            a.next_hop = Some(IpAddr::from([192, 0, 2, 1]));
            peer.announce(a).unwrap();
        }
        (peer, events)
    });
    let mut group = c.benchmark_group("bgp");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("receive 100k prefixes from a strata peer", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (t, almost, rss, grown) = runtime.block_on(receive_all(61, peer_port, our_port));
                eprintln!(
                    "bgp: 100000 prefixes from strata received and stored in {:.3} s (all but the last UPDATE in {:.3} s), process resident {} MiB (+{} MiB)",
                    t.as_secs_f64(),
                    almost.as_secs_f64(),
                    rss / 1024,
                    grown / 1024
                );
                total += t;
            }
            total
        })
    });
    group.finish();
    runtime.block_on(peer.0.shutdown()).unwrap();
}

criterion_group!(benches, codec, receive, receive_from_strata);
criterion_main!(benches);
