//! `cargo xtask kernels`: the packet fixtures (and the differential test, a module of the
//! same binary) on the kernels users run, each booted in qemu.
//!
//! The host kernel only shows that the programs pass one verifier. Here each kernel is a
//! Debian image (`apt-get download` with an apt state of its own under the cache dir, so
//! the machine's sources and package database are untouched; `dpkg-deb` unpacks the
//! kernel and the one module the fixtures need, `veth`), booted with qemu's software
//! emulation (TCG: the KVM here cannot run stock kernels) and a small initramfs: static
//! busybox, the `fixtures` test binary and `ip` with the shared libraries `ldd` names,
//! and an `/init` that mounts proc, sys, bpffs and debugfs, runs the binary as root with
//! `CI=true` (nothing may skip) and writes its output to the second serial port. Every
//! program is loaded by the guest kernel's own verifier and JIT.
//!
//! Downloads and unpacked kernels stay in `target/kernels/`, so a rerun fetches nothing.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{build, setup, target_dir};

/// Kernels run when none is named: Debian 12's own (6.1) and its backports' (6.12).
pub const DEFAULT_KERNELS: &[&str] = &["6.1", "6.12"];

/// The Debian suites searched for kernels: Debian 12 (6.1) and its backports (6.12), and
/// Debian 11 (5.10), older than any kernel vip supports, to show what refuses there.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
";

/// Package lists older than this are fetched again (a kernel's newest build moves on).
const LISTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Marker `/init` writes after the test binary with its exit status.
const EXIT_MARKER: &str = "vip-kernels-exit:";

/// Default bound on one kernel's boot and run, in seconds (a run takes 2 minutes or so).
pub const DEFAULT_TIMEOUT_SECS: u64 = 900;
/// Default virtual CPUs of a guest.
pub const DEFAULT_CPUS: u32 = 2;
/// Default frames of the differential test in a guest (the host runs 100,000).
pub const DEFAULT_DIFF_PACKETS: u64 = 20_000;

/// Options of `cargo xtask kernels`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kernel series (`6.1`: the newest Debian build of that series) or exact image
    /// package names (`linux-image-6.1.0-57-amd64`).
    pub kernels: Vec<String>,
    /// Bound on one kernel's boot and run; the guest is killed past it.
    pub timeout: Duration,
    /// Virtual CPUs of each guest (libtest runs as many tests at once).
    pub cpus: u32,
    /// Frames of the differential test in each guest (`VIP_DIFF_PACKETS`).
    pub diff_packets: u64,
    /// Arguments for the test binary inside (a name filter, `--skip NAME`, ...).
    pub args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kernels: Vec::new(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            cpus: DEFAULT_CPUS,
            diff_packets: DEFAULT_DIFF_PACKETS,
            args: Vec::new(),
        }
    }
}

/// Totals over the kernels run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Tests passed, over all kernels.
    pub passed: u64,
    /// Tests failed, over all kernels.
    pub failed: u64,
    /// Kernels on which the run failed, timed out or did not finish.
    pub bad: Vec<String>,
}

impl Summary {
    /// Prints the totals; fails when any kernel failed.
    pub fn check(&self) -> Result<()> {
        println!(
            "kernels: {} passed, {} failed (all kernels)",
            self.passed, self.failed
        );
        if !self.bad.is_empty() {
            bail!("the fixtures failed on {}", self.bad.join(", "));
        }
        Ok(())
    }
}

/// What one kernel gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Tests that passed.
    pub passed: Vec<String>,
    /// Tests that failed.
    pub failed: Vec<String>,
    /// Tests libtest ignored (measurements).
    pub ignored: Vec<String>,
    /// The test binary's exit status, if the guest got that far.
    pub exit: Option<i32>,
}

impl Outcome {
    /// True when the binary ran to its end, exited 0 and no test failed.
    pub fn ok(&self) -> bool {
        self.exit == Some(0) && self.failed.is_empty() && !self.passed.is_empty()
    }
}

/// Result of one kernel, for the table.
#[derive(Debug)]
struct Row {
    kernel: String,
    release: String,
    seconds: f64,
    outcome: Outcome,
    timed_out: bool,
    log: PathBuf,
}

/// Runs the fixtures on every kernel asked for and prints a table. Fails only when a
/// kernel could not be run at all; test failures are in the [`Summary`].
pub fn run(opts: &Options) -> Result<Summary> {
    let started = Instant::now();
    let kernels: Vec<String> = if opts.kernels.is_empty() {
        DEFAULT_KERNELS.iter().map(|k| k.to_string()).collect()
    } else {
        opts.kernels.clone()
    };
    let cache = target_dir().join("kernels");
    let apt = Apt::new(&cache.join("apt"))?;
    let mut images = Vec::new();
    for kernel in &kernels {
        images.push(apt.kernel(kernel, &cache)?);
    }
    let busybox = apt.busybox(&cache)?;
    let fixtures = build_fixtures()?;
    let mut rows = Vec::new();
    for image in &images {
        let initramfs = initramfs(&cache, image, &busybox, &fixtures, opts)?;
        let log_dir = cache.join("results");
        fs::create_dir_all(&log_dir)?;
        let log = log_dir.join(format!("{}.log", image.release));
        eprintln!(
            "kernels: booting {} ({}) with qemu TCG, {} CPUs, at most {} s",
            image.release,
            image.package,
            opts.cpus,
            opts.timeout.as_secs()
        );
        let t = Instant::now();
        let (output, timed_out) = boot(image, &initramfs, &log, &cache, opts)?;
        let outcome = parse(&output);
        let row = Row {
            kernel: image.requested.clone(),
            release: image.release.clone(),
            seconds: t.elapsed().as_secs_f64(),
            outcome,
            timed_out,
            log,
        };
        eprintln!(
            "kernels: {}: {} passed, {} failed in {:.0} s (output: {})",
            row.release,
            row.outcome.passed.len(),
            row.outcome.failed.len(),
            row.seconds,
            row.log.display()
        );
        rows.push(row);
    }
    print!("{}", table(&rows));
    println!(
        "kernels: {} kernels in {:.0} s (downloads, build and boots)",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Summary {
        passed: rows.iter().map(|r| r.outcome.passed.len() as u64).sum(),
        failed: rows.iter().map(|r| r.outcome.failed.len() as u64).sum(),
        bad: rows
            .iter()
            .filter(|r| r.timed_out || !r.outcome.ok())
            .map(|r| r.release.clone())
            .collect(),
    })
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from("\n| kernel | image | result | passed | failed | ignored | time |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let result = if r.timed_out {
            "timed out"
        } else if r.outcome.exit.is_none() {
            "did not finish (see the .console)"
        } else if r.outcome.ok() {
            "passed"
        } else {
            "FAILED"
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.0} s |",
            r.kernel,
            r.release,
            result,
            r.outcome.passed.len(),
            r.outcome.failed.len(),
            r.outcome.ignored.len(),
            r.seconds
        );
    }
    for r in rows.iter().filter(|r| !r.outcome.failed.is_empty()) {
        let _ = writeln!(
            s,
            "failed on {}: {} (see {})",
            r.release,
            r.outcome.failed.join(", "),
            r.log.display()
        );
    }
    s
}

/// apt with a state of its own: the machine's sources, lists and dpkg database are left
/// alone, and nothing is installed.
#[derive(Debug)]
struct Apt {
    options: Vec<String>,
}

/// A kernel image, unpacked.
#[derive(Debug)]
struct Image {
    /// What was asked for (`6.1`).
    requested: String,
    /// The image package (`linux-image-6.1.0-57-amd64`).
    package: String,
    /// Its release (`6.1.0-57-amd64`), the name of its module directory.
    release: String,
    /// The bootable kernel.
    vmlinuz: PathBuf,
    /// `veth.ko`, uncompressed.
    veth: PathBuf,
}

impl Apt {
    fn new(dir: &Path) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let sources = dir.join("sources.list");
        let stamp = dir.join("lists-fetched");
        if fs::read_to_string(&sources).ok().as_deref() != Some(SOURCES) {
            fs::write(&sources, SOURCES)?;
            let _ = fs::remove_file(&stamp);
        }
        let lists = dir.join("lists");
        let options = [
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/dev/null".to_string(),
            format!("Dir::State::Lists={}", lists.display()),
            format!("Dir::Cache={}", dir.join("cache").display()),
            "Dir::State::status=/dev/null".to_string(),
            // Downloads land in the cache dir, which apt's sandbox user may not enter.
            "APT::Sandbox::User=root".to_string(),
        ]
        .iter()
        .flat_map(|o| ["-o".to_string(), o.clone()])
        .collect();
        let apt = Apt { options };
        // apt gives the lists the archive's dates, so a stamp of our own tells their age.
        let age = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_none_or(|age| age > LISTS_MAX_AGE) {
            eprintln!("kernels: fetching Debian's package lists");
            let fetched = setup::sh(
                Command::new("apt-get")
                    .args(&apt.options)
                    .args(["-q", "update"]),
            );
            match fetched {
                Ok(()) => fs::write(&stamp, b"")?,
                Err(e) if age.is_some() => {
                    eprintln!("kernels: {e:#}; going on with the lists from before");
                }
                Err(e) => return Err(e.context("no package lists to find the kernels in")),
            }
        }
        Ok(apt)
    }

    fn apt_cache(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("apt-cache")
            .args(&self.options)
            .args(args)
            .output()
            .context("could not start apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `.deb` of `package` in the cache dir, downloaded if it is not there yet.
    fn download(&self, package: &str, debs: &Path) -> Result<PathBuf> {
        let prefix = format!("{package}_");
        let find = || -> Result<Option<PathBuf>> {
            Ok(fs::read_dir(debs)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                }))
        };
        if let Some(deb) = find()? {
            return Ok(deb);
        }
        eprintln!("kernels: downloading {package}");
        setup::sh(
            Command::new("apt-get")
                .args(&self.options)
                .args(["-q", "download", package])
                .current_dir(debs),
        )?;
        find()?.with_context(|| format!("apt-get download {package} left no .deb"))
    }

    /// Resolves `requested` (a series such as `6.12`, or an image package name) to an
    /// image package, downloads and unpacks it.
    fn kernel(&self, requested: &str, cache: &Path) -> Result<Image> {
        let package = if requested.starts_with("linux-image-") {
            requested.to_string()
        } else {
            self.newest_image(requested)?
        };
        let release = package
            .strip_prefix("linux-image-")
            .expect("an image package")
            .to_string();
        let dir = cache.join("images").join(&release);
        let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
        let veth = dir.join("veth.ko");
        if !vmlinuz.is_file() || !veth.is_file() {
            let deb = self.download(&package, &cache.join("apt/debs"))?;
            unpack_kernel(&deb, &dir, &release)?;
        }
        Ok(Image {
            requested: requested.to_string(),
            package,
            release,
            vmlinuz,
            veth,
        })
    }

    /// The image package the newest `linux-image-amd64` of series `series` depends on.
    fn newest_image(&self, series: &str) -> Result<String> {
        let madison = self.apt_cache(&["madison", "linux-image-amd64"])?;
        let version = newest_of_series(&madison, series).with_context(|| {
            format!(
                "no linux-image-amd64 of series {series} in the Debian suites searched:\n{madison}"
            )
        })?;
        let show = self.apt_cache(&["show", &format!("linux-image-amd64={version}")])?;
        image_dependency(&show)
            .with_context(|| format!("linux-image-amd64 {version} depends on no image"))
    }

    /// Static busybox from Debian's `busybox-static`, unpacked (not installed).
    fn busybox(&self, cache: &Path) -> Result<PathBuf> {
        let dir = cache.join("busybox");
        let bin = dir.join("bin/busybox");
        if !bin.is_file() {
            let deb = self.download("busybox-static", &cache.join("apt/debs"))?;
            fs::create_dir_all(&dir)?;
            setup::sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        }
        Ok(bin)
    }
}

/// From `apt-cache madison` lines (`pkg | version | source`), the highest version of
/// `series` (`6.1` takes `6.1.192-3`, not `6.12.95-1`).
fn newest_of_series(madison: &str, series: &str) -> Option<String> {
    let prefix = format!("{series}.");
    madison
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .filter(|v| v.starts_with(&prefix))
        .max_by(|a, b| compare_debian_versions(a, b))
        .map(str::to_string)
}

/// Orders Debian versions well enough for kernel versions: runs of digits compare as
/// numbers, everything else as text, and `~` sorts before anything.
fn compare_debian_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(v: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in v.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, s)) if *d == digit => s.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                x.1.parse::<u64>()
                    .unwrap_or(0)
                    .cmp(&y.1.parse::<u64>().unwrap_or(0))
            }
            _ => x.1.replace('~', "\0").cmp(&y.1.replace('~', "\0")),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    // Where one ends, the longer is newer, unless what it goes on with is a `~`.
    let rest_sorts_first =
        |rest: Option<&(bool, String)>| rest.is_some_and(|p| p.1.starts_with('~'));
    match pa.len().cmp(&pb.len()) {
        std::cmp::Ordering::Greater if rest_sorts_first(pa.get(pb.len())) => {
            std::cmp::Ordering::Less
        }
        std::cmp::Ordering::Less if rest_sorts_first(pb.get(pa.len())) => {
            std::cmp::Ordering::Greater
        }
        ord => ord,
    }
}

/// The `linux-image-*` package named in an `apt-cache show` record's `Depends:`.
fn image_dependency(show: &str) -> Option<String> {
    show.lines()
        .find_map(|l| l.strip_prefix("Depends:"))?
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-"))
        .map(str::to_string)
}

/// Unpacks the kernel and `veth.ko` (uncompressed) out of an image package.
fn unpack_kernel(deb: &Path, dir: &Path, release: &str) -> Result<()> {
    eprintln!("kernels: unpacking {}", deb.display());
    let staging = dir.with_extension("unpacking");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    setup::sh(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&staging))?;
    let modules = staging.join(format!("lib/modules/{release}/kernel/drivers/net"));
    let veth = if modules.join("veth.ko").is_file() {
        fs::read(modules.join("veth.ko"))?
    } else if modules.join("veth.ko.xz").is_file() {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(modules.join("veth.ko.xz"))
            .output()
            .context("could not start xz")?;
        if !out.status.success() {
            bail!("xz -dc veth.ko.xz failed");
        }
        out.stdout
    } else {
        bail!("{} has no veth module", deb.display());
    };
    // Keep only what a boot needs: the modules of an image are some 400 MB.
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("boot"))?;
    let vmlinuz = format!("boot/vmlinuz-{release}");
    fs::copy(staging.join(&vmlinuz), dir.join(&vmlinuz))
        .with_context(|| format!("{} has no {vmlinuz}", deb.display()))?;
    fs::write(dir.join("veth.ko"), veth)?;
    fs::remove_dir_all(&staging)?;
    Ok(())
}

/// Builds the fixtures test binary and returns its path. No `-p`: with the workspace's
/// default members selected, as `cargo xtask test` builds it, features resolve the same
/// and the binary `cargo xtask test` just ran is reused.
fn build_fixtures() -> Result<PathBuf> {
    build::ebpf()?;
    let out = build::cargo_user()
        .args([
            "test",
            "--locked",
            "--test",
            "fixtures",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("could not start cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the fixtures test binary failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "fixtures")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo named no fixtures executable")
}

/// The guest's `/init`.
fn init_script(diff_packets: u64, args: &[String]) -> String {
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/sbin:/usr/sbin HOME=/root CI=true RUST_BACKTRACE=1
export VIP_DIFF_PACKETS={diff_packets}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
insmod /lib/modules/veth.ko
ip link set lo up
echo "vip-kernels-release: $(uname -r)" > /dev/ttyS1
cd /vip
./fixtures {args} > /dev/ttyS1 2>&1
echo "{EXIT_MARKER} $?" > /dev/ttyS1
sync
poweroff -f
"#,
        args = args.join(" ")
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the initramfs (an uncompressed newc cpio, which every kernel takes) for one
/// kernel and returns its path.
fn initramfs(
    cache: &Path,
    image: &Image,
    busybox: &Path,
    fixtures: &Path,
    opts: &Options,
) -> Result<PathBuf> {
    let root = cache.join("initramfs").join(&image.release);
    let _ = fs::remove_dir_all(&root);
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "etc",
        "vip",
        "lib/modules",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy(busybox, root.join("bin/busybox"))?;
    fs::copy(&image.veth, root.join("lib/modules/veth.ko"))?;
    // Debug info is most of the binary; the guest's memory holds the whole archive.
    setup::sh(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(root.join("vip/fixtures"))
            .arg(fixtures),
    )?;
    let ip = ["/usr/bin/ip", "/bin/ip", "/sbin/ip", "/usr/sbin/ip"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("no `ip` (iproute2) on this machine; run `cargo xtask setup`")?;
    fs::copy(ip, root.join("bin/ip"))?;
    let mut libs = BTreeSet::new();
    for bin in [fixtures, ip] {
        libs.extend(shared_libraries(bin)?);
    }
    for lib in libs {
        let to = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(to.parent().expect("a library path has a directory"))?;
        // fs::copy follows symlinks: the guest gets the library itself under each name.
        fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
    }
    let init = root.join("init");
    fs::write(&init, init_script(opts.diff_packets, &opts.args))?;
    setup::sh(Command::new("chmod").arg("755").arg(&init))?;
    let archive = cache
        .join("initramfs")
        .join(format!("{}.cpio", image.release));
    let list = Command::new("find")
        .args([".", "-mindepth", "1"])
        .current_dir(&root)
        .output()
        .context("could not start find")?;
    let mut cpio = Command::new(busybox)
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&archive)?)
        .stderr(Stdio::null())
        .spawn()
        .context("could not start busybox cpio")?;
    {
        use std::io::Write;
        let mut stdin = cpio.stdin.take().expect("piped");
        stdin.write_all(&list.stdout)?;
    }
    if !cpio.wait()?.success() {
        bail!("busybox cpio failed for {}", root.display());
    }
    Ok(archive)
}

/// The shared libraries (and the loader) `ldd` names for a binary.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("could not start ldd")?;
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux...
/// (0x...)` lines give their absolute paths; `linux-vdso.so.1` has none.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Boots `image` and returns what the guest wrote to its second serial port, and whether
/// it had to be killed at the time bound.
fn boot(
    image: &Image,
    initramfs: &Path,
    log: &Path,
    cache: &Path,
    opts: &Options,
) -> Result<(String, bool)> {
    let timeout = opts.timeout;
    let console = log.with_extension("console");
    let _ = fs::remove_file(log);
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp"])
        .arg(opts.cpus.to_string())
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&image.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 panic=-1 oops=panic loglevel=4 mitigations=off",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .current_dir(cache)
        .stdin(Stdio::null())
        .spawn()
        .context("could not start qemu-system-x86_64; run `cargo xtask setup`")?;
    let started = Instant::now();
    let timed_out = loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                eprintln!("kernels: qemu exited with {status}");
            }
            break false;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "kernels: {} still running after {:?}: killed",
                image.release, timeout
            );
            break true;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let output = fs::read_to_string(log).unwrap_or_default();
    if !output.contains(EXIT_MARKER) {
        let tail: Vec<String> = fs::read_to_string(&console)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(20)
            .map(str::to_string)
            .collect();
        eprintln!(
            "kernels: the test binary did not finish on {}; the console's last lines:",
            image.release
        );
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }
    Ok((output, timed_out))
}

/// Reads libtest's `test NAME ... ok|FAILED|ignored` lines and `/init`'s exit marker.
fn parse(output: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in output.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(code) = line.strip_prefix(EXIT_MARKER) {
            o.exit = code.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("test ") {
            let Some((name, result)) = rest.rsplit_once(" ... ") else {
                continue;
            };
            let name = name.to_string();
            match result.split([' ', ',']).next() {
                Some("ok") => o.passed.push(name),
                Some("FAILED") => o.failed.push(name),
                Some("ignored") => o.ignored.push(name),
                _ => {}
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_build_of_a_series_is_picked_and_6_1_is_not_6_12() {
        let madison = "\
linux-image-amd64 | 6.12.95-1~bpo12+1 | http://deb.debian.org/debian bookworm-backports/main amd64 Packages
linux-image-amd64 |  6.1.192-3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-amd64 |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
";
        assert_eq!(
            newest_of_series(madison, "6.1").as_deref(),
            Some("6.1.192-3")
        );
        assert_eq!(
            newest_of_series(madison, "6.12").as_deref(),
            Some("6.12.95-1~bpo12+1")
        );
        assert_eq!(newest_of_series(madison, "5.15"), None);
    }

    #[test]
    fn debian_versions_compare_numbers_as_numbers_and_tilde_first() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_debian_versions("6.1.192-3", "6.1.76-1"), Greater);
        assert_eq!(compare_debian_versions("6.1.0-1~bpo12+1", "6.1.0-1"), Less);
        assert_eq!(compare_debian_versions("6.12.9", "6.12.9"), Equal);
    }

    #[test]
    fn the_image_dependency_is_read_from_the_meta_package() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-3\n\
                    Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\n";
        assert_eq!(
            image_dependency(show).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(image_dependency("Package: x\n"), None);
    }

    #[test]
    fn ldd_lines_give_absolute_paths_only() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn the_guest_runs_the_fixtures_under_ci_with_its_arguments_quoted() {
        let init = init_script(500, &["lb::table".into(), "it's".into()]);
        assert!(init.contains("CI=true"), "{init}");
        assert!(init.contains("export VIP_DIFF_PACKETS=500\n"), "{init}");
        assert!(
            init.contains(r"./fixtures 'lb::table' 'it'\''s' > /dev/ttyS1 2>&1"),
            "{init}"
        );
        assert!(
            init.contains(&format!("echo \"{EXIT_MARKER} $?\"")),
            "{init}"
        );
    }

    #[test]
    fn test_lines_and_the_exit_marker_make_the_outcome() {
        let out = "running 3 tests\n\
                   test lb::table::forwards ... ok\n\
                   test differential::agrees ... FAILED\n\
                   test lb_cost::per_packet_cost ... ignored, measurement\n\
                   test result: FAILED. 1 passed; 1 failed; 1 ignored\n\
                   vip-kernels-exit: 101\n";
        let o = parse(out);
        assert_eq!(o.passed, ["lb::table::forwards"]);
        assert_eq!(o.failed, ["differential::agrees"]);
        assert_eq!(o.ignored, ["lb_cost::per_packet_cost"]);
        assert_eq!(o.exit, Some(101));
        assert!(!o.ok());
        let good = parse("test a ... ok\nvip-kernels-exit: 0\n");
        assert!(good.ok());
        assert!(
            !parse("test a ... ok\n").ok(),
            "no exit marker: the guest died"
        );
    }
}
