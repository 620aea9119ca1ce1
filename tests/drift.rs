//! Drift repaired: what an admin's hand deletes, `doctor` reports (with the fix) and
//! `reconcile` restores — judged by real packets between containers and from the LAN.

mod common;

use common::*;

fn doctor(sb: &Sandbox) -> (i32, String) {
    let out = sb.nw(&["doctor"]);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn drift_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some("drift"))
        .unwrap_or_else(|| panic!("no drift line:\n{out}"))
}

/// Two containers on one network (icc=false optional), each serving tcp.py on port 80;
/// `web` also published on 8080.
fn two_servers(sb: &Sandbox, subnet: &str, opts: &[&str]) {
    let mut create = vec!["network", "create", "app", "--subnet", subnet];
    create.extend_from_slice(opts);
    sb.ok(&create);
    let tcp = sb.script("tcp.py");
    sb.ok(&["run", "-d", "--name", "web", "--network", "app", "-p", "8080:80", "--", "python3", &tcp, "serve", "80"]);
    sb.ok(&["run", "-d", "--name", "db", "--network", "app", "--", "python3", &tcp, "serve", "80"]);
    sb.send_from("web", &sb.ip_of("db"), 80, "x").expect("web -> db before any drift");
    sb.send_from("db", &sb.ip_of("web"), 80, "x").expect("db -> web before any drift");
}

fn healthy(sb: &Sandbox) {
    let (code, out) = doctor(sb);
    assert_eq!(code, 0, "{out}");
    assert!(drift_line(&out).starts_with("ok"), "{out}");
}

fn ip_del(sb: &Sandbox, dev: &str) {
    assert!(sb.in_host_cmd("ip").args(["link", "del", dev]).status().unwrap().success(), "ip link del {dev}");
}

#[test]
fn a_hand_deleted_bridge_is_reported_and_restored_with_its_ports() {
    let sb = sandbox("drift-br");
    two_servers(&sb, "10.91.0.0/24", &[]);
    healthy(&sb);
    let bridge =
        sb.inspect("web")["NetworkSettings"]["Networks"]["app"]["Netwright"]["Bridge"].as_str().unwrap().to_string();
    ip_del(&sb, &bridge);
    // The fault is real: the containers' veths lost their bridge.
    assert!(sb.send_once("web", &sb.ip_of("db"), 80, "x").is_err());
    let (code, out) = doctor(&sb);
    assert_eq!(code, 1, "{out}");
    let line = drift_line(&out);
    assert!(line.starts_with("FAIL") && line.contains(&bridge), "{out}");
    assert!(out.contains("fix: netwright reconcile"), "{out}");
    let report = sb.ok(&["reconcile"]);
    assert!(report.contains("restored 1 bridge(s)") && report.contains("repaired 2 port(s)"), "{report}");
    sb.send_from("web", &sb.ip_of("db"), 80, "x").expect("web -> db after reconcile");
    sb.send_from("db", &sb.ip_of("web"), 80, "x").expect("db -> web after reconcile");
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("the published port after reconcile");
    healthy(&sb);
}

#[test]
fn a_hand_deleted_container_veth_is_reported_and_remade_into_its_container() {
    let sb = sandbox("drift-veth");
    two_servers(&sb, "10.92.0.0/24", &[]);
    healthy(&sb);
    let veth = sb.inspect("db")["NetworkSettings"]["Networks"]["app"]["Netwright"]["HostInterface"]
        .as_str()
        .unwrap()
        .to_string();
    let db_ip = sb.ip_of("db");
    ip_del(&sb, &veth);
    assert!(sb.send_once("web", &db_ip, 80, "x").is_err(), "db is unreachable without its veth");
    let (code, out) = doctor(&sb);
    assert_eq!(code, 1, "{out}");
    let line = drift_line(&out);
    assert!(line.starts_with("FAIL") && line.contains(&veth) && line.contains("db"), "{out}");
    let topo = sb.ok(&["topology"]);
    assert!(topo.contains("MISSING"), "{topo}");
    let report = sb.ok(&["reconcile"]);
    assert!(report.contains("repaired 1 port(s)"), "{report}");
    // Same address, same name: the container's eth0 is back with its route.
    assert_eq!(sb.ip_of("db"), db_ip);
    sb.send_from("web", &db_ip, 80, "x").expect("web -> db after reconcile");
    sb.send_from("db", &sb.ip_of("web"), 80, "x").expect("db -> web after reconcile");
    let routes = sb.ok(&["exec", "db", "--", "ip", "route"]);
    assert!(routes.contains("default via 10.92.0.1 dev eth0"), "{routes}");
    healthy(&sb);
}

#[test]
fn an_isolated_port_comes_back_isolated() {
    let sb = sandbox("drift-icc");
    sb.ok(&["network", "create", "quiet", "--subnet", "10.93.0.0/24", "--opt", "icc=false"]);
    let tcp = sb.script("tcp.py");
    sb.ok(&["run", "-d", "--name", "aa", "--network", "quiet", "--", "python3", &tcp, "serve", "80"]);
    sb.ok(&["run", "-d", "--name", "bb", "--network", "quiet", "--", "python3", &tcp, "serve", "80"]);
    let bridge =
        sb.inspect("aa")["NetworkSettings"]["Networks"]["quiet"]["Netwright"]["Bridge"].as_str().unwrap().to_string();
    // Wait for a's server: from the host namespace, through the bridge's gateway address.
    retry(|| from_host(&sb, &sb.ip_of("aa"), 80, "tcp")).expect("a serves");
    assert!(sb.send_once("bb", &sb.ip_of("aa"), 80, "x").is_err(), "icc=false before");
    ip_del(&sb, &bridge);
    sb.ok(&["reconcile"]);
    retry(|| from_host(&sb, &sb.ip_of("aa"), 80, "tcp")).expect("a reachable from the host after reconcile");
    assert!(sb.send_once("bb", &sb.ip_of("aa"), 80, "x").is_err(), "icc=false after reconcile");
    healthy(&sb);
}

fn nft(sb: &Sandbox, args: &[&str]) {
    assert!(sb.in_host_cmd("nft").args(args).status().unwrap().success(), "nft {args:?}");
}

fn table(sb: &Sandbox) -> String {
    let t = sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&t.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("table ip ").filter(|t| !t.ends_with("-trace")).map(str::to_string))
        .expect("netwright's table")
}

fn firewall_line(sb: &Sandbox) -> (i32, String) {
    let (code, out) = doctor(sb);
    let line = out.lines().find(|l| l.split_whitespace().nth(1) == Some("firewall")).unwrap_or("").to_string();
    (code, line)
}

#[test]
fn flushed_maps_sets_and_chains_are_reported_and_restored() {
    let sb = sandbox("drift-nft");
    two_servers(&sb, "10.94.0.0/24", &[]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("published port");
    healthy(&sb);
    let t = table(&sb);
    // A flushed port map: every published port is dead; doctor sees the missing element.
    nft(&sb, &["flush", "map", "ip", &t, "pub_any"]);
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err());
    let (code, line) = firewall_line(&sb);
    assert!(code == 1 && line.contains("pub_any: 1 of 1 element(s) missing"), "{line}");
    sb.ok(&["reconcile"]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("published port after reconcile");
    healthy(&sb);
    // A flushed table: every rule is gone; the next run restores it without reconcile.
    nft(&sb, &["flush", "table", "ip", &t]);
    let (code, line) = firewall_line(&sb);
    assert!(code == 1 && line.contains("rule missing in chain prerouting"), "{line}");
    sb.ok(&["run", "-d", "--name", "third", "--network", "app", "--", "sleep", "300"]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("published port after the next run");
    healthy(&sb);
    // A flushed network set: isolation and masquerade lose the network; the next run
    // (here on another network) puts it back.
    nft(&sb, &["flush", "set", "ip", &t, "same"]);
    let (code, line) = firewall_line(&sb);
    assert!(code == 1 && line.contains("same: ") && line.contains("missing"), "{line}");
    sb.ok(&["run", "--rm", "--", "true"]);
    healthy(&sb);
}
