//! The process runtime: `run` starts a container's process in the namespaces the engine
//! set up, supervises it, and has the engine release the network when it ends.
//!
//! Each container has a monitor: the foreground `netwright run` process itself, or for
//! `-d` a forked child of it that detaches. The monitor waits for the container process
//! and releases its network the moment it ends. The container gets PR_SET_PDEATHSIG, so
//! it cannot outlive a monitor killed with -9; the next netwright command then finds the
//! monitor dead (PID plus start time, so PID reuse cannot fool it) and releases instead.

mod control;
mod spawn;

pub use control::{exec, remove, stop};

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{ForkResult, fork, setsid};

use netwright_engine::container::{self, Spec};
use netwright_engine::ctx::{Ctx, now_nanos, trace};
use netwright_engine::error::one_line;
use netwright_engine::store::{Container, Store};

/// Exit codes `docker run` uses for its own failures.
pub const EXIT_RUN_ERROR: i32 = 125;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// An error of `run` that carries the exit code the CLI should return.
#[derive(Debug)]
pub struct RunError {
    pub code: i32,
    pub message: String,
}
impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for RunError {}

impl RunError {
    /// The exit code an error stands for: a RunError's own, else `default`.
    pub fn code_of(e: &anyhow::Error, default: i32) -> i32 {
        e.downcast_ref::<RunError>().map(|r| r.code).unwrap_or(default)
    }
}

/// The exit code of a failed command other than `run`: a RunError's own, else the engine
/// error's ([`netwright_engine::Error::exit_code`]).
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<RunError>() {
        Some(r) => r.code,
        None => e.downcast_ref::<netwright_engine::Error>().map(|t| t.exit_code()).unwrap_or(1),
    }
}

/// `run --explain`: print the commands equal to what was done, once the container exists.
pub static EXPLAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn explain(ctx: &Ctx, id: &str) {
    if EXPLAIN.load(std::sync::atomic::Ordering::Relaxed) {
        match crate::cli::explain_container(ctx, id) {
            Ok(text) => eprintln!("{text}"),
            Err(e) => eprintln!("netwright: --explain: {e:#}"),
        }
    }
}

/// `netwright run`: returns the exit code to pass through.
pub fn run(ctx: &Ctx, spec: Spec) -> Result<i32> {
    if spec.cmd.is_empty() {
        bail!("no command given: write it after `--`, e.g. `netwright run -- python3 -m http.server 80`");
    }
    container::validate(&spec)?;
    if spec.detach { run_detached(ctx, spec) } else { supervise(ctx, &spec, None) }
}

/// Forks the monitor, which detaches; the parent waits only until the container started
/// (or failed), prints its id and returns.
fn run_detached(ctx: &Ctx, spec: Spec) -> Result<i32> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    std::io::stdout().flush().ok();
    std::io::stderr().flush().ok();
    // SAFETY: netwright is single-threaded here (no runtime, no helper threads), so the
    // child may keep running ordinary Rust code after fork.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => {
            drop(w);
            let mut msg = String::new();
            fs::File::from(r).read_to_string(&mut msg).ok();
            match msg.split_once(' ') {
                Some(("OK", id)) => {
                    explain(ctx, id.trim());
                    let _ = writeln!(crate::cli::Out(std::io::stdout()), "{}", id.trim());
                    Ok(0)
                }
                Some(("ERR", rest)) => {
                    let (code, text) = rest.split_once(' ').unwrap_or(("125", rest));
                    Err(RunError { code: code.parse().unwrap_or(EXIT_RUN_ERROR), message: text.trim().to_string() }
                        .into())
                }
                _ => bail!("the container monitor exited before reporting: see `netwright ps -a`"),
            }
        }
        ForkResult::Child => {
            drop(r);
            let _ = setsid();
            let code = match supervise(ctx, &spec, Some(fs::File::from(w))) {
                Ok(c) => c,
                Err(e) => RunError::code_of(&e, EXIT_RUN_ERROR),
            };
            std::process::exit(code);
        }
    }
}

/// Creates the container, starts its process, waits for it and releases its network.
/// A detached monitor reports "OK id" or "ERR code message" on `report`, then closes it.
fn supervise(ctx: &Ctx, spec: &Spec, report: Option<fs::File>) -> Result<i32> {
    let mut store = ctx.store()?;
    let detached = report.is_some();
    let started = start(ctx, &mut store, spec, detached);
    let (container, child) = match (started, report) {
        (Ok(s), Some(mut r)) => {
            let _ = writeln!(r, "OK {}", s.0.id);
            drop(r);
            // Nothing of ours is left to say: let go of the caller's terminal and pipe.
            redirect_stdio_to_null();
            s
        }
        (Ok(s), None) => {
            explain(ctx, &s.0.id);
            s
        }
        (Err(e), report) => {
            if let Some(mut r) = report {
                let code = RunError::code_of(&e, EXIT_RUN_ERROR);
                let _ = writeln!(r, "ERR {code} {}", one_line(&e));
            }
            return Err(e);
        }
    };
    // The monitor lives as long as the container: hand back what starting it needed (the
    // store's page cache, buffers) while it waits — one of these per container.
    drop(store);
    if detached {
        // Become the small monitor (same process); it execs `_release` at the end.
        let err = hand_over(ctx, &container, child.id() as i32);
        eprintln!("netwright: {err}: monitoring in place");
    }
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    forward_signals_to(child.id() as i32);
    let code = wait_exit_code(child);
    let mut store = ctx.store()?;
    container::release(ctx, &mut store, &container, code, None)?;
    Ok(code)
}

/// The small monitor (monitor/netwright-monitor.rs, built by build.rs): a few kB of
/// freestanding code carried in this binary, so it cannot go missing or be another version.
static SMALL_MONITOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/netwright-monitor"));

/// exec()s the small monitor in this process, from a memfd; returns only if it cannot.
fn hand_over(ctx: &Ctx, c: &Container, child: i32) -> std::io::Error {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::ffi::CString;
    let run = || -> std::io::Result<std::convert::Infallible> {
        let me = std::env::current_exe()?;
        let mut f = fs::File::from(memfd_create(c"netwright-monitor", MFdFlags::MFD_CLOEXEC)?);
        f.write_all(SMALL_MONITOR)?;
        let cstr = |s: &[u8]| CString::new(s).map_err(|_| std::io::Error::from(nix::Error::EINVAL));
        let args = [
            cstr(b"netwright-monitor")?,
            cstr(child.to_string().as_bytes())?,
            cstr(c.id.as_bytes())?,
            cstr(me.as_os_str().as_encoded_bytes())?,
            cstr(ctx.root.as_os_str().as_encoded_bytes())?,
        ];
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| CString::new([k.as_encoded_bytes(), b"=", v.as_encoded_bytes()].concat()).ok())
            .collect();
        Ok(nix::unistd::fexecve(&f, &args, &env)?)
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// `netwright _release ID CODE`: what the small monitor exec()s once the container exited
/// — the release a monitor does, in the monitor's own process.
pub fn release_as_monitor(ctx: &Ctx, id: &str, code: i32) -> Result<()> {
    let mut store = ctx.store()?;
    let Some(c) = store.read(|tx| tx.container(id))?.filter(|c| c.id == id) else { return Ok(()) };
    if c.state == netwright_engine::store::State::Exited {
        return Ok(());
    }
    container::release(ctx, &mut store, &c, code, None)?;
    Ok(())
}

/// Creates the container and starts its process; on failure nothing is left running.
fn start(ctx: &Ctx, store: &mut Store, spec: &Spec, detached: bool) -> Result<(Container, std::process::Child)> {
    // What a killed netwright left half-done is finished or undone first.
    netwright_engine::recover::resume(ctx, store)?;
    let created = container::create(ctx, store, spec)?;
    let child = match spawn::spawn(ctx, &created, detached) {
        Ok(c) => c,
        Err(e) => {
            let code = match e.raw_os_error() {
                Some(libc::ENOENT) => EXIT_NOT_FOUND,
                Some(libc::EACCES) | Some(libc::ENOEXEC) => EXIT_NOT_EXECUTABLE,
                _ => EXIT_RUN_ERROR,
            };
            let message = format!("cannot start {:?}: {e}", created.container.cmd[0]);
            drop(created.netns);
            container::release(ctx, store, &created.container, code, Some(&message))?;
            return Err(RunError { code, message }.into());
        }
    };
    trace("start: process spawned");
    let pid = child.id() as i32;
    store.write(|tx| tx.mark_running(&created.container.id, Some(pid), now_nanos()))?;
    netwright_engine::hostnames::sync_or_warn(ctx, store);
    trace("start: marked running");
    let mut container = created.container;
    container.pid = Some(pid);
    Ok((container, child))
}

pub(crate) fn wait_exit_code(mut child: std::process::Child) -> i32 {
    match child.wait() {
        Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
        Err(_) => EXIT_RUN_ERROR,
    }
}

fn redirect_stdio_to_null() {
    if let Ok(null) = fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; null stays open until then.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Like `docker run`'s sig-proxy: signals sent to the monitor go to the container.
pub(crate) fn forward_signals_to(pid: i32) {
    CHILD_PID.store(pid, Ordering::Relaxed);
    let action = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2] {
        // SAFETY: the handler only reads an atomic and calls kill.
        let _ = unsafe { signal::sigaction(s, &action) };
    }
}
