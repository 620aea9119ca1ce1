//! `network connect` / `network disconnect`: interfaces added to or taken from a running
//! container (eth1, eth2, ...), with DNS records and firewall state following.

use anyhow::{Context, Result, bail};

use crate::container::{EndpointRequest, add_endpoint, find, owner_alive};
use crate::ctx::{Ctx, trace};
use crate::drivers::{self, bridge};
use crate::error::{conflict, invalid};
use crate::firewall;
use crate::kernel::{netlink::Netlink, netns};
use crate::model::Driver;
use crate::model::{Intent, Kind};
use crate::network;
use crate::plan;
use crate::services::Scope;
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

pub fn connect(ctx: &Ctx, store: &mut Store, net_ref: &str, ctr_ref: &str, req: EndpointRequest) -> Result<()> {
    for a in req.aliases.iter().flatten() {
        if !crate::names::valid(a) {
            bail!(invalid(crate::names::explain("--alias", a)));
        }
    }
    let c = running_with_own_namespace(store, ctr_ref)?;
    let (net, ep, first) = store.write(|tx| {
        let net = network::resolve(tx, net_ref)?;
        let eps = tx.endpoints_of(&c.id)?;
        if eps.iter().any(|e| e.network_id == net.id && e.ip.is_some()) {
            bail!(conflict(format!("container {} is already connected to network {}", c.name, net.name)));
        }
        let ifname = req.ifname.clone().unwrap_or_else(|| {
            (0..).map(|i| format!("eth{i}")).find(|n| !eps.iter().any(|e| &e.ifname == n)).expect("a free name")
        });
        if eps.iter().any(|e| e.ifname == ifname && e.ip.is_some()) {
            bail!(conflict(format!("container {} already has an interface {ifname}", c.name)));
        }
        let req = EndpointRequest {
            ifname: Some(ifname),
            aliases: Some(req.aliases.clone().unwrap_or_default()),
            ..req.clone()
        };
        let ep = add_endpoint(ctx, tx, &net, &c.id, &req)?;
        // A kill before the interface is made is undone by the next command (crate::recover).
        tx.begin_intent(&Intent::mine(Kind::Connect, &ep.id, &c.id))?;
        Ok((net, ep, !eps.iter().any(|e| e.ip.is_some())))
    })?;
    trace("connect: recorded");
    let attached = (|| -> Result<()> {
        let ns =
            netns::open(&ctx.netns_path(&c.id)).with_context(|| format!("opening {}'s network namespace", c.name))?;
        let mut host = Netlink::open()?;
        let mut inside = bridge::netlink_in(&ns)?;
        let plan = plan::endpoint(&net, &ep, ep.ip.expect("allocated"), first);
        let driver = drivers::of(net.driver);
        let anchor = driver.ensure_network(ctx, &mut host, &net)?;
        driver.attach(&mut host, &mut inside, &ns, &net, anchor, &plan)?;
        if net.driver.is_bridged() {
            firewall::ensure(ctx, store)?;
        }
        Ok(())
    })();
    let overlay: Vec<_> = crate::overlay::Held::of(&ep).filter(|_| net.driver == Driver::Overlay).into_iter().collect();
    if let Err(e) = attached {
        store.write(|tx| {
            tx.delete_endpoint(&ep.id)?;
            tx.end_intent(Kind::Connect, &ep.id)
        })?;
        crate::overlay::network::release(ctx, &overlay, &c.id);
        return Err(e);
    }
    trace("connect: interface made");
    store.write(|tx| tx.end_intent(Kind::Connect, &ep.id))?;
    crate::services::refresh(ctx, store, Scope::Endpoints { joined: std::slice::from_ref(&ep.id), leaving: &[] })?;
    if !overlay.is_empty() {
        crate::overlay::agent::nudge(ctx);
    }
    crate::hostnames::sync_or_warn(ctx, store);
    crate::dns::server::sync_now(ctx, net.serves_names(), Some(&c.id))?;
    Ok(())
}

pub fn disconnect(ctx: &Ctx, store: &mut Store, net_ref: &str, ctr_ref: &str) -> Result<()> {
    let c = running_with_own_namespace(store, ctr_ref)?;
    let ep = store.write(|tx| {
        let net = network::resolve(tx, net_ref)?;
        let ep = tx
            .endpoints_of(&c.id)?
            .into_iter()
            .find(|e| e.network_id == net.id && e.ip.is_some())
            .ok_or_else(|| invalid(format!("container {} is not connected to network {}", c.name, net.name)))?;
        // A kill from here on is finished by the next command (crate::recover).
        tx.begin_intent(&Intent::mine(Kind::Disconnect, &ep.id, &c.id))?;
        Ok(ep)
    })?;
    trace("disconnect: recorded");
    finish_disconnect(ctx, store, &c.id, &ep.id)
}

/// The rest of a disconnect, idempotent: published ports (they point at eth0's address),
/// the interface, the endpoint row, the names. Also what the next command runs when a
/// disconnect was killed half-way.
pub fn finish_disconnect(ctx: &Ctx, store: &mut Store, container_id: &str, endpoint_id: &str) -> Result<()> {
    let (ep, ports) = store.read(|tx| {
        let ep = tx.endpoints_of(container_id)?.into_iter().find(|e| e.id == endpoint_id);
        Ok((ep, tx.ports_of(container_id)?))
    })?;
    let Some(ep) = ep else {
        return store.write(|tx| tx.end_intent(Kind::Disconnect, endpoint_id));
    };
    // Services stop sending new connections to this interface first.
    crate::services::refresh(ctx, store, Scope::Endpoints { joined: &[], leaving: std::slice::from_ref(&ep.id) })?;
    let mut rebuild = false;
    if let (Some(to), true) = (ep.target(), ep.ifname == "eth0" && !ports.is_empty()) {
        // Already gone (a disconnect killed after this step): rebuilt once the store agrees.
        rebuild = firewall::unpublish(ctx, &ports, to).is_err();
    }
    trace("disconnect: ports unpublished");
    if ep.host_ifname.is_empty() {
        // A macvlan: only the inside end exists (and only while the namespace does).
        if let Ok(ns) = netns::open(&ctx.netns_path(container_id)) {
            let mut inside = bridge::netlink_in(&ns)?;
            if let Some(l) = inside.link_by_name(&ep.ifname)? {
                inside.delete_link(l.index)?;
            }
        }
    } else {
        let mut host = Netlink::open()?;
        if let Some(n) = store.read(|tx| tx.network(&ep.network_id))? {
            bridge::unroute(&mut host, &n, &ep);
        }
        if let Some(l) = host.link_by_name(&ep.host_ifname)? {
            host.delete_link(l.index)?;
        }
    }
    trace("disconnect: interface deleted");
    let overlay = match crate::overlay::Held::of(&ep) {
        Some(h) if store.read(|tx| tx.network(&ep.network_id))?.is_some_and(|n| n.driver == Driver::Overlay) => {
            vec![h]
        }
        _ => vec![],
    };
    store.write(|tx| {
        tx.delete_endpoint(&ep.id)?;
        if ep.ifname == "eth0" {
            tx.delete_ports(container_id)?;
        }
        tx.end_intent(Kind::Disconnect, endpoint_id)?;
        tx.end_intent(Kind::Connect, endpoint_id)
    })?;
    if rebuild {
        firewall::sync_all(ctx, store)?;
    }
    bridge::drop_empty_segments(ctx, store, std::slice::from_ref(&ep));
    crate::overlay::withdraw(ctx, &overlay, container_id);
    crate::hostnames::sync_or_warn(ctx, store);
    crate::dns::server::sync_now(ctx, false, Some(container_id))?;
    Ok(())
}
