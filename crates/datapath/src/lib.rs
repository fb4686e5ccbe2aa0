//! eBPF policy datapath: C programs, map ABI, aya loader and reference twin.
//!
//! - `bpf/policy.c`, compiled by clang from the build script and embedded as [`OBJECT`]: TC
//!   (clsact) programs `from_pod` and `to_pod` for each pod's host-side veth. Per packet:
//!   endpoint by ifindex, peer identity from the ipcache (host hash, then LPM trie), conntrack
//!   in an LRU hash, and exactly two policy lookups (peer identity, then identity 0; each an
//!   exact hash then an LPM trie; deny wins), whatever the number of rules; established
//!   connections reuse their verdict while the maps are unchanged. Fragments are dropped with
//!   their own reason.
//! - [`abi`]: the keys and values shared with C, checked against the object's BTF.
//! - [`twin`]: the pure reference datapath; [`state`]: desired map contents and diffs.
//! - [`loader`]: loads, pins under `/sys/fs/bpf/strata/…`, attaches (TCX links on the clsact
//!   hooks, replaced in place by a restarted loader), syncs by diff, reads counters and
//!   events, runs `BPF_PROG_TEST_RUN`; typed errors for full maps and verifier rejections.
//! - [`translate`]: strata-policy's compiled state and incremental diffs into map operations.
//! - [`netns`]: the lab, pods in network namespaces wired over rtnetlink, with real probes.
//! - [`packet`]: frame builder for tests and benches.
//!
//! ```
//! use strata_datapath::{abi, packet::{Builder, L4}, state::MapState, twin::{Action, Twin}};
//!
//! let mut state = MapState::default();
//! state.endpoints.insert(7, abi::Endpoint {
//!     endpoint_id: 1, identity: 100, flags: abi::EP_ENFORCE_INGRESS, reserved: 0,
//! });
//! state.policy.insert(
//!     abi::PolicyKey::entry(1, 0, abi::DIR_INGRESS, 6, 80, 16),
//!     abi::PolicyValue { verdict: abi::VERDICT_ALLOW, rule: 0 },
//! );
//! let mut twin = Twin::new(&state);
//! let syn = |port| Builder::v4("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap())
//!     .l4(L4::Tcp { sport: 40000, dport: port, flags: 0x02 })
//!     .build();
//! assert_eq!(twin.process(0, 7, abi::DIR_INGRESS, &syn(80)).action, Action::Pass);
//! assert_eq!(twin.process(0, 7, abi::DIR_INGRESS, &syn(22)).action, Action::Drop);
//! ```
#![deny(missing_docs)]

pub mod abi;
pub mod btf;
mod error;
pub mod loader;
pub mod netns;
pub mod packet;
pub mod state;
mod sys;
pub mod translate;
pub mod twin;

pub use error::Error;

/// The compiled eBPF object (`bpf/policy.c`), built by clang from the build script.
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/policy.o"));
