//! `vip_lb`: the load-balancer XDP program.
#![no_std]
#![no_main]

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// Entry point: every packet gets a verdict and exactly one counted reason
/// (see `vip_ebpf::lb`).
#[xdp]
// Inlined into the entry point the macro generates: left out of line once the datapath
// is large, it would cost every packet a BPF-to-BPF call.
#[inline(always)]
pub fn vip_lb(ctx: XdpContext) -> u32 {
    vip_ebpf::lb::process(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
