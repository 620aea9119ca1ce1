//! The model: networks, containers and endpoints as the engine and its front ends see them.
//! Plain data; the store persists it, drivers turn it into desired kernel objects.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// A network's driver: which kernel objects carry its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// A Linux bridge per network, a veth pair per endpoint, NAT and published ports.
    Bridge,
    /// Containers get their own MAC on a parent device's segment; no NAT.
    Macvlan,
    /// One L2 segment across hosts: on each host a bridge (same gateway everywhere, NAT and
    /// published ports as on bridge networks) with a VXLAN port; etcd is the control plane.
    Overlay,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Macvlan => "macvlan",
            Driver::Overlay => "overlay",
        }
    }

    pub fn parse(s: &str) -> Option<Driver> {
        match s {
            "bridge" => Some(Driver::Bridge),
            "macvlan" => Some(Driver::Macvlan),
            "overlay" => Some(Driver::Overlay),
            _ => None,
        }
    }
}

impl Driver {
    /// A local bridge with veths, NAT and published ports (bridge and overlay networks).
    pub fn is_bridged(self) -> bool {
        matches!(self, Driver::Bridge | Driver::Overlay)
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a container is networked, as recorded (`--network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// netwright networks; the name is the first one's (which carries the default route).
    Network(String),
    /// The host's own network namespace.
    Host,
    /// A namespace of its own with only lo.
    None,
    /// Another container's namespace, by that container's id (`container:ID`).
    Container(String),
}

impl NetworkMode {
    pub fn parse(s: &str) -> NetworkMode {
        match s {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            _ => match s.strip_prefix("container:") {
                Some(id) => NetworkMode::Container(id.to_string()),
                None => NetworkMode::Network(s.to_string()),
            },
        }
    }

    /// Docker's spelling: `bridge`, `mynet`, `host`, `none`, `container:ID`.
    pub fn as_string(&self) -> String {
        match self {
            NetworkMode::Network(n) => n.clone(),
            NetworkMode::Host => "host".into(),
            NetworkMode::None => "none".into(),
            NetworkMode::Container(id) => format!("container:{id}"),
        }
    }

    /// Has netwright networks of its own (and so endpoints, names, ports).
    pub fn is_network(&self) -> bool {
        matches!(self, NetworkMode::Network(_))
    }

    /// The owner's id when this container joined another one's namespace.
    pub fn joined(&self) -> Option<&str> {
        match self {
            NetworkMode::Container(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
    /// Dual stack (`--ipv6`): the IPv6 subnet and its gateway on the bridge.
    pub subnet6: Option<Ipv6Net>,
    pub gateway6: Option<Ipv6Addr>,
    pub bridge: String,
    pub mtu: u32,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub builtin: bool,
    pub created: i64,
    pub cursor: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
    pub fn parse(s: &str) -> State {
        match s {
            "running" => State::Running,
            "exited" => State::Exited,
            _ => State::Created,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub cmd: Vec<String>,
    pub hostname: String,
    pub state: State,
    pub pid: Option<i32>,
    pub monitor_pid: Option<i32>,
    pub monitor_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub auto_remove: bool,
    pub detached: bool,
    pub network_mode: NetworkMode,
    /// --dns upstreams (empty: the host's).
    pub dns: Vec<String>,
    /// Attached (`netwright attach`): the runtime's namespace this container's network
    /// lives in; netwright runs no process for it.
    pub netns_source: Option<String>,
    /// Bandwidth limits in bits/s (out of / into the container); None: the network's.
    pub egress_rate: Option<u64>,
    pub ingress_rate: Option<u64>,
    pub created: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

/// A network option: "false" turns the embedded DNS off for the network (a front end's
/// network whose runtime asked for no names, as Podman's `dns_enabled: false`).
pub const DNS_OPTION: &str = "netwright.dns";

impl Network {
    /// Whether containers on this network get names at 127.0.0.11: user-defined networks,
    /// unless DNS was turned off for them.
    pub fn serves_names(&self) -> bool {
        !self.builtin && self.options.get(DNS_OPTION).is_none_or(|v| v != "false")
    }
}

impl Container {
    /// Is the container's owner still there: its monitor process (PID and start time), or
    /// for an attached container the runtime's namespace (the same one, by inode)?
    pub fn owner_alive(&self) -> bool {
        match &self.netns_source {
            Some(src) => {
                crate::kernel::netns::inode(std::path::Path::new(src)).is_some_and(|i| Some(i) == self.monitor_start)
            }
            None => crate::kernel::process::alive(self.monitor_pid, self.monitor_start),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub container_id: String,
    pub network_id: String,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    /// On a dual-stack network: the IPv6 address (None once released, as `ip`).
    pub ip6: Option<Ipv6Addr>,
    pub requested_ip6: Option<Ipv6Addr>,
    pub mac: String,
    pub aliases: Vec<String>,
    /// Which of its bridged network's bridges it is a port of: 0 the network's own, k > 0
    /// the k-th segment bridge chained to it (see crate::plan::Segment).
    pub segment: u32,
}

impl Endpoint {
    /// Where its published ports lead (while it has an address).
    pub fn target(&self) -> Option<crate::firewall::Target> {
        self.ip.map(|ip| crate::firewall::Target { ip, ip6: self.ip6 })
    }
}

/// Both serialize as Docker spells them ("bridge", "container:ID").
impl serde::Serialize for Driver {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl serde::Serialize for NetworkMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// One published port as installed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// None: every address of the host, both families (`-p 8080:80`). `0.0.0.0` or `::`:
    /// every address of that family only, as Docker reads `-p 0.0.0.0:8080:80`.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl fmt::Display for Mapping {
    /// Docker's `ps` form: 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ip = match self.host_ip {
            None => "0.0.0.0".to_string(),
            Some(IpAddr::V4(a)) => a.to_string(),
            Some(IpAddr::V6(a)) => format!("[{a}]"),
        };
        write!(f, "{ip}:{}->{}/{}", self.host_port, self.container_port, self.proto.as_str())
    }
}

impl Mapping {
    /// Does it publish on this family's addresses (IPv6: true; IPv4: false)?
    pub fn on_family(&self, v6: bool) -> bool {
        self.host_ip.is_none_or(|ip| ip.is_ipv6() == v6)
    }
}

/// An operation in progress, recorded so that a killed one is finished or undone by the
/// next command (see crate::recover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Connect,
    Remove,
    Disconnect,
    NetworkRemove,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Connect => "connect",
            Kind::Remove => "remove",
            Kind::Disconnect => "disconnect",
            Kind::NetworkRemove => "network-rm",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Create, Kind::Connect, Kind::Remove, Kind::Disconnect, Kind::NetworkRemove]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One recorded intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub kind: Kind,
    /// A container id (create, remove), an endpoint id (connect, disconnect) or a network's
    /// device name (network-rm).
    pub target: String,
    /// A second target: the container of a connect or disconnect, the name of a network.
    pub detail: String,
    pub pid: i32,
    pub pid_start: u64,
}

impl Intent {
    /// An intent of the calling process.
    pub fn mine(kind: Kind, target: &str, detail: &str) -> Intent {
        let pid = std::process::id() as i32;
        Intent {
            kind,
            target: target.to_string(),
            detail: detail.to_string(),
            pid,
            pid_start: crate::kernel::process::my_start_time().unwrap_or(0),
        }
    }

    /// Its process is gone (PID and start time: a reused PID is another process).
    pub fn abandoned(&self) -> bool {
        !crate::kernel::process::alive(Some(self.pid), Some(self.pid_start))
    }
}

/// An endpoint of an overlay network on another host, as etcd has it (and the store mirrors
/// it): what this host's kernel (FDB, neighbours) and DNS need to reach it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub id: String,
    pub network_id: String,
    /// The owning host's id.
    pub host: String,
    pub vtep: Ipv4Addr,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub container_id: String,
    /// The container's name first, then its hostname and aliases: what DNS answers for.
    pub names: Vec<String>,
}

/// A service: a virtual IP on a network that spreads new connections over the containers
/// carrying its selector (the backends), as Kubernetes' Services and Swarm's VIPs do.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub vip: Ipv4Addr,
    /// The ports the VIP answers on (a backend's same port).
    pub ports: Vec<ServicePort>,
    /// The network alias that makes a container a backend (default: the service's name).
    pub selector: String,
    /// Session affinity by client address (`--affinity client-ip`): a hash, not a random pick.
    pub client_affinity: bool,
    /// `-p HOST:PORT[/proto]` on the service: the host's port leads to a backend's PORT.
    pub publish: Vec<ServicePublish>,
    pub created: i64,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    pub proto: Proto,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ServicePublish {
    pub host_port: u16,
    pub port: u16,
    pub proto: Proto,
}

/// One backend of a service as installed: its slot in the service's map (0..N-1, kept
/// dense: a backend leaving hands its slot to the last one) and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub slot: u32,
    pub ip: Ipv4Addr,
    pub endpoint_id: String,
}
