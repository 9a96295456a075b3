//! Tests that need root (to load BPF programs or create namespaces) call
//! [`require_root`] first. Under `CI=true` they never skip; elsewhere they skip with a
//! printed reason.

use std::io::Write;

/// Marker `cargo xtask test` counts as a skipped test. Keep in sync with xtask.
pub const SKIP_MARKER: &str = "vip-test-skipped:";

/// True when the test may go on. Outside CI and without root it prints why it skips and
/// returns false; under `CI=true` without root it panics.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test} needs root, and privileged tests may not skip under CI=true"
    );
    // Written to the real stderr, past libtest's output capture, so it is always seen.
    let _ = writeln!(
        std::io::stderr().lock(),
        "{SKIP_MARKER} {test}: needs root (CAP_BPF, CAP_NET_ADMIN); run `sudo cargo xtask test`"
    );
    false
}
