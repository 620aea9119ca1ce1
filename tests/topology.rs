//! `netwright topology` lists every object a sandbox made, in every format, and marks drift.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

#[test]
fn topology_shows_everything_and_marks_drift() {
    let sb = sandbox("topo");
    sb.ok(&["network", "create", "app", "--subnet", "10.100.0.0/24"]);
    sb.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "--subnet",
        "192.168.1.0/24",
        "--ip-range",
        "192.168.1.224/28",
        "lan",
    ]);
    sb.ok(&[
        "run",
        "-d",
        "--name",
        "api",
        "--network",
        "app",
        "--network-alias",
        "backend",
        "-p",
        "8080:80",
        "--",
        "sleep",
        "300",
    ]);
    sb.ok(&["run", "-d", "--name", "web", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "mv", "--network", "lan", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "island", "--network", "none", "--", "sleep", "300"]);
    sb.ok(&["run", "-d", "--name", "side", "--network", "container:api", "--", "sleep", "300"]);
    let text = sb.ok(&["topology"]);
    let api = sb.inspect("api");
    let veth = api["NetworkSettings"]["Networks"]["app"]["Netwright"]["HostInterface"].as_str().unwrap().to_string();
    let bridge = api["NetworkSettings"]["Networks"]["app"]["Netwright"]["Bridge"].as_str().unwrap().to_string();
    for want in [
        "eth0",
        "192.168.1.10/24",
        "network app",
        "network bridge",
        "network lan",
        &bridge,
        &veth,
        "container api",
        "container web",
        "container mv",
        "island: none",
        "side: shares api's namespace",
        &sb.ip_of("api"),
        "backend",
        "0.0.0.0:8080->80/tcp",
        "192.168.1.224/24",
        "nftables",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("MISSING") && !text.contains("STRAY"), "{text}");
    // Under a network's last port the tree's line ends: no stray `│  │` continuation.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("│  └─") {
            for below in lines[i + 1..].iter().take_while(|b| !b.starts_with("├─") && !b.starts_with("└─")) {
                assert!(!below.starts_with("│  │"), "stray `│  │` under the last port:\n{text}");
            }
        }
    }
    for (format, names) in
        [("dot", vec!["api", "web", "mv", "island", "side"]), ("mermaid", vec!["api", "web", "mv", "island", "side"])]
    {
        let out = sb.ok(&["topology", "--format", format]);
        for n in names {
            assert!(out.contains(n), "{format} lacks {n}:\n{out}");
        }
    }
    let svg = sb.ok(&["topology", "--format", "svg"]);
    let mut check = std::process::Command::new("python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E; r = E.parse(sys.stdin).getroot(); print(' '.join(t.text or '' for t in r.iter('{http://www.w3.org/2000/svg}text')))"])
        .stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    check.stdin.take().unwrap().write_all(svg.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(out.status.success(), "SVG parses as XML");
    let texts = String::from_utf8_lossy(&out.stdout);
    for n in ["api", "web", "mv", "island", "side"] {
        assert!(texts.contains(n), "SVG names {n}: {texts}");
    }
    // The layers the text form has: veths, MACs, DNS names, published ports, and the uplink
    // linked to the bridges it NATs.
    let mac = api["NetworkSettings"]["Networks"]["app"]["MacAddress"].as_str().unwrap().to_string();
    for want in [veth.as_str(), mac.as_str(), &bridge, "DNS: api", "published: 0.0.0.0:8080->80/tcp", "uplink"] {
        assert!(texts.contains(want), "SVG lacks {want:?}: {texts}");
    }
    assert!(svg.matches("stroke=\"#c63\"").count() >= 2, "uplink → bridge links: {svg}");
    let json: serde_json::Value = serde_json::from_str(&sb.ok(&["topology", "--format", "json"])).unwrap();
    assert_eq!(json["networks"].as_array().unwrap().len(), 3);
    // Drift is marked: a veth deleted by hand, a stray device with netwright's name.
    assert!(sb.in_host_cmd("ip").args(["link", "del", &veth]).status().unwrap().success());
    let stray = format!("nwv{}cafe0001", &bridge[3..7]);
    assert!(sb.in_host_cmd("ip").args(["link", "add", &stray, "type", "bridge"]).status().unwrap().success());
    let text = sb.ok(&["topology"]);
    assert!(text.lines().any(|l| l.contains(&veth) && l.contains("MISSING")), "{text}");
    assert!(text.lines().any(|l| l.contains(&stray) && l.contains("STRAY")), "{text}");
}
