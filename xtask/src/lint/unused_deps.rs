//! Unused dependencies, judged over all of a package's targets.
//!
//! rustc's `unused_crate_dependencies` lint sees one compilation at a time, and cargo hands
//! every target of a package all of its `[dependencies]`: a binary or a test that uses only
//! some of them "misfires" on the rest, though the library uses them. Turning the lint on
//! in Cargo.toml would need a `use dep as _;` line in every such target. Instead, both
//! clippy runs of `cargo xtask lint` force the lint to a warning (`--force-warn
//! unused_crate_dependencies`: not an error under `-D warnings`, and not silenced by an
//! `allow` in the code), and this module reads cargo's JSON messages:
//! - each `compiler-artifact` message is one compilation (also when it was fresh: cargo
//!   then replays the cached diagnostics), so with `--all-targets` the lib and each bin
//!   count twice, once built as a test;
//! - each `unused_crate_dependencies` message says which compilation found which extern
//!   crate unused.
//!
//! A dependency (from `cargo metadata`, with its extern name and kinds) is unused when
//! *every* compilation that receives it reports it: for a `[dependencies]` entry every
//! compilation of a lib, bin, test, bench or example; for a `[dev-dependencies]` entry the
//! test, bench and example compilations; for a `[build-dependencies]` entry the build
//! script. A dependency some target uses passes (one only tests use passes too: that is
//! a misplaced dependency, not an unused one); one no compilation receives (an optional
//! dependency whose feature is off) is not judged. `use dep as _;` is then needed only
//! for a dependency that no code names but that must be linked.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// How a package depends on a crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Dev,
    Build,
}

/// A dependency of a workspace package, from `cargo metadata`.
#[derive(Debug, Clone)]
pub struct Dep {
    /// The depending package's manifest path.
    pub manifest: String,
    /// The extern crate name (`serde_json`).
    pub name: String,
    pub kinds: Vec<Kind>,
}

/// One compilation of a target.
#[derive(Debug, Clone)]
struct Unit {
    manifest: String,
    /// `lib:vip_user`, `bin:vipd`, `custom-build:build-script-build`, ...
    target: String,
    build_script: bool,
    /// Receives dev-dependencies: built as a test, or a test/bench/example target.
    dev: bool,
}

/// What the JSON messages of one or more cargo runs said.
#[derive(Debug, Default)]
pub struct Collector {
    units: Vec<Unit>,
    /// (manifest, target, extern crate) for each report.
    reports: Vec<(String, String, String)>,
    /// Packages with a compilation that failed (an error-level diagnostic).
    failed: BTreeSet<String>,
}

impl Collector {
    /// Takes one JSON message. Returns true when it was an `unused_crate_dependencies`
    /// report (the caller does not print those: alone they misfire).
    pub fn take(&mut self, msg: &Value) -> bool {
        let manifest = msg["manifest_path"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kinds: Vec<&str> = msg["target"]["kind"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let target = format!(
            "{}:{}",
            kinds.join(","),
            msg["target"]["name"].as_str().unwrap_or_default()
        );
        match msg["reason"].as_str() {
            Some("compiler-artifact") => {
                let build_script = kinds.contains(&"custom-build");
                let dev = msg["profile"]["test"].as_bool() == Some(true)
                    || kinds
                        .iter()
                        .any(|k| matches!(*k, "test" | "bench" | "example"));
                self.units.push(Unit {
                    manifest,
                    target,
                    build_script,
                    dev,
                });
                false
            }
            Some("compiler-message") => {
                if msg["message"]["level"] == "error" {
                    self.failed.insert(manifest.clone());
                }
                let Some(krate) = unused_crate(&msg["message"]) else {
                    return false;
                };
                self.reports.push((manifest, target, krate));
                true
            }
            _ => false,
        }
    }

    /// Packages that cannot be judged: one of their compilations failed, or one of a
    /// workspace package they depend on (`depends_on`: manifest -> manifests of its
    /// workspace dependencies), so cargo skipped the targets that needed it and their
    /// reports are missing.
    pub fn not_judged(&self, depends_on: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
        let mut out = self.failed.clone();
        loop {
            let before = out.len();
            for (package, deps) in depends_on {
                if deps.iter().any(|d| out.contains(d)) {
                    out.insert(package.clone());
                }
            }
            if out.len() == before {
                return out;
            }
        }
    }

    /// The dependencies that every compilation receiving them reported unused, in the
    /// packages that can be judged.
    pub fn unused<'d>(&self, deps: &'d [Dep], not_judged: &BTreeSet<String>) -> Vec<&'d Dep> {
        deps.iter()
            .filter(|dep| !not_judged.contains(&dep.manifest))
            .filter(|dep| {
                let receives = |u: &&Unit| {
                    u.manifest == dep.manifest
                        && dep.kinds.iter().any(|k| match k {
                            Kind::Normal => !u.build_script,
                            Kind::Dev => u.dev,
                            Kind::Build => u.build_script,
                        })
                };
                let mut needed: BTreeMap<&str, usize> = BTreeMap::new();
                for u in self.units.iter().filter(receives) {
                    *needed.entry(&u.target).or_default() += 1;
                }
                let mut reported: BTreeMap<&str, usize> = BTreeMap::new();
                for (m, t, k) in &self.reports {
                    if *m == dep.manifest && *k == dep.name {
                        *reported.entry(t).or_default() += 1;
                    }
                }
                !needed.is_empty()
                    && needed
                        .iter()
                        .all(|(t, n)| reported.get(t).copied().unwrap_or(0) >= *n)
            })
            .collect()
    }
}

/// The crate named by an `unused_crate_dependencies` diagnostic ("extern crate `anyhow`
/// is unused in crate `vip_user`").
fn unused_crate(message: &Value) -> Option<String> {
    let is_lint = message["code"]["code"].as_str() == Some("unused_crate_dependencies");
    let text = message["message"].as_str()?;
    let looks_like_it = text.starts_with("extern crate `") && text.contains("` is unused in crate");
    if !(is_lint || looks_like_it) {
        return None;
    }
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn artifact(kind: &str, name: &str, test: bool) -> Value {
        json!({"reason": "compiler-artifact", "manifest_path": "/p/Cargo.toml",
               "target": {"kind": [kind], "name": name}, "profile": {"test": test}})
    }

    fn unused_report(kind: &str, name: &str, krate: &str) -> Value {
        json!({"reason": "compiler-message", "manifest_path": "/p/Cargo.toml",
               "target": {"kind": [kind], "name": name},
               "message": {"code": {"code": "unused_crate_dependencies"},
                           "message": format!("extern crate `{krate}` is unused in crate `{name}`")}})
    }

    fn dep(name: &str, kinds: &[Kind]) -> Dep {
        Dep {
            manifest: "/p/Cargo.toml".into(),
            name: name.into(),
            kinds: kinds.to_vec(),
        }
    }

    fn judge(messages: &[Value], deps: &[Dep]) -> Vec<String> {
        let mut c = Collector::default();
        for m in messages {
            c.take(m);
        }
        c.unused(deps, &BTreeSet::new())
            .iter()
            .map(|d| d.name.clone())
            .collect()
    }

    #[test]
    fn a_dependency_one_target_uses_is_used() {
        // The lib uses serde; the bin (built twice with --all-targets) does not: a misfire.
        let msgs = [
            artifact("lib", "p", false),
            artifact("lib", "p", true),
            artifact("bin", "tool", false),
            artifact("bin", "tool", true),
            unused_report("bin", "tool", "serde"),
            unused_report("bin", "tool", "serde"),
            unused_report("lib", "p", "anyhow"),
            unused_report("lib", "p", "anyhow"),
            unused_report("bin", "tool", "anyhow"),
            unused_report("bin", "tool", "anyhow"),
        ];
        let deps = [
            dep("serde", &[Kind::Normal]),
            dep("anyhow", &[Kind::Normal]),
        ];
        assert_eq!(judge(&msgs, &deps), ["anyhow"]);
    }

    #[test]
    fn counts_each_compilation_of_a_target() {
        // Unused by the lib but used by its #[cfg(test)] code: one of two lib compilations.
        let msgs = [
            artifact("lib", "p", false),
            artifact("lib", "p", true),
            unused_report("lib", "p", "libc"),
        ];
        assert!(judge(&msgs, &[dep("libc", &[Kind::Normal])]).is_empty());
    }

    #[test]
    fn dev_and_build_dependencies_have_their_own_receivers() {
        let msgs = [
            artifact("lib", "p", false),
            artifact("lib", "p", true),
            artifact("test", "it", true),
            artifact("custom-build", "build-script-build", false),
            // proptest: unused by the lib test, used by the integration test.
            unused_report("lib", "p", "proptest"),
            // tempfile: unused by both test compilations.
            unused_report("lib", "p", "tempfile"),
            unused_report("test", "it", "tempfile"),
            unused_report("custom-build", "build-script-build", "cc"),
        ];
        let deps = [
            dep("proptest", &[Kind::Dev]),
            dep("tempfile", &[Kind::Dev]),
            dep("cc", &[Kind::Build]),
        ];
        assert_eq!(judge(&msgs, &deps), ["tempfile", "cc"]);
    }

    #[test]
    fn not_judged_without_a_receiving_compilation() {
        let msgs = [artifact("custom-build", "build-script-build", false)];
        assert!(judge(&msgs, &[dep("aya", &[Kind::Normal])]).is_empty());
    }

    #[test]
    fn failed_packages_and_their_dependents_are_not_judged() {
        let mut c = Collector::default();
        c.take(
            &json!({"reason": "compiler-message", "manifest_path": "/a/Cargo.toml",
            "target": {"kind": ["lib"], "name": "a"},
            "message": {"level": "error", "message": "this returns a `Result<_, ()>`"}}),
        );
        let depends_on = BTreeMap::from([
            ("/a/Cargo.toml".to_string(), vec![]),
            (
                "/b/Cargo.toml".to_string(),
                vec!["/a/Cargo.toml".to_string()],
            ),
            (
                "/c/Cargo.toml".to_string(),
                vec!["/b/Cargo.toml".to_string()],
            ),
            ("/d/Cargo.toml".to_string(), vec![]),
        ]);
        let skipped: Vec<String> = c.not_judged(&depends_on).into_iter().collect();
        assert_eq!(skipped, ["/a/Cargo.toml", "/b/Cargo.toml", "/c/Cargo.toml"]);
        let msgs = [
            artifact("lib", "p", false),
            unused_report("lib", "p", "anyhow"),
        ];
        let mut c = Collector::default();
        for m in &msgs {
            c.take(m);
        }
        let deps = [dep("anyhow", &[Kind::Normal])];
        let skip = BTreeSet::from(["/p/Cargo.toml".to_string()]);
        assert!(c.unused(&deps, &skip).is_empty());
        assert_eq!(c.unused(&deps, &BTreeSet::new()).len(), 1);
    }

    #[test]
    fn other_diagnostics_are_not_taken() {
        let mut c = Collector::default();
        let other = json!({"reason": "compiler-message", "manifest_path": "/p/Cargo.toml",
            "target": {"kind": ["lib"], "name": "p"},
            "message": {"code": {"code": "clippy::needless_borrow"}, "message": "needless"}});
        assert!(!c.take(&other));
        assert!(c.take(&unused_report("lib", "p", "x")));
    }
}
