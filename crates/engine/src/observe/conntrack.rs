//! `netwright conntrack [CONTAINER]`: the host's tracked connections (a container's, when
//! named) with both tuples and the NAT that applies — the seed's `conntrack -L` — and the
//! table's fill level against nf_conntrack_max (full: new connections are dropped).

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::kernel::conntrack::{self, Conn};
use crate::store::Store;

pub struct Table {
    pub conns: Vec<Conn>,
    /// (entries in use, nf_conntrack_max)
    pub fill: (u64, u64),
}

/// The connections of the calling namespace (the host's), those touching one of the
/// container's addresses when `container` is given.
pub fn read(store: &mut Store, container: Option<&str>) -> Result<Table> {
    let ips: Option<Vec<Ipv4Addr>> = match container {
        Some(r) => {
            let c = crate::container::find(store, r)?;
            Some(store.read(|tx| Ok(tx.endpoints_of(&c.id)?.into_iter().filter_map(|e| e.ip).collect()))?)
        }
        None => None,
    };
    let mut conns = conntrack::dump()?;
    if let Some(ips) = ips {
        let touches = |a: Option<Ipv4Addr>| a.is_some_and(|a| ips.contains(&a));
        conns.retain(|c| {
            touches(c.original.src) || touches(c.original.dst) || touches(c.reply.src) || touches(c.reply.dst)
        });
    }
    conns.sort_by_key(|c| std::cmp::Reverse(c.timeout));
    Ok(Table { conns, fill: conntrack::fill() })
}

/// What the NAT did, in words.
pub fn nat(c: &Conn) -> &'static str {
    match (c.snat, c.dnat) {
        (true, true) => "dnat+snat (hairpin)",
        (true, false) => "snat (masquerade)",
        (false, true) => "dnat (published port)",
        (false, false) => "-",
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}
