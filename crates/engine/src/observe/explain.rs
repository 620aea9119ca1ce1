//! `--explain`: the `ip`, `nft` and `sysctl` commands equal to what netwright did — the seed
//! documents' "build a network from scratch" exercise ("Try it yourself · the unboxed
//! version"), done for the user. Pure: from the store's records to shell lines, so what is
//! printed is what the model says the kernel now has. A test (tests/explain.rs) runs the
//! lines with `sh` in a fresh sandbox without netwright and sends the seed's three flows
//! through the result.
//!
//! The firewall is netwright's fixed skeleton as nft text (its overlay and service rules,
//! which these flows do not need, left out), created once; per network and per container
//! only set and map elements follow, as netwright itself does.

use crate::firewall;

/// `--dry-run`: the commands a change would run, carried out of the store transaction
/// that computed them (and is rolled back by this error) — nothing was done.
#[derive(Debug)]
pub struct DryRun(pub String);

impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DryRun {}

/// The commands from a dry run's error, or the error itself.
pub fn dry_run_text<T>(r: anyhow::Result<T>) -> anyhow::Result<String> {
    match r {
        Ok(_) => anyhow::bail!("the dry run did something: this is a bug"),
        Err(e) => match e.downcast::<DryRun>() {
            Ok(d) => Ok(d.0),
            Err(e) => Err(e),
        },
    }
}
use crate::model::{Container, Endpoint, Mapping, Network};

/// The table's skeleton in nft's syntax, created only if missing (idempotent).
fn skeleton(table: &str) -> String {
    format!(
        r#"nft list table ip {table} >/dev/null 2>&1 || nft -f - <<'EOF'
table ip {table} {{
  set bridges {{ type ifname; }}
  set same {{ type ifname . ifname; }}
  set masq {{ type ifname; }}
  set internal {{ type ifname; }}
  map pub_ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}
  map pub_any {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    dnat ip to ip daddr . meta l4proto . th dport map @pub_ip
    fib daddr type local dnat ip to meta l4proto . th dport map @pub_any
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    dnat ip to ip daddr . meta l4proto . th dport map @pub_ip
    fib daddr type local dnat ip to meta l4proto . th dport map @pub_any
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat iifname @bridges oifname @bridges masquerade
    ip saddr 127.0.0.0/8 oifname @bridges masquerade
    iifname @masq oifname != @bridges masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct status dnat accept
    iifname . oifname @same accept
    iifname @bridges oifname @bridges drop
    iifname @internal drop
    oifname @internal drop
  }}
}}
EOF"#
    )
}

/// A bridge network: its bridge, gateway, sysctls, the firewall and the network's elements.
pub fn network(table: &str, n: &Network) -> Vec<String> {
    let b = &n.bridge;
    let mut v = vec![
        format!("# network {}: a Linux bridge carrying the gateway {}", n.name, n.gateway),
        format!("ip link add {b} mtu {} type bridge", n.mtu),
        format!("ip addr add {}/{} dev {b}", n.gateway, n.subnet.prefix_len()),
        format!("ip link set {b} up"),
        format!("sysctl -qw net.ipv4.conf.{b}.route_localnet=1   # the host may reach published ports on 127.0.0.1"),
        "# netwright's firewall: one table of its own, a fixed skeleton; what varies is set elements".into(),
        skeleton(table),
        format!("nft add element ip {table} bridges '{{ \"{b}\" }}'"),
        format!("nft add element ip {table} same '{{ \"{b}\" . \"{b}\" }}'"),
    ];
    if firewall::masquerades(n) {
        v.push(format!("nft add element ip {table} masq '{{ \"{b}\" }}'   # egress leaves with the host's address"));
    }
    if n.internal {
        v.push(format!("nft add element ip {table} internal '{{ \"{b}\" }}'   # nothing leaves, nothing enters"));
    }
    if firewall::masquerades(n) {
        v.push("sysctl -qw net.ipv4.ip_forward=1".into());
    }
    v
}

/// A container on bridge networks: its namespace, a veth pair per network, addresses,
/// routes and its published ports' map elements.
pub fn container(table: &str, c: &Container, eps: &[(Endpoint, Network)], ports: &[Mapping]) -> Vec<String> {
    let ns = &c.name;
    let mut v = vec![
        format!("# container {}: a network namespace of its own (netwright pins it under its state root)", c.name),
        format!("ip netns add {ns}"),
        format!("ip -n {ns} link set lo up"),
    ];
    for (i, (e, n)) in eps.iter().enumerate() {
        let Some(ip) = e.ip else { continue };
        if !n.driver.is_bridged() {
            v.push(format!("# {} on {} network {}: not explained here", e.ifname, n.driver, n.name));
            continue;
        }
        v.extend([
            format!("# {}: a veth pair, one end on bridge {}, the other in the namespace", e.ifname, n.bridge),
            format!("ip link add {} mtu {} type veth peer name {} netns {ns}", e.host_ifname, n.mtu, e.ifname),
            format!("ip link set {} master {} up", e.host_ifname, n.bridge),
            format!("ip -n {ns} link set {} address {} up", e.ifname, e.mac),
            format!("ip -n {ns} addr add {ip}/{} dev {}", n.subnet.prefix_len(), e.ifname),
        ]);
        if i == 0 && !n.internal {
            v.push(format!("ip -n {ns} route add default via {}", n.gateway));
        }
    }
    let first = eps.first().and_then(|(e, _)| e.ip);
    for m in ports.iter().filter(|m| m.host_ip.is_none_or(|h| h.is_ipv4())) {
        let Some(ip) = first else { break };
        let (proto, hp, cp) = (m.proto.as_str(), m.host_port, m.container_port);
        match m.host_ip.filter(|h| !h.is_unspecified()) {
            None => {
                v.push(format!("nft add element ip {table} pub_any '{{ {proto} . {hp} : {ip} . {cp} }}'   # -p {m}"))
            }
            Some(h) => v.push(format!(
                "nft add element ip {table} pub_ip '{{ {h} . {proto} . {hp} : {ip} . {cp} }}'   # -p {m}"
            )),
        }
    }
    v.push(format!(
        "# then its process: ip netns exec {ns} {}   (netwright also writes its /etc/hosts and resolv.conf, and answers DNS at 127.0.0.11)",
        c.cmd.join(" ")
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{ctr, ep, net};
    use crate::model::{Driver, Proto, State};

    #[test]
    fn a_network_and_a_publishing_container_in_commands() {
        let n = net("aaaaaaaaaaaa", "demo", Driver::Bridge, false);
        let lines = network("netwright-ab12", &n).join("\n");
        assert!(lines.contains(&format!("ip link add {} mtu 1500 type bridge", n.bridge)), "{lines}");
        assert!(lines.contains("ip addr add 10.1.0.1/24 dev"));
        assert!(lines.contains("nft list table ip netwright-ab12 >/dev/null 2>&1 || nft -f - <<'EOF'"));
        assert!(lines.contains("masq '{ \"") && lines.contains("net.ipv4.ip_forward=1"));
        let c = Container { name: "web".into(), ..ctr("c1", "demo", State::Running) };
        let mut e = ep("e1e1e1e1e1e1", "c1", "aaaaaaaaaaaa", "10.1.0.2", "eth0");
        e.mac = "02:42:0a:01:00:02".into();
        let m = Mapping { host_ip: None, host_port: 8080, container_port: 80, proto: Proto::Tcp };
        let lines = container("netwright-ab12", &c, &[(e.clone(), n.clone())], &[m]).join("\n");
        for want in [
            "ip netns add web".to_string(),
            format!("ip link add {} mtu 1500 type veth peer name eth0 netns web", e.host_ifname),
            "ip -n web addr add 10.1.0.2/24 dev eth0".into(),
            "ip -n web route add default via 10.1.0.1".into(),
            "nft add element ip netwright-ab12 pub_any '{ tcp . 8080 : 10.1.0.2 . 80 }'".into(),
        ] {
            assert!(lines.contains(&want), "{want} in\n{lines}");
        }
    }
}
