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

/// `(offset, skip)` of a backend's permutation in a table of size `m`: both below `m`,
/// `skip` at least 1.
fn permutation(identity: &SocketAddr, m: u32) -> (u32, u32) {
    let words = identity_words(identity);
    let offset = jhash2(&words, OFFSET_SEED) % m;
    let skip = if m > 1 {
        jhash2(&words, SKIP_SEED) % (m - 1) + 1
    } else {
        1
    };
    (offset, skip)
}

/// A backend claiming slots: where its permutation goes next, and its credit.
#[derive(Clone, Copy, Debug)]
struct Claimant {
    /// The next slot of its permutation, `offset + j * skip (mod M)` for the next `j`,
    /// advanced without a division (and without overflow for any M).
    pos: u32,
    skip: u32,
    /// `M - skip`: a slot at or past it wraps round.
    wrap_at: u32,
    /// Steps of 1, 2, 3 and 4 × `skip` (index k - 1), for [`Claimant::walk`].
    ahead: [Stride; 4],
    /// `skip`'s inverse mod M (there is one when M is prime): how many steps from `pos`
    /// a slot is, in one multiplication (see [`nearest_free`]).
    inverse: Option<u32>,
    weight: u64,
    credit: u64,
    id: u32,
}

impl Claimant {
    /// The slot after `slot` in this backend's permutation.
    #[inline(always)]
    fn step(&self, slot: u32) -> u32 {
        // Whether the step wraps is a coin toss to the branch predictor: a branch here
        // mispredicted on about every other probe.
        std::hint::select_unpredictable(
            slot >= self.wrap_at,
            slot.wrapping_sub(self.wrap_at),
            slot.wrapping_add(self.skip),
        )
    }

    /// Walks the permutation from `pos` to the first free slot, takes it and moves on.
    /// Four slots at a time: the next four are each one step from the current one
    /// (`pos + k * skip`, k = 1..4, with the steps' wraps worked out in advance), so
    /// their four bitmap reads do not wait on each other, and a loop turn covers four
    /// probes; the first free slot in walk order is taken, as a walk one by one would.
    #[inline(always)]
    fn walk(&mut self, taken: &mut [u64]) -> u32 {
        let mut slot = self.pos;
        loop {
            let s1 = self.step(slot);
            let s2 = self.ahead[1].step(slot);
            let s3 = self.ahead[2].step(slot);
            let free = |s: u32| taken[(s >> 6) as usize] & (1u64 << (s & 63)) == 0;
            let found = if free(slot) {
                Some(slot)
            } else if free(s1) {
                Some(s1)
            } else if free(s2) {
                Some(s2)
            } else if free(s3) {
                Some(s3)
            } else {
                None
            };
            if let Some(s) = found {
                taken[(s >> 6) as usize] |= 1u64 << (s & 63);
                self.pos = self.step(s);
                return s;
            }
            slot = self.ahead[3].step(slot);
        }
    }
}

/// A step of `k * skip` for one k: the slot `k` steps after a slot, without a division.
#[derive(Clone, Copy, Debug, Default)]
struct Stride {
    by: u32,
    /// `M - by`.
    wrap_at: u32,
}

impl Stride {
    fn new(k: u64, skip: u32, m: u32) -> Self {
        let by = (k * u64::from(skip) % u64::from(m)) as u32;
        Stride {
            by,
            wrap_at: m - by,
        }
    }

    #[inline(always)]
    fn step(&self, slot: u32) -> u32 {
        std::hint::select_unpredictable(
            slot >= self.wrap_at,
            slot.wrapping_sub(self.wrap_at),
            slot.wrapping_add(self.by),
        )
    }
}

/// `a`'s inverse mod `m`, if `a` and `m` are coprime.
fn inverse_mod(a: u32, m: u32) -> Option<u32> {
    let (mut t, mut next_t) = (0i64, 1i64);
    let (mut r, mut next_r) = (i64::from(m), i64::from(a));
    while next_r != 0 {
        let q = r / next_r;
        (t, next_t) = (next_t, t - q * next_t);
        (r, next_r) = (next_r, r - q * next_r);
    }
    (r == 1).then(|| t.rem_euclid(i64::from(m)) as u32)
}

/// The slot of `free` that a walk from `pos` with a step of `inverse`'s inverse would
/// reach first, removed from `free`. A walk never passes a free slot, so every free slot
/// lies ahead of `pos`, `(slot - pos) * inverse mod M` steps away: the nearest is the
/// walk's answer, found in `free.len()` multiplications instead of about `M /
/// free.len()` probes.
fn nearest_free(free: &mut Vec<u32>, pos: u32, inverse: u32, m: u32) -> u32 {
    let (m64, inv) = (u64::from(m), u64::from(inverse));
    let mut best = (u64::MAX, 0usize);
    for (i, &slot) in free.iter().enumerate() {
        // (slot - pos) mod M, below M, without overflow.
        let ahead = slot
            .wrapping_sub(pos)
            .wrapping_add(if slot >= pos { 0 } else { m });
        let steps = u64::from(ahead) * inv % m64;
        if steps < best.0 {
            best = (steps, i);
        }
    }
    free.swap_remove(best.1)
}

/// The free slots left in `taken` (a bitmap of `m` slots).
fn free_slots(taken: &[u64], m: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for (w, &word) in taken.iter().enumerate() {
        let mut free = !word;
        while free != 0 {
            let slot = (w as u32) * 64 + free.trailing_zeros();
            if slot < m {
                out.push(slot);
            }
            free &= free - 1;
        }
    }
    out
}

/// Free slots left when claims switch from walking to [`nearest_free`]: a walk costs
/// about `M / free` probes of a few cycles, the search `free` multiplications and
/// divisions, so they cost the same near `sqrt(M)`-ish (set by measuring the build at
/// M = 65537 and 655373).
fn endgame(m: u32) -> u32 {
    (f64::from(m) * ENDGAME_FACTOR).sqrt() as u32
}

/// See [`endgame`].
const ENDGAME_FACTOR: f64 = 0.4;

/// Builds the lookup table of size `m` (a prime, so every `skip` generates all slots):
/// entry i = backend id. Weighted, deterministic from identities. Backends with weight 0
/// get no slots. No backend with a positive weight (or `m == 0`) -> empty `Vec`.
///
/// This is the paper's loop, and the table is the same entry for entry as its plain
/// transcription (a test keeps that transcription and compares the two on many random
/// inputs). It is faster because of how a backend finds its next free slot: each
/// permutation is advanced by an addition and a branch-free wrap rather than a modulo;
/// the walk tests a bitmap of taken slots (M / 8 bytes: 8 KiB at M = 65537, in the L1
/// cache) instead of the table, which is only written, once per slot; and once few
/// slots are left, when a walk would pass thousands of taken slots, the first free slot
/// of the walk is computed from the free slots instead.
pub fn build(backends: &[MaglevBackend], m: u32) -> Vec<u32> {
    let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() || m == 0 {
        return Vec::new();
    }
    // Canonical order: who claims first in a round must not depend on input order.
    live.sort_by_key(|b| (b.identity, b.id, b.weight));
    let max_weight = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
    let mut claimants: Vec<Claimant> = live
        .iter()
        .map(|b| {
            let (offset, skip) = permutation(&b.identity, m);
            Claimant {
                pos: offset,
                skip,
                wrap_at: m - skip,
                ahead: std::array::from_fn(|k| Stride::new(k as u64 + 1, skip, m)),
                inverse: inverse_mod(skip, m),
                weight: u64::from(b.weight),
                credit: 0,
                id: b.id,
            }
        })
        .collect();

    let mut table = vec![0u32; m as usize];
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    let mut left = m;
    let endgame = endgame(m);
    // The free slots, listed once `endgame` or fewer are left.
    let mut free: Option<Vec<u32>> = None;
    loop {
        for c in &mut claimants {
            c.credit += c.weight;
            if c.credit < max_weight {
                continue;
            }
            c.credit -= max_weight;
            let slot = match (&mut free, c.inverse) {
                (Some(free), Some(inverse)) => {
                    let slot = nearest_free(free, c.pos, inverse, m);
                    taken[(slot >> 6) as usize] |= 1 << (slot & 63);
                    c.pos = c.step(slot);
                    slot
                }
                // Walk this backend's permutation to its next free slot. m is prime,
                // so the walk visits every slot and ends while any slot is free.
                (free, _) => {
                    let slot = c.walk(&mut taken);
                    if let Some(free) = free
                        && let Some(i) = free.iter().position(|&s| s == slot)
                    {
                        free.swap_remove(i);
                    }
                    slot
                }
            };
            table[slot as usize] = c.id;
            left -= 1;
            if left == 0 {
                return table;
            }
            if left <= endgame && free.is_none() {
                free = Some(free_slots(&taken, m));
            }
        }
    }
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
