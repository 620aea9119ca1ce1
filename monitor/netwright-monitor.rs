//! `netwright-monitor`: what a `run -d` container's monitor becomes once the container runs.
//!
//! The monitor (a forked `netwright run -d`) starts the container, then exec()s this
//! program in place (from a memfd: it is built by build.rs and carried inside the
//! `netwright` binary): the same process — PID and start time, what `ps`, the sweep and
//! the container's parent-death signal go by —, the container still its child. It forwards
//! the signals a monitor forwards, waits for the container's exit and exec()s
//! `netwright --root ROOT _release ID CODE`, which releases the network as the monitor did.
//!
//! Why it is written like this: one of these runs per container, for the container's whole
//! life, so what it costs is multiplied by thousands. It is freestanding — no std, no libc,
//! no dynamic loader, a static non-PIE executable of a few kB with raw system calls — and
//! all it keeps is its stack: ~12 kB PSS per running container (the same loop on std and a
//! dynamically linked libc kept ~124 kB of relocated and private pages).
//!
//! It never handles a signal: the forwarded ones and SIGCHLD are blocked and taken one at
//! a time with rt_sigtimedwait, so there is no handler (and no sigreturn trampoline) to
//! get right. The old mask is put back before the exec.
//!
//!     netwright-monitor CHILD-PID CONTAINER-ID NETWRIGHT-BINARY STATE-ROOT
//!
//! Built by build.rs with `-C panic=abort`, `-nostartfiles -nostdlib -static -no-pie`;
//! x86_64 and aarch64 Linux (the system call numbers below are the kernel's for each).

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

/// The kernel's system call numbers, per architecture.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const WRITE: usize = 1;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PRCTL: usize = 157;
    pub const EXIT_GROUP: usize = 231;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const WRITE: usize = 64;
    pub const EXIT_GROUP: usize = 94;
    pub const KILL: usize = 129;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const PRCTL: usize = 167;
    pub const EXECVE: usize = 221;
    pub const WAIT4: usize = 260;
}

// The entry point: hand the initial stack pointer (argc, argv..., NULL, envp..., NULL)
// to `start`, on a 16-byte aligned stack as the C ABI wants it.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, xzr",
    "mov x0, sp",
    "bl {start}",
    "brk #0",
    start = sym start,
);

/// One system call with up to four arguments; the kernel's return value (−errno on error).
///
/// # Safety
/// The arguments must be what system call `n` expects (pointers to live memory).
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux system call convention; rcx and r11 are clobbered by
    // `syscall`, memory the kernel writes is what the caller passed.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// One system call with up to four arguments; the kernel's return value (−errno on error).
///
/// # Safety
/// The arguments must be what system call `n` expects (pointers to live memory).
#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 Linux system call convention (number in x8, result in x0).
    unsafe {
        asm!("svc #0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b, in("x2") c,
             in("x3") d, options(nostack));
    }
    ret
}

const EINTR: isize = 4;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const WNOHANG: usize = 1;
const PR_SET_NAME: usize = 15;
const SIGCHLD: usize = 17;
/// What a monitor forwards to its container: SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2,
/// SIGTERM (the same numbers on both architectures).
const FORWARDED: [usize; 6] = [1, 2, 3, 10, 12, 15];
/// Exit code when the container's end cannot be known, as Docker's 125.
const UNKNOWN: usize = 125;

fn say(msg: &[u8]) {
    // SAFETY: write(2) from a live slice.
    unsafe { syscall(nr::WRITE, 2, msg.as_ptr() as usize, msg.len(), 0) };
}

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes no pointer; it does not return (were it to, again).
        unsafe { syscall(nr::EXIT_GROUP, code, 0, 0, 0) };
    }
}

/// The decimal process id in the NUL-terminated string at `p` (read byte by byte, at most
/// 11: no strlen — there is no libc to provide one).
///
/// # Safety
/// `p` must point to a NUL-terminated string.
unsafe fn parse_pid(p: *const u8) -> Option<usize> {
    let mut pid = 0usize;
    for i in 0..11 {
        // SAFETY: the caller's promise; reading stops at the NUL.
        match unsafe { *p.add(i) } {
            0 => return (i > 0 && pid > 0).then_some(pid),
            b @ b'0'..=b'9' => pid = pid * 10 + usize::from(b - b'0'),
            _ => return None,
        }
    }
    None
}

/// Exit code as a shell reports it: the status, or 128 + the signal.
fn exit_code(status: u32) -> usize {
    let sig = (status & 0x7f) as usize;
    match sig {
        0 => ((status >> 8) & 0xff) as usize,
        0x7f => UNKNOWN, // stopped, not ended
        s => 128 + s,
    }
}

/// Waits for `pid` while forwarding the blocked signals to it; its exit code.
fn wait_forwarding(pid: usize, set: &u64) -> usize {
    let mut status: u32 = 0;
    loop {
        // SAFETY: wait4 writes the status into a live local.
        let r = unsafe { syscall(nr::WAIT4, pid, &mut status as *mut u32 as usize, WNOHANG, 0) };
        if r == pid as isize {
            return exit_code(status);
        }
        if r < 0 && r != -EINTR {
            return UNKNOWN; // not our child (any more): nothing to wait for
        }
        // SAFETY: the set is a live u64 (the kernel's sigset on Linux is 8 bytes); no
        // siginfo, no timeout.
        let sig = unsafe { syscall(nr::RT_SIGTIMEDWAIT, set as *const u64 as usize, 0, 0, 8) };
        if sig > 0 && sig as usize != SIGCHLD {
            // SAFETY: kill takes no pointer.
            unsafe { syscall(nr::KILL, pid, sig as usize, 0, 0) };
        }
    }
}

/// `code` in decimal, NUL-terminated, in `buf`.
fn decimal(mut code: usize, buf: &mut [u8; 4]) -> *const u8 {
    let mut i = 3;
    buf[3] = 0;
    loop {
        i -= 1;
        buf[i] = b'0' + (code % 10) as u8;
        code /= 10;
        if code == 0 || i == 0 {
            break;
        }
    }
    buf[i..].as_ptr()
}

/// # Safety
/// `sp` is the process's initial stack pointer, as the kernel laid it out.
unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the kernel's layout: argc, then argc pointers, NULL, then the environment.
    let (argc, argv, envp) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        (argc, argv, argv.add(argc + 1))
    };
    let arg = |i: usize| -> Option<*const u8> {
        // SAFETY: i < argc: a pointer of argv.
        (i < argc).then(|| unsafe { *argv.add(i) })
    };
    let (Some(pid), Some(id), Some(netwright), Some(root)) = (arg(1), arg(2), arg(3), arg(4)) else {
        say(b"netwright-monitor: internal to netwright (run by `netwright run -d`)\n");
        exit(2);
    };
    // SAFETY: argv strings are NUL-terminated and live for the whole process.
    let Some(pid) = (unsafe { parse_pid(pid) }) else {
        say(b"netwright-monitor: the first argument is the container's process id\n");
        exit(2);
    };
    // Executed from a memfd, the process would be named after the descriptor ("3"):
    // give it its name back, for ps and top.
    // SAFETY: prctl reads a NUL-terminated name.
    unsafe { syscall(nr::PRCTL, PR_SET_NAME, c"netwright-monit".as_ptr() as usize, 0, 0) };
    // SIGCHLD must not be ignored (an ignored SIGCHLD reaps the child for us and wait4
    // would never see its status): back to the default. The kernel's sigaction is
    // handler, flags, restorer, mask on both architectures.
    let default = [0usize; 4];
    // SAFETY: a live, zeroed kernel sigaction (SIG_DFL); no old action asked for.
    unsafe { syscall(nr::RT_SIGACTION, SIGCHLD, default.as_ptr() as usize, 0, 8) };
    let set: u64 = FORWARDED.iter().chain([SIGCHLD].iter()).fold(0, |s, &sig| s | 1 << (sig - 1));
    let mut old: u64 = 0;
    // SAFETY: both sets are live u64s (8 bytes, the size passed).
    unsafe { syscall(nr::RT_SIGPROCMASK, SIG_BLOCK, &set as *const u64 as usize, &mut old as *mut u64 as usize, 8) };
    let code = wait_forwarding(pid, &set);
    // The big binary again, for the release (same process: the store still sees its
    // monitor), with the signal mask it had.
    // SAFETY: a live u64 set, no old set asked for.
    unsafe { syscall(nr::RT_SIGPROCMASK, SIG_SETMASK, &old as *const u64 as usize, 0, 8) };
    let mut digits = [0u8; 4];
    let args: [*const u8; 7] = [
        netwright,
        c"--root".as_ptr().cast(),
        root,
        c"_release".as_ptr().cast(),
        id,
        decimal(code, &mut digits),
        core::ptr::null(),
    ];
    // SAFETY: NULL-terminated arrays of NUL-terminated strings, all live; execve returns
    // only on failure.
    unsafe { syscall(nr::EXECVE, netwright as usize, args.as_ptr() as usize, envp as usize, 0) };
    say(b"netwright-monitor: cannot run netwright to release the container\n");
    exit(UNKNOWN)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(UNKNOWN)
}
