//! Choosing host ports: explicit ones are checked against the store and the host, the rest
//! are picked from Docker's ephemeral range.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, bail};

use super::{Mapping, PortRequest, Proto};
use crate::error::conflict;
use crate::store::Tx;

pub fn parse_all(specs: &[String]) -> Result<Vec<PortRequest>> {
    Ok(specs.iter().map(|s| super::parse(s)).collect::<Result<Vec<_>>>()?.concat())
}

/// Is the port free for a host process of ours to bind? (A listener elsewhere on the
/// host would be shadowed by the DNAT: refuse rather than steal its traffic.)
pub fn host_port_free(ip: Option<IpAddr>, port: u16, proto: Proto) -> std::io::Result<()> {
    let addr = std::net::SocketAddr::from((ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port));
    match proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
        Proto::Sctp => Ok(()),
    }
}

/// Turns requests into mappings: checks explicit ports against the store and picks free
/// ports for the rest. Runs inside the write transaction.
pub fn resolve(tx: &Tx, reqs: &[PortRequest]) -> Result<Vec<Mapping>> {
    let mut out: Vec<Mapping> = Vec::new();
    for r in reqs {
        let taken_here = |port: u16, out: &[Mapping]| {
            out.iter().any(|m| m.proto == r.proto && m.host_port == port && super::collides(m.host_ip, r.host_ip))
        };
        let host_port = match r.host_port {
            Some(p) => {
                if let Some((name, m)) = tx.port_holder(r.host_ip, p, r.proto)? {
                    bail!(conflict(format!(
                        "host port {p}/{} is already published by container {name} ({m}): pick another host port",
                        r.proto.as_str()
                    )));
                }
                if let Some(svc) = crate::services::publisher(tx, p, r.proto)? {
                    bail!(conflict(format!(
                        "host port {p}/{} is already published by service {svc}: pick another host port",
                        r.proto.as_str()
                    )));
                }
                if taken_here(p, &out) {
                    bail!(crate::error::invalid(format!(
                        "host port {p}/{} is given twice: publish each host port once",
                        r.proto.as_str()
                    )));
                }
                p
            }
            None => {
                let mut seed = [0u8; 2];
                rand::fill(&mut seed[..]);
                let (lo, hi) = (32768u32, 60999u32);
                let start = lo + u16::from_ne_bytes(seed) as u32 % (hi - lo + 1);
                let mut found = None;
                for i in 0..=(hi - lo) {
                    let p = (lo + (start - lo + i) % (hi - lo + 1)) as u16;
                    if !taken_here(p, &out)
                        && tx.port_holder(r.host_ip, p, r.proto)?.is_none()
                        && crate::services::publisher(tx, p, r.proto)?.is_none()
                        && host_port_free(r.host_ip, p, r.proto).is_ok()
                    {
                        found = Some(p);
                        break;
                    }
                }
                found.context("no free host port left in 32768-60999")?
            }
        };
        out.push(Mapping { host_ip: r.host_ip, host_port, container_port: r.container_port, proto: r.proto });
    }
    Ok(out)
}
