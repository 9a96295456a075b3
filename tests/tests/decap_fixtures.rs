//! `vip_decap`, the backend side: tunnel packets for a local endpoint lose their outer
//! header and go to the kernel; everything else goes to the kernel untouched.

use std::net::IpAddr;

use vip_common::Reason;
use vip_tests::{
    fixture::{Fixture, Output, action, run_table_on},
    packet::{L4, Outer, frame, ipv4_fragment, sa, tunnelled, with_ipv4_options, with_vlan},
    privileged::require_root,
};
use vip_user::datapath::decap::Decap;

const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `inner` (a client frame) as the LB tunnels it to `dst` from `src`.
fn tunnel(inner: &[u8], src: &str, dst: &str) -> Vec<u8> {
    tunnelled(
        inner,
        BACKEND_MAC,
        GW_MAC,
        Outer {
            src: ip(src),
            dst: ip(dst),
            flow_label: 0x12345,
        },
    )
}

/// What the kernel must get: the tunnel frame's MACs (and tag), the inner packet.
fn decapsulated(tunnel_frame: &[u8], inner_frame: &[u8]) -> Output {
    let tagged = tunnel_frame[12] == 0x81;
    let mut out = tunnel_frame[..12].to_vec();
    if tagged {
        out.extend_from_slice(&tunnel_frame[12..16]);
    }
    out.extend_from_slice(&inner_frame[12..]);
    Output::Bytes(out)
}

fn decap(name: &'static str, input: Vec<u8>, output: Output) -> Fixture {
    Fixture {
        name,
        input,
        verdict: action::PASS,
        output,
        reason: Reason::Decapsulated,
    }
}

fn untouched(name: &'static str, input: Vec<u8>, reason: Reason) -> Fixture {
    Fixture {
        name,
        input,
        verdict: action::PASS,
        output: Output::Unchanged,
        reason,
    }
}

fn cases() -> Vec<Fixture> {
    let c4 = frame(
        sa("198.18.0.1:40000"),
        sa("198.18.1.10:80"),
        L4::Tcp { syn: true },
        b"",
    );
    let c6 = frame(
        sa("[2001:db8::1]:40000"),
        sa("[2001:db8:1::10]:80"),
        L4::Udp,
        b"query",
    );
    let ipip = tunnel(&c4, "198.19.0.7", "198.18.2.1");
    let ip6ip6 = tunnel(&c6, "2001:db8:ffff::7", "2001:db8:2::1");
    let v4in6 = tunnel(&c4, "2001:db8:ffff::7", "2001:db8:2::1");
    let v6in4 = tunnel(&c6, "198.19.0.7", "198.18.2.1");
    let tagged = tunnel(&with_vlan(&c4, 9), "198.19.0.7", "198.18.2.1");
    let tagged_inner = {
        // The tag stays; the inner frame is the untagged client frame.
        let mut f = with_vlan(&c4, 9);
        f.drain(12..16);
        f
    };
    let opts = with_ipv4_options(&ipip, &[1, 1, 1, 0]);
    let mut wrong_inner = ipip.clone();
    wrong_inner[14 + 9] = 41; // says IPv6 inside, carries IPv4
    vip_tests::packet::fix_ipv4_checksum(&mut wrong_inner, 14);
    vec![
        decap("IPIP", ipip.clone(), decapsulated(&ipip, &c4)),
        decap("IP6IP6", ip6ip6.clone(), decapsulated(&ip6ip6, &c6)),
        decap("IPv4-in-IPv6", v4in6.clone(), decapsulated(&v4in6, &c4)),
        decap("IPv6-in-IPv4", v6in4.clone(), decapsulated(&v6in4, &c6)),
        decap(
            "802.1Q tag kept",
            tagged.clone(),
            decapsulated(&tagged, &tagged_inner),
        ),
        decap(
            "outer IPv4 options removed too",
            opts.clone(),
            decapsulated(&opts, &c4),
        ),
        untouched(
            "tunnel to another host",
            tunnel(&c4, "198.19.0.7", "198.18.2.99"),
            Reason::PassNotVip,
        ),
        untouched("plain tcp to this host", c4.clone(), Reason::PassNotVip),
        untouched(
            "inner header is not what the outer says",
            wrong_inner,
            Reason::PassMalformed,
        ),
        untouched(
            "outer fragment",
            ipv4_fragment(&ipip, true, 0),
            Reason::PassUnparsed,
        ),
    ]
}

#[test]
fn decap_strips_local_tunnels_only() {
    if !require_root("decap_strips_local_tunnels_only") {
        return;
    }
    let mut d = Decap::load(None).expect("loading vip_decap");
    d.add_local(ip("198.18.2.1")).unwrap();
    d.add_local(ip("2001:db8:2::1")).unwrap();
    run_table_on(&mut d, &cases());
    // Removing the endpoint stops decapsulation.
    d.remove_local(ip("198.18.2.1")).unwrap();
    let ipip = &cases()[0].input;
    let (verdict, out) = vip_tests::fixture::run_xdp(d.program_mut(), ipip);
    assert_eq!(verdict, action::PASS);
    assert_eq!(&out, ipip);
}
