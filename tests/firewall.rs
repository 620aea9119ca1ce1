//! The firewall with real packets: egress NAT, published ports, isolation, admin chain,
//! reconcile. Each test has its own sandbox.

mod common;

use std::process::Stdio;

use common::*;

/// A container serving tcp.py on `ports` (TCP and UDP each).
fn server(sb: &Sandbox, name: &str, extra: &[&str], ports: &[u16]) {
    let script = sb.script("tcp.py");
    let mut sh = String::new();
    for p in ports {
        sh.push_str(&format!("python3 {script} serve {p} & python3 {script} serve {p} udp & "));
    }
    sh.push_str("wait");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", &sh]);
    sb.ok(&args);
}

fn lan_server(sb: &Sandbox, port: u16) -> std::process::Child {
    sb.in_lan_cmd("python3")
        .args([&sb.script("tcp.py"), "serve", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn nft(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.in_host_cmd("nft").args(args).output().unwrap();
    assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The table's text without counter values (they move with traffic).
fn rules(sb: &Sandbox) -> String {
    nft(sb, &["list", "table", "ip", &table(sb)])
        .lines()
        .map(|l| l.split(" counter packets").next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn table(sb: &Sandbox) -> String {
    nft(sb, &["list", "tables"])
        .lines()
        .find_map(|l| l.strip_prefix("table ip ").filter(|t| t.starts_with("netwright-")).map(str::to_string))
        .expect("netwright table")
}

#[test]
fn egress_is_masqueraded_to_the_host_address() {
    let sb = sandbox("egress");
    let _lan = Kill(lan_server(&sb, 7000));
    sb.ok(&["run", "-d", "--name", "c1", "--", "sleep", "300"]);
    let reply = sb.send_from("c1", "192.168.1.100", 7000, "out").expect("container -> LAN server");
    assert!(reply.ends_with("from 192.168.1.10"), "LAN server sees the host's address: {reply}");
    let reply = sb.send_from("c1", "203.0.113.10", 7000, "far").expect("container -> internet address");
    assert!(reply.ends_with("from 192.168.1.10"), "{reply}");
    // masquerade=false: the container's own address leaves, and the LAN cannot answer it.
    sb.ok(&["network", "create", "nonat", "--subnet", "10.60.0.0/24", "--opt", "masquerade=false"]);
    sb.ok(&["run", "-d", "--name", "c2", "--network", "nonat", "--", "sleep", "300"]);
    assert!(sb.send_once("c2", "192.168.1.100", 7000, "x").is_err());
    // internal: no egress at all.
    sb.ok(&["network", "create", "sealed", "--internal", "--subnet", "10.61.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "c3", "--network", "sealed", "--", "sleep", "300"]);
    assert!(sb.send_once("c3", "192.168.1.100", 7000, "x").is_err());
    let (_, err) = sb.fails(&["run", "--network", "sealed", "-p", "8080:80", "--", "true"]);
    assert!(err.contains("internal"), "{err}");
}

#[test]
fn published_ports_answer_from_lan_host_localhost_and_hairpin() {
    let sb = sandbox("publish");
    sb.ok(&["network", "create", "front", "--subnet", "10.62.0.0/24"]);
    sb.ok(&["network", "create", "other", "--subnet", "10.63.0.0/24"]);
    server(&sb, "api", &["--network", "front", "-p", "8080:80", "-p", "8080:80/udp", "-p", "127.0.0.1:9090:80"], &[80]);
    let api_ip = sb.ip_of("api");
    // (a) another machine on the LAN, TCP and UDP; the container sees the real client.
    let r = retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("LAN -> 8080/tcp");
    let client = r.rsplit(' ').next().unwrap().to_string();
    assert!(client.starts_with("192.168.1.") && client != "192.168.1.10", "real client address: {r}");
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "udp")).expect("LAN -> 8080/udp");
    // (b) the host itself, on its own address and on 127.0.0.1.
    retry(|| from_host(&sb, "192.168.1.10", 8080, "tcp")).expect("host -> own address");
    retry(|| from_host(&sb, "127.0.0.1", 8080, "tcp")).expect("host -> 127.0.0.1:8080");
    // (c) hairpin: a container on the same network and one on another, via the host address.
    sb.ok(&["run", "-d", "--name", "same", "--network", "front", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "far", "--network", "other", "--", "sleep", "300"]);
    sb.send_from("same", "192.168.1.10", 8080, "x").expect("hairpin, same network");
    sb.send_from("far", "192.168.1.10", 8080, "x").expect("hairpin, other network");
    // ...while the other network still cannot reach the container directly.
    assert!(sb.send_once("far", &api_ip, 80, "x").is_err(), "isolation holds for direct traffic");
    // (d) bound to one host address only.
    retry(|| from_host(&sb, "127.0.0.1", 9090, "tcp")).expect("127.0.0.1:9090 from the host");
    assert!(from_lan(&sb, "192.168.1.10", 9090, "tcp").is_err(), "9090 is bound to 127.0.0.1 only");
    // `port` lists the mappings like `docker port`.
    let port = sb.ok(&["port", "api"]);
    assert!(
        port.contains("80/tcp -> 0.0.0.0:8080")
            && port.contains("80/udp -> 0.0.0.0:8080")
            && port.contains("80/tcp -> 127.0.0.1:9090"),
        "{port}"
    );
    // Each element names its owner (the seed's "iptables forensics"), as published and
    // after a rebuild of the whole table.
    let t = table(&sb);
    let owned = |sb: &Sandbox| nft(sb, &["list", "map", "ip", &t, "pub_any"]);
    let maps = owned(&sb);
    assert!(maps.lines().any(|l| l.contains("8080") && l.contains("comment \"container api\"")), "{maps}");
    sb.ok(&["reconcile"]);
    assert!(owned(&sb).contains("comment \"container api\""), "{}", owned(&sb));
    let bridges = nft(&sb, &["list", "set", "ip", &t, "bridges"]);
    assert!(bridges.contains("comment \"network bridge\""), "{bridges}");
    // Removing the container removes exactly its map elements.
    sb.ok(&["rm", "-f", "api"]);
    let maps = nft(&sb, &["list", "map", "ip", &t, "pub_any"]) + &nft(&sb, &["list", "map", "ip", &t, "pub_ip"]);
    assert!(!maps.contains("8080") && !maps.contains("9090"), "{maps}");
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err());
}

#[test]
fn random_ports_ranges_and_conflicts() {
    let sb = sandbox("ports");
    server(&sb, "rnd", &["-p", "80"], &[80]);
    let line = sb.ok(&["port", "rnd"]);
    let hp: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!((32768..=60999).contains(&hp), "{line}");
    retry(|| from_lan(&sb, "192.168.1.10", hp, "tcp")).expect("random port answers");
    server(&sb, "rng", &["-p", "8000-8002:7000-7002"], &[7000, 7001, 7002]);
    for p in 8000..=8002 {
        let r = retry(|| from_lan(&sb, "192.168.1.10", p, "tcp")).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(r.contains("hi from"), "{r}");
    }
    // Conflicts: with another container, and with a host process; nothing half-made.
    let before = (sb.ok(&["ps", "-a", "-q"]), rules(&sb));
    let (code, err) = sb.fails(&["run", "-d", "-p", "8001:80", "--", "sleep", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("already published by container rng"), "{err}");
    let _host = Kill(
        sb.in_host_cmd("python3").args([&sb.script("tcp.py"), "serve", "8500"]).stdout(Stdio::null()).spawn().unwrap(),
    );
    assert!(eventually(std::time::Duration::from_secs(5), || {
        sb.nw(&["run", "--rm", "-p", "8500:80", "--", "true"]).status.code() == Some(125)
    }));
    let (_, err) = sb.fails(&["run", "--rm", "-p", "8500:80", "--", "true"]);
    assert!(err.contains("in use by a process on the host"), "{err}");
    let after = (sb.ok(&["ps", "-a", "-q"]), rules(&sb));
    assert_eq!(before, after);
}

#[test]
fn three_networks_are_isolated_pairwise_and_icc_false_blocks_inside() {
    let sb = sandbox("iso3");
    for (i, n) in ["na", "nb", "nc"].iter().enumerate() {
        sb.ok(&["network", "create", n, "--subnet", &format!("10.7{i}.0.0/24")]);
        server(&sb, &format!("s-{n}"), &["--network", n], &[7000]);
    }
    let ips: Vec<String> = ["na", "nb", "nc"].iter().map(|n| sb.ip_of(&format!("s-{n}"))).collect();
    for (i, a) in ["na", "nb", "nc"].iter().enumerate() {
        sb.send_from(&format!("s-{a}"), &ips[i], 7000, "self").expect("server up");
        for (j, b) in ["na", "nb", "nc"].iter().enumerate() {
            if i != j {
                assert!(sb.send_once(&format!("s-{a}"), &ips[j], 7000, "x").is_err(), "{a} -> {b} must fail");
            }
        }
    }
    // icc=false: no container-to-container traffic inside, but egress and published ports work.
    let _lan = Kill(lan_server(&sb, 7000));
    sb.ok(&["network", "create", "quiet", "--subnet", "10.75.0.0/24", "--opt", "icc=false"]);
    server(&sb, "q1", &["--network", "quiet", "-p", "8080:7000"], &[7000]);
    server(&sb, "q2", &["--network", "quiet"], &[7000]);
    let q1 = sb.ip_of("q1");
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("published port on an icc=false network");
    sb.send_from("q2", "192.168.1.100", 7000, "out").expect("egress from an icc=false network");
    assert!(sb.send_once("q2", &q1, 7000, "x").is_err(), "icc=false blocks q2 -> q1");
}

#[test]
fn admin_chain_reconcile_after_flush_and_foreign_tables() {
    let sb = sandbox("admin");
    // A foreign table that was there first (as iptables-nft or Docker would have).
    nft(&sb, &["add", "table", "ip", "foreign"]);
    nft(&sb, &["add", "chain", "ip", "foreign", "fw", "{ type filter hook forward priority 0; }"]);
    nft(&sb, &["add", "rule", "ip", "foreign", "fw", "counter"]);
    let foreign = nft(&sb, &["list", "table", "ip", "foreign"]);
    server(&sb, "api", &["-p", "8080:80"], &[80]);
    let ip = sb.ip_of("api");
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("published");
    let t = table(&sb);
    // The admin's rule runs before netwright's and survives netwright's own rebuilds.
    nft(&sb, &["add", "rule", "ip", &t, "user", "ip", "daddr", &ip, "tcp", "dport", "80", "drop"]);
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err(), "admin drop honoured");
    sb.ok(&["reconcile"]);
    assert!(nft(&sb, &["list", "chain", "ip", &t, "user"]).contains("drop"), "user chain never flushed");
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err());
    nft(&sb, &["flush", "chain", "ip", &t, "user"]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("works again without the admin rule");
    // An admin flushes everything: reconcile restores netwright's rules from the store.
    nft(&sb, &["flush", "ruleset"]);
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err());
    sb.ok(&["reconcile"]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("restored by reconcile");
    // And a plain `run` notices a missing table by itself.
    nft(&sb, &["delete", "table", "ip", &t]);
    sb.ok(&["run", "--rm", "--", "true"]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("restored by the next run");
    // Or one missing rule: the check a `run` makes reads no rules while nothing changed
    // since netwright last saw them right (the ruleset generation), and does otherwise.
    sb.ok(&["run", "--rm", "--", "true"]);
    let traced = sb.netwright(["run", "--rm", "--", "true"]).env("NETWRIGHT_TRACE", "1").output().unwrap();
    let trace = String::from_utf8_lossy(&traced.stderr);
    assert!(trace.contains("firewall: unchanged since checked"), "no rules read when nothing changed:\n{trace}");
    let egress = "egress: masquerade a network's traffic leaving the host";
    let listing = nft(&sb, &["-a", "list", "chain", "ip", &t, "postrouting"]);
    let handle = listing
        .lines()
        .find(|l| l.contains(egress))
        .and_then(|l| l.rsplit("# handle ").next())
        .expect("the egress rule")
        .trim()
        .to_string();
    nft(&sb, &["delete", "rule", "ip", &t, "postrouting", "handle", &handle]);
    assert!(!rules(&sb).contains(egress));
    sb.ok(&["run", "--rm", "--", "true"]);
    assert!(rules(&sb).contains(egress), "the next run put the deleted rule back:\n{}", rules(&sb));
    // netwright never touched the foreign table (the flush above was the admin's).
    nft(&sb, &["add", "table", "ip", "foreign"]);
    nft(&sb, &["add", "chain", "ip", "foreign", "fw", "{ type filter hook forward priority 0; }"]);
    nft(&sb, &["add", "rule", "ip", "foreign", "fw", "counter"]);
    sb.ok(&["run", "--rm", "-p", "8181:80", "--", "true"]);
    sb.ok(&["reconcile"]);
    let now = nft(&sb, &["list", "table", "ip", "foreign"]);
    assert_eq!(
        now.lines().filter(|l| !l.contains("counter")).collect::<Vec<_>>(),
        foreign.lines().filter(|l| !l.contains("counter")).collect::<Vec<_>>()
    );
}
