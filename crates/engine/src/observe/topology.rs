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
    let (networks, containers, endpoints) =
        store.read(|tx| Ok((tx.networks()?, tx.containers()?, tx.all_endpoints()?)))?;
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
                ip: format!("{}/{}", e.ip.expect("filtered"), n.subnet.prefix_len()),
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
            subnet: n.subnet.to_string(),
            gateway: n.gateway.to_string(),
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

/// A self-contained SVG: host interfaces on the left, networks in the middle, containers
/// on the right, lines for every attachment.
pub fn svg(t: &Topology) -> String {
    let (w, row) = (900, 46);
    let host: Vec<&Iface> = t.host.iter().filter(|i| i.name != "lo").collect();
    let ctrs: Vec<(String, String)> = t
        .networks
        .iter()
        .flat_map(|n| n.attached.iter().map(|a| (a.container.clone(), a.ip.clone())))
        .chain(t.others.iter().cloned())
        .collect();
    let mut uniq: Vec<String> = Vec::new();
    for (c, _) in &ctrs {
        if !uniq.contains(c) {
            uniq.push(c.clone());
        }
    }
    let rows = host.len().max(t.networks.len()).max(uniq.len()).max(1);
    let h = 40 + rows * row + 20;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"12\">\n"
    );
    o.push_str("<text x=\"10\" y=\"20\" font-size=\"14\">netwright topology</text>\n");
    let y = |i: usize| 40 + i * row;
    let boxed = |o: &mut String, x: usize, yy: usize, label: &str, sub: &str, fill: &str| {
        let _ = writeln!(
            o,
            "<rect x=\"{x}\" y=\"{yy}\" width=\"250\" height=\"36\" rx=\"6\" fill=\"{fill}\" stroke=\"#333\"/>"
        );
        let _ = writeln!(o, "<text x=\"{}\" y=\"{}\">{}</text>", x + 8, yy + 15, esc(label));
        let _ = writeln!(o, "<text x=\"{}\" y=\"{}\" fill=\"#555\">{}</text>", x + 8, yy + 30, esc(sub));
    };
    for (k, n) in t.networks.iter().enumerate() {
        for a in &n.attached {
            if let Some(j) = uniq.iter().position(|c| *c == a.container) {
                let _ = writeln!(
                    o,
                    "<line x1=\"570\" y1=\"{}\" x2=\"630\" y2=\"{}\" stroke=\"#36c\"/>",
                    y(k) + 18,
                    y(j) + 18
                );
            }
        }
    }
    for (k, i) in host.iter().enumerate() {
        boxed(&mut o, 10, y(k), &format!("{} ({})", i.name, i.kind), &i.addrs.join(" "), "#eef");
    }
    for (k, n) in t.networks.iter().enumerate() {
        boxed(&mut o, 320, y(k), &format!("{} {}", n.driver, n.name), &n.subnet, "#efe");
    }
    for (k, c) in uniq.iter().enumerate() {
        let sub = ctrs.iter().filter(|(n, _)| n == c).map(|(_, ip)| ip.as_str()).collect::<Vec<_>>().join(" ");
        boxed(&mut o, 630, y(k), c, &sub, "#fee");
    }
    o.push_str("</svg>\n");
    o
}
