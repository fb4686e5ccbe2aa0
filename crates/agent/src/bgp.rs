//! `strata bgp`: the BGP speaker (`speaker`) and a message decoder (`decode`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;
use serde_json::{Value, json};
use strata_bgp::speaker::{Announcement, NeighborConfig, Speaker, SpeakerConfig, SpeakerEvent};
use strata_bgp::wire::{Decoded, Message, NextHop, Options, PathAttribute};

/// Arguments of `strata bgp`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: BgpCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BgpCommand {
    /// Run a BGP speaker: print events as JSON lines, read `announce`/`withdraw` lines on stdin.
    Speaker(SpeakerArgs),
    /// Decode one BGP message (header included) to JSON.
    Decode(DecodeArgs),
}

/// Event output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EventFormat {
    /// One JSON object a line.
    Json,
}

#[derive(clap::Args, Debug)]
struct SpeakerArgs {
    /// Our AS number.
    #[arg(long, value_name = "ASN")]
    local_as: u32,
    /// Our BGP identifier.
    #[arg(long, value_name = "A.B.C.D")]
    router_id: Ipv4Addr,
    /// The only address to listen on.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// `ADDR[:PORT],remote-as=ASN[,passive][,hold-time=SECONDS]`, repeatable.
    #[arg(long, value_name = "SPEC", value_parser = parse_neighbor)]
    neighbor: Vec<NeighborConfig>,
    /// `PREFIX[,next-hop=ADDR]`, repeatable.
    #[arg(long, value_name = "SPEC", value_parser = parse_announce)]
    announce: Vec<Announcement>,
    /// Event output format.
    #[arg(long, value_enum, default_value = "json")]
    events: EventFormat,
}

#[derive(clap::Args, Debug)]
struct DecodeArgs {
    /// The message as hex (spaces and colons allowed); raw bytes on stdin otherwise.
    #[arg(long, value_name = "HEX")]
    hex: Option<String>,
}

/// Runs `strata bgp`.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        BgpCommand::Decode(a) => decode(a),
        BgpCommand::Speaker(a) => speaker(a),
    }
}

fn parse_neighbor(spec: &str) -> Result<NeighborConfig, String> {
    let mut parts = spec.split(',');
    let addr = parts.next().unwrap_or_default();
    let (address, port) = if let Ok(sa) = addr.parse::<SocketAddr>() {
        (sa.ip(), sa.port())
    } else {
        let ip = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("neighbor address {addr:?} is not ADDR or ADDR:PORT"))?;
        (ip, 179)
    };
    let mut remote_as = None;
    let mut config = NeighborConfig::new(address, 0);
    config.port = port;
    for part in parts {
        match part.split_once('=') {
            Some(("remote-as", v)) => {
                remote_as = Some(
                    v.parse()
                        .map_err(|_| format!("remote-as {v:?} is not an AS number"))?,
                )
            }
            Some(("hold-time", v)) => {
                let h: u16 = v
                    .parse()
                    .map_err(|_| format!("hold-time {v:?} is not a number of seconds"))?;
                if h == 1 || h == 2 {
                    return Err(format!("hold-time {h}: must be 0 or at least 3 seconds"));
                }
                config.hold_time = h;
            }
            None if part == "passive" => config.passive = true,
            _ => return Err(format!("unknown neighbor option {part:?}")),
        }
    }
    config.remote_as = remote_as.ok_or_else(|| format!("neighbor {spec:?} lacks remote-as=ASN"))?;
    Ok(config)
}

fn parse_announce(spec: &str) -> Result<Announcement, String> {
    let mut parts = spec.split(',');
    let prefix_text = parts.next().unwrap_or_default();
    let prefix: IpNet = prefix_text
        .parse()
        .map_err(|_| format!("{prefix_text:?} is not a prefix such as 10.0.0.0/24"))?;
    let mut a = Announcement::new(prefix);
    for part in parts {
        match part.split_once('=') {
            Some(("next-hop", v)) => {
                a.next_hop = Some(
                    v.parse()
                        .map_err(|_| format!("next-hop {v:?} is not an address"))?,
                )
            }
            _ => return Err(format!("unknown announce option {part:?}")),
        }
    }
    Ok(a)
}

fn print_line(value: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

fn event_json(event: &SpeakerEvent) -> Value {
    match event {
        SpeakerEvent::Established {
            neighbor,
            remote_as,
        } => {
            json!({"event": "established", "neighbor": neighbor.to_string(), "remote_as": remote_as})
        }
        SpeakerEvent::Update {
            neighbor,
            announce,
            withdraw,
        } => json!({
            "event": "update",
            "neighbor": neighbor.to_string(),
            "announce": announce.iter().map(|l| json!({
                "prefix": l.prefix.to_string(),
                "next_hop": l.next_hop.to_string(),
                "as_path": l.as_path,
            })).collect::<Vec<_>>(),
            "withdraw": withdraw.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }),
        SpeakerEvent::Down { neighbor, reason } => {
            json!({"event": "down", "neighbor": neighbor.to_string(), "reason": reason})
        }
    }
}

fn speaker(args: SpeakerArgs) -> Result<ExitCode> {
    let EventFormat::Json = args.events;
    if args.neighbor.is_empty() {
        bail!("at least one --neighbor is needed");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        use tokio::io::AsyncBufReadExt;
        use tokio::signal::unix::{SignalKind, signal};

        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let config = SpeakerConfig {
            local_as: args.local_as,
            router_id: args.router_id,
            listen: Some(args.listen),
            neighbors: args.neighbor,
        };
        let (speaker, mut events) = Speaker::start(config).await?;
        for a in args.announce {
            speaker.announce(a)?;
        }
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                event = events.recv() => match event {
                    Some(e) => print_line(&event_json(&e))?,
                    None => bail!("the speaker stopped"),
                },
                line = stdin.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => {
                        if let Err(e) = stdin_command(&speaker, line.trim()) {
                            eprintln!("strata bgp speaker: {e:#}");
                        }
                    }
                    Ok(None) | Err(_) => stdin_open = false,
                },
            }
        }
        speaker.shutdown().await?;
        // Events that arrived during shutdown (our own Cease) are still reported.
        while let Ok(e) = events.try_recv() {
            print_line(&event_json(&e))?;
        }
        Ok(ExitCode::SUCCESS)
    });
    // The stdin reader sits in a blocking read; do not wait for it.
    runtime.shutdown_background();
    result
}

fn stdin_command(speaker: &Speaker, line: &str) -> Result<()> {
    if line.is_empty() || line.starts_with('#') {
        return Ok(());
    }
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    match verb {
        "announce" => speaker.announce(parse_announce(rest.trim()).map_err(|e| anyhow!(e))?)?,
        "withdraw" => {
            let p: IpNet = rest
                .trim()
                .parse()
                .map_err(|_| anyhow!("{:?} is not a prefix", rest.trim()))?;
            speaker.withdraw(p)?
        }
        other => bail!(
            "unknown command {other:?} (expected `announce PREFIX[,next-hop=ADDR]` or `withdraw PREFIX`)"
        ),
    }
    Ok(())
}

fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    let digits = digits.strip_prefix(b"0x").unwrap_or(&digits);
    if !digits.len().is_multiple_of(2) {
        bail!("--hex has an odd number of digits");
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    anyhow!(
                        "--hex: {:?} at byte {i} is not hex",
                        String::from_utf8_lossy(pair)
                    )
                })
        })
        .collect()
}

/// Decodes with 4-octet AS numbers, falling back to 2-octet ones when that decodes cleanly and
/// the 4-octet reading does not (a decoder has no OPEN to tell which the session uses).
fn decode_message(bytes: &[u8]) -> Result<Decoded, strata_bgp::DecodeError> {
    let modern = Message::parse(bytes, Options::MODERN);
    match &modern {
        Ok(d) if d.issues.is_empty() => modern,
        _ => match Message::parse(bytes, Options::LEGACY) {
            Ok(d) if d.issues.is_empty() => Ok(d),
            _ => modern,
        },
    }
}

fn decode(args: DecodeArgs) -> Result<ExitCode> {
    let bytes = match args.hex {
        Some(h) => parse_hex(&h)?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
    };
    match decode_message(&bytes) {
        Ok(d) => {
            print_line(&decoded_json(&d))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let (code, subcode) = e.code();
            print_line(&json!({
                "error": e.to_string(),
                "notification": {"code": code, "subcode": subcode},
            }))?;
            Ok(ExitCode::from(2))
        }
    }
}

fn decoded_json(d: &Decoded) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("type".into(), json!(d.message.kind().name()));
    match &d.message {
        Message::Open(open) => {
            out.insert("asn".into(), json!(open.asn()));
            out.insert("hold_time".into(), json!(open.hold_time));
            out.insert("router_id".into(), json!(open.router_id.to_string()));
            out.insert(
                "capabilities".into(),
                json!(
                    open.capabilities
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                ),
            );
        }
        Message::Update(u) => {
            let strings = |v: Vec<IpNet>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
            out.insert("withdrawn".into(), json!(strings(u.withdrawn_all())));
            out.insert("announced".into(), json!(strings(u.announced())));
            let as_path = match (u.as_path(), u.as4_path()) {
                (Some(p), Some(p4)) => strata_bgp::wire::AsPath::reconstruct(p, p4).flatten(),
                (Some(p), None) => p.flatten(),
                (None, _) => Vec::new(),
            };
            out.insert("as_path".into(), json!(as_path));
            let next_hop = u.next_hop().map(|n| n.to_string()).or_else(|| {
                u.attributes.iter().find_map(|a| match a {
                    PathAttribute::MpReach(r) => Some(match r.next_hop {
                        NextHop::V4(a) => a.to_string(),
                        NextHop::V6 { global, .. } => global.to_string(),
                    }),
                    _ => None,
                })
            });
            out.insert("next_hop".into(), json!(next_hop));
            out.insert("origin".into(), json!(u.origin().map(|o| o.name())));
            if let Some(med) = u.med() {
                out.insert("med".into(), json!(med));
            }
            if let Some(lp) = u.local_pref() {
                out.insert("local_pref".into(), json!(lp));
            }
            if u.attributes
                .iter()
                .any(|a| matches!(a, PathAttribute::Communities(_)))
            {
                out.insert(
                    "communities".into(),
                    json!(
                        u.communities()
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                    ),
                );
            }
            if u.attributes
                .iter()
                .any(|a| matches!(a, PathAttribute::LargeCommunities(_)))
            {
                out.insert(
                    "large_communities".into(),
                    json!(
                        u.large_communities()
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                    ),
                );
            }
        }
        Message::Notification(n) => {
            out.insert("code".into(), json!(n.code));
            out.insert("subcode".into(), json!(n.subcode));
        }
        Message::Keepalive | Message::RouteRefresh(_) => {}
    }
    if !d.issues.is_empty() {
        out.insert(
            "errors".into(),
            json!(
                d.issues
                    .iter()
                    .map(|i| {
                        let (code, subcode) = i.error.code();
                        json!({"action": i.action.as_str(), "code": code, "subcode": subcode})
                    })
                    .collect::<Vec<_>>()
            ),
        );
    }
    Value::Object(out)
}
