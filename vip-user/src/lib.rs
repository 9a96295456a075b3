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
//! - [`manual`]: shell completions and man pages from the clap definitions.
//!
//! A module uses only the roles listed above its own (`cli` and `daemon` are peers and
//! never use each other); `cargo xtask lint` checks that there are no import cycles.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod manual;
pub mod protocol;
pub mod tracematch;

/// An error and its causes as the binaries print it, `what failed: because: because`.
/// Many messages already name their cause (`reading X: permission denied`); a cause whose
/// text is already in the line is not repeated.
#[derive(Debug)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
                line += ": ";
                line += &text;
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}

/// The number of cases of the property tests: 2,000 a property (what `cargo xtask test`
/// runs), or `PROPTEST_CASES` for a longer hunt.
#[cfg(test)]
mod property_cases {
    use proptest::test_runner::Config;

    pub fn cases() -> Config {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        Config::with_cases(cases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("loading the datapath")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("creating map VIPS: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn a_report_names_every_cause_once() {
        let e = Outer(Middle(std::io::Error::other("permission denied")));
        assert_eq!(
            Report(&e).to_string(),
            "loading the datapath: creating map VIPS: permission denied"
        );
    }
}
