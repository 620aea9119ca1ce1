//! Test support: sandboxes, netwright invocations and polite waiting.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use netwright_engine::kernel::netlink::{Link, Netlink};
pub use netwright_testkit::{Host, Sandbox};

/// Where netwright runs: the sandbox's host, or one host of a multi-host sandbox.
pub trait Runner {
    fn netwright_cmd(&self, args: &[&str]) -> std::process::Command;
    fn script_path(&self, name: &str) -> String;
    fn links(&self) -> Vec<Link>;
}

impl Runner for Sandbox {
    fn netwright_cmd(&self, args: &[&str]) -> std::process::Command {
        self.netwright(args)
    }
    fn script_path(&self, name: &str) -> String {
        self.script(name)
    }
    fn links(&self) -> Vec<Link> {
        self.in_host(|| Netlink::open().unwrap().links().unwrap())
    }
}

impl Runner for Host {
    fn netwright_cmd(&self, args: &[&str]) -> std::process::Command {
        self.netwright(args)
    }
    fn script_path(&self, name: &str) -> String {
        self.script(name)
    }
    fn links(&self) -> Vec<Link> {
        self.within(|| Netlink::open().unwrap().links().unwrap())
    }
}

pub fn sandbox(label: &str) -> Sandbox {
    Sandbox::new(label, Path::new(env!("CARGO_BIN_EXE_netwright"))).expect("building sandbox")
}

pub trait Nw {
    fn nw(&self, args: &[&str]) -> Output;
    /// Runs netwright and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String;
    /// Runs netwright and insists on failure; returns (exit code, stderr).
    fn fails(&self, args: &[&str]) -> (i32, String);
    fn spawn_nw(&self, args: &[&str]) -> Child;
    fn host_links(&self) -> Vec<Link>;
    fn ip_of(&self, container: &str) -> String;
    fn inspect(&self, container: &str) -> serde_json::Value;
    /// Sends `msg` from inside `from` to HOST:PORT, retrying while the server starts.
    fn send_from(&self, from: &str, host: &str, port: u16, msg: &str) -> Result<String, String>;
    /// Same, but exactly once (for "must fail" checks).
    fn send_once(&self, from: &str, host: &str, port: u16, msg: &str) -> Result<String, String>;
}

impl<R: Runner> Nw for R {
    fn nw(&self, args: &[&str]) -> Output {
        self.netwright_cmd(args).stdin(Stdio::null()).output().expect("running netwright")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.nw(args);
        assert!(
            out.status.success(),
            "netwright {args:?} failed ({:?}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.nw(args);
        assert!(
            !out.status.success(),
            "netwright {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn spawn_nw(&self, args: &[&str]) -> Child {
        self.netwright_cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning netwright")
    }

    fn host_links(&self) -> Vec<Link> {
        self.links()
    }

    fn inspect(&self, container: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", container])).expect("inspect JSON");
        v[0].clone()
    }

    fn ip_of(&self, container: &str) -> String {
        let v = self.inspect(container);
        let nets = v["NetworkSettings"]["Networks"].as_object().expect("networks").clone();
        nets.values().next().expect("one network")["IPAddress"].as_str().unwrap().to_string()
    }

    fn send_from(&self, from: &str, host: &str, port: u16, msg: &str) -> Result<String, String> {
        let mut last = Err(String::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            last = self.send_once(from, host, port, msg);
            if last.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last
    }

    fn send_once(&self, from: &str, host: &str, port: u16, msg: &str) -> Result<String, String> {
        let script = self.script_path("tcp.py");
        let port = port.to_string();
        let out = self.nw(&["exec", from, "--", "python3", &script, "send", host, &port, msg]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn ours(links: &[Link], prefix: &str) -> Vec<String> {
    links.iter().filter(|l| l.name.starts_with(prefix)).map(|l| l.name.clone()).collect()
}

/// tcp.py `send` from the LAN namespace ("another machine").
pub fn from_lan(sb: &Sandbox, host: &str, port: u16, proto: &str) -> Result<String, String> {
    tcp_client(sb.in_lan_cmd("python3"), sb, host, port, proto)
}

/// tcp.py `send` from the host namespace itself, outside any container.
pub fn from_host(sb: &Sandbox, host: &str, port: u16, proto: &str) -> Result<String, String> {
    tcp_client(sb.in_host_cmd("python3"), sb, host, port, proto)
}

fn tcp_client(
    mut cmd: std::process::Command,
    sb: &Sandbox,
    host: &str,
    port: u16,
    proto: &str,
) -> Result<String, String> {
    let out = cmd
        .args([&sb.script("tcp.py"), "send", host, &port.to_string(), "hi", proto])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Retries while a server starts (up to 5 s).
pub fn retry(mut f: impl FnMut() -> Result<String, String>) -> Result<String, String> {
    let mut last = Err(String::new());
    for _ in 0..50 {
        last = f();
        if last.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// A helper process (a server in the LAN, say) killed when the test ends, also on panic.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A namespace made the way a runtime makes one, pinned in the sandbox directory.
pub fn runtime_ns(sb: &Sandbox, name: &str) -> (std::path::PathBuf, std::os::fd::OwnedFd) {
    let dir = sb.dir.join("runtime-ns");
    netwright_engine::kernel::netns::ensure_shared_dir(&dir).unwrap();
    let path = dir.join(name);
    let fd = netwright_engine::kernel::netns::create_pinned(&path).unwrap();
    (path, fd)
}

/// Runs netwright with NETWRIGHT_DIE_AT=STEP: it kills itself with SIGKILL at that step.
/// Asserts that it did die there (a step that is never reached is a test bug).
pub fn killed_at(sb: &Sandbox, step: &str, args: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let out = sb.netwright(args).env("NETWRIGHT_DIE_AT", step).stdin(Stdio::null()).output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "netwright {args:?} should have died at {step:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `doctor`'s verdict on drift (store vs kernel) and the firewall: both must be ok.
pub fn agrees(sb: &impl Nw) -> Result<(), String> {
    let out = sb.nw(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for check in ["drift", "firewall"] {
        let line = text.lines().find(|l| l.split_whitespace().nth(1) == Some(check)).unwrap_or("");
        if !line.starts_with("ok") {
            return Err(text);
        }
    }
    Ok(())
}
