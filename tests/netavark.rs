//! `netwright netavark`: Podman's backend protocol, driven as Podman drives netavark 1.4 —
//! JSON on stdin, the runtime's namespace as argument — and proven with real packets.

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use common::*;
use serde_json::{Value, json};

/// Runs `netwright netavark --config DIR CMD NETNS` with `config` on stdin: (exit code, stdout JSON).
fn netavark(sb: &Sandbox, cmd: &str, netns: &str, config: &Value) -> (i32, Value) {
    let dir = sb.dir.join("netavark-config");
    let mut child = sb
        .netwright(["netavark", "--config", dir.to_str().unwrap(), "--rootless=false", cmd, netns])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).expect(&text) };
    (out.status.code().unwrap_or(-1), v)
}

fn podman_net(name: &str, bridge: &str, subnet: &str, gateway: &str, id: &str) -> Value {
    json!({"dns_enabled": true, "driver": "bridge", "id": id, "internal": false, "ipv6_enabled": false,
           "name": name, "network_interface": bridge, "subnets": [{"gateway": gateway, "subnet": subnet}]})
}

fn config(id: &str, name: &str, nets: &[(&str, &str, &str, Value)], ports: Value) -> Value {
    let mut networks = serde_json::Map::new();
    let mut info = serde_json::Map::new();
    for (i, (net, ip, mac, netinfo)) in nets.iter().enumerate() {
        networks.insert(
            net.to_string(),
            json!({"interface_name": format!("eth{i}"), "static_ips": [ip], "static_mac": mac,
                   "aliases": [&id[..12], name]}),
        );
        info.insert(net.to_string(), netinfo.clone());
    }
    json!({"container_id": id, "container_name": name, "networks": networks, "network_info": info,
           "port_mappings": ports})
}

fn ns_cmd(ns: &OwnedFd, args: &[&str]) -> String {
    let out = Sandbox::in_ns_cmd(ns, args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ID_A: &str = "aaaa0000000000000000000000000000000000000000000000000000000000a1";
const ID_B: &str = "bbbb0000000000000000000000000000000000000000000000000000000000b2";
const NET_ID: &str = "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9";

#[test]
fn podman_protocol_setup_dns_ports_connect_and_teardown() {
    let sb = sandbox("netavark");
    let podman = podman_net("podman", "podman0", "10.88.0.0/16", "10.88.0.1", NET_ID);
    let (pa, nsa) = runtime_ns(&sb, "netns-a");
    let (pb, nsb) = runtime_ns(&sb, "netns-b");
    let (pa, pb) = (pa.to_str().unwrap().to_string(), pb.to_str().unwrap().to_string());
    let web = config(
        ID_A,
        "web",
        &[("podman", "10.88.0.2", "92:0e:27:11:22:33", podman.clone())],
        json!([{"container_port": 80, "host_ip": "", "host_port": 8080, "protocol": "tcp", "range": 1}]),
    );
    let (code, out) = netavark(&sb, "setup", &pa, &web);
    assert_eq!(code, 0, "{out}");
    // netavark's status block: Podman writes resolv.conf and inspect from it.
    let eth0 = &out["podman"]["interfaces"]["eth0"];
    assert_eq!(eth0["mac_address"], "92:0e:27:11:22:33", "{out}");
    assert_eq!(eth0["subnets"][0]["ipnet"], "10.88.0.2/16");
    assert_eq!(eth0["subnets"][0]["gateway"], "10.88.0.1");
    assert_eq!(out["podman"]["dns_server_ips"], json!(["10.88.0.1"]));
    // Podman's names are used as given: its bridge, its MAC, its address.
    assert!(ours(&sb.host_links(), "podman0").len() == 1);
    let inside = ns_cmd(&nsa, &["ip", "-br", "addr", "show", "eth0"]);
    assert!(inside.contains("10.88.0.2/16"), "{inside}");
    assert!(ns_cmd(&nsa, &["ip", "-br", "link", "show", "eth0"]).contains("92:0e:27:11:22:33"));
    // A second container; names and aliases resolve at the gateway, as with aardvark-dns.
    let db = config(ID_B, "db", &[("podman", "10.88.0.3", "92:0e:27:11:22:44", podman.clone())], json!([]));
    assert_eq!(netavark(&sb, "setup", &pb, &db).0, 0);
    let dnsq = sb.script("dnsq.py");
    for name in ["web", &ID_A[..12]] {
        let answer = ns_cmd(&nsb, &["python3", &dnsq, name, "A", "10.88.0.1"]);
        assert!(answer.contains("NOERROR") && answer.contains("10.88.0.2"), "{name}: {answer}");
    }
    // Real packets: container to container, and the published port from the LAN.
    let tcp = sb.script("tcp.py");
    let _server = Kill(Sandbox::in_ns_cmd(&nsa, "python3").args([&tcp, "serve", "80"]).spawn().unwrap());
    let sent = retry(|| {
        let out = Sandbox::in_ns_cmd(&nsb, "python3").args([&tcp, "send", "10.88.0.2", "80", "hi"]).output().unwrap();
        if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).into_owned()) } else { Err(String::new()) }
    });
    assert!(sent.is_ok(), "db -> web");
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("LAN -> published port");
    // `podman network connect`: the same container, a new network, the ports re-sent.
    let other = podman_net("other", "podman1", "10.89.0.0/24", "10.89.0.1", &NET_ID.replace('2', "3"));
    let both = config(
        ID_A,
        "web",
        &[("other", "10.89.0.5", "92:0e:27:11:22:55", other.clone())],
        json!([{"container_port": 80, "host_ip": "", "host_port": 8080, "protocol": "tcp", "range": 1}]),
    );
    let mut connect = both.clone();
    connect["networks"]["other"]["interface_name"] = json!("eth1");
    let (code, out) = netavark(&sb, "setup", &pa, &connect);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["other"]["interfaces"]["eth1"]["subnets"][0]["ipnet"], "10.89.0.5/24", "{out}");
    assert!(ns_cmd(&nsa, &["ip", "-br", "addr", "show", "eth1"]).contains("10.89.0.5/24"));
    // `podman network disconnect`: teardown of that network only.
    assert_eq!(netavark(&sb, "teardown", &pa, &connect).0, 0);
    assert!(ns_cmd(&nsa, &["ip", "-br", "addr", "show", "eth1"]).is_empty());
    assert!(ns_cmd(&nsa, &["ip", "-br", "addr", "show", "eth0"]).contains("10.88.0.2"));
    // Teardown: everything of web goes, the port is free, teardown again is fine.
    assert_eq!(netavark(&sb, "teardown", &pa, &web).0, 0);
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err());
    assert_eq!(netavark(&sb, "teardown", &pa, &web).0, 0, "what is gone is fine");
    let (code, out) = netavark(&sb, "setup", &pa, &web);
    assert_eq!(code, 0, "the same container again: {out}");
    assert_eq!(netavark(&sb, "teardown", &pa, &web).0, 0);
    assert_eq!(netavark(&sb, "teardown", &pb, &db).0, 0);
    // Errors: JSON on stdout, exit 1, nothing left behind.
    let (code, out) = netavark(&sb, "setup", &pa, &json!({"container_id": 5}));
    assert_eq!(code, 1);
    assert!(out["error"].as_str().unwrap().contains("invalid network configuration JSON"), "{out}");
    let clash = config(ID_B, "db", &[("podman", "10.88.0.2", "92:0e:27:11:22:44", podman.clone())], json!([]));
    let busy = config(ID_A, "web", &[("podman", "10.88.0.2", "92:0e:27:11:22:33", podman)], json!([]));
    assert_eq!(netavark(&sb, "setup", &pa, &busy).0, 0);
    let (code, out) = netavark(&sb, "setup", &pb, &clash);
    assert_eq!(code, 1);
    assert!(out["error"].as_str().unwrap().contains("already in use"), "{out}");
    // (db's own eth0, down, may still wait there for the runtime to drop the namespace.)
    assert!(!ns_cmd(&nsb, &["ip", "-br", "addr"]).contains("10.88.0.2"), "nothing of the failed setup is left");
    assert_eq!(netavark(&sb, "teardown", &pa, &busy).0, 0);
    // version is JSON too.
    let v = sb.ok(&["netavark", "version"]);
    assert!(serde_json::from_str::<Value>(&v).unwrap()["version"].is_string(), "{v}");
}

#[test]
fn podman_dual_stack_networks_pass_through() {
    let sb = sandbox("netavark-v6");
    sb.enable_ipv6().unwrap();
    let mut net = podman_net("podman6", "podman6", "10.90.0.0/24", "10.90.0.1", NET_ID);
    net["ipv6_enabled"] = json!(true);
    net["subnets"].as_array_mut().unwrap().push(json!({"gateway": "fd00:90::1", "subnet": "fd00:90::/64"}));
    let (pa, nsa) = runtime_ns(&sb, "netns-a");
    let pa = pa.to_str().unwrap().to_string();
    let mut web = config(
        ID_A,
        "web",
        &[("podman6", "10.90.0.2", "92:0e:27:11:22:33", net)],
        json!([{"container_port": 80, "host_ip": "", "host_port": 8080, "protocol": "tcp", "range": 1}]),
    );
    // Podman allocates both addresses itself and hands them over.
    web["networks"]["podman6"]["static_ips"] = json!(["10.90.0.2", "fd00:90::2"]);
    let (code, out) = netavark(&sb, "setup", &pa, &web);
    assert_eq!(code, 0, "{out}");
    let subnets = &out["podman6"]["interfaces"]["eth0"]["subnets"];
    assert_eq!(subnets[1]["ipnet"], "fd00:90::2/64", "{out}");
    assert_eq!(subnets[1]["gateway"], "fd00:90::1");
    assert!(ns_cmd(&nsa, &["ip", "-6", "-br", "addr", "show", "eth0"]).contains("fd00:90::2/64"));
    let tcp = sb.script("tcp.py");
    let _server = Kill(Sandbox::in_ns_cmd(&nsa, "python3").args([&tcp, "serve", "80"]).spawn().unwrap());
    let r = retry(|| from_lan(&sb, netwright_testkit::HOST6_ETH0, 8080, "tcp"))
        .expect("LAN -> [host]:8080 -> Podman's container");
    assert!(r.contains("from 2001:db8:1::"), "{r}");
    assert_eq!(netavark(&sb, "teardown", &pa, &web).0, 0);
    assert!(from_lan(&sb, netwright_testkit::HOST6_ETH0, 8080, "tcp").is_err());
}
