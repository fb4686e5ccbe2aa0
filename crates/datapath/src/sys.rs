//! The only module allowed `unsafe`: plain-data marker impls for aya and the few system calls
//! the datapath needs (bpffs mount check and mount). Each block says why it is sound.
#![allow(unsafe_code)]

use std::{ffi::CString, io, path::Path};

use crate::abi::{
    Config, Counter, CtKey, CtValue, Endpoint, IpcacheValue, PolicyKeyData, PolicyValue,
};

// SAFETY: every type below is #[repr(C)], Copy, made only of integers and integer arrays, with
// no padding bytes (checked by `abi_types_have_no_padding`), so any bit pattern is a valid value
// and the bytes the kernel reads or writes are exactly the fields.
unsafe impl aya::Pod for Endpoint {}
// SAFETY: as above.
unsafe impl aya::Pod for IpcacheValue {}
// SAFETY: as above.
unsafe impl aya::Pod for PolicyKeyData {}
// SAFETY: as above.
unsafe impl aya::Pod for PolicyValue {}
// SAFETY: as above.
unsafe impl aya::Pod for CtKey {}
// SAFETY: as above.
unsafe impl aya::Pod for CtValue {}
// SAFETY: as above.
unsafe impl aya::Pod for Counter {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}

/// Magic number of the BPF filesystem (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a BPF filesystem.
pub(crate) fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statfs is a valid value of a plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string alive for the call and `st` is a valid, writable
    // statfs the kernel fills in.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts a BPF filesystem at `path` (which must exist).
pub(crate) fn mount_bpffs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let fstype = c"bpf";
    // SAFETY: all pointers are NUL-terminated strings alive for the call; data is null, which
    // mount(2) accepts for bpffs.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock of `bpf_ktime_get_ns`).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A failed batch: the error and how many elements the kernel processed before it.
pub(crate) struct BatchError {
    pub(crate) error: io::Error,
    pub(crate) done: usize,
}

fn batch(
    cmd: libc::c_long,
    fd: std::os::fd::BorrowedFd<'_>,
    keys: &[u8],
    values: Option<&[u8]>,
    count: usize,
) -> Result<(), BatchError> {
    use std::os::fd::AsRawFd;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: count as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid batch attribute alive for the call; `keys` (and `values`)
    // hold `count` keys (values) of the map's key (value) size, as the callers guarantee, and
    // the kernel only reads them; it writes back only `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(BatchError {
            error: io::Error::last_os_error(),
            done: attr.count as usize,
        });
    }
    Ok(())
}

/// Inserts or overwrites `count` entries in one system call (`BPF_MAP_UPDATE_BATCH`).
pub(crate) fn map_update_batch(
    fd: std::os::fd::BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> Result<(), BatchError> {
    batch(BPF_MAP_UPDATE_BATCH, fd, keys, Some(values), count)
}

/// Deletes `count` keys in one system call (`BPF_MAP_DELETE_BATCH`).
pub(crate) fn map_delete_batch(
    fd: std::os::fd::BorrowedFd<'_>,
    keys: &[u8],
    count: usize,
) -> Result<(), BatchError> {
    batch(BPF_MAP_DELETE_BATCH, fd, keys, None, count)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Creates a named network namespace: an empty file at `path` on which a fresh namespace is
/// bind-mounted (what `ip netns add` does). The calling thread is not moved.
pub(crate) fn create_netns(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let target = cstring(path)?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: unshare has no memory preconditions; it only moves this short-lived
            // thread into a new network namespace (allowed in a multi-threaded process).
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let source = c"/proc/thread-self/ns/net";
            // SAFETY: NUL-terminated strings alive for the call; null fstype and data are
            // accepted for a bind mount.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Unmounts and removes a named network namespace created by [`create_netns`].
pub(crate) fn delete_netns(path: &Path) -> io::Result<()> {
    let target = cstring(path)?;
    // SAFETY: NUL-terminated string alive for the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let umount = if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    match std::fs::remove_file(path) {
        Ok(()) => umount,
        Err(e) if e.kind() == io::ErrorKind::NotFound => umount,
        Err(e) => Err(e),
    }
}

/// Moves the calling thread into the network namespace bound at `path`.
pub(crate) fn enter_netns(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    // SAFETY: the fd is valid for the call (owned by `file`); setns only changes this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Event, IpcacheKey, Layout, PolicyKey};

    fn no_padding<T: Layout>() {
        let sum: usize = T::fields().iter().map(|f| f.size).sum();
        assert_eq!(sum, T::size(), "{} has padding", T::C_NAME);
    }

    #[test]
    fn abi_types_have_no_padding() {
        no_padding::<Endpoint>();
        no_padding::<IpcacheKey>();
        no_padding::<IpcacheValue>();
        no_padding::<PolicyKey>();
        no_padding::<PolicyValue>();
        no_padding::<CtKey>();
        no_padding::<CtValue>();
        no_padding::<Counter>();
        no_padding::<Config>();
        no_padding::<Event>();
        assert_eq!(std::mem::size_of::<PolicyKeyData>(), 12);
    }
}
