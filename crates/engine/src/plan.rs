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

/// True for a device any netwright root may have made (by its name's prefix).
pub fn is_netwright_device(name: &str) -> bool {
    ["nwb", "nwv", "nwm", "nwi", "nwx"].iter().any(|p| name.starts_with(p)) && name.len() >= 7
}

/// True for devices this root created (and so may delete when the store no longer has them).
pub fn is_ours(tag: &str, name: &str) -> bool {
    ["nwb", "nwv", "nwm", "nwi", "nwx"].iter().any(|p| name.starts_with(p)) && name.get(3..7) == Some(tag)
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
    }
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
}
