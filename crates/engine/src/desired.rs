//! The desired state: which devices of this root should exist in the host namespace, and
//! how they should be, as plain data computed from the store.
//!
//! One definition for everyone: `recover` converges the kernel on it, `doctor` reports what
//! differs from it, `topology` marks what is MISSING or STRAY by it — so repair, diagnosis
//! and drawing cannot disagree. Pure: tested without root.

use crate::drivers;
use crate::model::NetworkMode;
use crate::plan;
pub use crate::plan::{Desired, DesiredKind, DesiredLink};
use crate::store::{Container, Endpoint, Network, State};

/// What the store says about one root, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub networks: Vec<Network>,
    pub containers: Vec<Container>,
    pub endpoints: Vec<Endpoint>,
}

impl Snapshot {
    /// Each container's endpoints, found once (a scan per container is quadratic at
    /// 10,000 containers).
    fn by_container(&self) -> std::collections::HashMap<&str, Vec<&Endpoint>> {
        let mut m: std::collections::HashMap<&str, Vec<&Endpoint>> = std::collections::HashMap::new();
        for e in &self.endpoints {
            m.entry(e.container_id.as_str()).or_default().push(e);
        }
        m
    }
}

/// The host namespace's devices for this root, from the store's snapshot.
pub fn host(snap: &Snapshot) -> Desired {
    let mut links = Vec::new();
    for n in &snap.networks {
        let in_use = snap.endpoints.iter().any(|e| e.network_id == n.id && e.ip.is_some());
        links.extend(drivers::of(n.driver).network_links(n, in_use));
        // A big network's segment bridges: those that hold an endpoint with an address.
        let mut segments: Vec<&Endpoint> =
            snap.endpoints.iter().filter(|e| e.network_id == n.id && e.ip.is_some() && e.segment > 0).collect();
        if n.driver.is_bridged() {
            // The spare segment may stay without endpoints (drivers::bridge::drop_empty_segments).
            let mut loads: Vec<(u32, u32)> = Vec::new();
            for e in snap.endpoints.iter().filter(|e| e.network_id == n.id && e.ip.is_some()) {
                match loads.iter_mut().find(|(s, _)| *s == e.segment) {
                    Some((_, c)) => *c += 1,
                    None => loads.push((e.segment, 1)),
                }
            }
            if let (Some(s), Some(e)) =
                (plan::spare_segment(&loads), snap.endpoints.iter().find(|e| e.network_id == n.id))
            {
                let name = plan::segment(plan::tag_of(&e.host_ifname), n, s).bridge;
                links.push(DesiredLink { name, mtu: n.mtu, kind: DesiredKind::Transient });
            }
        }
        segments.sort_by_key(|e| e.segment);
        segments.dedup_by_key(|e| e.segment);
        for e in segments {
            let segment = plan::segment(plan::tag_of(&e.host_ifname), n, e.segment);
            let kind = DesiredKind::Segment { network: n.name.clone(), segment: segment.clone() };
            links.push(DesiredLink { name: segment.bridge, mtu: n.mtu, kind });
        }
    }
    let by_container = snap.by_container();
    for c in &snap.containers {
        if !c.network_mode.is_network() || c.state == State::Exited {
            continue;
        }
        for e in by_container.get(c.id.as_str()).into_iter().flatten() {
            let Some(n) = snap.networks.iter().find(|n| n.id == e.network_id) else { continue };
            let (Some(ip), true) = (e.ip, drivers::of(n.driver).has_host_device()) else { continue };
            let kind = if c.state == State::Running {
                // The first network's endpoint carries the default route (eth0).
                let first = e.ifname == "eth0";
                DesiredKind::HostVeth {
                    bridge: plan::port_bridge(n, e),
                    container_id: c.id.clone(),
                    container: c.name.clone(),
                    endpoint: plan::endpoint(n, e, ip, first),
                }
            } else {
                DesiredKind::Transient
            };
            links.push(DesiredLink { name: e.host_ifname.clone(), mtu: n.mtu, kind });
            // Its shaping device, if it has limits: netwright's, neither missing nor stray.
            links.push(DesiredLink {
                name: plan::ifb_name(plan::tag_of(&e.host_ifname), &e.id),
                mtu: n.mtu,
                kind: DesiredKind::Transient,
            });
        }
    }
    Desired { links }
}

/// The host's routes to running containers on segment bridges (crate::plan::Segment):
/// (address, segment bridge). Part of the desired state: reconcile makes them, doctor
/// reports those missing.
pub fn segment_routes(snap: &Snapshot) -> Vec<(std::net::IpAddr, String)> {
    let mut out = Vec::new();
    let by_container = snap.by_container();
    for c in snap.containers.iter().filter(|c| c.state == State::Running) {
        for e in by_container.get(c.id.as_str()).into_iter().flatten().filter(|e| e.segment > 0) {
            let (Some(ip), Some(n)) = (e.ip, snap.networks.iter().find(|n| n.id == e.network_id)) else { continue };
            let bridge = plan::port_bridge(n, e);
            out.push((ip.into(), bridge.clone()));
            if let Some(ip6) = e.ip6 {
                out.push((ip6.into(), bridge));
            }
        }
    }
    out
}

/// The proxy entries by which a segmented network's bridge answers for the IPv6 addresses
/// of running containers on its segments: (address, the network's bridge).
pub fn ndp_proxies(snap: &Snapshot) -> Vec<(std::net::Ipv6Addr, String)> {
    let by_container = snap.by_container();
    let mut out = Vec::new();
    for c in snap.containers.iter().filter(|c| c.state == State::Running) {
        for e in by_container.get(c.id.as_str()).into_iter().flatten().filter(|e| e.segment > 0) {
            let (Some(ip6), Some(n)) = (e.ip6, snap.networks.iter().find(|n| n.id == e.network_id)) else { continue };
            out.push((ip6, n.bridge.clone()));
        }
    }
    out
}

/// The network bridges that have segments (they answer ARP for them).
pub fn segmented(snap: &Snapshot) -> Vec<&Network> {
    snap.networks
        .iter()
        .filter(|n| snap.endpoints.iter().any(|e| e.network_id == n.id && e.segment > 0 && e.ip.is_some()))
        .collect()
}

/// Whether a container has a network of its own that the host-side plan covers.
pub fn has_own_network(c: &Container) -> bool {
    matches!(c.network_mode, NetworkMode::Network(_))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Driver;
    use std::collections::BTreeMap;

    pub(crate) fn net(id: &str, name: &str, driver: Driver, builtin: bool) -> Network {
        Network {
            id: id.into(),
            name: name.into(),
            driver,
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            ip_range: None,
            subnet6: None,
            gateway6: None,
            bridge: plan::bridge_name("ab12", id),
            mtu: 1500,
            internal: false,
            options: BTreeMap::new(),
            builtin,
            created: 0,
            cursor: 0,
        }
    }

    pub(crate) fn ctr(id: &str, net: &str, state: State) -> Container {
        Container {
            id: id.into(),
            name: format!("c{id}"),
            cmd: vec!["true".into()],
            hostname: id.into(),
            state,
            pid: None,
            monitor_pid: None,
            monitor_start: None,
            exit_code: None,
            error: None,
            auto_remove: false,
            detached: true,
            network_mode: NetworkMode::Network(net.into()),
            dns: vec![],
            netns_source: None,
            egress_rate: None,
            ingress_rate: None,
            created: 0,
            started: None,
            finished: None,
        }
    }

    pub(crate) fn ep(id: &str, ctr: &str, net: &str, ip: &str, ifname: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            container_id: ctr.into(),
            network_id: net.into(),
            ifname: ifname.into(),
            host_ifname: plan::host_veth_name("ab12", id),
            ip: Some(ip.parse().unwrap()),
            requested_ip: None,
            ip6: None,
            requested_ip6: None,
            mac: String::new(),
            aliases: vec![],
            segment: 0,
        }
    }

    #[test]
    fn bridges_veths_and_shims_of_a_root() {
        let snap = Snapshot {
            networks: vec![
                net("aaaaaaaaaaaa", "web", Driver::Bridge, false),
                net("bbbbbbbbbbbb", "bridge", Driver::Bridge, true),
                net("cccccccccccc", "lan", Driver::Macvlan, false),
            ],
            containers: vec![
                ctr("c1", "web", State::Running),
                ctr("c2", "web", State::Created),
                ctr("c3", "web", State::Exited),
            ],
            endpoints: vec![
                ep("e1e1e1e1e1e1", "c1", "aaaaaaaaaaaa", "10.1.0.2", "eth0"),
                ep("e2e2e2e2e2e2", "c2", "aaaaaaaaaaaa", "10.1.0.3", "eth0"),
                Endpoint { ip: None, ..ep("e3e3e3e3e3e3", "c3", "aaaaaaaaaaaa", "10.1.0.4", "eth0") },
            ],
        };
        let d = host(&snap);
        // The default bridge network's bridge: neither wanted nor stray until a container uses it.
        assert_eq!(d.get(&plan::bridge_name("ab12", "bbbbbbbbbbbb")).unwrap().kind, DesiredKind::Transient);
        let web = d.get(&plan::bridge_name("ab12", "aaaaaaaaaaaa")).expect("web's bridge");
        assert_eq!(
            web.kind,
            DesiredKind::Bridge {
                network: "web".into(),
                gateway: "10.1.0.1".parse().unwrap(),
                prefix: 24,
                gateway6: None
            }
        );
        assert!(matches!(d.get(&plan::bridge_name("ab12", "cccccccccccc")).unwrap().kind, DesiredKind::Shim { .. }));
        match &d.get(&plan::host_veth_name("ab12", "e1e1e1e1e1e1")).unwrap().kind {
            DesiredKind::HostVeth { bridge, endpoint, .. } => {
                assert_eq!(bridge, &web.name);
                assert_eq!(endpoint.addr, "10.1.0.2".parse::<std::net::Ipv4Addr>().unwrap());
                assert!(endpoint.default_route);
                assert_eq!(endpoint.mac, crate::ipam::mac_for(endpoint.addr));
            }
            k => panic!("{k:?}"),
        }
        // Being created: neither missing nor stray. Released: not wanted at all.
        assert_eq!(d.get(&plan::host_veth_name("ab12", "e2e2e2e2e2e2")).unwrap().kind, DesiredKind::Transient);
        assert!(d.get(&plan::host_veth_name("ab12", "e3e3e3e3e3e3")).is_none());
        assert_eq!(d.links.len(), 7, "with an ifb place for each endpoint");
    }

    #[test]
    fn the_default_bridge_appears_with_its_first_container() {
        let snap = Snapshot {
            networks: vec![net("bbbbbbbbbbbb", "bridge", Driver::Bridge, true)],
            containers: vec![ctr("c1", "bridge", State::Running)],
            endpoints: vec![ep("e1e1e1e1e1e1", "c1", "bbbbbbbbbbbb", "10.1.0.2", "eth0")],
        };
        let d = host(&snap);
        assert!(matches!(d.get(&plan::bridge_name("ab12", "bbbbbbbbbbbb")).unwrap().kind, DesiredKind::Bridge { .. }));
        let host_mode = Container { network_mode: NetworkMode::Host, ..ctr("c2", "x", State::Running) };
        assert!(!has_own_network(&host_mode));
    }
}
