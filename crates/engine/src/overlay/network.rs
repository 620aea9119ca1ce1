//! Overlay networks and their addresses in etcd: created in one transaction that claims the
//! name and the VNI and checks subnet overlap; addresses claimed by compare-and-swap.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;

use super::etcd::{Compare, KeyValue, Op};
use super::{Claim, Cluster, DEFAULT_PORT, NetworkRecord, OVERHEAD, PREFIX};
use crate::ctx::{Ctx, now_nanos, random_hex};
use crate::error::{conflict, invalid, unsupported};
use crate::ipam;
use crate::store::{Network, Tx};

/// The driver options an overlay network takes, checked before anything is written.
pub fn check_option(key: &str, value: &str) -> Result<()> {
    match key {
        "vni" => {
            value.parse::<u32>().ok().filter(|v| (1..(1 << 24)).contains(v)).ok_or_else(|| {
                invalid(format!("option vni={value}: a VXLAN network identifier is a number from 1 to 16777215"))
            })?;
        }
        "port" => {
            value
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid(format!("option port={value}: give a UDP port from 1 to 65535")))?;
        }
        "encrypted" | "com.docker.network.driver.overlay.encrypted" => bail!(unsupported(
            "--opt encrypted: this kernel has no IPsec AEAD (xfrm), WireGuard or MACsec to encrypt VXLAN with; see README \"Overlay encryption\" for the design"
        )),
        "masquerade"
        | "com.docker.network.bridge.enable_ip_masquerade"
        | "icc"
        | "com.docker.network.bridge.enable_icc" => {
            if value != "true" && value != "false" {
                bail!(invalid(format!("option {key}={value}: use true or false")));
            }
        }
        _ => bail!(invalid(format!(
            "unknown network option {key:?}: overlay networks take mtu, vni, port, masquerade, icc"
        ))),
    }
    Ok(())
}

/// What `network create -d overlay` asks for, checked by the caller.
pub struct Request<'a> {
    pub name: &'a str,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub mtu: Option<u32>,
    pub options: BTreeMap<String, String>,
    /// Subnets this host cannot use (its own networks and routes).
    pub local_used: Vec<Ipv4Net>,
}

/// Creates the network in etcd: name, VNI and subnet are claimed in one transaction guarded
/// by `netgen`, so two hosts creating at once cannot both win or overlap.
pub fn create(cl: &Cluster, req: &Request) -> Result<NetworkRecord> {
    for _attempt in 0..10 {
        let (kvs, _) = cl.kv.list(PREFIX).map_err(|e| cl.unreachable("network create", e))?;
        let nets: Vec<NetworkRecord> = super::records(&kvs, &format!("{PREFIX}networks/"));
        if let Some(n) = nets.iter().find(|n| n.name == req.name) {
            bail!(conflict(format!(
                "network with name {} already exists in the cluster (overlay, {}): pick another name",
                n.name, n.subnet
            )));
        }
        let subnet = match req.subnet {
            Some(s) => {
                if let Some(n) = nets.iter().find(|n| ipam::overlaps(&n.subnet, &s)) {
                    bail!(conflict(format!(
                        "subnet {s} overlaps overlay network {} ({}): pick a subnet that does not overlap",
                        n.name, n.subnet
                    )));
                }
                s
            }
            None => {
                let mut used = req.local_used.clone();
                used.extend(nets.iter().map(|n| n.subnet));
                ipam::next_free_pool(&used)
                    .context("no free address pool left for an overlay network: give --subnet")?
            }
        };
        let gateway = ipam::validate(subnet, req.gateway, req.ip_range)?;
        let vni = match req.options.get("vni") {
            Some(v) => {
                let v: u32 = v.parse().expect("checked");
                if let Some(n) = nets.iter().find(|n| n.vni == v) {
                    bail!(conflict(format!("VNI {v} is used by overlay network {}: pick another --opt vni", n.name)));
                }
                v
            }
            // Docker's overlay VNIs start at 4096 (below: room for hand-made ones).
            None => (4096..).find(|v| !nets.iter().any(|n| n.vni == *v)).expect("a free VNI"),
        };
        let hosts: Vec<super::HostRecord> = super::records(&kvs, &format!("{PREFIX}hosts/"));
        // The smallest underlay in the cluster sets the MTU; a later, smaller host is a
        // doctor finding.
        let underlay = hosts.iter().map(|h| h.mtu).chain([cl.cfg.mtu]).min().unwrap_or(cl.cfg.mtu);
        let rec = NetworkRecord {
            id: random_hex(64),
            name: req.name.to_string(),
            subnet,
            gateway,
            ip_range: req.ip_range,
            vni,
            port: req.options.get("port").map(|p| p.parse().expect("checked")).unwrap_or(DEFAULT_PORT),
            mtu: req.mtu.unwrap_or(underlay.saturating_sub(OVERHEAD)),
            internal: req.internal,
            options: req.options.clone(),
            created: now_nanos(),
        };
        let gen_rev = kvs.iter().find(|kv| kv.key == super::netgen_key()).map(|kv| kv.mod_revision).unwrap_or(0);
        let ok = cl
            .kv
            .txn(
                &[
                    Compare::Absent(super::network_key(&rec.name)),
                    Compare::Absent(super::vni_key(vni)),
                    Compare::ModRevision(super::netgen_key(), gen_rev),
                ],
                &[
                    Op::Put { key: super::network_key(&rec.name), value: serde_json::to_vec(&rec)?, lease: 0 },
                    Op::Put { key: super::vni_key(vni), value: rec.name.clone().into_bytes(), lease: 0 },
                    Op::Put { key: super::netgen_key(), value: rec.id.clone().into_bytes(), lease: 0 },
                ],
            )
            .map_err(|e| cl.unreachable("network create", e))?;
        if ok {
            return Ok(rec);
        }
        // Another host created a network meanwhile: look again.
    }
    bail!("network create: etcd kept changing under us (other hosts creating networks); try again")
}

/// Removes the network from etcd if no host has an address on it.
pub fn remove(cl: &Cluster, name: &str) -> Result<()> {
    let key = super::network_key(name);
    let Some(kv) = cl.kv.get(&key).map_err(|e| cl.unreachable("network rm", e))? else {
        return Ok(());
    };
    let rec: NetworkRecord = serde_json::from_slice(&kv.value).context("reading the network's record")?;
    let (claims, _) = cl.kv.list(&super::claims_prefix(&rec.id)).map_err(|e| cl.unreachable("network rm", e))?;
    let holders: Vec<Claim> = super::records(&claims, PREFIX);
    let elsewhere: Vec<&Claim> = holders.iter().filter(|c| c.host != cl.cfg.host_id).collect();
    if !elsewhere.is_empty() {
        let (hosts, _) = cl.kv.list(&format!("{PREFIX}hosts/")).unwrap_or_default();
        let hosts: Vec<super::HostRecord> = super::records(&hosts, PREFIX);
        let mut names: Vec<String> = elsewhere
            .iter()
            .map(|c| hosts.iter().find(|h| h.id == c.host).map(|h| h.name.clone()).unwrap_or_else(|| c.host.clone()))
            .collect();
        names.sort();
        names.dedup();
        bail!(conflict(format!(
            "network {name} is in use by {} container(s) on host(s) {}: remove them there first",
            elsewhere.len(),
            names.join(", ")
        )));
    }
    let mut ops = vec![Op::Delete(key.clone()), Op::Delete(super::vni_key(rec.vni))];
    ops.extend(claims.iter().map(|c| Op::Delete(c.key.clone())));
    if !cl.kv.txn(&[Compare::ModRevision(key, kv.mod_revision)], &ops).map_err(|e| cl.unreachable("network rm", e))? {
        bail!(conflict(format!("network {name} changed while being removed: try again")));
    }
    Ok(())
}

/// The network's record in the local store (the same id on every host).
pub fn to_local(ctx: &Ctx, rec: &NetworkRecord) -> Network {
    let mut options = rec.options.clone();
    options.insert("vni".into(), rec.vni.to_string());
    options.insert("port".into(), rec.port.to_string());
    Network {
        id: rec.id.clone(),
        name: rec.name.clone(),
        driver: crate::model::Driver::Overlay,
        subnet: rec.subnet,
        gateway: rec.gateway,
        ip_range: rec.ip_range,
        bridge: crate::plan::bridge_name(&ctx.tag, &rec.id),
        mtu: rec.mtu,
        internal: rec.internal,
        options,
        builtin: false,
        created: rec.created,
        cursor: 0,
        subnet6: None,
        gateway6: None,
    }
}

/// An overlay network's VNI and UDP port, from its options.
pub fn vni_port(n: &Network) -> (u32, u16) {
    (
        n.options.get("vni").and_then(|v| v.parse().ok()).unwrap_or(0),
        n.options.get("port").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_PORT),
    )
}

/// Claims an address on an overlay network for `container` (inside the store's write
/// transaction, so the local cursor moves with it): the requested one, or the next free one
/// that no host holds.
/// What peers will know of an endpoint, less what the claim decides (its address, and the
/// MAC derived from it unless one was given).
pub struct EndpointTemplate {
    pub id: String,
    pub container_id: String,
    pub mac: Option<String>,
    pub names: Vec<String>,
}

/// The names an endpoint answers to in DNS: the container's name, its hostname, its aliases.
pub fn endpoint_names(name: &str, hostname: &str, aliases: &[String]) -> Vec<String> {
    let mut names = vec![name.to_string(), hostname.to_string()];
    names.extend(aliases.iter().cloned());
    names.dedup();
    names
}

/// Claims an address on an overlay network for `container` (inside the store's write
/// transaction, so the local cursor moves with it): the requested one, or the next free one
/// that no host holds. With the agent's lease at hand, the endpoint is published in the same
/// etcd transaction (peers learn it with one write); else the agent publishes it.
pub fn claim(
    ctx: &Ctx,
    tx: &Tx,
    net: &Network,
    ep: &EndpointTemplate,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let cl = Cluster::require(ctx)?;
    let what = format!("network {}", net.name);
    let value = serde_json::to_vec(&Claim {
        host: cl.cfg.host_id.clone(),
        container: ep.container_id.clone(),
        at: super::now_secs(),
    })?;
    let lease = std::cell::Cell::new(super::agent::lease(ctx));
    let try_claim = |ip: Ipv4Addr| -> Result<bool> {
        let key = super::claim_key(&net.id, ip);
        let mut ops = vec![Op::Put { key: key.clone(), value: value.clone(), lease: 0 }];
        if let Some(l) = lease.get() {
            let rec = super::EndpointRecord {
                id: ep.id.clone(),
                network_id: net.id.clone(),
                host: cl.cfg.host_id.clone(),
                vtep: cl.cfg.advertise,
                ip,
                mac: ep.mac.clone().unwrap_or_else(|| ipam::format_mac(ipam::mac_for(ip))),
                container_id: ep.container_id.clone(),
                names: ep.names.clone(),
            };
            ops.push(Op::Put { key: super::endpoint_key(&rec), value: serde_json::to_vec(&rec)?, lease: l });
        }
        match cl.kv.txn(&[Compare::Absent(key.clone())], &ops) {
            Ok(ok) => Ok(ok),
            Err(e) if lease.get().is_some() && format!("{e:#}").contains("lease not found") => {
                // The agent's lease expired a moment ago: claim alone; it publishes later.
                lease.set(None);
                cl.kv
                    .txn(&[Compare::Absent(key.clone())], &[Op::Put { key, value: value.clone(), lease: 0 }])
                    .map_err(|e| cl.unreachable(&what, e))
            }
            Err(e) => Err(cl.unreachable(&what, e)),
        }
    };
    if let Some(ip) = requested {
        if !try_claim(ip)? {
            bail!(conflict(format!(
                "address {ip} is already in use on overlay network {} (on some host of the cluster): pick another --ip or leave it out",
                net.name
            )));
        }
        return Ok(ip);
    }
    // First guess from what this host knows (its own endpoints and the agent's mirror of the
    // others'): one round trip when nobody raced us. Then etcd's own list of claims.
    let mut taken: HashSet<Ipv4Addr> =
        tx.remote_endpoints()?.into_iter().filter(|r| r.network_id == net.id).map(|r| r.ip).collect();
    let mut listed = false;
    let mut cursor = net.cursor;
    for attempt in 0..16 {
        if attempt == 1 {
            let (held, _) = cl.kv.list(&super::claims_prefix(&net.id)).map_err(|e| cl.unreachable(&what, e))?;
            taken.extend(held.iter().filter_map(claimed_ip));
            listed = true;
        }
        let (ip, next) = ipam::allocate(
            net.subnet,
            &crate::network::reserved(net),
            net.ip_range,
            cursor,
            |ip| Ok(taken.contains(&ip) || tx.ip_taken(&net.id, ip)?),
            || {
                let mut v = tx.ips_in_use(&net.id)?;
                v.extend(taken.iter().copied());
                Ok(v)
            },
        )
        .with_context(|| format!("network {}", net.name))?;
        if try_claim(ip)? {
            tx.set_cursor(&net.id, next)?;
            return Ok(ip);
        }
        // Another host holds it (or took it between our read and our claim).
        taken.insert(ip);
        if listed {
            cursor = next;
        }
    }
    bail!("network {}: other hosts kept taking the addresses tried; try again", net.name)
}

fn claimed_ip(kv: &KeyValue) -> Option<Ipv4Addr> {
    kv.key.rsplit('/').next()?.parse().ok()
}

/// Gives back addresses a container of this host held and withdraws its endpoints, one
/// transaction each (best effort: the agent collects what it could not give back).
pub fn release(ctx: &Ctx, held: &[super::Held], container: &str) {
    let Ok(Some(cl)) = Cluster::open(ctx) else { return };
    for h in held {
        let key = super::claim_key(&h.network_id, h.ip);
        let endpoint = format!("{}{}/{}", super::endpoints_prefix(&h.network_id), cl.cfg.host_id, h.endpoint_id);
        let Ok(Some(kv)) = cl.kv.get(&key) else {
            let _ = cl.kv.delete(&endpoint);
            continue;
        };
        let ours = serde_json::from_slice::<Claim>(&kv.value)
            .is_ok_and(|c| c.host == cl.cfg.host_id && c.container == container);
        let mut ops = vec![Op::Delete(endpoint)];
        if ours {
            ops.push(Op::Delete(key.clone()));
        }
        let _ = cl.kv.txn(&[Compare::ModRevision(key, kv.mod_revision)], &ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::fake::FakeKv;
    use crate::overlay::{Config, HostRecord, host_key};

    fn host(id: &str, fake: FakeKv) -> Cluster {
        let cfg = Config {
            etcd: "http://192.0.2.1:2379".into(),
            advertise: "192.168.1.10".parse().unwrap(),
            dev: "eth0".into(),
            mtu: 1500,
            host_id: id.into(),
            host_name: id.into(),
        };
        Cluster { cfg, kv: Box::new(fake) }
    }

    fn req<'a>(name: &'a str, subnet: Option<&str>, opts: &[(&str, &str)]) -> Request<'a> {
        Request {
            name,
            subnet: subnet.map(|s| s.parse().unwrap()),
            gateway: None,
            ip_range: None,
            internal: false,
            mtu: None,
            options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            local_used: vec![],
        }
    }

    fn err(r: Result<NetworkRecord>) -> String {
        format!("{:#}", r.expect_err("should fail"))
    }

    #[test]
    fn create_claims_name_vni_and_subnet_cluster_wide() {
        let cl = host("h1", FakeKv::default());
        let a = create(&cl, &req("a", Some("10.9.0.0/24"), &[])).unwrap();
        assert_eq!((a.vni, a.port, a.mtu), (4096, DEFAULT_PORT, 1450), "first VNI, 4789, 1500 − 50");
        let b = create(&cl, &req("b", None, &[("vni", "5000")])).unwrap();
        assert_eq!(b.vni, 5000);
        assert!(!ipam::overlaps(&a.subnet, &b.subnet), "a default pool that does not overlap a");
        assert!(err(create(&cl, &req("a", Some("10.10.0.0/24"), &[]))).contains("already exists in the cluster"));
        assert!(
            err(create(&cl, &req("c", None, &[("vni", "5000")]))).contains("VNI 5000 is used by overlay network b")
        );
        assert!(err(create(&cl, &req("c", Some("10.9.0.128/25"), &[]))).contains("overlaps overlay network a"));
        // The next automatic VNI skips the taken ones.
        assert_eq!(create(&cl, &req("c", None, &[])).unwrap().vni, 4097);
    }

    #[test]
    fn the_smallest_underlay_in_the_cluster_sets_the_mtu() {
        let cl = host("h1", FakeKv::default());
        let small = HostRecord { id: "h2".into(), name: "h2".into(), vtep: "192.168.2.10".parse().unwrap(), mtu: 1400 };
        let lease = cl.kv.grant(10).unwrap();
        cl.kv.put(&host_key("h2"), &serde_json::to_vec(&small).unwrap(), lease).unwrap();
        assert_eq!(create(&cl, &req("a", None, &[])).unwrap().mtu, 1350);
    }

    #[test]
    fn remove_is_refused_while_another_host_holds_addresses() {
        let cl = host("h1", FakeKv::default());
        let rec = create(&cl, &req("a", Some("10.9.0.0/24"), &[])).unwrap();
        let claim = serde_json::to_vec(&Claim { host: "h2".into(), container: "c".into(), at: 0 }).unwrap();
        cl.kv.put(&super::super::claim_key(&rec.id, "10.9.0.2".parse().unwrap()), &claim, 0).unwrap();
        let e = format!("{:#}", remove(&cl, "a").unwrap_err());
        assert!(e.contains("in use by 1 container(s) on host(s) h2"), "{e}");
        cl.kv.delete(&super::super::claim_key(&rec.id, "10.9.0.2".parse().unwrap())).unwrap();
        remove(&cl, "a").unwrap();
        assert!(
            cl.kv.list(PREFIX).unwrap().0.iter().all(|kv| kv.key == super::super::netgen_key()),
            "only netgen left"
        );
        // The VNI is free again.
        assert_eq!(create(&cl, &req("b", None, &[])).unwrap().vni, 4096);
    }

    #[test]
    fn options_are_checked_before_anything_is_written() {
        assert!(check_option("vni", "0").is_err());
        assert!(check_option("vni", "16777216").is_err());
        assert!(check_option("vni", "16777215").is_ok());
        assert!(check_option("port", "0").is_err());
        let e = format!("{:#}", check_option("encrypted", "true").unwrap_err());
        assert!(e.contains("no IPsec AEAD"), "{e}");
        assert!(check_option("colour", "blue").is_err());
    }
}
