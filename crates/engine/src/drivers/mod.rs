//! Network drivers: turn a plan into kernel objects.
pub mod bridge;
pub mod macvlan;
