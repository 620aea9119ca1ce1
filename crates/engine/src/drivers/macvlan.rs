//! The macvlan driver: containers get their own MAC on the parent's L2 segment and an
//! address on its subnet — reachable from the LAN with no bridge and no NAT.
//!
//! The catch: Linux forbids traffic between a parent and its own macvlans, so the host
//! cannot reach its macvlan containers through the parent. `-o host_shim=true` adds a
//! host-side macvlan (`nwm<tag><net>`) with an address of the network and a route for
//! the containers' --ip-range through it.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};

use super::NetworkDriver;
use crate::drivers::bridge;
use crate::error::invalid;
use crate::kernel::netlink::Netlink;
use crate::model::Driver;
use crate::plan::EndpointPlan;
use crate::plan::{DesiredKind, DesiredLink};
use crate::store::Network;

pub struct MacvlanDriver;

impl NetworkDriver for MacvlanDriver {
    fn check_option(&self, key: &str, value: &str) -> Result<()> {
        match key {
            PARENT => Ok(()),
            HOST_SHIM if value == "true" || value == "false" => Ok(()),
            HOST_SHIM => bail!(invalid(format!("option {key}={value}: use true or false"))),
            MODE if ["bridge", "private", "vepa", "passthru"].contains(&value) => Ok(()),
            MODE => bail!(invalid(format!("option {key}={value}: macvlan modes are bridge, private, vepa, passthru"))),
            _ => bail!(invalid(format!(
                "unknown network option {key:?}: macvlan networks take parent, macvlan_mode, host_shim, mtu"
            ))),
        }
    }

    fn network_links(&self, n: &Network, _: bool) -> Vec<DesiredLink> {
        // The shim's name is recorded whether or not it was asked for, so a device by that
        // name is never taken for a stray; `ensure_shim` makes it when it is.
        vec![DesiredLink { name: n.bridge.clone(), mtu: n.mtu, kind: DesiredKind::Shim { network: n.name.clone() } }]
    }

    fn has_host_device(&self) -> bool {
        false
    }

    fn ensure_network(&self, _: &crate::ctx::Ctx, nl: &mut Netlink, n: &Network) -> Result<u32> {
        Ok(ensure_parent(nl, parent(n))?.0)
    }

    fn attach(
        &self,
        host: &mut Netlink,
        ctr: &mut Netlink,
        ns: &OwnedFd,
        n: &Network,
        _: u32,
        plan: &EndpointPlan,
    ) -> Result<()> {
        attach(host, ctr, ns, n, plan)
    }

    fn remove(&self, nl: &mut Netlink, n: &Network, others: &[Network]) -> Result<()> {
        remove(nl, n, others)
    }
}

pub const PARENT: &str = "parent";
pub const MODE: &str = "macvlan_mode";
pub const HOST_SHIM: &str = "host_shim";
/// Internal options netwright records for itself.
pub const SHIM_ADDRESS: &str = "netwright.host_shim_address";
pub const PARENT_CREATED: &str = "netwright.parent_created";

pub fn parent(n: &Network) -> &str {
    n.options.get(PARENT).map(String::as_str).unwrap_or("")
}

pub fn mode(n: &Network) -> &str {
    n.options.get(MODE).map(String::as_str).unwrap_or("bridge")
}

pub fn shim_address(n: &Network) -> Option<Ipv4Addr> {
    n.options.get(SHIM_ADDRESS).and_then(|s| s.parse().ok())
}

/// Splits "eth0.10" into ("eth0", 10).
pub fn vlan_of(parent: &str) -> Option<(&str, u16)> {
    let (base, id) = parent.rsplit_once('.')?;
    let id: u16 = id.parse().ok().filter(|i| (1..4095).contains(i))?;
    (!base.is_empty()).then_some((base, id))
}

/// The parent's ifindex and MTU; a missing VLAN parent ("eth0.10") is created.
/// Returns whether netwright created it.
pub fn ensure_parent(nl: &mut Netlink, parent: &str) -> Result<(u32, u32, bool)> {
    if let Some(l) = nl.link_by_name(parent)? {
        return Ok((l.index, l.mtu, false));
    }
    let Some((base, id)) = vlan_of(parent) else {
        bail!("parent interface {parent} does not exist on this host: give an existing interface with -o parent=");
    };
    let base_link = nl
        .link_by_name(base)?
        .with_context(|| format!("parent interface {base} (of VLAN {parent}) does not exist on this host"))?;
    match nl.create_vlan(parent, base_link.index, id) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            bail!(
                "cannot create VLAN interface {parent}: this kernel has no 802.1Q support (module 8021q); load it or give an existing parent"
            )
        }
        Err(e) => return Err(e).with_context(|| format!("creating VLAN interface {parent}")),
    }
    let l = nl.link_by_name(parent)?.with_context(|| format!("VLAN interface {parent} vanished"))?;
    Ok((l.index, l.mtu, true))
}

/// Creates the container's eth0 as a macvlan of the parent, inside its namespace.
pub fn attach(host: &mut Netlink, ctr: &mut Netlink, ns: &OwnedFd, n: &Network, plan: &EndpointPlan) -> Result<()> {
    let (parent_idx, _, _) = ensure_parent(host, parent(n))?;
    host.create_macvlan(&plan.ifname, parent_idx, mode(n), Some(ns.as_raw_fd()), Some(plan.mac), plan.mtu)
        .with_context(|| format!("creating a macvlan of {} for the container", parent(n)))?;
    bridge::configure_inside(ctr, ns, plan)
}

/// The host-side shim, when asked for: macvlan + /32 address + route to the range.
pub fn ensure_shim(nl: &mut Netlink, n: &Network) -> Result<()> {
    let (Some(addr), Some(range)) = (shim_address(n), n.ip_range) else { return Ok(()) };
    let (parent_idx, _, _) = ensure_parent(nl, parent(n))?;
    let link = match nl.link_by_name(&n.bridge)? {
        Some(l) => l,
        None => {
            match nl.create_macvlan(&n.bridge, parent_idx, "bridge", None, None, n.mtu) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("creating host shim {}", n.bridge)),
            }
            nl.link_by_name(&n.bridge)?.context("host shim vanished")?
        }
    };
    nl.batch(vec![
        (Netlink::add_addr_msg(link.index, addr, 32), NLM_F_CREATE | NLM_F_REPLACE),
        (Netlink::set_up_msg(link.index), 0),
    ])
    .map_err(|(_, e)| e)
    .with_context(|| format!("configuring host shim {}", n.bridge))?;
    nl.add_route_dev(range, link.index).with_context(|| format!("routing {range} through the host shim"))?;
    Ok(())
}

/// Removes the shim and a VLAN parent netwright made (unless another network uses it).
pub fn remove(nl: &mut Netlink, n: &Network, others: &[Network]) -> Result<()> {
    if let Some(l) = nl.link_by_name(&n.bridge)? {
        nl.delete_link(l.index)?;
    }
    let shared = others.iter().any(|o| o.id != n.id && o.driver == Driver::Macvlan && parent(o) == parent(n));
    if n.options.get(PARENT_CREATED).is_some_and(|v| v == "true")
        && !shared
        && let Some(l) = nl.link_by_name(parent(n))?
    {
        nl.delete_link(l.index)?;
    }
    Ok(())
}

pub const NOTE: &str = "The host cannot reach macvlan containers through their parent interface (Linux forbids traffic between a parent and its own macvlans); other machines on the LAN can. Create the network with -o host_shim=true and --ip-range to give the host a macvlan of its own routed to that range.";

#[cfg(test)]
mod tests {
    #[test]
    fn vlan_suffixes() {
        assert_eq!(super::vlan_of("eth0.10"), Some(("eth0", 10)));
        assert_eq!(super::vlan_of("eth0"), None);
        assert_eq!(super::vlan_of("eth0.x"), None);
        assert_eq!(super::vlan_of("eth0.5000"), None);
    }
}
