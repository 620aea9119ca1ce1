//! The command line: Docker's vocabulary over netwright's library.

pub mod output;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use netwright_engine::ctx::{Ctx, DEFAULT_ROOT};
use netwright_engine::kernel::netlink::Netlink;
use netwright_engine::network::{self, CreateSpec};
use crate::runtime;
use netwright_engine::container::{self, Spec};
use netwright_engine::error::one_line;
use netwright_engine::kernel::process;

#[derive(Parser, Debug)]
#[command(name = "netwright", version, about = "Container networking on the real kernel: bridges, veths, namespaces — and what they do")]
pub struct Cli {
    /// State root: database, namespaces, logs. Everything netwright names is scoped by it.
    #[arg(long, global = true, env = "NETWRIGHT_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Run a command in a new container
    Run(RunArgs),
    /// Network a namespace a runtime made (as `netavark setup` does); prints the container's
    /// inspect document. No process is started: `netwright detach` undoes it
    Attach(AttachArgs),
    /// Release what `attach` set up (interfaces, addresses, ports, DNS names); the runtime's
    /// namespace itself is left to the runtime
    Detach {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers
    Ps {
        /// Show all containers (default shows just running)
        #[arg(short, long)]
        all: bool,
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
        /// Only display container IDs
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a container's details as JSON (docker inspect's shape)
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container
    Exec {
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print a detached container's output
    Logs {
        container: String,
        /// Follow the output until the container exits
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop running containers (SIGTERM, then SIGKILL after the timeout)
    Stop {
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        /// Kill and remove a running container
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List a container's published ports
    Port { container: String },
    /// Explain, hop by hop, whether a packet from SRC reaches DST[:PORT][/PROTO]
    Trace {
        /// A container, host, an IP, or lan:IP (outside)
        src: String,
        /// The same, with an optional :PORT and /PROTO
        dst: String,
        /// Also send a real connection (from the LAN: wait for one), follow it with the
        /// kernel's nftables trace, and compare. Exit code 1 when blocked or contradicted.
        #[arg(long)]
        probe: bool,
        /// With --probe from lan:IP: how long to wait for the packet, in seconds
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
    },
    /// Draw the live system: interfaces, bridges, veths, containers, ports, names
    Topology {
        #[arg(long, value_parser = ["text", "json", "dot", "mermaid", "svg"], default_value = "text")]
        format: String,
    },
    /// Check the classic container-networking failures against the live system
    Doctor {
        /// Only this container's checks
        container: Option<String>,
    },
    /// Rebuild kernel state from the store: release crashed containers, restore bridges, remove strays
    Reconcile,
    /// (internal) the DNS resolver's supervisor
    #[command(name = "_dns", hide = true)]
    DnsSupervisor,
    /// (internal) the DNS resolver
    #[command(name = "_resolver", hide = true)]
    Resolver,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network
    Create(NetworkCreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks' details as JSON (docker network inspect's shape)
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a running container to a network (a new interface: eth1, eth2, ...)
    Connect {
        network: String,
        container: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long = "alias")]
        alias: Vec<String>,
    },
    /// Disconnect a running container from a network
    Disconnect {
        network: String,
        container: String,
    },
    /// Remove all networks no container is attached to
    Prune {
        /// Accepted for Docker compatibility; netwright never prompts
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    pub name: String,
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    #[arg(long)]
    pub subnet: Option<String>,
    #[arg(long)]
    pub gateway: Option<String>,
    #[arg(long = "ip-range")]
    pub ip_range: Option<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Driver options, e.g. mtu=1400
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub net: NetArgs,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The namespace to network: a pinned netns file (/run/netns/NAME) or /proc/PID/ns/net
    pub netns: std::path::PathBuf,
    #[command(flatten)]
    pub net: NetArgs,
}

/// How a container is networked: shared by `run` and `attach`.
#[derive(Args, Debug)]
pub struct NetArgs {
    #[arg(long)]
    pub name: Option<String>,
    /// Network to connect to (default: bridge), or host, none, container:NAME
    #[arg(long = "network", alias = "net")]
    pub network: Vec<String>,
    /// IPv4 address on the network
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a container's port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp|sctp]
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// Another name for the container on its (user-defined) network
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// Upstream DNS server for names netwright does not know
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// DNS resolver option (resolv.conf `options`)
    #[arg(long = "dns-option")]
    pub dns_option: Vec<String>,
    /// Extra /etc/hosts line: NAME:IP
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Container host name (default: the short container ID)
    #[arg(long)]
    pub hostname: Option<String>,
}

impl NetArgs {
    fn spec(self) -> Spec {
        Spec {
            name: self.name, networks: self.network, ip: self.ip, hostname: self.hostname, publish: self.publish,
            aliases: self.network_alias, dns: self.dns, dns_search: self.dns_search, dns_options: self.dns_option,
            add_hosts: self.add_host, ..Spec::default()
        }
    }
}

/// `docker inspect`'s document for one container.
fn inspect_doc(ctx: &Ctx, store: &mut netwright_engine::store::Store, c: &netwright_engine::store::Container) -> Result<serde_json::Value> {
    let (eps, ports) = store.read(|tx| {
        let mut v = Vec::new();
        for e in tx.endpoints_of(&c.id)? {
            let n = tx.network(&e.network_id)?;
            v.push((e, n));
        }
        Ok((v, tx.ports_of(&c.id)?))
    })?;
    Ok(output::container_inspect(ctx, c, &eps, &ports))
}

fn needs_admin(cmd: &Cmd) -> bool {
    !matches!(cmd, Cmd::Ps { .. } | Cmd::Inspect { .. } | Cmd::Logs { .. } | Cmd::Port { .. } | Cmd::Topology { .. }
        | Cmd::Network(NetworkCmd::Ls { .. } | NetworkCmd::Inspect { .. }))
}

/// Runs a parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    if needs_admin(&cli.command) && !process::has_admin_caps() {
        bail!("this command needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo");
    }
    let ctx = Ctx::new(&cli.root)?;
    netwright_engine::ctx::trace("parsed");
    let out = &mut std::io::stdout().lock();
    match cli.command {
        Cmd::Run(a) => {
            // Like `docker run`: 125 when netwright itself failed, else the container's code.
            return runtime::run(&ctx, Spec { cmd: a.cmd, detach: a.detach, auto_remove: a.rm, ..a.net.spec() }).map_err(|e| match e.downcast::<runtime::RunError>() {
                Ok(r) => r.into(),
                Err(e) => runtime::RunError { code: runtime::EXIT_RUN_ERROR, message: one_line(&e) }.into(),
            });
        }
        Cmd::Attach(a) => {
            let spec = Spec { netns: Some(a.netns), ..a.net.spec() };
            let mut store = ctx.store()?;
            netwright_engine::ctx::trace("store opened");
            let c = container::attach(&ctx, &mut store, spec)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&inspect_doc(&ctx, &mut store, &c)?)?)?;
        }
        Cmd::Detach { containers } => {
            let mut store = ctx.store()?;
            for r in &containers {
                runtime::remove(&ctx, &mut store, r, true)?;
                writeln!(out, "{r}")?;
            }
        }
        Cmd::Network(n) => network_cmd(&ctx, n, out)?,
        Cmd::Ps { all, format, quiet } => {
            let mut store = ctx.store()?;
            container::sweep(&ctx, &mut store)?;
            let list: Vec<_> = store.read(|tx| {
                let mut v = Vec::new();
                for c in tx.containers()?.into_iter().filter(|c| all || c.state == netwright_engine::store::State::Running) {
                    let ports = tx.ports_of(&c.id)?;
                    v.push((c, ports));
                }
                Ok(v)
            })?;
            if quiet {
                for (c, _) in &list {
                    writeln!(out, "{}", &c.id[..12])?;
                }
            } else if format == "json" {
                for (c, p) in &list {
                    writeln!(out, "{}", output::ps_json(c, p))?;
                }
            } else {
                let rows: Vec<_> = list.iter().map(|(c, p)| output::ps_row(c, p)).collect();
                write!(out, "{}", output::table(&["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES", "NETWORK"], &rows))?;
            }
        }
        Cmd::Inspect { containers } => {
            let mut store = ctx.store()?;
            container::sweep(&ctx, &mut store)?;
            let mut docs = Vec::new();
            for r in &containers {
                let c = container::find(&mut store, r)?;
                docs.push(inspect_doc(&ctx, &mut store, &c)?);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?;
        }
        Cmd::Exec { container, cmd } => {
            let mut store = ctx.store()?;
            return runtime::exec(&mut store, &container, &cmd);
        }
        Cmd::Logs { container, follow } => logs(&ctx, &container, follow, out)?,
        Cmd::Stop { time, containers } => {
            let mut store = ctx.store()?;
            for r in &containers {
                runtime::stop(&ctx, &mut store, r, Duration::from_secs(time))?;
                writeln!(out, "{r}")?;
            }
        }
        Cmd::Rm { force, containers } => {
            let mut store = ctx.store()?;
            for r in &containers {
                runtime::remove(&ctx, &mut store, r, force)?;
                writeln!(out, "{r}")?;
            }
        }
        Cmd::Port { container } => {
            let mut store = ctx.store()?;
            let c = container::find(&mut store, &container)?;
            for m in store.read(|tx| tx.ports_of(&c.id))? {
                writeln!(out, "{}/{} -> {}:{}", m.container_port, m.proto.as_str(),
                    m.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), m.host_port)?;
            }
        }
        Cmd::Trace { src, dst, probe, wait, format } => {
            let mut store = ctx.store()?;
            container::sweep(&ctx, &mut store)?;
            let probe = probe.then(|| std::time::Duration::from_secs(wait));
            let t = netwright_engine::observe::trace::trace(&ctx, &mut store, &src, &dst, probe)?;
            if format == "json" {
                writeln!(out, "{}", serde_json::to_string_pretty(&t)?)?;
            } else {
                write!(out, "{}", netwright_engine::observe::trace::text(&t))?;
            }
            return Ok(if t.verdict == "DELIVERED" && t.probe_agrees != Some(false) { 0 } else { 1 });
        }
        Cmd::Topology { format } => {
            use netwright_engine::observe::topology as topo;
            let mut store = ctx.store()?;
            container::sweep(&ctx, &mut store)?;
            let t = topo::build(&ctx, &mut store)?;
            let text = match format.as_str() {
                "json" => serde_json::to_string_pretty(&t)? + "\n",
                "dot" => topo::dot(&t),
                "mermaid" => topo::mermaid(&t),
                "svg" => topo::svg(&t),
                _ => topo::text(&t),
            };
            write!(out, "{text}")?;
        }
        Cmd::Doctor { container } => {
            let mut store = ctx.store()?;
            container::sweep(&ctx, &mut store)?;
            let findings = netwright_engine::observe::doctor::run(&ctx, &mut store, container.as_deref())?;
            let mut failed = false;
            for f in &findings {
                let tag = match f.level {
                    netwright_engine::observe::doctor::Level::Ok => "ok  ",
                    netwright_engine::observe::doctor::Level::Warn => "WARN",
                    netwright_engine::observe::doctor::Level::Fail => { failed = true; "FAIL" }
                };
                writeln!(out, "{tag}  {:<16} {}", f.check, f.detail)?;
                if let (Some(fix), false) = (&f.fix, f.level == netwright_engine::observe::doctor::Level::Ok) {
                    writeln!(out, "      {:<16} fix: {fix}", "")?;
                }
            }
            return Ok(if failed { 1 } else { 0 });
        }
        Cmd::Reconcile => {
            let mut store = ctx.store()?;
            let mut nl = Netlink::open()?;
            let r = netwright_engine::recover::reconcile(&ctx, &mut store, &mut nl)?;
            writeln!(out, "firewall rebuilt from the store (tables ip/bridge {})", netwright_engine::firewall::table_name(&ctx))?;
            writeln!(out, "released {} crashed container(s){}", r.released.len(), list(&r.released))?;
            writeln!(out, "restored {} bridge(s)", r.bridges_restored)?;
            writeln!(out, "removed {} stray device(s){}", r.stray_devices.len(), list(&r.stray_devices))?;
            writeln!(out, "removed {} stray namespace(s){}", r.stray_namespaces.len(), list(&r.stray_namespaces))?;
        }
        Cmd::DnsSupervisor => netwright_engine::dns::server::run_supervisor(&ctx)?,
        Cmd::Resolver => netwright_engine::dns::server::run_resolver(&ctx)?,
    }
    Ok(0)
}

fn list(names: &[String]) -> String {
    if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) }
}

fn network_cmd(ctx: &Ctx, cmd: NetworkCmd, out: &mut impl Write) -> Result<()> {
    let mut store = ctx.store()?;
    let mut nl = Netlink::open().context("opening netlink")?;
    network::ensure_default(ctx, &mut store, &mut nl, false)?;
    match cmd {
        NetworkCmd::Create(a) => {
            let n = network::create(ctx, &mut store, &mut nl, &CreateSpec {
                name: a.name, driver: a.driver, subnet: a.subnet, gateway: a.gateway,
                ip_range: a.ip_range, internal: a.internal, options: a.opt,
            })?;
            writeln!(out, "{}", n.id)?;
        }
        NetworkCmd::Ls { format, quiet } => {
            let nets = store.read(|tx| tx.networks())?;
            if quiet {
                for n in &nets {
                    writeln!(out, "{}", &n.id[..12])?;
                }
            } else if format == "json" {
                for n in &nets {
                    writeln!(out, "{}", output::network_ls_json(n))?;
                }
            } else {
                let rows: Vec<_> = nets.iter().map(output::network_row).collect();
                write!(out, "{}", output::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows))?;
            }
        }
        NetworkCmd::Inspect { networks } => {
            container::sweep(ctx, &mut store)?;
            let mut docs = Vec::new();
            for r in &networks {
                let doc = store.read(|tx| {
                    let n = network::resolve(tx, r)?;
                    let mut attached = Vec::new();
                    for e in tx.active_endpoints_on(&n.id)? {
                        if let Some(c) = tx.container(&e.container_id)? {
                            attached.push((c, e));
                        }
                    }
                    Ok(output::network_inspect(&n, &attached))
                })?;
                docs.push(doc);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?;
        }
        NetworkCmd::Rm { networks } => {
            container::sweep(ctx, &mut store)?;
            let mut failed = None;
            for r in &networks {
                match network::remove(ctx, &mut store, &mut nl, r) {
                    Ok(_) => writeln!(out, "{r}")?,
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        NetworkCmd::Connect { network, container, ip, alias } => {
            netwright_engine::connect::connect(ctx, &mut store, &network, &container, ip.as_deref(), &alias)?;
        }
        NetworkCmd::Disconnect { network, container } => {
            netwright_engine::connect::disconnect(ctx, &mut store, &network, &container)?;
        }
        NetworkCmd::Prune { .. } => {
            container::sweep(ctx, &mut store)?;
            let removed = network::prune(ctx, &mut store, &mut nl)?;
            if !removed.is_empty() {
                writeln!(out, "Deleted Networks:")?;
                for n in removed {
                    writeln!(out, "{n}")?;
                }
            }
        }
    }
    Ok(())
}

fn logs(ctx: &Ctx, reference: &str, follow: bool, out: &mut impl Write) -> Result<()> {
    use std::io::Read;
    let mut store = ctx.store()?;
    let c = container::find(&mut store, reference)?;
    if !c.detached {
        bail!("container {} ran in the foreground: its output went to the terminal, not to a log", c.name);
    }
    let path = ctx.log_path(&c.id);
    let mut f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        f.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        if !follow {
            return Ok(());
        }
        let now = container::find(&mut store, reference);
        if now.map(|c| c.state == netwright_engine::store::State::Exited).unwrap_or(true) {
            buf.clear();
            f.read_to_end(&mut buf)?;
            out.write_all(&buf)?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
