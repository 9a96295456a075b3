//! Addresses as operators write them, in the config file and on `vipctl`'s command line:
//! `198.18.1.10:80`, `[2001:db8::1]:80`, `198.18.1.10:*` (all ports), a bare address where
//! the port may be left out, and VIPs as `ADDR:PORT[/PROTO]`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use super::{Protocol, UnknownName, VipId};

/// Why a piece of text is not an address; every message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `[` without `]`.
    #[error("{text:?}: missing ']' after the IPv6 address")]
    UnclosedBracket {
        /// The whole text.
        text: String,
    },
    /// Inside brackets, not an IPv6 address.
    #[error("{text:?}: {inner:?} is not an IPv6 address")]
    NotIpv6 {
        /// The whole text.
        text: String,
        /// What stood in the brackets.
        inner: String,
    },
    /// Before the port, not an IPv4 address.
    #[error("{text:?}: {inner:?} is not an IPv4 address")]
    NotIpv4 {
        /// The whole text.
        text: String,
        /// What stood before the port.
        inner: String,
    },
    /// A port is needed here.
    #[error("{text:?}: a port is required, as {example}")]
    PortRequired {
        /// The whole text.
        text: String,
        /// How to write it with a port.
        example: String,
    },
    /// Neither an address nor an address with a port.
    #[error("{text:?} is not an address: write 198.18.1.10:80 or [2001:db8::1]:80")]
    NotAnAddress {
        /// The whole text.
        text: String,
    },
    /// An IPv6 address with a port but no brackets.
    #[error("{text:?}: put an IPv6 address with a port in brackets, as [{addr}]:{port}")]
    Ipv6WithoutBrackets {
        /// The whole text.
        text: String,
        /// The address part.
        addr: String,
        /// The port part.
        port: String,
    },
    /// Port 0 written as a number.
    #[error("{text:?}: port 0 is not a port; use * for all ports")]
    PortZero {
        /// The whole text.
        text: String,
    },
    /// Not a number from 1 to 65535, nor `*`.
    #[error("{text:?}: {port:?} is not a port (1-65535 or *)")]
    NotAPort {
        /// The whole text.
        text: String,
        /// The port part.
        port: String,
    },
    /// A VIP needs a port (or `*`).
    #[error("VIP {text:?} has no port: write ADDR:PORT, or ADDR:* for all ports")]
    VipWithoutPort {
        /// The whole text.
        text: String,
    },
    /// The protocol after `/` is not one vip balances.
    #[error(transparent)]
    Protocol(#[from] UnknownName),
}

impl FromStr for VipId {
    type Err = AddressError;
    /// `ADDR:PORT[/PROTO]`, `ADDR:*[/PROTO]`, IPv6 as `[ADDR]:PORT`; protocol defaults
    /// to tcp.
    fn from_str(s: &str) -> Result<Self, AddressError> {
        let (addr, proto) = match s.rsplit_once('/') {
            Some((a, p)) => (a, p.parse()?),
            None => (s, Protocol::Tcp),
        };
        let (ip, port) = parse_addr_port(addr, true)?;
        Ok(VipId {
            addr: ip,
            port: port.ok_or_else(|| AddressError::VipWithoutPort { text: s.into() })?,
            proto,
        })
    }
}

/// Parses `1.2.3.4:80`, `[2001:db8::1]:80`, `1.2.3.4:*` (port 0) or, if `port_optional`,
/// a bare address (port `None`). IPv6 with a port must be in brackets.
pub fn parse_addr_port(
    s: &str,
    port_optional: bool,
) -> Result<(IpAddr, Option<u16>), AddressError> {
    let s = s.trim();
    let text = || s.to_string();
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| AddressError::UnclosedBracket { text: text() })?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| AddressError::NotIpv6 {
            text: text(),
            inner: ip.into(),
        })?;
        return match after {
            "" if port_optional => Ok((IpAddr::V6(ip), None)),
            "" => Err(AddressError::PortRequired {
                text: text(),
                example: format!("[{ip}]:PORT"),
            }),
            p => Ok((
                IpAddr::V6(ip),
                Some(parse_port(s, p.strip_prefix(':').unwrap_or(p))?),
            )),
        };
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return if port_optional {
            Ok((ip, None))
        } else {
            Err(AddressError::PortRequired {
                text: text(),
                example: "ADDR:PORT".into(),
            })
        };
    }
    let (ip, port) = s
        .rsplit_once(':')
        .ok_or_else(|| AddressError::NotAnAddress { text: text() })?;
    if ip.contains(':') {
        return Err(AddressError::Ipv6WithoutBrackets {
            text: text(),
            addr: ip.into(),
            port: port.into(),
        });
    }
    let ip: Ipv4Addr = ip.parse().map_err(|_| AddressError::NotIpv4 {
        text: text(),
        inner: ip.into(),
    })?;
    Ok((IpAddr::V4(ip), Some(parse_port(s, port)?)))
}

fn parse_port(whole: &str, p: &str) -> Result<u16, AddressError> {
    if p == "*" {
        return Ok(0);
    }
    match p.parse::<u16>() {
        Ok(0) => Err(AddressError::PortZero { text: whole.into() }),
        Ok(n) => Ok(n),
        Err(_) => Err(AddressError::NotAPort {
            text: whole.into(),
            port: p.into(),
        }),
    }
}
