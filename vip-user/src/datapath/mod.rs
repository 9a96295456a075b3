//! The loaded `vip_lb` program and typed handles to its maps: the only code that writes
//! the datapath's maps (the control plane's owner task calls it).
//!
//! Maglev tables live in one pool, the `MAGLEV` array of [`Limits::maglev_pool`] entries
//! (16-bit backend ids, four to an element, see `vip_common::MAP_MAGLEV`). Each VIP owns
//! a region of it sized by its own M: two tables of M entries, double-buffered. A new
//! table is written into the table the VIP does not use, only where it differs from what
//! that table already holds (read through the memory mapping; only without one, a
//! shadow copy in memory knows), then the VIP entry is replaced in one map update, which
//! the kernel makes atomic for readers: a packet sees the old table or the new one. A
//! VIP gets its region from the pool ([`pool`], first fit) when it is first published
//! or its M changes; the region it leaves, and that of a removed VIP, goes back to the
//! pool only after [`REGION_QUARANTINE`] (see there why). The VIP entry says where its
//! active table is (`table_base`, and `VIP_F_TABLE_B` for which of the two), so a
//! restarted vipd rebuilds the pool's free list from the pinned VIP map.
//!
//! The connection table (`vip_common::flowtable`) is an array of flow sets that only the
//! datapath fills; user space reads it through a memory mapping (tests write it too). Its
//! hash seed is chosen here when the table is created and kept in `CONFIG` for as long as
//! the table is pinned, so a restarted vipd finds every flow where the datapath put it.
//! The VIP-address filter (`VIP_FILTER`) has the bit of every published VIP address set.
//! The VIP slots (`VIP_SLOTS`, `vip_common::vipslots`) hold a copy of each published VIP
//! entry whose slot no other VIP took first; they are rewritten with every VIP entry and
//! rebuilt from the VIP map when the maps are adopted. Which VIP holds a slot is read
//! from the slot itself (through a memory mapping), not kept aside.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap, HashSet},
    io::Read,
    net::IpAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, lpm_trie::LpmTrie,
        xdp::DevMapHash,
    },
    programs::{ProgramError, Xdp},
};
use vip_common::{
    ACL_MAP_ENTRIES, AclKeyV4, AclKeyV6, Backend, BackendCounters, CONFIG_F_HAS_ALL_PORTS_VIPS,
    ConnState, FLOW_WAYS, FlowKey, FlowSet, GlobalConfig, HaGroup, IfMac, MAGLEV_LANES, MAP_ACL_V4,
    MAP_ACL_V6, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_CONFIG, MAP_CONN_FILLS, MAP_CONNS,
    MAP_HA_GROUPS, MAP_IF_MACS, MAP_MAGLEV, MAP_NEIGH, MAP_NEXTHOPS, MAP_REASONS, MAP_TX_PORTS,
    MAP_VIP_FILTER, MAP_VIP_SLOTS, MAP_VIP_STATS, MAP_VIPS, MAX_BACKEND_IDS, MAX_IF_MACS,
    MAX_NEIGH_ADDRS, MaglevElem, NeighEntry, NeighKey, NextHop, Reason, VIP_F_ACL, VIP_F_ACL_B,
    VIP_F_ADDR_MARKER, VIP_F_TABLE_B, VIP_FILTER_WORDS, VipCounters, VipKey, VipMeta, VipSlot,
    flow_set_index, flow_sets, flow_table_hash, maglev_elements, maglev_lane, vip_filter_slot,
    vip_slot_hash, vip_slot_index, vip_slots,
};

mod acl;
pub mod decap;
pub mod ebpf;
#[cfg(test)]
pub(crate) mod fake;
pub mod kernel;
pub mod keys;
mod mmap;
pub mod neigh;
pub mod pool;
pub mod tables;
pub mod trace;
pub mod xdp_link;

use keys::{addr_words, vip_addr_marker};

/// Map capacities, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// VIPs (VIP slots and VIP counter ids are below this).
    pub max_vips: u32,
    /// Backends (backend ids are below this).
    pub max_backends: u32,
    /// Largest Maglev table size M a VIP may have.
    pub table_size: u32,
    /// Flows the connection table should hold; it gets [`flow_sets`]`(max_conns)` sets
    /// of [`FLOW_WAYS`] entries (see [`Limits::conn_capacity`]).
    pub max_conns: u32,
    /// Entries of the Maglev pool (rounded up to whole elements of four): each VIP takes
    /// `vip_common::maglev_region_entries` of its own M.
    pub maglev_pool: u32,
}

impl Default for Limits {
    fn default() -> Self {
        use vip_common::defaults;
        Self {
            max_vips: defaults::MAX_VIPS,
            max_backends: defaults::MAX_BACKENDS,
            table_size: defaults::TABLE_SIZE,
            max_conns: defaults::MAX_CONNS,
            maglev_pool: vip_common::maglev_pool_default(defaults::MAX_VIPS, defaults::TABLE_SIZE)
                as u32,
        }
    }
}

impl Limits {
    /// Kernel memory the maps take, roughly (`cpus` = possible CPUs, for the per-CPU
    /// maps), for documentation and `vipd check`. Array elements take 8 bytes at least
    /// (the kernel rounds values up to 8), hash elements carry ~48 bytes of overhead.
    pub fn approx_bytes(&self, cpus: u64) -> u64 {
        let vips = u64::from(self.max_vips);
        let backends = u64::from(self.max_backends);
        let maglev = u64::from(self.maglev_elements()) * size_of::<MaglevElem>() as u64;
        let conns = u64::from(self.conn_sets()) * size_of::<FlowSet>() as u64;
        let filter = u64::from(VIP_FILTER_WORDS) * 8;
        let slots = u64::from(vip_slots(self.max_vips)) * size_of::<VipSlot>() as u64;
        let vip_map = vips * 2 * (48 + 20 + 16);
        // BACKENDS, NEXTHOPS and the per-CPU BACKEND_STATS.
        let backend_maps = backends
            * (size_of::<Backend>() as u64
                + size_of::<NextHop>().next_multiple_of(8) as u64
                + size_of::<BackendCounters>() as u64 * cpus);
        // The per-VIP counters, and the count of connection-table entries filled.
        maglev + conns + filter + slots + vip_map + backend_maps + vips * 32 * cpus + 8 * cpus
    }

    /// Elements of the `MAGLEV` array (at least one: the kernel makes no empty array).
    pub fn maglev_elements(&self) -> u32 {
        maglev_elements(self.maglev_pool).max(1)
    }

    /// Sets in the connection table.
    pub fn conn_sets(&self) -> u32 {
        flow_sets(self.max_conns)
    }

    /// Entries in the connection table (sets × ways): at least `max_conns`. A set whose
    /// ways are all taken replaces one, so the table starts replacing flows before it
    /// holds this many.
    pub fn conn_capacity(&self) -> u64 {
        u64::from(self.conn_sets()) * FLOW_WAYS as u64
    }

    fn conn_capacity_i64(&self) -> i64 {
        i64::from(self.conn_sets()) * FLOW_WAYS as i64
    }
}

/// What a [`Datapath::publish_vip`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Maglev entries written (entries that already held the right id are skipped).
    pub table_writes: u32,
    /// The table (0 or 1) of the VIP's region that is now active.
    pub active_half: u32,
    /// True when the VIP got a new region from the pool (first publish, or a new M).
    pub new_region: bool,
}

/// Kernel memory of the Maglev pool in use, in entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// Entries in the pool.
    pub entries: u64,
    /// Entries in VIPs' regions (or waiting out [`REGION_QUARANTINE`]).
    pub used: u64,
    /// The largest free region.
    pub largest_free: u64,
}

/// How long a region a VIP left stays out of the pool. A packet reads its VIP's entry,
/// then one entry of the table it names; a CPU that read the entry just before the VIP
/// moved to a new region (or went away) may still read the old region. Its contents stay
/// as they were (a VIP's own table), so that read gets a backend of the VIP's old table,
/// as it would have a moment earlier — unless the region was already given to another
/// VIP and rewritten, which would send the packet to that VIP's backend. The read comes
/// within the same run of the XDP program (microseconds, never preempted on a
/// non-realtime kernel), so a region rests this long before it is handed out again. An
/// allocation that finds no room otherwise waits for the resting regions.
pub const REGION_QUARANTINE: std::time::Duration = std::time::Duration::from_millis(50);

/// Errors of the datapath layer. Each says what was being done and to what.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The eBPF object could not be loaded (maps created or adopted).
    #[error(
        "loading the {program} eBPF object (maps created or adopted from {pin_dir:?}) failed; check that bpffs is mounted at /sys/fs/bpf and that pinned maps there come from a compatible vip version with the same limits"
    )]
    Load {
        /// Program name.
        program: &'static str,
        /// Pin directory, if any.
        pin_dir: Option<PathBuf>,
        /// The loader's error.
        #[source]
        source: Box<EbpfError>,
    },
    /// The verifier or the kernel refused the program.
    #[error("the kernel refused to load the XDP program {program}")]
    Program {
        /// Program name.
        program: &'static str,
        /// The loader's error (with the verifier log).
        #[source]
        source: Box<ProgramError>,
    },
    /// The pin directory could not be created.
    #[error("could not create the pin directory {path}")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The object lacks a map this version expects (mismatched build).
    #[error(
        "the eBPF object has no map {name}: vipd and its embedded object are from different builds"
    )]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("{action} in map {map} failed")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was being done.
        action: String,
        /// The map error.
        #[source]
        source: MapError,
    },
    /// A devmap operation failed.
    #[error("adding interface {ifindex} to the redirect map {map} failed")]
    TxPort {
        /// Map name.
        map: &'static str,
        /// The interface.
        ifindex: u32,
        /// The map error.
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    /// No random seed for the connection table's hash could be read.
    #[error("reading a random seed for the connection table's hash from /dev/urandom failed")]
    Seed {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Pinned maps have other kinds or sizes than this vipd and its config would create:
    /// other `[limits]`, or maps pinned by another vip version.
    #[error(
        "the maps pinned in {} do not match this vipd and its config, so nothing was adopted or changed:\n{}\nMap sizes cannot change while the maps are pinned: run `vipd down` (it detaches vip_lb and drops the connection table and counters), then start vipd to create them anew; or restore the [limits] the maps were made with",
        pin_dir.display(),
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    PinnedGeometry {
        /// The pin directory.
        pin_dir: PathBuf,
        /// One line per map that differs.
        problems: Vec<String>,
    },
    /// Pinned maps carry the layout marker of another vip version.
    #[error(
        "the maps pinned in {} have layout {found} but this vipd uses layout {PIN_LAYOUT}: their contents mean something else to it, so nothing was adopted or changed. Run `vipd down` with the vipd that made them (or this one), then start this vipd to create them anew (connections are dropped)",
        pin_dir.display()
    )]
    PinnedLayout {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The layout the marker names.
        found: String,
    },
    /// The Maglev pool has no free region large enough for a VIP's tables.
    #[error(
        "publishing VIP {vip} needs {need} Maglev entries (two tables of M = {table_size}), but the pool of {pool} entries has {free} free, at most {largest_free} in one piece: raise [limits] maglev_pool (needs `vipd down` and a start) or lower the VIPs' table_size"
    )]
    MaglevPoolFull {
        /// The VIP.
        vip: String,
        /// Its M.
        table_size: u32,
        /// Entries its region takes.
        need: u64,
        /// Entries in the pool.
        pool: u64,
        /// Entries free.
        free: u64,
        /// The largest free region, in entries.
        largest_free: u64,
    },
    /// A table whose length is not the VIP's M.
    #[error(
        "publishing a Maglev table of {entries} entries for a VIP with M = {table_size}: M must be 1 or more, and a table has M entries or none (no backend)"
    )]
    TableLength {
        /// The VIP's M.
        table_size: u32,
        /// Entries in the table.
        entries: u64,
    },
    /// An id, slot or size is outside the limits the maps were loaded with.
    #[error(
        "{what} {value} is out of range: the datapath was loaded with a limit of {limit}; raise the limit in the configuration and restart vipd"
    )]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
        /// The limit.
        limit: u64,
    },
}

type Result<T, E = DatapathError> = std::result::Result<T, E>;

pub(crate) fn map_err(
    map: &'static str,
    action: impl Into<String>,
) -> impl FnOnce(MapError) -> DatapathError {
    let action = action.into();
    move |source| DatapathError::Map {
        map,
        action,
        source,
    }
}

fn check(what: &'static str, value: u64, limit: u64) -> Result<()> {
    if value >= limit {
        return Err(DatapathError::OutOfRange { what, value, limit });
    }
    Ok(())
}

/// The seed of the connection table's hash when the table is adopted: the one in the
/// pinned settings, if they describe a table of `sets` sets; otherwise the settings were
/// never written for this table (no flow was placed with a seed of ours) and a new one
/// is due (`None`).
fn adopted_seed(pinned: &GlobalConfig, sets: u32) -> Option<u32> {
    (pinned.flow_sets_mask == sets.wrapping_sub(1)).then_some(pinned.flow_seed)
}

/// A random seed for a new connection table, from the kernel's random pool.
fn random_seed() -> Result<u32> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| DatapathError::Seed { source })?;
    Ok(u32::from_ne_bytes(b))
}

/// A VIP's region of the Maglev pool: two tables of its M, back to back.
#[derive(Debug)]
struct Region {
    /// First element.
    start: u32,
    /// M.
    table_size: u32,
    /// Without a memory mapping: what each table holds, `None` where unknown (then every
    /// entry is written).
    shadows: [Option<Vec<u32>>; 2],
}

impl Region {
    fn new(start: u32, table_size: u32) -> Self {
        Self {
            start,
            table_size,
            shadows: [None, None],
        }
    }

    /// Elements of one table.
    fn half_elements(&self) -> u32 {
        maglev_elements(self.table_size)
    }

    /// Elements of the region.
    fn elements(&self) -> u32 {
        2 * self.half_elements()
    }

    /// The first entry of table `half`.
    fn table_base(&self, half: u32) -> u32 {
        (self.start + half * self.half_elements()) * MAGLEV_LANES
    }

    /// Which table of this region `meta` publishes, if it names one.
    fn active_half(&self, meta: &VipMeta) -> Option<u32> {
        (0..2).find(|h| meta.table_base == self.table_base(*h))
    }
}

/// The loaded `vip_lb` program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    limits: Limits,
    adopted: bool,
    vips: HashMap<MapData, VipKey, VipMeta>,
    backends: Array<MapData, Backend>,
    nexthops: Array<MapData, NextHop>,
    maglev: Array<MapData, MaglevElem>,
    /// The same array mapped into memory, when the kernel allows it (fast writes).
    maglev_mmap: Option<mmap::MappedArray<MaglevElem>>,
    conns: Array<MapData, FlowSet>,
    /// The connection table mapped into memory, when the kernel allows it (fast reads).
    conns_mmap: Option<mmap::MappedArray<FlowSet>>,
    /// Sets in the connection table (the map's size), a power of two.
    conn_sets: u32,
    /// Seed of the connection table's hash, kept while the table is pinned.
    flow_seed: u32,
    /// Entries of the connection table the datapath filled, per CPU.
    conn_fills: PerCpuArray<MapData, u64>,
    /// What to add to the sum of `conn_fills` for the flows the table holds: the
    /// entries found at adoption less the count then, plus the entries user space
    /// filled itself ([`Datapath::insert_conn`]).
    conn_base: i64,
    vip_filter: Array<MapData, u64>,
    vip_slots: Array<MapData, VipSlot>,
    /// The same array mapped into memory, when the kernel allows it.
    vip_slots_mmap: Option<mmap::MappedArray<VipSlot>>,
    /// Slots in `vip_slots` (the map's size), a power of two.
    vip_slot_count: u32,
    config: Array<MapData, GlobalConfig>,
    vip_stats: PerCpuArray<MapData, VipCounters>,
    backend_stats: PerCpuArray<MapData, BackendCounters>,
    reasons: PerCpuArray<MapData, u64>,
    tx_ports: DevMapHash<MapData>,
    /// Proxy ARP/NDP: announced address → HA group.
    neigh: HashMap<MapData, NeighKey, NeighEntry>,
    /// HA group roles (pinned).
    ha_groups: Array<MapData, HaGroup>,
    /// Interface MACs for the neighbour answers.
    if_macs: HashMap<MapData, u32, IfMac>,
    /// Per-VIP source prefixes, IPv4 (`vip_common::acl`).
    acl_v4: LpmTrie<MapData, AclKeyV4, u32>,
    /// Per-VIP source prefixes, IPv6.
    acl_v6: LpmTrie<MapData, AclKeyV6, u32>,
    /// What each ACL id holds in the two tries.
    acl_written: StdHashMap<u32, BTreeSet<crate::config::AclEntry>>,
    /// The entries of `neigh`, to keep the filter bits of solicited-node addresses.
    announced: StdHashMap<NeighKey, u32>,
    /// Each published VIP's region of the Maglev pool.
    regions: StdHashMap<VipKey, Region>,
    /// The Maglev pool's free regions (elements).
    pool: pool::Pool,
    /// Regions left by VIPs, with when: back to `pool` after [`REGION_QUARANTINE`].
    resting: std::collections::VecDeque<(std::time::Instant, u32, u32)>,
    /// The configuration as last given (without the datapath's own flags and fields).
    global: GlobalConfig,
    /// All-ports VIPs published, for `CONFIG_F_HAS_ALL_PORTS_VIPS`.
    all_ports_vips: HashSet<VipKey>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("limits", &self.limits)
            .field("adopted", &self.adopted)
            .field("regions", &self.regions.len())
            .field("maglev_pool_free", &self.pool.free_total())
            .field("maglev_mmapped", &self.maglev_mmap.is_some())
            .field("conn_sets", &self.conn_sets)
            .field("conns_mmapped", &self.conns_mmap.is_some())
            .finish_non_exhaustive()
    }
}

const ALL_MAPS: [&str; 18] = [
    MAP_VIPS,
    MAP_BACKENDS,
    MAP_NEXTHOPS,
    MAP_MAGLEV,
    MAP_CONNS,
    MAP_VIP_FILTER,
    MAP_VIP_SLOTS,
    MAP_CONFIG,
    MAP_VIP_STATS,
    MAP_BACKEND_STATS,
    MAP_REASONS,
    MAP_TX_PORTS,
    MAP_NEIGH,
    MAP_HA_GROUPS,
    MAP_IF_MACS,
    MAP_CONN_FILLS,
    MAP_ACL_V4,
    MAP_ACL_V6,
];

/// The layout of the pinned maps: what their entries mean to user space and the
/// datapath, beyond the sizes `expected_geometry` checks. Bumped when a map keeps its
/// sizes but changes its meaning; a `vipd` refuses to adopt maps of another layout. Maps
/// pinned before the marker existed have layout 1. Layout 2: the Maglev array is a pool
/// of per-VIP regions (`[limits] maglev_pool`), where layout 1 gave VIP slot `s` the
/// entries from `s * 2 * table_size`.
pub const PIN_LAYOUT: u32 = 2;

/// The pin that marks a pin directory's layout: the `CONFIG` map pinned a second time
/// under this name (bpffs holds only BPF objects).
fn layout_marker(layout: u32) -> String {
    format!("layout_v{layout}")
}

/// One map as this vipd creates it for a config's limits.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Geometry {
    name: &'static str,
    map_type: aya::maps::MapType,
    key_size: u32,
    value_size: u32,
    /// `None`: not checked (it does not depend on the config).
    max_entries: Option<u32>,
    /// What sets `max_entries`, for the message.
    sized_by: &'static str,
    /// Added after the first pinned layout: a set pinned by an older vipd lacks it, and
    /// adopting that set creates it (what it holds is worked out at adoption).
    added_later: bool,
}

/// Every map of `vip_lb` as [`Datapath::load`] creates it for `limits`. Key and value
/// sizes come from the types the eBPF side shares, so they cannot drift from it; a
/// privileged test checks the whole table against a fresh load.
fn expected_geometry(limits: &Limits) -> [Geometry; 13] {
    use aya::maps::MapType::{Array as A, DevMapHash, Hash, PerCpuArray as P};
    let g = |name, map_type, key: usize, value: usize, max, sized_by| Geometry {
        name,
        map_type,
        key_size: key as u32,
        value_size: value as u32,
        max_entries: max,
        sized_by,
        added_later: false,
    };
    let maglev = limits.maglev_elements();
    [
        g(
            MAP_VIPS,
            Hash,
            size_of::<VipKey>(),
            size_of::<VipMeta>(),
            Some(limits.max_vips.saturating_mul(2)),
            "[limits] max_vips",
        ),
        g(
            MAP_BACKENDS,
            A,
            4,
            size_of::<Backend>(),
            Some(limits.max_backends),
            "[limits] max_backends",
        ),
        g(
            MAP_NEXTHOPS,
            A,
            4,
            size_of::<NextHop>(),
            Some(limits.max_backends),
            "[limits] max_backends",
        ),
        g(
            MAP_MAGLEV,
            A,
            4,
            size_of::<MaglevElem>(),
            Some(maglev),
            "[limits] maglev_pool",
        ),
        g(
            MAP_CONNS,
            A,
            4,
            size_of::<FlowSet>(),
            Some(limits.conn_sets()),
            "[limits] max_conns",
        ),
        g(MAP_VIP_FILTER, A, 4, 8, Some(VIP_FILTER_WORDS), "this vipd"),
        g(
            MAP_VIP_SLOTS,
            A,
            4,
            size_of::<VipSlot>(),
            Some(vip_slots(limits.max_vips)),
            "[limits] max_vips",
        ),
        g(
            MAP_CONFIG,
            A,
            4,
            size_of::<GlobalConfig>(),
            Some(1),
            "this vipd",
        ),
        g(
            MAP_VIP_STATS,
            P,
            4,
            size_of::<VipCounters>(),
            Some(limits.max_vips),
            "[limits] max_vips",
        ),
        g(
            MAP_BACKEND_STATS,
            P,
            4,
            size_of::<BackendCounters>(),
            Some(limits.max_backends),
            "[limits] max_backends",
        ),
        g(MAP_REASONS, P, 4, 8, Some(Reason::COUNT), "this vipd"),
        // The devmap's value is the kernel's `bpf_devmap_val` (ifindex, program).
        g(MAP_TX_PORTS, DevMapHash, 4, 8, None, "this vipd"),
        Geometry {
            added_later: true,
            ..g(MAP_CONN_FILLS, P, 4, 8, Some(1), "this vipd")
        },
    ]
}

/// Checks maps pinned in `dir` against what this vipd would create for `limits`, before
/// any of them is opened for writing. `Ok(false)`: nothing is pinned (a fresh load).
/// Any difference, a set that is only partly pinned, or the marker of another layout
/// is refused, naming every map that differs.
fn check_pinned(dir: &Path, limits: &Limits) -> Result<bool> {
    let present: Vec<&str> = ALL_MAPS
        .iter()
        .copied()
        .filter(|n| dir.join(n).exists())
        .collect();
    if present.is_empty() {
        return Ok(false);
    }
    let markers: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("layout_v"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(found) = markers.iter().find(|m| **m != PIN_LAYOUT.to_string()) {
        return Err(DatapathError::PinnedLayout {
            pin_dir: dir.to_path_buf(),
            found: found.clone(),
        });
    }
    let mut problems = Vec::new();
    for want in expected_geometry(limits) {
        let path = dir.join(want.name);
        if !path.exists() && want.added_later {
            continue;
        }
        if !path.exists() {
            problems.push(format!(
                "{} is not pinned while {} are: the set is incomplete",
                want.name,
                present.join(", ")
            ));
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path).map_err(map_err(
            want.name,
            format!(
                "reading the kind and sizes of the map pinned at {}",
                path.display()
            ),
        ))?;
        let kind = info.map_type().ok();
        if kind != Some(want.map_type) {
            problems.push(format!(
                "{} is a {:?} map, this vipd makes a {:?} map (maps of another vip version)",
                want.name, kind, want.map_type
            ));
            continue;
        }
        if (info.key_size(), info.value_size()) != (want.key_size, want.value_size) {
            problems.push(format!(
                "{} has {}-byte keys and {}-byte values, this vipd uses {} and {} (maps of another vip version)",
                want.name,
                info.key_size(),
                info.value_size(),
                want.key_size,
                want.value_size
            ));
        }
        if let Some(max) = want.max_entries
            && info.max_entries() != max
        {
            problems.push(format!(
                "{} has {} entries, {} needs {max}",
                want.name,
                info.max_entries(),
                want.sized_by
            ));
        }
    }
    if !problems.is_empty() {
        if let Some(pinned) = pinned_limits(dir) {
            problems.push(format!("the pinned maps were made with {pinned}"));
        }
        return Err(DatapathError::PinnedGeometry {
            pin_dir: dir.to_path_buf(),
            problems,
        });
    }
    Ok(true)
}

/// The `[limits]` pinned maps were made with, as far as their sizes tell, in the
/// config's words (`max_conns` only to its set of four).
fn pinned_limits(dir: &Path) -> Option<String> {
    let max = |name| {
        aya::maps::MapInfo::from_pin(dir.join(name))
            .ok()
            .map(|i| i.max_entries())
    };
    let vips = max(MAP_VIP_STATS)?;
    let backends = max(MAP_BACKENDS)?;
    let sets = max(MAP_CONNS)?;
    let maglev = max(MAP_MAGLEV)?;
    let pool = u64::from(maglev) * u64::from(MAGLEV_LANES);
    Some(format!(
        "max_vips = {vips}, max_backends = {backends}, maglev_pool = {pool} (or up to 3 less), max_conns = {} (or up to a set of {} less)",
        u64::from(sets) * FLOW_WAYS as u64,
        FLOW_WAYS
    ))
}

pub(crate) fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map> {
    ebpf.take_map(name)
        .ok_or(DatapathError::MissingMap { name })
}

/// What [`typed!`] was doing when a map has another type or value size than this build
/// expects: with a pin directory, the usual cause is maps pinned by another vip version.
pub(crate) const OPENING_TYPED: &str = "opening the map with its expected type and value size (maps \
     pinned by another vip version may differ: `vipd down` recreates them, dropping \
     connections)";

macro_rules! typed {
    ($ebpf:expr, $name:expr) => {
        take($ebpf, $name)?
            .try_into()
            .map_err(map_err($name, OPENING_TYPED))?
    };
}

pub(crate) fn prepare_pin_dir(pin_dir: Option<&Path>, marker: &str) -> Result<bool> {
    let Some(dir) = pin_dir else {
        return Ok(false);
    };
    std::fs::create_dir_all(dir).map_err(|source| DatapathError::PinDir {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(dir.join(marker).exists())
}

impl Datapath {
    /// Loads the embedded vip_lb with map sizes from `limits`. With `pin_dir`, maps are
    /// pinned there; maps already pinned there are adopted (restart: connection table,
    /// its hash seed, the VIP-address filter and counters survive, and the Maglev pool's
    /// free list is rebuilt from the VIP entries). A fresh load picks a random seed for the connection table's hash. Either way the
    /// global settings are written at once (zero until [`Datapath::set_global`], plus
    /// the datapath's own fields), so the datapath and [`Datapath::lookup_conn`] agree
    /// on where every flow lives from the start.
    pub fn load(limits: &Limits, pin_dir: Option<&Path>) -> Result<Self, DatapathError> {
        prepare_pin_dir(pin_dir, MAP_MAGLEV)?;
        let adopted = match pin_dir {
            Some(dir) => check_pinned(dir, limits)?,
            None => false,
        };
        check(
            "max_backends (Maglev entries hold 16-bit backend ids)",
            limits.max_backends.into(),
            u64::from(MAX_BACKEND_IDS) + 1,
        )?;
        let maglev_elems = limits.maglev_elements();
        let mut loader = EbpfLoader::new();
        loader
            // Room for one address marker per VIP.
            .map_max_entries(MAP_VIPS, limits.max_vips.saturating_mul(2))
            .map_max_entries(MAP_BACKENDS, limits.max_backends)
            .map_max_entries(MAP_NEXTHOPS, limits.max_backends)
            .map_max_entries(MAP_BACKEND_STATS, limits.max_backends)
            .map_max_entries(MAP_MAGLEV, maglev_elems)
            .map_max_entries(MAP_CONNS, limits.conn_sets())
            .map_max_entries(MAP_VIP_SLOTS, vip_slots(limits.max_vips))
            .map_max_entries(MAP_VIP_STATS, limits.max_vips)
            .map_max_entries(MAP_NEIGH, MAX_NEIGH_ADDRS)
            .map_max_entries(MAP_IF_MACS, MAX_IF_MACS)
            .map_max_entries(MAP_ACL_V4, ACL_MAP_ENTRIES)
            .map_max_entries(MAP_ACL_V6, ACL_MAP_ENTRIES);
        let paths: Vec<(&'static str, PathBuf)> = pin_dir
            .map(|d| ALL_MAPS.iter().map(|n| (*n, d.join(n))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(ebpf::VIP_LB)
            .map_err(|source| DatapathError::Load {
                program: ebpf::PROG_LB,
                pin_dir: pin_dir.map(Path::to_path_buf),
                source: Box::new(source),
            })?;
        let prog: &mut Xdp = ebpf
            .program_mut(ebpf::PROG_LB)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingMap {
                name: ebpf::PROG_LB,
            })?;
        prog.load().map_err(|source| DatapathError::Program {
            program: ebpf::PROG_LB,
            source: Box::new(source),
        })?;
        let maglev_map = take(&mut ebpf, MAP_MAGLEV)?;
        let maglev_mmap = match &maglev_map {
            Map::Array(data) => mmap::MappedArray::new(data.fd().as_fd(), maglev_elems),
            _ => None,
        };
        let conns: Array<MapData, FlowSet> = typed!(&mut ebpf, MAP_CONNS);
        // The size asked for: on adoption `check_pinned` made sure the pinned table has
        // it (aya reports the object's size, not the pinned map's).
        let conn_sets = conns.len();
        let conns_mmap = mmap::MappedArray::new(conns.map().fd().as_fd(), conn_sets);
        let vip_slots: Array<MapData, VipSlot> = typed!(&mut ebpf, MAP_VIP_SLOTS);
        let vip_slot_count = vip_slots.len();
        let vip_slots_mmap = mmap::MappedArray::new(vip_slots.map().fd().as_fd(), vip_slot_count);
        let mut dp = Self {
            vips: typed!(&mut ebpf, MAP_VIPS),
            backends: typed!(&mut ebpf, MAP_BACKENDS),
            nexthops: typed!(&mut ebpf, MAP_NEXTHOPS),
            maglev: maglev_map
                .try_into()
                .map_err(map_err(MAP_MAGLEV, OPENING_TYPED))?,
            maglev_mmap,
            conns,
            conns_mmap,
            conn_sets,
            flow_seed: 0,
            conn_fills: typed!(&mut ebpf, MAP_CONN_FILLS),
            conn_base: 0,
            vip_filter: typed!(&mut ebpf, MAP_VIP_FILTER),
            vip_slots,
            vip_slots_mmap,
            vip_slot_count,
            config: typed!(&mut ebpf, MAP_CONFIG),
            vip_stats: typed!(&mut ebpf, MAP_VIP_STATS),
            backend_stats: typed!(&mut ebpf, MAP_BACKEND_STATS),
            reasons: typed!(&mut ebpf, MAP_REASONS),
            tx_ports: typed!(&mut ebpf, MAP_TX_PORTS),
            neigh: typed!(&mut ebpf, MAP_NEIGH),
            ha_groups: typed!(&mut ebpf, MAP_HA_GROUPS),
            if_macs: typed!(&mut ebpf, MAP_IF_MACS),
            acl_v4: typed!(&mut ebpf, MAP_ACL_V4),
            acl_v6: typed!(&mut ebpf, MAP_ACL_V6),
            acl_written: StdHashMap::new(),
            announced: StdHashMap::new(),
            ebpf,
            limits: *limits,
            adopted,
            regions: StdHashMap::new(),
            pool: pool::Pool::new(maglev_elems),
            resting: std::collections::VecDeque::new(),
            global: GlobalConfig::default(),
            all_ports_vips: HashSet::new(),
        };
        let mut seed = None;
        if adopted {
            let pinned = dp
                .config
                .get(&0, 0)
                .map_err(map_err(MAP_CONFIG, "reading the global settings"))?;
            seed = adopted_seed(&pinned, conn_sets);
            dp.global = without_own_fields(&pinned);
            for k in dp.vips.keys() {
                let k = k.map_err(map_err(MAP_VIPS, "listing VIPs"))?;
                if is_all_ports(&k) {
                    dp.all_ports_vips.insert(k);
                }
            }
            dp.rebuild_vip_slots()?;
            dp.adopt_regions()?;
            dp.read_announced()?;
            dp.read_acls()?;
        }
        dp.flow_seed = match seed {
            Some(s) => s,
            None => random_seed()?,
        };
        // A fresh table is empty and its count zero. An adopted one is walked once (the
        // only walk): its count may be new (maps pinned before it existed), and two
        // CPUs filling the same way at the same moment count it twice, so what the
        // count drifted by until now is set right at every start.
        let fills = dp.conn_fills_sum()?;
        let held = if adopted { dp.conn_count_by_walk()? } else { 0 };
        dp.conn_base = held as i64 - fills as i64;
        dp.write_global()?;
        if let Some(dir) = pin_dir {
            let marker = dir.join(layout_marker(PIN_LAYOUT));
            if !marker.exists() {
                dp.config
                    .map()
                    .pin(&marker)
                    .map_err(|source| DatapathError::PinDir {
                        path: marker.clone(),
                        source: std::io::Error::other(source),
                    })?;
            }
        }
        Ok(dp)
    }

    /// True when the maps were adopted from the pin directory (a restart).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// True when Maglev tables are written through a memory mapping (fast) rather than
    /// one `bpf()` call per entry.
    pub fn maglev_mmapped(&self) -> bool {
        self.maglev_mmap.is_some()
    }

    /// True when the connection table is read through a memory mapping (fast) rather
    /// than one `bpf()` call per set.
    pub fn conns_mmapped(&self) -> bool {
        self.conns_mmap.is_some()
    }

    /// True when the VIP slots are read and written through a memory mapping rather than
    /// one `bpf()` call per slot.
    pub fn vip_slots_mmapped(&self) -> bool {
        self.vip_slots_mmap.is_some()
    }

    /// The limits the maps were created with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The XDP program, to attach or to `test_run`.
    pub fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(ebpf::PROG_LB)
            .expect("loaded in Datapath::load")
            .try_into()
            .expect("vip_lb is an XDP program")
    }

    /// Writes the global settings. The datapath's own fields (`CONFIG_F_HAS_ALL_PORTS_VIPS`,
    /// `flow_sets_mask`, `flow_seed`, `vip_slots_mask`) are ignored in `cfg` and filled in from the maps.
    pub fn set_global(&mut self, cfg: &GlobalConfig) -> Result<(), DatapathError> {
        self.global = without_own_fields(cfg);
        self.write_global()
    }

    /// Sets the connection table's seed instead of the random one chosen at load, so a
    /// run of generated packets (the differential fuzzing) repeats exactly. Entries placed
    /// under the old seed are no longer found where the new one looks: for a table that
    /// is still empty, not for one that holds flows.
    pub fn reseed_flows(&mut self, seed: u32) -> Result<(), DatapathError> {
        self.flow_seed = seed;
        self.write_global()
    }

    /// The global settings as the datapath has them: the configuration plus the
    /// datapath's own fields (the all-ports flag, the connection table's seed and mask,
    /// the VIP slots' mask).
    /// A model of the datapath needs these to place flows in the same sets.
    pub fn written_global(&self) -> GlobalConfig {
        let mut cfg = self.global;
        if !self.all_ports_vips.is_empty() {
            cfg.flags |= CONFIG_F_HAS_ALL_PORTS_VIPS;
        }
        cfg.flow_sets_mask = self.conn_sets - 1;
        cfg.flow_seed = self.flow_seed;
        cfg.vip_slots_mask = self.vip_slot_count - 1;
        cfg
    }

    fn write_global(&mut self) -> Result<()> {
        self.config
            .set(0, self.written_global(), 0)
            .map_err(map_err(MAP_CONFIG, "writing the global settings"))
    }

    /// Writes backend `id`.
    pub fn set_backend(&mut self, id: u32, b: &Backend) -> Result<(), DatapathError> {
        check("backend id", id.into(), self.limits.max_backends.into())?;
        self.backends
            .set(id, b, 0)
            .map_err(map_err(MAP_BACKENDS, format!("writing backend {id}")))
    }

    /// Pins backend `id`'s next hop (MACs and egress interface) so the datapath skips
    /// `bpf_fib_lookup`; an egress other than 0 is also added to the redirect devmap.
    pub fn set_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<(), DatapathError> {
        check("backend id", id.into(), self.limits.max_backends.into())?;
        if nh.ifindex != 0 {
            self.add_tx_port(nh.ifindex)?;
        }
        self.nexthops.set(id, nh, 0).map_err(map_err(
            MAP_NEXTHOPS,
            format!("writing the next hop of backend {id}"),
        ))
    }

    /// Forgets backend `id`'s next hop: the datapath asks `bpf_fib_lookup` again.
    pub fn clear_nexthop(&mut self, id: u32) -> Result<(), DatapathError> {
        self.set_nexthop(id, &NextHop::default())
    }

    /// Lets the datapath `XDP_REDIRECT` to interface `ifindex`.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|source| DatapathError::TxPort {
                map: MAP_TX_PORTS,
                ifindex,
                source,
            })
    }

    /// Makes the pool's free list agree with the pinned VIP map (adoption): every VIP
    /// entry with a table names its region (`table_base`, `VIP_F_TABLE_B`, M from
    /// `table_size`), which is taken out of the pool. A VIP without a table (no backend)
    /// reads none, so its region is free and it gets one at its next publish.
    fn adopt_regions(&mut self) -> Result<()> {
        for entry in self.vips.iter() {
            let (k, meta) = entry.map_err(map_err(MAP_VIPS, "listing VIPs"))?;
            if is_marker(&k) || meta.table_size == 0 || meta.table_base % MAGLEV_LANES != 0 {
                continue;
            }
            let half = u32::from(meta.flags & VIP_F_TABLE_B != 0);
            let probe = Region::new(0, meta.table_size);
            let Some(start) =
                (meta.table_base / MAGLEV_LANES).checked_sub(half * probe.half_elements())
            else {
                continue;
            };
            let region = Region::new(start, meta.table_size);
            match self.pool.claim(start, region.elements()) {
                Ok(()) => {
                    self.regions.insert(k, region);
                }
                // Only maps not written by one vipd at a time can hold this; the VIP gets
                // a region of its own at its next publish.
                Err(e) => tracing::warn!(
                    vip = ?keys::key_vip_id(&k),
                    start = e.start,
                    elements = e.len,
                    "a pinned VIP's Maglev region overlaps another's or lies outside the pool"
                ),
            }
        }
        Ok(())
    }

    /// Regions that have rested [`REGION_QUARANTINE`] go back to the pool.
    fn release_rested(&mut self) {
        while let Some(&(since, start, len)) = self.resting.front() {
            if since.elapsed() < REGION_QUARANTINE {
                break;
            }
            self.resting.pop_front();
            let freed = self.pool.free(start, len);
            debug_assert!(freed.is_ok(), "region {start}+{len} freed twice");
        }
    }

    /// A new region for `key`'s tables of M = `table_size`, waiting for resting regions
    /// when nothing else fits.
    fn take_region(&mut self, key: &VipKey, table_size: u32) -> Result<Region> {
        let mut region = Region::new(0, table_size);
        loop {
            self.release_rested();
            match self.pool.alloc(region.elements()) {
                Ok(start) => {
                    region.start = start;
                    return Ok(region);
                }
                Err(_) if !self.resting.is_empty() => {
                    let since = self.resting.front().map(|r| r.0);
                    if let Some(since) = since {
                        std::thread::sleep(REGION_QUARANTINE.saturating_sub(since.elapsed()));
                    }
                }
                Err(full) => {
                    let lanes = u64::from(MAGLEV_LANES);
                    return Err(DatapathError::MaglevPoolFull {
                        vip: keys::key_vip_id(key)
                            .map_or_else(|| format!("{key:?}"), |v| v.to_string()),
                        table_size,
                        need: u64::from(full.wanted) * lanes,
                        pool: u64::from(self.pool.size()) * lanes,
                        free: u64::from(full.free) * lanes,
                        largest_free: u64::from(full.largest_free) * lanes,
                    });
                }
            }
        }
    }

    /// Puts a region no VIP entry names any more to rest (see [`REGION_QUARANTINE`]).
    fn retire_region(&mut self, region: Region) {
        self.resting
            .push_back((std::time::Instant::now(), region.start, region.elements()));
    }

    /// The Maglev pool's use: its entries, those in VIPs' regions (or resting), and the
    /// largest free region.
    pub fn maglev_pool_usage(&self) -> PoolUsage {
        let lanes = u64::from(MAGLEV_LANES);
        PoolUsage {
            entries: u64::from(self.pool.size()) * lanes,
            used: u64::from(self.pool.size() - self.pool.free_total()) * lanes,
            largest_free: u64::from(self.pool.largest_free()) * lanes,
        }
    }

    /// Where `key`'s tables are in the Maglev pool, as (first entry, entries), if it has a
    /// region (tests).
    pub fn maglev_region(&self, key: &VipKey) -> Option<(u32, u32)> {
        self.regions
            .get(key)
            .map(|r| (r.table_base(0), r.elements() * MAGLEV_LANES))
    }

    /// Writes `table` (backend ids; `table_size` = the VIP's M <= limits.table_size
    /// entries, or none) into the VIP's table that packets do not use, writing only
    /// entries that differ there, then publishes by replacing the VIP map entry (atomic
    /// for readers). A VIP first published, or whose M changes, first gets a region of its
    /// own M from the Maglev pool (refused with nothing written when none is free); the
    /// region it had rests (see [`REGION_QUARANTINE`]) once the entry names the new one.
    /// Returns map writes made. An empty table publishes a VIP without backends (its
    /// packets are dropped); it keeps its region for the next table.
    /// The address's bit in the VIP-address filter is set before anything else, so no
    /// packet to the new VIP is passed by the filter. The backends in `table` must carry
    /// `id` and `flags` already (see [`keys::backend`]): flows found in the connection table
    /// are forwarded with the backend's copy.
    ///
    /// `acl` is the VIP's source access list as the trie holds it (empty: none). A new
    /// list is written under the VIP's other ACL id before the VIP entry that names it
    /// (with `VIP_F_ACL` and the `VIP_F_ACL_B` of that id, added here to `flags`), and
    /// the old id's entries are deleted after it; an unchanged list keeps its id.
    pub fn publish_vip(
        &mut self,
        key: &VipKey,
        id: u32,
        flags: u32,
        table_size: u32,
        table: &[u32],
        acl: &[crate::config::AclEntry],
    ) -> Result<PublishStats, DatapathError> {
        check("VIP id", id.into(), self.limits.max_vips.into())?;
        check(
            "Maglev table size",
            table_size.into(),
            u64::from(self.limits.table_size) + 1,
        )?;
        if table_size == 0 || !(table.is_empty() || table.len() == table_size as usize) {
            return Err(DatapathError::TableLength {
                table_size,
                entries: table.len() as u64,
            });
        }
        if let Some(bad) = table.iter().find(|b| **b >= self.limits.max_backends) {
            check(
                "backend id in the Maglev table",
                (*bad).into(),
                self.limits.max_backends.into(),
            )?;
        }
        let old = self.vips.get(key, 0).ok();
        // The VIP's region, or a new one (taken before anything is written, so a full
        // pool changes nothing).
        let (mut region, replaced, new_region) = match self.regions.remove(key) {
            Some(r) if r.table_size == table_size => (r, None, false),
            had => match self.take_region(key, table_size) {
                Ok(r) => (r, had, true),
                Err(e) => {
                    if let Some(r) = had {
                        self.regions.insert(*key, r);
                    }
                    return Err(e);
                }
            },
        };
        let half = match old.as_ref().and_then(|m| region.active_half(m)) {
            Some(active) => 1 - active,
            None => 0,
        };
        let result = self.publish_in(key, id, flags, &mut region, half, table, acl, old);
        // Whatever failed, the region the VIP entry names is the VIP's.
        let live = self.vips.get(key, 0).ok();
        if live.as_ref().and_then(|m| region.active_half(m)).is_some() || !new_region {
            self.regions.insert(*key, region);
            if let Some(r) = replaced {
                self.retire_region(r);
            }
        } else {
            // Never published: nothing reads it.
            let freed = self.pool.free(region.start, region.elements());
            debug_assert!(freed.is_ok(), "a region just taken is not free");
            if let Some(r) = replaced {
                self.regions.insert(*key, r);
            }
        }
        result.map(|writes| PublishStats {
            table_writes: writes,
            active_half: half,
            new_region,
        })
    }

    /// [`Datapath::publish_vip`] once the region is chosen: writes `table` into table
    /// `half` of `region` and publishes it; returns the table entries written.
    #[expect(
        clippy::too_many_arguments,
        reason = "the publish's inputs plus the region chosen for it"
    )]
    fn publish_in(
        &mut self,
        key: &VipKey,
        id: u32,
        flags: u32,
        region: &mut Region,
        half: u32,
        table: &[u32],
        acl: &[crate::config::AclEntry],
        old: Option<VipMeta>,
    ) -> Result<u32> {
        self.set_filter_bit(key)?;
        let table_base = region.table_base(half);
        let writes = write_table(
            &mut self.maglev_mmap,
            &mut self.maglev,
            &mut region.shadows[half as usize],
            table_base,
            table,
        )?;
        let acl_flags = self.stage_acl(id, old.as_ref(), acl)?;
        // Table stores (through the mapping) before the VIP entry that publishes them.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let table_b = if half == 1 { VIP_F_TABLE_B } else { 0 };
        let meta = VipMeta {
            id,
            flags: (flags & !(VIP_F_ADDR_MARKER | VIP_F_ACL | VIP_F_ACL_B | VIP_F_TABLE_B))
                | acl_flags
                | table_b,
            table_base,
            table_size: table.len() as u32,
        };
        // The marker first, so a fragment to the new VIP is never passed as "not ours".
        let marker = VipKey {
            port_be: 0,
            proto: 0,
            ..*key
        };
        let marker_meta = VipMeta {
            flags: VIP_F_ADDR_MARKER,
            ..VipMeta::default()
        };
        self.vips
            .insert(marker, marker_meta, 0)
            .map_err(map_err(MAP_VIPS, "writing the VIP address marker"))?;
        // The datapath must look for all-ports VIPs before the first one is visible.
        if is_all_ports(key) && self.all_ports_vips.insert(*key) && self.all_ports_vips.len() == 1 {
            self.write_global()?;
        }
        // The VIP's slot is emptied first: were the entry published and its slot then
        // not rewritten, the slot would name the half the next publish overwrites.
        let slot = self.vip_slot_of(key);
        if self.slot_holder(slot)? == Some(*key) {
            self.write_vip_slot(slot, &VipSlot::default())?;
        }
        self.vips
            .insert(*key, meta, 0)
            .map_err(map_err(MAP_VIPS, "publishing the VIP entry"))?;
        self.fill_vip_slot(key, &meta)?;
        self.retire_acls(id, meta.flags, old.as_ref())?;
        Ok(writes)
    }

    /// Removes a VIP (and its address marker when no other VIP shares the address). Its
    /// region of the Maglev pool rests, then goes back to the pool. The address's
    /// bit in the VIP-address filter is cleared last, and only when no remaining VIP
    /// address has the same bit. Flows in the connection table keep going to their
    /// backends while those are usable: take the backends out of service too.
    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), DatapathError> {
        let old = self.vips.get(key, 0).ok();
        // The slot first: until the VIP entry goes, lookups find it in the VIP map.
        let slot = self.vip_slot_of(key);
        let owned = self.slot_holder(slot)? == Some(*key);
        if owned {
            self.write_vip_slot(slot, &VipSlot::default())?;
        }
        match self.vips.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(MAP_VIPS, "removing the VIP entry")(e)),
        }
        if let Some(r) = self.regions.remove(key) {
            self.retire_region(r);
        }
        // Its access lists, once no entry names them (unless another VIP entry has its
        // id already, and with it those lists).
        if let Some(m) = old {
            let id_taken = self
                .vips
                .iter()
                .filter_map(|e| e.ok())
                .any(|(k, v)| !is_marker(&k) && v.id == m.id);
            if !id_taken {
                self.retire_acls(m.id, 0, None)?;
            }
        }
        if self.all_ports_vips.remove(key) && self.all_ports_vips.is_empty() {
            self.write_global()?;
        }
        let marker = VipKey {
            port_be: 0,
            proto: 0,
            ..*key
        };
        let remaining = self
            .vips
            .keys()
            .collect::<Result<Vec<VipKey>, _>>()
            .map_err(map_err(MAP_VIPS, "listing VIPs"))?;
        let still_used = remaining
            .iter()
            .any(|k| *k != marker && k.addr == key.addr && k.family == key.family);
        if !still_used {
            match self.vips.remove(&marker) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(MAP_VIPS, "removing the VIP address marker")(e)),
            }
        }
        let filter = vip_filter_slot(&key.addr, key.family);
        if !remaining
            .iter()
            .any(|k| !is_marker(k) && vip_filter_slot(&k.addr, k.family) == filter)
            && !self.solicited_node_in(filter)
        {
            self.clear_filter_bit(key)?;
        }
        // A VIP that wanted the freed slot gets it.
        if owned
            && let Some(next) = remaining
                .iter()
                .find(|k| !is_marker(k) && *k != key && self.vip_slot_of(k) == slot)
            && let Some(meta) = self.vip(next)?
        {
            self.fill_vip_slot(next, &meta)?;
        }
        Ok(())
    }

    fn vip_slot_of(&self, key: &VipKey) -> u32 {
        vip_slot_index(vip_slot_hash(key), self.vip_slot_count - 1)
    }

    /// Writes `key` → `meta` into the key's slot unless another VIP holds it.
    fn fill_vip_slot(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()> {
        let slot = self.vip_slot_of(key);
        match self.slot_holder(slot)? {
            Some(holder) if holder != *key => Ok(()),
            _ => self.write_vip_slot(slot, &VipSlot::new(key, vip_slot_hash(key), meta)),
        }
    }

    /// The VIP slot `slot` holds, if any (vipd is its only writer, so what it reads back
    /// is what it wrote).
    fn slot_holder(&self, slot: u32) -> Result<Option<VipKey>> {
        let s = self.read_vip_slot(slot)?;
        Ok((s.check != 0).then_some(s.key))
    }

    fn read_vip_slot(&self, slot: u32) -> Result<VipSlot> {
        match &self.vip_slots_mmap {
            Some(m) => Ok(m.get(slot)),
            None => self
                .vip_slots
                .get(&slot, 0)
                .map_err(map_err(MAP_VIP_SLOTS, format!("reading VIP slot {slot}"))),
        }
    }

    fn write_vip_slot(&mut self, slot: u32, value: &VipSlot) -> Result<()> {
        match &mut self.vip_slots_mmap {
            Some(m) => {
                m.set(slot, *value);
                Ok(())
            }
            None => self
                .vip_slots
                .set(slot, value, 0)
                .map_err(map_err(MAP_VIP_SLOTS, format!("writing VIP slot {slot}"))),
        }
    }

    /// After adoption: makes every slot agree with the VIP map (a vipd that stopped
    /// between writing a VIP entry and its slot leaves the slot behind), clearing slots
    /// whose VIP is gone or whose copy differs, then filling them again.
    fn rebuild_vip_slots(&mut self) -> Result<()> {
        let mut want: StdHashMap<u32, VipSlot> = StdHashMap::new();
        for entry in self.vips.iter() {
            let (k, meta) = entry.map_err(map_err(MAP_VIPS, "listing VIPs"))?;
            if !is_marker(&k) {
                want.entry(self.vip_slot_of(&k))
                    .or_insert_with(|| VipSlot::new(&k, vip_slot_hash(&k), &meta));
            }
        }
        for slot in 0..self.vip_slot_count {
            let value = want.get(&slot).copied().unwrap_or_default();
            if self.read_vip_slot(slot)? != value {
                self.write_vip_slot(slot, &value)?;
            }
        }
        Ok(())
    }

    /// The VIP the datapath finds in `key`'s slot, if it is `key` and checks out (for
    /// tests): `None` means lookups of `key` go to the VIP map.
    pub fn slotted_vip(&self, key: &VipKey) -> Result<Option<VipMeta>, DatapathError> {
        let h = vip_slot_hash(key);
        let slot = self.read_vip_slot(vip_slot_index(h, self.vip_slot_count - 1))?;
        Ok(slot.get(key, h))
    }

    /// Sets the VIP-address filter bit of `key`'s address (one read, and a write when
    /// the bit was clear).
    fn set_filter_bit(&mut self, key: &VipKey) -> Result<()> {
        let (word, bit) = vip_filter_slot(&key.addr, key.family);
        let w = self.filter_word(word)?;
        if w & bit == 0 {
            self.write_filter_word(word, w | bit)?;
        }
        Ok(())
    }

    /// Clears the VIP-address filter bit of `key`'s address.
    fn clear_filter_bit(&mut self, key: &VipKey) -> Result<()> {
        let (word, bit) = vip_filter_slot(&key.addr, key.family);
        let w = self.filter_word(word)?;
        if w & bit != 0 {
            self.write_filter_word(word, w & !bit)?;
        }
        Ok(())
    }

    fn filter_word(&self, word: u32) -> Result<u64> {
        self.vip_filter.get(&word, 0).map_err(map_err(
            MAP_VIP_FILTER,
            format!("reading word {word} of the VIP-address filter"),
        ))
    }

    fn write_filter_word(&mut self, word: u32, w: u64) -> Result<()> {
        self.vip_filter.set(word, w, 0).map_err(map_err(
            MAP_VIP_FILTER,
            format!("writing word {word} of the VIP-address filter"),
        ))
    }

    /// True when `addr`'s bit is set in the VIP-address filter (the datapath passes a
    /// packet whose destination's bit is clear without looking further).
    pub fn vip_filter_has(&self, addr: IpAddr) -> Result<bool, DatapathError> {
        let (words, family) = addr_words(addr);
        let (word, bit) = vip_filter_slot(&words, family);
        Ok(self.filter_word(word)? & bit != 0)
    }

    /// The published entry of a VIP, if any.
    pub fn vip(&self, key: &VipKey) -> Result<Option<VipMeta>, DatapathError> {
        match self.vips.get(key, 0) {
            Ok(m) => Ok(Some(m)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(MAP_VIPS, "reading a VIP")(e)),
        }
    }

    /// Every published VIP entry, address markers left out.
    pub fn published_vips(&self) -> Result<Vec<(VipKey, VipMeta)>, DatapathError> {
        let mut out = Vec::new();
        for entry in self.vips.iter() {
            let (k, meta) = entry.map_err(map_err(MAP_VIPS, "listing VIPs"))?;
            if !is_marker(&k) {
                out.push((k, meta));
            }
        }
        Ok(out)
    }

    /// Every backend entry that was ever written, by id (the array starts all zero; a
    /// cleared entry keeps its address and generation).
    pub fn written_backends(&self) -> Result<std::collections::BTreeMap<u32, Backend>> {
        let mut out = std::collections::BTreeMap::new();
        for id in 0..self.backends.len() {
            let b = self
                .backends
                .get(&id, 0)
                .map_err(map_err(MAP_BACKENDS, format!("reading backend {id}")))?;
            if b != Backend::default() {
                out.insert(id, b);
            }
        }
        Ok(out)
    }

    /// The active Maglev table of a published VIP, read from the map.
    pub fn vip_table(&self, key: &VipKey) -> Result<Option<Vec<u32>>, DatapathError> {
        // Read through the syscall path on purpose: this is what the kernel sees.
        let Some(meta) = self.vip(key)? else {
            return Ok(None);
        };
        (meta.table_base..meta.table_base + meta.table_size)
            .map(|i| maglev_get(&None, &self.maglev, i))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Backend `id` as the datapath has it.
    pub fn backend(&self, id: u32) -> Result<Backend, DatapathError> {
        check("backend id", id.into(), self.limits.max_backends.into())?;
        self.backends
            .get(&id, 0)
            .map_err(map_err(MAP_BACKENDS, format!("reading backend {id}")))
    }

    /// Per-VIP counters, summed over CPUs.
    pub fn vip_counters(&self, id: u32) -> Result<VipCounters, DatapathError> {
        check("VIP id", id.into(), self.limits.max_vips.into())?;
        let per_cpu = self.vip_stats.get(&id, 0).map_err(map_err(
            MAP_VIP_STATS,
            format!("reading VIP {id}'s counters"),
        ))?;
        Ok(per_cpu
            .iter()
            .fold(VipCounters::default(), |a, c| VipCounters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                new_flows: a.new_flows + c.new_flows,
                dropped: a.dropped + c.dropped,
            }))
    }

    /// Per-backend counters, summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<BackendCounters, DatapathError> {
        check("backend id", id.into(), self.limits.max_backends.into())?;
        let per_cpu = self.backend_stats.get(&id, 0).map_err(map_err(
            MAP_BACKEND_STATS,
            format!("reading backend {id}'s counters"),
        ))?;
        Ok(per_cpu
            .iter()
            .fold(BackendCounters::default(), |a, c| BackendCounters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                new_flows: a.new_flows + c.new_flows,
            }))
    }

    /// Packets per reason, summed over CPUs, in [`Reason::ALL`] order.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, DatapathError> {
        reason_counts(&self.reasons)
    }

    /// Flows in the connection table: its non-empty entries, from the datapath's count
    /// of the entries it filled (one per-CPU counter read, however big the table), not
    /// from the table itself. Entries are not removed when a flow ends, only replaced,
    /// so this is the flows seen recently rather than the connections open now.
    pub fn conn_count(&self) -> Result<u64, DatapathError> {
        let n = self.conn_fills_sum()? as i64 + self.conn_base;
        Ok(n.clamp(0, self.limits.conn_capacity_i64()) as u64)
    }

    /// Flows in the connection table, counted by reading every set (through the memory
    /// mapping: tens of milliseconds for a million flows). Done once at adoption; tests
    /// and the benchmark hold [`Datapath::conn_count`] against it.
    pub fn conn_count_by_walk(&self) -> Result<u64, DatapathError> {
        let mut n = 0;
        for i in 0..self.conn_sets {
            n += self.conn_set(i)?.len() as u64;
        }
        Ok(n)
    }

    /// The datapath's count of filled entries, summed over CPUs.
    fn conn_fills_sum(&self) -> Result<u64> {
        let per_cpu = self.conn_fills.get(&0, 0).map_err(map_err(
            MAP_CONN_FILLS,
            "reading the count of connection-table entries",
        ))?;
        Ok(per_cpu.iter().fold(0u64, |a, c| a.wrapping_add(*c)))
    }

    /// The connection-table entry of a flow, if its entry checks out (whether its backend
    /// is still usable is for the caller to judge, as the datapath does).
    pub fn lookup_conn(&self, key: &FlowKey) -> Result<Option<ConnState>, DatapathError> {
        let (set, h) = self.conn_slot(key);
        Ok(self.conn_set(set)?.find(key, h).map(|(_, c)| c))
    }

    /// Writes a connection-table entry (tests and state migration), in the set and way
    /// the datapath would have chosen: the set is read, updated with the shared
    /// [`FlowSet::insert`] and written back whole.
    pub fn insert_conn(&mut self, key: &FlowKey, c: &ConnState) -> Result<(), DatapathError> {
        let (set, h) = self.conn_slot(key);
        let mut s = self.conn_set(set)?;
        let (_, filled) = s.place(key, h, c);
        self.conns
            .set(set, s, 0)
            .map_err(map_err(MAP_CONNS, format!("writing set {set}")))?;
        if filled {
            self.conn_base += 1;
        }
        Ok(())
    }

    /// The set of `key` and its hash, with this table's seed and size.
    fn conn_slot(&self, key: &FlowKey) -> (u32, u64) {
        let h = flow_table_hash(key, self.flow_seed);
        (flow_set_index(h, self.conn_sets - 1), h)
    }

    /// Set `i` of the connection table, through the mapping when there is one.
    fn conn_set(&self, i: u32) -> Result<FlowSet> {
        match &self.conns_mmap {
            Some(m) => Ok(m.get(i)),
            None => self
                .conns
                .get(&i, 0)
                .map_err(map_err(MAP_CONNS, format!("reading set {i}"))),
        }
    }
}

/// Writes `table` at entry `base`, only where it differs from what is there: compared in
/// place through the mapping, or against `shadow` without one (`None`: unknown, every
/// entry is written; it is `None` again if a write fails part way). Returns the writes.
fn write_table(
    mmap: &mut Option<mmap::MappedArray<MaglevElem>>,
    map: &mut Array<MapData, MaglevElem>,
    shadow: &mut Option<Vec<u32>>,
    base: u32,
    table: &[u32],
) -> Result<u32> {
    let mut writes = 0u32;
    if mmap.is_some() {
        // The mapping is the map: no shadow is kept (one would hold both tables of every
        // VIP in vipd's memory).
        for (i, want) in table.iter().enumerate() {
            let idx = base + i as u32;
            if maglev_get(mmap, map, idx)? != *want {
                maglev_set(mmap, map, idx, *want)?;
                writes += 1;
            }
        }
        return Ok(writes);
    }
    let mut held = shadow
        .take()
        .filter(|s| s.len() == table.len())
        .unwrap_or_else(|| vec![u32::MAX; table.len()]);
    for (i, want) in table.iter().enumerate() {
        if held[i] != *want {
            maglev_set(&mut None, map, base + i as u32, *want)?;
            held[i] = *want;
            writes += 1;
        }
    }
    *shadow = Some(held);
    Ok(writes)
}

/// Maglev entry `idx` (a backend id), through the mapping when there is one.
fn maglev_get(
    mmap: &Option<mmap::MappedArray<MaglevElem>>,
    map: &Array<MapData, MaglevElem>,
    idx: u32,
) -> Result<u32> {
    let (elem, lane) = maglev_lane(idx);
    let e = match mmap {
        Some(m) => m.get(elem),
        None => map
            .get(&elem, 0)
            .map_err(map_err(MAP_MAGLEV, format!("reading entry {idx}")))?,
    };
    Ok(u32::from(e[lane]))
}

/// Sets Maglev entry `idx` to backend `id` (below [`MAX_BACKEND_IDS`]). The element's
/// other entries are written back as they were: vipd is the only writer, and a reader
/// sees each entry old or new.
fn maglev_set(
    mmap: &mut Option<mmap::MappedArray<MaglevElem>>,
    map: &mut Array<MapData, MaglevElem>,
    idx: u32,
    id: u32,
) -> Result<()> {
    let (elem, lane) = maglev_lane(idx);
    let id = u16::try_from(id).map_err(|_| DatapathError::OutOfRange {
        what: "backend id in the Maglev table",
        value: id.into(),
        limit: MAX_BACKEND_IDS.into(),
    })?;
    match mmap {
        Some(m) => {
            let mut e = m.get(elem);
            e[lane] = id;
            m.set(elem, e);
        }
        None => {
            let mut e = map
                .get(&elem, 0)
                .map_err(map_err(MAP_MAGLEV, format!("reading entry {idx}")))?;
            e[lane] = id;
            map.set(elem, e, 0)
                .map_err(map_err(MAP_MAGLEV, format!("writing entry {idx}")))?;
        }
    }
    Ok(())
}

/// `cfg` without the fields the datapath fills in itself.
fn without_own_fields(cfg: &GlobalConfig) -> GlobalConfig {
    GlobalConfig {
        flags: cfg.flags & !CONFIG_F_HAS_ALL_PORTS_VIPS,
        flow_sets_mask: 0,
        flow_seed: 0,
        vip_slots_mask: 0,
        ..*cfg
    }
}

/// An address marker key (port 0, protocol 0), as opposed to a VIP.
fn is_marker(k: &VipKey) -> bool {
    k.port_be == 0 && k.proto == 0
}

/// An all-ports VIP key (port 0), as opposed to an address marker (proto 0 too).
fn is_all_ports(k: &VipKey) -> bool {
    k.port_be == 0 && k.proto != 0
}

pub(crate) fn reason_counts(
    reasons: &PerCpuArray<MapData, u64>,
) -> Result<Vec<(Reason, u64)>, DatapathError> {
    Reason::ALL
        .iter()
        .map(|r| {
            let i = *r as u32;
            reasons
                .get(&i, 0)
                .map(|v| (*r, v.iter().sum()))
                .map_err(map_err(MAP_REASONS, format!("reading reason {}", r.name())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_move_to_the_owner_task() {
        fn send<T: Send>() {}
        send::<Datapath>();
        send::<decap::Decap>();
    }

    #[test]
    fn default_limits_memory_is_dominated_by_maglev_and_conns() {
        let l = Limits::default();
        // Four 2-byte entries per 8-byte element.
        // Room for 257 VIPs' two tables of 65,537 (rounded to 65,540) entries.
        let maglev = (257 * 2 * 65540u64).div_ceil(4) * 8;
        // 2^18 sets.
        let conns = 262_144 * size_of::<FlowSet>() as u64;
        let total = l.approx_bytes(2);
        assert!(
            total > maglev + conns && total < maglev + conns + 2_000_000,
            "{total}"
        );
        assert_eq!(l.conn_capacity(), 1 << 20);
    }

    #[test]
    fn an_adopted_table_keeps_its_seed_only_if_the_settings_describe_it() {
        let pinned = GlobalConfig {
            flow_sets_mask: 1023,
            flow_seed: 0xdead_beef,
            ..GlobalConfig::default()
        };
        assert_eq!(adopted_seed(&pinned, 1024), Some(0xdead_beef));
        // Settings never written for this table (zero mask, a bigger table): a new seed.
        assert_eq!(adopted_seed(&GlobalConfig::default(), 1024), None);
        assert_eq!(adopted_seed(&pinned, 2048), None);
        // A one-set table has mask 0: its seed is kept.
        assert_eq!(
            adopted_seed(
                &GlobalConfig {
                    flow_seed: 7,
                    ..GlobalConfig::default()
                },
                1
            ),
            Some(7)
        );
    }

    #[test]
    fn the_datapaths_own_fields_are_not_taken_from_the_configuration() {
        let cfg = GlobalConfig {
            flags: CONFIG_F_HAS_ALL_PORTS_VIPS | vip_common::CONFIG_F_ICMP_TOO_BIG,
            mtu: 1500,
            flow_sets_mask: 3,
            flow_seed: 9,
            vip_slots_mask: 1023,
            ..GlobalConfig::default()
        };
        assert_eq!(
            without_own_fields(&cfg),
            GlobalConfig {
                flags: vip_common::CONFIG_F_ICMP_TOO_BIG,
                mtu: 1500,
                ..GlobalConfig::default()
            }
        );
    }

    #[test]
    fn a_random_seed_can_be_read() {
        // Two draws of 32 random bits are equal once in 2^32.
        assert_ne!(random_seed().unwrap(), random_seed().unwrap());
    }
}
