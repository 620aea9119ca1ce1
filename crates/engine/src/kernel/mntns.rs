//! A template mount namespace for containers.
//!
//! Each container needs its own mount namespace (for its /etc files), and
//! unshare(CLONE_NEWNS) copies every mount of the caller's namespace — including one
//! namespace pin per running container, so the copy grows with the number of
//! containers. Containers instead start from a template: a slave copy of the host's
//! mount tree without netwright's namespace pins, made once per state root and pinned
//! beside them. `netwright reconcile` refreshes it (to pick up new host mounts that did
//! not propagate).

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result, anyhow};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// Opens the template at `pin`, creating it first if needed. `exclude` is unmounted
/// inside the template (netwright's namespace pins).
pub fn ensure_template(pin: &Path, exclude: &Path) -> Result<OwnedFd> {
    if let Some(fd) = open_pinned(pin) {
        return Ok(fd);
    }
    let lock = File::create(pin.with_extension("lock"))?;
    let guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", pin.display()))?;
    if let Some(fd) = open_pinned(pin) {
        return Ok(fd);
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(pin)
        .with_context(|| format!("creating {}", pin.display()))?;
    // A helper thread leaves our fs context, builds the template, and waits while this
    // thread (still in the host's mount namespace) pins it.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, String>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let exclude = exclude.to_path_buf();
    let helper = std::thread::spawn(move || {
        let made = (|| -> Result<i32, String> {
            unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
                .map_err(|e| format!("making / a slave: {e}"))?;
            let _ = umount2(&exclude, MntFlags::MNT_DETACH);
            Ok(nix::unistd::gettid().as_raw())
        })();
        let _ = ready_tx.send(made);
        let _ = done_rx.recv();
    });
    let result = match ready_rx.recv() {
        Ok(Ok(tid)) => {
            let src = format!("/proc/{}/task/{tid}/ns/mnt", std::process::id());
            mount(Some(src.as_str()), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
                if e == nix::errno::Errno::EINVAL && in_private_mount_namespace() {
                    anyhow!(
                        "netwright runs in a private mount namespace (as `ip netns exec` makes one per command), \
                         where its namespace pins do not outlive the command: run it with \
                         `nsenter --net=/run/netns/NAME netwright …` instead"
                    )
                } else {
                    anyhow!("pinning the template mount namespace at {}: {e}", pin.display())
                }
            })
        }
        Ok(Err(e)) => Err(anyhow!("building the template mount namespace: {e}")),
        Err(_) => Err(anyhow!("building the template mount namespace: helper thread died")),
    };
    let _ = done_tx.send(());
    let _ = helper.join();
    drop(guard);
    result?;
    open_pinned(pin).context("the template mount namespace vanished after pinning")
}

/// True when this process's mount namespace is not init's (ip netns exec, unshare -m).
fn in_private_mount_namespace() -> bool {
    let ino = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
    ino("/proc/self/ns/mnt") != ino("/proc/1/ns/mnt")
}

fn open_pinned(pin: &Path) -> Option<OwnedFd> {
    let f = File::open(pin).ok()?;
    // A plain file (never pinned, or a crash before the mount) is not a namespace.
    super::netns::is_nsfs(&f).then(|| f.into())
}

/// Drops the template so the next container start builds a fresh one.
pub fn remove_template(pin: &Path) -> Result<()> {
    super::netns::remove_pinned(pin)
}
