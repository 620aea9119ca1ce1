//! The rough edges a new user hits: each one reproduced, each one fixed.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The same binary as an unprivileged user.
fn as_nobody(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", env!("CARGO_BIN_EXE_netwright")])
        .args(args)
        .env("NETWRIGHT_ROOT", &sb.root)
        .output()
        .unwrap()
}

#[test]
fn a_small_mtu_works_end_to_end() {
    let sb = sandbox("re-mtu");
    sb.ok(&["network", "create", "small", "--subnet", "10.73.0.0/24", "--opt", "mtu=576"]);
    let tcp = sb.script("tcp.py");
    sb.ok(&["run", "-d", "--name", "srv", "--network", "small", "--", "python3", &tcp, "serve", "80"]);
    sb.ok(&["run", "-d", "--name", "cli", "--network", "small", "--", "sleep", "300"]);
    sb.send_from("cli", &sb.ip_of("srv"), 80, "x").expect("packets flow at MTU 576");
    let mtu = sb.ok(&["exec", "cli", "--", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "576");
    let (_, err) = sb.fails(&["network", "create", "tiny", "--opt", "mtu=60"]);
    assert!(err.contains("between 68 and 65535"), "{err}");
}

#[test]
fn reads_as_non_root_say_so_in_one_line() {
    let sb = sandbox("re-nonroot");
    sb.ok(&["network", "ls"]);
    for args in [&["ps"][..], &["network", "ls"], &["topology"], &["inspect", "x"]] {
        let out = as_nobody(&sb, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("needs root") && err.lines().count() == 1, "{args:?}: {err}");
    }
}

#[test]
fn a_closed_stdout_never_stops_the_work() {
    let sb = sandbox("re-pipe");
    for n in ["aa", "bb", "cc"] {
        sb.ok(&["run", "-d", "--name", n, "--", "sleep", "300"]);
    }
    // `rm -f aa bb cc | true`: the reader is gone before netwright writes.
    let mut child = sb.netwright(["rm", "-f", "aa", "bb", "cc"]).stdout(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(sb.ok(&["ps", "-a", "-q"]).trim(), "", "every container removed");
}

#[test]
fn usage_errors_are_one_line() {
    let sb = sandbox("re-usage");
    for (args, says) in [
        (&["network", "ls", "--bogus"][..], "unexpected argument '--bogus'"),
        (&["network", "create"], "required"),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let (code, err) = sb.fails(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.trim().lines().count() == 1 && err.contains(says) && err.contains("--help"), "{args:?}: {err}");
    }
}

#[test]
fn names_and_hostnames_follow_the_rules() {
    let sb = sandbox("re-names");
    let long = "n".repeat(300);
    for (args, says) in [
        (vec!["network", "create", long.as_str()], "300 characters, at most 63"),
        (vec!["run", "--name", long.as_str(), "--", "true"], "300 characters, at most 63"),
        (vec!["run", "--hostname", "a/b", "--", "true"], "invalid --hostname"),
        (vec!["run", "--hostname", &"h".repeat(70), "--", "true"], "invalid --hostname"),
    ] {
        let (_, err) = sb.fails(&args);
        assert!(err.contains(says) && err.lines().count() == 1, "{args:?}: {err}");
    }
    // 63 is fine, and resolves.
    sb.ok(&["network", "create", "app", "--subnet", "10.74.0.0/24"]);
    let name = "x".repeat(63);
    sb.ok(&["run", "-d", "--name", &name, "--network", "app", "--", "sleep", "300"]);
    let out = sb.ok(&["run", "--rm", "--network", "app", "--", "getent", "hosts", &name]);
    assert!(out.contains("10.74.0."), "{out}");
}

#[test]
fn attach_refuses_other_namespace_kinds_and_keeps_the_address_counter() {
    let sb = sandbox("re-attach");
    sb.ok(&["network", "create", "n1", "--subnet", "10.75.0.0/24"]);
    let (_, err) = sb.fails(&["attach", "/proc/self/ns/mnt", "--network", "n1"]);
    assert!(err.contains("is a mount namespace, not a network namespace"), "{err}");
    let (path, _ns) = runtime_ns(&sb, "p1");
    let p = path.to_str().unwrap();
    let first = sb.ok(&["attach", p, "--name", "a1", "--network", "n1"]);
    assert!(first.contains("10.75.0.2"), "{first}");
    let (_, err) = sb.fails(&["attach", p, "--name", "a2", "--network", "n1"]);
    assert!(err.contains("already attached"), "{err}");
    // A namespace whose eth0 is in use: set-up fails after the address was chosen.
    let (path2, ns2) = runtime_ns(&sb, "p2");
    let p2 = path2.to_str().unwrap();
    Sandbox::in_ns_cmd(&ns2, "ip")
        .args(["link", "add", "eth0", "type", "veth", "peer", "name", "eth9"])
        .status()
        .unwrap();
    Sandbox::in_ns_cmd(&ns2, "ip").args(["link", "set", "eth0", "up"]).status().unwrap();
    let (_, err) = sb.fails(&["attach", p2, "--name", "a2", "--network", "n1"]);
    assert!(err.contains("eth0 in use"), "{err}");
    // Neither refusal moved the address counter: the next container gets .3.
    let (path3, _ns3) = runtime_ns(&sb, "p3");
    let third = sb.ok(&["attach", path3.to_str().unwrap(), "--name", "a3", "--network", "n1"]);
    assert!(third.contains("10.75.0.3"), "{third}");
    sb.ok(&["detach", "a1", "a3"]);
}

#[test]
fn doctor_is_clean_right_after_detach_and_rm() {
    let sb = sandbox("re-doctor");
    sb.ok(&["network", "create", "n1", "--subnet", "10.76.0.0/24"]);
    let (path, _ns) = runtime_ns(&sb, "p1");
    let p = path.to_str().unwrap();
    for _ in 0..3 {
        sb.ok(&["attach", p, "--name", "a1", "--network", "n1"]);
        sb.ok(&["detach", "a1"]);
        let out = sb.nw(&["doctor"]);
        assert!(out.status.success(), "doctor right after detach: {}", String::from_utf8_lossy(&out.stdout));
        sb.ok(&["run", "-d", "--name", "r1", "--network", "n1", "--", "sleep", "300"]);
        sb.ok(&["rm", "-f", "r1"]);
        let out = sb.nw(&["doctor"]);
        assert!(out.status.success(), "doctor right after rm -f: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn system_reset_leaves_nothing_and_the_root_can_go() {
    let sb = sandbox("re-reset");
    sb.ok(&["network", "create", "app", "--subnet", "10.77.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "web", "--network", "app", "-p", "8080:80", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "old", "--", "sleep", "300"]);
    sb.ok(&["run", "--rm", "--network", "app", "--", "getent", "hosts", "web"]); // the DNS resolver runs
    // The namespace pins live in a tmpfs of the root's own (netns::ensure_shared_dir).
    let pins = format!(" {} ", sb.root.join("netns").display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts.lines().any(|l| l.contains(&pins) && l.contains(" - tmpfs ")),
        "the root's netns directory is a tmpfs:\n{mounts}"
    );
    let (_, err) = sb.fails(&["system", "reset"]);
    assert!(err.contains("--force"), "{err}");
    sb.ok(&["system", "reset", "--force"]);
    assert!(!sb.root.exists(), "the state root is gone");
    assert!(ours(&sb.host_links(), "nw").is_empty(), "{:?}", ours(&sb.host_links(), "nw"));
    let tables = sb.in_host_cmd("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("netwright"));
    let gone = eventually(Duration::from_secs(3), || netwright_engine::kernel::process::of_root(&sb.root).is_empty());
    assert!(gone, "no process of the root is left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(sb.root.to_str().unwrap()), "no mount under the root is left");
    // And netwright starts from scratch there again.
    sb.ok(&["network", "ls"]);
}

#[test]
fn docker_habits_format_filter_tail_prune_and_names_in_inspect() {
    let sb = sandbox("re-habits");
    sb.ok(&["network", "create", "app", "--subnet", "10.78.0.0/24"]);
    sb.ok(&["network", "create", "spare", "--subnet", "10.79.0.0/24"]);
    sb.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "app",
        "--network-alias",
        "www",
        "--",
        "sh",
        "-c",
        "seq 1 5; sleep 300",
    ]);
    sb.ok(&["run", "--name", "done", "--network", "app", "--", "true"]);
    // inspect --format with Go templates, as the seed documents use them.
    let pid = sb.ok(&["inspect", "--format", "{{.State.Pid}}", "web"]);
    assert!(pid.trim().parse::<u32>().unwrap() > 1, "{pid}");
    let ip = sb.ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "web"]);
    assert_eq!(ip.trim(), sb.ip_of("web"));
    let aliases = sb.ok(&["inspect", "-f", "{{json .NetworkSettings.Networks.app.Aliases}}", "web"]);
    assert_eq!(aliases.trim(), r#"["www"]"#);
    let names = sb.ok(&["inspect", "-f", "{{join .NetworkSettings.Networks.app.DNSNames \",\"}}", "web"]);
    assert!(names.starts_with("web,") && names.trim().ends_with(",www"), "{names}");
    let subnet = sb.ok(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "app"]);
    assert_eq!(subnet.trim(), "10.78.0.0/24");
    let (_, err) = sb.fails(&["inspect", "-f", "{{.State.Pid", "web"]);
    assert!(err.contains("template") && err.lines().count() == 1, "{err}");
    // ps --filter and a template.
    assert_eq!(sb.ok(&["ps", "--filter", "status=exited", "--format", "{{.Names}}"]).trim(), "done");
    assert_eq!(sb.ok(&["ps", "-a", "-f", "name=we", "--format", "{{.Names}}"]).trim(), "web");
    assert_eq!(sb.ok(&["ps", "-a", "-f", "network=spare", "-q"]).trim(), "");
    // logs --tail.
    let ok = eventually(Duration::from_secs(5), || sb.ok(&["logs", "web"]).lines().count() == 5);
    assert!(ok);
    assert_eq!(sb.ok(&["logs", "--tail", "2", "web"]), "4\n5\n");
    // network prune asks first; no answer (no terminal) is a no.
    sb.ok(&["network", "prune"]);
    assert!(sb.ok(&["network", "ls"]).contains("spare"));
    sb.ok(&["network", "prune", "-f"]);
    assert!(!sb.ok(&["network", "ls"]).contains("spare"));
}

#[test]
fn stop_and_exec_on_an_attached_container_say_what_to_do() {
    let sb = sandbox("re-attached");
    sb.ok(&["network", "create", "n1", "--subnet", "10.80.0.0/24"]);
    let (path, _ns) = runtime_ns(&sb, "p1");
    sb.ok(&["attach", path.to_str().unwrap(), "--name", "a1", "--network", "n1"]);
    let (_, err) = sb.fails(&["stop", "a1"]);
    assert!(err.contains("netwright detach a1") && err.lines().count() == 1, "{err}");
    let (_, err) = sb.fails(&["exec", "a1", "--", "true"]);
    assert!(err.contains("nsenter --net=") && err.lines().count() == 1, "{err}");
    // Still attached and working: stop changed nothing.
    assert!(sb.ok(&["ps"]).contains("a1"));
    sb.ok(&["detach", "a1"]);
}

#[test]
fn a_private_mount_namespace_works_or_says_to_use_nsenter() {
    let sb = sandbox("re-mntns");
    // `ip netns exec` gives each command a mount namespace of its own; so does this.
    for _ in 0..20 {
        // In the sandbox's host namespace, like every netwright command here.
        let out = sb
            .in_host_cmd("unshare")
            .args(["--mount", "--propagation", "private", env!("CARGO_BIN_EXE_netwright"), "run", "--rm", "--", "true"])
            .env("NETWRIGHT_ROOT", &sb.root)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Either it works, or it says in one line what to do instead.
        // (an informational line, like the ip_forward notice, may come before it)
        let explained = err.trim().lines().last().is_some_and(|l| l.contains("nsenter --net="));
        assert!(out.status.success() || explained, "{:?}: {err}", out.status);
    }
}
