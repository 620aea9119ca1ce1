//! Kernel primitives: netlink (links, addresses, routes), network namespaces, nf_tables
//! and its packet tracing.
pub mod conntrack;
pub mod mntns;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod nftrace;

/// A netlink receive buffer: 64 kB of capacity (a dump's datagrams are up to 32 kB), not
/// zeroed: each receive fills what it returns (`set_len` after `recv`). Zeroing it cost a
/// dozen page faults per socket, and a short command opens several.
pub fn recv_buffer() -> Vec<u8> {
    Vec::with_capacity(64 * 1024)
}

/// One datagram from `fd` into `buf` (up to its capacity), which then holds exactly it.
pub fn recv_into(fd: std::os::fd::RawFd, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    // SAFETY: buf's allocation is ours and writable for its capacity.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.capacity(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the first n bytes (n ≤ capacity).
    unsafe { buf.set_len(n as usize) };
    Ok(n as usize)
}

/// Runs `child` in a grandchild that nobody waits for (init adopts it) and returns once the
/// intermediate child has exited. False when fork failed: `child` did not run.
///
/// # Safety
/// In a multi-threaded process `child` may only make async-signal-safe calls.
pub unsafe fn fork_detached(child: impl FnOnce()) -> bool {
    // SAFETY: per the contract above; the intermediate child only forks and _exits.
    unsafe {
        match libc::fork() {
            0 => {
                if libc::fork() == 0 {
                    child();
                }
                libc::_exit(0);
            }
            pid if pid > 0 => {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                true
            }
            _ => false,
        }
    }
}
pub mod process;
pub mod tc;
pub mod vxlan;
