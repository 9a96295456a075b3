//! The control plane: turns desired state (the running VIP set and health results) into
//! datapath writes. [`owner::Owner`] is the one writer of the maps; [`reconcile`] plans
//! ids and exact map contents and writes only the difference; [`maglev`] builds the
//! tables as a pure function of the backends; [`announce`] plans which VIP routes the node
//! announces; [`state_file`] persists the runtime state.
//! Nothing here touches the kernel directly: it writes through the
//! [`crate::datapath::tables`] traits, so it runs against an in-memory fake in tests.

pub mod announce;
pub mod diff;
pub mod maglev;
pub mod owner;
pub mod reconcile;
pub mod state_file;
