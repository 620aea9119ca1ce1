//! Keeping this host in step with etcd: overlay networks and other hosts' endpoints mirrored
//! into the store, their forwarding entries into the kernel — each a diff, so a sync after any
//! crash or churn leaves exactly what etcd says.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use super::{Cluster, EndpointRecord, NetworkRecord, PREFIX};
use crate::ctx::Ctx;
use crate::kernel::netlink::Netlink;
use crate::kernel::vxlan::Entry;
use crate::model::{Driver, State};
use crate::store::{Network, Store};
use netlink_packet_route::RouteNetlinkMessage;

/// What changed in the store's overlay networks.
#[derive(Debug, Default)]
pub struct NetworkChanges {
    pub added: Vec<Network>,
    pub removed: Vec<Network>,
}

/// Mirrors the cluster's overlay networks into the store: new ones appear (on every host,
/// without devices until a container uses them), deleted ones go unless this host still has
/// containers on them.
pub fn mirror_networks(ctx: &Ctx, store: &mut Store, recs: &[NetworkRecord]) -> Result<NetworkChanges> {
    store.write(|tx| {
        let mut ch = NetworkChanges::default();
        let local = tx.networks()?;
        for r in recs {
            if local.iter().any(|n| n.id == r.id) {
                continue;
            }
            if local.iter().any(|n| n.name == r.name) {
                // A local network holds the name: it stays; the cluster's is not usable here.
                eprintln!("netwright: overlay network {} is shadowed by a local network of that name", r.name);
                continue;
            }
            let n = super::network::to_local(ctx, r);
            tx.insert_network(&n)?;
            ch.added.push(n);
        }
        for n in local.iter().filter(|n| n.driver == Driver::Overlay && !recs.iter().any(|r| r.id == n.id)) {
            if tx.active_endpoints_on(&n.id)?.is_empty() {
                tx.delete_network(&n.id)?;
                ch.removed.push(n.clone());
            }
        }
        Ok(ch)
    })
}

/// A command's view of the cluster's networks before it resolves one (`network ls` on h2
/// right after `network create` on h1). Unreachable etcd: the store's mirror stands.
pub fn pull_networks(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let Some(cl) = Cluster::open(ctx)? else { return Ok(()) };
    let Ok((kvs, _)) = cl.kv.list(&format!("{PREFIX}networks/")) else { return Ok(()) };
    let ch = mirror_networks(ctx, store, &super::records(&kvs, PREFIX))?;
    remove_devices(ctx, store, &ch.removed)
}

/// The devices of overlay networks that left the store.
pub fn remove_devices(ctx: &Ctx, store: &mut Store, removed: &[Network]) -> Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    let mut nl = Netlink::open()?;
    for n in removed {
        crate::drivers::overlay::remove_devices(&mut nl, n)?;
    }
    crate::firewall::sync_all(ctx, store)
}

/// Replaces the store's mirror of other hosts' endpoints; true if it changed.
pub fn mirror_remotes(store: &mut Store, mut eps: Vec<EndpointRecord>) -> Result<bool> {
    eps.sort_by(|a, b| (&a.network_id, &a.id).cmp(&(&b.network_id, &b.id)));
    store.write(|tx| {
        if tx.remote_endpoints()? == eps {
            return Ok(false);
        }
        tx.set_remote_endpoints(&eps)?;
        Ok(true)
    })
}

/// This host's endpoints on overlay networks, as peers should see them: those of containers
/// that are created or running and whose owner is alive. An endpoint on a segment bridge
/// (crate::plan::Segment) is reached through this host's routing: peers get the MAC of the
/// network's bridge here (`bridge_mac`; not yet known: not published yet), which takes the
/// frames in and routes them to the segment — so several records can share one MAC.
pub fn own_endpoints(
    store: &mut Store,
    cfg: &super::Config,
    mut bridge_mac: impl FnMut(&crate::store::Network) -> Option<[u8; 6]>,
) -> Result<Vec<EndpointRecord>> {
    store.read(|tx| {
        let nets = tx.networks()?;
        let mut out = Vec::new();
        for c in tx.containers()? {
            if c.state == State::Exited || !c.owner_alive() {
                continue;
            }
            for e in tx.endpoints_of(&c.id)? {
                let Some(ip) = e.ip else { continue };
                let Some(n) = nets.iter().find(|n| n.id == e.network_id && n.driver == Driver::Overlay) else {
                    continue;
                };
                let mac = if e.segment > 0 {
                    let Some(m) = bridge_mac(n) else { continue };
                    crate::ipam::format_mac(m)
                } else {
                    e.mac.clone()
                };
                let names = super::network::endpoint_names(&c.name, &c.hostname, &e.aliases);
                out.push(EndpointRecord {
                    id: e.id.clone(),
                    network_id: e.network_id.clone(),
                    host: cfg.host_id.clone(),
                    vtep: cfg.advertise,
                    ip,
                    mac,
                    container_id: c.id.clone(),
                    names,
                });
            }
        }
        Ok(out)
    })
}

/// The forwarding entries each overlay network's VXLAN device should hold: one per remote
/// endpoint. Pure.
pub fn desired_entries(remotes: &[EndpointRecord]) -> BTreeMap<String, BTreeSet<Entry>> {
    let mut out: BTreeMap<String, BTreeSet<Entry>> = BTreeMap::new();
    for r in remotes {
        let Some(mac) = crate::ipam::parse_mac(&r.mac) else { continue };
        out.entry(r.network_id.clone()).or_default().insert(Entry { mac, ip: r.ip, vtep: r.vtep });
    }
    out
}

/// (to add, to delete) so that `live` becomes `want`. Pure.
pub fn diff_entries(want: &BTreeSet<Entry>, live: &[Entry]) -> (Vec<Entry>, Vec<Entry>) {
    let live_set: BTreeSet<Entry> = live.iter().copied().collect();
    let add = want.difference(&live_set).copied().collect();
    // An entry whose MAC or IP is still wanted is replaced by the add; only the halves that
    // nothing wanted overwrites are deleted.
    let del = live_set
        .difference(want)
        .filter(|e| !want.iter().any(|w| w.mac == e.mac && w.ip == e.ip))
        .map(|e| Entry {
            mac: e.mac,
            ip: if want.iter().any(|w| w.ip == e.ip) { Ipv4Addr::UNSPECIFIED } else { e.ip },
            vtep: if want.iter().any(|w| w.mac == e.mac) { Ipv4Addr::UNSPECIFIED } else { e.vtep },
        })
        // Both halves rewritten by adds: nothing left to delete.
        .filter(|e| e.ip != Ipv4Addr::UNSPECIFIED || e.vtep != Ipv4Addr::UNSPECIFIED)
        .collect();
    (add, del)
}

/// One overlay network's entries as they differ from the mirror: (network, its VXLAN
/// device's ifindex, missing, stray).
pub type EntryDrift = (String, u32, Vec<Entry>, Vec<Entry>);

/// What differs between the store's mirror and the kernel, per overlay network whose VXLAN
/// device exists here.
pub fn entry_drift(store: &mut Store, nl: &mut Netlink) -> Result<Vec<EntryDrift>> {
    let (nets, remotes) = store.read(|tx| Ok((tx.networks()?, tx.remote_endpoints()?)))?;
    let want = desired_entries(&remotes);
    let mut out = Vec::new();
    for n in nets.iter().filter(|n| n.driver == Driver::Overlay) {
        let Some(dev) = nl.link_by_name(&crate::drivers::overlay::vxlan_of(n))? else { continue };
        let live = nl.vxlan_entries(dev.index)?;
        let (add, del) = diff_entries(want.get(&n.id).unwrap_or(&BTreeSet::new()), &live);
        if !add.is_empty() || !del.is_empty() {
            out.push((n.name.clone(), dev.index, add, del));
        }
    }
    Ok(out)
}

/// Brings every VXLAN device's entries to the mirror: one netlink batch per network.
/// Returns how many entries were written or deleted.
pub fn sync_kernel(store: &mut Store, nl: &mut Netlink) -> Result<usize> {
    let mut n = 0;
    for (name, index, add, del) in entry_drift(store, nl)? {
        let mut reqs = Vec::new();
        for e in &del {
            reqs.extend(Netlink::vxlan_entry_del(index, e));
        }
        for e in &add {
            reqs.extend(Netlink::vxlan_entry_add(index, e));
        }
        n += add.len() + del.len();
        if nl.batch(reqs).is_err() {
            // One entry the kernel refused (deleted meanwhile) must not stop the rest: retry
            // one by one.
            for e2 in &del {
                for (m, f) in Netlink::vxlan_entry_del(index, e2) {
                    let _ = nl.request(m, f);
                }
            }
            for e2 in &add {
                for (m, f) in Netlink::vxlan_entry_add(index, e2) {
                    nl.request(m, f).with_context(|| format!("writing a forwarding entry on {name} ({e2:?})"))?;
                }
            }
        }
    }
    Ok(n)
}

/// Applies known changes to the VXLAN devices without reading them back: the entries of
/// endpoints that went are deleted, those that came are written (one batch per network).
/// Errors of single entries are ignored (a command's own sync may have done them already);
/// the agent's periodic full sync repairs anything else.
pub fn apply_changes(
    store: &mut Store,
    nl: &mut Netlink,
    gone: &[EndpointRecord],
    came: &[EndpointRecord],
) -> Result<()> {
    // The mirror as it is now (the newcomers in it, the gone out of it).
    // (The mirror only when something went: the agent applies every arrival through here.)
    let (nets, remotes) =
        store.read(|tx| Ok((tx.networks()?, if gone.is_empty() { Vec::new() } else { tx.remote_endpoints()? })))?;
    // MACs still in use: a host's segment endpoints share its bridge's (own_endpoints).
    let macs_kept: BTreeSet<(&str, [u8; 6])> =
        remotes.iter().filter_map(|r| Some((r.network_id.as_str(), crate::ipam::parse_mac(&r.mac)?))).collect();
    let mut by_net: BTreeMap<&str, Vec<(RouteNetlinkMessage, u16)>> = BTreeMap::new();
    let entry = |r: &EndpointRecord| crate::ipam::parse_mac(&r.mac).map(|mac| Entry { mac, ip: r.ip, vtep: r.vtep });
    for r in gone {
        // Not the halves a newcomer reuses (same MAC or same address): those are replaced;
        // nor a MAC another endpoint still has.
        let Some(mut e) = entry(r) else { continue };
        if came.iter().any(|c| c.network_id == r.network_id && c.ip == r.ip) {
            e.ip = Ipv4Addr::UNSPECIFIED;
        }
        if macs_kept.contains(&(r.network_id.as_str(), e.mac)) {
            e.vtep = Ipv4Addr::UNSPECIFIED;
        }
        by_net.entry(&r.network_id).or_default().extend(Netlink::vxlan_entry_del(0, &e));
    }
    for r in came {
        let Some(e) = entry(r) else { continue };
        by_net.entry(&r.network_id).or_default().extend(Netlink::vxlan_entry_add(0, &e));
    }
    for (id, mut reqs) in by_net {
        let Some(n) = nets.iter().find(|n| n.id == id) else { continue };
        let Some(dev) = nl.link_by_name(&crate::drivers::overlay::vxlan_of(n))? else { continue };
        for (m, _) in &mut reqs {
            if let RouteNetlinkMessage::NewNeighbour(x) | RouteNetlinkMessage::DelNeighbour(x) = m {
                x.header.ifindex = dev.index;
            }
        }
        let _ = nl.batch(reqs);
    }
    Ok(())
}

/// `cluster leave`: this host's overlay networks go from the store and the kernel.
pub fn forget_networks(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let removed = store.write(|tx| {
        tx.set_remote_endpoints(&[])?;
        let mut v = Vec::new();
        for n in tx.networks()?.into_iter().filter(|n| n.driver == Driver::Overlay) {
            tx.delete_network(&n.id)?;
            v.push(n);
        }
        Ok(v)
    })?;
    remove_devices(ctx, store, &removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(mac: u8, ip: u8, vtep: u8) -> Entry {
        Entry { mac: [2, 0, 0, 0, 0, mac], ip: Ipv4Addr::new(10, 0, 0, ip), vtep: Ipv4Addr::new(192, 168, 0, vtep) }
    }

    #[test]
    fn entries_are_diffed_exactly() {
        let want: BTreeSet<Entry> = [e(1, 1, 1), e(2, 2, 2)].into();
        // Up to date: nothing to do.
        assert_eq!(diff_entries(&want, &[e(1, 1, 1), e(2, 2, 2)]), (vec![], vec![]));
        // A stale endpoint goes, a new one comes.
        let (add, del) = diff_entries(&want, &[e(1, 1, 1), e(3, 3, 1)]);
        assert_eq!(add, vec![e(2, 2, 2)]);
        assert_eq!(del, vec![e(3, 3, 1)]);
        // A container that moved host (same MAC and IP, new VTEP): replaced, not deleted.
        let (add, del) = diff_entries(&want, &[e(1, 1, 9), e(2, 2, 2)]);
        assert_eq!(add, vec![e(1, 1, 1)]);
        assert!(del.is_empty());
        // An address reused by another container: the old MAC's FDB half goes, its IP stays.
        let (add, del) = diff_entries(&want, &[e(7, 1, 1), e(2, 2, 2)]);
        assert_eq!(add, vec![e(1, 1, 1)]);
        assert_eq!(del, vec![Entry { ip: Ipv4Addr::UNSPECIFIED, ..e(7, 1, 1) }]);
        // A neighbour deleted by hand (its FDB half left): one add, nothing to delete.
        let (add, del) = diff_entries(&want, &[Entry { ip: Ipv4Addr::UNSPECIFIED, ..e(1, 1, 1) }, e(2, 2, 2)]);
        assert_eq!((add, del), (vec![e(1, 1, 1)], vec![]));
    }
}
