//! What users read: Docker-shaped tables and inspect JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use netwright_engine::ctx::Ctx;
use netwright_engine::ports::Mapping;
use netwright_engine::store::{Container, Endpoint, Network, State};

/// Prints rows as columns separated by at least three spaces, like Docker's tables.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn rfc3339(nanos: i64) -> String {
    if nanos <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos as u64)).to_string()
}

fn ago(nanos: i64) -> Duration {
    let then = UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64);
    SystemTime::now().duration_since(then).unwrap_or_default()
}

/// "5 seconds", "About a minute", "3 hours" — Docker's human durations.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

pub fn status(c: &Container) -> String {
    match c.state {
        State::Running => format!("Up {}", human(ago(c.started.unwrap_or(c.created)))),
        State::Exited => {
            format!("Exited ({}) {} ago", c.exit_code.unwrap_or(0), human(ago(c.finished.unwrap_or(c.created))))
        }
        State::Created => "Created".into(),
    }
}

pub fn command_line(c: &Container) -> String {
    if let Some(ns) = &c.netns_source {
        return format!("(attached {ns})");
    }
    let s = c.cmd.join(" ");
    let short: String = s.chars().take(20).collect();
    if s.chars().count() > 20 { format!("\"{short}…\"") } else { format!("\"{s}\"") }
}

fn ports_text(ports: &[Mapping]) -> String {
    ports.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
}

pub fn ps_row(c: &Container, ports: &[Mapping]) -> Vec<String> {
    vec![
        c.id[..12].to_string(),
        command_line(c),
        format!("{} ago", human(ago(c.created))),
        status(c),
        ports_text(ports),
        c.name.clone(),
        network_mode(c),
    ]
}

/// The network a container is on, or its mode: host, none, container:<short id>.
pub fn network_mode(c: &Container) -> String {
    match c.network_mode.joined() {
        Some(id) => format!("container:{}", &id[..12.min(id.len())]),
        None => c.network_mode.to_string(),
    }
}

pub fn ps_json(c: &Container, ports: &[Mapping]) -> Value {
    json!({
        "ID": &c.id[..12], "Names": c.name, "Command": command_line(c),
        "CreatedAt": rfc3339(c.created), "State": c.state.as_str(), "Status": status(c),
        "Networks": c.network_mode, "Ports": ports_text(ports),
    })
}

pub fn network_row(n: &Network) -> Vec<String> {
    vec![n.id[..12].to_string(), n.name.clone(), n.driver.to_string(), scope(n).into()]
}

pub fn network_ls_json(n: &Network) -> Value {
    json!({
        "ID": &n.id[..12], "Name": n.name, "Driver": n.driver, "Scope": scope(n),
        "IPv6": n.subnet6.is_some().to_string(), "Internal": n.internal.to_string(), "CreatedAt": rfc3339(n.created), "Labels": "",
    })
}

/// `network inspect`: Docker's keys, plus netwright's own under "Netwright".
pub fn network_inspect(n: &Network, attached: &[(Container, Endpoint)]) -> Value {
    let mut containers = serde_json::Map::new();
    for (c, e) in attached {
        containers.insert(
            c.id.clone(),
            json!({
                "Name": c.name, "EndpointID": e.id, "MacAddress": e.mac,
                "IPv4Address": e.ip.map(|ip| format!("{ip}/{}", n.subnet.prefix_len())).unwrap_or_default(),
                "IPv6Address": e.ip6.zip(n.subnet6).map(|(ip, s)| format!("{ip}/{}", s.prefix_len())).unwrap_or_default(),
            }),
        );
    }
    let mut ipam = json!({"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()});
    if let Some(r) = n.ip_range {
        ipam["IPRange"] = json!(r.to_string());
    }
    let mut ipam_config = vec![ipam];
    if let (Some(s6), Some(g6)) = (n.subnet6, n.gateway6) {
        ipam_config.push(json!({"Subnet": s6.to_string(), "Gateway": g6.to_string()}));
    }
    let mut options = serde_json::Map::new();
    let mut extra = json!({});
    if n.driver.is_bridged() {
        options.insert("com.docker.network.bridge.name".into(), json!(n.bridge));
        // A big network's segment bridges (plan::Segment), with their containers.
        let mut segments: Vec<String> = attached
            .iter()
            .filter(|(_, e)| e.segment > 0 && e.ip.is_some())
            .map(|(_, e)| netwright_engine::plan::port_bridge(n, e))
            .collect();
        segments.sort();
        segments.dedup();
        if !segments.is_empty() {
            extra["SegmentBridges"] = json!(segments);
        }
    } else {
        extra["Notes"] = json!([netwright_engine::drivers::macvlan::NOTE]);
        if let Some(a) = netwright_engine::drivers::macvlan::shim_address(n) {
            extra["HostShim"] = json!({"Interface": n.bridge, "Address": a.to_string()});
        }
    }
    options.insert("com.docker.network.driver.mtu".into(), json!(n.mtu.to_string()));
    for (k, v) in n.options.iter().filter(|(k, _)| !k.starts_with("netwright.")) {
        options.insert(k.clone(), json!(v));
    }
    json!({
        "Name": n.name, "Id": n.id, "Created": rfc3339(n.created), "Scope": scope(n), "Driver": n.driver,
        "EnableIPv4": true, "EnableIPv6": n.subnet6.is_some(),
        "IPAM": {"Driver": "default", "Options": {}, "Config": ipam_config},
        "Internal": n.internal, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers, "Options": options, "Labels": {}, "Netwright": extra,
    })
}

/// `inspect CONTAINER`: the parts of `docker inspect` that exist here.
pub fn container_inspect(ctx: &Ctx, c: &Container, eps: &[(Endpoint, Option<Network>)], ports: &[Mapping]) -> Value {
    let mut bindings = serde_json::Map::new();
    let mut live = serde_json::Map::new();
    for m in ports {
        let key = format!("{}/{}", m.container_port, m.proto.as_str());
        let ip = m.host_ip.map(|i| i.to_string());
        let push = |map: &mut serde_json::Map<String, Value>, host_ip: String| {
            let entry = map.entry(key.clone()).or_insert_with(|| json!([]));
            entry.as_array_mut().expect("array").push(json!({"HostIp": host_ip, "HostPort": m.host_port.to_string()}));
        };
        push(&mut bindings, ip.clone().unwrap_or_default());
        // Docker lists a port published on both families twice: 0.0.0.0 and ::.
        let dual = eps.first().is_some_and(|(e, _)| e.ip6.is_some());
        match ip {
            Some(ip) => push(&mut live, ip),
            None => {
                push(&mut live, "0.0.0.0".into());
                if dual {
                    push(&mut live, "::".into());
                }
            }
        }
    }
    let dir = ctx.container_dir(&c.id);
    let mut networks = serde_json::Map::new();
    for (e, n) in eps {
        let Some(n) = n else { continue };
        let active = e.ip.is_some();
        // Docker: names only on user-defined networks — the aliases, and every name the
        // embedded DNS answers for this endpoint.
        let (aliases, dns_names) = if n.builtin || !active {
            (Value::Null, Value::Null)
        } else {
            // The hostname is the short id unless --hostname gave one.
            let mut names = vec![c.name.clone(), c.hostname.clone()];
            names.extend(e.aliases.iter().cloned());
            (json!(e.aliases), json!(names))
        };
        networks.insert(
            n.name.clone(),
            json!({
                "IPAMConfig": (e.requested_ip.is_some() || e.requested_ip6.is_some()).then(|| {
                    let mut c = json!({});
                    if let Some(ip) = e.requested_ip {
                        c["IPv4Address"] = json!(ip.to_string());
                    }
                    if let Some(ip) = e.requested_ip6 {
                        c["IPv6Address"] = json!(ip.to_string());
                    }
                    c
                }),
                "Links": null, "Aliases": aliases,
                "MacAddress": if active { e.mac.clone() } else { String::new() },
                "NetworkID": n.id, "EndpointID": if active { e.id.clone() } else { String::new() },
                "Gateway": if active { n.gateway.to_string() } else { String::new() },
                "IPAddress": e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": if active { n.subnet.prefix_len() } else { 0 },
                "IPv6Gateway": match (active, e.ip6, n.gateway6) {
                    (true, Some(_), Some(g)) => g.to_string(),
                    _ => String::new(),
                },
                "GlobalIPv6Address": e.ip6.map(|ip| ip.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": e.ip6.and(n.subnet6).map_or(0, |s| s.prefix_len()),
                "DNSNames": dns_names,
                "Netwright": {"HostInterface": e.host_ifname, "Interface": e.ifname,
                    "Bridge": if n.driver.is_bridged() { netwright_engine::plan::port_bridge(n, e) } else { n.bridge.clone() }},
            }),
        );
    }
    let running = c.state == State::Running;
    let primary = eps.first().filter(|(_, n)| n.as_ref().is_some_and(|n| n.builtin));
    let (ip, gw, mac, plen) = match primary {
        Some((e, Some(n))) if e.ip.is_some() => {
            (e.ip.unwrap().to_string(), n.gateway.to_string(), e.mac.clone(), n.subnet.prefix_len())
        }
        _ => (String::new(), String::new(), String::new(), 0),
    };
    json!({
        "Id": c.id, "Created": rfc3339(c.created), "Path": c.cmd.first().cloned().unwrap_or_default(), "Args": c.cmd.get(1..).unwrap_or_default(),
        "State": {
            "Status": c.state.as_str(), "Running": running, "Paused": false, "Restarting": false,
            "OOMKilled": false, "Dead": false, "Pid": if running { c.pid.unwrap_or(0) } else { 0 },
            "ExitCode": c.exit_code.unwrap_or(0), "Error": c.error.clone().unwrap_or_default(),
            "StartedAt": rfc3339(c.started.unwrap_or(0)), "FinishedAt": rfc3339(c.finished.unwrap_or(0)),
        },
        "Name": format!("/{}", c.name),
        "ResolvConfPath": dir.join("resolv.conf"), "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"), "LogPath": if c.detached { json!(ctx.log_path(&c.id)) } else { json!("") },
        "Config": {"Hostname": c.hostname, "Cmd": c.cmd, "AttachStdout": !c.detached, "AttachStderr": !c.detached},
        "HostConfig": {"NetworkMode": c.network_mode, "AutoRemove": c.auto_remove, "PortBindings": bindings},
        "NetworkSettings": {
            "SandboxKey": if running { json!(ctx.netns_path(&c.id)) } else { json!("") },
            // attach: the runtime's own namespace path.
            "Netwright": {"AttachedNetns": c.netns_source,
                "EgressRate": c.egress_rate.map(netwright_engine::shaping::format_rate),
                "IngressRate": c.ingress_rate.map(netwright_engine::shaping::format_rate)},
            "Ports": live, "IPAddress": ip, "Gateway": gw, "MacAddress": mac, "IPPrefixLen": plen,
            "Networks": networks,
        },
    })
}

/// Docker's scope: "swarm" for networks that span hosts, "local" for the rest.
fn scope(n: &netwright_engine::store::Network) -> &'static str {
    if n.driver == netwright_engine::model::Driver::Overlay { "swarm" } else { "local" }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(&["A", "LONGER"], &[vec!["xyz1".into(), "b".into()]]);
        assert_eq!(t, "A      LONGER\nxyz1   b\n");
    }
}
