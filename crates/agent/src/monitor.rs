//! `strata monitor`: live drop (and sampled allow) events of a running datapath, decoded from
//! its pinned ring buffer, with reason, identities and endpoint.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use strata_datapath::{
    abi::{Event, REASONS, Reason, addr_from_bytes},
    loader::{DEFAULT_PIN_DIR, EventReader, read_pinned_counters},
};

/// Output format of `strata monitor`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MonitorFormat {
    /// One JSON object per line.
    Json,
    /// One line of text per event.
    Text,
}

/// Arguments of `strata monitor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory where the datapath pinned its maps.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: MonitorFormat,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<usize>,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long)]
    duration: Option<f64>,
    /// Print the counters (packets and bytes per direction and reason) at the end.
    #[arg(long)]
    counters: bool,
}

fn direction(d: u8) -> &'static str {
    if d == 0 { "egress" } else { "ingress" }
}

fn protocol(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        other => other.to_string(),
    }
}

fn addr(family: u8, b: [u8; 16]) -> Option<IpAddr> {
    (family != 0).then(|| addr_from_bytes(b))
}

fn reason(r: u8) -> String {
    Reason::from_u8(r).map_or_else(|| format!("reason-{r}"), |r| r.name().to_owned())
}

fn json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "timestamp_ns": e.timestamp_ns,
        "verdict": if Reason::from_u8(e.reason).is_some_and(Reason::is_drop) { "drop" } else { "allow" },
        "reason": reason(e.reason),
        "direction": direction(e.direction),
        "ifindex": e.ifindex,
        "endpoint": e.endpoint_id,
        "src_identity": e.src_identity,
        "dst_identity": e.dst_identity,
        "src": addr(e.family, e.saddr).map(|a| a.to_string()),
        "dst": addr(e.family, e.daddr).map(|a| a.to_string()),
        "sport": e.sport,
        "dport": e.dport,
        "protocol": protocol(e.protocol),
        "length": e.length,
    })
}

fn text(e: &Event) -> String {
    let ep = |a: Option<IpAddr>, port: u16| match a {
        Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Some(a) => format!("{a}:{port}"),
        None => "?".to_owned(),
    };
    format!(
        "{:>14.6} {:<20} {:<7} ep {:<4} {} -> {} {} identity {} -> {} len {}",
        e.timestamp_ns as f64 / 1e9,
        reason(e.reason),
        direction(e.direction),
        e.endpoint_id,
        ep(addr(e.family, e.saddr), e.sport),
        ep(addr(e.family, e.daddr), e.dport),
        protocol(e.protocol),
        e.src_identity,
        e.dst_identity,
        e.length
    )
}

/// The directory to read: `dir` itself when a datapath is pinned there, else the most recent
/// datapath pinned in a subdirectory (a lab's, e.g. during `strata lab probe` or the demo).
fn resolve(dir: &std::path::Path) -> PathBuf {
    if dir.join("events").exists() {
        return dir.to_owned();
    }
    let newest = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("events").exists())
            .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
    });
    match newest {
        Some(p) => {
            eprintln!(
                "strata: monitoring the datapath pinned under {}",
                p.display()
            );
            p
        }
        None => dir.to_owned(),
    }
}

/// Runs `strata monitor`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pin_dir = resolve(&args.pin_dir);
    let mut reader = EventReader::open(&pin_dir).with_context(|| {
        format!(
            "no running datapath pinned under {} (start one, or pass --pin-dir)",
            args.pin_dir.display()
        )
    })?;
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let limit = args.count.unwrap_or(usize::MAX);
    let mut seen = 0usize;
    while seen < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let batch = reader.poll((limit - seen).min(1024));
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        for e in &batch {
            match args.format {
                MonitorFormat::Json => println!("{}", json(e)),
                MonitorFormat::Text => println!("{}", text(e)),
            }
        }
        seen += batch.len();
    }
    if args.counters {
        let counters = read_pinned_counters(&pin_dir)?;
        for r in Reason::ALL {
            for d in [0u8, 1] {
                let c = counters[(u32::from(r as u8) + REASONS * u32::from(d)) as usize];
                if c.packets > 0 {
                    match args.format {
                        MonitorFormat::Json => println!(
                            "{}",
                            serde_json::json!({"counter": r.name(), "direction": direction(d),
                                "packets": c.packets, "bytes": c.bytes})
                        ),
                        MonitorFormat::Text => println!(
                            "counter {:<20} {:<7} {} packets {} bytes",
                            r.name(),
                            direction(d),
                            c.packets,
                            c.bytes
                        ),
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_with_reason_identities_and_addresses() {
        let e = Event {
            timestamp_ns: 1_500_000_000,
            ifindex: 4,
            endpoint_id: 2,
            src_identity: 256,
            dst_identity: 257,
            saddr: strata_datapath::abi::addr_bytes("10.0.0.1".parse().unwrap()),
            daddr: strata_datapath::abi::addr_bytes("10.0.0.2".parse().unwrap()),
            sport: 40000,
            dport: 80,
            protocol: 6,
            family: 4,
            direction: 1,
            reason: Reason::DropPolicyDefault as u8,
            length: 74,
            reserved: 0,
        };
        let t = text(&e);
        assert!(t.contains("drop-policy-default"), "{t}");
        assert!(t.contains("10.0.0.1:40000 -> 10.0.0.2:80 TCP"), "{t}");
        assert!(t.contains("identity 256 -> 257"), "{t}");
        let j = json(&e);
        assert_eq!(j["verdict"], "drop");
        assert_eq!(j["direction"], "ingress");
        assert_eq!(j["src"], "10.0.0.1");
    }
}
