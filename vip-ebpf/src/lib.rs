//! Shared pieces of the vip XDP programs, one module per concern. Each program is a binary
//! under `src/bin/`; the load balancer's whole packet path is [`lb::process`], so a
//! benchmark program can wrap exactly the code that runs in production.
#![no_std]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "aya-ebpf's map lookups take `impl Borrow<K>`: a key passed by value is copied \
              once more on the BPF stack (26 more instructions in vip_lb when tried)"
)]

pub mod acl;
pub mod conntrack;
pub mod csum;
pub mod decap;
pub mod encap;
pub mod icmp;
pub mod lb;
pub mod maps;
pub mod neigh;
pub mod nexthop;
pub mod parse;
pub mod ptr;
pub mod stats;
pub mod trace;
pub mod verdict;
pub mod vip;
