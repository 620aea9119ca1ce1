//! Reconcile: bring the kernel back in line with the store after crashes, reboots or
//! an admin's hand. Idempotent; safe to run at any time, also concurrently.

use std::collections::HashSet;
use std::fs;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::drivers::bridge;
use crate::kernel::{netlink::Netlink, netns};
use crate::plan;
use crate::runtime;
use crate::store::{State, Store};

#[derive(Debug, Default)]
pub struct Report {
    pub released: Vec<String>,
    pub bridges_restored: usize,
    pub stray_devices: Vec<String>,
    pub stray_namespaces: Vec<String>,
}

pub fn reconcile(ctx: &Ctx, store: &mut Store, nl: &mut Netlink) -> Result<Report> {
    let mut report = Report { released: runtime::sweep(ctx, store)?, ..Default::default() };
    // Rebuilt on the next start, from the host's mounts as they are now.
    crate::kernel::mntns::remove_template(&ctx.mnt_template())?;
    crate::firewall::sync_all(ctx, store)?;
    // A probe killed mid-way leaves its marking table behind.
    crate::kernel::nftrace::remove(&crate::observe::trace::trace_table(ctx))?;
    let (networks, containers, endpoints) =
        store.read(|tx| Ok((tx.networks()?, tx.containers()?, tx.all_endpoints()?)))?;
    let links = nl.links()?;
    let names: HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
    for n in networks.iter().filter(|n| n.driver == "macvlan") {
        crate::drivers::macvlan::ensure_shim(nl, n)?;
    }
    for n in networks.iter().filter(|n| crate::network::bridge_expected(n, &endpoints)) {
        if !names.contains(n.bridge.as_str()) {
            report.bridges_restored += 1;
        }
        bridge::ensure_bridge(nl, &plan::network(n))?;
    }
    let wanted: HashSet<&str> = networks.iter().map(|n| n.bridge.as_str())
        .chain(endpoints.iter().filter(|e| e.ip.is_some()).map(|e| e.host_ifname.as_str()))
        .collect();
    for l in &links {
        if plan::is_ours(&ctx.tag, &l.name) && !wanted.contains(l.name.as_str()) {
            nl.delete_link(l.index)?;
            report.stray_devices.push(l.name.clone());
        }
    }
    let live: HashSet<String> = containers.iter().filter(|c| c.state != State::Exited)
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
    let known: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    if let Ok(dir) = fs::read_dir(ctx.root.join("containers")) {
        for entry in dir.flatten() {
            if !known.contains(entry.file_name().to_string_lossy().as_ref()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(report)
}
