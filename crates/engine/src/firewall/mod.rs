//! netwright's firewall: egress NAT, published ports, isolation — in an nftables table of
//! its own (`ip netwright-<tag>`), never touching anyone else's. (icc=false needs no
//! rule: its bridge ports are isolated by the kernel's bridge, see drivers::bridge.)
//!
//! The rules are a fixed skeleton; everything that varies (bridges, published ports)
//! lives in sets and maps. Publishing one more port is one map element, whatever is
//! already there; removing a container removes exactly its elements. A full sync
//! rebuilds the skeleton and the sets from the store in one atomic batch (after a
//! reboot or an admin's `nft flush ruleset`); the admin chain `user` is created when
//! missing and never flushed.

pub mod check;

use std::fs::File;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, anyhow};

use crate::ctx::Ctx;
use crate::kernel::nftables::{self as nft, Batch, Elem, Expr, Nftables, SetSpec, datatype, hook, meta};
use crate::ports::Mapping;
use crate::store::{Network, Store};

pub const USER_CHAIN: &str = "user";

pub fn table_name(ctx: &Ctx) -> String {
    format!("netwright-{}", ctx.tag)
}

/// What the sets should hold, computed from the store (pure).
#[derive(Debug, Default, PartialEq)]
pub struct Desired {
    pub bridges: Vec<Elem>,
    /// (bridge . same bridge): traffic inside one network, which the forward hook also
    /// sees when br_netfilter is loaded.
    pub same: Vec<Elem>,
    pub masq: Vec<Elem>,
    pub internal: Vec<Elem>,
    pub pub_ip: Vec<Elem>,
    pub pub_any: Vec<Elem>,
    /// Overlay: the UDP ports VXLAN arrives on, and the cluster VTEPs allowed to send it.
    pub vxlan_ports: Vec<Elem>,
    pub vteps: Vec<Elem>,
}

/// A published port: the mapping, its container's address and the container's name.
pub type Published = (Mapping, Ipv4Addr, String);

impl Desired {
    /// Every set and map by name with what it should hold: the per-network and overlay sets
    /// first, the published-port maps last.
    pub fn by_set(&self) -> [(&'static str, &Vec<Elem>); 8] {
        [
            ("bridges", &self.bridges),
            ("same", &self.same),
            ("masq", &self.masq),
            ("internal", &self.internal),
            ("vxlan_ports", &self.vxlan_ports),
            ("vteps", &self.vteps),
            ("pub_ip", &self.pub_ip),
            ("pub_any", &self.pub_any),
        ]
    }
}

/// Networks, published ports and other hosts' VTEPs.
pub type Inputs = (Vec<Network>, Vec<Published>, Vec<Ipv4Addr>);

/// What the firewall reads from the store: networks, published ports, and the VTEPs of the
/// other hosts' overlay endpoints.
pub fn inputs(store: &mut Store) -> Result<Inputs> {
    store.read(|tx| {
        let mut vteps: Vec<Ipv4Addr> = tx.remote_endpoints()?.into_iter().map(|r| r.vtep).collect();
        vteps.sort();
        vteps.dedup();
        Ok((tx.networks()?, tx.active_ports()?, vteps))
    })
}

pub fn option_enabled(n: &Network, keys: &[&str], default: bool) -> bool {
    keys.iter().find_map(|k| n.options.get(*k)).map(|v| v == "true").unwrap_or(default)
}

pub fn masquerades(n: &Network) -> bool {
    !n.internal && option_enabled(n, &["masquerade", "com.docker.network.bridge.enable_ip_masquerade"], true)
}

pub fn icc(n: &Network) -> bool {
    option_enabled(n, &["icc", "com.docker.network.bridge.enable_icc"], true)
}

pub fn desired(networks: &[Network], ports: &[Published], vteps: &[Ipv4Addr]) -> Desired {
    let mut d = Desired::default();
    for n in networks.iter().filter(|n| n.driver == crate::model::Driver::Overlay) {
        let (_, port) = crate::overlay::network::vni_port(n);
        let e = Elem::new(port.to_be_bytes().to_vec(), None).with_comment(format!("overlay VXLAN port ({})", n.name));
        if !d.vxlan_ports.contains(&e) {
            d.vxlan_ports.push(e);
        }
    }
    d.vteps = vteps.iter().map(|v| Elem::new(v.octets().to_vec(), None).with_comment("cluster VTEP")).collect();
    for n in networks.iter().filter(|n| n.driver.is_bridged()) {
        let key = Elem::new(nft::ifname_key(&n.bridge), None).with_comment(format!("network {}", n.name));
        d.bridges.push(key.clone());
        d.same.push(
            Elem::new([nft::ifname_key(&n.bridge), nft::ifname_key(&n.bridge)].concat(), None)
                .with_comment(format!("network {}", n.name)),
        );
        if masquerades(n) {
            d.masq.push(key.clone());
        }
        if n.internal {
            d.internal.push(key);
        }
    }
    for (m, ip, owner) in ports {
        let (set, e) = port_elem(m, *ip);
        let e = e.with_comment(format!("container {owner}"));
        if set == "pub_ip" { d.pub_ip.push(e) } else { d.pub_any.push(e) }
    }
    d
}

/// The map element for one mapping: key (host address?, proto, port) → (container ip, port).
pub fn port_elem(m: &Mapping, container_ip: Ipv4Addr) -> (&'static str, Elem) {
    let pad4 = |b: &[u8]| {
        let mut v = b.to_vec();
        v.resize(4, 0);
        v
    };
    let mut key = Vec::new();
    if let Some(ip) = m.host_ip {
        key.extend_from_slice(&ip.octets());
    }
    key.extend(pad4(&[m.proto.number()]));
    key.extend(pad4(&m.host_port.to_be_bytes()));
    let mut data = container_ip.octets().to_vec();
    data.extend(pad4(&m.container_port.to_be_bytes()));
    (if m.host_ip.is_some() { "pub_ip" } else { "pub_any" }, Elem::new(key, Some(data)))
}

fn ifname_set(name: &str) -> SetSpec {
    SetSpec { name: name.into(), key_type: datatype::IFNAME, key_len: 16, data: None, interval: false }
}

fn sets() -> Vec<SetSpec> {
    let data = Some((datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_SERVICE]), 8));
    vec![
        ifname_set("bridges"),
        SetSpec {
            name: "same".into(),
            key_type: datatype::concat(&[datatype::IFNAME, datatype::IFNAME]),
            key_len: 32,
            data: None,
            interval: false,
        },
        ifname_set("masq"),
        ifname_set("internal"),
        SetSpec {
            name: "vxlan_ports".into(),
            key_type: datatype::INET_SERVICE,
            key_len: 2,
            data: None,
            interval: false,
        },
        SetSpec { name: "vteps".into(), key_type: datatype::IPV4_ADDR, key_len: 4, data: None, interval: false },
        SetSpec {
            name: "pub_ip".into(),
            key_type: datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_PROTO, datatype::INET_SERVICE]),
            key_len: 12,
            data,
            interval: false,
        },
        SetSpec {
            name: "pub_any".into(),
            key_type: datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]),
            key_len: 8,
            data,
            interval: false,
        },
    ]
}

fn in_set(key: u32, set: &str, invert: bool) -> [Expr; 2] {
    [Expr::Meta { key, dreg: nft::REG_1 }, Expr::Lookup { set: set.into(), sreg: nft::REG_1, dreg: None, invert }]
}

fn ct_dnat() -> [Expr; 3] {
    [
        Expr::Ct { key: nft::NFT_CT_STATUS, dreg: nft::REG_1 },
        Expr::Bitwise { sreg: nft::REG_1, dreg: nft::REG_1, mask: nft::IPS_DST_NAT.to_ne_bytes().to_vec() },
        Expr::Cmp { sreg: nft::REG_1, op: 1, data: vec![0; 4] },
    ]
}

fn verdict(code: i32) -> Expr {
    Expr::Verdict { code, chain: None }
}

/// DNAT through the two port maps: exact host address first, then any local address.
fn dnat_rules() -> Vec<(&'static str, Vec<Expr>)> {
    let r = nft::REG32_00;
    vec![
        (
            "published port: DNAT to the container (map pub_ip: host address . proto . port)",
            vec![
                Expr::Payload { base: 1, offset: 16, len: 4, dreg: r },
                Expr::Meta { key: meta::L4PROTO, dreg: r + 1 },
                Expr::Payload { base: 2, offset: 2, len: 2, dreg: r + 2 },
                Expr::Lookup { set: "pub_ip".into(), sreg: r, dreg: Some(r), invert: false },
                Expr::Dnat { reg_addr: r, reg_port: r + 1 },
            ],
        ),
        (
            "published port: DNAT to the container (map pub_any: any local address . proto . port)",
            vec![
                Expr::FibDaddrType { dreg: nft::REG_1 },
                Expr::Cmp { sreg: nft::REG_1, op: 0, data: nft::RTN_LOCAL.to_ne_bytes().to_vec() },
                Expr::Meta { key: meta::L4PROTO, dreg: r },
                Expr::Payload { base: 2, offset: 2, len: 2, dreg: r + 1 },
                Expr::Lookup { set: "pub_any".into(), sreg: r, dreg: Some(r), invert: false },
                Expr::Dnat { reg_addr: r, reg_port: r + 1 },
            ],
        ),
    ]
}

/// The ip-family skeleton: chains and their rules, in order.
fn skeleton(b: &mut Batch, t: &str) {
    b.add_base_chain(t, "prerouting", "nat", hook::PREROUTING, -100)
        .add_base_chain(t, "output", "nat", hook::OUTPUT, -100)
        .add_base_chain(t, "postrouting", "nat", hook::POSTROUTING, 100)
        .add_base_chain(t, "forward", "filter", hook::FORWARD, 0)
        .add_base_chain(t, "input", "filter", hook::INPUT, 0)
        .add_chain(t, USER_CHAIN);
    for c in ["prerouting", "output", "postrouting", "forward", "input"] {
        b.flush_chain(t, c);
    }
    // Overlay: VXLAN frames land straight on a bridge, past every other rule; only the
    // cluster's VTEPs may send them (udp dport @vxlan_ports ip saddr != @vteps drop).
    let vxlan_guard = [
        Expr::Meta { key: meta::L4PROTO, dreg: nft::REG_1 },
        Expr::Cmp { sreg: nft::REG_1, op: 0, data: vec![nft::IPPROTO_UDP] },
        Expr::Payload { base: 2, offset: 2, len: 2, dreg: nft::REG_1 },
        Expr::Lookup { set: "vxlan_ports".into(), sreg: nft::REG_1, dreg: None, invert: false },
        Expr::Payload { base: 1, offset: 12, len: 4, dreg: nft::REG_1 },
        Expr::Lookup { set: "vteps".into(), sreg: nft::REG_1, dreg: None, invert: true },
        Expr::Counter,
        verdict(nft::NF_DROP),
    ];
    b.add_rule(t, "input", "overlay: drop VXLAN from addresses that are not cluster VTEPs", &vxlan_guard);
    for (comment, r) in dnat_rules() {
        b.add_rule(t, "prerouting", comment, &r);
        b.add_rule(t, "output", comment, &r);
    }
    // Hairpin: a container reaching a published port through the host's address gets
    // the gateway as source, so the answer comes back through the host.
    let hairpin: Vec<Expr> = ct_dnat()
        .into_iter()
        .chain(in_set(meta::IIFNAME, "bridges", false))
        .chain(in_set(meta::OIFNAME, "bridges", false))
        .chain([Expr::Masquerade])
        .collect();
    b.add_rule(t, "postrouting", "hairpin: a container reached a published port, masquerade to the gateway", &hairpin);
    // The host reaching a published port on 127.0.0.1.
    let localhost: Vec<Expr> = [
        Expr::Payload { base: 1, offset: 12, len: 4, dreg: nft::REG_1 },
        Expr::Bitwise { sreg: nft::REG_1, dreg: nft::REG_1, mask: vec![255, 0, 0, 0] },
        Expr::Cmp { sreg: nft::REG_1, op: 0, data: vec![127, 0, 0, 0] },
    ]
    .into_iter()
    .chain(in_set(meta::OIFNAME, "bridges", false))
    .chain([Expr::Masquerade])
    .collect();
    b.add_rule(t, "postrouting", "the host reached a published port on 127.0.0.1: masquerade", &localhost);
    // Egress: from a masquerading network's bridge to anywhere but a bridge.
    let egress: Vec<Expr> = in_set(meta::IIFNAME, "masq", false)
        .into_iter()
        .chain(in_set(meta::OIFNAME, "bridges", true))
        .chain([Expr::Masquerade])
        .collect();
    b.add_rule(t, "postrouting", "egress: masquerade a network's traffic leaving the host", &egress);
    // Forwarding: the admin's chain first, then published traffic, then isolation.
    b.add_rule(
        t,
        "forward",
        "the admin's chain first",
        &[Expr::Verdict { code: nft::NFT_JUMP, chain: Some(USER_CHAIN.into()) }],
    );
    let published: Vec<Expr> = ct_dnat().into_iter().chain([verdict(nft::NF_ACCEPT)]).collect();
    b.add_rule(t, "forward", "accept published traffic (ct status dnat)", &published);
    b.add_rule(
        t,
        "forward",
        "accept traffic within one network",
        &[
            Expr::Meta { key: meta::IIFNAME, dreg: nft::REG_1 },
            Expr::Meta { key: meta::OIFNAME, dreg: nft::REG_1 + 1 },
            Expr::Lookup { set: "same".into(), sreg: nft::REG_1, dreg: None, invert: false },
            verdict(nft::NF_ACCEPT),
        ],
    );
    let between: Vec<Expr> = in_set(meta::IIFNAME, "bridges", false)
        .into_iter()
        .chain(in_set(meta::OIFNAME, "bridges", false))
        .chain([Expr::Counter, verdict(nft::NF_DROP)])
        .collect();
    b.add_rule(t, "forward", "isolation: drop traffic between different networks", &between);
    for (k, comment) in [
        (meta::IIFNAME, "internal network: drop what leaves it"),
        (meta::OIFNAME, "internal network: drop what enters it from outside"),
    ] {
        let internal: Vec<Expr> =
            in_set(k, "internal", false).into_iter().chain([Expr::Counter, verdict(nft::NF_DROP)]).collect();
        b.add_rule(t, "forward", comment, &internal);
    }
}

/// Serializes firewall changes between netwright processes (a sync reads the store and
/// must not lose an element another process adds meanwhile).
fn lock(ctx: &Ctx) -> Result<nix::fcntl::Flock<File>> {
    let f = File::create(ctx.root.join("firewall.lock"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking the firewall: {e}"))
}

fn commit(nft: &mut Nftables, b: &Batch, what: &str) -> Result<()> {
    nft.commit(b).map_err(|(i, e)| anyhow!("nftables refused {what} (message {i}): {e}"))
}

/// Rebuilds the table from the store, atomically.
pub fn sync_all(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let _guard = lock(ctx)?;
    sync_locked(ctx, store)
}

fn sync_locked(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let (networks, ports, vteps) = inputs(store)?;
    let d = desired(&networks, &ports, &vteps);
    let t = table_name(ctx);
    let mut nft = Nftables::open().context("opening nftables netlink")?;
    let mut b = Batch::new(nft::NFPROTO_IPV4);
    b.add_table(&t);
    for s in sets() {
        b.add_set(&t, &s);
        b.flush_set(&t, &s.name);
    }
    skeleton(&mut b, &t);
    for (set, elems) in d.by_set() {
        if !elems.is_empty() {
            b.add_elems(&t, set, elems);
        }
    }
    commit(&mut nft, &b, "the ip table")?;
    if networks.iter().any(|n| n.driver.is_bridged() && masquerades(n)) {
        enable_forwarding()?;
    }
    Ok(())
}

/// The overlay's VTEP set alone, from the store's mirror: the agent calls this whenever the
/// other hosts' endpoints change (one flush and one add in one batch, not a rebuild).
pub fn sync_vteps(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let _guard = lock(ctx)?;
    let (_, _, vteps) = inputs(store)?;
    let t = table_name(ctx);
    let mut nft = Nftables::open().context("opening nftables netlink")?;
    let mut b = Batch::new(nft::NFPROTO_IPV4);
    b.flush_set(&t, "vteps");
    let elems: Vec<Elem> =
        vteps.iter().map(|v| Elem::new(v.octets().to_vec(), None).with_comment("cluster VTEP")).collect();
    if !elems.is_empty() {
        b.add_elems(&t, "vteps", &elems);
    }
    if commit(&mut nft, &b, "the VTEP set").is_err() {
        // No table or no set yet (a table from an older netwright): the full rebuild.
        return sync_locked(ctx, store);
    }
    Ok(())
}

/// Containers' traffic is routed by the host: IPv4 forwarding must be on. Said aloud
/// when netwright turns it on.
/// Set by front ends whose caller reads stderr as part of a protocol (netavark, CNI).
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let now = std::fs::read_to_string(path).unwrap_or_default();
    if now.trim() != "1" {
        std::fs::write(path, "1").context("enabling net.ipv4.ip_forward")?;
        if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("netwright: set net.ipv4.ip_forward=1 so containers can reach beyond their bridge");
        }
    }
    Ok(())
}

/// Rebuilds the table if what a command depends on is not there: the table, every rule of
/// the skeleton, the per-network sets (an `nft flush …` by an admin or another tool).
pub fn ensure(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let (networks, _, vteps) = inputs(store)?;
    if check::drift(ctx, &networks, &[], &vteps, check::Scope::Skeleton)?.is_empty() {
        return Ok(());
    }
    sync_all(ctx, store)
}

/// Adds (or removes) one container's published ports: map elements only.
/// `owner`: the container's name, the elements' comment (what `nft list` shows).
pub fn publish(ctx: &Ctx, store: &mut Store, mappings: &[Mapping], ip: Ipv4Addr, owner: &str, add: bool) -> Result<()> {
    if mappings.is_empty() {
        return Ok(());
    }
    let _guard = lock(ctx)?;
    let t = table_name(ctx);
    let mut nft = Nftables::open().context("opening nftables netlink")?;
    let mut b = Batch::new(nft::NFPROTO_IPV4);
    let mut by_set: Vec<(&str, Vec<Elem>)> = vec![("pub_ip", vec![]), ("pub_any", vec![])];
    for m in mappings {
        let (set, e) = port_elem(m, ip);
        by_set
            .iter_mut()
            .find(|(s, _)| *s == set)
            .expect("two sets")
            .1
            .push(e.with_comment(format!("container {owner}")));
    }
    for (set, elems) in &by_set {
        if elems.is_empty() {
            continue;
        }
        if add {
            b.add_elems(&t, set, elems)
        } else {
            b.del_elems(&t, set, elems)
        };
    }
    match nft.commit(&b) {
        Ok(()) => {
            // Closing may wait for a grace period (ours, or a recent release's): not here.
            nft.close_detached();
            Ok(())
        }
        // Adding, and the table is gone: rebuild from the store, which is the truth (and
        // already has the new mappings). Removing, an element is already gone: the caller
        // rebuilds once the store no longer has them (a rebuild now would put them back).
        Err((_, e)) if add && e.raw_os_error() == Some(libc::ENOENT) => sync_locked(ctx, store),
        Err((i, e)) => Err(anyhow!("nftables refused the port mappings (message {i}): {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Proto;

    #[test]
    fn port_elements_encode_key_and_data() {
        let m = Mapping { host_ip: None, host_port: 8080, container_port: 80, proto: Proto::Tcp };
        let (set, e) = port_elem(&m, Ipv4Addr::new(172, 17, 0, 4));
        assert_eq!(set, "pub_any");
        assert_eq!(e.key, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(e.data, Some(vec![172, 17, 0, 4, 0, 80, 0, 0]));
        let m = Mapping { host_ip: Some(Ipv4Addr::LOCALHOST), host_port: 53, container_port: 5353, proto: Proto::Udp };
        let (set, e) = port_elem(&m, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(set, "pub_ip");
        assert_eq!(e.key, vec![127, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
    }
}
