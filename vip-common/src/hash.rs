//! The hashes: the flow hash that picks a flow's Maglev slot ([`flow_hash`]: NH, the
//! connection table's hash, with a fixed seed so it is identical on every node), and Bob
//! Jenkins' lookup3 `jhash2`, word for word the Linux kernel's `include/linux/jhash.h`,
//! which builds the Maglev permutations in user space.

use crate::{FlowKey, flowtable::nh_hash};

const JHASH_INITVAL: u32 = 0xdead_beef;

/// Seed of the flow hash. Every LB node must use the same value so that ECMP can move a
/// flow between nodes without it changing backend.
pub const FLOW_HASH_SEED: u32 = 0x7669_7031; // "vip1"

#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline(always)]
fn finalize(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// `jhash2` over a fixed number of 32-bit words (the length is a constant, so the
/// compiler unrolls the loop and the BPF verifier sees straight-line code).
#[inline(always)]
pub fn jhash2<const N: usize>(k: &[u32; N], initval: u32) -> u32 {
    let init = JHASH_INITVAL
        .wrapping_add((N as u32) << 2)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut i = 0;
    while N - i > 3 {
        a = a.wrapping_add(k[i]);
        b = b.wrapping_add(k[i + 1]);
        c = c.wrapping_add(k[i + 2]);
        mix(&mut a, &mut b, &mut c);
        i += 3;
    }
    match N - i {
        3 => {
            c = c.wrapping_add(k[i + 2]);
            b = b.wrapping_add(k[i + 1]);
            a = a.wrapping_add(k[i]);
        }
        2 => {
            b = b.wrapping_add(k[i + 1]);
            a = a.wrapping_add(k[i]);
        }
        1 => a = a.wrapping_add(k[i]),
        _ => return c,
    }
    finalize(&mut a, &mut b, &mut c);
    c
}

/// The hash that picks a flow's Maglev slot: `flow_hash(key) % table_size`. It is the
/// connection table's hash ([`crate::flow_table_hash`], NH over the key's ten words) with
/// the fixed [`FLOW_HASH_SEED`] instead of the node's random one.
///
/// Why not jhash2 (what Katran uses): a new flow's two misses into big arrays (its set of
/// the connection table, its Maglev slot) only overlap when the instructions between them
/// fit in the CPU's reorder window, and jhash2 over ten words is about 80 instructions
/// where NH is about 25. Measured in `cargo xtask bench` (new flows, 1M-flow table):
/// 30–60 ns less per new flow.
///
/// With `src_only` (a VIP's client-affinity option) only the source address counts, so
/// every connection from one client lands on one backend.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, src_only: bool) -> u32 {
    if src_only {
        return (nh_hash(&key.src, FLOW_HASH_SEED) >> 32) as u32;
    }
    (crate::flow_table_hash(key, FLOW_HASH_SEED) >> 32) as u32
}

/// The flow's bits for the tunnel's outer source address (and IPv6 flow label), so
/// backends spread tunnelled flows across their receive queues: taken from the
/// connection-table hash the datapath computes for every packet anyway
/// ([`crate::flow_table_hash`], seeded per LB node), so they cost nothing more.
#[inline(always)]
pub fn tunnel_hash(table_hash: u64) -> u32 {
    (table_hash >> 24) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values computed with the Linux kernel's jhash2() (include/linux/jhash.h)
    // compiled in user space.
    #[test]
    fn jhash2_matches_the_kernel() {
        assert_eq!(jhash2(&[], 0), 0xdead_beef);
        assert_eq!(jhash2(&[1], 0), 0x72a8_2a9b);
        assert_eq!(jhash2(&[1, 2, 3, 4], 0x1234_5678), 0x2d00_1f70);
        assert_eq!(
            jhash2(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], FLOW_HASH_SEED),
            0xa278_5314
        );
    }

    /// Flows that differ only in their source port (one client), or only in their source
    /// address (many clients, one port): each kind must spread evenly over Maglev slots
    /// and over the backends they stand for.
    #[test]
    fn sequential_ports_and_addresses_spread_evenly() {
        let base = FlowKey {
            src: [0x0100_12c6, 0, 0, 0],
            dst: [0x0a01_12c6, 0, 0, 0],
            src_port_be: 0,
            dst_port_be: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            family: crate::FAMILY_V4,
            _pad: [0; 2],
        };
        let n = 60_000u32;
        for (what, src_only) in [
            ("source ports", false),
            ("source addresses", false),
            ("source addresses, src_only", true),
        ] {
            let mut backends = [0u32; 10];
            for i in 0..n {
                let mut k = base;
                if what == "source ports" {
                    k.src_port_be = (i as u16).to_be();
                } else {
                    k.src[0] = (0xc612_0000 + i).to_be();
                    k.src_port_be = 40_000u16.to_be();
                }
                backends[(flow_hash(&k, src_only) % 65_537 % 10) as usize] += 1;
            }
            let mean = f64::from(n) / 10.0;
            for c in backends {
                assert!(
                    (f64::from(c) - mean).abs() < mean * 0.05,
                    "{what}: {backends:?}"
                );
            }
        }
    }

    #[test]
    fn src_only_ignores_ports_and_destination() {
        let mut a = FlowKey {
            src: [0x0100_12c6, 0, 0, 0],
            dst: [0x0a01_12c6, 0, 0, 0],
            src_port_be: 40000u16.to_be(),
            dst_port_be: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            family: crate::FAMILY_V4,
            _pad: [0; 2],
        };
        let h = flow_hash(&a, true);
        a.src_port_be = 40001u16.to_be();
        a.dst[0] = 0x0b01_12c6;
        assert_eq!(flow_hash(&a, true), h);
        let full = flow_hash(&a, false);
        a.src_port_be = 40002u16.to_be();
        assert_ne!(flow_hash(&a, false), full);
    }
}
