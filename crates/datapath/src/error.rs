//! The crate's error type.

/// Errors of the datapath: loading, maps, attaching, test runs, the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel verifier or loader rejected a program; `log` is the verifier's output.
    #[error("program `{program}` rejected by the kernel: {source}\nverifier log:\n{log}")]
    Verifier {
        /// Program name.
        program: String,
        /// Verifier log.
        log: String,
        /// The load error.
        #[source]
        source: std::io::Error,
    },
    /// Loading the object (ELF, BTF, map creation, pinned map reuse) failed.
    #[error("cannot load the eBPF object: {source}")]
    Load {
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program operation (attach, replace, test run) failed.
    #[error("{operation} of program `{program}` failed: {source}")]
    Program {
        /// What was attempted.
        operation: &'static str,
        /// Program name.
        program: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is full: `wanted` entries do not fit its `capacity`. Nothing was changed.
    #[error("map `{map}` is full: {wanted} entries wanted, capacity {capacity}")]
    MapFull {
        /// Map name.
        map: &'static str,
        /// Entries the new state needs.
        wanted: usize,
        /// Capacity.
        capacity: u32,
    },
    /// The kernel rejected a map operation.
    #[error("{operation} on map `{map}` failed: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A map the object should have is missing or of another type.
    #[error("map `{map}` missing from the object or of an unexpected type")]
    MissingMap {
        /// Map name.
        map: &'static str,
    },
    /// A program the object should have is missing.
    #[error("program `{program}` missing from the object")]
    MissingProgram {
        /// Program name.
        program: &'static str,
    },
    /// An entry is invalid (names the map and the field).
    #[error("invalid {map} entry: {detail}")]
    InvalidEntry {
        /// Map name.
        map: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The BTF of the object could not be read.
    #[error("cannot read the object's BTF: {detail}")]
    Btf {
        /// What is wrong.
        detail: String,
    },
    /// A system call or file operation failed.
    #[error("{operation} failed for {path}: {source}")]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The file, interface or namespace involved.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("netlink {operation} failed: {detail}")]
    Netlink {
        /// What was attempted.
        operation: &'static str,
        /// The error.
        detail: String,
    },
}
