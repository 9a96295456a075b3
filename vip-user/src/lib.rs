//! The control plane of vip: everything `vipd` and `vipctl` share.

pub mod config;
pub mod ebpf;
#[cfg(test)]
mod fake;
pub mod maglev;
pub mod owner;
pub mod reconcile;
