//! The embedded DNS resolver with real queries from inside containers.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// dnsq.py from inside a container: (rcode line, answers).
fn ask(sb: &Sandbox, from: &str, args: &[&str]) -> (String, Vec<String>) {
    let script = sb.script("dnsq.py");
    let mut full = vec!["exec", from, "--", "python3", &script];
    full.extend_from_slice(args);
    let out = sb.nw(&full);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::to_string);
    (
        lines.next().unwrap_or_else(|| format!("NO ANSWER {}", String::from_utf8_lossy(&out.stderr).trim())),
        lines.collect(),
    )
}

fn sleeper(sb: &Sandbox, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sleep", "300"]);
    sb.ok(&args);
}

#[test]
fn names_aliases_ptr_and_no_leak_across_networks() {
    let sb = sandbox("dns");
    sb.ok(&["network", "create", "app", "--subnet", "10.91.0.0/24"]);
    sb.ok(&["network", "create", "other", "--subnet", "10.92.0.0/24"]);
    sleeper(
        &sb,
        "web",
        &["--network", "app", "--network-alias", "www", "--network-alias", "front", "--hostname", "webhost"],
    );
    sleeper(&sb, "client", &["--network", "app"]);
    sleeper(&sb, "outsider", &["--network", "other"]);
    let web = sb.ip_of("web");
    let resolv = sb.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 127.0.0.11") && resolv.contains("ndots:0"), "{resolv}");
    for name in ["web", "www", "front", "webhost", "WEB."] {
        assert_eq!(ask(&sb, "client", &[name]), ("NOERROR".into(), vec![web.clone()]), "{name}");
    }
    // Over TCP too, and with the libc resolver programs actually use.
    assert_eq!(ask(&sb, "client", &["www", "A", "127.0.0.11", "tcp"]).1, vec![web.clone()]);
    let getent = sb.ok(&["exec", "client", "--", "getent", "hosts", "web"]);
    assert!(getent.starts_with(&web), "{getent}");
    // PTR; AAAA for an IPv4-only container is an empty NOERROR.
    let rev: Vec<&str> = web.split('.').rev().collect();
    assert_eq!(ask(&sb, "client", &[&format!("{}.in-addr.arpa", rev.join(".")), "PTR"]).1, vec!["web".to_string()]);
    assert_eq!(ask(&sb, "client", &["web", "AAAA"]), ("NOERROR".into(), vec![]));
    // Not across networks: the outsider gets NXDOMAIN, and web's PTR is not given to it.
    assert_eq!(ask(&sb, "outsider", &["web"]).0, "NXDOMAIN");
    assert_eq!(ask(&sb, "outsider", &["www"]).0, "NXDOMAIN");
    // The default bridge has no names and no embedded resolver, as in Docker.
    sleeper(&sb, "plain", &[]);
    let resolv = sb.ok(&["exec", "plain", "--", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("127.0.0.11"), "{resolv}");
    assert!(!sb.nw(&["exec", "plain", "--", "getent", "hosts", "web"]).status.success());
    // A container that stops takes its names with it.
    sb.ok(&["rm", "-f", "web"]);
    // (Unknown now, so asked upstream — which this sandbox does not have.)
    assert!(ask(&sb, "client", &["www"]).1.is_empty(), "www is gone with web");
}

#[test]
fn alias_round_robin_over_five_containers() {
    let sb = sandbox("rr");
    sb.ok(&["network", "create", "app", "--subnet", "10.93.0.0/24"]);
    for i in 0..5 {
        sleeper(&sb, &format!("svc{i}"), &["--network", "app", "--network-alias", "svc"]);
    }
    sleeper(&sb, "client", &["--network", "app"]);
    let ips: HashSet<String> = (0..5).map(|i| sb.ip_of(&format!("svc{i}"))).collect();
    // 100 lookups in one process (a python loop), first answers collected.
    let script = format!(
        "import subprocess\nfirst=set()\nfor _ in range(100):\n    out=subprocess.run(['python3','{}','svc'],capture_output=True,text=True).stdout.split()\n    assert out[0]=='NOERROR' and len(out)==6, out\n    first.add(out[1])\nprint(' '.join(sorted(first)))",
        sb.script("dnsq.py")
    );
    let out = sb.ok(&["exec", "client", "--", "python3", "-c", &script]);
    let firsts: HashSet<String> = out.split_whitespace().map(str::to_string).collect();
    assert_eq!(firsts, ips, "every address comes first at least once");
}

#[test]
fn forwarding_tcp_fallback_servfail_dns_and_add_host() {
    let sb = sandbox("fwd");
    let upstream =
        Kill(sb.in_lan_cmd("python3").args([&sb.script("fakedns.py")]).stdout(Stdio::null()).spawn().unwrap());
    sb.ok(&["network", "create", "app", "--subnet", "10.94.0.0/24"]);
    sleeper(
        &sb,
        "cc",
        &[
            "--network",
            "app",
            "--dns",
            "192.168.1.100",
            "--add-host",
            "db.local:10.1.2.3",
            "--dns-search",
            "corp.example",
            "--dns-option",
            "timeout:2",
        ],
    );
    let mut first = (String::new(), vec![]);
    for _ in 0..50 {
        first = ask(&sb, "cc", &["example.test"]);
        if first.0 == "NOERROR" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(first, ("NOERROR".into(), vec!["198.51.100.7".to_string()]), "forwarded to --dns");
    // The upstream truncates "big*" over UDP: the resolver retries over TCP.
    assert_eq!(ask(&sb, "cc", &["big.example.test"]), ("NOERROR".into(), vec!["198.51.100.8".to_string()]));
    let hosts = sb.ok(&["exec", "cc", "--", "getent", "hosts", "db.local"]);
    assert!(hosts.starts_with("10.1.2.3"), "{hosts}");
    let resolv = sb.ok(&["exec", "cc", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("search corp.example") && resolv.contains("timeout:2"), "{resolv}");
    // --dns on the default bridge goes straight into resolv.conf.
    let out = sb.ok(&["run", "--rm", "--dns", "192.168.1.100", "--", "cat", "/etc/resolv.conf"]);
    assert!(out.contains("nameserver 192.168.1.100"), "{out}");
    // Upstream down: SERVFAIL — before dnsq's own 4 s timeout, so never a hang.
    drop(upstream);
    assert_eq!(ask(&sb, "cc", &["gone.example.test"]).0, "SERVFAIL");
}

#[test]
fn resolver_comes_back_own_port_53_works_and_no_open_resolver() {
    let sb = sandbox("dnslife");
    sb.ok(&["network", "create", "app", "--subnet", "10.95.0.0/24"]);
    // A container running its own DNS server on port 53 (all addresses).
    sb.ok(&["run", "-d", "--name", "ns1", "--network", "app", "--", "python3", &sb.script("fakedns.py")]);
    sleeper(&sb, "client", &["--network", "app"]);
    let ns1 = sb.ip_of("ns1");
    let mut own = (String::new(), vec![]);
    for _ in 0..50 {
        own = ask(&sb, "client", &["anything.test", "A", &ns1]);
        if own.0 == "NOERROR" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(own.1, vec!["198.51.100.7".to_string()], "the container's own port-53 server answers");
    assert_eq!(ask(&sb, "ns1", &["client"]).1, vec![sb.ip_of("client")], "and its 127.0.0.11 still works");
    // Kill the resolver: a query within 5 s still gets its answer.
    let pid = netwright_engine::kernel::process::of_root(&sb.root)
        .into_iter()
        .find(|(_, argv)| argv.iter().any(|a| a == "_resolver"))
        .map(|(p, _)| p)
        .expect("resolver process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t = Instant::now();
    let mut back = (String::new(), vec![]);
    while t.elapsed() < Duration::from_secs(5) {
        back = ask(&sb, "client", &["ns1"]);
        if back.0 == "NOERROR" {
            break;
        }
    }
    assert_eq!(back.1, vec![ns1], "answered within 5 s of the resolver's death");
    // Nothing answers DNS on the host's LAN address.
    let out = sb.in_lan_cmd("python3").args([&sb.script("dnsq.py"), "client", "A", "192.168.1.10"]).output().unwrap();
    assert!(!out.status.success(), "no open resolver on the LAN: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn connect_and_disconnect_change_reachability_and_names() {
    let sb = sandbox("connect");
    sb.ok(&["network", "create", "front", "--subnet", "10.96.0.0/24"]);
    sb.ok(&["network", "create", "back", "--subnet", "10.97.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "db", "--network", "back", "--", "python3", &sb.script("tcp.py"), "serve", "7000"]);
    sleeper(&sb, "api", &["--network", "front"]);
    let db = sb.ip_of("db");
    sb.send_from("db", &db, 7000, "up").expect("db serving");
    assert!(sb.send_once("api", &db, 7000, "x").is_err(), "different networks");
    assert_eq!(ask(&sb, "api", &["db"]).0, "NXDOMAIN");
    sb.ok(&["network", "connect", "back", "api", "--alias", "gateway-api"]);
    let links = sb.ok(&["exec", "api", "--", "ip", "-o", "-4", "addr"]);
    assert!(links.contains("eth1") && links.contains("10.97.0."), "{links}");
    sb.send_from("api", &db, 7000, "hi").expect("connected: api reaches db");
    assert_eq!(ask(&sb, "api", &["db"]).1, vec![db.clone()], "and resolves it");
    assert_eq!(ask(&sb, "db", &["gateway-api"]).0, "NOERROR", "the new alias resolves on back");
    let (_, err) = sb.fails(&["network", "connect", "back", "api"]);
    assert!(err.contains("already connected"), "{err}");
    let (_, err) = sb.fails(&["network", "rm", "back"]);
    assert!(err.contains("in use"), "{err}");
    sb.ok(&["network", "disconnect", "back", "api"]);
    assert!(!sb.ok(&["exec", "api", "--", "ip", "-o", "link"]).contains("eth1"));
    assert!(sb.send_once("api", &db, 7000, "x").is_err(), "disconnected again");
    assert_eq!(ask(&sb, "api", &["db"]).0, "NXDOMAIN");
    let (_, err) = sb.fails(&["network", "disconnect", "back", "api"]);
    assert!(err.contains("not connected"), "{err}");
    // run accepts --network more than once: one interface per network, names on both.
    sleeper(&sb, "both", &["--network", "front", "--network", "back"]);
    sb.send_from("both", &db, 7000, "hi").expect("both -> db on back");
    assert_eq!(ask(&sb, "both", &["api"]).1, vec![sb.ip_of("api")]);
    let v = sb.inspect("both");
    assert_eq!(v["NetworkSettings"]["Networks"].as_object().unwrap().len(), 2);
}

#[test]
fn the_resolver_leaves_with_the_last_named_container_and_comes_back() {
    let sb = sandbox("dnsidle");
    sb.ok(&["network", "create", "app", "--subnet", "10.98.0.0/24"]);
    sleeper(&sb, "web", &["--network", "app"]);
    let dns_procs = || {
        netwright_engine::kernel::process::of_root(&sb.root)
            .into_iter()
            .filter(|(_, argv)| argv.iter().any(|a| a == "_resolver" || a == "_dns"))
            .count()
    };
    assert_eq!(dns_procs(), 2, "resolver and supervisor run while a container needs them");
    sb.ok(&["rm", "-f", "web"]);
    // Nothing left to serve: both leave within two idle ticks (10 s each).
    assert!(eventually(Duration::from_secs(40), || dns_procs() == 0), "resolver and supervisor left: {}", dns_procs());
    // The next named container starts them again, and names resolve at once.
    sleeper(&sb, "api", &["--network", "app"]);
    sleeper(&sb, "client", &["--network", "app"]);
    assert_eq!(ask(&sb, "client", &["api"]), ("NOERROR".into(), vec![sb.ip_of("api")]));
    assert_eq!(dns_procs(), 2);
}

/// Commands that find no resolver start one each; eight attaches at once into an idle
/// root must still end with one resolver and one supervisor (a second resolver re-read and
/// adopted every container on its own), and every namespace resolves the others.
#[test]
fn concurrent_first_commands_start_one_resolver() {
    let sb = sandbox("dnsrace");
    sb.ok(&["network", "create", "app", "--subnet", "10.99.0.0/24"]);
    let paths: Vec<_> = (0..8).map(|i| runtime_ns(&sb, &format!("r{i}"))).collect();
    let children: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, (p, _))| {
            sb.netwright(["attach", p.to_str().unwrap(), "--name", &format!("r{i}"), "--network", "app"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let count = |what: &str| {
        netwright_engine::kernel::process::of_root(&sb.root)
            .into_iter()
            .filter(|(_, argv)| argv.iter().any(|a| a == what))
            .count()
    };
    // A supervisor that lost the race leaves at once; give stragglers a moment.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((count("_dns"), count("_resolver")), (1, 1), "one supervisor, one resolver");
    let out = Sandbox::in_ns_cmd(&paths[0].1, "python3").args([&sb.script("dnsq.py"), "r7"]).output().unwrap();
    let ip7 = sb.inspect("r7")["NetworkSettings"]["Networks"]["app"]["IPAddress"].as_str().unwrap().to_string();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ip7), "r0 resolves r7");
    for i in 0..8 {
        sb.ok(&["detach", &format!("r{i}")]);
    }
}

/// Misbehaving clients from inside a container (python3, raw sockets): idle TCP
/// connections, a response sent as if it were a query, other opcodes, a zone transfer.
const ABUSE_PY: &str = r#"
import socket, struct, sys
def q(name, qtype=1, flags=0x0100, qid=0x4242):
    body = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 0) + body + struct.pack(">HH", qtype, 1)
def udp(msg):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
    s.sendto(msg, ("127.0.0.11", 53))
    try: return s.recv(4096)
    except socket.timeout: return None
idle = []
for _ in range(20):
    c = socket.create_connection(("127.0.0.11", 53), timeout=2); idle.append(c)
t = socket.create_connection(("127.0.0.11", 53), timeout=4)
m = q(sys.argv[1]); t.sendall(struct.pack(">H", len(m)) + m)
n = struct.unpack(">H", t.recv(2))[0]; r = b""
while len(r) < n: r += t.recv(n - len(r))
print("tcp-after-idle rcode", r[3] & 0xF, "answers", struct.unpack(">H", r[6:8])[0])
print("response", "ignored" if udp(q(sys.argv[1], flags=0x8180)) is None else "answered")
r = udp(q(sys.argv[1], flags=0x1100)); print("status rcode", r[3] & 0xF if r else None)
r = udp(q(sys.argv[1], qtype=252)); print("axfr rcode", r[3] & 0xF if r else None)
"#;

#[test]
fn misbehaving_clients_are_handled() {
    let sb = sandbox("dns-abuse");
    sb.ok(&["network", "create", "app", "--subnet", "10.93.0.0/24"]);
    sleeper(&sb, "web", &["--network", "app"]);
    sleeper(&sb, "client", &["--network", "app"]);
    let out = sb.ok(&["exec", "client", "--", "python3", "-c", ABUSE_PY, "web"]);
    // 20 idle connections (more than the 16 a container may hold) do not lock TCP DNS out.
    assert!(out.contains("tcp-after-idle rcode 0 answers 1"), "{out}");
    assert!(out.contains("response ignored"), "{out}");
    assert!(out.contains("status rcode 4"), "NOTIMP: {out}");
    assert!(out.contains("axfr rcode 5"), "REFUSED: {out}");
    // And the resolver still answers.
    let (rcode, answers) = ask(&sb, "client", &["web"]);
    assert!(rcode.contains("NOERROR") && answers.len() == 1, "{rcode} {answers:?}");
}
