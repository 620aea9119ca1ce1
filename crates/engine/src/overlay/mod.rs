//! Overlay networks across hosts: VXLAN on each host, etcd (v3) as the control plane.
//!
//! ```text
//!  host h1                                   host h2
//!  ctr ─ veth ─ nwb…(10.9.0.1) ─ nwx… ══ UDP 4789 over the underlay ══ nwx… ─ nwb…(10.9.0.1) ─ veth ─ ctr
//! ```
//! Every host has the network's bridge carrying the same gateway (egress and `-p` stay local,
//! as on bridge networks) and a VXLAN port `nolearning proxy` with no flood entry: every remote
//! endpoint is a permanent FDB entry (MAC → VTEP) and neighbour entry (IP → MAC) derived from
//! etcd — [`sync`] diffs them, so stale entries cannot outlive a sync.
//!
//! etcd keys (under [`PREFIX`]):
//! - `hosts/ID` — a host's VTEP and MTU, on its lease (kept alive by [`agent`]);
//! - `networks/NAME`, `vnis/VNI`, `netgen` — created in one transaction ([`network`]);
//! - `ipam/NETID/IP` — address claims, compare-and-swap, *not* leased: a host cut off from
//!   etcd must never cause a duplicate;
//! - `endpoints/NETID/HOST/EP` — what peers need (MAC, IP, VTEP, names), on the owner's lease,
//!   so a dead host's endpoints and names vanish from its peers.
//!
//! Commands claim addresses and create networks themselves (failing fast when etcd is away);
//! the per-host [`agent`] publishes this host's endpoints and mirrors everyone else's into the
//! store (DNS answers from there) and the kernel.

pub mod agent;
pub mod etcd;
#[cfg(test)]
mod fake;
pub mod network;
pub mod sync;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ctx::{Ctx, random_hex};
use crate::error::invalid;
use crate::kernel::netlink::Netlink;
use etcd::{Gateway, Kv};

/// Every key netwright writes in etcd starts here.
pub const PREFIX: &str = "/netwright/";
/// Seconds a host's lease lives without a keepalive: its endpoints vanish from peers then.
pub const LEASE_TTL: i64 = 10;
/// VXLAN's IANA port; `--opt port=N` picks another.
pub const DEFAULT_PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD: u32 = 50;

/// This host's membership, recorded under the state root by `cluster join`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub etcd: String,
    /// The VTEP: this host's underlay address.
    pub advertise: Ipv4Addr,
    /// The underlay device carrying it, and its MTU.
    pub dev: String,
    pub mtu: u32,
    pub host_id: String,
    pub host_name: String,
}

impl Config {
    fn path(ctx: &Ctx) -> PathBuf {
        ctx.root.join("cluster.json")
    }

    /// Whether this root is in a cluster (one stat: commands on plain roots pay nothing).
    pub fn joined(ctx: &Ctx) -> bool {
        Self::path(ctx).exists()
    }

    pub fn load(ctx: &Ctx) -> Result<Option<Config>> {
        match std::fs::read(Self::path(ctx)) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).context("reading cluster.json")?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading cluster.json"),
        }
    }

    fn save(&self, ctx: &Ctx) -> Result<()> {
        let tmp = ctx.root.join("cluster.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, Self::path(ctx))?;
        Ok(())
    }
}

/// A joined host: its configuration and its etcd.
pub struct Cluster {
    pub cfg: Config,
    /// etcd (the JSON gateway; an in-memory fake in unit tests).
    pub kv: Box<dyn Kv>,
}

impl Cluster {
    /// This root's cluster, or a clear error saying how to join one.
    pub fn require(ctx: &Ctx) -> Result<Cluster> {
        match Config::load(ctx)? {
            Some(cfg) => Ok(Cluster { kv: Box::new(Gateway::new(&cfg.etcd)?), cfg }),
            None => bail!(invalid(
                "overlay networks need a cluster: run `netwright cluster join --etcd http://HOST:2379` on each host (or pass --etcd)"
            )),
        }
    }

    pub fn open(ctx: &Ctx) -> Result<Option<Cluster>> {
        Ok(match Config::load(ctx)? {
            Some(cfg) => Some(Cluster { kv: Box::new(Gateway::new(&cfg.etcd)?), cfg }),
            None => None,
        })
    }

    /// The error for a host that cannot reach etcd right now.
    pub fn unreachable(&self, what: &str, e: anyhow::Error) -> anyhow::Error {
        anyhow::Error::from(crate::error::Error::new(
            crate::error::ErrorKind::System,
            format!(
                "{what}: etcd at {} is unreachable ({e:#}); running containers keep working, new overlay endpoints need etcd back",
                self.cfg.etcd
            ),
        ))
    }
}

/// A host as etcd has it (on the host's lease).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    pub id: String,
    pub name: String,
    pub vtep: Ipv4Addr,
    pub mtu: u32,
}

/// An overlay network as etcd has it: the same on every host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
    pub vni: u32,
    pub port: u16,
    pub mtu: u32,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub created: i64,
}

/// Who holds an address (not leased).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    pub host: String,
    pub container: String,
    /// Unix seconds: a claim younger than a minute may belong to a container being created.
    pub at: i64,
}

/// A container's endpoint as its peers need it (on its host's lease); the store mirrors
/// the other hosts' ones.
pub use crate::model::RemoteEndpoint as EndpointRecord;

pub fn host_key(id: &str) -> String {
    format!("{PREFIX}hosts/{id}")
}
pub fn network_key(name: &str) -> String {
    format!("{PREFIX}networks/{name}")
}
pub fn vni_key(vni: u32) -> String {
    format!("{PREFIX}vnis/{vni}")
}
pub fn netgen_key() -> String {
    format!("{PREFIX}netgen")
}
pub fn claims_prefix(network_id: &str) -> String {
    format!("{PREFIX}ipam/{network_id}/")
}
pub fn claim_key(network_id: &str, ip: Ipv4Addr) -> String {
    format!("{}{ip}", claims_prefix(network_id))
}
pub fn endpoints_prefix(network_id: &str) -> String {
    format!("{PREFIX}endpoints/{network_id}/")
}
pub fn endpoint_key(e: &EndpointRecord) -> String {
    format!("{}{}/{}", endpoints_prefix(&e.network_id), e.host, e.id)
}

pub fn now_secs() -> i64 {
    crate::ctx::now_nanos() / 1_000_000_000
}

/// Decodes every value under a prefix of `kvs` as `T`, skipping what does not parse.
pub fn records<T: serde::de::DeserializeOwned>(kvs: &[etcd::KeyValue], prefix: &str) -> Vec<T> {
    kvs.iter().filter(|kv| kv.key.starts_with(prefix)).filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect()
}

/// Tells the agent that this host's endpoints changed: it publishes what is not published
/// yet before this returns. Best effort — an agent that cannot reach etcd publishes once it can.
pub fn announce(ctx: &Ctx) {
    if !Config::joined(ctx) {
        return;
    }
    if let Err(e) = agent::poke(ctx, true) {
        eprintln!("netwright: warning: {e:#}");
    }
}

/// An address a container of this host holds on an overlay network, and its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub endpoint_id: String,
}

impl Held {
    pub fn of(e: &crate::store::Endpoint) -> Option<Held> {
        Some(Held { network_id: e.network_id.clone(), ip: e.ip?, endpoint_id: e.id.clone() })
    }
}

/// A container's addresses on overlay networks, to give back.
pub fn held_by(store: &mut crate::store::Store, container_id: &str) -> Result<Vec<Held>> {
    store.read(|tx| {
        let nets = tx.networks()?;
        Ok(tx
            .endpoints_of(container_id)?
            .iter()
            .filter(|e| nets.iter().any(|n| n.id == e.network_id && n.driver == crate::model::Driver::Overlay))
            .filter_map(Held::of)
            .collect())
    })
}

/// After a container left overlay networks (released, disconnected): its addresses back to
/// the cluster and its endpoints withdrawn from peers, in one transaction per address.
pub fn withdraw(ctx: &Ctx, held: &[Held], container_id: &str) {
    if held.is_empty() {
        return;
    }
    network::release(ctx, held, container_id);
    agent::nudge(ctx);
}

/// `cluster join`: records the membership under the state root and starts the agent, which
/// registers the host and keeps it registered. Idempotent; a new URL or address replaces the
/// old ones (the host keeps its id).
pub fn join(ctx: &Ctx, url: &str, advertise: Option<Ipv4Addr>, name: Option<&str>) -> Result<Config> {
    let kv = Gateway::new(url).map_err(|e| invalid(format!("{e:#}")))?;
    kv.list(&format!("{PREFIX}hosts/"))
        .map_err(|e| invalid(format!("cannot join: etcd at {url} does not answer ({e:#}); is it running?")))?;
    let mut nl = Netlink::open()?;
    let (addr, dev, mtu) = underlay(&mut nl, advertise)?;
    let prev = Config::load(ctx)?;
    let cfg = Config {
        etcd: url.trim_end_matches('/').to_string(),
        advertise: addr,
        dev,
        mtu,
        host_id: prev.as_ref().map(|p| p.host_id.clone()).unwrap_or_else(|| random_hex(16)),
        host_name: match name {
            Some(n) => n.to_string(),
            None => prev.as_ref().map(|p| p.host_name.clone()).unwrap_or_else(|| {
                nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
            }),
        },
    };
    if prev.as_ref() != Some(&cfg) {
        cfg.save(ctx)?;
        // A running agent holds the old configuration: the next one reads the new.
        agent::stop(ctx);
    }
    agent::poke(ctx, true)?;
    Ok(cfg)
}

/// The underlay: (address, device, MTU) — the given address, or the one on the device of the
/// default route.
fn underlay(nl: &mut Netlink, advertise: Option<Ipv4Addr>) -> Result<(Ipv4Addr, String, u32)> {
    let addrs = nl.addrs()?;
    let links = nl.links()?;
    let (addr, index) = match advertise {
        Some(ip) => {
            let a = addrs.iter().find(|a| a.addr == std::net::IpAddr::V4(ip)).ok_or_else(|| {
                invalid(format!("--advertise {ip} is not an address of this host: give one of its own addresses"))
            })?;
            (ip, a.index)
        }
        None => {
            let routes = nl.routes_v4()?;
            let oif =
                routes.iter().find(|r| r.dst.is_none_or(|d| d.prefix_len() == 0)).and_then(|r| r.oif).ok_or_else(
                    || invalid("this host has no default route to take its underlay address from: give --advertise IP"),
                )?;
            let a = addrs
                .iter()
                .find_map(|a| match a.addr {
                    std::net::IpAddr::V4(v4) if a.index == oif => Some(v4),
                    _ => None,
                })
                .ok_or_else(|| invalid("the default route's device has no IPv4 address: give --advertise IP"))?;
            (a, oif)
        }
    };
    let link = links.iter().find(|l| l.index == index).context("the underlay device vanished")?;
    Ok((addr, link.name.clone(), link.mtu))
}

/// `cluster ls`: every host that joined and has not left, and whether it is up (its lease
/// lives) — a host that died shows as down, not as gone.
pub fn hosts(ctx: &Ctx) -> Result<Vec<(HostRecord, bool)>> {
    let cl = Cluster::require(ctx)?;
    let (kvs, _) = cl.kv.list(PREFIX).map_err(|e| cl.unreachable("cluster ls", e))?;
    let up: Vec<HostRecord> = records(&kvs, &format!("{PREFIX}hosts/"));
    let mut v: Vec<(HostRecord, bool)> = records::<HostRecord>(&kvs, &format!("{PREFIX}members/"))
        .into_iter()
        .map(|m| {
            let live = up.iter().find(|h| h.id == m.id).cloned();
            (live.clone().unwrap_or(m), live.is_some())
        })
        .collect();
    // Registered before membership records existed (or by a newer agent): up all the same.
    let extra: Vec<(HostRecord, bool)> =
        up.into_iter().filter(|h| !v.iter().any(|(m, _)| m.id == h.id)).map(|h| (h, true)).collect();
    v.extend(extra);
    v.sort_by(|a, b| a.0.name.cmp(&b.0.name).then(a.0.id.cmp(&b.0.id)));
    Ok(v)
}

/// A host's membership record: not leased, so `cluster ls` can say it is down.
pub fn member_key(id: &str) -> String {
    format!("{PREFIX}members/{id}")
}

/// `cluster leave`: refused while this host's containers use overlay networks; otherwise the
/// agent stops, this host's keys and claims go from etcd, its overlay networks from the store
/// and the kernel.
pub fn leave(ctx: &Ctx, store: &mut crate::store::Store) -> Result<()> {
    let cl = Cluster::require(ctx)?;
    let busy = store.read(|tx| {
        let nets = tx.networks()?;
        let mut busy = Vec::new();
        for n in nets.iter().filter(|n| n.driver == crate::model::Driver::Overlay) {
            for e in tx.active_endpoints_on(&n.id)? {
                if let Some(c) = tx.container(&e.container_id)? {
                    busy.push(c.name);
                }
            }
        }
        Ok(busy)
    })?;
    if !busy.is_empty() {
        bail!(crate::error::conflict(format!(
            "containers {} use overlay networks: stop or remove them before leaving the cluster",
            busy.join(", ")
        )));
    }
    agent::stop(ctx);
    // Best effort: etcd may be away, and the lease ends the host's keys anyway.
    if let Ok((kvs, _)) = cl.kv.list(PREFIX) {
        for kv in &kvs {
            let mine = match serde_json::from_slice::<serde_json::Value>(&kv.value) {
                Ok(v) => v.get("host").and_then(|h| h.as_str()) == Some(&cl.cfg.host_id),
                Err(_) => false,
            };
            if mine || kv.key == host_key(&cl.cfg.host_id) || kv.key == member_key(&cl.cfg.host_id) {
                let _ = cl.kv.delete(&kv.key);
            }
        }
    }
    sync::forget_networks(ctx, store)?;
    let _ = std::fs::remove_file(Config::path(ctx));
    Ok(())
}
