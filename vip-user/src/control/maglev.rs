//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4), weighted.
//!
//! The table is a pure function of the backends' identities (address and port), ids and
//! weights: the input order never matters, so every LB node with the same configuration
//! builds the same table and ECMP can move a flow between nodes without it changing
//! backend. Each backend's permutation of the table slots is `offset + j * skip (mod M)`
//! with `offset` and `skip` taken from two independent hashes of its identity, as in the
//! paper. Weights follow Katran's approach: every round each backend earns its weight in
//! credit and claims its next preferred free slot whenever its credit reaches the largest
//! weight, so slot counts are proportional to weight.

use std::net::SocketAddr;

use vip_common::jhash2;

/// A backend as Maglev sees it: identity decides its permutation (never insertion order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// The id the datapath knows the backend by; this is what the table holds.
    pub id: u32,
    /// The backend's address and port: decides where in the table it prefers to sit.
    pub identity: SocketAddr,
    /// Relative share of the table. 0 gets no slots (draining).
    pub weight: u32,
}

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
pub fn build(backends: &[MaglevBackend], m: u32) -> Vec<u32> {
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
    use std::collections::HashMap;

    /// Small deterministic PRNG for the property loops (no dependency, reproducible).
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

    const PRIMES: [u32; 5] = [7, 251, 1009, 4099, 65537];

    fn backends(n: u32, rng: &mut XorShift) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| {
                let v6 = rng.below(2) == 0;
                let identity: SocketAddr = if v6 {
                    format!(
                        "[2001:db8:1::{:x}]:{}",
                        rng.below(0xffff),
                        1 + rng.below(65000)
                    )
                } else {
                    format!(
                        "198.18.{}.{}:{}",
                        rng.below(256),
                        rng.below(256),
                        1 + rng.below(65000)
                    )
                }
                .parse()
                .unwrap();
                MaglevBackend {
                    id: i,
                    identity,
                    weight: 1,
                }
            })
            .collect()
    }

    fn counts(table: &[u32]) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for id in table {
            *c.entry(*id).or_default() += 1;
        }
        c
    }

    fn shuffle<T>(v: &mut [T], rng: &mut XorShift) {
        for i in (1..v.len()).rev() {
            v.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }

    #[test]
    fn empty_inputs_give_an_empty_table() {
        assert!(build(&[], 251).is_empty());
        let drained = [MaglevBackend {
            id: 1,
            identity: "198.18.1.1:80".parse().unwrap(),
            weight: 0,
        }];
        assert!(build(&drained, 251).is_empty());
    }

    #[test]
    fn a_single_backend_owns_every_slot() {
        let one = [MaglevBackend {
            id: 9,
            identity: "198.18.1.1:80".parse().unwrap(),
            weight: 3,
        }];
        assert_eq!(build(&one, 251), vec![9; 251]);
    }

    #[test]
    fn equal_backends_get_floor_or_ceil_of_m_over_n() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for _ in 0..200 {
            let m = PRIMES[rng.below(PRIMES.len() as u64) as usize];
            let n = 1 + rng.below(u64::from(m.min(300))) as u32;
            let bs = backends(n, &mut rng);
            let table = build(&bs, m);
            assert_eq!(table.len(), m as usize);
            let c = counts(&table);
            assert_eq!(
                c.len(),
                n as usize,
                "every backend gets a slot (m={m} n={n})"
            );
            let (lo, hi) = ((m / n) as usize, m.div_ceil(n) as usize);
            for (id, k) in c {
                assert!(
                    lo <= k && k <= hi,
                    "backend {id}: {k} slots, want {lo}..={hi}"
                );
            }
        }
    }

    #[test]
    fn weights_give_proportional_shares() {
        let mut rng = XorShift(0xfeed_beef_1234_0001);
        for _ in 0..50 {
            let n = 2 + rng.below(20) as u32;
            let mut bs = backends(n, &mut rng);
            for b in &mut bs {
                b.weight = 1 + rng.below(10) as u32;
            }
            let m = 65537;
            let c = counts(&build(&bs, m));
            let total: u64 = bs.iter().map(|b| u64::from(b.weight)).sum();
            for b in &bs {
                let want = f64::from(m) * f64::from(b.weight) / total as f64;
                let got = c[&b.id] as f64;
                // Rounds are whole, so the error is at most about one round's worth of
                // slots; allow 2% of the share plus a handful.
                assert!(
                    (got - want).abs() <= want * 0.02 + 3.0,
                    "weight {} of {total}: {got} slots, want ~{want:.1}",
                    b.weight
                );
            }
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut rng = XorShift(0x0bad_cafe_0000_0007);
        for _ in 0..50 {
            let n = 1 + rng.below(64) as u32;
            let mut bs = backends(n, &mut rng);
            for b in &mut bs {
                b.weight = rng.below(4) as u32;
            }
            let m = PRIMES[rng.below(PRIMES.len() as u64) as usize];
            let table = build(&bs, m);
            shuffle(&mut bs, &mut rng);
            assert_eq!(build(&bs, m), table);
        }
    }

    #[test]
    fn the_table_depends_on_identity_not_on_id_order() {
        // Same identities, ids assigned differently: the slot pattern follows identity.
        let mut rng = XorShift(77);
        let bs = backends(10, &mut rng);
        let renamed: Vec<MaglevBackend> = bs
            .iter()
            .map(|b| MaglevBackend {
                id: b.id + 100,
                ..*b
            })
            .collect();
        let a = build(&bs, 1009);
        let b = build(&renamed, 1009);
        assert!(a.iter().zip(&b).all(|(x, y)| x + 100 == *y));
    }

    /// Removing one of N backends moves that backend's slots and, as Maglev only
    /// promises near-minimal disruption, a small fraction of the others. The fraction is
    /// measured and printed; the bound asserted is well above the paper's figures.
    #[test]
    fn removing_one_backend_moves_mostly_its_own_slots() {
        let mut rng = XorShift(0xdead_0000_beef_0001);
        let m = 65537;
        let mut worst = 0.0f64;
        let mut sum = 0.0f64;
        let trials = 20;
        for _ in 0..trials {
            let n = 5 + rng.below(100) as u32;
            let bs = backends(n, &mut rng);
            let before = build(&bs, m);
            let gone = rng.below(u64::from(n)) as u32;
            let rest: Vec<MaglevBackend> = bs.iter().copied().filter(|b| b.id != gone).collect();
            let after = build(&rest, m);
            let mut others_moved = 0usize;
            for (x, y) in before.iter().zip(&after) {
                assert_ne!(*y, gone);
                if *x != gone && x != y {
                    others_moved += 1;
                }
            }
            let frac = others_moved as f64 / f64::from(m);
            worst = worst.max(frac);
            sum += frac;
        }
        eprintln!(
            "maglev removal: slots of surviving backends that moved: mean {:.3}%, worst {:.3}%",
            sum / f64::from(trials) * 100.0,
            worst * 100.0
        );
        assert!(worst < 0.05, "too much disruption: {:.2}%", worst * 100.0);
    }
}
