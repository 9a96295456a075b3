//! `vip_lb`: the load-balancer XDP program.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use vip_common::Reason;
use vip_ebpf::{maps::count, parse::parse};

/// Entry point: every packet gets a verdict and exactly one counted reason.
#[xdp]
pub fn vip_lb(ctx: XdpContext) -> u32 {
    let (action, reason) = try_vip_lb(&ctx);
    count(reason);
    action
}

#[inline(always)]
fn try_vip_lb(ctx: &XdpContext) -> (u32, Reason) {
    match parse(ctx) {
        // No VIP is known yet: everything is passed to the kernel untouched.
        Ok(_) => (xdp_action::XDP_PASS, Reason::PassNotVip),
        Err(reason) => (xdp_action::XDP_PASS, reason),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
