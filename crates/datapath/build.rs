//! Compiles the eBPF programs in `bpf/` with clang for the `bpf` target.
//!
//! Fails with a message naming the missing Debian package when a tool or header is absent.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let bpf = manifest.join("bpf");
    for file in ["policy.c", "strata.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=STRATA_CLANG");

    let clang = env::var("STRATA_CLANG").unwrap_or_else(|_| "clang".to_owned());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "strata-datapath: `{clang}` not found: the eBPF programs need the Debian package \
             `clang` (apt-get install -y clang llvm libbpf-dev)"
        ),
    }
    let helpers = Path::new("/usr/include/bpf/bpf_helpers.h");
    if !helpers.exists() {
        panic!(
            "strata-datapath: {} not found: install the Debian package `libbpf-dev` \
             (apt-get install -y libbpf-dev)",
            helpers.display()
        );
    }
    if !Path::new("/usr/include/linux/bpf.h").exists() {
        panic!(
            "strata-datapath: /usr/include/linux/bpf.h not found: install the Debian package \
             `linux-libc-dev` (apt-get install -y linux-libc-dev)"
        );
    }
    // asm/types.h lives under the multiarch directory on Debian.
    let multiarch = Command::new("gcc")
        .arg("-dumpmachine")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| format!("{}-linux-gnu", env::consts::ARCH));

    let object = out.join("policy.o");
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-I")
        .arg(&bpf)
        .arg("-c")
        .arg(bpf.join("policy.c"))
        .arg("-o")
        .arg(&object)
        .output()
        .unwrap_or_else(|e| panic!("strata-datapath: cannot run `{clang}`: {e}"));
    if !output.status.success() {
        panic!(
            "strata-datapath: clang failed to compile bpf/policy.c:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
