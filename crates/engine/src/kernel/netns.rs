//! Network namespaces pinned by bind mounts under a directory of netwright's own.
//!
//! The directory is made a shared mount point (as `ip netns` does for /run/netns), and
//! containers make their copy of the mount tree a slave of it: when netwright unmounts a
//! namespace file, the unmount reaches every container's mount namespace too, so no
//! container keeps another one's network namespace (and its veth) alive.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// The calling thread's current network namespace.
pub fn current() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/thread-self/ns/net")?.into())
}

pub fn open(path: &Path) -> io::Result<OwnedFd> {
    Ok(File::open(path)?.into())
}

pub fn enter(ns: &impl AsFd) -> io::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Makes `dir` a shared mount point for namespace pins (idempotent; serialized by a lock
/// file beside it): a tmpfs of its own, as `ip netns` and Podman keep theirs under /run. A
/// pin is an empty file to mount a namespace on, made and deleted with every container; on
/// ext4 a new inode is searched for past every inode deleted in the last 30 s (its
/// `recently_deleted` check), so under container churn the pin step of an attach took
/// 0.2–1 ms instead of 0.15–0.2, and ext4's inode search was up to 9 % of all CPU of 100
/// attaches at once right after other churn (`perf`; 0.7 % after a quiet minute). Pins
/// mean nothing after a reboot: nothing is lost by keeping them in memory.
pub fn ensure_shared_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if is_mount_root(dir)? {
        return Ok(());
    }
    let lock = File::create(dir.with_extension("lock"))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map(|guard| {
            let r = (|| -> Result<()> {
                if !is_mount_root(dir)? {
                    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
                    mount(Some("netwright-pins"), dir, Some("tmpfs"), flags, Some("mode=0755,size=1m"))
                        .with_context(|| format!("mounting a tmpfs for namespace pins on {}", dir.display()))?;
                }
                mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
                    .with_context(|| format!("making {} a shared mount", dir.display()))?;
                Ok(())
            })();
            drop(guard);
            r
        })
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", dir.display()))?
}

/// Undoes [`ensure_shared_dir`]: unmounts the directory's own mount(s).
pub fn unmount_dir(dir: &Path) -> Result<()> {
    while dir.exists() && is_mount_root(dir)? {
        nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", dir.display()))?;
    }
    Ok(())
}

/// True when `path` is the root of a mount (statx STATX_ATTR_MOUNT_ROOT, O(1)).
fn is_mount_root(path: &Path) -> Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statx writes into a zeroed struct we own; c is a valid C string.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_BASIC_STATS, &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("statx {}", path.display()));
    }
    Ok(st.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
        && st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0)
}

/// Creates a new network namespace pinned at `path` and returns a handle to it.
/// The calling thread ends up back in the namespace it started in, also on error.
pub fn create_pinned(path: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .with_context(|| format!("creating namespace file {}", path.display()))?;
    let original = current()?;
    let made = (|| -> Result<OwnedFd> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        // (Devices netwright makes in here get no IPv6 link-local unless their network has
        // IPv6: set per device by netlink, drivers::bridge::configure_inside.)
        mount(Some("/proc/thread-self/ns/net"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("pinning namespace at {}", path.display()))?;
        Ok(open(path)?)
    })();
    enter(&original).context("returning to the original network namespace")?;
    if made.is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = fs::remove_file(path);
    }
    made
}

/// Pins an existing namespace (a runtime's) at `path`, as `ip netns attach` does.
pub fn pin_existing(src: &Path, path: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .with_context(|| format!("creating namespace file {}", path.display()))?;
    let made = (|| -> Result<OwnedFd> {
        mount(Some(src), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("pinning namespace {} at {}", src.display(), path.display()))?;
        Ok(open(path)?)
    })();
    if made.is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = fs::remove_file(path);
    }
    made
}

/// Unpins and removes a namespace file; the kernel frees the namespace (and the devices
/// in it) once no process is left inside. Missing files are not an error.
pub fn remove_pinned(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// True when `f` is a namespace file (nsfs), i.e. a live pin rather than a plain file.
pub fn is_nsfs(f: &impl AsFd) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // SAFETY: fstatfs fills a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::fstatfs(f.as_fd().as_raw_fd(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC }
}

/// The kind of namespace an nsfs file is ("network", "mount", ...), by NS_GET_NSTYPE.
pub fn kind(f: &impl AsFd) -> Option<&'static str> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns the CLONE_NEW* flag.
    let t = unsafe { libc::ioctl(f.as_fd().as_raw_fd(), NS_GET_NSTYPE as _) };
    Some(match t {
        libc::CLONE_NEWNET => "network",
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "UTS",
        libc::CLONE_NEWIPC => "IPC",
        libc::CLONE_NEWPID => "PID",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => return None,
    })
}

/// The namespace inode of a namespace file or /proc/PID/ns/net link.
pub fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Runs `f` with the calling thread inside `ns`, then returns to where it was.
pub fn within<T>(ns: &impl AsFd, f: impl FnOnce() -> T) -> Result<T> {
    let original = current()?;
    enter(ns).context("entering network namespace")?;
    let out = f();
    enter(&original).context("returning to the original network namespace")?;
    Ok(out)
}
