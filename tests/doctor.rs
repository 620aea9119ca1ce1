//! `netwright doctor`: for each check, a sandbox with the fault and one without.

mod common;

use std::process::Stdio;

use common::*;

/// (exit code, output) of `doctor`.
fn doctor(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    let mut full = vec!["doctor"];
    full.extend_from_slice(args);
    let out = sb.nw(&full);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_else(|| panic!("no {check} line in:\n{out}"))
}

fn healthy_api(sb: &Sandbox) {
    sb.ok(&["network", "create", "app", "--subnet", "10.98.0.0/24"]);
    sb.ok(&[
        "run",
        "-d",
        "--name",
        "api",
        "--network",
        "app",
        "-p",
        "8080:80",
        "--",
        "python3",
        &sb.script("tcp.py"),
        "serve",
        "80",
    ]);
    retry(|| from_lan(sb, "192.168.1.10", 8080, "tcp")).expect("api answers");
}

#[test]
fn a_healthy_sandbox_passes_every_check() {
    let sb = sandbox("doc-ok");
    healthy_api(&sb);
    let (code, out) = doctor(&sb, &[]);
    assert_eq!(code, 0, "{out}");
    for check in ["forwarding", "firewall", "drift", "mtu", "conntrack", "foreign-firewall", "host-ports", "listening"]
    {
        assert!(line(&out, check).starts_with("ok"), "{check}: {out}");
    }
}

#[test]
fn forwarding_firewall_and_drift_faults_are_found() {
    let sb = sandbox("doc-fw");
    healthy_api(&sb);
    assert!(sb.in_host_cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=0"]).status().unwrap().success());
    let (code, out) = doctor(&sb, &[]);
    assert_eq!(code, 1);
    assert!(line(&out, "forwarding").starts_with("FAIL") && out.contains("ip_forward=1"), "{out}");
    // The fault is real: egress and the published port break with it.
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err());
    sb.ok(&["reconcile"]);
    let t = sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap();
    let table = String::from_utf8_lossy(&t.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("table ip ").map(str::to_string))
        .unwrap();
    assert!(sb.in_host_cmd("nft").args(["delete", "table", "ip", &table]).status().unwrap().success());
    let bridge =
        sb.inspect("api")["NetworkSettings"]["Networks"]["app"]["Netwright"]["Bridge"].as_str().unwrap().to_string();
    assert!(sb.in_host_cmd("ip").args(["link", "del", &bridge]).status().unwrap().success());
    let (code, out) = doctor(&sb, &[]);
    assert_eq!(code, 1);
    assert!(line(&out, "forwarding").starts_with("ok"), "{out}");
    assert!(line(&out, "firewall").starts_with("FAIL"), "{out}");
    assert!(line(&out, "drift").starts_with("FAIL") && out.contains(&bridge), "{out}");
    assert!(out.contains("netwright reconcile"));
}

#[test]
fn published_port_faults_are_found() {
    let sb = sandbox("doc-ports");
    sb.ok(&["network", "create", "app", "--subnet", "10.98.0.0/24"]);
    // A server bound to 127.0.0.1 inside: the classic "connection refused from outside".
    sb.ok(&[
        "run",
        "-d",
        "--name",
        "shy",
        "--network",
        "app",
        "-p",
        "8080:80",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
        "--bind",
        "127.0.0.1",
    ]);
    let mut out = String::new();
    eventually(std::time::Duration::from_secs(5), || {
        out = doctor(&sb, &[]).1;
        line(&out, "listening").contains("127.0.0.1:80 only")
    });
    assert!(
        line(&out, "listening").starts_with("FAIL") && line(&out, "listening").contains("127.0.0.1:80 only"),
        "{out}"
    );
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err(), "and a real packet is refused");
    // A host process that started listening on a published port afterwards.
    let _host = Kill(
        sb.in_host_cmd("python3").args([&sb.script("tcp.py"), "serve", "8080"]).stdout(Stdio::null()).spawn().unwrap(),
    );
    let mut out = String::new();
    eventually(std::time::Duration::from_secs(5), || {
        out = doctor(&sb, &[]).1;
        line(&out, "host-ports").starts_with("FAIL")
    });
    assert!(line(&out, "host-ports").starts_with("FAIL"), "{out}");
}

#[test]
fn mtu_foreign_firewall_and_default_bridge_dns() {
    let sb = sandbox("doc-misc");
    sb.ok(&["network", "create", "jumbo", "--subnet", "10.99.0.0/24", "--opt", "mtu=9000"]);
    // A foreign table dropping forwarded traffic by policy, as Docker's FORWARD DROP does.
    for args in [
        vec!["add", "table", "ip", "strict"],
        vec!["add", "chain", "ip", "strict", "fw", "{ type filter hook forward priority 0; policy drop; }"],
    ] {
        assert!(sb.in_host_cmd("nft").args(&args).status().unwrap().success());
    }
    sb.ok(&["run", "-d", "--name", "loner", "--", "sleep", "300"]);
    let (code, out) = doctor(&sb, &[]);
    assert_eq!(code, 1);
    assert!(line(&out, "mtu").starts_with("FAIL") && out.contains("mtu=1500"), "{out}");
    assert!(line(&out, "foreign-firewall").starts_with("FAIL") && out.contains("strict"), "{out}");
    let (_, out) = doctor(&sb, &["loner"]);
    assert!(line(&out, "dns").starts_with("WARN") && out.contains("network connect app loner"), "{out}");
    // The foreign drop is real: egress from a container dies there.
    let _lan = Kill(
        sb.in_lan_cmd("python3").args([&sb.script("tcp.py"), "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap(),
    );
    assert!(sb.send_once("loner", "192.168.1.100", 7000, "x").is_err());
    assert!(sb.in_host_cmd("nft").args(["delete", "table", "ip", "strict"]).status().unwrap().success());
    sb.send_from("loner", "192.168.1.100", 7000, "x").expect("egress once the foreign drop is gone");
    let (_, out) = doctor(&sb, &[]);
    assert!(line(&out, "foreign-firewall").starts_with("ok"), "{out}");
}
