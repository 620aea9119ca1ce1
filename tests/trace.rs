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

#[test]
fn seed_flows_are_delivered_and_faults_blocked_as_real_packets_say() {
    let sb = sandbox("trace");
    let script = sb.script("tcp.py");
    let _lan = Kill(sb.in_lan_cmd("python3").args([&script, "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap());
    sb.ok(&["network", "create", "app", "--subnet", "10.101.0.0/24"]);
    sb.ok(&["network", "create", "other", "--subnet", "10.102.0.0/24"]);
    sb.ok(&["network", "create", "sealed", "--internal", "--subnet", "10.103.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "web", "--network", "app", "--", "python3", &script, "serve", "7000"]);
    sb.ok(&["run", "-d", "--name", "api", "--network", "app", "-p", "8080:80", "--", "python3", &script, "serve", "80"]);
    sb.ok(&["run", "-d", "--name", "far", "--network", "other", "--", "python3", &script, "serve", "7000"]);
    sb.ok(&["run", "-d", "--name", "vault", "--network", "sealed", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "shy", "--network", "app", "-p", "8181:80", "--", "python3", "-m", "http.server", "80", "--bind", "127.0.0.1"]);
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("api up");
    sb.send_from("web", &sb.ip_of("api"), 80, "x").expect("servers up");
    sb.send_from("far", &sb.ip_of("far"), 7000, "x").expect("far up");

    // Flow 1: container → LAN server, masqueraded. The probe is a real connection.
    let (code, out) = trace(&sb, &["--probe", "web", "lan:192.168.1.100:7000"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: DELIVERED") && out.contains("masquerade") && out.contains("(agrees)"), "{out}");
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
    assert!(out.contains("BLOCKED") && out.contains("different networks") && out.contains("netwright network connect other web") && out.contains("(agrees)"), "{out}");
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
    // JSON for tools.
    let json: serde_json::Value = serde_json::from_str(&sb.ok(&["trace", "--format", "json", "web", "api:80"])).unwrap();
    assert_eq!(json["verdict"], "DELIVERED");
    assert!(json["hops"].as_array().unwrap().len() >= 3);
}
