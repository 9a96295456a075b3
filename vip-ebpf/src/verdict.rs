//! What a program decides for a frame: its XDP action and the one reason it is counted
//! under. Its own module because every stage returns one (parse, ICMP, forwarding, the
//! decapsulator), and the load balancer's path calls those stages.

use aya_ebpf::bindings::xdp_action;
use vip_common::Reason;

/// A verdict and the reason it is counted under.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    /// `XDP_*` action.
    pub action: u32,
    /// Why.
    pub reason: Reason,
}

impl Verdict {
    /// `XDP_PASS`: the kernel takes the frame.
    #[inline(always)]
    pub fn pass(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            reason,
        }
    }

    /// `XDP_DROP`.
    #[inline(always)]
    pub fn drop(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            reason,
        }
    }
}
