//! `netwright conntrack`: the kernel's tracked connections with real packets — a
//! masqueraded egress connection and a DNAT'd published port, each with both tuples.

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn egress_and_published_connections_show_both_tuples_and_their_nat() {
    let sb = sandbox("ct");
    let script = sb.script("tcp.py");
    let _server =
        Kill(sb.in_lan_cmd("python3").args([&script, "serve", "7100"]).stdout(Stdio::null()).spawn().unwrap());
    sb.ok(&["run", "-d", "--name", "web", "-p", "8080:7000", "--", "python3", &script, "serve", "7000"]);
    sb.ok(&["run", "-d", "--name", "quiet", "--", "sleep", "300"]);
    let web = sb.ip_of("web");
    // Egress: web → LAN server, masqueraded to the host's address.
    let reply = sb.send_from("web", "192.168.1.100", 7100, "out").expect("egress");
    assert!(reply.ends_with("from 192.168.1.10"), "{reply}");
    // In: LAN → host:8080 → web:7000.
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("published port");
    let text = sb.ok(&["conntrack", "web"]);
    let egress = text
        .lines()
        .find(|l| l.contains(&format!("{web}:")) && l.contains("→ 192.168.1.100:7100"))
        .unwrap_or_else(|| panic!("no egress entry: {text}"));
    assert!(egress.contains("192.168.1.100:7100 → 192.168.1.10:") && egress.contains("snat (masquerade)"), "{egress}");
    let inbound = text
        .lines()
        .find(|l| l.contains("→ 192.168.1.10:8080"))
        .unwrap_or_else(|| panic!("no published-port entry: {text}"));
    assert!(
        inbound.starts_with("tcp")
            && inbound.contains(&format!("{web}:7000 → 192.168.1.1"))
            && inbound.contains("dnat (published port)"),
        "{inbound}"
    );
    assert!(text.lines().last().unwrap().starts_with("table: "), "{text}");
    // Another container's view has none of web's connections.
    let other = sb.ok(&["conntrack", "quiet"]);
    assert!(!other.contains(&web), "{other}");
    // JSON, for scripts.
    let v: serde_json::Value = serde_json::from_str(&sb.ok(&["conntrack", "web", "--format", "json"])).unwrap();
    assert!(
        v["Connections"].as_array().unwrap().iter().any(|c| c["dnat"] == true && c["reply"]["src"] == web.as_str())
    );
    assert!(v["Max"].as_u64().unwrap() > 0);
    let (code, err) = sb.fails(&["conntrack", "nosuch"]);
    assert!(code != 0 && err.contains("no such container") && err.lines().count() == 1, "{err}");
}
