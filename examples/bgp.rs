//! Announce a pod CIDR to a BGP peer and print what the peer announces back.
//!
//! With no arguments the peer is a second strata speaker started here on loopback (it
//! announces 10.96.0.0/12 back), so the example runs anywhere:
//!
//! ```text
//! cargo run -p strata-examples --example bgp
//! cargo run -p strata-examples --example bgp -- LOCAL_ADDR:PORT LOCAL_AS PEER_ADDR:PORT PEER_AS POD_CIDR
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use strata_bgp::speaker::{Announcement, NeighborConfig, Speaker, SpeakerConfig, SpeakerEvent};

fn speaker_config(
    local: SocketAddr,
    local_as: u32,
    peer: SocketAddr,
    peer_as: u32,
    passive: bool,
) -> SpeakerConfig {
    let mut neighbor = NeighborConfig::new(peer.ip(), peer_as);
    neighbor.port = peer.port();
    neighbor.passive = passive;
    let router_id = match local.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::new(192, 0, 2, 1),
    };
    SpeakerConfig {
        local_as,
        router_id,
        listen: Some(local),
        neighbors: vec![neighbor],
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (local, local_as, peer, peer_as, pod_cidr): (SocketAddr, u32, SocketAddr, u32, IpNet) =
        match args.as_slice() {
            [l, las, p, pas, cidr] => (
                l.parse()?,
                las.parse()?,
                p.parse()?,
                pas.parse()?,
                cidr.parse()?,
            ),
            [] => (
                "127.0.70.1:17700".parse()?,
                65001,
                "127.0.70.2:17701".parse()?,
                65002,
                "10.244.1.0/24".parse()?,
            ),
            _ => {
                return Err(
                    "arguments: LOCAL_ADDR:PORT LOCAL_AS PEER_ADDR:PORT PEER_AS POD_CIDR".into(),
                );
            }
        };

    // Without arguments, play the router ourselves: a passive speaker announcing a service range.
    let router = if args.is_empty() {
        let (router, _events) =
            Speaker::start(speaker_config(peer, peer_as, local, local_as, true)).await?;
        router.announce(Announcement::new("10.96.0.0/12".parse()?))?;
        Some((router, _events))
    } else {
        None
    };

    let (node, mut events) =
        Speaker::start(speaker_config(local, local_as, peer, peer_as, false)).await?;
    node.announce(Announcement::new(pod_cidr))?;
    println!("announcing {pod_cidr} from AS {local_as} to {peer} (AS {peer_as})");

    let until =
        tokio::time::Instant::now() + Duration::from_secs(if router.is_some() { 5 } else { 30 });
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::time::sleep_until(until) => None,
        };
        match event {
            Some(SpeakerEvent::Established {
                neighbor,
                remote_as,
            }) => {
                println!("session with {neighbor} (AS {remote_as}) established")
            }
            Some(SpeakerEvent::Update {
                neighbor,
                announce,
                withdraw,
            }) => {
                for route in announce {
                    println!(
                        "{neighbor} announces {} via {} (AS path {:?})",
                        route.prefix, route.next_hop, route.as_path
                    );
                }
                for prefix in withdraw {
                    println!("{neighbor} withdraws {prefix}");
                }
                if router.is_some() {
                    break;
                }
            }
            Some(SpeakerEvent::Down { neighbor, reason }) => {
                println!("session with {neighbor} down: {reason}")
            }
            None => break,
        }
    }
    for entry in node.loc_rib().await? {
        println!(
            "Loc-RIB: {} via {} from {}",
            entry.prefix, entry.path.next_hop, entry.neighbor
        );
    }
    node.shutdown().await?;
    if let Some((router, _)) = router {
        router.shutdown().await?;
    }
    Ok(())
}
