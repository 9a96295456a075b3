//! Per-VIP source access lists in the two LPM tries (`vip_common::acl`). A VIP's list is
//! written under the ACL id its entry does not name, published by the VIP entry that
//! names it (the flip of `VIP_F_ACL_B`, in [`Datapath::publish_vip`]), and only then are
//! the old id's entries deleted: a new flow sees the whole old list or the whole new
//! one. What each id holds is shadowed here, read back from the tries on adoption.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::lpm_trie::Key;
use vip_common::{
    ACL_ID_BITS, AclKeyV4, AclKeyV6, FAMILY_V4, FAMILY_V6, MAP_ACL_V4, MAP_ACL_V6, VIP_F_ACL,
    VIP_F_ACL_B, VipMeta, acl_id,
};

use super::{
    Datapath, Result,
    keys::{addr_words, words_addr},
    map_err,
};
use crate::config::acl::{AclEntry, Prefix};

impl Datapath {
    /// Reads what every ACL id holds back from adopted tries.
    pub(super) fn read_acls(&mut self) -> Result<()> {
        let mut found = Vec::new();
        for entry in self.acl_v4.iter() {
            let (k, verdict) =
                entry.map_err(map_err(MAP_ACL_V4, "listing access-list prefixes"))?;
            let data = k.data();
            found.push((
                data.acl_id_be,
                [data.addr, 0, 0, 0],
                FAMILY_V4,
                k.prefix_len(),
                verdict,
            ));
        }
        for entry in self.acl_v6.iter() {
            let (k, verdict) =
                entry.map_err(map_err(MAP_ACL_V6, "listing access-list prefixes"))?;
            let data = k.data();
            found.push((
                data.acl_id_be,
                data.addr,
                FAMILY_V6,
                k.prefix_len(),
                verdict,
            ));
        }
        for (id_be, words, family, len, verdict) in found {
            self.adopt_acl_entry(id_be, words, family, len, verdict);
        }
        Ok(())
    }

    fn adopt_acl_entry(&mut self, id_be: u32, words: [u32; 4], family: u8, len: u32, verdict: u32) {
        let prefix = Prefix {
            addr: words_addr(words, family),
            len: len.saturating_sub(ACL_ID_BITS) as u8,
        };
        self.acl_written
            .entry(u32::from_be(id_be))
            .or_default()
            .insert(AclEntry { prefix, verdict });
    }

    /// Makes the ACL id the VIP's next entry will name hold exactly `acl`, and returns
    /// that entry's `VIP_F_ACL*` flags (none for an empty list). An unchanged list keeps
    /// its id and costs no write. `old` is the VIP's entry as published now.
    pub(super) fn stage_acl(
        &mut self,
        id: u32,
        old: Option<&VipMeta>,
        acl: &[AclEntry],
    ) -> Result<u32> {
        if acl.is_empty() {
            return Ok(0);
        }
        let want: BTreeSet<AclEntry> = acl.iter().copied().collect();
        let current = old
            .filter(|m| m.flags & VIP_F_ACL != 0 && m.id == id)
            .map(|m| acl_id(m.id, m.flags));
        if let Some(cur) = current
            && self.acl_written.get(&cur) == Some(&want)
        {
            return Ok(acl_flags(cur));
        }
        let next = match current {
            Some(cur) => cur ^ 1,
            None => acl_id(id, 0),
        };
        let have = self.acl_written.get(&next).cloned().unwrap_or_default();
        for e in have.difference(&want) {
            self.acl_remove(next, e)?;
        }
        for e in want.difference(&have) {
            self.acl_insert(next, e)?;
        }
        Ok(acl_flags(next))
    }

    /// Deletes the entries of the ACL ids of VIP `id` that its entry (`flags`) does not
    /// name, and those of `old` (the entry it replaced) if that was another VIP id.
    pub(super) fn retire_acls(&mut self, id: u32, flags: u32, old: Option<&VipMeta>) -> Result<()> {
        let live = (flags & VIP_F_ACL != 0).then(|| acl_id(id, flags));
        let mut ids = vec![acl_id(id, 0), acl_id(id, VIP_F_ACL_B)];
        if let Some(m) = old
            && m.id != id
        {
            ids.extend([acl_id(m.id, 0), acl_id(m.id, VIP_F_ACL_B)]);
        }
        for x in ids {
            if Some(x) != live {
                self.clear_acl(x)?;
            }
        }
        Ok(())
    }

    /// Deletes every entry of ACL id `x`.
    fn clear_acl(&mut self, x: u32) -> Result<()> {
        let have = self.acl_written.get(&x).cloned().unwrap_or_default();
        for e in &have {
            self.acl_remove(x, e)?;
        }
        self.acl_written.remove(&x);
        Ok(())
    }

    fn acl_insert(&mut self, x: u32, e: &AclEntry) -> Result<()> {
        let len = ACL_ID_BITS + u32::from(e.prefix.len);
        let (words, _) = addr_words(e.prefix.addr);
        let what = || format!("writing access-list prefix {} of ACL id {x}", e.prefix);
        match e.prefix.addr {
            IpAddr::V4(_) => self
                .acl_v4
                .insert(
                    &Key::new(
                        len,
                        AclKeyV4 {
                            acl_id_be: x.to_be(),
                            addr: words[0],
                        },
                    ),
                    e.verdict,
                    0,
                )
                .map_err(map_err(MAP_ACL_V4, what()))?,
            IpAddr::V6(_) => self
                .acl_v6
                .insert(
                    &Key::new(
                        len,
                        AclKeyV6 {
                            acl_id_be: x.to_be(),
                            addr: words,
                        },
                    ),
                    e.verdict,
                    0,
                )
                .map_err(map_err(MAP_ACL_V6, what()))?,
        }
        self.acl_written.entry(x).or_default().insert(*e);
        Ok(())
    }

    fn acl_remove(&mut self, x: u32, e: &AclEntry) -> Result<()> {
        let len = ACL_ID_BITS + u32::from(e.prefix.len);
        let (words, _) = addr_words(e.prefix.addr);
        let what = || format!("deleting access-list prefix {} of ACL id {x}", e.prefix);
        let r = match e.prefix.addr {
            IpAddr::V4(_) => self
                .acl_v4
                .remove(&Key::new(
                    len,
                    AclKeyV4 {
                        acl_id_be: x.to_be(),
                        addr: words[0],
                    },
                ))
                .map_err(|err| (MAP_ACL_V4, err)),
            IpAddr::V6(_) => self
                .acl_v6
                .remove(&Key::new(
                    len,
                    AclKeyV6 {
                        acl_id_be: x.to_be(),
                        addr: words,
                    },
                ))
                .map_err(|err| (MAP_ACL_V6, err)),
        };
        match r {
            Ok(()) | Err((_, aya::maps::MapError::KeyNotFound)) => {}
            Err((map, err)) => return Err(map_err(map, what())(err)),
        }
        if let Some(set) = self.acl_written.get_mut(&x) {
            set.remove(e);
        }
        Ok(())
    }

    /// The entries ACL id `x` holds (for tests and inspection).
    pub fn acl_entries(&self, x: u32) -> Vec<AclEntry> {
        self.acl_written
            .get(&x)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The `VIP_F_ACL*` flags of a VIP entry that names ACL id `x`.
fn acl_flags(x: u32) -> u32 {
    VIP_F_ACL | if x & 1 == 1 { VIP_F_ACL_B } else { 0 }
}
