//! `netwright trace`: each verdict matches what a real packet does.

mod common;

use std::process::Stdio;

use common::*;

fn trace(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    let mut full = vec!["trace"];
    full.extend_from_slice(args);
    let out = sb.nw(&full);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tables(sb: &Sandbox) -> String {
    String::from_utf8_lossy(&sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap().stdout).into_owned()
}

#[test]
fn seed_flows_are_delivered_and_faults_blocked_as_real_packets_say() {
    let sb = sandbox("trace");
    let script = sb.script("tcp.py");
    let _lan = Kill(sb.in_lan_cmd("python3").args([&script, "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap());
    sb.ok(&["network", "create", "app", "--subnet", "10.101.0.0/24"]);
    sb.ok(&["network", "create", "other", "--subnet", "10.102.0.0/24"]);
    sb.ok(&["network", "create", "sealed", "--internal", "--subnet", "10.103.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "web", "--network", "app", "--", "python3", &script, "serve", "7000"]);
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
        &script,
        "serve",
        "80",
    ]);
    sb.ok(&["run", "-d", "--name", "far", "--network", "other", "--", "python3", &script, "serve", "7000"]);
    sb.ok(&["run", "-d", "--name", "vault", "--network", "sealed", "--", "sleep", "300"]);
    sb.ok(&[
        "run",
        "-d",
        "--name",
        "shy",
        "--network",
        "app",
        "-p",
        "8181:80",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
        "--bind",
        "127.0.0.1",
    ]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("api up");
    sb.send_from("web", &sb.ip_of("api"), 80, "x").expect("servers up");
    sb.send_from("far", &sb.ip_of("far"), 7000, "x").expect("far up");

    // Flow 1: container → LAN server, masqueraded. The probe is a real connection, and the
    // kernel's trace shows it passing netwright's egress rule and the answer coming back.
    let (code, out) = trace(&sb, &["--probe", "web", "lan:192.168.1.100:7000"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: DELIVERED") && out.contains("masquerade") && out.contains("(agrees)"), "{out}");
    assert!(out.contains("kernel trace") && out.contains("\"egress: masquerade") && out.contains("SYN ACK"), "{out}");
    // A container to its own address: turned around over lo inside its namespace, and the
    // probe's real connection agrees.
    let (code, out) = trace(&sb, &["--probe", "far", "far:7000"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("over lo") && out.contains("verdict: DELIVERED") && out.contains("(agrees)"), "{out}");
    // Flow 2: LAN client → host:8080 → api:80, DNAT; the test sends the real packet.
    let (code, out) = trace(&sb, &["lan:192.168.1.100", "host:8080"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("DNAT") && out.contains("api") && out.contains("verdict: DELIVERED"), "{out}");
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_ok());
    // Flow 3: container ↔ container over the bridge, with the FDB port.
    let (code, out) = trace(&sb, &["--probe", "web", "api:80"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("bridge nwb") && out.contains("verdict: DELIVERED") && out.contains("(agrees)"), "{out}");
    // Across networks: blocked by isolation, with the fix; the real packet fails too.
    let (code, out) = trace(&sb, &["--probe", "web", "far:7000"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BLOCKED")
            && out.contains("different networks")
            && out.contains("netwright network connect other web")
            && out.contains("(agrees)"),
        "{out}"
    );
    assert!(
        out.contains("dropped by ip netwright-") && out.contains("isolation: drop traffic between different networks"),
        "{out}"
    );
    // An internal network's egress.
    let (code, out) = trace(&sb, &["vault", "lan:192.168.1.100:7000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("internal"), "{out}");
    assert!(sb.send_once("vault", "192.168.1.100", 7000, "x").is_err());
    // A published port whose server binds 127.0.0.1: blocked, like the real packet.
    let (code, out) = trace(&sb, &["lan:192.168.1.100", "host:8181"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("127.0.0.1:80 only") && out.contains("0.0.0.0"), "{out}");
    assert!(from_lan(&sb, "192.168.1.10", 8181, "tcp").is_err());
    // The same from the LAN, watched: the kernel shows the DNAT and the container's reset.
    let mut watch = sb.spawn_nw(&["trace", "--probe", "--wait", "20", "lan:192.168.1.1", "host:8181"]);
    let mut stderr = std::io::BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("watching for tcp from 192.168.1.1 "), "{line}");
    assert!(from_lan(&sb, "192.168.1.10", 8181, "tcp").is_err());
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DNAT to the container") && text.contains("reset (RST)") && text.contains("(agrees)"),
        "{text}"
    );
    // JSON for tools.
    let json: serde_json::Value =
        serde_json::from_str(&sb.ok(&["trace", "--format", "json", "web", "api:80"])).unwrap();
    assert_eq!(json["verdict"], "DELIVERED");
    assert!(json["hops"].as_array().unwrap().len() >= 3);
}

#[test]
fn a_foreign_firewall_the_explanation_misses_shows_as_a_disagreement() {
    let sb = sandbox("trace-foreign");
    let _lan = Kill(
        sb.in_lan_cmd("python3").args([&sb.script("tcp.py"), "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap(),
    );
    sb.ok(&["run", "-d", "--name", "cc", "--", "sleep", "300"]);
    sb.send_from("cc", "192.168.1.100", 7000, "x").expect("egress works before the foreign rule");
    for args in [
        vec!["add", "table", "ip", "strict"],
        vec!["add", "chain", "ip", "strict", "fw", "{ type filter hook forward priority 10; policy drop; }"],
    ] {
        assert!(sb.in_host_cmd("nft").args(&args).status().unwrap().success());
    }
    let (code, out) = trace(&sb, &["--probe", "cc", "lan:192.168.1.100:7000"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("verdict: DELIVERED")
            && out.contains("DISAGREES")
            && out.contains("dropped by ip strict/fw (chain policy)"),
        "{out}"
    );
    assert!(!tables(&sb).contains("-trace"), "the marking table is removed");
}
