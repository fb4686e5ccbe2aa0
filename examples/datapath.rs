//! The eBPF datapath embedded alone: compile a tiny policy with strata-policy, translate it
//! into the map ABI, decide packets with the reference twin, and — when run as root — load the
//! kernel programs and run the same packets through them with BPF_PROG_TEST_RUN.
//!
//! ```text
//! cargo run -p strata-examples --example datapath        # twin only
//! sudo cargo run -p strata-examples --example datapath   # twin and kernel
//! ```

use strata_datapath::{
    abi,
    loader::{Datapath, Hook, LoadOptions, is_root},
    packet::{Builder, L4},
    state::MapState,
    translate::{EndpointSpec, add_endpoint, add_prefix},
    twin::Twin,
};
use strata_policy::{DirectionPolicy, EndpointPolicy, EntryKey, Identity, PolicyMap, Verdict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server (identity 300) admits identity 256 on TCP 80 and nothing else.
    let mut ingress = PolicyMap::new();
    ingress.insert(EntryKey::port(Identity(256), 6, 80), Verdict::Allow);
    let policy = EndpointPolicy {
        ingress: DirectionPolicy {
            enforced: true,
            entries: ingress,
        },
        egress: DirectionPolicy::default(),
    };
    let mut state = MapState::default();
    // BPF_PROG_TEST_RUN runs on the loopback device (ifindex 1): the server's veth here.
    add_endpoint(
        &mut state,
        &EndpointSpec {
            ifindex: 1,
            endpoint_id: 1,
            identity: 300,
            policy: &policy,
        },
    )?;
    add_prefix(&mut state, "10.0.0.2".parse()?, 32, 256)?;
    add_prefix(&mut state, "10.0.0.3".parse()?, 32, 257)?;

    let packets = [
        ("10.0.0.2 -> :80  ", "10.0.0.2", 80),
        ("10.0.0.2 -> :22  ", "10.0.0.2", 22),
        ("10.0.0.3 -> :80  ", "10.0.0.3", 80),
    ];
    let frames: Vec<Vec<u8>> = packets
        .iter()
        .map(|(_, src, port)| {
            Ok::<_, std::net::AddrParseError>(
                Builder::v4(src.parse()?, "10.0.0.1".parse()?)
                    .l4(L4::Tcp {
                        sport: 40000,
                        dport: *port,
                        flags: 0x02,
                    })
                    .build(),
            )
        })
        .collect::<Result<_, _>>()?;

    let mut twin = Twin::new(&state);
    let kernel = if is_root() {
        let mut dp = Datapath::load(&LoadOptions::default())?;
        dp.sync(&state)?;
        Some(dp)
    } else {
        println!("(not root: the kernel column is skipped)");
        None
    };
    println!("packet              twin                     kernel");
    for ((label, _, _), frame) in packets.iter().zip(&frames) {
        let d = twin.process(0, 1, abi::DIR_INGRESS, frame);
        let k = match &kernel {
            Some(dp) => {
                let r = dp.test_run(Hook::ToPod, frame, 1)?;
                format!(
                    "{} ({} ns)",
                    if r.code == 0 { "pass" } else { "drop" },
                    r.duration_ns
                )
            }
            None => "-".to_owned(),
        };
        println!(
            "{label}   {:<24} {k}",
            format!("{:?} {}", d.action, d.reason.name())
        );
    }
    Ok(())
}
