//! Per-VIP source access lists: the `allow` and `deny` keys of a `[[vip]]`, the same in
//! the API's [`super::VipSpec`].
//!
//! The rules an operator reads them by:
//! - The longest prefix that contains the source, across both lists, decides: a `deny`
//!   of 198.18.0.0/16 with an `allow` of 198.18.7.0/24 lets 198.18.7.9 in and keeps
//!   198.18.8.9 out, and the other way round.
//! - A VIP with an `allow` list refuses a source that no prefix contains; a VIP with only
//!   a `deny` list admits it.
//! - An empty list is the same as no list; a VIP with neither admits everyone.
//! - Only prefixes of the VIP's family can match its packets. A list may hold both
//!   families (one list shared by an IPv4 and an IPv6 VIP), but a non-empty list with no
//!   prefix of the VIP's family is refused: an allow list of that kind would refuse
//!   everyone, a deny list would do nothing.
//! - The list applies to new flows: a flow the connection table already holds keeps
//!   going after a change.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};
use vip_common::{ACL_ALLOW, ACL_DENY, ACL_MAX_PREFIXES};

/// A source prefix: an address whose host bits are clear, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    /// The network address (host bits clear).
    pub addr: IpAddr,
    /// Leading bits that count: 0..=32 (IPv4) or 0..=128 (IPv6).
    pub len: u8,
}

impl Prefix {
    /// The prefix `addr/len`, refused when the length is too long for the family or
    /// the address has bits set beyond it.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, String> {
        let max = if addr.is_ipv6() { 128 } else { 32 };
        if len > max {
            return Err(format!(
                "{addr}/{len}: an {} prefix is at most /{max}",
                if addr.is_ipv6() { "IPv6" } else { "IPv4" }
            ));
        }
        let p = Prefix { addr, len };
        let net = p.network();
        if net != addr {
            return Err(format!(
                "{addr}/{len} has host bits set: write {net}/{len} (or {addr}/{max} for that address alone)"
            ));
        }
        Ok(p)
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The address with every bit beyond the length cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether `ip` is inside the prefix (never for an address of the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.is_v6()
            && Prefix {
                addr: ip,
                len: self.len,
            }
            .network()
                == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// `ADDRESS/LENGTH`, or a bare address for that address alone (/32, /128).
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| {
            format!("{s:?} is not a prefix: write ADDRESS/LENGTH, e.g. \"198.18.0.0/15\" or \"2001:db8::/32\"")
        })?;
        let len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("{s:?}: the prefix length {l:?} is not a number of bits"))?,
            None if addr.is_ipv6() => 128,
            None => 32,
        };
        Prefix::new(addr, len)
    }
}

impl TryFrom<String> for Prefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

/// A VIP's source access list (see the module's rules).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// Sources that may open flows; with any, every other source is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Prefix>,
    /// Sources that may not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Prefix>,
}

/// What a VIP's list says about one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclDecision {
    /// The source may open flows.
    pub allowed: bool,
    /// The prefix that decided, and whether it is a deny; `None`: no prefix contains
    /// the source and the default decided (refused with an allow list, else admitted).
    pub by: Option<(Prefix, bool)>,
}

/// One entry of the datapath's trie for a VIP: a prefix and `ACL_ALLOW` / `ACL_DENY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclEntry {
    /// The source prefix.
    pub prefix: Prefix,
    /// `vip_common::ACL_ALLOW` or `ACL_DENY`.
    pub verdict: u32,
}

impl fmt::Display for AclDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed {
            "allowed"
        } else {
            "refused (drop_acl)"
        };
        match self.by {
            Some((p, true)) => write!(f, "{verdict} by deny {p}"),
            Some((p, false)) => write!(f, "{verdict} by allow {p}"),
            None if self.allowed => write!(f, "{verdict}: no prefix matches (deny list only)"),
            None => write!(f, "{verdict}: no allow prefix matches"),
        }
    }
}

impl fmt::Display for Acl {
    /// `allow P, P; deny P` (or `-` for no list).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |l: &[Prefix]| {
            l.iter()
                .map(Prefix::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.allow.is_empty() {
            parts.push(format!("allow {}", join(&self.allow)));
        }
        if !self.deny.is_empty() {
            parts.push(format!("deny {}", join(&self.deny)));
        }
        if parts.is_empty() {
            write!(f, "-")
        } else {
            write!(f, "{}", parts.join("; "))
        }
    }
}

impl Acl {
    /// No list at all (empty lists count as none).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    fn of_family(list: &[Prefix], v6: bool) -> impl Iterator<Item = &Prefix> {
        list.iter().filter(move |p| p.is_v6() == v6)
    }

    /// The decision for source `src` (the rules of the module).
    pub fn decide(&self, src: IpAddr) -> AclDecision {
        let best = self
            .allow
            .iter()
            .map(|p| (*p, false))
            .chain(self.deny.iter().map(|p| (*p, true)))
            .filter(|(p, _)| p.contains(src))
            .max_by_key(|(p, _)| p.len);
        match best {
            Some((p, deny)) => AclDecision {
                allowed: !deny,
                by: Some((p, deny)),
            },
            None => AclDecision {
                allowed: Self::of_family(&self.allow, src.is_ipv6()).next().is_none(),
                by: None,
            },
        }
    }

    /// The datapath's entries for a VIP of family `v6`, sorted: every prefix of that
    /// family with its verdict and, for an allow list without a zero-length prefix, a
    /// zero-length deny (the default). Empty when the list does not restrict the VIP.
    pub fn entries(&self, v6: bool) -> Vec<AclEntry> {
        let mut out: Vec<AclEntry> = Self::of_family(&self.allow, v6)
            .map(|p| AclEntry {
                prefix: *p,
                verdict: ACL_ALLOW,
            })
            .chain(Self::of_family(&self.deny, v6).map(|p| AclEntry {
                prefix: *p,
                verdict: ACL_DENY,
            }))
            .collect();
        if Self::of_family(&self.allow, v6).next().is_some()
            && !out.iter().any(|e| e.prefix.len == 0)
        {
            let any = if v6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            out.push(AclEntry {
                prefix: Prefix { addr: any, len: 0 },
                verdict: ACL_DENY,
            });
        }
        out.sort();
        out.dedup();
        out
    }

    /// What is wrong with the list for a VIP of family `v6`, each problem a sentence
    /// that names the fix.
    pub fn problems(&self, v6: bool) -> Vec<String> {
        let mut out = Vec::new();
        let family = if v6 { "IPv6" } else { "IPv4" };
        for (name, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            let mut seen = std::collections::HashSet::new();
            for p in list {
                if !seen.insert(p) {
                    out.push(format!("{name} lists {p} twice: remove one"));
                }
            }
            if !list.is_empty() && Self::of_family(list, v6).next().is_none() {
                out.push(format!(
                    "{name} has no {family} prefix, but the VIP is {family}: its prefixes can never match (an allow list would refuse every client); add the VIP's family or remove the key"
                ));
            }
        }
        for p in &self.allow {
            if self.deny.contains(p) {
                out.push(format!(
                    "{p} is in both allow and deny: remove it from one (the longest prefix decides, so the same prefix cannot be both)"
                ));
            }
        }
        let n = self.allow.len() + self.deny.len();
        if n > ACL_MAX_PREFIXES as usize {
            out.push(format!(
                "{n} prefixes exceed the {ACL_MAX_PREFIXES} a datapath holds per family: merge prefixes"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_or_say_why_not() {
        let cases: [(&str, Result<&str, &str>); 9] = [
            ("198.18.0.0/15", Ok("198.18.0.0/15")),
            ("198.18.0.9", Ok("198.18.0.9/32")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("198.18.0.1/16", Err("host bits set: write 198.18.0.0/16")),
            ("2001:db8::1/32", Err("host bits set: write 2001:db8::/32")),
            ("198.18.0.0/33", Err("at most /32")),
            ("198.18.0.0/x", Err("not a number of bits")),
            ("example.com/8", Err("is not a prefix")),
        ];
        for (text, want) in cases {
            match (text.parse::<Prefix>(), want) {
                (Ok(got), Ok(w)) => assert_eq!(got.to_string(), w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, w) => panic!("{text}: got {got:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn the_longest_prefix_across_both_lists_decides() {
        let acl = Acl {
            allow: vec![p("198.18.7.0/24"), p("2001:db8::/32")],
            deny: vec![
                p("198.18.0.0/16"),
                p("198.18.7.128/25"),
                p("2001:db8:1::/48"),
            ],
        };
        let cases = [
            ("198.18.7.9", true, Some("198.18.7.0/24")),
            ("198.18.7.200", false, Some("198.18.7.128/25")),
            ("198.18.8.9", false, Some("198.18.0.0/16")),
            ("198.19.0.1", false, None),
            ("2001:db8::5", true, Some("2001:db8::/32")),
            ("2001:db8:1::5", false, Some("2001:db8:1::/48")),
            ("2001:db9::5", false, None),
        ];
        for (src, allowed, by) in cases {
            let d = acl.decide(ip(src));
            assert_eq!(d.allowed, allowed, "{src}");
            assert_eq!(d.by.map(|(p, _)| p.to_string()).as_deref(), by, "{src}");
        }
        let deny_only = Acl {
            allow: vec![],
            deny: vec![p("198.18.0.0/16")],
        };
        assert!(deny_only.decide(ip("198.19.0.1")).allowed);
        assert!(!deny_only.decide(ip("198.18.0.1")).allowed);
        assert!(Acl::default().decide(ip("198.18.0.1")).allowed);
    }

    #[test]
    fn an_allow_list_gets_a_default_deny_entry_of_the_vips_family() {
        let acl = Acl {
            allow: vec![p("198.18.7.0/24"), p("2001:db8::/32")],
            deny: vec![],
        };
        let v4: Vec<String> = acl
            .entries(false)
            .iter()
            .map(|e| format!("{} {}", e.prefix, e.verdict))
            .collect();
        assert_eq!(v4, ["0.0.0.0/0 2", "198.18.7.0/24 1"]);
        let explicit = Acl {
            allow: vec![p("0.0.0.0/0")],
            deny: vec![p("198.18.0.0/16")],
        };
        assert_eq!(explicit.entries(false).len(), 2);
        let deny_only = Acl {
            allow: vec![],
            deny: vec![p("2001:db8::/32")],
        };
        assert_eq!(deny_only.entries(true).len(), 1);
        assert!(deny_only.entries(false).is_empty());
    }

    #[test]
    fn bad_lists_are_refused_with_the_fix() {
        let cases: [(Acl, bool, &str); 4] = [
            (
                Acl {
                    allow: vec![p("2001:db8::/32")],
                    deny: vec![],
                },
                false,
                "allow has no IPv4 prefix",
            ),
            (
                Acl {
                    allow: vec![],
                    deny: vec![p("198.18.0.0/15")],
                },
                true,
                "deny has no IPv6 prefix",
            ),
            (
                Acl {
                    allow: vec![p("198.18.0.0/15")],
                    deny: vec![p("198.18.0.0/15")],
                },
                false,
                "in both allow and deny",
            ),
            (
                Acl {
                    allow: vec![p("198.18.0.0/15"), p("198.18.0.0/15")],
                    deny: vec![],
                },
                false,
                "lists 198.18.0.0/15 twice",
            ),
        ];
        for (acl, v6, want) in cases {
            let problems = acl.problems(v6);
            assert!(
                problems.iter().any(|e| e.contains(want)),
                "{acl:?}: {problems:?}"
            );
        }
        let ok = Acl {
            allow: vec![p("198.18.0.0/15"), p("2001:db8::/32")],
            deny: vec![],
        };
        assert!(ok.problems(false).is_empty());
        assert!(ok.problems(true).is_empty());
    }
}
