//! `--explain` is true: the commands netwright prints for `network create` and `run` are
//! run by hand with `sh` in a fresh sandbox where netwright never ran, and the seed's three
//! flows work there with real packets — container → container, container → outside
//! (masqueraded), outside → published port → container.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use common::*;

fn explained(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.nw(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    // netwright's own notices ("netwright: set net.ipv4.ip_forward=1 ...") are not commands.
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("netwright: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn explained_commands_rebuild_the_seed_flows_by_hand() {
    // 1. netwright does it, and says how.
    let a = sandbox("explain-a");
    let tcp = a.script("tcp.py");
    let mut script = explained(&a, &["network", "create", "demo", "--subnet", "10.86.0.0/24", "--explain"]);
    script += &explained(
        &a,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "demo",
            "-p",
            "8080:80",
            "--explain",
            "--",
            "python3",
            &tcp,
            "serve",
            "80",
        ],
    );
    script +=
        &explained(&a, &["run", "-d", "--name", "client", "--network", "demo", "--explain", "--", "sleep", "300"]);
    for want in [
        "ip link add nwb",
        "type bridge",
        "nft -f -",
        "ip netns add web",
        "type veth peer name eth0 netns web",
        "pub_any '{ tcp . 8080 : 10.86.0.2 . 80 }'",
    ] {
        assert!(script.contains(want), "{want} in:\n{script}");
    }
    // Where netwright did it, the flows work (the baseline).
    a.send_from("client", "10.86.0.2", 80, "c2c").expect("client -> web");
    // --dry-run: the same commands, nothing done.
    let before = (a.ok(&["network", "ls", "-q"]), a.ok(&["ps", "-aq"]), ours(&a.host_links(), "nw").len());
    let dry = a.ok(&["network", "create", "later", "--subnet", "10.87.0.0/24", "--dry-run"]);
    assert!(dry.contains("ip addr add 10.87.0.1/24 dev nwb") && dry.contains("type bridge"), "{dry}");
    let dry =
        a.ok(&["run", "-d", "--name", "db", "--network", "demo", "-p", "5432:5432", "--dry-run", "--", "sleep", "1"]);
    assert!(
        dry.contains("ip netns add db")
            && dry.contains("10.86.0.4/24")
            && dry.contains("tcp . 5432 : 10.86.0.4 . 5432"),
        "{dry}"
    );
    let after = (a.ok(&["network", "ls", "-q"]), a.ok(&["ps", "-aq"]), ours(&a.host_links(), "nw").len());
    assert_eq!(before, after, "a dry run changes nothing");
    let (_, err) = a.fails(&["run", "--network", "demo", "-p", "8080:80", "--dry-run", "--", "true"]);
    assert!(err.contains("already published by container web"), "bad input is refused as without --dry-run: {err}");
    drop(a);

    // 2. The same commands by hand in a fresh sandbox: no netwright at all.
    let b = sandbox("explain-b");
    let tcp = b.script("tcp.py");
    let _lan = Kill(b.in_lan_cmd("python3").args([&tcp, "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap());
    let driver = format!(
        "set -e\n\
         # ip netns keeps its namespaces in /run/netns: a private /run, so nothing reaches the host's\n\
         mount -t tmpfs none /run\n\
         {script}\n\
         ip netns exec web python3 {tcp} serve 80 >/dev/null 2>&1 &\n\
         for i in $(seq 50); do ip netns exec client python3 {tcp} send 10.86.0.2 80 ping >/dev/null 2>&1 && break; sleep 0.1; done\n\
         echo \"FLOW1 $(ip netns exec client python3 {tcp} send 10.86.0.2 80 c2c)\"\n\
         echo \"FLOW2 $(ip netns exec client python3 {tcp} send 192.168.1.100 7000 out)\"\n\
         echo READY\n\
         sleep 60\n"
    );
    std::fs::write(b.dir.join("by-hand.sh"), &driver).unwrap();
    let mut child = b
        .in_host_cmd("unshare")
        .args(["--mount", "--propagation", "private", "sh", b.dir.join("by-hand.sh").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "READY" {
            break;
        }
        seen.push(line);
    }
    let flows = seen.join("\n");
    let stop = |mut child: std::process::Child| {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        err
    };
    if !flows.contains("FLOW2") {
        let err = stop(child);
        panic!("the commands failed by hand:\n{flows}\n{err}\n--- script ---\n{driver}");
    }
    // Outside → published port → container (while the by-hand namespaces are alive).
    let lan = retry(|| from_lan(&b, "192.168.1.10", 8080, "tcp"));
    stop(child);
    // Container → container, no NAT inside a network.
    assert!(flows.contains("c2c from 10.86.0.3"), "by hand:\n{flows}");
    // Container → outside, masqueraded to the host's address.
    assert!(flows.contains("out from 192.168.1.10"), "by hand:\n{flows}");
    let r = lan.expect("LAN -> published port, by hand");
    assert!(r.contains("hi from 192.168.1."), "{r}");
}
