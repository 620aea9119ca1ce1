//! `netwright bench --compare`: the same work done by netwright, netavark (Podman's
//! network backend) and the CNI bridge + host-local + portmap chain, each in a fresh
//! sandbox on this machine, in one run: attach and release one container with one
//! published TCP port while N containers (each with its own port) are already attached.
//! The peers come from Debian's packages (`netavark`, `aardvark-dns`,
//! `containernetworking-plugins`). Also: 100 containers at once, DNS against
//! aardvark-dns (dns.rs), the data path beside its physical reference (datapath.rs), and
//! the memory of every long-lived process.

mod datapath;
mod dns;

pub use datapath::iperf;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use netwright_engine::kernel::netns;
use netwright_testkit::Sandbox;

const NETAVARK: &str = "/usr/lib/podman/netavark";
const CNI_PATH: &str = "/usr/lib/cni";

trait System: Sync {
    fn name(&self) -> &'static str;
    /// Attaches container `i` publishing host port `port`.
    fn attach(&self, sb: &Sandbox, i: usize, port: u16) -> Result<()>;
    fn release(&self, sb: &Sandbox, i: usize) -> Result<()>;
}

type Memo<T> = std::sync::Mutex<std::collections::HashMap<usize, T>>;

fn ok(out: std::process::Output, what: &str) -> Result<Vec<u8>> {
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out.stdout)
}

fn run_with_stdin(mut cmd: Command, input: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    child.stdin.take().expect("piped").write_all(input)?;
    ok(child.wait_with_output()?, what)
}

/// `netwright attach`: the same work as the peers — a runtime's namespace is made, then
/// networked — so this is the row the ratios are taken against.
struct Netwright;

impl System for Netwright {
    fn name(&self) -> &'static str {
        "netwright"
    }
    fn attach(&self, sb: &Sandbox, i: usize, port: u16) -> Result<()> {
        let ns = make_ns(sb, i)?;
        let p = format!("{port}:80");
        ok(
            sb.netwright([
                "attach",
                ns.to_str().unwrap_or_default(),
                "--name",
                &format!("c{i}"),
                "--network",
                "bench",
                "-p",
                &p,
            ])
            .output()?,
            "netwright attach",
        )?;
        Ok(())
    }
    fn release(&self, sb: &Sandbox, i: usize) -> Result<()> {
        ok(sb.netwright(["detach", &format!("c{i}")]).output()?, "netwright detach")?;
        netns::remove_pinned(&sb.dir.join("peer-ns").join(format!("c{i}")))?;
        Ok(())
    }
}

/// `netwright run -d`: more work than the peers do — netwright also starts the container's
/// process (its own mount and UTS namespaces, /etc files) and a monitor for it.
struct NetwrightRun;

impl System for NetwrightRun {
    fn name(&self) -> &'static str {
        "netwright run -d"
    }
    fn attach(&self, sb: &Sandbox, i: usize, port: u16) -> Result<()> {
        let p = format!("{port}:80");
        ok(
            sb.netwright([
                "run",
                "-d",
                "--name",
                &format!("c{i}"),
                "--network",
                "bench",
                "-p",
                &p,
                "--",
                "sleep",
                "infinity",
            ])
            .output()?,
            "netwright run",
        )?;
        Ok(())
    }
    fn release(&self, sb: &Sandbox, i: usize) -> Result<()> {
        ok(sb.netwright(["rm", "-f", &format!("c{i}")]).output()?, "netwright rm")?;
        Ok(())
    }
}

/// A container namespace for the peers, pinned under the sandbox directory.
fn make_ns(sb: &Sandbox, i: usize) -> Result<PathBuf> {
    let dir = sb.dir.join("peer-ns");
    netns::ensure_shared_dir(&dir)?;
    let path = dir.join(format!("c{i}"));
    netns::create_pinned(&path)?;
    Ok(path)
}

struct Netavark {
    ports: Memo<u16>,
    /// With aardvark-dns (DNS comparison) or without (attach/release, as the CNI chain).
    dns: bool,
    /// Podman serializes its netavark calls (netavark itself races with concurrent
    /// callers: "Chain already exists"); the bench does as Podman does.
    serial: std::sync::Mutex<()>,
}

impl Netavark {
    fn options(&self, i: usize, port: u16) -> serde_json::Value {
        json!({
            "container_id": format!("{:064x}", i + 1), "container_name": format!("c{i}"),
            "networks": {"bench": {"interface_name": "eth0", "aliases": [format!("c{i}")]}},
            "network_info": {"bench": {"dns_enabled": self.dns, "driver": "bridge", "id": format!("{:064x}", 7), "internal": false,
                "ipv6_enabled": false, "name": "bench", "network_interface": "nvbench0",
                "subnets": [{"subnet": "10.210.0.0/16", "gateway": "10.210.0.1"}]}},
            "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": port, "range": 1, "protocol": "tcp"}],
        })
    }
}

/// netavark takes no IPAM of its own: the caller (Podman) hands it the address.
fn static_ip(i: usize) -> String {
    let n = i % 60_000 + 2;
    format!("10.210.{}.{}", n / 250, n % 250 + 2)
}

impl System for Netavark {
    fn name(&self) -> &'static str {
        "netavark"
    }
    fn attach(&self, sb: &Sandbox, i: usize, port: u16) -> Result<()> {
        let ns = make_ns(sb, i)?;
        let mut opts = self.options(i, port);
        opts["networks"]["bench"]["static_ips"] = json!([static_ip(i)]);
        self.ports.lock().expect("ports").insert(i, port);
        let mut cmd = sb.in_host_cmd(NETAVARK);
        let config = sb.dir.join("netavark");
        std::fs::create_dir_all(&config)?;
        cmd.args([
            "--config",
            config.to_str().unwrap_or_default(),
            "--aardvark-binary",
            dns::AARDVARK,
            "setup",
            ns.to_str().unwrap_or_default(),
        ]);
        let _serial = self.serial.lock().expect("netavark lock");
        run_with_stdin(cmd, opts.to_string().as_bytes(), "netavark setup")?;
        Ok(())
    }
    fn release(&self, sb: &Sandbox, i: usize) -> Result<()> {
        let ns = sb.dir.join("peer-ns").join(format!("c{i}"));
        let port = self.ports.lock().expect("ports").remove(&i).unwrap_or(0);
        let mut opts = self.options(i, port);
        opts["networks"]["bench"]["static_ips"] = json!([static_ip(i)]);
        let mut cmd = sb.in_host_cmd(NETAVARK);
        let config = sb.dir.join("netavark");
        cmd.args([
            "--config",
            config.to_str().unwrap_or_default(),
            "--aardvark-binary",
            dns::AARDVARK,
            "teardown",
            ns.to_str().unwrap_or_default(),
        ]);
        let serial = self.serial.lock().expect("netavark lock");
        run_with_stdin(cmd, opts.to_string().as_bytes(), "netavark teardown")?;
        drop(serial);
        netns::remove_pinned(&ns)?;
        Ok(())
    }
}

struct Cni {
    results: Memo<serde_json::Value>,
    ports: Memo<u16>,
}

impl Cni {
    /// Each sandbox keeps host-local's allocation files of its own.
    fn conf(&self, sb: &Sandbox) -> serde_json::Value {
        json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cnibench0", "isGateway": true, "ipMasq": true,
               "ipam": {"type": "host-local", "subnet": "10.220.0.0/16", "dataDir": sb.dir.join("cni-ipam").to_str()}})
    }
    fn plugin(&self, sb: &Sandbox, plugin: &str, command: &str, i: usize, conf: &serde_json::Value) -> Result<Vec<u8>> {
        let ns = sb.dir.join("peer-ns").join(format!("c{i}"));
        let mut cmd = sb.in_host_cmd(&format!("{CNI_PATH}/{plugin}"));
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("c{i}"))
            .env("CNI_NETNS", &ns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH);
        run_with_stdin(cmd, conf.to_string().as_bytes(), &format!("CNI {plugin} {command}"))
    }
    fn portmap(&self, i: usize, port: u16, prev: &serde_json::Value) -> serde_json::Value {
        json!({"cniVersion": "1.0.0", "name": "bench", "type": "portmap", "capabilities": {"portMappings": true},
               "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]},
               "prevResult": prev, "snat": true, "_i": i})
    }
}

impl System for Cni {
    fn name(&self) -> &'static str {
        "CNI bridge+portmap"
    }
    fn attach(&self, sb: &Sandbox, i: usize, port: u16) -> Result<()> {
        make_ns(sb, i)?;
        let result: serde_json::Value =
            serde_json::from_slice(&self.plugin(sb, "bridge", "ADD", i, &self.conf(sb))?)?;
        self.plugin(sb, "portmap", "ADD", i, &self.portmap(i, port, &result))?;
        self.results.lock().expect("results").insert(i, result);
        self.ports.lock().expect("ports").insert(i, port);
        Ok(())
    }
    fn release(&self, sb: &Sandbox, i: usize) -> Result<()> {
        let prev = self.results.lock().expect("results").remove(&i).unwrap_or_default();
        let port = self.ports.lock().expect("ports").remove(&i).unwrap_or(0);
        self.plugin(sb, "portmap", "DEL", i, &self.portmap(i, port, &prev))?;
        let mut conf = self.conf(sb);
        conf["prevResult"] = prev;
        self.plugin(sb, "bridge", "DEL", i, &conf)?;
        netns::remove_pinned(&sb.dir.join("peer-ns").join(format!("c{i}")))?;
        Ok(())
    }
}

/// min / median / max of a figure over runs.
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Spread {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        Spread { min: v[0], median: v[v.len() / 2], max: v[v.len() - 1] }
    }
    pub fn fmt(&self, decimals: usize) -> String {
        format!("{:.d$} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = decimals)
    }
}

struct Row {
    system: &'static str,
    n: usize,
    attach: Vec<Duration>,
    release: Vec<Duration>,
}

fn med(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn span(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    format!("{:.1} ({:.1}–{:.1})", med(&v), v[0].as_secs_f64() * 1000.0, v[v.len() - 1].as_secs_f64() * 1000.0)
}

/// `count` containers attached all at once, then released all at once: containers/second.
fn concurrent(bin: &Path, sys: &dyn System, count: usize) -> Result<(f64, f64)> {
    let sb = Sandbox::new("compare", bin)?;
    if sys.name().starts_with("netwright") {
        ok(sb.netwright(["network", "create", "bench", "--subnet", "10.200.0.0/16"]).output()?, "network create")?;
    }
    let all = |f: &(dyn Fn(usize) -> Result<()> + Sync)| -> Result<f64> {
        let t = Instant::now();
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..count).map(|i| s.spawn(move || f(i))).collect();
            hs.into_iter().map(|h| h.join().expect("worker")).collect::<Result<Vec<()>>>()
        })?;
        Ok(count as f64 / t.elapsed().as_secs_f64())
    };
    let up = all(&|i| sys.attach(&sb, i, 30000 + i as u16))?;
    let down = all(&|i| sys.release(&sb, i))?;
    Ok((up, down))
}

/// Resident memory (PSS, kB) of netwright's long-lived processes in a sandbox root:
/// the per-container monitors and the DNS resolver with its supervisor.
fn netwright_memory(root: &Path) -> (usize, u64, u64) {
    let (mut monitors, mut monitor_kb, mut dns_kb) = (0, 0, 0);
    for (p, argv) in netwright_engine::kernel::process::of_root(root) {
        let pss = netwright_engine::kernel::process::kb(p, "smaps_rollup", "Pss:");
        let small_monitor = argv.first().is_some_and(|a| a.ends_with("netwright-monitor"));
        match argv.get(1).map(String::as_str) {
            Some("_resolver" | "_dns") => dns_kb += pss,
            _ if small_monitor => {
                monitors += 1;
                monitor_kb += pss;
            }
            Some("run") => {
                monitors += 1;
                monitor_kb += pss;
            }
            _ => {}
        }
    }
    (monitors, monitor_kb, dns_kb)
}

fn measure(bin: &Path, sys: &dyn System, sizes: &[usize], runs: usize) -> Result<Vec<Row>> {
    let sb = Sandbox::new("compare", bin)?;
    if sys.name().starts_with("netwright") {
        ok(sb.netwright(["network", "create", "bench", "--subnet", "10.200.0.0/16"]).output()?, "network create")?;
    }
    let mut rows = Vec::new();
    let mut attached = 0;
    let probe = 100_000; // index of the measured container, far from the fillers
    for &n in sizes {
        while attached < n {
            sys.attach(&sb, attached, 30000 + attached as u16)?;
            attached += 1;
        }
        let mut row = Row { system: sys.name(), n, attach: vec![], release: vec![] };
        for r in 0..=runs {
            let t = Instant::now();
            sys.attach(&sb, probe, 40000)?;
            let a = t.elapsed();
            let t = Instant::now();
            sys.release(&sb, probe)?;
            let d = t.elapsed();
            if r > 0 {
                row.attach.push(a);
                row.release.push(d);
            }
        }
        rows.push(row);
        if sys.name() == "netwright run -d" && n >= 100 {
            let (count, monitors, dns) = netwright_memory(&sb.root);
            println!(
                "memory at N={n}: {count} container monitors, {:.1} MiB PSS in all ({:.0} kB each); DNS resolver + supervisor {:.1} MiB PSS",
                monitors as f64 / 1024.0,
                monitors as f64 / count.max(1) as f64,
                dns as f64 / 1024.0
            );
        }
    }
    Ok(rows)
}

/// What to measure; `netwright bench --compare` fills it (`--full` for the full size).
pub struct Opts {
    pub sizes: Vec<usize>,
    pub runs: usize,
    pub concurrency: usize,
    /// Containers on the network for the DNS comparison (0 skips it).
    pub dns_containers: usize,
    pub dns_secs: u64,
    /// Seconds of iperf3 per data-path figure (0 skips the data path).
    pub datapath_secs: u64,
    /// Peers to measure besides netwright: "netavark", "cni".
    pub systems: Vec<String>,
}

/// The peers and tools come from Debian's packages: installed when missing (the one
/// thing the comparison changes outside its sandboxes, and it says so).
fn install_missing() {
    let wanted = ["netavark", "aardvark-dns", "containernetworking-plugins", "iptables", "iperf3"];
    let installed = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
    };
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() || Command::new("apt-get").arg("--version").output().is_err() {
        return;
    }
    println!("installing the peers from Debian's packages: apt-get install {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        if !install() {
            println!("  apt-get could not install them: the missing ones are skipped below");
        }
    }
}

pub fn run(bin: &Path, o: &Opts) -> Result<i32> {
    let (sizes, runs, concurrency) = (&o.sizes[..], o.runs, o.concurrency);
    install_missing();
    let mut systems: Vec<Box<dyn System>> = vec![Box::new(Netwright), Box::new(NetwrightRun)];
    let wanted = |s: &str| o.systems.iter().any(|w| w == s);
    if !wanted("netavark") {
    } else if Path::new(NETAVARK).exists() {
        systems.push(Box::new(Netavark { ports: Default::default(), serial: Default::default(), dns: false }));
    } else {
        println!("netavark not installed (apt-get install netavark): skipped");
    }
    if !wanted("cni") {
    } else if Path::new(CNI_PATH).join("bridge").exists() {
        systems.push(Box::new(Cni { results: Default::default(), ports: Default::default() }));
    } else {
        println!("CNI plugins not installed (apt-get install containernetworking-plugins): skipped");
    }
    let version = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let versions = format!("{}; {}", version(NETAVARK), version(dns::AARDVARK));
    println!("netwright bench --compare: attach and release one container with one published TCP port,");
    println!(
        "N containers (each with its own port) already attached. Whole processes, ms, median (min–max) of {runs}."
    );
    println!("Same work for all: the bench makes the container's namespace, the system networks it (netwright attach,");
    println!(
        "netavark setup, CNI ADD) and undoes it. `netwright run -d` also starts the container's process and monitor."
    );
    println!(
        "machine: {} cores, {} GiB; kernel {}; netwright {}; {}; CNI plugins {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        mem_gib(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        env!("CARGO_PKG_VERSION"),
        versions,
        Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", "containernetworking-plugins"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    );
    let mut all = Vec::new();
    for sys in &systems {
        all.extend(measure(bin, sys.as_ref(), sizes, runs)?);
    }
    println!(
        "\n{:>6}  {:<20} {:<24} {:<24} {:>10} {:>10}",
        "N", "system", "attach", "release", "attach ×", "release ×"
    );
    for r in &all {
        let base = all.iter().find(|b| b.system == "netwright" && b.n == r.n).expect("netwright measured");
        println!(
            "{:>6}  {:<20} {:<24} {:<24} {:>9.1}x {:>9.1}x",
            r.n,
            r.system,
            span(&r.attach),
            span(&r.release),
            med(&r.attach) / med(&base.attach),
            med(&r.release) / med(&base.release)
        );
    }
    println!("\n(× = the system's median / netwright's: how many times slower than netwright)");
    if concurrency > 0 {
        println!("\n{concurrency} containers attached concurrently, then released concurrently (containers/second):");
        let mut base = None;
        for sys in &systems {
            match concurrent(bin, sys.as_ref(), concurrency) {
                Ok((up, down)) => {
                    let (bu, bd) = *base.get_or_insert((up, down));
                    println!(
                        "  {:<20} attach {:>7.1}/s   release {:>7.1}/s   (netwright is {:.1}x / {:.1}x)",
                        sys.name(),
                        up,
                        down,
                        bu / up,
                        bd / down
                    );
                }
                // A peer that cannot take concurrent callers is a result, not a crash of the bench.
                Err(e) => {
                    println!("  {:<20} FAILED under concurrency: {}", sys.name(), netwright_engine::error::one_line(&e))
                }
            }
        }
    }
    println!("\nlong-lived processes: netwright keeps one monitor per container and the DNS resolver with its");
    println!("supervisor (memory above and in the DNS table); netavark keeps none but aardvark-dns (DNS table);");
    println!("the CNI plugins keep none.");
    if o.dns_containers > 0 {
        dns_table(bin, o)?;
    }
    if o.datapath_secs > 0 {
        datapath::run(bin, o.datapath_secs, runs.clamp(1, 5))?;
    }
    Ok(0)
}

fn mem_gib() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
        / 1024
}

fn dns_table(bin: &Path, o: &Opts) -> Result<()> {
    let (m, runs) = (o.dns_containers.max(2), o.runs.clamp(1, 5));
    println!(
        "
DNS: a container's name asked from inside another container, {m} containers on the network;"
    );
    println!(
        "{} clients with one query outstanding each, {} s × {runs}; median (min–max); every answer checked",
        dns::CLIENTS,
        o.dns_secs
    );
    println!("{:<14} {:<26} {:<22} {:<22} {:>7}  resident (PSS)", "system", "queries/s", "p50 ms", "p99 ms", "failed");
    let mut base = None;
    let nw = dns::netwright(bin, m, o.dns_secs, runs);
    let ceiling = dns::CEILING.lock().expect("ceiling").take().map(|c| (c, 0));
    for (name, r) in [
        ("netwright", nw),
        ("aardvark-dns", dns::aardvark(bin, m, o.dns_secs, runs)),
        ("ceiling", ceiling.ok_or_else(|| anyhow::anyhow!("not measured"))),
    ] {
        match r {
            Ok((loads, pss)) => {
                let qps = Spread::of(&loads.iter().map(|l| l.qps).collect::<Vec<_>>());
                let p50 = Spread::of(&loads.iter().map(|l| l.p50_ms).collect::<Vec<_>>());
                let p99 = Spread::of(&loads.iter().map(|l| l.p99_ms).collect::<Vec<_>>());
                let failed: usize = loads.iter().map(|l| l.failed).sum();
                let mem = if name == "ceiling" { "-".to_string() } else { format!("{:.1} MiB", pss as f64 / 1024.0) };
                println!("{name:<14} {:<26} {:<22} {:<22} {failed:>7}  {mem}", qps.fmt(0), p50.fmt(3), p99.fmt(3));
                match (base, name) {
                    (None, _) => base = Some((qps.median, p99.median)),
                    (Some((bq, _)), "ceiling") => println!(
                        "{:<14} (a responder doing no work, same load and netns: what the kernel and the load cost; netwright reaches {:.0}% of it)",
                        "",
                        bq / qps.median * 100.0
                    ),
                    (Some((bq, bp)), _) => println!(
                        "{:<14} netwright answers {:.1}x the queries/s, p99 {:.2}x",
                        "",
                        bq / qps.median,
                        bp / p99.median
                    ),
                }
            }
            Err(e) => println!("{name:<14} not measured: {}", netwright_engine::error::one_line(&e)),
        }
    }
    Ok(())
}
