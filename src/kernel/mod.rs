//! Kernel primitives: netlink (links, addresses, routes) and network namespaces.
pub mod mntns;
pub mod netlink;
pub mod nftables;
pub mod netns;
