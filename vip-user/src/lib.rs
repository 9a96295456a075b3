//! The control plane of vip: everything `vipd` and `vipctl` share.

pub mod datapath;
pub mod ebpf;
pub mod maglev;
