//! Kernel primitives: netlink (links, addresses, routes), network namespaces, nf_tables
//! and its packet tracing.
pub mod mntns;
pub mod netlink;
pub mod nftables;
pub mod nftrace;
pub mod netns;
