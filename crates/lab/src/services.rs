//! `bench --services`: service VIPs.
//!
//! - Spread: 1,000 new connections to a VIP over 5 backends against the same 1,000 through
//!   `tasks.NAME` DNS round robin from caching clients (each resolves once and keeps the
//!   answer, as most client libraries do): the seed's exercise, why a VIP is needed.
//! - Churn: one backend joining and leaving while T backends exist across services (10 per
//!   service): the time netwright's refresh takes and the nftables objects it changes.
//! - Data path: iperf3 through the VIP against the same traffic to the backend's address.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use netwright_engine::kernel::netns;
use netwright_testkit::Sandbox;

pub struct Opts {
    /// Total backends for the churn figure (10 per service).
    pub sizes: Vec<usize>,
    pub runs: usize,
    pub throughput_secs: u64,
}

fn ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(bin: &Path, o: &Opts) -> Result<i32> {
    let sb = Sandbox::new("bench-svc", bin)?;
    ok(&mut sb.netwright(["network", "create", "app", "--subnet", "10.210.0.0/16"]))?;
    println!("netwright bench --services (one sandbox; backends answer with their hostname)\n");
    spread(&sb)?;
    if o.throughput_secs > 0 {
        throughput(&sb, o.throughput_secs)?;
    }
    churn(&sb, &o.sizes, o.runs)?;
    Ok(0)
}

fn counts(text: &str) -> Result<BTreeMap<String, usize>> {
    serde_json::from_str(text.trim()).with_context(|| format!("spread.py said {text:?}"))
}

fn show(label: &str, c: &BTreeMap<String, usize>) {
    let n: usize = c.values().sum();
    let k = c.len().max(1);
    let e = n as f64 / 5.0;
    let chi: f64 = c.values().map(|&x| (x as f64 - e).powi(2) / e).sum::<f64>() + (5 - k.min(5)) as f64 * e;
    let cells: Vec<String> = c.iter().map(|(h, v)| format!("{h} {v}")).collect();
    println!("  {label:<34} {}   chi-square {chi:.1} (uniform below 18.5 at p = 0.001)", cells.join(", "));
}

fn spread(sb: &Sandbox) -> Result<()> {
    let script = sb.script("spread.py");
    for i in 1..=5 {
        let name = format!("web{i}");
        ok(&mut sb.netwright([
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &name,
            "--network",
            "app",
            "--network-alias",
            "web",
            "--",
            "python3",
            &script,
            "serve",
            "80",
        ]))?;
    }
    ok(&mut sb.netwright(["run", "-d", "--name", "client", "--network", "app", "--", "sleep", "infinity"]))?;
    ok(&mut sb.netwright(["service", "create", "web", "--network", "app", "--port", "80"]))?;
    println!("1,000 new connections over 5 backends:");
    let vip = ok(&mut sb.netwright(["service", "inspect", "web", "--format", "{{.VIP}}"]))?.trim().to_string();
    // Every backend's server up before counting (python starts in ~100 ms).
    for _ in 0..50 {
        let c =
            counts(&ok(&mut sb.netwright(["exec", "client", "--", "python3", &script, "count", &vip, "80", "20"]))?)?;
        if !c.contains_key("(failed)") && c.len() == 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = counts(&ok(&mut sb.netwright(["exec", "client", "--", "python3", &script, "count", &vip, "80", "1000"]))?)?;
    show("through the VIP (kernel, numgen)", &v);
    // 8 caching clients × 125 connections: each resolves tasks.web once and keeps it.
    let mut d: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..8 {
        let c = counts(&ok(&mut sb.netwright([
            "exec",
            "client",
            "--",
            "python3",
            &script,
            "cached",
            "tasks.web",
            "80",
            "125",
        ]))?)?;
        for (k, n) in c {
            *d.entry(k).or_default() += n;
        }
    }
    show("DNS round robin, caching clients", &d);
    println!("  (8 clients × 125 connections; each keeps the first address of the one answer it got. The");
    println!("   resolver rotates its answers, so a backend's share is the number of clients that got it");
    println!("   first: 2, 2, 2, 1, 1 of 8 — however many connections each client then makes.)\n");
    Ok(())
}

fn throughput(sb: &Sandbox, secs: u64) -> Result<()> {
    if Command::new("iperf3").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        println!("throughput: skipped (iperf3 is not installed)\n");
        return Ok(());
    }
    ok(&mut sb.netwright([
        "run",
        "-d",
        "--name",
        "iperf",
        "--network",
        "app",
        "--network-alias",
        "perf",
        "--",
        "iperf3",
        "-s",
    ]))?;
    ok(&mut sb.netwright(["service", "create", "perf", "--network", "app", "--port", "5201"]))?;
    let vip = ok(&mut sb.netwright(["service", "inspect", "perf", "--format", "{{.VIP}}"]))?.trim().to_string();
    let v: serde_json::Value = serde_json::from_str(&ok(&mut sb.netwright(["inspect", "iperf"]))?)?;
    let ip = v[0]["NetworkSettings"]["Networks"]["app"]["IPAddress"].as_str().unwrap_or_default().to_string();
    let run = |to: &str| -> Result<f64> {
        let out = ok(&mut sb.netwright(["exec", "client", "--", "iperf3", "-c", to, "-t", &secs.to_string(), "-J"]))?;
        let j: serde_json::Value = serde_json::from_str(&out)?;
        Ok(j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9)
    };
    std::thread::sleep(Duration::from_millis(300));
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        direct.push(run(&ip)?);
        via.push(run(&vip)?);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (d, s) = (med(&mut direct), med(&mut via));
    println!("throughput container → container, one TCP connection, {secs} s (iperf3, median of 3 alternating runs):");
    println!("  to the backend's address {ip:<15} {d:6.2} Gbit/s");
    println!("  through the VIP {vip:<15}           {s:6.2} Gbit/s  ({:.0}% of direct)\n", s / d * 100.0);
    Ok(())
}

/// Backends in namespaces of their own, attached (no process: cheap at thousands).
fn attach_backend(sb: &Sandbox, name: &str, alias: &str) -> Result<()> {
    let dir = sb.dir.join("svc-ns");
    if !dir.exists() {
        netns::ensure_shared_dir(&dir)?;
    }
    let path = dir.join(name);
    netns::create_pinned(&path)?;
    ok(&mut sb.netwright([
        "attach",
        path.to_str().unwrap_or_default(),
        "--name",
        name,
        "--network",
        "churn",
        "--network-alias",
        alias,
    ]))?;
    Ok(())
}

/// The trace of one command: (milliseconds in the services' refresh, objects changed).
fn refresh_cost(trace: &Path) -> Option<(f64, String)> {
    let text = std::fs::read_to_string(trace).ok()?;
    let ms = |l: &str| l.split_whitespace().nth(2).and_then(|v| v.parse::<f64>().ok());
    let start = text.lines().filter(|l| l.ends_with("services: refresh")).find_map(ms)?;
    let done = text.lines().find(|l| l.contains("changed"))?;
    let what = done.split("] services: ").nth(1)?.to_string();
    Some((ms(done)? - start, what))
}

fn churn(sb: &Sandbox, sizes: &[usize], runs: usize) -> Result<()> {
    ok(&mut sb.netwright(["network", "create", "churn", "--subnet", "10.220.0.0/16"]))?;
    println!("one backend joining (attach) and leaving (rm -f) with T backends across services (10 each),");
    println!("netwright's refresh only (store + one nftables batch), ms median (min–max) of {runs} runs:");
    println!("{:>7} {:>9}   {:<22} {:<22} objects changed per join / leave", "T", "services", "join", "leave");
    let mut have = 0usize;
    let trace = sb.dir.join("svc-trace.txt");
    for &t in sizes {
        if t > 1000 {
            println!("{t:>7}   skipped: a Linux bridge takes 1,024 ports (one network); see issue 19");
            continue;
        }
        while have < t {
            let svc = have / 10;
            if have.is_multiple_of(10) {
                ok(&mut sb.netwright(["service", "create", &format!("s{svc}"), "--network", "churn", "--port", "80"]))?;
            }
            attach_backend(sb, &format!("b{have}"), &format!("s{svc}"))?;
            have += 1;
        }
        let (mut join, mut leave) = (Vec::new(), Vec::new());
        let (mut jwhat, mut lwhat) = (String::new(), String::new());
        for i in 0..runs {
            let _ = std::fs::remove_file(&trace);
            let name = format!("probe{t}-{i}");
            let dir = sb.dir.join("svc-ns");
            let path = dir.join(&name);
            netns::create_pinned(&path)?;
            ok(sb
                .netwright([
                    "attach",
                    path.to_str().unwrap_or_default(),
                    "--name",
                    &name,
                    "--network",
                    "churn",
                    "--network-alias",
                    "s0",
                ])
                .env("NETWRIGHT_TRACE", &trace))?;
            if let Some((ms, what)) = refresh_cost(&trace) {
                join.push(ms);
                jwhat = what;
            }
            let _ = std::fs::remove_file(&trace);
            ok(sb.netwright(["rm", "-f", &name]).env("NETWRIGHT_TRACE", &trace))?;
            if let Some((ms, what)) = refresh_cost(&trace) {
                leave.push(ms);
                lwhat = what;
            }
            let _ = netns::remove_pinned(&path);
        }
        let cell = |v: &mut Vec<f64>| -> String {
            if v.is_empty() {
                return "-".into();
            }
            v.sort_by(|a, b| a.total_cmp(b));
            format!("{:.2} ({:.2}–{:.2})", v[v.len() / 2], v[0], v[v.len() - 1])
        };
        println!("{t:>7} {:>9}   {:<22} {:<22} {jwhat} / {lwhat}", t.div_ceil(10), cell(&mut join), cell(&mut leave));
    }
    Ok(())
}
