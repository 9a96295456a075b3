//! Namespace labs: real traffic through vip in network namespaces built with
//! `vip_tests::lab`, one module per scenario: the full topology (clients, a router, LB
//! nodes running `vipd`, backends), or fewer namespaces where that is all a test needs
//! (`vipd_lifecycle`, `decap_attach`, `state_hardening`, `daemon_hardening`).
//!
//! Each lab takes [`vip_tests::lab::serial`] first: a lab is heavy on a small machine
//! and its timings (health checks, drains, connection rates) hold only when it runs
//! alone, so libtest's threads run them one at a time. Names could not collide anyway:
//! every namespace, vipd instance (and so its pin directory) and scratch directory is
//! named from `lab::netns::unique_prefix` (the process id and a per-process counter),
//! and interface names only have to be unique inside those namespaces.

mod bad_traffic;
mod bgp;
mod daemon_hardening;
mod decap_attach;
mod drain;
mod failover;
mod flood;
mod health;
mod live_trace;
mod nftables;
mod restart;
mod scaleout;
mod spread;
mod state_hardening;
mod stickiness;
mod systemd_unit;
mod vipd_lifecycle;
