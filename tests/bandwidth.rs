//! Bandwidth limits per container, set from the host side, measured with real traffic
//! (iperf3 between a container and a LAN server).

mod common;

use std::time::Duration;

use common::*;

/// Mbit/s received in one iperf3 run from `container` to the LAN server (`reverse`: the
/// server sends, i.e. traffic into the container).
fn iperf(sb: &Sandbox, container: &str, reverse: bool) -> f64 {
    let mut args = vec!["exec", container, "--", "iperf3", "-c", "192.168.1.100", "-t", "3", "-O", "1", "-J"];
    if reverse {
        args.push("-R");
    }
    // Retried while the server starts (or is still finishing the previous run).
    let out = retry(|| {
        let o = sb.nw(&args);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| text.clone())?;
        v["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b.to_string()).ok_or(text)
    })
    .expect("iperf3 measured a rate");
    let mbit = out.parse::<f64>().unwrap() / 1e6;
    eprintln!("iperf3 {container}{}: {mbit:.2} Mbit/s", if reverse { " (into it)" } else { " (out of it)" });
    mbit
}

fn installed(program: &str) -> bool {
    std::process::Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn limits_hold_in_each_direction_and_neighbours_are_not_slowed() {
    if !installed("iperf3") {
        eprintln!("SKIPPED: iperf3 is needed (apt-get install iperf3)");
        return;
    }
    let sb = sandbox("bw");
    let _server = Kill(sb.in_lan_cmd("iperf3").args(["-s", "-p", "5201"]).spawn().unwrap());
    sb.ok(&["network", "create", "app", "--subnet", "10.81.0.0/24"]);
    sb.ok(&[
        "run",
        "-d",
        "--name",
        "lim",
        "--network",
        "app",
        "--egress-rate",
        "10mbit",
        "--ingress-rate",
        "20mbit",
        "--",
        "sleep",
        "300",
    ]);
    sb.ok(&["run", "-d", "--name", "free", "--network", "app", "--", "sleep", "300"]);
    let out = iperf(&sb, "lim", false);
    // At most the limit (+10 % for measuring), and not far under it: TCP through a shaper on
    // a loaded 2-core CI machine has measured 8.7 of 10.
    assert!((8.5..=11.0).contains(&out), "egress {out:.1} Mbit/s, limit 10");
    let inn = iperf(&sb, "lim", true);
    assert!((17.0..=22.0).contains(&inn), "ingress {inn:.1} Mbit/s, limit 20");
    let free = iperf(&sb, "free", false);
    assert!(free > 100.0, "the neighbour is not slowed: {free:.1} Mbit/s");
    let doc = sb.inspect("lim");
    assert_eq!(doc["NetworkSettings"]["Netwright"]["EgressRate"], "10mbit", "{doc}");
    let topo = sb.ok(&["topology"]);
    assert!(topo.contains("bandwidth: out 10mbit, in 20mbit"), "{topo}");
    // Changed on the running container; 0 removes a limit.
    sb.ok(&["update", "--egress-rate", "0", "--ingress-rate", "5mbit", "lim"]);
    let out = iperf(&sb, "lim", false);
    assert!(out > 100.0, "egress unlimited again: {out:.1} Mbit/s");
    let inn = iperf(&sb, "lim", true);
    assert!((4.5..=5.5).contains(&inn), "ingress {inn:.1} Mbit/s, limit 5");
    // A network's default applies to its containers.
    sb.ok(&["network", "create", "slow", "--subnet", "10.82.0.0/24", "--opt", "egress_rate=8mbit"]);
    sb.ok(&["run", "-d", "--name", "onslow", "--network", "slow", "--", "sleep", "300"]);
    let out = iperf(&sb, "onslow", false);
    assert!((7.2..=8.8).contains(&out), "network default egress {out:.1} Mbit/s, limit 8");
    // Bad rates are refused in one line; the shaping devices go with their containers.
    let (_, err) = sb.fails(&["run", "--rm", "--egress-rate", "fast", "--", "true"]);
    assert!(err.contains("--egress-rate \"fast\"") && err.lines().count() == 1, "{err}");
    sb.ok(&["rm", "-f", "onslow", "lim", "free"]);
    let gone = eventually(Duration::from_secs(5), || ours(&sb.host_links(), "nwi").is_empty());
    assert!(gone, "ifb devices left: {:?}", ours(&sb.host_links(), "nwi"));
}
