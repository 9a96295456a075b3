//! `vipctl trace` runs packets through a private vip_lb brought to a config by the
//! control plane's own reconcile code; the backend it reports for each flow must be the
//! one an independent Maglev model (the shared flow hash and `maglev::build` over the
//! config's backends, by address) predicts.

use std::net::{IpAddr, SocketAddr};

use vip_tests::privileged::require_root;
use vip_user::{
    cli::trace,
    config::{Config, Protocol},
    control::maglev::{self, MaglevBackend},
    datapath::keys::flow_key,
};

const CONFIG: &str = r#"
[limits]
max_vips = 8
max_backends = 64
table_size = 65537
max_conns = 65536

[[vip]]
address = "198.18.1.10:80"
[[vip.backend]]
address = "198.18.2.1"
weight = 2
[[vip.backend]]
address = "198.18.2.2"
[[vip.backend]]
address = "198.18.2.3"
[[vip.backend]]
address = "198.18.2.4"
state = "drain"
[[vip.backend]]
address = "[2001:db8::2:5]:80"

[[vip]]
address = "[2001:db8::10]:53"
protocol = "udp"
hash = "src"
table_size = 251
[[vip.backend]]
address = "[2001:db8::2:1]"
[[vip.backend]]
address = "[2001:db8::2:2]"
"#;

/// The backend an independent model predicts: Maglev over the config's in-service
/// backends (ids = positions), slot = the shared flow hash mod M.
fn model(cfg: &Config, proto: Protocol, src: SocketAddr, dst: SocketAddr) -> SocketAddr {
    let vip = cfg
        .vips
        .iter()
        .find(|v| v.id.addr == dst.ip() && v.id.port == dst.port() && v.id.proto == proto)
        .expect("a VIP");
    let live: Vec<_> = vip
        .backends
        .iter()
        .filter(|b| b.state == vip_user::config::AdminState::Ready && b.weight > 0)
        .collect();
    let input: Vec<MaglevBackend> = live
        .iter()
        .enumerate()
        .map(|(i, b)| MaglevBackend {
            id: i as u32,
            identity: b.addr,
            weight: b.weight,
        })
        .collect();
    let table = maglev::build(&input, vip.table_size);
    let key = flow_key(src, dst, proto.number());
    let src_only = vip.hash == vip_user::config::HashMode::Src;
    let slot = vip_common::flow_hash(&key, src_only) % vip.table_size;
    live[table[slot as usize] as usize].addr
}

#[test]
fn trace_reports_the_backend_the_maglev_model_predicts() {
    if !require_root("trace_reports_the_backend_the_maglev_model_predicts") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vip-control-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vipd.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let cfg = Config::load(&path).unwrap();

    let mut flows = Vec::new();
    for i in 0..150u32 {
        let client = IpAddr::from([198, 18, (i % 7) as u8, (i * 37 % 251) as u8 + 1]);
        flows.push((
            Protocol::Tcp,
            SocketAddr::new(client, 10_000 + (i * 131 % 50_000) as u16),
            "198.18.1.10:80".parse::<SocketAddr>().unwrap(),
        ));
        let client6: IpAddr = format!("2001:db8:{:x}::{:x}", i % 5 + 1, i * 7919 % 65_000 + 1)
            .parse()
            .unwrap();
        flows.push((
            Protocol::Udp,
            SocketAddr::new(client6, 20_000 + i as u16),
            "[2001:db8::10]:53".parse().unwrap(),
        ));
    }
    let frames: Vec<Vec<u8>> = flows
        .iter()
        .map(|&(p, s, d)| trace::build_frame(p, s, d, b"x").unwrap())
        .collect();
    let traced = trace::trace_frames(&path, &frames).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let mut used = std::collections::BTreeSet::new();
    for (t, &(p, s, d)) in traced.iter().zip(&flows) {
        let want = model(&cfg, p, s, d);
        assert_eq!(t.verdict, "XDP_TX", "{t:?}");
        assert_eq!(t.reason.as_deref(), Some("forwarded"), "{t:?}");
        assert_eq!(
            t.backend,
            Some(want),
            "datapath vs model for {p} {s} -> {d}"
        );
        assert_eq!(
            t.model_backend,
            Some(want),
            "vipd's model vs the independent one"
        );
        used.insert(want);
    }
    // Every ready backend got flows; the draining one got none.
    assert!(used.contains(&"198.18.2.1:80".parse().unwrap()));
    assert!(used.contains(&"[2001:db8::2:5]:80".parse().unwrap()));
    assert!(!used.contains(&"198.18.2.4:80".parse().unwrap()));
    assert_eq!(
        used.iter().filter(|a| a.port() == 53).count(),
        2,
        "both UDP backends serve clients: {used:?}"
    );
}

#[test]
fn trace_reads_pcap_files_and_passes_what_is_not_a_vip() {
    if !require_root("trace_reads_pcap_files_and_passes_what_is_not_a_vip") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vip-control-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vipd.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let a = trace::build_frame(
        Protocol::Tcp,
        "198.18.0.1:40000".parse().unwrap(),
        "198.18.1.10:80".parse().unwrap(),
        b"",
    )
    .unwrap();
    let b = trace::build_frame(
        Protocol::Tcp,
        "198.18.0.1:40000".parse().unwrap(),
        "198.18.1.99:80".parse().unwrap(),
        b"",
    )
    .unwrap();
    let mut pcap = Vec::new();
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    pcap.extend_from_slice(&[0; 8]);
    pcap.extend_from_slice(&65535u32.to_le_bytes());
    pcap.extend_from_slice(&1u32.to_le_bytes());
    for f in [&a, &b] {
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(f);
    }
    let pcap_path = dir.join("in.pcap");
    std::fs::write(&pcap_path, &pcap).unwrap();
    let frames = trace::read_pcap(&pcap_path).unwrap();
    assert_eq!(frames, [a.clone(), b.clone()]);
    let t = trace::trace_frames(&path, &frames).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(t[0].verdict, "XDP_TX");
    // The output is the input behind a 20-byte IPIP header to the chosen backend.
    let out = (0..t[0].output_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[0].output_hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    assert_eq!(out.len(), a.len() + 20);
    assert_eq!(&out[34..], &a[14..], "inner packet unchanged");
    assert_eq!(out[23], vip_common::PROTO_IPIP);
    let backend = t[0].backend.unwrap();
    assert_eq!(
        IpAddr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap()),
        backend.ip()
    );
    assert_eq!(t[1].verdict, "XDP_PASS");
    assert_eq!(t[1].reason.as_deref(), Some("pass_not_vip"));
    assert_eq!(t[1].output_summary, "unchanged");
    // Errors say what to fix.
    let e = trace::parse_pcap(&[0u8; 30]).unwrap_err().to_string();
    assert!(e.contains("not a pcap file"), "{e}");
    let e = trace::frame_for_flow(&["tcp".into(), "198.18.0.1".into(), "198.18.1.10:80".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs a port") || e.contains("port is required"),
        "{e}"
    );
}
