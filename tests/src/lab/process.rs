//! Processes the lab runs inside its namespaces (backend servers, vipd), killed on drop.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
};

use super::LabError;

/// A process started with `ip netns exec`, its output appended to a log file (a
/// restarted process keeps its predecessor's lines above its own). SIGKILLed on drop,
/// and by the kernel if this process dies first (`PR_SET_PDEATHSIG`).
#[derive(Debug)]
pub struct LabProcess {
    what: String,
    child: Option<Child>,
    log: PathBuf,
}

impl LabProcess {
    /// Starts `program args...` inside `netns` (with `ip netns exec`; an empty `netns` runs
    /// it directly); stdout and stderr are appended to `log`.
    pub fn spawn(
        what: &str,
        netns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self, LabError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| LabError::Io {
                what: format!("creating log file {}", log.display()),
                source,
            })?;
        let err = out.try_clone().map_err(|source| LabError::Io {
            what: format!("creating log file {}", log.display()),
            source,
        })?;
        // An empty `netns`: the program enters its namespace itself (vipd's `--netns`, which
        // keeps the host's /sys/fs/bpf; `ip netns exec` remounts /sys without bpffs).
        let mut cmd = if netns.is_empty() {
            Command::new(program)
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]).arg(program);
            c
        };
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: format!(
                "ip netns exec {netns} {} {}",
                program.display(),
                args.join(" ")
            ),
            source,
        })?;
        Ok(LabProcess {
            what: what.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) and lets the process go on.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill on our own child's pid, not yet reaped (so not reused).
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) and reaps the process; returns how it ended
    /// (`None` if it was not running).
    pub fn kill_with(&mut self, signal: i32) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill on our own child's pid, not yet reaped (so not reused).
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().ok()
    }

    /// What it is (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The last lines of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        // Lossy: a verifier log quoted in an error may hold bytes that are not UTF-8.
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill_with(libc::SIGKILL);
    }
}
