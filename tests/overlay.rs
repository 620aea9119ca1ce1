//! Overlay networks across hosts, with real packets: three host namespaces routed through
//! the LAN namespace (the underlay), etcd running there, VXLAN between the hosts.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// A sandbox with etcd and `n` hosts, each joined to the cluster.
fn cluster(label: &str, n: u8) -> (Sandbox, Vec<Host>, String) {
    let sb = sandbox(label);
    let url = sb.start_etcd().expect("etcd");
    let hosts: Vec<Host> = (1..=n).map(|i| sb.host(i).expect("host")).collect();
    for h in &hosts {
        let out = h.ok(&["cluster", "join", "--etcd", &url, "--name", &h.name]);
        assert!(out.contains(&format!("VTEP {}", h.addr)), "{out}");
    }
    (sb, hosts, url)
}

fn serve(h: &Host, name: &str, net: &str, extra: &[&str]) {
    let script = h.script("tcp.py");
    let mut args = vec!["run", "-d", "--name", name, "--network", net];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", &script, "serve", "7000"]);
    h.ok(&args);
}

fn ping(h: &Host, from: &str, ip: &str, size: u32) -> bool {
    let size = size.to_string();
    h.nw(&["exec", from, "--", "ping", "-c1", "-W2", "-M", "do", "-s", &size, ip]).status.success()
}

#[test]
fn three_hosts_share_a_network_names_mtu_and_egress() {
    let (sb, h, _) = cluster("ov3", 3);
    h[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.77.0.0/24", "ov"]);
    // 1. Created on h1, listed on h2 and h3 (Docker's "network not found" on a worker must not happen).
    for x in &h {
        let ls = x.ok(&["network", "ls"]);
        assert!(
            ls.lines().any(|l| l.contains(" ov ") && l.contains("overlay") && l.contains("swarm")),
            "{}: {ls}",
            x.name
        );
    }
    let ls = h[1].ok(&["cluster", "ls"]);
    for x in &h {
        assert!(ls.contains(&x.name) && ls.contains(&x.addr.to_string()), "{ls}");
    }
    for (i, x) in h.iter().enumerate() {
        let alias = format!("alias{}", i + 1);
        serve(x, &format!("s{}", i + 1), "ov", &["--network-alias", &alias]);
    }
    let ips: Vec<String> = h.iter().enumerate().map(|(i, x)| x.ip_of(&format!("s{}", i + 1))).collect();
    // One subnet across hosts, distinct addresses.
    for ip in &ips {
        assert!(ip.starts_with("10.77.0."), "{ip}");
    }
    assert!(ips[0] != ips[1] && ips[1] != ips[2] && ips[0] != ips[2], "{ips:?}");
    // --ip on any host; the same address on another host is refused, naming it in use.
    serve(&h[1], "fixed", "ov", &["--ip", "10.77.0.200"]);
    let (_, err) =
        h[2].fails(&["run", "-d", "--name", "clash", "--network", "ov", "--ip", "10.77.0.200", "--", "sleep", "9"]);
    assert!(err.contains("10.77.0.200 is already in use") && err.lines().count() == 1, "{err}");
    let reply = h[2].send_from("s3", "10.77.0.200", 7000, "fixed").expect("s3 -> fixed on h2");
    assert!(reply.ends_with(&format!("fixed from {}", ips[2])), "{reply}");
    // 2. TCP between every pair, by name and by alias; no NAT between them.
    for (i, a) in h.iter().enumerate() {
        for j in 0..3 {
            if i == j {
                continue;
            }
            let from = format!("s{}", i + 1);
            for target in [format!("s{}", j + 1), format!("alias{}", j + 1)] {
                let reply =
                    a.send_from(&from, &target, 7000, "hi").unwrap_or_else(|e| panic!("{from} -> {target}: {e}"));
                assert!(reply.ends_with(&format!("hi from {}", ips[i])), "{from} -> {target}: {reply}");
            }
            assert!(ping(a, &from, &ips[j], 56), "ping {from} -> {}", ips[j]);
        }
    }
    // 3. The seed's MTU exercise: the overlay's MTU is the underlay's minus 50 (20 outer
    //    IPv4 + 8 UDP + 8 VXLAN + 14 inner Ethernet): 1422 bytes of ICMP payload + 28 = 1450.
    assert!(ping(&h[0], "s1", &ips[1], 1422), "-s 1422 fits in 1450");
    assert!(!ping(&h[0], "s1", &ips[1], 1423), "-s 1423 does not");
    assert!(!ping(&h[0], "s1", &ips[1], 1472), "-s 1472 (fits a 1500 LAN) does not cross the overlay");
    let mtu = h[1].ok(&["exec", "s2", "--", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1450");
    // Egress from a container on h2 is masqueraded to h2's own address.
    let _server = Kill(
        sb.in_lan_cmd("python3").args([&sb.script("tcp.py"), "serve", "7100"]).stdout(Stdio::null()).spawn().unwrap(),
    );
    let reply = h[1].send_from("s2", "192.168.1.100", 7100, "out").expect("egress from h2");
    assert!(reply.ends_with("out from 192.168.2.10"), "{reply}");
    // Published ports work on the overlay as on a bridge: LAN → h3:8080 → s3.
    serve(&h[2], "web3", "ov", &["-p", "8080:7000"]);
    let reply = retry(|| common::from_lan(&sb, "192.168.3.10", 8080, "tcp")).expect("published port on h3");
    assert!(reply.contains("hi from"), "{reply}");
    // `network inspect --verbose` lists the peers with their VTEPs and endpoints.
    let doc: serde_json::Value = serde_json::from_str(&h[0].ok(&["network", "inspect", "--verbose", "ov"])).unwrap();
    let peers = doc[0]["Peers"].as_array().expect("Peers").clone();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(
        peers.iter().any(|p| p["Name"] == "h2"
            && p["IP"] == "192.168.2.10"
            && p["Endpoints"].as_array().unwrap().iter().any(|e| e["Name"] == "s2")),
        "{peers:?}"
    );
    // VXLAN from an address that is not a cluster VTEP (the LAN router) is dropped before it
    // reaches a bridge: the guard rule's counter says so.
    let guard = || -> u64 {
        let out = h[0].cmd("nft").args(["-j", "list", "ruleset"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r["comment"].as_str().is_some_and(|c| c.contains("not cluster VTEPs")))
            .flat_map(|r| r["expr"].as_array().unwrap().clone())
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum()
    };
    let before = guard();
    let spoof = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(3): s.sendto(bytes([8,0,0,0, 0,0x10,0,0]) + bytes(64), ('{}', 4789))",
        h[0].addr
    );
    assert!(sb.in_lan_cmd("python3").args(["-c", &spoof]).status().unwrap().success());
    assert!(eventually(Duration::from_secs(2), || guard() >= before + 3), "spoofed VXLAN was not dropped by the guard");
}

/// Every container's (MAC, IP) on `net` per host, from `inspect`.
fn endpoints(h: &Host, net: &str) -> Vec<(String, String)> {
    let ids = h.ok(&["ps", "-q"]);
    let mut v = Vec::new();
    for id in ids.split_whitespace() {
        let doc = h.inspect(id);
        if let Some(n) = doc["NetworkSettings"]["Networks"].get(net) {
            v.push((n["MacAddress"].as_str().unwrap().to_string(), n["IPAddress"].as_str().unwrap().to_string()));
        }
    }
    v
}

/// The permanent entries on a host's VXLAN devices: (MAC, IP, VTEP), as the kernel has them.
fn kernel_entries(h: &Host) -> std::collections::BTreeSet<(String, String, String)> {
    h.within(|| {
        let mut nl = netwright_engine::kernel::netlink::Netlink::open().unwrap();
        let mut out = std::collections::BTreeSet::new();
        for l in nl.links().unwrap().into_iter().filter(|l| l.name.starts_with("nwx")) {
            for e in nl.vxlan_entries(l.index).unwrap() {
                out.insert((netwright_engine::ipam::format_mac(e.mac), e.ip.to_string(), e.vtep.to_string()));
            }
        }
        out
    })
}

/// What a host's kernel should hold: every other host's endpoints behind that host's VTEP.
fn expected_entries(h: &[Host], me: usize, net: &str) -> std::collections::BTreeSet<(String, String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for (i, x) in h.iter().enumerate().filter(|(i, _)| *i != me) {
        let _ = i;
        for (mac, ip) in endpoints(x, net) {
            out.insert((mac, ip, x.addr.to_string()));
        }
    }
    out
}

fn sleeper(h: &Host, name: &str, net: &str) -> std::process::Output {
    h.nw(&["run", "-d", "--name", name, "--network", net, "--", "sleep", "300"])
}

#[test]
fn concurrent_runs_over_three_hosts_get_distinct_addresses_and_churn_leaves_exact_entries() {
    let (_sb, h, _) = cluster("ovchurn", 3);
    h[1].ok(&["network", "create", "-d", "overlay", "--subnet", "10.78.0.0/24", "ov"]);
    // 4. 20 concurrent runs spread over three hosts: distinct addresses.
    let children: Vec<_> = (0..20)
        .map(|i| h[i % 3].spawn_nw(&["run", "-d", "--name", &format!("c{i}"), "--network", "ov", "--", "sleep", "300"]))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut all: Vec<String> = h.iter().flat_map(|x| endpoints(x, "ov")).map(|(_, ip)| ip).collect();
    assert_eq!(all.len(), 20);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20, "every address once: {all:?}");
    // 7. Churn: 200 more containers come and go across the hosts; then every host's
    //    forwarding entries are exactly the other hosts' live endpoints.
    for round in 0..10 {
        for i in 0..20 {
            let name = format!("r{round}x{i}");
            let out = sleeper(&h[(i + round) % 3], &name, "ov");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        // Half of them go again, on whichever host holds them.
        for i in (0..20).step_by(2) {
            h[(i + round) % 3].ok(&["rm", "-f", &format!("r{round}x{i}")]);
        }
    }
    for (i, x) in h.iter().enumerate() {
        let want = expected_entries(&h, i, "ov");
        assert!(
            eventually(Duration::from_secs(5), || kernel_entries(x) == want),
            "{}: {:?} != {:?}",
            x.name,
            kernel_entries(x),
            want
        );
        let doctor = x.ok(&["doctor"]);
        assert!(doctor.contains("overlay-entries") && !doctor.contains("FAIL"), "{doctor}");
    }
    assert_eq!(expected_entries(&h, 0, "ov").len() + endpoints(&h[0], "ov").len(), 20 + 100);
    // In use on other hosts: refused, naming them. Once empty everywhere: removed from every
    // host, with its devices.
    let (_, err) = h[0].fails(&["network", "rm", "ov"]);
    assert!(err.contains("in use"), "{err}");
    let (_, err) = {
        // h1's own containers gone, the others' not: the error names the other hosts.
        let ids = h[0].ok(&["ps", "-aq"]);
        let mut args = vec!["rm", "-f"];
        args.extend(ids.split_whitespace());
        h[0].ok(&args);
        h[0].fails(&["network", "rm", "ov"])
    };
    assert!(err.contains("on host(s) h2, h3") && err.lines().count() == 1, "{err}");
    for x in &h {
        let ids = x.ok(&["ps", "-aq"]);
        let mut args = vec!["rm", "-f"];
        args.extend(ids.split_whitespace());
        if args.len() > 2 {
            x.ok(&args);
        }
    }
    h[0].ok(&["network", "rm", "ov"]);
    for x in &h {
        assert!(
            eventually(Duration::from_secs(5), || !x.ok(&["network", "ls"]).contains(" ov ")
                && !x.links().iter().any(|l| l.name.starts_with("nwx") || l.name.starts_with("nwb"))),
            "{}: ov or its devices outlived its removal",
            x.name
        );
    }
}

#[test]
fn a_dead_host_vanishes_from_its_peers_and_comes_back() {
    let (sb, h, _) = cluster("ovdead", 3);
    h[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.79.0.0/24", "ov"]);
    for (i, x) in h.iter().enumerate() {
        serve(x, &format!("s{}", i + 1), "ov", &[]);
    }
    h[0].send_from("s1", "s3", 7000, "hi").expect("s1 -> s3 before");
    let before = kernel_entries(&h[0]);
    assert_eq!(before.len(), 2);
    // 5. h3 dies: its processes killed, its link cut.
    let inode = netwright_engine::kernel::netns::inode(&sb.dir.join("ns").join("h3")).unwrap();
    kill_in_namespace(inode);
    sb.in_lan_cmd("ip").args(["link", "set", "lan3", "down"]).status().unwrap();
    // Within its lease (10 s), its endpoint and name are gone from h1; h1 ↔ h2 keep working.
    assert!(
        eventually(Duration::from_secs(15), || kernel_entries(&h[0]).len() == 1),
        "h3's entry outlived its lease: {:?}",
        kernel_entries(&h[0])
    );
    assert!(h[0].send_once("s1", "s3", 7000, "hi").is_err(), "s3's name is gone");
    h[0].send_from("s1", "s2", 7000, "hi").expect("s1 -> s2 still works");
    let ls = h[1].ok(&["cluster", "ls"]);
    assert!(ls.lines().any(|l| l.contains("h3") && l.contains("down")), "h3 is listed as down: {ls}");
    // It comes back: the next command there starts its agent, which registers again.
    sb.in_lan_cmd("ip").args(["link", "set", "lan3", "up"]).status().unwrap();
    serve(&h[2], "s3b", "ov", &[]);
    h[0].send_from("s1", "s3b", 7000, "hi").expect("s1 -> the new s3b");
    let ls = h[1].ok(&["cluster", "ls"]);
    assert!(ls.lines().any(|l| l.contains("h3") && l.contains(" up")), "h3 is up again: {ls}");
}

/// SIGKILLs every process in the network namespace with this inode (a host "dying").
fn kill_in_namespace(inode: u64) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
        if netwright_engine::kernel::netns::inode(&ns) == Some(inode) {
            // SAFETY: plain kill(2) of a process in the test's own sandbox namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn etcd_away_fails_fast_keeps_the_datapath_and_never_duplicates() {
    let (sb, h, _) = cluster("ovaway", 2);
    h[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.80.0.0/24", "ov"]);
    serve(&h[0], "aa", "ov", &[]);
    serve(&h[1], "bb", "ov", &[]);
    h[1].send_from("bb", "aa", 7000, "hi").expect("b -> a");
    // 6. h2 loses etcd (its packets to 2379 dropped in the LAN), not its peers.
    let nft = |rule: &str| {
        let ok = sb.in_lan_cmd("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(rule.as_bytes())?;
            c.wait()
        });
        assert!(ok.unwrap().success(), "nft {rule}");
    };
    nft(
        "table inet cut {\n chain guard {\n type filter hook input priority 0;\n ip saddr 192.168.2.10 tcp dport 2379 drop\n }\n}\n",
    );
    let started = std::time::Instant::now();
    let (code, err) = h[1].fails(&["run", "-d", "--name", "late", "--network", "ov", "--", "sleep", "300"]);
    assert!(started.elapsed() < Duration::from_secs(8), "fails fast: {:?}", started.elapsed());
    assert!(code != 0 && err.contains("etcd") && err.contains("unreachable") && err.lines().count() == 1, "{err}");
    // Its running container keeps talking to its peer.
    h[1].send_from("bb", "aa", 7000, "still").expect("b -> a while etcd is away");
    // Meanwhile h1 hands out addresses; when h2 is back, nothing is duplicated.
    for i in 0..3 {
        h[0].ok(&["run", "-d", "--name", &format!("x{i}"), "--network", "ov", "--", "sleep", "300"]);
    }
    nft("delete table inet cut");
    serve(&h[1], "late", "ov", &[]);
    let mut ips: Vec<String> = h.iter().flat_map(|x| endpoints(x, "ov")).map(|(_, ip)| ip).collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!((n, ips.len()), (6, 6), "{ips:?}");
    h[0].send_from("aa", "late", 7000, "hi").unwrap_or_else(|e| panic!("a -> late: {e}"));
}

#[test]
fn a_killed_agent_is_replaced_and_converges_and_doctor_sees_mtu_mismatch() {
    let (_sb, h, _) = cluster("ovkill", 2);
    h[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.81.0.0/24", "ov"]);
    serve(&h[0], "aa", "ov", &[]);
    serve(&h[1], "bb", "ov", &[]);
    // 8. kill -9 of h2's agent; h1 changes meanwhile; the next command on h2 converges.
    let pid: i32 = std::fs::read_to_string(h[1].root.join("overlay.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: plain kill(2) of the sandbox host's agent, by the pid it wrote.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    serve(&h[0], "a2", "ov", &[]);
    h[0].ok(&["rm", "-f", "aa"]);
    h[1].ok(&["ps"]);
    let want = expected_entries(&h, 1, "ov");
    assert!(
        eventually(Duration::from_secs(5), || kernel_entries(&h[1]) == want),
        "{:?} != {want:?}",
        kernel_entries(&h[1])
    );
    h[1].send_from("bb", "a2", 7000, "hi").expect("b -> a2");
    // kill -9 of `run` at random points on h1: the next command there finishes or undoes
    // each, and h2's entries are again exactly h1's live endpoints.
    let mut seed = 0x9e3779b9u32;
    for i in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let mut child =
            h[0].spawn_nw(&["run", "-d", "--name", &format!("k{i}"), "--network", "ov", "--", "sleep", "300"]);
        std::thread::sleep(Duration::from_millis((seed % 40) as u64));
        let _ = child.kill();
        let _ = child.wait();
    }
    h[0].ok(&["ps", "-a"]);
    h[0].ok(&["reconcile"]);
    let want = expected_entries(&h, 1, "ov");
    assert!(
        eventually(Duration::from_secs(5), || kernel_entries(&h[1]) == want),
        "{:?} != {want:?}",
        kernel_entries(&h[1])
    );
    // trace explains the path across hosts: the bridge, the VXLAN entry, the underlay.
    let t = h[1].ok(&["trace", "bb", "a2:7000"]);
    assert!(
        t.contains("VNI") && t.contains("dst 192.168.1.10") && t.contains("decapsulated") && t.contains("DELIVERED"),
        "{t}"
    );
    // An entry deleted by hand is drift: doctor says so, reconcile writes it back.
    let vx = h[1].links().into_iter().find(|l| l.name.starts_with("nwx")).unwrap().name;
    let a2 = h[0].ip_of("a2");
    let (_, ip, _) = want.iter().find(|(_, ip, _)| *ip == a2).unwrap().clone();
    h[1].cmd("ip").args(["neigh", "del", &ip, "dev", &vx]).status().unwrap();
    let doctor = h[1].nw(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success() && text.contains("1 missing"), "{text}");
    let t = h[1].nw(&["trace", "bb", "a2:7000"]);
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(text.contains("no forwarding entry") && text.contains("netwright reconcile"), "{text}");
    let out = h[1].ok(&["reconcile"]);
    assert!(out.contains("rewrote 1 overlay forwarding"), "{out}");
    assert_eq!(kernel_entries(&h[1]), want);
    // A container at 1500 behind a 1450 VXLAN: doctor names it.
    h[1].ok(&["exec", "bb", "--", "ip", "link", "set", "eth0", "mtu", "1500"]);
    let out = h[1].nw(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("overlay-mtu") && text.contains("bb's eth0 has MTU 1500"), "{text}");
}

#[test]
fn overlay_bad_input_is_one_clear_line() {
    let sb = sandbox("ovbad");
    // Not in a cluster.
    let (code, err) = sb.fails(&["network", "create", "-d", "overlay", "ov"]);
    assert!(code != 0 && err.contains("cluster join") && err.lines().count() == 1, "{err}");
    let url = sb.start_etcd().unwrap();
    let h = sb.host(1).unwrap();
    let (_, err) = h.fails(&["cluster", "join", "--etcd", &url, "--advertise", "10.1.1.1"]);
    assert!(err.contains("10.1.1.1 is not an address of this host") && err.lines().count() == 1, "{err}");
    let (_, err) = h.fails(&["cluster", "join", "--etcd", "http://192.168.1.1:2999"]);
    assert!(err.contains("does not answer") && err.lines().count() == 1, "{err}");
    let (_, err) = h.fails(&["cluster", "ls"]);
    assert!(err.contains("cluster join"), "not joined yet: {err}");
    h.ok(&["--etcd", &url, "network", "ls"]);
    assert!(h.ok(&["cluster", "ls"]).contains(&h.addr.to_string()), "--etcd on any command joins");
    h.ok(&["network", "create", "-d", "overlay", "--subnet", "10.82.0.0/24", "--opt", "vni=5000", "ov"]);
    for (args, want) in [
        (vec!["--opt", "encrypted=true", "enc"], "no IPsec"),
        (vec!["--opt", "vni=5000", "ov2"], "VNI 5000 is used by overlay network ov"),
        (vec!["--opt", "vni=0", "ov2"], "vni=0"),
        (vec!["--subnet", "10.82.0.128/25", "ov2"], "overlaps"),
        (vec!["--subnet", "10.83.0.0/24", "ov"], "already exists"),
        (vec!["--opt", "bogus=1", "ov2"], "unknown network option"),
    ] {
        let mut full = vec!["network", "create", "-d", "overlay"];
        full.extend(args);
        let (code, err) = h.fails(&full);
        assert!(code != 0 && err.contains(want) && err.lines().count() == 1, "{full:?}: {err}");
    }
    let (_, err) = h.fails(&["run", "--rm", "--network", "ov", "--ip", "10.82.0.1", "--", "true"]);
    assert!(err.lines().count() == 1, "{err}");
    assert_eq!(h.ok(&["network", "ls", "-q"]).lines().count(), 2, "bridge and ov only");
    // The VXLAN port held by a process: one line naming it, and nothing left claimed.
    let _holder = Kill(
        h.cmd("python3")
            .args(["-c", "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 4790)); print('bound', flush=True); time.sleep(300)"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut holder = _holder;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.0.stdout.as_mut().unwrap()), &mut line).unwrap();
    h.ok(&["network", "create", "-d", "overlay", "--subnet", "10.84.0.0/24", "--opt", "port=4790", "busy"]);
    let (_, err) = h.fails(&["run", "--rm", "--network", "busy", "--", "true"]);
    assert!(
        err.contains("UDP port 4790")
            && err.contains(&format!("python3 (pid {})", holder.0.id()))
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(h.ok(&["ps", "-a", "-q"]).trim().is_empty(), "no container left behind");
}

/// Past one bridge on a host: an overlay network's endpoints beyond a bridge's share go on a
/// segment bridge (as on bridge networks); peers reach them through this host's bridge
/// (their records carry its MAC, the host routes to the segment) and they reach peers.
/// When one of two segment endpoints goes, the other, sharing that MAC, stays reachable.
#[test]
fn an_overlay_network_outgrows_one_bridge_on_a_host() {
    let (sb, h, _) = cluster("ovseg", 2);
    h[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.78.0.0/20", "big"]);
    serve(&h[1], "far", "big", &[]);
    let far = h[1].ip_of("far");
    // attach mode keeps 502 endpoints cheap: 500 fill the bridge, 2 go on a segment.
    const N: usize = 502;
    let mut eps: Vec<(std::os::fd::OwnedFd, String, String)> = Vec::new();
    let ids: Vec<usize> = (0..N).collect();
    for chunk in ids.chunks(4) {
        let children: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let (path, fd) = runtime_ns(&sb, &format!("s{i}"));
                let child = h[0]
                    .netwright_cmd(&["attach", path.to_str().unwrap(), "--name", &format!("s{i}"), "--network", "big"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawning netwright attach");
                (fd, child)
            })
            .collect();
        for (fd, child) in children {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "attach: {}", String::from_utf8_lossy(&o.stderr));
            let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("attach prints inspect");
            let net = &doc["NetworkSettings"]["Networks"]["big"];
            let ip = net["IPAddress"].as_str().unwrap().to_string();
            eps.push((fd, ip, net["Netwright"]["Bridge"].as_str().unwrap_or_default().to_string()));
        }
    }
    let (main, seg) = (&eps[0].2, &eps[N - 1].2);
    assert!(!seg.is_empty() && main != seg, "the last endpoints are on a segment bridge: {main} / {seg}");
    assert_eq!(eps.iter().filter(|e| &e.2 == seg).count(), 2);
    let script = sb.script("tcp.py");
    let serve_in = |fd: &std::os::fd::OwnedFd| {
        Sandbox::in_ns_cmd(fd, "python3").args([&script, "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap()
    };
    let send_in = |fd: &std::os::fd::OwnedFd, to: &str| {
        let o = Sandbox::in_ns_cmd(fd, "python3").args([&script, "send", to, "7000", "hi"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let mut servers = vec![serve_in(&eps[N - 2].0), serve_in(&eps[N - 1].0)];
    // The peer learns them from etcd through the agents: keep asking for a while.
    for (_, ip, _) in &eps[N - 2..] {
        let reply = h[1].send_from("far", ip, 7000, "hi").unwrap_or_else(|e| panic!("far -> {ip} on a segment: {e}"));
        assert!(reply.ends_with(&format!("hi from {far}")), "no NAT on the way in: {reply}");
    }
    let back = send_in(&eps[N - 1].0, &far);
    assert!(back.ends_with(&format!("hi from {}", eps[N - 1].1)), "segment -> far, no NAT: {back:?}");
    let plain = send_in(&eps[0].0, &far);
    assert!(plain.ends_with(&format!("hi from {}", eps[0].1)), "bridge -> far: {plain:?}");
    // Egress from the segment is masqueraded to the host's own address, as from the bridge.
    let _lan = Kill(sb.in_lan_cmd("python3").args([&script, "serve", "7100"]).stdout(Stdio::null()).spawn().unwrap());
    let out = || {
        let o = Sandbox::in_ns_cmd(&eps[N - 1].0, "python3")
            .args([&script, "send", "192.168.1.100", "7100", "out"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert!(eventually(Duration::from_secs(5), || !out().is_empty()), "segment -> LAN");
    assert!(out().ends_with(&format!("out from {}", h[0].addr)), "masqueraded: {}", out());
    agrees(&h[0]).expect("doctor agrees with a segmented overlay network");
    // One of the two goes: the other keeps the shared forwarding entry on the peer.
    h[0].ok(&["detach", &format!("s{}", N - 1)]);
    let gone = eps[N - 1].1.clone();
    assert!(
        eventually(Duration::from_secs(10), || h[1].send_once("far", &gone, 7000, "x").is_err()),
        "the detached endpoint is unreachable"
    );
    std::thread::sleep(Duration::from_secs(2)); // past the agents' propagation of the departure
    let stay = &eps[N - 2].1;
    let reply = h[1].send_once("far", stay, 7000, "still").unwrap_or_else(|e| panic!("far -> {stay} after: {e}"));
    assert!(reply.ends_with(&format!("still from {far}")), "{reply}");
    for s in &mut servers {
        s.kill().ok();
        s.wait().ok();
    }
}
