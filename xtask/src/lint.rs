//! `cargo xtask lint`: the checks CI runs before the tests (`cargo xtask test` runs this
//! first). Each step prints the command it runs; all steps run, and the lint then fails
//! naming every step that failed and how to fix it.
//!
//! 1. rustfmt: `cargo fmt --all --check` (every crate, the eBPF one included).
//! 2. import cycles: no cycle between sibling modules of any crate, and vip-user's role
//!    folders layered ([`cycles`] says how and at which granularity).
//! 3. clippy on the host crates: `cargo clippy --workspace --exclude vip-ebpf
//!    --all-targets --locked -- -D warnings` (after building the eBPF objects, which
//!    vip-user and vip-tests embed).
//! 4. clippy on the eBPF crate for `bpfel-unknown-none`, with the toolchain, environment
//!    and flags of its build ([`build::cargo_ebpf`]). With Debian's compiler that is
//!    Debian's clippy (`rust-web-clippy`, installed by setup): rustup's clippy belongs to
//!    other compilers, which cannot build Debian's `core` source.
//! 5. rustdoc: `RUSTDOCFLAGS='-D warnings' cargo doc --workspace --exclude vip-ebpf
//!    --no-deps --locked`, and the same for the eBPF crate's BPF build (as in 4).
//! 6. unused dependencies: both clippy runs also pass `--force-warn
//!    unused_crate_dependencies`, and [`unused_deps`] judges each dependency over all the
//!    compilations of its package (the lint alone misfires on targets that use only some
//!    dependencies).

mod cycles;
mod unused_deps;

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{build, workspace_root};

/// The layers of vip-user's role folders, lowest first: a module may use its own layer
/// and those below it. See [`cycles::layering`].
const LAYERS: &[(&str, &[&[&str]])] = &[(
    "vip-user",
    &[
        &["config", "protocol", "tracematch"],
        &["datapath"],
        &["control"],
        &["daemon", "cli"],
    ],
)];

/// The arguments both clippy runs end with.
/// (`--keep-going`: one crate's errors do not hide the other crates' findings.)
const CLIPPY_ARGS: &[&str] = &[
    "--keep-going",
    "--message-format=json",
    "--",
    "-D",
    "warnings",
    "--force-warn",
    "unused_crate_dependencies",
];

/// A workspace package, from `cargo metadata`.
#[derive(Debug)]
struct Member {
    name: String,
    manifest: String,
    /// Manifests of the workspace packages it depends on.
    workspace_deps: Vec<String>,
}

/// Runs every lint step.
pub fn run() -> Result<()> {
    let (members, deps) = metadata()?;
    let mut failed: Vec<String> = Vec::new();
    let mut record = |name: &str, fix: &str, result: Result<()>| {
        if let Err(e) = result {
            eprintln!("lint: {name}: FAILED: {e:#}\nlint: {name}: to fix: {fix}");
            failed.push(format!("{name}: {fix}"));
        } else {
            eprintln!("lint: {name}: ok");
        }
    };

    let mut fmt = Command::new("cargo");
    fmt.current_dir(workspace_root())
        .args(["fmt", "--all", "--check"]);
    record(
        "rustfmt",
        "run `cargo fmt --all`",
        run_step("rustfmt", &mut fmt),
    );

    record(
        "import cycles",
        "make the uses between the named modules go one way: move what both need into \
         the lower one, or into a module below both (rule: xtask/src/lint/cycles.rs)",
        import_cycles(&members),
    );

    eprintln!("lint: building the eBPF objects first (vip-user and vip-tests embed them)");
    build::ebpf()?;

    let mut collector = unused_deps::Collector::default();
    let mut host = build::cargo_user();
    host.args([
        "clippy",
        "--locked",
        "--workspace",
        "--exclude",
        "vip-ebpf",
        "--all-targets",
    ])
    .args(CLIPPY_ARGS);
    let host_result = clippy("clippy (host crates)", &mut host, &mut collector);
    record(
        "clippy (host crates)",
        "fix the errors above (`cargo clippy --workspace --exclude vip-ebpf --all-targets \
         -- -D warnings` shows them; with `--fix --allow-dirty` after `clippy` it applies \
         the mechanical ones); where a lint is wrong, `#[expect(clippy::name, reason = \
         \"why\")]` on the item",
        host_result,
    );

    let mut ebpf = build::cargo_ebpf("clippy");
    ebpf.args(CLIPPY_ARGS);
    let ebpf_result = clippy(
        "clippy (eBPF, bpfel-unknown-none)",
        &mut ebpf,
        &mut collector,
    );
    let mut plain = build::cargo_ebpf("clippy");
    plain.args(["--", "-D", "warnings"]);
    record(
        "clippy (eBPF, bpfel-unknown-none)",
        &format!(
            "fix the errors above (`{}` shows them; with `--fix --allow-dirty` after \
             `clippy` it applies the mechanical ones)",
            shell_line(&plain)
        ),
        ebpf_result,
    );

    let mut doc = build::cargo_user();
    doc.args([
        "doc",
        "--locked",
        "--workspace",
        "--exclude",
        "vip-ebpf",
        "--no-deps",
    ])
    .env("RUSTDOCFLAGS", "-D warnings");
    let rustdoc_fix = "fix the rustdoc warnings above (broken intra-doc links, private \
                       items linked from public docs, unescaped `[` `<`)";
    record(
        "rustdoc (host crates)",
        rustdoc_fix,
        run_step("rustdoc (host crates)", &mut doc),
    );
    let mut ebpf_doc = build::cargo_ebpf("doc");
    ebpf_doc.arg("--no-deps").env("RUSTDOCFLAGS", "-D warnings");
    record(
        "rustdoc (eBPF, bpfel-unknown-none)",
        rustdoc_fix,
        run_step("rustdoc (eBPF, bpfel-unknown-none)", &mut ebpf_doc),
    );

    record(
        "unused dependencies",
        "remove each named dependency from its Cargo.toml (and Cargo.lock follows)",
        unused_dependencies(&members, &deps, &collector),
    );

    if failed.is_empty() {
        eprintln!("lint: all steps passed");
        Ok(())
    } else {
        bail!(
            "lint failed in {} step(s):\n  {}",
            failed.len(),
            failed.join("\n  ")
        )
    }
}

/// Prints the command a step runs.
fn announce(step: &str, cmd: &Command) {
    eprintln!("lint: {step}: {}", shell_line(cmd));
}

/// Prints and runs a step's command; an error says how it ended.
fn run_step(step: &str, cmd: &mut Command) -> Result<()> {
    announce(step, cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", shell_line(cmd)))?;
    if !status.success() {
        bail!("the command exited with {status}");
    }
    Ok(())
}

/// A command as a shell line: the environment it sets (not PATH), the program, the
/// arguments, quoted where needed.
fn shell_line(cmd: &Command) -> String {
    let quote = |s: &str| -> String {
        if s.contains('\x1f') {
            format!(
                "$'{}'",
                s.replace('\\', "\\\\")
                    .replace('\'', "\\'")
                    .replace('\x1f', "\\x1f")
            )
        } else if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-+=./:,@%".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| {
            Some(format!(
                "{}={}",
                k.to_string_lossy(),
                quote(&v?.to_string_lossy())
            ))
        })
        .collect();
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// Runs a clippy command with `--message-format=json`: prints its diagnostics as cargo
/// would (each once, though the lib and its test build both report it), except the forced
/// `unused_crate_dependencies` warnings, which go to `collector` (with cargo's "generated
/// N warnings" lines about them).
fn clippy(step: &str, cmd: &mut Command, collector: &mut unused_deps::Collector) -> Result<()> {
    announce(step, cmd);
    let line = shell_line(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {line}"))?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = thread::spawn(move || {
        let mut out = std::io::stderr();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let forced_count =
                l.starts_with("warning: `") && l.contains(") generated ") && l.contains(" warning");
            if !forced_count {
                let _ = writeln!(out, "{l}");
            }
        }
    });
    let mut printed = HashSet::new();
    for l in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        let Ok(msg) = serde_json::from_str::<Value>(&l) else {
            eprintln!("{l}");
            continue;
        };
        if !collector.take(&msg)
            && msg["reason"] == "compiler-message"
            && let Some(rendered) = msg["message"]["rendered"].as_str()
            && printed.insert(rendered.to_string())
        {
            eprint!("{rendered}");
        }
    }
    err_thread.join().expect("stderr reader");
    let status = child.wait()?;
    if !status.success() {
        bail!("the command exited with {status}");
    }
    Ok(())
}

/// The workspace's packages and their dependencies.
fn metadata() -> Result<(Vec<Member>, Vec<unused_deps::Dep>)> {
    let out = build::cargo_user()
        .args(["metadata", "--format-version", "1", "--locked"])
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", out.status);
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    let empty = Vec::new();
    let ids: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = meta["packages"].as_array().unwrap_or(&empty);
    let manifest_of = |id: &str| {
        packages
            .iter()
            .find(|p| p["id"] == id)
            .and_then(|p| Some((p["name"].as_str()?, p["manifest_path"].as_str()?)))
    };
    let mut members = Vec::new();
    let mut deps = Vec::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap_or(&empty) {
        let Some(id) = node["id"].as_str().filter(|id| ids.contains(id)) else {
            continue;
        };
        let (name, manifest) = manifest_of(id).context("a workspace member without a manifest")?;
        let workspace_deps = node["deps"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|d| d["pkg"].as_str())
            .filter(|pkg| ids.contains(pkg))
            .filter_map(|pkg| Some(manifest_of(pkg)?.1.to_string()))
            .collect();
        members.push(Member {
            name: name.to_string(),
            manifest: manifest.to_string(),
            workspace_deps,
        });
        for dep in node["deps"].as_array().unwrap_or(&empty) {
            let kinds = dep["dep_kinds"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|k| match k["kind"].as_str() {
                    Some("dev") => unused_deps::Kind::Dev,
                    Some("build") => unused_deps::Kind::Build,
                    _ => unused_deps::Kind::Normal,
                })
                .collect();
            deps.push(unused_deps::Dep {
                manifest: manifest.to_string(),
                name: dep["name"].as_str().unwrap_or_default().to_string(),
                kinds,
            });
        }
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((members, deps))
}

/// Step 2: cycles and layering in every workspace crate.
fn import_cycles(members: &[Member]) -> Result<()> {
    let root = workspace_root();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    eprintln!(
        "lint: import cycles: reading the module trees of {} (in-process: \
         xtask/src/lint/cycles.rs)",
        names.join(", ")
    );
    let mut problems = Vec::new();
    for member in members {
        let dir = Path::new(&member.manifest)
            .parent()
            .context("a manifest without a directory")?;
        let shown = dir.strip_prefix(&root).unwrap_or(dir).join("src");
        let files = cycles::read_crate(&dir.join("src"), &format!("{}/", shown.display()))?;
        let graph = cycles::graph(&files);
        for cycle in cycles::cycles(&graph) {
            problems.push(format!("{}: {cycle}", member.name));
        }
        for (_, layers) in LAYERS.iter().filter(|(name, _)| *name == member.name) {
            for problem in cycles::layering(&graph, layers) {
                problems.push(format!("{}: {problem}", member.name));
            }
        }
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if !problems.is_empty() {
        bail!(
            "{} import cycle(s) or layering violation(s)",
            problems.len()
        );
    }
    Ok(())
}

/// Step 6: dependencies that no compilation of their package uses.
fn unused_dependencies(
    members: &[Member],
    deps: &[unused_deps::Dep],
    collector: &unused_deps::Collector,
) -> Result<()> {
    eprintln!(
        "lint: unused dependencies: judged from the `unused_crate_dependencies` reports of \
         both clippy runs above, over every compilation of each package \
         (xtask/src/lint/unused_deps.rs)"
    );
    let root = workspace_root();
    let depends_on = members
        .iter()
        .map(|m| (m.manifest.clone(), m.workspace_deps.clone()))
        .collect();
    let not_judged = collector.not_judged(&depends_on);
    let skipped: Vec<&str> = members
        .iter()
        .filter(|m| not_judged.contains(&m.manifest))
        .map(|m| m.name.as_str())
        .collect();
    if !skipped.is_empty() {
        eprintln!(
            "lint: unused dependencies: not judged, as they or a workspace crate they depend \
             on did not pass clippy (targets were skipped): {}",
            skipped.join(", ")
        );
    }
    let unused = collector.unused(deps, &not_judged);
    for dep in &unused {
        let member = members.iter().find(|m| m.manifest == dep.manifest);
        let manifest = PathBuf::from(&dep.manifest);
        eprintln!(
            "{}: dependency `{}` is used by none of its targets ({})",
            member.map_or("?", |m| m.name.as_str()),
            dep.name,
            manifest.strip_prefix(&root).unwrap_or(&manifest).display()
        );
    }
    if !unused.is_empty() {
        bail!("{} unused dependenc(ies)", unused.len());
    }
    Ok(())
}
