//! Published ports, in one place: Docker's `-p` forms (this file), choosing host ports
//! ([`alloc`]), and the nftables map elements that carry them (the firewall's `publish`).

mod alloc;

pub use alloc::{host_port_free, parse_all, resolve};

use std::net::IpAddr;

use anyhow::{Result, bail};

use crate::error::invalid;
pub use crate::model::{Mapping, Proto};

/// One published port as asked for; `host_port` None means "pick a free one".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub host_ip: Option<IpAddr>,
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub proto: Proto,
}

fn port(what: &str, s: &str, spec: &str) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => bail!(invalid(format!("-p {spec}: {what} {s:?} is not a port number (1-65535)"))),
    }
}

fn range(what: &str, s: &str, spec: &str) -> Result<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(what, a, spec)?, port(what, b, spec)?);
            if b < a {
                bail!(invalid(format!("-p {spec}: {what} range {s} runs backwards")));
            }
            Ok((a, b))
        }
        None => {
            let p = port(what, s, spec)?;
            Ok((p, p))
        }
    }
}

/// Parses one `-p` value: [IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|udp|sctp], the
/// IP an IPv4 address or an IPv6 one in brackets (`[::]:8080:80`, `[2001:db8::10]:8080:80`).
pub fn parse(spec: &str) -> Result<Vec<PortRequest>> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (
            b,
            Proto::parse(p)
                .ok_or_else(|| anyhow::anyhow!("-p {spec}: unknown protocol {p:?}: use tcp, udp or sctp"))?,
        ),
        None => (spec, Proto::Tcp),
    };
    // An IPv6 address in brackets: "[addr]" then ":HOST:CTR" (Docker's form).
    let (bracketed, body) = match body.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((ip, rest)) => (Some(ip), rest),
            None => bail!(invalid(format!("-p {spec}: an IPv6 address goes in brackets: [::1]:8080:80"))),
        },
        None => (None, body),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let parts: Vec<&str> = match bracketed {
        Some(ip) if parts.len() == 2 => vec![ip, parts[0], parts[1]],
        Some(_) => bail!(invalid(format!("-p {spec}: expected [IPv6]:HOST_PORT:CONTAINER_PORT, e.g. [::]:8080:80"))),
        None => parts,
    };
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), if h.is_empty() { None } else { Some(*h) }, *c),
        _ => bail!(invalid(format!(
            "-p {spec}: expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO], e.g. 8080:80 or 127.0.0.1:8080:80/udp"
        ))),
    };
    let host_ip = match ip {
        Some(s) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V6(a)) if bracketed.is_none() => {
                bail!(invalid(format!("-p {spec}: put the IPv6 address in brackets: [{a}]:HOST_PORT:CONTAINER_PORT")))
            }
            Ok(a) if a.is_loopback() && a.is_ipv6() => bail!(invalid(format!(
                "-p {spec}: the kernel cannot forward [::1] to a container (IPv6 has no route_localnet): publish on 127.0.0.1 or on the host's own IPv6 address"
            ))),
            Ok(a) => Some(a),
            Err(_) => bail!(invalid(format!("-p {spec}: {s:?} is not an IP address"))),
        },
        None => None,
    };
    let (c0, c1) = range("container port", ctr, spec)?;
    let host = host.map(|h| range("host port", h, spec)).transpose()?;
    if let Some((h0, h1)) = host
        && h1 - h0 != c1 - c0
    {
        bail!(invalid(format!("-p {spec}: host and container port ranges must have the same length")));
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, c)| PortRequest { host_ip, host_port: host.map(|(h0, _)| h0 + i as u16), container_port: c, proto })
        .collect())
}

/// Two mappings collide when protocol and port match and their addresses overlap: one
/// publishes everywhere, or both are of one family and one of them is that family's
/// wildcard (0.0.0.0, ::), or they are the same address.
pub fn collides(a_ip: Option<IpAddr>, b_ip: Option<IpAddr>) -> bool {
    match (a_ip, b_ip) {
        (Some(a), Some(b)) => a == b || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified())),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortRequest {
        let v = parse(s).unwrap();
        assert_eq!(v.len(), 1);
        v[0].clone()
    }

    #[test]
    fn every_docker_form_parses() {
        assert_eq!(
            one("8080:80"),
            PortRequest { host_ip: None, host_port: Some(8080), container_port: 80, proto: Proto::Tcp }
        );
        assert_eq!(one("80").host_port, None);
        assert_eq!(one("127.0.0.1:8080:80").host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(one("0.0.0.0:8080:80").host_ip, Some("0.0.0.0".parse().unwrap()));
        assert_eq!(one("[::]:8080:80").host_ip, Some("::".parse().unwrap()));
        assert_eq!(one("[2001:db8::10]:8080:80/udp").host_ip, Some("2001:db8::10".parse().unwrap()));
        assert_eq!(one("[2001:db8::10]::80").host_port, None);
        assert_eq!(one("127.0.0.1::80").host_port, None);
        assert_eq!(one("8080:80/udp").proto, Proto::Udp);
        assert_eq!(one("9:9/sctp").proto, Proto::Sctp);
        let r = parse("8000-8010:8000-8010").unwrap();
        assert_eq!(r.len(), 11);
        assert_eq!((r[10].host_port, r[10].container_port), (Some(8010), 8010));
    }

    #[test]
    fn bad_forms_are_explained() {
        assert!(parse("8080:80/icmp").unwrap_err().to_string().contains("unknown protocol"));
        assert!(parse("99999:80").unwrap_err().to_string().contains("not a port number"));
        assert!(parse("8000-8002:80-81").unwrap_err().to_string().contains("same length"));
        assert!(parse("a:b:c:d").is_err());
        assert!(parse("10.0.0.x:1:2").unwrap_err().to_string().contains("not an IP address"));
        assert!(parse("[::1]:8080:80").unwrap_err().to_string().contains("route_localnet"));
        assert!(parse("[::]8080:80").unwrap_err().to_string().contains("brackets"));
        assert!(collides(None, Some("::".parse().unwrap())));
        assert!(collides(Some("0.0.0.0".parse().unwrap()), Some("10.0.0.1".parse().unwrap())));
        assert!(!collides(Some("0.0.0.0".parse().unwrap()), Some("::".parse().unwrap())));
        assert!(!collides(Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap())));
        let m = Mapping { host_ip: None, host_port: 8080, container_port: 80, proto: Proto::Tcp };
        assert_eq!(m.to_string(), "0.0.0.0:8080->80/tcp");
    }
}
