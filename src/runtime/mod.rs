//! Containers: create (store rows, files, namespace, veths), start the process, supervise
//! it, and release every network resource when it ends.
//!
//! Each container has a monitor: the foreground `netwright run` process itself, or for
//! `-d` a forked child of it that detaches. The monitor waits for the container process
//! and releases its network the moment it ends. The container gets PR_SET_PDEATHSIG, so
//! it cannot outlive a monitor killed with -9; the next netwright command then finds the
//! monitor dead (PID plus start time, so PID reuse cannot fool it) and releases instead.

pub mod connect;
pub mod names;
pub mod process;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{ForkResult, Pid, fork, setsid};

use crate::ctx::{Ctx, now_nanos, random_hex, trace};
use crate::drivers::{bridge, macvlan};
use crate::ipam;
use crate::kernel::{mntns, netlink::Netlink, netns};
use crate::firewall;
use crate::network;
use crate::ports::{self, Mapping};
use crate::plan;
use crate::store::{Container, Endpoint, Network, State, Store};

#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub name: Option<String>,
    pub networks: Vec<String>,
    pub ip: Option<String>,
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
}

/// Exit codes `docker run` uses for its own failures.
pub const EXIT_RUN_ERROR: i32 = 125;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// An error of `run` that carries the exit code the CLI should return.
#[derive(Debug)]
pub struct RunError {
    pub code: i32,
    pub message: String,
}
impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for RunError {}

impl RunError {
    /// The exit code an error stands for: a RunError's own, else `default`.
    pub fn code_of(e: &anyhow::Error, default: i32) -> i32 {
        e.downcast_ref::<RunError>().map(|r| r.code).unwrap_or(default)
    }
}

struct Created {
    container: Container,
    /// The namespace to join; None: stay in the host's (host mode).
    netns: Option<OwnedFd>,
    /// The mount template to start from; None: no mount namespace (host mode).
    mnt_template: Option<OwnedFd>,
    /// Where the container's /etc files are (its own, or its network owner's).
    files_dir: std::path::PathBuf,
}

/// How a container is networked (`--network`).
enum Mode {
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
    fn parse(spec: &RunSpec) -> Result<Mode> {
        let net = spec.networks.first().map(String::as_str).unwrap_or(network::DEFAULT_NETWORK);
        let special = |n: &str| n == "host" || n == "none" || n.starts_with("container:");
        if spec.networks.len() > 1 {
            if spec.networks.iter().any(|n| special(n)) {
                bail!("--network host, none and container: cannot be combined with other networks");
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
            bail!("-p cannot be used with {what}: {why}");
        }
        if spec.ip.is_some() {
            bail!("--ip cannot be used with {what}: the container gets no address of its own");
        }
        if !spec.aliases.is_empty() {
            bail!("--network-alias cannot be used with {what}: aliases name a container on a user-defined network");
        }
        if matches!(mode, Mode::Join(_)) && spec.hostname.is_some() {
            bail!("--hostname cannot be used with --network container:: the container takes its owner's hostname");
        }
        Ok(mode)
    }
}

/// `netwright run`: returns the exit code to pass through.
pub fn run(ctx: &Ctx, spec: RunSpec) -> Result<i32> {
    if spec.cmd.is_empty() {
        bail!("no command given: write it after `--`, e.g. `netwright run -- python3 -m http.server 80`");
    }
    validate(&spec)?;
    if spec.detach { run_detached(ctx, spec) } else { supervise(ctx, &spec, None) }
}

/// `netwright attach`: networks a namespace a runtime made and owns (as `netavark setup`
/// does). No process and no monitor: the container is alive while that namespace is.
pub fn attach(ctx: &Ctx, store: &mut Store, spec: RunSpec) -> Result<Container> {
    let path = spec.netns.as_deref().expect("attach has a namespace");
    let f = fs::File::open(path).with_context(|| format!("cannot open namespace {}: give a pinned netns file (/run/netns/NAME) or /proc/PID/ns/net", path.display()))?;
    if !netns::is_nsfs(&f) {
        bail!("{} is not a network namespace: give a pinned netns file (/run/netns/NAME) or /proc/PID/ns/net", path.display());
    }
    if netns::inode(path) == netns::inode(std::path::Path::new("/proc/self/ns/net")) {
        bail!("{} is netwright's own (the host's) network namespace: attach a container's namespace, or use `run --network host`", path.display());
    }
    if let Some(n) = spec.networks.iter().find(|n| matches!(n.as_str(), "host" | "none") || n.starts_with("container:")) {
        bail!("attach takes bridge or macvlan networks, not --network {n}: the namespace is the runtime's to share");
    }
    validate(&spec)?;
    trace("attach: checked");
    let spec = RunSpec { detach: true, ..spec };
    let created = create(ctx, store, &spec)?;
    let started = now_nanos();
    store.write(|tx| tx.mark_running(&created.container.id, None, started))?;
    trace("attach: marked running");
    let mut c = created.container;
    c.state = State::Running;
    c.started = Some(started);
    Ok(c)
}

/// `netwright detach`: undoes `attach` (or removes any container, like `rm -f`).
pub fn detach(ctx: &Ctx, store: &mut Store, reference: &str) -> Result<Container> {
    remove(ctx, store, reference, true)
}

fn validate(spec: &RunSpec) -> Result<()> {
    if let Some(n) = &spec.name {
        if !names::valid(n) {
            bail!("invalid container name {n:?}: use letters, digits, '_', '.', '-' (at least 2 characters, starting with a letter or digit)");
        }
    }
    parse_publish(&spec.publish)?;
    for d in &spec.dns {
        ipam::parse_ip("--dns", d)?;
    }
    for h in &spec.add_hosts {
        parse_add_host(h)?;
    }
    for a in &spec.aliases {
        if !names::valid(a) {
            bail!("invalid --network-alias {a:?}: use letters, digits, '_', '.', '-'");
        }
    }
    Ok(())
}

/// Forks the monitor, which detaches; the parent waits only until the container started
/// (or failed), prints its id and returns.
fn run_detached(ctx: &Ctx, spec: RunSpec) -> Result<i32> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    std::io::stdout().flush().ok();
    std::io::stderr().flush().ok();
    // SAFETY: netwright is single-threaded here (no runtime, no helper threads), so the
    // child may keep running ordinary Rust code after fork.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => {
            drop(w);
            let mut msg = String::new();
            fs::File::from(r).read_to_string(&mut msg).ok();
            match msg.split_once(' ') {
                Some(("OK", id)) => {
                    println!("{}", id.trim());
                    Ok(0)
                }
                Some(("ERR", rest)) => {
                    let (code, text) = rest.split_once(' ').unwrap_or(("125", rest));
                    Err(RunError { code: code.parse().unwrap_or(EXIT_RUN_ERROR), message: text.trim().to_string() }.into())
                }
                _ => bail!("the container monitor exited before reporting: see `netwright ps -a`"),
            }
        }
        ForkResult::Child => {
            drop(r);
            let _ = setsid();
            let code = match supervise(ctx, &spec, Some(fs::File::from(w))) {
                Ok(c) => c,
                Err(e) => RunError::code_of(&e, EXIT_RUN_ERROR),
            };
            std::process::exit(code);
        }
    }
}

pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Creates the container, starts its process, waits for it and releases its network.
/// A detached monitor reports "OK id" or "ERR code message" on `report`, then closes it.
fn supervise(ctx: &Ctx, spec: &RunSpec, report: Option<fs::File>) -> Result<i32> {
    let mut store = ctx.store()?;
    let started = start(ctx, &mut store, spec, report.is_some());
    let (container, child) = match (started, report) {
        (Ok(s), Some(mut r)) => {
            let _ = writeln!(r, "OK {}", s.0.id);
            drop(r);
            // Nothing of ours is left to say: let go of the caller's terminal and pipe.
            redirect_stdio_to_null();
            s
        }
        (Ok(s), None) => s,
        (Err(e), report) => {
            if let Some(mut r) = report {
                let code = RunError::code_of(&e, EXIT_RUN_ERROR);
                let _ = writeln!(r, "ERR {code} {}", one_line(&e));
            }
            return Err(e);
        }
    };
    // The monitor lives as long as the container: hand back what starting it needed (the
    // store's page cache, buffers) while it waits — one of these per container.
    drop(store);
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    forward_signals_to(child.id() as i32);
    let code = wait_exit_code(child);
    let mut store = ctx.store()?;
    release(ctx, &mut store, &container, code, None)?;
    Ok(code)
}

/// Creates the container and starts its process; on failure nothing is left running.
fn start(ctx: &Ctx, store: &mut Store, spec: &RunSpec, detached: bool) -> Result<(Container, std::process::Child)> {
    let created = create(ctx, store, spec)?;
    let child = match spawn(ctx, &created, detached) {
        Ok(c) => c,
        Err(e) => {
            let code = match e.raw_os_error() {
                Some(libc::ENOENT) => EXIT_NOT_FOUND,
                Some(libc::EACCES) | Some(libc::ENOEXEC) => EXIT_NOT_EXECUTABLE,
                _ => EXIT_RUN_ERROR,
            };
            let message = format!("cannot start {:?}: {e}", created.container.cmd[0]);
            drop(created.netns);
            release(ctx, store, &created.container, code, Some(&message))?;
            return Err(RunError { code, message }.into());
        }
    };
    trace("start: process spawned");
    let pid = child.id() as i32;
    store.write(|tx| tx.mark_running(&created.container.id, Some(pid), now_nanos()))?;
    trace("start: marked running");
    let mut container = created.container;
    container.pid = Some(pid);
    Ok((container, child))
}

fn wait_exit_code(mut child: std::process::Child) -> i32 {
    match child.wait() {
        Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
        Err(_) => EXIT_RUN_ERROR,
    }
}

fn redirect_stdio_to_null() {
    if let Ok(null) = fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; null stays open until then.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Like `docker run`'s sig-proxy: signals sent to the monitor go to the container.
fn forward_signals_to(pid: i32) {
    CHILD_PID.store(pid, Ordering::Relaxed);
    let action = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2] {
        // SAFETY: the handler only reads an atomic and calls kill.
        let _ = unsafe { signal::sigaction(s, &action) };
    }
}

/// --add-host NAME:IP (Docker also accepts NAME=IP).
fn parse_add_host(s: &str) -> Result<(String, Ipv4Addr)> {
    let (name, ip) = s.split_once(':').or_else(|| s.split_once('='))
        .with_context(|| format!("--add-host {s:?}: expected NAME:IP, e.g. db.local:10.0.0.5"))?;
    if name.is_empty() {
        bail!("--add-host {s:?}: the name is empty");
    }
    Ok((name.to_string(), ipam::parse_ip("--add-host", ip)?))
}

fn parse_publish(specs: &[String]) -> Result<Vec<ports::PortRequest>> {
    Ok(specs.iter().map(|s| ports::parse(s)).collect::<Result<Vec<_>>>()?.concat())
}

/// Is the port free for a host process of ours to bind? (A listener elsewhere on the
/// host would be shadowed by the DNAT: refuse rather than steal its traffic.)
fn host_port_free(ip: Option<Ipv4Addr>, port: u16, proto: ports::Proto) -> std::io::Result<()> {
    let addr = std::net::SocketAddr::from((ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port));
    match proto {
        ports::Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
        ports::Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
        ports::Proto::Sctp => Ok(()),
    }
}

/// Turns requests into mappings: checks explicit ports against the store and picks free
/// ports for the rest. Runs inside the write transaction.
fn resolve_ports(tx: &crate::store::Tx, reqs: &[ports::PortRequest]) -> Result<Vec<Mapping>> {
    let mut out: Vec<Mapping> = Vec::new();
    for r in reqs {
        let taken_here = |port: u16, out: &[Mapping]| out.iter().any(|m| m.proto == r.proto && m.host_port == port && ports::collides(m.host_ip, r.host_ip));
        let host_port = match r.host_port {
            Some(p) => {
                if let Some((name, m)) = tx.port_holder(r.host_ip, p, r.proto)? {
                    bail!("host port {}:{p}/{} is already published by container {name} ({m}): pick another host port",
                        r.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), r.proto.as_str());
                }
                if taken_here(p, &out) {
                    bail!("host port {p}/{} is given twice: publish each host port once", r.proto.as_str());
                }
                p
            }
            None => {
                let mut seed = [0u8; 2];
                rand::fill(&mut seed[..]);
                let (lo, hi) = (32768u32, 60999u32);
                let start = lo + u16::from_ne_bytes(seed) as u32 % (hi - lo + 1);
                let mut found = None;
                for i in 0..=(hi - lo) {
                    let p = (lo + (start - lo + i) % (hi - lo + 1)) as u16;
                    if !taken_here(p, &out) && tx.port_holder(r.host_ip, p, r.proto)?.is_none()
                        && host_port_free(r.host_ip, p, r.proto).is_ok() {
                        found = Some(p);
                        break;
                    }
                }
                found.context("no free host port left in 32768-60999")?
            }
        };
        out.push(Mapping { host_ip: r.host_ip, host_port, container_port: r.container_port, proto: r.proto });
    }
    Ok(out)
}

/// Allocates an address on `net` (the requested one, or the next free) and records the
/// endpoint. Runs inside the write transaction.
pub(crate) fn add_endpoint(ctx: &Ctx, tx: &crate::store::Tx, net: &Network, container_id: &str, ifname: &str,
                requested_ip: Option<Ipv4Addr>, aliases: &[String]) -> Result<Endpoint> {
    let ip = match requested_ip {
        Some(ip) => {
            ipam::check_requested(net.subnet, net.gateway, ip)?;
            if network::reserved(net).contains(&ip) {
                bail!("--ip {ip} is reserved on network {} (host shim): pick another address", net.name);
            }
            if tx.ip_taken(&net.id, ip)? {
                bail!("address {ip} is already in use on network {}: pick another --ip or leave it out", net.name);
            }
            ip
        }
        None => {
            let (ip, cursor) = ipam::allocate(net.subnet, &network::reserved(net), net.ip_range, net.cursor,
                |ip| tx.ip_taken(&net.id, ip), || tx.ips_in_use(&net.id))
                .with_context(|| format!("network {}", net.name))?;
            tx.set_cursor(&net.id, cursor)?;
            ip
        }
    };
    if net.builtin && !aliases.is_empty() {
        bail!("--network-alias works on user-defined networks only, as in Docker: create one with `netwright network create`");
    }
    let ep_id = random_hex(32);
    let ep = Endpoint {
        host_ifname: if net.driver == "bridge" { plan::host_veth_name(&ctx.tag, &ep_id) } else { String::new() },
        id: ep_id,
        container_id: container_id.to_string(),
        network_id: net.id.clone(),
        ifname: ifname.to_string(),
        ip: Some(ip),
        requested_ip,
        mac: ipam::format_mac(ipam::mac_for(ip)),
        aliases: aliases.to_vec(),
    };
    tx.insert_endpoint(&ep)?;
    Ok(ep)
}

/// Store rows, container files, namespace and veths. On any failure, undoes what it did.
fn create(ctx: &Ctx, store: &mut Store, spec: &RunSpec) -> Result<Created> {
    let mut host_nl = Netlink::open().context("opening netlink")?;
    trace("create: start");
    let mode = Mode::parse(spec)?;
    if let Mode::Net(ns) = &mode {
        if ns.iter().any(|n| n == network::DEFAULT_NETWORK) {
            network::ensure_default(ctx, store, &mut host_nl, true)?;
        }
    }
    let requested_ip = spec.ip.as_deref().map(|s| ipam::parse_ip("--ip", s)).transpose()?;
    let port_reqs = parse_publish(&spec.publish)?;
    for r in port_reqs.iter().filter(|r| r.host_port.is_some()) {
        let p = r.host_port.expect("filtered");
        if let Err(e) = host_port_free(r.host_ip, p, r.proto) {
            let ip = r.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                bail!("cannot publish on {ip}: it is not an address of this host");
            }
            bail!("host port {ip}:{p}/{} is already in use by a process on the host ({e}): pick another host port", r.proto.as_str());
        }
    }
    trace("create: ports checked");
    if let Some(name) = &spec.name {
        release_if_orphaned(ctx, store, name)?;
    }
    trace("create: name checked");
    let me = std::process::id() as i32;
    let (container, endpoints, nets, mappings, owner) = store.write(|tx| {
        let (nets, owner) = match &mode {
            Mode::Net(ns) => {
                let mut v: Vec<Network> = Vec::new();
                for n in ns {
                    let net = network::resolve(tx, n)?;
                    if v.iter().any(|o| o.id == net.id) {
                        bail!("network {} is given twice", net.name);
                    }
                    v.push(net);
                }
                (v, None)
            }
            Mode::Join(o) => {
                let owner = tx.container(o)?.with_context(|| format!("no such container: {o} (for --network container:{o})"))?;
                if owner.state != State::Running || !monitor_alive(&owner) {
                    bail!("container {} is not running: start it before joining its network", owner.name);
                }
                if owner.network_mode.starts_with("container:") {
                    bail!("container {} itself shares another container's network: join that one instead ({})", owner.name, owner.network_mode);
                }
                (vec![], Some(owner))
            }
            Mode::Host | Mode::None => (vec![], None),
        };
        if let Some(net) = nets.first() {
            if net.internal && !port_reqs.is_empty() {
                bail!("network {} is internal: it has no published ports (drop -p or use another network)", net.name);
            }
            if net.driver == "macvlan" && !port_reqs.is_empty() {
                bail!("network {} is a macvlan network: its containers are reachable directly on the LAN, so -p does not apply", net.name);
            }
        }
        let name = match &spec.name {
            Some(n) => {
                if let Some(holder) = tx.container(n)?.filter(|c| c.name == *n) {
                    bail!("container name {n:?} is already in use by container {}: remove it (`netwright rm {n}`) or pick another name", &holder.id[..12]);
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
        let id = random_hex(64);
        let network_mode = match (&mode, nets.first(), &owner) {
            (_, Some(n), _) => n.name.clone(),
            (_, _, Some(o)) => format!("container:{}", o.id),
            (Mode::Host, _, _) => "host".into(),
            _ => "none".into(),
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
                None => process::start_time(me),
            },
            exit_code: None,
            error: None,
            auto_remove: spec.auto_remove,
            detached: spec.detach,
            network_mode,
            dns: spec.dns.clone(),
            netns_source: spec.netns.as_ref().map(|p| p.to_string_lossy().into_owned()),
            created: now_nanos(),
            started: None,
            finished: None,
        };
        tx.insert_container(&container)?;
        let mut eps = Vec::new();
        for (i, net) in nets.iter().enumerate() {
            // --ip applies to the first network, as in Docker.
            let ip = if i == 0 { requested_ip } else { None };
            // Aliases name the container on its user-defined networks.
            let aliases: &[String] = if net.builtin && nets.len() > 1 { &[] } else { &spec.aliases };
            eps.push(add_endpoint(ctx, tx, net, &id, &format!("eth{i}"), ip, aliases)?);
        }
        let mappings = resolve_ports(tx, &port_reqs)?;
        for m in &mappings {
            tx.insert_port(&container.id, m)?;
        }
        Ok((container, eps, nets, mappings, owner))
    })?;
    trace("create: store rows written");
    let made = setup(ctx, &mut host_nl, &container, &endpoints, &nets, &mode, owner.as_ref(), spec).and_then(|(created, dns)| {
        if let Some(ip) = endpoints.first().and_then(|e| e.ip).filter(|_| !mappings.is_empty()) {
            // Rebuilds the table too if a reboot or an admin's flush removed it.
            firewall::publish(ctx, store, &mappings, ip, true)?;
            trace("setup: ports published");
        } else if nets.iter().any(|n| n.driver == "bridge") {
            // One query; rebuilds the table if it is gone.
            firewall::ensure(ctx, store)?;
        }
        // The embedded resolver must listen in the namespace before the process starts.
        if let Some(dns) = dns {
            dns.wait()?;
            trace("setup: DNS resolver ready");
        }
        Ok(created)
    });
    match made {
        Ok((netns, mnt_template, files_dir)) => Ok(Created { container, netns, mnt_template, files_dir }),
        Err(e) => {
            if let Some(ip) = endpoints.first().and_then(|e| e.ip) {
                let _ = firewall::publish(ctx, store, &mappings, ip, false);
            }
            let _ = netns::remove_pinned(&ctx.netns_path(&container.id));
            let _ = store.write(|tx| tx.delete_container(&container.id));
            let _ = fs::remove_dir_all(ctx.container_dir(&container.id));
            Err(e)
        }
    }
}

/// (namespace, mount template, files directory), and the DNS resolver's pending adoption.
type Setup = ((Option<OwnedFd>, Option<OwnedFd>, std::path::PathBuf), Option<crate::dns::server::PendingSync>);

/// Files, namespace and interfaces for each mode.
fn setup(ctx: &Ctx, host_nl: &mut Netlink, c: &Container, eps: &[Endpoint], nets: &[Network],
         mode: &Mode, owner: Option<&Container>, spec: &RunSpec) -> Result<Setup> {
    // Every container has a directory (its log lives there), whatever its network.
    fs::create_dir_all(ctx.container_dir(&c.id)).with_context(|| format!("creating {}", ctx.container_dir(&c.id).display()))?;
    if let Mode::Host = mode {
        return Ok(((None, None, ctx.container_dir(&c.id)), None));
    }
    if let Some(o) = owner {
        // The owner's namespace and files; a host-mode owner means the host's namespace.
        let ns = if o.network_mode == "host" { None } else {
            Some(netns::open(&ctx.netns_path(&o.id)).with_context(|| format!("opening {}'s network namespace", o.name))?)
        };
        let template = mntns::ensure_template(&ctx.mnt_template(), &ctx.netns_dir())?;
        return Ok(((ns, Some(template), ctx.container_dir(&o.id)), None));
    }
    let embedded_dns = nets.iter().any(|n| !n.builtin);
    write_files(ctx, c, eps, spec, embedded_dns)?;
    trace("setup: files written");
    let mut bridges = Vec::new();
    for n in nets {
        bridges.push(if n.driver == "bridge" { bridge::ensure_bridge(host_nl, &plan::network(n))? } else { 0 });
    }
    trace("setup: bridge ensured");
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
                Some(l) if !l.up && matches!(l.kind.as_deref(), Some("veth" | "macvlan")) => ctr_nl.delete_link(l.index)?,
                Some(_) => bail!("{src} already has an interface {} in use: remove it from the namespace first", ep.ifname),
                None => {}
            }
        }
    }
    // lo first: 127.0.0.11 exists once lo is up, and the resolver binds it.
    ctr_nl.request(Netlink::set_up_msg(1), 0).context("bringing lo up")?;
    // The resolver adopts the namespace (its rows are written) while the links are made.
    let dns = if embedded_dns { Some(crate::dns::server::sync_start(ctx, true, Some(&c.id))?) } else { None };
    for (i, (ep, net)) in eps.iter().zip(nets).enumerate() {
        let ip = ep.ip.expect("allocated above");
        let plan = plan::endpoint(net, ep, ip, i == 0);
        if net.driver == "macvlan" {
            macvlan::attach(host_nl, &mut ctr_nl, &ns, net, &plan)?;
        } else {
            bridge::attach(host_nl, &mut ctr_nl, &ns, bridges[i], &plan)?;
        }
        trace("setup: endpoint attached");
    }
    Ok(((Some(ns), template, ctx.container_dir(&c.id)), dns))
}

/// /etc/hosts, /etc/resolv.conf and /etc/hostname as the container will see them.
fn write_files(ctx: &Ctx, c: &Container, eps: &[Endpoint], spec: &RunSpec, embedded_dns: bool) -> Result<()> {
    let dir = ctx.container_dir(&c.id);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for h in &spec.add_hosts {
        let (name, ip) = parse_add_host(h)?;
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    for ep in eps {
        if let Some(ip) = ep.ip {
            hosts.push_str(&format!("{ip}\t{}\n", c.hostname));
        }
    }
    fs::write(dir.join("hosts"), hosts)?;
    fs::write(dir.join("hostname"), format!("{}\n", c.hostname))?;
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    fs::write(dir.join("resolv.conf"), resolv_conf(&host, embedded_dns, &spec.dns, &spec.dns_search, &spec.dns_options))?;
    Ok(())
}

/// A container's resolv.conf. On user-defined networks the embedded resolver answers
/// at 127.0.0.11 (and forwards the rest); elsewhere the upstreams are written directly —
/// minus loopback ones, which mean nothing inside a container's own namespace.
pub fn resolv_conf(host: &str, embedded: bool, dns: &[String], search: &[String], options: &[String]) -> String {
    let mut servers = Vec::new();
    let mut host_search = Vec::new();
    let mut host_options = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(Ok(ip)) = words.next().map(|w| w.parse::<std::net::IpAddr>()) {
                    if !ip.is_loopback() {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => host_search.extend(words.map(str::to_string)),
            Some("options") => host_options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    let mut out = String::new();
    if embedded {
        out.push_str("nameserver 127.0.0.11\n");
    } else {
        for s in if dns.is_empty() { &servers } else { dns } {
            out.push_str(&format!("nameserver {s}\n"));
        }
    }
    let search = if search.is_empty() { &host_search } else { search };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let mut opts: Vec<String> = if options.is_empty() { host_options } else { options.to_vec() };
    if embedded && !opts.iter().any(|o| o.starts_with("ndots:")) {
        opts.push("ndots:0".into());
    }
    if !opts.is_empty() {
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// Starts the container process: it enters the network namespace, gets its own UTS and
/// mount namespaces, sees its own /etc files, and dies with its monitor.
fn spawn(ctx: &Ctx, created: &Created, detached: bool) -> std::io::Result<std::process::Child> {
    let c = &created.container;
    let dir = &created.files_dir;
    let mut cmd = Command::new(&c.cmd[0]);
    cmd.args(&c.cmd[1..]);
    if detached {
        let log = fs::OpenOptions::new().create(true).append(true).open(ctx.log_path(&c.id))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    }
    let ns_fd = created.netns.as_ref().map(|f| f.as_raw_fd());
    let template_fd = created.mnt_template.as_ref().map(|f| f.as_raw_fd());
    // A sysfs of its own only for a container with its own network namespace.
    let own_sysfs = ns_fd.is_some() && !c.network_mode.starts_with("container:");
    let hostname = c.hostname.clone();
    let binds: Vec<(CString, CString)> = ["hosts", "hostname", "resolv.conf"].iter()
        .filter(|f| std::path::Path::new("/etc").join(f).exists())
        .map(|f| (cstr(dir.join(f).as_os_str()), cstr(std::path::Path::new("/etc").join(f).as_os_str())))
        .collect();
    let monitor = std::process::id() as i32;
    let netns_dir = cstr(ctx.netns_dir().as_os_str());
    // SAFETY: the closure runs between fork and exec in a single-threaded child; it only
    // makes system calls on data prepared above.
    unsafe {
        cmd.pre_exec(move || {
            setsid().map_err(std::io::Error::from)?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != monitor {
                return Err(std::io::Error::other("monitor exited during start"));
            }
            if let Some(fd) = ns_fd {
                setns(std::os::fd::BorrowedFd::borrow_raw(fd), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            }
            // Host mode: the host's network, hostname and files, as Docker does.
            let Some(template_fd) = template_fd else { return Ok(()) };
            // Start from the template (no namespace pins to copy), then take a private copy.
            let template = std::os::fd::BorrowedFd::borrow_raw(template_fd);
            setns(template, CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            nix::unistd::sethostname(&hostname).map_err(std::io::Error::from)?;
            // Slave: the host's unmounts (other containers' namespaces) reach us, ours stay here.
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
                .map_err(std::io::Error::from)?;
            // The template has no namespace pins; should it ever have some, drop them: they
            // would hold other containers' namespaces alive.
            libc::umount2(netns_dir.as_ptr(), libc::MNT_DETACH);
            for (src, dst) in &binds {
                if libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // A sysfs of this namespace, so /sys/class/net lists only the container's devices.
            if !own_sysfs {
                return Ok(());
            }
            let _ = mount(Some("sysfs"), "/sys", Some("sysfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY, None::<&str>);
            Ok(())
        });
    }
    cmd.spawn()
}

fn cstr(s: &std::ffi::OsStr) -> CString {
    CString::new(s.as_encoded_bytes()).expect("paths have no NUL")
}

/// Frees a container's network: its namespace (the kernel then destroys the veth pair
/// with it), its addresses in the store; records the exit; removes it if --rm.
pub fn release(ctx: &Ctx, store: &mut Store, c: &Container, code: i32, error: Option<&str>) -> Result<()> {
    // Rules before links: a DNAT must never point at an address that is gone.
    trace("release: start");
    let (mappings, ip) = store.read(|tx| Ok((tx.ports_of(&c.id)?, tx.endpoints_of(&c.id)?.first().and_then(|e| e.ip))))?;
    let unpublished = match ip {
        Some(ip) => firewall::publish(ctx, store, &mappings, ip, false).is_ok(),
        None => mappings.is_empty(),
    };
    trace("release: ports unpublished");
    detach_for_joiners(ctx, store, c)?;
    take_interfaces_down(ctx, store, c);
    if let Some(pid) = c.pid {
        // Processes the container left behind in its session would pin the namespace.
        let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    netns::remove_pinned(&ctx.netns_path(&c.id))?;
    trace("release: namespace unpinned");
    store.write(|tx| {
        tx.mark_exited(&c.id, code, error, now_nanos())?;
        if c.auto_remove {
            tx.delete_container(&c.id)?;
        }
        Ok(())
    })?;
    trace("release: store updated");
    if !matches!(c.network_mode.as_str(), "host" | "none" | network::DEFAULT_NETWORK) && !c.network_mode.starts_with("container:") {
        // Its names go away now, not at the resolver's next periodic sync.
        let _ = crate::dns::server::sync_now(ctx, false, Some(&c.id));
        trace("release: DNS told");
    }
    if !unpublished {
        // The store no longer has the mappings: a rebuild drops whatever is left.
        firewall::sync_all(ctx, store)?;
        trace("release: firewall rebuilt");
    }
    if c.auto_remove {
        let _ = fs::remove_dir_all(ctx.container_dir(&c.id));
    }
    Ok(())
}

/// Takes a container's interfaces down before its namespace is let go. The kernel
/// destroys a released namespace's devices later, asynchronously; until then a macvlan
/// there keeps its MAC (derived from the IP, which a new container may get at once) busy
/// on the parent, and a veth stays a live bridge port. Down, neither counts.
///
/// An attached container's namespace stays the runtime's: the DNS redirect comes out too,
/// and its interfaces, down, are what a new attach may replace. Deleting a device costs
/// the kernel 20–40 ms and slows whatever link work comes next; a runtime usually deletes
/// its namespace right after detach, which takes the pair with it in the kernel's batched
/// namespace cleanup. So a helper deletes them only if they are still there a second
/// later (reconcile removes any left over).
fn take_interfaces_down(ctx: &Ctx, store: &mut Store, c: &Container) {
    let eps = store.read(|tx| tx.endpoints_of(&c.id)).unwrap_or_default();
    if eps.is_empty() {
        return;
    }
    let Ok(ns) = netns::open(&ctx.netns_path(&c.id)) else { return };
    let attached = c.netns_source.is_some();
    if attached {
        let _ = netns::within(&ns, crate::dns::server::remove_redirect);
    }
    let host: Vec<String> = eps.iter().filter(|e| !e.host_ifname.is_empty()).map(|e| e.host_ifname.clone()).collect();
    let inside: Vec<String> = eps.iter().map(|e| e.ifname.clone()).collect();
    let set_down = |nl: &mut Netlink, index| nl.request(Netlink::set_down_msg(index), 0);
    on_links(Netlink::open(), &host, set_down);
    on_links(bridge::netlink_in(&ns), &inside, set_down);
    trace("release: interfaces down");
    if !attached {
        return;
    }
    // A veth goes with its host end; a macvlan has only its inside end.
    let macvlans: Vec<String> = eps.iter().filter(|e| e.host_ifname.is_empty()).map(|e| e.ifname.clone()).collect();
    process::in_background(move || {
        std::thread::sleep(Duration::from_secs(1));
        on_links(Netlink::open(), &host, Netlink::delete_link);
        on_links(bridge::netlink_in(&ns), &macvlans, Netlink::delete_link);
    });
}

/// Applies `f` to each named link that exists, best effort (the kernel may be taking them
/// away with their namespace).
fn on_links<E>(nl: Result<Netlink, E>, names: &[String], mut f: impl FnMut(&mut Netlink, u32) -> std::io::Result<()>) {
    let Ok(mut nl) = nl else { return };
    for name in names {
        if let Ok(Some(l)) = nl.link_by_name(name) {
            let _ = f(&mut nl, l.index);
        }
    }
}

/// Containers that joined this one's network keep its namespace alive; like Docker, they
/// lose the network when the owner goes: its interfaces are removed, leaving them lo.
fn detach_for_joiners(ctx: &Ctx, store: &mut Store, c: &Container) -> Result<()> {
    // One store question about this container, not a scan of every running one.
    let (joined, eps) = store.read(|tx| Ok((tx.has_joiners(&c.id)?, tx.endpoints_of(&c.id)?)))?;
    if !joined || eps.is_empty() {
        return Ok(());
    }
    let mut host = Netlink::open()?;
    let mut inside = netns::open(&ctx.netns_path(&c.id)).ok().map(|ns| bridge::netlink_in(&ns)).transpose()?;
    for e in eps {
        // A veth goes from the host side; a macvlan has only the inside end.
        let (nl, name) = match (e.host_ifname.is_empty(), inside.as_mut()) {
            (false, _) => (&mut host, &e.host_ifname),
            (true, Some(nl)) => (nl, &e.ifname),
            (true, None) => continue,
        };
        if let Some(l) = nl.link_by_name(name)? {
            nl.delete_link(l.index)?;
        }
    }
    Ok(())
}

/// Is the container's owner still there: its monitor process, or for an attached
/// container the runtime's namespace (the same one it was attached in)?
pub(crate) fn monitor_alive(c: &Container) -> bool {
    match &c.netns_source {
        Some(src) => netns::inode(std::path::Path::new(src)).is_some_and(|i| Some(i) == c.monitor_start),
        None => process::alive(c.monitor_pid, c.monitor_start),
    }
}

/// Releases containers whose monitor died (kill -9, crash, reboot). Returns their names.
pub fn sweep(ctx: &Ctx, store: &mut Store) -> Result<Vec<String>> {
    let mut released = Vec::new();
    for c in store.read(|tx| tx.running_containers())? {
        if !monitor_alive(&c) {
            release_orphan(ctx, store, c.clone())?;
            released.push(c.name);
        }
    }
    Ok(released)
}

fn release_if_orphaned(ctx: &Ctx, store: &mut Store, name: &str) -> Result<()> {
    if let Some(c) = store.read(|tx| tx.container(name))? {
        if c.state != State::Exited && !monitor_alive(&c) {
            release_orphan(ctx, store, c)?;
        }
    }
    Ok(())
}

/// Releases a container whose owner is gone: its monitor, or an attached container's namespace.
fn release_orphan(ctx: &Ctx, store: &mut Store, mut c: Container) -> Result<()> {
    c.pid = None; // the process died with its monitor; never signal a reused PID
    if c.netns_source.is_some() {
        release(ctx, store, &c, 0, Some("the runtime's namespace went away without `netwright detach`"))
    } else {
        release(ctx, store, &c, 137, Some("monitor exited; container was killed with it"))
    }
}

pub fn find(store: &mut Store, reference: &str) -> Result<Container> {
    store.read(|tx| tx.container(reference))?
        .with_context(|| format!("no such container: {reference} (see `netwright ps -a`)"))
}

/// Waits until the container's monitor has exited (and so released everything).
/// A pidfd wakes us the moment it exits, with no polling interval to pay.
fn wait_released(c: &Container, timeout: Duration) -> bool {
    let Some(pid) = c.monitor_pid else { return true };
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return !monitor_alive(c);
    }
    // SAFETY: fd was just returned by pidfd_open.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !monitor_alive(c) {
        return true; // the PID now belongs to someone else
    }
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left) };
        if n > 0 {
            return true;
        }
        if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

pub fn stop(ctx: &Ctx, store: &mut Store, reference: &str, timeout: Duration) -> Result<Container> {
    let c = find(store, reference)?;
    if c.state == State::Exited {
        return Ok(c);
    }
    if let Some(pid) = c.pid {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        if !wait_released(&c, timeout) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if !wait_released(&c, Duration::from_secs(10)) {
        bail!("container {} did not stop: its monitor (pid {:?}) is still running", c.name, c.monitor_pid);
    }
    release_if_orphaned(ctx, store, &c.id)?;
    Ok(c)
}

pub fn remove(ctx: &Ctx, store: &mut Store, reference: &str, force: bool) -> Result<Container> {
    let c = find(store, reference)?;
    if c.netns_source.is_some() && c.state != State::Exited {
        if !force {
            bail!("container {} is attached to a runtime's namespace: detach it (`netwright detach {}`) or use `netwright rm -f`", c.name, c.name);
        }
        release(ctx, store, &c, 0, None)?;
    } else if c.state != State::Exited && monitor_alive(&c) {
        if !force {
            bail!("container {} is running: stop it first (`netwright stop {}`) or use `netwright rm -f`", c.name, c.name);
        }
        if let Some(pid) = c.pid {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        trace("rm: killed");
        if !wait_released(&c, Duration::from_secs(10)) {
            bail!("container {} did not exit after SIGKILL", c.name);
        }
        trace("rm: monitor gone");
    }
    release_if_orphaned(ctx, store, &c.id)?;
    store.write(|tx| tx.delete_container(&c.id))?;
    trace("rm: row deleted");
    let _ = fs::remove_dir_all(ctx.container_dir(&c.id));
    Ok(c)
}

/// `netwright exec`: runs a command inside a running container's namespaces.
pub fn exec(store: &mut Store, reference: &str, cmd: &[String]) -> Result<i32> {
    let c = find(store, reference)?;
    let pid = match (c.state, c.pid) {
        (State::Running, Some(pid)) if monitor_alive(&c) => pid,
        _ => bail!("container {} is not running", c.name),
    };
    if cmd.is_empty() {
        bail!("no command given: write it after `--`, e.g. `netwright exec {} -- ip addr`", c.name);
    }
    let open = |kind: &str| -> Result<OwnedFd> {
        Ok(fs::File::open(format!("/proc/{pid}/ns/{kind}"))
            .with_context(|| format!("container {} is not running", c.name))?.into())
    };
    let fds = [(open("net")?, CloneFlags::CLONE_NEWNET), (open("uts")?, CloneFlags::CLONE_NEWUTS), (open("mnt")?, CloneFlags::CLONE_NEWNS)];
    let raw: Vec<(i32, CloneFlags)> = fds.iter().map(|(f, k)| (f.as_raw_fd(), *k)).collect();
    let mut command = Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    // SAFETY: only setns calls between fork and exec, on descriptors kept open by `fds`.
    unsafe {
        command.pre_exec(move || {
            for (fd, kind) in &raw {
                setns(std::os::fd::BorrowedFd::borrow_raw(*fd), *kind).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        let code = if e.raw_os_error() == Some(libc::ENOENT) { EXIT_NOT_FOUND } else { EXIT_NOT_EXECUTABLE };
        anyhow::Error::from(RunError { code, message: format!("cannot start {:?} in {}: {e}", cmd[0], c.name) })
    })?;
    forward_signals_to(child.id() as i32);
    Ok(wait_exit_code(child))
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolv_conf_for_each_kind_of_network() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch lan\noptions edns0\n";
        assert_eq!(super::resolv_conf(host, false, &[], &[], &[]), "nameserver 10.0.0.2\nsearch lan\noptions edns0\n");
        assert_eq!(super::resolv_conf(host, true, &[], &[], &[]), "nameserver 127.0.0.11\nsearch lan\noptions edns0 ndots:0\n");
        let dns = vec!["192.168.1.100".to_string()];
        let search = vec!["corp".to_string()];
        let opts = vec!["timeout:1".to_string()];
        assert_eq!(super::resolv_conf(host, false, &dns, &search, &opts), "nameserver 192.168.1.100\nsearch corp\noptions timeout:1\n");
    }
}
