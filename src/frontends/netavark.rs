//! `netwright netavark …`: Podman's network backend, spoken as netavark 1.4 speaks it.
//!
//! Podman finds `netavark` in containers.conf's `helper_binaries_dir` and calls only
//! `netavark --config DIR --rootless=false --aardvark-binary=P setup|teardown NETNS < JSON`,
//! holding a lock around each call, after allocating the container's addresses itself.
//! Here each call is one engine call: the network (Podman's name, id, bridge, subnet and
//! gateway) is made if missing, then the runtime's namespace is attached with Podman's
//! addresses, MACs, interface names, aliases and port mappings (or, for a container already
//! attached, the new network is connected: `podman network connect`). The answer is
//! netavark's status block, from which Podman writes resolv.conf, /etc/hosts and `inspect`.
//! Names resolve at the gateway, as with aardvark-dns. Errors are `{"error": "…"}` on
//! stdout with exit code 1, and leave nothing behind.
//!
//! State: netavark keeps its state under `--config DIR` (default: the temp dir); netwright's
//! state root for Podman is `DIR/netwright`, so one host's leftovers never reach another's.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use netwright_engine::Engine;
use netwright_engine::container::{EndpointRequest, Spec};
use netwright_engine::dns::DNS_AT_GATEWAY;
use netwright_engine::error::{ErrorKind, one_line};
use netwright_engine::network::CreateSpec;
use netwright_engine::store::{Container, State};

/// What the version command reports: the protocol netwright speaks.
const PROTOCOL_VERSION: &str = "1.4.0";

#[derive(clap::Args, Debug)]
pub struct NetavarkArgs {
    /// Read the configuration from FILE instead of standard input
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// netavark's state directory (Podman passes /run/containers/networks); netwright's
    /// state root is DIR/netwright
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Accepted as netavark does; netwright needs root
    #[arg(short, long)]
    rootless: Option<bool>,
    /// Accepted as netavark does; netwright serves DNS itself
    #[arg(short, long)]
    aardvark_binary: Option<String>,
    /// Print the version, as `netavark --version` does
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<NetavarkCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum NetavarkCmd {
    /// Network the namespace as the JSON describes
    Setup { netns: PathBuf },
    /// Undo what setup did (what is already gone is fine)
    Teardown { netns: PathBuf },
    /// Report the protocol version as JSON
    Version,
    /// netavark's `update` (DNS servers of a network): accepted, nothing to do
    Update {
        network: String,
        #[arg(long = "network-dns-servers")]
        dns: Vec<String>,
    },
}

// netavark 1.4's input (src/network/types.rs there), the fields netwright uses.
#[derive(Deserialize, Debug)]
struct NetworkOptions {
    container_id: String,
    container_name: String,
    networks: HashMap<String, PerNetwork>,
    network_info: HashMap<String, NetworkInfo>,
    port_mappings: Option<Vec<PortMapping>>,
    dns_servers: Option<Vec<String>>,
}

#[derive(Deserialize, Debug, Clone)]
struct PerNetwork {
    aliases: Option<Vec<String>>,
    interface_name: String,
    static_ips: Option<Vec<String>>,
    static_mac: Option<String>,
}

#[derive(Deserialize, Debug)]
struct NetworkInfo {
    dns_enabled: bool,
    driver: String,
    id: String,
    internal: bool,
    name: String,
    network_interface: Option<String>,
    options: Option<HashMap<String, String>>,
    subnets: Option<Vec<Subnet>>,
}

#[derive(Deserialize, Debug)]
struct Subnet {
    gateway: Option<String>,
    subnet: String,
}

#[derive(Deserialize, Debug)]
struct PortMapping {
    container_port: u16,
    host_ip: String,
    host_port: u16,
    protocol: String,
    range: u16,
}

/// Runs one netavark command; returns the exit code. Errors are JSON on stdout.
pub fn run(args: NetavarkArgs) -> i32 {
    // Podman and netavark's own tests read stdout as JSON and stderr as logs: no notices.
    netwright_engine::firewall::QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
    if args.version {
        println!("netavark {PROTOCOL_VERSION} (netwright {})", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    match execute(args) {
        Ok(Some(out)) => {
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", json!({ "error": one_line(&e) }));
            1
        }
    }
}

fn execute(args: NetavarkArgs) -> Result<Option<Value>> {
    let Some(command) = args.command else { bail!("no command: netwright netavark setup|teardown|version") };
    if let NetavarkCmd::Version = command {
        return Ok(Some(json!({
            "version": PROTOCOL_VERSION,
            "commit": format!("netwright {}", env!("CARGO_PKG_VERSION")),
            "build_time": "",
            "target": std::env::consts::ARCH,
        })));
    }
    if !netwright_engine::kernel::process::has_admin_caps() {
        bail!("netwright needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)");
    }
    // Without --config (netavark's own tests), the state is scoped by the host's network
    // namespace, as netavark's is by its temp dir there: one host's leftovers never reach
    // another's.
    let root = match args.config {
        Some(dir) => dir.join("netwright"),
        None => {
            let ns =
                std::fs::metadata("/proc/self/ns/net").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0);
            std::env::temp_dir().join(format!("netwright-netns-{ns}"))
        }
    };
    let engine = Engine::open(&root)?;
    match command {
        NetavarkCmd::Setup { netns } => setup(&engine, &netns, &read_options(args.file.as_deref())?).map(Some),
        NetavarkCmd::Teardown { netns } => {
            teardown(&engine, &netns, &read_options(args.file.as_deref())?).map(|_| None)
        }
        NetavarkCmd::Update { .. } | NetavarkCmd::Version => Ok(None),
    }
}

fn read_options(file: Option<&Path>) -> Result<NetworkOptions> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the configuration from stdin")?;
            s
        }
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("invalid network configuration JSON: {e}"))
}

/// The request's networks, eth0 first (Podman names them in order).
fn ordered(opts: &NetworkOptions) -> Vec<(&String, &PerNetwork)> {
    let mut v: Vec<_> = opts.networks.iter().collect();
    v.sort_by_key(|(_, per)| natural(&per.interface_name));
    v
}

/// "eth10" after "eth9".
fn natural(s: &str) -> (String, u64) {
    let digits = s.trim_start_matches(|c: char| !c.is_ascii_digit());
    (s[..s.len() - digits.len()].to_string(), digits.parse().unwrap_or(0))
}

fn setup(engine: &Engine, netns: &Path, opts: &NetworkOptions) -> Result<Value> {
    let id = super::container_id(&opts.container_id);
    let nets = ordered(opts);
    if nets.is_empty() {
        bail!("no networks to set up");
    }
    for (name, _) in &nets {
        let info = opts.network_info.get(*name).with_context(|| format!("network {name} has no network_info"))?;
        ensure_network(engine, info)?;
    }
    let mut endpoints = BTreeMap::new();
    for (name, per) in &nets {
        endpoints.insert((*name).clone(), request(per)?);
    }
    let same_ns = |c: &Container| {
        let inode = std::fs::metadata(netns).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
        inode.is_some() && c.monitor_start == inode
    };
    match existing(engine, &id)? {
        // Already attached to this namespace: `podman network connect` (ports are re-sent).
        Some(c) if c.netns_source.is_some() && c.state == State::Running && same_ns(&c) => {
            let have = engine.networks_of(&c.id)?;
            for (name, req) in endpoints.into_iter().filter(|(n, _)| !have.contains(n)) {
                engine.connect(&name, &c.id, req)?;
            }
        }
        stale => {
            // The same container in a new namespace (a restart whose teardown was lost):
            // the old attachment goes first.
            if let Some(old) = stale {
                if old.state != State::Exited {
                    engine.teardown(&old, 0, Some("replaced: set up again in a new namespace"))?;
                }
                engine.forget(&old)?;
            }
            let spec = Spec {
                id: Some(id.clone()),
                name: Some(opts.container_name.clone()),
                networks: nets.iter().map(|(n, _)| (*n).clone()).collect(),
                netns: Some(netns.to_path_buf()),
                publish: publish_specs(opts.port_mappings.as_deref().unwrap_or_default())?,
                dns: opts.dns_servers.clone().unwrap_or_default(),
                endpoints,
                // Podman binds the host ports itself and hands them to conmon.
                runtime_reserves_ports: true,
                ..Spec::default()
            };
            engine.attach(spec)?;
        }
    }
    status(engine, &id, opts)
}

/// What Podman decided for one network: its addresses, MAC, interface name and aliases.
fn request(per: &PerNetwork) -> Result<EndpointRequest> {
    let all: Vec<std::net::IpAddr> = per
        .static_ips
        .iter()
        .flatten()
        .map(|s| s.parse::<std::net::IpAddr>().map_err(|_| anyhow!("static IP {s:?} is not an IP address")))
        .collect::<Result<_>>()?;
    let ips: Vec<Ipv4Addr> =
        all.iter().filter_map(|a| if let std::net::IpAddr::V4(v) = a { Some(*v) } else { None }).collect();
    let ips6: Vec<std::net::Ipv6Addr> =
        all.iter().filter_map(|a| if let std::net::IpAddr::V6(v) = a { Some(*v) } else { None }).collect();
    if ips.len() > 1 || ips6.len() > 1 {
        bail!(
            "interface {}: netwright takes one address per family per network, got {}",
            per.interface_name,
            all.len()
        );
    }
    Ok(EndpointRequest {
        ip: ips.first().copied(),
        ip6: ips6.first().copied(),
        mac: per.static_mac.clone(),
        ifname: Some(per.interface_name.clone()),
        aliases: Some(per.aliases.clone().unwrap_or_default()),
    })
}

/// Podman's network as a netwright network: made when missing, kept when it matches.
fn ensure_network(engine: &Engine, info: &NetworkInfo) -> Result<()> {
    let subnet = info
        .subnets
        .iter()
        .flatten()
        .find(|s| s.subnet.parse::<ipnet::Ipv4Net>().is_ok())
        .with_context(|| format!("network {}: netwright needs an IPv4 subnet", info.name))?;
    // Podman's dual stack (`ipv6_enabled` with an IPv6 subnet beside the IPv4 one).
    let subnet6 = info.subnets.iter().flatten().find(|s| s.subnet.parse::<ipnet::Ipv6Net>().is_ok());
    let mut store = engine.store()?;
    if let Some(n) = store.read(|tx| tx.network(&info.name))?.filter(|n| n.name == info.name) {
        let same = n.subnet.to_string() == subnet.subnet
            && n.subnet6.map(|s| s.to_string()) == subnet6.map(|s| s.subnet.clone())
            && info.network_interface.as_ref().is_none_or(|b| *b == n.bridge || info.driver != "bridge");
        if same {
            return Ok(());
        }
        // Podman changed it (a network removed and made again): follow, if nobody uses it.
        engine.network_remove(&n.id)?;
    }
    let mut options = Vec::new();
    let mut bridge = info.network_interface.clone();
    for (k, v) in info.options.iter().flatten() {
        match k.as_str() {
            "mtu" => options.push(format!("mtu={v}")),
            "mode" if info.driver == "macvlan" => options.push(format!("macvlan_mode={v}")),
            _ => {} // isolate, metric: netwright isolates networks always; routes have no metric here
        }
    }
    if info.driver == "macvlan" {
        // netavark's network_interface is the macvlan's parent.
        options.push(format!("parent={}", bridge.take().unwrap_or_default()));
    }
    let mut extra = BTreeMap::new();
    if info.dns_enabled {
        extra.insert(DNS_AT_GATEWAY.to_string(), "true".to_string());
    } else {
        // Podman asked for no names on this network: no resolver work for its containers.
        extra.insert(netwright_engine::model::DNS_OPTION.to_string(), "false".to_string());
    }
    // Podman's id when it is free (netavark itself never checks ids are unique).
    let id_free = store.read(|tx| tx.network(&info.id))?.is_none();
    let spec = CreateSpec {
        name: info.name.clone(),
        driver: info.driver.clone(),
        subnet: Some(subnet.subnet.clone()),
        gateway: subnet.gateway.clone(),
        ipv6: subnet6.is_some(),
        subnet6: subnet6.map(|s| s.subnet.clone()),
        gateway6: subnet6.and_then(|s| s.gateway.clone()),
        internal: info.internal,
        options,
        id: (id_free && info.id.len() >= 12 && info.id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| info.id.clone()),
        bridge,
        extra_options: extra,
        ..CreateSpec::default()
    };
    match engine.network_create(&spec) {
        Ok(_) => Ok(()),
        // Another call made it meanwhile (Podman locks, but other runtimes may not).
        Err(e) if e.kind == ErrorKind::Conflict && store.read(|tx| tx.network(&info.name))?.is_some() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn existing(engine: &Engine, id: &str) -> Result<Option<Container>> {
    match engine.find(id) {
        Ok(c) if c.id == id => Ok(Some(c)),
        Ok(_) => Ok(None),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// netavark's port mappings as Docker's -p forms (ranges and protocol lists included).
fn publish_specs(ports: &[PortMapping]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in ports {
        let range = p.range.max(1);
        let span = |start: u16| -> Result<String> {
            let end = start.checked_add(range - 1).context("port range past 65535")?;
            Ok(if range == 1 { start.to_string() } else { format!("{start}-{end}") })
        };
        let host = match p.host_ip.as_str() {
            "" => String::new(),
            ip if ip.contains(':') => format!("[{ip}]:"),
            ip => format!("{ip}:"),
        };
        for proto in p.protocol.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(format!("{host}{}:{}/{proto}", span(p.host_port)?, span(p.container_port)?));
        }
    }
    Ok(out)
}

/// netavark's answer: per network, the interface with its MAC and address, and where DNS is.
fn status(engine: &Engine, id: &str, opts: &NetworkOptions) -> Result<Value> {
    let mut store = engine.store()?;
    let eps = store.read(|tx| {
        let mut v = Vec::new();
        for e in tx.endpoints_of(id)?.into_iter().filter(|e| e.ip.is_some()) {
            if let Some(n) = tx.network(&e.network_id)? {
                v.push((e, n));
            }
        }
        Ok(v)
    })?;
    let mut out = serde_json::Map::new();
    for (name, _) in ordered(opts) {
        let Some((e, n)) = eps.iter().find(|(_, n)| &n.name == name) else { continue };
        let dns = opts.network_info.get(name).is_some_and(|i| i.dns_enabled);
        out.insert(
            name.clone(),
            json!({
                "dns_search_domains": [],
                "dns_server_ips": if dns { vec![n.gateway.to_string()] } else { vec![] },
                "interfaces": {
                    e.ifname.clone(): {
                        "mac_address": e.mac,
                        "subnets": subnets_of(e, n),
                    },
                },
            }),
        );
    }
    Ok(Value::Object(out))
}

/// An endpoint's addresses as netavark reports them: IPv4, then IPv6 on a dual-stack network.
fn subnets_of(e: &netwright_engine::model::Endpoint, n: &netwright_engine::model::Network) -> Vec<Value> {
    let mut v = vec![json!({
        "ipnet": format!("{}/{}", e.ip.expect("active"), n.subnet.prefix_len()),
        "gateway": n.gateway.to_string(),
    })];
    if let (Some(ip6), Some(s6), Some(g6)) = (e.ip6, n.subnet6, n.gateway6) {
        v.push(json!({"ipnet": format!("{ip6}/{}", s6.prefix_len()), "gateway": g6.to_string()}));
    }
    v
}

fn teardown(engine: &Engine, _netns: &Path, opts: &NetworkOptions) -> Result<()> {
    let Some(c) = existing(engine, &super::container_id(&opts.container_id))? else { return Ok(()) };
    let have = engine.networks_of(&c.id)?;
    let asked: Vec<&String> = opts.networks.keys().collect();
    if c.state == State::Exited || have.iter().all(|n| asked.contains(&n)) {
        // All of its networks: the container goes (its namespace stays the runtime's).
        if c.state != State::Exited {
            engine.teardown(&c, 0, None)?;
        }
        engine.forget(&c)?;
    } else {
        // `podman network disconnect`: only those.
        for n in asked.into_iter().filter(|n| have.contains(n)) {
            engine.disconnect(n, &c.id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_become_docker_forms() {
        let pm = |host_ip: &str, hp, cp, proto: &str, range| PortMapping {
            container_port: cp,
            host_ip: host_ip.into(),
            host_port: hp,
            protocol: proto.into(),
            range,
        };
        let specs = publish_specs(&[
            pm("", 8080, 80, "tcp", 0),
            pm("127.0.0.1", 5353, 53, "tcp,udp", 1),
            pm("0.0.0.0", 9000, 9000, "udp", 3),
        ])
        .unwrap();
        assert_eq!(
            specs,
            ["8080:80/tcp", "127.0.0.1:5353:53/tcp", "127.0.0.1:5353:53/udp", "0.0.0.0:9000-9002:9000-9002/udp"]
        );
    }

    #[test]
    fn podmans_json_parses_and_interfaces_sort_naturally() {
        let text = r#"{"container_id":"6ce776ea58b5aaaa","container_name":"t","networks":{
            "b":{"interface_name":"eth10","static_ips":["10.89.0.2"]},
            "a":{"interface_name":"eth9","static_ips":["10.88.0.2"],"static_mac":"aa:bb:cc:dd:ee:02","aliases":["x"]}},
            "network_info":{"a":{"dns_enabled":true,"driver":"bridge","id":"53ce4390f2ad","internal":false,
            "ipv6_enabled":false,"name":"a","network_interface":"podman0","subnets":[{"gateway":"10.88.0.1","subnet":"10.88.0.0/16"}]},
            "b":{"dns_enabled":false,"driver":"bridge","id":"63ce4390f2ad","internal":false,"ipv6_enabled":false,"name":"b",
            "network_interface":"podman1","subnets":[{"gateway":"10.89.0.1","subnet":"10.89.0.0/24"}]}}}"#;
        let o: NetworkOptions = serde_json::from_str(text).unwrap();
        let order: Vec<&str> = ordered(&o).iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(order, ["a", "b"]);
        let r = request(&o.networks["a"]).unwrap();
        assert_eq!(r.ip, Some("10.88.0.2".parse().unwrap()));
        assert_eq!(r.mac.as_deref(), Some("aa:bb:cc:dd:ee:02"));
        assert_eq!(r.ifname.as_deref(), Some("eth9"));
    }
}
