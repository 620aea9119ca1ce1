//! `netwright-cni`: the CNI protocol as runtimes speak it (environment + config on stdin),
//! proven with real packets: ADD, a second network, CHECK, DEL (idempotent), GC, VERSION,
//! STATUS and the spec's error shape.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use serde_json::{Value, json};

/// The plugin as a runtime finds it: a link named netwright-cni.
fn plugin(sb: &Sandbox) -> PathBuf {
    let dir = sb.dir.join("cni-bin");
    let link = dir.join("netwright-cni");
    if !link.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_netwright"), &link).unwrap();
    }
    link
}

/// One plugin call in the sandbox's host namespace: (exit code, stdout JSON).
fn cni(sb: &Sandbox, command: &str, id: &str, netns: &str, ifname: &str, args: &str, conf: &Value) -> (i32, Value) {
    let mut child = sb
        .in_host_cmd(plugin(sb).to_str().unwrap())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", plugin(sb).parent().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).expect(&text) };
    (out.status.code().unwrap_or(-1), v)
}

fn conf(sb: &Sandbox, name: &str, subnet: &str, runtime: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "netwright-cni", "subnet": subnet,
           "root": sb.root.join("cni"), "runtimeConfig": runtime})
}

const A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

#[test]
fn cni_add_check_del_gc_with_real_packets() {
    let sb = sandbox("cni");
    let (pa, nsa) = runtime_ns(&sb, "a");
    let (pb, nsb) = runtime_ns(&sb, "b");
    let (pa, pb) = (pa.to_str().unwrap().to_string(), pb.to_str().unwrap().to_string());
    // VERSION and STATUS.
    let (code, v) = cni(&sb, "VERSION", "", "", "", "", &json!({"cniVersion": "1.1.0"}));
    assert_eq!(code, 0);
    assert!(v["supportedVersions"].as_array().unwrap().contains(&json!("1.0.0")), "{v}");
    assert_eq!(cni(&sb, "STATUS", "", "", "", "", &conf(&sb, "cninet", "10.66.0.0/24", json!({}))).0, 0);
    // ADD: the network is made on first use; a static IP and MAC as Podman sends them; a port.
    let ports = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                       "aliases": {"cninet": ["web"]}});
    let args = "IgnoreUnknown=1;K8S_POD_NAME=webpod;IP=10.66.0.10;MAC=92:00:00:00:00:10";
    let (code, r) = cni(&sb, "ADD", A, &pa, "eth0", args, &conf(&sb, "cninet", "10.66.0.0/24", ports));
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.66.0.10/24", "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.66.0.1");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["interfaces"][0]["mac"], "92:00:00:00:00:10");
    assert_eq!(r["interfaces"][0]["sandbox"], pa.as_str());
    let (code, r) = cni(&sb, "ADD", B, &pb, "eth0", "", &conf(&sb, "cninet", "10.66.0.0/24", json!({})));
    assert_eq!(code, 0, "{r}");
    let b_ip = r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    // Real packets: b -> a, the alias through the embedded DNS, LAN -> the published port.
    let tcp = sb.script("tcp.py");
    let _server = Kill(Sandbox::in_ns_cmd(&nsa, "python3").args([&tcp, "serve", "80"]).spawn().unwrap());
    let send = |ns: &std::os::fd::OwnedFd, host: &str| {
        retry(|| {
            let out = Sandbox::in_ns_cmd(ns, "python3").args([&tcp, "send", host, "80", "hi"]).output().unwrap();
            if out.status.success() { Ok(String::new()) } else { Err(String::from_utf8_lossy(&out.stderr).into()) }
        })
    };
    send(&nsb, "10.66.0.10").expect("b -> a");
    let dnsq = sb.script("dnsq.py");
    let out = Sandbox::in_ns_cmd(&nsb, "python3").args([&dnsq, "web"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.66.0.10"), "alias web from b");
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("LAN -> 8080");
    // A second network for a (eth1), as runtimes add one network at a time.
    let (code, r) = cni(&sb, "ADD", A, &pa, "eth1", "", &conf(&sb, "second", "10.67.0.0/24", json!({})));
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["interfaces"][0]["name"], "eth1");
    // CHECK: fine, and then not, once an admin deletes a's interface.
    assert_eq!(cni(&sb, "CHECK", A, &pa, "eth0", "", &conf(&sb, "cninet", "10.66.0.0/24", json!({}))).0, 0);
    // DEL of the second network leaves the first.
    assert_eq!(cni(&sb, "DEL", A, &pa, "eth1", "", &conf(&sb, "second", "10.67.0.0/24", json!({}))).0, 0);
    send(&nsb, "10.66.0.10").expect("b -> a after DEL of a's second network");
    // DEL: everything of a goes, the port with it; DEL again is fine.
    let cninet = conf(&sb, "cninet", "10.66.0.0/24", json!({}));
    assert_eq!(cni(&sb, "DEL", A, &pa, "eth0", "", &cninet).0, 0);
    assert!(from_lan(&sb, "192.168.1.10", 8080, "tcp").is_err());
    assert_eq!(cni(&sb, "DEL", A, &pa, "eth0", "", &cninet).0, 0, "DEL of what is gone");
    // GC: b is not a valid attachment any more (its runtime crashed): released.
    let mut gc = cninet.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(cni(&sb, "GC", "", "", "", "", &gc).0, 0);
    let left = sb.netwright(["--root", sb.root.join("cni").to_str().unwrap(), "ps", "-a", "-q"]).output().unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "GC released b");
    // Down at once, deleted a moment later (the runtime's namespace stays the runtime's).
    let addrs = || {
        String::from_utf8_lossy(&Sandbox::in_ns_cmd(&nsb, "ip").args(["-br", "addr"]).output().unwrap().stdout)
            .into_owned()
    };
    let gone = eventually(std::time::Duration::from_secs(3), || !addrs().contains(&b_ip));
    assert!(gone, "b's address is gone: {}", addrs());
    // Errors: the spec's shape, with its codes.
    let (code, e) = cni(&sb, "ADD", A, &pa, "eth0", "", &json!({"cniVersion": "9.9.9", "name": "x"}));
    assert_eq!((code, e["code"].as_u64()), (1, Some(1)), "{e}");
    let (code, e) = cni(&sb, "ADD", A, &pa, "eth0", "IP=10.99.0.1", &cninet);
    assert_eq!(code, 1);
    assert!(e["msg"].as_str().unwrap().contains("outside the network's subnet"), "{e}");
}

#[test]
fn cni_dual_stack_result_and_packets() {
    let sb = sandbox("cni-v6");
    sb.enable_ipv6().unwrap();
    let (pa, nsa) = runtime_ns(&sb, "a");
    let pa = pa.to_str().unwrap().to_string();
    let mut c = conf(&sb, "dual", "10.93.0.0/24", json!({"ips": ["10.93.0.7/24", "fd00:93::7/64"]}));
    c["subnet6"] = json!("fd00:93::/64");
    let (code, r) = cni(&sb, "ADD", A, &pa, "eth0", "", &c);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ips"][1]["address"], "fd00:93::7/64", "{r}");
    assert_eq!(r["ips"][1]["gateway"], "fd00:93::1");
    assert!(r["routes"].as_array().unwrap().iter().any(|x| x["dst"] == "::/0"), "{r}");
    let tcp = sb.script("tcp.py");
    let _server = Kill(Sandbox::in_ns_cmd(&nsa, "python3").args([&tcp, "serve", "80"]).spawn().unwrap());
    let out = retry(|| {
        let o = sb.in_host_cmd("python3").args([&tcp, "send", "fd00:93::7", "80", "hi"]).output().unwrap();
        if o.status.success() { Ok(String::from_utf8_lossy(&o.stdout).into_owned()) } else { Err(String::new()) }
    });
    assert!(out.expect("host -> container over IPv6").contains("from fd00:93::1"));
    let (code, r) = cni(&sb, "DEL", A, &pa, "eth0", "", &c);
    assert_eq!(code, 0, "{r}");
}
