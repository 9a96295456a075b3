//! vipd's process: [`lifecycle`] (load or adopt the pinned datapath, attach, serve; take
//! it all down), the owner's [`event_loop`] (API requests, health transitions, SIGHUP and
//! next-hop results arrive as messages, so one task writes the maps), the API server
//! ([`api`]), [`health`] checks, [`metrics`] and backend [`nexthop`] resolution; what both
//! listeners share (a connection cap, back-off when out of descriptors) in [`listener`]; the
//! VIP routes a routing daemon announces in [`announce`]; HA groups ([`ha`], announced by
//! [`garp`]).

pub mod announce;
pub mod api;
pub mod event_loop;
pub mod garp;
pub mod ha;
pub mod health;
pub mod lifecycle;
pub mod listener;
pub mod live_trace;
pub mod metrics;
pub mod nexthop;

#[cfg(test)]
mod dashboard_tests;
