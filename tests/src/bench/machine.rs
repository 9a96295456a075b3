//! Which machine a figure came from: absolute numbers mean nothing without it.

use std::fs;

/// CPU model, CPU count and kernel of this machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// /proc/loadavg when the run started: other users of a shared machine show here.
    pub load_at_start: String,
}

impl Machine {
    /// Reads /proc; fields it cannot read say "unknown".
    pub fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        Self {
            cpu,
            cpus,
            kernel,
            load_at_start: load_average(),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!("{} ({} CPUs), Linux {}", self.cpu, self.cpus, self.kernel)
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Pins the calling thread to `cpu`, so per-CPU maps stay on one CPU and the
/// scheduler does not move the benchmark mid-trial. Returns the CPU pinned to.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<usize> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(cpu)
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> usize {
    // SAFETY: no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).unwrap_or(0)
}
