//! Map names, keys and values. `vipd` is the only writer of every map except the
//! connection table and the counters, which only the datapath writes.

use core::mem::size_of;

/// VIP lookup: [`VipKey`] → [`VipMeta`] (hash map).
pub const MAP_VIPS: &str = "VIPS";
/// Backends by id: `u32` → [`Backend`] (array).
pub const MAP_BACKENDS: &str = "BACKENDS";
/// The Maglev pool: all Maglev tables as an array of [`MaglevElem`]: entry `i` (a backend
/// id) is lane `i % MAGLEV_LANES` of element `i / MAGLEV_LANES` ([`maglev_lane`]). A
/// VIP's active table is entries `meta.table_base .. meta.table_base + meta.table_size`;
/// each VIP owns a region of [`maglev_region_entries`]`(M)` entries for its own M (two
/// tables, [`VIP_F_TABLE_B`] says which is active), handed out by vipd.
/// Packed four to an element because the kernel rounds every array value up to 8 bytes:
/// a `u32` entry took 8, a quarter of them is id.
pub const MAP_MAGLEV: &str = "MAGLEV";
/// Maglev entries per [`MAP_MAGLEV`] element.
pub const MAGLEV_LANES: u32 = 4;
/// One [`MAP_MAGLEV`] element: four backend ids.
pub type MaglevElem = [u16; MAGLEV_LANES as usize];
/// Backend ids a Maglev entry can hold (ids are below this): `max_backends` is at most
/// this.
pub const MAX_BACKEND_IDS: u32 = 1 << 16;

/// Elements of [`MAP_MAGLEV`] holding `entries` Maglev entries.
pub const fn maglev_elements(entries: u32) -> u32 {
    entries.div_ceil(MAGLEV_LANES)
}

/// Entries of the Maglev pool a VIP with tables of `m` entries owns: two tables (the one
/// packets use and the one the next publish writes), each rounded up to whole elements
/// so that no element holds entries of two VIPs.
pub const fn maglev_region_entries(m: u32) -> u64 {
    2 * maglev_elements(m) as u64 * MAGLEV_LANES as u64
}

/// The default size of the Maglev pool (`[limits] maglev_pool`), in entries: room for
/// `max_vips` VIPs at the largest table size and one more region of it (a VIP whose M
/// changes holds its old and its new region for a moment), which is what the array
/// held before VIPs were sized by their own M. At most `u64` of it is meaningful: the
/// configuration refuses a pool past `u32::MAX` entries.
pub const fn maglev_pool_default(max_vips: u32, table_size: u32) -> u64 {
    (max_vips as u64 + 1) * maglev_region_entries(table_size)
}

/// The element and lane of Maglev entry `i`.
#[inline(always)]
pub fn maglev_lane(i: u32) -> (u32, usize) {
    (i / MAGLEV_LANES, (i % MAGLEV_LANES) as usize)
}
/// Connection table: set index → [`crate::FlowSet`] (array, `BPF_F_MMAPABLE`, with
/// [`crate::flow_sets`]`(max_conns)` sets; see [`crate::flowtable`]).
pub const MAP_CONNS: &str = "CONNS";
/// VIP-address filter: word index → `u64` (array of [`crate::VIP_FILTER_WORDS`]); bit
/// [`crate::vip_filter_bit`] of every VIP address is set.
pub const MAP_VIP_FILTER: &str = "VIP_FILTER";
/// VIP slots: slot index → [`crate::VipSlot`] (array of [`crate::vip_slots`]`(max_vips)`);
/// a direct-mapped copy of [`MAP_VIPS`] for the lookups of new flows
/// (see [`crate::vipslots`]).
pub const MAP_VIP_SLOTS: &str = "VIP_SLOTS";
/// Global datapath settings: index 0 → [`GlobalConfig`] (array of one).
pub const MAP_CONFIG: &str = "CONFIG";
/// Per-VIP counters by `VipMeta::id`: [`VipCounters`] (per-CPU array).
pub const MAP_VIP_STATS: &str = "VIP_STATS";
/// Per-backend counters by backend id: [`BackendCounters`] (per-CPU array).
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
/// Packets per [`crate::Reason`]: `u64` (per-CPU array).
pub const MAP_REASONS: &str = "REASONS";
/// Connection-table entries the datapath filled, index 0 → `u64` (per-CPU array of one):
/// a flow that took an empty way of its set ([`crate::FlowSet::place`]). The datapath
/// never empties a way, only replaces its flow, so the sum over CPUs (plus what user
/// space wrote itself) is the number of flows the table holds: `vipctl stats` and the
/// metrics read it instead of walking the table.
pub const MAP_CONN_FILLS: &str = "CONN_FILLS";
/// Resolved next hop per backend id: [`NextHop`] (array). An entry without
/// [`NEXTHOP_F_VALID`] makes the datapath ask `bpf_fib_lookup` instead.
pub const MAP_NEXTHOPS: &str = "NEXTHOPS";
/// Egress interfaces for `XDP_REDIRECT`: ifindex → ifindex (devmap hash).
pub const MAP_TX_PORTS: &str = "TX_PORTS";
/// `vip_decap`: local tunnel endpoint addresses, [`VipKey`] with port 0 and proto 0 → `u32`
/// (hash map; the value is unused).
pub const MAP_DECAP_ADDRS: &str = "DECAP_ADDRS";

/// Default capacities; each is overridable at load time from the config.
pub mod defaults {
    /// VIPs (including all-ports VIPs).
    pub const MAX_VIPS: u32 = 256;
    /// Backends across all VIPs.
    pub const MAX_BACKENDS: u32 = 4096;
    /// Maglev table size M (a prime).
    pub const TABLE_SIZE: u32 = 65537;
    /// Connection-table entries.
    pub const MAX_CONNS: u32 = 1_000_000;
}

/// Key of the VIP map. `port_be == 0` is an "all ports" VIP, looked up when the exact
/// port has no entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Network-order address words (IPv4: word 0 only).
    pub addr: [u32; 4],
    /// Destination port, network order; 0 means all ports.
    pub port_be: u16,
    /// IP protocol ([`crate::PROTO_TCP`] or [`crate::PROTO_UDP`]).
    pub proto: u8,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
}
const _: () = assert!(size_of::<VipKey>() == 20);

/// VIP flag: forward by L2 direct server return (rewrite MACs) instead of tunnelling.
pub const VIP_F_DSR_L2: u32 = 1 << 0;
/// VIP flag: hash on the source address only (client affinity).
pub const VIP_F_HASH_SRC_ONLY: u32 = 1 << 1;
/// VIP flag: do not use the connection table (every packet is hashed).
pub const VIP_F_NO_CONNTRACK: u32 = 1 << 2;
/// VIP flag: the VIP has a source access list ([`crate::acl`]); new flows from a
/// refused source are dropped (`drop_acl`). VIPs without it pay one branch.
pub const VIP_F_ACL: u32 = 1 << 3;
/// VIP flag: the VIP's access list is the one under its second ACL id
/// ([`crate::acl_id`]). Flipped by each publish of a new list.
pub const VIP_F_ACL_B: u32 = 1 << 4;
/// VIP flag: the VIP's active Maglev table is the second of its region's two (vipd's
/// bookkeeping, so a restarted vipd finds the region from the entry; the datapath reads
/// only `table_base`).
pub const VIP_F_TABLE_B: u32 = 1 << 5;
/// VIP-map entry flag: the entry only says "this address has VIPs" (key with port 0 and
/// proto 0). The datapath uses it to decide the fate of packets without usable ports
/// (fragments, long IPv6 extension chains, cut-short transport headers); user space
/// maintains it with the VIPs.
pub const VIP_F_ADDR_MARKER: u32 = 1 << 31;

/// Value of the VIP map. Replacing it is how a new Maglev table is published: the
/// datapath reads `table_base` once per packet, so it sees the old table or the new one,
/// never a mixture.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// Index into the per-VIP counters.
    pub id: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
    /// First slot of the active Maglev table in [`MAP_MAGLEV`].
    pub table_base: u32,
    /// Number of slots (M). 0 means "no backend": packets are dropped and counted.
    pub table_size: u32,
}
const _: () = assert!(size_of::<VipMeta>() == 16);

/// Backend state: slot unused.
pub const BACKEND_UNUSED: u8 = 0;
/// Backend state: healthy and in service.
pub const BACKEND_UP: u8 = 1;
/// Backend state: weight 0 / admin drain. Keeps its existing flows, gets no new ones.
pub const BACKEND_DRAINING: u8 = 2;
/// Backend state: failed health checks or admin maintenance. Never reused: its flows are
/// re-hashed.
pub const BACKEND_DOWN: u8 = 3;

/// Value of the backend array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Network-order address words (IPv4: word 0 only).
    pub addr: [u32; 4],
    /// Bumped each time the id is given to a different backend, so a connection-table
    /// entry made for the previous owner is not reused.
    pub generation: u32,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// `BACKEND_*`.
    pub state: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// [`VipMeta::id`] of the VIP this backend serves (a backend id belongs to one VIP).
    pub vip_id: u32,
    /// That VIP's `VIP_F_*` flags: a packet found in the connection table is forwarded
    /// with these, without looking the VIP up.
    pub vip_flags: u32,
}
const _: () = assert!(size_of::<Backend>() == 32);

impl Backend {
    /// A backend a flow may be sent to: in use and not down (a draining one keeps its
    /// flows, and the connection table keeps sending them to it).
    #[inline(always)]
    pub const fn usable(&self) -> bool {
        self.state != BACKEND_UNUSED && self.state != BACKEND_DOWN
    }
}

/// Key of the connection table: the 5-tuple as seen on the client side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address, network-order words.
    pub src: [u32; 4],
    /// VIP address, network-order words.
    pub dst: [u32; 4],
    /// Client port, network order (0 for protocols without ports).
    pub src_port_be: u16,
    /// VIP port, network order.
    pub dst_port_be: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// Explicit padding, always zero (it is part of the hashed key).
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    /// Backend id the flow is pinned to.
    pub backend_id: u32,
    /// The backend's [`Backend::generation`] when the flow was pinned.
    pub generation: u32,
}
const _: () = assert!(size_of::<ConnState>() == 8);

/// A resolved next hop towards a backend (value of [`MAP_NEXTHOPS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Destination MAC (the backend's in `dsr-l2`, the gateway's when routed).
    pub dst_mac: [u8; 6],
    /// Source MAC (the egress interface's).
    pub src_mac: [u8; 6],
    /// Egress interface; 0 or the ingress interface means `XDP_TX`, anything else
    /// `XDP_REDIRECT` through [`MAP_TX_PORTS`].
    pub ifindex: u32,
    /// `NEXTHOP_F_*`.
    pub flags: u32,
}
const _: () = assert!(size_of::<NextHop>() == 20);

impl NextHop {
    /// Both MACs as they sit at the start of an Ethernet header (destination, then
    /// source): three native-order words, so they can be written with three stores.
    #[inline(always)]
    pub fn mac_words(&self) -> [u32; 3] {
        // SAFETY: NextHop is repr(C) and 4-byte aligned; its first 12 bytes are the two
        // MACs, plain bytes.
        unsafe { *(self as *const Self).cast::<[u32; 3]>() }
    }
}

/// [`NextHop`] flag: the entry is filled in (otherwise `bpf_fib_lookup` is used).
pub const NEXTHOP_F_VALID: u32 = 1 << 0;

/// Global flag: answer oversize DF packets with ICMP frag-needed / packet-too-big.
pub const CONFIG_F_ICMP_TOO_BIG: u32 = 1 << 0;

/// Global flag, kept by the datapath's user-space side (not part of the configuration):
/// at least one all-ports (port 0) VIP exists. Without it the datapath skips the port-0
/// fallback lookup, so traffic that is not for a VIP costs one hash lookup, not two.
pub const CONFIG_F_HAS_ALL_PORTS_VIPS: u32 = 1 << 31;

/// Global datapath settings (index 0 of [`MAP_CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    /// `CONFIG_F_*` bits.
    pub flags: u32,
    /// Largest IP packet (outer header included) the LB may send after encapsulation.
    pub mtu: u32,
    /// Outer IPv4 source of tunnelled packets: this prefix, network order...
    pub tunnel_src_v4_be: u32,
    /// ...with this many low bits (host order count) taken from the flow hash.
    pub tunnel_src_v4_hash_bits: u32,
    /// Outer IPv6 source prefix, network-order words; the low 32 bits come from the
    /// flow hash.
    pub tunnel_src_v6: [u32; 4],
    /// Sets in the connection table minus one (a power of two minus one). Kept by the
    /// datapath's user-space side from the map's size, not part of the configuration.
    pub flow_sets_mask: u32,
    /// Seed of [`crate::flow_table_hash`], random per LB node, chosen when the connection
    /// table is created and kept while it is pinned.
    pub flow_seed: u32,
    /// Slots in [`MAP_VIP_SLOTS`] minus one (a power of two minus one). Kept by the
    /// datapath's user-space side from the map's size, like `flow_sets_mask`.
    pub vip_slots_mask: u32,
}
const _: () = assert!(size_of::<GlobalConfig>() == 44);

/// Per-VIP counters (per CPU; user space sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipCounters {
    /// Packets forwarded to a backend.
    pub packets: u64,
    /// Bytes forwarded (before encapsulation).
    pub bytes: u64,
    /// Flows that missed the connection table and were hashed.
    pub new_flows: u64,
    /// Packets dropped for this VIP (no backend, too big, ...).
    pub dropped: u64,
}
const _: () = assert!(size_of::<VipCounters>() == 32);

/// Per-backend counters (per CPU; user space sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// Packets forwarded to this backend.
    pub packets: u64,
    /// Bytes forwarded (before encapsulation).
    pub bytes: u64,
    /// New flows pinned to this backend.
    pub new_flows: u64,
}
const _: () = assert!(size_of::<BackendCounters>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is `#[repr(C)]`, made of integers and integer arrays only, with
    // explicit padding, so any bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipMeta {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::GlobalConfig {}
    unsafe impl aya::Pod for super::VipCounters {}
    unsafe impl aya::Pod for super::BackendCounters {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for crate::FlowSet {}
    unsafe impl aya::Pod for crate::VipSlot {}
    unsafe impl aya::Pod for crate::FlowEntry {}
    unsafe impl aya::Pod for crate::AclKeyV4 {}
    unsafe impl aya::Pod for crate::AclKeyV6 {}
    unsafe impl aya::Pod for crate::TraceCtl {}
    unsafe impl aya::Pod for crate::TraceRecord {}
}
