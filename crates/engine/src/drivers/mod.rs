//! Network drivers behind one trait: each validates its options, says which host devices a
//! network and its endpoints should have (the desired state, see [`crate::desired`]) and
//! makes an endpoint's interfaces in the kernel. Adding a driver (routed) is one file here
//! and one arm in [`of`].

pub mod bridge;
pub mod macvlan;
pub mod overlay;

use std::os::fd::OwnedFd;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::kernel::netlink::Netlink;
use crate::model::Driver;
use crate::plan::DesiredLink;
use crate::plan::EndpointPlan;
use crate::store::Network;

pub trait NetworkDriver: Sync {
    /// Checks one driver-specific `--opt KEY=VALUE` (mtu is everyone's and checked before).
    fn check_option(&self, key: &str, value: &str) -> Result<()>;

    /// The host-namespace devices of a network; `in_use`: a container has an address on it.
    fn network_links(&self, n: &Network, in_use: bool) -> Vec<DesiredLink>;

    /// Whether an endpoint of this driver has a host-side device (a veth's host end).
    fn has_host_device(&self) -> bool;

    /// Makes the network's devices exist (idempotent); returns the ifindex endpoints attach
    /// to (the bridge), or 0 when they attach elsewhere.
    fn ensure_network(&self, ctx: &Ctx, nl: &mut Netlink, n: &Network) -> Result<u32>;

    /// Makes one endpoint's interfaces: `host` is the host namespace, `ctr` the container's
    /// (`ns`), `anchor` what [`NetworkDriver::ensure_network`] returned.
    fn attach(
        &self,
        host: &mut Netlink,
        ctr: &mut Netlink,
        ns: &OwnedFd,
        n: &Network,
        anchor: u32,
        plan: &EndpointPlan,
    ) -> Result<()>;

    /// Removes the network's devices (`others`: every network, for shared parents).
    fn remove(&self, nl: &mut Netlink, n: &Network, others: &[Network]) -> Result<()>;
}

/// The driver of a network.
pub fn of(d: Driver) -> &'static dyn NetworkDriver {
    match d {
        Driver::Bridge => &bridge::BridgeDriver,
        Driver::Macvlan => &macvlan::MacvlanDriver,
        Driver::Overlay => &overlay::OverlayDriver,
    }
}
