//! Creating a container's network: the store transaction (name, addresses, ports), its
//! files, its namespace and its interfaces. On any failure, what was done is undone.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::{EndpointRequest, Mode, Spec, files, owner_alive};
use crate::ctx::{Ctx, now_nanos, random_hex, trace};
use crate::drivers::{self, bridge};
use crate::error::{conflict, invalid, not_found};
use crate::firewall;
use crate::ipam;
use crate::kernel::{mntns, netlink::Netlink, netns, process};
use crate::model::{Driver, NetworkMode};
use crate::model::{Intent, Kind};
use crate::names;
use crate::network;
use crate::plan;
use crate::ports;
use crate::store::{Container, Endpoint, Network, State, Store};

/// A container whose network is set up, ready for a process (or, attached, for nothing).
pub struct Created {
    pub container: Container,
    /// The namespace to join; None: stay in the host's (host mode).
    pub netns: Option<OwnedFd>,
    /// The mount template to start from; None: no mount namespace (host mode).
    pub mnt_template: Option<OwnedFd>,
    /// Where the container's /etc files are (its own, or its network owner's).
    pub files_dir: PathBuf,
    /// Its endpoints, each with its network, in interface order.
    pub endpoints: Vec<(Endpoint, Network)>,
    /// Its published ports.
    pub ports: Vec<ports::Mapping>,
}

/// Allocates an address on `net` (the requested one, or the next free) and records the
/// endpoint. Runs inside the write transaction.
pub fn add_endpoint(
    ctx: &Ctx,
    tx: &crate::store::Tx,
    net: &Network,
    container_id: &str,
    req: &EndpointRequest,
) -> Result<Endpoint> {
    let (requested_ip, ifname) = (req.ip, req.ifname.as_deref().unwrap_or("eth0"));
    let aliases: &[String] = req.aliases.as_deref().unwrap_or_default();
    if !valid_ifname(ifname) {
        bail!(invalid(format!("interface name {ifname:?}: 1 to 15 characters, no '/', ':' or spaces")));
    }
    let mac = match &req.mac {
        Some(m) => {
            let parsed =
                ipam::parse_mac(m).ok_or_else(|| invalid(format!("MAC address {m:?}: expected aa:bb:cc:dd:ee:ff")))?;
            Some(ipam::format_mac(parsed))
        }
        None => None,
    };
    let ep_id = random_hex(32);
    // An overlay endpoint is published with its address claim: what peers need of it.
    let template = || -> Result<crate::overlay::network::EndpointTemplate> {
        let c = tx.container(container_id)?.context("the container's row is gone")?;
        Ok(crate::overlay::network::EndpointTemplate {
            id: ep_id.clone(),
            container_id: container_id.to_string(),
            mac: mac.clone(),
            names: crate::overlay::network::endpoint_names(&c.name, &c.hostname, aliases),
        })
    };
    let ip = match requested_ip {
        Some(ip) if net.driver == Driver::Overlay => {
            ipam::check_requested(net.subnet, net.gateway, ip)?;
            if tx.ip_taken(&net.id, ip)? {
                bail!(conflict(format!(
                    "address {ip} is already in use on network {}: pick another --ip or leave it out",
                    net.name
                )));
            }
            crate::overlay::network::claim(ctx, tx, net, &template()?, Some(ip))?
        }
        // Addresses of an overlay network are the cluster's: claimed in etcd.
        None if net.driver == Driver::Overlay => crate::overlay::network::claim(ctx, tx, net, &template()?, None)?,
        Some(ip) => {
            ipam::check_requested(net.subnet, net.gateway, ip)?;
            if network::reserved(net).contains(&ip) {
                bail!(conflict(format!(
                    "--ip {ip} is reserved on network {} (host shim): pick another address",
                    net.name
                )));
            }
            if tx.ip_taken(&net.id, ip)? {
                bail!(conflict(format!(
                    "address {ip} is already in use on network {}: pick another --ip or leave it out",
                    net.name
                )));
            }
            ip
        }
        None => network::next_address(tx, net)?,
    };
    let ip6 = match (net.subnet6.zip(net.gateway6), req.ip6) {
        (None, Some(ip6)) => bail!(invalid(format!(
            "--ip6 {ip6}: network {} has no IPv6 subnet (create a network with --ipv6)",
            net.name
        ))),
        (None, None) => None,
        (Some((subnet6, gw6)), Some(ip6)) => {
            ipam::check_requested6(subnet6, gw6, ip6)?;
            if tx.ip6_taken(&net.id, ip6)? {
                bail!(conflict(format!(
                    "address {ip6} is already in use on network {}: pick another --ip6 or leave it out",
                    net.name
                )));
            }
            Some(ip6)
        }
        (Some((subnet6, gw6)), None) => {
            Some(ipam::allocate6(subnet6, net.subnet, ip, gw6, |a| tx.ip6_taken(&net.id, a))?)
        }
    };
    if net.builtin && !aliases.is_empty() {
        bail!(invalid(
            "--network-alias works on user-defined networks only, as in Docker: create one with `netwright network create`"
        ));
    }
    // A bridge or overlay network's endpoints fill its bridge, then segment bridges
    // (plan::Segment).
    let segment = if net.driver.is_bridged() {
        plan::pick_segment(&tx.segment_loads(&net.id)?).ok_or_else(|| {
            conflict(format!(
                "network {} holds {} containers on this host, the most its bridges take: use another network",
                net.name,
                plan::SEGMENT_PORTS * (plan::MAX_SEGMENTS + 1)
            ))
        })?
    } else {
        0
    };
    let ep = Endpoint {
        segment,
        host_ifname: if net.driver.is_bridged() { plan::host_veth_name(&ctx.tag, &ep_id) } else { String::new() },
        id: ep_id,
        container_id: container_id.to_string(),
        network_id: net.id.clone(),
        ifname: ifname.to_string(),
        ip: Some(ip),
        requested_ip,
        ip6,
        requested_ip6: req.ip6,
        mac: mac.unwrap_or_else(|| ipam::format_mac(ipam::mac_for(ip))),
        aliases: aliases.to_vec(),
    };
    tx.insert_endpoint(&ep)?;
    Ok(ep)
}

fn valid_ifname(n: &str) -> bool {
    !n.is_empty() && n.len() <= 15 && !n.contains(['/', ' ', ':']) && n != "." && n != ".."
}

/// What the create transaction recorded.
struct Rows {
    container: Container,
    endpoints: Vec<Endpoint>,
    nets: Vec<Network>,
    mappings: Vec<ports::Mapping>,
    owner: Option<Container>,
}

/// Store rows, container files, namespace and veths. On any failure, undoes what it did.
pub fn create(ctx: &Ctx, store: &mut Store, spec: &Spec) -> Result<Created> {
    let mut host_nl = Netlink::open().context("opening netlink")?;
    trace("create: start");
    let mode = Mode::parse(spec)?;
    if let Mode::Net(ns) = &mode
        && ns.iter().any(|n| n == network::DEFAULT_NETWORK)
        && !spec.dry_run
    {
        network::ensure_default(ctx, store, &mut host_nl, true)?;
    }
    let requested_ip = spec.ip.as_deref().map(|s| ipam::parse_ip("--ip", s)).transpose()?;
    let requested_ip6 = spec.ip6.as_deref().map(|s| ipam::parse_ip6("--ip6", s)).transpose()?;
    let port_reqs = ports::parse_all(&spec.publish)?;
    // A runtime that reserves its host ports itself (Podman holds them open) is trusted.
    for r in port_reqs.iter().filter(|r| r.host_port.is_some() && !spec.runtime_reserves_ports) {
        let p = r.host_port.expect("filtered");
        if let Err(e) = ports::host_port_free(r.host_ip, p, r.proto) {
            let ip = r.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string());
            if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                bail!(invalid(format!("cannot publish on {ip}: it is not an address of this host")));
            }
            bail!(conflict(format!(
                "host port {ip}:{p}/{} is already in use by a process on the host ({e}): pick another host port",
                r.proto.as_str()
            )));
        }
    }
    trace("create: ports checked");
    if let Some(name) = &spec.name {
        super::release_if_orphaned(ctx, store, name)?;
    }
    trace("create: name checked");
    let me = std::process::id() as i32;
    let rows = store.write(|tx| {
        let (nets, owner) = match &mode {
            Mode::Net(ns) => {
                let mut v: Vec<Network> = Vec::new();
                for n in ns {
                    let net = network::resolve(tx, n)?;
                    if v.iter().any(|o| o.id == net.id) {
                        bail!(invalid(format!("network {} is given twice", net.name)));
                    }
                    v.push(net);
                }
                (v, None)
            }
            Mode::Join(o) => {
                let Some(owner) = tx.container(o)? else {
                    bail!(not_found(format!("no such container: {o} (for --network container:{o})")));
                };
                if owner.state != State::Running || !owner_alive(&owner) {
                    bail!(invalid(format!("container {} is not running: start it before joining its network", owner.name)));
                }
                if owner.network_mode.joined().is_some() {
                    bail!(invalid(format!("container {} itself shares another container's network: join that one instead ({})", owner.name, owner.network_mode)));
                }
                (vec![], Some(owner))
            }
            Mode::Host | Mode::None => (vec![], None),
        };
        if let Some(net) = nets.first() {
            if net.internal && !port_reqs.is_empty() {
                bail!(invalid(format!("network {} is internal: it has no published ports (drop -p or use another network)", net.name)));
            }
            if net.driver == Driver::Macvlan && !port_reqs.is_empty() {
                bail!(invalid(format!("network {} is a macvlan network: its containers are reachable directly on the LAN, so -p does not apply", net.name)));
            }
        }
        let name = match &spec.name {
            Some(n) => {
                if let Some(holder) = tx.container(n)?.filter(|c| c.name == *n) {
                    bail!(conflict(format!("container name {n:?} is already in use by container {}: remove it (`netwright rm {n}`) or pick another name", &holder.id[..12])));
                }
                n.clone()
            }
            None => loop {
                let n = names::generate();
                if !tx.name_taken(&n)? {
                    break n;
                }
            },
        };
        let id = match &spec.id {
            Some(given) => {
                if given.len() < 12 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!(invalid(format!("container id {given:?}: expected at least 12 hexadecimal digits")));
                }
                if tx.container(given)?.is_some_and(|c| &c.id == given) {
                    bail!(conflict(format!("container id {given} is already in use")));
                }
                given.to_ascii_lowercase()
            }
            None => random_hex(64),
        };
        let network_mode = match (&mode, nets.first(), &owner) {
            (_, Some(n), _) => NetworkMode::Network(n.name.clone()),
            (_, _, Some(o)) => NetworkMode::Container(o.id.clone()),
            (Mode::Host, _, _) => NetworkMode::Host,
            _ => NetworkMode::None,
        };
        let hostname = match &owner {
            Some(o) => o.hostname.clone(),
            None => spec.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        };
        let container = Container {
            hostname,
            id: id.clone(),
            name,
            cmd: spec.cmd.clone(),
            state: State::Created,
            pid: None,
            // An attached container has no monitor: its namespace is its life.
            monitor_pid: spec.netns.is_none().then_some(me),
            // For an attached container: the namespace's inode, so a namespace made anew at
            // the same path is not taken for the one attached.
            monitor_start: match &spec.netns {
                Some(p) => netns::inode(p),
                None => process::my_start_time(),
            },
            exit_code: None,
            error: None,
            auto_remove: spec.auto_remove,
            detached: spec.detach,
            network_mode,
            dns: spec.dns.clone(),
            netns_source: spec.netns.as_ref().map(|p| p.to_string_lossy().into_owned()),
            egress_rate: spec.egress_rate.as_deref().and_then(crate::shaping::parse_rate),
            ingress_rate: spec.ingress_rate.as_deref().and_then(crate::shaping::parse_rate),
            created: now_nanos(),
            started: None,
            finished: None,
        };
        tx.insert_container(&container)?;
        // A process killed from here until the container runs leaves this behind: the
        // next command undoes the half-made container (crate::recover).
        tx.begin_intent(&Intent::mine(Kind::Create, &container.id, ""))?;
        let mut eps = Vec::new();
        for (i, net) in nets.iter().enumerate() {
            let given = spec.endpoints.get(&net.name).cloned().unwrap_or_default();
            let req = EndpointRequest {
                // --ip applies to the first network, as in Docker.
                ip: given.ip.or(if i == 0 { requested_ip } else { None }),
                ip6: given.ip6.or(if i == 0 { requested_ip6 } else { None }),
                mac: given.mac,
                ifname: Some(given.ifname.unwrap_or_else(|| format!("eth{i}"))),
                // Aliases name the container on its user-defined networks.
                aliases: Some(given.aliases.unwrap_or_else(|| {
                    if net.builtin && nets.len() > 1 { vec![] } else { spec.aliases.clone() }
                })),
            };
            eps.push(add_endpoint(ctx, tx, net, &id, &req)?);
        }
        let mappings = ports::resolve(tx, &port_reqs)?;
        for m in &mappings {
            tx.insert_port(&container.id, m)?;
        }
        if spec.dry_run {
            if nets.iter().any(|n| n.driver == Driver::Overlay) {
                bail!(invalid("--dry-run does not apply to overlay networks: their addresses are claimed in etcd".to_string()));
            }
            let eps: Vec<(Endpoint, Network)> = eps.into_iter().zip(nets.iter().cloned()).collect();
            let text = crate::observe::explain::container(&crate::firewall::table_name(ctx), &container, &eps, &mappings);
            // Rolls the transaction back: nothing is recorded.
            return Err(crate::observe::explain::DryRun(text.join("\n")).into());
        }
        Ok(Rows { container, endpoints: eps, nets, mappings, owner })
    })?;
    trace("create: store rows written");
    // The container's files (the filesystem) and the firewall's part (nf_tables in the
    // host's namespace) share no state and no kernel lock with the links (rtnetlink, the
    // container's namespace): they are done on a second thread while the links are made.
    // On a failure of either, the undo below takes back both (unpublishing what may not
    // have been published falls back to a rebuild; the directory is removed whole).
    let (made, firewall_done) = std::thread::scope(|s| {
        let rows = &rows;
        let mode = &mode;
        let firewall = s.spawn(|| -> Result<()> {
            // A host-mode container uses the host's files; a joiner its owner's.
            if !matches!(mode, Mode::Host) && rows.owner.is_none() {
                let embedded_dns = rows.nets.iter().any(|n| n.serves_names());
                files::write(ctx, &rows.container, &rows.endpoints, spec, embedded_dns)?;
                trace("setup: files written");
            }
            if rows.nets.iter().any(|n| n.driver.is_bridged()) {
                // Restores the table, its rules and the network sets if an admin's flush or
                // a reboot took them (a few small reads when all is well).
                firewall::ensure(ctx, store)?;
                trace("setup: firewall checked");
            }
            if let Some(to) = rows.endpoints.first().and_then(|e| e.target()).filter(|_| !rows.mappings.is_empty()) {
                firewall::publish(ctx, store, &rows.mappings, to, &rows.container.name)?;
                trace("setup: ports published");
            }
            Ok(())
        });
        let made = setup(ctx, &mut host_nl, rows, mode);
        (made, firewall.join())
    });
    let firewall_done = firewall_done.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let Rows { container, endpoints, nets, mappings, .. } = rows;
    let made = made.and_then(|(created, dns)| {
        firewall_done?;
        // A container carrying a service's selector becomes one of its backends.
        let joined: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
        crate::services::refresh(ctx, store, crate::services::Scope::Endpoints { joined: &joined, leaving: &[] })?;
        // The embedded resolver must listen in the namespace before the process starts.
        if let Some(dns) = dns {
            dns.wait()?;
            trace("setup: DNS resolver ready");
        }
        Ok(created)
    });
    let overlay = nets.iter().any(|n| n.driver == Driver::Overlay);
    match made {
        Ok((netns, mnt_template, files_dir)) => {
            if overlay {
                // Peers learned the endpoint (and its names) with its claim; the agent
                // publishes anything that could not go that way.
                crate::overlay::agent::nudge(ctx);
                trace("setup: overlay peers told");
            }
            let endpoints = endpoints.into_iter().zip(nets).collect();
            Ok(Created { container, netns, mnt_template, files_dir, endpoints, ports: mappings })
        }
        Err(e) => {
            if overlay {
                crate::overlay::network::release(ctx, &held(&nets, &endpoints), &container.id);
            }
            let unpublished = match endpoints.first().and_then(|e| e.target()) {
                Some(to) => firewall::unpublish(ctx, &mappings, to).is_ok(),
                None => mappings.is_empty(),
            };
            let _ = netns::remove_pinned(&ctx.netns_path(&container.id));
            let _ = store.write(|tx| {
                tx.delete_container(&container.id)?;
                // Hand the addresses back to the counter unless someone allocated after us:
                // a failed attempt must not move the next container's address.
                for (n, ep) in nets.iter().zip(&endpoints) {
                    let ours = ep.ip.filter(|_| ep.requested_ip.is_none()).map(u32::from);
                    if ours.is_some() && tx.network(&n.id)?.map(|now| now.cursor) == ours {
                        tx.set_cursor(&n.id, n.cursor)?;
                    }
                }
                Ok(())
            });
            // A backend it may have become is one no more.
            let gone: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
            let _ =
                crate::services::refresh(ctx, store, crate::services::Scope::Endpoints { joined: &[], leaving: &gone });
            let _ = fs::remove_dir_all(ctx.container_dir(&container.id));
            if !unpublished {
                // Some were never published: the store no longer has them, a rebuild is exact.
                let _ = firewall::sync_all(ctx, store);
            }
            Err(e)
        }
    }
}

/// The overlay addresses among a container's endpoints.
fn held(nets: &[Network], eps: &[Endpoint]) -> Vec<crate::overlay::Held> {
    nets.iter()
        .zip(eps)
        .filter(|(n, _)| n.driver == Driver::Overlay)
        .filter_map(|(_, e)| crate::overlay::Held::of(e))
        .collect()
}

/// (namespace, mount template, files directory), and the DNS resolver's pending adoption.
type Setup = ((Option<OwnedFd>, Option<OwnedFd>, std::path::PathBuf), Option<crate::dns::server::PendingSync>);

/// Files, namespace and interfaces for each mode.
fn setup(ctx: &Ctx, host_nl: &mut Netlink, rows: &Rows, mode: &Mode) -> Result<Setup> {
    let (c, eps, nets, owner) = (&rows.container, &rows.endpoints[..], &rows.nets[..], rows.owner.as_ref());
    // Every container has a directory (its log lives there), whatever its network; with
    // its own network, the files written beside the links make it (see `create`).
    let own_dir = || {
        fs::create_dir_all(ctx.container_dir(&c.id))
            .with_context(|| format!("creating {}", ctx.container_dir(&c.id).display()))
    };
    if let Mode::Host = mode {
        own_dir()?;
        return Ok(((None, None, ctx.container_dir(&c.id)), None));
    }
    if let Some(o) = owner {
        own_dir()?;
        // The owner's namespace and files; a host-mode owner means the host's namespace.
        let ns = if o.network_mode == NetworkMode::Host {
            None
        } else {
            Some(
                netns::open(&ctx.netns_path(&o.id))
                    .with_context(|| format!("opening {}'s network namespace", o.name))?,
            )
        };
        let template = mntns::ensure_template(&ctx.mnt_template(), &ctx.netns_dir())?;
        return Ok(((ns, Some(template), ctx.container_dir(&o.id)), None));
    }
    let embedded_dns = nets.iter().any(|n| n.serves_names());
    netns::ensure_shared_dir(&ctx.netns_dir())?;
    let (ns, template) = match &c.netns_source {
        // The runtime's namespace, pinned here too: reconcile, trace and DNS find every
        // container's namespace in one place.
        Some(src) => (netns::pin_existing(std::path::Path::new(src), &ctx.netns_path(&c.id))?, None),
        None => {
            let template = mntns::ensure_template(&ctx.mnt_template(), &ctx.netns_dir())?;
            (netns::create_pinned(&ctx.netns_path(&c.id))?, Some(template))
        }
    };
    trace("setup: namespace created and pinned");
    let mut ctr_nl = bridge::netlink_in(&ns)?;
    if let Some(src) = &c.netns_source {
        for ep in eps {
            match ctr_nl.link_by_name(&ep.ifname)? {
                // What an earlier detach left down here: ours to replace.
                Some(l) if !l.up && matches!(l.kind.as_deref(), Some("veth" | "macvlan")) => {
                    ctr_nl.delete_link(l.index)?
                }
                Some(_) => bail!(conflict(format!(
                    "{src} already has an interface {} in use: remove it from the namespace first",
                    ep.ifname
                ))),
                None => {}
            }
        }
    }
    // lo first: 127.0.0.11 exists once lo is up, and the resolver binds it.
    ctr_nl.request(Netlink::set_up_msg(1), 0).context("bringing lo up")?;
    // The resolver adopts the namespace (its rows are written) while the bridges and the
    // links are made: asked first, as it is the longest of the three.
    let dns = if embedded_dns { Some(crate::dns::server::sync_start(ctx, true, Some(&c.id))?) } else { None };
    let mut bridges = Vec::new();
    for n in nets {
        bridges.push(drivers::of(n.driver).ensure_network(ctx, host_nl, n)?);
    }
    trace("setup: bridge ensured");
    for (i, (ep, net)) in eps.iter().zip(nets).enumerate() {
        let ip = ep.ip.expect("allocated above");
        let plan = plan::endpoint(net, ep, ip, i == 0);
        drivers::of(net.driver).attach(host_nl, &mut ctr_nl, &ns, net, bridges[i], &plan)?;
        let limits = crate::shaping::rates(c, net);
        if limits != (None, None) {
            crate::shaping::apply(host_nl, &ctx.tag, ep, limits)?;
        }
        trace("setup: endpoint attached");
    }
    Ok(((Some(ns), template, ctx.container_dir(&c.id)), dns))
}
