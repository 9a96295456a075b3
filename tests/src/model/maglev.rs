//! The Maglev table builder as vip first wrote it, kept as the reference the fast
//! builder (`vip_user::control::maglev::build`) must match entry for entry: a plain
//! transcription of the paper's loop (a modulo per probe, one `u64` step counter per
//! backend), so a fast path that skips or reorders work cannot hide behind it. Its
//! only user is the test below and the fixtures' comparison on many random inputs.

use std::net::SocketAddr;

use vip_common::jhash2;
use vip_user::control::maglev::MaglevBackend;

/// Seeds of the two identity hashes (any two distinct constants; fixed forever, since
/// changing them reshuffles every table on upgrade).
const OFFSET_SEED: u32 = 0x6d61_676c; // "magl"
const SKIP_SEED: u32 = 0x6576_3031; // "ev01"

/// The identity as hashable words: address (IPv4 in word 0, big-endian), then port and
/// family, so `[::ffff:a.b.c.d]:p` and `a.b.c.d:p` differ.
fn identity_words(identity: &SocketAddr) -> [u32; 5] {
    let (addr, family) = match identity {
        SocketAddr::V4(a) => ([u32::from(*a.ip()), 0, 0, 0], 4u32),
        SocketAddr::V6(a) => {
            let o = a.ip().octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], 6u32)
        }
    };
    [
        addr[0],
        addr[1],
        addr[2],
        addr[3],
        u32::from(identity.port()) | (family << 16),
    ]
}

/// `(offset, skip)` of a backend's permutation in a table of size `m`.
fn permutation(identity: &SocketAddr, m: u32) -> (u64, u64) {
    let words = identity_words(identity);
    let offset = jhash2(&words, OFFSET_SEED) % m;
    let skip = if m > 1 {
        jhash2(&words, SKIP_SEED) % (m - 1) + 1
    } else {
        1
    };
    (u64::from(offset), u64::from(skip))
}

/// Builds the lookup table of size `m` (a prime, so every `skip` generates all slots):
/// entry i = backend id. Weighted, deterministic from identities. Backends with weight 0
/// get no slots. No backend with a positive weight (or `m == 0`) -> empty `Vec`.
pub fn build_reference(backends: &[MaglevBackend], m: u32) -> Vec<u32> {
    let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() || m == 0 {
        return Vec::new();
    }
    // Canonical order: who claims first in a round must not depend on input order.
    live.sort_by_key(|b| (b.identity, b.id, b.weight));
    let max_weight = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
    let perms: Vec<(u64, u64)> = live.iter().map(|b| permutation(&b.identity, m)).collect();
    let m64 = u64::from(m);

    let mut table = vec![u32::MAX; m as usize];
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut filled = 0u32;
    while filled < m {
        for (i, backend) in live.iter().enumerate() {
            credit[i] += u64::from(backend.weight);
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            let (offset, skip) = perms[i];
            // Walk this backend's permutation to its next free slot. m is prime, so the
            // walk visits every slot and terminates while any slot is free.
            let slot = loop {
                let c = ((offset + next[i] * skip) % m64) as usize;
                next[i] += 1;
                if table[c] == u32::MAX {
                    break c;
                }
            };
            table[slot] = backend.id;
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use vip_user::control::maglev;

    /// Small deterministic PRNG (no dependency; a failure names its seed).
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Primes from the smallest tables to the largest the bench builds.
    const PRIMES: [u32; 12] = [2, 3, 5, 7, 13, 251, 1009, 1021, 4099, 16381, 65537, 655_373];

    /// `n` backends with random identities (IPv4 and IPv6, now and then the same
    /// address and port twice under two ids) and weights drawn by `weight`.
    fn backends(
        n: u32,
        rng: &mut XorShift,
        mut weight: impl FnMut(&mut XorShift) -> u32,
    ) -> Vec<MaglevBackend> {
        let mut out: Vec<MaglevBackend> = Vec::new();
        for id in 0..n {
            let identity = if !out.is_empty() && rng.below(50) == 0 {
                out[rng.below(out.len() as u64) as usize].identity
            } else if rng.below(3) == 0 {
                let a = std::net::Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    rng.below(4) as u16,
                    0,
                    0,
                    0,
                    0,
                    rng.below(0x1_0000) as u16,
                );
                SocketAddr::from((a, 1 + rng.below(65_535) as u16))
            } else {
                let o = rng.next().to_be_bytes();
                SocketAddr::from((
                    [198, 18 + (o[0] & 1), o[1], o[2]],
                    1 + rng.below(65_535) as u16,
                ))
            };
            out.push(MaglevBackend {
                id,
                identity,
                weight: weight(rng),
            });
        }
        out
    }

    /// The fast builder and the paper's loop agree entry for entry, for tables of every
    /// size the project uses, any number of backends, equal and unequal weights
    /// (drained ones among them), and any input order.
    #[test]
    fn the_fast_builder_matches_the_reference_on_random_inputs() {
        let mut rng = XorShift(0x005e_ed0f_6d61_676c);
        let mut compared = 0;
        for case in 0..600 {
            let m = PRIMES[rng.below(PRIMES.len() as u64 - 1) as usize];
            // The 655,373-entry table is slow in the reference: a few cases only.
            let m = if case % 100 == 99 { PRIMES[11] } else { m };
            let n = 1 + rng.below(u64::from(m.min(1200))) as u32;
            let bs = match case % 4 {
                0 => backends(n, &mut rng, |_| 1),
                1 => backends(n, &mut rng, |r| r.below(4) as u32),
                2 => backends(n, &mut rng, |r| 1 + r.below(1000) as u32),
                _ => backends(n, &mut rng, |r| match r.below(5) {
                    0 => 0,
                    1 => u32::MAX,
                    _ => 1 + r.below(u64::from(u32::MAX)) as u32,
                }),
            };
            let want = build_reference(&bs, m);
            let got = maglev::build(&bs, m);
            assert!(
                got == want,
                "case {case}: M = {m}, {n} backends: the fast table differs from the \
                 reference at {} entries (first at {:?})",
                got.iter().zip(&want).filter(|(a, b)| a != b).count()
                    + got.len().abs_diff(want.len()),
                got.iter().zip(&want).position(|(a, b)| a != b)
            );
            compared += usize::from(!want.is_empty());
        }
        // Most cases have a backend with a positive weight: the comparison is of real
        // tables, not of empty ones.
        assert!(compared > 500, "only {compared} non-empty tables compared");
    }

    /// The largest table with equal weights, the bench's shape: the random cases above
    /// draw M = 655,373 only with unequal weights, and the builder's last claims (when
    /// it stops walking and computes the nearest free slot) matter most in a large
    /// table.
    #[test]
    fn the_fast_builder_matches_the_reference_on_the_largest_table_with_equal_weights() {
        let mut rng = XorShift(0x6c61_7267_655f_6d31);
        for n in [1, 10, 1000] {
            let bs = backends(n, &mut rng, |_| 1);
            let want = build_reference(&bs, PRIMES[11]);
            assert_eq!(want.len(), PRIMES[11] as usize);
            assert!(
                maglev::build(&bs, PRIMES[11]) == want,
                "M = {}, {n} equal backends: the fast table differs from the reference",
                PRIMES[11]
            );
        }
    }

    #[test]
    fn both_builders_agree_on_the_edges() {
        let one = |weight| MaglevBackend {
            id: 7,
            identity: "198.18.0.1:80".parse().unwrap(),
            weight,
        };
        for m in [0, 1, 2, 3] {
            for w in [0, 1, u32::MAX] {
                assert_eq!(maglev::build(&[one(w)], m), build_reference(&[one(w)], m));
            }
        }
        assert!(maglev::build(&[], 7).is_empty());
        assert_eq!(maglev::build(&[one(1)], 1), vec![7]);
    }
}
