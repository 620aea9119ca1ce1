//! Device offloads through the ethtool ioctl: GRO on veth ends.
//!
//! Why: a veth without GRO hands every packet to the receiving CPU's backlog queue
//! (net.core.netdev_max_backlog, 1,000 by default, one queue per CPU for all devices). A
//! broadcast — an ARP request — on a bridge with thousands of ports is one copy per port,
//! all queued at once: past ~1,000 ports the copies are dropped and containers stop
//! finding each other. With GRO on, the receiving veth end uses its own NAPI ring (256
//! packets per device), so a flood costs no shared queue; bulk traffic is batched too.
//! The legacy ETHTOOL_SGRO command keeps this one ioctl, without the ethtool netlink family.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// From <linux/sockios.h> and <linux/ethtool.h>.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_SGRO: u32 = 0x0000_002c;
const ETHTOOL_STSO: u32 = 0x0000_001f;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct Ifreq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    /// The rest of the kernel's union (struct ifreq is 40 bytes on 64-bit).
    _pad: [u8; 16],
}

/// Turns GRO on or off for the device `name` in the calling thread's network namespace.
pub fn set_gro(name: &str, on: bool) -> io::Result<()> {
    set(name, ETHTOOL_SGRO, on)
}

/// Turns TSO on or off: a veth end that sends with TSO off has every packet it sends
/// received through the peer's NAPI ring (when the peer has GRO on); with TSO on, only
/// locally made UDP is.
pub fn set_tso(name: &str, on: bool) -> io::Result<()> {
    set(name, ETHTOOL_STSO, on)
}

fn set(name: &str, cmd: u32, on: bool) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad device name {name:?}")));
    }
    // SAFETY: socket() has no memory preconditions; the result is checked before use and
    // owned from here on, so it is closed on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue { cmd, data: on as u32 };
    let mut req = Ifreq { name: [0; libc::IFNAMSIZ], data: &mut value, _pad: [0; 16] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: req is a valid, NUL-terminated struct ifreq whose data points at a live
    // ethtool_value for the duration of the call; the kernel reads both and writes neither
    // beyond their sizes.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req as *mut Ifreq) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<super::Ifreq>(), 40);
    }

    #[test]
    fn names_are_checked_before_the_kernel_sees_them() {
        assert!(super::set_gro("", true).is_err());
        assert!(super::set_gro("a-name-far-too-long", true).is_err());
    }
}
