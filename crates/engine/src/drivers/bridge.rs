//! The bridge driver: a Linux bridge per network, a veth pair per endpoint — and, past 500
//! endpoints, segment bridges the host routes between (see crate::plan::SEGMENT_PORTS).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

use super::NetworkDriver;
use crate::error::invalid;
use crate::kernel::netlink::{Link, Netlink, VethSpec};
use crate::kernel::netns;
use crate::plan::{self, BridgePlan, EndpointPlan, Segment};
use crate::plan::{DesiredKind, DesiredLink};
use crate::store::Network;

pub struct BridgeDriver;

impl NetworkDriver for BridgeDriver {
    fn check_option(&self, key: &str, value: &str) -> Result<()> {
        match key {
            "masquerade"
            | "com.docker.network.bridge.enable_ip_masquerade"
            | "icc"
            | "com.docker.network.bridge.enable_icc"
            | crate::hostnames::OPTION => {
                if value != "true" && value != "false" {
                    bail!(invalid(format!("option {key}={value}: use true or false")));
                }
                Ok(())
            }
            crate::shaping::EGRESS_OPTION | crate::shaping::INGRESS_OPTION => {
                if crate::shaping::parse_rate(value).is_none() {
                    bail!(invalid(format!("option {key}={value}: give a rate such as 10mbit, 500kbit or 1gbit")));
                }
                Ok(())
            }
            k if crate::firewall::GATEWAY_MODE6.contains(&k) => {
                if value != "nat" && value != "routed" {
                    bail!(invalid(format!("option {key}={value}: use nat (masquerade, the default) or routed")));
                }
                Ok(())
            }
            _ => bail!(invalid(format!(
                "unknown network option {key:?}: bridge networks take mtu, masquerade, icc, gateway_mode_ipv6, egress_rate, ingress_rate, host_names"
            ))),
        }
    }

    fn network_links(&self, n: &Network, in_use: bool) -> Vec<DesiredLink> {
        // The default network's bridge appears with its first container (reading never
        // changes the host); every user-defined network's exists from its creation.
        if n.builtin && !in_use {
            // Neither wanted nor stray: it stays once made, as Docker's docker0 does.
            return vec![DesiredLink { name: n.bridge.clone(), mtu: n.mtu, kind: DesiredKind::Transient }];
        }
        vec![DesiredLink {
            name: n.bridge.clone(),
            mtu: n.mtu,
            kind: DesiredKind::Bridge {
                network: n.name.clone(),
                gateway: n.gateway,
                prefix: n.subnet.prefix_len(),
                gateway6: plan::gateway6(n),
            },
        }]
    }

    fn has_host_device(&self) -> bool {
        true
    }

    fn ensure_network(&self, _: &crate::ctx::Ctx, nl: &mut Netlink, n: &Network) -> Result<u32> {
        ensure_bridge(nl, &plan::network(n))
    }

    /// An endpoint on the network's bridge (`anchor`), or on its segment bridge when the
    /// plan says so: then the bridge is made if need be and the host routes to the endpoint
    /// there. The overlay driver's endpoints too.
    fn attach(
        &self,
        host: &mut Netlink,
        ctr: &mut Netlink,
        ns: &OwnedFd,
        n: &Network,
        anchor: u32,
        plan: &EndpointPlan,
    ) -> Result<()> {
        let Some(s) = &plan.segment else { return attach(host, ctr, ns, anchor, plan) };
        let index = ensure_segment(host, s, n.mtu)?;
        attach(host, ctr, ns, index, plan)?;
        let ips: Vec<std::net::IpAddr> =
            std::iter::once(plan.addr.into()).chain(plan.addr6.map(|(a, _)| a.into())).collect();
        segment_routes(host, index, &ips, true)?;
        match plan.addr6 {
            Some((addr6, _)) => ndp_proxies(host, &s.parent, &[addr6], true),
            None => Ok(()),
        }
    }

    fn remove(&self, nl: &mut Netlink, n: &Network, _: &[Network]) -> Result<()> {
        remove_segments(nl, n)?;
        remove_bridge(nl, &n.bridge)
    }
}

/// Segments normally go with their last endpoint; whatever is left goes with the network.
pub fn remove_segments(nl: &mut Netlink, n: &Network) -> Result<()> {
    let prefix = format!("nwb{}{}", plan::tag_of(&n.bridge), n.id.get(..6).unwrap_or_default());
    for l in nl.links()? {
        if l.name.len() == 15 && l.name.starts_with(&prefix) && l.kind.as_deref() == Some("bridge") {
            match nl.delete_link(l.index) {
                // Someone removing the same network (the overlay agent) was first.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                r => r.with_context(|| format!("deleting segment bridge {}", l.name))?,
            }
        }
    }
    Ok(())
}

/// Makes a segment bridge exist, carry the gateway and answer ARP for the rest of the
/// network, and be up (idempotent, safe against a concurrent netwright doing the same);
/// the network's bridge answers ARP for the segments' containers too. Returns the segment
/// bridge's ifindex; the fast path, when it is up, is one lookup.
pub fn ensure_segment(nl: &mut Netlink, s: &Segment, mtu: u32) -> Result<u32> {
    let br = match nl.link_by_name(&s.bridge)? {
        Some(l) if l.up && plan::bridge_mac(&s.bridge).is_none_or(|m| l.mac == Some(m)) => return Ok(l.index),
        Some(l) => l,
        None => {
            match nl.create_bridge(&s.bridge, mtu, plan::bridge_mac(&s.bridge).unwrap_or_else(plan::random_mac)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("creating segment bridge {}", s.bridge)),
            }
            nl.link_by_name(&s.bridge)?.with_context(|| format!("bridge {} vanished while being created", s.bridge))?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        bail!("device {} exists but is not a bridge: remove it or run `netwright reconcile`", s.bridge);
    }
    for dev in [&s.bridge, &s.parent] {
        answer_for_others(dev);
    }
    let ipv6 = if s.gateway6.is_some() { "0" } else { "1" };
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", s.bridge), ipv6);
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/accept_ra", s.bridge), "0");
    // The gateway as a host address: the segment's containers find it here, whatever the
    // host's arp_ignore; a /32 adds no route that would compete with the network's bridge.
    let mut reqs = vec![(Netlink::add_addr_msg(br.index, s.gateway, 32), NLM_F_CREATE | NLM_F_REPLACE)];
    if let Some(gw6) = s.gateway6 {
        reqs.push((Netlink::add_addr6_msg(br.index, gw6, 128), NLM_F_CREATE | NLM_F_REPLACE));
    }
    reqs.extend(pin_mac(&br));
    reqs.push((Netlink::set_up_msg(br.index), 0));
    nl.batch(reqs).map_err(|(_, e)| e).with_context(|| format!("configuring segment bridge {}", s.bridge))?;
    Ok(br.index)
}

/// A bridge of a segmented network answers ARP for addresses the host routes elsewhere
/// (another segment), at once: proxy_arp with no proxy delay (the default delays each
/// answer up to 0.8 s). Published ports on 127.0.0.1 reach segments as they reach the
/// network's bridge (route_localnet). Our own devices only.
pub fn answer_for_others(dev: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/proxy_arp"), "1");
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/neigh/{dev}/proxy_delay"), "0");
    // IPv6: the network's bridge answers for the segments' containers from proxy entries
    // (ndp_proxies); the segments' containers route the subnet through the gateway.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/proxy_ndp"), "1");
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/neigh/{dev}/proxy_delay"), "0");
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/route_localnet"), "1");
}

/// The host's route to a container on a segment: its address (/32, /128) out of the
/// segment bridge. `add`: made (replacing any equal one) or deleted (best effort).
pub fn segment_routes(nl: &mut Netlink, segment_index: u32, ips: &[std::net::IpAddr], add: bool) -> Result<()> {
    let flags = if add { NLM_F_CREATE | NLM_F_REPLACE } else { 0 };
    let reqs = ips.iter().map(|ip| (Netlink::host_route_msg(*ip, segment_index, add), flags)).collect();
    match nl.batch(reqs) {
        Ok(()) => Ok(()),
        Err((_, e)) if !add => {
            // Gone already (with its bridge, or by hand): nothing to undo.
            if e.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(e.into()) }
        }
        Err((_, e)) => Err(anyhow::Error::from(e).context("routing to a container on a segment bridge")),
    }
}

/// The network's bridge answers neighbour solicitations for a segment's container: the
/// containers on the network's own bridge have the whole IPv6 subnet on their link and ask
/// there. One proxy entry per such container (`add`: made or replaced; else deleted, best
/// effort).
pub fn ndp_proxies(nl: &mut Netlink, parent: &str, ips: &[std::net::Ipv6Addr], add: bool) -> Result<()> {
    let Some(l) = nl.link_by_name(parent)? else {
        return if add {
            Err(anyhow::anyhow!("bridge {parent} is missing: run `netwright reconcile`"))
        } else {
            Ok(())
        };
    };
    let flags = if add { NLM_F_CREATE | NLM_F_REPLACE } else { 0 };
    let reqs = ips.iter().map(|ip| (Netlink::ndp_proxy_msg(l.index, *ip, add), flags)).collect();
    match nl.batch(reqs) {
        Ok(()) => Ok(()),
        Err(_) if !add => Ok(()), // gone already (with the bridge, or by hand)
        Err((_, e)) => Err(anyhow::Error::from(e).context(format!("answering for segment containers on {parent}"))),
    }
}

/// Before a released endpoint's address is freed: the host's route to it on its segment
/// (a container given the address next may sit elsewhere).
pub fn unroute(nl: &mut Netlink, n: &Network, e: &crate::store::Endpoint) {
    if e.segment == 0 || !n.driver.is_bridged() {
        return;
    }
    let ips: Vec<std::net::IpAddr> = e.ip.map(Into::into).into_iter().chain(e.ip6.map(Into::into)).collect();
    if let Ok(Some(l)) = nl.link_by_name(&plan::port_bridge(n, e)) {
        let _ = segment_routes(nl, l.index, &ips, false);
    }
    if let Some(ip6) = e.ip6 {
        let _ = ndp_proxies(nl, &n.bridge, &[ip6], false);
    }
}

/// A segment bridge goes once no endpoint is on it — except the spare: the empty segment
/// the next endpoint would be put on (every lower one is full), kept so that a network
/// hovering at a segment's edge does not make and delete a bridge each time (see
/// [`plan::spare_segment`]). Called after releasing `released` (their rows no longer hold
/// an address); best effort, in the background (deleting a device costs the kernel
/// 20–40 ms); reconcile removes anything left as a stray. The firewall forgets them too.
pub fn drop_empty_segments(
    ctx: &crate::ctx::Ctx,
    store: &mut crate::store::Store,
    released: &[crate::store::Endpoint],
) {
    let mut nets: Vec<&str> = released.iter().filter(|e| e.ip.is_some()).map(|e| e.network_id.as_str()).collect();
    nets.sort();
    nets.dedup();
    let mut doomed = Vec::new();
    for id in nets {
        let Ok(Some((n, loads))) = store.read(|tx| {
            let Some(n) = tx.network(id)?.filter(|n| n.driver.is_bridged()) else { return Ok(None) };
            Ok(Some((n, tx.segment_loads(id)?)))
        }) else {
            continue;
        };
        let released_here = released.iter().filter(|e| e.network_id == n.id).map(|e| e.segment);
        let top = loads.iter().map(|(s, _)| *s).chain(released_here).max().unwrap_or(0);
        if top == 0 && loads.iter().all(|(_, c)| *c + 1 < plan::SEGMENT_PORTS) {
            continue; // never segmented, not at the edge
        }
        let spare = plan::spare_segment(&loads);
        for s in 1..=(top + 1).min(plan::MAX_SEGMENTS) {
            if Some(s) != spare && !loads.iter().any(|(k, _)| *k == s) {
                doomed.push(plan::segment(&ctx.tag, &n, s).bridge);
            }
        }
    }
    let Ok(mut nl) = Netlink::open() else { return };
    let doomed: Vec<String> = doomed.into_iter().filter(|b| nl.link_by_name(b).ok().flatten().is_some()).collect();
    if doomed.is_empty() {
        return;
    }
    crate::kernel::process::in_background(move || {
        if let Ok(mut nl) = Netlink::open() {
            for b in &doomed {
                let _ = remove_bridge(&mut nl, b);
            }
        }
    });
    if let Err(err) = crate::firewall::ensure(ctx, store) {
        eprintln!("netwright: updating the firewall's sets: {err:#}");
    }
}

/// Makes the bridge exist, carry the gateway address and be up. Idempotent and safe
/// against a concurrent netwright doing the same. Returns its ifindex.
pub fn ensure_bridge(nl: &mut Netlink, plan: &BridgePlan) -> Result<u32> {
    let link = match nl.link_by_name(&plan.name)? {
        Some(l) => l,
        None => {
            match nl.create_bridge(&plan.name, plan.mtu, plan::bridge_mac(&plan.name).unwrap_or_else(plan::random_mac))
            {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("creating bridge {}", plan.name)),
            }
            nl.link_by_name(&plan.name)?
                .with_context(|| format!("bridge {} vanished while being created", plan.name))?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        bail!("device {} exists but is not a bridge: remove it or run `netwright reconcile`", plan.name);
    }
    // REPLACE makes the address add idempotent: one round trip, no dump needed.
    let mut reqs = vec![(Netlink::add_addr_msg(link.index, plan.gateway, plan.prefix), NLM_F_CREATE | NLM_F_REPLACE)];
    reqs.extend(pin_mac(&link));
    if let Some((gw6, prefix6)) = plan.gateway6 {
        // IPv6 is off on a new device only where a namespace says so by default; the
        // bridge needs it on for its gateway address.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", plan.name), "0");
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/accept_ra", plan.name), "0");
        reqs.push((Netlink::add_addr6_msg(link.index, gw6, prefix6), NLM_F_CREATE | NLM_F_REPLACE));
    }
    if !link.up {
        reqs.push((Netlink::set_up_msg(link.index), 0));
    }
    nl.batch(reqs).map_err(|(_, e)| e).with_context(|| format!("configuring bridge {}", plan.name))?;
    // Lets the host reach published ports on 127.0.0.1: DNAT'd packets keep a loopback
    // source on their way out of this bridge (our own device; nothing else changes).
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/route_localnet", plan.name), "1");
    Ok(link.index)
}

/// A bridge made by an older netwright (or changed by hand) has the address of one of its
/// ports, which moves when that port leaves: it gets its own (plan::bridge_mac), once,
/// announced by a gratuitous ARP (arp_notify), so containers that had the old one cached
/// move to the new one at once. None when it has it already (one comparison).
fn pin_mac(link: &Link) -> Option<(netlink_packet_route::RouteNetlinkMessage, u16)> {
    let want = plan::bridge_mac(&link.name)?;
    if link.mac == Some(want) {
        return None;
    }
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/arp_notify", link.name), "1");
    Some((Netlink::set_mac_msg(link.index, want), 0))
}

pub fn remove_bridge(nl: &mut Netlink, name: &str) -> Result<()> {
    if let Some(l) = nl.link_by_name(name)? {
        nl.delete_link(l.index).with_context(|| format!("deleting bridge {name}"))?;
    }
    Ok(())
}

/// Plugs a container namespace into a bridge: the veth pair is created with its peer
/// already inside the namespace, then the inside is configured in one netlink batch.
pub fn attach(
    host: &mut Netlink,
    ctr: &mut Netlink,
    ns: &OwnedFd,
    bridge_index: u32,
    plan: &EndpointPlan,
) -> Result<()> {
    host.create_veth(&VethSpec {
        host_name: &plan.host_name,
        peer_name: &plan.ifname,
        peer_netns: ns.as_raw_fd(),
        peer_mac: Some(plan.mac),
        mtu: Some(plan.mtu),
        master: Some(bridge_index),
        isolated: plan.isolated,
    })
    .map_err(|e| explain_veth_error(e, plan))?;
    crate::ctx::trace("setup: veth pair made");
    configure_inside(ctr, ns, plan)
}

/// Address, up, lo up and default route for an interface already inside the container:
/// one netlink batch. Dual stack: the IPv6 address too (no DAD, no router advertisements:
/// the address and the route are netwright's, usable at once).
pub fn configure_inside(ctr: &mut Netlink, ns: &OwnedFd, plan: &EndpointPlan) -> Result<()> {
    let inner = ctr
        .link_by_name(&plan.ifname)?
        .with_context(|| format!("{} did not appear inside the container", plan.ifname))?;
    if plan.addr6.is_some() {
        let conf = format!("/proc/sys/net/ipv6/conf/{}", plan.ifname);
        netns::within(ns, || -> std::io::Result<()> {
            std::fs::write(format!("{conf}/accept_ra"), "0")?;
            // No DAD on the link-local address either: usable the moment the process starts.
            std::fs::write(format!("{conf}/accept_dad"), "0")?;
            std::fs::write(format!("{conf}/disable_ipv6"), "0")
        })?
        .with_context(|| format!("turning IPv6 on for {} inside the container", plan.ifname))?;
        crate::ctx::trace("setup: IPv6 on inside");
    }
    let mut reqs = Vec::new();
    // (Below IPv6's minimum MTU the device has no IPv6 at all: nothing to turn off.)
    if plan.addr6.is_none() && plan.mtu >= crate::kernel::netlink::IPV6_MIN_MTU {
        // IPv4 only: no IPv6 link-local, so no chatter the bridge floods to every other
        // container. Per device, by netlink: a sysctl in the container's namespace would
        // cost a /proc/sys lookup that grows with the number of namespaces on the host
        // (each has its own same-named dentries: ~1 ms per attach at 2,000).
        reqs.push((Netlink::no_ipv6_link_local_msg(inner.index), 0));
    }
    reqs.extend([
        (Netlink::add_addr_msg(inner.index, plan.addr, plan.prefix), NLM_F_CREATE | NLM_F_EXCL),
        (Netlink::set_up_msg(inner.index), 0),
        (Netlink::set_up_msg(1), 0), // lo is always ifindex 1 in a namespace
    ]);
    if plan.default_route {
        reqs.push((Netlink::default_route_msg(plan.gateway, inner.index), NLM_F_CREATE | NLM_F_EXCL));
    }
    if let Some((addr6, prefix6)) = plan.addr6 {
        match (&plan.segment, plan.gateway6) {
            // On a segment, the rest of the subnet is not on this link and the host does not
            // answer neighbour solicitations for all of it (IPv4's proxy_arp has no IPv6
            // equal short of one proxy entry per address and bridge): the subnet is routed
            // through the gateway. For a neighbour on the same segment the host forwards
            // and sends a redirect, after which the two talk directly.
            (Some(_), Some(gw6)) => {
                let subnet6 = ipnet::IpNet::V6(ipnet::Ipv6Net::new(addr6, prefix6)?.trunc());
                reqs.extend([
                    (Netlink::add_addr6_off_link_msg(inner.index, addr6, prefix6), NLM_F_CREATE | NLM_F_EXCL),
                    (Netlink::host_route_msg(gw6.into(), inner.index, true), NLM_F_CREATE | NLM_F_EXCL),
                    (Netlink::route_via_msg(subnet6, gw6.into(), inner.index), NLM_F_CREATE | NLM_F_EXCL),
                ]);
            }
            _ => reqs.push((Netlink::add_addr6_msg(inner.index, addr6, prefix6), NLM_F_CREATE | NLM_F_EXCL)),
        }
        if let (true, Some(gw6)) = (plan.default_route, plan.gateway6) {
            reqs.push((Netlink::default_route_msg(gw6, inner.index), NLM_F_CREATE | NLM_F_EXCL));
        }
    }
    ctr.batch(reqs).map_err(|(_, e)| e).with_context(|| format!("configuring {} inside the container", plan.ifname))?;
    Ok(())
}

fn explain_veth_error(e: io::Error, plan: &EndpointPlan) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EEXIST) => anyhow::anyhow!(
            "device {} already exists (left over from a crash?): run `netwright reconcile`",
            plan.host_name
        ),
        Some(libc::EXFULL) => anyhow::anyhow!(
            "the bridge refused another port ({e}): a Linux bridge takes at most 1024 ports; run `netwright reconcile`"
        ),
        _ => anyhow::Error::from(e).context(format!("creating veth pair {}", plan.host_name)),
    }
}

/// Opens a netlink socket inside a namespace (the socket stays bound to it).
pub fn netlink_in(ns: &OwnedFd) -> Result<Netlink> {
    netns::within(ns, Netlink::open)?.context("opening netlink inside the container namespace")
}
