//! A throwaway sandbox: a "LAN" namespace standing for the outside world and a "host"
//! namespace (eth0 on that LAN) in which netwright runs with its own state root.
//!
//! ```text
//! LAN netns: lan0 192.168.1.1 (router) + .100 (server), lo 203.0.113.10 ("internet")
//!    └── veth ── host netns: eth0 192.168.1.10/24, default via 192.168.1.1
//! ```
//!
//! Nothing here touches the real host's network. Dropping the sandbox kills every
//! process inside its namespaces (containers included), unpins everything and removes
//! its directory, also when a test panics.

use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};

use netwright_engine::kernel::netlink::{Netlink, VethSpec};
use netwright_engine::kernel::netns;

pub const LAN_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const LAN_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
pub const HOST_ETH0: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
pub const INTERNET_SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The sandbox's IPv6 LAN (see [`Sandbox::enable_ipv6`]): router, server and the host.
pub const LAN6_ROUTER: &str = "2001:db8:1::1";
pub const LAN6_SERVER: &str = "2001:db8:1::100";
pub const HOST6_ETH0: &str = "2001:db8:1::10";

const TCP_PY: &str = include_str!("../assets/tcp.py");
const KV_PY: &str = include_str!("../assets/kv.py");
const DNSQ_PY: &str = include_str!("../assets/dnsq.py");
const FAKEDNS_PY: &str = include_str!("../assets/fakedns.py");
const SPREAD_PY: &str = include_str!("../assets/spread.py");

pub struct Sandbox {
    pub dir: PathBuf,
    /// netwright's state root inside the sandbox.
    pub root: PathBuf,
    /// The netwright binary the sandbox runs.
    pub bin: PathBuf,
    pub lan: OwnedFd,
    pub host: OwnedFd,
}

impl Sandbox {
    /// Builds a sandbox under a fresh directory in the system temp dir.
    pub fn new(label: &str, bin: &Path) -> Result<Sandbox> {
        sweep_orphans();
        let dir = std::env::temp_dir().join(format!("netwright-{label}-{}", netwright_engine::ctx::random_hex(8)));
        let nsdir = dir.join("ns");
        fs::create_dir_all(&nsdir)?;
        // Written aside and renamed: another test's sweep_orphans must never read a
        // half-written (empty) owner and take this live sandbox for an orphan.
        fs::write(dir.join("owner.tmp"), std::process::id().to_string())?;
        fs::rename(dir.join("owner.tmp"), dir.join(OWNER))?;
        netns::ensure_shared_dir(&nsdir)?;
        // From here on, Drop cleans up whatever exists.
        let mut sb = Sandbox {
            root: dir.join("root"),
            bin: bin.to_path_buf(),
            lan: netns::current()?, // placeholders until the namespaces exist
            host: netns::current()?,
            dir,
        };
        sb.lan = netns::create_pinned(&nsdir.join("lan"))?;
        sb.host = netns::create_pinned(&nsdir.join("host"))?;
        sb.wire().context("wiring the sandbox LAN")?;
        fs::write(sb.dir.join("tcp.py"), TCP_PY)?;
        fs::write(sb.dir.join("kv.py"), KV_PY)?;
        fs::write(sb.dir.join("dnsq.py"), DNSQ_PY)?;
        fs::write(sb.dir.join("fakedns.py"), FAKEDNS_PY)?;
        fs::write(sb.dir.join("spread.py"), SPREAD_PY)?;
        Ok(sb)
    }

    fn wire(&self) -> Result<()> {
        let mut lan = netns::within(&self.lan, Netlink::open)??;
        let mut host = netns::within(&self.host, Netlink::open)??;
        // lo first: a namespace's lo is down until someone brings it up.
        lan.request(Netlink::set_up_msg(1), 0)?;
        host.request(Netlink::set_up_msg(1), 0)?;
        lan.create_veth(&VethSpec {
            host_name: "lan0",
            peer_name: "eth0",
            peer_netns: self.host.as_raw_fd(),
            peer_mac: None,
            mtu: None,
            master: None,
            isolated: false,
        })
        .context("creating the sandbox's LAN veth")?;
        let lan0 = lan.link_by_name("lan0")?.context("lan0")?.index;
        lan.batch(vec![
            (Netlink::add_addr_msg(lan0, LAN_ROUTER, 24), NLM_F_CREATE | NLM_F_EXCL),
            (Netlink::add_addr_msg(lan0, LAN_SERVER, 24), NLM_F_CREATE | NLM_F_EXCL),
            (Netlink::add_addr_msg(1, INTERNET_SERVER, 32), NLM_F_CREATE | NLM_F_EXCL),
            (Netlink::set_up_msg(lan0), 0),
        ])
        .map_err(|(_, e)| e)?;
        let eth0 = host.link_by_name("eth0")?.context("eth0")?.index;
        host.batch(vec![
            (Netlink::add_addr_msg(eth0, HOST_ETH0, 24), NLM_F_CREATE | NLM_F_EXCL),
            (Netlink::set_up_msg(eth0), 0),
            (Netlink::default_route_msg(LAN_ROUTER, eth0), NLM_F_CREATE | NLM_F_EXCL),
        ])
        .map_err(|(_, e)| e)?;
        Ok(())
    }

    pub fn script(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Gives the LAN IPv6 too: lan0 2001:db8:1::1 (router) and ::100 (server), the host's
    /// eth0 2001:db8:1::10/64 with a default route via ::1. The host's eth0 is left with
    /// accept_ra=1, as an uplink configured by SLAAC would be.
    pub fn enable_ipv6(&self) -> Result<()> {
        let sysctl = |dev: &str, key: &str, v: &str| {
            fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/{key}"), v)
                .with_context(|| format!("setting {key} on {dev}"))
        };
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().expect("constant");
        netns::within(&self.lan, || -> Result<()> {
            sysctl("lan0", "accept_ra", "0")?;
            sysctl("lan0", "disable_ipv6", "0")?;
            let mut nl = Netlink::open()?;
            let lan0 = nl.link_by_name("lan0")?.context("lan0")?.index;
            nl.batch(vec![
                (Netlink::add_addr6_msg(lan0, v6(LAN6_ROUTER), 64), NLM_F_CREATE | NLM_F_EXCL),
                (Netlink::add_addr6_msg(lan0, v6(LAN6_SERVER), 64), NLM_F_CREATE | NLM_F_EXCL),
            ])
            .map_err(|(_, e)| e)?;
            Ok(())
        })??;
        netns::within(&self.host, || -> Result<()> {
            sysctl("eth0", "accept_ra", "1")?;
            sysctl("eth0", "disable_ipv6", "0")?;
            let mut nl = Netlink::open()?;
            let eth0 = nl.link_by_name("eth0")?.context("eth0")?.index;
            nl.batch(vec![
                (Netlink::add_addr6_msg(eth0, v6(HOST6_ETH0), 64), NLM_F_CREATE | NLM_F_EXCL),
                (Netlink::default_route_msg(v6(LAN6_ROUTER), eth0), NLM_F_CREATE | NLM_F_EXCL),
            ])
            .map_err(|(_, e)| e)?;
            Ok(())
        })??;
        Ok(())
    }

    /// `netwright ARGS` inside the host namespace with the sandbox's state root.
    pub fn netwright<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        netwright_in(&self.bin, &self.root, &self.host, args)
    }

    /// A command run inside the LAN namespace (a server or client "outside").
    pub fn in_lan_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        enter_on_exec(&mut c, &self.lan);
        c
    }

    /// A command run in the host namespace, outside any container.
    pub fn in_host_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        enter_on_exec(&mut c, &self.host);
        c
    }

    /// A command run in any namespace (kept open by the caller until it is spawned).
    pub fn in_ns_cmd(ns: &OwnedFd, program: &str) -> Command {
        let mut c = Command::new(program);
        enter_on_exec(&mut c, ns);
        c
    }

    /// Runs `f` on a fresh thread that lives in the host namespace.
    pub fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.host, f)
    }

    /// Runs `f` on a fresh thread in the LAN namespace.
    pub fn in_lan<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.lan, f)
    }

    /// Host number `n` of a multi-host sandbox, each with its own state root. Host 1 is the
    /// sandbox's own host (eth0 192.168.1.10); host n ≥ 2 is a new namespace routed through
    /// the LAN namespace: `lanN` 192.168.N.1/24 there, eth0 192.168.N.10/24 in the host.
    ///
    /// ```text
    /// LAN netns (router, etcd on 192.168.1.1:2379)
    ///   ├── lan0 ── h1 eth0 192.168.1.10
    ///   ├── lan2 ── h2 eth0 192.168.2.10
    ///   └── lan3 ── h3 eth0 192.168.3.10
    /// ```
    pub fn host(&self, n: u8) -> Result<Host> {
        let root = self.dir.join(format!("root-h{n}"));
        if n == 1 {
            return Ok(Host {
                name: "h1".into(),
                ns: self.host.try_clone()?,
                root: self.root.clone(),
                addr: HOST_ETH0,
                dir: self.dir.clone(),
                bin: self.bin.clone(),
            });
        }
        let ns = netns::create_pinned(&self.dir.join("ns").join(format!("h{n}")))?;
        let addr = Ipv4Addr::new(192, 168, n, 10);
        let gw = Ipv4Addr::new(192, 168, n, 1);
        let mut lan = netns::within(&self.lan, Netlink::open)??;
        let mut host = netns::within(&ns, Netlink::open)??;
        host.request(Netlink::set_up_msg(1), 0)?;
        let lan_if = format!("lan{n}");
        lan.create_veth(&VethSpec {
            host_name: &lan_if,
            peer_name: "eth0",
            peer_netns: ns.as_raw_fd(),
            peer_mac: None,
            mtu: None,
            master: None,
            isolated: false,
        })
        .context("creating a host's LAN veth")?;
        let idx = lan.link_by_name(&lan_if)?.context("lanN")?.index;
        lan.batch(vec![(Netlink::add_addr_msg(idx, gw, 24), NLM_F_CREATE | NLM_F_EXCL), (Netlink::set_up_msg(idx), 0)])
            .map_err(|(_, e)| e)?;
        // The LAN namespace routes between the hosts' subnets (a sandbox namespace: its
        // sysctl is its own).
        run_in(&self.lan, || fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?;
        let eth0 = host.link_by_name("eth0")?.context("eth0")?.index;
        host.batch(vec![
            (Netlink::add_addr_msg(eth0, addr, 24), NLM_F_CREATE | NLM_F_EXCL),
            (Netlink::set_up_msg(eth0), 0),
            (Netlink::default_route_msg(gw, eth0), NLM_F_CREATE | NLM_F_EXCL),
        ])
        .map_err(|(_, e)| e)?;
        // A new veth drops what it is given until the kernel has seen its carrier and given
        // it a queue (link watch, up to a second): a first TCP SYN lost there costs a
        // second-long retransmission. Wait until both ends run.
        for _ in 0..300 {
            let running =
                |nl: &mut Netlink, name: &str| nl.link_by_name(name).ok().flatten().is_some_and(|l| l.running);
            if running(&mut host, "eth0") && running(&mut lan, &lan_if) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Host { name: format!("h{n}"), ns, root, addr, dir: self.dir.clone(), bin: self.bin.clone() })
    }

    /// Starts etcd (Debian's etcd-server) in the LAN namespace on 192.168.1.1:2379, its data
    /// under the sandbox; returns its URL once it answers. Killed with the sandbox.
    pub fn start_etcd(&self) -> Result<String> {
        let url = format!("http://{LAN_ROUTER}:2379");
        let log = fs::File::create(self.dir.join("etcd.log"))?;
        self.in_lan_cmd("etcd")
            .args(["--name", "nw", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
            ])
            .args(["--initial-cluster", "nw=http://127.0.0.1:2380", "--log-level", "error"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (apt install etcd-server)")?;
        let gw = netwright_engine::overlay::etcd::Gateway::new(&url)?;
        for _ in 0..200 {
            use netwright_engine::overlay::etcd::Kv;
            if self.in_lan(|| gw.list("/").is_ok()) {
                return Ok(url);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("etcd did not answer within 10 s: see {}", self.dir.join("etcd.log").display())
    }
}

/// One host of a multi-host sandbox (see [`Sandbox::host`]).
pub struct Host {
    pub name: String,
    pub ns: OwnedFd,
    /// Its netwright state root.
    pub root: PathBuf,
    /// Its underlay address.
    pub addr: Ipv4Addr,
    dir: PathBuf,
    bin: PathBuf,
}

impl Host {
    /// `netwright ARGS` on this host, with its state root.
    pub fn netwright<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        netwright_in(&self.bin, &self.root, &self.ns, args)
    }

    /// A command run in this host's namespace, outside any container.
    pub fn cmd(&self, program: &str) -> Command {
        Sandbox::in_ns_cmd(&self.ns, program)
    }

    pub fn script(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Runs `f` on a fresh thread in this host's namespace.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.ns, f)
    }
}

/// `netwright ARGS` with state root `root`, run inside namespace `ns`.
fn netwright_in<I, S>(bin: &Path, root: &Path, ns: &OwnedFd, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(bin);
    c.args(args).env("NETWRIGHT_ROOT", root);
    enter_on_exec(&mut c, ns);
    c
}

const OWNER: &str = "owner.pid";

/// Mount points under `dir`, deepest first (from /proc/self/mountinfo), and whether each
/// is a pinned namespace.
fn mounts_under(dir: &Path) -> Vec<(PathBuf, bool)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<(PathBuf, bool)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = PathBuf::from(f.get(4)?);
            let nsfs = l.contains(" - nsfs ");
            point.starts_with(dir).then_some((point, nsfs))
        })
        .collect();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Kills every process inside the namespaces pinned under `dir` (LAN, host, and every
/// root's containers), unpins everything and removes the directory.
fn tear_down(dir: &Path) {
    let mounts = mounts_under(dir);
    let inodes: HashSet<u64> = mounts.iter().filter(|(_, ns)| *ns).filter_map(|(p, _)| netns::inode(p)).collect();
    for _ in 0..50 {
        let pids = processes_in(&inodes);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (p, _) in &mounts {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(dir);
}

/// Sandboxes whose creator died without dropping them (a bench or test killed by a
/// signal): the next sandbox cleans them up.
fn sweep_orphans() {
    let Ok(dir) = fs::read_dir(std::env::temp_dir()) else { return };
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with("netwright-") {
            continue;
        }
        let Ok(owner) = fs::read_to_string(e.path().join(OWNER)) else { continue };
        // An owner that does not parse is not taken for a dead one: skip it.
        let Ok(pid) = owner.trim().parse::<i32>() else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tear_down(&e.path());
        }
    }
}

fn run_in<T: Send>(ns: &OwnedFd, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(ns).expect("entering sandbox namespace");
            f()
        })
        .join()
        .expect("sandbox thread panicked")
    })
}

fn enter_on_exec(c: &mut Command, ns: &OwnedFd) {
    let fd = ns.as_raw_fd();
    // SAFETY: setns only, between fork and exec, on a descriptor the Sandbox keeps open.
    unsafe {
        c.pre_exec(move || netns::enter(&std::os::fd::BorrowedFd::borrow_raw(fd)));
    }
}

/// Processes whose network namespace is one of `inodes`.
fn processes_in(inodes: &HashSet<u64>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(proc) = fs::read_dir("/proc") else { return vec![] };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| netns::inode(Path::new(&format!("/proc/{pid}/ns/net"))).is_some_and(|i| inodes.contains(&i)))
        .collect()
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        tear_down(&self.dir);
    }
}
