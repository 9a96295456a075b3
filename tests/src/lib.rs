//! The privileged test harness of vip: packet fixtures run through `BPF_PROG_TEST_RUN`
//! on a loaded (not attached) program, and (in `lab`) network-namespace labs.

pub mod bench;
pub mod differential;
pub mod fixture;
pub mod lab;
pub mod model;
pub mod packet;
pub mod privileged;
