//! The instruction counter of bench section 1e (`vip_tests::bench::insns`) against the
//! kernel: on every path the benchmark counts, the interpreted datapath must give the
//! verdict and the very output bytes that `BPF_PROG_TEST_RUN` gives, or its counts would
//! be of some other program.

use vip_tests::{
    bench::{
        VIP_BENCH, datapath::DEFAULT_SETUP, insns::Program, lbsetup, packets, testrun::run_once,
    },
    fixture::{action, hex},
    privileged::require_root,
};

#[test]
fn the_interpreter_agrees_with_the_kernel_on_every_counted_path() {
    if !require_root("the_interpreter_agrees_with_the_kernel_on_every_counted_path") {
        return;
    }
    assert!(
        !VIP_BENCH.is_empty(),
        "the bench object is missing: build it with `cargo xtask build`"
    );
    let mut ebpf = lbsetup::load(DEFAULT_SETUP).expect("loading the bench setup");
    let program = Program::parse(VIP_BENCH).expect("parsing the bench object");
    let client = packets::client_v4();
    let cases = [
        ("TCP, new flow", packets::syn_v4(client), action::TX),
        ("TCP, established", packets::tcp_v4(client), action::TX),
        ("UDP", packets::udp_v4(), action::TX),
        ("IPv6 TCP", packets::tcp_v6(), action::TX),
        ("ICMP error", packets::icmp_frag_needed_v4(), action::TX),
        ("dsr-l2 TCP", packets::tcp_dsr_v4(client), action::TX),
        ("non-VIP", packets::not_vip_v4(), action::PASS),
    ];
    let mut counts = Vec::new();
    for (name, packet, want) in &cases {
        // The interpreter reads the maps the kernel's run just wrote (the new flow's
        // entry, the counters), so each side sees the same state.
        let (verdict, out) = run_once(&mut ebpf, "bench_lb_once", packet).expect(name);
        let run = program
            .run(&ebpf, "bench_lb_once", packet)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(verdict, *want, "{name}: the kernel's verdict");
        assert_eq!(
            run.verdict,
            verdict,
            "{name}: interpreted verdict {}, the kernel's {}",
            action::name(run.verdict),
            action::name(verdict)
        );
        assert_eq!(
            run.packet,
            out,
            "{name}: output bytes\n  interpreter {}\n  kernel      {}",
            hex(&run.packet),
            hex(&out)
        );
        counts.push((name, run.insns));
    }
    // The counts order the paths as their work does: passing traffic for another address
    // is the least of them, a forwarded packet more.
    let count = |n: &str| counts.iter().find(|(name, _)| **name == n).unwrap().1;
    assert!(
        count("non-VIP") < count("dsr-l2 TCP") && count("dsr-l2 TCP") < count("TCP, established"),
        "{counts:?}"
    );
}
