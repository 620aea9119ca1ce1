//! `doctor` on a cluster host: etcd and the agent, forwarding entries against etcd's
//! endpoints, and MTU along every overlay path (a container at 1500 behind a 1450 VXLAN loses
//! every large packet silently).

use anyhow::Result;

use super::doctor::{Finding, fail, ok};
use crate::ctx::Ctx;
use crate::kernel::{netlink::Netlink, netns};
use crate::model::{Driver, State};
use crate::overlay::{self, Cluster, OVERHEAD};
use crate::store::{Container, Endpoint, Network, Store};

pub(super) fn findings(
    ctx: &Ctx,
    store: &mut Store,
    nl: &mut Netlink,
    networks: &[Network],
    containers: &[Container],
    endpoints: &[Endpoint],
) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let Some(cl) = Cluster::open(ctx)? else { return Ok(out) };
    let hosts = cl.kv.list(&format!("{}hosts/", overlay::PREFIX));
    let registered: Option<Vec<overlay::HostRecord>> =
        hosts.as_ref().ok().map(|(kvs, _)| overlay::records::<overlay::HostRecord>(kvs, overlay::PREFIX));
    out.push(match (&registered, overlay::agent::pid(ctx)) {
        (None, _) => fail(
            "cluster",
            format!(
                "etcd at {} is unreachable: running containers keep their peers, new overlay endpoints fail",
                cl.cfg.etcd
            ),
            "start etcd or fix the route to it; `netwright cluster join --etcd URL` to point elsewhere",
        ),
        (Some(_), None) => fail(
            "cluster",
            "the overlay agent is not running: peers' changes do not reach this host",
            "netwright reconcile   (or any run/rm, which start it)",
        ),
        (Some(h), Some(pid)) if !h.iter().any(|h| h.id == cl.cfg.host_id) => fail(
            "cluster",
            format!("this host is not registered in etcd (agent pid {pid} has not renewed its lease)"),
            "netwright reconcile",
        ),
        (Some(h), Some(_)) => {
            ok("cluster", format!("{} host(s) registered at {}; agent running", h.len(), cl.cfg.etcd))
        }
    });
    let drift = overlay::sync::entry_drift(store, nl)?;
    out.push(if drift.is_empty() {
        ok("overlay-entries", "every VXLAN device's FDB and neighbour entries match the other hosts' endpoints")
    } else {
        let d: Vec<String> =
            drift.iter().map(|(n, _, add, del)| format!("{n}: {} missing, {} stale", add.len(), del.len())).collect();
        fail("overlay-entries", d.join("; "), "netwright reconcile")
    });
    out.push(mtu(ctx, nl, &cl, registered.as_deref().unwrap_or_default(), networks, containers, endpoints)?);
    Ok(out)
}

/// Every MTU on an overlay path must be at most the smallest underlay's minus the VXLAN
/// overhead, and the container's must equal the network's.
fn mtu(
    ctx: &Ctx,
    nl: &mut Netlink,
    cl: &Cluster,
    hosts: &[overlay::HostRecord],
    networks: &[Network],
    containers: &[Container],
    endpoints: &[Endpoint],
) -> Result<Finding> {
    let mut problems = Vec::new();
    let smallest = hosts.iter().map(|h| h.mtu).chain([cl.cfg.mtu]).min().unwrap_or(cl.cfg.mtu);
    let limit = smallest.saturating_sub(OVERHEAD);
    for n in networks.iter().filter(|n| n.driver == Driver::Overlay) {
        if n.mtu > limit {
            problems.push(format!(
                "network {} has MTU {} but the smallest underlay in the cluster ({smallest}) leaves {limit}",
                n.name, n.mtu
            ));
        }
        let vx = crate::drivers::overlay::vxlan_of(n);
        for dev in [n.bridge.as_str(), vx.as_str()] {
            if let Some(l) = nl.link_by_name(dev)?
                && l.mtu != n.mtu
            {
                problems.push(format!("{dev} of network {} has MTU {} (the network's is {})", n.name, l.mtu, n.mtu));
            }
        }
        for e in endpoints.iter().filter(|e| e.network_id == n.id && e.ip.is_some()) {
            let Some(c) = containers.iter().find(|c| c.id == e.container_id && c.state == State::Running) else {
                continue;
            };
            let Ok(ns) = netns::open(&ctx.netns_path(&c.id)) else { continue };
            let Ok(mut inside) = crate::drivers::bridge::netlink_in(&ns) else { continue };
            if let Some(l) = inside.link_by_name(&e.ifname)?
                && l.mtu != n.mtu
            {
                problems.push(format!(
                    "container {}'s {} has MTU {} on overlay network {} (MTU {}): packets over {} bytes are lost",
                    c.name, e.ifname, l.mtu, n.name, n.mtu, n.mtu
                ));
            }
        }
    }
    Ok(if problems.is_empty() {
        ok("overlay-mtu", format!("every overlay path fits the underlay (≤ {limit} = {smallest} − {OVERHEAD})"))
    } else {
        fail(
            "overlay-mtu",
            problems.join("; "),
            format!(
                "ip link set DEV mtu {limit}   (inside the container: netwright exec NAME -- ip link set eth0 mtu {limit})"
            ),
        )
    })
}
