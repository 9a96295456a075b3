//! The API's wire types: one JSON [`Request`] per line from `vipctl` (or any client) to
//! vipd's Unix socket, one JSON [`Response`] per line back. Shared by vipd's server and
//! `vipctl`, so neither imports the other's internals.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::{Acl, AdminState, BackendSpec, HealthCheck, Protocol, VipId, VipSpec};

/// A request from vipctl.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// A runtime change.
    Change {
        /// The change.
        change: Change,
    },
    /// Make the VIPs of this config text the running set (`dry_run`: only show the diff).
    Apply {
        /// Config file text (only its `[[vip]]` sections are used).
        text: String,
        /// Name of the file, for error messages.
        origin: String,
        /// Only compute the difference.
        dry_run: bool,
    },
    /// Everything: VIPs, backends, counters.
    Status,
    /// Which backend owns a flow.
    Flow {
        /// Protocol.
        proto: Protocol,
        /// Client address.
        src: SocketAddr,
        /// VIP address.
        dst: SocketAddr,
    },
    /// Re-read the config file (as SIGHUP).
    Reload,
    /// Drain (withdraw every VIP route of this node; the datapath keeps forwarding what
    /// still arrives) or undrain; persisted across restarts.
    NodeDrain {
        /// True to drain, false to undrain.
        drained: bool,
    },
    /// Whether each VIP is announced, and why not.
    NodeStatus,
    /// Set an HA group's role on this node (idempotent).
    HaSet {
        /// The `[[group]]` name.
        group: String,
        /// The new role.
        role: HaRole,
    },
    /// Every HA group with its role.
    HaStatus,
    /// Live trace: arm the datapath's trace with `expr` (`crate::tracematch`) and stream
    /// a [`Response::TraceRecord`] per matching packet, then [`Response::TraceEnd`].
    /// One session at a time; it ends after `count` records, after `duration_ms`, when
    /// the client goes away or vipd stops, and the trace is disarmed whichever comes.
    TraceLive {
        /// The match expression.
        expr: String,
        /// Stop after this many records (none: no limit).
        count: Option<u64>,
        /// Stop after this long, in milliseconds (none: no limit).
        duration_ms: Option<u64>,
        /// Frame bytes to copy into each record (0..=`vip_common::TRACE_SNAP_MAX`).
        snap_len: u32,
    },
}

/// One packet's decision, as the live trace reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// 1-based record number in the session.
    pub packet: u64,
    /// Monotonic clock (`CLOCK_MONOTONIC`) when the datapath saw the packet, ns.
    pub ktime_ns: u64,
    /// Interface it arrived on.
    pub ifindex: u32,
    /// XDP verdict name.
    pub verdict: String,
    /// Reason counted for it.
    pub reason: String,
    /// The VIP (`ADDR:PORT/PROTO`), when the packet reached the VIP lookup.
    pub vip: Option<String>,
    /// The backend chosen.
    pub backend: Option<SocketAddr>,
    /// Its id in the datapath.
    pub backend_id: Option<u32>,
    /// How it was found: `connection table`, `maglev` or `none`.
    pub pick: String,
    /// The Maglev slot (within the VIP's table) when `pick` is `maglev`.
    pub maglev_slot: Option<u32>,
    /// Length of the frame on the wire.
    pub frame_len: u32,
    /// Its first bytes (the session's snap length), hex, as received.
    pub frame_hex: String,
}

/// How a live trace session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEnd {
    /// Records sent.
    pub records: u64,
    /// Records the datapath could not queue during the session (ring full).
    pub lost: u64,
    /// Why it ended: `count` or `duration` (a session cut by vipd stopping sends no end).
    pub why: String,
}

/// The role of an HA group on a node (`vip_common::HA_ROLE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum HaRole {
    /// This node answers ARP/NDP for the group's VIPs.
    Active,
    /// Another node does; this one forwards what still reaches it.
    Standby,
    /// The election engine found this node unfit: silent, as standby.
    Fault,
}

impl HaRole {
    /// The value in the `HA_GROUPS` map.
    pub fn to_map(self) -> u32 {
        match self {
            HaRole::Active => vip_common::HA_ROLE_ACTIVE,
            HaRole::Standby => vip_common::HA_ROLE_STANDBY,
            HaRole::Fault => vip_common::HA_ROLE_FAULT,
        }
    }

    /// The role of a map value (unknown values are read as fault: silent).
    pub fn from_map(v: u32) -> Self {
        match v {
            vip_common::HA_ROLE_ACTIVE => HaRole::Active,
            vip_common::HA_ROLE_STANDBY => HaRole::Standby,
            _ => HaRole::Fault,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            HaRole::Active => "active",
            HaRole::Standby => "standby",
            HaRole::Fault => "fault",
        }
    }
}

/// One HA group as `vipctl ha status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HaGroupStatus {
    /// Name.
    pub group: String,
    /// Role on this node.
    pub role: HaRole,
    /// When the role last changed, milliseconds since the Unix epoch (0: never set).
    pub since_unix_ms: u64,
    /// Role changes recorded in the pinned map.
    pub transitions: u32,
    /// Interfaces the group is announced on.
    pub interfaces: Vec<String>,
    /// Addresses of the group's VIPs (each once).
    pub vips: Vec<String>,
    /// VIPs of the group with at least one healthy backend in service.
    pub healthy_vips: u32,
    /// Gratuitous ARPs and unsolicited NAs sent since vipd started.
    pub garps_sent: u64,
}

/// vipd's answer: the result the request calls for, or why there is none.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Every VIP and backend with its counters (for [`Request::Status`]).
    Status(Status),
    /// Which backend owns a flow (for [`Request::Flow`]).
    Flow(FlowAnswer),
    /// What a change, apply or reload did, or for a dry run would do.
    Applied(ApplyResult),
    /// The node's announcement state (for [`Request::NodeStatus`] and
    /// [`Request::NodeDrain`]).
    Node(NodeStatus),
    /// HA groups (for [`Request::HaStatus`], and the group set by [`Request::HaSet`]).
    Ha(Vec<HaGroupStatus>),
    /// A live trace is armed; records follow (for [`Request::TraceLive`]).
    TraceStarted {
        /// The match as vipd understood it.
        expr: String,
    },
    /// One traced packet.
    TraceRecord(LiveRecord),
    /// The live trace is over and disarmed.
    TraceEnd(TraceEnd),
    /// The request was refused or failed, said so the operator can fix it.
    Error(String),
}

impl Response {
    /// A refusal or failure.
    pub fn err(e: impl std::fmt::Display) -> Self {
        Response::Error(e.to_string())
    }

    /// The kind of result, as messages name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Flow(_) => "flow",
            Response::Applied(_) => "applied",
            Response::Node(_) => "node",
            Response::Ha(_) => "ha",
            Response::TraceStarted { .. } => "trace started",
            Response::TraceRecord(_) => "trace record",
            Response::TraceEnd(_) => "trace end",
            Response::Error(_) => "error",
        }
    }
}

/// The result of `apply` / `diff`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Differences, one per line (`+` added, `-` removed, `~` changed).
    pub changes: Vec<String>,
    /// Map writes made (0 for a dry run or no change).
    pub map_writes: u64,
    /// What was done as asked but deserves a second look (a VIP left without backends,
    /// no VIP left at all); `vipctl` prints each as `warning: ...`.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A runtime change from the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Add a VIP (with its backends).
    VipAdd {
        /// The VIP (boxed: a spec is far larger than every other change).
        spec: Box<VipSpec>,
    },
    /// Remove a VIP.
    VipDel {
        /// The VIP.
        vip: VipId,
    },
    /// Add a backend to a VIP.
    BackendAdd {
        /// The VIP.
        vip: VipId,
        /// The backend.
        backend: BackendSpec,
    },
    /// Remove a backend from a VIP.
    BackendDel {
        /// The VIP.
        vip: VipId,
        /// The backend's address.
        addr: SocketAddr,
    },
    /// Replace a VIP's source access list (empty: none). Applies to new flows.
    VipAcl {
        /// The VIP.
        vip: VipId,
        /// The new list.
        acl: Acl,
    },
    /// Change a backend's weight and/or admin state.
    BackendSet {
        /// The VIP.
        vip: VipId,
        /// The backend's address.
        addr: SocketAddr,
        /// New weight.
        weight: Option<u32>,
        /// New admin state.
        state: Option<AdminState>,
    },
}

/// Everything `vipctl list/stats` and the metrics show.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// VIPs.
    pub vips: Vec<VipStatus>,
    /// Connection-table entries in use (flows seen recently).
    pub conns: u64,
    /// Connection-table entries (sets × ways).
    pub conn_capacity: u64,
    /// Packets by reason.
    pub reasons: Vec<(String, u64)>,
    /// Map writes of the last change.
    pub last_change_map_writes: u64,
    /// HA groups (filled by vipd's loop for the metrics; empty in `vipctl stats`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ha: Vec<HaGroupStatus>,
    /// VIPs found in the pinned maps that neither the config file nor the state file
    /// names, kept forwarding as they were found until an operator deletes them.
    #[serde(default)]
    pub unmanaged: Vec<UnmanagedStatus>,
}

/// A VIP vipd found in the pinned maps without knowing it: the state file was lost or
/// moved away after it was added at runtime. vipd keeps it forwarding exactly as it
/// found it (no health checks, no changes), never hands out its slot or backend ids,
/// and removes it on `vipctl vip del` or `vipctl apply -f`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmanagedStatus {
    /// Identity, read from its VIP-map key.
    pub vip: VipId,
    /// Its slot (Maglev region and counter id).
    pub slot: u32,
    /// Its backends, from the backend array.
    pub backends: Vec<UnmanagedBackend>,
}

/// A backend of an unmanaged VIP, as the backend array holds it (the array keeps no
/// port, weight or admin state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmanagedBackend {
    /// Datapath id.
    pub id: u32,
    /// Address.
    pub addr: IpAddr,
    /// Generation of the id.
    pub generation: u32,
    /// State in the datapath.
    pub state: BackendState,
}

/// One VIP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VipStatus {
    /// Identity.
    pub vip: VipId,
    /// Mode.
    pub mode: String,
    /// Hash.
    pub hash: String,
    /// Conntrack on.
    pub conntrack: bool,
    /// M.
    pub table_size: u32,
    /// Health check.
    pub health_check: HealthCheck,
    /// Slot / counter id.
    pub slot: u32,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
    /// Drops.
    pub dropped: u64,
    /// Backends.
    pub backends: Vec<BackendStatus>,
    /// Source access list (empty: none).
    #[serde(default, skip_serializing_if = "Acl::is_empty")]
    pub acl: Acl,
}

/// One backend of a VIP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Address.
    pub addr: SocketAddr,
    /// Datapath id.
    pub id: u32,
    /// Generation of the id.
    pub generation: u32,
    /// Weight.
    pub weight: u32,
    /// Admin state.
    pub admin: AdminState,
    /// Health.
    pub healthy: bool,
    /// The check it gets: the VIP's, with the backend's own keys merged over it.
    pub health_check: HealthCheck,
    /// Datapath state.
    pub state: BackendState,
    /// Maglev slots owned.
    pub slots: u32,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
    /// Health transitions.
    pub health_transitions: u64,
}

/// `vipctl flow`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowAnswer {
    /// The VIP that matched (exact port or all ports).
    pub vip: VipId,
    /// The flow hash.
    pub hash: u32,
    /// Maglev slot (`hash % M`), if the VIP has a table.
    pub slot: Option<u32>,
    /// Backend at that slot.
    pub maglev_backend: Option<SocketAddr>,
    /// Connection-table entry, if any.
    pub conntrack: Option<ConnAnswer>,
    /// The backend the next packet of this flow goes to.
    pub backend: Option<SocketAddr>,
    /// What the VIP's access list says about the client (`None`: the VIP has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
}

/// A connection-table entry as `vipctl flow` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnAnswer {
    /// Backend id.
    pub backend_id: u32,
    /// Generation recorded.
    pub generation: u32,
    /// The backend that id means now.
    pub backend: Option<SocketAddr>,
    /// False if the backend is down or the id was reused (the flow will re-hash).
    pub usable: bool,
}

/// A backend's state as the datapath sees it (admin state, weight and health combined).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Takes new flows and keeps its flows.
    Up,
    /// Keeps its flows, takes no new ones (admin `drain` or weight 0).
    Draining,
    /// Takes nothing: its flows move to other backends (unhealthy or admin `maint`).
    Down,
}

impl BackendState {
    /// The state of a backend-array value's `state` byte (`BACKEND_*`).
    pub fn from_datapath(state: u8) -> Self {
        match state {
            vip_common::BACKEND_UP => BackendState::Up,
            vip_common::BACKEND_DRAINING => BackendState::Draining,
            _ => BackendState::Down,
        }
    }

    /// The name `vipctl` prints and the API sends.
    pub fn name(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Draining => "draining",
            BackendState::Down => "down",
        }
    }
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The node's route announcement: `vipctl node status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The operator drained the node.
    pub drained: bool,
    /// The kernel routing table vipd keeps the VIP routes in.
    pub table: u32,
    /// The route protocol id marking vipd's routes.
    pub protocol: u8,
    /// Every VIP, in the running set's order.
    pub vips: Vec<VipAnnouncement>,
}

/// Whether one VIP is announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipAnnouncement {
    /// The VIP.
    pub vip: VipId,
    /// `announced`, `withheld`, `awaiting_health` (its first health round is not over:
    /// the route is left as found) or `off` (announcing is off for it).
    pub state: String,
    /// Why it is not announced (for `withheld`).
    pub reason: Option<String>,
    /// Whether its host route is in the table now.
    pub route: bool,
}
