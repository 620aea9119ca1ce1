//! The container's own /etc/hosts, /etc/hostname and /etc/resolv.conf, under
//! `ROOT/containers/ID/` (a runtime bind-mounts them; `attach` prints their paths).

use std::fs;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

use super::Spec;
use crate::ctx::Ctx;
use crate::error::invalid;
use crate::ipam;
use crate::store::{Container, Endpoint};

/// /etc/hosts, /etc/resolv.conf and /etc/hostname as the container will see them.
pub(crate) fn write(ctx: &Ctx, c: &Container, eps: &[Endpoint], spec: &Spec, embedded_dns: bool) -> Result<()> {
    let dir = ctx.container_dir(&c.id);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for h in &spec.add_hosts {
        let (name, ip) = parse_add_host(h)?;
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    for ep in eps {
        if let Some(ip) = ep.ip {
            hosts.push_str(&format!("{ip}\t{}\n", c.hostname));
        }
        if let Some(ip6) = ep.ip6 {
            hosts.push_str(&format!("{ip6}\t{}\n", c.hostname));
        }
    }
    fs::write(dir.join("hosts"), hosts)?;
    fs::write(dir.join("hostname"), format!("{}\n", c.hostname))?;
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    fs::write(
        dir.join("resolv.conf"),
        resolv_conf(&host, embedded_dns, &spec.dns, &spec.dns_search, &spec.dns_options),
    )?;
    Ok(())
}

/// A container's resolv.conf. On user-defined networks the embedded resolver answers
/// at 127.0.0.11 (and forwards the rest); elsewhere the upstreams are written directly —
/// minus loopback ones, which mean nothing inside a container's own namespace.
pub fn resolv_conf(host: &str, embedded: bool, dns: &[String], search: &[String], options: &[String]) -> String {
    let mut servers = Vec::new();
    let mut host_search = Vec::new();
    let mut host_options = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(Ok(ip)) = words.next().map(|w| w.parse::<std::net::IpAddr>())
                    && !ip.is_loopback()
                {
                    servers.push(ip.to_string());
                }
            }
            Some("search") | Some("domain") => host_search.extend(words.map(str::to_string)),
            Some("options") => host_options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    let mut out = String::new();
    if embedded {
        out.push_str("nameserver 127.0.0.11\n");
    } else {
        for s in if dns.is_empty() { &servers } else { dns } {
            out.push_str(&format!("nameserver {s}\n"));
        }
    }
    let search = if search.is_empty() { &host_search } else { search };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let mut opts: Vec<String> = if options.is_empty() { host_options } else { options.to_vec() };
    if embedded && !opts.iter().any(|o| o.starts_with("ndots:")) {
        opts.push("ndots:0".into());
    }
    if !opts.is_empty() {
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// --add-host NAME:IP (Docker also accepts NAME=IP).
pub(crate) fn parse_add_host(s: &str) -> Result<(String, Ipv4Addr)> {
    let (name, ip) = s
        .split_once(':')
        .or_else(|| s.split_once('='))
        .ok_or_else(|| invalid(format!("--add-host {s:?}: expected NAME:IP, e.g. db.local:10.0.0.5")))?;
    if name.is_empty() {
        bail!(invalid(format!("--add-host {s:?}: the name is empty")));
    }
    Ok((name.to_string(), ipam::parse_ip("--add-host", ip)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolv_conf_for_each_kind_of_network() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch lan\noptions edns0\n";
        assert_eq!(super::resolv_conf(host, false, &[], &[], &[]), "nameserver 10.0.0.2\nsearch lan\noptions edns0\n");
        assert_eq!(
            super::resolv_conf(host, true, &[], &[], &[]),
            "nameserver 127.0.0.11\nsearch lan\noptions edns0 ndots:0\n"
        );
        let dns = vec!["192.168.1.100".to_string()];
        let search = vec!["corp".to_string()];
        let opts = vec!["timeout:1".to_string()];
        assert_eq!(
            super::resolv_conf(host, false, &dns, &search, &opts),
            "nameserver 192.168.1.100\nsearch corp\noptions timeout:1\n"
        );
    }
}
