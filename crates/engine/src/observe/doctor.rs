//! `netwright doctor`: the seed documents' common-issues table, checked against the live
//! system. Each check says what it found and, when something is wrong, the command that
//! fixes it.

use anyhow::Result;

use crate::apply::{self, Action, Kernel, NetlinkKernel};
use crate::ctx::Ctx;
use crate::desired::{self, Snapshot};
use crate::firewall;
use crate::kernel::netlink::Netlink;
use crate::store::{Container, State, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub detail: String,
    pub fix: Option<String>,
}

pub(super) fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding { check, level: Level::Ok, detail: detail.into(), fix: None }
}

pub(super) fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { check, level: Level::Fail, detail: detail.into(), fix: Some(fix.into()) }
}

/// Listening sockets (port, bound address) of a namespace, from `/proc/<dir>/{tcp,tcp6}`
/// (or udp, udp6). An IPv6 socket is told as the IPv4 address it serves: `::` (dual stack)
/// as 0.0.0.0, `::1` as 127.0.0.1, `::ffff:a.b.c.d` as a.b.c.d; other IPv6 addresses are
/// left out (they serve no IPv4 at all).
pub fn listeners(dir: &str, tcp: bool) -> Vec<(u16, std::net::Ipv4Addr)> {
    let proto = if tcp { "tcp" } else { "udp" };
    let read = |f: String| std::fs::read_to_string(f).unwrap_or_default();
    let mut out = parse_listeners(&read(format!("{dir}/{proto}")), tcp);
    out.extend(parse_listeners(&read(format!("{dir}/{proto}6")), tcp));
    out
}

/// One /proc/net/{tcp,udp}[6] table's listening sockets.
fn parse_listeners(table: &str, tcp: bool) -> Vec<(u16, std::net::Ipv4Addr)> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // TCP: state 0A is LISTEN; UDP sockets are "listening" when unconnected (07).
            if f.len() < 4 || (tcp && f[3] != "0A") || (!tcp && f[3] != "07") {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // Each 32-bit word of the address is printed in host (little-endian) order.
            let words: Vec<u32> = (0..addr.len() / 8)
                .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).map(u32::from_be))
                .collect::<Result<_, _>>()
                .ok()?;
            let v4 = match words.as_slice() {
                [a] => Ipv4Addr::from(*a),
                [a, b, c, d] => {
                    let mut o = [0u8; 16];
                    for (i, w) in [a, b, c, d].iter().enumerate() {
                        o[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
                    }
                    let v6 = Ipv6Addr::from(o);
                    if v6.is_unspecified() {
                        Ipv4Addr::UNSPECIFIED
                    } else if v6.is_loopback() {
                        Ipv4Addr::LOCALHOST
                    } else {
                        v6.to_ipv4_mapped()?
                    }
                }
                _ => return None,
            };
            Some((port, v4))
        })
        .collect()
}

pub fn run(ctx: &Ctx, store: &mut Store, only: Option<&str>) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let (networks, containers, endpoints, ports) = store.read(|tx| {
        let cs = tx.containers()?;
        let mut ports = Vec::new();
        for c in &cs {
            ports.push((c.id.clone(), tx.ports_of(&c.id)?));
        }
        Ok((tx.networks()?, cs, tx.all_endpoints()?, ports))
    })?;
    let running: Vec<&Container> = containers
        .iter()
        .filter(|c| c.state == State::Running && only.is_none_or(|o| c.name == o || c.id.starts_with(o)))
        .collect();
    if let Some(o) = only
        && running.is_empty()
    {
        anyhow::bail!("no running container {o} (see `netwright ps`)");
    }
    let bridged = networks.iter().any(|n| n.driver.is_bridged() && firewall::masquerades(n));

    // Forwarding disabled: containers cannot reach past their bridge.
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    out.push(match (bridged, fwd.trim()) {
        (true, "0") => fail(
            "forwarding",
            "net.ipv4.ip_forward=0: containers cannot reach anything beyond their bridge",
            "sysctl -w net.ipv4.ip_forward=1   (or: netwright reconcile)",
        ),
        _ => ok("forwarding", format!("net.ipv4.ip_forward={}", fwd.trim())),
    });

    if firewall::wants_v6(&networks) {
        out.push(ipv6_forwarding());
    }

    // Masquerade / DNAT missing: netwright's table gone (an `nft flush ruleset`, a reboot),
    // or a chain, a map or a set flushed (`nft flush map … pub_any`): every rule and every
    // element is read back.
    let table = firewall::table_name(ctx);
    let inp = firewall::inputs(store)?;
    let fw = firewall::check::drift(ctx, &inp, firewall::check::Scope::Full)?;
    out.push(if fw.is_empty() {
        let both = if firewall::wants_v6(&networks) { " (and ip6)" } else { "" };
        ok("firewall", format!("table ip {table}{both} complete (masquerade, published ports, isolation)"))
    } else {
        fail("firewall", fw.join("; "), "netwright reconcile   (or any run/attach, which restore it)")
    });

    // Drift between the store and the kernel: the same desired state and diff that
    // `reconcile` applies, so what doctor reports is exactly what reconcile repairs.
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let snap = Snapshot { networks: networks.clone(), containers: containers.clone(), endpoints: endpoints.clone() };
    let live = NetlinkKernel { ctx, nl: &mut nl }.links()?;
    let actions = apply::diff(&ctx.tag, &desired::host(&snap), &live);
    // A released container's devices are set down first and deleted a moment later (by
    // the kernel with its namespace, or by netwright's helper): down strays are on their
    // way out, not drift. (reconcile removes them all the same.)
    let leaving = |name: &str| live.iter().any(|l| l.name == name && !l.up);
    let mut drift: Vec<String> = actions
        .iter()
        .filter(|a| !matches!(a, Action::DeleteStray { name } if leaving(name)))
        .map(|a| a.to_string())
        .collect();
    for (ip, dev) in crate::recover::missing_segment_routes(&mut nl, &snap)?.iter().filter(|(ip, _)| ip.is_ipv4()) {
        drift.push(format!("route to {ip} via segment bridge {dev} is missing"));
    }
    out.push(if drift.is_empty() {
        ok("drift", "store and kernel agree")
    } else {
        fail("drift", drift.join("; "), "netwright reconcile")
    });

    // MTU larger than the path out of the host.
    let uplink = nl
        .routes_v4()?
        .into_iter()
        .find(|r| r.dst.is_none())
        .and_then(|r| r.oif)
        .and_then(|i| links.iter().find(|l| l.index == i));
    if let Some(up) = uplink {
        let big: Vec<String> = networks
            .iter()
            .filter(|n| n.driver.is_bridged() && n.mtu > up.mtu)
            .map(|n| format!("{} (mtu {})", n.name, n.mtu))
            .collect();
        out.push(if big.is_empty() {
            ok("mtu", format!("no network's MTU exceeds {}'s {}", up.name, up.mtu))
        } else {
            fail(
                "mtu",
                format!(
                    "{} exceed the uplink {}'s MTU {}: large packets are dropped or fragmented on the way out",
                    big.join(", "),
                    up.name,
                    up.mtu
                ),
                format!("recreate the network with --opt mtu={}", up.mtu),
            )
        });
    }

    if crate::overlay::Config::joined(ctx) {
        out.extend(super::doctor_overlay::findings(ctx, store, &mut nl, &networks, &containers, &endpoints)?);
    }

    // Conntrack table near its limit: new connections are dropped.
    let count: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let max: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    out.push(if max > 0 && count * 10 >= max * 9 {
        fail(
            "conntrack",
            format!("{count} of {max} conntrack entries in use: new connections will be dropped"),
            format!("sysctl -w net.netfilter.nf_conntrack_max={}", max * 2),
        )
    } else {
        ok("conntrack", format!("{count} of {max} conntrack entries in use"))
    });

    // Foreign firewalls whose forward policy is drop (Docker's FORWARD DROP, say).
    out.push(foreign_forward_drop(&table));

    // Services: one without a backend refuses every connection to its VIP.
    if !inp.services.is_empty() {
        let empty: Vec<String> = inp
            .services
            .iter()
            .filter(|(_, b)| b.is_empty())
            .map(|(s, _)| {
                format!("service {} has no backend (no container with --network-alias {})", s.name, s.selector)
            })
            .collect();
        out.push(if empty.is_empty() {
            ok("services", format!("{} service(s), each with a backend", inp.services.len()))
        } else {
            fail("services", empty.join("; "), "start a container on the service's network with that alias")
        });
    }

    // Published ports: a host process on the same port, a server bound to 127.0.0.1 inside.
    let host_tcp = listeners("/proc/net", true);
    let host_udp = listeners("/proc/net", false);
    let mut port_problems = Vec::new();
    let mut bind_problems = Vec::new();
    for c in &running {
        let Some((_, maps)) = ports.iter().find(|(id, _)| *id == c.id) else { continue };
        if maps.is_empty() {
            continue;
        }
        let Some(pid) = c.pid else { continue };
        let inside_tcp = listeners(&format!("/proc/{pid}/net"), true);
        let inside_udp = listeners(&format!("/proc/{pid}/net"), false);
        for m in maps {
            let (host, inside) =
                if m.proto == crate::ports::Proto::Udp { (&host_udp, &inside_udp) } else { (&host_tcp, &inside_tcp) };
            if host.iter().any(|(p, _)| *p == m.host_port) {
                port_problems
                    .push(format!("{} publishes {m} but a host process listens on port {} too", c.name, m.host_port));
            }
            let binds: Vec<&std::net::Ipv4Addr> =
                inside.iter().filter(|(p, _)| *p == m.container_port).map(|(_, a)| a).collect();
            if m.proto != crate::ports::Proto::Sctp {
                if binds.is_empty() {
                    bind_problems.push(format!(
                        "{} publishes {m} but nothing listens on port {} inside it (connection refused)",
                        c.name, m.container_port
                    ));
                } else if binds.iter().all(|a| a.is_loopback()) {
                    bind_problems.push(format!("{} publishes {m} but its server listens on 127.0.0.1:{} only: connections from outside are refused", c.name, m.container_port));
                }
            }
        }
    }
    out.push(if port_problems.is_empty() {
        ok("host-ports", "no host process shares a published port")
    } else {
        fail("host-ports", port_problems.join("; "), "stop the host process or publish another host port")
    });
    out.push(if bind_problems.is_empty() {
        ok("listening", "every published port has a server listening on all addresses")
    } else {
        fail(
            "listening",
            bind_problems.join("; "),
            "start the server inside the container listening on 0.0.0.0 (not 127.0.0.1), e.g. --bind 0.0.0.0",
        )
    });

    // The ARP table is the kernel's, one for every namespace: past gc_thresh3 entries new
    // neighbours are refused ("neighbour table overflow") and packets to them dropped.
    // (Each endpoint asked once whether its container runs: per container, quadratic.)
    let running_ids: std::collections::HashSet<&str> = running.iter().map(|c| c.id.as_str()).collect();
    let on_bridges = endpoints
        .iter()
        .filter(|e| running_ids.contains(e.container_id.as_str()) && e.ip.is_some())
        .filter(|e| networks.iter().any(|n| n.id == e.network_id && n.driver.is_bridged()))
        .count();
    out.push(neighbours(on_bridges, |k| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/default/{k}")).ok()?.trim().parse().ok()
    }));
    // The resolver holds two sockets per container it names: its descriptor limit caps
    // how many containers get names.
    // (One pass over the endpoints: asking them per container was quadratic at 10,000.)
    let naming: std::collections::HashSet<&str> =
        networks.iter().filter(|n| n.serves_names()).map(|n| n.id.as_str()).collect();
    let named_ids: std::collections::HashSet<&str> =
        endpoints.iter().filter(|e| naming.contains(e.network_id.as_str())).map(|e| e.container_id.as_str()).collect();
    let named = running.iter().filter(|c| named_ids.contains(c.id.as_str())).count();
    let resolver =
        crate::kernel::process::of_root(&ctx.root).into_iter().find(|(_, a)| a.iter().any(|x| x == "_resolver"));
    out.push(resolver_descriptors(named, resolver.and_then(|(pid, _)| open_files_limit(pid))));
    // A broadcast (ARP) on a bridge is one copy per port, all queued on one CPU: the
    // biggest L2 domain (a network's bridge, or one of its segment bridges) counts.
    let mut domains: std::collections::HashMap<(String, &str), usize> = std::collections::HashMap::new();
    for c in &running {
        for e in endpoints.iter().filter(|e| e.container_id == c.id && e.ip.is_some()) {
            if let Some(n) = networks.iter().find(|n| n.id == e.network_id && n.driver.is_bridged()) {
                *domains.entry((crate::plan::port_bridge(n, e), n.name.as_str())).or_default() += 1;
            }
        }
    }
    let largest = domains.into_iter().map(|((_, name), size)| (size, name)).max();
    if let Some((size, name)) = largest {
        let backlog = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog").ok();
        out.push(broadcast(size, name, backlog.and_then(|b| b.trim().parse().ok())));
    }

    // DNS asked on the default bridge: no names there, as in Docker.
    let default_only: Vec<&str> = running
        .iter()
        .filter(|c| c.network_mode == crate::model::NetworkMode::Network(crate::network::DEFAULT_NETWORK.into()))
        .filter(|c| endpoints.iter().filter(|e| e.container_id == c.id && e.ip.is_some()).count() == 1)
        .map(|c| c.name.as_str())
        .collect();
    out.push(if default_only.is_empty() || only.is_none() {
        ok("dns", "containers that need names are on user-defined networks")
    } else {
        Finding {
            check: "dns",
            level: Level::Warn,
            detail: format!(
                "{} is on the default bridge, which has no name resolution (as in Docker)",
                default_only.join(", ")
            ),
            fix: Some(format!("netwright network create app && netwright network connect app {}", default_only[0])),
        }
    });
    Ok(out)
}

/// Neighbour-table room for `containers` bridged endpoints: each needs an ARP entry in its
/// own namespace (its gateway) and one in the host's, all counted against the kernel's
/// one table (`read` gives a gc_thresh value: visible only from the host's namespace).
fn neighbours(containers: usize, read: impl Fn(&str) -> Option<u64>) -> Finding {
    let need = 2 * containers as u64;
    let fix = || {
        let t1 = need.next_power_of_two().max(1024);
        format!(
            "on the host: sysctl -w net.ipv4.neigh.default.gc_thresh1={t1} net.ipv4.neigh.default.gc_thresh2={} net.ipv4.neigh.default.gc_thresh3={}",
            t1 * 2,
            t1 * 4
        )
    };
    match read("gc_thresh3") {
        Some(t3) if need * 10 > t3 * 9 => Finding {
            check: "neighbours",
            level: Level::Warn,
            detail: format!(
                "{containers} containers on bridges need about {need} ARP entries, near or past the kernel's limit of {t3} (gc_thresh3): new neighbours are refused and their packets dropped"
            ),
            fix: Some(fix()),
        },
        Some(t3) => ok(
            "neighbours",
            format!("{containers} containers on bridges need about {need} of {t3} ARP entries (gc_thresh3)"),
        ),
        // Big and blind: say so, once it matters (the default limit is 1,024).
        None if need >= 800 => Finding {
            check: "neighbours",
            level: Level::Warn,
            detail: format!(
                "{containers} containers on bridges need about {need} ARP entries; the kernel's limit (gc_thresh3, 1024 unless raised) is not visible from this network namespace"
            ),
            fix: Some(fix()),
        },
        None => ok("neighbours", format!("{containers} containers on bridges need about {need} ARP entries")),
    }
}

/// The hard "Max open files" of process `pid`.
fn open_files_limit(pid: i32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// Room in the resolver's descriptors (`limit`: its hard limit, None when no resolver runs)
/// for `containers` named containers, two sockets each and a few of its own.
fn resolver_descriptors(containers: usize, limit: Option<u64>) -> Finding {
    let need = 2 * containers as u64 + 64;
    match limit {
        Some(l) if l < need => Finding {
            check: "resolver-fds",
            level: Level::Warn,
            detail: format!(
                "{containers} named containers need about {need} descriptors in the DNS resolver, which may hold {l}: the rest get no names (\"Too many open files\" in dns.log)"
            ),
            fix: Some(format!(
                "raise the hard limit of open files for netwright to at least {need} (systemd LimitNOFILE=, ulimit -Hn), then restart the resolver (kill it; the next command starts it)"
            )),
        },
        Some(l) => ok(
            "resolver-fds",
            format!("{containers} named containers need about {need} of the resolver's {l} descriptors"),
        ),
        None => ok("resolver-fds", format!("{containers} named containers; no resolver running")),
    }
}

/// Broadcast fan-out of the biggest bridged network against the CPU backlog: a veth
/// queues what it receives on the CPU's backlog (net.core.netdev_max_backlog, 1,000 by
/// default; visible only from the host's namespace), and a bridge floods an ARP request
/// to every port at once, so past that many containers some never see it: they are
/// unreachable until they speak first.
fn broadcast(size: usize, network: &str, backlog: Option<u64>) -> Finding {
    let room = backlog.unwrap_or(1000);
    if (size as u64) < room * 9 / 10 {
        return ok(
            "broadcast",
            format!(
                "the biggest L2 domain (on network {network}) floods an ARP request to {size} ports (backlog {room})"
            ),
        );
    }
    let seen = if backlog.is_some() { "" } else { " (1,000 unless raised; not visible from this network namespace)" };
    Finding {
        check: "broadcast",
        level: Level::Warn,
        detail: format!(
            "network {network} floods each ARP request to {size} ports, near or past the {room} packets a CPU queues (net.core.netdev_max_backlog){seen}: the copies beyond are dropped and containers miss each other's first contact"
        ),
        fix: Some(format!(
            "on the host: sysctl -w net.core.netdev_max_backlog={}",
            ((size as u64) * 2).next_power_of_two().max(2048)
        )),
    }
}

/// Other tables with a forward base chain whose policy is drop. Read with `nft -j` — the
/// doctor is not a hot path, and nft's JSON is the admin's own view.
/// Dual-stack networks need IPv6 forwarding; and a forwarding host ignores router
/// advertisements on interfaces with accept_ra=1 (the "RA trap": a SLAAC uplink loses its
/// default route when the last advertisement expires). netwright's own devices aside.
fn ipv6_forwarding() -> Finding {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let fwd = read("/proc/sys/net/ipv6/conf/all/forwarding");
    if fwd != "1" {
        return fail(
            "forwarding6",
            format!(
                "net.ipv6.conf.all.forwarding={fwd}: containers of dual-stack networks cannot reach beyond their bridge over IPv6"
            ),
            "netwright reconcile   (sets it, and accept_ra=2 where an interface takes router advertisements)",
        );
    }
    let trapped: Vec<String> = std::fs::read_dir("/proc/sys/net/ipv6/conf")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| !["all", "default", "lo"].contains(&n.as_str()) && !crate::plan::is_netwright_device(n))
        .filter(|n| read(&format!("/proc/sys/net/ipv6/conf/{n}/accept_ra")) == "1")
        .collect();
    if trapped.is_empty() {
        ok("forwarding6", "net.ipv6.conf.all.forwarding=1; no interface ignores router advertisements")
    } else {
        fail(
            "forwarding6",
            format!(
                "{} accept_ra=1 while the host forwards IPv6: router advertisements are ignored there, a SLAAC default route will expire",
                trapped.join(", ")
            ),
            format!("sysctl -w net.ipv6.conf.{}.accept_ra=2", trapped[0]),
        )
    }
}

fn foreign_forward_drop(ours: &str) -> Finding {
    let Ok(out) = std::process::Command::new("nft").args(["-j", "list", "chains"]).output() else {
        return ok("foreign-firewall", "nft is not installed: foreign tables not checked");
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut drops = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["chain"];
        if c.is_null() || c["table"] == ours {
            continue;
        }
        if c["hook"] == "forward" && c["policy"] == "drop" {
            drops.push(format!(
                "{} {} chain {}",
                c["family"].as_str().unwrap_or("?"),
                c["table"].as_str().unwrap_or("?"),
                c["name"].as_str().unwrap_or("?")
            ));
        }
    }
    if drops.is_empty() {
        ok("foreign-firewall", "no other table drops forwarded traffic by policy")
    } else {
        fail(
            "foreign-firewall",
            format!(
                "{} drops forwarded traffic by policy: containers' traffic dies there even though netwright accepts it",
                drops.join(", ")
            ),
            "add an accept rule for netwright's bridges to that chain, e.g. nft insert rule <family> <table> <chain> iifname \"nwb*\" accept; nft insert rule <family> <table> <chain> oifname \"nwb*\" accept",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Level, broadcast, neighbours, parse_listeners, resolver_descriptors};

    #[test]
    fn broadcast_fan_out_is_judged_against_the_backlog() {
        assert_eq!(broadcast(100, "a", None).level, Level::Ok);
        let f = broadcast(1030, "big", None);
        assert_eq!(f.level, Level::Warn);
        assert!(f.fix.as_deref().unwrap().contains("netdev_max_backlog=4096"), "{f:?}");
        assert_eq!(broadcast(1030, "big", Some(8192)).level, Level::Ok);
    }

    #[test]
    fn neighbour_room_is_judged_against_gc_thresh3() {
        let at = |t3: u64| move |k: &str| (k == "gc_thresh3").then_some(t3);
        assert_eq!(neighbours(100, at(1024)).level, Level::Ok);
        assert_eq!(resolver_descriptors(9_000, Some(20_000)).level, Level::Ok);
        let tight = resolver_descriptors(10_000, Some(20_000));
        assert_eq!(tight.level, Level::Warn);
        assert!(tight.detail.contains("20064") && tight.fix.unwrap().contains("LimitNOFILE"), "{}", tight.detail);
        assert_eq!(resolver_descriptors(10, None).level, Level::Ok);
        let f = neighbours(1030, at(1024));
        assert_eq!(f.level, Level::Warn);
        assert!(f.detail.contains("2060") && f.fix.as_deref().unwrap().contains("gc_thresh3=16384"), "{f:?}");
        assert_eq!(neighbours(1030, at(65536)).level, Level::Ok);
        // Not visible (a network namespace): quiet while small, a warning once big.
        assert_eq!(neighbours(100, |_: &str| None).level, Level::Ok);
        assert_eq!(neighbours(1030, |_: &str| None).level, Level::Warn);
    }

    #[test]
    fn ipv6_sockets_count_for_the_ipv4_they_serve() {
        let head = "  sl  local_address rem_address   st\n";
        let v4 = format!("{head}   0: 0100007F:0050 00000000:0000 0A\n");
        assert_eq!(parse_listeners(&v4, true), vec![(80, "127.0.0.1".parse().unwrap())]);
        let zero = "00000000000000000000000000000000:0000";
        let v6 = format!(
            "{head}   0: 00000000000000000000000000000000:1F90 {zero} 0A\n   1: 00000000000000000000000001000000:0051 {zero} 0A\n   2: 0000000000000000FFFF00000100000A:0052 {zero} 0A\n   3: 000080FD000000000000000002000000:0053 {zero} 0A\n"
        );
        assert_eq!(
            parse_listeners(&v6, true),
            vec![
                (8080, "0.0.0.0".parse().unwrap()),
                (81, "127.0.0.1".parse().unwrap()),
                (82, "10.0.0.1".parse().unwrap())
            ]
        );
    }
}
