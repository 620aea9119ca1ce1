//! Names from the host: containers on `host_names=true` networks resolve from the host
//! through a managed block of its hosts file, kept in step with the containers. The
//! sandbox's host has a hosts file of its own (NETWRIGHT_HOSTS_FILE), read back as
//! /etc/hosts through a bind mount in a private mount namespace.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

const ORIGINAL: &str = "127.0.0.1\tlocalhost\n# an admin's comment\n192.168.1.100\tlanserver\n";

fn nw_hosts(sb: &Sandbox, hosts: &Path, args: &[&str]) -> Output {
    sb.netwright(args).env("NETWRIGHT_HOSTS_FILE", hosts).stdin(std::process::Stdio::null()).output().unwrap()
}

fn ok_hosts(sb: &Sandbox, hosts: &Path, args: &[&str]) {
    let out = nw_hosts(sb, hosts, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A shell command on the sandbox's host, with its hosts file as /etc/hosts.
fn on_host(sb: &Sandbox, hosts: &Path, script: &str) -> Output {
    let full = format!("mount --bind {} /etc/hosts && {script}", hosts.display());
    sb.in_host_cmd("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &full]).output().unwrap()
}

#[test]
fn host_names_follow_containers_and_leave_the_rest_alone() {
    let sb = sandbox("hostnames");
    let hosts = sb.dir.join("hosts");
    std::fs::write(&hosts, ORIGINAL).unwrap();
    ok_hosts(&sb, &hosts, &["network", "create", "app", "--subnet", "10.83.0.0/24", "--opt", "host_names=true"]);
    ok_hosts(&sb, &hosts, &["network", "create", "quiet", "--subnet", "10.84.0.0/24"]);
    let tcp = sb.script("tcp.py");
    ok_hosts(
        &sb,
        &hosts,
        &[
            "run",
            "-d",
            "--name",
            "api",
            "--network",
            "app",
            "--network-alias",
            "apiv2",
            "--",
            "python3",
            &tcp,
            "serve",
            "8080",
        ],
    );
    ok_hosts(&sb, &hosts, &["run", "-d", "--name", "hidden", "--network", "quiet", "--", "sleep", "300"]);
    let text = std::fs::read_to_string(&hosts).unwrap();
    assert!(text.starts_with(ORIGINAL), "the admin's lines are untouched:\n{text}");
    let ip = sb.ip_of("api");
    assert!(text.contains(&format!("{ip}\tapi ")) && text.contains("apiv2"), "{text}");
    assert!(!text.contains("hidden"), "only host_names networks: {text}");
    // The host resolves it and reaches it by name.
    let out = on_host(&sb, &hosts, "getent hosts api apiv2");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ip), "{out:?}");
    let reached = retry(|| {
        let o = on_host(&sb, &hosts, &format!("python3 {tcp} send api 8080 hi"));
        if o.status.success() { Ok(String::new()) } else { Err(String::from_utf8_lossy(&o.stderr).into_owned()) }
    });
    assert!(reached.is_ok(), "host -> api:8080 by name: {reached:?}");
    // The last such container gone: the block is gone, the file as it was.
    ok_hosts(&sb, &hosts, &["rm", "-f", "api"]);
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL);
    // A container's stop (its monitor releases it) and system reset take their lines too.
    ok_hosts(&sb, &hosts, &["run", "-d", "--name", "web", "--network", "app", "--", "sleep", "300"]);
    assert!(std::fs::read_to_string(&hosts).unwrap().contains("\tweb "));
    ok_hosts(&sb, &hosts, &["stop", "-t", "0", "web"]);
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL);
    ok_hosts(&sb, &hosts, &["run", "-d", "--name", "web2", "--network", "app", "--", "sleep", "300"]);
    ok_hosts(&sb, &hosts, &["system", "reset", "--force"]);
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL);
}
