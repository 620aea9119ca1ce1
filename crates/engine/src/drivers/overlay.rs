//! The overlay driver: on each host, the network's bridge (the same gateway everywhere, so
//! egress, NAT and `-p` work as on bridge networks) with a VXLAN port towards the other hosts.
//! Endpoints are veths, as on bridges. Devices appear on a host with its first container on
//! the network; the cluster side (etcd, the agent) is [`crate::overlay`].

use std::os::fd::OwnedFd;

use anyhow::{Context, Result, bail};

use super::NetworkDriver;
use super::bridge;
use crate::ctx::Ctx;
use crate::kernel::netlink::Netlink;
use crate::kernel::vxlan::VxlanSpec;
use crate::overlay::{Config, network::vni_port};
use crate::plan::{self, DesiredKind, DesiredLink, EndpointPlan};
use crate::store::Network;

pub struct OverlayDriver;

/// The VXLAN device's name: the bridge's, with "nwx" for "nwb" (same tag, same network id).
pub fn vxlan_of(n: &Network) -> String {
    format!("nwx{}", n.bridge.get(3..).unwrap_or_default())
}

impl NetworkDriver for OverlayDriver {
    fn check_option(&self, key: &str, value: &str) -> Result<()> {
        crate::overlay::network::check_option(key, value)
    }

    fn network_links(&self, n: &Network, in_use: bool) -> Vec<DesiredLink> {
        if !in_use {
            // Made with the host's first container on the network; kept after its last, as
            // the default bridge is.
            return [n.bridge.clone(), vxlan_of(n)]
                .into_iter()
                .map(|name| DesiredLink { name, mtu: n.mtu, kind: DesiredKind::Transient })
                .collect();
        }
        let (vni, port) = vni_port(n);
        vec![
            DesiredLink {
                name: n.bridge.clone(),
                mtu: n.mtu,
                kind: DesiredKind::Bridge {
                    network: n.name.clone(),
                    gateway: n.gateway,
                    prefix: n.subnet.prefix_len(),
                    gateway6: None,
                },
            },
            DesiredLink {
                name: vxlan_of(n),
                mtu: n.mtu,
                kind: DesiredKind::Vxlan { network: n.name.clone(), bridge: n.bridge.clone(), vni, port },
            },
        ]
    }

    fn has_host_device(&self) -> bool {
        true
    }

    fn ensure_network(&self, ctx: &Ctx, nl: &mut Netlink, n: &Network) -> Result<u32> {
        ensure(ctx, nl, n)
    }

    fn attach(
        &self,
        host: &mut Netlink,
        ctr: &mut Netlink,
        ns: &OwnedFd,
        n: &Network,
        anchor: u32,
        plan: &EndpointPlan,
    ) -> Result<()> {
        // As on a bridge network, segments included.
        bridge::BridgeDriver.attach(host, ctr, ns, n, anchor, plan)
    }

    fn remove(&self, nl: &mut Netlink, n: &Network, _: &[Network]) -> Result<()> {
        remove_devices(nl, n)
    }
}

/// The bridge and its VXLAN port, up, with the other hosts' forwarding entries from the
/// store's mirror. Idempotent. Returns the bridge's ifindex.
pub fn ensure(ctx: &Ctx, nl: &mut Netlink, n: &Network) -> Result<u32> {
    let bridge = bridge::ensure_bridge(nl, &plan::network(n))?;
    let cfg = Config::load(ctx)?.with_context(|| {
        format!("overlay network {} needs this host in the cluster: run `netwright cluster join --etcd URL`", n.name)
    })?;
    let name = vxlan_of(n);
    let (vni, port) = vni_port(n);
    let link = match nl.link_by_name(&name)? {
        Some(l) => l,
        None => {
            let dev = nl.link_by_name(&cfg.dev)?.with_context(|| {
                format!("the underlay device {} is gone: run `netwright cluster join` again", cfg.dev)
            })?;
            let spec = VxlanSpec { name: &name, vni, port, local: cfg.advertise, dev: dev.index, mtu: n.mtu };
            match nl.create_vxlan(&spec) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("creating VXLAN device {name} (VNI {vni})")),
            }
            nl.link_by_name(&name)?.with_context(|| format!("VXLAN device {name} vanished while being created"))?
        }
    };
    if link.kind.as_deref() != Some("vxlan") {
        bail!("device {name} exists but is not a VXLAN device: remove it or run `netwright reconcile`");
    }
    if link.master != Some(bridge) || !link.up {
        nl.batch(vec![(Netlink::set_master_msg(link.index, bridge), 0), (Netlink::set_up_msg(link.index), 0)])
            .map_err(|(_, e)| match e.raw_os_error() {
                Some(libc::EADDRINUSE) => crate::error::conflict(format!(
                    "UDP port {port} (VXLAN of network {}) is held by {}: stop it, or use an overlay network created with --opt port=N",
                    n.name,
                    crate::kernel::process::udp_port_holder(port).unwrap_or_else(|| "a kernel socket (another VXLAN device?)".into())
                ))
                .into(),
                _ => anyhow::Error::from(e).context(format!("bringing VXLAN device {name} up")),
            })?;
    }
    let mut store = ctx.store()?;
    crate::overlay::sync::sync_kernel(&mut store, nl)?;
    Ok(bridge)
}

/// Removes an overlay network's devices from this host (its VXLAN port, then its bridge).
pub fn remove_devices(nl: &mut Netlink, n: &Network) -> Result<()> {
    bridge::remove_segments(nl, n)?;
    for name in [vxlan_of(n), n.bridge.clone()] {
        if let Some(l) = nl.link_by_name(&name)? {
            match nl.delete_link(l.index) {
                // The agent, removing the same network on the same event, was first.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                r => r.with_context(|| format!("deleting {name}"))?,
            }
        }
    }
    Ok(())
}
