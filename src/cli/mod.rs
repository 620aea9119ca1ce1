//! The command line: Docker's vocabulary over netwright's engine. This file defines the
//! commands and their flags; [`commands`] runs them; [`output`] shapes tables and JSON.

mod commands;
pub(crate) use commands::{explain_container, inspect_doc};
mod format;
mod network;
pub mod output;
mod service;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use commands::dispatch;

/// Standard output that a closed reader cannot abort: `netwright rm -f a b c | head -1`
/// must still remove c. Writes to a closed pipe are dropped, not errors.
pub struct Out<W: std::io::Write>(pub W);

impl<W: std::io::Write> std::io::Write for Out<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(buf.len()),
            r => r,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r,
        }
    }
}

/// A parse error on one line: clap's first line, and where to read more.
pub fn usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").trim();
    // "the following required arguments were not provided:" lists them on the next lines.
    let first = match first.strip_suffix(':') {
        Some(head) => {
            let more: Vec<&str> = text.lines().skip(1).take_while(|l| l.starts_with("  ")).map(str::trim).collect();
            format!("{head}: {}", more.join(" "))
        }
        None => first.to_string(),
    };
    // "Usage: netwright network create [OPTIONS] <NAME>" → "netwright network create".
    let command: Vec<&str> = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| u.split_whitespace().take_while(|w| !w.starts_with(['[', '<', '-'])).collect())
        .unwrap_or_default();
    let command = if command.is_empty() { "netwright".to_string() } else { command.join(" ") };
    format!("{first}: see `{command} --help`")
}
use netwright_engine::container::Spec;
use netwright_engine::ctx::DEFAULT_ROOT;

#[derive(Parser, Debug)]
#[command(
    name = "netwright",
    version,
    about = "Container networking on the real kernel: bridges, veths, namespaces — and what they do"
)]
pub struct Cli {
    /// State root: database, namespaces, logs. Everything netwright names is scoped by it.
    #[arg(long, global = true, env = "NETWRIGHT_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// etcd for overlay networks (http://HOST:2379): joins this host to that cluster
    #[arg(long, global = true, env = "NETWRIGHT_ETCD")]
    pub etcd: Option<String>,
    /// This host's underlay address (VTEP) in the cluster (default: the default route's)
    #[arg(long, global = true)]
    pub advertise: Option<std::net::Ipv4Addr>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
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
        /// table, json, or a Go template over each container's json line ('{{.Names}}')
        #[arg(long, default_value = "table")]
        format: String,
        /// Only containers matching KEY=VALUE: name, id, status (created|running|exited), network
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        /// Only display container IDs
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a container's details as JSON (docker inspect's shape)
    Inspect {
        /// A Go template over each document, as Docker's: '{{.State.Pid}}', '{{json .NetworkSettings}}'
        #[arg(short, long)]
        format: Option<String>,
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
        /// Only the last N lines ("all" for everything)
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
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
    /// Change a running container's bandwidth limits ("0" removes one)
    Update {
        /// Limit traffic out of the container (e.g. 10mbit; 0: no limit)
        #[arg(long = "egress-rate")]
        egress_rate: Option<String>,
        /// Limit traffic into the container (e.g. 50mbit; 0: no limit)
        #[arg(long = "ingress-rate")]
        ingress_rate: Option<String>,
        container: String,
    },
    /// Podman's network backend protocol (netavark 1.4): setup, teardown, version
    Netavark(crate::frontends::netavark::NetavarkArgs),
    /// Tracked connections (a container's, if named) with both tuples and their NAT, and the table's fill level
    Conntrack {
        container: Option<String>,
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
    },
    /// Hosts sharing overlay networks through etcd: join, ls, leave
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Virtual IPs that spread connections over containers (Kubernetes Services, Swarm VIPs)
    #[command(subcommand)]
    Service(ServiceCmd),
    /// The live system in a browser: networks, containers, connections as they happen (read-only)
    Ui {
        /// Address to serve on (loopback by default)
        #[arg(long, default_value = "127.0.0.1:7780")]
        listen: std::net::SocketAddr,
        /// Serve on a non-loopback address (anyone who reaches it sees your containers)
        #[arg(long)]
        allow_remote: bool,
    },
    /// Manage netwright itself
    #[command(subcommand)]
    System(SystemCmd),
    /// Rebuild kernel state from the store: release crashed containers, restore bridges, remove strays
    Reconcile,
    /// (internal) the DNS resolver's supervisor
    #[command(name = "_dns", hide = true)]
    DnsSupervisor,
    /// (internal) the DNS resolver
    #[command(name = "_resolver", hide = true)]
    Resolver,
    /// (internal) the overlay agent: this host's lease and its etcd watch
    #[command(name = "_overlay", hide = true)]
    OverlayAgent,
    /// (internal) a `run -d` monitor's last act: release its container's network
    #[command(name = "_release", hide = true)]
    Release { id: String, code: i32 },
    /// (internal) after a detach: delete the released links a second later if still there
    #[command(name = "_unplug", hide = true)]
    Unplug {
        #[arg(long)]
        netns_fd: Option<i32>,
        #[arg(long)]
        host: Vec<String>,
        #[arg(long)]
        inside: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ServiceCmd {
    /// Create a service: a VIP on a network, named in DNS, spreading connections over its backends
    Create {
        name: String,
        /// The (bridge) network the VIP and the backends are on
        #[arg(long = "network", alias = "net")]
        network: String,
        /// A port the VIP answers on, PORT[/tcp|udp] (a backend's same port); repeatable
        #[arg(long = "port", required = true)]
        port: Vec<String>,
        /// Which containers are backends: alias=NAME (default: alias=<service name>)
        #[arg(long)]
        selector: Option<String>,
        /// The VIP (default: the next free address of the network)
        #[arg(long)]
        ip: Option<String>,
        /// Publish on the host: HOST_PORT:PORT[/PROTO]
        #[arg(short, long = "publish")]
        publish: Vec<String>,
        /// client-ip: a client keeps its backend (hash of its address); none (default)
        #[arg(long)]
        affinity: Option<String>,
    },
    /// List services
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
    },
    /// Show services with their backends
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Remove services
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ClusterCmd {
    /// Join this host to the cluster at --etcd URL (recorded: later commands need not repeat it)
    Join {
        /// The host's name in `cluster ls` (default: its hostname)
        #[arg(long)]
        name: Option<String>,
    },
    /// List the cluster's hosts with their VTEP and MTU
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
    },
    /// Leave the cluster (refused while this host's containers use overlay networks)
    Leave,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum SystemCmd {
    /// Remove every container, network and kernel object of this state root, then the root
    /// itself (how to uninstall netwright)
    Reset {
        /// Do not ask for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
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
        /// A Go template over each document: '{{range .IPAM.Config}}{{.Subnet}}{{end}}'
        #[arg(short, long)]
        format: Option<String>,
        /// Overlay networks: the peers (hosts, VTEPs and their endpoints), as Docker's
        #[arg(short, long)]
        verbose: bool,
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
        /// IPv6 address on a dual-stack network
        #[arg(long)]
        ip6: Option<String>,
        #[arg(long = "alias")]
        alias: Vec<String>,
    },
    /// Disconnect a running container from a network
    Disconnect { network: String, container: String },
    /// Remove all networks no container is attached to
    Prune {
        /// Do not ask for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    pub name: String,
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR form; give one IPv4 and, with --ipv6, one IPv6 subnet
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Gateway of a subnet (one per family)
    #[arg(long)]
    pub gateway: Vec<String>,
    #[arg(long = "ip-range")]
    pub ip_range: Option<String>,
    /// Enable IPv6: dual stack (an IPv6 subnet is picked from fd00::/8 unless given)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipv6: Option<bool>,
    /// IPv4 on the network (IPv6-only networks are not supported yet)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipv4: Option<bool>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Driver options, e.g. mtu=1400
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
    /// Also print (on stderr) the ip, nft and sysctl commands equal to what was done
    #[arg(long)]
    pub explain: bool,
    /// Print those commands without doing anything
    #[arg(long)]
    pub dry_run: bool,
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

// How a container is networked: shared by `run` and `attach`. (Not a doc comment: with
// deferred subcommands, a flattened struct's doc would become the command's about.)
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
    /// IPv6 address on the network (a dual-stack network)
    #[arg(long)]
    pub ip6: Option<String>,
    /// Also print (on stderr) the ip and nft commands equal to what was done
    #[arg(long)]
    pub explain: bool,
    /// Print those commands without doing anything
    #[arg(long)]
    pub dry_run: bool,
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
    /// Limit traffic out of the container (e.g. 10mbit), set from the host side
    #[arg(long = "egress-rate")]
    pub egress_rate: Option<String>,
    /// Limit traffic into the container (e.g. 50mbit)
    #[arg(long = "ingress-rate")]
    pub ingress_rate: Option<String>,
}

impl NetArgs {
    fn spec(self) -> Spec {
        Spec {
            name: self.name,
            networks: self.network,
            ip: self.ip,
            ip6: self.ip6,
            hostname: self.hostname,
            publish: self.publish,
            aliases: self.network_alias,
            dns: self.dns,
            dns_search: self.dns_search,
            dns_options: self.dns_option,
            add_hosts: self.add_host,
            egress_rate: self.egress_rate,
            ingress_rate: self.ingress_rate,
            ..Spec::default()
        }
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
