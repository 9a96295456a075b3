//! The oldest kernel vip supports, and the check `vipd` makes against the running
//! kernel before it loads anything.
//!
//! `cargo xtask kernels` boots Debian's kernels and runs the packet fixtures and the
//! differential test on them (docs/kernels.md): 6.1 and 6.12 pass, and so does 5.10,
//! but only with one CPU (with two, its BPF dispatcher crashed during a test run). Debian
//! ships no 5.15 to boot; it lies between 5.10 and 6.1 and is the floor the README
//! promises. On an older kernel the verifier's refusal, or a crash, would not say that
//! the kernel is the problem, so vipd says which kernel it needs instead.

use std::fmt;

/// A kernel's `major.minor.patch`, as its release string begins (`6.1.0-57-amd64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level (0 when the release string has none).
    pub patch: u32,
}

/// The oldest kernel vip runs on.
pub const MIN_KERNEL: KernelVersion = KernelVersion {
    major: 5,
    minor: 15,
    patch: 0,
};

impl KernelVersion {
    /// Reads `major.minor[.patch]` from the start of a release string (`uname -r`):
    /// `6.12.95+deb12-amd64`, `5.15.0-91-generic`, `6.18.44-fc-v669`, `6.8`. `None` when
    /// it does not start that way.
    pub fn parse(release: &str) -> Option<Self> {
        let mut numbers = release.trim().splitn(3, '.').map(|part| {
            let digits: &str = &part[..part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len())];
            digits.parse::<u32>().ok()
        });
        let major = numbers.next()??;
        let minor = numbers.next()??;
        let patch = match numbers.next() {
            Some(p) => p?,
            None => 0,
        };
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The running kernel is older than [`MIN_KERNEL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "this kernel is Linux {release}, and vip needs Linux {MIN_KERNEL} or newer: its XDP \
     programs are not supported on older kernels (Debian 11's 5.10 crashed running them \
     on two CPUs); run vipd on a newer kernel"
)]
pub struct KernelTooOld {
    /// The running kernel's release string.
    pub release: String,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCheck {
    /// The kernel is [`MIN_KERNEL`] or newer.
    Supported(KernelVersion),
    /// The release string does not start with a version: nothing is refused, the
    /// verifier will judge (vipd logs a warning).
    Unknown(String),
}

/// Checks a release string (`uname -r`) against [`MIN_KERNEL`].
pub fn check(release: &str) -> Result<KernelCheck, KernelTooOld> {
    match KernelVersion::parse(release) {
        Some(v) if v >= MIN_KERNEL => Ok(KernelCheck::Supported(v)),
        Some(_) => Err(KernelTooOld {
            release: release.trim().to_string(),
        }),
        None => Ok(KernelCheck::Unknown(release.trim().to_string())),
    }
}

/// Checks the running kernel (`/proc/sys/kernel/osrelease`, what `uname -r` prints).
pub fn check_running() -> Result<KernelCheck, KernelTooOld> {
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) => check(&release),
        Err(e) => Ok(KernelCheck::Unknown(format!("unreadable: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> KernelVersion {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn release_strings_parse_to_their_version() {
        let cases = [
            ("6.1.0-57-amd64", Some(v(6, 1, 0))),
            ("6.12.95+deb12-amd64", Some(v(6, 12, 95))),
            ("5.15.0-91-generic", Some(v(5, 15, 0))),
            ("6.18.44-fc-v669\n", Some(v(6, 18, 44))),
            ("6.8", Some(v(6, 8, 0))),
            ("6.10-rc3", Some(v(6, 10, 0))),
            ("4.19.0", Some(v(4, 19, 0))),
            ("", None),
            ("linux", None),
            ("6", None),
            ("6.x.1", None),
        ];
        for (release, want) in cases {
            assert_eq!(KernelVersion::parse(release), want, "{release:?}");
        }
    }

    #[test]
    fn versions_compare_by_number_not_text() {
        assert!(v(6, 12, 0) > v(6, 1, 0));
        assert!(v(6, 1, 0) > v(5, 15, 200));
        assert!(v(6, 1, 1) > v(6, 1, 0));
    }

    #[test]
    fn older_kernels_are_refused_with_the_minimum_named() {
        let supported = [
            ("5.15.0-91-generic", v(5, 15, 0)),
            ("6.1.0-57-amd64", v(6, 1, 0)),
            ("6.12.95+deb12-amd64", v(6, 12, 95)),
        ];
        for (release, version) in supported {
            assert_eq!(
                check(release).unwrap(),
                KernelCheck::Supported(version),
                "{release}"
            );
        }
        let err = check("5.10.0-46-amd64").unwrap_err();
        assert_eq!(err.release, "5.10.0-46-amd64");
        let text = err.to_string();
        assert!(text.contains("Linux 5.10.0-46-amd64"), "{text}");
        assert!(text.contains("needs Linux 5.15.0 or newer"), "{text}");
        assert!(check("5.14.21").is_err());
        assert!(check("4.19.0-27-amd64").is_err());
        assert_eq!(
            check("custom").unwrap(),
            KernelCheck::Unknown("custom".into())
        );
    }
}
