//! netwright's engine: the network life of one namespace, with no CLI and no process runtime.
//!
//! store (SQLite) → plan/desired (pure) → apply (netlink, nf_tables) ; front ends (the
//! Docker-shaped CLI, `attach`, the netavark and CNI front ends) call [`Engine`].
//!
//! Where things live:
//! - port publishing: [`ports`] (Docker's `-p` forms, host-port choice) and [`firewall`] (map elements)
//! - DNS: [`dns`] (the zone, pure) and [`dns::server`] (the resolver process)
//! - the firewall: [`firewall`] (the fixed nftables skeleton) over [`kernel::nftables`]
//! - overlay networks across hosts: [`overlay`] (etcd, the agent) and [`drivers::overlay`] (VXLAN)
//! - crash recovery: [`recover`] (sweep orphans, then converge the kernel on [`desired`])

pub mod apply;
pub mod connect;
pub mod container;
pub mod ctx;
pub mod desired;
pub mod dns;
pub mod drivers;
pub mod engine;
pub mod error;
pub mod firewall;
pub mod hostnames;
pub mod ipam;
pub mod kernel;
pub mod model;
pub mod names;
pub mod network;
pub mod observe;
pub mod overlay;
pub mod plan;
pub mod ports;
pub mod recover;
pub mod reset;
pub mod services;
pub mod shaping;
pub mod store;

pub use engine::Engine;
pub use error::{Error, ErrorKind};
