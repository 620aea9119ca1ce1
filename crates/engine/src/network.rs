//! Network lifecycle: create (with pool selection and overlap checks), remove, prune,
//! and the implicit default `bridge` network.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;

use crate::ctx::{Ctx, now_nanos, random_hex, trace};
use crate::drivers::{self, bridge, macvlan};
use crate::error::{conflict, invalid, not_found};
use crate::firewall;
use crate::ipam;
use crate::kernel::netlink::{Netlink, Route};
use crate::model::Driver;
use crate::model::{Intent, Kind};
use crate::plan;
use crate::store::{Network, Store, Tx};

pub const DEFAULT_NETWORK: &str = "bridge";
const RESERVED: &[&str] = &["bridge", "host", "none", "default"];
const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, Default, Clone)]
pub struct CreateSpec {
    pub name: String,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    /// Dual stack (`--ipv6`): an IPv6 subnet (given, or a ULA /64 picked) and gateway.
    pub ipv6: bool,
    pub subnet6: Option<String>,
    pub gateway6: Option<String>,
    pub internal: bool,
    pub options: Vec<String>,
    /// A front end's own identity for the network (Podman's): its id and its bridge's name
    /// (e.g. `podman0`), used as given instead of netwright's generated ones.
    pub id: Option<String>,
    pub bridge: Option<String>,
    /// Options a front end records for itself (not user input, not validated here).
    pub extra_options: BTreeMap<String, String>,
    /// `--dry-run`: validate and compute (subnet, gateway, names) in a transaction that is
    /// rolled back; the commands come back as an `explain::DryRun` error.
    pub dry_run: bool,
}

/// Routes on the host that a new subnet must not overlap (the default route aside).
fn host_routes(nl: &mut Netlink) -> Result<Vec<Route>> {
    Ok(nl
        .routes_v4()
        .context("reading the host's routes")?
        .into_iter()
        .filter(|r| r.dst.is_some_and(|d| d.prefix_len() > 0))
        .collect())
}

fn route_net(r: &Route) -> Option<Ipv4Net> {
    match r.dst? {
        ipnet::IpNet::V4(n) => Some(n.trunc()),
        ipnet::IpNet::V6(_) => None,
    }
}

/// Subnets already taken: other networks' and the host's routes (minus our own bridges').
fn used_subnets(tx: &Tx, routes: &[Route]) -> Result<Vec<Ipv4Net>> {
    let nets = tx.networks()?;
    let mut used: Vec<Ipv4Net> = nets.iter().map(|n| n.subnet).collect();
    used.extend(routes.iter().filter_map(route_net).filter(|r| !nets.iter().any(|n| n.subnet == *r)));
    Ok(used)
}

/// Driver options: (explicit MTU, the options to record).
fn parse_options(driver: Driver, opts: &[String]) -> Result<(Option<u32>, BTreeMap<String, String>)> {
    let mut mtu = None;
    let mut map = BTreeMap::new();
    for o in opts {
        let Some((k, v)) = o.split_once('=') else {
            bail!(invalid(format!("option {o:?} is not KEY=VALUE: write e.g. --opt mtu=1400")));
        };
        if k == "mtu" || k == "com.docker.network.driver.mtu" {
            mtu = Some(
                v.parse()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| invalid(format!("option {k}={v}: MTU must be a number between 68 and 65535")))?,
            );
        } else {
            drivers::of(driver).check_option(k, v)?;
        }
        map.insert(k.to_string(), v.to_string());
    }
    Ok((mtu, map))
}

/// Addresses IPAM must never hand out: the gateway, and a macvlan host shim's.
pub fn reserved(n: &Network) -> Vec<std::net::Ipv4Addr> {
    let mut v = vec![n.gateway];
    v.extend(macvlan::shim_address(n));
    v
}

/// The next free IPv4 address of a network (its cursor moves on): for a container or a VIP.
/// Runs inside the write transaction.
pub fn next_address(tx: &Tx, net: &Network) -> Result<std::net::Ipv4Addr> {
    let (ip, cursor) = ipam::allocate(
        net.subnet,
        &reserved(net),
        net.ip_range,
        net.cursor,
        |ip| tx.ip_taken(&net.id, ip),
        || tx.ips_in_use(&net.id),
    )
    .with_context(|| format!("network {}", net.name))?;
    tx.set_cursor(&net.id, cursor)?;
    Ok(ip)
}

/// Validates everything about a new network, then records it and creates its bridge.
pub fn create(ctx: &Ctx, store: &mut Store, nl: &mut Netlink, spec: &CreateSpec) -> Result<Network> {
    if !crate::names::valid(&spec.name) {
        bail!(invalid(crate::names::explain("network name", &spec.name)));
    }

    if RESERVED.contains(&spec.name.as_str()) {
        bail!(invalid(format!("network name {:?} is reserved: pick another name", spec.name)));
    }
    if let Some(id) = &spec.id
        && (id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        bail!(invalid(format!("network id {id:?}: expected at least 12 hexadecimal digits")));
    }
    if let Some(b) = &spec.bridge
        && (b.is_empty() || b.len() > 15 || b.contains(['/', ' ', ':']))
    {
        bail!(invalid(format!("device name {b:?}: at most 15 characters, no '/', ':' or spaces")));
    }
    let Some(driver) = Driver::parse(&spec.driver) else {
        bail!(invalid(format!(
            "network driver {:?} is not supported: use -d bridge, -d macvlan or -d overlay",
            spec.driver
        )));
    };
    let (mtu, mut options) = parse_options(driver, &spec.options)?;
    let subnet6 = spec.subnet6.as_deref().map(|s| ipam::parse_cidr6("--subnet", s)).transpose()?;
    let gateway6 = spec.gateway6.as_deref().map(|s| ipam::parse_ip6("--gateway", s)).transpose()?;
    if !spec.ipv6 && (subnet6.is_some() || gateway6.is_some()) {
        bail!(invalid("an IPv6 --subnet or --gateway needs --ipv6: add --ipv6 for a dual-stack network".to_string()));
    }
    if subnet6.is_none() && gateway6.is_some() {
        bail!(invalid("an IPv6 --gateway needs an IPv6 --subnet: give the subnet it belongs to".to_string()));
    }
    if driver == Driver::Overlay {
        if spec.ipv6 {
            bail!(invalid(
                "--ipv6 is not supported on overlay networks yet: their VXLAN underlay and etcd records are IPv4"
                    .to_string()
            ));
        }
        return create_overlay(ctx, store, nl, spec, mtu, options);
    }
    if driver == Driver::Macvlan && spec.ipv6 && subnet6.is_none() {
        bail!(invalid(
            "a dual-stack macvlan network lives on the LAN's IPv6 prefix: give it as a second --subnet".to_string()
        ));
    }
    let is_macvlan = driver == Driver::Macvlan;
    if spec.dry_run && driver != Driver::Bridge {
        bail!(invalid(format!("--dry-run explains bridge networks only, not -d {driver}")));
    }
    let subnet = spec.subnet.as_deref().map(|s| ipam::parse_cidr("--subnet", s)).transpose()?;
    let gateway = spec.gateway.as_deref().map(|s| ipam::parse_ip("--gateway", s)).transpose()?;
    let ip_range = spec.ip_range.as_deref().map(|s| ipam::parse_cidr("--ip-range", s)).transpose()?;
    if subnet.is_none() && (gateway.is_some() || ip_range.is_some()) {
        bail!(invalid("--gateway and --ip-range need --subnet: give the subnet they belong to".to_string()));
    }
    let mut mtu = mtu.unwrap_or(DEFAULT_MTU);
    if is_macvlan {
        let parent = options.get(macvlan::PARENT).cloned().ok_or_else(|| {
            invalid("macvlan networks need a parent interface: add -o parent=IFACE (e.g. -o parent=eth0)")
        })?;
        if subnet.is_none() {
            bail!(invalid(
                "macvlan networks live on the parent's LAN: give its --subnet (and --gateway, its router)".to_string()
            ));
        }
        if spec.internal {
            bail!(invalid(
                "--internal does not apply to macvlan networks: their containers sit on the LAN itself".to_string()
            ));
        }
        if options.get(macvlan::HOST_SHIM).is_some_and(|v| v == "true") && ip_range.is_none() {
            bail!(invalid("host_shim=true needs --ip-range: the host routes that range through its shim".to_string()));
        }
        // Checked (and a missing VLAN parent made) before anything is recorded.
        let (_, parent_mtu, created) = macvlan::ensure_parent(nl, &parent)?;
        if created {
            options.insert(macvlan::PARENT_CREATED.into(), "true".into());
        }
        if !spec.options.iter().any(|o| o.starts_with("mtu=") || o.starts_with("com.docker.network.driver.mtu=")) {
            mtu = parent_mtu; // a macvlan cannot exceed its parent's MTU
        }
    }
    let routes = if is_macvlan { Vec::new() } else { host_routes(nl)? };
    let net = store.write(|tx| {
        if tx.network(&spec.name)?.is_some_and(|n| n.name == spec.name) {
            bail!(conflict(format!(
                "network with name {} already exists: pick another name or remove it first",
                spec.name
            )));
        }
        let subnet = match subnet {
            Some(s) => {
                // A macvlan subnet is the LAN's own: it overlaps the parent's route by design.
                check_overlap(tx, &routes, s)?;
                s
            }
            None => ipam::next_free_pool(&used_subnets(tx, &routes)?).context(
                "no free address pool left: every default pool overlaps a network or a host route; give --subnet",
            )?,
        };
        let gateway = ipam::validate(subnet, gateway, ip_range)?;
        let (subnet6, gateway6) = match spec.ipv6 {
            false => (None, None),
            true => {
                let used6: Vec<ipnet::Ipv6Net> = tx.networks()?.iter().filter_map(|n| n.subnet6).collect();
                let s6 = match subnet6 {
                    Some(s6) => {
                        if let Some(other) = tx
                            .networks()?
                            .iter()
                            .find(|n| n.subnet6.is_some_and(|o| ipam::overlaps6(&o, &s6)) && !is_macvlan)
                        {
                            bail!(conflict(format!(
                                "IPv6 subnet {s6} overlaps network {} ({}): pick another subnet",
                                other.name,
                                other.subnet6.expect("filtered")
                            )));
                        }
                        s6
                    }
                    None => ipam::random_ula(&used6, || {
                        let mut g = [0u8; 5];
                        rand::fill(&mut g[..]);
                        g
                    }),
                };
                (Some(s6), Some(ipam::validate6(s6, gateway6, subnet)?))
            }
        };
        let id = spec.id.clone().unwrap_or_else(|| random_hex(64));
        if let Some(b) = &spec.bridge
            && tx.networks()?.iter().any(|n| &n.bridge == b)
        {
            bail!(conflict(format!("another network already uses the device name {b}: pick another")));
        }
        let mut options = options.clone();
        options.extend(spec.extra_options.clone());
        if let (true, Some(r)) = (options.get(macvlan::HOST_SHIM).is_some_and(|v| v == "true"), ip_range) {
            // The shim takes the range's last address; IPAM skips it.
            let last = std::net::Ipv4Addr::from(u32::from(r.broadcast()).min(u32::from(subnet.broadcast()) - 1));
            options.insert(macvlan::SHIM_ADDRESS.into(), last.to_string());
        }
        let net = Network {
            bridge: match &spec.bridge {
                Some(b) => b.clone(),
                None if is_macvlan => plan::shim_name(&ctx.tag, &id),
                None => plan::bridge_name(&ctx.tag, &id),
            },
            id,
            name: spec.name.clone(),
            driver,
            subnet,
            gateway,
            ip_range,
            mtu,
            internal: spec.internal,
            options,
            builtin: false,
            created: now_nanos(),
            cursor: 0,
            subnet6,
            gateway6,
        };
        if spec.dry_run {
            let text = crate::observe::explain::network(&crate::firewall::table_name(ctx), &net);
            return Err(crate::observe::explain::DryRun(text.join("\n")).into());
        }
        tx.insert_network(&net)?;
        Ok(net)
    })?;
    let made = if is_macvlan {
        macvlan::ensure_shim(nl, &net)
    } else {
        bridge::ensure_bridge(nl, &plan::network(&net)).and_then(|_| firewall::sync_all(ctx, store))
    };
    if let Err(e) = made {
        store.write(|tx| tx.delete_network(&net.id))?;
        let _ = remove_devices(store, nl, &net);
        let _ = firewall::sync_all(ctx, store);
        return Err(e);
    }
    Ok(net)
}

/// An overlay network: created in etcd (name, VNI and subnet claimed cluster-wide), then
/// mirrored here; other hosts' agents mirror it within milliseconds.
fn create_overlay(
    ctx: &Ctx,
    store: &mut Store,
    nl: &mut Netlink,
    spec: &CreateSpec,
    mtu: Option<u32>,
    options: BTreeMap<String, String>,
) -> Result<Network> {
    let cl = crate::overlay::Cluster::require(ctx)?;
    let subnet = spec.subnet.as_deref().map(|s| ipam::parse_cidr("--subnet", s)).transpose()?;
    let gateway = spec.gateway.as_deref().map(|s| ipam::parse_ip("--gateway", s)).transpose()?;
    let ip_range = spec.ip_range.as_deref().map(|s| ipam::parse_cidr("--ip-range", s)).transpose()?;
    if subnet.is_none() && (gateway.is_some() || ip_range.is_some()) {
        bail!(invalid("--gateway and --ip-range need --subnet: give the subnet they belong to".to_string()));
    }
    let routes = host_routes(nl)?;
    let local_used = store.read(|tx| {
        if tx.network(&spec.name)?.is_some_and(|n| n.name == spec.name) {
            bail!(conflict(format!(
                "network with name {} already exists: pick another name or remove it first",
                spec.name
            )));
        }
        if let Some(s) = subnet {
            // Local networks and routes count too: this host must be able to carry it.
            check_overlap(tx, &routes, s)?;
        }
        used_subnets(tx, &routes)
    })?;
    let req = crate::overlay::network::Request {
        name: &spec.name,
        subnet,
        gateway,
        ip_range,
        internal: spec.internal,
        mtu,
        options,
        local_used,
    };
    let rec = crate::overlay::network::create(&cl, &req)?;
    crate::overlay::sync::mirror_networks(ctx, store, std::slice::from_ref(&rec))?;
    let net = store.read(|tx| tx.network(&rec.id))?.context("the new overlay network is not in the store")?;
    firewall::sync_all(ctx, store)?;
    // The agent holds this host's registration (best effort: the network exists either way).
    if let Err(e) = crate::overlay::agent::poke(ctx, true) {
        eprintln!("netwright: warning: {e:#}");
    }
    Ok(net)
}

/// The kernel objects of a network: its bridge, or its macvlan shim and VLAN parent.
fn remove_devices(store: &mut Store, nl: &mut Netlink, net: &Network) -> Result<()> {
    let others = store.read(|tx| tx.networks())?;
    drivers::of(net.driver).remove(nl, net, &others)
}

fn check_overlap(tx: &Tx, routes: &[Route], s: Ipv4Net) -> Result<()> {
    for n in tx.networks()? {
        if ipam::overlaps(&n.subnet, &s) {
            bail!(conflict(format!(
                "subnet {s} overlaps network {} ({}): pick a subnet that does not overlap",
                n.name, n.subnet
            )));
        }
    }
    for r in routes {
        if let Some(rn) = route_net(r)
            && ipam::overlaps(&rn, &s)
        {
            bail!(conflict(format!(
                "subnet {s} overlaps the host's route to {rn}: pick a subnet that does not overlap"
            )));
        }
    }
    Ok(())
}

/// Makes sure the implicit `bridge` network exists in the store (once per root).
/// The default `bridge` network's record (its pool reserved first, as Docker's docker0
/// takes 172.17). `kernel`: also make its bridge and rules now — only when a container is
/// about to use it, so that reading (`network ls`) never changes the host.
pub fn ensure_default(ctx: &Ctx, store: &mut Store, nl: &mut Netlink, kernel: bool) -> Result<Network> {
    if let Some(n) = store.read(|tx| tx.network(DEFAULT_NETWORK))? {
        return Ok(n);
    }
    let routes = host_routes(nl)?;
    let net = store.write(|tx| {
        if let Some(n) = tx.network(DEFAULT_NETWORK)? {
            return Ok(n);
        }
        let subnet = ipam::next_free_pool(&used_subnets(tx, &routes)?)
            .context("no free address pool for the default bridge network: every pool overlaps a host route")?;
        let id = random_hex(64);
        let net = Network {
            bridge: plan::bridge_name(&ctx.tag, &id),
            id,
            name: DEFAULT_NETWORK.into(),
            driver: Driver::Bridge,
            subnet,
            gateway: ipam::first_host(subnet),
            ip_range: None,
            mtu: DEFAULT_MTU,
            internal: false,
            options: BTreeMap::new(),
            builtin: true,
            created: now_nanos(),
            cursor: 0,
            subnet6: None,
            gateway6: None,
        };
        tx.insert_network(&net)?;
        Ok(net)
    })?;
    if kernel {
        bridge::ensure_bridge(nl, &plan::network(&net))?;
        firewall::sync_all(ctx, store)?;
    }
    Ok(net)
}

pub fn resolve(tx: &Tx, reference: &str) -> Result<Network> {
    match tx.network(reference)? {
        Some(n) => Ok(n),
        None => bail!(not_found(format!(
            "network {reference} not found: see `netwright network ls` or create it with `netwright network create {reference}`"
        ))),
    }
}

pub fn remove(ctx: &Ctx, store: &mut Store, nl: &mut Netlink, reference: &str) -> Result<Network> {
    let overlay = store.read(|tx| {
        let net = resolve(tx, reference)?;
        Ok((net.driver == Driver::Overlay && tx.active_endpoints_on(&net.id)?.is_empty()).then_some(net))
    })?;
    if let Some(net) = overlay {
        // The cluster's record first (refused while another host has containers on it). Then
        // this host's row and devices — which the agent, seeing the deletion, may be removing
        // at the same moment: both ways end the same. A kill in between leaves a row the agent
        // drops at its next sync.
        crate::overlay::network::remove(&crate::overlay::Cluster::require(ctx)?, &net.name)?;
        store.write(|tx| {
            if tx.network(&net.id)?.is_some() {
                tx.delete_network(&net.id)?;
            }
            Ok(())
        })?;
        firewall::sync_all(ctx, store)?;
        remove_devices(store, nl, &net)?;
        return Ok(net);
    }
    let net = store.write(|tx| {
        let net = resolve(tx, reference)?;
        if net.builtin {
            bail!(invalid(format!("{} is a pre-defined network and cannot be removed", net.name)));
        }
        let active = tx.active_endpoints_on(&net.id)?;
        if !active.is_empty() {
            let mut names = Vec::new();
            for e in &active {
                if let Some(c) = tx.container(&e.container_id)? {
                    names.push(c.name);
                }
            }
            bail!(conflict(format!(
                "network {} is in use by container(s) {}: stop or remove them first",
                net.name,
                names.join(", ")
            )));
        }
        let svcs: Vec<String> = tx.services()?.into_iter().filter(|s| s.network_id == net.id).map(|s| s.name).collect();
        if !svcs.is_empty() {
            bail!(conflict(format!(
                "network {} has service(s) {}: remove them first (netwright service rm)",
                net.name,
                svcs.join(", ")
            )));
        }
        tx.delete_network(&net.id)?;
        // The row goes first; a kill before the devices are gone is finished by the next
        // command (crate::recover).
        tx.begin_intent(&Intent::mine(Kind::NetworkRemove, &net.bridge, &net.name))?;
        Ok(net)
    })?;
    trace("network rm: row deleted");
    // Rules before links, so nothing is ever forwarded by a rule to a vanished bridge.
    firewall::sync_all(ctx, store)?;
    trace("network rm: firewall rebuilt");
    remove_devices(store, nl, &net)?;
    store.write(|tx| tx.end_intent(Kind::NetworkRemove, &net.bridge))?;
    crate::hostnames::sync_or_warn(ctx, store);
    Ok(net)
}

/// The rest of a `network rm` killed after its row went: the firewall without it, and its
/// device (bridge or macvlan shim) deleted.
pub fn finish_remove(ctx: &Ctx, store: &mut Store, device: &str, _name: &str) -> Result<()> {
    firewall::sync_all(ctx, store)?;
    let mut nl = Netlink::open()?;
    if let Some(l) = nl.link_by_name(device)? {
        nl.delete_link(l.index)?;
    }
    Ok(())
}

/// Removes every user-defined network with no container attached; returns their names.
pub fn prune(ctx: &Ctx, store: &mut Store, nl: &mut Netlink) -> Result<Vec<String>> {
    let candidates = store.read(|tx| tx.networks())?;
    let mut removed = Vec::new();
    for n in candidates.into_iter().filter(|n| !n.builtin) {
        let idle = store.read(|tx| Ok(tx.active_endpoints_on(&n.id)?.is_empty()))?;
        if idle && remove(ctx, store, nl, &n.id).is_ok() {
            removed.push(n.name);
        }
    }
    Ok(removed)
}
