//! Network namespaces the lab owns: unique names, a process-wide registry so a panic hook
//! or a signal handler can remove them even when no destructor runs, and a way to open
//! sockets inside a namespace from this process.

use std::{
    collections::BTreeSet,
    fs::File,
    os::fd::AsRawFd,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use super::{LabError, cmd};

/// Every namespace and pin directory this process created and has not removed yet.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: BTreeSet::new(),
    pin_dirs: BTreeSet::new(),
});
static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Registry {
    namespaces: BTreeSet<String>,
    pin_dirs: BTreeSet<String>,
}

/// A name no other lab on this machine uses: `vip<pid>x<counter>`. Short, because it is
/// also used inside interface names (15 bytes at most) and pin paths.
pub fn unique_prefix() -> String {
    format!(
        "vip{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted (after killing every process left in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn create(name: &str) -> Result<Self, LabError> {
        REGISTRY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .namespaces
            .insert(name.to_string());
        let ns = Netns {
            name: name.to_string(),
        };
        cmd::run("ip", &["netns", "add", name])?;
        cmd::ip(name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_namespace(&self.name);
        REGISTRY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .namespaces
            .remove(&self.name);
    }
}

/// Registers a bpffs pin directory the lab's vipd uses, so it is removed with the lab.
pub fn register_pin_dir(path: &str) {
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pin_dirs
        .insert(path.to_string());
}

/// Removes a pin directory now (and forgets it).
pub fn remove_pin_dir(path: &str) {
    let _ = std::fs::remove_dir_all(path);
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pin_dirs
        .remove(path);
}

/// Kills every process inside `name` (they were all started by this lab), then deletes it.
fn remove_namespace(name: &str) {
    kill_all_in(name);
    let _ = cmd::run("ip", &["netns", "del", name]);
}

/// SIGKILLs every process whose network namespace is `name`.
pub fn kill_all_in(name: &str) {
    if let Ok(pids) = cmd::run("ip", &["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill has no memory preconditions; the pid is in our own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Removes everything the registry still holds. For a panic hook (the demo is built with
/// `panic = "abort"`, so no destructor runs) and for the Ctrl-C handler.
pub fn cleanup_everything() {
    let (namespaces, pin_dirs) = {
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        (
            std::mem::take(&mut reg.namespaces),
            std::mem::take(&mut reg.pin_dirs),
        )
    };
    for ns in &namespaces {
        kill_all_in(ns);
    }
    for ns in &namespaces {
        let _ = cmd::run("ip", &["netns", "del", ns]);
    }
    for dir in &pin_dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Moves the calling thread into network namespace `name`: sockets it creates afterwards
/// live there (and stay there when used from other threads).
pub fn enter(name: &str) -> Result<(), LabError> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|source| LabError::Netns {
        netns: name.to_string(),
        source,
    })?;
    // SAFETY: a valid fd and a namespace type; affects only this thread's net namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(LabError::Netns {
            netns: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside namespace `name` and returns its result. A panic in
/// `f` goes on in the caller, with its own message (a test's assertion).
pub fn within<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    let name = name.to_string();
    std::thread::spawn(move || -> Result<T, LabError> {
        enter(&name)?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
