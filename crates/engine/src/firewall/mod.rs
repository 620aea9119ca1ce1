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
mod checked;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, anyhow};

use crate::ctx::Ctx;
use crate::kernel::nftables::{self as nft, Batch, Elem, Expr, Nftables, SetSpec, datatype, hook, meta};
use crate::ports::Mapping;
use crate::store::{Network, Store};

pub const USER_CHAIN: &str = "user";

pub fn table_name(ctx: &Ctx) -> String {
    format!("netwright-{}", ctx.tag)
}

/// The two tables: `ip netwright-<tag>` always, `ip6 netwright-<tag>` while a network is
/// dual-stack. Same skeleton, same set names; what differs is here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn nfproto(self) -> u8 {
        match self {
            Family::V4 => nft::NFPROTO_IPV4,
            Family::V6 => nft::NFPROTO_IPV6,
        }
    }

    /// nft's name of the family ("table ip6 …").
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_len(self) -> u32 {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    fn addr_type(self) -> u32 {
        match self {
            Family::V4 => datatype::IPV4_ADDR,
            Family::V6 => datatype::IPV6_ADDR,
        }
    }

    /// Offset of the destination address in the network header.
    fn daddr_offset(self) -> u32 {
        match self {
            Family::V4 => 16,
            Family::V6 => 24,
        }
    }
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
    /// Overlay (IPv4 table only): the UDP ports VXLAN arrives on, and the cluster VTEPs
    /// allowed to send it.
    pub vxlan_ports: Vec<Elem>,
    pub vteps: Vec<Elem>,
    /// Services (IPv4 table only): VIP . proto . port and published host ports, each a
    /// goto to the service's chain (see crate::services).
    pub services: Vec<Elem>,
    pub svc_pub: Vec<Elem>,
}

/// Where a published port's traffic goes: the container's addresses on its first network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub ip: Ipv4Addr,
    /// On a dual-stack network: IPv6 traffic to the port goes here.
    pub ip6: Option<Ipv6Addr>,
}

/// A published port: the mapping, its container's addresses and the container's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub mapping: Mapping,
    pub to: Target,
    pub owner: String,
}

impl Desired {
    /// Every set and map of `family`'s table by name with what it should hold: the
    /// per-network and overlay sets first, the published-port maps last.
    pub fn by_set(&self, family: Family) -> Vec<(&'static str, &Vec<Elem>)> {
        let mut v =
            vec![("bridges", &self.bridges), ("same", &self.same), ("masq", &self.masq), ("internal", &self.internal)];
        if family == Family::V4 {
            v.extend([
                ("vxlan_ports", &self.vxlan_ports),
                ("vteps", &self.vteps),
                ("services", &self.services),
                ("svc_pub", &self.svc_pub),
            ]);
        }
        v.extend([("pub_ip", &self.pub_ip), ("pub_any", &self.pub_any)]);
        v
    }

    /// [`Self::by_set`] without the published-port maps unless `ports`: what a skeleton
    /// check compares (a full check compares everything).
    pub fn checked(&self, family: Family, ports: bool) -> Vec<(&'static str, &Vec<Elem>)> {
        self.by_set(family).into_iter().filter(|(set, _)| ports || !set.starts_with("pub_")).collect()
    }
}

/// A service with its backends.
pub type ServiceState = (crate::model::Service, Vec<crate::model::Backend>);

/// What the firewall reads from the store.
#[derive(Debug, Default)]
pub struct Inputs {
    pub networks: Vec<Network>,
    pub ports: Vec<Published>,
    /// The VTEPs of the other hosts' overlay endpoints.
    pub vteps: Vec<Ipv4Addr>,
    pub services: Vec<ServiceState>,
    /// Big networks' segment bridges (crate::plan::Segment), by network id.
    pub segments: Vec<(String, Vec<String>)>,
}

pub fn inputs(store: &mut Store) -> Result<Inputs> {
    inputs_with(store, true)
}

/// The inputs, the published ports only when `ports` (every container's: what `ensure`, on
/// every attach, neither checks nor needs — reading them made each attach O(containers)).
fn inputs_with(store: &mut Store, ports: bool) -> Result<Inputs> {
    store.read(|tx| {
        let mut vteps: Vec<Ipv4Addr> = tx.remote_endpoints()?.into_iter().map(|r| r.vtep).collect();
        vteps.sort();
        vteps.dedup();
        Ok(Inputs {
            networks: tx.networks()?,
            ports: if ports { tx.active_ports()? } else { vec![] },
            vteps,
            services: if tx.has_services()? { crate::services::all(tx)? } else { vec![] },
            segments: segments_in_use(tx)?,
        })
    })
}

/// The segment bridges in use, by network — and the spare one (crate::plan::spare_segment),
/// so that a network at a segment's edge changes no set.
fn segments_in_use(tx: &crate::store::Tx) -> Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let loads = tx.all_segment_loads()?;
    if !loads.iter().any(|(_, s, n, _)| *s > 0 || *n + 1 >= crate::plan::SEGMENT_PORTS) {
        return Ok(out);
    }
    let networks = tx.networks()?;
    for n in networks.iter().filter(|n| n.driver.is_bridged()) {
        let mine: Vec<&(String, u32, u32, String)> = loads.iter().filter(|l| l.0 == n.id).collect();
        let Some(tag) = mine.first().map(|l| crate::plan::tag_of(&l.3)) else { continue };
        let counts: Vec<(u32, u32)> = mine.iter().map(|l| (l.1, l.2)).collect();
        let mut segments: Vec<u32> = counts.iter().map(|(s, _)| *s).filter(|s| *s > 0).collect();
        segments.extend(crate::plan::spare_segment(&counts));
        segments.sort();
        if !segments.is_empty() {
            let names = segments.into_iter().map(|s| crate::plan::segment(tag, n, s).bridge).collect();
            out.push((n.id.clone(), names));
        }
    }
    Ok(out)
}

pub fn option_enabled(n: &Network, keys: &[&str], default: bool) -> bool {
    keys.iter().find_map(|k| n.options.get(*k)).map(|v| v == "true").unwrap_or(default)
}

pub fn masquerades(n: &Network) -> bool {
    !n.internal && option_enabled(n, &["masquerade", "com.docker.network.bridge.enable_ip_masquerade"], true)
}

/// Docker's option names for how IPv6 leaves a network: `nat` (masquerade, the default,
/// right for ULA subnets) or `routed` (a routable prefix the LAN routes back to the host).
pub const GATEWAY_MODE6: [&str; 2] = ["gateway_mode_ipv6", "com.docker.network.bridge.gateway_mode_ipv6"];

/// Does the network's IPv6 traffic leave the host masqueraded?
pub fn masquerades6(n: &Network) -> bool {
    n.subnet6.is_some()
        && masquerades(n)
        && GATEWAY_MODE6.iter().find_map(|k| n.options.get(*k)).is_none_or(|v| v == "nat")
}

pub fn icc(n: &Network) -> bool {
    option_enabled(n, &["icc", "com.docker.network.bridge.enable_icc"], true)
}

/// Is there a dual-stack bridged network (and so an ip6 table)?
pub fn wants_v6(networks: &[Network]) -> bool {
    networks.iter().any(|n| n.driver.is_bridged() && n.subnet6.is_some())
}

pub fn desired(inp: &Inputs, family: Family) -> Desired {
    let (networks, ports, vteps) = (&inp.networks, &inp.ports, &inp.vteps);
    let mut d = Desired::default();
    if family == Family::V4 {
        for (svc, _) in &inp.services {
            d.services.extend(crate::services::vip_elems(svc));
            d.svc_pub.extend(crate::services::pub_elems(svc));
        }
        for n in networks.iter().filter(|n| n.driver == crate::model::Driver::Overlay) {
            let (_, port) = crate::overlay::network::vni_port(n);
            let e =
                Elem::new(port.to_be_bytes().to_vec(), None).with_comment(format!("overlay VXLAN port ({})", n.name));
            if !d.vxlan_ports.contains(&e) {
                d.vxlan_ports.push(e);
            }
        }
        d.vteps = vteps.iter().map(|v| Elem::new(v.octets().to_vec(), None).with_comment("cluster VTEP")).collect();
    }
    for n in networks.iter().filter(|n| n.driver.is_bridged()) {
        // The network's bridge and its segment bridges: one network to the firewall.
        let mut devices = vec![n.bridge.clone()];
        devices.extend(inp.segments.iter().filter(|(id, _)| *id == n.id).flat_map(|(_, v)| v.iter().cloned()));
        let masq = match family {
            Family::V4 => masquerades(n),
            Family::V6 => masquerades6(n),
        };
        for dev in &devices {
            let key = Elem::new(nft::ifname_key(dev), None).with_comment(format!("network {}", n.name));
            d.bridges.push(key.clone());
            // Between segments the host routes: within the network unless icc=false.
            for other in devices.iter().filter(|o| *o == dev || icc(n)) {
                d.same.push(
                    Elem::new([nft::ifname_key(dev), nft::ifname_key(other)].concat(), None)
                        .with_comment(format!("network {}", n.name)),
                );
            }
            if masq {
                d.masq.push(key.clone());
            }
            if n.internal {
                d.internal.push(key);
            }
        }
    }
    for p in ports {
        let Some((set, e)) = port_elem(&p.mapping, p.to, family) else { continue };
        let e = e.with_comment(format!("container {}", p.owner));
        if set == "pub_ip" { d.pub_ip.push(e) } else { d.pub_any.push(e) }
    }
    d
}

/// The map element for one mapping in `family`'s table: key (host address?, proto, port)
/// → (container address, port). None: the mapping does not publish on that family (an
/// address of the other one), or the container has no address of it.
pub fn port_elem(m: &Mapping, to: Target, family: Family) -> Option<(&'static str, Elem)> {
    if !m.on_family(family == Family::V6) {
        return None;
    }
    let container: IpAddr = match family {
        Family::V4 => IpAddr::V4(to.ip),
        Family::V6 => IpAddr::V6(to.ip6?),
    };
    let pad4 = |b: &[u8]| {
        let mut v = b.to_vec();
        v.resize(4, 0);
        v
    };
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    // 0.0.0.0 and :: publish on every address of their family, as no address does.
    let host_ip = m.host_ip.filter(|ip| !ip.is_unspecified());
    let mut key = Vec::new();
    if let Some(ip) = host_ip {
        key.extend(octets(ip));
    }
    key.extend(pad4(&[m.proto.number()]));
    key.extend(pad4(&m.host_port.to_be_bytes()));
    let mut data = octets(container);
    data.extend(pad4(&m.container_port.to_be_bytes()));
    Some((if host_ip.is_some() { "pub_ip" } else { "pub_any" }, Elem::new(key, Some(data))))
}

fn ifname_set(name: &str) -> SetSpec {
    SetSpec { name: name.into(), key_type: datatype::IFNAME, key_len: 16, data: None, interval: false }
}

fn sets(family: Family) -> Vec<SetSpec> {
    let a = family.addr_len();
    let data = Some((datatype::concat(&[family.addr_type(), datatype::INET_SERVICE]), a + 4));
    let mut v = vec![
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
    ];
    if family == Family::V4 {
        v.extend([
            SetSpec {
                name: "vxlan_ports".into(),
                key_type: datatype::INET_SERVICE,
                key_len: 2,
                data: None,
                interval: false,
            },
            SetSpec { name: "vteps".into(), key_type: datatype::IPV4_ADDR, key_len: 4, data: None, interval: false },
            SetSpec {
                name: "services".into(),
                key_type: datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_PROTO, datatype::INET_SERVICE]),
                key_len: 12,
                data: Some((datatype::VERDICT, 0)),
                interval: false,
            },
            SetSpec {
                name: "svc_pub".into(),
                key_type: datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]),
                key_len: 8,
                data: Some((datatype::VERDICT, 0)),
                interval: false,
            },
        ]);
    }
    v.extend([
        SetSpec {
            name: "pub_ip".into(),
            key_type: datatype::concat(&[family.addr_type(), datatype::INET_PROTO, datatype::INET_SERVICE]),
            key_len: a + 8,
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
    ]);
    v
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
/// Registers: the address takes one 32-bit register per 4 bytes, the port the next.
fn dnat_rules(family: Family) -> Vec<(&'static str, Vec<Expr>)> {
    let r = nft::REG32_00;
    let words = family.addr_len() / 4;
    let f = family.nfproto();
    vec![
        (
            "published port: DNAT to the container (map pub_ip: host address . proto . port)",
            vec![
                Expr::Payload { base: 1, offset: family.daddr_offset(), len: family.addr_len(), dreg: r },
                Expr::Meta { key: meta::L4PROTO, dreg: r + words },
                Expr::Payload { base: 2, offset: 2, len: 2, dreg: r + words + 1 },
                Expr::Lookup { set: "pub_ip".into(), sreg: r, dreg: Some(r), invert: false },
                Expr::Dnat { family: f, reg_addr: r, reg_port: r + words },
            ],
        ),
        (
            "published port: DNAT to the container (map pub_any: any local address . proto . port)",
            local_proto_port(r)
                .into_iter()
                .chain([
                    Expr::Lookup { set: "pub_any".into(), sreg: r, dreg: Some(r), invert: false },
                    Expr::Dnat { family: f, reg_addr: r, reg_port: r + words },
                ])
                .collect(),
        ),
    ]
}

/// `fib daddr type local`, then proto . port into `r`, `r + 1`: a key for "any local address".
fn local_proto_port(r: u32) -> [Expr; 4] {
    [
        Expr::FibDaddrType { dreg: nft::REG_1 },
        Expr::Cmp { sreg: nft::REG_1, op: 0, data: nft::RTN_LOCAL.to_ne_bytes().to_vec() },
        Expr::Meta { key: meta::L4PROTO, dreg: r },
        Expr::Payload { base: 2, offset: 2, len: 2, dreg: r + 1 },
    ]
}

/// Services first: a VIP's port, or a service's published host port, goes to the
/// service's chain (crate::services), which picks a backend.
fn service_rules() -> Vec<(&'static str, Vec<Expr>)> {
    let r = nft::REG32_00;
    vec![
        (
            "service: a VIP's port to its service's chain (map services: VIP . proto . port)",
            vec![
                Expr::Payload { base: 1, offset: 16, len: 4, dreg: r },
                Expr::Meta { key: meta::L4PROTO, dreg: r + 1 },
                Expr::Payload { base: 2, offset: 2, len: 2, dreg: r + 2 },
                Expr::Lookup { set: "services".into(), sreg: r, dreg: Some(nft::REG_VERDICT), invert: false },
            ],
        ),
        (
            "service: a published service port to its service's chain (map svc_pub: proto . port)",
            local_proto_port(r)
                .into_iter()
                .chain([Expr::Lookup { set: "svc_pub".into(), sreg: r, dreg: Some(nft::REG_VERDICT), invert: false }])
                .collect(),
        ),
    ]
}

/// The skeleton: chains and their rules, in order. The IPv6 table has the same rules but
/// the overlay's guard (VXLAN runs over IPv4) and the 127.0.0.1 rule ([::1] cannot be
/// forwarded by the kernel: `-p` refuses it).
fn skeleton(b: &mut Batch, t: &str, family: Family) {
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
    if family == Family::V4 {
        b.add_rule(t, "input", "overlay: drop VXLAN from addresses that are not cluster VTEPs", &vxlan_guard);
    }
    if family == Family::V4 {
        for (comment, r) in service_rules() {
            b.add_rule(t, "prerouting", comment, &r);
            b.add_rule(t, "output", comment, &r);
        }
    }
    for (comment, r) in dnat_rules(family) {
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
    if family == Family::V4 {
        b.add_rule(t, "postrouting", "the host reached a published port on 127.0.0.1: masquerade", &localhost);
    }
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
pub(crate) fn lock(ctx: &Ctx) -> Result<nix::fcntl::Flock<File>> {
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
    let inp = inputs(store)?;
    let networks = &inp.networks;
    let t = table_name(ctx);
    let mut nft = Nftables::open().context("opening nftables netlink")?;
    let before = checked::now(&mut nft);
    for family in [Family::V4, Family::V6] {
        if family == Family::V6 && !wants_v6(networks) {
            // No dual-stack network (any more): no ip6 table.
            if nft.has_table(family.nfproto(), &t)? {
                let mut b = Batch::new(family.nfproto());
                b.del_table(&t);
                commit(&mut nft, &b, "removing the ip6 table")?;
            }
            continue;
        }
        let d = desired(&inp, family);
        let mut b = Batch::new(family.nfproto());
        b.add_table(&t);
        for s in sets(family) {
            b.add_set(&t, &s);
            b.flush_set(&t, &s.name);
        }
        skeleton(&mut b, &t, family);
        if family == Family::V4 {
            // The services' chains before the elements that go to them.
            for (svc, backends) in &inp.services {
                crate::services::add_objects(&mut b, &t, svc, backends);
            }
        }
        for (set, elems) in d.by_set(family) {
            if !elems.is_empty() {
                b.add_elems(&t, set, elems);
            }
        }
        commit(&mut nft, &b, &format!("the {} table", family.label()))?;
    }
    // A rebuild leaves the tables right.
    checked::after_own_commits(ctx, &mut nft, before, Some(fingerprint(&inp)));
    if networks.iter().any(|n| n.driver.is_bridged() && masquerades(n)) {
        enable_forwarding()?;
    }
    if wants_v6(networks) {
        enable_forwarding6()?;
    }
    Ok(())
}

/// The overlay's VTEP set alone, from the store's mirror: the agent calls this whenever the
/// other hosts' endpoints change (one flush and one add in one batch, not a rebuild).
pub fn sync_vteps(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let _guard = lock(ctx)?;
    let vteps = inputs(store)?.vteps;
    let t = table_name(ctx);
    let mut nft = Nftables::open().context("opening nftables netlink")?;
    let mut b = Batch::new(Family::V4.nfproto());
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

/// IPv6 forwarding, for dual-stack networks. `all.forwarding=1` turns a host into a router,
/// and a router ignores router advertisements unless accept_ra is 2: an uplink configured by
/// SLAAC (accept_ra=1) would lose its default route when its lease ends. So, as a careful
/// admin does, every interface with accept_ra=1 gets 2 first — said aloud, as forwarding is.
fn enable_forwarding6() -> Result<()> {
    let quiet = QUIET.load(std::sync::atomic::Ordering::Relaxed);
    let mut kept = Vec::new();
    for dir in std::fs::read_dir("/proc/sys/net/ipv6/conf").into_iter().flatten().flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        // "all" is not read for accept_ra; netwright's own devices take no advertisements.
        if name == "all" || crate::plan::is_netwright_device(&name) {
            continue;
        }
        let ra = dir.path().join("accept_ra");
        if std::fs::read_to_string(&ra).unwrap_or_default().trim() == "1" {
            std::fs::write(&ra, "2").with_context(|| format!("setting net.ipv6.conf.{name}.accept_ra=2"))?;
            kept.push(name);
        }
    }
    let real: Vec<&str> = kept.iter().map(|s| s.as_str()).filter(|n| *n != "default" && *n != "lo").collect();
    if !quiet && !real.is_empty() {
        eprintln!(
            "netwright: set accept_ra=2 on {} so they keep taking router advertisements while the host forwards IPv6",
            real.join(", ")
        );
    }
    let path = "/proc/sys/net/ipv6/conf/all/forwarding";
    if std::fs::read_to_string(path).unwrap_or_default().trim() != "1" {
        std::fs::write(path, "1").context("enabling net.ipv6.conf.all.forwarding")?;
        if !quiet {
            eprintln!(
                "netwright: set net.ipv6.conf.all.forwarding=1 so containers can reach beyond their bridge over IPv6"
            );
        }
    }
    Ok(())
}

/// Rebuilds the table if what a command depends on is not there: the table, every rule of
/// the skeleton, the per-network sets (an `nft flush …` by an admin or another tool).
/// Nothing is read when no table of the namespace changed since this root last knew it
/// right ([`checked`]).
pub fn ensure(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let inp = inputs_with(store, false)?;
    crate::ctx::trace("firewall: inputs read");
    let now = Nftables::open().ok().and_then(|mut nft| checked::now(&mut nft));
    let want = fingerprint(&inp);
    if now.as_ref().and_then(|m| checked::known_good(ctx, m)) == Some(want) {
        crate::ctx::trace("firewall: unchanged since checked");
        return Ok(());
    }
    if check::drift(ctx, &inp, check::Scope::Skeleton)?.is_empty() {
        // (Read before the check: a change since then shows as another generation.)
        if let Some(m) = &now {
            checked::record(ctx, m, want);
        }
        return Ok(());
    }
    sync_all(ctx, store)
}

/// The fingerprint of what a skeleton check compares with the kernel: the per-network
/// and overlay sets (the skeleton's rules are the same for every store).
fn fingerprint(inp: &Inputs) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for family in [Family::V4, Family::V6] {
        if family == Family::V6 && !wants_v6(&inp.networks) {
            continue;
        }
        family.label().hash(&mut h);
        for (set, elems) in desired(inp, family).checked(family, false) {
            (set, elems).hash(&mut h);
        }
    }
    h.finish()
}

/// Adds one container's published ports: map elements only, in each family's table where
/// the container has an address. `owner`: the container's name, the elements' comment
/// (what `nft list` shows).
pub fn publish(ctx: &Ctx, store: &mut Store, mappings: &[Mapping], to: Target, owner: &str) -> Result<()> {
    match change_ports(ctx, mappings, to, owner, true)? {
        // The table is gone: rebuild from the store, which is the truth (and already has
        // the new mappings).
        Changed::TableGone => sync_locked(ctx, store),
        Changed::Done => Ok(()),
    }
}

/// Takes one container's published ports out. Needs no store: an error (an element or the
/// table already gone) leaves the caller to rebuild once the store no longer has them (a
/// rebuild now would put them back).
pub fn unpublish(ctx: &Ctx, mappings: &[Mapping], to: Target) -> Result<()> {
    // Removing, a missing table or element is an error: TableGone is an add's answer only.
    change_ports(ctx, mappings, to, "", false).map(drop)
}

enum Changed {
    Done,
    /// Adding, and the table is not there (removing, that is an error).
    TableGone,
}

fn change_ports(ctx: &Ctx, mappings: &[Mapping], to: Target, owner: &str, add: bool) -> Result<Changed> {
    if mappings.is_empty() {
        return Ok(Changed::Done);
    }
    let _guard = lock(ctx)?;
    let t = table_name(ctx);
    let mut nft = Nftables::open().context("opening nftables netlink")?;
    crate::ctx::trace("ports: locked, socket open");
    let before = checked::now(&mut nft);
    let desired = before.as_ref().and_then(|m| checked::known_good(ctx, m));
    crate::ctx::trace("ports: generation read");
    for family in [Family::V4, Family::V6] {
        let mut by_set: Vec<(&str, Vec<Elem>)> = vec![("pub_ip", vec![]), ("pub_any", vec![])];
        for m in mappings {
            let Some((set, e)) = port_elem(m, to, family) else { continue };
            by_set
                .iter_mut()
                .find(|(s, _)| *s == set)
                .expect("two sets")
                .1
                .push(e.with_comment(format!("container {owner}")));
        }
        if by_set.iter().all(|(_, e)| e.is_empty()) {
            continue;
        }
        let mut b = Batch::new(family.nfproto());
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
            Ok(()) => {}
            Err((_, e)) if add && e.raw_os_error() == Some(libc::ENOENT) => return Ok(Changed::TableGone),
            Err((i, e)) => {
                return Err(anyhow!("nftables refused the port mappings ({} table, message {i}): {e}", family.label()));
            }
        }
    }
    crate::ctx::trace("ports: committed");
    checked::after_own_commits(ctx, &mut nft, before, desired);
    // Closing may wait for a grace period (ours, or a recent release's): not here.
    nft.close_detached();
    Ok(Changed::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Proto;

    fn to(ip: &str, ip6: Option<&str>) -> Target {
        Target { ip: ip.parse().unwrap(), ip6: ip6.map(|s| s.parse().unwrap()) }
    }

    #[test]
    fn port_elements_encode_key_and_data() {
        let m = Mapping { host_ip: None, host_port: 8080, container_port: 80, proto: Proto::Tcp };
        let (set, e) = port_elem(&m, to("172.17.0.4", None), Family::V4).unwrap();
        assert_eq!(set, "pub_any");
        assert_eq!(e.key, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(e.data, Some(vec![172, 17, 0, 4, 0, 80, 0, 0]));
        assert!(port_elem(&m, to("172.17.0.4", None), Family::V6).is_none(), "no IPv6 address, no IPv6 element");
        let (set, e) = port_elem(&m, to("172.17.0.4", Some("fd00::4")), Family::V6).unwrap();
        assert_eq!(set, "pub_any");
        assert_eq!(e.data.as_ref().unwrap().len(), 20);
        assert_eq!(&e.data.unwrap()[16..], &[0, 80, 0, 0]);
        let m = Mapping {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_port: 53,
            container_port: 5353,
            proto: Proto::Udp,
        };
        let (set, e) = port_elem(&m, to("10.0.0.2", Some("fd00::2")), Family::V4).unwrap();
        assert_eq!(set, "pub_ip");
        assert_eq!(e.key, vec![127, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert!(port_elem(&m, to("10.0.0.2", Some("fd00::2")), Family::V6).is_none(), "an IPv4 host address");
        // The family's wildcard is "any address" of that family only.
        let m = Mapping { host_ip: Some("::".parse().unwrap()), host_port: 80, container_port: 80, proto: Proto::Tcp };
        assert!(port_elem(&m, to("10.0.0.2", Some("fd00::2")), Family::V4).is_none());
        assert_eq!(port_elem(&m, to("10.0.0.2", Some("fd00::2")), Family::V6).unwrap().0, "pub_any");
        let m = Mapping { host_ip: Some("2001:db8::10".parse().unwrap()), ..m };
        let (set, e) = port_elem(&m, to("10.0.0.2", Some("fd00::2")), Family::V6).unwrap();
        assert_eq!((set, e.key.len()), ("pub_ip", 24));
    }
}
