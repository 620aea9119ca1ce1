//! The resolver process: one tokio runtime on one thread, serving every container with
//! embedded DNS from one process. For each such container it binds UDP and TCP sockets on
//! 127.0.0.11:<port> inside the container's namespace (made there by a short-lived thread
//! that enters it) and installs, in that namespace, a DNAT of 127.0.0.11:53 to that port —
//! so a container's own server on port 53 keeps working, as with Docker's resolver.
//! Names not ours are forwarded from the host namespace to the upstreams (UDP, TCP when
//! truncated); a dead upstream yields SERVFAIL within ~2 s, never a hang.
//!
//! A supervisor process restarts the resolver if it dies; the records live in the store,
//! so a new resolver rebuilds everything at start.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::task::JoinHandle;

use super::{Decision, Zone};
use crate::ctx::Ctx;
use crate::kernel::netns;
use crate::kernel::nftables::{self as nft, Batch, Expr, Nftables};
use crate::store::Store;

const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
const TCP_CONNECTIONS_PER_CONTAINER: usize = 16;
/// How long a TCP client may sit between (or inside) queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

pub fn socket_path(ctx: &Ctx) -> PathBuf {
    ctx.root.join("dns.sock")
}

fn pid_path(ctx: &Ctx) -> PathBuf {
    ctx.root.join("dns.pid")
}

struct Shared {
    zone: RwLock<Zone>,
    host_upstreams: RwLock<Vec<std::net::IpAddr>>,
    rotate: AtomicUsize,
}

/// One container's listeners.
struct Served {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The resolver process's main.
pub fn run_resolver(ctx: &Ctx) -> Result<()> {
    // Two sockets per served namespace: a host with thousands of containers needs more
    // descriptors than the usual soft limit of 1,024 (the hard limit is root's to set).
    crate::kernel::process::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(resolver(ctx.clone()))
}

async fn resolver(ctx: Ctx) -> Result<()> {
    let path = socket_path(&ctx);
    let _ = std::fs::remove_file(&path);
    let control = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let shared = Arc::new(Shared {
        zone: RwLock::new(Zone::default()),
        host_upstreams: RwLock::new(Vec::new()),
        rotate: AtomicUsize::new(0),
    });
    let mut served: HashMap<String, Served> = HashMap::new();
    // One connection for the resolver's life. Besides sparing an open per sync, it keeps
    // the store's WAL open: each netwright command is a short process, and when its close
    // is the last connection's SQLite checkpoints the WAL into the database and deletes it
    // (two fsyncs, ~1 ms of every attach), after which the next command's open rebuilds
    // the WAL index. With the resolver holding it, neither happens; the WAL is
    // checkpointed by the commit that grows it past 1,000 pages.
    let mut store = ctx.store()?;
    sync(&mut store, &ctx, &shared, &mut served);
    // A safety net only: every change arrives as a "sync <id>" from the command making it.
    let mut tick = tokio::time::interval(IDLE_TICK);
    tick.tick().await;
    let mut idle_ticks = 0;
    loop {
        tokio::select! {
            conn = control.accept() => {
                let Ok((mut stream, _)) = conn else { continue };
                let mut line = vec![0u8; 128];
                let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut line)).await.ok().and_then(|r| r.ok()).unwrap_or(0);
                let text = String::from_utf8_lossy(&line[..n]).into_owned();
                let text = text.trim();
                if let Some(id) = text.strip_prefix("sync ") {
                    sync_one(&mut store, &ctx, &shared, &mut served, id.trim());
                } else if let Some(id) = text.strip_prefix("gone ") {
                    // A container being released: its names and sockets go at once, while
                    // its release goes on (a "sync" after the store changed follows).
                    shared.zone.write().expect("zone lock").remove(id.trim());
                    served.remove(id.trim());
                } else if text == "remotes" {
                    sync_remotes(&mut store, &shared);
                } else if text == "services" {
                    sync_services(&mut store, &shared);
                } else {
                    sync(&mut store, &ctx, &shared, &mut served);
                }
                let _ = stream.write_all(b"ok\n").await;
            }
            _ = tick.tick() => {
                sync(&mut store, &ctx, &shared, &mut served);
                // Nothing to serve for two ticks in a row: the root's last named container
                // is gone, so are we (the next one to need us starts us again).
                idle_ticks = if served.is_empty() { idle_ticks + 1 } else { 0 };
                if idle_ticks >= 2 {
                    drop(store); // the last connection now, maybe: its close checkpoints the WAL
                    std::process::exit(EXIT_IDLE);
                }
            }
        }
    }
}

/// How often the resolver re-reads the store, and checks whether it is still needed.
const IDLE_TICK: Duration = Duration::from_secs(10);
/// The resolver's exit code for "no container needs me": the supervisor ends too.
const EXIT_IDLE: i32 = 3;

/// One container changed: update its records and listeners only (O(1) in containers).
fn sync_one(store: &mut Store, ctx: &Ctx, shared: &Arc<Shared>, served: &mut HashMap<String, Served>, id: &str) {
    let Ok((nets, c, eps)) = store.read(|tx| Ok((tx.networks()?, tx.container(id)?, tx.endpoints_of(id)?))) else {
        return;
    };
    let serves = {
        let mut zone = shared.zone.write().expect("zone lock");
        zone.update(&nets, id, c.as_ref(), &eps);
        zone.serves(id)
    };
    if !serves {
        served.remove(id);
    } else if !served.contains_key(id) {
        adopt_into(ctx, shared, served, id.to_string());
    }
}

fn adopt_into(ctx: &Ctx, shared: &Arc<Shared>, served: &mut HashMap<String, Served>, id: String) {
    let gateways = shared.zone.read().expect("zone lock").dns_gateways.get(&id).cloned().unwrap_or_default();
    match adopt(ctx, &id, gateways) {
        Ok((udp, tcp)) => {
            let tasks = vec![
                tokio::spawn(serve_udp(udp, id.clone(), shared.clone())),
                tokio::spawn(serve_tcp(tcp, id.clone(), shared.clone())),
            ];
            served.insert(id, Served { tasks });
        }
        Err(e) => {
            eprintln!("netwright-dns: cannot serve container {}: {e:#}", &id[..12.min(id.len())]);
            let emfile = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(libc::EMFILE)
            });
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if emfile && !SAID.swap(true, Ordering::Relaxed) {
                let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map(|(_, hard)| hard)
                    .unwrap_or(0);
                eprintln!(
                    "netwright-dns: out of file descriptors: the resolver holds two per container and may hold {limit} (it could not raise that: no CAP_SYS_RESOURCE); raise the hard limit of open files (systemd LimitNOFILE=, ulimit -Hn) for netwright"
                );
            }
        }
    }
}

/// Re-reads only the other hosts' endpoints (overlay names).
fn sync_remotes(store: &mut Store, shared: &Arc<Shared>) {
    let Ok((nets, remotes)) = store.read(|tx| Ok((tx.networks()?, tx.remote_endpoints()?))) else { return };
    shared.zone.write().expect("zone lock").set_remotes(&nets, &remotes);
}

/// Re-reads only the services (VIPs, and their backends for tasks.NAME).
fn sync_services(store: &mut Store, shared: &Arc<Shared>) {
    let Ok(svcs) = store.read(crate::services::all) else { return };
    shared.zone.write().expect("zone lock").set_services(&svcs);
}

/// Rebuilds the zone from the store and adopts/drops containers to match.
fn sync(store: &mut Store, ctx: &Ctx, shared: &Arc<Shared>, served: &mut HashMap<String, Served>) {
    let Ok((nets, ctrs, eps, remotes, svcs)) = store.read(|tx| {
        Ok((tx.networks()?, tx.containers()?, tx.all_endpoints()?, tx.remote_endpoints()?, crate::services::all(tx)?))
    }) else {
        return;
    };
    // A container whose owner is gone (a runtime that deleted its namespace without a
    // teardown, nobody running a command since) is not served: holding sockets in its
    // namespace would keep that namespace, and so the container, alive forever.
    let ctrs: Vec<_> = ctrs.into_iter().filter(|c| c.owner_alive()).collect();
    let mut zone = Zone::build(&nets, &ctrs, &eps);
    zone.set_remotes(&nets, &remotes);
    zone.set_services(&svcs);
    // A set: the retain below asks it once per served container (a Vec made this sync
    // quadratic — 10,000 containers, 10^8 string compares every tick).
    let wanted: std::collections::HashSet<String> = zone.served().cloned().collect();
    *shared.zone.write().expect("zone lock") = zone;
    *shared.host_upstreams.write().expect("upstreams lock") = host_upstreams();
    served.retain(|id, _| wanted.contains(id));
    for id in wanted {
        if !served.contains_key(&id) {
            adopt_into(ctx, shared, served, id);
        }
    }
}

/// The host's upstream resolvers (the resolver runs in the host namespace, so loopback
/// ones such as systemd-resolved's 127.0.0.53 work from here).
fn host_upstreams() -> Vec<std::net::IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect()
}

/// Inside the container's namespace: sockets on 127.0.0.11:<port>, and 127.0.0.11:53
/// redirected there.
///
/// On the resolver's own thread, which goes into the namespace and comes back: nothing
/// else runs on it meanwhile (no await in between), and a thread started and joined for
/// it was ~0.2 ms of the ~0.7 an attach waits for the resolver. Should the way back ever
/// fail, the thread would make its later sockets (upstream queries) in the container's
/// namespace: the resolver exits instead, and its supervisor starts another.
fn adopt(ctx: &Ctx, id: &str, gateways: Vec<Ipv4Addr>) -> Result<(UdpSocket, TcpListener)> {
    let pin = ctx.netns_path(id);
    let ns = netns::open(&pin).with_context(|| format!("opening {}", pin.display()))?;
    let home = netns::current().context("opening the resolver's own namespace")?;
    netns::enter(&ns).context("entering the container's namespace")?;
    let made = (|| -> Result<(std::net::UdpSocket, std::net::TcpListener)> {
        let udp = std::net::UdpSocket::bind((DNS_IP, 0))?;
        let port = udp.local_addr()?.port();
        let tcp = std::net::TcpListener::bind((DNS_IP, port)).or_else(|_| std::net::TcpListener::bind((DNS_IP, 0)))?;
        let tcp_port = tcp.local_addr()?.port();
        redirect(port, tcp_port, &gateways)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    })();
    if let Err(e) = netns::enter(&home) {
        eprintln!("netwright-dns: cannot return to the host's namespace ({e}): restarting");
        std::process::exit(EXIT_LOST_NAMESPACE);
    }
    let (udp, tcp) = made?;
    Ok((UdpSocket::from_std(udp)?, TcpListener::from_std(tcp)?))
}

/// The resolver's exit code when its thread could not leave a container's namespace (its
/// supervisor starts a new one).
const EXIT_LOST_NAMESPACE: i32 = 4;

/// Removes the redirect from the current namespace (an attached container's, which
/// outlives what netwright put in it).
pub fn remove_redirect() {
    let mut b = Batch::new(nft::NFPROTO_IPV4);
    b.del_table(REDIRECT_TABLE);
    let Ok(mut nft) = Nftables::open() else { return };
    // Asked first: a batch the kernel refuses (no such table: the resolver never served
    // this namespace) is aborted, and an abort waits a full RCU grace period (~11 ms of a
    // detach, measured at 10,000 containers). A question costs a round trip.
    if nft.has_table(nft::NFPROTO_IPV4, REDIRECT_TABLE).unwrap_or(true) {
        let _ = nft.commit(&b);
    }
    nft.close_detached();
}

const REDIRECT_TABLE: &str = "netwright-dns";

/// `ip daddr 127.0.0.11 udp/tcp dport 53 dnat to 127.0.0.11:<port>` in the current namespace
/// (and the same for each gateway address where the container expects its resolver).
fn redirect(udp_port: u16, tcp_port: u16, gateways: &[Ipv4Addr]) -> Result<()> {
    let t = REDIRECT_TABLE;
    let mut b = Batch::new(nft::NFPROTO_IPV4);
    b.add_table(t).add_base_chain(t, "output", "nat", nft::hook::OUTPUT, -100).flush_chain(t, "output");
    let dsts: Vec<Ipv4Addr> = std::iter::once(DNS_IP).chain(gateways.iter().copied()).collect();
    for ((proto, port), dst) in
        [(17u8, udp_port), (6u8, tcp_port)].into_iter().flat_map(|p| dsts.iter().map(move |d| (p, d)))
    {
        b.add_rule(
            t,
            "output",
            "the embedded DNS server: 127.0.0.11:53 (or the gateway's :53) → the resolver's port",
            &[
                Expr::Payload { base: 1, offset: 16, len: 4, dreg: nft::REG_1 },
                Expr::Cmp { sreg: nft::REG_1, op: 0, data: dst.octets().to_vec() },
                Expr::Meta { key: nft::meta::L4PROTO, dreg: nft::REG_1 },
                Expr::Cmp { sreg: nft::REG_1, op: 0, data: vec![proto] },
                Expr::Payload { base: 2, offset: 2, len: 2, dreg: nft::REG_1 },
                Expr::Cmp { sreg: nft::REG_1, op: 0, data: 53u16.to_be_bytes().to_vec() },
                Expr::ImmediateData { dreg: nft::REG32_00, data: DNS_IP.octets().to_vec() },
                Expr::ImmediateData { dreg: nft::REG32_00 + 1, data: port.to_be_bytes().to_vec() },
                Expr::Dnat { family: nft::NFPROTO_IPV4, reg_addr: nft::REG32_00, reg_port: nft::REG32_00 + 1 },
            ],
        );
    }
    let mut nft = Nftables::open()?;
    nft.commit(&b).map_err(|(i, e)| anyhow!("installing the DNS redirect (message {i}): {e}"))?;
    // A new container waits for this: not for a grace period of someone's release.
    nft.close_in_background();
    Ok(())
}

async fn serve_udp(sock: UdpSocket, id: String, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(512);
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        // A container name asked by A/AAAA: answered from the wire bytes (no allocation).
        let fast = {
            let zone = shared.zone.read().expect("zone lock");
            super::answer_fast(&zone, &id, &buf[..n], shared.rotate.fetch_add(1, Ordering::Relaxed), &mut out)
        };
        if fast {
            let _ = sock.send_to(&out, peer).await;
            continue;
        }
        // Our own names are answered right here; only forwarding gets a task of its own,
        // so a slow upstream never holds up the rest.
        let Ok(msg) = Message::from_vec(&buf[..n]) else { continue };
        match local(&msg, &id, &shared) {
            Decision::Reply(r) => {
                let _ = sock.send_to(&r, peer).await;
            }
            Decision::Drop => {}
            Decision::Forward => {
                let query = buf[..n].to_vec();
                let (sock, id, shared) = (sock.clone(), id.clone(), shared.clone());
                tokio::spawn(async move {
                    let reply = forward_for(&query, &msg, &id, &shared).await;
                    let _ = sock.send_to(&reply, peer).await;
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, id: String, shared: Arc<Shared>) {
    let per_container = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS_PER_CONTAINER));
    // Wakes every connection that is waiting for its next query, so that idle ones make
    // room for a new client (RFC 7766 lets a server close idle connections at any time).
    let evict = Arc::new(tokio::sync::Notify::new());
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        // Bounded: a flood of connections cannot take the resolver down (aardvark's CVEs),
        // and idle ones cannot lock the next client out.
        let permit = match per_container.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                evict.notify_waiters();
                match tokio::time::timeout(Duration::from_secs(1), per_container.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => continue, // every connection is busy with a query: this one waits its turn
                }
            }
        };
        let (id, shared, evict) = (id.clone(), shared.clone(), evict.clone());
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                let mut len = [0u8; 2];
                tokio::select! {
                    r = tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut len)) => match r {
                        Ok(Ok(_)) => {}
                        _ => return,
                    },
                    _ = evict.notified() => return,
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut q)).await.map(|r| r.is_err()).unwrap_or(true) {
                    return;
                }
                let Some(reply) = respond(&q, &id, &shared).await else { return };
                let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                if conn.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn local(msg: &Message, id: &str, shared: &Shared) -> Decision {
    let zone = shared.zone.read().expect("zone lock");
    super::answer(&zone, id, msg, shared.rotate.fetch_add(1, Ordering::Relaxed))
}

/// The reply to one query from container `id`.
async fn respond(query: &[u8], id: &str, shared: &Shared) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    match local(&msg, id, shared) {
        Decision::Reply(r) => Some(r),
        Decision::Forward => Some(forward_for(query, &msg, id, shared).await),
        Decision::Drop => None,
    }
}

/// Forwards to the container's --dns servers, or the host's; SERVFAIL if none answers.
async fn forward_for(query: &[u8], msg: &Message, id: &str, shared: &Shared) -> Vec<u8> {
    let upstreams: Vec<std::net::IpAddr> = {
        let zone = shared.zone.read().expect("zone lock");
        match zone.upstreams_of.get(id).filter(|u| !u.is_empty()) {
            Some(u) => u.clone(),
            None => shared.host_upstreams.read().expect("upstreams lock").clone(),
        }
    };
    match forward(query, &upstreams).await {
        Some(r) => r,
        None => super::error(msg, ResponseCode::ServFail),
    }
}

/// Asks each upstream in turn over UDP, retrying over TCP when the answer is truncated.
async fn forward(query: &[u8], upstreams: &[std::net::IpAddr]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(3);
    for up in upstreams {
        let addr = SocketAddr::from((*up, 53));
        let any = if up.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let Ok(sock) = UdpSocket::bind(any).await else { continue };
        if sock.send_to(query, addr).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        let left = deadline.saturating_duration_since(Instant::now()).min(UPSTREAM_TIMEOUT);
        let Ok(Ok((n, _))) = tokio::time::timeout(left, sock.recv_from(&mut buf)).await else { continue };
        let reply = buf[..n].to_vec();
        let truncated = Message::from_vec(&reply).map(|m| m.metadata.truncation).unwrap_or(false);
        if !truncated {
            return Some(reply);
        }
        if let Some(full) = forward_tcp(query, addr).await {
            return Some(full);
        }
        return Some(reply);
    }
    None
}

async fn forward_tcp(query: &[u8], addr: SocketAddr) -> Option<Vec<u8>> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut out = (query.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(query);
        s.write_all(&out).await.ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut r).await.ok()?;
        Some(r)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, work).await.ok().flatten()
}

// ---- the supervisor, and how netwright commands reach the resolver ----

/// The supervisor's main: runs the resolver and starts it again whenever it exits.
pub fn run_supervisor(ctx: &Ctx) -> Result<()> {
    // One resolver per root. Commands that find none start a supervisor each, and several
    // may do so at once (parallel attaches into an idle root): the first takes this lock,
    // the others leave. The resolvers it starts inherit the lock (not close-on-exec), so a
    // resolver outliving a killed supervisor still holds it, and a supervisor started then
    // leaves too (commands keep reaching that resolver). Measured before: two resolvers
    // for one root, each re-reading and adopting every container.
    let Some(_lock) = single_instance(ctx)? else { return Ok(()) };
    let me = std::process::id() as i32;
    crate::kernel::process::write_pid_file(&pid_path(ctx))?;
    let exe = std::env::current_exe()?;
    loop {
        let started = Instant::now();
        let status = std::process::Command::new(&exe).arg("_resolver").env("NETWRIGHT_ROOT", &ctx.root).status();
        if status.as_ref().is_ok_and(|s| s.code() == Some(EXIT_IDLE)) {
            // Only our own pid file: a new supervisor may already have written its own.
            if std::fs::read_to_string(pid_path(ctx))
                .is_ok_and(|p| p.split_whitespace().next() == Some(&me.to_string()))
            {
                let _ = std::fs::remove_file(pid_path(ctx));
            }
            return Ok(());
        }
        if status.is_err() || started.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The root's resolver lock, held and inherited by children; None: another holds it.
fn single_instance(ctx: &Ctx) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    use std::os::fd::AsFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ctx.root.join("dns.lock"))
        .context("opening the resolver's lock")?;
    let lock = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(anyhow::anyhow!("locking the resolver's lock: {e}")),
    };
    crate::kernel::process::inheritable(lock.as_fd()).context("letting the resolver inherit its lock")?;
    Ok(Some(lock))
}

fn supervisor_alive(ctx: &Ctx) -> bool {
    crate::kernel::process::pid_file_alive(&pid_path(ctx)).is_some()
}

/// Other hosts' endpoints changed (the overlay agent): the resolver re-reads them alone,
/// if it runs; nobody waits.
pub fn remotes_changed(ctx: &Ctx) {
    if supervisor_alive(ctx)
        && let Ok(mut s) = UnixStream::connect(socket_path(ctx))
    {
        let _ = s.write_all(b"remotes\n");
    }
}

/// Services or their backends changed: the resolver re-reads them, if it runs.
pub fn services_changed(ctx: &Ctx) {
    if supervisor_alive(ctx)
        && let Ok(mut s) = UnixStream::connect(socket_path(ctx))
    {
        let _ = s.write_all(b"services\n");
    }
}

/// Asks the resolver to re-read the store and waits until it has (so a new container's
/// resolver is listening before its process starts). Starts the resolver if needed.
pub fn sync_now(ctx: &Ctx, start_if_needed: bool, container: Option<&str>) -> Result<()> {
    sync_start(ctx, start_if_needed, container)?.wait()
}

/// A sync the resolver is working on: the caller does other work meanwhile (the resolver
/// runs on the other core) and waits for it with `wait`.
pub struct PendingSync(Option<(UnixStream, Ctx, bool, Option<String>)>);

impl PendingSync {
    pub fn wait(self) -> Result<()> {
        let Some((s, ctx, start, container)) = self.0 else { return Ok(()) };
        if answered(s)? {
            return Ok(());
        }
        // No answer: that resolver was leaving (idle). Ask again; this starts a new one.
        let again = match sync_start(&ctx, start, container.as_deref())?.0 {
            Some((s, ..)) => answered(s)?,
            None => false,
        };
        if !again && start {
            bail!("the DNS resolver did not answer: see {}", ctx.root.join("dns.log").display());
        }
        Ok(())
    }
}

/// Did the resolver say "ok" on this connection (rather than close it)?
fn answered(s: UnixStream) -> Result<bool> {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).context("waiting for the DNS resolver")?;
    Ok(line.trim() == "ok")
}

/// Tells a running resolver that a container is being released: its names and its
/// sockets (which hold its namespace) go now. The answer is waited for with `wait`; after
/// the store has changed, [`sync_later`] makes sure nothing read in between lingers.
pub fn gone_start(ctx: &Ctx, container: &str) -> PendingSync {
    match UnixStream::connect(socket_path(ctx)) {
        Ok(mut s) => {
            let sent = s
                .set_read_timeout(Some(Duration::from_secs(5)))
                .and_then(|()| s.write_all(format!("gone {container}\n").as_bytes()));
            PendingSync(sent.ok().map(|()| (s, ctx.clone(), false, Some(container.to_string()))))
        }
        // No resolver: nothing serves its names.
        Err(_) => PendingSync(None),
    }
}

/// Asks a running resolver to re-read a container's rows, without waiting.
pub fn sync_later(ctx: &Ctx, container: &str) {
    if let Ok(mut s) = UnixStream::connect(socket_path(ctx)) {
        let _ = s.write_all(format!("sync {container}\n").as_bytes());
    }
}

/// Sends the sync request without waiting for its answer.
pub fn sync_start(ctx: &Ctx, start_if_needed: bool, container: Option<&str>) -> Result<PendingSync> {
    // The resolver first: if it answers, whoever started it does not matter (a resolver
    // may outlive its supervisor; a new one would find it holding the root's lock).
    let mut spawned = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(socket_path(ctx)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                match container {
                    Some(id) => s.write_all(format!("sync {id}\n").as_bytes())?,
                    None => s.write_all(b"sync\n")?,
                }
                return Ok(PendingSync(Some((s, ctx.clone(), start_if_needed, container.map(str::to_string)))));
            }
            Err(_) if Instant::now() < deadline => {
                // None yet, or an idle resolver and its supervisor just left (once: a new
                // supervisor takes a moment to write its pid file).
                if !spawned && !supervisor_alive(ctx) {
                    if !start_if_needed {
                        return Ok(PendingSync(None));
                    }
                    spawn_supervisor(ctx)?;
                    spawned = true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("reaching the DNS resolver"),
        }
    }
}

fn spawn_supervisor(ctx: &Ctx) -> Result<()> {
    crate::kernel::process::spawn_daemon("_dns", &ctx.root, &ctx.root.join("dns.log"))
        .context("starting the DNS resolver")
}
