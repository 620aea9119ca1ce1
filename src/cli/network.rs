//! `netwright network …`.

use std::io::Write;

use anyhow::{Context, Result};

use super::{NetworkCmd, output};
use netwright_engine::Engine;
use netwright_engine::kernel::netlink::Netlink;
use netwright_engine::network::{self, CreateSpec};

/// Docker's repeated `--subnet`/`--gateway`: at most one value per family, told apart by
/// the colon of IPv6.
fn by_family(flag: &str, values: &[String]) -> Result<(Option<String>, Option<String>)> {
    let (v6, v4): (Vec<&String>, Vec<&String>) = values.iter().partition(|v| v.contains(':'));
    if v4.len() > 1 || v6.len() > 1 {
        anyhow::bail!(netwright_engine::error::invalid(format!(
            "{flag} given {} times for one family: give at most one IPv4 and one IPv6 value",
            v4.len().max(v6.len())
        )));
    }
    Ok((v4.first().map(|s| s.to_string()), v6.first().map(|s| s.to_string())))
}

pub(super) fn run(engine: &Engine, cmd: NetworkCmd, out: &mut impl Write) -> Result<()> {
    let ctx = &engine.ctx;
    let mut store = engine.store()?;
    let mut nl = Netlink::open().context("opening netlink")?;
    network::ensure_default(ctx, &mut store, &mut nl, false)?;
    match cmd {
        NetworkCmd::Create(a) => {
            if a.ipv4 == Some(false) {
                anyhow::bail!(netwright_engine::error::invalid(
                    "--ipv4=false: IPv6-only networks are not supported yet; create a dual-stack network with --ipv6"
                ));
            }
            let (subnet, subnet6) = by_family("--subnet", &a.subnet)?;
            let (gateway, gateway6) = by_family("--gateway", &a.gateway)?;
            let spec = CreateSpec {
                name: a.name,
                driver: a.driver,
                subnet,
                gateway,
                ipv6: a.ipv6.unwrap_or(false),
                subnet6,
                gateway6,
                ip_range: a.ip_range.clone(),
                internal: a.internal,
                options: a.opt,
                ..CreateSpec::default()
            };
            if a.dry_run {
                writeln!(out, "{}", engine.network_create_dry_run(&spec)?)?;
                return Ok(());
            }
            let n = engine.network_create(&spec)?;
            if a.explain {
                let table = netwright_engine::firewall::table_name(ctx);
                eprintln!("{}", netwright_engine::observe::explain::network(&table, &n).join("\n"));
            }
            writeln!(out, "{}", n.id)?;
        }
        NetworkCmd::Ls { format, quiet } => {
            let nets = store.read(|tx| tx.networks())?;
            if quiet {
                for n in &nets {
                    writeln!(out, "{}", &n.id[..12])?;
                }
            } else if format == "json" {
                for n in &nets {
                    writeln!(out, "{}", output::network_ls_json(n))?;
                }
            } else {
                let rows: Vec<_> = nets.iter().map(output::network_row).collect();
                write!(out, "{}", output::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows))?;
            }
        }
        NetworkCmd::Inspect { format, verbose, networks } => {
            engine.sweep()?;
            let mut docs = Vec::new();
            for r in &networks {
                let doc = store.read(|tx| {
                    let n = network::resolve(tx, r)?;
                    let mut attached = Vec::new();
                    for e in tx.active_endpoints_on(&n.id)? {
                        if let Some(c) = tx.container(&e.container_id)? {
                            attached.push((c, e));
                        }
                    }
                    let mut doc = output::network_inspect(&n, &attached);
                    if verbose && n.driver == netwright_engine::model::Driver::Overlay {
                        doc["Peers"] = peers(ctx, &n, &attached, &tx.remote_endpoints()?);
                    }
                    Ok(doc)
                })?;
                docs.push(doc);
            }
            super::commands::print_docs(out, &docs, format.as_deref())?;
        }
        NetworkCmd::Rm { networks } => {
            engine.sweep()?;
            let mut failed = None;
            for r in &networks {
                match engine.network_remove(r) {
                    Ok(_) => writeln!(out, "{r}")?,
                    Err(e) => failed = Some(anyhow::Error::from(e)),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        NetworkCmd::Connect { network, container, ip, ip6, alias } => {
            let ip = ip.map(|s| netwright_engine::ipam::parse_ip("--ip", &s)).transpose()?;
            let ip6 = ip6.map(|s| netwright_engine::ipam::parse_ip6("--ip6", &s)).transpose()?;
            let req =
                netwright_engine::container::EndpointRequest { ip, ip6, aliases: Some(alias), ..Default::default() };
            engine.connect(&network, &container, req)?;
        }
        NetworkCmd::Disconnect { network, container } => {
            engine.disconnect(&network, &container)?;
        }
        NetworkCmd::Prune { force } => {
            if !force && !confirm("WARNING! This will remove all networks not used by at least one container.")? {
                return Ok(());
            }
            engine.sweep()?;
            let removed = engine.network_prune()?;
            if !removed.is_empty() {
                writeln!(out, "Deleted Networks:")?;
                for n in removed {
                    writeln!(out, "{n}")?;
                }
            }
        }
    }
    Ok(())
}

/// Docker's question before a destructive command; anything but y/yes (or no terminal to
/// answer from: EOF) is a no.
fn confirm(warning: &str) -> Result<bool> {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let yes = matches!(answer.trim(), "y" | "Y" | "yes");
    if !yes {
        eprintln!();
    }
    Ok(yes)
}

/// Docker's `Peers` of an overlay network: every host with endpoints on it (this one too),
/// its VTEP, and the endpoints there.
fn peers(
    ctx: &netwright_engine::ctx::Ctx,
    n: &netwright_engine::store::Network,
    local: &[(netwright_engine::store::Container, netwright_engine::store::Endpoint)],
    remotes: &[netwright_engine::model::RemoteEndpoint],
) -> serde_json::Value {
    use netwright_engine::overlay;
    let me = overlay::Config::load(ctx).ok().flatten();
    // Names from etcd when it answers; the mirror has ids and VTEPs either way.
    let hosts = overlay::hosts(ctx).unwrap_or_default();
    let name_of = |id: &str| {
        hosts.iter().find(|(h, _)| h.id == id).map(|(h, _)| h.name.clone()).unwrap_or_else(|| id.to_string())
    };
    let mut by_host: std::collections::BTreeMap<String, (String, Vec<serde_json::Value>)> = Default::default();
    if let Some(me) = &me {
        let eps = local
            .iter()
            .map(|(c, e)| serde_json::json!({"Name": c.name, "IPv4Address": e.ip.map(|i| i.to_string()), "MacAddress": e.mac}))
            .collect();
        by_host.insert(me.host_id.clone(), (me.advertise.to_string(), eps));
    }
    for r in remotes.iter().filter(|r| r.network_id == n.id) {
        let entry = by_host.entry(r.host.clone()).or_insert_with(|| (r.vtep.to_string(), Vec::new()));
        entry
            .1
            .push(serde_json::json!({"Name": r.names.first(), "IPv4Address": r.ip.to_string(), "MacAddress": r.mac}));
    }
    by_host
        .into_iter()
        .map(|(id, (vtep, eps))| serde_json::json!({"Name": name_of(&id), "IP": vtep, "Endpoints": eps}))
        .collect()
}
