//! The applier: diff the desired host devices ([`crate::desired`]) against live kernel
//! state and make the smallest change.
//!
//! [`diff`] is pure (what to do, as [`Action`]s); [`Kernel`] reads and changes the kernel —
//! [`NetlinkKernel`] for real, a fake in the unit tests — so the repair logic is tested
//! without root. `recover` applies the actions; `doctor` prints them as drift.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::desired::{Desired, DesiredKind};
use crate::drivers::bridge;
use crate::kernel::netlink::Netlink;
use crate::kernel::netns;
use crate::plan::{self, EndpointPlan};

/// A device as the kernel has it, with what the diff needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLink {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    /// The master's name (a bridge port's bridge).
    pub master: Option<String>,
    pub up: bool,
    pub addrs: Vec<(IpAddr, u8)>,
}

/// One change that brings the kernel closer to the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create (or fix: address, up) a network's bridge.
    EnsureBridge {
        name: String,
        network: String,
        gateway: Ipv4Addr,
        prefix: u8,
        gateway6: Option<(Ipv6Addr, u8)>,
        mtu: u32,
    },
    /// Create an overlay network's VXLAN device, or make it a port of its bridge again, up.
    EnsureVxlan { name: String, network: String, bridge: String, vni: u32, port: u16, mtu: u32 },
    /// Create (or fix) a big network's segment bridge and its link to the network's bridge.
    EnsureSegment { network: String, segment: plan::Segment, mtu: u32 },
    /// Make a container's veth a port of its bridge again (its bridge was re-created).
    Enslave { port: String, bridge: String, isolated: bool },
    /// Bring a device up.
    SetUp { name: String },
    /// Re-make a running container's veth pair into its namespace (it was deleted by hand).
    RecreateVeth { container_id: String, container: String, bridge: String, endpoint: EndpointPlan },
    /// A device with this root's name that the store does not know.
    DeleteStray { name: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Action::EnsureBridge { name, network, .. } => {
                write!(f, "bridge {name} of network {network} is missing or unconfigured")
            }
            Action::EnsureVxlan { name, network, .. } => {
                write!(f, "VXLAN device {name} of overlay network {network} is missing, down or off its bridge")
            }
            Action::EnsureSegment { network, segment, .. } => {
                write!(f, "segment bridge {} of network {network} is missing or unconfigured", segment.bridge)
            }
            Action::Enslave { port, bridge, .. } => write!(f, "veth {port} is not a port of bridge {bridge}"),
            Action::SetUp { name } => write!(f, "device {name} is down"),
            Action::RecreateVeth { endpoint, container, .. } => {
                write!(f, "veth {} of running container {container} is missing", endpoint.host_name)
            }
            Action::DeleteStray { name } => write!(f, "stray device {name} (not in the store)"),
        }
    }
}

/// Reads and changes the host namespace's devices.
pub trait Kernel {
    /// This root's devices and everything they reference (bridges, ports).
    fn links(&mut self) -> Result<Vec<LiveLink>>;
    fn apply(&mut self, action: &Action) -> Result<()>;
}

/// What to do so that `live` matches `desired`. Devices of other roots and foreign devices
/// are never touched: only names carrying this root's tag are considered strays.
pub fn diff(tag: &str, desired: &Desired, live: &[LiveLink]) -> Vec<Action> {
    let by_name: HashMap<&str, &LiveLink> = live.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut bridges = Vec::new();
    let mut ports = Vec::new();
    for d in &desired.links {
        let have = by_name.get(d.name.as_str());
        match &d.kind {
            DesiredKind::Bridge { network, gateway, prefix, gateway6 } => {
                let ok = have.is_some_and(|l| {
                    l.up && l.kind.as_deref() == Some("bridge")
                        && l.addrs.contains(&(IpAddr::V4(*gateway), *prefix))
                        && gateway6.is_none_or(|(g, p)| l.addrs.contains(&(IpAddr::V6(g), p)))
                });
                if !ok {
                    bridges.push(Action::EnsureBridge {
                        name: d.name.clone(),
                        network: network.clone(),
                        gateway: *gateway,
                        prefix: *prefix,
                        gateway6: *gateway6,
                        mtu: d.mtu,
                    });
                }
            }
            DesiredKind::Segment { network, segment } => {
                let ok = have.is_some_and(|l| {
                    l.up && l.kind.as_deref() == Some("bridge")
                        && l.addrs.contains(&(IpAddr::V4(segment.gateway), 32))
                        && segment.gateway6.is_none_or(|g| l.addrs.contains(&(IpAddr::V6(g), 128)))
                });
                if !ok {
                    bridges.push(Action::EnsureSegment {
                        network: network.clone(),
                        segment: segment.clone(),
                        mtu: d.mtu,
                    });
                }
            }
            DesiredKind::HostVeth { bridge, container_id, container, endpoint } => match have {
                None => ports.push(Action::RecreateVeth {
                    container_id: container_id.clone(),
                    container: container.clone(),
                    bridge: bridge.clone(),
                    endpoint: endpoint.clone(),
                }),
                Some(l) => {
                    if l.master.as_deref() != Some(bridge.as_str()) {
                        ports.push(Action::Enslave {
                            port: d.name.clone(),
                            bridge: bridge.clone(),
                            isolated: endpoint.isolated,
                        });
                    }
                    if !l.up {
                        ports.push(Action::SetUp { name: d.name.clone() });
                    }
                }
            },
            DesiredKind::Vxlan { network, bridge, vni, port } => {
                let ok = have.is_some_and(|l| {
                    l.up && l.kind.as_deref() == Some("vxlan") && l.master.as_deref() == Some(bridge.as_str())
                });
                if !ok {
                    bridges.push(Action::EnsureVxlan {
                        name: d.name.clone(),
                        network: network.clone(),
                        bridge: bridge.clone(),
                        vni: *vni,
                        port: *port,
                        mtu: d.mtu,
                    });
                }
            }
            DesiredKind::Shim { .. } | DesiredKind::Transient => {}
        }
    }
    let wanted = desired.names();
    let strays = live
        .iter()
        .filter(|l| plan::is_ours(tag, &l.name) && !wanted.contains(l.name.as_str()))
        .map(|l| Action::DeleteStray { name: l.name.clone() });
    // Bridges first: ports are enslaved to them, re-made veths plug into them.
    bridges.into_iter().chain(ports).chain(strays).collect()
}

/// Applies the actions in order; returns those that were done.
pub fn converge(tag: &str, desired: &Desired, kernel: &mut impl Kernel) -> Result<Vec<Action>> {
    let actions = diff(tag, desired, &kernel.links()?);
    for a in &actions {
        kernel.apply(a).with_context(|| a.to_string())?;
    }
    Ok(actions)
}

/// The real kernel, over netlink in the host namespace.
pub struct NetlinkKernel<'a> {
    pub ctx: &'a Ctx,
    pub nl: &'a mut Netlink,
}

impl NetlinkKernel<'_> {
    fn index(&mut self, name: &str) -> Result<u32> {
        Ok(self.nl.link_by_name(name)?.with_context(|| format!("device {name} is gone"))?.index)
    }
}

impl Kernel for NetlinkKernel<'_> {
    fn links(&mut self) -> Result<Vec<LiveLink>> {
        let links = self.nl.links()?;
        let addrs = self.nl.addrs()?;
        let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
        Ok(links
            .iter()
            .map(|l| LiveLink {
                index: l.index,
                name: l.name.clone(),
                kind: l.kind.clone(),
                master: l.master.and_then(|m| names.get(&m).cloned()),
                up: l.up,
                addrs: addrs.iter().filter(|a| a.index == l.index).map(|a| (a.addr, a.prefix)).collect(),
            })
            .collect())
    }

    fn apply(&mut self, action: &Action) -> Result<()> {
        match action {
            Action::EnsureBridge { name, gateway, prefix, gateway6, mtu, .. } => {
                let plan = plan::BridgePlan {
                    name: name.clone(),
                    gateway: *gateway,
                    prefix: *prefix,
                    gateway6: *gateway6,
                    mtu: *mtu,
                };
                bridge::ensure_bridge(self.nl, &plan).map(drop)
            }
            Action::EnsureVxlan { network, .. } => {
                let mut store = self.ctx.store()?;
                let net = store
                    .read(|tx| tx.network(network))?
                    .with_context(|| format!("overlay network {network} is no longer in the store"))?;
                crate::drivers::overlay::ensure(self.ctx, self.nl, &net).map(drop)
            }
            Action::EnsureSegment { segment, mtu, .. } => bridge::ensure_segment(self.nl, segment, *mtu).map(drop),
            Action::Enslave { port, bridge, isolated } => {
                let (port, master) = (self.index(port)?, self.index(bridge)?);
                let mut reqs = vec![(Netlink::set_master_msg(port, master), 0)];
                if *isolated {
                    reqs.push((Netlink::port_isolated_msg(port, true), 0));
                }
                reqs.push((Netlink::set_up_msg(port), 0));
                self.nl.batch(reqs).map_err(|(_, e)| e).context("enslaving")
            }
            Action::SetUp { name } => {
                let index = self.index(name)?;
                Ok(self.nl.request(Netlink::set_up_msg(index), 0)?)
            }
            Action::RecreateVeth { container_id, bridge, endpoint, .. } => {
                let ns =
                    netns::open(&self.ctx.netns_path(container_id)).context("opening the container's namespace")?;
                let mut inside = bridge::netlink_in(&ns)?;
                // The inside end went with the host end; anything left by that name is in the way.
                if let Some(l) = inside.link_by_name(&endpoint.ifname)? {
                    inside.delete_link(l.index)?;
                }
                let master = self.index(bridge)?;
                bridge::attach(self.nl, &mut inside, &ns, master, endpoint)
            }
            Action::DeleteStray { name } => match self.nl.link_by_name(name)? {
                Some(l) => Ok(self.nl.delete_link(l.index)?),
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{self, Snapshot};
    use crate::model::Driver;
    use crate::store::State;

    /// The kernel as a list of devices: actions change the list as the kernel would.
    struct FakeKernel {
        links: Vec<LiveLink>,
        applied: Vec<Action>,
    }

    impl Kernel for FakeKernel {
        fn links(&mut self) -> Result<Vec<LiveLink>> {
            Ok(self.links.clone())
        }

        fn apply(&mut self, a: &Action) -> Result<()> {
            self.applied.push(a.clone());
            let next = self.links.len() as u32 + 100;
            match a {
                Action::EnsureBridge { name, gateway, prefix, .. } => {
                    self.links.retain(|l| &l.name != name);
                    self.links.push(LiveLink {
                        index: next,
                        name: name.clone(),
                        kind: Some("bridge".into()),
                        master: None,
                        up: true,
                        addrs: vec![(IpAddr::V4(*gateway), *prefix)],
                    });
                }
                Action::Enslave { port, bridge, .. } => {
                    let l = self.links.iter_mut().find(|l| &l.name == port).expect("port exists");
                    l.master = Some(bridge.clone());
                    l.up = true;
                }
                Action::SetUp { name } => self.links.iter_mut().find(|l| &l.name == name).expect("exists").up = true,
                Action::RecreateVeth { bridge, endpoint, .. } => self.links.push(LiveLink {
                    index: next,
                    name: endpoint.host_name.clone(),
                    kind: Some("veth".into()),
                    master: Some(bridge.clone()),
                    up: true,
                    addrs: vec![],
                }),
                Action::EnsureVxlan { name, bridge, .. } => {
                    self.links.retain(|l| &l.name != name);
                    self.links.push(LiveLink {
                        index: next,
                        name: name.clone(),
                        kind: Some("vxlan".into()),
                        master: Some(bridge.clone()),
                        up: true,
                        addrs: vec![],
                    });
                }
                Action::EnsureSegment { segment, .. } => {
                    self.links.retain(|l| l.name != segment.bridge);
                    self.links.push(LiveLink {
                        index: next,
                        name: segment.bridge.clone(),
                        kind: Some("bridge".into()),
                        master: None,
                        up: true,
                        addrs: vec![(IpAddr::V4(segment.gateway), 32)],
                    });
                }
                Action::DeleteStray { name } => self.links.retain(|l| &l.name != name),
            }
            Ok(())
        }
    }

    fn world() -> (Desired, Vec<LiveLink>) {
        use desired::tests::{ctr, ep, net};
        let snap = Snapshot {
            networks: vec![net("aaaaaaaaaaaa", "web", Driver::Bridge, false)],
            containers: vec![ctr("c1", "web", State::Running), ctr("c2", "web", State::Running)],
            endpoints: vec![
                ep("e1e1e1e1e1e1", "c1", "aaaaaaaaaaaa", "10.1.0.2", "eth0"),
                ep("e2e2e2e2e2e2", "c2", "aaaaaaaaaaaa", "10.1.0.3", "eth0"),
            ],
        };
        let d = desired::host(&snap);
        let br = plan::bridge_name("ab12", "aaaaaaaaaaaa");
        let port = |i, id| LiveLink {
            index: i,
            name: plan::host_veth_name("ab12", id),
            kind: Some("veth".into()),
            master: Some(br.clone()),
            up: true,
            addrs: vec![],
        };
        let live = vec![
            LiveLink { index: 1, name: "eth0".into(), kind: None, master: None, up: true, addrs: vec![] },
            LiveLink {
                index: 2,
                name: br.clone(),
                kind: Some("bridge".into()),
                master: None,
                up: true,
                addrs: vec![("10.1.0.1".parse().unwrap(), 24)],
            },
            port(3, "e1e1e1e1e1e1"),
            port(4, "e2e2e2e2e2e2"),
        ];
        (d, live)
    }

    #[test]
    fn a_healthy_kernel_needs_nothing() {
        let (d, live) = world();
        assert_eq!(diff("ab12", &d, &live), vec![]);
    }

    #[test]
    fn a_deleted_bridge_is_recreated_and_its_ports_enslaved_again() {
        let (d, mut live) = world();
        // What the kernel does on `ip link del nwb…`: the bridge goes, its ports stay, masterless.
        live.retain(|l| l.kind.as_deref() != Some("bridge"));
        for l in &mut live {
            l.master = None;
        }
        let mut k = FakeKernel { links: live, applied: vec![] };
        let done = converge("ab12", &d, &mut k).unwrap();
        assert!(matches!(done[0], Action::EnsureBridge { .. }), "bridge first: {done:?}");
        assert_eq!(done.iter().filter(|a| matches!(a, Action::Enslave { .. })).count(), 2);
        assert_eq!(diff("ab12", &d, &k.links), vec![], "converged");
    }

    #[test]
    fn a_deleted_veth_is_remade_into_its_container() {
        let (d, mut live) = world();
        let gone = plan::host_veth_name("ab12", "e2e2e2e2e2e2");
        live.retain(|l| l.name != gone);
        let actions = diff("ab12", &d, &live);
        assert!(
            matches!(&actions[..], [Action::RecreateVeth { container_id, endpoint, .. }]
                if container_id == "c2" && endpoint.host_name == gone && endpoint.ifname == "eth0"),
            "{actions:?}"
        );
        let mut k = FakeKernel { links: live, applied: vec![] };
        converge("ab12", &d, &mut k).unwrap();
        assert_eq!(diff("ab12", &d, &k.links), vec![]);
    }

    #[test]
    fn strays_of_this_root_go_and_other_roots_devices_stay() {
        let (d, mut live) = world();
        let mine = plan::host_veth_name("ab12", "ffffffffffff");
        let theirs = plan::host_veth_name("cd34", "ffffffffffff");
        for (i, name) in [(10, &mine), (11, &theirs)] {
            live.push(LiveLink {
                index: i,
                name: name.clone(),
                kind: Some("veth".into()),
                master: None,
                up: false,
                addrs: vec![],
            });
        }
        assert_eq!(diff("ab12", &d, &live), vec![Action::DeleteStray { name: mine }]);
    }

    #[test]
    fn an_overlay_bridge_deleted_by_hand_gets_its_vxlan_port_back() {
        use desired::tests::{ctr, ep, net};
        let mut n = net("aaaaaaaaaaaa", "ov", Driver::Overlay, false);
        n.options.insert("vni".into(), "4096".into());
        let snap = Snapshot {
            networks: vec![n.clone()],
            containers: vec![ctr("c1", "ov", State::Running)],
            endpoints: vec![ep("e1e1e1e1e1e1", "c1", "aaaaaaaaaaaa", "10.1.0.2", "eth0")],
        };
        let d = desired::host(&snap);
        let vx = crate::drivers::overlay::vxlan_of(&n);
        assert!(plan::is_ours("ab12", &vx), "{vx} is this root's");
        // The bridge is gone: its veth and VXLAN ports stay, masterless.
        let live = vec![
            LiveLink {
                index: 3,
                name: plan::host_veth_name("ab12", "e1e1e1e1e1e1"),
                kind: Some("veth".into()),
                master: None,
                up: true,
                addrs: vec![],
            },
            LiveLink { index: 4, name: vx.clone(), kind: Some("vxlan".into()), master: None, up: true, addrs: vec![] },
        ];
        let mut k = FakeKernel { links: live, applied: vec![] };
        let done = converge("ab12", &d, &mut k).unwrap();
        assert!(matches!(done[0], Action::EnsureBridge { .. }), "bridge first: {done:?}");
        assert!(matches!(&done[1], Action::EnsureVxlan { name, vni: 4096, .. } if *name == vx), "{done:?}");
        assert_eq!(diff("ab12", &d, &k.links), vec![], "converged");
    }

    #[test]
    fn a_bridge_without_its_address_or_down_is_fixed_in_place() {
        let (d, mut live) = world();
        live[1].addrs.clear();
        live[3].up = false;
        let actions = diff("ab12", &d, &live);
        assert!(matches!(actions[0], Action::EnsureBridge { .. }));
        assert!(matches!(&actions[1], Action::SetUp { name } if name == &live[3].name));
    }
}
