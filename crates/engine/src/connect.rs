//! `network connect` / `network disconnect`: interfaces added to or taken from a running
//! container (eth1, eth2, ...), with DNS records and firewall state following.

use anyhow::{Context, Result, bail};

use crate::container::{add_endpoint, find, owner_alive};
use crate::ctx::Ctx;
use crate::drivers::{self, bridge};
use crate::error::invalid;
use crate::firewall;
use crate::ipam;
use crate::kernel::{netlink::Netlink, netns};
use crate::model::Driver;
use crate::network;
use crate::plan;
use crate::store::{Container, State, Store};

fn running_with_own_namespace(store: &mut Store, reference: &str) -> Result<Container> {
    let c = find(store, reference)?;
    if c.state != State::Running || !owner_alive(&c) {
        bail!(invalid(format!("container {} is not running", c.name)));
    }
    if !c.network_mode.is_network() {
        bail!(invalid(format!(
            "container {} uses --network {}: it cannot be connected to networks",
            c.name, c.network_mode
        )));
    }
    Ok(c)
}

pub fn connect(
    ctx: &Ctx,
    store: &mut Store,
    net_ref: &str,
    ctr_ref: &str,
    ip: Option<&str>,
    aliases: &[String],
) -> Result<()> {
    let c = running_with_own_namespace(store, ctr_ref)?;
    let requested = ip.map(|s| ipam::parse_ip("--ip", s)).transpose()?;
    let (net, ep, first) = store.write(|tx| {
        let net = network::resolve(tx, net_ref)?;
        let eps = tx.endpoints_of(&c.id)?;
        if eps.iter().any(|e| e.network_id == net.id && e.ip.is_some()) {
            bail!("container {} is already connected to network {}", c.name, net.name);
        }
        let ifname =
            (0..).map(|i| format!("eth{i}")).find(|n| !eps.iter().any(|e| &e.ifname == n)).expect("a free name");
        let ep = add_endpoint(ctx, tx, &net, &c.id, &ifname, requested, aliases)?;
        Ok((net, ep, !eps.iter().any(|e| e.ip.is_some())))
    })?;
    let attached = (|| -> Result<()> {
        let ns =
            netns::open(&ctx.netns_path(&c.id)).with_context(|| format!("opening {}'s network namespace", c.name))?;
        let mut host = Netlink::open()?;
        let mut inside = bridge::netlink_in(&ns)?;
        let plan = plan::endpoint(&net, &ep, ep.ip.expect("allocated"), first);
        let driver = drivers::of(net.driver);
        let anchor = driver.ensure_network(&mut host, &net)?;
        driver.attach(&mut host, &mut inside, &ns, &net, anchor, &plan)?;
        if net.driver == Driver::Bridge {
            firewall::ensure(ctx, store)?;
        }
        Ok(())
    })();
    if let Err(e) = attached {
        store.write(|tx| tx.delete_endpoint(&ep.id))?;
        return Err(e);
    }
    crate::dns::server::sync_now(ctx, !net.builtin, Some(&c.id))?;
    Ok(())
}

pub fn disconnect(ctx: &Ctx, store: &mut Store, net_ref: &str, ctr_ref: &str) -> Result<()> {
    let c = running_with_own_namespace(store, ctr_ref)?;
    let (ep, ports) = store.read(|tx| {
        let net = network::resolve(tx, net_ref)?;
        let ep = tx
            .endpoints_of(&c.id)?
            .into_iter()
            .find(|e| e.network_id == net.id && e.ip.is_some())
            .with_context(|| format!("container {} is not connected to network {}", c.name, net.name))?;
        Ok((ep, tx.ports_of(&c.id)?))
    })?;
    // Published ports point at the first interface's address: they go with it.
    let ip = ep.ip.expect("active endpoint");
    if ep.ifname == "eth0" && !ports.is_empty() {
        firewall::publish(ctx, store, &ports, ip, false)?;
    }
    if ep.host_ifname.is_empty() {
        let ns = netns::open(&ctx.netns_path(&c.id))?;
        let mut inside = bridge::netlink_in(&ns)?;
        if let Some(l) = inside.link_by_name(&ep.ifname)? {
            inside.delete_link(l.index)?;
        }
    } else {
        let mut host = Netlink::open()?;
        if let Some(l) = host.link_by_name(&ep.host_ifname)? {
            host.delete_link(l.index)?;
        }
    }
    store.write(|tx| {
        tx.delete_endpoint(&ep.id)?;
        if ep.ifname == "eth0" {
            tx.delete_ports(&c.id)?;
        }
        Ok(())
    })?;
    crate::dns::server::sync_now(ctx, false, Some(&c.id))?;
    Ok(())
}
