//! The persisted runtime state: what vipd writes after every change so that a restart
//! keeps runtime changes, ids and health. Written atomically (temp file, fsync, rename).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::reconcile::{Allocation, BackendIdentity};
use crate::config::{LimitsSpec, VipId, VipSpec, validate_vips};

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading it failed.
    #[error("reading state file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a state file vipd wrote.
    #[error(
        "state file {} is corrupt ({source}), so vipd changed nothing. {MOVE_AWAY}",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the JSON reader said.
        #[source]
        source: serde_json::Error,
    },
    /// It reads, but cannot describe the maps of this config: an id out of range, an id
    /// given twice, running VIPs that are invalid or do not fit.
    #[error(
        "state file {} cannot be used, so vipd changed nothing:\n{}\n{MOVE_AWAY}",
        path.display(),
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// What to do with a state file vipd cannot use.
const MOVE_AWAY: &str = "Fix it or move it away: without it vipd starts from the config file, adopts what the pinned maps hold for the config's VIPs, and keeps every other VIP it finds there forwarding, listed as unmanaged by `vipctl vip list`, until you delete it (`vipctl vip del`) or `vipctl apply -f` a file";

/// Where [`StateFile::write`] writes before renaming: next to the state file, named by
/// this process.
fn temp_path(path: &Path) -> PathBuf {
    path.with_extension(format!("tmp.{}", std::process::id()))
}

/// What is persisted: the running VIP set, the config-file VIP set it was derived from
/// (so an edited file wins over stale runtime changes), ids and health.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    /// VIPs as last read from the config file.
    pub file_vips: Vec<VipSpec>,
    /// Running VIPs (file + runtime changes).
    pub vips: Vec<VipSpec>,
    /// Stable ids.
    pub alloc: Allocation,
    /// Backends known down.
    pub down: Vec<BackendIdentity>,
    /// Map sizes the pinned maps were created with (a restart must use the same).
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    /// VIPs found in the pinned maps that nothing else names, kept as found until an
    /// operator deletes them (see `Owner`): a restart keeps them too.
    #[serde(default)]
    pub unmanaged: Vec<VipId>,
    /// The operator drained the node (`vipctl node drain`): no VIP route is announced
    /// until `vipctl node undrain`, across restarts.
    #[serde(default)]
    pub drained: bool,
}

impl StateFile {
    /// Reads a state file; `Ok(None)` if there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, StateFileError> {
        match std::fs::read(path) {
            Ok(b) => {
                serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|source| StateFileError::Corrupt {
                        path: path.into(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateFileError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// Refuses a state file that cannot describe the maps of `limits`, before anything
    /// is written: an id or slot given twice, running VIPs that are invalid or do not
    /// fit, and (when it was written for these limits, so its ids are kept) an id or
    /// slot out of range.
    pub fn check(&self, path: &Path, limits: &LimitsSpec) -> Result<(), StateFileError> {
        let mut problems = Vec::new();
        let ids_kept = self.limits.is_none_or(|l| l == *limits);
        let mut slots: BTreeMap<u32, VipId> = BTreeMap::new();
        for (vip, &slot) in &self.alloc.vips {
            if let Some(other) = slots.insert(slot, *vip) {
                problems.push(format!(
                    "VIP slot {slot} is given to both {other} and {vip}"
                ));
            }
            if ids_kept && slot >= limits.max_vips {
                problems.push(format!(
                    "VIP {vip} has slot {slot}, but [limits] max_vips = {} allows slots up to {}",
                    limits.max_vips,
                    limits.max_vips - 1
                ));
            }
        }
        let mut ids: BTreeMap<u32, BackendIdentity> = BTreeMap::new();
        let mut identities = BTreeSet::new();
        for &((vip, addr), id, _) in &self.alloc.backends {
            if let Some((ov, oa)) = ids.insert(id, (vip, addr)) {
                problems.push(format!(
                    "backend id {id} is given to both {oa} of {ov} and {addr} of {vip}"
                ));
            }
            if !identities.insert((vip, addr)) {
                problems.push(format!("backend {addr} of {vip} has two ids"));
            }
            if ids_kept && id >= limits.max_backends {
                problems.push(format!(
                    "backend {addr} of {vip} has backend id {id}, but [limits] max_backends = {} allows ids up to {}",
                    limits.max_backends,
                    limits.max_backends - 1
                ));
            }
        }
        if let Err(p) = validate_vips(&self.vips, limits) {
            problems.extend(p.into_iter().map(|p| format!("running VIPs: {p}")));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StateFileError::Inconsistent {
                path: path.into(),
                problems,
            })
        }
    }

    /// Writes atomically: temp file, fsync, rename. On any error (a full disk, say) the
    /// temp file is removed and the previous state file is left as it was.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = temp_path(path);
        let written = std::fs::File::create(&tmp).and_then(|f| {
            // Compact, and straight into the file: at 10,000 VIPs the state is
            // megabytes, written after every change.
            let mut out = std::io::BufWriter::new(f);
            serde_json::to_writer(&mut out, self).map_err(std::io::Error::from)?;
            out.flush()?;
            let f = out
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a failed write (here a real ENOSPC, the temp file being
    /// /dev/full) leaves no temp file behind, and the old state file is untouched.
    #[test]
    fn a_failed_write_removes_its_temp_file_and_keeps_the_old_state() {
        let dir = std::env::temp_dir().join(format!("vip-state-enospc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        StateFile::default().write(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let tmp = temp_path(&path);
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let err = StateFile::default().write(&path).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "the temp file {} is left behind",
            tmp.display()
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
