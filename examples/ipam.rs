//! A node pool, a pod allocation, and a restart that restores it from the durable store.
//!
//! `cargo run -p strata-examples --example ipam`

use std::time::SystemTime;

use strata_ipam::{AllocatorConfig, Ipam, Owner, Quarantine, RedbStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("node.redb");
    let config = AllocatorConfig {
        pools: vec!["10.0.1.0/24".parse()?, "fd00:0:0:1::/120".parse()?],
        excluded: vec!["10.0.1.1".parse()?],
        quarantine: Quarantine::Releases(8),
    };

    let mut node = Ipam::open(config.clone(), RedbStore::open(&path)?)?;
    let pod = Owner::new("default/web-1")?;
    let allocation = node.allocate(SystemTime::now(), &pod)?;
    println!("allocated {pod}: {:?}", allocation.addrs);
    drop(node); // the agent restarts

    let node = Ipam::open(config, RedbStore::open(&path)?)?;
    let restored = node.allocator().get(&pod).ok_or("allocation lost")?;
    println!("restored  {pod}: {:?}", restored.addrs);
    assert_eq!(restored, allocation);
    Ok(())
}
