//! eBPF against iptables and nftables: the same cluster enforced five ways, measured with real
//! packets in network namespaces.
//!
//! - [`ir`]: a cluster's NetworkPolicies lowered, per local endpoint and direction, into
//!   matches over IPv4 addresses and ports (the input of the renderers), with the same
//!   semantics as `strata_policy::oracle`.
//! - [`iptables`]: the flat rendering (one rule per peer address and port) and the
//!   Calico-style rendering (dispatch, per-endpoint and per-policy chains, ipsets), as
//!   `iptables-restore` and `ipset restore` scripts, full and incremental.
//! - [`nft`]: nftables with a verdict-map dispatch and per-endpoint concatenated verdict maps,
//!   as `nft -f` scripts (one transaction), full and incremental.
//! - [`scale`]: the generated cluster of N compiled entries whose measured flow is allowed by
//!   the last rule a chain reaches.
//! - [`rig`]: network namespaces, variants applied to them, traffic generators and counters.
//! - [`report`]: results to BENCHMARKS.md tables and SVG plots.
//!
//! ```
//! use strata_bench::versus::{ir, iptables, scale};
//!
//! let s = scale::Scenario::generate(100).unwrap();
//! assert_eq!(s.entries, 100);
//! let locals = s.locals("lxc-client", "lxc-server");
//! let rules = ir::lower(&s.cluster, &locals).unwrap();
//! let flat = iptables::flat(&rules);
//! // The measured flow is allowed by the last rule before the isolation drop.
//! assert!(flat.rule_count() > 100);
//! ```

pub mod cidr;
pub mod iptables;
pub mod ir;
pub mod nft;
pub mod report;
pub mod rig;
pub mod scale;

/// Errors of the renderers and the rig.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local endpoint names a pod the cluster does not have, or one without IPv4 address.
    #[error("local endpoint {pod}: {reason}")]
    Endpoint {
        /// The pod.
        pod: String,
        /// What is wrong.
        reason: String,
    },
    /// A cluster object was refused by strata-policy.
    #[error("cluster: {0}")]
    Policy(#[from] strata_policy::Error),
    /// A command of the rig failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and standard error.
        detail: String,
    },
    /// The datapath (loader, lab) failed.
    #[error("datapath: {0}")]
    Datapath(#[from] strata_datapath::Error),
    /// An I/O error of the rig.
    #[error("{operation}: {source}")]
    Io {
        /// What was attempted.
        operation: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The rig could not measure what was asked.
    #[error("rig: {0}")]
    Rig(String),
}
