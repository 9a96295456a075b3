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
///
/// On disk, a running set that is the config file's (no runtime change) is written
/// once: `vips` is left out and `vips_as_file` is true. A state file without either
/// is refused (as a vipd older than that refuses one with no `vips`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "OnDisk")]
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

/// A state file as read, before `vips` is filled in.
#[derive(Deserialize)]
struct OnDisk {
    file_vips: Vec<VipSpec>,
    #[serde(default)]
    vips: Option<Vec<VipSpec>>,
    #[serde(default)]
    vips_as_file: bool,
    alloc: Allocation,
    down: Vec<BackendIdentity>,
    #[serde(default)]
    limits: Option<LimitsSpec>,
    #[serde(default)]
    unmanaged: Vec<VipId>,
    #[serde(default)]
    drained: bool,
}

impl TryFrom<OnDisk> for StateFile {
    type Error = &'static str;

    fn try_from(d: OnDisk) -> Result<Self, Self::Error> {
        let vips = match (d.vips, d.vips_as_file) {
            (Some(v), false) => v,
            (None, true) => d.file_vips.clone(),
            (None, false) => return Err("missing field `vips`"),
            (Some(_), true) => return Err("both `vips` and `vips_as_file`"),
        };
        Ok(StateFile {
            file_vips: d.file_vips,
            vips,
            alloc: d.alloc,
            down: d.down,
            limits: d.limits,
            unmanaged: d.unmanaged,
            drained: d.drained,
        })
    }
}

/// A state file to write, borrowing what it holds (the owner's running state is
/// megabytes at 10,000 VIPs: not copied to be written).
#[derive(Debug, Serialize)]
pub struct StateRef<'a> {
    /// See [`StateFile::file_vips`].
    pub file_vips: &'a [VipSpec],
    /// See [`StateFile::vips`].
    pub vips: &'a [VipSpec],
    /// See [`StateFile::alloc`].
    pub alloc: &'a Allocation,
    /// See [`StateFile::down`].
    pub down: &'a [BackendIdentity],
    /// See [`StateFile::limits`].
    pub limits: Option<LimitsSpec>,
    /// See [`StateFile::unmanaged`].
    pub unmanaged: &'a [VipId],
    /// See [`StateFile::drained`].
    pub drained: bool,
}

/// What [`StateRef`] writes: the running set left out when it is the file's.
#[derive(Serialize)]
struct Written<'a> {
    file_vips: &'a [VipSpec],
    #[serde(skip_serializing_if = "Option::is_none")]
    vips: Option<&'a [VipSpec]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    vips_as_file: bool,
    alloc: &'a Allocation,
    down: &'a [BackendIdentity],
    limits: Option<LimitsSpec>,
    unmanaged: &'a [VipId],
    drained: bool,
}

impl StateRef<'_> {
    /// Writes atomically: temp file, fsync, rename. On any error (a full disk, say) the
    /// temp file is removed and the previous state file is left as it was.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let as_file = self.vips == self.file_vips;
        let written = Written {
            file_vips: self.file_vips,
            vips: (!as_file).then_some(self.vips),
            vips_as_file: as_file,
            alloc: self.alloc,
            down: self.down,
            limits: self.limits,
            unmanaged: self.unmanaged,
            drained: self.drained,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = temp_path(path);
        let result = std::fs::File::create(&tmp).and_then(|f| {
            // Compact, and straight into the file: at 10,000 VIPs the state is
            // megabytes, written after every change.
            let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
            serde_json::to_writer(&mut out, &written).map_err(std::io::Error::from)?;
            out.flush()?;
            let f = out
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
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

    /// Writes atomically, as [`StateRef::write`] does.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        StateRef {
            file_vips: &self.file_vips,
            vips: &self.vips,
            alloc: &self.alloc,
            down: &self.down,
            limits: self.limits,
            unmanaged: &self.unmanaged,
            drained: self.drained,
        }
        .write(path)
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

    /// The running set is written once when it is the file's, twice otherwise; a file
    /// of either kind (and one written with `vips` always present) reads back as it
    /// was; one with neither `vips` nor `vips_as_file` is refused as corrupt.
    #[test]
    fn the_running_set_is_written_once_when_it_is_the_files() {
        let dir = std::env::temp_dir().join(format!("vip-state-once-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let cfg = crate::config::Config::parse(
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n",
            "t",
        )
        .unwrap();
        let same = StateFile {
            file_vips: cfg.vips.clone(),
            vips: cfg.vips.clone(),
            drained: true,
            ..StateFile::default()
        };
        same.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("],\"vips\":[") && text.contains("\"vips_as_file\":true"),
            "{text}"
        );
        let back = StateFile::read(&path).unwrap().unwrap();
        assert_eq!(
            (back.vips, back.file_vips, back.drained),
            (cfg.vips.clone(), cfg.vips.clone(), true)
        );

        let mut runtime = cfg.vips.clone();
        runtime[0].backends[0].weight = 7;
        let differs = StateFile {
            file_vips: cfg.vips.clone(),
            vips: runtime.clone(),
            ..StateFile::default()
        };
        differs.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("],\"vips\":[") && !text.contains("vips_as_file"),
            "{text}"
        );
        let back = StateFile::read(&path).unwrap().unwrap();
        assert_eq!((back.vips, back.file_vips), (runtime, cfg.vips.clone()));

        // The running set written out in full even when it is the file's, as before.
        let full = text.replace("\"weight\":7", "\"weight\":1");
        std::fs::write(&path, &full).unwrap();
        let back = StateFile::read(&path).unwrap().unwrap();
        assert_eq!(back.vips, cfg.vips);

        let neither = text.replacen("],\"vips\":[", "],\"other\":[", 1);
        std::fs::write(&path, &neither).unwrap();
        let err = StateFile::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("is corrupt") && err.contains("missing field `vips`"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
