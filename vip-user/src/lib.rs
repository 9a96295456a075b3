//! The user-space side of vip: everything `vipd` and `vipctl` share, grouped by role.
//!
//! - [`config`]: the `vipd.toml` file, parsed and validated whole.
//! - [`protocol`]: the API's wire types, shared by vipd's server and `vipctl`.
//! - [`datapath`]: handles on the kernel objects (programs, maps, links); the only code
//!   that calls `bpf()`.
//! - [`control`]: from desired state to datapath writes: the owner, reconcile, Maglev,
//!   the state file.
//! - [`daemon`]: vipd's process: lifecycle, the owner's event loop, the API server,
//!   health checks, metrics, next hops.
//! - [`cli`]: `vipctl`: command line, rendering, trace.
//!
//! A module uses only the roles listed above its own (`cli` and `daemon` are peers and
//! never use each other); `cargo xtask lint` checks that there are no import cycles.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod protocol;
