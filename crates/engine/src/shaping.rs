//! Bandwidth limits per container, set from the host side so that nothing inside the
//! container can lift them: into the container, a token bucket (tbf) on the host end of
//! its veth; out of it, the host end's incoming packets redirected (u32 + mirred) to an ifb
//! device of its own (`nwi<tag><endpoint>`) with a token bucket there. The container's
//! rate wins; else the network's default (`--opt egress_rate=… ingress_rate=…`).

use anyhow::{Context, Result};

use crate::kernel::netlink::Netlink;
use crate::kernel::tc;
use crate::model::{Container, Endpoint, Network};
use crate::plan;

pub use crate::kernel::tc::parse_rate;

pub const EGRESS_OPTION: &str = "egress_rate";
pub const INGRESS_OPTION: &str = "ingress_rate";

/// The limits that apply to one endpoint: (egress, ingress) in bits/s.
pub fn rates(c: &Container, n: &Network) -> (Option<u64>, Option<u64>) {
    let opt = |k: &str| n.options.get(k).and_then(|v| parse_rate(v));
    (c.egress_rate.or_else(|| opt(EGRESS_OPTION)), c.ingress_rate.or_else(|| opt(INGRESS_OPTION)))
}

/// Sets (or clears) an endpoint's limits in the host namespace. Endpoints without a host
/// device (macvlan) are left alone.
pub fn apply(nl: &mut Netlink, tag: &str, e: &Endpoint, (egress, ingress): (Option<u64>, Option<u64>)) -> Result<()> {
    if e.host_ifname.is_empty() {
        return Ok(());
    }
    let veth = nl.link_by_name(&e.host_ifname)?.with_context(|| format!("{} is gone", e.host_ifname))?.index;
    match ingress {
        Some(rate) => tc::set_rate(nl, veth, rate).context("limiting traffic into the container")?,
        None => tc::clear_rate(nl, veth)?,
    }
    let ifb = plan::ifb_name(tag, &e.id);
    match egress {
        Some(rate) => {
            let index = nl.ensure_ifb(&ifb).with_context(|| format!("creating {ifb}"))?;
            tc::set_rate(nl, index, rate).context("limiting traffic out of the container")?;
            tc::redirect_ingress(nl, veth, index).context("redirecting the container's traffic to its ifb")?;
        }
        None => {
            tc::clear_ingress(nl, veth)?;
            if let Some(l) = nl.link_by_name(&ifb)? {
                nl.delete_link(l.index)?;
            }
        }
    }
    Ok(())
}

/// A rate for the CLI and inspect: "10mbit".
pub fn format_rate(bits: u64) -> String {
    match bits {
        b if b % 1_000_000_000 == 0 => format!("{}gbit", b / 1_000_000_000),
        b if b % 1_000_000 == 0 => format!("{}mbit", b / 1_000_000),
        b if b % 1_000 == 0 => format!("{}kbit", b / 1_000),
        b => format!("{b}bit"),
    }
}
