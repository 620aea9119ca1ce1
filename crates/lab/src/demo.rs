//! `netwright demo`: the seed documents' picture, built for real in a sandbox.
//!
//! A LAN namespace stands for the outside world, a host namespace (eth0 192.168.1.10)
//! runs netwright; three containers — web, kv and api — join the default bridge and
//! talk to each other with real packets; then a second host and etcd carry an overlay
//! network across both. Everything is read back from the kernel and torn down at the end.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use netwright_engine::ctx::Ctx;
use netwright_engine::kernel::netns;
use netwright_engine::observe;
use netwright_testkit::{self as sandbox, Sandbox};

struct Demo {
    sb: Sandbox,
}

impl Demo {
    /// Runs `netwright ARGS` in the sandbox, echoing the command and its output.
    fn nw(&self, args: &[&str]) -> Result<String> {
        println!("  $ netwright {}", args.iter().map(|a| short(a)).collect::<Vec<_>>().join(" "));
        let out = self.sb.netwright(args).stdin(Stdio::null()).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in stdout.lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
            println!("    {l}");
        }
        if !out.status.success() {
            bail!("`netwright {}` failed", args.join(" "));
        }
        Ok(stdout)
    }

    fn quiet(&self, args: &[&str]) -> Result<String> {
        let out = self.sb.netwright(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("`netwright {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ip(&self, name: &str) -> Result<String> {
        let v: serde_json::Value = serde_json::from_str(&self.quiet(&["inspect", name])?)?;
        Ok(v[0]["NetworkSettings"]["IPAddress"].as_str().unwrap_or_default().to_string())
    }

    /// `netwright exec` with a retry while the server inside starts.
    fn exchange(&self, from: &str, args: &[&str]) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut full = vec!["exec", from, "--"];
            full.extend_from_slice(args);
            match self.quiet(&full) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Paths of the sandbox's scripts are long; show their file name only.
fn short(a: &str) -> String {
    if a.starts_with('/') && a.ends_with(".py") {
        Path::new(a).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    } else if a.contains(' ') {
        format!("{a:?}")
    } else {
        a.to_string()
    }
}

pub fn run(bin: &Path) -> Result<i32> {
    let bin = bin.to_path_buf();
    println!("netwright demo — Docker's default bridge, built on the real kernel in a throwaway sandbox\n");
    let sb = Sandbox::new("demo", &bin)?;
    println!("[1] Sandbox");
    println!(
        "  LAN namespace  : router {}, server {}, \"internet\" server {}",
        sandbox::LAN_ROUTER,
        sandbox::LAN_SERVER,
        sandbox::INTERNET_SERVER
    );
    println!(
        "  host namespace : eth0 {}/24, default via {} — netwright runs here",
        sandbox::HOST_ETH0,
        sandbox::LAN_ROUTER
    );
    println!("  state root     : {}\n", sb.root.display());
    let demo = Demo { sb };
    let result = steps(&demo);
    let sb = demo.sb;
    let dir = sb.dir.clone();
    drop(sb);
    println!("\n[6] Clean up");
    println!("  sandbox removed: {} ({})", dir.display(), if dir.exists() { "STILL THERE" } else { "gone" });
    result?;
    println!(
        "\nDone: egress NAT, a published port, the bridge and an overlay across two hosts carried real packets; nothing was left behind."
    );
    Ok(0)
}

fn steps(d: &Demo) -> Result<()> {
    let tcp = d.sb.script("tcp.py");
    let kv = d.sb.script("kv.py");
    println!("[2] Three containers on the default bridge network (api published), a sidecar and a loner");
    d.nw(&["run", "-d", "--name", "web", "--", "python3", "-m", "http.server", "80"])?;
    d.nw(&["run", "-d", "--name", "kv", "--", "python3", &kv])?;
    d.nw(&["run", "-d", "--name", "api", "-p", "8080:80", "--", "python3", "-m", "http.server", "80"])?;
    println!("  A sidecar in api's network namespace (the pod pattern) and a container with no network:");
    d.nw(&["run", "-d", "--name", "sidecar", "--network", "container:api", "--", "sleep", "infinity"])?;
    d.nw(&["run", "-d", "--name", "island", "--network", "none", "--", "sleep", "infinity"])?;
    d.nw(&["ps"])?;
    d.nw(&["network", "ls"])?;

    println!("\n[3] What the kernel now holds, read back over netlink");
    let names: Vec<(String, String, String)> = ["web", "kv", "api"]
        .iter()
        .map(|n| {
            let v: serde_json::Value =
                serde_json::from_str(&d.quiet(&["inspect", n]).unwrap_or_default()).unwrap_or_default();
            let veth = v[0]["NetworkSettings"]["Networks"]["bridge"]["Netwright"]["HostInterface"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let id = v[0]["Id"].as_str().unwrap_or_default().to_string();
            (n.to_string(), veth, id)
        })
        .collect();
    let host = observe::snapshot(Some(&d.sb.host))?;
    println!("  host namespace:");
    print!(
        "{}",
        host.describe("    ", |port| names
            .iter()
            .find(|(_, v, _)| *v == port.name)
            .map(|(n, _, _)| format!("container {n} (its eth0)")))
    );
    for (name, _, id) in &names {
        let path = d.sb.root.join("netns").join(&id[..12.min(id.len())]);
        let ns = netns::open(&path).with_context(|| format!("opening {}", path.display()))?;
        println!("  container {name} — network namespace pinned at {}:", path.display());
        print!("{}", observe::snapshot(Some(&ns))?.describe("    ", |_| None));
    }

    let table = netwright_engine::firewall::table_name(&Ctx::new(&d.sb.root)?);
    match d.sb.in_host_cmd("nft").args(["list", "table", "ip", &table]).output() {
        Ok(out) if out.status.success() => {
            println!("  nftables (netwright's own table; `nft list table ip {table}`):");
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                println!("    {l}");
            }
        }
        _ => println!("  (install nftables to see netwright's table {table} listed here)"),
    }

    println!("\n[4] The three packet flows");
    let lan_server =
        d.sb.in_lan_cmd("python3").args([&tcp, "serve", "7000"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let _lan_server = KillOnDrop(lan_server);
    println!("  Flow 1 — container -> LAN server {}:7000 (egress, masqueraded):", sandbox::LAN_SERVER);
    println!("    $ netwright exec web -- python3 tcp.py send {} 7000 hello", sandbox::LAN_SERVER);
    let reply = d.exchange("web", &["python3", &tcp, "send", &sandbox::LAN_SERVER.to_string(), "7000", "hello"])?;
    println!("    LAN server answered: {}", reply.trim());
    println!("    (it saw the host's address {}, not web's: MASQUERADE in postrouting)", sandbox::HOST_ETH0);
    println!("  Flow 2 — LAN client -> {}:8080 -> api:80 (published port, DNAT):", sandbox::HOST_ETH0);
    let get = format!(
        "import urllib.request as u; r = u.urlopen('http://{}:8080/', timeout=3); print('HTTP', r.status, r.reason, len(r.read()), 'bytes')",
        sandbox::HOST_ETH0
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = d.sb.in_lan_cmd("python3").args(["-c", &get]).output()?;
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "    $ (in the LAN namespace) python3 -c \"urllib.request.urlopen('http://{}:8080/')\"",
        sandbox::HOST_ETH0
    );
    println!("    {}", String::from_utf8_lossy(&out.stdout).trim());
    let log = d.quiet(&["logs", "api"])?;
    if let Some(line) = log.lines().rev().find(|l| l.contains("GET /")) {
        println!("    api's own log shows the real client: {line}");
    }
    println!("  Flow 3 — container <-> container over the bridge:");
    let (web, kv_ip, api) = (d.ip("web")?, d.ip("kv")?, d.ip("api")?);
    let get = format!(
        "import urllib.request as u; r = u.urlopen('http://{api}/', timeout=3); print('HTTP', r.status, r.reason, len(r.read()), 'bytes from api')"
    );
    println!("    web ({web}) -> api ({api}) port 80:");
    println!("    $ netwright exec web -- python3 -c \"urllib.request.urlopen('http://{api}/')\"");
    println!("    {}", d.exchange("web", &["python3", "-c", &get])?.trim());
    let kvcmd = format!(
        "import socket; s = socket.create_connection(('{kv_ip}', 6379), timeout=3); s.sendall(b'SET greeting hello-from-api\\nGET greeting\\n'); s.shutdown(1); print(s.makefile().read().strip().replace(chr(10), ' | '))"
    );
    println!("    api ({api}) -> kv ({kv_ip}) port 6379: SET greeting hello-from-api; GET greeting");
    println!("    {}", d.exchange("api", &["python3", "-c", &kvcmd])?.trim());
    d.quiet(&["run", "-d", "--name", "echo", "--", "python3", &tcp, "serve", "7000"])?;
    let echo_ip = d.ip("echo")?;
    println!("    kv ({kv_ip}) -> a fourth container, echo ({echo_ip}) port 7000, which reports the source it saw:");
    let reply = d.exchange("kv", &["python3", &tcp, "send", &echo_ip, "7000", "hello"])?;
    println!("    echo answered: {}", reply.trim());
    println!("    (the source is kv's own address {kv_ip}: on one bridge there is no NAT)");
    println!("\n  See it: netwright explains the path and checks the system");
    let tr = d.sb.netwright(["trace", "--probe", "web", &format!("lan:{}:7000", sandbox::LAN_SERVER)]).output()?;
    println!("  $ netwright trace --probe web lan:{}:7000", sandbox::LAN_SERVER);
    for l in String::from_utf8_lossy(&tr.stdout).lines() {
        println!("    {l}");
    }
    d.nw(&["topology"])?;
    let doc = d.sb.netwright(["doctor"]).output()?;
    println!("  $ netwright doctor");
    for l in String::from_utf8_lossy(&doc.stdout).lines() {
        println!("    {l}");
    }
    println!("  The sidecar reaches api on localhost — they share one network namespace:");
    let local = "import urllib.request as u; r = u.urlopen('http://127.0.0.1:80/', timeout=3); print('HTTP', r.status, r.reason, 'from 127.0.0.1:80')";
    println!("    $ netwright exec sidecar -- python3 -c \"urllib.request.urlopen('http://127.0.0.1:80/')\"");
    println!("    {}", d.exchange("sidecar", &["python3", "-c", local])?.trim());
    let links = d.quiet(&["exec", "island", "--", "ip", "-o", "link"])?;
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    println!("  island (--network none) has only: {}", names.join(", "));
    d.nw(&["rm", "-f", "web", "kv", "api", "echo", "sidecar", "island"])?;
    overlay(d)
}

/// `netwright` on one host of the multi-host part, echoed with the host's name.
fn on(h: &sandbox::Host, args: &[&str]) -> Result<String> {
    println!("  [{}] $ netwright {}", h.name, args.iter().map(|a| short(a)).collect::<Vec<_>>().join(" "));
    let out = h.netwright(args).stdin(Stdio::null()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in stdout.lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
        println!("    {l}");
    }
    if !out.status.success() {
        bail!("`netwright {}` on {} failed", args.join(" "), h.name);
    }
    Ok(stdout)
}

/// The seed's multi-host mode: a second host, etcd, one overlay network across both.
fn overlay(d: &Demo) -> Result<()> {
    println!("\n[5] Two hosts, one network: VXLAN, with etcd as the control plane");
    if std::process::Command::new("etcd").arg("--version").output().is_err() {
        println!("  skipped: etcd is not installed (apt install etcd-server)");
        return Ok(());
    }
    let url = d.sb.start_etcd()?;
    let (h1, h2) = (d.sb.host(1)?, d.sb.host(2)?);
    println!(
        "  etcd runs in the LAN namespace at {url}; h2 (eth0 {}) is a second host, routed through the LAN",
        h2.addr
    );
    for h in [&h1, &h2] {
        on(h, &["cluster", "join", "--etcd", &url, "--name", &h.name])?;
    }
    on(&h1, &["network", "create", "-d", "overlay", "--subnet", "10.77.0.0/24", "ov"])?;
    on(&h2, &["network", "ls"])?;
    let tcp = d.sb.script("tcp.py");
    on(&h2, &["run", "-d", "--name", "far", "--network", "ov", "--", "python3", &tcp, "serve", "7000"])?;
    on(&h1, &["run", "-d", "--name", "near", "--network", "ov", "--", "sleep", "300"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let out = h1.netwright(["exec", "near", "--", "python3", &tcp, "send", "far", "7000", "across"]).output()?;
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("    near (h1) -> far (h2) by name, over VXLAN: far answered \"{reply}\"");
    let far = h2.netwright(["inspect", "--format", "{{.NetworkSettings.Networks.ov.IPAddress}}", "far"]).output()?;
    let far = String::from_utf8_lossy(&far.stdout).trim().to_string();
    for size in ["1422", "1472"] {
        let ok = h1
            .netwright(["exec", "near", "--", "ping", "-c1", "-W2", "-M", "do", "-s", size, &far])
            .output()?
            .status
            .success();
        println!("    ping -M do -s {size} {far}: {}", if ok { "crosses" } else { "does not fit" });
    }
    println!("    (1422 + 28 = 1450 = 1500 − 50: 20 outer IPv4 + 8 UDP + 8 VXLAN + 14 inner Ethernet)");
    on(&h1, &["trace", "near", "far:7000"])?;
    on(&h1, &["rm", "-f", "near"])?;
    on(&h2, &["rm", "-f", "far"])?;
    Ok(())
}
