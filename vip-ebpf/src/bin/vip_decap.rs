//! `vip_decap`: the backend-side XDP program that removes vip's tunnel header.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use vip_common::Reason;
use vip_ebpf::{maps::count, parse::parse};

/// Entry point. Until decapsulation lands, every packet is passed untouched.
#[xdp]
pub fn vip_decap(ctx: XdpContext) -> u32 {
    let reason = match parse(&ctx) {
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
