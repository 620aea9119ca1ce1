//! The kernel's own account of where packets go: nf_tables tracing. A short-lived table
//! marks one connection (`meta nftrace set 1`, matched on its conntrack tuple, so both
//! directions are marked); the kernel then reports every base chain and rule those
//! packets meet — netwright's and anyone else's — to NFNLGRP_NFTRACE listeners.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use serde::Serialize;

use super::nftables::{self as nft, Batch, Expr, Nftables, attrs_of, cstr, recv_msgs};

const NFNLGRP_NFTRACE: u32 = 9;
/// After conntrack (-200), before every NAT chain (-100): the first packet is marked
/// before anything rewrites it.
const PRIORITY: i32 = -150;

/// The connection to follow; unset fields match anything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub proto: u8,
    pub saddr: Option<Ipv4Addr>,
    pub daddr: Option<Ipv4Addr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// What one trace message says: a packet met a rule, a chain's policy or a return.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The kernel's id of the packet (same for every hook it passes).
    pub id: u32,
    pub family: u8,
    pub table: String,
    pub chain: String,
    /// "rule", "policy" or "return".
    pub kind: &'static str,
    pub handle: Option<u64>,
    pub verdict: Option<String>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub packet: Option<Packet>,
    /// A "reached the end of the rules" marker (no rule, verdict continue): kept for the
    /// headers it carries, says nothing the policy event after it does not.
    #[serde(skip)]
    pub end_marker: bool,
}

/// The headers the kernel copied into the trace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP flags, e.g. "SYN ACK".
    pub flags: String,
}

/// An armed trace: the marking table exists and the socket listens. Dropping it
/// removes the table.
pub struct Tracer {
    table: String,
    sock: Socket,
    buf: Vec<u8>,
}

impl Tracer {
    /// Listens first, then installs the marking rule, in the calling thread's netns.
    pub fn arm(table: &str, f: &Filter) -> Result<Tracer> {
        let mut sock = Socket::new(NETLINK_NETFILTER).context("opening a netfilter socket")?;
        sock.bind(&SocketAddr::new(0, 0))?;
        sock.add_membership(NFNLGRP_NFTRACE).context("listening to nftables traces")?;
        let _ = sock.set_rx_buf_sz(4 << 20);
        let mut b = Batch::new(nft::NFPROTO_IPV4);
        b.add_table(table)
            .add_base_chain(table, "pre", "filter", nft::hook::PREROUTING, PRIORITY)
            .add_base_chain(table, "out", "filter", nft::hook::OUTPUT, PRIORITY)
            .flush_chain(table, "pre")
            .flush_chain(table, "out");
        let rule = marking_rule(f);
        b.add_rule(table, "pre", "netwright trace --probe: follow this connection", &rule);
        b.add_rule(table, "out", "netwright trace --probe: follow this connection", &rule);
        Nftables::open()?.commit(&b).map_err(|(i, e)| anyhow!("installing the trace rule (message {i}): {e}"))?;
        Ok(Tracer { table: table.into(), sock, buf: vec![0; 256 * 1024] })
    }

    /// Events until `deadline`, or until `settle` passes without one after the first.
    pub fn collect(&mut self, deadline: Instant, settle: Duration) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        let mut last = None::<Instant>;
        loop {
            let now = Instant::now();
            let mut until = deadline;
            if let Some(l) = last {
                until = until.min(l + settle);
            }
            if now >= until {
                return out;
            }
            let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = (until - now).as_millis().max(1) as i32;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                continue;
            }
            let Ok(msgs) = recv_msgs(&self.sock, &mut self.buf) else { return out };
            for m in msgs {
                if m.ty == (10 << 8) | nft::NFT_MSG_TRACE
                    && let Some(e) = parse_event(&m.payload)
                    && e.table != self.table
                {
                    out.push(e);
                    last = Some(Instant::now());
                }
            }
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = remove(&self.table);
    }
}

/// Deletes a marking table left by a probe that was killed.
pub fn remove(table: &str) -> Result<()> {
    let mut nft = Nftables::open()?;
    if nft.has_table(nft::NFPROTO_IPV4, table)? {
        let mut b = Batch::new(nft::NFPROTO_IPV4);
        b.del_table(table);
        nft.commit(&b).map_err(|(_, e)| anyhow!("removing {table}: {e}"))?;
    }
    Ok(())
}

/// `ct original protocol/saddr/daddr/proto-src/proto-dst == ... meta nftrace set 1`.
fn marking_rule(f: &Filter) -> Vec<Expr> {
    let r = nft::REG_1;
    let mut m = vec![
        Expr::CtDir { key: nft::ct::PROTOCOL, dir: 0, dreg: r },
        Expr::Cmp { sreg: r, op: 0, data: vec![f.proto] },
    ];
    let mut eq = |key, data: Vec<u8>| {
        m.push(Expr::CtDir { key, dir: 0, dreg: r });
        m.push(Expr::Cmp { sreg: r, op: 0, data });
    };
    if let Some(a) = f.saddr {
        eq(nft::ct::SRC_IP, a.octets().to_vec());
    }
    if let Some(a) = f.daddr {
        eq(nft::ct::DST_IP, a.octets().to_vec());
    }
    if let Some(p) = f.sport {
        eq(nft::ct::PROTO_SRC, p.to_be_bytes().to_vec());
    }
    if let Some(p) = f.dport {
        eq(nft::ct::PROTO_DST, p.to_be_bytes().to_vec());
    }
    m.push(Expr::ImmediateData { dreg: r, data: vec![1] });
    m.push(Expr::MetaSet { key: nft::meta::NFTRACE, sreg: r });
    m
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// NFTA_TRACE_* attributes (linux/netfilter/nf_tables.h).
fn parse_event(payload: &[u8]) -> Option<Event> {
    let family = *payload.first()?;
    let mut e = Event {
        id: 0,
        family,
        table: String::new(),
        chain: String::new(),
        kind: "rule",
        handle: None,
        verdict: None,
        iif: None,
        oif: None,
        packet: None,
        end_marker: false,
    };
    let (mut net, mut transport) = (None, None);
    for (ty, v) in attrs_of(payload.get(4..)?) {
        match ty {
            1 => e.table = cstr(v),
            2 => e.chain = cstr(v),
            3 => e.handle = Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)),
            4 => {
                e.kind = match be32(v)? {
                    1 => "policy",
                    2 => "return",
                    _ => "rule",
                }
            }
            5 => e.verdict = verdict(v),
            6 => e.id = be32(v)?,
            8 => net = Some(v),
            9 => transport = Some(v),
            10 => e.iif = be32(v),
            12 => e.oif = be32(v),
            16 => e.verdict = be32(v).map(|p| if p == 0 { "drop".into() } else { "accept".into() }),
            _ => {}
        }
    }
    e.packet = net.and_then(|n| packet(n, transport.unwrap_or_default()));
    e.end_marker = e.kind == "rule" && e.handle.is_none();
    Some(e)
}

fn verdict(nested: &[u8]) -> Option<String> {
    let mut code = None;
    let mut chain = None;
    for (ty, v) in attrs_of(nested) {
        match ty {
            1 => code = be32(v).map(|c| c as i32),
            2 => chain = Some(cstr(v)),
            _ => {}
        }
    }
    let c = chain.map(|c| format!(" {c}")).unwrap_or_default();
    Some(match code? {
        0 => "drop".into(),
        1 => "accept".into(),
        2 => "stolen".into(),
        3 => "queue".into(),
        -1 => "continue".into(),
        -3 => format!("jump{c}"),
        -4 => format!("goto{c}"),
        -5 => "return".into(),
        other => format!("verdict {other}"),
    })
}

/// Addresses, ports and TCP flags from the IPv4 and transport headers.
pub fn packet(net: &[u8], th: &[u8]) -> Option<Packet> {
    if net.len() < 20 || net[0] >> 4 != 4 {
        return None;
    }
    let proto = net[9];
    let src = Ipv4Addr::new(net[12], net[13], net[14], net[15]);
    let dst = Ipv4Addr::new(net[16], net[17], net[18], net[19]);
    let ports = (th.len() >= 4 && (proto == 6 || proto == 17))
        .then(|| (u16::from_be_bytes([th[0], th[1]]), u16::from_be_bytes([th[2], th[3]])));
    let mut flags = Vec::new();
    if proto == 6 && th.len() >= 14 {
        for (bit, name) in [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH")] {
            if th[13] & bit != 0 {
                flags.push(name);
            }
        }
    }
    Some(Packet { src, dst, proto, sport: ports.map(|p| p.0), dport: ports.map(|p| p.1), flags: flags.join(" ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_give_addresses_ports_and_flags() {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 2, 192, 168, 1, 100];
        ip.truncate(20);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&7000u16.to_be_bytes());
        tcp[13] = 0x12;
        let p = packet(&ip, &tcp).unwrap();
        assert_eq!(
            (p.src, p.dst, p.sport, p.dport),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(192, 168, 1, 100), Some(40000), Some(7000))
        );
        assert_eq!(p.flags, "SYN ACK");
    }

    #[test]
    fn verdicts_are_named() {
        let v = nft::Attrs::new().be32(1, (-3i32) as u32).str(2, "user");
        assert_eq!(verdict(&v.into_bytes()).as_deref(), Some("jump user"));
        let v = nft::Attrs::new().be32(1, 0);
        assert_eq!(verdict(&v.into_bytes()).as_deref(), Some("drop"));
    }
}
