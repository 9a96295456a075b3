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

    /// Writes atomically: temp file, fsync, rename.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("state serializes"))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}
