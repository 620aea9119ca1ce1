//! netwright: container networking on the real Linux kernel.
//!
//! store (SQLite) → plan (pure) → drivers/kernel (netlink) ; runtime supervises containers;
//! reconcile repairs drift; sandbox builds throwaway LAN/host namespaces for tests and the demo.

pub mod bench;
pub mod cli;
pub mod compare;
pub mod ctx;
pub mod demo;
pub mod dns;
pub mod drivers;
pub mod firewall;
pub mod ipam;
pub mod kernel;
pub mod network;
pub mod observe;
pub mod plan;
pub mod ports;
pub mod reconcile;
pub mod runtime;
pub mod sandbox;
pub mod store;
