//! Processes the lab runs inside its namespaces (backend servers, vipd), killed on drop.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use super::LabError;

/// A process started with `ip netns exec`, its output in a log file. SIGKILLed on drop,
/// and by the kernel if this process dies first (`PR_SET_PDEATHSIG`).
#[derive(Debug)]
pub struct LabProcess {
    what: String,
    child: Option<Child>,
    log: PathBuf,
}

impl LabProcess {
    /// Starts `program args...` inside `netns`; stdout and stderr go to `log`.
    pub fn spawn(
        what: &str,
        netns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self, LabError> {
        let out = std::fs::File::create(log).map_err(|source| LabError::Io {
            what: format!("creating log file {}", log.display()),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LabError::Io {
            what: format!("creating log file {}", log.display()),
            source,
        })?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
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

    /// Sends `signal` (e.g. `libc::SIGKILL`) and reaps the process.
    pub fn kill_with(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    /// What it is (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The last lines of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill_with(libc::SIGKILL);
    }
}
