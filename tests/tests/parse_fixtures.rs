//! `vip_lb` with no VIP configured: every frame, well-formed or not, is passed to the
//! kernel untouched and counted under the right reason.

use vip_common::Reason;
use vip_tests::{
    fixture::{Fixture, Output, action, load, run_table},
    packet::{L4, frame, sa},
    privileged::require_root,
};

fn cases() -> Vec<Fixture> {
    let tcp4 = frame(
        sa("198.18.0.1:40000"),
        sa("198.18.1.10:80"),
        L4::Tcp { syn: true },
        b"",
    );
    let udp6 = frame(
        sa("[2001:db8::1]:5000"),
        sa("[2001:db8:1::10]:53"),
        L4::Udp,
        b"q",
    );
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let mut vlan = tcp4[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    vlan.extend_from_slice(&tcp4[12..]);
    let mut qinq = tcp4[..12].to_vec();
    qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x08]);
    qinq.extend_from_slice(&tcp4[12..]);
    let mut bad_version = tcp4.clone();
    bad_version[14] = 0x65;
    let mut short_ihl = tcp4.clone();
    short_ihl[14] = 0x44;

    let pass = |name, input: Vec<u8>, reason| Fixture {
        name,
        input,
        verdict: action::PASS,
        output: Output::Unchanged,
        reason,
    };
    vec![
        pass("ipv4 tcp to a non-VIP", tcp4.clone(), Reason::PassNotVip),
        pass("ipv6 udp to a non-VIP", udp6.clone(), Reason::PassNotVip),
        // All-zero hardware and protocol types: not Ethernet/IPv4 ARP.
        pass("arp, zeroed", arp, Reason::PassArpMalformed),
        pass("one 802.1Q tag, ipv4 tcp", vlan, Reason::PassNotVip),
        pass("two VLAN tags (QinQ)", qinq, Reason::PassUnparsed),
        pass(
            "ipv4 header cut short",
            tcp4[..14 + 12].to_vec(),
            Reason::PassMalformed,
        ),
        // The address is read and is no VIP's: passed before the rest is looked at.
        pass(
            "tcp ports cut short, non-VIP address",
            tcp4[..14 + 20 + 3].to_vec(),
            Reason::PassNotVip,
        ),
        pass(
            "ipv6 header cut short",
            udp6[..14 + 39].to_vec(),
            Reason::PassMalformed,
        ),
        pass(
            "udp ports cut short, non-VIP address",
            udp6[..14 + 40 + 2].to_vec(),
            Reason::PassNotVip,
        ),
        pass("ipv4 version field 6", bad_version, Reason::PassMalformed),
        pass("ipv4 IHL below 5", short_ihl, Reason::PassMalformed),
        pass(
            "vlan tag cut short",
            tcp4[..12]
                .iter()
                .chain(&[0x81, 0x00, 0x00])
                .copied()
                .collect(),
            Reason::PassUnparsed,
        ),
    ]
}

#[test]
fn unconfigured_lb_passes_everything_untouched() {
    if !require_root("unconfigured_lb_passes_everything_untouched") {
        return;
    }
    let mut ebpf = load(
        vip_user::datapath::ebpf::VIP_LB,
        vip_user::datapath::ebpf::PROG_LB,
    );
    run_table(&mut ebpf, vip_user::datapath::ebpf::PROG_LB, &cases());
}
