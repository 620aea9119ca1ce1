//! `netwright trace SRC DST[:PORT][/PROTO]`: the path a packet takes, hop by hop, read from
//! the live kernel (route lookups, the bridge FDB, netwright's table, listening sockets)
//! and the store, ending in DELIVERED or BLOCKED with the reason and the fix. `--probe`
//! sends a real connection (or, from the LAN, waits for one), follows it with the
//! kernel's own nf_tables trace, and shows whether reality agrees with the explanation.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::drivers::bridge;
use crate::firewall;
use crate::kernel::netlink::Netlink;
use crate::kernel::netns;
use crate::kernel::nftables::{self as nft, Nftables};
use crate::kernel::nftrace::{Event, Filter, Packet, Tracer};
use crate::model::Driver;
use crate::observe::doctor::listeners;
use crate::ports::{Mapping, Proto};
use crate::store::{Container, Endpoint, Network, State, Store};

mod probe;

use probe::run_probe;
pub use probe::trace_table;

#[derive(Debug, Serialize)]
pub struct Hop {
    pub at: String,
    pub what: String,
}

#[derive(Debug, Serialize)]
pub struct Trace {
    pub src: String,
    pub dst: String,
    pub hops: Vec<Hop>,
    pub verdict: String,
    pub reason: Option<String>,
    pub fix: Option<String>,
    pub probe: Option<Probe>,
    pub probe_agrees: Option<bool>,
}

/// What a real packet did.
#[derive(Debug, Serialize)]
pub struct Probe {
    /// Whether the connection was established (None: unknown, e.g. UDP without answer).
    pub connected: Option<bool>,
    pub outcome: String,
    /// The kernel's trace, packet by packet (the first few).
    pub kernel: Vec<TracedPacket>,
    pub more_packets: usize,
    /// The kernel trace in one sentence.
    pub kernel_says: String,
}

#[derive(Debug, Serialize)]
pub struct TracedPacket {
    pub packet: String,
    pub steps: Vec<String>,
}

enum End {
    Ctr(Box<Container>, Vec<(Endpoint, Network)>),
    /// A container on another host of an overlay network (the store's mirror of etcd).
    Remote(Box<crate::model::RemoteEndpoint>),
    Host,
    Ip(Ipv4Addr),
}

struct World {
    networks: Vec<Network>,
    ports: Vec<(String, Vec<Mapping>)>,
    containers: Vec<Container>,
}

fn end(store: &mut Store, s: &str) -> Result<End> {
    if s == "host" {
        return Ok(End::Host);
    }
    if let Some(ip) = s.strip_prefix("lan:") {
        return Ok(End::Ip(ip.parse().with_context(|| format!("{s:?}: expected lan:IP"))?));
    }
    let remote = |tx: &crate::store::Tx| -> Result<Option<crate::model::RemoteEndpoint>> {
        let ip = s.parse::<Ipv4Addr>().ok();
        Ok(tx
            .remote_endpoints()?
            .into_iter()
            .find(|r| Some(r.ip) == ip || r.names.iter().any(|n| n.eq_ignore_ascii_case(s))))
    };
    let (c, eps) = store.read(|tx| {
        let c = match s.parse::<Ipv4Addr>() {
            Ok(ip) => {
                let owner = tx.all_endpoints()?.into_iter().find(|e| e.ip == Some(ip)).map(|e| e.container_id);
                match owner {
                    Some(id) => tx.container(&id)?,
                    None => return Ok((None, vec![])),
                }
            }
            Err(_) => match tx.container(s)? {
                Some(c) => Some(c),
                None if remote(tx)?.is_some() => return Ok((None, vec![])),
                None => bail!("no such container: {s}; SRC and DST are a container, host, an IP or lan:IP"),
            },
        };
        let mut eps = Vec::new();
        if let Some(c) = &c {
            for e in tx.endpoints_of(&c.id)?.into_iter().filter(|e| e.ip.is_some()) {
                if let Some(n) = tx.network(&e.network_id)? {
                    eps.push((e, n));
                }
            }
        }
        Ok((c, eps))
    })?;
    Ok(match c {
        Some(c) => End::Ctr(Box::new(c), eps),
        None => match store.read(|tx| remote(tx))? {
            Some(r) => End::Remote(Box::new(r)),
            None => End::Ip(s.parse()?),
        },
    })
}

struct Builder {
    t: Trace,
}

impl Builder {
    fn new(src: &str, dst: &str) -> Builder {
        Builder {
            t: Trace {
                src: src.into(),
                dst: dst.into(),
                hops: vec![],
                verdict: String::new(),
                reason: None,
                fix: None,
                probe: None,
                probe_agrees: None,
            },
        }
    }

    fn hop(&mut self, at: impl Into<String>, what: impl Into<String>) {
        self.t.hops.push(Hop { at: at.into(), what: what.into() });
    }
    fn blocked(mut self, reason: impl Into<String>, fix: impl Into<String>) -> Trace {
        self.t.verdict = "BLOCKED".into();
        self.t.reason = Some(reason.into());
        let fix = fix.into();
        self.t.fix = (!fix.is_empty()).then_some(fix);
        self.t
    }
    fn delivered(mut self) -> Trace {
        self.t.verdict = "DELIVERED".into();
        self.t
    }
}

/// The server side: does anything listen on the port, and on which address?
fn listening(b: &mut Builder, c: &Container, port: u16, proto: Proto) -> Option<(String, String)> {
    let pid = c.pid?;
    let binds: Vec<Ipv4Addr> = listeners(&format!("/proc/{pid}/net"), proto != Proto::Udp)
        .into_iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, a)| a)
        .collect();
    if binds.is_empty() {
        return Some((
            format!("nothing listens on {}/{} inside {}: connection refused", port, proto.as_str(), c.name),
            format!("start the server in {} on port {port}", c.name),
        ));
    }
    if binds.iter().all(|a| a.is_loopback()) {
        return Some((
            format!(
                "{}'s server listens on 127.0.0.1:{port} only: packets from outside the container are refused",
                c.name
            ),
            "make it listen on 0.0.0.0 (e.g. --bind 0.0.0.0)".into(),
        ));
    }
    b.hop(c.name.clone(), format!("a server listens on {}:{port}/{}", binds[0], proto.as_str()));
    None
}

fn published_target(w: &World, host_ip: Option<Ipv4Addr>, port: u16, proto: Proto) -> Option<(Container, Mapping)> {
    for (id, maps) in &w.ports {
        for m in maps {
            let on_addr = match m.host_ip {
                None => true,
                Some(h) if h.is_unspecified() => h.is_ipv4(),
                Some(h) => Some(h) == host_ip.map(std::net::IpAddr::V4),
            };
            if m.host_port == port && m.proto == proto && on_addr {
                let c = w.containers.iter().find(|c| c.id == *id)?.clone();
                return Some((c, m.clone()));
            }
        }
    }
    None
}

pub fn trace(ctx: &Ctx, store: &mut Store, src: &str, dst: &str, probe: Option<Duration>) -> Result<Trace> {
    let (dst_name, port, proto) = parse_dst(dst)?;
    if let Some(t) = to_service(ctx, store, src, dst, (&dst_name, port, proto), probe)? {
        return Ok(t);
    }
    let src_end = end(store, src)?;
    let dst_end = end(store, &dst_name)?;
    let w = store.read(|tx| {
        let cs = tx.containers()?;
        let mut ports = Vec::new();
        for c in &cs {
            ports.push((c.id.clone(), tx.ports_of(&c.id)?));
        }
        Ok(World { networks: tx.networks()?, ports, containers: cs })
    })?;
    let mut host_nl = Netlink::open()?;
    let uplink_ip = {
        let r = host_nl.routes_v4()?.into_iter().find(|r| r.dst.is_none());
        let oif = r.and_then(|r| r.oif);
        host_nl.addrs()?.into_iter().find(|a| Some(a.index) == oif && a.addr.is_ipv4()).and_then(|a| match a.addr {
            std::net::IpAddr::V4(v) => Some(v),
            _ => None,
        })
    };
    let mut b = Builder::new(src, dst);
    let table_ok = Nftables::open()?.has_table(nft::NFPROTO_IPV4, &firewall::table_name(ctx))?;
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default().trim() == "1";
    let dst_ip = match &dst_end {
        End::Host => uplink_ip.context("the host has no default route: cannot tell its address")?,
        End::Ip(ip) => *ip,
        End::Remote(r) => r.ip,
        End::Ctr(d, deps) => {
            // The address on a network the source shares, else the first one.
            let shared = match &src_end {
                End::Ctr(_, seps) => deps.iter().find(|(_, n)| seps.iter().any(|(_, sn)| sn.id == n.id)),
                _ => None,
            };
            shared
                .or(deps.first())
                .and_then(|(e, _)| e.ip)
                .with_context(|| format!("container {} has no address of its own (mode {})", d.name, d.network_mode))?
        }
    };
    let mut result = match &src_end {
        End::Remote(r) => bail!(
            "{} is a container on another host (VTEP {}): run the trace there, or trace from a container here",
            r.names.first().cloned().unwrap_or_default(),
            r.vtep
        ),
        End::Ctr(c, seps) => {
            if c.state != State::Running {
                bail!("container {} is not running", c.name);
            }
            let Ok(ns) = netns::open(&ctx.netns_path(&c.id)) else {
                bail!("container {} has no network namespace of its own (mode {})", c.name, c.network_mode);
            };
            let mut inside = bridge::netlink_in(&ns)?;
            let r = match inside.route_get(dst_ip) {
                Ok(r) => r,
                Err(e) if e.raw_os_error() == Some(libc::ENETUNREACH) => {
                    b.hop(c.name.clone(), format!("route lookup for {dst_ip}: no route"));
                    return Ok(match seps.iter().find(|(_, n)| n.internal) {
                        Some((_, n)) => b.blocked(
                            format!("network {} is internal: its containers have no route out", n.name),
                            "use a network without --internal",
                        ),
                        None => b.blocked(
                            format!("{} has no route to {dst_ip}", c.name),
                            "connect it to a network that reaches it (netwright network connect NET CONTAINER)",
                        ),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let ifname = r
                .oif
                .and_then(|i| inside.links().ok()?.into_iter().find(|l| l.index == i))
                .map(|l| l.name)
                .unwrap_or_default();
            if ifname == "lo" || seps.iter().any(|(e, _)| e.ip == Some(dst_ip)) {
                // Its own address (or 127.0.0.0/8): the kernel turns the packet around inside
                // the namespace; no veth, bridge or rule is on the path.
                b.hop(
                    c.name.clone(),
                    format!("route lookup for {dst_ip}: local, over lo inside {}'s namespace", c.name),
                );
                match &dst_end {
                    End::Ctr(d, _) => finish(b, d, port, proto)?,
                    _ => finish(b, c, port, proto)?,
                }
            } else {
                let Some((ep, net)) = seps.iter().find(|(e, _)| e.ifname == ifname) else {
                    return Ok(b.blocked(
                        format!("{} has no route to {dst_ip}", c.name),
                        "connect it to a network (netwright network connect NET CONTAINER)",
                    ));
                };
                b.hop(
                    c.name.clone(),
                    format!(
                        "route lookup for {dst_ip}: {} via {} ({})",
                        r.gateway.map(|g| format!("gateway {g}")).unwrap_or_else(|| "on-link".into()),
                        ep.ifname,
                        ep.ip.expect("active")
                    ),
                );
                from_container(
                    b,
                    &w,
                    &mut host_nl,
                    c,
                    ep,
                    net,
                    r.gateway.is_none(),
                    &dst_end,
                    dst_ip,
                    port,
                    proto,
                    table_ok,
                    forwarding,
                    uplink_ip,
                )?
            }
        }
        End::Host => {
            let r = host_nl.route_get(dst_ip)?;
            let oif = r
                .oif
                .and_then(|i| host_nl.links().ok()?.into_iter().find(|l| l.index == i))
                .map(|l| l.name)
                .unwrap_or_default();
            b.hop("host", format!("route lookup for {dst_ip}: out of {oif}"));
            match &dst_end {
                End::Ctr(d, _) => {
                    b.hop(
                        oif.clone(),
                        format!("the bridge delivers to {} ({dst_ip}); replies come back the same way", d.name),
                    );
                    finish(b, d, port, proto)
                }
                _ => {
                    b.hop("host", "leaves netwright's view");
                    Ok(b.delivered())
                }
            }?
        }
        End::Ip(src_ip) => {
            b.hop(
                format!("lan {src_ip}"),
                format!("sends to {dst_ip}{}", port.map(|p| format!(":{p}/{}", proto.as_str())).unwrap_or_default()),
            );
            match &dst_end {
                End::Host | End::Ip(_) if Some(dst_ip) == uplink_ip || matches!(dst_end, End::Host) => {
                    let Some(p) = port else { return Ok(b.delivered()) };
                    match published_target(&w, Some(dst_ip), p, proto) {
                        None => b.blocked(
                            format!("nothing is published on {dst_ip}:{p}/{}", proto.as_str()),
                            format!("publish it: netwright run -p {p}:PORT ..."),
                        ),
                        Some((d, m)) => {
                            if !table_ok {
                                return Ok(
                                    b.blocked("netwright's nftables table is missing: no DNAT", "netwright reconcile")
                                );
                            }
                            let dip = store.read(|tx| {
                                Ok(tx.endpoints_of(&d.id)?.into_iter().find(|e| e.ifname == "eth0").and_then(|e| e.ip))
                            })?;
                            b.hop(
                                format!("host prerouting (table ip {})", firewall::table_name(ctx)),
                                format!(
                                    "DNAT {m} → {}:{} (map @{})",
                                    dip.map(|i| i.to_string()).unwrap_or_default(),
                                    m.container_port,
                                    if m.host_ip.is_some() { "pub_ip" } else { "pub_any" }
                                ),
                            );
                            if !forwarding {
                                return Ok(b.blocked(
                                    "net.ipv4.ip_forward=0: the host does not route to containers",
                                    "sysctl -w net.ipv4.ip_forward=1 (or netwright reconcile)",
                                ));
                            }
                            b.hop("host forward", "ct status dnat → accept");
                            b.hop(
                                d.name.clone(),
                                format!("arrives from {src_ip} (no source NAT: the container sees the real client)"),
                            );
                            finish(b, &d, Some(m.container_port), proto)?
                        }
                    }
                }
                End::Ctr(d, deps) => {
                    if deps.iter().any(|(_, n)| n.driver == Driver::Macvlan) {
                        b.hop("lan", format!("{} is on the LAN itself (macvlan): delivered at layer 2", d.name));
                        finish(b, d, port, proto)?
                    } else {
                        b.blocked(
                            format!("{dst_ip} is private to this host's bridge: the LAN has no route to it"),
                            format!("publish the port: netwright run -p HOSTPORT:{} ...", port.unwrap_or(80)),
                        )
                    }
                }
                _ => {
                    b.hop("lan", "not netwright's: outside its view");
                    b.delivered()
                }
            }
        }
    };
    if let Some(wait) = probe {
        let p = run_probe(ctx, &src_end, dst_ip, port, proto, wait).unwrap_or_else(|e| Probe {
            connected: None,
            outcome: format!("not run: {e}"),
            kernel: vec![],
            more_packets: 0,
            kernel_says: String::new(),
        });
        result.probe_agrees = p.connected.map(|c| c == (result.verdict == "DELIVERED"));
        result.probe = Some(p);
    }
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
fn from_container(
    mut b: Builder,
    w: &World,
    host: &mut Netlink,
    c: &Container,
    ep: &Endpoint,
    net: &Network,
    on_link: bool,
    dst_end: &End,
    dst_ip: Ipv4Addr,
    port: Option<u16>,
    proto: Proto,
    table_ok: bool,
    forwarding: bool,
    uplink_ip: Option<Ipv4Addr>,
) -> Result<Trace> {
    let link = if ep.host_ifname.is_empty() {
        format!("{} (macvlan of {})", ep.ifname, crate::drivers::macvlan::parent(net))
    } else {
        let idx = host.link_by_name(&ep.host_ifname)?.map(|l| l.index).unwrap_or(0);
        format!("{} ⇄ veth {} (ifindex {idx}) on bridge {}", ep.ifname, ep.host_ifname, net.bridge)
    };
    b.hop(c.name.clone(), link);
    if on_link {
        if let End::Remote(r) = dst_end {
            return across_hosts(b, host, net, r);
        }
        let End::Ctr(d, deps) = dst_end else {
            b.hop(net.name.clone(), format!("{dst_ip} is on-link on {}", net.name));
            return Ok(b.delivered());
        };
        let Some((dep, _)) = deps.iter().find(|(_, n)| n.id == net.id) else { return Ok(b.delivered()) };
        if net.driver.is_bridged() {
            let mac = crate::ipam::mac_for(dep.ip.expect("active"));
            match host.fdb_port(mac)? {
                Some(i) => {
                    let name = host.links()?.into_iter().find(|l| l.index == i).map(|l| l.name).unwrap_or_default();
                    b.hop(
                        format!("bridge {}", net.bridge),
                        format!(
                            "FDB: {} is behind port {name} → {}'s {}",
                            crate::ipam::format_mac(mac),
                            d.name,
                            dep.ifname
                        ),
                    );
                }
                None => b.hop(
                    format!("bridge {}", net.bridge),
                    format!("{} not learned yet: ARP, then flooded to {}'s port", crate::ipam::format_mac(mac), d.name),
                ),
            }
            if !firewall::icc(net) {
                return Ok(b.blocked(
                    format!("network {} has icc=false: its bridge ports are isolated from each other", net.name),
                    "use a network without --opt icc=false, or publish the port and go through the host",
                ));
            }
        } else {
            b.hop(
                format!("macvlan on {}", crate::drivers::macvlan::parent(net)),
                format!("delivered to {} at layer 2", d.name),
            );
        }
        return finish(b, d, port, proto);
    }
    // Routed through the host.
    b.hop(format!("host, via gateway {}", net.gateway), "enters the host's routing");
    if !table_ok {
        return Ok(b.blocked("netwright's nftables table is missing: no NAT and no isolation", "netwright reconcile"));
    }
    let is_host_addr = Some(dst_ip) == uplink_ip || dst_ip == net.gateway;
    if let (true, Some(p)) = (is_host_addr, port) {
        if let Some((d, m)) = published_target(w, Some(dst_ip), p, proto) {
            b.hop("host prerouting", format!("DNAT {m} → {}:{}", d.name, m.container_port));
            b.hop("host postrouting", "hairpin: masquerade to the gateway, so the answer comes back through the host");
            return finish(b, &d, Some(m.container_port), proto);
        }
        return Ok(b.blocked(
            format!("nothing is published on {dst_ip}:{p}/{}", proto.as_str()),
            format!("publish it: netwright run -p {p}:PORT ..."),
        ));
    }
    if !forwarding {
        return Ok(b.blocked(
            "net.ipv4.ip_forward=0: the host does not route container traffic",
            "sysctl -w net.ipv4.ip_forward=1 (or netwright reconcile)",
        ));
    }
    let r = host.route_get(dst_ip)?;
    let links = host.links()?;
    let oif = r.oif.and_then(|i| links.iter().find(|l| l.index == i)).map(|l| l.name.clone()).unwrap_or_default();
    b.hop(
        "host",
        format!(
            "route lookup for {dst_ip}: out of {oif}{}",
            r.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
        ),
    );
    if let Some(other) = w.networks.iter().find(|n| n.bridge == oif && n.id != net.id) {
        return Ok(b.blocked(format!("different networks ({} → {}): netwright's isolation rule drops it (forward: iifname @bridges oifname @bridges drop)", net.name, other.name),
            format!("netwright network connect {} {}", other.name, c.name)));
    }
    if net.internal {
        return Ok(b.blocked(
            format!("network {} is internal: nothing leaves it", net.name),
            "use a network without --internal",
        ));
    }
    b.hop("host forward", "accepted (jump user; no netwright rule drops it)");
    if firewall::masquerades(net) {
        b.hop("host postrouting", format!("masquerade: source {} becomes {}'s address", ep.ip.expect("active"), oif));
    } else {
        b.hop(
            "host postrouting",
            "no NAT (masquerade=false): the far side needs a route back to the container's subnet",
        );
    }
    b.hop(oif, "leaves the host; conntrack turns the answer back to the container");
    match dst_end {
        End::Ctr(d, _) => finish(b, d, port, proto),
        _ => Ok(b.delivered()),
    }
}

/// On-link to a container on another host: the bridge hands the frame to the VXLAN port,
/// whose forwarding entry (written from etcd) names the remote VTEP.
fn across_hosts(mut b: Builder, host: &mut Netlink, net: &Network, r: &crate::model::RemoteEndpoint) -> Result<Trace> {
    let vx = crate::drivers::overlay::vxlan_of(net);
    let (vni, udp) = crate::overlay::network::vni_port(net);
    let name = r.names.first().cloned().unwrap_or_else(|| r.container_id.clone());
    let Some(dev) = host.link_by_name(&vx)? else {
        return Ok(b.blocked(format!("the VXLAN device {vx} is missing"), "netwright reconcile"));
    };
    let learned = match crate::ipam::parse_mac(&r.mac) {
        Some(mac) => host.fdb_port(mac)? == Some(dev.index),
        None => false,
    };
    b.hop(
        format!("bridge {}", net.bridge),
        if learned {
            format!("FDB: {} is behind port {vx} (another host)", r.mac)
        } else {
            format!("{} not learned yet: flooded to the local ports and {vx}", r.mac)
        },
    );
    let entry = host.vxlan_entries(dev.index)?.into_iter().find(|e| e.ip == r.ip);
    match entry {
        Some(e) if e.vtep == r.vtep && crate::ipam::format_mac(e.mac) == r.mac => b.hop(
            format!("{vx} (VNI {vni})"),
            format!(
                "ARP for {} answered here from the neighbour table ({}); FDB {} → dst {} (permanent, from etcd)",
                r.ip, r.mac, r.mac, r.vtep
            ),
        ),
        _ => {
            return Ok(b.blocked(
                format!(
                    "{vx} has no forwarding entry for {} ({}) at {}: peers' changes have not reached this host",
                    r.ip, r.mac, r.vtep
                ),
                "netwright reconcile   (restarts the overlay agent and rewrites the entries)",
            ));
        }
    }
    b.hop("underlay", format!("encapsulated: outer IPv4 + UDP to {}:{udp} (+50 bytes; inner MTU {})", r.vtep, net.mtu));
    b.hop(
        format!("host {}", r.vtep),
        format!("decapsulated into {}'s bridge there, delivered to {name} ({})", net.name, r.ip),
    );
    Ok(b.delivered())
}

/// A service's name or VIP as the destination: the VIP's DNAT (which backends, how one is
/// picked) and then the path to a backend, traced as any container is.
fn to_service(
    ctx: &Ctx,
    store: &mut Store,
    src: &str,
    dst: &str,
    (name, port, proto): (&str, Option<u16>, Proto),
    probe: Option<Duration>,
) -> Result<Option<Trace>> {
    let found = store.read(|tx| {
        if !tx.has_services()? {
            return Ok(None);
        }
        let svc = tx.services()?.into_iter().find(|s| s.name == name || s.vip.to_string() == name);
        let Some(svc) = svc else { return Ok(None) };
        let mut backends = Vec::new();
        for b in tx.backends(&svc.id)? {
            let ep = tx.all_endpoints()?.into_iter().find(|e| e.id == b.endpoint_id);
            let c = match ep {
                Some(e) => tx.container(&e.container_id)?,
                None => None,
            };
            backends.push((b, c.map(|c| c.name).unwrap_or_default()));
        }
        Ok(Some((svc, backends)))
    })?;
    let Some((svc, backends)) = found else { return Ok(None) };
    let mut b = Builder::new(src, dst);
    let port = port.or(svc.ports.first().map(|p| p.port)).unwrap_or(0);
    if !svc.ports.iter().any(|p| p.port == port && p.proto == proto) {
        let list: Vec<String> = svc.ports.iter().map(|p| format!("{}/{}", p.port, p.proto.as_str())).collect();
        return Ok(Some(b.blocked(
            format!(
                "service {} does not answer on {port}/{}: the host refuses (its ports: {})",
                svc.name,
                proto.as_str(),
                list.join(", ")
            ),
            format!("netwright service rm {0} and create it again with --port {port}/{1}", svc.name, proto.as_str()),
        )));
    }
    let table = firewall::table_name(ctx);
    if backends.is_empty() {
        b.hop(
            format!("host prerouting (table ip {table})"),
            format!("VIP {}:{port} → chain {}: no rule", svc.vip, crate::services::chain_name(&svc)),
        );
        return Ok(Some(b.blocked(
            format!("service {} has no backend: the host refuses the connection", svc.name),
            format!("start a container on its network with --network-alias {}", svc.selector),
        )));
    }
    let how = if svc.client_affinity { "jhash of the client address" } else { "numgen random" };
    let list: Vec<String> = backends.iter().map(|(be, n)| format!("{} {n} {}", be.slot, be.ip)).collect();
    let (first, first_name) = &backends[0];
    let mut t = trace(ctx, store, src, &format!("{first_name}:{port}/{}", proto.as_str()), probe)?;
    t.dst = dst.into();
    t.hops.insert(
        0,
        Hop {
            at: format!("host prerouting (table ip {table})"),
            what: format!(
                "service {}: VIP {}:{port} → DNAT to one of {} backend(s) by {how} mod {} (slot: container address — {}); followed here: {first_name} {}",
                svc.name,
                svc.vip,
                backends.len(),
                backends.len(),
                list.join(", "),
                first.ip
            ),
        },
    );
    Ok(Some(t))
}

fn finish(mut b: Builder, d: &Container, port: Option<u16>, proto: Proto) -> Result<Trace> {
    if let Some(p) = port
        && let Some((reason, fix)) = listening(&mut b, d, p, proto)
    {
        return Ok(b.blocked(reason, fix));
    }
    Ok(b.delivered())
}

fn parse_dst(s: &str) -> Result<(String, Option<u16>, Proto)> {
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, p)) => (r, Proto::parse(p).with_context(|| format!("{s:?}: protocol must be tcp, udp or sctp"))?),
        None => (s, Proto::Tcp),
    };
    let (name, port) = match rest.rsplit_once(':') {
        Some((n, p)) if !n.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && n != "lan" => {
            (n.to_string(), Some(p.parse().with_context(|| format!("{s:?}: bad port"))?))
        }
        _ => (rest.to_string(), None),
    };
    Ok((name, port, proto))
}

pub fn text(t: &Trace) -> String {
    let mut o = format!("trace {} → {}\n", t.src, t.dst);
    for (i, h) in t.hops.iter().enumerate() {
        o.push_str(&format!("{:>3}. {:<28} {}\n", i + 1, h.at, h.what));
    }
    o.push_str(&format!("verdict: {}", t.verdict));
    if let Some(r) = &t.reason {
        o.push_str(&format!(" — {r}"));
    }
    o.push('\n');
    if let Some(f) = &t.fix {
        o.push_str(&format!("fix: {f}\n"));
    }
    if let Some(p) = &t.probe {
        if !p.kernel.is_empty() {
            o.push_str("kernel trace (nftables nftrace, host namespace):\n");
            for (i, k) in p.kernel.iter().enumerate() {
                o.push_str(&format!("  packet {}: {}\n", i + 1, k.packet));
                for s in &k.steps {
                    o.push_str(&format!("      {s}\n"));
                }
            }
            if p.more_packets > 0 {
                o.push_str(&format!("  ({} more packets of this connection)\n", p.more_packets));
            }
        }
        if !p.kernel_says.is_empty() {
            o.push_str(&format!("kernel: {}\n", p.kernel_says));
        }
        let agree = match t.probe_agrees {
            Some(true) => " (agrees)",
            Some(false) => " (DISAGREES with the explanation above)",
            None => "",
        };
        o.push_str(&format!("probe: {}{agree}\n", p.outcome));
    }
    o
}
