//! Proxy ARP and NDP in `vip_lb` (issue 13): a table of input frame -> verdict + exact
//! output frame + reason counter. Requests are built here byte by byte, the expected
//! answers too (RFC 826 and RFC 4861 field by field, the ICMPv6 checksum with a
//! checksum function of this file), and every answer's checksum is checked again by
//! etherparse.
//!
//! Groups: 0 active, 1 standby. Announced: 198.18.1.10 and 2001:db8:1::10 in group 0
//! (each the address of two VIPs: one answer all the same), 198.18.1.20 and
//! 2001:db8:1::20 in group 1. `BPF_PROG_TEST_RUN` receives on the namespace's loopback
//! (ifindex 1), whose MAC the datapath is given as [`LB_MAC`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vip_common::{HA_ROLE_ACTIVE, HA_ROLE_STANDBY, HaGroup, PROTO_TCP, PROTO_UDP, Reason};
use vip_tests::{
    fixture::{Fixture, Output, action, run_table_on},
    packet::{CLIENT_MAC, LB_MAC, sa, with_vlan},
    privileged::require_root,
};
use vip_user::datapath::{Datapath, Limits, keys::vip_key};

/// Where `BPF_PROG_TEST_RUN` says a frame arrived without a context: the loopback.
const TEST_RUN_IFINDEX: u32 = 1;

const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT6: &str = "2001:db8::1";
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const VIP4_STANDBY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
const VIP6: &str = "2001:db8:1::10";
const VIP6_STANDBY: &str = "2001:db8:1::20";

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn setup() -> Datapath {
    let limits = Limits {
        max_vips: 16,
        max_backends: 16,
        table_size: 13,
        max_conns: 1024,
    };
    let mut dp = Datapath::load(&limits, None).expect("loading vip_lb");
    for (i, vip) in [
        "198.18.1.10:80",
        "198.18.1.10:53",
        "[2001:db8:1::10]:80",
        "[2001:db8:1::10]:53",
        "198.18.1.20:80",
        "[2001:db8:1::20]:80",
    ]
    .iter()
    .enumerate()
    {
        let proto = if vip.ends_with(":53") {
            PROTO_UDP
        } else {
            PROTO_TCP
        };
        dp.publish_vip(&vip_key(sa(vip), proto), i as u32, 0, i as u32, &[])
            .unwrap();
    }
    for (addr, group) in [
        (IpAddr::V4(VIP4), 0),
        (IpAddr::V6(v6(VIP6)), 0),
        (IpAddr::V4(VIP4_STANDBY), 1),
        (IpAddr::V6(v6(VIP6_STANDBY)), 1),
    ] {
        dp.announce(addr, group).unwrap();
    }
    for (index, role) in [(0, HA_ROLE_ACTIVE), (1, HA_ROLE_STANDBY)] {
        dp.set_ha_group(
            index,
            &HaGroup {
                role,
                ..HaGroup::default()
            },
        )
        .unwrap();
    }
    dp.set_if_mac(TEST_RUN_IFINDEX, LB_MAC).unwrap();
    dp
}

/// An Ethernet/IPv4 ARP frame, padded to the 60-byte Ethernet minimum as on the wire.
fn arp(
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

fn arp_request(tpa: Ipv4Addr) -> Vec<u8> {
    arp([0xff; 6], 1, CLIENT_MAC, CLIENT4, [0; 6], tpa)
}

/// RFC 1071 checksum over the IPv6 pseudo-header and an ICMPv6 message.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&dst.octets());
    bytes.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 58]);
    bytes.extend_from_slice(msg);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv6/ICMPv6 frame with a correct checksum.
fn icmpv6(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    mut msg: Vec<u8>,
) -> Vec<u8> {
    let c = icmpv6_checksum(src, dst, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&msg);
    f
}

fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

fn multicast_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A neighbour solicitation message for `target` with `options`.
fn ns_msg(target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(options);
    m
}

/// A source link-layer address option with the client's MAC.
fn sll_option() -> Vec<u8> {
    let mut o = vec![1, 1];
    o.extend_from_slice(&CLIENT_MAC);
    o
}

/// The usual solicitation: from the client, to `target`'s solicited-node address.
fn ns(target: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let dst = solicited_node(target);
    icmpv6(
        multicast_mac(dst),
        CLIENT_MAC,
        v6(CLIENT6),
        dst,
        hop_limit,
        ns_msg(target, &sll_option()),
    )
}

/// The advertisement the LB must send for `target`: from `target`, to `dst` at
/// `dst_mac`, with `flags` and a target link-layer option of [`LB_MAC`].
fn na(target: Ipv6Addr, dst: Ipv6Addr, dst_mac: [u8; 6], flags: u8) -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&LB_MAC);
    icmpv6(dst_mac, LB_MAC, target, dst, 255, m)
}

const NA_SOLICITED_OVERRIDE: u8 = 0x60;
const NA_OVERRIDE: u8 = 0x20;

fn pass(name: &'static str, input: Vec<u8>, reason: Reason) -> Fixture {
    Fixture {
        name,
        input,
        verdict: action::PASS,
        output: Output::Unchanged,
        reason,
    }
}

fn answer(name: &'static str, input: Vec<u8>, output: Vec<u8>, reason: Reason) -> Fixture {
    Fixture {
        name,
        input,
        verdict: action::TX,
        output: Output::Bytes(output),
        reason,
    }
}

fn arp_cases() -> Vec<Fixture> {
    let reply = arp(CLIENT_MAC, 2, LB_MAC, VIP4, CLIENT_MAC, CLIENT4);
    // The reply as RFC 826 has it: sender = the VIP at the LB's MAC, target = the asker;
    // the Ethernet source is the LB, the destination the asker. Padding is kept.
    let mut reply_eth_src_lb = reply.clone();
    reply_eth_src_lb[6..12].copy_from_slice(&LB_MAC);
    let short = arp_request(VIP4)[..14 + 20].to_vec();
    let mut ieee802 = arp_request(VIP4);
    ieee802[14 + 1] = 6; // hardware type 6 (IEEE 802)
    let mut plen6 = arp_request(VIP4);
    plen6[14 + 5] = 16; // protocol address length 16
    let gratuitous = arp([0xff; 6], 1, CLIENT_MAC, VIP4, [0; 6], VIP4);
    let their_reply = arp(LB_MAC, 2, CLIENT_MAC, CLIENT4, LB_MAC, VIP4);
    // RFC 5227 probe: sender address unspecified; the answer goes to 0.0.0.0 at the
    // asker's MAC, as the kernel's own.
    let probe = arp(
        [0xff; 6],
        1,
        CLIENT_MAC,
        Ipv4Addr::UNSPECIFIED,
        [0; 6],
        VIP4,
    );
    let mut probe_reply = arp(
        CLIENT_MAC,
        2,
        LB_MAC,
        VIP4,
        CLIENT_MAC,
        Ipv4Addr::UNSPECIFIED,
    );
    probe_reply[6..12].copy_from_slice(&LB_MAC);
    vec![
        answer(
            "arp request for a VIP: reply with the interface's MAC",
            arp_request(VIP4),
            reply_eth_src_lb.clone(),
            Reason::ArpReplied,
        ),
        answer(
            "arp request for a VIP, one 802.1Q tag: reply keeps the tag",
            with_vlan(&arp_request(VIP4), 7),
            with_vlan(&reply_eth_src_lb, 7),
            Reason::ArpReplied,
        ),
        answer(
            "arp probe (sender 0.0.0.0) for a VIP",
            probe,
            probe_reply,
            Reason::ArpReplied,
        ),
        pass(
            "arp request for a non-VIP",
            arp_request(Ipv4Addr::new(198, 18, 1, 99)),
            Reason::PassArpNotVip,
        ),
        pass(
            "arp request for a VIP of a standby group",
            arp_request(VIP4_STANDBY),
            Reason::PassNeighNotActive,
        ),
        pass("arp cut short", short, Reason::PassArpMalformed),
        pass(
            "arp with hardware type 6",
            ieee802,
            Reason::PassArpMalformed,
        ),
        pass(
            "arp with protocol address length 16",
            plen6,
            Reason::PassArpMalformed,
        ),
        pass(
            "gratuitous arp for a VIP (another node announcing it)",
            gratuitous,
            Reason::PassArpNotVip,
        ),
        pass("arp reply about a VIP", their_reply, Reason::PassArpNotVip),
    ]
}

fn ndp_cases() -> Vec<Fixture> {
    let vip = v6(VIP6);
    let client = v6(CLIENT6);
    let want = na(vip, client, CLIENT_MAC, NA_SOLICITED_OVERRIDE);
    // Neighbour unreachability detection: unicast to the VIP, no option (the frame
    // grows by the advertisement's target link-layer option).
    let nud = icmpv6(LB_MAC, CLIENT_MAC, client, vip, 255, ns_msg(vip, &[]));
    // Duplicate address detection: from ::, no source link-layer option, a nonce.
    let dad_dst = solicited_node(vip);
    let dad = icmpv6(
        multicast_mac(dad_dst),
        CLIENT_MAC,
        Ipv6Addr::UNSPECIFIED,
        dad_dst,
        255,
        ns_msg(vip, &[14, 1, 1, 2, 3, 4, 5, 6]),
    );
    let dad_answer = na(vip, v6("ff02::1"), [0x33, 0x33, 0, 0, 0, 1], NA_OVERRIDE);
    let dad_with_sll = icmpv6(
        multicast_mac(dad_dst),
        CLIENT_MAC,
        Ipv6Addr::UNSPECIFIED,
        dad_dst,
        255,
        ns_msg(vip, &sll_option()),
    );
    let mut no_target = ns(vip, 255);
    no_target.truncate(14 + 40 + 20);
    no_target[14 + 4..14 + 6].copy_from_slice(&20u16.to_be_bytes());
    let zero_opt = icmpv6(
        multicast_mac(dad_dst),
        CLIENT_MAC,
        client,
        dad_dst,
        255,
        ns_msg(vip, &[1, 0, 0, 0, 0, 0, 0, 0]),
    );
    let mut code1 = ns(vip, 255);
    code1[14 + 40 + 1] = 1;
    // Same low 24 bits as the VIP, so the same solicited-node address: it passes the
    // VIP-address filter and is told apart by its target.
    let sibling = v6("2001:db8:2::10");
    vec![
        answer(
            "ns for a VIP: solicited advertisement with checksum",
            ns(vip, 255),
            want.clone(),
            Reason::NdpAdvertised,
        ),
        answer(
            "ns for a VIP, one 802.1Q tag",
            with_vlan(&ns(vip, 255), 7),
            with_vlan(&want, 7),
            Reason::NdpAdvertised,
        ),
        answer(
            "unicast ns (unreachability detection) without options",
            nud,
            want,
            Reason::NdpAdvertised,
        ),
        answer(
            "dad probe for a VIP: unsolicited advertisement to all nodes",
            dad,
            dad_answer,
            Reason::NdpAdvertised,
        ),
        pass(
            "ns with hop limit 254",
            ns(vip, 254),
            Reason::PassNdpIgnored,
        ),
        pass(
            "ns too short for a target",
            no_target,
            Reason::PassNdpIgnored,
        ),
        pass(
            "ns with a zero-length option",
            zero_opt,
            Reason::PassNdpIgnored,
        ),
        pass("ns with code 1", code1, Reason::PassNdpIgnored),
        pass(
            "dad probe with a source link-layer option",
            dad_with_sll,
            Reason::PassNdpIgnored,
        ),
        pass(
            "ns for a non-VIP sharing the VIP's solicited-node address",
            ns(sibling, 255),
            Reason::PassNdpIgnored,
        ),
        pass(
            "ns for a non-VIP",
            ns(v6("2001:db8:1::99"), 255),
            Reason::PassNotVip,
        ),
        pass(
            "ns for a VIP of a standby group",
            ns(v6(VIP6_STANDBY), 255),
            Reason::PassNeighNotActive,
        ),
    ]
}

#[test]
fn proxy_arp_and_ndp_answer_for_active_groups_only() {
    if !require_root("proxy_arp_and_ndp_answer_for_active_groups_only") {
        return;
    }
    let mut dp = setup();
    let mut table = arp_cases();
    table.extend(ndp_cases());
    run_table_on(&mut dp, &table);
}

#[test]
fn a_group_made_active_is_answered_and_one_made_standby_is_not() {
    if !require_root("a_group_made_active_is_answered_and_one_made_standby_is_not") {
        return;
    }
    let mut dp = setup();
    for (index, role) in [(0, HA_ROLE_STANDBY), (1, HA_ROLE_ACTIVE)] {
        dp.set_ha_group(
            index,
            &HaGroup {
                role,
                ..HaGroup::default()
            },
        )
        .unwrap();
    }
    let mut reply = arp(CLIENT_MAC, 2, LB_MAC, VIP4_STANDBY, CLIENT_MAC, CLIENT4);
    reply[6..12].copy_from_slice(&LB_MAC);
    let vip6 = v6(VIP6_STANDBY);
    let table = vec![
        answer(
            "arp for the group made active",
            arp_request(VIP4_STANDBY),
            reply,
            Reason::ArpReplied,
        ),
        answer(
            "ns for the group made active",
            ns(vip6, 255),
            na(vip6, v6(CLIENT6), CLIENT_MAC, NA_SOLICITED_OVERRIDE),
            Reason::NdpAdvertised,
        ),
        pass(
            "arp for the group made standby",
            arp_request(VIP4),
            Reason::PassNeighNotActive,
        ),
        pass(
            "ns for the group made standby",
            ns(v6(VIP6), 255),
            Reason::PassNeighNotActive,
        ),
    ];
    run_table_on(&mut dp, &table);
    // Withdrawn: no longer answered even when active.
    dp.withdraw(IpAddr::V4(VIP4_STANDBY)).unwrap();
    dp.withdraw(IpAddr::V6(vip6)).unwrap();
    run_table_on(
        &mut dp,
        &[pass(
            "arp for a withdrawn address",
            arp_request(VIP4_STANDBY),
            Reason::PassArpNotVip,
        )],
    );
}
