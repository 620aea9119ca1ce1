//! Services (VIPs) with real packets: connections spread over the backends in the kernel,
//! backends that come and go with their containers, DNS (`NAME`, `tasks.NAME`), the VIP
//! from the host and, published, from the LAN; bad input.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::*;

/// A backend: answers every line with its hostname (spread.py serve 80).
fn backend(sb: &Sandbox, name: &str, extra: &[&str]) {
    let script = sb.script("spread.py");
    let mut args = vec!["run", "-d", "--name", name, "--hostname", name, "--network", "app"];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", &script, "serve", "80"]);
    sb.ok(&args);
}

/// N new connections from `from` to HOST:PORT: answers per backend.
fn count(sb: &Sandbox, from: &str, host: &str, port: u16, n: usize) -> BTreeMap<String, usize> {
    let script = sb.script("spread.py");
    let out = sb.ok(&["exec", from, "--", "python3", &script, "count", host, &port.to_string(), &n.to_string()]);
    serde_json::from_str(out.trim()).expect(&out)
}

/// Pearson's chi-square of the counts against a uniform spread.
fn chi_square(counts: &BTreeMap<String, usize>, k: usize) -> f64 {
    let n: usize = counts.values().sum();
    let e = n as f64 / k as f64;
    let seen: f64 = counts.values().map(|&o| (o as f64 - e).powi(2) / e).sum();
    // Backends that got nothing count too.
    seen + (k - counts.len()) as f64 * e
}

fn dns(sb: &Sandbox, from: &str, name: &str) -> Vec<String> {
    let script = sb.script("dnsq.py");
    let out = sb.ok(&["exec", from, "--", "python3", &script, name]);
    let mut v: Vec<String> = out.lines().skip(1).map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn a_vip_spreads_connections_and_follows_its_backends() {
    let sb = sandbox("svc");
    sb.ok(&["network", "create", "app", "--subnet", "10.80.0.0/24"]);
    for i in 1..=5 {
        backend(&sb, &format!("b{i}"), &["--network-alias", "web"]);
    }
    sb.ok(&["run", "-d", "--name", "client", "--network", "app", "--", "sleep", "300"]);
    sb.ok(&["service", "create", "web", "--network", "app", "--port", "80", "-p", "8080:80"]);
    let v: serde_json::Value = serde_json::from_str(&sb.ok(&["service", "inspect", "web"])).unwrap();
    let vip = v[0]["VIP"].as_str().unwrap().to_string();
    assert_eq!(v[0]["Backends"].as_array().unwrap().len(), 5, "{v}");
    assert!(vip.starts_with("10.80.0."), "{vip}");
    // DNS: the name is the VIP, tasks.NAME every backend (Swarm's names).
    assert_eq!(dns(&sb, "client", "web"), vec![vip.clone()]);
    let mut ips: Vec<String> = (1..=5).map(|i| sb.ip_of(&format!("b{i}"))).collect();
    ips.sort();
    assert_eq!(dns(&sb, "client", "tasks.web"), ips);
    // 1,000 new connections: uniform. Chi-square with 4 degrees of freedom against the
    // critical value at p = 0.001 (18.47): a fair spread fails one run in a thousand.
    let c = count(&sb, "client", &vip, 80, 1000);
    assert_eq!(c.values().sum::<usize>(), 1000, "{c:?}");
    let chi = chi_square(&c, 5);
    assert!(c.len() == 5 && chi < 18.47, "not uniform: chi-square {chi:.2} for {c:?}");
    eprintln!("1000 connections through the VIP: {c:?}, chi-square {chi:.2}");
    // trace and topology know the service.
    let t = sb.ok(&["trace", "client", "web:80"]);
    assert!(
        t.contains("service web: VIP") && t.contains("one of 5 backend(s)") && t.contains("verdict: DELIVERED"),
        "{t}"
    );
    let topo = sb.ok(&["topology"]);
    assert!(topo.contains(&format!("service web VIP {vip} 80/tcp → 5 backend(s)")), "{topo}");
    // From the host, and from the LAN through the published port.
    retry(|| from_host_spread(&sb, &vip, 80)).expect("host -> VIP");
    retry(|| from_lan_spread(&sb, "192.168.1.10", 8080)).expect("LAN -> published service port");
    // An established connection keeps its backend while another backend leaves (and the
    // last one moves into the leaver's slot).
    let script = sb.script("spread.py");
    let mut held = sb
        .netwright(["exec", "client", "--", "python3", &script, "hold", &vip, "80"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(held.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let leaver = if first == "b1" { "b2" } else { "b1" };
    sb.ok(&["rm", "-f", leaver]);
    let after = count(&sb, "client", &vip, 80, 200);
    assert!(!after.contains_key(leaver) && after.len() == 4, "no new connection to {leaver}: {after:?}");
    let mut stdin = held.stdin.take().unwrap();
    writeln!(stdin, "again").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), first, "the established connection kept its backend");
    drop(stdin);
    let _ = held.wait();
    // A new backend gets connections at once, with no command.
    backend(&sb, "b6", &["--network-alias", "web"]);
    let after = count(&sb, "client", &vip, 80, 200);
    assert!(after.get("b6").copied().unwrap_or(0) > 0, "the new backend is used: {after:?}");
    // A container on the network without the alias is not a backend; connect/disconnect are.
    backend(&sb, "other", &[]);
    sb.ok(&["network", "create", "side", "--subnet", "10.81.0.0/24"]);
    backend_on(&sb, "late", "side");
    sb.ok(&["network", "connect", "--alias", "web", "app", "late"]);
    let after = count(&sb, "client", &vip, 80, 300);
    assert!(!after.contains_key("other") && after.contains_key("late"), "{after:?}");
    sb.ok(&["network", "disconnect", "app", "late"]);
    assert!(!count(&sb, "client", &vip, 80, 100).contains_key("late"));
    assert!(agrees(&sb).is_ok(), "{:?}", agrees(&sb));
    // No backend left: the VIP refuses at once (nothing hangs).
    for b in ["b1", "b2", "b3", "b4", "b5", "b6"] {
        let _ = sb.nw(&["rm", "-f", b]);
    }
    let none = count(&sb, "client", &vip, 80, 3);
    assert_eq!(none.get("(failed)"), Some(&3), "{none:?}");
    let doctor = String::from_utf8_lossy(&sb.nw(&["doctor"]).stdout).into_owned();
    assert!(doctor.contains("service web has no backend"), "{doctor}");
    // Removed: the VIP goes, its chain and map with it.
    sb.ok(&["service", "rm", "web"]);
    let rules = sb.in_host_cmd("nft").args(["list", "ruleset"]).output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("svc-") && !rules.contains("svcb-"), "{rules}");
    assert!(from_host_spread(&sb, &vip, 80).is_err());
    sb.ok(&["rm", "-f", "late"]);
    sb.ok(&["network", "rm", "side"]);
}

fn backend_on(sb: &Sandbox, name: &str, net: &str) {
    let script = sb.script("spread.py");
    sb.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        net,
        "--",
        "python3",
        &script,
        "serve",
        "80",
    ]);
}

fn from_host_spread(sb: &Sandbox, host: &str, port: u16) -> Result<String, String> {
    spread_once(sb.in_host_cmd("python3"), sb, host, port)
}

fn from_lan_spread(sb: &Sandbox, host: &str, port: u16) -> Result<String, String> {
    spread_once(sb.in_lan_cmd("python3"), sb, host, port)
}

fn spread_once(mut cmd: std::process::Command, sb: &Sandbox, host: &str, port: u16) -> Result<String, String> {
    let out = cmd.args([&sb.script("spread.py"), "count", host, &port.to_string(), "1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("failed") || !out.status.success() { Err(text) } else { Ok(text) }
}

#[test]
fn affinity_and_bad_input() {
    let sb = sandbox("svc-bad");
    sb.ok(&["network", "create", "app", "--subnet", "10.82.0.0/24"]);
    for i in 1..=3 {
        backend(&sb, &format!("s{i}"), &["--network-alias", "sticky"]);
    }
    sb.ok(&["run", "-d", "--name", "client", "--network", "app", "--", "sleep", "300"]);
    sb.ok(&[
        "service",
        "create",
        "sticky",
        "--network",
        "app",
        "--port",
        "80",
        "--affinity",
        "client-ip",
        "--ip",
        "10.82.0.200",
    ]);
    // One client, one backend, every time.
    let c = count(&sb, "client", "10.82.0.200", 80, 50);
    assert_eq!(c.len(), 1, "client-ip affinity: {c:?}");
    // Bad input: one line, exit != 0, nothing changed.
    sb.ok(&["network", "create", "lan6", "-d", "macvlan", "-o", "parent=eth0", "--subnet", "192.168.1.0/24"]);
    let before = sb.ok(&["service", "ls"]);
    for (args, says) in [
        (
            vec!["service", "create", "x1", "--network", "app", "--port", "80", "--ip", "10.99.0.5"],
            "outside the network's subnet",
        ),
        (vec!["service", "create", "x1", "--network", "app", "--port", "80", "--ip", "10.82.0.200"], "already in use"),
        (vec!["service", "create", "x1", "--network", "app", "--port", "80", "--ip", "10.82.0.2"], "already in use"),
        (vec!["service", "create", "x1", "--network", "app", "--port", "0"], "not a port number"),
        (vec!["service", "create", "client", "--network", "app", "--port", "80"], "a container is named client"),
        (vec!["service", "create", "sticky", "--network", "app", "--port", "80"], "already exists"),
        (vec!["service", "create", "x1", "--network", "nowhere", "--port", "80"], "network nowhere not found"),
        (vec!["service", "create", "x1", "--network", "lan6", "--port", "80"], "macvlan"),
        (vec!["service", "create", "x1", "--network", "app", "--port", "80", "-p", "8080:81"], "no port 81"),
        (vec!["service", "create", "x1", "--network", "app", "--port", "80", "--selector", "label=x"], "alias=NAME"),
        (
            vec!["service", "create", "x1", "--network", "app", "--port", "80", "--affinity", "cookie"],
            "client-ip or none",
        ),
        (vec!["service", "rm", "nothere"], "service nothere not found"),
    ] {
        let (code, err) = sb.fails(&args);
        assert!(code != 0 && err.contains(says) && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
    assert_eq!(sb.ok(&["service", "ls"]), before, "state untouched");
    // A published service port and a container's collide both ways.
    sb.ok(&["service", "create", "pubd", "--network", "app", "--port", "80", "-p", "9090:80"]);
    let (_, err) = sb.fails(&["run", "--network", "app", "-p", "9090:80", "--", "true"]);
    assert!(err.contains("published by service pubd"), "{err}");
    sb.ok(&["network", "create", "lonely", "--subnet", "10.83.0.0/24"]);
    sb.ok(&["service", "create", "alone", "--network", "lonely", "--port", "80"]);
    let (_, err) = sb.fails(&["network", "rm", "lonely"]);
    assert!(err.contains("service(s) alone"), "{err}");
    // A flushed table comes back with the services (reconcile), and doctor agrees.
    let t = sb.in_host_cmd("nft").args(["flush", "ruleset"]).status().unwrap();
    assert!(t.success());
    assert!(agrees(&sb).is_err());
    sb.ok(&["reconcile"]);
    assert!(agrees(&sb).is_ok(), "{:?}", agrees(&sb));
    assert_eq!(count(&sb, "client", "10.82.0.200", 80, 20).len(), 1);
}
