//! A small synchronous rtnetlink client.
//!
//! netwright is a short-lived CLI: a blocking socket per namespace is simpler and
//! cheaper than an async runtime, and keeps the process single-threaded, which
//! matters because `setns` and `fork` act on the calling thread only.
//! Several requests can go out in one `send` (a batch) and are acknowledged in order.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData,
    InfoPortKind, InfoVeth, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// One link as netwright sees it in a dump.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub mtu: u32,
    pub up: bool,
    /// Operationally up (IFF_RUNNING: carrier, and the kernel has activated its queue).
    pub running: bool,
    pub mac: Option<[u8; 6]>,
}

/// One IPv4/IPv6 route from the main table.
#[derive(Debug, Clone)]
pub struct Route {
    pub dst: Option<ipnet::IpNet>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// One address on a link.
#[derive(Debug, Clone)]
pub struct Addr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Changes to links and addresses in the calling thread's namespace (RTMGRP_LINK,
/// RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR): `wait` returns when something changed.
pub struct LinkWatch {
    sock: Socket,
    buf: Vec<u8>,
}

impl LinkWatch {
    pub fn subscribe() -> io::Result<LinkWatch> {
        const GROUPS: u32 = 0x1 | 0x10 | 0x100;
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, GROUPS))?;
        Ok(LinkWatch { sock, buf: vec![0u8; 64 * 1024] })
    }

    /// Blocks until the kernel announces a change (one datagram of them).
    pub fn wait(&mut self) -> io::Result<()> {
        self.sock.recv(&mut &mut self.buf[..], 0)?;
        Ok(())
    }
}

/// Requests per write in [`Netlink::batch`]: their acknowledgements (errors carry the
/// request back) stay well inside the socket's receive buffer.
pub const BATCH_CHUNK: usize = 64;

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Parameters of a veth pair whose peer is created directly inside another namespace.
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    pub peer_netns: RawFd,
    pub peer_mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Bridge to enslave the host end to (which is then brought up).
    pub master: Option<u32>,
    /// Bridge port isolation: isolated ports cannot talk to each other, only to the
    /// bridge itself (icc=false, done by the kernel's bridge without any rule).
    pub isolated: bool,
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { sock, seq: 1, buf: super::recv_buffer() })
    }

    fn encode(&mut self, out: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let start = out.len();
        out.resize(start + packet.buffer_len(), 0);
        packet.serialize(&mut out[start..]);
        self.seq
    }

    /// Sends the requests in as few writes as possible and waits for all acknowledgements.
    /// Returns the first error, tagged with the index of the request that failed.
    ///
    /// At most [`BATCH_CHUNK`] requests go out per write: the kernel queues every
    /// acknowledgement on our socket while it works through the write, and past the
    /// socket's buffer it drops them (an overlay sync can be hundreds of entries).
    pub fn batch(&mut self, reqs: Vec<(RouteNetlinkMessage, u16)>) -> Result<(), (usize, io::Error)> {
        let mut first_err: Option<(usize, io::Error)> = None;
        let mut base = 0;
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let chunk: Vec<_> = reqs.by_ref().take(BATCH_CHUNK).collect();
            let n = chunk.len();
            if let Err((i, e)) = self.batch_chunk(chunk)
                && first_err.is_none()
            {
                first_err = Some((base + i, e));
            }
            base += n;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn batch_chunk(&mut self, reqs: Vec<(RouteNetlinkMessage, u16)>) -> Result<(), (usize, io::Error)> {
        let mut out = Vec::with_capacity(512 * reqs.len());
        let mut seqs = Vec::with_capacity(reqs.len());
        for (msg, flags) in reqs {
            seqs.push(self.encode(&mut out, msg, flags | NLM_F_ACK));
        }
        self.sock.send(&out, 0).map_err(|e| (0, e))?;
        let mut pending = seqs.len();
        let mut first_err: Option<(usize, io::Error)> = None;
        while pending > 0 {
            let msgs = self.recv_msgs().map_err(|e| (0, e))?;
            for m in msgs {
                let seq = m.header.sequence_number;
                if let NetlinkPayload::Error(e) = m.payload {
                    let Some(idx) = seqs.iter().position(|s| *s == seq) else { continue };
                    pending -= 1;
                    if let Some(code) = e.code
                        && first_err.is_none()
                    {
                        first_err = Some((idx, io::Error::from_raw_os_error(-code.get())));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One request that expects only an acknowledgement.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.batch(vec![(msg, flags)]).map_err(|(_, e)| e)
    }

    /// A request answered by data (a dump, or a get with `flags` = 0).
    pub fn query(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        let seq = self.encode(&mut out, msg, flags);
        self.sock.send(&out, 0)?;
        let mut result = Vec::new();
        loop {
            for m in self.recv_msgs()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        result.push(inner);
                        if m.header.flags & netlink_packet_core::NLM_F_MULTIPART == 0 {
                            return Ok(result);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(result),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                        None => return Ok(result),
                    },
                    _ => {}
                }
            }
        }
    }

    fn recv_msgs(&mut self) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        let n = loop {
            match super::recv_into(self.sock.as_raw_fd(), &mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        let mut msgs = Vec::new();
        let mut off = 0;
        while off < n {
            let len = NetlinkBuffer::new_checked(&self.buf[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                .length() as usize;
            if len == 0 {
                break;
            }
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            msgs.push(m);
            off += (len + 3) & !3;
        }
        Ok(msgs)
    }

    // ---- links ----

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let msgs = self.query(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, or None when there is none.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.query(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An ifb device (a place to shape what arrives on another device), up; returns its index.
    pub fn ensure_ifb(&mut self, name: &str) -> io::Result<u32> {
        if self.link_by_name(name)?.is_none() {
            let mut msg = LinkMessage::default();
            msg.attributes.push(LinkAttribute::IfName(name.to_string()));
            msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
            match self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
        }
        let link = self.link_by_name(name)?.ok_or_else(|| io::Error::other(format!("{name} vanished")))?;
        self.request(Self::set_up_msg(link.index), 0)?;
        Ok(link.index)
    }

    /// Creates a bridge with the address `mac` (crate::plan::bridge_mac), said at creation.
    /// Without one a Linux bridge takes the lowest address among its ports and changes it
    /// when that port leaves: the gateway's MAC would move under every container that has
    /// it cached (their frames to the old one are flooded and never reach the host until the
    /// neighbour entry is probed again, seconds later). A set address stays (NET_ADDR_SET).
    pub fn create_bridge(&mut self, name: &str, mtu: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a veth pair: the host end enslaved to `master` and up, the peer inside
    /// `peer_netns` with its name and MAC already set — one netlink request.
    pub fn create_veth(&mut self, spec: &VethSpec) -> io::Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(spec.peer_name.to_string()));
        if let Some(mtu) = spec.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        peer.attributes.push(LinkAttribute::NetNsFd(spec.peer_netns));
        // One queue each way on both ends, said at creation. Without it the kernel gives a
        // veth one queue per possible CPU and then cuts the live count to one (veth_init_queues
        // → netif_set_real_num_tx_queues), waiting for an expedited RCU grace period per end:
        // that wait was ~90 % of the time a veth pair took to make (sched_switch traced; 0.3
        // to 20 ms on this 2-CPU VM). The datapath is the same: one queue is what it ran on.
        peer.attributes.extend([LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]);
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(spec.host_name.to_string()));
        msg.attributes.extend([LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]);
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = spec.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let mut reqs = vec![(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)];
        if spec.master.is_some() {
            let mut by_name = LinkMessage::default();
            by_name.attributes.push(LinkAttribute::IfName(spec.host_name.to_string()));
            let mut gen_mode = by_name.clone();
            gen_mode.attributes.push(no_ipv6_link_local());
            let mut up = by_name;
            up.header.flags = LinkFlags::Up;
            up.header.change_mask = LinkFlags::Up;
            if spec.isolated {
                // Port options travel as link info of the port, on NEWLINK of an existing device.
                let mut port = LinkMessage::default();
                port.attributes.push(LinkAttribute::IfName(spec.host_name.to_string()));
                port.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::PortKind(InfoPortKind::Bridge),
                    LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(true)])),
                ]));
                reqs.push((RouteNetlinkMessage::NewLink(port), 0));
            }
            // Below IPv6's minimum MTU the kernel gives the device no IPv6 at all (and
            // refuses the address generation mode): nothing to turn off then.
            if spec.mtu.is_none_or(|m| m >= IPV6_MIN_MTU) {
                // A bridge port needs no IPv6, and goes up without it. With it, each port
                // had a link-local address (DAD, MLD and router solicitations the bridge
                // floods to every other container) and a multicast route in the host's IPv6
                // table, which the kernel walks whole whenever a device's carrier or state
                // changes (rt6_sync_up, rt6_sync_down_dev): at 10,000 containers that walk
                // was 3 ms of each attach (0.2 at N = 0). No netlink attribute turns IPv6
                // off; the sysctl (~0.1 ms) comes between two batches, and the address
                // generation mode in the first is what is left if the sysctl cannot be
                // written.
                reqs.push((RouteNetlinkMessage::SetLink(gen_mode), 0));
                self.batch(reqs).map_err(|(_, e)| e)?;
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", spec.host_name), "1");
                reqs = Vec::new();
            }
            reqs.push((RouteNetlinkMessage::SetLink(up), 0));
        }
        self.batch(reqs).map_err(|(_, e)| e)
    }

    /// A macvlan on `parent`, created directly inside `netns` (or here when None), with
    /// its name, MAC and MTU set — one request.
    pub fn create_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: &str,
        netns: Option<RawFd>,
        mac: Option<[u8; 6]>,
        mtu: u32,
    ) -> io::Result<()> {
        let mode = match mode {
            "private" => MacVlanMode::Private,
            "vepa" => MacVlanMode::Vepa,
            "passthru" => MacVlanMode::Passthrough,
            _ => MacVlanMode::Bridge,
        };
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(fd) = netns {
            msg.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// An 802.1Q sub-interface `name` of `parent` with VLAN `id`, up.
    pub fn create_vlan(&mut self, name: &str, parent: u32, id: u16) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// A route to `dst` out of device `oif` (scope link), replacing any equal one.
    pub fn add_route_dev(&mut self, dst: ipnet::Ipv4Net, oif: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: AddressFamily::Inet,
            destination_prefix_length: dst.prefix_len(),
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Link,
            kind: RouteType::Unicast,
            ..Default::default()
        };
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst.network())));
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE)
    }

    /// A host route (/32 or /128) to `dst` out of device `oif`, scope link: to add
    /// (NewRoute) or to delete (DelRoute).
    pub fn host_route_msg(dst: IpAddr, oif: u32, add: bool) -> RouteNetlinkMessage {
        let (family, len, addr) = match dst {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: family,
            destination_prefix_length: len,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Link,
            kind: RouteType::Unicast,
            ..Default::default()
        };
        msg.attributes.push(RouteAttribute::Destination(addr));
        msg.attributes.push(RouteAttribute::Oif(oif));
        if add { RouteNetlinkMessage::NewRoute(msg) } else { RouteNetlinkMessage::DelRoute(msg) }
    }

    pub fn set_up_msg(index: u32) -> RouteNetlinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        RouteNetlinkMessage::SetLink(msg)
    }

    /// No IPv6 link-local address (and so no DAD, router solicitation or MLD) on `index`:
    /// for a device of an IPv4-only network, set before it goes up.
    pub fn no_ipv6_link_local_msg(index: u32) -> RouteNetlinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(no_ipv6_link_local());
        RouteNetlinkMessage::SetLink(msg)
    }

    /// Enslaves `index` to the bridge `master` (a port whose bridge was re-created).
    pub fn set_master_msg(index: u32, master: u32) -> RouteNetlinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(master));
        RouteNetlinkMessage::SetLink(msg)
    }

    /// Bridge port isolation on an existing port (port options travel as the port's link
    /// info on NEWLINK of an existing device).
    pub fn port_isolated_msg(index: u32, isolated: bool) -> RouteNetlinkMessage {
        let mut port = LinkMessage::default();
        port.header.index = index;
        port.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(isolated)])),
        ]));
        RouteNetlinkMessage::NewLink(port)
    }

    /// Sets the MAC address of `index`.
    pub fn set_mac_msg(index: u32, mac: [u8; 6]) -> RouteNetlinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        RouteNetlinkMessage::SetLink(msg)
    }

    pub fn set_down_msg(index: u32) -> RouteNetlinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        RouteNetlinkMessage::SetLink(msg)
    }

    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r,
        }
    }

    // ---- addresses and routes ----

    pub fn add_addr_msg(index: u32, addr: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        if prefix < 31 {
            let net = ipnet::Ipv4Net::new(addr, prefix).expect("prefix checked by caller");
            msg.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
        }
        RouteNetlinkMessage::NewAddress(msg)
    }

    /// An IPv6 address, usable at once (no duplicate address detection: a container must be
    /// reachable the moment it starts, and IPAM already made the address unique).
    pub fn add_addr6_msg(index: u32, addr: std::net::Ipv6Addr, prefix: u8) -> RouteNetlinkMessage {
        Self::addr6_msg(index, addr, prefix, false)
    }

    /// The IPv6 address without the route to its prefix the kernel would add with it
    /// (IFA_F_NOPREFIXROUTE): for a container on a segment bridge, whose subnet is not
    /// all on its link (crate::plan::Segment).
    pub fn add_addr6_off_link_msg(index: u32, addr: std::net::Ipv6Addr, prefix: u8) -> RouteNetlinkMessage {
        Self::addr6_msg(index, addr, prefix, true)
    }

    fn addr6_msg(index: u32, addr: std::net::Ipv6Addr, prefix: u8, no_prefix_route: bool) -> RouteNetlinkMessage {
        use netlink_packet_route::address::{AddressFlags, AddressHeaderFlags};
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V6(addr)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V6(addr)));
        let flags =
            if no_prefix_route { AddressFlags::Nodad | AddressFlags::Noprefixroute } else { AddressFlags::Nodad };
        msg.attributes.push(AddressAttribute::Flags(flags));
        RouteNetlinkMessage::NewAddress(msg)
    }

    /// A route to `dst` through `gateway` out of `oif`.
    pub fn route_via_msg(dst: ipnet::IpNet, gateway: IpAddr, oif: u32) -> RouteNetlinkMessage {
        let mut msg = Self::via(gateway, oif);
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.attributes.push(RouteAttribute::Destination(match dst.addr() {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
        RouteNetlinkMessage::NewRoute(msg)
    }

    /// The host answers neighbour solicitations for `addr` on `index` (a proxy entry, as
    /// `ip -6 neigh add proxy ADDR dev DEV`), or no longer (`add` false).
    pub fn ndp_proxy_msg(index: u32, addr: std::net::Ipv6Addr, add: bool) -> RouteNetlinkMessage {
        use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage};
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Proxy;
        msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(addr)));
        if add { RouteNetlinkMessage::NewNeighbour(msg) } else { RouteNetlinkMessage::DelNeighbour(msg) }
    }

    pub fn addrs(&mut self) -> io::Result<Vec<Addr>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Unspec;
        let msgs = self.query(RouteNetlinkMessage::GetAddress(req), NLM_F_DUMP)?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    let addr = a
                        .attributes
                        .iter()
                        .find_map(|at| match at {
                            AddressAttribute::Local(ip) => Some(*ip),
                            _ => None,
                        })
                        .or_else(|| {
                            a.attributes.iter().find_map(|at| match at {
                                AddressAttribute::Address(ip) => Some(*ip),
                                _ => None,
                            })
                        })?;
                    Some(Addr { index: a.header.index, addr, prefix: a.header.prefix_len })
                }
                _ => None,
            })
            .collect())
    }

    /// The default route of `gateway`'s family through it on `oif`.
    pub fn default_route_msg(gateway: impl Into<IpAddr>, oif: u32) -> RouteNetlinkMessage {
        RouteNetlinkMessage::NewRoute(Self::via(gateway.into(), oif))
    }

    /// A main-table route through `gateway` out of `oif`, to everywhere (until given a
    /// destination).
    fn via(gateway: IpAddr, oif: u32) -> RouteMessage {
        let (family, gw) = match gateway {
            IpAddr::V4(a) => (AddressFamily::Inet, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, RouteAddress::Inet6(a)),
        };
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: family,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..Default::default()
        };
        msg.attributes.push(RouteAttribute::Gateway(gw));
        msg.attributes.push(RouteAttribute::Oif(oif));
        msg
    }

    /// IPv4 routes of the main table.
    pub fn routes_v4(&mut self) -> io::Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let msgs = self.query(RouteNetlinkMessage::GetRoute(req), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            let table = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(r.header.table as u32);
            if table != RouteHeader::RT_TABLE_MAIN as u32 {
                continue;
            }
            let mut route = Route { dst: None, gateway: None, oif: None };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                        route.dst =
                            ipnet::Ipv4Net::new(*ip, r.header.destination_prefix_length).ok().map(ipnet::IpNet::V4);
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    _ => {}
                }
            }
            out.push(route);
        }
        Ok(out)
    }
}

impl Netlink {
    /// `ip route get DST`: the kernel's own routing decision (oif, gateway, source).
    pub fn route_get(&mut self, dst: Ipv4Addr) -> io::Result<Route> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        req.header.destination_prefix_length = 32;
        req.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        let msgs = self.query(RouteNetlinkMessage::GetRoute(req), 0)?;
        let mut route = Route { dst: None, gateway: None, oif: None };
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            for a in r.attributes {
                match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(IpAddr::V4(ip)),
                    RouteAttribute::Oif(i) => route.oif = Some(i),
                    _ => {}
                }
            }
        }
        Ok(route)
    }

    /// The bridge port (ifindex) a MAC was learned on, from the bridge FDB.
    pub fn fdb_port(&mut self, mac: [u8; 6]) -> io::Result<Option<u32>> {
        use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        let msgs = self.query(RouteNetlinkMessage::GetNeighbour(req), NLM_F_DUMP)?;
        Ok(msgs.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => n
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l[..] == mac[..]))
                .then_some(n.header.ifindex),
            _ => None,
        }))
    }
}

/// IPv6 needs links of at least this MTU (RFC 8200); below it Linux disables IPv6 on a device.
pub const IPV6_MIN_MTU: u32 = 1280;

fn no_ipv6_link_local() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)])])
}

fn parse_link(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        master: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        running: l.header.flags.contains(LinkFlags::Running),
        mac: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                link.mac = Some(mac.try_into().expect("length checked"));
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
