//! Announcing a VIP from user space: gratuitous ARP (request and reply forms) and
//! unsolicited neighbour advertisements (Override, to all nodes), sent through an
//! `AF_PACKET` socket on each interface of a group when the group becomes active; and
//! the solicited-node multicast MAC of each announced IPv6 VIP added to the interface's
//! filter (`SIOCADDMULTI`), so a real NIC delivers the solicitations for it.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use vip_common::{ETH_P_ARP, ETH_P_IPV6, PROTO_ICMPV6};

/// The MAC of an interface of this process's network namespace (`SIOCGIFHWADDR`:
/// sysfs shows the namespace it was mounted in, which `vipd run --netns` does not
/// remount).
pub fn interface_mac(iface: &str) -> io::Result<[u8; 6]> {
    let (fd, mut req) = ifreq_for(iface)?;
    // SAFETY: req is a valid ifreq for this ioctl, which fills its hwaddr member.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mac = [0u8; 6];
    // SAFETY: SIOCGIFHWADDR wrote the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(mac)
}

/// True when the interface is up with carrier (`IFF_RUNNING`), in this process's
/// network namespace.
pub fn has_carrier(iface: &str) -> io::Result<bool> {
    let (fd, mut req) = ifreq_for(iface)?;
    // SAFETY: req is a valid ifreq for this ioctl, which fills its flags member.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS wrote the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(i32::from(flags) & libc::IFF_RUNNING != 0)
}

/// A datagram socket for interface ioctls and an `ifreq` naming `iface`.
fn ifreq_for(iface: &str) -> io::Result<(OwnedFd, libc::ifreq)> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zero is a valid start.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    Ok((fd, req))
}

/// Gratuitous ARP, request form (RFC 5227 "ARP announcement"): sender and target are
/// the VIP, to broadcast.
pub fn garp_request(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    arp_frame(1, mac, vip, [0; 6])
}

/// Gratuitous ARP, reply form (what some routers only learn from).
pub fn garp_reply(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    arp_frame(2, mac, vip, mac)
}

fn arp_frame(op: u16, mac: [u8; 6], vip: Ipv4Addr, tha: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&vip.octets());
    f.resize(60, 0);
    f
}

/// Unsolicited neighbour advertisement (RFC 4861 7.2.6): from the VIP to all nodes,
/// Override set, Solicited clear, with the target link-layer address.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut msg = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    msg.extend_from_slice(&vip.octets());
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&mac);
    let c = icmpv6_checksum(vip, all_nodes, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[PROTO_ICMPV6, 255]);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&msg);
    f
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, PROTO_ICMPV6]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The announcements of `vip` from an interface with `mac`: two ARP frames for IPv4,
/// one advertisement for IPv6.
pub fn announcements(mac: [u8; 6], vip: IpAddr) -> Vec<Vec<u8>> {
    match vip {
        IpAddr::V4(a) => vec![garp_request(mac, a), garp_reply(mac, a)],
        IpAddr::V6(a) => vec![unsolicited_na(mac, a)],
    }
}

/// An `AF_PACKET` socket that sends whole frames out of one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a socket for interface `ifindex` (needs `CAP_NET_RAW`).
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: fd is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex: ifindex as i32,
        })
    }

    /// Sends one frame (from its Ethernet header on).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sa are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The solicited-node multicast MAC of an IPv6 address: 33:33:ff and its low 24 bits.
pub fn solicited_node_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, 0xff, o[13], o[14], o[15]]
}

/// Adds (`join`) or removes a multicast MAC on interface `iface`'s receive filter, as
/// `ip maddr add|del` does (`SIOCADDMULTI` / `SIOCDELMULTI`).
pub fn multicast_mac(iface: &str, mac: [u8; 6], join: bool) -> io::Result<()> {
    let (fd, mut req) = ifreq_for(iface)?;
    // SAFETY: writing the hwaddr member of the union, as SIOCADDMULTI reads it.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::AF_UNSPEC as u16;
        for (d, s) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
    }
    let op = if join {
        libc::SIOCADDMULTI
    } else {
        libc::SIOCDELMULTI
    };
    // SAFETY: req is a valid ifreq for this ioctl.
    if unsafe { libc::ioctl(fd.as_raw_fd(), op, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_request_names_the_vip_as_sender_and_target() {
        let mac = [2, 0, 0, 0, 0, 9];
        let f = garp_request(mac, Ipv4Addr::new(198, 18, 1, 10));
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[198, 18, 1, 10]);
        assert_eq!(&f[38..42], &[198, 18, 1, 10]);
        let r = garp_reply(mac, Ipv4Addr::new(198, 18, 1, 10));
        assert_eq!(&r[20..22], &[0, 2]);
        assert_eq!(&r[32..38], &mac);
    }

    #[test]
    fn unsolicited_na_checksums_to_zero() {
        let vip: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let f = unsolicited_na([2, 0, 0, 0, 0, 9], vip);
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        // The checksum over a message that carries its checksum is zero (inverted).
        assert_eq!(icmpv6_checksum(vip, all_nodes, &f[54..]), 0);
        assert_eq!(f[54 + 4], 0x20, "Override only");
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    }
}
