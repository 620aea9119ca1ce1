//! `netwright-monitor`: what a `run -d` container's monitor becomes once the container runs.
//!
//! The monitor (a forked `netwright run -d`) starts the container, then exec()s this small
//! program in place: the same process (PID, start time — what `ps`, the sweep and the
//! container's parent-death signal go by), the container still its child, but none of the
//! big binary's relocated pages, heap or stack — a few tens of kB per running container
//! instead of ~590. It forwards the signals a monitor forwards, waits for the container's
//! exit and exec()s `netwright _release ID CODE`, which releases the network as the
//! monitor did. Only libc and std: nothing here may allocate much or hold state.
//!
//!     netwright-monitor CHILD-PID CONTAINER-ID NETWRIGHT-BINARY STATE-ROOT

use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Exit code as a shell reports it: the status, or 128 + the signal.
fn wait_for(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 125;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        125
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(pid), Some(id), Some(netwright), Some(root)) =
        (args.get(1).and_then(|p| p.parse::<i32>().ok()), args.get(2), args.get(3), args.get(4))
    else {
        eprintln!("netwright-monitor: internal to netwright (run by `netwright run -d`)");
        std::process::exit(2);
    };
    CHILD.store(pid, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: a zeroed sigaction with our handler and SA_RESTART; the handler only
        // reads an atomic and calls kill.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = forward as *const () as usize;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
    let code = wait_for(pid);
    // The big binary again, for the release (same process: the store still sees its monitor).
    let err = std::process::Command::new(netwright).args(["--root", root, "_release", id, &code.to_string()]).exec();
    eprintln!("netwright-monitor: cannot run {netwright} to release {id}: {err}");
    std::process::exit(125);
}
