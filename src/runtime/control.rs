//! `stop`, `rm` and `exec` on containers with a process (and `rm -f` on any container).

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, RunError, forward_signals_to, wait_exit_code};
use netwright_engine::container::{self, find, owner_alive, release, release_if_orphaned};
use netwright_engine::ctx::{Ctx, trace};
use netwright_engine::error::{conflict, invalid};
use netwright_engine::model::{Intent, Kind};
use netwright_engine::store::{Container, State, Store};

/// Waits until the container's monitor has exited (and so released everything).
/// A pidfd wakes us the moment it exits, with no polling interval to pay.
fn wait_released(c: &Container, timeout: Duration) -> bool {
    let Some(pid) = c.monitor_pid else { return true };
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return !owner_alive(c);
    }
    // SAFETY: fd was just returned by pidfd_open.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !owner_alive(c) {
        return true; // the PID now belongs to someone else
    }
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left) };
        if n > 0 {
            return true;
        }
        if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

pub fn stop(ctx: &Ctx, store: &mut Store, reference: &str, timeout: Duration) -> Result<Container> {
    netwright_engine::recover::resume(ctx, store)?;
    let c = find(store, reference)?;
    if c.state == State::Exited {
        return Ok(c);
    }
    if let Some(src) = &c.netns_source {
        bail!(invalid(format!(
            "container {} is attached to the runtime's namespace {src} and has no process of netwright's to stop: \
             stop it with its runtime, or release its network with `netwright detach {}`",
            c.name, c.name
        )));
    }
    if let Some(pid) = c.pid {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        if !wait_released(&c, timeout) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if !wait_released(&c, Duration::from_secs(10)) {
        bail!("container {} did not stop: its monitor (pid {:?}) is still running", c.name, c.monitor_pid);
    }
    release_if_orphaned(ctx, store, &c.id)?;
    Ok(c)
}

pub fn remove(ctx: &Ctx, store: &mut Store, reference: &str, force: bool) -> Result<Container> {
    netwright_engine::recover::resume(ctx, store)?;
    let c = find(store, reference)?;
    let attached = c.netns_source.is_some() && c.state != State::Exited;
    let running = attached || (c.state != State::Exited && owner_alive(&c));
    if running && !force {
        let how = if attached { ("is attached to a runtime's namespace", "detach") } else { ("is running", "stop") };
        bail!(conflict(format!(
            "container {} {}: {} it first (`netwright {} {}`) or use `netwright rm -f`",
            c.name, how.0, how.1, how.1, c.name
        )));
    }
    if running {
        // A kill from here on is finished by the next command (netwright_engine::recover).
        store.write(|tx| tx.begin_intent(&Intent::mine(Kind::Remove, &c.id, "")))?;
    }
    if attached {
        // Released and forgotten in one store write: the release deletes the row (and the
        // intent above with it) and the files, as for a --rm container.
        release(ctx, store, &Container { auto_remove: true, ..c.clone() }, 0, None)?;
        return Ok(c);
    } else if running {
        if let Some(pid) = c.pid {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        trace("rm: killed");
        if !wait_released(&c, Duration::from_secs(10)) {
            bail!("container {} did not exit after SIGKILL", c.name);
        }
        trace("rm: monitor gone");
    }
    container::forget(ctx, store, &c)?;
    Ok(c)
}

/// `netwright exec`: runs a command inside a running container's namespaces.
pub fn exec(store: &mut Store, reference: &str, cmd: &[String]) -> Result<i32> {
    let c = find(store, reference)?;
    if let (Some(src), State::Running) = (&c.netns_source, c.state) {
        bail!(invalid(format!(
            "container {} is attached to the runtime's namespace {src} and has no process of netwright's: \
             run the command there with `nsenter --net={src} -- CMD`",
            c.name
        )));
    }
    let pid = match (c.state, c.pid) {
        (State::Running, Some(pid)) if owner_alive(&c) => pid,
        _ => bail!("container {} is not running", c.name),
    };
    if cmd.is_empty() {
        bail!("no command given: write it after `--`, e.g. `netwright exec {} -- ip addr`", c.name);
    }
    let open = |kind: &str| -> Result<OwnedFd> {
        Ok(fs::File::open(format!("/proc/{pid}/ns/{kind}"))
            .with_context(|| format!("container {} is not running", c.name))?
            .into())
    };
    let fds = [
        (open("net")?, CloneFlags::CLONE_NEWNET),
        (open("uts")?, CloneFlags::CLONE_NEWUTS),
        (open("mnt")?, CloneFlags::CLONE_NEWNS),
    ];
    let raw: Vec<(i32, CloneFlags)> = fds.iter().map(|(f, k)| (f.as_raw_fd(), *k)).collect();
    let mut command = Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    // SAFETY: only setns calls between fork and exec, on descriptors kept open by `fds`.
    unsafe {
        command.pre_exec(move || {
            for (fd, kind) in &raw {
                setns(std::os::fd::BorrowedFd::borrow_raw(*fd), *kind).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        let code = if e.raw_os_error() == Some(libc::ENOENT) { EXIT_NOT_FOUND } else { EXIT_NOT_EXECUTABLE };
        anyhow::Error::from(RunError { code, message: format!("cannot start {:?} in {}: {e}", cmd[0], c.name) })
    })?;
    forward_signals_to(child.id() as i32);
    Ok(wait_exit_code(child))
}
