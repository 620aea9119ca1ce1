//! The foundation, proved with real packets and real kernel state in sandboxes.
//! Each test builds its own sandbox, so they run in parallel.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

fn serve(sb: &Sandbox, name: &str, net: &str, port: u16) {
    let script = sb.script("tcp.py");
    let port = port.to_string();
    let mut args = vec!["run", "-d", "--name", name];
    if !net.is_empty() {
        args.extend(["--network", net]);
    }
    args.extend(["--", "python3", &script, "serve", &port]);
    sb.ok(&args);
}

#[test]
fn two_containers_exchange_tcp_both_ways_by_ip() {
    let sb = sandbox("tcp");
    sb.ok(&["network", "create", "n1", "--subnet", "10.31.0.0/24"]);
    serve(&sb, "alpha", "n1", 7000);
    serve(&sb, "beta", "n1", 7000);
    let (a, b) = (sb.ip_of("alpha"), sb.ip_of("beta"));
    assert!(a.starts_with("10.31.0.") && b.starts_with("10.31.0.") && a != b);
    let reply = sb.send_from("beta", &a, 7000, "ping").expect("beta -> alpha");
    // The reply names the server's hostname and the client address it saw: no NAT on a bridge.
    let alpha_host = sb.inspect("alpha")["Config"]["Hostname"].as_str().unwrap().to_string();
    assert_eq!(reply, format!("{alpha_host} ping from {b}"));
    let reply = sb.send_from("alpha", &b, 7000, "pong").expect("alpha -> beta");
    assert!(reply.ends_with(&format!("pong from {a}")), "{reply}");
}

#[test]
fn container_reaches_its_gateway() {
    let sb = sandbox("gw");
    // A server in the host namespace, listening on every address (the bridge's included).
    let mut server = sb
        .in_host_cmd("python3")
        .args([&sb.script("tcp.py"), "serve", "7100"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sb.ok(&["run", "-d", "--name", "c1", "--", "sleep", "60"]);
    let gw = sb.inspect("c1")["NetworkSettings"]["Gateway"].as_str().unwrap().to_string();
    assert_eq!(gw, "172.17.0.1", "default network is 172.17.0.0/16 in a fresh sandbox");
    let reply = sb.send_from("c1", &gw, 7100, "hello-gateway");
    server.kill().ok();
    server.wait().ok();
    let ip = sb.ip_of("c1");
    assert!(reply.expect("c1 -> gateway").ends_with(&format!("hello-gateway from {ip}")));
}

/// A Linux bridge left to itself takes the lowest MAC among its ports and changes it when
/// that port leaves; a container that cached the gateway's MAC then sends into the void
/// until its neighbour entry is probed again. netwright's bridges have an address of their
/// own: the container that stays keeps reaching its gateway at once, with its cached entry.
#[test]
fn the_gateway_keeps_its_mac_while_containers_come_and_go() {
    let sb = sandbox("gwmac");
    sb.ok(&["network", "create", "gm", "--subnet", "10.33.0.0/24"]);
    let bridge_mac = |sb: &Sandbox| {
        let l = sb.host_links().into_iter().find(|l| l.kind.as_deref() == Some("bridge") && l.name.starts_with("nwb"));
        l.and_then(|l| l.mac).expect("the network's bridge")
    };
    let mut ns = Vec::new();
    for i in 0..6 {
        let (path, fd) = runtime_ns(&sb, &format!("gm{i}"));
        sb.ok(&["attach", path.to_str().unwrap(), "--name", &format!("gm{i}"), "--network", "gm"]);
        ns.push(fd);
    }
    let before = bridge_mac(&sb);
    let last = ns.last().unwrap();
    let ping = |fd| Sandbox::in_ns_cmd(fd, "ping").args(["-c1", "-W1", "10.33.0.1"]).output().unwrap().status.success();
    assert!(ping(last), "the last container reaches its gateway");
    let neigh = || {
        let out = Sandbox::in_ns_cmd(last, "ip").args(["neigh", "show", "10.33.0.1"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mac_text = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    assert!(neigh().contains(&mac_text(before)), "cached gateway entry: {}", neigh());
    // Every other port leaves (one of them had the lowest MAC, five times in six).
    for i in 0..5 {
        sb.ok(&["detach", &format!("gm{i}")]);
    }
    // detach leaves a released pair to the runtime's cleanup for a moment; the ports are
    // gone from the bridge once only the last container's veth is left.
    let ports = |sb: &Sandbox| {
        let links = sb.host_links();
        let bridge =
            links.iter().find(|l| l.kind.as_deref() == Some("bridge") && l.name.starts_with("nwb")).map(|l| l.index);
        links.iter().filter(|l| l.master.is_some() && l.master == bridge).count()
    };
    assert!(eventually(Duration::from_secs(10), || ports(&sb) == 1), "{} ports left", ports(&sb));
    assert_eq!(mac_text(bridge_mac(&sb)), mac_text(before), "the bridge kept its address");
    assert!(neigh().contains(&mac_text(before)), "still cached: {}", neigh());
    assert!(ping(last), "the cached gateway MAC still reaches the gateway");
    sb.ok(&["detach", "gm5"]);
}

/// A bridge whose address is not its own (made by an older netwright, or changed by hand)
/// gets its own on the next attach, announced by a gratuitous ARP: a container that had
/// the old one cached reaches its gateway at once.
#[test]
fn a_bridge_without_its_own_mac_gets_it_and_announces_it() {
    let sb = sandbox("gwpin");
    sb.ok(&["network", "create", "gp", "--subnet", "10.34.0.0/24"]);
    let (p1, ns1) = runtime_ns(&sb, "gp1");
    sb.ok(&["attach", p1.to_str().unwrap(), "--name", "gp1", "--network", "gp"]);
    let bridge = sb
        .host_links()
        .into_iter()
        .find(|l| l.kind.as_deref() == Some("bridge") && l.name.starts_with("nwb"))
        .expect("the network's bridge");
    let odd = "02:00:00:00:00:01";
    assert!(sb.in_host_cmd("ip").args(["link", "set", &bridge.name, "address", odd]).status().unwrap().success());
    let ping = || Sandbox::in_ns_cmd(&ns1, "ping").args(["-c1", "-W1", "10.34.0.1"]).output().unwrap().status.success();
    assert!(eventually(Duration::from_secs(5), ping), "gp1 reaches its gateway at the odd address");
    let neigh = || {
        let out = Sandbox::in_ns_cmd(&ns1, "ip").args(["neigh", "show", "10.34.0.1"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(neigh().contains(odd), "{}", neigh());
    let (p2, _ns2) = runtime_ns(&sb, "gp2");
    sb.ok(&["attach", p2.to_str().unwrap(), "--name", "gp2", "--network", "gp"]);
    let now = sb.host_links().into_iter().find(|l| l.index == bridge.index).and_then(|l| l.mac).unwrap();
    assert_eq!(Some(now), bridge.mac, "the bridge has its own address again");
    assert!(ping(), "gp1 reaches its gateway at once: {}", neigh());
    assert!(!neigh().contains(odd), "the announcement moved gp1's entry: {}", neigh());
    sb.ok(&["detach", "gp1"]);
    sb.ok(&["detach", "gp2"]);
}

#[test]
fn containers_on_different_networks_cannot_reach_each_other() {
    let sb = sandbox("iso");
    sb.ok(&["network", "create", "n1", "--subnet", "10.32.1.0/24"]);
    sb.ok(&["network", "create", "n2", "--subnet", "10.32.2.0/24"]);
    serve(&sb, "one", "n1", 7000);
    serve(&sb, "two", "n2", 7000);
    serve(&sb, "peer", "n1", 7000);
    let (one, two) = (sb.ip_of("one"), sb.ip_of("two"));
    // The same probe that fails across networks works inside one: the servers are up.
    sb.send_from("peer", &one, 7000, "x").expect("same network works");
    // The sandbox host routes (netwright turned forwarding on for egress): isolation is
    // the firewall's doing, not a missing route.
    let in_host = sb.in_host(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap());
    assert_eq!(in_host.trim(), "1");
    sb.send_from("two", &two, 7000, "self").expect("two is serving");
    assert!(sb.send_once("one", &two, 7000, "x").is_err(), "n1 -> n2 must fail");
    assert!(sb.send_once("two", &one, 7000, "x").is_err(), "n2 -> n1 must fail");
}

#[test]
fn container_sees_only_lo_and_eth0_and_its_own_files() {
    let sb = sandbox("view");
    let out = sb.ok(&["run", "--rm", "--hostname", "web1", "--", "ip", "-o", "link"]);
    let names: Vec<&str> =
        out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap()).collect();
    assert_eq!(names, vec!["lo", "eth0"], "{out}");
    let out = sb.ok(&[
        "run",
        "--rm",
        "--hostname",
        "web1",
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; grep web1 /etc/hosts; ip -o -4 addr show eth0; ip route; \
         echo ipv6-addresses: $(ip -o -6 addr show dev eth0 | wc -l)",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "web1");
    assert_eq!(lines[1], "web1");
    assert!(lines[2].starts_with("172.17.0.") && lines[2].ends_with("web1"), "{out}");
    assert!(lines[3].contains("172.17.0.") && lines[3].contains("/16"), "{out}");
    assert!(out.contains("default via 172.17.0.1 dev eth0"), "{out}");
    // An IPv4-only network: no IPv6 link-local on eth0 (no chatter flooded to the others).
    assert!(out.contains("ipv6-addresses: 0"), "{out}");
    // A bridge port (the host end) has no IPv6 at all, so no route in the host's IPv6
    // table per container (the kernel walks that table on every device up and down).
    sb.ok(&["run", "-d", "--name", "c1", "--", "sleep", "300"]);
    let doc = sb.inspect("c1");
    let port = doc["NetworkSettings"]["Networks"]["bridge"]["Netwright"]["HostInterface"].as_str().unwrap().to_string();
    let path = format!("/proc/sys/net/ipv6/conf/{port}/disable_ipv6");
    let conf = sb.in_host(|| std::fs::read_to_string(&path));
    assert_eq!(conf.map(|s| s.trim().to_string()).ok().as_deref(), Some("1"), "IPv6 is off on {port}");
    let routes = sb.in_host_cmd("ip").args(["-6", "route", "show", "table", "all", "dev", &port]).output().unwrap();
    assert!(routes.status.success() && routes.stdout.is_empty(), "{}", String::from_utf8_lossy(&routes.stdout));
    // The host's own files were not touched.
    assert!(!std::fs::read_to_string("/etc/hosts").unwrap().contains("web1"));
}

#[test]
fn foreground_run_passes_exit_code_and_stdio() {
    let sb = sandbox("fg");
    sb.ok(&["run", "--rm", "--", "true"]); // first use: netwright may announce the sysctl it sets
    let out = sb.nw(&["run", "--rm", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let mut child = sb
        .netwright(["run", "--rm", "--", "sh", "-c", "read x; echo got-$x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-hello\n");
    let (code, err) = sb.fails(&["run", "--rm", "--", "/no/such/binary"]);
    assert_eq!(code, 127, "{err}");
    assert_eq!(sb.ok(&["ps", "-a", "-q"]), "", "--rm left nothing behind");
    assert!(eventually(Duration::from_secs(5), || ours(&sb.host_links(), "nwv").is_empty()));
}

#[test]
fn release_on_exit_leaves_no_device_namespace_address_or_row() {
    let sb = sandbox("rel");
    sb.ok(&["network", "create", "n1", "--subnet", "10.33.0.0/24"]);
    // A bystander started before and after: its mount namespace must not keep the
    // victim's network namespace (and so its veth) alive.
    sb.ok(&["run", "-d", "--name", "before", "--network", "n1", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "victim", "--network", "n1", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "after", "--network", "n1", "--", "sleep", "300"]);
    let v = sb.inspect("victim");
    let pid = v["State"]["Pid"].as_i64().unwrap() as i32;
    assert!(pid > 0);
    let veth = v["NetworkSettings"]["Networks"]["n1"]["Netwright"]["HostInterface"].as_str().unwrap().to_string();
    assert!(sb.host_links().iter().any(|l| l.name == veth));
    // Kill the container process from outside: netwright must notice on its own.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(5), || sb.inspect("victim")["State"]["Status"] == "exited"));
    let v = sb.inspect("victim");
    assert_eq!(v["State"]["ExitCode"], 137);
    assert_eq!(v["NetworkSettings"]["Networks"]["n1"]["IPAddress"], "");
    assert!(eventually(Duration::from_secs(5), || !sb.host_links().iter().any(|l| l.name == veth)), "veth gone");
    assert_eq!(std::fs::read_dir(sb.root.join("netns")).unwrap().count(), 2, "victim's namespace unpinned");
    let net: serde_json::Value = serde_json::from_str(&sb.ok(&["network", "inspect", "n1"])).unwrap();
    assert_eq!(net[0]["Containers"].as_object().unwrap().len(), 2, "victim's address released");
    assert!(sb.ok(&["ps", "-a"]).contains("Exited (137)"));
    sb.ok(&["rm", "victim"]);
    sb.ok(&["rm", "-f", "before", "after"]);
    assert_eq!(sb.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(std::fs::read_dir(sb.root.join("netns")).unwrap().count(), 0);
    let bridges = ours(&sb.host_links(), "nwb").len();
    sb.ok(&["network", "rm", "n1"]);
    assert_eq!(ours(&sb.host_links(), "nwb").len(), bridges - 1, "bridge removed with its network");
}

#[test]
fn twenty_concurrent_runs_get_distinct_addresses_and_all_answer() {
    let sb = sandbox("conc");
    sb.ok(&["network", "create", "n1", "--subnet", "10.34.0.0/24"]);
    let script = sb.script("tcp.py");
    let children: Vec<_> = (0..20)
        .map(|i| {
            let name = format!("s{i}");
            sb.spawn_nw(&["run", "-d", "--name", &name, "--network", "n1", "--", "python3", &script, "serve", "7000"])
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let ips: Vec<String> = (0..20).map(|i| sb.ip_of(&format!("s{i}"))).collect();
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 20, "{ips:?}");
    sb.ok(&["run", "-d", "--name", "client", "--network", "n1", "--", "sleep", "300"]);
    for (i, ip) in ips.iter().enumerate() {
        let reply = sb.send_from("client", ip, 7000, &format!("m{i}")).unwrap_or_else(|e| panic!("s{i} at {ip}: {e}"));
        assert!(reply.contains(&format!("m{i} from")), "{reply}");
    }
}

#[test]
fn detached_logs_stop_and_generated_names() {
    let sb = sandbox("logs");
    let id = sb.ok(&["run", "-d", "--", "sh", "-c", "echo hello-log; exec sleep 300"]).trim().to_string();
    assert_eq!(id.len(), 64);
    let name = sb.inspect(&id[..12])["Name"].as_str().unwrap().trim_start_matches('/').to_string();
    assert!(name.contains('_'), "generated name {name}");
    assert!(eventually(Duration::from_secs(5), || sb.ok(&["logs", &name]).contains("hello-log")));
    sb.ok(&["stop", "-t", "5", &name]);
    let v = sb.inspect(&name);
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 143, "SIGTERM ended it");
    sb.ok(&["rm", &name]);
}

/// A `run -d` monitor becomes the small freestanding one (same process, the container its
/// child), forwards signals to the container and releases it with its exit code.
#[test]
fn the_small_monitor_forwards_signals_and_releases() {
    let sb = sandbox("smallmon");
    sb.ok(&["run", "-d", "--name", "mon", "--", "sh", "-c", "trap 'exit 42' USR1; while :; do sleep 0.1; done"]);
    let pid = sb.inspect("mon")["State"]["Pid"].as_i64().expect("a running container has a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let monitor: i32 = status.lines().find_map(|l| l.strip_prefix("PPid:")).unwrap().trim().parse().unwrap();
    // It is the small monitor, not the big binary monitoring in place.
    let small = || {
        let comm = std::fs::read_to_string(format!("/proc/{monitor}/comm")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{monitor}/exe")).unwrap_or_default();
        comm.trim() == "netwright-monit" && exe.to_string_lossy().contains("memfd:netwright-monitor")
    };
    assert!(eventually(Duration::from_secs(5), small), "the monitor (pid {monitor}) did not become netwright-monitor");
    let cmdline = std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"netwright-monitor\0"), "{}", String::from_utf8_lossy(&cmdline));
    // A signal to the monitor reaches the container, whose exit code the release records.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), nix::sys::signal::Signal::SIGUSR1).unwrap();
    assert!(eventually(Duration::from_secs(10), || sb.inspect("mon")["State"]["Status"] == "exited"));
    assert_eq!(sb.inspect("mon")["State"]["ExitCode"], 42, "the forwarded SIGUSR1 ended it with its trap's code");
    let gone = || {
        // Ended (or a zombie until its new parent reaps it).
        std::fs::read_to_string(format!("/proc/{monitor}/stat"))
            .map_or(true, |st| st.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
    };
    assert!(eventually(Duration::from_secs(10), gone), "the monitor ends after the release");
}

#[test]
fn ipam_honours_ip_and_range_and_derives_mac() {
    let sb = sandbox("ipam");
    sb.ok(&[
        "network",
        "create",
        "n1",
        "--subnet",
        "10.35.0.0/24",
        "--gateway",
        "10.35.0.254",
        "--ip-range",
        "10.35.0.128/28",
    ]);
    sb.ok(&["run", "-d", "--name", "fixed", "--network", "n1", "--ip", "10.35.0.9", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "auto", "--network", "n1", "--", "sleep", "300"]);
    assert_eq!(sb.ip_of("fixed"), "10.35.0.9");
    assert_eq!(sb.ip_of("auto"), "10.35.0.128");
    let v = sb.inspect("fixed");
    let n = &v["NetworkSettings"]["Networks"]["n1"];
    assert_eq!(n["MacAddress"], "02:42:0a:23:00:09");
    assert_eq!(n["Gateway"], "10.35.0.254");
    // The MAC really is on the container's eth0.
    let out = sb.ok(&["exec", "fixed", "--", "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(out.trim(), "02:42:0a:23:00:09");
    let net: serde_json::Value = serde_json::from_str(&sb.ok(&["network", "inspect", "n1"])).unwrap();
    assert_eq!(net[0]["IPAM"]["Config"][0]["Subnet"], "10.35.0.0/24");
    assert_eq!(net[0]["IPAM"]["Config"][0]["Gateway"], "10.35.0.254");
    assert_eq!(net[0]["IPAM"]["Config"][0]["IPRange"], "10.35.0.128/28");
    assert_eq!(net[0]["Containers"].as_object().unwrap().len(), 2);
}

#[test]
fn default_pool_skips_overlapping_host_routes_and_two_roots_coexist() {
    let sb = sandbox("pool");
    // The sandbox host gets a route to 172.17.0.0/16 via the LAN router: the default
    // network must then take 172.18.0.0/16, as Docker does.
    let st = sb.in_host_cmd("ip").args(["route", "add", "172.17.0.0/16", "via", "192.168.1.1"]).status().unwrap();
    assert!(st.success());
    sb.ok(&["run", "-d", "--name", "aa", "--", "sleep", "300"]);
    assert!(sb.ip_of("aa").starts_with("172.18."), "{}", sb.ip_of("aa"));
    // A second state root in the same host namespace: its own bridge, its own pool.
    let root2 = sb.dir.join("root2");
    let run2 = |args: &[&str]| {
        let out = sb.netwright(args).env("NETWRIGHT_ROOT", &root2).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run2(&["run", "-d", "--name", "aa", "--", "sleep", "300"]);
    let v: serde_json::Value = serde_json::from_str(&run2(&["inspect", "aa"])).unwrap();
    let ip2 = v[0]["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    assert!(ip2.starts_with("172.19."), "second root picks the next free pool: {ip2}");
    let bridges = ours(&sb.host_links(), "nwb");
    assert_eq!(bridges.len(), 2, "one bridge per root: {bridges:?}");
    run2(&["rm", "-f", "aa"]);
    let _ = std::fs::remove_dir_all(&root2);
}

#[test]
fn crashed_monitor_and_drift_are_reconciled() {
    let sb = sandbox("recon");
    sb.ok(&["network", "create", "n1", "--subnet", "10.36.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "cc", "--network", "n1", "--", "sleep", "300"]);
    let pid = sb.inspect("cc")["State"]["Pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(1).unwrap().parse().unwrap();
    // kill -9 the monitor: the container dies with it, and the next command releases it.
    unsafe { libc::kill(ppid, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(5), || !std::path::Path::new(&format!("/proc/{pid}")).exists()));
    assert!(sb.ok(&["ps", "-a"]).contains("Exited (137)"));
    assert_eq!(sb.inspect("cc")["NetworkSettings"]["Networks"]["n1"]["IPAddress"], "");
    // Drift: an admin deletes the bridge, and a stray device with our name appears.
    let bridge = serde_json::from_str::<serde_json::Value>(&sb.ok(&["network", "inspect", "n1"])).unwrap()[0]
        ["Options"]["com.docker.network.bridge.name"].as_str().unwrap().to_string();
    let stray = format!("nwv{}deadbeef", &bridge[3..7]);
    assert!(sb.in_host_cmd("ip").args(["link", "del", &bridge]).status().unwrap().success());
    assert!(sb.in_host_cmd("ip").args(["link", "add", &stray, "type", "bridge"]).status().unwrap().success());
    let out = sb.ok(&["reconcile"]);
    assert!(out.contains("restored 1 bridge"), "{out}");
    assert!(out.contains(&stray), "{out}");
    let links = sb.host_links();
    assert!(links.iter().any(|l| l.name == bridge));
    assert!(!links.iter().any(|l| l.name == stray));
    // Reconcile is idempotent.
    let out = sb.ok(&["reconcile"]);
    assert!(out.contains("restored 0 bridge") && out.contains("removed 0 stray device"), "{out}");
    // And the network works again.
    sb.ok(&["run", "--rm", "--network", "n1", "--", "true"]);
}

#[test]
fn reading_never_changes_the_host() {
    let sb = sandbox("readonly");
    let forward = || std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let before = sb.in_host(forward);
    let ls = sb.ok(&["network", "ls"]);
    assert!(ls.contains("bridge"), "the default network is listed: {ls}");
    sb.ok(&["network", "inspect", "bridge"]);
    sb.ok(&["ps", "-a"]);
    assert!(ours(&sb.host_links(), "nw").is_empty(), "no device made by reading");
    let tables = sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("netwright"), "no table made by reading");
    assert_eq!(sb.in_host(forward), before, "no sysctl changed by reading");
    // Using the default network makes its bridge, as docker0.
    sb.ok(&["run", "--rm", "--", "true"]);
    assert_eq!(ours(&sb.host_links(), "nwb").len(), 1);
}
