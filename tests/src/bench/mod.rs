//! `cargo xtask bench`: what vip costs, measured against baselines run in the same
//! invocation (the machines are shared and noisy, so ratios travel, absolute figures only
//! with the machine they came from).
//!
//! Sections: 0 floors, 1 per packet, 2 scaling with state, 3 control plane,
//! 4 balance and disruption, 5 end to end (lab), 6 packets per second through the real
//! XDP path (veth).

pub mod apply;
pub mod balance;
pub mod control;
pub mod datapath;
pub mod e2e;
pub mod flood;
pub mod insns;
pub mod jit;
pub mod lbsetup;
pub mod live_trace;
pub mod machine;
pub mod memory;
pub mod micro;
pub mod mpps;
pub mod nexthop;
pub mod packets;
pub mod per_packet;
pub mod report;
pub mod rss;
pub mod stats;
pub mod status;
pub mod testrun;

/// The bench-only eBPF object (`vip-ebpf/src/bin/vip_bench.rs`); empty when it was not
/// built (see tests/build.rs).
pub static VIP_BENCH: &[u8] = aya::include_bytes_aligned!(env!("VIP_BENCH_OBJECT"));

/// The eBPF object of section 6 (`vip-ebpf/src/bin/vip_mpps.rs`: generator, floor,
/// counting sink); empty when it was not built.
pub static VIP_MPPS: &[u8] = aya::include_bytes_aligned!(env!("VIP_MPPS_OBJECT"));
