//! The overlay agent: one long-lived process per joined state root (`netwright _overlay`),
//! started on demand by the commands that need it, as the DNS resolver is.
//!
//! It holds the host's etcd lease (10 s, renewed every 3 s) with the host's key and its
//! endpoints on it, and keeps the host in step with etcd: list at revision R, watch from R+1
//! (no event lost between the two), list again when the watch breaks or the history was
//! compacted. Every change is mirrored into the store (networks, other hosts' endpoints) and
//! the kernel (one netlink batch per network), and DNS is told. Commands ask it to publish
//! their changes at once over a unix socket (`sync` → `ok`).
//!
//! kill -9 loses nothing: the next command starts a new agent, which lists and converges.
//! etcd away: the kernel keeps its entries (running containers keep talking), the agent
//! retries every half second, and on return re-registers (a new lease if the old expired).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::etcd::{Compare, Event, Gateway, KeyValue, Kv, Op};
use super::{Claim, Config, EndpointRecord, HostRecord, LEASE_TTL, PREFIX, sync};
use crate::ctx::Ctx;
use crate::kernel::netlink::Netlink;
use crate::kernel::process;
use crate::store::Store;

const KEEPALIVE_EVERY: Duration = Duration::from_secs(3);
const GC_EVERY: Duration = Duration::from_secs(30);
/// A claim younger than this may belong to a container being created right now.
const CLAIM_GRACE_SECS: i64 = 60;

fn sock_path(ctx: &Ctx) -> PathBuf {
    ctx.root.join("overlay.sock")
}

fn pid_path(ctx: &Ctx) -> PathBuf {
    ctx.root.join("overlay.pid")
}

/// The agent's current lease id, for commands that publish in their own transaction.
fn lease_path(ctx: &Ctx) -> PathBuf {
    ctx.root.join("overlay.lease")
}

/// The lease a running agent holds (None: no agent, or it is registering again).
pub fn lease(ctx: &Ctx) -> Option<i64> {
    pid(ctx)?;
    std::fs::read_to_string(lease_path(ctx)).ok()?.trim().parse().ok()
}

/// Asks the agent to publish and converge, without waiting for it.
pub fn nudge(ctx: &Ctx) {
    if let Ok(mut s) = UnixStream::connect(sock_path(ctx)) {
        let _ = s.write_all(b"sync\n");
    }
}

enum Msg {
    Events(u64, Vec<Event>, i64),
    Broken(u64, String),
    Sync(UnixStream),
}

struct Agent {
    ctx: Ctx,
    cfg: Config,
    kv: Gateway,
    store: Store,
    nl: Netlink,
    lease: i64,
    /// Everything under PREFIX as of `rev`.
    keys: BTreeMap<String, KeyValue>,
    /// Other hosts' endpoints by key, kept from the events (no re-parse of all of them per
    /// event), and what the store and the kernel have of them (`mirrored`).
    remotes: BTreeMap<String, EndpointRecord>,
    mirrored: BTreeMap<String, EndpointRecord>,
    /// Keys under endpoints/ changed since the last reconcile; networks changed.
    pending: BTreeSet<String>,
    networks_changed: bool,
    /// Time for a full kernel comparison (dump and diff) rather than applying changes.
    full: bool,
    rev: i64,
    /// The current watch's generation: events of an older one are ignored.
    generation: u64,
    watching: bool,
    dirty: bool,
    last_error: Option<String>,
}

/// The agent process's main.
pub fn run(ctx: &Ctx) -> Result<()> {
    let Some(cfg) = Config::load(ctx)? else { bail!("this state root is not in a cluster") };
    let _ = std::fs::remove_file(sock_path(ctx));
    let listener = UnixListener::bind(sock_path(ctx)).context("binding the overlay agent's socket")?;
    process::write_pid_file(&pid_path(ctx))?;
    let (tx, rx) = mpsc::channel::<Msg>();
    let control = tx.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            if control.send(Msg::Sync(s)).is_err() {
                return;
            }
        }
    });
    let mut a = Agent {
        kv: Gateway::new(&cfg.etcd)?,
        cfg,
        store: ctx.store()?,
        nl: Netlink::open()?,
        ctx: ctx.clone(),
        lease: 0,
        keys: BTreeMap::new(),
        remotes: BTreeMap::new(),
        mirrored: store_mirror(ctx)?,
        pending: BTreeSet::new(),
        networks_changed: true,
        full: true,
        rev: 0,
        generation: 0,
        watching: false,
        dirty: false,
        last_error: None,
    };
    let (mut last_keepalive, mut last_gc) = (Instant::now(), Instant::now() - GC_EVERY);
    loop {
        if Config::load(ctx).ok().flatten().as_ref() != Some(&a.cfg) {
            // Left the cluster, or joined anew with other settings: the next agent takes over.
            return Ok(());
        }
        if !a.watching
            && let Err(e) = a.start(&tx)
        {
            a.note_error(format!("{e:#}"));
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Msg::Events(g, events, rev)) if g == a.generation => {
                a.apply(events, rev);
                // Take whatever else already arrived: one reconcile per burst.
                while let Ok(Msg::Events(g2, more, rev2)) = rx.try_recv() {
                    if g2 == a.generation {
                        a.apply(more, rev2);
                    }
                }
            }
            Ok(Msg::Broken(g, e)) if g == a.generation => {
                a.watching = false;
                a.note_error(e);
            }
            Ok(Msg::Sync(s)) => a.answer(s),
            _ => {}
        }
        if a.dirty
            && let Err(e) = a.reconcile()
        {
            a.note_error(format!("{e:#}"));
        }
        if last_keepalive.elapsed() >= KEEPALIVE_EVERY {
            last_keepalive = Instant::now();
            a.keepalive();
        }
        if a.watching && last_gc.elapsed() >= GC_EVERY {
            last_gc = Instant::now();
            // Now and then the kernel is compared whole (drift by hand, a missed change).
            a.full = true;
            a.dirty = true;
            if let Err(e) = a.collect_claims() {
                a.note_error(format!("{e:#}"));
            }
        }
    }
}

impl Agent {
    fn note_error(&mut self, e: String) {
        if self.last_error.as_ref() != Some(&e) {
            eprintln!("netwright-overlay: {e}");
            self.last_error = Some(e);
        }
    }

    /// Registers (a new lease if needed), lists, publishes, and starts the watch.
    fn start(&mut self, tx: &mpsc::Sender<Msg>) -> Result<()> {
        if self.lease == 0 {
            self.lease = self.kv.grant(LEASE_TTL)?;
            std::fs::write(lease_path(&self.ctx), self.lease.to_string())?;
        }
        let host = HostRecord {
            id: self.cfg.host_id.clone(),
            name: self.cfg.host_name.clone(),
            vtep: self.cfg.advertise,
            mtu: self.cfg.mtu,
        };
        let record = serde_json::to_vec(&host)?;
        self.kv.put(&super::host_key(&host.id), &record, self.lease)?;
        if self.keys.get(&super::member_key(&host.id)).is_none_or(|kv| kv.value != record) {
            self.kv.put(&super::member_key(&host.id), &record, 0)?;
        }
        let (kvs, rev) = self.kv.list(PREFIX)?;
        self.keys = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        self.rev = rev;
        self.remotes.clear();
        let keys: Vec<KeyValue> = self.keys.values().cloned().collect();
        for kv in keys {
            self.note_key(&kv.key, Some(&kv.value));
        }
        // Whatever the mirror has that etcd no longer does goes too.
        self.pending.extend(self.mirrored.keys().cloned());
        self.networks_changed = true;
        self.full = true;
        self.publish()?;
        self.generation += 1;
        let (g, kv, tx) = (self.generation, self.kv.clone(), tx.clone());
        std::thread::spawn(move || {
            let events = tx.clone();
            let end = kv.watch(PREFIX, rev + 1, move |ev, rev| events.send(Msg::Events(g, ev, rev)).is_ok());
            let why = match end {
                Ok(()) => "the watch ended".to_string(),
                Err(e) => format!("watch: {e:#}"),
            };
            let _ = tx.send(Msg::Broken(g, why));
        });
        self.watching = true;
        self.dirty = true;
        if self.last_error.take().is_some() {
            eprintln!("netwright-overlay: connected to etcd at {} again", self.cfg.etcd);
        }
        Ok(())
    }

    fn apply(&mut self, events: Vec<Event>, rev: i64) {
        for e in events {
            match e {
                Event::Put(kv) => {
                    self.note_key(&kv.key, Some(&kv.value));
                    self.keys.insert(kv.key.clone(), kv);
                }
                Event::Delete(k) => {
                    self.note_key(&k, None);
                    self.keys.remove(&k);
                }
            }
        }
        self.rev = self.rev.max(rev);
        self.dirty = true;
    }

    /// Keeps `remotes` and the change marks in step with one key.
    fn note_key(&mut self, key: &str, value: Option<&[u8]>) {
        if key.starts_with(&format!("{PREFIX}networks/")) {
            self.networks_changed = true;
        } else if key.starts_with(&format!("{PREFIX}endpoints/")) {
            match value.and_then(|v| serde_json::from_slice::<EndpointRecord>(v).ok()) {
                Some(r) if r.host != self.cfg.host_id => {
                    self.remotes.insert(key.to_string(), r);
                }
                _ => {
                    self.remotes.remove(key);
                }
            }
            self.pending.insert(key.to_string());
        }
    }

    fn records<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Vec<T> {
        self.keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, kv)| serde_json::from_slice(&kv.value).ok())
            .collect()
    }

    /// This host's endpoints in etcd = the store's: puts what is missing or changed (on
    /// the current lease), deletes what is no longer here.
    fn publish(&mut self) -> Result<()> {
        let nl = &mut self.nl;
        // One lookup per network, however many of its endpoints are on segments.
        let mut macs: BTreeMap<String, Option<[u8; 6]>> = BTreeMap::new();
        let own = sync::own_endpoints(&mut self.store, &self.cfg, |n| {
            *macs
                .entry(n.bridge.clone())
                .or_insert_with(|| nl.link_by_name(&n.bridge).ok().flatten().and_then(|l| l.mac))
        })?;
        let mut wanted = std::collections::HashSet::new();
        for rec in &own {
            let key = super::endpoint_key(rec);
            let value = serde_json::to_vec(rec)?;
            let current = self.keys.get(&key).is_some_and(|kv| kv.value == value && kv.lease == self.lease);
            if !current {
                self.kv.put(&key, &value, self.lease)?;
                self.keys.insert(
                    key.clone(),
                    KeyValue { key: key.clone(), value, create_revision: 0, mod_revision: 0, lease: self.lease },
                );
            }
            wanted.insert(key);
        }
        // endpoints/NET/HOST/EP: this host's by the key alone.
        let prefix = format!("{PREFIX}endpoints/");
        let mine = format!("/{}/", self.cfg.host_id);
        let stale: Vec<String> = self
            .keys
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k)
            .filter(|k| k[prefix.len()..].contains(&mine) && !wanted.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            self.kv.delete(&k)?;
            self.keys.remove(&k);
        }
        Ok(())
    }

    /// Store and kernel in step with the keys: only what changed since the last time (one
    /// store transaction, one netlink batch per network), or everything when `full`.
    fn reconcile(&mut self) -> Result<()> {
        self.dirty = false;
        if std::mem::take(&mut self.networks_changed) {
            let nets = self.records(&format!("{PREFIX}networks/"));
            let changes = sync::mirror_networks(&self.ctx, &mut self.store, &nets)?;
            sync::remove_devices(&self.ctx, &mut self.store, &changes.removed)?;
            if !changes.added.is_empty() {
                crate::firewall::sync_all(&self.ctx, &mut self.store)?;
            }
        }
        let pending = std::mem::take(&mut self.pending);
        let (mut gone, mut came) = (Vec::new(), Vec::new());
        for k in &pending {
            let (old, new) = (self.mirrored.get(k), self.remotes.get(k));
            if old == new {
                continue;
            }
            if let Some(o) = old {
                gone.push(o.clone());
            }
            if let Some(n) = new {
                came.push(n.clone());
            }
        }
        let vteps_before: BTreeSet<_> = self.mirrored.values().map(|r| r.vtep).collect();
        if !gone.is_empty() || !came.is_empty() {
            self.store.write(|tx| {
                for r in &gone {
                    tx.delete_remote_endpoint(&r.id)?;
                }
                for r in &came {
                    tx.upsert_remote_endpoint(r)?;
                }
                Ok(())
            })?;
            for k in &pending {
                match self.remotes.get(k) {
                    Some(r) => self.mirrored.insert(k.clone(), r.clone()),
                    None => self.mirrored.remove(k),
                };
            }
        }
        if std::mem::take(&mut self.full) {
            sync::sync_kernel(&mut self.store, &mut self.nl)?;
        } else if !gone.is_empty() || !came.is_empty() {
            sync::apply_changes(&mut self.store, &mut self.nl, &gone, &came)?;
        }
        if !gone.is_empty() || !came.is_empty() {
            // Their VTEPs may send VXLAN; their names come and go with them.
            if self.mirrored.values().map(|r| r.vtep).collect::<BTreeSet<_>>() != vteps_before {
                crate::firewall::sync_vteps(&self.ctx, &mut self.store)?;
            }
            crate::dns::server::remotes_changed(&self.ctx);
        }
        Ok(())
    }

    fn keepalive(&mut self) {
        if self.lease == 0 {
            return;
        }
        match self.kv.keepalive(self.lease) {
            Ok(true) => {
                // Catches containers whose owner died since (no command told us).
                if self.watching
                    && let Err(e) = self.publish()
                {
                    self.note_error(format!("{e:#}"));
                }
            }
            Ok(false) => {
                // Expired (cut off longer than the TTL): peers dropped us; register again.
                eprintln!("netwright-overlay: lease expired; registering again");
                let _ = std::fs::remove_file(lease_path(&self.ctx));
                self.lease = 0;
                self.watching = false;
                self.generation += 1;
            }
            Err(e) => {
                // Cut off: the watch may hang on a dead connection; list and watch anew once
                // etcd answers again.
                self.note_error(format!("keepalive: {e:#}"));
                self.watching = false;
                self.generation += 1;
            }
        }
    }

    /// Claims of this host that no container here holds (a `run` killed between claim and
    /// store, a release that could not reach etcd), older than the grace period.
    fn collect_claims(&mut self) -> Result<()> {
        let held: std::collections::HashSet<(String, std::net::Ipv4Addr)> = self
            .store
            .read(|tx| Ok(tx.all_endpoints()?.into_iter().filter_map(|e| Some((e.network_id, e.ip?))).collect()))?;
        let now = super::now_secs();
        let mine: Vec<(String, i64)> = self
            .keys
            .range(format!("{PREFIX}ipam/")..)
            .take_while(|(k, _)| k.starts_with(&format!("{PREFIX}ipam/")))
            .filter_map(|(k, kv)| {
                let c: Claim = serde_json::from_slice(&kv.value).ok()?;
                let rest = k.strip_prefix(&format!("{PREFIX}ipam/"))?;
                let (net, ip) = rest.split_once('/')?;
                let held_here = held.contains(&(net.to_string(), ip.parse().ok()?));
                (c.host == self.cfg.host_id && !held_here && now - c.at > CLAIM_GRACE_SECS)
                    .then_some((k.clone(), kv.mod_revision))
            })
            .collect();
        for (k, rev) in mine {
            self.kv.txn(&[Compare::ModRevision(k.clone(), rev)], &[Op::Delete(k)])?;
        }
        Ok(())
    }

    /// A command asked: publish now and answer "ok" (or the error); converging this host
    /// (the mirror, the kernel) follows right after, off the command's clock — the command
    /// has made its own devices and entries already.
    fn answer(&mut self, s: UnixStream) {
        let mut line = String::new();
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = BufReader::new(&s).read_line(&mut line);
        let result = if self.watching {
            self.publish()
        } else {
            Err(anyhow::anyhow!(
                "etcd at {} is unreachable ({})",
                self.cfg.etcd,
                self.last_error.clone().unwrap_or_default()
            ))
        };
        let reply = match result {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error: {e:#}\n"),
        };
        let mut s = s;
        let _ = s.write_all(reply.as_bytes());
        self.dirty = true;
    }
}

/// The store's mirror of other hosts' endpoints, by etcd key.
fn store_mirror(ctx: &Ctx) -> Result<BTreeMap<String, EndpointRecord>> {
    let mut store = ctx.store()?;
    Ok(store.read(|tx| tx.remote_endpoints())?.into_iter().map(|r| (super::endpoint_key(&r), r)).collect())
}

/// Makes sure the agent runs (when `start`) and has published this host's endpoints and
/// converged: returns once it has.
pub fn poke(ctx: &Ctx, start: bool) -> Result<()> {
    if process::pid_file_alive(&pid_path(ctx)).is_none() {
        if !start {
            return Ok(());
        }
        let _ = std::fs::remove_file(sock_path(ctx));
        process::spawn_daemon("_overlay", &ctx.root, &ctx.root.join("overlay.log"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        match UnixStream::connect(sock_path(ctx)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("the overlay agent did not start: see {}", ctx.root.join("overlay.log").display())
                });
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    (&s).write_all(b"sync\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).context("waiting for the overlay agent")?;
    match line.trim() {
        "ok" => Ok(()),
        other => bail!("overlay agent: {}", other.strip_prefix("error: ").unwrap_or(other)),
    }
}

/// Stops this root's agent, if it runs.
pub fn stop(ctx: &Ctx) {
    if let Some(pid) = process::pid_file_alive(&pid_path(ctx)) {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        for _ in 0..100 {
            if process::pid_file_alive(&pid_path(ctx)).is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_file(pid_path(ctx));
    let _ = std::fs::remove_file(sock_path(ctx));
    let _ = std::fs::remove_file(lease_path(ctx));
}

/// The agent's pid, if it runs (for reset, tests and benches).
pub fn pid(ctx: &Ctx) -> Option<i32> {
    process::pid_file_alive(&pid_path(ctx))
}
