//! Backend mode: `netwright attach` networks a namespace a runtime made (as netavark
//! setup does) and `detach` takes out everything it put there, leaving the namespace.

mod common;

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use netwright_engine::kernel::{netlink::Netlink, netns};

fn links_in(ns: &OwnedFd) -> Vec<String> {
    netns::within(ns, || Netlink::open().unwrap().links().unwrap()).unwrap().into_iter().map(|l| l.name).collect()
}

fn tables_in(ns: &OwnedFd) -> String {
    let out = Sandbox::in_ns_cmd(ns, "nft").args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ask_in(sb: &Sandbox, ns: &OwnedFd, name: &str) -> String {
    let out = Sandbox::in_ns_cmd(ns, "python3").args([&sb.script("dnsq.py"), name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn attach_networks_a_runtimes_namespace_and_detach_undoes_it() {
    let sb = sandbox("attach");
    sb.ok(&["network", "create", "app", "--subnet", "10.94.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "web", "--network", "app", "--", "sleep", "300"]);
    let (path, ns) = runtime_ns(&sb, "pod1");
    let out = sb.ok(&[
        "attach",
        path.to_str().unwrap(),
        "--name",
        "rt",
        "--network",
        "app",
        "-p",
        "18080:80",
        "--network-alias",
        "svc",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("attach prints the inspect document");
    let ip = doc["NetworkSettings"]["Networks"]["app"]["IPAddress"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.94.0."), "{out}");
    assert!(links_in(&ns).contains(&"eth0".to_string()));
    let ps = sb.ok(&["ps"]);
    assert!(ps.contains("rt") && ps.contains("attached"), "{ps}");
    // The observers see it like any container: its veth in the topology, a healthy doctor.
    let veth = doc["NetworkSettings"]["Networks"]["app"]["Netwright"]["HostInterface"].as_str().unwrap().to_string();
    let topo = sb.ok(&["topology"]);
    assert!(topo.contains("rt") && topo.contains(&veth) && topo.contains(&ip) && !topo.contains("MISSING"), "{topo}");
    // (trace exits 0 only for DELIVERED)
    let trace = sb.ok(&["trace", "web", "rt:80"]);
    assert!(trace.contains("DELIVERED") && trace.contains(&ip), "{trace}");

    // A server the runtime runs in its namespace is reachable through the published port,
    // and the namespace resolves the network's names (and is resolved) like a container.
    let mut server = Sandbox::in_ns_cmd(&ns, "python3")
        .args([&sb.script("tcp.py"), "serve", "80"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let r = retry(|| from_lan(&sb, "192.168.1.10", 18080, "tcp"));
    let web_ip = sb.ip_of("web");
    assert!(ask_in(&sb, &ns, "web").contains(&web_ip), "the runtime's namespace resolves web");
    assert!(sb.send_from("web", "svc", 80, "hi").is_ok(), "web reaches the attached namespace by its alias");
    server.kill().ok();
    server.wait().ok();
    r.expect("LAN -> published port of the attached namespace");

    // Detach: the port, the interfaces, the DNS redirect and the record go; the namespace stays.
    sb.ok(&["detach", "rt"]);
    assert!(from_lan(&sb, "192.168.1.10", 18080, "tcp").is_err(), "the port is no longer published");
    assert!(
        eventually(Duration::from_secs(5), || !links_in(&ns).contains(&"eth0".to_string())),
        "eth0 removed: {:?}",
        links_in(&ns)
    );
    assert!(!tables_in(&ns).contains("netwright"), "DNS redirect removed: {}", tables_in(&ns));
    assert!(
        eventually(Duration::from_secs(5), || !ours(&sb.host_links(), &veth).contains(&veth)),
        "host veth {veth} removed"
    );
    assert!(!sb.ok(&["ps", "-a"]).contains("rt"));
    assert!(netns::is_nsfs(&std::fs::File::open(&path).unwrap()), "the runtime's namespace is the runtime's");
    // The same name and port can be attached again at once.
    sb.ok(&["attach", path.to_str().unwrap(), "--name", "rt", "--network", "app", "-p", "18080:80"]);
    sb.ok(&["detach", "rt"]);
    netns::remove_pinned(&path).unwrap();
}

#[test]
fn a_namespace_gone_without_detach_is_released_by_the_next_command() {
    let sb = sandbox("attach-gone");
    sb.ok(&["network", "create", "app", "--subnet", "10.95.0.0/24"]);
    let (path, ns) = runtime_ns(&sb, "pod2");
    let doc: serde_json::Value = serde_json::from_str(&sb.ok(&[
        "attach",
        path.to_str().unwrap(),
        "--name",
        "rt",
        "--network",
        "app",
        "-p",
        "18081:80",
    ]))
    .unwrap();
    let veth = doc["NetworkSettings"]["Networks"]["app"]["Netwright"]["HostInterface"].as_str().unwrap().to_string();
    // The runtime deletes its namespace and forgets to call detach (or crashed).
    drop(ns);
    netns::remove_pinned(&path).unwrap();
    let ps = sb.ok(&["ps", "-a"]);
    assert!(ps.contains("rt") && ps.contains("Exited"), "{ps}");
    assert!(
        eventually(Duration::from_secs(5), || !ours(&sb.host_links(), &veth).contains(&veth)),
        "host veth {veth} released"
    );
    // Its port and name are free for the next one.
    sb.ok(&["rm", "rt"]);
    let (path2, _ns2) = runtime_ns(&sb, "pod3");
    sb.ok(&["attach", path2.to_str().unwrap(), "--name", "rt", "--network", "app", "-p", "18081:80"]);
    sb.ok(&["detach", "rt"]);
    netns::remove_pinned(&path2).unwrap();
}

#[test]
fn attach_refuses_what_is_not_a_runtimes_namespace() {
    let sb = sandbox("attach-bad");
    sb.ok(&["network", "create", "app", "--subnet", "10.96.0.0/24"]);
    let (path, ns) = runtime_ns(&sb, "pod4");
    let p = path.to_str().unwrap();
    let before = sb.host_links().len();
    for (args, says) in [
        (vec!["attach", "/etc/hostname", "--network", "app"], "not a network namespace"),
        (vec!["attach", "/nonexistent/ns", "--network", "app"], "cannot open namespace"),
        (vec!["attach", "/proc/self/ns/net", "--network", "app"], "own (the host's)"),
        (vec!["attach", p, "--network", "host"], "bridge or macvlan networks"),
        (vec!["attach", p, "--network", "nosuch"], "nosuch"),
        (vec!["attach", p, "--network", "app", "-p", "notaport"], "notaport"),
    ] {
        let (code, err) = sb.fails(&args);
        assert!(code != 0 && err.contains(says) && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
    // Nothing was left behind: no record, no device, nothing in the namespace.
    assert_eq!(sb.ok(&["ps", "-a", "-q"]).trim(), "");
    assert_eq!(sb.host_links().len(), before);
    assert_eq!(links_in(&ns), vec!["lo".to_string()]);
    // An eth0 of the runtime's own, in use, is not taken over.
    for cmd in [&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"][..], &["link", "set", "eth0", "up"]] {
        assert!(Sandbox::in_ns_cmd(&ns, "ip").args(cmd).status().unwrap().success());
    }
    // With a port: it is published on a second thread while the links are made, so it
    // may be in the map when the links fail; the undo must take it out again.
    let (_, err) = sb.fails(&["attach", p, "--network", "app", "-p", "18080:80"]);
    assert!(err.contains("already has an interface eth0 in use"), "{err}");
    assert_eq!(sb.ok(&["ps", "-a", "-q"]).trim(), "");
    assert_eq!(sb.host_links().len(), before);
    let ruleset = sb.in_host_cmd("nft").args(["list", "ruleset"]).output().unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(ruleset.contains("pub_any") && !ruleset.contains("18080"), "{ruleset}");
    netns::remove_pinned(&path).unwrap();
}

#[test]
fn a_namespace_dropped_without_detach_is_let_go_by_the_resolver() {
    // A runtime that deletes its namespace without `detach` and runs no netwright command
    // afterwards: the DNS resolver must not keep that namespace (and itself) alive.
    let sb = sandbox("attach-dropped");
    sb.ok(&["network", "create", "app", "--subnet", "10.97.0.0/24"]);
    let (path, ns) = runtime_ns(&sb, "gone");
    sb.ok(&["attach", path.to_str().unwrap(), "--name", "ghost", "--network", "app"]);
    let resolver = || {
        netwright_engine::kernel::process::of_root(&sb.root)
            .into_iter()
            .any(|(_, a)| a.iter().any(|x| x == "_resolver"))
    };
    assert!(resolver(), "names are served");
    drop(ns);
    netns::remove_pinned(&path).unwrap();
    // No command runs: the resolver notices at its next periodic sync and, with nothing
    // left to serve, leaves (10-20 s later).
    assert!(eventually(Duration::from_secs(40), || !resolver()), "the resolver let go and left");
    sb.ok(&["ps", "-a"]);
}
