//! IPv6 with real packets: dual-stack networks, egress masquerade, published ports on both
//! families, isolation, DNS (AAAA, ip6.arpa) and bad input. The sandbox's LAN gets
//! 2001:db8:1::1 (router) and ::100 (server), the host 2001:db8:1::10.

mod common;

use std::process::Stdio;

use common::*;
use netwright_testkit::{HOST6_ETH0, LAN6_SERVER};

fn sandbox6(label: &str) -> Sandbox {
    let sb = sandbox(label);
    sb.enable_ipv6().expect("IPv6 on the sandbox LAN");
    sb
}

/// A container serving tcp.py on port 80 (both families where it has IPv6).
fn server(sb: &Sandbox, name: &str, extra: &[&str]) {
    let script = sb.script("tcp.py");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", &script, "serve", "80"]);
    sb.ok(&args);
}

fn sleeper(sb: &Sandbox, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sleep", "300"]);
    sb.ok(&args);
}

fn lan_server(sb: &Sandbox, port: u16) -> Kill {
    Kill(
        sb.in_lan_cmd("python3")
            .args([&sb.script("tcp.py"), "serve", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn ip6_of(sb: &Sandbox, container: &str) -> String {
    let v = sb.inspect(container);
    let nets = v["NetworkSettings"]["Networks"].as_object().expect("networks").clone();
    nets.values().next().expect("one network")["GlobalIPv6Address"].as_str().unwrap().to_string()
}

/// dnsq.py from inside a container: (rcode line, answers).
fn ask(sb: &Sandbox, from: &str, name: &str, qtype: &str) -> (String, Vec<String>) {
    let script = sb.script("dnsq.py");
    let out = sb.nw(&["exec", from, "--", "python3", &script, name, qtype]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::to_string);
    (lines.next().unwrap_or_default(), lines.collect())
}

fn host_sysctl(sb: &Sandbox, key: &str) -> String {
    sb.in_host(|| std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{key}")).unwrap().trim().to_string())
}

#[test]
fn dual_stack_containers_reach_each_other_by_name_and_leave_masqueraded() {
    let sb = sandbox6("ipv6-basic");
    let _lan = lan_server(&sb, 7000);
    sb.ok(&["network", "create", "app", "--ipv6", "--subnet", "10.70.0.0/24", "--subnet", "fd00:70::/64"]);
    server(&sb, "web", &["--network", "app", "--network-alias", "www"]);
    sleeper(&sb, "client", &["--network", "app"]);
    // Addresses follow the IPv4 ones; Docker's inspect keys.
    let v = sb.inspect("web");
    let net = &v["NetworkSettings"]["Networks"]["app"];
    assert_eq!(net["IPAddress"], "10.70.0.2");
    assert_eq!(net["GlobalIPv6Address"], "fd00:70::2");
    assert_eq!(net["GlobalIPv6PrefixLen"], 64);
    assert_eq!(net["IPv6Gateway"], "fd00:70::1");
    let n: serde_json::Value = serde_json::from_str(&sb.ok(&["network", "inspect", "app"])).unwrap();
    assert_eq!(n[0]["EnableIPv6"], true);
    assert_eq!(n[0]["IPAM"]["Config"][1]["Subnet"], "fd00:70::/64");
    assert_eq!(n[0]["IPAM"]["Config"][1]["Gateway"], "fd00:70::1");
    // Usable at once: no duplicate address detection pending, no router advertisements.
    let addrs = sb.ok(&["exec", "web", "--", "ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd00:70::2/64") && !addrs.contains("tentative"), "{addrs}");
    let ra = sb.ok(&["exec", "web", "--", "cat", "/proc/sys/net/ipv6/conf/eth0/accept_ra"]);
    assert_eq!(ra.trim(), "0");
    // Container to container over IPv6: TCP (no NAT inside a network) and ping.
    let reply = sb.send_from("client", "fd00:70::2", 80, "six").expect("client -> web over IPv6");
    assert_eq!(reply, format!("{} six from fd00:70::3", v["Config"]["Hostname"].as_str().unwrap()));
    sb.ok(&["exec", "client", "--", "ping", "-6", "-c", "1", "-W", "2", "fd00:70::2"]);
    // DNS: AAAA and A for names and aliases, PTR in ip6.arpa.
    for name in ["web", "www"] {
        assert_eq!(ask(&sb, "client", name, "AAAA"), ("NOERROR".into(), vec!["fd00:70::2".to_string()]), "{name}");
        assert_eq!(ask(&sb, "client", name, "A").1, vec!["10.70.0.2".to_string()]);
    }
    let ptr = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(ask(&sb, "client", ptr, "PTR").1, vec!["web".to_string()]);
    let getent = sb.ok(&["exec", "client", "--", "getent", "ahostsv6", "web"]);
    assert!(getent.contains("fd00:70::2"), "{getent}");
    // Egress over IPv6 leaves with the host's address (ULA is not routable).
    let reply = sb.send_from("client", LAN6_SERVER, 7000, "out").expect("client -> LAN over IPv6");
    assert!(reply.ends_with(&format!("from {HOST6_ETH0}")), "{reply}");
    // IPv4 still as before.
    let reply = sb.send_from("client", "192.168.1.100", 7000, "out4").expect("client -> LAN over IPv4");
    assert!(reply.ends_with("from 192.168.1.10"), "{reply}");
    // The host forwards IPv6, and its SLAAC uplink still takes router advertisements.
    assert_eq!(host_sysctl(&sb, "all/forwarding"), "1");
    assert_eq!(host_sysctl(&sb, "eth0/accept_ra"), "2");
    // gateway_mode_ipv6=routed: the container's own address leaves (the LAN has no route back).
    sb.ok(&[
        "network",
        "create",
        "routed",
        "--ipv6",
        "--subnet",
        "10.71.0.0/24",
        "--subnet",
        "fd00:71::/64",
        "-o",
        "gateway_mode_ipv6=routed",
    ]);
    sleeper(&sb, "r1", &["--network", "routed"]);
    assert!(sb.send_once("r1", LAN6_SERVER, 7000, "x").is_err(), "no masquerade on a routed network");
    assert!(agrees(&sb).is_ok(), "{:?}", agrees(&sb));
    let topo = sb.ok(&["topology"]);
    assert!(topo.contains("10.70.0.2/24 fd00:70::2/64") && topo.contains("fd00:70::/64"), "{topo}");
    // doctor: IPv6 forwarding off, and the RA trap; reconcile repairs both.
    let doctor = |sb: &Sandbox| String::from_utf8_lossy(&sb.nw(&["doctor"]).stdout).into_owned();
    assert!(doctor(&sb).lines().any(|l| l.starts_with("ok") && l.contains("forwarding6")), "{}", doctor(&sb));
    sb.in_host(|| std::fs::write("/proc/sys/net/ipv6/conf/eth0/accept_ra", "1").unwrap());
    let d = doctor(&sb);
    assert!(
        d.lines().any(|l| !l.starts_with("ok") && l.contains("forwarding6") && l.contains("eth0 accept_ra=1")),
        "{d}"
    );
    sb.in_host(|| std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "0").unwrap());
    let d = doctor(&sb);
    assert!(d.contains("net.ipv6.conf.all.forwarding=0"), "{d}");
    assert!(sb.send_once("client", LAN6_SERVER, 7000, "x").is_err(), "no IPv6 forwarding, no egress");
    sb.ok(&["reconcile"]);
    assert_eq!((host_sysctl(&sb, "all/forwarding"), host_sysctl(&sb, "eth0/accept_ra")), ("1".into(), "2".into()));
    sb.send_from("client", LAN6_SERVER, 7000, "back").expect("repaired");
}

#[test]
fn macvlan_containers_get_the_lan_ipv6_prefix_without_nat() {
    let sb = sandbox6("ipv6-macvlan");
    let _lan = lan_server(&sb, 7000);
    sb.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "--ipv6",
        "--subnet",
        "192.168.1.0/24",
        "--subnet",
        "2001:db8:1::/64",
        "--gateway",
        "192.168.1.1",
        "--gateway",
        "2001:db8:1::1",
        "--ip-range",
        "192.168.1.192/27",
        "lan",
    ]);
    server(&sb, "m1", &["--network", "lan"]);
    assert_eq!(ip6_of(&sb, "m1"), "2001:db8:1::c0");
    let r = sb.send_from("m1", LAN6_SERVER, 7000, "out").expect("macvlan -> LAN over IPv6");
    assert!(r.ends_with("from 2001:db8:1::c0"), "no NAT: {r}");
    let r = retry(|| from_lan(&sb, "2001:db8:1::c0", 80, "tcp")).expect("LAN -> macvlan container over IPv6");
    assert!(r.contains("from 2001:db8:1::"), "{r}");
    let (_, err) = sb.fails(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "--ipv6",
        "--subnet",
        "192.168.1.0/24",
        "lan2",
    ]);
    assert!(err.contains("LAN's IPv6 prefix"), "{err}");
}

#[test]
fn published_ports_answer_over_ipv6_from_lan_host_and_hairpin() {
    let sb = sandbox6("ipv6-ports");
    sb.ok(&["network", "create", "front", "--ipv6", "--subnet", "10.72.0.0/24", "--subnet", "fd00:72::/64"]);
    server(
        &sb,
        "api",
        &[
            "--network",
            "front",
            "-p",
            "8080:80",
            "-p",
            "[::]:8081:80",
            "-p",
            &format!("[{HOST6_ETH0}]:8082:80"),
            "-p",
            "0.0.0.0:8083:80",
        ],
    );
    sleeper(&sb, "peer", &["--network", "front"]);
    let host6 = HOST6_ETH0;
    // 8080: both families, from the LAN (the container sees the LAN client: DNAT only).
    let r = retry(|| from_lan(&sb, host6, 8080, "tcp")).expect("LAN -> [host]:8080");
    assert!(r.ends_with(&format!("from {LAN6_SERVER}")) || r.contains("from 2001:db8:1::1"), "{r}");
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("LAN -> host:8080 over IPv4");
    // From the host to its own IPv6 address, and hairpin from a container on the network.
    from_host(&sb, host6, 8080, "tcp").expect("host -> its own IPv6 address");
    // (Masqueraded to the gateway where br_netfilter is off; with it, as on this kernel,
    // conntrack on the bridge path un-NATs the answer: either way the connection works.)
    sb.send_from("peer", host6, 8080, "hair").expect("hairpin over IPv6");
    // [::]: IPv6 only; [address]: that address only; 0.0.0.0: IPv4 only.
    from_lan(&sb, host6, 8081, "tcp").expect("[::]:8081 over IPv6");
    assert!(from_lan(&sb, "192.168.1.10", 8081, "tcp").is_err(), "[::] does not publish on IPv4");
    from_lan(&sb, host6, 8082, "tcp").expect("[2001:db8:1::10]:8082");
    from_lan(&sb, "192.168.1.10", 8083, "tcp").expect("0.0.0.0:8083 over IPv4");
    assert!(from_lan(&sb, host6, 8083, "tcp").is_err(), "0.0.0.0 does not publish on IPv6");
    let port = sb.ok(&["port", "api"]);
    for line in
        ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080", "80/tcp -> [::]:8081", "80/tcp -> [2001:db8:1::10]:8082"]
    {
        assert!(port.contains(line), "{line} in {port}");
    }
    // The ruleset names the owner of every element, in the ip6 table too.
    let out = sb.in_host_cmd("nft").args(["list", "ruleset"]).output().unwrap();
    let ruleset = String::from_utf8_lossy(&out.stdout);
    let t6 = ruleset.split("table ip6 netwright-").nth(1).expect("an ip6 table");
    assert!(t6.contains("fd00:72::2 . 80") && t6.contains("comment \"container api\""), "{t6}");
    // A collision is refused on the family it collides on only.
    let (_, err) = sb.fails(&["run", "--network", "front", "-p", "[::]:8081:80", "--", "true"]);
    assert!(err.contains("already published by container api"), "{err}");
    sb.ok(&["run", "--rm", "--network", "front", "-p", "127.0.0.1:8081:80", "--", "true"]);
    // Stopped: its elements leave both tables.
    sb.ok(&["rm", "-f", "api"]);
    assert!(from_lan(&sb, host6, 8080, "tcp").is_err());
    assert!(agrees(&sb).is_ok(), "{:?}", agrees(&sb));
}

#[test]
fn isolation_internal_networks_and_bad_input_over_ipv6() {
    let sb = sandbox6("ipv6-iso");
    let _lan = lan_server(&sb, 7000);
    sb.ok(&["network", "create", "na", "--ipv6", "--subnet", "10.73.0.0/24", "--subnet", "fd00:73::/64"]);
    sb.ok(&["network", "create", "nb", "--ipv6", "--subnet", "10.74.0.0/24"]); // a ULA /64 is picked
    sb.ok(&["network", "create", "sealed", "--internal", "--ipv6", "--subnet", "10.75.0.0/24"]);
    sb.ok(&["network", "create", "v4only", "--subnet", "10.76.0.0/24"]);
    server(&sb, "sa", &["--network", "na"]);
    sleeper(&sb, "cb", &["--network", "nb"]);
    sleeper(&sb, "cs", &["--network", "sealed"]);
    sleeper(&sb, "c4", &["--network", "v4only"]);
    let b6 = ip6_of(&sb, "cb");
    assert!(b6.starts_with("fd") && b6.ends_with("::2"), "a ULA address: {b6}");
    sb.send_from("sa", "fd00:73::2", 80, "self").expect("own address");
    // Another network cannot reach it; an internal network has no IPv6 egress.
    assert!(sb.send_once("cb", "fd00:73::2", 80, "x").is_err(), "isolation between networks over IPv6");
    assert!(sb.send_once("cs", LAN6_SERVER, 7000, "x").is_err(), "internal: no IPv6 egress");
    assert!(ip6_of(&sb, "c4").is_empty(), "an IPv4-only network gives no IPv6 address");
    let counters = sb
        .in_host_cmd("nft")
        .args(["list", "chain", "ip6", &format!("netwright-{}", tag(&sb)), "forward"])
        .output()
        .unwrap();
    let fwd = String::from_utf8_lossy(&counters.stdout);
    assert!(fwd.lines().any(|l| l.contains("isolation") && !l.contains("packets 0 ")), "{fwd}");
    // Bad input: one line, exit != 0, nothing changed.
    let before = (sb.ok(&["network", "ls", "-q"]), sb.ok(&["ps", "-aq"]));
    for (args, says) in [
        (
            vec!["network", "create", "nx", "--ipv6", "--subnet", "10.77.0.0/24", "--subnet", "fd00:73::/64"],
            "overlaps network na",
        ),
        (
            vec!["network", "create", "nx", "--ipv6", "--subnet", "10.77.0.0/16", "--subnet", "fd00:77::/120"],
            "/112 or shorter",
        ),
        (vec!["network", "create", "nx", "--subnet", "fd00:77::/64"], "needs --ipv6"),
        (
            vec!["network", "create", "nx", "--ipv6", "--subnet", "fd00:77::/64", "--subnet", "fd00:78::/64"],
            "at most one IPv4 and one IPv6",
        ),
        (vec!["network", "create", "nx", "--ipv6", "--subnet", "fd00:77::5/64"], "did you mean fd00:77::/64"),
        (vec!["network", "create", "nx", "--ipv4=false", "--ipv6"], "IPv6-only networks are not supported yet"),
        (vec!["run", "--network", "na", "--ip6", "fd00:99::5", "--", "true"], "outside the network's IPv6 subnet"),
        (vec!["run", "--network", "v4only", "--ip6", "fd00:76::5", "--", "true"], "has no IPv6 subnet"),
        (vec!["run", "--network", "na", "--ip6", "fd00:73::2", "--", "true"], "already in use"),
        (vec!["run", "--network", "na", "--ip6", "nonsense", "--", "true"], "not a valid IPv6 address"),
        (vec!["run", "--network", "na", "-p", "[::1]:8080:80", "--", "true"], "route_localnet"),
    ] {
        let (code, err) = sb.fails(&args);
        assert!(code != 0 && err.contains(says) && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
    assert_eq!((sb.ok(&["network", "ls", "-q"]), sb.ok(&["ps", "-aq"])), before, "state untouched");
    // --ip6 where it is free; connect --ip6 adds a second dual-stack interface.
    sleeper(&sb, "fixed", &["--network", "na", "--ip6", "fd00:73::99"]);
    assert_eq!(ip6_of(&sb, "fixed"), "fd00:73::99");
    sb.ok(&["network", "connect", "--ip6", "fd00:73::98", "na", "c4"]);
    sb.send_from("c4", "fd00:73::2", 80, "via eth1").expect("connected over IPv6");
    // The last dual-stack network gone: no ip6 table left.
    for c in ["sa", "cb", "cs", "c4", "fixed"] {
        sb.ok(&["rm", "-f", c]);
    }
    for n in ["na", "nb", "sealed"] {
        sb.ok(&["network", "rm", n]);
    }
    let out = sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("table ip6 netwright-"));
}

/// The sandbox root's tag (the suffix of its nftables table).
fn tag(sb: &Sandbox) -> String {
    let out = sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("table ip netwright-").map(str::to_string))
        .expect("netwright table")
}
