//! `netwright-cni`: a CNI plugin (spec 1.0/1.1; results also in 0.4.0's shape for Podman).
//!
//! Installed as a link named `netwright-cni` in the runtime's CNI plugin directory. The
//! configuration's `name` is the netwright network, made on the first ADD when missing
//! (with the config's `subnet`, `gateway`, `mtu`, `internal`), so
//! `{"cniVersion":"1.0.0","name":"cninet","type":"netwright-cni","subnet":"10.66.0.0/24"}`
//! is a complete configuration. ADD attaches the container's namespace (CNI_NETNS) as
//! `netwright attach` does, or, for a container already attached, connects the network
//! (a runtime adds one network at a time); DEL undoes it and never fails for what is gone;
//! CHECK compares; GC releases every attachment not in `cni.dev/valid-attachments`; STATUS
//! and VERSION answer. Static addresses come from `CNI_ARGS` (`IP=`, `MAC=`, as Podman sends)
//! or `runtimeConfig.ips`/`mac`; ports from `runtimeConfig.portMappings`; aliases from
//! `runtimeConfig.aliases`. The state root: the config's `root`, else `NETWRIGHT_ROOT`,
//! else netwright's default.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use netwright_engine::Engine;
use netwright_engine::container::{EndpointRequest, Spec};
use netwright_engine::error::{ErrorKind, one_line};
use netwright_engine::network::CreateSpec;
use netwright_engine::store::{Container, State};

const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A CNI error: the spec's code and message.
struct CniError {
    code: u32,
    msg: String,
}

fn err(code: u32, msg: impl Into<String>) -> anyhow::Error {
    anyhow!(CniErrorBox(code, msg.into()))
}

#[derive(Debug)]
struct CniErrorBox(u32, String);
impl std::fmt::Display for CniErrorBox {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for CniErrorBox {}

fn classify(e: &anyhow::Error) -> CniError {
    if let Some(CniErrorBox(code, msg)) = e.downcast_ref::<CniErrorBox>() {
        return CniError { code: *code, msg: msg.clone() };
    }
    // Plugin-specific codes start at 100.
    let code = match e.downcast_ref::<netwright_engine::Error>().map(|t| t.kind) {
        Some(ErrorKind::Invalid) => 7,
        Some(ErrorKind::Conflict) => 100,
        Some(ErrorKind::NotFound) => 101,
        _ => 999,
    };
    CniError { code, msg: one_line(e) }
}

/// Runs the plugin (CNI_COMMAND from the environment, config on stdin); the exit code.
pub fn run() -> i32 {
    netwright_engine::firewall::QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut text = String::new();
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let read = std::io::stdin().read_to_string(&mut text);
    let conf: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let version = conf["cniVersion"].as_str().unwrap_or("1.0.0").to_string();
    let result = match read {
        Ok(_) => execute(&command, &conf, &version),
        Err(e) => Err(err(6, format!("reading the configuration: {e}"))),
    };
    match result {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let CniError { code, msg } = classify(&e);
            println!("{}", json!({"cniVersion": version, "code": code, "msg": msg}));
            1
        }
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| err(4, format!("{name} is not set")))
}

fn execute(command: &str, conf: &Value, version: &str) -> Result<Option<Value>> {
    if command == "VERSION" {
        return Ok(Some(json!({"cniVersion": version, "supportedVersions": SUPPORTED})));
    }
    if conf.is_null() {
        bail!(err(6, "the network configuration on stdin is not JSON"));
    }
    if !SUPPORTED.contains(&version) {
        bail!(err(1, format!("cniVersion {version} is not supported (supported: {})", SUPPORTED.join(", "))));
    }
    let network = conf["name"].as_str().ok_or_else(|| err(7, "the configuration has no \"name\""))?.to_string();
    let root = conf["root"]
        .as_str()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("NETWRIGHT_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(netwright_engine::ctx::DEFAULT_ROOT));
    if command == "STATUS" {
        return Ok(None); // nothing to wait for: the plugin is ready whenever the kernel is
    }
    if !netwright_engine::kernel::process::has_admin_caps() {
        bail!(err(100, "netwright-cni needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"));
    }
    let engine = Engine::open(&root)?;
    match command {
        "ADD" => add(&engine, conf, &network, version).map(Some),
        "DEL" => del(&engine, &network).map(|_| None),
        "CHECK" => check(&engine, &network).map(|_| None),
        "GC" => gc(&engine, conf, &network).map(|_| None),
        "" => bail!(err(4, "CNI_COMMAND is not set")),
        other => bail!(err(4, format!("unknown CNI_COMMAND {other}"))),
    }
}

/// The network named by the config, made on first use.
fn ensure_network(engine: &Engine, conf: &Value, network: &str) -> Result<()> {
    let mut store = engine.store()?;
    if store.read(|tx| tx.network(network))?.is_some_and(|n| n.name == network) {
        return Ok(());
    }
    let mut options = Vec::new();
    if let Some(mtu) = conf["mtu"].as_u64() {
        options.push(format!("mtu={mtu}"));
    }
    let spec = CreateSpec {
        name: network.to_string(),
        driver: "bridge".into(),
        subnet: conf["subnet"].as_str().map(str::to_string),
        gateway: conf["gateway"].as_str().map(str::to_string),
        // Dual stack: `"ipv6": true`, with `subnet6`/`gateway6` or a ULA /64 picked.
        ipv6: conf["ipv6"].as_bool().unwrap_or(false) || conf["subnet6"].is_string(),
        subnet6: conf["subnet6"].as_str().map(str::to_string),
        gateway6: conf["gateway6"].as_str().map(str::to_string),
        internal: conf["internal"].as_bool().unwrap_or(false),
        options,
        ..CreateSpec::default()
    };
    match engine.network_create(&spec) {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::Conflict && store.read(|tx| tx.network(network))?.is_some() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// CNI_ARGS: `K=V;K=V` (Podman: `IgnoreUnknown=1;K8S_POD_NAME=web;MAC=..;IP=..`).
fn cni_args() -> BTreeMap<String, String> {
    std::env::var("CNI_ARGS")
        .unwrap_or_default()
        .split(';')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn request(conf: &Value, network: &str, ifname: &str) -> Result<EndpointRequest> {
    let args = cni_args();
    let rc = &conf["runtimeConfig"];
    // CNI_ARGS IP=A[,B] or runtimeConfig.ips: at most one address per family.
    let given: Vec<String> = match args.get("IP") {
        Some(v) => v.split(',').map(str::to_string).collect(),
        None => rc["ips"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect(),
    };
    let (mut ip, mut ip6) = (None, None);
    for a in &given {
        let a = a.split('/').next().unwrap_or(a);
        match a.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v)) if ip.is_none() => ip = Some(v),
            Ok(std::net::IpAddr::V6(v)) if ip6.is_none() => ip6 = Some(v),
            Ok(_) => return Err(err(7, format!("static IPs {given:?}: at most one address per family"))),
            Err(_) => return Err(err(7, format!("static IP {a:?} is not an IP address"))),
        }
    }
    let mac = args.get("MAC").cloned().or_else(|| rc["mac"].as_str().map(str::to_string));
    let aliases = rc["aliases"][network]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(EndpointRequest { ip, ip6, mac, ifname: Some(ifname.to_string()), aliases: Some(aliases) })
}

fn publish(conf: &Value) -> Vec<String> {
    conf["runtimeConfig"]["portMappings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let (hp, cp) = (p["hostPort"].as_u64()?, p["containerPort"].as_u64()?);
            let proto = p["protocol"].as_str().unwrap_or("tcp");
            let host = p["hostIP"].as_str().filter(|ip| !ip.is_empty());
            Some(match host {
                Some(ip) if ip.contains(':') => format!("[{ip}]:{hp}:{cp}/{proto}"),
                Some(ip) => format!("{ip}:{hp}:{cp}/{proto}"),
                None => format!("{hp}:{cp}/{proto}"),
            })
        })
        .collect()
}

fn container(engine: &Engine, id: &str) -> Result<Option<Container>> {
    match engine.find(id) {
        Ok(c) if c.id == id => Ok(Some(c)),
        Ok(_) => Ok(None),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn our_id(cni_id: &str) -> String {
    super::container_id(cni_id)
}

fn add(engine: &Engine, conf: &Value, network: &str, version: &str) -> Result<Value> {
    let (cid, netns, ifname) = (env("CNI_CONTAINERID")?, env("CNI_NETNS")?, env("CNI_IFNAME")?);
    ensure_network(engine, conf, network)?;
    let id = our_id(&cid);
    let req = request(conf, network, &ifname)?;
    match container(engine, &id)? {
        Some(c) if c.state == State::Running => engine.connect(network, &id, req)?,
        _ => {
            let args = cni_args();
            let name = args.get("K8S_POD_NAME").cloned().unwrap_or_else(|| format!("cni-{}", &id[..12]));
            let mut endpoints = BTreeMap::new();
            endpoints.insert(network.to_string(), req);
            engine.attach(Spec {
                id: Some(id.clone()),
                name: Some(name),
                networks: vec![network.to_string()],
                netns: Some(PathBuf::from(&netns)),
                publish: publish(conf),
                endpoints,
                // Podman and CRI-O hold published host ports open themselves (a reload of
                // the network finds them held): a listener there is the runtime's.
                runtime_reserves_ports: true,
                ..Spec::default()
            })?;
        }
    }
    let ours = result(engine, &id, network, &netns, version)?;
    Ok(chain(&conf["prevResult"], ours))
}

/// Chained after other plugins: their result with ours added (interface indices shifted).
fn chain(prev: &Value, mut ours: Value) -> Value {
    let Some(prev_ifaces) = prev["interfaces"].as_array() else { return ours };
    let offset = prev_ifaces.len() as u64;
    let mut merged = prev.clone();
    merged["cniVersion"] = ours["cniVersion"].clone();
    for key in ["interfaces", "ips", "routes"] {
        let mut list = prev[key].as_array().cloned().unwrap_or_default();
        for mut item in ours[key].as_array_mut().map(std::mem::take).unwrap_or_default() {
            if key == "ips" {
                item["interface"] = json!(item["interface"].as_u64().unwrap_or(0) + offset);
            }
            list.push(item);
        }
        merged[key] = Value::Array(list);
    }
    if merged["dns"].is_null() {
        merged["dns"] = ours["dns"].take();
    }
    merged
}

/// The CNI result for the container's interface on `network`.
fn result(engine: &Engine, id: &str, network: &str, netns: &str, version: &str) -> Result<Value> {
    let mut store = engine.store()?;
    let (e, n) = store
        .read(|tx| {
            let n = tx.network(network)?.context("network vanished")?;
            let e = tx.endpoints_of(id)?.into_iter().find(|e| e.network_id == n.id && e.ip.is_some());
            Ok(e.map(|e| (e, n)))
        })?
        .context("the container has no interface on this network")?;
    let address = format!("{}/{}", e.ip.expect("active"), n.subnet.prefix_len());
    let mut ip = json!({"address": address, "gateway": n.gateway.to_string(), "interface": 0});
    if version.starts_with("0.") {
        ip["version"] = json!("4");
    }
    let mut ips = vec![ip];
    let mut routes = if n.internal { vec![] } else { vec![json!({"dst": "0.0.0.0/0", "gw": n.gateway.to_string()})] };
    if let (Some(ip6), Some(s6), Some(g6)) = (e.ip6, n.subnet6, n.gateway6) {
        let mut ip =
            json!({"address": format!("{ip6}/{}", s6.prefix_len()), "gateway": g6.to_string(), "interface": 0});
        if version.starts_with("0.") {
            ip["version"] = json!("6");
        }
        ips.push(ip);
        if !n.internal {
            routes.push(json!({"dst": "::/0", "gw": g6.to_string()}));
        }
    }
    let dns =
        if n.options.contains_key("netwright.dns_at_gateway") { n.gateway.to_string() } else { "127.0.0.11".into() };
    Ok(json!({
        "cniVersion": version,
        "interfaces": [{"name": e.ifname, "mac": e.mac, "sandbox": netns}],
        "ips": ips,
        "routes": routes,
        "dns": {"nameservers": [dns]},
    }))
}

fn del(engine: &Engine, network: &str) -> Result<()> {
    let cid = env("CNI_CONTAINERID")?;
    let id = our_id(&cid);
    let Some(c) = container(engine, &id)? else { return Ok(()) }; // already gone: fine
    let nets = engine.networks_of(&c.id)?;
    if c.state != State::Exited && nets.iter().any(|n| n != network) {
        if nets.iter().any(|n| n == network) {
            engine.disconnect(network, &c.id)?;
        }
        return Ok(());
    }
    if c.state != State::Exited {
        engine.teardown(&c, 0, None)?;
    }
    engine.forget(&c)?;
    Ok(())
}

fn check(engine: &Engine, network: &str) -> Result<()> {
    let id = our_id(&env("CNI_CONTAINERID")?);
    let c = container(engine, &id)?.ok_or_else(|| err(100, format!("container {id} is not attached")))?;
    if c.state != State::Running {
        bail!(err(100, format!("container {id} is not attached")));
    }
    let drift = engine.drift()?;
    if let Some(d) = drift.iter().find(|d| d.contains(&c.name) || d.contains(network)) {
        bail!(err(100, format!("container {id} on {network}: {d}")));
    }
    Ok(())
}

/// GC: every attachment of this network not in `cni.dev/valid-attachments` is released.
fn gc(engine: &Engine, conf: &Value, network: &str) -> Result<()> {
    let valid: Vec<String> = conf["cni.dev/valid-attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["containerID"].as_str().map(our_id))
        .collect();
    let mut store = engine.store()?;
    let attached: Vec<Container> = store.read(|tx| {
        let Some(n) = tx.network(network)? else { return Ok(vec![]) };
        let mut v = Vec::new();
        for e in tx.active_endpoints_on(&n.id)? {
            if let Some(c) = tx.container(&e.container_id)?.filter(|c| c.netns_source.is_some()) {
                v.push(c);
            }
        }
        Ok(v)
    })?;
    drop(store);
    for c in attached.into_iter().filter(|c| !valid.contains(&c.id)) {
        if c.state != State::Exited {
            engine.teardown(&c, 0, Some("garbage-collected: not in cni.dev/valid-attachments"))?;
        }
        engine.forget(&c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_chained_result_keeps_what_came_before() {
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo0"}], "ips": [], "routes": []});
        let ours = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
                          "ips": [{"address": "10.0.0.2/24", "interface": 0}], "routes": [], "dns": {"nameservers": ["127.0.0.11"]}});
        let r = super::chain(&prev, ours);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["dns"]["nameservers"][0], "127.0.0.11");
    }
}
