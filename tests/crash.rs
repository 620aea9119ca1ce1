//! kill -9 at every step of every multi-step operation, and the next ordinary command
//! finishes or undoes it: store and kernel agree again, and the same work succeeds.
//! (NETWRIGHT_DIE_AT makes netwright SIGKILL itself at a named step; the randomized test
//! at the end kills at random moments instead.)

mod common;

use std::time::{Duration, Instant};

use common::*;

fn veths(sb: &Sandbox) -> Vec<String> {
    ours(&sb.host_links(), "nwv")
}

#[test]
fn a_killed_attach_is_undone_by_the_next_command() {
    let sb = sandbox("crash-attach");
    sb.ok(&["network", "create", "n1", "--subnet", "10.66.0.0/22"]);
    let (path, _ns) = runtime_ns(&sb, "p1");
    let p = path.to_str().unwrap();
    let attach = ["attach", p, "--name", "a1", "--network", "n1", "-p", "30001:80"];
    for step in ["create: store rows written", "setup: namespace created and pinned", "setup: endpoint attached"] {
        killed_at(&sb, step, &attach);
        // The next ordinary command: a half-made container is gone with its port and address.
        assert_eq!(sb.ok(&["ps", "-a", "-q"]).trim(), "", "after a kill at {step:?}");
        agrees(&sb).unwrap_or_else(|d| panic!("after a kill at {step:?}:\n{d}"));
        // The same attach (name, port) works at once, and is undone cleanly.
        sb.ok(&attach);
        sb.ok(&["detach", "a1"]);
    }
    // A second attach of one namespace is refused.
    sb.ok(&attach);
    let (_, err) = sb.fails(&["attach", p, "--name", "a2", "--network", "n1"]);
    assert!(err.contains("already attached as container a1"), "{err}");
    sb.ok(&["detach", "a1"]);
}

#[test]
fn a_killed_detach_is_finished_by_the_next_command() {
    let sb = sandbox("crash-detach");
    sb.ok(&["network", "create", "n1", "--subnet", "10.67.0.0/22"]);
    let (path, _ns) = runtime_ns(&sb, "p1");
    let p = path.to_str().unwrap();
    for step in ["release: ports unpublished", "release: interfaces down", "release: namespace unpinned"] {
        sb.ok(&["attach", p, "--name", "a1", "--network", "n1", "-p", "30002:80"]);
        killed_at(&sb, step, &["detach", "a1"]);
        assert_eq!(sb.ok(&["ps", "-a", "-q"]).trim(), "", "after a kill at {step:?}");
        agrees(&sb).unwrap_or_else(|d| panic!("after a kill at {step:?}:\n{d}"));
    }
    // The port is free again.
    sb.ok(&["attach", p, "--name", "a1", "--network", "n1", "-p", "30002:80"]);
    sb.ok(&["detach", "a1"]);
}

#[test]
fn a_killed_disconnect_is_finished_by_the_next_command() {
    let sb = sandbox("crash-disc");
    sb.ok(&["network", "create", "n1", "--subnet", "10.68.0.0/24"]);
    sb.ok(&["network", "create", "n2", "--subnet", "10.69.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "web", "--network", "n1", "--", "sleep", "300"]);
    for step in ["disconnect: recorded", "disconnect: ports unpublished", "disconnect: interface deleted"] {
        sb.ok(&["network", "connect", "n2", "web"]);
        assert_eq!(veths(&sb).len(), 2);
        killed_at(&sb, step, &["network", "disconnect", "n2", "web"]);
        // The next command (here: connect again) finishes the disconnect first.
        sb.ok(&["network", "connect", "n2", "web"]);
        sb.ok(&["network", "disconnect", "n2", "web"]);
        assert_eq!(veths(&sb).len(), 1, "after a kill at {step:?}");
        agrees(&sb).unwrap_or_else(|d| panic!("after a kill at {step:?}:\n{d}"));
    }
}

#[test]
fn a_killed_connect_is_undone_by_the_next_command() {
    let sb = sandbox("crash-conn");
    sb.ok(&["network", "create", "n1", "--subnet", "10.68.0.0/24"]);
    sb.ok(&["network", "create", "n2", "--subnet", "10.69.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "web", "--network", "n1", "--", "sleep", "300"]);
    for step in ["connect: recorded", "connect: interface made"] {
        killed_at(&sb, step, &["network", "connect", "n2", "web"]);
        sb.ok(&["ps"]);
        agrees(&sb).unwrap_or_else(|d| panic!("after a kill at {step:?}:\n{d}"));
        // Not connected (undone), so connecting again works.
        sb.ok(&["network", "connect", "n2", "web"]);
        sb.ok(&["network", "disconnect", "n2", "web"]);
    }
}

#[test]
fn a_killed_network_rm_is_finished_by_the_next_command() {
    let sb = sandbox("crash-netrm");
    for step in ["network rm: row deleted", "network rm: firewall rebuilt"] {
        sb.ok(&["network", "create", "n1", "--subnet", "10.70.0.0/24"]);
        killed_at(&sb, step, &["network", "rm", "n1"]);
        // The same subnet again: the stray bridge (and its route) went with the next command.
        sb.ok(&["network", "create", "n1", "--subnet", "10.70.0.0/24"]);
        sb.ok(&["network", "rm", "n1"]);
        assert!(ours(&sb.host_links(), "nwb").is_empty(), "after a kill at {step:?}");
    }
}

/// A small seeded generator (xorshift), so a failing run can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_kills_leave_nothing_behind() {
    let seed = std::env::var("NETWRIGHT_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("random kill test: NETWRIGHT_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let sb = sandbox("crash-random");
    sb.ok(&["network", "create", "n1", "--subnet", "10.71.0.0/22"]);
    sb.ok(&["network", "create", "n2", "--subnet", "10.72.0.0/22"]);
    let (path, _ns) = runtime_ns(&sb, "p1");
    let p = path.to_str().unwrap().to_string();
    let before = ours(&sb.host_links(), "nw");
    let mut kills = 0;
    for i in 0..60 {
        let name = format!("c{}", rng.below(4));
        let port = format!("{}:80", 31000 + rng.below(4));
        let args: Vec<String> = match rng.below(7) {
            0 => {
                vec!["run", "-d", "--name", name.as_str(), "--network", "n1", "-p", port.as_str(), "--", "sleep", "300"]
            }
            1 => vec!["rm", "-f", name.as_str()],
            2 => vec!["attach", p.as_str(), "--name", "att", "--network", "n1", "-p", "31100:80"],
            3 => vec!["detach", "att"],
            4 => vec!["network", "connect", "n2", name.as_str()],
            5 => vec!["network", "disconnect", "n2", name.as_str()],
            _ => vec!["run", "--rm", "--network", "n2", "--", "true"],
        }
        .into_iter()
        .map(str::to_string)
        .collect();
        let delay = Duration::from_micros(rng.below(15_000));
        let mut child = sb.spawn_nw(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let t = Instant::now();
        while t.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill(); // SIGKILL, to the netwright process we started
            kills += 1;
        }
        let _ = child.wait();
        // The next ordinary command, then the verdict: store and kernel agree.
        sb.ok(&["ps", "-a"]);
        // A detached monitor that was starting may still be at work: give it a moment.
        let ok = eventually(Duration::from_secs(5), || agrees(&sb).is_ok());
        assert!(ok, "seed {seed}, op {i} {args:?} killed after {delay:?}:\n{}", agrees(&sb).unwrap_err());
    }
    eprintln!("random kill test: {kills} of 60 operations killed");
    // A final sweep: everything removed leaves no device, namespace pin or process.
    for c in sb.ok(&["ps", "-a", "-q"]).split_whitespace() {
        sb.ok(&["rm", "-f", c]);
    }
    // (A detached container's veth is left down for its runtime and deleted by a helper a
    // second later: under CI's load that can take a few seconds more.)
    let clean = eventually(Duration::from_secs(15), || ours(&sb.host_links(), "nw") == before);
    assert!(clean, "seed {seed}: devices left: {:?}", ours(&sb.host_links(), "nw"));
    let pins = std::fs::read_dir(sb.root.join("netns")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pins, 0, "seed {seed}: namespace pins left");
    // And the root as a whole: no rule, mount or process of it survives a reset.
    sb.ok(&["system", "reset", "--force"]);
    let tables = sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("netwright"), "seed {seed}: rules left");
    assert!(ours(&sb.host_links(), "nw").is_empty(), "seed {seed}: devices left after reset");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(sb.root.to_str().unwrap()), "seed {seed}: mounts left");
    let gone = eventually(Duration::from_secs(3), || netwright_engine::kernel::process::of_root(&sb.root).is_empty());
    assert!(gone, "seed {seed}: processes left");
}
