//! Helpers shared by the scenario tests.
#![allow(dead_code)]

/// Whether the test may use the kernel (root). Prints why it skips; with CI=true a missing
/// privilege panics instead.
pub fn privileged(test: &str) -> bool {
    if strata_datapath::loader::is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (CI=true makes a missing privilege a failure)");
    }
    eprintln!("{test}: skipped: needs root to load eBPF programs");
    false
}
