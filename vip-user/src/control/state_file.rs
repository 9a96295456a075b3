//! The persisted runtime state: what vipd writes after every change so that a restart
//! keeps runtime changes, ids and health. Written atomically (temp file, fsync, rename).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reconcile::{Allocation, BackendIdentity};
use crate::config::{LimitsSpec, VipSpec};

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
        "state file {} is corrupt ({source}): move it away to start from the config file",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the JSON reader said.
        #[source]
        source: serde_json::Error,
    },
}

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

    /// Writes atomically: temp file, fsync, rename. On any error (a full disk, say) the
    /// temp file is removed and the previous state file is left as it was.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = temp_path(path);
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&serde_json::to_vec_pretty(self).expect("state serializes"))?;
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

    /// Issue #16 finding 11: a failed write (here a real ENOSPC, the temp file being
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
