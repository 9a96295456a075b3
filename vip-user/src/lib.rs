//! The control plane of vip: everything `vipd` and `vipctl` share.

pub mod ebpf;
pub mod maglev;
