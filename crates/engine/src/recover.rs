//! Crash recovery, in one place: bring the kernel back in line with the store after
//! crashes, reboots or an admin's hand. Idempotent; safe to run at any time, also
//! concurrently.
//!
//! Every command that changes anything first calls [`resume`] (through [`sweep`] or the
//! [`crate::Engine`]); `netwright reconcile` runs everything below:
//!
//! 1. sweep: release containers whose owner (monitor process or runtime namespace) died;
//! 2. the firewall is rebuilt from the store (one atomic nf_tables batch);
//! 3. the host's devices converge on [`crate::desired`] through [`crate::apply`]: missing
//!    bridges re-made and their ports enslaved again, hand-deleted veths re-made into their
//!    containers, strays of this root deleted;
//! 4. namespace pins and container directories the store does not know are removed.
//!
//! ## Intents: operations that take several steps
//!
//! An operation that changes the kernel in several steps (create or attach a container,
//! connect or disconnect a network, remove a container or a network) records an *intent* — what it is
//! doing, to what, and which process does it — in the same store transaction as its first
//! write, and removes it in the same transaction as its last. A process killed in between
//! leaves the intent behind; the next netwright command that changes anything (and every
//! sweep) finds it, sees that its process is gone, and finishes or undoes the operation:
//!
//! | intent       | what the next command does                                          |
//! |--------------|---------------------------------------------------------------------|
//! | create       | undo: release what was made (ports, names, namespace) and forget it |
//! | connect      | undo: delete the interface if it was made, and the endpoint         |
//! | remove       | finish: release (idempotent) and forget the container               |
//! | disconnect   | finish: delete the interface, the endpoint (and its ports), DNS     |
//! | network-rm   | finish: delete the network's devices, rebuild the firewall          |
//!
//! Checking costs one query on a table that is almost always empty.

use std::collections::HashSet;
use std::fs;

use anyhow::Result;

use crate::apply::{self, Action, NetlinkKernel};
use crate::ctx::Ctx;
use crate::desired::{self, Snapshot};
use crate::kernel::{netlink::Netlink, netns};
use crate::model::{Driver, Intent, Kind};
use crate::store::{State, Store};

#[derive(Debug, Default)]
pub struct Report {
    pub released: Vec<String>,
    pub bridges_restored: usize,
    pub ports_repaired: usize,
    pub stray_devices: Vec<String>,
    pub stray_namespaces: Vec<String>,
    /// Overlay forwarding entries (FDB + neighbour) written or deleted to match etcd.
    pub overlay_entries: usize,
    /// Routes to containers on segment bridges that were missing.
    pub routes_restored: usize,
}

/// Makes the missing routes of [`desired::segment_routes`] (chunked: one batch of acks
/// must fit the socket's buffer); returns how many there were.
fn restore_segment_routes(nl: &mut Netlink, snap: &Snapshot) -> Result<usize> {
    for n in desired::segmented(snap) {
        crate::drivers::bridge::answer_for_others(&n.bridge);
    }
    let missing = missing_segment_routes(nl, snap)?;
    for (bridge, ips) in by_bridge(missing.iter().cloned()) {
        let Some(l) = nl.link_by_name(&bridge)? else { continue };
        for chunk in ips.chunks(256) {
            crate::drivers::bridge::segment_routes(nl, l.index, chunk, true)?;
        }
    }
    // The IPv6 proxy entries, all made again (idempotent, like the IPv6 routes).
    for (parent, ips) in by_bridge(desired::ndp_proxies(snap)) {
        for chunk in ips.chunks(256) {
            crate::drivers::bridge::ndp_proxies(nl, &parent, chunk, true)?;
        }
    }
    Ok(missing.len())
}

/// (address, bridge) pairs grouped by bridge, in the order bridges first appear: one
/// netlink batch per bridge.
fn by_bridge<A>(pairs: impl IntoIterator<Item = (A, String)>) -> Vec<(String, Vec<A>)> {
    let mut out: Vec<(String, Vec<A>)> = Vec::new();
    for (addr, bridge) in pairs {
        match out.iter_mut().find(|(b, _)| *b == bridge) {
            Some((_, v)) => v.push(addr),
            None => out.push((bridge, vec![addr])),
        }
    }
    out
}

/// The routes of [`desired::segment_routes`] the kernel does not have (IPv4 checked
/// against the route table; IPv6 ones are always made again, idempotently).
pub fn missing_segment_routes(nl: &mut Netlink, snap: &Snapshot) -> Result<Vec<(std::net::IpAddr, String)>> {
    let want = desired::segment_routes(snap);
    if want.is_empty() {
        return Ok(want);
    }
    let names: std::collections::HashMap<u32, String> = nl.links()?.into_iter().map(|l| (l.index, l.name)).collect();
    let have: HashSet<(std::net::IpAddr, &str)> = nl
        .routes_v4()?
        .iter()
        .filter_map(|r| match (r.dst, r.oif.and_then(|i| names.get(&i))) {
            (Some(ipnet::IpNet::V4(d)), Some(dev)) if d.prefix_len() == 32 => Some((d.addr().into(), dev.as_str())),
            _ => None,
        })
        .collect();
    Ok(want.into_iter().filter(|(ip, dev)| ip.is_ipv6() || !have.contains(&(*ip, dev.as_str()))).collect())
}

/// The store's view of a root, read in one transaction.
pub fn snapshot(store: &mut Store) -> Result<Snapshot> {
    store.read(|tx| {
        Ok(Snapshot { networks: tx.networks()?, containers: tx.containers()?, endpoints: tx.all_endpoints()? })
    })
}

/// Finishes or undoes interrupted operations, then releases containers whose owner died.
/// Returns what was done (resumed operations, released container names).
pub fn sweep(ctx: &Ctx, store: &mut Store) -> Result<Vec<String>> {
    let mut done = resume(ctx, store)?;
    done.extend(crate::container::sweep(ctx, store)?);
    Ok(done)
}

pub fn reconcile(ctx: &Ctx, store: &mut Store, nl: &mut Netlink) -> Result<Report> {
    let mut report = Report { released: sweep(ctx, store)?, ..Default::default() };
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
            Action::EnsureBridge { .. } | Action::EnsureVxlan { .. } | Action::EnsureSegment { .. } => {
                report.bridges_restored += 1
            }
            Action::Enslave { .. } | Action::SetUp { .. } | Action::RecreateVeth { .. } => report.ports_repaired += 1,
            Action::DeleteStray { name } => report.stray_devices.push(name),
        }
    }
    // Big networks: the host's routes to the containers on segment bridges (a re-made
    // segment bridge comes back without them), and ARP answered across segments.
    report.routes_restored = restore_segment_routes(nl, &snap)?;
    // Services: VIPs back on their (possibly re-made) bridges, backends as the containers are.
    crate::services::ensure_vips(store, nl)?;
    let all: Vec<String> = snap.networks.iter().map(|n| n.id.clone()).collect();
    crate::services::refresh(ctx, store, crate::services::Scope::Networks(&all))?;
    if crate::overlay::Config::joined(ctx) {
        // The kernel's entries made to match the mirror; then the agent (started again if it
        // died) re-reads etcd and converges on anything newer.
        report.overlay_entries = crate::overlay::sync::sync_kernel(store, nl)?;
        crate::overlay::announce(ctx);
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

/// Finishes or undoes the operations of processes that died half-way. Returns what was
/// done, one line each.
pub fn resume(ctx: &Ctx, store: &mut Store) -> Result<Vec<String>> {
    let intents = store.read(|tx| tx.intents())?;
    let mut done = Vec::new();
    for i in intents.into_iter().filter(Intent::abandoned) {
        if let Some(line) = resume_one(ctx, store, &i)? {
            done.push(line);
        }
        store.write(|tx| tx.end_intent(i.kind, &i.target))?;
    }
    Ok(done)
}

fn resume_one(ctx: &Ctx, store: &mut Store, i: &Intent) -> Result<Option<String>> {
    match i.kind {
        Kind::Create | Kind::Remove => {
            let Some(mut c) = store.read(|tx| tx.container(&i.target))?.filter(|c| c.id == i.target) else {
                return Ok(None);
            };
            if i.kind == Kind::Create && c.state != State::Created {
                return Ok(None); // it got as far as running: nothing half-done
            }
            if c.state != State::Exited {
                c.pid = None; // never signal a PID that may have been reused
                crate::container::release(ctx, store, &c, 137, Some("interrupted: its netwright process was killed"))?;
            }
            crate::container::forget(ctx, store, &c)?;
            Ok(Some(format!("{} of container {} interrupted: finished", i.kind.as_str(), c.name)))
        }
        Kind::Connect => {
            // Undo: the interface may or may not have been made; the endpoint goes.
            crate::connect::finish_disconnect(ctx, store, &i.detail, &i.target)?;
            Ok(Some(format!("connect of container {} interrupted: undone", &i.detail[..12.min(i.detail.len())])))
        }
        Kind::Disconnect => {
            crate::connect::finish_disconnect(ctx, store, &i.detail, &i.target)?;
            Ok(Some(format!("disconnect of container {} interrupted: finished", &i.detail[..12.min(i.detail.len())])))
        }
        Kind::NetworkRemove => {
            crate::network::finish_remove(ctx, store, &i.target, &i.detail)?;
            Ok(Some(format!("removal of network {} interrupted: finished", i.detail)))
        }
    }
}

#[cfg(test)]
mod intent_tests {
    use crate::model::{Intent, Kind};

    #[test]
    fn kinds_round_trip_and_a_dead_process_is_abandoned() {
        for k in [Kind::Create, Kind::Connect, Kind::Remove, Kind::Disconnect, Kind::NetworkRemove] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        let mine = Intent::mine(Kind::Create, "c", "");
        assert!(!mine.abandoned(), "this process is alive");
        let gone = Intent { pid_start: mine.pid_start + 1, ..mine };
        assert!(gone.abandoned(), "same PID, another start time: another process");
    }
}
