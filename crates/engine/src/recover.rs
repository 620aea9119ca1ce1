//! Crash recovery, in one place: bring the kernel back in line with the store after
//! crashes, reboots or an admin's hand. Idempotent; safe to run at any time, also
//! concurrently.
//!
//! 1. sweep: release containers whose owner (monitor process or runtime namespace) died;
//! 2. the firewall is rebuilt from the store (one atomic nf_tables batch);
//! 3. the host's devices converge on [`crate::desired`] through [`crate::apply`]: missing
//!    bridges re-made and their ports enslaved again, hand-deleted veths re-made into their
//!    containers, strays of this root deleted;
//! 4. namespace pins and container directories the store does not know are removed.

use std::collections::HashSet;
use std::fs;

use anyhow::Result;

use crate::apply::{self, Action, NetlinkKernel};
use crate::ctx::Ctx;
use crate::desired::{self, Snapshot};
use crate::kernel::{netlink::Netlink, netns};
use crate::model::Driver;
use crate::store::{State, Store};

#[derive(Debug, Default)]
pub struct Report {
    pub released: Vec<String>,
    pub bridges_restored: usize,
    pub ports_repaired: usize,
    pub stray_devices: Vec<String>,
    pub stray_namespaces: Vec<String>,
}

/// The store's view of a root, read in one transaction.
pub fn snapshot(store: &mut Store) -> Result<Snapshot> {
    store.read(|tx| {
        Ok(Snapshot { networks: tx.networks()?, containers: tx.containers()?, endpoints: tx.all_endpoints()? })
    })
}

pub fn reconcile(ctx: &Ctx, store: &mut Store, nl: &mut Netlink) -> Result<Report> {
    let mut report = Report { released: crate::container::sweep(ctx, store)?, ..Default::default() };
    // Rebuilt on the next start, from the host's mounts as they are now.
    crate::kernel::mntns::remove_template(&ctx.mnt_template())?;
    crate::firewall::sync_all(ctx, store)?;
    // A probe killed mid-way leaves its marking table behind.
    crate::kernel::nftrace::remove(&crate::observe::trace::trace_table(ctx))?;
    let snap = snapshot(store)?;
    for n in snap.networks.iter().filter(|n| n.driver == Driver::Macvlan) {
        crate::drivers::macvlan::ensure_shim(nl, n)?;
    }
    let desired = desired::host(&snap);
    for a in apply::converge(&ctx.tag, &desired, &mut NetlinkKernel { ctx, nl })? {
        match a {
            Action::EnsureBridge { .. } => report.bridges_restored += 1,
            Action::Enslave { .. } | Action::SetUp { .. } | Action::RecreateVeth { .. } => report.ports_repaired += 1,
            Action::DeleteStray { name } => report.stray_devices.push(name),
        }
    }
    let live: HashSet<String> = snap
        .containers
        .iter()
        .filter(|c| c.state != State::Exited)
        .map(|c| ctx.netns_path(&c.id).file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    if let Ok(dir) = fs::read_dir(ctx.netns_dir()) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                netns::remove_pinned(&entry.path())?;
                report.stray_namespaces.push(name);
            }
        }
    }
    let known: HashSet<&str> = snap.containers.iter().map(|c| c.id.as_str()).collect();
    if let Ok(dir) = fs::read_dir(ctx.root.join("containers")) {
        for entry in dir.flatten() {
            if !known.contains(entry.file_name().to_string_lossy().as_ref()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(report)
}
