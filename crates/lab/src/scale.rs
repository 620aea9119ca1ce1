//! `bench --scale`: one network grown to thousands of containers (attach mode: namespaces
//! a runtime made, no processes), measured as it grows — attach and detach at each size,
//! TCP between random pairs, the LAN reaching a published port of the newest container,
//! kernel and netwright memory per container, the release of all of them — then `run -d`
//! memory per container.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netwright_engine::kernel::{netns, process};
use netwright_testkit::Sandbox;

use crate::bench::{cell, stats, timed};

pub struct Opts {
    pub sizes: Vec<usize>,
    pub runs: usize,
    /// `run -d` containers for the memory figure (0 skips).
    pub run_d: usize,
}

const NETWORK: &str = "scale";
const PORT: u16 = 18100;

struct Grower<'a> {
    sb: &'a Sandbox,
    dir: PathBuf,
    /// Each attached namespace's address, in order.
    ips: Vec<Ipv4Addr>,
}

impl Grower<'_> {
    fn ns_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("s{i}"))
    }

    /// Makes and attaches namespaces until `target` are attached, four at a time; the
    /// newest publishes PORT (moved there from the previous newest).
    fn grow(&mut self, target: usize) -> Result<()> {
        while self.ips.len() < target {
            let from = self.ips.len();
            let to = (from + 4).min(target);
            let mut children = Vec::new();
            for i in from..to {
                let path = self.ns_path(i);
                netns::create_pinned(&path)?;
                children.push(
                    self.sb
                        .netwright([
                            "attach",
                            path.to_str().unwrap_or_default(),
                            "--name",
                            &format!("s{i}"),
                            "--network",
                            NETWORK,
                        ])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?,
                );
            }
            for out in wait_all(children, "attaching")? {
                let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                let ip = doc["NetworkSettings"]["Networks"][NETWORK]["IPAddress"].as_str().unwrap_or_default();
                self.ips.push(ip.parse().context("attach printed no address")?);
            }
        }
        Ok(())
    }

    /// Detaches every namespace, four processes at a time; returns the wall time.
    fn release_all(&mut self) -> Result<Duration> {
        let t = Instant::now();
        let names: Vec<String> = (0..self.ips.len()).map(|i| format!("s{i}")).collect();
        for chunk in names.chunks(64) {
            let parts: Vec<&[String]> = chunk.chunks(16).collect();
            let children = parts
                .iter()
                .map(|p| {
                    let mut args = vec!["detach".to_string()];
                    args.extend(p.iter().cloned());
                    self.sb.netwright(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            wait_all(children, "detaching")?;
        }
        let d = t.elapsed();
        for i in 0..self.ips.len() {
            netns::remove_pinned(&self.ns_path(i))?;
        }
        self.ips.clear();
        Ok(d)
    }
}

/// Waits for netwright processes started together; the first failure is the error.
fn wait_all(children: Vec<std::process::Child>, what: &str) -> Result<Vec<std::process::Output>> {
    let outs = children.into_iter().map(|c| c.wait_with_output()).collect::<std::io::Result<Vec<_>>>()?;
    if let Some(bad) = outs.iter().find(|o| !o.status.success()) {
        bail!("{what}: {}", String::from_utf8_lossy(&bad.stderr).trim());
    }
    Ok(outs)
}

/// A TCP connect from inside one namespace to a listener inside another: the time to
/// connect and read one byte.
fn connect_between(from: &OwnedFd, to_ns: &OwnedFd, to: Ipv4Addr, port: u16) -> Result<Duration> {
    let l = netns::within(to_ns, || TcpListener::bind(("0.0.0.0", port)))??;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.write_all(b"x")
    });
    let d = netns::within(from, || -> std::io::Result<Duration> {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(to.into(), port), Duration::from_secs(3))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(t.elapsed())
    })??;
    server.join().map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(d)
}

/// kB of kernel memory in use (slab, page tables, per-CPU, kernel stacks): the kernel's
/// share of each namespace and device pair.
fn kernel_kb() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("Slab:") + field("PageTables:") + field("Percpu:") + field("KernelStack:")
}

/// Packets the CPUs' backlog queues dropped so far (/proc/net/softnet_stat, column 2).
fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// PSS (kB) of this root's netwright processes (resolver, supervisors, monitors).
fn netwright_pss(sb: &Sandbox) -> u64 {
    process::of_root(&sb.root).into_iter().map(|(p, _)| process::kb(p, "smaps_rollup", "Pss:")).sum()
}

/// Random pairs, deterministic per run (xorshift).
fn pairs(n: usize, count: usize) -> Vec<(usize, usize)> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let a = next() as usize % n;
            let b = (a + 1 + next() as usize % (n - 1)) % n;
            (a, b)
        })
        .collect()
}

pub fn run(bin: &std::path::Path, o: &Opts) -> Result<i32> {
    let sb = Sandbox::new("scale", bin)?;
    timed(&mut sb.netwright(["network", "create", NETWORK, "--subnet", "10.128.0.0/16"]))?;
    let dir = sb.dir.join("scale-ns");
    netns::ensure_shared_dir(&dir)?;
    let mut g = Grower { sb: &sb, dir, ips: Vec::new() };
    println!("netwright bench --scale: one bridge network grown to {:?} attached namespaces", o.sizes);
    println!(
        "(netwright attach / detach of one more namespace, whole-process wall time in ms, median (min–max) of {} runs)\n",
        o.runs
    );
    println!(
        "{:>6}   {:<24} {:<24} {:>10} {:>12} {:>14} {:>6} {:>14} {:>10}",
        "N", "attach", "detach", "bridges", "pair TCP ms*", "LAN→published", "names", "kernel kB/ctr", "nw kB/ctr"
    );
    let (kernel0, pss0) = (kernel_kb(), netwright_pss(&sb));
    let (mut attach0, mut last_attach) = (None, None);
    let mut sizes = vec![0];
    sizes.extend(o.sizes.iter().copied().filter(|s| *s > 0));
    for size in sizes {
        let t = Instant::now();
        g.grow(size)?;
        let grow = t.elapsed();
        // Memory first, while nothing else is running.
        std::thread::sleep(Duration::from_millis(500));
        let (kernel, pss) = (kernel_kb(), netwright_pss(&sb));
        let probe = g.dir.join("probe");
        let (mut at, mut de) = (Vec::new(), Vec::new());
        for i in 0..=o.runs {
            netns::create_pinned(&probe)?;
            let a = timed(&mut sb.netwright([
                "attach",
                probe.to_str().unwrap_or_default(),
                "--name",
                "probe",
                "--network",
                NETWORK,
            ]))?;
            let d = timed(&mut sb.netwright(["detach", "probe"]))?;
            netns::remove_pinned(&probe)?;
            if i > 0 {
                at.push(a);
                de.push(d);
            }
        }
        let (a, d) = (stats(at), stats(de));
        attach0.get_or_insert(a.median);
        last_attach = Some(a.median);
        let bridges = sb.in_host(|| {
            netwright_engine::kernel::netlink::Netlink::open()
                .and_then(|mut nl| nl.links())
                .map(|l| l.iter().filter(|l| l.kind.as_deref() == Some("bridge") && l.name.starts_with("nwb")).count())
                .unwrap_or(0)
        });
        let (tcp, lan, names) = if size >= 2 {
            let drops0 = backlog_drops();
            // Connects between 20 random pairs: (median, failures).
            let round = |base: u16| -> Result<(f64, usize)> {
                let (mut v, mut failed) = (Vec::new(), 0);
                for (k, (x, y)) in pairs(size, 20).into_iter().enumerate() {
                    let (fx, fy) = (netns::open(&g.ns_path(x))?, netns::open(&g.ns_path(y))?);
                    match connect_between(&fx, &fy, g.ips[y], base + k as u16) {
                        Ok(d) => v.push(d),
                        Err(_) => failed += 1,
                    }
                }
                Ok((if v.is_empty() { f64::NAN } else { stats(v).median }, failed))
            };
            let (tcp, failed) = round(7000)?;
            if failed > 0 {
                println!(
                    "        {failed} of 20 first contacts failed; the CPUs' backlogs dropped {} packets meanwhile (a bridge floods each ARP request to every port: see doctor's broadcast check)",
                    backlog_drops() - drops0
                );
            }
            // Again between the same pairs: the neighbours are known now (the first
            // connect includes ARP).
            let (warm, _) = round(7100)?;
            // The newest namespace publishes PORT; the LAN reaches it through the host.
            let newest = size - 1;
            let path = g.ns_path(newest);
            let reattach = |publish: &[&str]| -> Result<Duration> {
                let name = format!("s{newest}");
                timed(&mut sb.netwright(["detach", &name]))?;
                let mut args = vec!["attach", path.to_str().unwrap_or_default(), "--name", &name, "--network", NETWORK];
                args.extend(publish);
                timed(&mut sb.netwright(&args))
            };
            reattach(&["-p", &format!("{PORT}:80")])?;
            let ns = netns::open(&path)?;
            let l = netns::within(&ns, || TcpListener::bind(("0.0.0.0", 80)))??;
            let server = std::thread::spawn(move || l.accept().map(|(mut s, _)| s.write_all(b"x")));
            let lan = sb.in_lan(|| -> std::io::Result<Duration> {
                let t = Instant::now();
                let mut s =
                    TcpStream::connect_timeout(&"192.168.1.10:18100".parse().expect("addr"), Duration::from_secs(3))?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                Ok(t.elapsed())
            });
            drop(server);
            reattach(&[])?;
            let lan = match lan {
                Ok(d) => format!("ok {:.3} ms", d.as_secs_f64() * 1000.0),
                Err(e) => format!("FAILED ({e})"),
            };
            // The newest resolves the first by name (the resolver serves every namespace).
            let asked =
                Sandbox::in_ns_cmd(&netns::open(&path)?, "python3").args([&sb.script("dnsq.py"), "s0"]).output();
            let names = match asked {
                Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == g.ips[0].to_string()) => "ok",
                _ => "FAILED",
            };
            (format!("{tcp:.2}/{warm:.2}"), lan, names)
        } else {
            ("-".into(), "-".into(), "-")
        };
        let per = |now: u64, then: u64| {
            if size > 0 { format!("{:.1}", now.saturating_sub(then) as f64 / size as f64) } else { "-".into() }
        };
        println!(
            "{:>6}   {:<24} {:<24} {:>10} {:>12} {:>14} {:>6} {:>14} {:>10}   (growing took {:.1} s)",
            size,
            cell(&a),
            cell(&d),
            bridges,
            tcp,
            lan,
            names,
            per(kernel, kernel0),
            per(pss, pss0),
            grow.as_secs_f64()
        );
    }
    println!("* TCP connect + 1 byte between 20 random pairs, median: first contact (with ARP) / again");
    if let (Some(a0), Some(an)) = (attach0, last_attach) {
        println!("\nattach at the largest size / attach at N = 0: {:.2}", an / a0);
    }
    let n = g.ips.len();
    let took = g.release_all()?;
    let devices = || {
        sb.in_host(|| {
            netwright_engine::kernel::netlink::Netlink::open()
                .and_then(|mut nl| nl.links())
                .map(|l| l.iter().filter(|l| l.name.starts_with("nw")).count())
                .unwrap_or(usize::MAX)
        })
    };
    // The kernel destroys released namespaces (and their veth pairs) in the background.
    let t = Instant::now();
    while devices() > 1 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "\nrelease of all {n}: {:.1} s of detach ({:.2} ms per namespace, 4 processes of 16 at a time); the kernel had destroyed every device {:.1} s later; netwright devices left: {} (the network's bridge)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n.max(1) as f64,
        t.elapsed().as_secs_f64(),
        devices()
    );
    if o.run_d > 0 {
        run_d_memory(&sb, o.run_d)?;
    }
    Ok(0)
}

/// `run -d` containers: netwright's memory per running container.
fn run_d_memory(sb: &Sandbox, count: usize) -> Result<()> {
    let monitors = || -> (u64, usize) {
        let m: Vec<i32> = process::of_root(&sb.root)
            .into_iter()
            .filter(|(_, argv)| {
                argv.first().is_some_and(|a| a.ends_with("netwright-monitor"))
                    || argv.get(1).is_some_and(|a| a == "run")
            })
            .map(|(p, _)| p)
            .collect();
        (m.iter().map(|p| process::kb(*p, "smaps_rollup", "Pss:")).sum(), m.len())
    };
    let before = netwright_pss(sb);
    let names: Vec<String> = (0..count).map(|i| format!("r{i}")).collect();
    let t = Instant::now();
    for chunk in names.chunks(4) {
        let children = chunk
            .iter()
            .map(|n| {
                sb.netwright(["run", "-d", "--name", n, "--network", NETWORK, "--", "sleep", "infinity"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        wait_all(children, "run -d")?;
    }
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = netwright_pss(sb);
    let (pss, procs) = monitors();
    println!(
        "\nrun -d memory: {count} running containers (started in {:.1} s): their {procs} monitors {pss} kB PSS = {:.1} kB per container; every netwright process of the root grew by {} kB",
        took.as_secs_f64(),
        pss as f64 / count as f64,
        after as i64 - before as i64
    );
    for chunk in names.chunks(32) {
        let mut args = vec!["rm".to_string(), "-f".into()];
        args.extend(chunk.iter().cloned());
        timed(&mut sb.netwright(&args))?;
    }
    Ok(())
}
