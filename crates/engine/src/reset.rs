//! `system reset`: removes every kernel object, mount, process and file a state root made,
//! so that the root can be deleted (and netwright uninstalled) without a trace. The front
//! end first removes the containers (their processes are the runtime's) and the networks;
//! this removes what is left: the DNS resolver and the overlay agent, netwright's nftables tables, devices with
//! the root's tag (the default bridge, strays), the mount-namespace template and the
//! namespace directory's shared mount, and finally the root directory itself.

use std::fs;

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::kernel::netlink::Netlink;
use crate::kernel::{mntns, netns, nftrace, process};

/// What was removed, one line each.
pub fn reset_root(ctx: &Ctx) -> Result<Vec<String>> {
    let mut done = Vec::new();
    // The DNS supervisor first (it would start the resolver again), then the resolver.
    // Only this root's, found by their environment, and never ourselves.
    let me = std::process::id() as i32;
    for (pid, argv) in process::of_root(&ctx.root) {
        let ours = matches!(argv.get(1).map(String::as_str), Some("_dns" | "_resolver" | "_overlay"));
        if ours && pid != me {
            // SAFETY: kill(2) on a PID we just found with this root's helper command line.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            done.push(format!("stopped {} (pid {pid})", argv[1]));
        }
    }
    for table in [crate::firewall::table_name(ctx), crate::observe::trace::trace_table(ctx)] {
        nftrace::remove(&table).with_context(|| format!("removing table ip {table}"))?;
        done.push(format!("removed table ip {table} (if present)"));
    }
    let mut nl = Netlink::open()?;
    for l in nl.links()?.into_iter().filter(|l| crate::plan::is_ours(&ctx.tag, &l.name)) {
        nl.delete_link(l.index).with_context(|| format!("deleting {}", l.name))?;
        done.push(format!("deleted device {}", l.name));
    }
    crate::hostnames::remove(ctx)?;
    mntns::remove_template(&ctx.mnt_template())?;
    let pins = ctx.netns_dir();
    if let Ok(dir) = fs::read_dir(&pins) {
        for entry in dir.flatten() {
            netns::remove_pinned(&entry.path())?;
        }
    }
    netns::unmount_dir(&pins)?;
    fs::remove_dir_all(&ctx.root).with_context(|| format!("removing {}", ctx.root.display()))?;
    done.push(format!("removed {}", ctx.root.display()));
    Ok(done)
}
