//! `netwright topology`: the live system as a tree or a graph — host interfaces, bridges
//! and their ports, veth pairs with both ends, container namespaces with addresses,
//! published ports and DNS names. Built from the kernel (netlink) and the store side by
//! side; whatever differs between them is marked.

use std::collections::HashSet;
use std::fmt::Write;

use anyhow::Result;

use crate::apply::{self, Action, Kernel, NetlinkKernel};
use crate::ctx::Ctx;
use crate::desired::{self, Snapshot};
use crate::firewall;
use crate::kernel::netlink::Netlink;
use crate::plan;
use crate::store::{State, Store};

#[derive(Debug, serde::Serialize)]
pub struct Iface {
    pub name: String,
    pub kind: String,
    pub addrs: Vec<String>,
    pub mtu: u32,
    pub up: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Attached {
    pub container: String,
    pub ifname: String,
    pub ip: String,
    pub mac: String,
    /// Host end of the veth ("" for macvlan); None in the kernel = missing.
    pub host_veth: String,
    pub present: bool,
    pub names: Vec<String>,
    pub ports: Vec<String>,
    /// Bandwidth limits in force ("out 10mbit", "in 50mbit").
    pub limits: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct NetNode {
    pub name: String,
    pub driver: String,
    pub device: String,
    pub subnet: String,
    pub gateway: String,
    pub present: bool,
    pub notes: Vec<String>,
    pub attached: Vec<Attached>,
}

#[derive(Debug, serde::Serialize)]
pub struct Topology {
    pub host: Vec<Iface>,
    pub default_route: Option<String>,
    pub networks: Vec<NetNode>,
    /// Containers without interfaces of their own: (name, mode).
    pub others: Vec<(String, String)>,
    pub stray: Vec<String>,
    pub firewall_table: String,
}

pub fn build(ctx: &Ctx, store: &mut Store) -> Result<Topology> {
    let (networks, containers, endpoints, services) =
        store.read(|tx| Ok((tx.networks()?, tx.containers()?, tx.all_endpoints()?, crate::services::all(tx)?)))?;
    let mut ports_of = std::collections::HashMap::new();
    for c in &containers {
        ports_of.insert(c.id.clone(), store.read(|tx| tx.ports_of(&c.id))?);
    }
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let addrs = nl.addrs()?;
    let routes = nl.routes_v4()?;
    let addr_of = |idx: u32| -> Vec<String> {
        addrs
            .iter()
            .filter(|a| a.index == idx && a.addr.is_ipv4())
            .map(|a| format!("{}/{}", a.addr, a.prefix))
            .collect()
    };
    // MISSING and STRAY by the same desired state and diff that `reconcile` applies.
    let snap = Snapshot { networks: networks.clone(), containers: containers.clone(), endpoints: endpoints.clone() };
    let actions = apply::diff(&ctx.tag, &desired::host(&snap), &NetlinkKernel { ctx, nl: &mut nl }.links()?);
    let broken: HashSet<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::EnsureBridge { name, .. }
            | Action::EnsureVxlan { name, .. }
            | Action::EnsureSegment { segment: plan::Segment { bridge: name, .. }, .. }
            | Action::Enslave { port: name, .. } => Some(name.as_str()),
            Action::RecreateVeth { endpoint, .. } => Some(endpoint.host_name.as_str()),
            Action::SetUp { .. } | Action::DeleteStray { .. } => None,
        })
        .collect();
    let host = links
        .iter()
        .filter(|l| !plan::is_ours(&ctx.tag, &l.name))
        .map(|l| Iface {
            name: l.name.clone(),
            kind: l.kind.clone().unwrap_or_else(|| if l.name == "lo" { "loopback".into() } else { "device".into() }),
            addrs: addr_of(l.index),
            mtu: l.mtu,
            up: l.up,
        })
        .collect();
    let default_route = routes.iter().find(|r| r.dst.is_none()).map(|r| {
        let dev = r.oif.and_then(|i| links.iter().find(|l| l.index == i)).map(|l| l.name.clone()).unwrap_or_default();
        format!("default via {} dev {dev}", r.gateway.map(|g| g.to_string()).unwrap_or_default())
    });
    let mut nets = Vec::new();
    for n in &networks {
        let mut notes = Vec::new();
        if n.driver == crate::model::Driver::Overlay {
            let (vni, port) = crate::overlay::network::vni_port(n);
            notes.push(format!("overlay vni {vni} udp/{port} via {}", crate::drivers::overlay::vxlan_of(n)));
        }
        if n.driver.is_bridged() {
            if firewall::masquerades(n) {
                notes.push("masquerade".into())
            }
            if !firewall::icc(n) {
                notes.push("icc=false".into())
            }
            if n.internal {
                notes.push("internal".into())
            }
            if n.builtin {
                notes.push("default, no DNS".into())
            }
        } else {
            notes.push(format!("parent {}", crate::drivers::macvlan::parent(n)));
        }
        for (svc, backends) in services.iter().filter(|(s, _)| s.network_id == n.id) {
            let ports: Vec<String> = svc.ports.iter().map(|p| format!("{}/{}", p.port, p.proto.as_str())).collect();
            notes.push(format!(
                "service {} VIP {} {} → {} backend(s) (alias {})",
                svc.name,
                svc.vip,
                ports.join(","),
                backends.len(),
                svc.selector
            ));
        }
        let mut attached = Vec::new();
        for e in endpoints.iter().filter(|e| e.network_id == n.id && e.ip.is_some()) {
            let Some(c) = containers.iter().find(|c| c.id == e.container_id && c.state != State::Exited) else {
                continue;
            };
            let mut dns = Vec::new();
            if !n.builtin {
                dns.push(c.name.clone());
                dns.extend(e.aliases.iter().cloned());
            }
            attached.push(Attached {
                container: c.name.clone(),
                ifname: e.ifname.clone(),
                // Dual stack: both addresses, IPv4 first.
                ip: match (e.ip6, n.subnet6) {
                    (Some(a6), Some(s6)) => {
                        format!("{}/{} {a6}/{}", e.ip.expect("filtered"), n.subnet.prefix_len(), s6.prefix_len())
                    }
                    _ => format!("{}/{}", e.ip.expect("filtered"), n.subnet.prefix_len()),
                },
                mac: e.mac.clone(),
                present: !broken.contains(e.host_ifname.as_str()),
                host_veth: e.host_ifname.clone(),
                names: dns,
                ports: if e.ifname == "eth0" {
                    ports_of.get(&c.id).map(|p| p.iter().map(|m| m.to_string()).collect()).unwrap_or_default()
                } else {
                    vec![]
                },
                limits: match (e.host_ifname.is_empty(), crate::shaping::rates(c, n)) {
                    (true, _) => vec![],
                    (false, (out, inn)) => [("out", out), ("in", inn)]
                        .into_iter()
                        .filter_map(|(d, r)| r.map(|r| format!("{d} {}", crate::shaping::format_rate(r))))
                        .collect(),
                },
            });
        }
        nets.push(NetNode {
            name: n.name.clone(),
            driver: n.driver.to_string(),
            device: n.bridge.clone(),
            subnet: match n.subnet6 {
                Some(s6) => format!("{} {s6}", n.subnet),
                None => n.subnet.to_string(),
            },
            gateway: match n.gateway6 {
                Some(g6) => format!("{} {g6}", n.gateway),
                None => n.gateway.to_string(),
            },
            present: !broken.contains(n.bridge.as_str()),
            notes,
            attached,
        });
    }
    let with_ifaces: HashSet<&str> =
        endpoints.iter().filter(|e| e.ip.is_some()).map(|e| e.container_id.as_str()).collect();
    let others = containers
        .iter()
        .filter(|c| c.state != State::Exited && !with_ifaces.contains(c.id.as_str()))
        .map(|c| {
            let mode = match c.network_mode.joined() {
                Some(id) => format!(
                    "shares {}'s namespace",
                    containers.iter().find(|o| o.id == id).map(|o| o.name.as_str()).unwrap_or("?")
                ),
                None => c.network_mode.to_string(),
            };
            (c.name.clone(), mode)
        })
        .collect();
    let stray = actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteStray { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    Ok(Topology { host, default_route, networks: nets, others, stray, firewall_table: firewall::table_name(ctx) })
}

pub fn text(t: &Topology) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "host namespace{}", t.default_route.as_ref().map(|r| format!("  ({r})")).unwrap_or_default());
    for i in &t.host {
        let _ = writeln!(o, "├─ {} {} {}{}", i.name, i.kind, i.addrs.join(" "), if i.up { "" } else { " DOWN" });
    }
    for n in &t.networks {
        let missing = if n.present { "" } else { "  ⚠ MISSING in the kernel" };
        let dev =
            if n.driver == "bridge" { format!("bridge {} {}", n.device, n.gateway) } else { "macvlan".to_string() };
        let _ = writeln!(
            o,
            "├─ network {} ({}) {} — {}{}{}",
            n.name,
            n.subnet,
            dev,
            n.driver,
            if n.notes.is_empty() { String::new() } else { format!(" [{}]", n.notes.join(", ")) },
            missing
        );
        for (k, a) in n.attached.iter().enumerate() {
            let last = k + 1 == n.attached.len();
            let branch = if last { "└─" } else { "├─" };
            // Under the last port the tree's line ends: no stray `│` below it.
            let cont = if last { "│        " } else { "│  │     " };
            let link = if a.host_veth.is_empty() {
                format!("{} (macvlan)", a.ifname)
            } else {
                format!("veth {} ⇄ {}", a.host_veth, a.ifname)
            };
            let _ = writeln!(
                o,
                "│  {branch} {link} of container {}: {} {}{}",
                a.container,
                a.ip,
                a.mac,
                if a.present { "" } else { "  ⚠ MISSING in the kernel" }
            );
            if !a.names.is_empty() {
                let _ = writeln!(o, "{cont}DNS: {}", a.names.join(", "));
            }
            if !a.ports.is_empty() {
                let _ = writeln!(o, "{cont}published: {}", a.ports.join(", "));
            }
            if !a.limits.is_empty() {
                let _ = writeln!(o, "{cont}bandwidth: {}", a.limits.join(", "));
            }
        }
    }
    for (c, mode) in &t.others {
        let _ = writeln!(o, "├─ container {c}: {mode}");
    }
    for s in &t.stray {
        let _ =
            writeln!(o, "├─ ⚠ STRAY device {s}: netwright's name, not in the store (netwright reconcile removes it)");
    }
    let _ = writeln!(o, "└─ nftables: table ip {} (NAT, published ports, isolation)", t.firewall_table);
    o
}

fn id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

pub fn dot(t: &Topology) -> String {
    let mut o = String::from("graph netwright {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for i in t.host.iter().filter(|i| i.name != "lo") {
        let _ = writeln!(o, "  \"if_{}\" [label=\"{}\\n{}\"];", id(&i.name), i.name, i.addrs.join(" "));
    }
    for n in &t.networks {
        let _ =
            writeln!(o, "  \"net_{}\" [label=\"{} {}\\n{}\", style=rounded];", id(&n.name), n.driver, n.name, n.subnet);
        for a in &n.attached {
            let _ = writeln!(o, "  \"ctr_{}\" [label=\"{}\"];", id(&a.container), a.container);
            let _ = writeln!(
                o,
                "  \"net_{}\" -- \"ctr_{}\" [label=\"{} {}\"];",
                id(&n.name),
                id(&a.container),
                a.ifname,
                a.ip
            );
        }
    }
    for (c, mode) in &t.others {
        let _ = writeln!(o, "  \"ctr_{}\" [label=\"{}\\n{}\"];", id(c), c, mode);
    }
    o.push_str("}\n");
    o
}

pub fn mermaid(t: &Topology) -> String {
    let mut o = String::from("flowchart LR\n");
    for i in t.host.iter().filter(|i| i.name != "lo") {
        let _ = writeln!(o, "  if_{}[\"{} {}\"]", id(&i.name), i.name, i.addrs.join(" "));
    }
    for n in &t.networks {
        let _ = writeln!(o, "  net_{}([\"{} {} {}\"])", id(&n.name), n.driver, n.name, n.subnet);
        for a in &n.attached {
            let _ = writeln!(
                o,
                "  net_{} ---|\"{} {}\"| ctr_{}[\"{}\"]",
                id(&n.name),
                a.ifname,
                a.ip,
                id(&a.container),
                a.container
            );
        }
    }
    for (c, mode) in &t.others {
        let _ = writeln!(o, "  ctr_{}[\"{} ({})\"]", id(c), c, mode);
    }
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A self-contained SVG in layers, as the seed documents draw it: the host's interfaces
/// (the uplink linked through netwright's firewall to every bridge it NATs), each network's
/// bridge with its gateway, the host ends of the veth pairs, and the containers with their
/// address, MAC, DNS names and published ports. Rows follow the attachments, so lines
/// seldom cross; readable at 50 containers (the picture grows downwards).
pub fn svg(t: &Topology) -> String {
    const ROW: usize = 72;
    const TOP: usize = 70;
    let (xh, xb, xv, xc) = (10, 340, 640, 880);
    let host: Vec<&Iface> = t.host.iter().filter(|i| i.name != "lo").collect();
    // One row per attachment (grouped by network); a network sits at its first one.
    let mut att_rows: Vec<(usize, &Attached)> = Vec::new();
    let mut net_row = Vec::new();
    for (k, n) in t.networks.iter().enumerate() {
        net_row.push(att_rows.len().max(net_row.last().map(|r: &usize| r + 1).unwrap_or(0)));
        for a in &n.attached {
            att_rows.push((k, a));
        }
    }
    // Containers: one box each, in the order they first appear.
    let mut ctrs: Vec<String> = Vec::new();
    for (_, a) in &att_rows {
        if !ctrs.contains(&a.container) {
            ctrs.push(a.container.clone());
        }
    }
    let others_from = ctrs.len();
    let rows = [host.len(), att_rows.len(), ctrs.len() + t.others.len(), net_row.last().map(|r| r + 1).unwrap_or(0), 1]
        .into_iter()
        .max()
        .unwrap_or(1);
    let (w, h) = (xc + 330, TOP + rows * ROW + 40);
    let y = |i: usize| TOP + i * ROW;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"11\">\n"
    );
    o.push_str("<text x=\"10\" y=\"20\" font-size=\"14\">netwright topology</text>\n");
    for (x, title) in [(xh, "host interfaces"), (xb, "networks (bridges)"), (xv, "veth host ends"), (xc, "containers")]
    {
        let _ = writeln!(o, "<text x=\"{x}\" y=\"50\" fill=\"#777\">{title}</text>");
    }
    let line = |o: &mut String, x1: usize, y1: usize, x2: usize, y2: usize, color: &str| {
        let _ = writeln!(o, "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"{color}\"/>");
    };
    let boxed = |o: &mut String, x: usize, yy: usize, wd: usize, lines: &[String], fill: &str| {
        let _ = writeln!(
            o,
            "<rect x=\"{x}\" y=\"{yy}\" width=\"{wd}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" stroke=\"#333\"/>",
            ROW - 12
        );
        for (i, l) in lines.iter().take(4).enumerate() {
            let color = if i == 0 { "#000" } else { "#555" };
            let _ = writeln!(o, "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>", x + 6, yy + 14 + i * 13, esc(l));
        }
    };
    // Links first, boxes over them.
    let uplink = t.default_route.as_deref().and_then(|r| r.split(" dev ").nth(1)).unwrap_or("");
    if let Some(u) = host.iter().position(|i| i.name == uplink) {
        for (k, n) in t.networks.iter().enumerate() {
            if n.driver != "macvlan" {
                line(&mut o, xh + 290, y(u) + 30, xb, y(net_row[k]) + 30, "#c63");
            }
        }
    }
    for (r, (k, a)) in att_rows.iter().enumerate() {
        line(&mut o, xb + 250, y(net_row[*k]) + 30, xv, y(r) + 30, "#36c");
        if let Some(c) = ctrs.iter().position(|c| *c == a.container) {
            line(&mut o, xv + 200, y(r) + 30, xc, y(c) + 30, "#36c");
        }
    }
    for (k, i) in host.iter().enumerate() {
        let mut l = vec![format!("{} ({})", i.name, i.kind), i.addrs.join(" "), format!("mtu {}", i.mtu)];
        if i.name == uplink {
            l.push(format!("uplink — NAT by table ip {}", t.firewall_table));
        }
        boxed(&mut o, xh, y(k), 290, &l, "#eef");
    }
    for (k, n) in t.networks.iter().enumerate() {
        let l = vec![
            format!("{} {} — {}", n.driver, n.name, n.device),
            format!("{} gw {}", n.subnet, n.gateway),
            n.notes.join(", "),
        ];
        boxed(&mut o, xb, y(net_row[k]), 250, &l, if n.present { "#efe" } else { "#fcc" });
    }
    for (r, (_, a)) in att_rows.iter().enumerate() {
        let host_end = if a.host_veth.is_empty() { "(macvlan: no host end)".to_string() } else { a.host_veth.clone() };
        let l = vec![host_end, format!("⇄ {} in {}", a.ifname, a.container), a.limits.join(", ")];
        boxed(&mut o, xv, y(r), 200, &l, if a.present { "#fff" } else { "#fcc" });
    }
    for (c, name) in ctrs.iter().enumerate() {
        let mut l = vec![name.clone()];
        for (_, a) in att_rows.iter().filter(|(_, a)| a.container == *name) {
            l.push(format!("{} {} {}", a.ifname, a.ip, a.mac));
            if !a.names.is_empty() {
                l.push(format!("DNS: {}", a.names.join(", ")));
            }
            if !a.ports.is_empty() {
                l.push(format!("published: {}", a.ports.join(", ")));
            }
        }
        boxed(&mut o, xc, y(c), 320, &l, "#fee");
    }
    for (j, (name, mode)) in t.others.iter().enumerate() {
        boxed(&mut o, xc, y(others_from + j), 320, &[name.clone(), mode.clone()], "#f4f4f4");
    }
    o.push_str("</svg>\n");
    o
}
