//! Process facts read from /proc: liveness that survives PID reuse.

/// Start time (clock ticks since boot) of a live, non-zombie process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok() // field 22 overall: starttime
}

/// This process's start time, read once (a /proc/PID/stat read costs ~0.05 ms, and a
/// command records it with each intent). Kept with the PID it is for: a forked child
/// reads its own.
pub fn my_start_time() -> Option<u64> {
    use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
    static PID: AtomicI32 = AtomicI32::new(0);
    static START: AtomicU64 = AtomicU64::new(0);
    let me = std::process::id() as i32;
    // (Two threads racing here both store the same answer.)
    let start = START.load(Ordering::Acquire);
    if PID.load(Ordering::Acquire) == me && start != 0 {
        return Some(start);
    }
    let start = start_time(me)?;
    START.store(start, Ordering::Release);
    PID.store(me, Ordering::Release);
    Some(start)
}

/// True when `pid` is the same live process that had `start` as its start time.
pub fn alive(pid: Option<i32>, start: Option<u64>) -> bool {
    match (pid, start) {
        (Some(p), Some(s)) if p > 0 => start_time(p) == Some(s),
        _ => false,
    }
}

/// A daemon's pid file: "PID STARTTIME", so a reused PID is never taken for it.
pub fn write_pid_file(path: &std::path::Path) -> std::io::Result<()> {
    let me = std::process::id() as i32;
    std::fs::write(path, format!("{me} {}\n", start_time(me).unwrap_or(0)))
}

/// The live process a pid file names, if any.
pub fn pid_file_alive(path: &std::path::Path) -> Option<i32> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut it = s.split_whitespace();
    let pid = it.next().and_then(|p| p.parse().ok());
    let start = it.next().and_then(|p| p.parse().ok());
    alive(pid, start).then_some(pid?)
}

/// Starts `netwright ARG` for state root `root` in a session of its own, its output
/// appended to `log`: a daemon that outlives the command starting it.
pub fn spawn_daemon(arg: &str, root: &std::path::Path, log: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg(arg).env("NETWRIGHT_ROOT", root).stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: setsid only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    cmd.spawn().with_context(|| format!("starting netwright {arg}"))?;
    Ok(())
}

/// Who holds UDP `port` in this namespace: "python3 (pid 1234)", or None when no process
/// does (a kernel socket: another VXLAN device, say). From /proc/net/udp and the fds.
pub fn udp_port_holder(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let p = u16::from_str_radix(f.get(1)?.split(':').nth(1)?, 16).ok()?;
            (p == port).then(|| f.get(9).map(|i| i.to_string())).flatten()
        })
        .filter(|i| i != "0")
        .collect();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            if inodes.iter().any(|i| t == format!("socket:[{i}]")) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                return Some(format!("{} (pid {pid})", comm.trim()));
            }
        }
    }
    None
}

/// netwright processes working for the state root `root` (their NETWRIGHT_ROOT names
/// it): (pid, argv). Monitors, the DNS resolver and its supervisor, for benches and tests.
pub fn of_root(root: &std::path::Path) -> Vec<(i32, Vec<String>)> {
    let want = format!("NETWRIGHT_ROOT={}", root.display());
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
        })
        .filter_map(|p| {
            let argv = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let argv: Vec<String> = argv
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            argv.first().is_some_and(|a| a.contains("netwright")).then_some((p, argv))
        })
        .collect()
}

/// A /proc/PID/status or smaps_rollup field in kB (VmRSS, Pss, ...).
pub fn kb(pid: i32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Effective capability check: CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21).
/// One capget(2) (reading /proc/self/status for it cost every command ~0.05 ms).
pub fn has_admin_caps() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 takes a header and two data structs, both valid and writable here.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) };
    let caps = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
    rc == 0 && caps & (1 << 12) != 0 && caps & (1 << 21) != 0
}

/// Runs `f` in a detached grandchild and returns at once: for kernel work whose result
/// nobody waits for (deleting a device takes the kernel 20–40 ms of RCU grace periods).
/// Only from single-threaded processes (the CLI): the grandchild runs ordinary Rust code.
pub fn in_background(f: impl FnOnce()) {
    let mut f = Some(f);
    // SAFETY: the caller is single-threaded, so the grandchild may run Rust code after fork.
    let forked = unsafe {
        crate::kernel::fork_detached(|| {
            // Nobody waits on our copies of the caller's stdout/stderr pipes.
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                for fd in 0..3 {
                    libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
                }
            }
            if let Some(f) = f.take() {
                f();
            }
        })
    };
    if !forked && let Some(f) = f.take() {
        f(); // no fork: do it here
    }
}

/// Lets programs this process starts inherit `fd` (clears close-on-exec, which Rust sets
/// on every descriptor it opens).
pub fn inheritable(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
    Ok(())
}

/// Raises this process's limit on open descriptors as far as the kernel allows
/// (fs.nr_open; root may raise its hard limit), else its soft limit to its hard one (best
/// effort). The resolver holds two sockets per container it serves: a hard limit of 20,000
/// (this VM's) stopped it near 10,000 containers with "Too many open files".
pub fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let most = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(most) = most
        && most > hard
        && setrlimit(Resource::RLIMIT_NOFILE, most, most).is_ok()
    {
        return;
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_process_is_alive_and_reuse_is_detected() {
        let me = std::process::id() as i32;
        let st = super::start_time(me).expect("own start time");
        assert!(super::alive(Some(me), Some(st)));
        assert!(!super::alive(Some(me), Some(st + 1)));
        assert!(!super::alive(None, Some(st)));
    }
}
