//! Where a packet for a backend leaves: the per-backend next hop that user space resolved
//! (cheap: one array lookup), else `bpf_fib_lookup` (the kernel's routes and neighbours).

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use vip_common::{Backend, FAMILY_V4, NEXTHOP_F_VALID, NextHop, Reason};

use crate::maps::{NEXTHOPS, TX_PORTS};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The next hop towards `backend` (id `id`), or `DropNoRoute`.
#[inline(always)]
pub fn resolve(ctx: &XdpContext, id: u32, backend: &Backend) -> Result<NextHop, Reason> {
    if let Some(nh) = NEXTHOPS.get(id)
        && nh.flags & NEXTHOP_F_VALID != 0
    {
        return Ok(*nh);
    }
    fib(ctx, backend)
}

#[inline(always)]
fn fib(ctx: &XdpContext, backend: &Backend) -> Result<NextHop, Reason> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid input (plain integers and unions).
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.ifindex = ctx.ingress_ifindex() as u32;
    if backend.family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_4.ipv4_dst = backend.addr[0];
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_4.ipv6_dst = backend.addr;
    }
    // SAFETY: params is a valid, fully initialised struct of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(Reason::DropNoRoute);
    }
    Ok(NextHop {
        dst_mac: params.dmac,
        src_mac: params.smac,
        ifindex: params.ifindex,
        flags: NEXTHOP_F_VALID,
    })
}

/// The verdict that sends the (already rewritten) frame out through `nh`: `XDP_TX` when
/// it leaves by the ingress interface, `XDP_REDIRECT` through the devmap otherwise.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, nh: &NextHop) -> Result<u32, Reason> {
    if nh.ifindex == 0 || nh.ifindex as usize == ctx.ingress_ifindex() {
        return Ok(xdp_action::XDP_TX);
    }
    TX_PORTS
        .redirect(nh.ifindex, u64::from(xdp_action::XDP_DROP))
        .map_err(|_| Reason::DropNoRoute)
}
