//! Releasing a container's network: ports out and interfaces down (at once, on two
//! threads), the namespace unpinned (the kernel destroys its devices in batch), then the
//! store updated (a DNAT must never point at an address that is someone else's), DNS told.
//! Also the sweep of containers whose owner died.

use std::fs;
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::owner_alive;
use crate::ctx::{Ctx, now_nanos, trace};
use crate::drivers::bridge;
use crate::firewall;
use crate::kernel::{netlink::Netlink, netns, process};
use crate::model::NetworkMode;
use crate::network;
use crate::store::{Container, Endpoint, State, Store};

/// Frees a container's network: its namespace (the kernel then destroys the veth pair
/// with it), its addresses in the store; records the exit; removes it if --rm.
pub fn release(ctx: &Ctx, store: &mut Store, c: &Container, code: i32, error: Option<&str>) -> Result<()> {
    trace("release: start");
    let (mappings, eps) = store.read(|tx| Ok((tx.ports_of(&c.id)?, tx.endpoints_of(&c.id)?)))?;
    let to = eps.first().and_then(|e| e.target());
    let ns = netns::open(&ctx.netns_path(&c.id)).ok();
    let host_nl = start_helpers(ctx, c, &eps, ns.as_ref());
    trace("release: helpers started");
    // Its names go away now, not at the resolver's next periodic sync: asked first, done
    // on the resolver's core while the rest is taken down here.
    let named = matches!(&c.network_mode, NetworkMode::Network(n) if n != network::DEFAULT_NETWORK);
    let names = named.then(|| crate::dns::server::gone_start(ctx, &c.id));
    trace("release: resolver asked");
    // The published ports come out (nf_tables) on a second thread while the interfaces go
    // down (rtnetlink): different kernel locks, no shared state. Both are done before the
    // store lets the addresses go, so no DNAT ever points at an address someone else holds.
    let (unpublished, down) = std::thread::scope(|s| {
        let ports = s.spawn(|| {
            let done = match to {
                Some(to) => firewall::unpublish(ctx, &mappings, to).is_ok(),
                None => mappings.is_empty(),
            };
            trace("release: ports unpublished");
            done
        });
        let down = (|| -> Result<()> {
            // Services stop sending new connections here before the interfaces go.
            let ids: Vec<String> = eps.iter().filter(|e| e.ip.is_some()).map(|e| e.id.clone()).collect();
            let leaving = crate::services::Scope::Endpoints { joined: &[], leaving: &ids };
            if let Err(e) = crate::services::refresh(ctx, store, leaving) {
                eprintln!("netwright: updating services' backends: {e:#}");
            }
            trace("release: services refreshed");
            detach_for_joiners(ctx, store, c)?;
            trace("release: joiners detached");
            take_interfaces_down(store, c, &eps, ns, host_nl);
            Ok(())
        })();
        (ports.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), down)
    });
    down?;
    if let Some(pid) = c.pid {
        // Processes the container left behind in its session would pin the namespace.
        let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    netns::remove_pinned(&ctx.netns_path(&c.id))?;
    trace("release: namespace unpinned");
    let overlay = if crate::overlay::Config::joined(ctx) { crate::overlay::held_by(store, &c.id)? } else { Vec::new() };
    let held = store.read(|tx| tx.endpoints_of(&c.id))?;
    store.write(|tx| {
        tx.mark_exited(&c.id, code, error, now_nanos())?;
        if c.auto_remove {
            tx.delete_container(&c.id)?;
        }
        Ok(())
    })?;
    trace("release: store updated");
    bridge::drop_empty_segments(ctx, store, &held);
    crate::overlay::withdraw(ctx, &overlay, &c.id);
    crate::hostnames::sync_or_warn(ctx, store);
    if let Some(names) = names {
        let _ = names.wait();
        // A periodic sync between the two reads the container as it was: this one, after
        // the store changed, corrects it (not waited for).
        crate::dns::server::sync_later(ctx, &c.id);
        trace("release: DNS told");
    }
    if !unpublished {
        // The store no longer has the mappings: a rebuild drops whatever is left.
        firewall::sync_all(ctx, store)?;
        trace("release: firewall rebuilt");
    }
    if c.auto_remove {
        let _ = fs::remove_dir_all(ctx.container_dir(&c.id));
    }
    Ok(())
}

/// An attached container's interfaces, down, stay in the runtime's namespace: they are
/// what a new attach may replace. Deleting a device costs the kernel 20–40 ms and slows
/// whatever link work comes next; a runtime usually deletes its namespace right after
/// detach, which takes the pair with it in the kernel's batched namespace cleanup. So a
/// helper deletes them only if they are still there a second later (reconcile removes any
/// left over). It starts before anything goes down: a kill of this process after a host
/// end went down must not leave it there for good (an intent makes the next command run
/// all of this again only while the store still holds the container).
///
/// Also the shaping devices (in the host namespace, so they do not go with the
/// container's), deleted in the background at once. Both helpers start here, while this
/// process has one thread: the shaping one is forked and runs ordinary Rust code (so does
/// the links' one, should spawning `netwright _unplug` fail). Returns the host socket it
/// opened, for taking the host ends down.
fn start_helpers(ctx: &Ctx, c: &Container, eps: &[Endpoint], ns: Option<&OwnedFd>) -> std::io::Result<Netlink> {
    let ifbs: Vec<String> = eps.iter().map(|e| crate::plan::ifb_name(&ctx.tag, &e.id)).collect();
    let mut host_nl = Netlink::open();
    if let Ok(nl) = &mut host_nl
        && ifbs.iter().any(|n| nl.link_by_name(n).ok().flatten().is_some())
    {
        process::in_background(move || on_links(Netlink::open(), &ifbs, Netlink::delete_link));
    }
    let (Some(ns), Some(_)) = (ns, &c.netns_source) else { return host_nl };
    // A veth goes with its host end; a macvlan has only its inside end.
    let host: Vec<String> = eps.iter().filter(|e| !e.host_ifname.is_empty()).map(|e| e.host_ifname.clone()).collect();
    let macvlans: Vec<String> = eps.iter().filter(|e| e.host_ifname.is_empty()).map(|e| e.ifname.clone()).collect();
    // A process of its own, spawned (vfork and exec), not forked: a forked copy of this
    // process shares its pages copy-on-write for as long as it lives, and every page this
    // command wrote afterwards was copied — ~1.2 ms of a detach's CPU and 90 page faults.
    if spawn_unplug(ns, &host, &macvlans).is_err() {
        let ns = ns.try_clone();
        process::in_background(move || unplug_now(ns.ok(), &host, &macvlans));
    }
    host_nl
}

/// Starts `netwright _unplug` ([`unplug`]) for these links, the namespace handed over as
/// an inherited descriptor (its pin goes away before the helper looks).
fn spawn_unplug(ns: &OwnedFd, host: &[String], inside: &[String]) -> std::io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let ns = ns.try_clone()?;
    // Inherited by the helper: not close-on-exec (our copy closes when this returns).
    process::inheritable(ns.as_fd())?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["_unplug", "--netns-fd", &ns.as_raw_fd().to_string()]);
    for h in host {
        cmd.args(["--host", h]);
    }
    for i in inside {
        cmd.args(["--inside", i]);
    }
    let null = std::process::Stdio::null;
    // Not waited for: it outlives this command (and is reaped by whoever adopts it).
    cmd.stdin(null()).stdout(null()).stderr(null()).spawn().map(drop)
}

/// `netwright _unplug`: a second after a detach, deletes the released links that are
/// still there (the runtime kept its namespace): the host ends of veths, and inside the
/// namespace (`netns_fd`, inherited) the macvlans. Best effort; reconcile removes any left.
pub fn unplug(netns_fd: Option<i32>, host: &[String], inside: &[String]) {
    use std::os::fd::FromRawFd;
    // SAFETY: only an open descriptor is taken over (F_GETFD checks), and `_unplug` is run
    // by spawn_unplug, which hands over a descriptor of its own for this process alone.
    let ns = netns_fd
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0)
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    unplug_now(ns, host, inside);
}

fn unplug_now(ns: Option<OwnedFd>, host: &[String], inside: &[String]) {
    std::thread::sleep(Duration::from_secs(1));
    on_links(Netlink::open(), host, Netlink::delete_link);
    if let Some(ns) = ns {
        on_links(bridge::netlink_in(&ns), inside, Netlink::delete_link);
    }
}

/// Takes a container's interfaces down before its namespace is let go. The kernel
/// destroys a released namespace's devices later, asynchronously; until then a macvlan
/// there keeps its MAC (derived from the IP, which a new container may get at once) busy
/// on the parent, and a veth stays a live bridge port. Down, neither counts. An attached
/// container's namespace stays the runtime's: the DNS redirect comes out too.
fn take_interfaces_down(
    store: &mut Store,
    c: &Container,
    eps: &[Endpoint],
    ns: Option<OwnedFd>,
    host_nl: std::io::Result<Netlink>,
) {
    if eps.is_empty() {
        return;
    }
    let host: Vec<String> = eps.iter().filter(|e| !e.host_ifname.is_empty()).map(|e| e.host_ifname.clone()).collect();
    let set_down = |nl: &mut Netlink, index| nl.request(Netlink::set_down_msg(index), 0);
    let attached = c.netns_source.is_some();
    // The host's routes to it on segment bridges, while the store still holds its addresses.
    let on_segments: Vec<_> = eps.iter().filter(|e| e.segment > 0 && e.ip.is_some()).collect();
    let nets = if on_segments.is_empty() { vec![] } else { store.read(|tx| tx.networks()).unwrap_or_default() };
    if let Ok(mut nl) = host_nl {
        for e in on_segments {
            if let Some(n) = nets.iter().find(|n| n.id == e.network_id) {
                bridge::unroute(&mut nl, n, e);
            }
        }
        trace("release: host routes out");
        on_links(Ok::<_, std::io::Error>(nl), &host, set_down);
        trace("release: host ends down");
    }
    let Some(ns) = ns else { return };
    if attached {
        let _ = netns::within(&ns, crate::dns::server::remove_redirect);
        trace("release: DNS redirect out");
    }
    let inside: Vec<String> = eps.iter().map(|e| e.ifname.clone()).collect();
    on_links(bridge::netlink_in(&ns), &inside, set_down);
    trace("release: interfaces down");
}

/// Applies `f` to each named link that exists, best effort (the kernel may be taking them
/// away with their namespace).
fn on_links<E>(nl: Result<Netlink, E>, names: &[String], mut f: impl FnMut(&mut Netlink, u32) -> std::io::Result<()>) {
    let Ok(mut nl) = nl else { return };
    for name in names {
        if let Ok(Some(l)) = nl.link_by_name(name) {
            let _ = f(&mut nl, l.index);
        }
    }
}

/// Containers that joined this one's network keep its namespace alive; like Docker, they
/// lose the network when the owner goes: its interfaces are removed, leaving them lo.
fn detach_for_joiners(ctx: &Ctx, store: &mut Store, c: &Container) -> Result<()> {
    // One store question about this container, not a scan of every running one.
    let (joined, eps) = store.read(|tx| Ok((tx.has_joiners(&c.id)?, tx.endpoints_of(&c.id)?)))?;
    if !joined || eps.is_empty() {
        return Ok(());
    }
    let mut host = Netlink::open()?;
    let mut inside = netns::open(&ctx.netns_path(&c.id)).ok().map(|ns| bridge::netlink_in(&ns)).transpose()?;
    for e in eps {
        // A veth goes from the host side; a macvlan has only the inside end.
        let (nl, name) = match (e.host_ifname.is_empty(), inside.as_mut()) {
            (false, _) => (&mut host, &e.host_ifname),
            (true, Some(nl)) => (nl, &e.ifname),
            (true, None) => continue,
        };
        if let Some(l) = nl.link_by_name(name)? {
            nl.delete_link(l.index)?;
        }
    }
    Ok(())
}

/// Releases containers whose monitor died (kill -9, crash, reboot). Returns their names.
pub fn sweep(ctx: &Ctx, store: &mut Store) -> Result<Vec<String>> {
    let mut released = Vec::new();
    for c in store.read(|tx| tx.running_containers())? {
        if !owner_alive(&c) {
            release_orphan(ctx, store, c.clone())?;
            released.push(c.name);
        }
    }
    Ok(released)
}

pub fn release_if_orphaned(ctx: &Ctx, store: &mut Store, name: &str) -> Result<()> {
    if let Some(c) = store.read(|tx| tx.container(name))?
        && c.state != State::Exited
        && !owner_alive(&c)
    {
        release_orphan(ctx, store, c)?;
    }
    Ok(())
}

/// Releases a container whose owner is gone: its monitor, or an attached container's namespace.
fn release_orphan(ctx: &Ctx, store: &mut Store, mut c: Container) -> Result<()> {
    c.pid = None; // the process died with its monitor; never signal a reused PID
    if c.netns_source.is_some() {
        release(ctx, store, &c, 0, Some("the runtime's namespace went away without `netwright detach`"))
    } else {
        release(ctx, store, &c, 137, Some("monitor exited; container was killed with it"))
    }
}
