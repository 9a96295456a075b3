//! `vipctl ha`: what it does without vipd (write the pinned role map directly), and the
//! health verdict of `vipctl ha check` for keepalived's `track_script`.

use std::path::PathBuf;

use aya::maps::{Array, Map, MapData};
use vip_common::{HaGroup, MAP_HA_GROUPS, MAX_HA_GROUPS};

use crate::{
    config,
    datapath::neigh::{entry_name, with_role},
    protocol::{HaGroupStatus, HaRole},
};

/// Why `vipctl ha` failed without vipd, or why a group is unfit.
#[derive(Debug, thiserror::Error)]
pub enum HaCliError {
    /// The pinned group map could not be opened.
    #[error(
        "vipd is not running and the pinned HA group map {path} cannot be opened ({source}): start vipd (`vipd run -c FILE`) so the group exists"
    )]
    NoPinnedMap {
        /// The pin.
        path: PathBuf,
        /// The error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Reading or writing the map failed.
    #[error("vipd is not running; {action} {path}: {source}")]
    Map {
        /// What was being done.
        action: &'static str,
        /// The pin.
        path: PathBuf,
        /// The error.
        #[source]
        source: aya::maps::MapError,
    },
    /// The group is not in the pinned map.
    #[error(
        "vipd is not running and group {group:?} is not in the pinned map {path}: vipd creates it from the config's [[group]] when it starts"
    )]
    NoGroup {
        /// The group.
        group: String,
        /// The pin.
        path: PathBuf,
    },
    /// `vipctl ha check`: vipd serves but the group cannot serve traffic.
    #[error("group {group:?} is unfit: {why}")]
    Unfit {
        /// The group.
        group: String,
        /// Why.
        why: String,
    },
}

/// Sets `group`'s role in instance `instance`'s pinned group map while vipd is down
/// (the datapath follows at once; nothing is announced). Returns the message to print.
pub fn set_offline(instance: &str, group: &str, role: HaRole) -> Result<String, HaCliError> {
    let path = config::pin_dir(instance).join(MAP_HA_GROUPS);
    let data = MapData::from_pin(&path).map_err(|source| HaCliError::NoPinnedMap {
        path: path.clone(),
        source,
    })?;
    let map_err = |action| {
        let path = path.clone();
        move |source| HaCliError::Map {
            action,
            path,
            source,
        }
    };
    let mut groups: Array<MapData, HaGroup> = Array::try_from(Map::Array(data))
        .map_err(map_err("opening the group map (another vip version?)"))?;
    for i in 0..MAX_HA_GROUPS {
        let g = groups.get(&i, 0).map_err(map_err("reading"))?;
        if entry_name(&g) != group {
            continue;
        }
        let new = with_role(&g, role);
        if new != g {
            groups.set(i, new, 0).map_err(map_err("writing"))?;
        }
        return Ok(format!(
            "vipd is not running: group {group} set to {} in the pinned map {} (the datapath follows it now; no gratuitous ARP was sent)\n",
            role.name(),
            path.display()
        ));
    }
    Err(HaCliError::NoGroup {
        group: group.to_string(),
        path,
    })
}

/// `vipctl ha check GROUP`: fit when vipd knows the group and at least one of its VIPs
/// has a backend up.
pub fn check(groups: &[HaGroupStatus], group: &str) -> Result<String, HaCliError> {
    let Some(g) = groups.iter().find(|g| g.group == group) else {
        return Err(HaCliError::Unfit {
            group: group.to_string(),
            why: "vipd has no such group".into(),
        });
    };
    if g.healthy_vips == 0 {
        return Err(HaCliError::Unfit {
            group: group.to_string(),
            why: format!(
                "none of its {} VIP address(es) has a backend up",
                g.vips.len()
            ),
        });
    }
    Ok(format!(
        "group {group}: {} VIP(s) with a backend up\n",
        g.healthy_vips
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(healthy: u32) -> HaGroupStatus {
        HaGroupStatus {
            group: "web".into(),
            role: HaRole::Standby,
            since_unix_ms: 0,
            transitions: 0,
            interfaces: vec!["eth0".into()],
            vips: vec!["198.18.1.10".into()],
            healthy_vips: healthy,
            garps_sent: 0,
        }
    }

    #[test]
    fn check_fails_without_a_healthy_vip_or_group() {
        assert!(check(&[status(1)], "web").is_ok());
        assert!(check(&[status(0)], "web").is_err());
        assert!(check(&[status(1)], "db").is_err());
    }

    #[test]
    fn a_role_set_again_changes_nothing() {
        let g = with_role(&HaGroup::default(), HaRole::Active);
        assert_eq!(g.transitions, 1);
        assert_eq!(with_role(&g, HaRole::Active), g);
        let s = with_role(&g, HaRole::Standby);
        assert_eq!(s.transitions, 2);
    }
}
