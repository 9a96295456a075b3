//! How one VIP set differs from another, in lines an operator reads (`vipctl apply`,
//! `vipctl diff`).

use std::collections::HashMap;

use crate::config::{VipId, VipSpec};

/// The VIPs of `set` by identity (the first of two with the same identity, as a search
/// would find).
pub(crate) fn by_id(set: &[VipSpec]) -> HashMap<VipId, &VipSpec> {
    set.iter().rev().map(|v| (v.id, v)).collect()
}

/// Lines describing how `new` differs from `old` (VIPs matched by identity, backends by
/// address). Empty if they are the same.
pub fn diff(old: &[VipSpec], new: &[VipSpec]) -> Vec<String> {
    let mut out = Vec::new();
    // Indexed once: a search of the other list per VIP grows with the square of the
    // VIPs (10,000 VIPs, one changed, must not cost 10^8 comparisons).
    let (old_by_id, new_by_id) = (by_id(old), by_id(new));
    for o in old {
        if !new_by_id.contains_key(&o.id) {
            out.push(format!("- vip {}", o.id));
        }
    }
    for n in new {
        let Some(&o) = old_by_id.get(&n.id) else {
            out.push(format!(
                "+ vip {} mode={} hash={} conntrack={} table_size={} backends={}",
                n.id,
                n.mode,
                n.hash,
                n.conntrack,
                n.table_size,
                n.backends.len()
            ));
            for b in &n.backends {
                out.push(format!(
                    "+ backend {} {} weight={} state={}",
                    n.id, b.addr, b.weight, b.state
                ));
            }
            continue;
        };
        if o == n {
            continue;
        }
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("~ vip {} {name}: {a} -> {b}", n.id));
            }
        };
        field("mode", o.mode.to_string(), n.mode.to_string());
        field("hash", o.hash.to_string(), n.hash.to_string());
        field(
            "conntrack",
            o.conntrack.to_string(),
            n.conntrack.to_string(),
        );
        field(
            "table_size",
            o.table_size.to_string(),
            n.table_size.to_string(),
        );
        field(
            "health",
            format!("{:?}", o.health),
            format!("{:?}", n.health),
        );
        for ob in &o.backends {
            if !n.backends.iter().any(|b| b.addr == ob.addr) {
                out.push(format!("- backend {} {}", n.id, ob.addr));
            }
        }
        for nb in &n.backends {
            match o.backends.iter().find(|b| b.addr == nb.addr) {
                None => out.push(format!(
                    "+ backend {} {} weight={} state={}",
                    n.id, nb.addr, nb.weight, nb.state
                )),
                Some(ob) => {
                    if ob.weight != nb.weight {
                        out.push(format!(
                            "~ backend {} {} weight: {} -> {}",
                            n.id, nb.addr, ob.weight, nb.weight
                        ));
                    }
                    if ob.health != nb.health {
                        out.push(format!(
                            "~ backend {} {} health: {:?} -> {:?}",
                            n.id, nb.addr, ob.health, nb.health
                        ));
                    }
                    if ob.state != nb.state {
                        out.push(format!(
                            "~ backend {} {} state: {} -> {}",
                            n.id, nb.addr, ob.state, nb.state
                        ));
                    }
                }
            }
        }
    }
    out
}

/// What an operator should know about going from `old` to `new` although it was done as
/// asked: a VIP left without backends (its packets are dropped), or no VIP left at all.
pub fn warnings(old: &[VipSpec], new: &[VipSpec]) -> Vec<String> {
    let mut out = Vec::new();
    if new.is_empty() && !old.is_empty() {
        out.push(format!(
            "no VIPs are left ({} removed): vipd forwards nothing and packets to the former VIP addresses go to this host's own stack; `vipctl apply -f` a file with VIPs to bring them back",
            old.len()
        ));
    }
    for n in new {
        if n.backends.is_empty() && old.iter().any(|o| o.id == n.id && !o.backends.is_empty()) {
            out.push(format!(
                "VIP {} has no backends left: its packets are dropped (counted as drop_no_backend) until one is added with `vipctl backend add {} ADDR`",
                n.id, n.id
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn diff_names_every_change_and_nothing_else() {
        let a = Config::parse(
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[[vip.backend]]\naddress = \"198.18.2.2\"\n[[vip]]\naddress = \"198.18.1.11:80\"\n",
            "a",
        )
        .unwrap()
        .vips;
        let b = Config::parse(
            "[[vip]]\naddress = \"198.18.1.10:80\"\nhash = \"src\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\nweight = 3\n[[vip.backend]]\naddress = \"198.18.2.3\"\n[[vip]]\naddress = \"[2001:db8::1]:80\"\n",
            "b",
        )
        .unwrap()
        .vips;
        assert!(diff(&a, &a).is_empty());
        assert_eq!(
            diff(&a, &b),
            [
                "- vip 198.18.1.11:80/tcp",
                "~ vip 198.18.1.10:80/tcp hash: 5tuple -> src",
                "- backend 198.18.1.10:80/tcp 198.18.2.2:80",
                "~ backend 198.18.1.10:80/tcp 198.18.2.1:80 weight: 1 -> 3",
                "+ backend 198.18.1.10:80/tcp 198.18.2.3:80 weight=1 state=ready",
                "+ vip [2001:db8::1]:80/tcp mode=tunnel hash=5tuple conntrack=true table_size=65537 backends=0",
            ]
        );
    }
}
