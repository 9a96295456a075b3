//! The maps of both programs. Sizes here are small placeholders: user space sets the real
//! capacities at load time from its configuration (`EbpfLoader::map_max_entries`).

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use vip_common::{
    ACL_MAP_ENTRIES, AclKeyV4, AclKeyV6, Backend, BackendCounters, FlowSet, GlobalConfig, HaGroup,
    IfMac, MAX_HA_GROUPS, MaglevElem, NeighEntry, NeighKey, NextHop, Reason, TRACE_RING_BYTES,
    TraceCtl, TraceRecord, VIP_FILTER_WORDS, VipCounters, VipKey, VipMeta, VipSlot,
};

/// VIP (and VIP-address marker) → its metadata.
#[map(name = "VIPS")]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(64, 0);

/// Backend id → backend.
#[map(name = "BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(64, 0);

/// Backend id → resolved next hop (optional; `bpf_fib_lookup` otherwise).
#[map(name = "NEXTHOPS")]
pub static NEXTHOPS: Array<NextHop> = Array::with_max_entries(64, 0);

/// `BPF_F_MMAPABLE`: user space maps the array and writes tables with plain stores.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// All Maglev tables back to back (see `vip_common::MAP_MAGLEV`).
#[map(name = "MAGLEV")]
pub static MAGLEV: Array<MaglevElem> = Array::with_max_entries(1024, BPF_F_MMAPABLE);

/// Connection table: sets of flows (`vip_common::flowtable`); user space maps it to count
/// and inspect flows.
#[map(name = "CONNS")]
pub static CONNS: Array<FlowSet> = Array::with_max_entries(256, BPF_F_MMAPABLE);

/// VIP-address filter: one bit per `vip_common::vip_filter_bit`.
#[map(name = "VIP_FILTER")]
pub static VIP_FILTER: Array<u64> = Array::with_max_entries(VIP_FILTER_WORDS, 0);

/// VIP slots: a direct-mapped copy of `VIPS` (`vip_common::vipslots`); user space maps
/// it to rebuild and inspect the slots without a `bpf()` call per slot.
#[map(name = "VIP_SLOTS")]
pub static VIP_SLOTS: Array<VipSlot> = Array::with_max_entries(64, BPF_F_MMAPABLE);

/// Global settings, index 0.
#[map(name = "CONFIG")]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

/// Per-VIP counters.
#[map(name = "VIP_STATS")]
pub static VIP_STATS: PerCpuArray<VipCounters> = PerCpuArray::with_max_entries(64, 0);

/// Per-backend counters.
#[map(name = "BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<BackendCounters> = PerCpuArray::with_max_entries(64, 0);

/// Packets per [`Reason`].
#[map(name = "REASONS")]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// Connection-table entries filled (`vip_common::MAP_CONN_FILLS`), index 0.
#[map(name = "CONN_FILLS")]
pub static CONN_FILLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Egress interfaces for `XDP_REDIRECT`, keyed by ifindex.
#[map(name = "TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// `vip_decap`: local tunnel endpoints.
#[map(name = "DECAP_ADDRS")]
pub static DECAP_ADDRS: HashMap<VipKey, u32> = HashMap::with_max_entries(64, 0);

/// Proxy ARP/NDP: announced VIP address → its HA group (`vip_common::neigh`).
#[map(name = "NEIGH")]
pub static NEIGH: HashMap<NeighKey, NeighEntry> = HashMap::with_max_entries(64, 0);

/// HA group index → its role on this node (pinned: the role outlives vipd).
#[map(name = "HA_GROUPS")]
pub static HA_GROUPS: Array<HaGroup> = Array::with_max_entries(MAX_HA_GROUPS, 0);

/// Interface index → the MAC the neighbour answers received there carry.
#[map(name = "IF_MACS")]
pub static IF_MACS: HashMap<u32, IfMac> = HashMap::with_max_entries(64, 0);

/// Per-VIP IPv4 source prefixes (`vip_common::acl`): (ACL id, source) → verdict.
#[map(name = "ACL_V4")]
pub static ACL_V4: LpmTrie<AclKeyV4, u32> = LpmTrie::with_max_entries(ACL_MAP_ENTRIES, 0);

/// Per-VIP IPv6 source prefixes: (ACL id, source) → verdict.
#[map(name = "ACL_V6")]
pub static ACL_V6: LpmTrie<AclKeyV6, u32> = LpmTrie::with_max_entries(ACL_MAP_ENTRIES, 0);

/// Live trace control, index 0 (`vip_common::trace`): written only by vipd's trace
/// session.
#[map(name = "TRACE_CTL")]
pub static TRACE_CTL: Array<TraceCtl> = Array::with_max_entries(1, 0);

/// Live trace records for user space.
#[map(name = "TRACE_RING")]
pub static TRACE_RING: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

/// The live trace's record being built for the packet this CPU runs, index 0.
#[map(name = "TRACE_SCRATCH")]
pub static TRACE_SCRATCH: PerCpuArray<TraceRecord> = PerCpuArray::with_max_entries(1, 0);

/// Live trace records lost to a full ring, index 0.
#[map(name = "TRACE_LOST")]
pub static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
