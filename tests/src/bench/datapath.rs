//! Sections 0–2: the floors, the datapath per packet (section 1) and with more state
//! (section 2), all through `BPF_PROG_TEST_RUN` in `vip_bench`'s restoring wrapper.

use anyhow::{Context, Result, ensure};
use aya::Ebpf;

use super::{
    insns,
    lbsetup::{self, Setup},
    packets,
    per_packet::{Floors, row},
    report::{NS_PER_PACKET, Report},
    testrun::{Case, Method, interleaved, run_once},
};
use crate::fixture::{action, hex};

/// Section titles.
pub const FLOORS: &str = "0. floors";
/// See [`FLOORS`].
pub const PER_PACKET: &str = "1. per packet (tunnel / dsr-l2)";
/// See [`FLOORS`].
pub const STAGES: &str = "1b. where the time goes (tunnel, IPv4 TCP established)";
/// See [`FLOORS`].
pub const SCALING: &str = "2. scaling with state";

/// The setup of section 1: Katran's published setup (16 backends, M = 65537).
pub const DEFAULT_SETUP: Setup = Setup {
    table_size: 65_537,
    extra_vips: 0,
    extra_table_size: 0,
    max_conns: 1_000_000,
    resolved_nexthops: true,
};

/// What the unwrapped datapath must do with a case's packet for the figure to be of the
/// path it is named after.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// `XDP_TX` with an outer header of this many bytes and this protocol number at the
    /// outer header's protocol field (offset from the frame start).
    Encap {
        grow: usize,
        proto_off: usize,
        proto: u8,
    },
    /// `XDP_TX`, same length, destination MAC rewritten.
    MacRewrite,
    /// `XDP_PASS`, untouched.
    Untouched,
}

fn floor_cases() -> Vec<Case> {
    let pkt = packets::tcp_v4(packets::client_v4());
    let c = |name: &str, prog, verdict| Case {
        name: name.into(),
        prog,
        packet: pkt.clone(),
        verdict,
    };
    vec![
        c("XDP_PASS, no wrapper", "bench_pass_bare", action::PASS),
        c("floor: XDP_PASS", "bench_pass", action::PASS),
        c(
            "floor: parse + swap MACs + XDP_TX",
            "bench_swap",
            action::TX,
        ),
        c(
            "floor: parse + IPIP encap + XDP_TX",
            "bench_encap",
            action::TX,
        ),
        c(
            "XDP_PASS + new flow each iteration",
            "bench_pass_vary",
            action::PASS,
        ),
    ]
}

/// The progressive stages (each the one before plus one step), then [`EXTRA_STAGES`]
/// single rows.
fn stage_cases() -> Vec<Case> {
    let client = packets::client_v4();
    let c = |name: &str, prog, packet, verdict| Case {
        name: name.into(),
        prog,
        packet,
        verdict,
    };
    vec![
        c(
            "stage: parse (Eth, IP, ports)",
            "bench_stage_parse",
            packets::tcp_v4(client),
            action::PASS,
        ),
        c(
            "stage: + VIP-address filter (hit)",
            "bench_stage_filter",
            packets::tcp_v4(client),
            action::PASS,
        ),
        c(
            "stage: + connection table (hit: backend)",
            "bench_stage_backend",
            packets::tcp_v4(client),
            action::PASS,
        ),
        c(
            "stage: + forward (next hop, IPIP)",
            "bench_stage_forward",
            packets::tcp_v4(client),
            action::TX,
        ),
        c(
            "parse + VIP-address filter miss (non-VIP)",
            "bench_stage_filter",
            packets::not_vip_v4(),
            action::DROP,
        ),
        c(
            "parse + VIP lookup in its slot (what a new flow adds)",
            "bench_stage_vip",
            packets::tcp_v4(client),
            action::PASS,
        ),
        c(
            "parse + VIP lookup in the VIP hash map",
            "bench_stage_vip_map",
            packets::tcp_v4(client),
            action::PASS,
        ),
    ]
}

/// Rows at the end of [`stage_cases`] that are not part of the progression.
const EXTRA_STAGES: usize = 3;

const IPV4_PROTO_OFF: usize = 14 + 9;
const IPV6_NEXT_OFF: usize = 14 + 6;

/// The new-flow row of the VIP with an access list, and the row it is compared with.
const ACL_NEW_FLOW: &str = "tunnel: TCP new flow (first ACK), VIP with a 1,000-prefix ACL";
const NEW_FLOW: &str = "tunnel: TCP new flow (first ACK, conn-table miss + insert)";

fn lb_cases() -> Vec<(Case, Expect)> {
    let v4 = Expect::Encap {
        grow: 20,
        proto_off: IPV4_PROTO_OFF,
        proto: vip_common::PROTO_IPIP,
    };
    let c = |name: &str, prog, packet, verdict| Case {
        name: name.into(),
        prog,
        packet,
        verdict,
    };
    let client = packets::client_v4();
    vec![
        (
            c(
                "tunnel: TCP established",
                "bench_lb",
                packets::tcp_v4(client),
                action::TX,
            ),
            v4,
        ),
        (
            c(
                "tunnel: TCP established, without the live-trace hook",
                "bench_lb_untraced",
                packets::tcp_v4(client),
                action::TX,
            ),
            v4,
        ),
        (
            c(
                NEW_FLOW,
                "bench_lb_new",
                packets::tcp_v4(client),
                action::TX,
            ),
            v4,
        ),
        (
            c(
                "tunnel: UDP established",
                "bench_lb",
                packets::udp_v4(),
                action::TX,
            ),
            v4,
        ),
        (
            c(
                "tunnel: IPv6 TCP established (IP6IP6)",
                "bench_lb",
                packets::tcp_v6(),
                action::TX,
            ),
            Expect::Encap {
                grow: 40,
                proto_off: IPV6_NEXT_OFF,
                proto: vip_common::PROTO_IPV6,
            },
        ),
        (
            c(
                "tunnel: ICMP frag-needed for a VIP flow",
                "bench_lb",
                packets::icmp_frag_needed_v4(),
                action::TX,
            ),
            v4,
        ),
        (
            c(
                "dsr-l2: TCP established",
                "bench_lb",
                packets::tcp_dsr_v4(client),
                action::TX,
            ),
            Expect::MacRewrite,
        ),
        (
            c(
                "dsr-l2: TCP new flow (first ACK)",
                "bench_lb_new",
                packets::tcp_dsr_v4(client),
                action::TX,
            ),
            Expect::MacRewrite,
        ),
        (
            c(
                ACL_NEW_FLOW,
                "bench_lb_new",
                packets::tcp_acl_v4(client),
                action::TX,
            ),
            v4,
        ),
        (
            c(
                "tunnel: TCP established, VIP with a 1,000-prefix ACL",
                "bench_lb",
                packets::tcp_acl_v4(client),
                action::TX,
            ),
            v4,
        ),
        (
            c(
                "non-VIP TCP",
                "bench_lb",
                packets::not_vip_v4(),
                action::PASS,
            ),
            Expect::Untouched,
        ),
    ]
}

/// Runs the unwrapped datapath once on the case's packet (which also creates the
/// connection-table entry the "established" cases need) and checks the result.
fn check(ebpf: &mut Ebpf, case: &Case, expect: Expect) -> Result<()> {
    let (verdict, out) = run_once(ebpf, "bench_lb_once", &case.packet)?;
    let input = &case.packet;
    let ok = verdict == case.verdict
        && match expect {
            Expect::Encap {
                grow,
                proto_off,
                proto,
            } => {
                out.len() == input.len() + grow
                    && out[proto_off] == proto
                    && out[14 + grow..] == input[14..]
            }
            Expect::MacRewrite => {
                out.len() == input.len() && out[..6] != input[..6] && out[12..] == input[12..]
            }
            Expect::Untouched => &out == input,
        };
    ensure!(
        ok,
        "{}: the datapath did not take the path this figure is named after: verdict {} \
         (want {}), {expect:?}\n  in  {}\n  out {}",
        case.name,
        action::name(verdict),
        action::name(case.verdict),
        hex(input),
        hex(&out)
    );
    Ok(())
}

/// Sections 0 and 1, measured interleaved in one loaded object.
pub fn per_packet(report: &mut Report, method: Method) -> Result<Floors> {
    let mut ebpf = lbsetup::load(DEFAULT_SETUP)?;
    let lb = lb_cases();
    for (case, expect) in &lb {
        check(&mut ebpf, case, *expect)?;
    }
    let mut cases = floor_cases();
    let nfloors = cases.len();
    cases.extend(lb.iter().map(|(c, _)| c.clone()));
    let nlb = cases.len();
    cases.extend(stage_cases());
    let t = interleaved(&mut ebpf, &cases, method)?;
    let floors = Floors {
        pass: t[1].median,
        swap: t[2].median,
        encap: t[3].median,
    };
    let notes = [
        "the restoring wrapper costs the pass floor minus this",
        "wrapped, like every row below",
        "wrapped",
        "wrapped; outer IPv4 header with checksum",
        "the flow change of the new-flow rows costs this minus the pass floor",
    ];
    for (i, note) in notes.iter().enumerate() {
        report
            .push(FLOORS, cases[i].name.clone(), NS_PER_PACKET, t[i])
            .note = (*note).into();
    }
    let vary = t[4].median - t[1].median;
    let no_acl = cases
        .iter()
        .position(|c| c.name == NEW_FLOW)
        .map(|i| t[i].median);
    for (i, c) in cases.iter().enumerate().take(nlb).skip(nfloors) {
        let mut note = if c.prog == "bench_lb_new" {
            format!("includes ~{vary:.0} ns of flow change per iteration (see floors)")
        } else {
            String::new()
        };
        if c.name == ACL_NEW_FLOW {
            note += &format!(
                "; {} prefixes in the VIP's list, the source allowed by a /16; the same VIP \
                 without a list is the row \"{NEW_FLOW}\"",
                lbsetup::ACL_PREFIXES
            );
        }
        row(report, PER_PACKET, &c.name, t[i], &floors, &note);
        if c.name == ACL_NEW_FLOW
            && let Some(base) = no_acl
            && let Some(r) = report.rows.last_mut()
        {
            r.ratios
                .push(("same VIP without ACL".into(), t[i].median / base));
        }
    }
    // Stages: each row is the one before plus one step; the full datapath is row 0 of
    // section 1 (measured in the same loop).
    let mut before = floors.pass;
    let mut before_name = "the pass floor".to_string();
    let full = t[nfloors];
    let progressive = cases.len() - EXTRA_STAGES;
    let stages = cases[nlb..progressive]
        .iter()
        .zip(&t[nlb..progressive])
        .chain([(&cases[nfloors], &full)]);
    for (c, tt) in stages {
        let r = report.push(STAGES, c.name.clone(), NS_PER_PACKET, *tt);
        r.note = format!("{:+.0} ns over {before_name}", tt.median - before);
        r.ratios = floors.ratios(tt.median);
        before = tt.median;
        before_name = c.name.clone();
    }
    let notes = [
        "the full datapath on this packet is the non-VIP row",
        "only flows missing the connection table look up their VIP: in the VIP slots \
         (a direct-mapped array), else in the VIP hash map",
        "what the lookup costs without the VIP slots (a VIP whose slot another VIP holds)",
    ];
    for (i, note) in (progressive..cases.len()).zip(notes) {
        let r = report.push(STAGES, cases[i].name.clone(), NS_PER_PACKET, t[i]);
        r.note = format!(
            "{:+.0} ns over the parse stage; {note}",
            t[i].median - t[nlb].median
        );
        r.ratios = floors.ratios(t[i].median);
    }
    insns::section(report, &mut ebpf, &cases[..nfloors], &cases[nfloors..nlb])?;
    Ok(floors)
}

/// Connection-table size of section 2's cache-resident run.
pub const SMALL_TABLE: u32 = 16_384;

/// Section 2: the same packets with 1 / 1,000 / 100,000 VIPs, with 1 million flows in the
/// connection table, and with a connection table small enough for the caches.
pub fn scaling(report: &mut Report, method: Method, floors: Option<Floors>) -> Result<()> {
    let small = 61; // prime; 100,000 VIPs × 61 slots × 4 bytes = 24 MB of tables
    let client = packets::client_v4();
    let cases = |label: &str| -> Vec<Case> {
        vec![
            Case {
                name: format!("{label}: TCP established"),
                prog: "bench_lb",
                packet: packets::tcp_v4(client),
                verdict: action::TX,
            },
            Case {
                name: format!("{label}: TCP new flow"),
                prog: "bench_lb_new",
                packet: packets::tcp_v4(client),
                verdict: action::TX,
            },
            Case {
                name: format!("{label}: non-VIP"),
                prog: "bench_lb",
                packet: packets::not_vip_v4(),
                verdict: action::PASS,
            },
        ]
    };
    let floor_case = Case {
        name: "floor: parse + IPIP encap + XDP_TX".into(),
        prog: "bench_encap",
        packet: packets::tcp_v4(client),
        verdict: action::TX,
    };
    let pass_case = Case {
        name: "floor: XDP_PASS".into(),
        prog: "bench_pass",
        packet: packets::tcp_v4(client),
        verdict: action::PASS,
    };
    let mut run = |label: String, setup: Setup, conns: u32, note: String| -> Result<()> {
        let mut ebpf = lbsetup::load(setup).with_context(|| format!("setting up {label}"))?;
        let mut note = note;
        if conns > 0 {
            let held = lbsetup::fill_conns(&mut ebpf, conns)?;
            note = format!("{note}; {held} entries in the connection table");
        }
        let mut cs = vec![pass_case.clone(), floor_case.clone()];
        cs.extend(cases(&label));
        // Establish the measured flow.
        run_once(&mut ebpf, "bench_lb_once", &cs[2].packet)?;
        let t = interleaved(&mut ebpf, &cs, method)?;
        let local = Floors {
            pass: t[0].median,
            swap: floors.map_or(f64::NAN, |f| f.swap),
            encap: t[1].median,
        };
        for (i, c) in cs.iter().enumerate().skip(2) {
            let r = report.push(SCALING, c.name.clone(), NS_PER_PACKET, t[i]);
            r.ratios = vec![
                ("pass floor".into(), t[i].median / local.pass),
                ("encap floor".into(), t[i].median / local.encap),
            ];
            r.note = note.clone();
        }
        Ok(())
    };
    for extra in [0u32, 996, 99_996] {
        let total = 4 + extra;
        run(
            format!("{total} VIPs"),
            Setup {
                extra_vips: extra,
                extra_table_size: small,
                ..DEFAULT_SETUP
            },
            0,
            if extra == 0 {
                "measured VIP: M=65537".into()
            } else {
                format!(
                    "{extra} extra TCP VIPs sharing one small Maglev table (M={small}); \
                     measured VIP: M=65537"
                )
            },
        )?;
    }
    run(
        "1M flows".into(),
        DEFAULT_SETUP,
        1_000_000,
        "conn table max 1,000,000, filled from user space".into(),
    )?;
    // The same paths with a table small enough for the caches: what a new flow costs
    // without the cache and TLB misses of a 64 MiB table (and the conditions of a
    // benchmark that repeats one new flow).
    run(
        format!("{SMALL_TABLE} flows"),
        Setup {
            max_conns: SMALL_TABLE,
            ..DEFAULT_SETUP
        },
        0,
        format!(
            "conn table max {SMALL_TABLE} ({} KiB): new flows replace flows in a table \
             that fits in the caches",
            vip_common::flow_sets(SMALL_TABLE) * 256 / 1024
        ),
    )?;
    Ok(())
}
