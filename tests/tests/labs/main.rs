//! Namespace labs: real traffic through vip in network namespaces built by
//! `vip_tests::lab` (clients, a router, LB nodes running `vipd`, backends), one module
//! per scenario.
//!
//! Each lab takes [`vip_tests::lab::serial`] first: a lab is heavy on a small machine
//! and its timings (health checks, drains, connection rates) hold only when it runs
//! alone, so libtest's threads run them one at a time. Names cannot collide between
//! them anyway: every namespace, interface prefix, vipd instance and directory carries
//! the process id and a per-process counter (`lab::netns::unique_prefix`).

mod bad_traffic;
mod decap_attach;
mod drain;
mod health;
mod nftables;
mod restart;
mod scaleout;
mod spread;
mod stickiness;
mod vipd_lifecycle;
