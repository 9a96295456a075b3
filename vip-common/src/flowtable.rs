//! The connection table: a set-associative array of flows, and the VIP-address filter.
//!
//! Why not a kernel LRU hash map (what Katran and Cilium use): on the machines this was
//! measured on (`cargo xtask bench`, section 1d) one LRU hash lookup costs about 45 ns and
//! an insert into a full LRU 300–600 ns, which alone is several times the encapsulation
//! floor. This table is a plain `BPF_MAP_TYPE_ARRAY` of [`FlowSet`]s: the set of a flow is
//! picked by [`flow_table_hash`] (a few multiplies, seeded per LB node); a header holds a
//! signature per way, so a lookup reads one cache line unless a signature matches, and
//! only then compares the whole key; an insert overwrites one entry, chosen by the CLOCK
//! algorithm (a reference bit per way, so a flow that keeps sending survives flows that
//! came later). The price: the table starts replacing entries before it is full (about
//! 80% full when it holds as many flows as it has entries), like any hash table with
//! bounded buckets, and recency is kept per set of four, not across the whole table.
//!
//! The datapath inserts with [`FlowSet::admit`], not [`FlowSet::insert`]: a flow put
//! there by a packet that missed is on probation until a second packet of it is seen,
//! and a flow on probation may take only an empty way, another probationary flow's way,
//! or the way of a confirmed flow idle for [`FLOW_IDLE_TICKS`] (segmented LRU, as in
//! 2Q). A flood of packets from random sources, each of which sends one packet, then
//! only ever replaces itself, never an established flow that sends now and then.
//!
//! Every CPU reads and writes the same table (a flow keeps its entry when the kernel
//! moves it to another CPU). Two CPUs writing the same entry at once can leave a mixture
//! of both; each entry therefore carries a check word ([`entry_check`]) over its key hash
//! and value, and an entry whose check word does not match is treated as absent (the flow
//! is hashed again, which is what a replaced entry means anyway).
//!
//! The same code runs in the datapath (on the map value) and in user space (the model,
//! `vipctl`), so the two cannot disagree about which entry holds a flow.

use core::mem::size_of;

use crate::{ConnState, FlowKey};

/// Entries per set.
pub const FLOW_WAYS: usize = 4;

/// One remembered flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// The flow.
    pub key: FlowKey,
    /// Where it goes.
    pub conn: ConnState,
    /// [`entry_check`] of the key's hash and `conn`: a mixture of two writers' entries
    /// does not check out.
    pub check: u32,
    /// Explicit padding.
    pub _pad: u32,
}
const _: () = assert!(size_of::<FlowEntry>() == 56);

/// One set of the connection table (the map value): a 32-byte header, then the entries,
/// 256 bytes in all (four cache lines). A lookup that misses reads the header only: one
/// cache line, which is what a new flow costs in a table far bigger than the caches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSet {
    /// [`flow_sig`] of each way's key; 0 = empty way.
    pub sigs: [u32; FLOW_WAYS],
    /// CLOCK reference bits, bit `w` for way `w`: set when the way's flow is seen.
    pub referenced: u32,
    /// CLOCK hand: the way the next replacement starts looking at.
    pub hand: u32,
    /// Probation bits, bit `w` for way `w`: set when a packet that missed the table put
    /// the way's flow there, cleared when a later packet of the flow finds it (the flow
    /// is then confirmed). See [`FlowSet::admit`].
    pub probation: u32,
    /// [`flow_clock`] tick of the set's last sweep: the reference bits were cleared
    /// then, so a confirmed flow whose bit is clear has not been seen since.
    pub swept: u32,
    /// The entries.
    pub ways: [FlowEntry; FLOW_WAYS],
}
const _: () = assert!(size_of::<FlowSet>() == 256);

/// Sets for a table that should hold `max_conns` flows: the next power of two of
/// `max_conns / FLOW_WAYS` (at least 1).
pub const fn flow_sets(max_conns: u32) -> u32 {
    let sets = max_conns.div_ceil(FLOW_WAYS as u32);
    if sets <= 1 {
        1
    } else {
        sets.next_power_of_two()
    }
}

/// Key material of [`flow_table_hash`]: fixed odd constants mixed with the node's seed.
const NH_KEYS: [u32; 10] = [
    0x9e37_79b9,
    0x85eb_ca77,
    0xc2b2_ae3d,
    0x27d4_eb2f,
    0x1656_67b1,
    0xd3a2_646c,
    0xfd70_46c5,
    0xb55a_4f09,
    0x6a09_e667,
    0xbb67_ae85,
];

/// The flow's 40-byte key as ten words, in place (no copy: the BPF stack is small).
#[inline(always)]
fn key_words(key: &FlowKey) -> &[u32; 10] {
    // SAFETY: FlowKey is repr(C), 40 bytes, 4-byte aligned, every byte an explicit
    // integer field, so it can be read as ten u32 words.
    unsafe { &*(key as *const FlowKey).cast::<[u32; 10]>() }
}

/// The connection-table hash of a flow: NH (the universal hash of UMAC, RFC 4418) over
/// its ten words (four for IPv4, whose other six are zero) with keys derived from `seed`,
/// then one multiply to spread the bits.
/// `seed` is random per LB node, so clients cannot aim many flows at one set.
#[inline(always)]
pub fn flow_table_hash(key: &FlowKey, seed: u32) -> u64 {
    let w = key_words(key);
    if key.family == crate::FAMILY_V4 {
        // Words 1-3 and 5-7 of an IPv4 key are zero: NH over the other four.
        return nh_hash(&[w[0], w[4], w[8], w[9]], seed);
    }
    nh_hash(w, seed)
}

/// NH over `N` (even) words with keys derived from `seed`, then a multiply to spread
/// the bits.
#[inline(always)]
pub fn nh_hash<const N: usize>(w: &[u32; N], seed: u32) -> u64 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i + 1 < N {
        let a = w[i].wrapping_add(NH_KEYS[i] ^ seed);
        let b = w[i + 1].wrapping_add(NH_KEYS[i + 1] ^ seed.rotate_left(16));
        sum = sum.wrapping_add(u64::from(a).wrapping_mul(u64::from(b)));
        i += 2;
    }
    sum ^= sum >> 32;
    sum.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Ticks of [`flow_clock`]: `CLOCK_MONOTONIC_COARSE` nanoseconds shifted right by this
/// (2^30 ns, about 1.07 s).
pub const FLOW_CLOCK_SHIFT: u32 = 30;

/// A confirmed flow is replaced by a new one only after this many ticks without a packet
/// (more than 7 ticks, 7.5 s, of real time: ticks are whole). See [`FlowSet::admit`].
pub const FLOW_IDLE_TICKS: u32 = 8;

/// The connection table's clock from monotonic nanoseconds (the datapath's
/// `bpf_ktime_get_coarse_ns`, user space's `CLOCK_MONOTONIC_COARSE`).
#[inline(always)]
pub fn flow_clock(ns: u64) -> u32 {
    (ns >> FLOW_CLOCK_SHIFT) as u32
}

/// The first way from `hand` (going round) whose bit is set in `bits`, or `FLOW_WAYS`.
#[inline(always)]
fn first_from(bits: u32, hand: usize) -> usize {
    let mut n = 0;
    while n < FLOW_WAYS {
        let w = (hand + n) & (FLOW_WAYS - 1);
        if bits & (1 << w) != 0 {
            return w;
        }
        n += 1;
    }
    FLOW_WAYS
}

/// Index of the set of a flow with hash `h` in a table of `mask + 1` sets.
#[inline(always)]
pub fn flow_set_index(h: u64, mask: u32) -> u32 {
    (h >> 32) as u32 & mask
}

/// The signature of a flow in its set's header (never 0, which marks an empty way). It
/// comes from the low half of the hash; the set index from the high half.
#[inline(always)]
pub fn flow_sig(h: u64) -> u32 {
    (h as u32) | 1
}

/// The check word of an entry: ties the value to the key it was written for.
#[inline(always)]
pub fn entry_check(h: u64, conn: &ConnState) -> u32 {
    let t = ((h >> 16) as u32)
        ^ conn.backend_id.wrapping_mul(0x9e37_79b1)
        ^ conn.generation.wrapping_mul(0x85eb_ca77);
    // Never 0, so a zeroed entry never checks out.
    t | 1
}

#[inline(always)]
fn same_key(e: &FlowEntry, w: &[u32; 10]) -> bool {
    let k = key_words(&e.key);
    // The source address first: the word most likely to differ. Word 9 holds the
    // protocol and the family, so once it matches both keys are of the same family, and
    // an IPv4 key's other six words are zero in both (as `flow_table_hash` assumes).
    k[0] == w[0]
        && k[8] == w[8]
        && k[9] == w[9]
        && k[4] == w[4]
        && (e.key.family == crate::FAMILY_V4
            || (k[1] == w[1]
                && k[2] == w[2]
                && k[3] == w[3]
                && k[5] == w[5]
                && k[6] == w[6]
                && k[7] == w[7]))
}

impl FlowSet {
    /// The way holding `key` (whose hash is `h`), if any, whether or not its entry checks
    /// out. Reads the header, and an entry only when its signature matches.
    #[inline(always)]
    fn way_of(&self, w: &[u32; 10], sig: u32) -> Option<usize> {
        let mut i = 0;
        while i < FLOW_WAYS {
            if self.sigs[i] == sig && same_key(&self.ways[i], w) {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The way holding `key` (whose hash is `h`) and its value, if its entry checks out.
    #[inline(always)]
    pub fn find(&self, key: &FlowKey, h: u64) -> Option<(usize, ConnState)> {
        let i = self.way_of(key_words(key), flow_sig(h))?;
        let e = &self.ways[i & (FLOW_WAYS - 1)];
        let conn = e.conn;
        if e.check != entry_check(h, &conn) {
            return None;
        }
        Some((i, conn))
    }

    /// Marks way `i` as recently used and its flow as confirmed (stores skipped when
    /// already so: an established flow's packet only reads the header).
    #[inline(always)]
    pub fn touch(&mut self, i: usize) {
        let bit = 1u32 << (i as u32 & (FLOW_WAYS as u32 - 1));
        if self.referenced & bit == 0 {
            self.referenced |= bit;
        }
        if self.probation & bit != 0 {
            self.probation &= !bit;
        }
    }

    /// The way that already holds `key` (signature `sig`), else the first empty way
    /// (`true`: the set holds one flow more), else `FLOW_WAYS`.
    #[inline(always)]
    fn own_or_empty(&self, key: &FlowKey, sig: u32) -> (usize, bool) {
        if let Some(i) = self.way_of(key_words(key), sig) {
            return (i, false);
        }
        let mut i = 0;
        while i < FLOW_WAYS {
            if self.sigs[i] == 0 {
                return (i, true);
            }
            i += 1;
        }
        (FLOW_WAYS, false)
    }

    /// Writes `key` → `conn` into `way` and marks it referenced; the signature last, so
    /// a reader that sees it sees the entry (and checks it anyway).
    #[inline(always)]
    fn write_way(&mut self, way: usize, key: &FlowKey, h: u64, sig: u32, conn: &ConnState) {
        let way = way & (FLOW_WAYS - 1);
        self.sigs[way] = 0;
        let e = &mut self.ways[way];
        e.key = *key;
        e.conn = *conn;
        e.check = entry_check(h, conn);
        self.sigs[way] = sig;
        self.referenced |= 1 << way as u32;
    }

    /// Remembers `key` (hash `h`) → `conn`: in the way that already has the key, else an
    /// empty way, else the first way from the CLOCK hand whose reference bit is clear
    /// (clearing the bits it passes; after a full turn, the hand's way). Returns the way.
    #[inline(always)]
    pub fn insert(&mut self, key: &FlowKey, h: u64, conn: &ConnState) -> usize {
        self.place(key, h, conn).0
    }

    /// [`FlowSet::insert`], also telling whether the flow took an empty way (the set
    /// holds one flow more) rather than its own or another flow's.
    #[inline(always)]
    pub fn place(&mut self, key: &FlowKey, h: u64, conn: &ConnState) -> (usize, bool) {
        let sig = flow_sig(h);
        let (mut way, filled) = self.own_or_empty(key, sig);
        if way == FLOW_WAYS {
            let mut hand = self.hand as usize & (FLOW_WAYS - 1);
            let mut referenced = self.referenced;
            // At most one full turn clears every bit; the way after it is then free.
            let mut n = 0;
            while n < FLOW_WAYS {
                let bit = 1u32 << hand;
                if referenced & bit == 0 {
                    break;
                }
                referenced &= !bit;
                hand = (hand + 1) & (FLOW_WAYS - 1);
                n += 1;
            }
            way = hand;
            self.referenced = referenced;
            self.hand = ((hand + 1) & (FLOW_WAYS - 1)) as u32;
        }
        let way = way & (FLOW_WAYS - 1);
        self.write_way(way, key, h, sig, conn);
        self.probation &= !(1 << way as u32);
        (way, filled)
    }

    /// Puts `key` (hash `h`) → `conn` on probation, for a packet that missed the table
    /// at [`flow_clock`] tick `now()`: in the way that already has the key, else an empty
    /// way, else a way on probation whose reference bit is clear (the first from the
    /// CLOCK hand; when every probationary way has its bit, the bits are cleared and the
    /// flow is not pinned), else a confirmed flow idle for at least [`FLOW_IDLE_TICKS`]
    /// — never a confirmed flow seen more recently, so flows that never send a second
    /// packet (a flood from random sources) replace only each other. `None` when no way
    /// may be taken: the packet is forwarded unpinned.
    ///
    /// Idle is told by a sweep: when every way is confirmed and the last sweep is
    /// [`FLOW_IDLE_TICKS`] old, a flow whose reference bit is still clear has not been
    /// seen since then and is replaced; the sweep then clears every reference bit and
    /// records `now`. Between sweeps confirmed flows are not replaced at all.
    ///
    /// Returns the way and whether it was empty.
    #[inline(always)]
    pub fn admit(
        &mut self,
        key: &FlowKey,
        h: u64,
        conn: &ConnState,
        now: impl FnOnce() -> u32,
    ) -> Option<(usize, bool)> {
        let sig = flow_sig(h);
        let (mut way, filled) = self.own_or_empty(key, sig);
        let hand = self.hand as usize & (FLOW_WAYS - 1);
        if way == FLOW_WAYS && self.probation != 0 {
            // Second chance: a probationary flow is replaced only by the second newcomer
            // after it, so that five flows taking turns in four ways (each replacing the
            // next before its second packet) do not keep each other from ever being
            // confirmed; the newcomer that clears the bits goes unpinned.
            let old = self.probation & !self.referenced;
            if old != 0 {
                way = first_from(old, hand);
            } else {
                self.referenced &= !self.probation;
            }
        }
        if way == FLOW_WAYS {
            // The clock is read only here: an insert into a set with room needs none.
            let now = now();
            if now.wrapping_sub(self.swept) < FLOW_IDLE_TICKS {
                return None;
            }
            way = first_from(!self.referenced & !self.probation, hand);
            self.referenced = 0;
            self.swept = now;
            if way == FLOW_WAYS {
                return None;
            }
        }
        let way = way & (FLOW_WAYS - 1);
        if !filled {
            self.hand = ((way + 1) & (FLOW_WAYS - 1)) as u32;
        }
        self.write_way(way, key, h, sig, conn);
        self.probation |= 1 << way as u32;
        Some((way, filled))
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.sigs.iter().filter(|s| **s != 0).count()
    }

    /// True when the set holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bits of the VIP-address filter ([`crate::MAP_VIP_FILTER`], an array of `u64` words).
pub const VIP_FILTER_BITS: u32 = 1 << 20;
/// Words of the VIP-address filter.
pub const VIP_FILTER_WORDS: u32 = VIP_FILTER_BITS / 64;

/// The filter bit of a destination address: set by user space for every VIP address, so
/// a packet whose bit is clear is not for a VIP (any port, any protocol) and the datapath
/// passes it after one array read. Different addresses may share a bit; the VIP lookup
/// that follows decides.
#[inline(always)]
pub fn vip_filter_bit(addr: &[u32; 4], family: u8) -> u32 {
    let fold = u64::from(addr[0])
        ^ (u64::from(addr[1]) << 32)
        ^ u64::from(addr[2]).wrapping_mul(0x9e37_79b9)
        ^ (u64::from(addr[3]) << 16)
        ^ u64::from(family);
    (fold.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - 20)) as u32
}

/// The word of the VIP-address filter that holds `addr`'s bit, and the bit's mask in it
/// (the datapath reads the word; user space sets and clears the bit).
#[inline(always)]
pub fn vip_filter_slot(addr: &[u32; 4], family: u8) -> (u32, u64) {
    let bit = vip_filter_bit(addr, family);
    (bit / 64, 1u64 << (bit % 64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FAMILY_V4, PROTO_TCP};

    fn flow(n: u32) -> FlowKey {
        FlowKey {
            src: [n, 0, 0, 0],
            dst: [0x0a01_12c6, 0, 0, 0],
            src_port_be: (n as u16).to_be(),
            dst_port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    fn conn(b: u32) -> ConnState {
        ConnState {
            backend_id: b,
            generation: 1,
        }
    }

    #[test]
    fn sets_are_a_power_of_two_holding_at_least_max_conns() {
        assert_eq!(flow_sets(0), 1);
        assert_eq!(flow_sets(4), 1);
        assert_eq!(flow_sets(5), 2);
        assert_eq!(flow_sets(1_000_000), 262_144);
    }

    #[test]
    fn insert_then_find_and_replace_in_place() {
        let mut s = FlowSet::default();
        let k = flow(1);
        let h = flow_table_hash(&k, 7);
        assert_eq!(s.find(&k, h), None);
        let w = s.insert(&k, h, &conn(3));
        assert_eq!(s.find(&k, h), Some((w, conn(3))));
        assert_eq!(s.insert(&k, h, &conn(4)), w);
        assert_eq!(s.find(&k, h), Some((w, conn(4))));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn place_tells_a_filled_way_from_a_replaced_one() {
        let mut s = FlowSet::default();
        let h = |k: &FlowKey| flow_table_hash(k, 7);
        let keys: [FlowKey; 5] = core::array::from_fn(|i| flow(i as u32 + 1));
        for (i, k) in keys[..4].iter().enumerate() {
            assert_eq!(s.place(k, h(k), &conn(1)), (i, true));
        }
        // The same flow again, then a fifth flow into the full set: nothing filled.
        assert_eq!(s.place(&keys[2], h(&keys[2]), &conn(2)), (2, false));
        assert!(!s.place(&keys[4], h(&keys[4]), &conn(1)).1);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn a_torn_entry_does_not_check_out() {
        let mut s = FlowSet::default();
        let k = flow(1);
        let h = flow_table_hash(&k, 7);
        let w = s.insert(&k, h, &conn(3));
        s.ways[w].conn.backend_id = 9; // another writer's value under this key
        assert_eq!(s.find(&k, h), None);
    }

    #[test]
    fn clock_replaces_the_flow_not_seen_since_the_last_sweep() {
        let mut s = FlowSet::default();
        let keys: [FlowKey; 6] = core::array::from_fn(|i| flow(i as u32 + 1));
        let h = |k: &FlowKey| flow_table_hash(k, 7);
        for (i, k) in keys[..4].iter().enumerate() {
            assert_eq!(s.insert(k, h(k), &conn(1)), i);
        }
        // Every way was just used: a full sweep clears the bits and takes way 0.
        assert_eq!(s.insert(&keys[4], h(&keys[4]), &conn(1)), 0);
        assert!(s.find(&keys[0], h(&keys[0])).is_none());
        // Flows 2 and 3 keep sending, flow 4 does not: it is the next one replaced.
        for k in &keys[1..3] {
            let (w, _) = s.find(k, h(k)).expect("still held");
            s.touch(w);
        }
        assert_eq!(s.insert(&keys[5], h(&keys[5]), &conn(1)), 3);
        for k in [&keys[1], &keys[2], &keys[4], &keys[5]] {
            assert!(s.find(k, h(k)).is_some());
        }
        assert!(s.find(&keys[3], h(&keys[3])).is_none());
    }

    #[test]
    fn a_flood_of_one_packet_flows_replaces_no_confirmed_flow() {
        let mut s = FlowSet::default();
        let h = |k: &FlowKey| flow_table_hash(k, 7);
        let now = 1000;
        // Two flows confirmed by their second packet, two on probation.
        for n in 1..=4 {
            let k = flow(n);
            assert_eq!(
                s.admit(&k, h(&k), &conn(1), || now),
                Some((n as usize - 1, true))
            );
        }
        for n in 1..=2 {
            let k = flow(n);
            let (w, _) = s.find(&k, h(&k)).expect("held");
            s.touch(w);
        }
        assert_eq!(s.probation, 0b1100);
        // A flood takes the probationary ways only: every second newcomer clears their
        // reference bits (and goes unpinned), the next takes one.
        for n in 100..110 {
            let k = flow(n);
            match s.admit(&k, h(&k), &conn(2), || now) {
                Some((w, filled)) => assert!(w >= 2 && !filled, "flood flow {n} took way {w}"),
                None => assert_eq!(s.referenced & s.probation, 0, "flood flow {n}"),
            }
        }
        for n in 1..=2 {
            let k = flow(n);
            assert_eq!(s.find(&k, h(&k)).map(|(_, c)| c), Some(conn(1)));
        }
        // Flows 107 and 108 hold the probationary ways (100, 103, 106 and 109 cleared the
        // bits). Once every way is confirmed, a new flow is not pinned at all...
        for n in 107..109 {
            let k = flow(n);
            let (w, _) = s.find(&k, h(&k)).expect("held");
            s.touch(w);
        }
        let before = s;
        let k = flow(200);
        let h200 = h(&k);
        // (Flood flow 100 found every way taken with a sweep due — the set was never
        // swept — and swept it at `now`: no flow had its bit clear, all were cleared.)
        assert_eq!(s.swept, now);
        assert_eq!(
            s.admit(&k, h200, &conn(2), || now + FLOW_IDLE_TICKS - 1),
            None
        );
        assert_eq!(s.ways, before.ways);
        // ...until the sweep is FLOW_IDLE_TICKS old: then a flow not seen since it is
        // replaced, and the sweep starts again. Flows 107 and 108 were confirmed after
        // the sweep, 1 and 2 are seen now: nothing to replace this time.
        for n in [1, 2] {
            let k = flow(n);
            let (w, _) = s.find(&k, h(&k)).expect("held");
            s.touch(w);
        }
        let later = now + FLOW_IDLE_TICKS;
        assert_eq!(s.admit(&k, h200, &conn(2), || later), None);
        assert_eq!((s.ways, s.referenced, s.swept), (before.ways, 0, later));
        for n in [1, 2, 108] {
            let k = flow(n);
            let (w, _) = s.find(&k, h(&k)).expect("held");
            s.touch(w);
        }
        let later = later + FLOW_IDLE_TICKS;
        assert_eq!(s.admit(&k, h200, &conn(2), || later - 1), None);
        let (w, _) = s
            .admit(&k, h200, &conn(2), || later)
            .expect("the idle flow's way");
        assert!(s.find(&flow(107), h(&flow(107))).is_none());
        assert_eq!(s.find(&k, h(&k)), Some((w, conn(2))));
        assert_eq!(s.probation, 1 << w);
    }

    #[test]
    fn the_hash_spreads_flows_over_sets() {
        let mask = 1023;
        let mut count = [0u32; 1024];
        for n in 0..102_400 {
            count[flow_set_index(flow_table_hash(&flow(n), 0x1234), mask) as usize] += 1;
        }
        let max = *count.iter().max().unwrap();
        let min = *count.iter().min().unwrap();
        assert!(max < 160 && min > 50, "min {min} max {max} (mean 100)");
    }

    #[test]
    fn the_seed_changes_the_set() {
        let k = flow(5);
        let same = (0..64)
            .filter(|s| {
                flow_set_index(flow_table_hash(&k, *s), 0xffff)
                    == flow_set_index(flow_table_hash(&k, 0), 0xffff)
            })
            .count();
        assert!(same < 4);
    }

    #[test]
    fn filter_slots_are_a_word_and_one_bit_of_it() {
        // 198.18.1.10, 2001:db8::1 and 0.0.0.0 as network-order words.
        let addrs = [
            (
                [u32::from_ne_bytes([198, 18, 1, 10]), 0, 0, 0],
                crate::FAMILY_V4,
            ),
            (
                [
                    u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
                    0,
                    0,
                    u32::from_ne_bytes([0, 0, 0, 1]),
                ],
                crate::FAMILY_V6,
            ),
            ([0; 4], FAMILY_V4),
        ];
        for (w, f) in addrs {
            let (word, mask) = vip_filter_slot(&w, f);
            assert!(word < VIP_FILTER_WORDS);
            assert_eq!(mask.count_ones(), 1);
            assert_eq!(
                u64::from(word) * 64 + u64::from(mask.trailing_zeros()),
                u64::from(vip_filter_bit(&w, f))
            );
        }
    }

    #[test]
    fn filter_bits_differ_for_neighbouring_addresses() {
        let a = vip_filter_bit(&[0x0a01_12c6, 0, 0, 0], FAMILY_V4);
        let b = vip_filter_bit(&[0x0b01_12c6, 0, 0, 0], FAMILY_V4);
        assert_ne!(a, b);
        assert!(a < VIP_FILTER_BITS && b < VIP_FILTER_BITS);
    }
}
