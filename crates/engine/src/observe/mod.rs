//! Observe: read live kernel state back over netlink, per namespace, and describe it.
//! (The demo's "what was created" listing; the seed of `topology`.)

pub mod conntrack;
pub mod doctor;
mod doctor_overlay;
pub mod explain;
pub mod topology;
pub mod trace;

use std::fmt::Write;
use std::os::fd::OwnedFd;

use anyhow::Result;

use crate::kernel::netlink::{Addr, Link, Netlink, Route};
use crate::kernel::netns;

pub struct NsView {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
}

/// Links, addresses and IPv4 routes of the namespace `ns` (or the current one).
pub fn snapshot(ns: Option<&OwnedFd>) -> Result<NsView> {
    let read = || -> Result<NsView> {
        let mut nl = Netlink::open()?;
        Ok(NsView { links: nl.links()?, addrs: nl.addrs()?, routes: nl.routes_v4()? })
    };
    match ns {
        Some(ns) => netns::within(ns, read)?,
        None => read(),
    }
}

impl NsView {
    fn name_of(&self, index: u32) -> String {
        self.links.iter().find(|l| l.index == index).map(|l| l.name.clone()).unwrap_or_else(|| format!("if{index}"))
    }

    fn addrs_of(&self, index: u32) -> Vec<String> {
        self.addrs
            .iter()
            .filter(|a| a.index == index && a.addr.is_ipv4())
            .map(|a| format!("{}/{}", a.addr, a.prefix))
            .collect()
    }

    /// A short indented description: links (with bridge ports under their bridge),
    /// addresses and routes.
    pub fn describe(&self, indent: &str, label_port: impl Fn(&Link) -> Option<String>) -> String {
        let mut out = String::new();
        for l in self.links.iter().filter(|l| l.master.is_none()) {
            let kind =
                l.kind.clone().unwrap_or_else(|| if l.name == "lo" { "loopback".into() } else { "device".into() });
            let mac = l.mac.map(crate::ipam::format_mac).filter(|m| m != "00:00:00:00:00:00").unwrap_or_default();
            let _ = writeln!(
                out,
                "{indent}{:<16} {:<8} {:<5} mtu {:<5} {:<17} {}",
                l.name,
                kind,
                if l.up { "up" } else { "down" },
                l.mtu,
                mac,
                self.addrs_of(l.index).join(" ")
            );
            for p in self.links.iter().filter(|p| p.master == Some(l.index)) {
                let who = label_port(p).map(|s| format!("-> {s}")).unwrap_or_default();
                let _ =
                    writeln!(out, "{indent}  └─ port {:<16} {:<5} {}", p.name, if p.up { "up" } else { "down" }, who);
            }
        }
        for r in &self.routes {
            let dst = r.dst.map(|d| d.to_string()).unwrap_or_else(|| "default".into());
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let dev = r.oif.map(|i| format!(" dev {}", self.name_of(i))).unwrap_or_default();
            let _ = writeln!(out, "{indent}route {dst}{via}{dev}");
        }
        out
    }
}
