//! The data path beside its physical reference: one TCP stream (iperf3) and 1-byte
//! request/response latency, for container → container, LAN → published port and
//! container → LAN, each next to the same path without containers (a bare veth pair,
//! LAN → host, host → LAN) and loopback.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};

use super::{Spread, ok};
use netwright_engine::kernel::netlink::{Netlink, VethSpec};
use netwright_engine::kernel::netns;
use netwright_testkit::{HOST_ETH0, LAN_SERVER, Sandbox};

const ROUND_TRIPS: usize = 5_000;

/// One measured path: where the client runs and where it connects (iperf3 port, echo port).
struct Path_<'a> {
    label: &'static str,
    client: &'a OwnedFd,
    to: Ipv4Addr,
    iperf: u16,
    echo: u16,
}

struct Figures {
    gbits: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
}

/// Echoes whatever arrives, on a listener bound inside `ns` (the socket stays there).
fn echo_server(ns: &OwnedFd, port: u16) -> Result<()> {
    let l = netns::within(ns, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))??;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 64];
                while let Ok(n @ 1..) = s.read(&mut b) {
                    if s.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

/// p50 and p99 of 1-byte round trips from inside `ns`, in µs.
fn round_trips(ns: &OwnedFd, to: SocketAddr) -> Result<(f64, f64)> {
    let mut s = netns::within(ns, || TcpStream::connect_timeout(&to, Duration::from_secs(3)))?
        .with_context(|| format!("connecting to {to}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut b = [0u8; 1];
    let mut lat = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 500 {
        let t = Instant::now();
        s.write_all(b"x")?;
        s.read_exact(&mut b)?;
        if i >= 500 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
}

fn iperf_server(ns: &OwnedFd, port: u16) -> Result<Child> {
    Ok(Sandbox::in_ns_cmd(ns, "iperf3")
        .args(["-s", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// One TCP stream from inside `ns` (Gbit/s), retried while the server starts.
pub fn iperf(ns: &OwnedFd, to: impl Into<std::net::IpAddr>, port: u16, secs: u64) -> Result<f64> {
    let to: std::net::IpAddr = to.into();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Sandbox::in_ns_cmd(ns, "iperf3")
            .args(["-c", &to.to_string(), "-p", &port.to_string(), "-t", &secs.to_string(), "-J"])
            .output()?;
        if out.status.success() {
            let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            return Ok(j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9);
        }
        if Instant::now() > deadline {
            bail!(
                "iperf3 to {to}:{port} failed: {}",
                String::from_utf8_lossy(&out.stdout).lines().rev().take(3).collect::<Vec<_>>().join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two namespaces joined by a bare veth pair (10.250.0.1 ⇄ 10.250.0.2): the physical
/// reference for container ↔ container, which adds a bridge and a second veth.
fn veth_pair(sb: &Sandbox) -> Result<(OwnedFd, OwnedFd)> {
    let dir = sb.dir.join("ref-ns");
    netns::ensure_shared_dir(&dir)?;
    let a = netns::create_pinned(&dir.join("a"))?;
    let b = netns::create_pinned(&dir.join("b"))?;
    let mut na = netns::within(&a, Netlink::open)??;
    let mut nb = netns::within(&b, Netlink::open)??;
    na.create_veth(&VethSpec {
        host_name: "ra",
        peer_name: "rb",
        peer_netns: b.as_raw_fd(),
        peer_mac: None,
        mtu: None,
        master: None,
        isolated: false,
    })?;
    for (nl, name, ip) in [(&mut na, "ra", Ipv4Addr::new(10, 250, 0, 1)), (&mut nb, "rb", Ipv4Addr::new(10, 250, 0, 2))]
    {
        let i = nl.link_by_name(name)?.context("reference veth")?.index;
        nl.batch(vec![
            (Netlink::set_up_msg(1), 0),
            (Netlink::add_addr_msg(i, ip, 24), NLM_F_CREATE | NLM_F_EXCL),
            (Netlink::set_up_msg(i), 0),
        ])
        .map_err(|(_, e)| e)?;
    }
    Ok((a, b))
}

fn container_ns(sb: &Sandbox, name: &str) -> Result<(OwnedFd, Ipv4Addr)> {
    let v: serde_json::Value =
        serde_json::from_slice(&ok(sb.netwright(["inspect", name]).output()?, "netwright inspect")?)?;
    let pid = v[0]["State"]["Pid"].as_i64().context("container pid")?;
    let ip = v[0]["NetworkSettings"]["Networks"]["bench"]["IPAddress"].as_str().unwrap_or_default().parse()?;
    Ok((netns::open(Path::new(&format!("/proc/{pid}/ns/net")))?, ip))
}

pub fn run(bin: &Path, secs: u64, runs: usize) -> Result<()> {
    let sb = Sandbox::new("datapath", bin)?;
    ok(sb.netwright(["network", "create", "bench", "--subnet", "10.200.0.0/16"]).output()?, "network create")?;
    ok(
        sb.netwright([
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "bench",
            "-p",
            "15201:5201",
            "-p",
            "17000:7000",
            "--",
            "iperf3",
            "-s",
        ])
        .output()?,
        "netwright run",
    )?;
    ok(
        sb.netwright(["run", "-d", "--name", "cli", "--network", "bench", "--", "sleep", "infinity"]).output()?,
        "netwright run",
    )?;
    let (srv, srv_ip) = container_ns(&sb, "srv")?;
    let (cli, _) = container_ns(&sb, "cli")?;
    echo_server(&srv, 7000)?;
    let (ref_a, ref_b) = veth_pair(&sb)?;
    let mut servers = vec![iperf_server(&ref_b, 5201)?, iperf_server(&sb.host, 5202)?, iperf_server(&sb.lan, 5301)?];
    echo_server(&ref_b, 7000)?;
    echo_server(&sb.host, 7002)?;
    echo_server(&sb.lan, 7003)?;
    let pairs = [
        (
            Path_ { label: "container → container", client: &cli, to: srv_ip, iperf: 5201, echo: 7000 },
            Path_ {
                label: "  bare veth pair",
                client: &ref_a,
                to: Ipv4Addr::new(10, 250, 0, 2),
                iperf: 5201,
                echo: 7000,
            },
        ),
        (
            Path_ { label: "LAN → published port", client: &sb.lan, to: HOST_ETH0, iperf: 15201, echo: 17000 },
            Path_ { label: "  LAN → host", client: &sb.lan, to: HOST_ETH0, iperf: 5202, echo: 7002 },
        ),
        (
            Path_ { label: "container → LAN", client: &cli, to: LAN_SERVER, iperf: 5301, echo: 7003 },
            Path_ { label: "  host → LAN", client: &sb.host, to: LAN_SERVER, iperf: 5301, echo: 7003 },
        ),
    ];
    println!("\ndata path: one TCP stream (iperf3, {secs} s) and 1-byte request/response ({ROUND_TRIPS} round trips),");
    println!("each beside the same path without containers; median (min–max) of {runs}");
    println!("{:<26} {:<24} {:<22} {:<22}", "path", "Gbit/s", "RR p50 µs", "RR p99 µs");
    let measure = |p: &Path_| -> Result<Figures> {
        let mut f = Figures { gbits: vec![], p50_us: vec![], p99_us: vec![] };
        for _ in 0..runs {
            f.gbits.push(iperf(p.client, p.to, p.iperf, secs)?);
            let (p50, p99) = round_trips(p.client, SocketAddr::from((p.to, p.echo)))?;
            f.p50_us.push(p50);
            f.p99_us.push(p99);
        }
        Ok(f)
    };
    let line = |label: &str, f: &Figures| {
        println!(
            "{label:<26} {:<24} {:<22} {:<22}",
            Spread::of(&f.gbits).fmt(2),
            Spread::of(&f.p50_us).fmt(1),
            Spread::of(&f.p99_us).fmt(1)
        );
    };
    for (ours, reference) in &pairs {
        let a = measure(ours)?;
        let b = measure(reference)?;
        line(ours.label, &a);
        line(reference.label, &b);
        println!(
            "{:<26} {:<24} {:<22} {:<22}",
            "  netwright / reference",
            format!("{:.0}%", Spread::of(&a.gbits).median / Spread::of(&b.gbits).median * 100.0),
            format!("{:+.1} µs", Spread::of(&a.p50_us).median - Spread::of(&b.p50_us).median),
            format!("{:+.1} µs", Spread::of(&a.p99_us).median - Spread::of(&b.p99_us).median)
        );
    }
    let lo = measure(&Path_ { label: "loopback", client: &sb.host, to: Ipv4Addr::LOCALHOST, iperf: 5202, echo: 7002 })?;
    line("loopback (one netns)", &lo);
    // Attribution, not tuning: the same container path with the bridge's packets kept out
    // of the IP hooks (br_netfilter off, in the sandbox's host namespace only). netwright
    // does not need br_netfilter, but Docker and Kubernetes hosts do, so it leaves it be.
    let brnf = "net.bridge.bridge-nf-call-iptables";
    if sb.in_host_cmd("sysctl").args(["-qw", &format!("{brnf}=0")]).status().is_ok_and(|s| s.success()) {
        let off = measure(&pairs[0].0)?;
        line("c → c, br_netfilter off", &off);
        let _ = sb.in_host_cmd("sysctl").args(["-qw", &format!("{brnf}=1")]).status();
    }
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}
