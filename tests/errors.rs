//! Every user error: one clear line, a non-zero exit code, and state left untouched.

mod common;

use common::*;

/// Runs a failing command and checks the error contract; returns stderr.
fn rejects(sb: &Sandbox, args: &[&str], expect: &str) -> String {
    let before = (sb.ok(&["ps", "-a", "-q"]), sb.ok(&["network", "ls"]), ours(&sb.host_links(), "nw"));
    let (code, err) = sb.fails(args);
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "one line for {args:?}: {err:?}");
    assert!(err.starts_with("netwright: "), "{err}");
    assert!(err.contains(expect), "{args:?}: expected {expect:?} in {err:?}");
    let after = (sb.ok(&["ps", "-a", "-q"]), sb.ok(&["network", "ls"]), ours(&sb.host_links(), "nw"));
    assert_eq!(before, after, "state changed by failing {args:?}");
    err
}

#[test]
fn every_error_is_one_line_nonzero_and_changes_nothing() {
    let sb = sandbox("err");
    sb.ok(&["network", "create", "n1", "--subnet", "10.40.0.0/24"]);
    sb.ok(&["network", "create", "tiny", "--subnet", "10.41.0.0/30"]);
    sb.ok(&["run", "-d", "--name", "taken", "--network", "n1", "--ip", "10.40.0.5", "--", "sleep", "300"]);

    rejects(&sb, &["run", "--network", "nope", "--", "true"], "network nope not found");
    rejects(&sb, &["inspect", "ghost"], "no such container: ghost");
    rejects(&sb, &["exec", "ghost", "--", "true"], "no such container: ghost");
    rejects(&sb, &["stop", "ghost"], "no such container: ghost");
    rejects(&sb, &["rm", "ghost"], "no such container: ghost");
    rejects(&sb, &["network", "inspect", "ghost"], "network ghost not found");
    rejects(&sb, &["network", "rm", "ghost"], "network ghost not found");
    rejects(&sb, &["run", "-d", "--name", "taken", "--", "true"], "already in use");
    rejects(&sb, &["run", "--name", "bad name!", "--", "true"], "invalid container name");
    rejects(&sb, &["network", "create", "n1"], "already exists");
    rejects(&sb, &["network", "create", "bridge"], "reserved");
    rejects(&sb, &["network", "create", "n2", "--subnet", "10.40.0.128/25"], "overlaps network n1");
    rejects(&sb, &["network", "create", "n2", "--subnet", "192.168.1.0/25"], "overlaps the host's route");
    rejects(&sb, &["network", "create", "n2", "--subnet", "10.50.0.0/33"], "not a valid CIDR");
    rejects(&sb, &["network", "create", "n2", "--subnet", "banana"], "not a valid CIDR");
    rejects(&sb, &["network", "create", "n2", "--subnet", "10.50.0.1/24"], "host bits set");
    rejects(&sb, &["network", "create", "n2", "--subnet", "10.50.0.0/24", "--gateway", "10.51.0.1"], "outside subnet");
    rejects(&sb, &["network", "create", "n2", "--opt", "colour=blue"], "unknown network option");
    rejects(&sb, &["network", "create", "n2", "-d", "ipvlan"], "not supported");
    rejects(&sb, &["network", "create", "n2", "-d", "overlay"], "cluster join");
    rejects(&sb, &["run", "--network", "n1", "--ip", "10.99.0.5", "--", "true"], "outside the network's subnet");
    rejects(&sb, &["run", "--network", "n1", "--ip", "10.40.0.5", "--", "true"], "already in use");
    rejects(&sb, &["run", "--network", "n1", "--ip", "10.40.0.1", "--", "true"], "gateway");
    rejects(&sb, &["run", "--network", "n1", "--ip", "nonsense", "--", "true"], "not a valid IPv4 address");
    rejects(&sb, &["network", "rm", "n1"], "in use by container(s) taken");
    rejects(&sb, &["network", "rm", "bridge"], "pre-defined network");
    rejects(&sb, &["rm", "taken"], "is running");

    // Pool exhaustion: a /30 has one address besides the gateway.
    sb.ok(&["run", "-d", "--name", "only", "--network", "tiny", "--", "sleep", "300"]);
    rejects(&sb, &["run", "--network", "tiny", "--", "true"], "no free address left in 10.41.0.0/30");

    // Not root: the same binary as an unprivileged user.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            env!("CARGO_BIN_EXE_netwright"),
            "run",
            "--",
            "true",
        ])
        .env("NETWRIGHT_ROOT", &sb.root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
    assert_eq!(err.lines().count(), 1);
}
