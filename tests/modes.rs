//! Network modes (host, none, container:NAME) and the macvlan driver, with real packets.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn host_mode_shares_the_host_network() {
    let sb = sandbox("host");
    let script = sb.script("tcp.py");
    sb.ok(&["run", "-d", "--name", "hh", "--network", "host", "--", "python3", &script, "serve", "7400"]);
    // The server bound in the container is a server of the host: the LAN reaches it on eth0.
    let r = retry(|| from_lan(&sb, "192.168.1.10", 7400, "tcp")).expect("LAN -> host-mode container");
    assert!(r.contains("hi from 192.168.1."), "{r}");
    let v = sb.inspect("hh");
    assert_eq!(v["HostConfig"]["NetworkMode"], "host");
    assert!(sb.ok(&["ps"]).lines().any(|l| l.contains("hh") && l.trim_end().ends_with("host")));
    // It sees the host's interfaces (eth0 of the sandbox host), not a container's.
    let links = sb.ok(&["exec", "hh", "--", "ip", "-o", "link"]);
    assert!(links.contains("eth0@") && links.contains("lo:"), "{links}");
    let (_, err) = sb.fails(&["run", "--network", "host", "-p", "8080:80", "--", "true"]);
    assert!(err.contains("-p cannot be used with --network host"), "{err}");
}

#[test]
fn none_mode_has_only_lo_and_reaches_nothing() {
    let sb = sandbox("none");
    sb.ok(&["run", "-d", "--name", "other", "--", "sleep", "300"]); // the default bridge (and its gateway) exists
    let out = sb.ok(&["run", "--rm", "--network", "none", "--", "ip", "-o", "link"]);
    let names: Vec<&str> = out.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, vec!["lo"], "{out}");
    assert!(out.contains("UP"), "lo is up: {out}");
    let script = sb.script("tcp.py");
    let out = sb.nw(&["run", "--rm", "--network", "none", "--", "python3", &script, "send", "172.17.0.1", "7000", "x"]);
    assert!(!out.status.success());
    // Nothing reaches it either: a server inside is alone.
    sb.ok(&["run", "-d", "--name", "lonely", "--network", "none", "--", "python3", &script, "serve", "7000"]);
    assert_eq!(sb.inspect("lonely")["HostConfig"]["NetworkMode"], "none");
    assert_eq!(sb.inspect("lonely")["NetworkSettings"]["Networks"].as_object().unwrap().len(), 0);
}

#[test]
fn container_mode_shares_the_owners_namespace() {
    let sb = sandbox("join");
    sb.ok(&["run", "-d", "--name", "owner", "--", "python3", "-m", "http.server", "7600", "--bind", "127.0.0.1"]);
    let owner_ip = sb.ip_of("owner");
    let get = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:7600/', timeout=3).status)";
    // The sidecar reaches the owner's 127.0.0.1 server: same namespace, same loopback.
    let mut ok = false;
    for _ in 0..50 {
        let out = sb.nw(&["run", "--rm", "--network", "container:owner", "--", "python3", "-c", get]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "200" {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "sidecar -> owner's 127.0.0.1:7600");
    sb.ok(&["run", "-d", "--name", "side", "--network", "container:owner", "--", "sleep", "300"]);
    let addr = sb.ok(&["exec", "side", "--", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{owner_ip}/")), "same IP as the owner: {addr}");
    let v = sb.inspect("side");
    assert!(v["HostConfig"]["NetworkMode"].as_str().unwrap().starts_with("container:"));
    assert_eq!(v["Config"]["Hostname"], sb.inspect("owner")["Config"]["Hostname"]);
    // Invalid combinations.
    for (args, expect) in [
        (vec!["-p", "80:80"], "-p cannot be used with --network container:"),
        (vec!["--ip", "172.17.0.50"], "--ip cannot be used"),
        (vec!["--hostname", "x1"], "--hostname cannot be used"),
    ] {
        let mut full = vec!["run", "--rm", "--network", "container:owner"];
        full.extend(args);
        full.extend(["--", "true"]);
        let (_, err) = sb.fails(&full);
        assert!(err.contains(expect), "{err}");
    }
    let (_, err) = sb.fails(&["run", "--rm", "--network", "container:ghost", "--", "true"]);
    assert!(err.contains("no such container: ghost"), "{err}");
    // The owner stops: the sidecar keeps running with only lo, as with Docker.
    sb.ok(&["stop", "-t", "1", "owner"]);
    let links = sb.ok(&["exec", "side", "--", "ip", "-o", "link"]);
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, vec!["lo"], "{links}");
    let (_, err) = sb.fails(&["run", "--rm", "--network", "container:owner", "--", "true"]);
    assert!(err.contains("is not running"), "{err}");
}

#[test]
fn macvlan_containers_sit_on_the_lan_without_nat() {
    let sb = sandbox("macvlan");
    let script = sb.script("tcp.py");
    let _lan = Kill(sb.in_lan_cmd("python3").args([&script, "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap());
    sb.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "--subnet",
        "192.168.1.0/24",
        "--gateway",
        "192.168.1.1",
        "--ip-range",
        "192.168.1.192/27",
        "lan",
    ]);
    sb.ok(&["run", "-d", "--name", "m1", "--network", "lan", "--", "python3", &script, "serve", "7000"]);
    sb.ok(&["run", "-d", "--name", "m2", "--network", "lan", "--", "python3", &script, "serve", "7000"]);
    let (m1, m2) = (sb.ip_of("m1"), sb.ip_of("m2"));
    assert_eq!(m1, "192.168.1.192");
    // The LAN reaches the container at its own address, and sees it unNATed.
    let r = retry(|| from_lan(&sb, &m1, 7000, "tcp")).expect("LAN -> macvlan container");
    assert!(r.ends_with("hi from 192.168.1.1") || r.contains("from 192.168.1."), "{r}");
    let r = sb.send_from("m1", "192.168.1.100", 7000, "out").expect("macvlan -> LAN server");
    assert!(r.ends_with(&format!("from {m1}")), "no NAT: {r}");
    sb.send_from("m1", &m2, 7000, "peer").expect("m1 -> m2");
    // The classic catch: the host cannot reach its own macvlan containers...
    assert!(from_host(&sb, &m1, 7000, "tcp").is_err(), "host -> macvlan must fail without a shim");
    let net: serde_json::Value = serde_json::from_str(&sb.ok(&["network", "inspect", "lan"])).unwrap();
    assert!(net[0]["Netwright"]["Notes"][0].as_str().unwrap().contains("host_shim"));
    // ...until it has a shim of its own.
    sb.ok(&["rm", "-f", "m1", "m2"]);
    sb.ok(&["network", "rm", "lan"]);
    sb.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "-o",
        "host_shim=true",
        "--subnet",
        "192.168.1.0/24",
        "--gateway",
        "192.168.1.1",
        "--ip-range",
        "192.168.1.192/27",
        "lan",
    ]);
    sb.ok(&["run", "-d", "--name", "m3", "--network", "lan", "--", "python3", &script, "serve", "7000"]);
    let m3 = sb.ip_of("m3");
    retry(|| from_host(&sb, &m3, 7000, "tcp")).expect("host -> macvlan through the shim");
    let net: serde_json::Value = serde_json::from_str(&sb.ok(&["network", "inspect", "lan"])).unwrap();
    let shim = net[0]["Netwright"]["HostShim"]["Interface"].as_str().unwrap().to_string();
    assert_eq!(net[0]["Netwright"]["HostShim"]["Address"], "192.168.1.223");
    sb.ok(&["rm", "-f", "m3"]);
    sb.ok(&["network", "rm", "lan"]);
    assert!(!sb.host_links().iter().any(|l| l.name == shim), "shim removed with the network");
}

#[test]
fn vlan_parent_mtu_and_macvlan_errors() {
    let sb = sandbox("vlan");
    // Does this kernel do 802.1Q at all? (Some build it out.) Probe in a scratch device.
    let vlan_ok = sb
        .in_host_cmd("ip")
        .args(["link", "add", "link", "eth0", "name", "probe.7", "type", "vlan", "id", "7"])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    let _ = sb.in_host_cmd("ip").args(["link", "del", "probe.7"]).stderr(Stdio::null()).status();
    let create = [
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0.10",
        "--subnet",
        "10.80.0.0/24",
        "--opt",
        "mtu=1400",
        "v10",
    ];
    if vlan_ok {
        sb.ok(&create);
        let link = sb.host_links().into_iter().find(|l| l.name == "eth0.10").expect("VLAN sub-interface created");
        assert_eq!(link.kind.as_deref(), Some("vlan"));
        let mtu = sb.ok(&["run", "--rm", "--network", "v10", "--", "cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(mtu.trim(), "1400", "--opt mtu applies to the macvlan");
        sb.ok(&["network", "rm", "v10"]);
        assert!(!sb.host_links().iter().any(|l| l.name == "eth0.10"), "VLAN sub-interface removed: netwright made it");
    } else {
        let (_, err) = sb.fails(&create);
        assert!(err.contains("no 802.1Q support"), "{err}");
        assert!(!sb.host_links().iter().any(|l| l.name == "eth0.10"));
        assert!(!sb.ok(&["network", "ls"]).contains("v10"), "nothing recorded");
    }
    // MTU on a macvlan network reaches the container's eth0.
    sb.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "--subnet",
        "10.83.0.0/24",
        "--opt",
        "mtu=1400",
        "m14",
    ]);
    let mtu = sb.ok(&["run", "--rm", "--network", "m14", "--", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1400", "--opt mtu applies to the macvlan");
    // MTU on a bridge network reaches the bridge, the host veth and the container's eth0.
    sb.ok(&["network", "create", "small", "--subnet", "10.81.0.0/24", "--opt", "mtu=1400"]);
    sb.ok(&["run", "-d", "--name", "s1", "--network", "small", "--", "sleep", "300"]);
    assert_eq!(sb.ok(&["exec", "s1", "--", "cat", "/sys/class/net/eth0/mtu"]).trim(), "1400");
    let v = sb.inspect("s1");
    let veth = v["NetworkSettings"]["Networks"]["small"]["Netwright"]["HostInterface"].as_str().unwrap().to_string();
    let bridge = v["NetworkSettings"]["Networks"]["small"]["Netwright"]["Bridge"].as_str().unwrap().to_string();
    for l in sb.host_links().into_iter().filter(|l| l.name == veth || l.name == bridge) {
        assert_eq!(l.mtu, 1400, "{}", l.name);
    }
    for (args, expect) in [
        (vec!["-d", "macvlan", "--subnet", "10.82.0.0/24", "x1"], "need a parent interface"),
        (vec!["-d", "macvlan", "-o", "parent=eth0", "x1"], "give its --subnet"),
        (vec!["-d", "macvlan", "-o", "parent=eth9", "--subnet", "10.82.0.0/24", "x1"], "eth9 does not exist"),
        (
            vec!["-d", "macvlan", "-o", "parent=eth0", "-o", "host_shim=true", "--subnet", "10.82.0.0/24", "x1"],
            "needs --ip-range",
        ),
        (
            vec!["-d", "macvlan", "-o", "parent=eth0", "-o", "macvlan_mode=odd", "--subnet", "10.82.0.0/24", "x1"],
            "macvlan modes",
        ),
        (
            vec!["-d", "macvlan", "-o", "parent=eth0", "-o", "icc=false", "--subnet", "10.82.0.0/24", "x1"],
            "unknown network option",
        ),
    ] {
        let mut full = vec!["network", "create"];
        full.extend(args);
        let (_, err) = sb.fails(&full);
        assert!(err.contains(expect), "{expect}: {err}");
        assert_eq!(err.lines().count(), 1);
    }
    sb.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "--subnet",
        "192.168.1.0/24",
        "--ip-range",
        "192.168.1.200/29",
        "lan",
    ]);
    let (_, err) = sb.fails(&["run", "--rm", "--network", "lan", "-p", "80:80", "--", "true"]);
    assert!(err.contains("macvlan network"), "{err}");
}

#[test]
fn a_released_macvlan_address_can_be_taken_again_at_once() {
    // The MAC comes from the IP, and the kernel destroys a released namespace's devices
    // later: the old macvlan must not keep that MAC busy on the parent meanwhile.
    let sb = sandbox("macvlan-reuse");
    sb.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "--subnet",
        "192.168.1.0/24",
        "--gateway",
        "192.168.1.1",
        "lan",
    ]);
    for _ in 0..10 {
        sb.ok(&["run", "-d", "--name", "mv", "--network", "lan", "--ip", "192.168.1.60", "--", "sleep", "60"]);
        sb.ok(&["rm", "-f", "mv"]);
    }
}
