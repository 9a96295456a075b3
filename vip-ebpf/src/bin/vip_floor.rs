//! `vip_floor`: parse only (Ethernet, IP, ports), count, `XDP_PASS`. Not deployed: it is
//! the floor that `vip_lb`'s per-packet cost is measured against in the same run (the
//! cost of entering an XDP program and reading the headers at all).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use vip_common::Reason;
use vip_ebpf::{parse::parse, stats::count};

/// Entry point.
#[xdp]
pub fn vip_floor(ctx: XdpContext) -> u32 {
    let reason = match parse(&ctx, |_, _| true) {
        Ok(_) => Reason::PassNotVip,
        Err(reason) => reason,
    };
    count(reason);
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
