//! `strata bgp decode` and `strata bgp speaker`, run as the real binary.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A free TCP port, kept reserved by a listener on 127.255.255.254 for the life of the test
/// process (binding it on another 127/8 address is still allowed), so that concurrent runs of
/// these tests do not collide.
fn free_port() -> u16 {
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::net::TcpListener>> = Mutex::new(Vec::new());
    let l = std::net::TcpListener::bind("127.255.255.254:0").expect("reserve a port");
    let port = l.local_addr().unwrap().port();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    port
}

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn decode_hex(hex: &str) -> (Value, i32) {
    let out = strata()
        .args(["bgp", "decode", "--hex", hex])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (v, out.status.code().unwrap())
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

fn message(kind: u8, body: &str) -> String {
    let len = 19 + body.len() / 2;
    format!("{MARKER}{len:04x}{kind:02x}{body}")
}

#[test]
fn decode_keepalive_notification_route_refresh() {
    let (v, code) = decode_hex(&message(4, ""));
    assert_eq!((v["type"].as_str(), code), (Some("KEEPALIVE"), 0));
    let (v, _) = decode_hex(&message(3, "0602"));
    assert_eq!(v["type"], "NOTIFICATION");
    assert_eq!(
        (v["code"].as_u64(), v["subcode"].as_u64()),
        (Some(6), Some(2))
    );
    let (v, _) = decode_hex(&message(5, "00020001"));
    assert_eq!(v["type"], "ROUTE-REFRESH");
}

#[test]
fn decode_open_with_capabilities() {
    // AS_TRANS in My AS, the 4-octet capability with 100000, one parameter per capability.
    let body = "045ba0005a0a000001\
                2c\
                0206010400010001\
                0206010400020001\
                02020200\
                02024600\
                0206410400018 6a0\
                0202060002020600\
                0206450400010101\
                02028000"
        .replace(' ', "");
    // Fix the optional parameters length to what follows.
    let params = &body[20..];
    let body = format!("{}{:02x}{}", &body[..18], params.len() / 2, params);
    let (v, code) = decode_hex(&message(1, &body));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["type"], "OPEN");
    assert_eq!(v["asn"], 100000);
    assert_eq!(v["hold_time"], 90);
    assert_eq!(v["router_id"], "10.0.0.1");
    let caps: Vec<&str> = v["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        caps,
        [
            "mp-ipv4-unicast",
            "mp-ipv6-unicast",
            "route-refresh",
            "enhanced-route-refresh",
            "four-octet-as",
            "extended-message",
            "extended-message",
            "add-path",
            "unknown-128"
        ]
    );
}

#[test]
fn decode_update_with_every_field() {
    let attrs = "40010100\
                 40020a0202 0000fde9 0000fdea\
                 4003047f000002\
                 80040400000064\
                 400504000000c8\
                 c00808fde80001fde80002\
                 c0200c000000010000000200000003"
        .replace(' ', "");
    let body = format!("0000{:04x}{attrs}180a0102", attrs.len() / 2);
    let (v, code) = decode_hex(&message(2, &body));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["type"], "UPDATE");
    assert_eq!(v["announced"], serde_json::json!(["10.1.2.0/24"]));
    assert_eq!(v["withdrawn"], serde_json::json!([]));
    assert_eq!(v["as_path"], serde_json::json!([65001, 65002]));
    assert_eq!(v["next_hop"], "127.0.0.2");
    assert_eq!(v["origin"], "IGP");
    assert_eq!(v["med"], 100);
    assert_eq!(v["local_pref"], 200);
    assert_eq!(v["communities"], serde_json::json!(["65000:1", "65000:2"]));
    assert_eq!(v["large_communities"], serde_json::json!(["1:2:3"]));
    assert!(v.get("errors").is_none());
}

#[test]
fn decode_two_octet_as_path_with_as4_path() {
    // AS_PATH [65001, 23456] in two octets, AS4_PATH [65001, 100000]: the real path.
    let attrs =
        "40010101 4002060202fde95ba0 400304c0000201 c0110a02020000fde9000186a0".replace(' ', "");
    let body = format!("0000{:04x}{attrs}180a0102", attrs.len() / 2);
    let (v, code) = decode_hex(&message(2, &body));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["as_path"], serde_json::json!([65001, 100000]));
    assert_eq!(v["origin"], "EGP");
    assert!(v.get("errors").is_none(), "{v}");
}

#[test]
fn decode_mp_reach_with_ipv4_mapped_next_hop() {
    // MP_REACH_NLRI IPv6 with next hop ::ffff:192.0.2.1 and MP_UNREACH_NLRI.
    let reach =
        "800e1c00020110 00000000000000000000ffffc0000201 00 302001 0db80001".replace(' ', "");
    let unreach = "800f0c000201 40 20010db800020000".replace(' ', "");
    let attrs = format!("40010100400200{reach}{unreach}");
    let body = format!("0000{:04x}{attrs}", attrs.len() / 2);
    let (v, code) = decode_hex(&message(2, &body));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["announced"], serde_json::json!(["2001:db8:1::/48"]));
    assert_eq!(v["withdrawn"], serde_json::json!(["2001:db8:2::/64"]));
    assert_eq!(v["next_hop"], "::ffff:192.0.2.1");
    assert_eq!(v["as_path"], serde_json::json!([]));
}

#[test]
fn decode_rfc7606_treat_as_withdraw_and_discard() {
    // ORIGIN 5: treat-as-withdraw.
    let attrs = "400101054002060201 0000fde9 400304c0000201".replace(' ', "");
    let body = format!("0000{:04x}{attrs}180a0102", attrs.len() / 2);
    let (v, code) = decode_hex(&message(2, &body));
    assert_eq!(code, 0);
    assert_eq!(v["withdrawn"], serde_json::json!(["10.1.2.0/24"]));
    assert_eq!(v["announced"], serde_json::json!([]));
    assert_eq!(v["errors"][0]["action"], "treat-as-withdraw");
    assert_eq!(
        (
            v["errors"][0]["code"].as_u64(),
            v["errors"][0]["subcode"].as_u64()
        ),
        (Some(3), Some(6))
    );
    // ATOMIC_AGGREGATE with a value: discarded, the route stays.
    let attrs = "400101004002060201 0000fde9 400304c0000201 40060101".replace(' ', "");
    let body = format!("0000{:04x}{attrs}180a0102", attrs.len() / 2);
    let (v, code) = decode_hex(&message(2, &body));
    assert_eq!(code, 0);
    assert_eq!(v["announced"], serde_json::json!(["10.1.2.0/24"]));
    assert_eq!(v["errors"][0]["action"], "attribute-discard");
    assert_eq!(v["errors"][0]["subcode"], 5);
}

#[test]
fn decode_errors_exit_2_with_the_notification() {
    let (v, code) = decode_hex(&message(9, ""));
    assert_eq!(code, 2);
    assert_eq!(
        v["notification"],
        serde_json::json!({"code": 1, "subcode": 3})
    );
    assert!(v["error"].as_str().unwrap().contains("type"));
    let (v, code) = decode_hex(&message(1, "030000005a0a00000100"));
    assert_eq!(code, 2);
    assert_eq!(
        v["notification"],
        serde_json::json!({"code": 2, "subcode": 1})
    );
    let (v, code) = decode_hex(&message(2, "0000000021010203"));
    assert_eq!(code, 2);
    assert_eq!(
        v["notification"],
        serde_json::json!({"code": 3, "subcode": 10})
    );
    let (_, code) = decode_hex(&MARKER[..20]);
    assert_eq!(code, 2);
}

#[test]
fn decode_raw_bytes_from_stdin() {
    let mut bytes = vec![0xffu8; 16];
    bytes.extend_from_slice(&[0, 19, 4]);
    let mut child = strata()
        .args(["bgp", "decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "KEEPALIVE");
}

/// A `strata bgp speaker` process, killed on drop, with its stdout lines on a channel.
struct SpeakerProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl SpeakerProc {
    fn start(args: &[&str]) -> SpeakerProc {
        let mut child = strata()
            .args(["bgp", "speaker"])
            .args(args)
            .args(["--events", "json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        SpeakerProc { child, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next event matching `want` within 20 s.
    fn wait(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if want(&v) {
                return v;
            }
        }
    }

    fn terminate(&mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("speaker did not exit after SIGTERM");
    }
}

impl Drop for SpeakerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_speakers_exchange_routes_and_sigterm_sends_cease() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = SpeakerProc::start(&[
        "--local-as",
        "65001",
        "--router-id",
        "127.0.50.1",
        "--listen",
        &format!("127.0.50.1:{pa}"),
        "--neighbor",
        &format!("127.0.50.2:{pb},remote-as=65002,hold-time=9"),
        "--announce",
        "10.50.0.0/24,next-hop=192.0.2.1",
    ]);
    let mut b = SpeakerProc::start(&[
        "--local-as",
        "65002",
        "--router-id",
        "127.0.50.2",
        "--listen",
        &format!("127.0.50.2:{pb}"),
        "--neighbor",
        &format!("127.0.50.1:{pa},remote-as=65001,passive"),
    ]);
    let up = b.wait("established", |v| v["event"] == "established");
    assert_eq!(up["neighbor"], "127.0.50.1");
    assert_eq!(up["remote_as"], 65001);
    let u = b.wait("update", |v| v["event"] == "update");
    assert_eq!(
        u["announce"],
        serde_json::json!([{"prefix": "10.50.0.0/24", "next_hop": "192.0.2.1", "as_path": [65001]}])
    );
    assert_eq!(u["withdraw"], serde_json::json!([]));
    // Only the --listen address is bound.
    assert!(TcpStream::connect(("127.0.0.1", pa)).is_err());
    // Runtime announce and withdraw on stdin.
    a.send("announce 2001:db8:50::/48,next-hop=2001:db8::1");
    let u = b.wait("v6 update", |v| v["event"] == "update");
    assert_eq!(u["announce"][0]["prefix"], "2001:db8:50::/48");
    assert_eq!(u["announce"][0]["next_hop"], "2001:db8::1");
    a.send("withdraw 10.50.0.0/24");
    let u = b.wait("withdraw", |v| {
        v["event"] == "update" && v["withdraw"].as_array().is_some_and(|w| !w.is_empty())
    });
    assert_eq!(u["withdraw"], serde_json::json!(["10.50.0.0/24"]));
    b.send("announce 10.51.0.0/16");
    let u = a.wait("update from b", |v| v["event"] == "update");
    assert_eq!(u["announce"][0]["next_hop"], "127.0.50.2");
    // SIGTERM: exit 0 and the peer sees a Cease.
    assert_eq!(a.terminate(), 0);
    let down = b.wait("down", |v| v["event"] == "down");
    assert_eq!(down["neighbor"], "127.0.50.1");
    let reason = down["reason"].as_str().unwrap();
    assert!(
        reason.contains("Cease") && reason.contains("6/2"),
        "{reason}"
    );
    assert_eq!(b.terminate(), 0);
}

#[test]
fn bad_arguments_are_refused() {
    for neighbor in [
        "127.0.0.1",
        "127.0.0.1,remote-as=x",
        "nothing,remote-as=1",
        "127.0.0.1,remote-as=1,hold-time=2",
        "127.0.0.1,remote-as=1,bogus",
    ] {
        let out = strata()
            .args([
                "bgp",
                "speaker",
                "--local-as",
                "1",
                "--router-id",
                "1.1.1.1",
                "--listen",
                "127.0.0.1:0",
                "--neighbor",
                neighbor,
                "--events",
                "json",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{neighbor} accepted");
    }
}

/// BIRD killed on drop.
struct Bird(Child);

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn speaker_against_bird_and_sigterm_cease() {
    let have = std::path::Path::new("/usr/sbin/bird").exists()
        && std::path::Path::new("/usr/sbin/birdc").exists();
    if !have {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("bird/birdc missing and CI=true (install bird2)");
        }
        eprintln!("skipping: BIRD 2 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ps, pb) = (free_port(), free_port());
    let conf = format!(
        "router id 127.0.51.2;\nprotocol device {{}}\n\
        protocol static s4 {{ ipv4; route 10.52.0.0/24 blackhole; }}\n\
        protocol bgp strata {{\n  local 127.0.51.2 port {pb} as 65002;\n  \
        neighbor 127.0.51.1 port {ps} as 65001;\n  multihop;\n  strict bind yes;\n  passive on;\n  \
        error wait time 1, 3;\n  ipv4 {{ import all; export all; next hop self; }};\n}}\n"
    );
    std::fs::write(dir.path().join("bird.conf"), conf).unwrap();
    let sock = dir.path().join("bird.ctl");
    let _bird = Bird(
        Command::new("/usr/sbin/bird")
            .arg("-f")
            .arg("-c")
            .arg(dir.path().join("bird.conf"))
            .arg("-s")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let birdc = |args: &[&str]| -> String {
        Command::new("/usr/sbin/birdc")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut s = SpeakerProc::start(&[
        "--local-as",
        "65001",
        "--router-id",
        "127.0.51.1",
        "--listen",
        &format!("127.0.51.1:{ps}"),
        "--neighbor",
        &format!("127.0.51.2:{pb},remote-as=65002,hold-time=9"),
        "--announce",
        "10.51.0.0/24,next-hop=192.0.2.1",
    ]);
    s.wait("established", |v| {
        v["event"] == "established" && v["remote_as"] == 65002
    });
    let u = s.wait("update", |v| v["event"] == "update");
    assert_eq!(u["announce"][0]["prefix"], "10.52.0.0/24");
    assert_eq!(u["announce"][0]["as_path"], serde_json::json!([65002]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !birdc(&["show", "route", "10.51.0.0/24"]).contains("AS65001") {
        assert!(Instant::now() < deadline, "BIRD never got 10.51.0.0/24");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.terminate(), 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = birdc(&["show", "protocols", "all", "strata"]);
        if shown.contains("Administrative shutdown") {
            break;
        }
        assert!(Instant::now() < deadline, "BIRD saw no Cease: {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
