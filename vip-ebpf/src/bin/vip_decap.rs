//! `vip_decap`: the backend-side XDP program that removes vip's tunnel header.
#![no_std]
#![no_main]

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// Entry point (see `vip_ebpf::decap`).
#[xdp]
pub fn vip_decap(ctx: XdpContext) -> u32 {
    vip_ebpf::decap::process(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
