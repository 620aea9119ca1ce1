//! A container's network life: create (store rows, files, namespace, interfaces), release,
//! and the orphan sweep. The process runtime (spawn, monitor, stop, exec) is the front end's.
//!
//! A container has an *owner* that keeps it alive: a monitor process (PID plus start time,
//! so PID reuse cannot fool it) or, for an attached container, the runtime's namespace (by
//! inode). When the owner is gone, the next netwright command releases it ([`sweep`]).

mod create;
mod files;
mod release;

pub use create::{Created, add_endpoint, create};

pub use files::resolv_conf;
pub use release::{release, release_if_orphaned, sweep, unplug};

use std::fs;

use anyhow::{Result, bail};

use crate::ctx::{Ctx, now_nanos, trace};
use crate::error::{conflict, invalid, not_found};
use crate::ipam;
use crate::kernel::netns;
use crate::names;
use crate::network;
use crate::store::{Container, Endpoint, Network, State, Store};

/// What a front end asks for: `run`'s and `attach`'s network options.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: Option<String>,
    pub networks: Vec<String>,
    pub ip: Option<String>,
    /// --ip6: the first network's IPv6 address (a dual-stack network).
    pub ip6: Option<String>,
    pub hostname: Option<String>,
    pub cmd: Vec<String>,
    pub detach: bool,
    pub auto_remove: bool,
    /// Docker `-p` values.
    pub publish: Vec<String>,
    /// --network-alias names (user-defined networks).
    pub aliases: Vec<String>,
    /// --dns upstream servers.
    pub dns: Vec<String>,
    /// --dns-search domains and --dns-option options.
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// --add-host NAME:IP lines for /etc/hosts.
    pub add_hosts: Vec<String>,
    /// `netwright attach`: the runtime's namespace to network instead of a new one.
    pub netns: Option<std::path::PathBuf>,
    /// Bandwidth limits ("10mbit"): out of the container, into it.
    pub egress_rate: Option<String>,
    pub ingress_rate: Option<String>,
    /// A front end's own container id (Podman's), used instead of a generated one.
    pub id: Option<String>,
    /// The runtime holds the published host ports open itself (Podman does, through
    /// conmon): skip the check that no host process listens there.
    pub runtime_reserves_ports: bool,
    /// `--dry-run`: compute everything (names, addresses, ports) in a transaction that is
    /// rolled back, and return the commands as an `explain::DryRun` error; nothing is done.
    pub dry_run: bool,
    /// Per network (by name): what a front end decided itself — Podman allocates addresses
    /// and names interfaces (`--ip` and `--network-alias` above apply where this is silent).
    pub endpoints: std::collections::BTreeMap<String, EndpointRequest>,
}

/// One network's endpoint as a front end asks for it.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    pub ip: Option<std::net::Ipv4Addr>,
    /// On a dual-stack network (`--ip6`); default: follows the IPv4 address.
    pub ip6: Option<std::net::Ipv6Addr>,
    /// "aa:bb:cc:dd:ee:ff"; default 02:42 + the address.
    pub mac: Option<String>,
    /// The interface inside the container; default eth0, eth1, ... in order.
    pub ifname: Option<String>,
    pub aliases: Option<Vec<String>>,
}

/// How a container is networked (`--network`).
pub(crate) enum Mode {
    /// netwright networks (bridge or macvlan) by name; the first carries the default route.
    Net(Vec<String>),
    /// The host's own network namespace.
    Host,
    /// Its own namespace with only lo.
    None,
    /// Another container's namespace (container:NAME).
    Join(String),
}

impl Mode {
    pub(crate) fn parse(spec: &Spec) -> Result<Mode> {
        let net = spec.networks.first().map(String::as_str).unwrap_or(network::DEFAULT_NETWORK);
        let special = |n: &str| n == "host" || n == "none" || n.starts_with("container:");
        if spec.networks.len() > 1 {
            if spec.networks.iter().any(|n| special(n)) {
                bail!(invalid(
                    "--network host, none and container: cannot be combined with other networks".to_string()
                ));
            }
            return Ok(Mode::Net(spec.networks.clone()));
        }
        let mode = match net {
            "host" => Mode::Host,
            "none" => Mode::None,
            n => match n.strip_prefix("container:") {
                Some("") => bail!("--network container: needs a container name, e.g. --network container:api"),
                Some(owner) => Mode::Join(owner.to_string()),
                None => Mode::Net(vec![n.to_string()]),
            },
        };
        let what = match &mode {
            Mode::Net(_) => return Ok(mode),
            Mode::Host => "--network host",
            Mode::None => "--network none",
            Mode::Join(_) => "--network container:",
        };
        if !spec.publish.is_empty() {
            let why = match mode {
                Mode::Host => "the container already uses the host's own ports, so bind the port directly",
                Mode::None => "the container has no network to publish from",
                _ => "the owner container's network is shared, so publish ports on the owner",
            };
            bail!(invalid(format!("-p cannot be used with {what}: {why}")));
        }
        if spec.ip.is_some() {
            bail!(invalid(format!("--ip cannot be used with {what}: the container gets no address of its own")));
        }
        if !spec.aliases.is_empty() {
            bail!(invalid(format!(
                "--network-alias cannot be used with {what}: aliases name a container on a user-defined network"
            )));
        }
        if matches!(mode, Mode::Join(_)) && spec.hostname.is_some() {
            bail!(invalid(
                "--hostname cannot be used with --network container:: the container takes its owner's hostname"
                    .to_string()
            ));
        }
        Ok(mode)
    }
}

/// An attached namespace as it was set up: what a front end reports, with no second read
/// of the store.
pub struct Attached {
    pub container: Container,
    /// Each endpoint with its network, in interface order.
    pub endpoints: Vec<(Endpoint, Network)>,
    pub ports: Vec<crate::ports::Mapping>,
}

/// `netwright attach`: networks a namespace a runtime made and owns (as `netavark setup`
/// does). No process and no monitor: the container is alive while that namespace is.
pub fn attach(ctx: &Ctx, store: &mut Store, spec: Spec) -> Result<Attached> {
    let path = spec.netns.as_deref().expect("attach has a namespace");
    let f = fs::File::open(path).map_err(|e| {
        not_found(format!(
            "cannot open namespace {}: give a pinned netns file (/run/netns/NAME) or /proc/PID/ns/net ({e})",
            path.display()
        ))
    })?;
    if !netns::is_nsfs(&f) {
        bail!(invalid(format!(
            "{} is not a network namespace: give a pinned netns file (/run/netns/NAME) or /proc/PID/ns/net",
            path.display()
        )));
    }
    if let Some(kind) = netns::kind(&f).filter(|k| *k != "network") {
        bail!(invalid(format!(
            "{} is a {kind} namespace, not a network namespace: give /proc/PID/ns/net or a pinned netns file",
            path.display()
        )));
    }
    if netns::inode(path) == netns::inode(std::path::Path::new("/proc/self/ns/net")) {
        bail!(invalid(format!(
            "{} is netwright's own (the host's) network namespace: attach a container's namespace, or use `run --network host`",
            path.display()
        )));
    }
    if let Some(n) = spec.networks.iter().find(|n| matches!(n.as_str(), "host" | "none") || n.starts_with("container:"))
    {
        bail!(invalid(format!(
            "attach takes bridge or macvlan networks, not --network {n}: the namespace is the runtime's to share"
        )));
    }
    validate(&spec)?;
    let inode = netns::inode(path);
    if let Some(holder) = store.read(|tx| tx.attached_to(inode.unwrap_or(0)))? {
        bail!(conflict(format!(
            "{} is already attached as container {holder}: detach it first (`netwright detach {holder}`)",
            path.display()
        )));
    }
    trace("attach: checked");
    let spec = Spec { detach: true, ..spec };
    let created = create(ctx, store, &spec)?;
    let started = now_nanos();
    store.write(|tx| tx.mark_running(&created.container.id, None, started))?;
    trace("attach: marked running");
    crate::hostnames::sync_or_warn(ctx, store);
    trace("attach: host names synced");
    let mut container = created.container;
    container.state = State::Running;
    container.started = Some(started);
    Ok(Attached { container, endpoints: created.endpoints, ports: created.ports })
}

/// Forgets a released container: its row (endpoints and ports with it) and its files.
pub fn forget(ctx: &Ctx, store: &mut Store, c: &Container) -> Result<()> {
    release_if_orphaned(ctx, store, &c.id)?;
    store.write(|tx| tx.delete_container(&c.id))?;
    trace("rm: row deleted");
    let _ = fs::remove_dir_all(ctx.container_dir(&c.id));
    Ok(())
}

pub fn validate(spec: &Spec) -> Result<()> {
    if let Some(n) = &spec.name
        && !names::valid(n)
    {
        bail!(invalid(names::explain("container name", n)));
    }
    if let Some(h) = &spec.hostname
        && !names::valid_hostname(h)
    {
        bail!(invalid(format!(
            "invalid --hostname {h:?}: use letters, digits and '-' in dot-separated labels (at most 63 characters each, 64 in all)"
        )));
    }
    crate::ports::parse_all(&spec.publish)?;
    for (flag, r) in [("--egress-rate", &spec.egress_rate), ("--ingress-rate", &spec.ingress_rate)] {
        if let Some(r) = r
            && crate::shaping::parse_rate(r).is_none()
        {
            bail!(invalid(format!("{flag} {r:?}: give a rate such as 10mbit, 500kbit or 1gbit (at least 8kbit)")));
        }
    }
    for d in &spec.dns {
        ipam::parse_ip("--dns", d)?;
    }
    for h in &spec.add_hosts {
        files::parse_add_host(h)?;
    }
    for a in &spec.aliases {
        if !names::valid(a) {
            bail!(invalid(names::explain("--network-alias", a)));
        }
    }
    Ok(())
}

/// Is the container's owner still there: its monitor process, or for an attached
/// container the runtime's namespace (the same one it was attached in)?
pub fn owner_alive(c: &Container) -> bool {
    c.owner_alive()
}

/// `netwright update --egress-rate/--ingress-rate`: changes a running container's limits
/// (Some(None) removes one, None leaves it); applied at once from the host side.
pub fn set_rates(
    ctx: &Ctx,
    store: &mut Store,
    reference: &str,
    egress: Option<Option<u64>>,
    ingress: Option<Option<u64>>,
) -> Result<Container> {
    let mut c = find(store, reference)?;
    if c.state != State::Running {
        bail!(invalid(format!("container {} is not running", c.name)));
    }
    c.egress_rate = egress.unwrap_or(c.egress_rate);
    c.ingress_rate = ingress.unwrap_or(c.ingress_rate);
    let eps = store.write(|tx| {
        tx.set_rates(&c.id, c.egress_rate, c.ingress_rate)?;
        let mut v = Vec::new();
        for e in tx.endpoints_of(&c.id)?.into_iter().filter(|e| e.ip.is_some()) {
            v.extend(tx.network(&e.network_id)?.map(|n| (e, n)));
        }
        Ok(v)
    })?;
    if eps.iter().all(|(e, _)| e.host_ifname.is_empty()) {
        bail!(invalid(format!(
            "container {} has no bridge network: bandwidth limits apply to bridge networks",
            c.name
        )));
    }
    let mut nl = crate::kernel::netlink::Netlink::open()?;
    for (e, n) in &eps {
        crate::shaping::apply(&mut nl, &ctx.tag, e, crate::shaping::rates(&c, n))?;
    }
    Ok(c)
}

pub fn find(store: &mut Store, reference: &str) -> Result<Container> {
    match store.read(|tx| tx.container(reference))? {
        Some(c) => Ok(c),
        None => bail!(not_found(format!("no such container: {reference} (see `netwright ps -a`)"))),
    }
}
