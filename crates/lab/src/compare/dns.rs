//! DNS: a container name asked from inside a container, netwright's resolver (127.0.0.11)
//! vs aardvark-dns (Podman's, on the network's gateway, started by netavark), with M
//! containers on the network. A closed-loop load of its own (clients each with one query
//! outstanding) gives queries/second and the p50/p99 latency dnsperf does not print;
//! every answer is checked (NOERROR with an address).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use super::{NETAVARK, Netavark, System, ok};
use netwright_engine::kernel::netns;
use netwright_testkit::Sandbox;

pub const CLIENTS: usize = 10;
/// The ceiling measured in netwright's client container, for the table.
pub static CEILING: std::sync::Mutex<Option<Vec<Load>>> = std::sync::Mutex::new(None);
pub const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

pub struct Load {
    pub qps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: usize,
}

fn query(name: &str) -> Result<Vec<u8>> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(format!("{name}."))?, RecordType::A));
    Ok(q.to_vec()?)
}

/// `CLIENTS` threads in `ns`, each asking `name` of `server` and waiting for the answer.
pub fn load(ns: &OwnedFd, server: SocketAddr, name: &str, secs: u64) -> Result<Load> {
    let q = query(name)?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let results: Vec<Result<(Vec<f64>, usize)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let mut q = q.clone();
                s.spawn(move || -> Result<(Vec<f64>, usize)> {
                    let sock = netns::within(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
                    sock.connect(server)?;
                    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
                    let (mut lat, mut failed) = (Vec::new(), 0);
                    let mut buf = [0u8; 1500];
                    let mut id = (c as u16) << 12;
                    while Instant::now() < deadline {
                        id = id.wrapping_add(1);
                        q[0..2].copy_from_slice(&id.to_be_bytes());
                        let t = Instant::now();
                        sock.send(&q)?;
                        loop {
                            match sock.recv(&mut buf) {
                                // An answer to an earlier, timed-out query: keep waiting for ours.
                                Ok(n) if n >= 12 && buf[0..2] != id.to_be_bytes() => continue,
                                // NOERROR with at least one answer.
                                Ok(n) if n >= 12 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0 => {
                                    lat.push(t.elapsed().as_secs_f64() * 1000.0)
                                }
                                _ => failed += 1,
                            }
                            break;
                        }
                    }
                    Ok((lat, failed))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("dns client")).collect()
    });
    let (mut lat, mut failed) = (Vec::new(), 0);
    for r in results {
        let (l, f) = r?;
        lat.extend(l);
        failed += f;
    }
    if lat.is_empty() {
        bail!("no DNS answer from {server} for {name}");
    }
    lat.sort_by(f64::total_cmp);
    Ok(Load {
        qps: lat.len() as f64 / secs as f64,
        p50_ms: lat[lat.len() / 2],
        p99_ms: lat[lat.len() * 99 / 100],
        failed,
    })
}

/// The ceiling any resolver can reach under this load: a responder that does nothing but
/// turn each query into a fixed one-address answer, on loopback in the client's netns.
/// What separates it from a real resolver is the resolver's own work.
pub fn ceiling(ns: &OwnedFd, secs: u64) -> Result<Load> {
    let sock = netns::within(ns, || UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))??;
    let addr = sock.local_addr()?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let server = std::thread::spawn(move || {
        let (mut buf, mut out) = ([0u8; 1500], Vec::with_capacity(512));
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
            out.clear();
            out.extend_from_slice(&buf[..n]);
            out[2] |= 0x80;
            out[7] = 1;
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 2, 88, 0, 4, 10, 0, 0, 1]);
            let _ = sock.send_to(&out, peer);
        }
    });
    let l = load(ns, addr, "c1", secs);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = server.join();
    l
}

/// PSS (kB) of processes in the sandbox's host namespace whose command line contains `needle`.
pub fn pss_of(sb: &Sandbox, needle: &str) -> u64 {
    use std::os::fd::AsRawFd;
    let host = netns::inode(Path::new(&format!("/proc/self/fd/{}", sb.host.as_raw_fd())));
    let mut total = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle)
            && netns::inode(Path::new(&format!("/proc/{pid}/ns/net"))) == host
        {
            total += netwright_engine::kernel::process::kb(pid, "smaps_rollup", "Pss:");
        }
    }
    total
}

/// netwright: M containers on a user-defined network, queries from the first for the second.
pub fn netwright(bin: &Path, m: usize, secs: u64, runs: usize) -> Result<(Vec<Load>, u64)> {
    let sb = Sandbox::new("dns", bin)?;
    ok(sb.netwright(["network", "create", "bench", "--subnet", "10.200.0.0/16"]).output()?, "network create")?;
    for i in 0..m.max(2) {
        ok(
            sb.netwright(["run", "-d", "--name", &format!("c{i}"), "--network", "bench", "--", "sleep", "infinity"])
                .output()?,
            "netwright run",
        )?;
    }
    let v: serde_json::Value = serde_json::from_slice(&ok(sb.netwright(["inspect", "c0"]).output()?, "inspect")?)?;
    let pid = v[0]["State"]["Pid"].as_i64().context("pid")?;
    let ns = netns::open(Path::new(&format!("/proc/{pid}/ns/net")))?;
    let server = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 11), 53));
    load(&ns, server, "c1", 1)?; // warm-up
    let l = (0..runs).map(|_| load(&ns, server, "c1", secs)).collect::<Result<_>>()?;
    let c: Vec<Load> = (0..runs).map(|_| ceiling(&ns, secs)).collect::<Result<_>>()?;
    *CEILING.lock().expect("ceiling") = Some(c);
    let pss = netwright_engine::kernel::process::of_root(&sb.root)
        .into_iter()
        .filter(|(_, argv)| argv.iter().any(|a| a == "_resolver" || a == "_dns"))
        .map(|(p, _)| netwright_engine::kernel::process::kb(p, "smaps_rollup", "Pss:"))
        .sum();
    Ok((l, pss))
}

/// aardvark-dns: M containers set up by netavark with DNS enabled; queries from the first
/// container's namespace to the gateway, where netavark starts aardvark-dns.
pub fn aardvark(bin: &Path, m: usize, secs: u64, runs: usize) -> Result<(Vec<Load>, u64)> {
    if !Path::new(AARDVARK).exists() || !Path::new(NETAVARK).exists() {
        bail!("aardvark-dns or netavark is not installed (apt-get install aardvark-dns netavark)");
    }
    let sb = Sandbox::new("dns-aardvark", bin)?;
    let nv = Netavark { ports: Default::default(), serial: Default::default(), dns: true };
    for i in 0..m.max(2) {
        nv.attach(&sb, i, 0)?;
    }
    let ns = netns::open(&sb.dir.join("peer-ns").join("c0"))?;
    // aardvark-dns starts in the background: wait until it answers.
    let gw = SocketAddr::from((Ipv4Addr::new(10, 210, 0, 1), 53));
    let deadline = Instant::now() + Duration::from_secs(10);
    while load(&ns, gw, "c1", 1).is_err() {
        if Instant::now() > deadline {
            bail!("aardvark-dns never answered on {gw}");
        }
    }
    let l = (0..runs).map(|_| load(&ns, gw, "c1", secs)).collect::<Result<_>>()?;
    let pss = pss_of(&sb, "aardvark-dns");
    // No teardown: dropping the sandbox ends aardvark-dns and everything netavark made.
    Ok((l, pss))
}
