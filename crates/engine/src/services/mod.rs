//! Services: a virtual IP on a network that spreads new connections over the containers
//! carrying the service's selector (its backends) — Kubernetes' Services, Swarm's VIPs.
//!
//! In the kernel, per service (in netwright's `ip` table, beside the fixed skeleton):
//!
//! ```text
//! map services  { VIP . proto . port : goto svc-ID }     (skeleton: one element per port)
//! map svc_pub   { proto . host port : goto svc-ID }      (skeleton: one element per -p)
//! map svcb-ID   { 0 : 10.1.0.2, 1 : 10.1.0.3, ... }      (the backends by slot)
//! chain svc-ID  { [tcp dport 8080] dnat to numgen random mod N map @svcb-ID [: 80]
//!                 dnat to numgen random mod N map @svcb-ID }
//! ```
//!
//! Slots stay dense (0..N-1): a backend leaving hands its slot to the last one. So a
//! backend joining or leaving changes one or two map elements and the chain's rules (N is
//! in them) — never anything of another service, whatever the number of backends on the
//! host: kube-proxy's nftables mode, not its iptables mode's full rewrite. Conntrack keeps
//! every existing connection on its backend; a backend that leaves gets no new one at once.
//!
//! Backends follow containers with no command from the user: creating, releasing,
//! connecting and disconnecting a container call [`refresh`]. The VIP is a /32 on the
//! network's bridge (so containers' ARP for it is answered) and never handed to a container.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};

use crate::ctx::{Ctx, now_nanos, random_hex};
use crate::error::{conflict, invalid, not_found};
use crate::firewall;
use crate::ipam;
use crate::kernel::netlink::Netlink;
use crate::kernel::nftables::{self as nft, Batch, Elem, Expr, Nftables, SetSpec, datatype, meta};
use crate::model::{Backend, Driver, Proto, Service, ServicePort, ServicePublish};
use crate::store::{Store, Tx};

/// What `service create` asks for.
#[derive(Debug, Default, Clone)]
pub struct CreateSpec {
    pub name: String,
    pub network: String,
    /// "80", "80/tcp", "53/udp".
    pub ports: Vec<String>,
    /// "alias=NAME" (default: alias=<the service's name>).
    pub selector: Option<String>,
    pub ip: Option<String>,
    /// "8080:80[/tcp]": the host's port 8080 leads to a backend's port 80.
    pub publish: Vec<String>,
    /// "client-ip" or "none".
    pub affinity: Option<String>,
}

/// The service's chain and backend map in nftables.
pub fn chain_name(s: &Service) -> String {
    format!("svc-{}", &s.id[..12])
}

pub fn map_name(s: &Service) -> String {
    format!("svcb-{}", &s.id[..12])
}

fn parse_port(spec: &str) -> Result<ServicePort> {
    let (port, proto) = match spec.split_once('/') {
        Some((p, proto)) => (
            p,
            Proto::parse(proto)
                .filter(|p| *p != Proto::Sctp)
                .ok_or_else(|| invalid(format!("--port {spec}: protocol {proto:?}: use tcp or udp")))?,
        ),
        None => (spec, Proto::Tcp),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(ServicePort { port: p, proto }),
        _ => bail!(invalid(format!("--port {spec}: {port:?} is not a port number (1-65535)"))),
    }
}

fn parse_publish(spec: &str, ports: &[ServicePort]) -> Result<ServicePublish> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, parse_port(&format!("1/{p}"))?.proto),
        None => (spec, Proto::Tcp),
    };
    let Some((host, port)) = body.split_once(':').filter(|(h, _)| !h.contains(':')) else {
        bail!(invalid(format!("-p {spec}: a service publishes HOST_PORT:PORT[/PROTO], e.g. -p 8080:80")));
    };
    let (host_port, port) = (parse_port(host)?.port, parse_port(port)?.port);
    if !ports.iter().any(|p| p.port == port && p.proto == proto) {
        bail!(invalid(format!("-p {spec}: the service has no port {port}/{}: add --port {port}", proto.as_str())));
    }
    Ok(ServicePublish { host_port, port, proto })
}

fn resolve(tx: &Tx, reference: &str) -> Result<Service> {
    match tx.service(reference)? {
        Some(s) => Ok(s),
        None => bail!(not_found(format!("service {reference} not found: see `netwright service ls`"))),
    }
}

/// Validates, records and installs a service; its backends are there at once.
pub fn create(ctx: &Ctx, store: &mut Store, nl: &mut Netlink, spec: &CreateSpec) -> Result<Service> {
    if !crate::names::valid(&spec.name) {
        bail!(invalid(crate::names::explain("service name", &spec.name)));
    }
    if spec.ports.is_empty() {
        bail!(invalid("a service needs at least one --port (e.g. --port 80, --port 53/udp)".to_string()));
    }
    let ports: Vec<ServicePort> = spec.ports.iter().map(|p| parse_port(p)).collect::<Result<_>>()?;
    let publish: Vec<ServicePublish> = spec.publish.iter().map(|p| parse_publish(p, &ports)).collect::<Result<_>>()?;
    let selector = match spec.selector.as_deref() {
        None => spec.name.clone(),
        Some(s) => match s.split_once('=') {
            Some(("alias", v)) if crate::names::valid(v) => v.to_string(),
            _ => bail!(invalid(format!("--selector {s:?}: use alias=NAME (containers with --network-alias NAME)"))),
        },
    };
    let client_affinity = match spec.affinity.as_deref() {
        None | Some("none") => false,
        Some("client-ip") => true,
        Some(a) => bail!(invalid(format!("--affinity {a:?}: use client-ip or none"))),
    };
    let vip = spec.ip.as_deref().map(|s| ipam::parse_ip("--ip", s)).transpose()?;
    // The table as the store has it before this service is added to either.
    firewall::ensure(ctx, store)?;
    let (svc, bridge) = store.write(|tx| {
        let net = crate::network::resolve(tx, &spec.network)?;
        match net.driver {
            Driver::Bridge => {}
            Driver::Overlay => bail!(invalid(format!(
                "network {} is an overlay network: services across hosts are not supported yet; use a bridge network",
                net.name
            ))),
            Driver::Macvlan => bail!(invalid(format!(
                "network {} is a macvlan network: its traffic does not pass netwright's NAT; use a bridge network",
                net.name
            ))),
        }
        if net.internal && !publish.is_empty() {
            bail!(invalid(format!("network {} is internal: a service on it cannot publish ports", net.name)));
        }
        if tx.service(&spec.name)?.is_some_and(|s| s.name == spec.name) {
            bail!(conflict(format!("service {} already exists: pick another name or remove it first", spec.name)));
        }
        if tx.container(&spec.name)?.is_some_and(|c| c.name == spec.name) {
            bail!(conflict(format!(
                "a container is named {}: a service's name is a DNS name on its network; pick another",
                spec.name
            )));
        }
        for p in &publish {
            if let Some((holder, m)) = tx.port_holder(None, p.host_port, p.proto)? {
                bail!(conflict(format!(
                    "host port {}/{} is already published by container {holder} ({m}): pick another host port",
                    p.host_port,
                    p.proto.as_str()
                )));
            }
            if let Some(other) = publisher(tx, p.host_port, p.proto)? {
                bail!(conflict(format!(
                    "host port {}/{} is already published by service {other}: pick another host port",
                    p.host_port,
                    p.proto.as_str()
                )));
            }
        }
        let vip = match vip {
            Some(ip) => {
                ipam::check_requested(net.subnet, net.gateway, ip)
                    .map_err(|e| invalid(e.to_string().replace("--ip ", "--ip (VIP) ")))?;
                if tx.ip_taken(&net.id, ip)? {
                    bail!(conflict(format!(
                        "address {ip} is already in use on network {}: pick another --ip",
                        net.name
                    )));
                }
                ip
            }
            None => crate::network::next_address(tx, &net)?,
        };
        let svc = Service {
            id: random_hex(64),
            name: spec.name.clone(),
            network_id: net.id.clone(),
            vip,
            ports: ports.clone(),
            selector: selector.clone(),
            client_affinity,
            publish: publish.clone(),
            created: now_nanos(),
        };
        tx.insert_service(&svc)?;
        Ok((svc, net.bridge.clone()))
    })?;
    let made = (|| -> Result<()> {
        crate::drivers::bridge::ensure_bridge(
            nl,
            &crate::plan::network(
                &store.read(|tx| tx.network(&svc.network_id)?.context("the service's network vanished"))?,
            ),
        )?;
        add_vip(nl, &bridge, svc.vip)?;
        install(ctx, &svc)?;
        refresh(ctx, store, Scope::Networks(std::slice::from_ref(&svc.network_id)))?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = remove_installed(ctx, store, nl, &svc);
        return Err(e);
    }
    crate::dns::server::services_changed(ctx);
    Ok(svc)
}

/// The service publishing a host port, if any.
pub fn publisher(tx: &Tx, host_port: u16, proto: Proto) -> Result<Option<String>> {
    Ok(tx
        .services()?
        .into_iter()
        .find(|s| s.publish.iter().any(|p| p.host_port == host_port && p.proto == proto))
        .map(|s| s.name))
}

/// The VIP as a /32 on the bridge: containers' ARP for it is answered by the host, whose
/// prerouting hook then DNATs the connection to a backend.
fn add_vip(nl: &mut Netlink, bridge: &str, vip: Ipv4Addr) -> Result<()> {
    let link = nl.link_by_name(bridge)?.with_context(|| format!("bridge {bridge} is missing"))?;
    nl.request(Netlink::add_addr_msg(link.index, vip, 32), NLM_F_CREATE | NLM_F_REPLACE)
        .with_context(|| format!("adding the VIP {vip} to {bridge}"))
}

/// The service's map and (empty) chain, and its elements in the skeleton's vmaps.
fn install(ctx: &Ctx, svc: &Service) -> Result<()> {
    let _guard = firewall::lock(ctx)?;
    let t = firewall::table_name(ctx);
    let mut b = Batch::new(nft::NFPROTO_IPV4);
    add_objects(&mut b, &t, svc, &[]);
    b.add_elems(&t, "services", &vip_elems(svc));
    if !svc.publish.is_empty() {
        b.add_elems(&t, "svc_pub", &pub_elems(svc));
    }
    commit(b, "the service")
}

fn commit(b: Batch, what: &str) -> Result<()> {
    let mut nftc = Nftables::open().context("opening nftables netlink")?;
    nftc.commit(&b).map_err(|(i, e)| anyhow::anyhow!("nftables refused {what} (message {i}): {e}"))?;
    nftc.close_detached();
    Ok(())
}

fn pad4(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(4, 0);
    v
}

/// `services` elements: VIP . proto . port → goto svc-ID.
pub fn vip_elems(svc: &Service) -> Vec<Elem> {
    svc.ports
        .iter()
        .map(|p| {
            let key = [svc.vip.octets().to_vec(), pad4(&[p.proto.number()]), pad4(&p.port.to_be_bytes())].concat();
            Elem::goto(key, &chain_name(svc)).with_comment(format!("service {}", svc.name))
        })
        .collect()
}

/// `svc_pub` elements: proto . host port → goto svc-ID.
pub fn pub_elems(svc: &Service) -> Vec<Elem> {
    svc.publish
        .iter()
        .map(|p| {
            let key = [pad4(&[p.proto.number()]), pad4(&p.host_port.to_be_bytes())].concat();
            Elem::goto(key, &chain_name(svc)).with_comment(format!("service {}", svc.name))
        })
        .collect()
}

/// The backend map's element for a slot (the key is numgen's result: host byte order).
fn backend_elem(slot: u32, ip: Option<Ipv4Addr>) -> Elem {
    Elem::new(slot.to_ne_bytes().to_vec(), ip.map(|ip| ip.octets().to_vec()))
}

/// Creates (if missing) and fills the service's map and chain: what a full rebuild does.
pub fn add_objects(b: &mut Batch, t: &str, svc: &Service, backends: &[Backend]) {
    b.add_set(
        t,
        &SetSpec {
            name: map_name(svc),
            key_type: datatype::INTEGER,
            key_len: 4,
            data: Some((datatype::IPV4_ADDR, 4)),
            interval: false,
        },
    );
    b.flush_set(t, &map_name(svc));
    b.add_chain(t, &chain_name(svc));
    let elems: Vec<Elem> = backends.iter().map(|be| backend_elem(be.slot, Some(be.ip))).collect();
    if !elems.is_empty() {
        b.add_elems(t, &map_name(svc), &elems);
    }
    chain_rules(b, t, svc, backends.len() as u32);
}

/// Replaces the chain's rules for N backends (none: the VIP refuses, as a closed port).
fn chain_rules(b: &mut Batch, t: &str, svc: &Service, n: u32) {
    let chain = chain_name(svc);
    b.flush_chain(t, &chain);
    if n == 0 {
        return;
    }
    let r = nft::REG32_00;
    let pick = |out: &mut Vec<Expr>| {
        if svc.client_affinity {
            out.push(Expr::Payload { base: 1, offset: 12, len: 4, dreg: r });
            out.push(Expr::Jhash { sreg: r, len: 4, modulus: n, seed: 0x6e77_7376, dreg: r });
        } else {
            out.push(Expr::Numgen { dreg: r, modulus: n });
        }
        out.push(Expr::Lookup { set: map_name(svc), sreg: r, dreg: Some(r), invert: false });
    };
    for p in &svc.publish {
        let mut e = vec![
            Expr::Meta { key: meta::L4PROTO, dreg: nft::REG_1 },
            Expr::Cmp { sreg: nft::REG_1, op: 0, data: vec![p.proto.number()] },
            Expr::Payload { base: 2, offset: 2, len: 2, dreg: nft::REG_1 },
            Expr::Cmp { sreg: nft::REG_1, op: 0, data: p.host_port.to_be_bytes().to_vec() },
        ];
        pick(&mut e);
        e.push(Expr::ImmediateData { dreg: r + 1, data: pad4(&p.port.to_be_bytes()) });
        e.push(Expr::Dnat { family: nft::NFPROTO_IPV4, reg_addr: r, reg_port: r + 1 });
        let comment =
            format!("service {}: host port {}/{} to a backend's {}", svc.name, p.host_port, p.proto.as_str(), p.port);
        b.add_rule(t, &chain, &comment, &e);
    }
    let mut e = Vec::new();
    pick(&mut e);
    e.push(Expr::DnatAddr { family: nft::NFPROTO_IPV4, reg_addr: r });
    let how = if svc.client_affinity { "by client address" } else { "at random" };
    b.add_rule(t, &chain, &format!("service {}: one of {n} backend(s), {how}", svc.name), &e);
}

/// Is this endpoint a backend of `svc`: on its network, with an address, carrying the
/// selector alias, its container alive, and not leaving right now?
fn qualifies(tx: &Tx, svc: &Service, e: &crate::model::Endpoint, leaving: &[String]) -> Result<bool> {
    Ok(e.network_id == svc.network_id
        && e.ip.is_some()
        && !leaving.contains(&e.id)
        && e.aliases.iter().any(|a| a == &svc.selector)
        && tx.container(&e.container_id)?.is_some_and(|c| c.state != crate::model::State::Exited))
}

/// Every backend `svc` should have, from the endpoints on its network (a full refresh).
fn wanted(
    tx: &Tx,
    svc: &Service,
    on_net: &[crate::model::Endpoint],
    leaving: &[String],
) -> Result<Vec<(String, Ipv4Addr)>> {
    let mut out = Vec::new();
    for e in on_net {
        if qualifies(tx, svc, e, leaving)? {
            out.push((e.id.clone(), e.ip.expect("qualified")));
        }
    }
    Ok(out)
}

/// One service's change of backends: the slots that change (None: gone) and the new count.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    pub slots: Vec<(u32, Option<Ipv4Addr>)>,
    pub old_n: u32,
    pub new_n: u32,
}

/// The smallest change that makes `have` (slots 0..N-1) hold exactly `want`, keeping the
/// slots dense: a leaving backend's slot goes to the last one. Pure.
pub fn plan(have: &[Backend], want: &[(String, Ipv4Addr)]) -> (Vec<Backend>, Change) {
    let mut slots: Vec<Backend> = have.to_vec();
    slots.sort_by_key(|b| b.slot);
    let mut change = Change { old_n: slots.len() as u32, ..Change::default() };
    let mut touched = std::collections::BTreeMap::new();
    let mut i = 0;
    while i < slots.len() {
        let keep = want.iter().any(|(id, ip)| *id == slots[i].endpoint_id && *ip == slots[i].ip);
        if keep {
            i += 1;
            continue;
        }
        let last = slots.pop().expect("non-empty");
        if i < slots.len() {
            slots[i] = Backend { slot: i as u32, ..last };
            touched.insert(i as u32, Some(slots[i].ip));
            // Re-check the moved one at i (it may be leaving too).
        } else {
            touched.insert(i as u32, None);
        }
    }
    for (id, ip) in want {
        if !slots.iter().any(|b| &b.endpoint_id == id && b.ip == *ip) {
            let slot = slots.len() as u32;
            slots.push(Backend { slot, ip: *ip, endpoint_id: id.clone() });
            touched.insert(slot, Some(*ip));
        }
    }
    // Slots past the new end that were vacated.
    for s in slots.len() as u32..change.old_n {
        touched.entry(s).or_insert(None);
    }
    change.new_n = slots.len() as u32;
    change.slots = touched.into_iter().collect();
    (slots, change)
}

/// Which backends to look at.
pub enum Scope<'a> {
    /// Every service on these networks against every container there (a new service,
    /// `reconcile`): O(containers on the network).
    Networks(&'a [String]),
    /// These endpoints joined (a container created or connected) or are leaving (a release
    /// or a disconnect about to happen): only the services they concern, so the work does
    /// not grow with the number of backends elsewhere.
    Endpoints { joined: &'a [String], leaving: &'a [String] },
}

/// Brings services' backends in line with the containers: one store transaction, one
/// nftables batch; nothing at all on a host without services.
pub fn refresh(ctx: &Ctx, store: &mut Store, scope: Scope) -> Result<()> {
    if !store.read(|tx| tx.has_services())? {
        return Ok(());
    }
    crate::ctx::trace("services: refresh");
    let _guard = firewall::lock(ctx)?;
    let t = firewall::table_name(ctx);
    let changes = store.write(|tx| {
        // (service, the backends it should have)
        let mut todo: Vec<(Service, Vec<(String, Ipv4Addr)>)> = Vec::new();
        match &scope {
            Scope::Networks(networks) => {
                for net in networks.iter() {
                    let on_net = tx.active_endpoints_on(net)?;
                    for svc in tx.services_on(net)? {
                        let want = wanted(tx, &svc, &on_net, &[])?;
                        todo.push((svc, want));
                    }
                }
            }
            Scope::Endpoints { joined, leaving } => {
                let mut affected: Vec<Service> = Vec::new();
                for id in leaving.iter() {
                    affected.extend(tx.services_backed_by(id)?);
                }
                let mut joining = Vec::new();
                for id in joined.iter() {
                    let Some(e) = tx.endpoint(id)? else { continue };
                    for a in &e.aliases {
                        affected.extend(tx.services_selecting(&e.network_id, a)?);
                    }
                    joining.push(e);
                }
                affected.sort_by(|a, b| a.id.cmp(&b.id));
                affected.dedup_by(|a, b| a.id == b.id);
                for svc in affected {
                    let mut want: Vec<(String, Ipv4Addr)> = tx
                        .backends(&svc.id)?
                        .into_iter()
                        .filter(|b| !leaving.contains(&b.endpoint_id))
                        .map(|b| (b.endpoint_id, b.ip))
                        .collect();
                    for e in &joining {
                        if qualifies(tx, &svc, e, leaving)? && !want.iter().any(|(id, _)| *id == e.id) {
                            want.push((e.id.clone(), e.ip.expect("qualified")));
                        }
                    }
                    todo.push((svc, want));
                }
            }
        }
        let mut out = Vec::new();
        for (svc, want) in todo {
            let have = tx.backends(&svc.id)?;
            let (next, change) = plan(&have, &want);
            if change.slots.is_empty() {
                continue;
            }
            for (slot, ip) in &change.slots {
                match ip {
                    Some(_) => tx.set_backend(&svc.id, next.iter().find(|b| b.slot == *slot).expect("planned"))?,
                    None => tx.delete_backend(&svc.id, *slot)?,
                }
            }
            out.push((svc, change));
        }
        Ok(out)
    })?;
    crate::ctx::trace("services: store updated");
    if changes.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new(nft::NFPROTO_IPV4);
    let (mut elems, mut rules) = (0, 0);
    for (svc, change) in &changes {
        let old: Vec<Elem> =
            change.slots.iter().filter(|(s, _)| *s < change.old_n).map(|(s, _)| backend_elem(*s, None)).collect();
        let new: Vec<Elem> =
            change.slots.iter().filter_map(|(s, ip)| ip.map(|ip| backend_elem(*s, Some(ip)))).collect();
        elems += old.len() + new.len();
        if !old.is_empty() {
            b.del_elems(&t, &map_name(svc), &old);
        }
        if !new.is_empty() {
            b.add_elems(&t, &map_name(svc), &new);
        }
        if change.old_n != change.new_n {
            chain_rules(&mut b, &t, svc, change.new_n);
            rules += svc.publish.len() + 1;
        }
    }
    let mut nftc = Nftables::open().context("opening nftables netlink")?;
    if nftc.commit(&b).is_err() {
        // The table or the service's objects are gone (a flush): rebuild from the store,
        // which already has the new backends.
        drop(_guard);
        firewall::sync_all(ctx, store)?;
    } else {
        nftc.close_detached();
    }
    crate::dns::server::services_changed(ctx);
    // The bench reads this line: what one change cost in nftables objects.
    crate::ctx::trace(&format!("services: {elems} element(s), {rules} rule(s) changed"));
    Ok(())
}

/// Removes a service: its elements, chain and map, its VIP, its record.
pub fn remove(ctx: &Ctx, store: &mut Store, nl: &mut Netlink, reference: &str) -> Result<Service> {
    let svc = store.read(|tx| resolve(tx, reference))?;
    remove_installed(ctx, store, nl, &svc)?;
    crate::dns::server::services_changed(ctx);
    Ok(svc)
}

fn remove_installed(ctx: &Ctx, store: &mut Store, nl: &mut Netlink, svc: &Service) -> Result<()> {
    {
        let _guard = firewall::lock(ctx)?;
        let t = firewall::table_name(ctx);
        // Each step alone: whatever is already gone does not keep the rest.
        for step in 0..3 {
            let mut b = Batch::new(nft::NFPROTO_IPV4);
            match step {
                0 => b.del_elems(&t, "services", &vip_elems(svc)),
                1 => b.del_elems(&t, "svc_pub", &pub_elems(svc)),
                _ => b.flush_chain(&t, &chain_name(svc)).del_chain(&t, &chain_name(svc)).del_set(&t, &map_name(svc)),
            };
            let _ = commit(b, "removing the service");
        }
    }
    let bridge = store.read(|tx| Ok(tx.network(&svc.network_id)?.map(|n| n.bridge)))?;
    if let Some(l) = bridge.and_then(|b| nl.link_by_name(&b).ok().flatten()) {
        let _ = nl.request(del_addr_msg(l.index, svc.vip), 0);
    }
    store.write(|tx| tx.delete_service(&svc.id))
}

fn del_addr_msg(index: u32, vip: Ipv4Addr) -> netlink_packet_route::RouteNetlinkMessage {
    match Netlink::add_addr_msg(index, vip, 32) {
        netlink_packet_route::RouteNetlinkMessage::NewAddress(m) => {
            netlink_packet_route::RouteNetlinkMessage::DelAddress(m)
        }
        other => other,
    }
}

/// Every service with its backends (for the firewall's rebuild, DNS, doctor, topology).
pub fn all(tx: &Tx) -> Result<Vec<(Service, Vec<Backend>)>> {
    let mut out = Vec::new();
    for s in tx.services()? {
        let b = tx.backends(&s.id)?;
        out.push((s, b));
    }
    Ok(out)
}

/// The VIPs as /32s on their bridges (after a reboot or a bridge re-made): reconcile.
pub fn ensure_vips(store: &mut Store, nl: &mut Netlink) -> Result<usize> {
    let (svcs, nets) = store.read(|tx| Ok((tx.services()?, tx.networks()?)))?;
    let mut n = 0;
    for s in &svcs {
        if let Some(net) = nets.iter().find(|n| n.id == s.network_id)
            && nl.link_by_name(&net.bridge)?.is_some()
        {
            add_vip(nl, &net.bridge, s.vip)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(slot: u32, id: &str, ip: &str) -> Backend {
        Backend { slot, ip: ip.parse().unwrap(), endpoint_id: id.into() }
    }

    fn w(id: &str, ip: &str) -> (String, Ipv4Addr) {
        (id.into(), ip.parse().unwrap())
    }

    #[test]
    fn slots_stay_dense_and_changes_stay_small() {
        let have = vec![be(0, "a", "10.0.0.2"), be(1, "b", "10.0.0.3"), be(2, "c", "10.0.0.4")];
        // b leaves: c takes slot 1, slot 2 goes.
        let (next, ch) = plan(&have, &[w("a", "10.0.0.2"), w("c", "10.0.0.4")]);
        assert_eq!(next, vec![be(0, "a", "10.0.0.2"), be(1, "c", "10.0.0.4")]);
        assert_eq!(ch.slots, vec![(1, Some("10.0.0.4".parse().unwrap())), (2, None)]);
        assert_eq!((ch.old_n, ch.new_n), (3, 2));
        // The last one leaves: one slot goes.
        let (_, ch) = plan(&have, &[w("a", "10.0.0.2"), w("b", "10.0.0.3")]);
        assert_eq!(ch.slots, vec![(2, None)]);
        // One joins: one slot more, nothing else touched.
        let (next, ch) = plan(&have, &[w("a", "10.0.0.2"), w("b", "10.0.0.3"), w("c", "10.0.0.4"), w("d", "10.0.0.5")]);
        assert_eq!(ch.slots, vec![(3, Some("10.0.0.5".parse().unwrap()))]);
        assert_eq!(next.len(), 4);
        // Nothing changes: nothing touched.
        assert!(plan(&have, &[w("a", "10.0.0.2"), w("b", "10.0.0.3"), w("c", "10.0.0.4")]).1.slots.is_empty());
        // All leave, two at the end first.
        let (next, ch) = plan(&have, &[]);
        assert!(next.is_empty());
        assert_eq!(ch.slots, vec![(0, None), (1, None), (2, None)]);
        // a and c leave: b ends in slot 0.
        let (next, _) = plan(&have, &[w("b", "10.0.0.3")]);
        assert_eq!(next, vec![be(0, "b", "10.0.0.3")]);
    }

    #[test]
    fn ports_and_publish_specs() {
        assert_eq!(parse_port("53/udp").unwrap(), ServicePort { port: 53, proto: Proto::Udp });
        assert!(parse_port("0").unwrap_err().to_string().contains("not a port number"));
        assert!(parse_port("80/sctp").is_err());
        let ports = [ServicePort { port: 80, proto: Proto::Tcp }];
        assert_eq!(
            parse_publish("8080:80", &ports).unwrap(),
            ServicePublish { host_port: 8080, port: 80, proto: Proto::Tcp }
        );
        assert!(parse_publish("8080:81", &ports).unwrap_err().to_string().contains("no port 81"));
        assert!(parse_publish("127.0.0.1:8080:80", &ports).is_err());
    }
}
