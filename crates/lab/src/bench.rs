//! `netwright bench`: the cost of running and releasing a container, measured as a user
//! pays it (whole `netwright` processes, in a sandbox), with 0, 100 and 1,000 containers
//! already attached to the same network.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use netwright_testkit::Sandbox;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Containers already attached to the network before each measurement
    /// (default 0,100,1000; with --compare 0,100, or 0,100,1000 with --full)
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Measured repetitions at each size
    #[arg(long, default_value_t = 15)]
    pub runs: usize,
    /// Ports already published (by one filler container) before timing one more
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    pub ports: Vec<usize>,
    /// Seconds of iperf3 per throughput measurement (0 skips; needs iperf3)
    #[arg(long, default_value_t = 3)]
    pub throughput_secs: u64,
    /// Seconds of dnsperf per DNS measurement at each N (0 skips; needs dnsperf)
    #[arg(long, default_value_t = 3)]
    pub dns_secs: u64,
    /// Compare attach/release with netavark and the CNI plugins instead (at --sizes)
    #[arg(long)]
    pub compare: bool,
    /// With --compare: containers attached at once for the throughput figure (0 skips)
    #[arg(long, default_value_t = 100)]
    pub concurrent: usize,
    /// With --compare: containers on the network for the DNS comparison (default 100,
    /// 1000 with --full; 0 skips)
    #[arg(long)]
    pub dns_containers: Option<usize>,
    /// With --compare: which systems to measure
    #[arg(long, value_delimiter = ',', default_value = "netwright,netavark,cni")]
    pub systems: Vec<String>,
    /// With --compare: the full size (N up to 1,000, DNS at 1,000 containers, 5 runs)
    #[arg(long)]
    pub full: bool,
    /// Overlay networks instead: convergence across hosts, the data path over VXLAN, scale
    #[arg(long)]
    pub overlay: bool,
    /// Services instead: VIP spread against DNS round robin, backend churn at --svc-sizes
    /// backends across services, throughput through a VIP
    #[arg(long)]
    pub services: bool,
    /// With --services: total backends for the churn figure (10 per service)
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    pub svc_sizes: Vec<usize>,
    /// A dual-stack bench network (IPv4 + IPv6): attach/release with both addresses, and
    /// the throughput figures over IPv6 too
    #[arg(long)]
    pub ipv6: bool,
    /// Scale instead: one network grown to --scale-sizes attached namespaces (attach,
    /// detach, TCP between pairs, LAN → published port, memory per container, release)
    #[arg(long)]
    pub scale: bool,
    /// With --scale: the sizes
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub scale_sizes: Vec<usize>,
    /// With --scale: `run -d` containers for the memory-per-container figure (0 skips)
    #[arg(long, default_value_t = 1000)]
    pub scale_run_d: usize,
    /// With --overlay: attach → first TCP connect from another host, this many times
    #[arg(long, default_value_t = 100)]
    pub overlay_trials: usize,
    /// With --overlay: hosts for the scale figure (≤ 2 skips it)
    #[arg(long, default_value_t = 20)]
    pub overlay_hosts: u8,
    /// With --overlay: containers per host for the scale figure
    #[arg(long, default_value_t = 50)]
    pub overlay_per_host: usize,
}

pub(crate) fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(d)
}

pub(crate) struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub(crate) fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Stats { min: ms(v[0]), median: ms(v[v.len() / 2]), max: ms(v[v.len() - 1]) }
}

pub(crate) fn cell(s: &Stats) -> String {
    format!("{:>7.2} ({:.2}–{:.2})", s.median, s.min, s.max)
}

/// Times one `run -d` of the container "probe" on `network`.
fn probe(sb: &Sandbox, network: &str) -> Result<Duration> {
    timed(&mut sb.netwright(["run", "-d", "--name", "probe", "--network", network, "--", "sleep", "infinity"]))
}

/// Attaches containers until `target` are running, several `run -d` at a time.
fn fill(sb: &Sandbox, attached: &mut usize, target: usize) -> Result<()> {
    fill_net(sb, "bench", attached, target)
}

fn fill_net(sb: &Sandbox, network: &str, attached: &mut usize, target: usize) -> Result<()> {
    while *attached < target {
        let batch = (target - *attached).min(8);
        let children: Vec<_> = (0..batch)
            .map(|i| {
                let name = format!("fill-{network}-{}", *attached + i);
                sb.netwright(["run", "-d", "--name", &name, "--network", network, "--", "sleep", "infinity"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        for c in children {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                bail!("attaching filler containers: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        *attached += batch;
    }
    Ok(())
}

pub fn run(bin: &std::path::Path, args: &BenchArgs) -> Result<i32> {
    let bin = bin.to_path_buf();
    if args.overlay {
        return crate::overlay::run(
            &bin,
            &crate::overlay::Opts {
                trials: args.overlay_trials.max(1),
                throughput_secs: args.throughput_secs,
                hosts: args.overlay_hosts,
                per_host: args.overlay_per_host,
            },
        );
    }
    if args.scale {
        return crate::scale::run(
            &bin,
            &crate::scale::Opts {
                sizes: args.scale_sizes.clone(),
                runs: args.runs.clamp(1, 15),
                run_d: args.scale_run_d,
            },
        );
    }
    if args.services {
        return crate::services::run(
            &bin,
            &crate::services::Opts {
                sizes: args.svc_sizes.clone(),
                runs: args.runs.clamp(1, 15),
                throughput_secs: args.throughput_secs,
            },
        );
    }
    if args.compare {
        let mut sizes = args.sizes.clone().unwrap_or(if args.full { vec![0, 100, 1000] } else { vec![0, 100] });
        sizes.sort();
        return crate::compare::run(
            &bin,
            &crate::compare::Opts {
                sizes,
                runs: if args.full { args.runs.max(5) } else { args.runs.clamp(1, 5) },
                concurrency: args.concurrent,
                dns_containers: args.dns_containers.unwrap_or(if args.full { 1000 } else { 100 }),
                dns_secs: args.dns_secs,
                datapath_secs: args.throughput_secs,
                systems: args.systems.clone(),
            },
        );
    }
    let sb = Sandbox::new("bench", &bin)?;
    let mut sizes = args.sizes.clone().unwrap_or(vec![0, 100, 1000]);
    sizes.sort();
    let runs = args.runs.max(1);
    if args.ipv6 {
        sb.enable_ipv6()?;
        timed(&mut sb.netwright([
            "network",
            "create",
            "bench",
            "--ipv6",
            "--subnet",
            "10.200.0.0/16",
            "--subnet",
            "fd00:200::/64",
        ]))?;
    } else {
        timed(&mut sb.netwright(["network", "create", "bench", "--subnet", "10.200.0.0/16"]))?;
    }
    println!("netwright bench: whole-process wall time in ms, median (min–max) of {runs} runs");
    let kind = if args.ipv6 { "one dual-stack bridge network (IPv4 + IPv6)" } else { "one bridge network" };
    println!("sandbox host namespace, {kind}; N = containers already attached\n");
    let floor = stats((0..runs).map(|_| timed(&mut sb.in_host_cmd("true"))).collect::<Result<_>>()?);
    let nwfloor = stats((0..runs).map(|_| timed(&mut sb.netwright(["network", "ls", "-q"]))).collect::<Result<_>>()?);
    println!(
        "reference: spawn `true` {} ms; `netwright network ls` {} ms\n",
        cell(&floor).trim(),
        cell(&nwfloor).trim()
    );
    println!("{:>6}   {:<24} {:<24} {:<24}", "N", "run --rm -- true", "attach (run -d)", "release (rm -f)");
    let mut attached = 0;
    let mut dns_results = Vec::new();
    for size in sizes {
        let t = Instant::now();
        fill(&sb, &mut attached, size)?;
        let fill_time = t.elapsed();
        // One warm-up of each, then the measured runs.
        let mut rr = Vec::new();
        let mut at = Vec::new();
        let mut rel = Vec::new();
        for i in 0..=runs {
            let r = timed(&mut sb.netwright(["run", "--rm", "--network", "bench", "--", "true"]))?;
            let a = probe(&sb, "bench")?;
            let d = timed(&mut sb.netwright(["rm", "-f", "probe"]))?;
            if i > 0 {
                rr.push(r);
                at.push(a);
                rel.push(d);
            }
        }
        println!(
            "{:>6}   {:<24} {:<24} {:<24}   (attaching {} fillers took {:.1} s)",
            size,
            cell(&stats(rr)),
            cell(&stats(at)),
            cell(&stats(rel)),
            size,
            fill_time.as_secs_f64()
        );
        if args.dns_secs > 0 && size > 0 {
            dns_results.push((size, dns_bench(&sb, args.dns_secs)?));
        }
    }
    if !dns_results.is_empty() {
        println!(
            "\nembedded DNS: a container name asked from inside a container (dnsperf, {} s, 10 clients)",
            args.dns_secs
        );
        println!("{:>6}   {:>12} {:>14} {:>14} {:>16}", "N", "queries/s", "avg latency", "max latency", "resolver RSS");
        for (n, r) in dns_results {
            match r {
                Some(r) => {
                    println!("{n:>6}   {:>12.0} {:>11.3} ms {:>11.3} ms {:>13} kB", r.qps, r.avg_ms, r.max_ms, r.rss_kb)
                }
                None => println!("{n:>6}   skipped (dnsperf is not installed)"),
            }
        }
    }
    publish_bench(&sb, args, runs)?;
    if args.throughput_secs > 0 {
        throughput_bench(&sb, args.throughput_secs, args.ipv6)?;
    }
    if args.ipv6 {
        let mut sizes = args.sizes.clone().unwrap_or(vec![0, 100]);
        sizes.sort();
        dual_stack_bench(&sb, &sizes, runs)?;
    }
    drop(sb);
    Ok(0)
}

struct DnsResult {
    qps: f64,
    avg_ms: f64,
    max_ms: f64,
    rss_kb: u64,
}

/// dnsperf inside a client container on the bench network, asking for a filler's name.
fn dns_bench(sb: &Sandbox, secs: u64) -> Result<Option<DnsResult>> {
    if Command::new("dnsperf").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Ok(None);
    }
    let data = sb.dir.join("dnsperf.txt");
    std::fs::write(&data, "fill0 A\n")?;
    timed(&mut sb.netwright(["run", "-d", "--name", "dnsclient", "--network", "bench", "--", "sleep", "infinity"]))?;
    let out = sb
        .netwright([
            "exec",
            "dnsclient",
            "--",
            "dnsperf",
            "-s",
            "127.0.0.11",
            "-d",
            data.to_str().unwrap_or_default(),
            "-l",
            &secs.to_string(),
            "-c",
            "10",
            "-q",
            "100",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    timed(&mut sb.netwright(["rm", "-f", "dnsclient"]))?;
    let num = |key: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (avg, max) = text
        .lines()
        .find(|l| l.contains("Average Latency"))
        .map(|l| {
            let nums: Vec<f64> =
                l.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|w| w.parse().ok()).collect();
            (nums.first().copied().unwrap_or(0.0), nums.get(2).copied().unwrap_or(0.0))
        })
        .unwrap_or((0.0, 0.0));
    Ok(Some(DnsResult {
        qps: num("Queries per second"),
        avg_ms: avg * 1000.0,
        max_ms: max * 1000.0,
        rss_kb: resolver_rss(sb),
    }))
}

/// Resident memory of the sandbox's resolver process (kB).
fn resolver_rss(sb: &Sandbox) -> u64 {
    netwright_engine::kernel::process::of_root(&sb.root)
        .into_iter()
        .find(|(_, argv)| argv.iter().any(|a| a == "_resolver"))
        .map(|(p, _)| netwright_engine::kernel::process::kb(p, "status", "VmRSS:"))
        .unwrap_or(0)
}

/// Cost of publishing one more port with N ports already published.
fn publish_bench(sb: &Sandbox, args: &BenchArgs, runs: usize) -> Result<()> {
    println!("\npublish one more port (run -d -p 40000:80, then rm -f) with P ports already published");
    println!("{:>6}   {:<24} {:<24} {:<24}", "P", "attach with -p", "release", "publishing P took");
    let mut sizes = args.ports.clone();
    sizes.sort();
    for p in sizes {
        let t = Instant::now();
        if p > 0 {
            let range = format!("20000-{}:20000-{}", 20000 + p - 1, 20000 + p - 1);
            timed(&mut sb.netwright([
                "run",
                "-d",
                "--name",
                "portfill",
                "--network",
                "bench",
                "-p",
                &range,
                "--",
                "sleep",
                "infinity",
            ]))?;
        }
        let fill = t.elapsed();
        let mut at = Vec::new();
        let mut rel = Vec::new();
        for i in 0..=runs {
            let a = timed(&mut sb.netwright([
                "run",
                "-d",
                "--name",
                "probe",
                "--network",
                "bench",
                "-p",
                "40000:80",
                "--",
                "sleep",
                "infinity",
            ]))?;
            let d = timed(&mut sb.netwright(["rm", "-f", "probe"]))?;
            if i > 0 {
                at.push(a);
                rel.push(d);
            }
        }
        println!("{:>6}   {:<24} {:<24} {:.1} ms", p, cell(&stats(at)), cell(&stats(rel)), fill.as_secs_f64() * 1000.0);
        if p > 0 {
            timed(&mut sb.netwright(["rm", "-f", "portfill"]))?;
        }
    }
    Ok(())
}

/// iperf3 from the LAN to a container: through a published port (DNAT) and straight
/// to the container's address (the LAN gets a route to it), same path otherwise.
/// IPv4-only against dual stack in one sandbox, interleaved run by run (so that the
/// machine's drift hits both alike): attach and release on a network of each kind, both
/// holding N containers.
fn dual_stack_bench(sb: &Sandbox, sizes: &[usize], runs: usize) -> Result<()> {
    timed(&mut sb.netwright(["network", "create", "v4only", "--subnet", "10.201.0.0/16"]))?;
    timed(&mut sb.netwright([
        "network",
        "create",
        "dual",
        "--ipv6",
        "--subnet",
        "10.202.0.0/16",
        "--subnet",
        "fd00:202::/64",
    ]))?;
    println!(
        "\nIPv4-only vs dual stack, interleaved, ms median (min–max) of {runs} runs; N containers on each network"
    );
    println!(
        "{:>6}   {:<24} {:<24} {:>6}   {:<24} {:<24} {:>6}",
        "N", "attach IPv4", "attach dual", "ratio", "release IPv4", "release dual", "ratio"
    );
    let (mut n4, mut n6) = (0, 0);
    for &size in sizes {
        fill_net(sb, "v4only", &mut n4, size)?;
        fill_net(sb, "dual", &mut n6, size)?;
        let mut t: [Vec<Duration>; 4] = Default::default();
        for i in 0..=runs {
            for (k, net) in ["v4only", "dual"].iter().enumerate() {
                let a = probe(sb, net)?;
                let d = timed(&mut sb.netwright(["rm", "-f", "probe"]))?;
                if i > 0 {
                    t[k].push(a);
                    t[2 + k].push(d);
                }
            }
        }
        let [a4, a6, d4, d6] = t.map(stats);
        println!(
            "{size:>6}   {:<24} {:<24} {:>5.0}%   {:<24} {:<24} {:>5.0}%",
            cell(&a4),
            cell(&a6),
            a6.median / a4.median * 100.0,
            cell(&d4),
            cell(&d6),
            d6.median / d4.median * 100.0
        );
    }
    Ok(())
}

fn throughput_bench(sb: &Sandbox, secs: u64, ipv6: bool) -> Result<()> {
    if Command::new("iperf3").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        println!("\nthroughput: skipped (iperf3 is not installed)");
        return Ok(());
    }
    timed(&mut sb.netwright([
        "run",
        "-d",
        "--name",
        "iperf",
        "--network",
        "bench",
        "-p",
        "15201:5201",
        "--",
        "iperf3",
        "-s",
    ]))?;
    let v: serde_json::Value = serde_json::from_slice(&sb.netwright(["inspect", "iperf"]).output()?.stdout)?;
    let ip = v[0]["NetworkSettings"]["Networks"]["bench"]["IPAddress"].as_str().unwrap_or_default().to_string();
    let _ = sb
        .in_lan_cmd("ip")
        .args(["route", "add", "10.200.0.0/16", "via", &netwright_testkit::HOST_ETH0.to_string()])
        .status();
    let run =
        |host: &str, port: &str| crate::compare::iperf(&sb.lan, host.parse::<std::net::IpAddr>()?, port.parse()?, secs);
    let direct = run(&ip, "5201")?;
    let published = run(&netwright_testkit::HOST_ETH0.to_string(), "15201")?;
    println!("\nthroughput LAN -> container, one TCP connection, {secs} s (iperf3):");
    println!("  direct to {ip}:5201        {direct:6.2} Gbit/s");
    println!(
        "  published {}:15201   {published:6.2} Gbit/s  ({:.0}% of direct)",
        netwright_testkit::HOST_ETH0,
        published / direct * 100.0
    );
    if ipv6 {
        let ip6 = v[0]["NetworkSettings"]["Networks"]["bench"]["GlobalIPv6Address"].as_str().unwrap_or_default();
        let _ = sb
            .in_lan_cmd("ip")
            .args(["-6", "route", "add", "fd00:200::/64", "via", netwright_testkit::HOST6_ETH0])
            .status();
        let direct6 = run(ip6, "5201")?;
        let published6 = run(netwright_testkit::HOST6_ETH0, "15201")?;
        println!(
            "  IPv6 direct to [{ip6}]:5201   {direct6:6.2} Gbit/s  ({:.0}% of IPv4 direct)",
            direct6 / direct * 100.0
        );
        println!(
            "  IPv6 published [{}]:15201   {published6:6.2} Gbit/s  ({:.0}% of IPv6 direct)",
            netwright_testkit::HOST6_ETH0,
            published6 / direct6 * 100.0
        );
    }
    Ok(())
}
