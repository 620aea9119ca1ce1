//! Real Podman (Debian's 4.3, runc, a busybox image made here, no registry) with netwright as
//! its network backend: `netavark` in Podman's helper directory is a link to netwright.
//! Podman runs in the sandbox's host namespace; its storage and configuration live in the
//! sandbox directory. Skipped, saying so, where Podman is not installed (`.ci/run` installs it).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Where rootful Podman 4.3 tells netavark to keep its state (`--config`): netwright's state
/// root for Podman is below it.
const PODMAN_NETWORK_RUN_DIR: &str = "/run/containers/networks";

struct Podman<'a> {
    sb: &'a Sandbox,
    conf: PathBuf,
    storage: PathBuf,
    backend: Backend,
}

impl Podman<'_> {
    fn cmd(&self, args: &[&str]) -> Output {
        self.sb
            .in_host_cmd("podman")
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-a", "-t", "0"]);
        let _ = self.cmd(&["network", "prune", "-f"]);
        let root = match self.backend {
            Backend::Netavark => PathBuf::from(format!("{PODMAN_NETWORK_RUN_DIR}/netwright")),
            Backend::Cni => self.sb.root.join("cni"),
        };
        let _ = self
            .sb
            .netwright(["--root".as_ref(), root.as_os_str(), "system".as_ref(), "reset".as_ref(), "--force".as_ref()])
            .output();
    }
}

fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    /// `netavark` in the helper directory is netwright.
    Netavark,
    /// Podman's CNI backend with a conflist whose plugin is netwright-cni.
    Cni,
}

/// Podman with netwright as its backend, and a busybox image.
fn podman(sb: &Sandbox, backend: Backend) -> Option<Podman<'_>> {
    if !installed("podman") || !installed("runc") || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: podman, runc and busybox-static are needed (apt-get install podman runc busybox-static)");
        return None;
    }
    let dir = sb.dir.join("podman");
    let helpers = dir.join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    for name in ["netavark", "aardvark-dns", "netwright-cni"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_netwright"), helpers.join(name)).unwrap();
    }
    let d = dir.display();
    let network = match backend {
        Backend::Netavark => format!("network_backend = \"netavark\"\nnetwork_config_dir = \"{d}/networks\"\n"),
        Backend::Cni => {
            // One network, its plugin netwright-cni (declaring the capabilities Podman fills).
            std::fs::create_dir_all(dir.join("cni")).unwrap();
            let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": "cninet", "plugins": [{
                "type": "netwright-cni", "subnet": "10.66.0.0/24", "root": sb.root.join("cni"),
                "capabilities": {"portMappings": true, "aliases": true, "ips": true, "mac": true}}]});
            std::fs::write(dir.join("cni/cninet.conflist"), conflist.to_string()).unwrap();
            format!(
                "network_backend = \"cni\"\nnetwork_config_dir = \"{d}/cni\"\ncni_plugin_dirs = [\"{d}/helpers\"]\n"
            )
        }
    };
    std::fs::write(
        dir.join("containers.conf"),
        format!(
            "[network]\n{network}\
             [engine]\nhelper_binaries_dir = [\"{d}/helpers\"]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\ntmp_dir = \"{d}/tmp\"\n\
             [containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("storage.conf"),
        format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n"),
    )
    .unwrap();
    // A busybox image from the static binary: no registry needed.
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for sub in ["etc", "proc", "sys", "dev", "tmp", "run", "www"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "ip", "wget", "nslookup", "httpd", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("www/index.html"), "hello from podman\n").unwrap();
    let tar = dir.join("busybox.tar");
    assert!(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    let p = Podman { sb, conf: dir.join("containers.conf"), storage: dir.join("storage.conf"), backend };
    p.ok(&["import", tar.to_str().unwrap(), "localhost/busybox:latest"]);
    Some(p)
}

/// An HTTP GET from a namespace of the sandbox (python3): the page, or the error.
fn http_get(mut cmd: Command, url: &str) -> Result<String, String> {
    let get =
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end='')";
    let out = cmd.args(["-c", get, url]).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const IMAGE: &str = "localhost/busybox:latest";

#[test]
fn podman_runs_its_containers_on_netwright() {
    // Podman keeps address allocations in one file for the whole machine
    // (/run/containers/networks/ipam.db), by network name: names of this run's own, so an
    // allocation another run left behind (its cleanup cut short) cannot collide with ours.
    let (app, two) = (format!("app{}", std::process::id()), format!("two{}", std::process::id()));
    let sb = sandbox("podman");
    let Some(p) = podman(&sb, Backend::Netavark) else { return };
    // The default network and a user network; DNS by name and alias; published ports.
    let addr = p.ok(&["run", "--rm", IMAGE, "ip", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.88."), "{addr}"); // Podman allocates it (its IPAM state persists)
    p.ok(&["network", "create", "--subnet", "10.90.0.0/24", &app]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        &app,
        "--network-alias",
        "www",
        "-p",
        "8080:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let page = p.ok(&["run", "--rm", "--network", &app, IMAGE, "wget", "-q", "-O", "-", "http://www/"]);
    assert_eq!(page, "hello from podman\n");
    let resolv = p.ok(&["run", "--rm", "--network", &app, IMAGE, "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.90.0.1"), "{resolv}");
    let page = retry(|| http_get(sb.in_lan_cmd("python3"), "http://192.168.1.10:8080/")).expect("LAN -> -p 8080");
    assert_eq!(page, "hello from podman\n");
    assert!(http_get(sb.in_host_cmd("python3"), "http://127.0.0.1:8080/").is_ok(), "host -> 127.0.0.1:8080");
    // --ip and --mac-address, as Podman allocates them.
    let eth0 = p.ok(&[
        "run",
        "--rm",
        "--network",
        &app,
        "--ip",
        "10.90.0.77",
        "--mac-address",
        "92:11:22:33:44:55",
        IMAGE,
        "ip",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(eth0.contains("10.90.0.77/24") && eth0.contains("92:11:22:33:44:55"), "{eth0}");
    // network connect / disconnect / reload on a running container.
    p.ok(&["network", "create", "--subnet", "10.91.0.0/24", &two]);
    p.ok(&["network", "connect", &two, "web"]);
    assert!(p.ok(&["exec", "web", "ip", "addr"]).contains("10.91.0."));
    p.ok(&["network", "disconnect", &two, "web"]);
    assert!(!p.ok(&["exec", "web", "ip", "addr"]).contains("10.91.0."));
    p.ok(&["network", "reload", "web"]);
    let page = retry(|| http_get(sb.in_lan_cmd("python3"), "http://192.168.1.10:8080/")).expect("-p after reload");
    assert_eq!(page, "hello from podman\n");
    // Removal frees the port and leaves no interface behind.
    p.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(http_get(sb.in_lan_cmd("python3"), "http://192.168.1.10:8080/").is_err());
    let clean = eventually(Duration::from_secs(3), || ours(&sb.host_links(), "nwv").is_empty());
    assert!(clean, "veths left: {:?}", ours(&sb.host_links(), "nwv"));
}

#[test]
fn podman_cni_backend_runs_on_netwright_cni() {
    let sb = sandbox("podman-cni");
    let Some(p) = podman(&sb, Backend::Cni) else { return };
    p.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "cninet",
        "--network-alias",
        "www",
        "-p",
        "8080:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    // Names through netwright's resolver (the plugin's result lists it), the page by alias.
    let page = p.ok(&["run", "--rm", "--network", "cninet", IMAGE, "wget", "-q", "-O", "-", "http://www/"]);
    assert_eq!(page, "hello from podman\n");
    let page = retry(|| http_get(sb.in_lan_cmd("python3"), "http://192.168.1.10:8080/")).expect("LAN -> -p 8080");
    assert_eq!(page, "hello from podman\n");
    let eth0 = p.ok(&[
        "run",
        "--rm",
        "--network",
        "cninet",
        "--ip",
        "10.66.0.77",
        "--mac-address",
        "92:11:22:33:44:66",
        IMAGE,
        "ip",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(eth0.contains("10.66.0.77/24") && eth0.contains("92:11:22:33:44:66"), "{eth0}");
    // A reload keeps the address and the port (Podman holds the port open meanwhile).
    p.ok(&["network", "reload", "web"]);
    let page = retry(|| http_get(sb.in_lan_cmd("python3"), "http://192.168.1.10:8080/")).expect("-p after reload");
    assert_eq!(page, "hello from podman\n");
    p.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(http_get(sb.in_lan_cmd("python3"), "http://192.168.1.10:8080/").is_err());
    let left = sb.netwright(["--root", sb.root.join("cni").to_str().unwrap(), "ps", "-a", "-q"]).output().unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "DEL released everything");
}
