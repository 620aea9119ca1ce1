//! `bench --overlay`: overlay networks across host namespaces with etcd in the LAN one.
//!
//! - Convergence: a container attached on h1 → its forwarding entry on h2, and the first
//!   TCP connect from a container on h2 (p50/p99 over many trials). The server already
//!   listens in the namespace before `attach` runs, so what is timed is netwright's part.
//! - Data path: TCP throughput container → container across hosts against the underlay
//!   host → host, with iperf3.
//! - Scale: H hosts with M containers each; a new host's time to converge, entries per
//!   host, etcd keys, the agent's memory.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use netwright_engine::kernel::netlink::Netlink;
use netwright_engine::kernel::{netns, process};
use netwright_testkit::{Host, Sandbox};

pub struct Opts {
    pub trials: usize,
    pub throughput_secs: u64,
    pub hosts: u8,
    pub per_host: usize,
}

fn ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A namespace with a TCP server already listening on 0.0.0.0:7000 (an address-less
/// namespace can bind it): the runtime's half of a container, before netwright attaches it.
fn listening_ns(sb: &Sandbox, name: &str) -> Result<(std::path::PathBuf, OwnedFd)> {
    let path = sb.dir.join("ns").join(name);
    let ns = netns::create_pinned(&path)?;
    let mut server = Sandbox::in_ns_cmd(&ns, "python3")
        .args([&sb.script("tcp.py"), "serve", "7000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut line)?;
    if !line.starts_with("serving") {
        bail!("the server in {name} did not start");
    }
    Ok((path, ns))
}

/// The address `attach` printed (its inspect document).
fn attached_ip(doc: &str, net: &str) -> Result<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(doc)?;
    let ip = v["NetworkSettings"]["Networks"][net]["IPAddress"].as_str().context("no address in attach's output")?;
    Ok(ip.parse()?)
}

/// Whether host `h`'s VXLAN devices have an entry for `ip`.
fn has_entry(nl: &mut Netlink, ip: Ipv4Addr) -> bool {
    let links = nl.links().unwrap_or_default();
    links
        .iter()
        .filter(|l| l.name.starts_with("nwx"))
        .any(|l| nl.vxlan_entries(l.index).unwrap_or_default().iter().any(|e| e.ip == ip && !e.vtep.is_unspecified()))
}

fn container_ns(h: &Host, name: &str) -> Result<OwnedFd> {
    let id = ok(&mut h.netwright(["inspect", "--format", "{{.Id}}", name]))?;
    Ok(netns::open(&h.root.join("netns").join(&id.trim()[..12]))?)
}

pub fn run(bin: &Path, o: &Opts) -> Result<i32> {
    let sb = Sandbox::new("bench-overlay", bin)?;
    let url = sb.start_etcd()?;
    let h1 = sb.host(1)?;
    let h2 = sb.host(2)?;
    for h in [&h1, &h2] {
        ok(&mut h.netwright(["cluster", "join", "--etcd", &url, "--name", &h.name]))?;
    }
    ok(&mut h1.netwright(["network", "create", "-d", "overlay", "--subnet", "10.90.0.0/16", "ov"]))?;
    ok(&mut h2.netwright(["run", "-d", "--name", "cli", "--network", "ov", "--", "sleep", "infinity"]))?;
    let cli = container_ns(&h2, "cli")?;
    println!(
        "overlay bench: 2 hosts (h1 192.168.1.10, h2 192.168.2.10) routed through the LAN namespace, etcd there\n"
    );

    // Convergence.
    let (mut attach_ms, mut entry_ms, mut connect_ms) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..o.trials {
        let name = format!("t{k}");
        let (path, _ns) = listening_ns(&sb, &name)?;
        let t0 = Instant::now();
        let doc = ok(&mut h1.netwright([
            "attach".as_ref(),
            path.as_os_str(),
            "--network".as_ref(),
            "ov".as_ref(),
            "--name".as_ref(),
            name.as_ref(),
        ]))?;
        let attached = t0.elapsed();
        let ip = attached_ip(&doc, "ov")?;
        let entry = h2.within(|| -> Result<Duration> {
            let mut nl = Netlink::open()?;
            while !has_entry(&mut nl, ip) {
                if t0.elapsed() > Duration::from_secs(10) {
                    bail!("h2 never got an entry for {ip}");
                }
            }
            Ok(t0.elapsed())
        })?;
        let connected = netns::within(&cli, || -> Result<Duration> {
            loop {
                if TcpStream::connect_timeout(&SocketAddr::from((ip, 7000)), Duration::from_millis(200)).is_ok() {
                    return Ok(t0.elapsed());
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    bail!("no TCP connect from h2 to {ip}");
                }
            }
        })??;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        attach_ms.push(ms(attached));
        entry_ms.push(ms(entry));
        connect_ms.push(ms(connected));
    }
    println!("convergence over {} trials (ms from the start of `netwright attach` on h1):", o.trials);
    println!("{:<44} {:>8} {:>8} {:>8}", "", "p50", "p99", "max");
    for (what, v) in [
        ("attach returns on h1 (peers told)", &mut attach_ms),
        ("h2's kernel has the FDB + neighbour entry", &mut entry_ms),
        ("first TCP connect from a container on h2", &mut connect_ms),
    ] {
        let max = v.iter().cloned().fold(0.0, f64::max);
        println!("{what:<44} {:>8.2} {:>8.2} {:>8.2}", pct(v, 0.5), pct(v, 0.99), max);
    }

    if o.throughput_secs > 0 {
        datapath(&sb, &h1, &h2, o.throughput_secs)?;
    }
    if o.hosts > 2 && o.per_host > 0 {
        scale(&sb, &url, o.hosts, o.per_host)?;
    }
    Ok(0)
}

/// iperf3 across hosts: container → container over VXLAN, against host → host.
fn datapath(sb: &Sandbox, h1: &Host, h2: &Host, secs: u64) -> Result<()> {
    let secs = secs.to_string();
    let gbps = |json: &str| -> Result<f64> {
        let v: serde_json::Value = serde_json::from_str(json)?;
        Ok(v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 gave no rate")? / 1e9)
    };
    let _ = sb;
    ok(&mut h2.netwright(["run", "-d", "--name", "ips", "--network", "ov", "--", "iperf3", "-s"]))?;
    let ip = ok(&mut h2.netwright(["inspect", "--format", "{{.NetworkSettings.Networks.ov.IPAddress}}", "ips"]))?;
    let mut over = 0.0;
    for _ in 0..20 {
        let out = h1
            .netwright(["run", "--rm", "--network", "ov", "--", "iperf3", "-J", "-t", &secs, "-c", ip.trim()])
            .stdin(Stdio::null())
            .output()?;
        if let Ok(r) = gbps(&String::from_utf8_lossy(&out.stdout)) {
            over = r;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut server = h2.cmd("iperf3").args(["-s", "-B", &h2.addr.to_string()]).stdout(Stdio::null()).spawn()?;
    let mut under = 0.0;
    for _ in 0..20 {
        let out = h1.cmd("iperf3").args(["-J", "-t", &secs, "-c", &h2.addr.to_string()]).output()?;
        if let Ok(r) = gbps(&String::from_utf8_lossy(&out.stdout)) {
            under = r;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    println!("\ndata path (iperf3 TCP, {secs} s):");
    println!("  container h1 → container h2 over VXLAN   {over:>7.2} Gbit/s");
    println!("  host h1 → host h2 (the underlay)          {under:>7.2} Gbit/s");
    if under > 0.0 {
        println!("  overlay / underlay                        {:>7.0} %", over / under * 100.0);
    }
    Ok(())
}

/// H hosts with M containers each (attached namespaces, no processes); then one more host.
fn scale(sb: &Sandbox, url: &str, hosts: u8, per_host: usize) -> Result<()> {
    println!("\nscale: {hosts} hosts × {per_host} containers (attached namespaces, no processes)");
    let mut all = Vec::new();
    let t = Instant::now();
    for n in 3..=hosts {
        let h = sb.host(n)?;
        ok(&mut h.netwright(["cluster", "join", "--etcd", url, "--name", &h.name]))?;
        all.push(h);
    }
    println!("  {} more hosts joined in {:.1} s", all.len(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    for h in &all {
        for k in 0..per_host {
            let name = format!("{}c{k}", h.name);
            let path = sb.dir.join("ns").join(&name);
            let _ns = netns::create_pinned(&path)?;
            ok(&mut h.netwright(["attach".as_ref(), path.as_os_str(), "--network".as_ref(), "ov".as_ref()]))?;
        }
    }
    let total = all.len() * per_host;
    println!(
        "  {total} containers attached in {:.1} s ({:.1} ms each)",
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1000.0 / total as f64
    );
    // A new host: join, one container, until its kernel holds every other endpoint.
    let newcomer = sb.host(hosts + 1)?;
    let expected = {
        let gw = netwright_engine::overlay::etcd::Gateway::new(url)?;
        use netwright_engine::overlay::etcd::Kv;
        let (kvs, _) = sb.in_lan(|| gw.list("/netwright/endpoints/"))?;
        let (keys, _) = sb.in_lan(|| gw.list("/netwright/"))?;
        println!("  etcd: {} keys under /netwright/ ({} endpoints)", keys.len(), kvs.len());
        kvs.len()
    };
    let t = Instant::now();
    ok(&mut newcomer.netwright(["cluster", "join", "--etcd", url, "--name", &newcomer.name]))?;
    ok(&mut newcomer.netwright(["run", "-d", "--name", "first", "--network", "ov", "--", "sleep", "infinity"]))?;
    let entries = newcomer.within(|| -> Result<usize> {
        let mut nl = Netlink::open()?;
        loop {
            let n: usize = nl
                .links()?
                .iter()
                .filter(|l| l.name.starts_with("nwx"))
                .map(|l| nl.vxlan_entries(l.index).map(|v| v.len()).unwrap_or(0))
                .sum();
            if n >= expected || t.elapsed() > Duration::from_secs(60) {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })?;
    println!(
        "  a new host joined and ran its first container: {entries} entries (of {expected}) in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let agent = std::fs::read_to_string(newcomer.root.join("overlay.pid"))?;
    let pid: i32 = agent.split_whitespace().next().unwrap_or("0").parse()?;
    println!(
        "  the agent's memory on a host: {} kB RSS, {} kB PSS",
        process::kb(pid, "status", "VmRSS:"),
        process::kb(pid, "smaps_rollup", "Pss:")
    );
    Ok(())
}
