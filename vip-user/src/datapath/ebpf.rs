//! The XDP programs, embedded so that `vipd` is one binary to deploy.

/// The `vip_lb` object (XDP program `vip_lb` and its maps).
pub static VIP_LB: &[u8] = aya::include_bytes_aligned!(env!("VIP_LB_OBJECT"));

/// The `vip_decap` object (XDP program `vip_decap`), for backends in `tunnel` mode.
pub static VIP_DECAP: &[u8] = aya::include_bytes_aligned!(env!("VIP_DECAP_OBJECT"));

/// Name of the load-balancer program inside [`VIP_LB`].
pub const PROG_LB: &str = "vip_lb";
/// Name of the decapsulation program inside [`VIP_DECAP`].
pub const PROG_DECAP: &str = "vip_decap";
