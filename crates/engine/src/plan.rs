//! The plan: what kernel objects a network or an endpoint should have, as plain data.
//! Pure functions of the store's model, so they are tested without root; the drivers
//! compare this with live state and apply the difference.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ipam;
use crate::store::{Endpoint, Network};

/// Bridge device name: "nwb" + root tag + network id prefix (13 chars, within IFNAMSIZ).
pub fn bridge_name(tag: &str, network_id: &str) -> String {
    format!("nwb{tag}{}", &network_id[..6])
}

/// Host-side veth name: "nwv" + root tag + endpoint id prefix (15 chars, IFNAMSIZ - 1).
pub fn host_veth_name(tag: &str, endpoint_id: &str) -> String {
    format!("nwv{tag}{}", &endpoint_id[..8])
}

/// Host-side macvlan shim of a macvlan network: "nwm" + root tag + network id prefix.
pub fn shim_name(tag: &str, network_id: &str) -> String {
    format!("nwm{tag}{}", &network_id[..6])
}

/// The ifb device that shapes an endpoint's outgoing traffic: "nwi" + root tag + endpoint id.
pub fn ifb_name(tag: &str, endpoint_id: &str) -> String {
    format!("nwi{tag}{}", &endpoint_id[..8])
}

/// Name prefixes of netwright's devices: bridges, veths, macvlan shims, ifbs, VXLAN.
const PREFIXES: [&str; 5] = ["nwb", "nwv", "nwm", "nwi", "nwx"];

/// True for a device any netwright root may have made (by its name's prefix).
pub fn is_netwright_device(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p)) && name.len() >= 7
}

/// True for devices this root created (and so may delete when the store no longer has them).
pub fn is_ours(tag: &str, name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p)) && name.get(3..7) == Some(tag)
}

/// Big networks. A Linux bridge takes at most 1,024 ports (the kernel's BR_MAX_PORTS), and
/// one L2 domain cannot grow much past 1,000 anyway: a bridge floods each ARP request to
/// every port at once, one copy per port queued on one CPU, whose backlog holds 1,000
/// packets (net.core.netdev_max_backlog) — the rest are dropped and containers miss each
/// other. So a bridge network puts its first SEGMENT_PORTS endpoints on its own bridge and
/// the next ones on segment bridges: each its own L2 domain, the host routing between
/// them. Every segment bridge carries the gateway address (/32) and answers ARP for the
/// network's addresses elsewhere (proxy_arp, no delay), as the network's bridge does once
/// it has segments; the host has a /32 route per container on a segment. One subnet, one
/// gateway: names, aliases, -p, isolation and NAT work as before; the firewall knows a
/// network's segments as its bridges (crate::firewall).
pub const SEGMENT_PORTS: u32 = 500;
pub const MAX_SEGMENTS: u32 = 48;

/// The MAC address of bridge `name` in this thread's network namespace: the same each time
/// the bridge is made there (a bridge re-made by `reconcile` keeps the gateway's MAC that
/// its containers have cached), different in every other namespace and on every other host
/// (an overlay network's bridges on two hosts are peers on one L2 segment, and its segment
/// endpoints are reached through their host's bridge MAC — crate::overlay::sync::
/// own_endpoints). From the kernel's boot id (not /etc/machine-id: images copy that file
/// from host to host), the namespace's inode and the name. Unicast, locally administered.
/// None when /proc does not say: the caller then takes a random one and pins nothing.
pub fn bridge_mac(name: &str) -> Option<[u8; 6]> {
    static BOOT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| std::fs::read("/proc/sys/kernel/random/boot_id").unwrap_or_default());
    let netns = std::fs::read_link("/proc/thread-self/ns/net").ok()?;
    if boot.is_empty() {
        return None;
    }
    let key = [b"netwright bridge\0".as_slice(), boot, netns.as_os_str().as_encoded_bytes(), name.as_bytes()].concat();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&crate::ctx::fnv1a(&key).to_be_bytes()[2..]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Some(mac)
}

/// A random unicast, locally administered MAC address.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    rand::fill(&mut mac[..]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// One segment bridge of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub index: u32,
    /// "nwb" + tag + network id prefix + two digits (15 chars).
    pub bridge: String,
    /// The network's own bridge.
    pub parent: String,
    /// The network's gateway, on the segment bridge as a /32 (and /128).
    pub gateway: Ipv4Addr,
    pub gateway6: Option<Ipv6Addr>,
}

pub fn segment(tag: &str, n: &Network, index: u32) -> Segment {
    Segment {
        index,
        bridge: format!("nwb{tag}{}{index:02}", &n.id[..6]),
        parent: n.bridge.clone(),
        gateway: n.gateway,
        gateway6: n.gateway6,
    }
}

/// The segment a new endpoint goes on, from each segment's load (segment, endpoints): the
/// lowest with room. None: every segment is full.
pub fn pick_segment(loads: &[(u32, u32)]) -> Option<u32> {
    (0..=MAX_SEGMENTS).find(|s| loads.iter().find(|(k, _)| k == s).is_none_or(|(_, n)| *n < SEGMENT_PORTS))
}

/// The spare segment: the empty one the next endpoint would go on, when every lower one
/// is full. It may exist without endpoints (made by the last one that left it).
pub fn spare_segment(loads: &[(u32, u32)]) -> Option<u32> {
    pick_segment(loads).filter(|s| *s > 0 && !loads.iter().any(|(k, n)| k == s && *n > 0))
}

/// The root tag inside one of its device names ("nwv" + tag + …).
pub fn tag_of(device: &str) -> &str {
    device.get(3..7).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    pub name: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// Dual stack: the IPv6 gateway address and prefix.
    pub gateway6: Option<(Ipv6Addr, u8)>,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    pub host_name: String,
    pub ifname: String,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Dual stack: the IPv6 address and prefix, and the IPv6 gateway (None on a macvlan
    /// network whose LAN router was not given).
    pub addr6: Option<(Ipv6Addr, u8)>,
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: u32,
    /// Only the first network's endpoint carries the default route.
    pub default_route: bool,
    /// icc=false: the bridge port is isolated from the network's other ports.
    pub isolated: bool,
    /// A port of a segment bridge rather than of the network's own.
    pub segment: Option<Segment>,
}

pub fn network(n: &Network) -> BridgePlan {
    BridgePlan {
        name: n.bridge.clone(),
        gateway: n.gateway,
        prefix: n.subnet.prefix_len(),
        gateway6: gateway6(n),
        mtu: n.mtu,
    }
}

/// The IPv6 gateway address with the subnet's prefix, on a dual-stack network.
pub fn gateway6(n: &Network) -> Option<(Ipv6Addr, u8)> {
    Some((n.gateway6?, n.subnet6?.prefix_len()))
}

pub fn endpoint(n: &Network, e: &Endpoint, addr: Ipv4Addr, default_route: bool) -> EndpointPlan {
    EndpointPlan {
        host_name: e.host_ifname.clone(),
        ifname: e.ifname.clone(),
        mac: ipam::parse_mac(&e.mac).unwrap_or_else(|| ipam::mac_for(addr)),
        addr,
        prefix: n.subnet.prefix_len(),
        gateway: n.gateway,
        addr6: e.ip6.zip(n.subnet6).map(|(a, s)| (a, s.prefix_len())),
        gateway6: n.gateway6,
        mtu: n.mtu,
        default_route: default_route && !n.internal,
        isolated: !crate::firewall::icc(n),
        segment: (e.segment > 0).then(|| segment(tag_of(&e.host_ifname), n, e.segment)),
    }
}

/// The bridge an endpoint is a port of.
pub fn port_bridge(n: &Network, e: &Endpoint) -> String {
    if e.segment > 0 { segment(tag_of(&e.host_ifname), n, e.segment).bridge } else { n.bridge.clone() }
}

/// A device this root should have in the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLink {
    pub name: String,
    pub mtu: u32,
    pub kind: DesiredKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredKind {
    /// A network's bridge, up, carrying the gateway address.
    Bridge { network: String, gateway: Ipv4Addr, prefix: u8, gateway6: Option<(Ipv6Addr, u8)> },
    /// The host end of a running container's veth pair: a port of `bridge`, up. If it is
    /// gone, the pair is re-made into the container's namespace (`endpoint` says how).
    HostVeth { bridge: String, container_id: String, container: String, endpoint: EndpointPlan },
    /// An overlay network's VXLAN device: a port of `bridge`, up (its local VTEP and
    /// underlay device come from the cluster's configuration when it is made).
    Vxlan { network: String, bridge: String, vni: u32, port: u16 },
    /// A segment bridge of a big network: up, carrying the gateway address.
    Segment { network: String, segment: Segment },
    /// A macvlan network's host shim (its own driver ensures it; listed so that it is not
    /// taken for a stray).
    Shim { network: String },
    /// May or may not exist, neither missing nor stray: the host end of a container being
    /// created or released right now, the default network's bridge while no container
    /// uses it.
    Transient,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub links: Vec<DesiredLink>,
}

impl Desired {
    pub fn get(&self, name: &str) -> Option<&DesiredLink> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn names(&self) -> HashSet<&str> {
        self.links.iter().map(|l| l.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_carry_the_root_tag() {
        let b = bridge_name("ab12", "0123456789abcdef");
        let v = host_veth_name("ab12", "fedcba9876543210");
        assert_eq!(b, "nwbab12012345");
        assert_eq!(v, "nwvab12fedcba98");
        assert!(b.len() <= 15 && v.len() <= 15);
        assert!(is_ours("ab12", &b) && is_ours("ab12", &v));
        assert!(!is_ours("ab13", &b));
        assert!(!is_ours("ab12", "eth0"));
    }

    #[test]
    fn a_bridge_mac_is_stable_per_name_unicast_and_local() {
        let a = bridge_mac("nwb1234abcdef01").expect("/proc says");
        assert_eq!(Some(a), bridge_mac("nwb1234abcdef01"), "the same bridge gets the same address");
        assert_ne!(Some(a), bridge_mac("nwb1234abcdef02"));
        assert_eq!(a[0] & 0x03, 0x02, "unicast, locally administered: {a:02x?}");
    }

    #[test]
    fn segments_fill_in_order_and_stop_within_the_bridge_port_limit() {
        assert_eq!(pick_segment(&[]), Some(0));
        assert_eq!(pick_segment(&[(0, 499)]), Some(0));
        assert_eq!(pick_segment(&[(0, 500)]), Some(1));
        assert_eq!(pick_segment(&[(0, 500), (1, 500), (2, 3)]), Some(2));
        // A segment emptied by releases is filled again before a new one is made.
        assert_eq!(pick_segment(&[(0, 500), (2, 500)]), Some(1));
        // Half a CPU's default backlog per L2 domain; two digits name a segment.
        const { assert!(SEGMENT_PORTS <= 500 && MAX_SEGMENTS < 100) };
        let full: Vec<(u32, u32)> = (0..=MAX_SEGMENTS).map(|s| (s, SEGMENT_PORTS)).collect();
        assert_eq!(pick_segment(&full), None);
        // The spare: where the next one goes, while nobody is there.
        assert_eq!(spare_segment(&[(0, 500)]), Some(1));
        assert_eq!(spare_segment(&[(0, 499)]), None);
        assert_eq!(spare_segment(&[(0, 500), (1, 2)]), None);
        assert_eq!(spare_segment(&[(0, 500), (1, 500)]), Some(2));
        let n = crate::desired::tests::net("0123456789ab", "big", crate::model::Driver::Bridge, false);
        let s = segment("ab12", &n, 7);
        assert_eq!(s.bridge, "nwbab1201234507");
        assert!(is_ours("ab12", &s.bridge));
        assert_ne!(s.bridge, n.bridge);
    }
}
