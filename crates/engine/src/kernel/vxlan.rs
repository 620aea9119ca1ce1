//! VXLAN devices and their forwarding entries over rtnetlink: what `ip link add … type
//! vxlan`, `bridge fdb append MAC dev vxlan dst VTEP` and `ip neigh add IP lladdr MAC dev
//! vxlan nud permanent` do, as messages the overlay driver batches.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::Netlink;

/// A VXLAN device as the overlay driver makes it.
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub port: u16,
    /// This host's VTEP address, and the underlay device carrying it: without `dev` the
    /// kernel sizes the device for a 1500-byte underlay, whatever the real one is.
    pub local: Ipv4Addr,
    pub dev: u32,
    pub mtu: u32,
}

/// One forwarding entry of a remote endpoint: its MAC lives behind `vtep`, its IP has `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub vtep: Ipv4Addr,
}

impl Netlink {
    /// `ip link add NAME type vxlan id VNI dstport PORT local VTEP dev DEV nolearning proxy`:
    /// no learning and no flood entry (every remote MAC is written from etcd), ARP answered
    /// from the neighbour table (proxy) so broadcasts never cross the underlay.
    pub fn create_vxlan(&mut self, s: &VxlanSpec) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(s.name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(s.mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(s.vni),
                InfoVxlan::Port(s.port),
                InfoVxlan::Local(s.local),
                InfoVxlan::Link(s.dev),
                InfoVxlan::Learning(false),
                InfoVxlan::Proxy(true),
            ])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// The permanent entries on VXLAN device `index`: its FDB (MAC → VTEP) joined with its
    /// neighbour table (IP → MAC).
    pub fn vxlan_entries(&mut self, index: u32) -> io::Result<Vec<Entry>> {
        let mut fdb: Vec<([u8; 6], Ipv4Addr)> = Vec::new();
        for m in self.query(RouteNetlinkMessage::GetNeighbour(neigh_msg(AddressFamily::Bridge, 0)), NLM_F_DUMP)? {
            let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
            if n.header.ifindex != index || !n.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            if let (Some(mac), Some(dst)) = (lladdr(&n), dst(&n).and_then(|d| ipv4(&d))) {
                fdb.push((mac, dst));
            }
        }
        let mut out = Vec::new();
        for m in self.query(RouteNetlinkMessage::GetNeighbour(neigh_msg(AddressFamily::Inet, 0)), NLM_F_DUMP)? {
            let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
            if n.header.ifindex != index || n.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(mac), Some(NeighbourAddress::Inet(ip))) = (lladdr(&n), dst(&n)) {
                // A neighbour without its FDB entry (or the reverse) is half an entry: the
                // VTEP 0.0.0.0 makes it differ from every desired one, so it is rewritten.
                let vtep = fdb.iter().find(|(m, _)| *m == mac).map(|(_, v)| *v).unwrap_or(Ipv4Addr::UNSPECIFIED);
                out.push(Entry { mac, ip, vtep });
            }
        }
        // FDB entries whose neighbour is missing.
        for (mac, vtep) in fdb {
            if !out.iter().any(|e| e.mac == mac) {
                out.push(Entry { mac, ip: Ipv4Addr::UNSPECIFIED, vtep });
            }
        }
        Ok(out)
    }

    /// The two messages that add (or replace) an entry on VXLAN device `index`.
    pub fn vxlan_entry_add(index: u32, e: &Entry) -> Vec<(RouteNetlinkMessage, u16)> {
        vec![
            (RouteNetlinkMessage::NewNeighbour(fdb_msg(index, e)), NLM_F_CREATE | NLM_F_REPLACE),
            (RouteNetlinkMessage::NewNeighbour(ip_msg(index, e)), NLM_F_CREATE | NLM_F_REPLACE),
        ]
    }

    /// The messages that remove an entry (the halves that exist).
    pub fn vxlan_entry_del(index: u32, e: &Entry) -> Vec<(RouteNetlinkMessage, u16)> {
        let mut v = Vec::new();
        if e.vtep != Ipv4Addr::UNSPECIFIED {
            v.push((RouteNetlinkMessage::DelNeighbour(fdb_msg(index, e)), 0));
        }
        if e.ip != Ipv4Addr::UNSPECIFIED {
            v.push((RouteNetlinkMessage::DelNeighbour(ip_msg(index, e)), 0));
        }
        v
    }
}

fn neigh_msg(family: AddressFamily, index: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m
}

/// `bridge fdb append MAC dev VXLAN dst VTEP self permanent`.
fn fdb_msg(index: u32, e: &Entry) -> NeighbourMessage {
    let mut m = neigh_msg(AddressFamily::Bridge, index);
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(e.vtep)));
    m
}

/// `ip neigh replace IP lladdr MAC dev VXLAN nud permanent`.
fn ip_msg(index: u32, e: &Entry) -> NeighbourMessage {
    let mut m = neigh_msg(AddressFamily::Inet, index);
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(e.ip)));
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    m
}

fn lladdr(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => b[..].try_into().ok(),
        _ => None,
    })
}

/// An IPv4 destination: in an AF_BRIDGE (FDB) message the crate cannot know the address's
/// family and hands over the raw four bytes.
fn ipv4(d: &NeighbourAddress) -> Option<Ipv4Addr> {
    match d {
        NeighbourAddress::Inet(ip) => Some(*ip),
        NeighbourAddress::Other(b) if b.len() == 4 => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        _ => None,
    }
}

fn dst(n: &NeighbourMessage) -> Option<NeighbourAddress> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(d) => Some(d.clone()),
        _ => None,
    })
}
