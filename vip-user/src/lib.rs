//! The control plane of vip: everything `vipd` and `vipctl` share.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod datapath_ops;
pub mod decap;
pub mod ebpf;
#[cfg(test)]
mod fake;
pub mod health;
pub mod maglev;
pub mod metrics;
pub mod model;
pub mod nexthop;
pub mod owner;
pub mod reconcile;
pub mod service;
pub mod trace;
pub mod xdp_link;
