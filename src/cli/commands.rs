//! Running the parsed commands: thin calls into the engine and the process runtime.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Cli, Cmd, output};
use crate::runtime;
use netwright_engine::Engine;
use netwright_engine::container::{self, Spec};
use netwright_engine::ctx::Ctx;
use netwright_engine::error::one_line;
use netwright_engine::kernel::process;
use netwright_engine::store::State;

/// `docker inspect`'s document for one container.
pub(crate) fn inspect_doc(
    ctx: &Ctx,
    store: &mut netwright_engine::store::Store,
    c: &netwright_engine::store::Container,
) -> Result<serde_json::Value> {
    let (eps, ports) = store.read(|tx| {
        let mut v = Vec::new();
        for e in tx.endpoints_of(&c.id)? {
            let n = tx.network(&e.network_id)?;
            v.push((e, n));
        }
        Ok((v, tx.ports_of(&c.id)?))
    })?;
    Ok(output::container_inspect(ctx, c, &eps, &ports))
}

/// `--explain` for a container: the commands equal to what netwright did for it.
pub(crate) fn explain_container(ctx: &Ctx, id: &str) -> Result<String> {
    let mut store = ctx.store()?;
    let (c, eps, ports) = store.read(|tx| {
        let c = tx.container(id)?.context("the container is gone")?;
        let mut eps = Vec::new();
        for e in tx.endpoints_of(id)? {
            if let Some(n) = tx.network(&e.network_id)? {
                eps.push((e, n));
            }
        }
        Ok((c, eps, tx.ports_of(id)?))
    })?;
    let table = netwright_engine::firewall::table_name(ctx);
    Ok(netwright_engine::observe::explain::container(&table, &c, &eps, &ports).join("\n"))
}

/// Runs a parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    // A front end with its own error format (JSON) and its own state root.
    let cli = match cli.command {
        Cmd::Netavark(args) => return Ok(crate::frontends::netavark::run(args)),
        // A detach's helper: no store, nothing else (container::unplug).
        Cmd::Unplug { netns_fd, host, inside } => {
            netwright_engine::container::unplug(netns_fd, &host, &inside);
            return Ok(0);
        }
        command => Cli { command, ..cli },
    };
    // Every command opens the store under the state root, which only root may (SQLite
    // writes even to read): one clear line beats a database error.
    if !process::has_admin_caps() {
        bail!("this command needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo");
    }
    let engine = Engine::open(&cli.root)?;
    let ctx = engine.ctx.clone();
    netwright_engine::ctx::trace("parsed");
    cluster_membership(&ctx, &cli)?;
    let out = &mut super::Out(std::io::stdout().lock());
    match cli.command {
        Cmd::Run(a) if a.net.dry_run => {
            let spec = Spec { cmd: a.cmd, detach: a.detach, auto_remove: a.rm, ..a.net.spec() };
            container::validate(&spec)?;
            writeln!(out, "{}", engine.setup_dry_run(&spec)?)?;
        }
        Cmd::Run(a) => {
            runtime::EXPLAIN.store(a.net.explain, std::sync::atomic::Ordering::Relaxed);
            // Like `docker run`: 125 when netwright itself failed, else the container's code.
            return runtime::run(&ctx, Spec { cmd: a.cmd, detach: a.detach, auto_remove: a.rm, ..a.net.spec() })
                .map_err(|e| match e.downcast::<runtime::RunError>() {
                    Ok(r) => r.into(),
                    Err(e) => runtime::RunError { code: runtime::EXIT_RUN_ERROR, message: one_line(&e) }.into(),
                });
        }
        Cmd::Attach(a) => {
            let explain = a.net.explain;
            let a = engine.attach(Spec { netns: Some(a.netns), ..a.net.spec() })?;
            if explain {
                eprintln!("{}", explain_container(&ctx, &a.container.id)?);
            }
            // What was set up, as `inspect` shows it (from what attach returned, not read again).
            let eps: Vec<_> = a.endpoints.into_iter().map(|(e, n)| (e, Some(n))).collect();
            let doc = output::container_inspect(&ctx, &a.container, &eps, &a.ports);
            netwright_engine::ctx::trace("attach: inspect made");
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            netwright_engine::ctx::trace("attach: printed");
        }
        Cmd::Detach { containers } => {
            let mut store = ctx.store()?;
            for r in &containers {
                runtime::remove(&ctx, &mut store, r, true)?;
                writeln!(out, "{r}")?;
            }
        }
        Cmd::Network(n) => super::network::run(&engine, n, out)?,
        Cmd::Service(sc) => super::service::run(&engine, sc, out)?,
        Cmd::Ui { listen, allow_remote } => crate::frontends::ui::run(ctx.clone(), listen, allow_remote)?,
        Cmd::Ps { all, format, filter, quiet } => {
            let filters = parse_filters(&filter)?;
            // Docker: a status filter shows containers in that state, running or not.
            let all = all || filters.iter().any(|(k, _)| k == "status");
            let mut store = ctx.store()?;
            netwright_engine::recover::sweep(&ctx, &mut store)?;
            let list: Vec<_> = store.read(|tx| {
                let mut v = Vec::new();
                for c in tx.containers()?.into_iter().filter(|c| all || c.state == State::Running) {
                    let mut nets = Vec::new();
                    for e in tx.endpoints_of(&c.id)? {
                        nets.extend(tx.network(&e.network_id)?.map(|n| n.name));
                    }
                    if filters.iter().all(|(k, v)| matches(&c, &nets, k, v)) {
                        let ports = tx.ports_of(&c.id)?;
                        v.push((c, ports));
                    }
                }
                Ok(v)
            })?;
            if quiet {
                for (c, _) in &list {
                    writeln!(out, "{}", &c.id[..12])?;
                }
            } else if format == "json" {
                for (c, p) in &list {
                    writeln!(out, "{}", output::ps_json(c, p))?;
                }
            } else if format == "table" {
                let rows: Vec<_> = list.iter().map(|(c, p)| output::ps_row(c, p)).collect();
                let head = ["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES", "NETWORK"];
                write!(out, "{}", output::table(&head, &rows))?;
            } else {
                for (c, p) in &list {
                    writeln!(out, "{}", super::format::render(&format, &output::ps_json(c, p))?)?;
                }
            }
        }
        Cmd::Inspect { format, containers } => {
            let mut store = ctx.store()?;
            netwright_engine::recover::sweep(&ctx, &mut store)?;
            let mut docs = Vec::new();
            for r in &containers {
                let c = container::find(&mut store, r)?;
                docs.push(inspect_doc(&ctx, &mut store, &c)?);
            }
            print_docs(out, &docs, format.as_deref())?;
        }
        Cmd::Exec { container, cmd } => {
            let mut store = ctx.store()?;
            return runtime::exec(&mut store, &container, &cmd);
        }
        Cmd::Logs { container, follow, tail } => logs(&ctx, &container, follow, &tail, out)?,
        Cmd::Stop { time, containers } => {
            let mut store = ctx.store()?;
            for r in &containers {
                runtime::stop(&ctx, &mut store, r, Duration::from_secs(time))?;
                writeln!(out, "{r}")?;
            }
        }
        Cmd::Rm { force, containers } => {
            let mut store = ctx.store()?;
            for r in &containers {
                runtime::remove(&ctx, &mut store, r, force)?;
                writeln!(out, "{r}")?;
            }
        }
        Cmd::Port { container } => {
            let mut store = ctx.store()?;
            let c = container::find(&mut store, &container)?;
            let (ports, eps) = store.read(|tx| Ok((tx.ports_of(&c.id)?, tx.endpoints_of(&c.id)?)))?;
            let dual = eps.first().is_some_and(|e| e.ip6.is_some());
            for m in ports {
                // Docker's form: one line per family for a port published on both.
                let hosts = match m.host_ip {
                    None if dual => vec!["0.0.0.0".to_string(), "[::]".to_string()],
                    None => vec!["0.0.0.0".to_string()],
                    Some(std::net::IpAddr::V6(a)) => vec![format!("[{a}]")],
                    Some(a) => vec![a.to_string()],
                };
                for h in hosts {
                    writeln!(out, "{}/{} -> {h}:{}", m.container_port, m.proto.as_str(), m.host_port)?;
                }
            }
        }
        Cmd::Trace { src, dst, probe, wait, format } => {
            let mut store = ctx.store()?;
            netwright_engine::recover::sweep(&ctx, &mut store)?;
            let probe = probe.then(|| std::time::Duration::from_secs(wait));
            let t = netwright_engine::observe::trace::trace(&ctx, &mut store, &src, &dst, probe)?;
            if format == "json" {
                writeln!(out, "{}", serde_json::to_string_pretty(&t)?)?;
            } else {
                write!(out, "{}", netwright_engine::observe::trace::text(&t))?;
            }
            return Ok(if t.verdict == "DELIVERED" && t.probe_agrees != Some(false) { 0 } else { 1 });
        }
        Cmd::Topology { format } => {
            use netwright_engine::observe::topology as topo;
            let mut store = ctx.store()?;
            netwright_engine::recover::sweep(&ctx, &mut store)?;
            let t = topo::build(&ctx, &mut store)?;
            let text = match format.as_str() {
                "json" => serde_json::to_string_pretty(&t)? + "\n",
                "dot" => topo::dot(&t),
                "mermaid" => topo::mermaid(&t),
                "svg" => topo::svg(&t),
                _ => topo::text(&t),
            };
            write!(out, "{text}")?;
        }
        Cmd::Doctor { container } => {
            let mut store = ctx.store()?;
            netwright_engine::recover::sweep(&ctx, &mut store)?;
            let findings = netwright_engine::observe::doctor::run(&ctx, &mut store, container.as_deref())?;
            let mut failed = false;
            for f in &findings {
                let tag = match f.level {
                    netwright_engine::observe::doctor::Level::Ok => "ok  ",
                    netwright_engine::observe::doctor::Level::Warn => "WARN",
                    netwright_engine::observe::doctor::Level::Fail => {
                        failed = true;
                        "FAIL"
                    }
                };
                writeln!(out, "{tag}  {:<16} {}", f.check, f.detail)?;
                if let (Some(fix), false) = (&f.fix, f.level == netwright_engine::observe::doctor::Level::Ok) {
                    writeln!(out, "      {:<16} fix: {fix}", "")?;
                }
            }
            return Ok(if failed { 1 } else { 0 });
        }
        Cmd::Reconcile => {
            let r = engine.recover()?;
            writeln!(
                out,
                "firewall rebuilt from the store (tables ip/bridge {})",
                netwright_engine::firewall::table_name(&ctx)
            )?;
            writeln!(out, "released {} crashed container(s){}", r.released.len(), list(&r.released))?;
            writeln!(out, "restored {} bridge(s)", r.bridges_restored)?;
            writeln!(out, "repaired {} port(s)", r.ports_repaired)?;
            if r.routes_restored > 0 {
                writeln!(out, "restored {} route(s) to containers on segment bridges", r.routes_restored)?;
            }
            if r.overlay_entries > 0 {
                writeln!(out, "rewrote {} overlay forwarding entr(ies)", r.overlay_entries)?;
            }
            writeln!(out, "removed {} stray device(s){}", r.stray_devices.len(), list(&r.stray_devices))?;
            writeln!(out, "removed {} stray namespace(s){}", r.stray_namespaces.len(), list(&r.stray_namespaces))?;
        }
        Cmd::System(super::SystemCmd::Reset { force }) => system_reset(&engine, force, out)?,
        Cmd::Update { egress_rate, ingress_rate, container } => {
            // "0" (or "none") removes a limit; an absent flag leaves it.
            let parse = |flag: &str, v: Option<String>| -> Result<Option<Option<u64>>> {
                match v.as_deref() {
                    None => Ok(None),
                    Some("0" | "none") => Ok(Some(None)),
                    Some(r) => netwright_engine::shaping::parse_rate(r)
                        .map(|b| Some(Some(b)))
                        .ok_or_else(|| anyhow::anyhow!("{flag} {r:?}: give a rate such as 10mbit, or 0 for no limit")),
                }
            };
            let (e, i) = (parse("--egress-rate", egress_rate)?, parse("--ingress-rate", ingress_rate)?);
            let mut store = ctx.store()?;
            let c = container::set_rates(&ctx, &mut store, &container, e, i)?;
            writeln!(out, "{}", c.name)?;
        }
        Cmd::Netavark(_) | Cmd::Unplug { .. } => unreachable!("dispatched above"),
        Cmd::DnsSupervisor => netwright_engine::dns::server::run_supervisor(&ctx)?,
        Cmd::Resolver => netwright_engine::dns::server::run_resolver(&ctx)?,
        Cmd::OverlayAgent => netwright_engine::overlay::agent::run(&ctx)?,
        Cmd::Release { id, code } => runtime::release_as_monitor(&ctx, &id, code)?,
        Cmd::Conntrack { container, format } => {
            use netwright_engine::observe::conntrack as ct;
            let mut store = ctx.store()?;
            let t = ct::read(&mut store, container.as_deref())?;
            if format == "json" {
                let (count, max) = t.fill;
                writeln!(out, "{}", serde_json::json!({"Connections": t.conns, "Count": count, "Max": max}))?;
            } else {
                let rows: Vec<Vec<String>> = t
                    .conns
                    .iter()
                    .map(|c| {
                        vec![
                            ct::proto_name(c.proto),
                            if c.state.is_empty() { "-".into() } else { c.state.clone() },
                            c.original.to_string(),
                            c.reply.to_string(),
                            ct::nat(c).into(),
                            format!("{}s", c.timeout),
                        ]
                    })
                    .collect();
                write!(out, "{}", output::table(&["PROTO", "STATE", "ORIGINAL", "REPLY", "NAT", "EXPIRES"], &rows))?;
                let (count, max) = t.fill;
                let pct = if max > 0 { count as f64 * 100.0 / max as f64 } else { 0.0 };
                writeln!(
                    out,
                    "table: {count} of {max} entries ({pct:.1} %){}",
                    if pct >= 90.0 {
                        " — nearly full: new connections will be dropped (raise net.netfilter.nf_conntrack_max)"
                    } else {
                        ""
                    }
                )?;
            }
        }
        Cmd::Cluster(c) => cluster(&ctx, c, cli.etcd.as_deref(), cli.advertise, out)?,
    }
    Ok(0)
}

/// `--etcd URL` on any command joins (or re-joins) this host; then the cluster's networks
/// are mirrored before a command resolves one (`network ls` on h2 right after `network
/// create` on h1 must list it).
fn cluster_membership(ctx: &Ctx, cli: &Cli) -> Result<()> {
    use netwright_engine::overlay::{self, Config};
    if matches!(
        cli.command,
        Cmd::OverlayAgent | Cmd::DnsSupervisor | Cmd::Resolver | Cmd::Cluster(_) | Cmd::Release { .. }
    ) {
        return Ok(());
    }
    if let Some(url) = &cli.etcd {
        let current = Config::load(ctx)?;
        let same = current
            .as_ref()
            .is_some_and(|c| c.etcd == url.trim_end_matches('/') && cli.advertise.is_none_or(|a| a == c.advertise));
        if !same {
            overlay::join(ctx, url, cli.advertise, None)?;
        }
    }
    if Config::joined(ctx) {
        // A killed agent comes back with the next command, lists etcd and converges.
        if overlay::agent::pid(ctx).is_none() {
            overlay::announce(ctx);
        }
        // The agent keeps the mirror current; a command asks etcd itself only when it names
        // a network this host has not heard of yet (or lists them).
        let named: &[String] = match &cli.command {
            Cmd::Run(a) => &a.net.network,
            Cmd::Attach(a) => &a.net.network,
            _ => &[],
        };
        let mut store = ctx.store()?;
        let unknown = !named.is_empty()
            && store.read(|tx| {
                for n in named.iter().filter(|n| !n.contains(':') && !["host", "none"].contains(&n.as_str())) {
                    if tx.network(n)?.is_none() {
                        return Ok(true);
                    }
                }
                Ok(false)
            })?;
        if unknown || matches!(cli.command, Cmd::Network(_)) {
            overlay::sync::pull_networks(ctx, &mut store)?;
        }
    }
    Ok(())
}

fn cluster(
    ctx: &Ctx,
    cmd: super::ClusterCmd,
    etcd: Option<&str>,
    advertise: Option<std::net::Ipv4Addr>,
    out: &mut impl Write,
) -> Result<()> {
    use netwright_engine::overlay;
    match cmd {
        super::ClusterCmd::Join { name } => {
            let Some(url) = etcd else {
                bail!(netwright_engine::error::invalid(
                    "cluster join needs --etcd http://HOST:2379 (or NETWRIGHT_ETCD)"
                ));
            };
            let cfg = overlay::join(ctx, url, advertise, name.as_deref())?;
            writeln!(
                out,
                "joined {} as {} (VTEP {} on {}, MTU {})",
                cfg.etcd, cfg.host_name, cfg.advertise, cfg.dev, cfg.mtu
            )?;
        }
        super::ClusterCmd::Ls { format } => {
            let hosts = overlay::hosts(ctx)?;
            let me = overlay::Config::load(ctx)?.map(|c| c.host_id).unwrap_or_default();
            if format == "json" {
                for (h, up) in &hosts {
                    let status = if *up { "up" } else { "down" };
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"ID": h.id, "Name": h.name, "VTEP": h.vtep, "MTU": h.mtu, "Status": status, "Self": h.id == me})
                    )?;
                }
            } else {
                let rows: Vec<Vec<String>> = hosts
                    .iter()
                    .map(|(h, up)| {
                        let name = if h.id == me { format!("{} *", h.name) } else { h.name.clone() };
                        let status = if *up { "up" } else { "down (lease expired)" };
                        vec![h.id.clone(), name, h.vtep.to_string(), h.mtu.to_string(), status.into()]
                    })
                    .collect();
                write!(out, "{}", output::table(&["HOST ID", "NAME", "VTEP", "MTU", "STATUS"], &rows))?;
            }
        }
        super::ClusterCmd::Leave => {
            let mut store = ctx.store()?;
            overlay::leave(ctx, &mut store)?;
            writeln!(out, "left the cluster")?;
        }
    }
    Ok(())
}

fn list(names: &[String]) -> String {
    if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) }
}

/// `system reset`: containers (their processes too), networks, then everything else the
/// root made (netwright_engine::reset).
fn system_reset(engine: &Engine, force: bool, out: &mut impl Write) -> Result<()> {
    use std::io::IsTerminal;
    let root = engine.ctx.root.display().to_string();
    if !force {
        if !std::io::stdin().is_terminal() {
            bail!("system reset removes every container, network and kernel object of {root}: add --force to confirm");
        }
        eprint!(
            "This removes every container, network and kernel object of {root}, and {root} itself. Continue? [y/N] "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("system reset cancelled: nothing was removed");
        }
    }
    let mut store = engine.store()?;
    for c in store.read(|tx| tx.containers())? {
        runtime::remove(&engine.ctx, &mut store, &c.id, true)?;
        writeln!(out, "removed container {}", c.name)?;
    }
    if netwright_engine::overlay::Config::joined(&engine.ctx) {
        // Overlay networks are the cluster's: this host leaves them, they stay for the others.
        netwright_engine::overlay::leave(&engine.ctx, &mut store)?;
        writeln!(out, "left the cluster")?;
    }
    for n in store.read(|tx| tx.networks())?.into_iter().filter(|n| !n.builtin) {
        engine.network_remove(&n.id)?;
        writeln!(out, "removed network {}", n.name)?;
    }
    drop(store);
    for line in netwright_engine::reset::reset_root(&engine.ctx)? {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `inspect`'s output: the JSON array, or each document through a Go template.
pub(super) fn print_docs(out: &mut impl Write, docs: &[serde_json::Value], format: Option<&str>) -> Result<()> {
    match format {
        None => writeln!(out, "{}", serde_json::to_string_pretty(docs)?)?,
        Some(t) => {
            for d in docs {
                writeln!(out, "{}", super::format::render(t, d)?)?;
            }
        }
    }
    Ok(())
}

/// `ps --filter KEY=VALUE`, Docker's keys that exist here.
fn parse_filters(filters: &[String]) -> Result<Vec<(String, String)>> {
    filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k @ ("name" | "id" | "status" | "network"), v)) => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow::anyhow!(
                "--filter {f:?}: expected name=, id=, status= (created|running|exited) or network="
            )),
        })
        .collect()
}

fn matches(c: &netwright_engine::store::Container, networks: &[String], key: &str, value: &str) -> bool {
    match key {
        "name" => c.name.contains(value),
        "id" => c.id.starts_with(value),
        "status" => c.state.as_str() == value,
        "network" => networks.iter().any(|n| n == value),
        _ => false,
    }
}

/// The last `n` lines of `buf` ("all": everything).
fn tail_of(buf: &[u8], n: &str) -> Result<usize> {
    if n == "all" {
        return Ok(0);
    }
    let n: usize = n.parse().map_err(|_| anyhow::anyhow!("--tail {n:?}: give a number of lines or \"all\""))?;
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let starts = body.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1);
    let cut: Vec<usize> = std::iter::once(0).chain(starts).collect();
    Ok(if n == 0 { buf.len() } else { cut[cut.len().saturating_sub(n)] })
}

fn logs(ctx: &Ctx, reference: &str, follow: bool, tail: &str, out: &mut impl Write) -> Result<()> {
    use std::io::Read;
    let mut store = ctx.store()?;
    let c = container::find(&mut store, reference)?;
    if !c.detached {
        bail!("container {} ran in the foreground: its output went to the terminal, not to a log", c.name);
    }
    let path = ctx.log_path(&c.id);
    let mut f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    out.write_all(&buf[tail_of(&buf, tail)?..])?;
    out.flush()?;
    loop {
        if !follow {
            return Ok(());
        }
        let now = container::find(&mut store, reference);
        let done = now.map(|c| c.state == State::Exited).unwrap_or(true);
        buf.clear();
        f.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
