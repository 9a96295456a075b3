//! The match of `vipctl trace --live --match EXPR`: a small tcpdump-like language,
//! parsed into the [`TraceCtl`] the datapath evaluates.
//!
//! ```text
//! expr := term ("and" term)*
//! term := "tcp" | "udp" | "icmp" | "icmp6" | "ip" | "ip6"
//!       | ["src" | "dst"] ["host" | "net"] ADDR[/LEN]
//!       | ["src" | "dst"] "port" N
//!       | "vip" ADDR            (same as "dst host ADDR")
//! ```
//! Without `src` or `dst`, an address or port term holds when either side matches. Every
//! term must hold (`and`; there is no `or` or `not`). Each kind of term may be given once
//! (one source, one destination, one either-side address, one protocol...), so an
//! expression never asks for two things of one field.

use std::net::IpAddr;

use vip_common::{
    FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TRACE_M_DPORT,
    TRACE_M_DST, TRACE_M_FAMILY, TRACE_M_HOST, TRACE_M_PORT, TRACE_M_PROTO, TRACE_M_SPORT,
    TRACE_M_SRC, TRACE_SNAP_MAX, TraceCtl,
};

/// Why a match expression was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Nothing to match.
    #[error("the match is empty: give terms such as 'dst port 443 and tcp'")]
    Empty,
    /// A word that starts no term.
    #[error(
        "word {pos} ({word:?}) is not a term: expected tcp, udp, icmp, icmp6, ip, ip6, src, dst, host, net, port or vip"
    )]
    Unknown {
        /// 1-based word number.
        pos: usize,
        /// The word.
        word: String,
    },
    /// The expression ends inside a term.
    #[error("the match ends after {after:?}: it needs {wanted}")]
    Incomplete {
        /// The last word.
        after: String,
        /// What should follow.
        wanted: &'static str,
    },
    /// Two terms were not joined by `and`.
    #[error(
        "word {pos} ({word:?}) follows a whole term: join terms with 'and' (there is no 'or' or 'not')"
    )]
    NeedAnd {
        /// 1-based word number.
        pos: usize,
        /// The word.
        word: String,
    },
    /// Not an address or prefix.
    #[error("{word:?} is not an IPv4 or IPv6 address or ADDR/LEN prefix")]
    Address {
        /// The word.
        word: String,
    },
    /// A prefix length out of range or with host bits set.
    #[error("{word:?}: {why}")]
    Prefix {
        /// The word.
        word: String,
        /// What is wrong.
        why: String,
    },
    /// Not a port.
    #[error("{word:?} is not a port (1-65535)")]
    Port {
        /// The word.
        word: String,
    },
    /// The same kind of term twice.
    #[error("{what} is given twice: a packet has one, so give it once")]
    Twice {
        /// The kind of term.
        what: &'static str,
    },
    /// IPv4 and IPv6 terms together: nothing could match.
    #[error("the match mixes IPv4 and IPv6 ({word:?}): no packet is both")]
    MixedFamilies {
        /// The term that disagreed.
        word: String,
    },
    /// A protocol that contradicts the family.
    #[error("{proto} does not travel over {family}")]
    ProtoFamily {
        /// The protocol word.
        proto: &'static str,
        /// The family.
        family: &'static str,
    },
    /// Port terms with a protocol that has none.
    #[error("port terms match TCP and UDP packets only, not {proto}")]
    PortWithoutPorts {
        /// The protocol word.
        proto: &'static str,
    },
    /// A snap length out of range.
    #[error("snap length {0} is out of range: 0..={TRACE_SNAP_MAX}")]
    SnapLen(u32),
}

/// Which side an address or port term is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
    Either,
}

/// Parses `expr` into an armed [`TraceCtl`] copying `snap_len` frame bytes per record.
pub fn parse(expr: &str, snap_len: u32) -> Result<TraceCtl, MatchError> {
    if snap_len as usize > TRACE_SNAP_MAX {
        return Err(MatchError::SnapLen(snap_len));
    }
    let words: Vec<&str> = expr.split_whitespace().collect();
    if words.is_empty() {
        return Err(MatchError::Empty);
    }
    let mut ctl = TraceCtl {
        active: 1,
        snap_len,
        ..TraceCtl::default()
    };
    let mut proto_word: Option<&'static str> = None;
    let mut i = 0;
    loop {
        i = term(&words, i, &mut ctl, &mut proto_word)?;
        match words.get(i) {
            None => break,
            Some(w) if w.eq_ignore_ascii_case("and") => {
                if i + 1 == words.len() {
                    return Err(MatchError::Incomplete {
                        after: (*w).to_string(),
                        wanted: "another term",
                    });
                }
                i += 1;
            }
            Some(w) => {
                return Err(MatchError::NeedAnd {
                    pos: i + 1,
                    word: (*w).to_string(),
                });
            }
        }
    }
    if let Some(p) = proto_word
        && p != "tcp"
        && p != "udp"
        && ctl.fields & (TRACE_M_SPORT | TRACE_M_DPORT | TRACE_M_PORT) != 0
    {
        return Err(MatchError::PortWithoutPorts { proto: p });
    }
    if ctl.fields & TRACE_M_PROTO != 0 && ctl.fields & TRACE_M_FAMILY != 0 {
        let (proto, family) = (proto_word.unwrap_or(""), ctl.family);
        if proto == "icmp" && family == FAMILY_V6 {
            return Err(MatchError::ProtoFamily {
                proto: "icmp",
                family: "IPv6 (use icmp6)",
            });
        }
        if proto == "icmp6" && family == FAMILY_V4 {
            return Err(MatchError::ProtoFamily {
                proto: "icmp6",
                family: "IPv4 (use icmp)",
            });
        }
    }
    Ok(ctl)
}

/// Parses the term starting at word `i`; returns the index after it.
fn term(
    words: &[&str],
    mut i: usize,
    ctl: &mut TraceCtl,
    proto_word: &mut Option<&'static str>,
) -> Result<usize, MatchError> {
    let w = words[i].to_ascii_lowercase();
    let next = |i: usize, wanted: &'static str| {
        words.get(i).copied().ok_or_else(|| MatchError::Incomplete {
            after: words[i - 1].to_string(),
            wanted,
        })
    };
    let set_proto = |ctl: &mut TraceCtl,
                     pw: &mut Option<&'static str>,
                     name: &'static str,
                     n: u8|
     -> Result<(), MatchError> {
        if ctl.fields & TRACE_M_PROTO != 0 {
            return Err(MatchError::Twice { what: "a protocol" });
        }
        ctl.fields |= TRACE_M_PROTO;
        ctl.proto = n;
        *pw = Some(name);
        Ok(())
    };
    match w.as_str() {
        "tcp" => set_proto(ctl, proto_word, "tcp", PROTO_TCP)?,
        "udp" => set_proto(ctl, proto_word, "udp", PROTO_UDP)?,
        "icmp" => set_proto(ctl, proto_word, "icmp", PROTO_ICMP)?,
        "icmp6" => set_proto(ctl, proto_word, "icmp6", PROTO_ICMPV6)?,
        "ip" => set_family(ctl, FAMILY_V4, words[i])?,
        "ip6" => set_family(ctl, FAMILY_V6, words[i])?,
        "vip" => {
            let a = next(i + 1, "an address after 'vip'")?;
            address(ctl, Side::Dst, a, true)?;
            return Ok(i + 2);
        }
        "src" | "dst" | "host" | "net" | "port" => {
            let side = match w.as_str() {
                "src" => {
                    i += 1;
                    Side::Src
                }
                "dst" => {
                    i += 1;
                    Side::Dst
                }
                _ => Side::Either,
            };
            let wanted = "host ADDR, net PREFIX, port N or an address";
            let kind = next(i, wanted)?.to_ascii_lowercase();
            match kind.as_str() {
                "port" => {
                    let p = next(i + 1, "a port number")?;
                    port(ctl, side, p)?;
                    return Ok(i + 2);
                }
                "host" => {
                    let a = next(i + 1, "an address")?;
                    address(ctl, side, a, true)?;
                    return Ok(i + 2);
                }
                "net" => {
                    let a = next(i + 1, "a prefix ADDR/LEN")?;
                    address(ctl, side, a, false)?;
                    return Ok(i + 2);
                }
                _ if side != Side::Either => {
                    address(ctl, side, words[i], false)?;
                    return Ok(i + 1);
                }
                _ => {
                    return Err(MatchError::Unknown {
                        pos: i + 1,
                        word: words[i].to_string(),
                    });
                }
            }
        }
        _ => {
            return Err(MatchError::Unknown {
                pos: i + 1,
                word: words[i].to_string(),
            });
        }
    }
    Ok(i + 1)
}

fn set_family(ctl: &mut TraceCtl, family: u8, word: &str) -> Result<(), MatchError> {
    if ctl.fields & TRACE_M_FAMILY != 0 && ctl.family != family {
        return Err(MatchError::MixedFamilies {
            word: word.to_string(),
        });
    }
    ctl.fields |= TRACE_M_FAMILY;
    ctl.family = family;
    Ok(())
}

fn port(ctl: &mut TraceCtl, side: Side, word: &str) -> Result<(), MatchError> {
    let p: u16 = word
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| MatchError::Port {
            word: word.to_string(),
        })?;
    let (bit, what) = match side {
        Side::Src => (TRACE_M_SPORT, "a source port"),
        Side::Dst => (TRACE_M_DPORT, "a destination port"),
        Side::Either => (TRACE_M_PORT, "a port without src/dst"),
    };
    if ctl.fields & bit != 0 {
        return Err(MatchError::Twice { what });
    }
    ctl.fields |= bit;
    match side {
        Side::Dst => ctl.dst_port_be = p.to_be(),
        _ => ctl.src_port_be = p.to_be(),
    }
    Ok(())
}

/// An address (`host`: no length allowed) or prefix term.
fn address(ctl: &mut TraceCtl, side: Side, word: &str, host: bool) -> Result<(), MatchError> {
    let bad = || MatchError::Address {
        word: word.to_string(),
    };
    let (addr, len) = match word.split_once('/') {
        Some(_) if host => {
            return Err(MatchError::Prefix {
                word: word.to_string(),
                why: "'host' takes one address; use 'net' for a prefix".into(),
            });
        }
        Some((a, l)) => {
            let a: IpAddr = a.parse().map_err(|_| bad())?;
            let l: u8 = l.parse().map_err(|_| MatchError::Prefix {
                word: word.to_string(),
                why: "the length after '/' is not a number".into(),
            })?;
            (a, l)
        }
        None => {
            let a: IpAddr = word.parse().map_err(|_| bad())?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let (family, octets, max): (u8, [u8; 16], u8) = match addr {
        IpAddr::V4(a) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, o, 32)
        }
        IpAddr::V6(a) => (FAMILY_V6, a.octets(), 128),
    };
    if len > max {
        return Err(MatchError::Prefix {
            word: word.to_string(),
            why: format!("the length is more than {max}"),
        });
    }
    let mut mask = [0u8; 16];
    for (i, m) in mask.iter_mut().enumerate().take(usize::from(max / 8)) {
        let bits = usize::from(len).saturating_sub(i * 8).min(8);
        *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    if octets.iter().zip(&mask).any(|(o, m)| o & !m != 0) {
        return Err(MatchError::Prefix {
            word: word.to_string(),
            why: format!("bits are set after the first {len}: did you mean the network address?"),
        });
    }
    if ctl.fields & TRACE_M_FAMILY != 0 && ctl.family != family {
        return Err(MatchError::MixedFamilies {
            word: word.to_string(),
        });
    }
    let (bit, what) = match side {
        Side::Src => (TRACE_M_SRC, "a source address"),
        Side::Dst => (TRACE_M_DST, "a destination address"),
        Side::Either => (TRACE_M_HOST, "an address without src/dst"),
    };
    if ctl.fields & bit != 0 {
        return Err(MatchError::Twice { what });
    }
    // A source term and an either-side term would share the `src` fields.
    if side != Side::Dst && ctl.fields & (TRACE_M_SRC | TRACE_M_HOST) != 0 {
        return Err(MatchError::Twice {
            what: "a source address (src, host or net without dst)",
        });
    }
    ctl.fields |= bit | TRACE_M_FAMILY;
    ctl.family = family;
    let words = |b: [u8; 16]| -> [u32; 4] {
        core::array::from_fn(|i| {
            u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        })
    };
    match side {
        Side::Dst => {
            ctl.dst = words(octets);
            ctl.dst_mask = words(mask);
        }
        _ => {
            ctl.src = words(octets);
            ctl.src_mask = words(mask);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// The words a packet's addresses become in a `FlowKey` (network order in memory).
    fn key_words(a: IpAddr) -> [u32; 4] {
        let mut o = [0u8; 16];
        match a {
            IpAddr::V4(a) => o[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => o = a.octets(),
        }
        core::array::from_fn(|i| {
            u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
        })
    }

    fn hit(expr: &str, proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> bool {
        let ctl = parse(expr, 0).unwrap();
        let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let family = if s.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
        ctl.matches(
            family,
            proto,
            &key_words(s),
            &key_words(d),
            sport.to_be(),
            dport.to_be(),
        )
    }

    #[test]
    fn expressions_match_what_they_say() {
        let t = PROTO_TCP;
        let cases: &[(&str, u8, &str, u16, &str, u16, bool)] = &[
            (
                "src 198.18.0.0/16 and dst port 443",
                t,
                "198.18.7.9",
                40000,
                "198.19.0.10",
                443,
                true,
            ),
            (
                "src 198.18.0.0/16 and dst port 443",
                t,
                "198.19.7.9",
                40000,
                "198.19.0.10",
                443,
                false,
            ),
            (
                "src 198.18.0.0/16 and dst port 443",
                t,
                "198.18.7.9",
                40000,
                "198.19.0.10",
                80,
                false,
            ),
            (
                "src net 198.18.0.0/15",
                t,
                "198.19.1.1",
                1,
                "198.18.0.1",
                2,
                true,
            ),
            (
                "host 198.19.0.10",
                t,
                "198.18.0.1",
                1,
                "198.19.0.10",
                2,
                true,
            ),
            (
                "host 198.19.0.10",
                t,
                "198.19.0.10",
                1,
                "198.18.0.1",
                2,
                true,
            ),
            (
                "host 198.19.0.10",
                t,
                "198.19.0.11",
                1,
                "198.18.0.1",
                2,
                false,
            ),
            ("port 443", t, "198.18.0.1", 443, "198.19.0.1", 9, true),
            ("port 443", t, "198.18.0.1", 9, "198.19.0.1", 443, true),
            ("port 443", t, "198.18.0.1", 9, "198.19.0.1", 9, false),
            (
                "udp and vip 198.19.0.10",
                PROTO_UDP,
                "198.18.0.1",
                1,
                "198.19.0.10",
                53,
                true,
            ),
            (
                "udp and vip 198.19.0.10",
                t,
                "198.18.0.1",
                1,
                "198.19.0.10",
                53,
                false,
            ),
            (
                "dst 2001:db8::/32 and tcp",
                t,
                "2001:db9::1",
                1,
                "2001:db8::10",
                80,
                true,
            ),
            (
                "dst 2001:db8::/32 and tcp",
                t,
                "198.18.0.1",
                1,
                "198.19.0.10",
                80,
                false,
            ),
            ("ip6", t, "2001:db9::1", 1, "2001:db8::10", 80, true),
            ("ip", t, "2001:db9::1", 1, "2001:db8::10", 80, false),
            (
                "src host 198.18.0.1 AND dst host 198.19.0.10 and src port 5 and dst port 6",
                t,
                "198.18.0.1",
                5,
                "198.19.0.10",
                6,
                true,
            ),
        ];
        for (expr, proto, s, sp, d, dp, want) in cases {
            assert_eq!(
                hit(expr, *proto, s, *sp, d, *dp),
                *want,
                "{expr}: {s}:{sp} -> {d}:{dp}"
            );
        }
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "the match is empty"),
            ("src", "needs host ADDR, net PREFIX, port N or an address"),
            ("dst port", "needs a port number"),
            ("dst port 0", "is not a port"),
            ("dst port 70000", "is not a port"),
            ("tcp or udp", "join terms with 'and'"),
            ("tcp and", "needs another term"),
            ("frob", "word 1 (\"frob\") is not a term"),
            ("tcp and udp", "a protocol is given twice"),
            ("src 198.18.0.1/16", "bits are set after the first 16"),
            ("src 198.18.0.0/33", "the length is more than 32"),
            ("host 198.18.0.0/16", "'host' takes one address"),
            ("src 198.18.0.300", "is not an IPv4 or IPv6 address"),
            ("src 198.18.0.1 and dst 2001:db8::1", "mixes IPv4 and IPv6"),
            ("ip6 and src 198.18.0.1", "mixes IPv4 and IPv6"),
            (
                "icmp and dst port 80",
                "port terms match TCP and UDP packets only",
            ),
            ("icmp and ip6", "use icmp6"),
            ("src 198.18.0.1 and host 198.19.0.1", "given twice"),
            ("port 1 and port 2", "given twice"),
        ];
        for (expr, want) in cases {
            let e = parse(expr, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{expr:?}: {e:?} lacks {want:?}");
        }
        assert!(
            parse("tcp", 257)
                .unwrap_err()
                .to_string()
                .contains("snap length 257")
        );
    }

    proptest! {
        #![proptest_config(crate::property_cases::cases())]

        /// `src net P/L` holds for exactly the addresses whose first L bits are P's.
        #[test]
        fn a_prefix_matches_exactly_its_addresses(net in any::<u32>(), len in 0u8..=32, addr in any::<u32>()) {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let net = net & mask;
            let expr = format!("src net {}/{len}", Ipv4Addr::from(net));
            let want = addr & mask == net;
            let a = Ipv4Addr::from(addr).to_string();
            prop_assert_eq!(hit(&expr, PROTO_UDP, &a, 1, "198.19.0.1", 2), want);
        }

        /// The same for IPv6 destinations.
        #[test]
        fn a_v6_prefix_matches_exactly_its_addresses(net in any::<u128>(), len in 0u8..=128, addr in any::<u128>()) {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            let net = net & mask;
            let expr = format!("dst {}/{len}", Ipv6Addr::from(net));
            let want = addr & mask == net;
            let a = Ipv6Addr::from(addr).to_string();
            prop_assert_eq!(hit(&expr, PROTO_TCP, "2001:db8::1", 1, &a, 2), want);
        }

        /// Any text gets a parse or an error, never a panic.
        #[test]
        fn any_text_is_parsed_or_refused(s in "[a-z0-9 ./:]{0,40}") {
            let _ = parse(&s, 64);
        }
    }
}
