//! `netwright ui`: the live view against a sandbox with the demo's three containers — the
//! page in headless Chromium (the DOM holds them, the bridge and the published port), the
//! event stream (a fourth container appears; a connection from the LAN appears as a flow
//! with both tuples), and a screenshot.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const PORT: u16 = 17780;

fn get(sb: &Sandbox, path: &str) -> String {
    let path = path.to_string();
    sb.in_host(move || {
        let mut s = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: ui\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// The event stream, read on a thread in the host namespace: (event, data) lines.
fn events(sb: &Sandbox) -> mpsc::Receiver<(String, String)> {
    let (tx, rx) = mpsc::channel();
    let host = netwright_engine::kernel::netns::open(&sb.dir.join("ns").join("host")).unwrap();
    std::thread::spawn(move || {
        netwright_engine::kernel::netns::enter(&host).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
        write!(s, "GET /events HTTP/1.1\r\nHost: ui\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        let mut event = String::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = line.strip_prefix("data: ")
                && tx.send((event.clone(), d.to_string())).is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Waits (up to 5 s: a liveness bound, not a speed claim) for an event matching `want`.
fn wait_for(rx: &mpsc::Receiver<(String, String)>, want: impl Fn(&str, &str) -> bool) -> Option<(String, Duration)> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok((e, d)) = rx.recv_timeout(Duration::from_millis(100))
            && want(&e, &d)
        {
            return Some((d, start.elapsed()));
        }
    }
    None
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
}

#[test]
fn the_live_view_shows_the_system_and_what_happens() {
    let sb = sandbox("ui");
    let tcp = sb.script("tcp.py");
    sb.ok(&["network", "create", "demo", "--subnet", "10.85.0.0/24"]);
    sb.ok(&["run", "-d", "--name", "web", "--network", "demo", "-p", "8080:80", "--", "python3", &tcp, "serve", "80"]);
    sb.ok(&["run", "-d", "--name", "db", "--network", "demo", "--", "python3", &tcp, "serve", "5432"]);
    sb.ok(&["run", "-d", "--name", "client", "--network", "demo", "--", "sleep", "300"]);
    // Read-only and loopback by default; elsewhere only when asked, with a warning.
    let (_, err) = sb.fails(&["ui", "--listen", "0.0.0.0:17781"]);
    assert!(err.contains("--allow-remote"), "{err}");
    let _ui =
        Kill(sb.netwright(["ui", "--listen", &format!("127.0.0.1:{PORT}")]).stderr(Stdio::null()).spawn().unwrap());
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        sb.in_host(|| TcpStream::connect(("127.0.0.1", PORT)).is_ok())
    });
    assert!(up, "the ui did not start listening");
    let page = get(&sb, "/");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("EventSource(\"/events\")"), "{page}");
    let topo = get(&sb, "/api/topology");
    assert!(topo.contains("\"web\"") && topo.contains("8080->80/tcp"), "{topo}");

    // The event stream: the current topology first, then changes as they happen.
    let rx = events(&sb);
    assert!(wait_for(&rx, |e, d| e == "topology" && d.contains("\"client\"")).is_some());
    sb.ok(&["run", "-d", "--name", "fourth", "--network", "demo", "--", "sleep", "300"]);
    let (_, took) =
        wait_for(&rx, |e, d| e == "topology" && d.contains("\"fourth\"")).expect("the fourth container appears");
    eprintln!("a new container reached the event stream in {took:?}");
    // A connection from the LAN to the published port: a flow with both tuples.
    retry(|| from_lan(&sb, "192.168.1.10", 8080, "tcp")).expect("LAN -> web");
    let web = sb.ip_of("web");
    let (flow, _) =
        wait_for(&rx, |e, d| e == "flow" && d.contains("192.168.1.10:8080") && d.contains(&format!("{web}:80")))
            .expect("the LAN's connection appears as a flow");
    let f: serde_json::Value = serde_json::from_str(&flow).unwrap();
    assert_eq!(f["path"], serde_json::json!(["uplink", "fw", "n:demo", "c:web"]), "{f}");
    assert!(f["nat"].as_str().unwrap().contains("dnat"), "{f}");
    // Egress: container → bridge → masquerade → uplink.
    let _lan = Kill(sb.in_lan_cmd("python3").args([&tcp, "serve", "7000"]).stdout(Stdio::null()).spawn().unwrap());
    sb.send_from("client", "192.168.1.100", 7000, "out").expect("client -> LAN");
    let (flow, _) = wait_for(&rx, |e, d| e == "flow" && d.contains("192.168.1.100:7000")).expect("egress flow");
    let f: serde_json::Value = serde_json::from_str(&flow).unwrap();
    assert_eq!(f["path"], serde_json::json!(["c:client", "n:demo", "fw", "uplink"]), "{f}");
    // Clicking a container: its details, its trace.
    let d = get(&sb, "/api/container/web");
    assert!(d.contains("\"IPAddress\":\"10.85.0.") && d.contains("connections"), "{d}");
    let t = get(&sb, "/api/trace?src=client&dst=web:80");
    assert!(t.contains("\"verdict\":\"DELIVERED\""), "{t}");

    // The page in a real browser: the DOM holds the three containers, the bridge and the port.
    let Some(chrome) = chromium() else {
        eprintln!("SKIPPED the browser part: chromium is not installed (apt-get install chromium)");
        return;
    };
    let url = format!("http://127.0.0.1:{PORT}/");
    // (No --virtual-time-budget: the page's open event stream would hold virtual time still.)
    let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"];
    let browser = |extra: &[&str]| {
        let mut c = sb.in_host_cmd("timeout");
        c.args(["60", chrome]).args(flags).args(extra).stderr(Stdio::null());
        c.output().unwrap()
    };
    let out = browser(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let bridge = topo.split("\"device\":\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    // (The connections made above are still tracked: the page lists them from the start.)
    let lan_flow = format!("{web}:80 → 192.168.1.");
    for want in [
        "id=\"c:web\"",
        "id=\"c:db\"",
        "id=\"c:client\"",
        "id=\"c:fourth\"",
        &bridge,
        "0.0.0.0:8080-&gt;80/tcp",
        &lan_flow,
    ] {
        assert!(dom.contains(want), "{want} in the page's DOM:\n{dom}");
    }
    let shot = sb.dir.join("ui.png");
    let out = browser(&["--window-size=1400,900", &format!("--screenshot={}", shot.display()), &url]);
    assert!(out.status.success(), "{out:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    if let Ok(dir) = std::env::var("NETWRIGHT_UI_SHOT") {
        std::fs::copy(&shot, dir).unwrap();
    }
}
