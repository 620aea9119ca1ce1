//! The connection tracking table over ctnetlink (what `conntrack -L` prints): each
//! connection's original and reply tuples, its state and the NAT that applies. Read-only.

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::nftables::{Nftables, attrs_of, recv_msgs};

/// NFNL_SUBSYS_CTNETLINK and its IPCTNL_MSG_CT_GET.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
// enum ctattr_tuple / ctattr_ip / ctattr_l4proto
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
// enum ip_conntrack_status
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;
const IPS_SRC_NAT: u32 = 1 << 4;
const IPS_DST_NAT: u32 = 1 << 5;

/// One direction of a connection: what the packets of that direction carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tuple {
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    pub sport: u16,
    pub dport: u16,
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let ip = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
        write!(f, "{}:{} → {}:{}", ip(self.src), self.sport, ip(self.dst), self.dport)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Conn {
    /// IPPROTO_* (6 tcp, 17 udp, 1 icmp).
    pub proto: u8,
    pub original: Tuple,
    pub reply: Tuple,
    /// TCP state (ESTABLISHED, TIME_WAIT, ...), empty for other protocols.
    pub state: String,
    pub snat: bool,
    pub dnat: bool,
    pub assured: bool,
    pub seen_reply: bool,
    /// Seconds until the entry expires.
    pub timeout: u32,
}

/// Every IPv4 connection tracked in the calling thread's network namespace.
pub fn dump() -> io::Result<Vec<Conn>> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    Nftables::header(
        &mut out,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        libc::AF_INET as u8,
        0,
        &[],
    );
    sock.send(&out, 0)?;
    let mut buf = super::recv_buffer();
    let mut conns = Vec::new();
    loop {
        for m in recv_msgs(&sock, &mut buf)? {
            match m.ty {
                NLMSG_DONE => return Ok(conns),
                NLMSG_ERROR if m.err != 0 => return Err(io::Error::from_raw_os_error(-m.err)),
                NLMSG_ERROR => {}
                _ => conns.push(parse(m.payload.get(4..).unwrap_or_default())),
            }
        }
    }
}

fn be16(v: &[u8]) -> u16 {
    v.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0)
}

fn be32(v: &[u8]) -> u32 {
    v.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0)
}

fn ipv4(v: &[u8]) -> Option<Ipv4Addr> {
    (v.len() == 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
}

fn tuple(v: &[u8], proto: &mut u8) -> Tuple {
    let mut t = Tuple::default();
    for (ty, v) in attrs_of(v) {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, v) in attrs_of(v) {
                    match ty {
                        CTA_IP_V4_SRC => t.src = ipv4(v),
                        CTA_IP_V4_DST => t.dst = ipv4(v),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, v) in attrs_of(v) {
                    match ty {
                        CTA_PROTO_NUM => *proto = v.first().copied().unwrap_or(0),
                        CTA_PROTO_SRC_PORT => t.sport = be16(v),
                        CTA_PROTO_DST_PORT => t.dport = be16(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// The kernel's TCP conntrack states, by number (enum tcp_conntrack).
const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

fn parse(payload: &[u8]) -> Conn {
    let mut c = Conn::default();
    for (ty, v) in attrs_of(payload) {
        match ty {
            CTA_TUPLE_ORIG => c.original = tuple(v, &mut c.proto),
            CTA_TUPLE_REPLY => c.reply = tuple(v, &mut c.proto),
            CTA_STATUS => {
                let s = be32(v);
                c.snat = s & IPS_SRC_NAT != 0;
                c.dnat = s & IPS_DST_NAT != 0;
                c.assured = s & IPS_ASSURED != 0;
                c.seen_reply = s & IPS_SEEN_REPLY != 0;
            }
            CTA_PROTOINFO => {
                for (ty, v) in attrs_of(v) {
                    if ty == CTA_PROTOINFO_TCP {
                        for (ty, v) in attrs_of(v) {
                            if ty == CTA_PROTOINFO_TCP_STATE {
                                let n = v.first().copied().unwrap_or(0) as usize;
                                c.state = TCP_STATES.get(n).unwrap_or(&"?").to_string();
                            }
                        }
                    }
                }
            }
            CTA_TIMEOUT => c.timeout = be32(v),
            _ => {}
        }
    }
    c
}

/// A connection appearing or ending, as the kernel announces it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Event {
    New(Conn),
    Destroy(Conn),
}

/// The kernel's conntrack events (NFNLGRP_CONNTRACK_NEW and _DESTROY) in the calling
/// thread's network namespace: what `conntrack -E` shows. Blocking reads.
pub struct Events {
    sock: Socket,
    buf: Vec<u8>,
}

/// Netlink multicast groups NFNLGRP_CONNTRACK_NEW (1) and NFNLGRP_CONNTRACK_DESTROY (3).
const GROUPS_NEW_DESTROY: u32 = (1 << 0) | (1 << 2);
/// IPCTNL_MSG_CT_NEW and IPCTNL_MSG_CT_DELETE (the message type's low byte).
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

impl Events {
    pub fn subscribe() -> io::Result<Events> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind(&SocketAddr::new(0, GROUPS_NEW_DESTROY))?;
        Ok(Events { sock, buf: super::recv_buffer() })
    }

    /// The next batch of events (waits for at least one message).
    pub fn recv(&mut self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        for m in recv_msgs(&self.sock, &mut self.buf)? {
            let payload = m.payload.get(4..).unwrap_or_default();
            match m.ty & 0xff {
                IPCTNL_MSG_CT_NEW if m.ty >> 8 == NFNL_SUBSYS_CTNETLINK => out.push(Event::New(parse(payload))),
                IPCTNL_MSG_CT_DELETE if m.ty >> 8 == NFNL_SUBSYS_CTNETLINK => out.push(Event::Destroy(parse(payload))),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The table's fill level: (entries, nf_conntrack_max).
pub fn fill() -> (u64, u64) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{f}")).ok().and_then(|s| s.trim().parse().ok())
    };
    (read("nf_conntrack_count").unwrap_or(0), read("nf_conntrack_max").unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut b = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        b.extend(ty.to_ne_bytes());
        b.extend(v);
        b.resize((b.len() + 3) & !3, 0);
        b
    }

    #[test]
    fn a_masqueraded_tcp_connection_parses_with_both_tuples() {
        let tup = |s: [u8; 4], d: [u8; 4], sp: u16, dp: u16| {
            let ip = [nla(CTA_IP_V4_SRC, &s), nla(CTA_IP_V4_DST, &d)].concat();
            let proto = [
                nla(CTA_PROTO_NUM, &[6]),
                nla(CTA_PROTO_SRC_PORT, &sp.to_be_bytes()),
                nla(CTA_PROTO_DST_PORT, &dp.to_be_bytes()),
            ]
            .concat();
            [nla(CTA_TUPLE_IP | 0x8000, &ip), nla(CTA_TUPLE_PROTO | 0x8000, &proto)].concat()
        };
        let tcp = nla(CTA_PROTOINFO_TCP | 0x8000, &nla(CTA_PROTOINFO_TCP_STATE, &[3]));
        let payload = [
            nla(CTA_TUPLE_ORIG | 0x8000, &tup([172, 17, 0, 2], [192, 168, 1, 100], 40000, 80)),
            nla(CTA_TUPLE_REPLY | 0x8000, &tup([192, 168, 1, 100], [192, 168, 1, 10], 80, 40000)),
            nla(CTA_STATUS, &(IPS_SRC_NAT | IPS_SEEN_REPLY | IPS_ASSURED).to_be_bytes()),
            nla(CTA_PROTOINFO | 0x8000, &tcp),
            nla(CTA_TIMEOUT, &431999u32.to_be_bytes()),
        ]
        .concat();
        let c = parse(&payload);
        assert_eq!(c.proto, 6);
        assert_eq!(c.original.to_string(), "172.17.0.2:40000 → 192.168.1.100:80");
        assert_eq!(c.reply.to_string(), "192.168.1.100:80 → 192.168.1.10:40000");
        assert!(c.snat && !c.dnat && c.assured && c.seen_reply);
        assert_eq!((c.state.as_str(), c.timeout), ("ESTABLISHED", 431999));
    }
}
