//! Starting a container's process in the namespaces the engine prepared.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::setsid;

use netwright_engine::container::Created;
use netwright_engine::ctx::Ctx;

/// Starts the container process: it enters the network namespace, gets its own UTS and
/// mount namespaces, sees its own /etc files, and dies with its monitor.
pub(crate) fn spawn(ctx: &Ctx, created: &Created, detached: bool) -> std::io::Result<std::process::Child> {
    let c = &created.container;
    let dir = &created.files_dir;
    let mut cmd = Command::new(&c.cmd[0]);
    cmd.args(&c.cmd[1..]);
    if detached {
        let log = fs::OpenOptions::new().create(true).append(true).open(ctx.log_path(&c.id))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    }
    let ns_fd = created.netns.as_ref().map(|f| f.as_raw_fd());
    let template_fd = created.mnt_template.as_ref().map(|f| f.as_raw_fd());
    // A sysfs of its own only for a container with its own network namespace.
    let own_sysfs = ns_fd.is_some() && c.network_mode.joined().is_none();
    let hostname = c.hostname.clone();
    let binds: Vec<(CString, CString)> = ["hosts", "hostname", "resolv.conf"]
        .iter()
        .filter(|f| std::path::Path::new("/etc").join(f).exists())
        .map(|f| (cstr(dir.join(f).as_os_str()), cstr(std::path::Path::new("/etc").join(f).as_os_str())))
        .collect();
    let monitor = std::process::id() as i32;
    let netns_dir = cstr(ctx.netns_dir().as_os_str());
    // SAFETY: the closure runs between fork and exec in a single-threaded child; it only
    // makes system calls on data prepared above.
    unsafe {
        cmd.pre_exec(move || {
            setsid().map_err(std::io::Error::from)?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != monitor {
                return Err(std::io::Error::other("monitor exited during start"));
            }
            if let Some(fd) = ns_fd {
                setns(std::os::fd::BorrowedFd::borrow_raw(fd), CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
            }
            // Host mode: the host's network, hostname and files, as Docker does.
            let Some(template_fd) = template_fd else { return Ok(()) };
            // Start from the template (no namespace pins to copy), then take a private copy.
            let template = std::os::fd::BorrowedFd::borrow_raw(template_fd);
            setns(template, CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            nix::unistd::sethostname(&hostname).map_err(std::io::Error::from)?;
            // Slave: the host's unmounts (other containers' namespaces) reach us, ours stay here.
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
                .map_err(std::io::Error::from)?;
            // The template has no namespace pins; should it ever have some, drop them: they
            // would hold other containers' namespaces alive.
            libc::umount2(netns_dir.as_ptr(), libc::MNT_DETACH);
            for (src, dst) in &binds {
                if libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // A sysfs of this namespace, so /sys/class/net lists only the container's devices.
            if !own_sysfs {
                return Ok(());
            }
            let _ = mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            Ok(())
        });
    }
    cmd.spawn()
}

fn cstr(s: &std::ffi::OsStr) -> CString {
    CString::new(s.as_encoded_bytes()).expect("paths have no NUL")
}
