//! Live trace on real traffic: `vipctl trace --live --match ... --count N --write FILE`
//! against a running vipd reports, for each UDP flow a client sends, the backend that
//! actually answered that flow, and the pcapng file holds the very frames reported. A
//! bad match and a second session while one runs are refused with what is wrong.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use vip_tests::lab::{LabSpec, Mode, netns, vipd::HealthConfig, viplab::VipLab};

/// Records asked for.
const COUNT: usize = 6;

/// One UDP request from a fresh socket: (the client's port, the backend that answered).
fn ask(vip: SocketAddr) -> Option<(u16, String)> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect(vip).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let port = s.local_addr().ok()?.port();
    for _ in 0..3 {
        s.send(b"whoami\n").ok()?;
        let mut buf = [0u8; 256];
        if let Ok(n) = s.recv(&mut buf) {
            return Some((port, String::from_utf8_lossy(&buf[..n]).trim().to_string()));
        }
    }
    None
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn lab_live_trace_reports_the_backend_that_answered() {
    if !vip_tests::privileged::require_root("lab_live_trace_reports_the_backend_that_answered") {
        return;
    }
    let scenario = "live trace, tunnel, IPv4 UDP";
    let _serial = vip_tests::lab::serial();
    let vl = VipLab::start(LabSpec::new(3, Mode::Tunnel), |lab| {
        vec![lab.vip_config(false, "udp", &[0, 1, 2], HealthConfig::none())]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let lab = &vl.lab;
    let vip = lab.vip4();
    let dir = std::env::temp_dir().join(format!("vip-live-trace-{}", netns::unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("live.pcapng");
    let expr = format!("udp and vip {}", vip.ip());
    let count = COUNT.to_string();
    let pcap_arg = pcap.to_string_lossy().to_string();
    let vipd = &vl.vipds[0];
    // A bad match is refused with what is wrong, and arms nothing.
    let e = vipd
        .vipctl(&["trace", "--live", "--match", "udp or tcp", "--count", "1"])
        .expect_err("a bad match must be refused");
    assert!(
        e.to_string().contains("join terms with 'and'"),
        "{scenario}: {e}"
    );
    let (output, answered) = std::thread::scope(|s| {
        let tracing = s.spawn(|| {
            vipd.vipctl(&[
                "-o",
                "json",
                "trace",
                "--live",
                "--match",
                &expr,
                "--count",
                &count,
                "--duration",
                "60s",
                "--write",
                &pcap_arg,
            ])
        });
        // Requests until the trace has its records (bounded: 20 s).
        let ns = lab.client_netns(0).to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut answered: HashMap<u16, String> = HashMap::new();
        std::thread::sleep(Duration::from_millis(500));
        // One session at a time: a second is refused while the first runs.
        let e = vipd
            .vipctl(&["trace", "--live", "--match", "udp", "--count", "1"])
            .expect_err("a second live trace must be refused");
        assert!(
            e.to_string().contains("another live trace is running"),
            "{scenario}: {e}"
        );
        while !tracing.is_finished() && Instant::now() < deadline {
            if let Some((port, name)) = netns::within(&ns, move || ask(vip)).unwrap() {
                answered.insert(port, name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (tracing.join().unwrap(), answered)
    });
    let output = output.unwrap_or_else(|e| panic!("{scenario}: vipctl trace --live: {e}"));
    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (end, records) = lines.split_last().expect("vipctl printed nothing");
    assert_eq!(end["why"], "count", "{scenario}: {output}");
    assert_eq!(end["records"], COUNT as u64, "{scenario}: {output}");
    assert_eq!(records.len(), COUNT, "{scenario}: {output}");
    eprintln!(
        "{scenario}: {} records, {} flows answered: {:?}",
        records.len(),
        answered.len(),
        records
            .iter()
            .map(|r| (r["backend"].to_string(), r["pick"].to_string()))
            .collect::<Vec<_>>()
    );
    let frames = vip_user::cli::trace::read_pcap(&pcap).expect("the pcapng file reads back");
    assert_eq!(frames.len(), COUNT, "{scenario}: one frame per record");
    for (r, frame) in records.iter().zip(&frames) {
        assert_eq!(r["verdict"], "XDP_TX", "{scenario}: {r}");
        assert_eq!(r["reason"], "forwarded", "{scenario}: {r}");
        let bytes = unhex(r["frame_hex"].as_str().unwrap());
        assert_eq!(
            &bytes, frame,
            "{scenario}: the capture holds the reported frame"
        );
        let (proto, src, dst) = vip_user::cli::trace::parse_flow(&bytes).expect("a UDP frame");
        assert_eq!(
            (proto.to_string().as_str(), dst),
            ("udp", vip),
            "{scenario}: {r}"
        );
        let backend: SocketAddr = r["backend"].as_str().unwrap().parse().unwrap();
        let name = answered
            .get(&src.port())
            .unwrap_or_else(|| panic!("{scenario}: traced flow {src} got no answer: {r}"));
        let j = lab.backend_index(name).expect("a lab backend");
        assert_eq!(
            backend,
            lab.backend_addr(j, false),
            "{scenario}: flow {src} was answered by {name}, the trace says {backend}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
