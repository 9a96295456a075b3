use super::*;

const GOOD: &str = r#"
instance = "lb1"
state_file = "/tmp/vip-state.json"

[datapath]
interfaces = ["veth-lb0"]
xdp_mode = "generic"
mtu = 1500
icmp_too_big = true
tunnel_source_v4 = "198.18.255.0/24"
tunnel_source_v6 = "2001:db8:ffff::/96"

[limits]
max_vips = 16
max_backends = 64
table_size = 65537
max_conns = 65536

[api]
socket = "/tmp/vip.sock"
mode = "0660"

[metrics]
listen = "127.0.0.1:9641"

[[vip]]
address = "198.18.1.10:80"
protocol = "tcp"
mode = "tunnel"
hash = "5tuple"
table_size = 251

[vip.health]
type = "http"
path = "/healthz"
expect_status = "200-299"
interval = "500ms"
timeout = "200ms"
rise = 2
fall = 3

[[vip.backend]]
address = "198.18.2.1:80"
weight = 2

[[vip.backend]]
address = "198.18.2.2"
state = "drain"

[[vip]]
address = "[2001:db8::10]:*"
protocol = "udp"
mode = "dsr-l2"
hash = "src"
conntrack = false

[[vip.backend]]
address = "2001:db8::2:1"
"#;

#[test]
fn a_full_config_parses_with_every_field() {
    let c = Config::parse(GOOD, "good.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.instance, "lb1");
    assert_eq!(c.datapath.interfaces, ["veth-lb0"]);
    assert_eq!(c.datapath.xdp_mode, XdpMode::Generic);
    assert!(c.datapath.icmp_too_big);
    assert_eq!(c.api.mode, 0o660);
    assert_eq!(c.limits.max_conns, 65536);
    assert_eq!(c.metrics, Some("127.0.0.1:9641".parse().unwrap()));
    let web = &c.vips[0];
    assert_eq!(web.id.to_string(), "198.18.1.10:80/tcp");
    assert_eq!(web.table_size, 251);
    assert_eq!(web.health.interval, Duration::from_millis(500));
    assert_eq!(
        web.health.kind,
        CheckKind::Http {
            path: "/healthz".into(),
            host: None,
            expect_status: (200, 299)
        }
    );
    assert_eq!(web.backends[1].addr, "198.18.2.2:80".parse().unwrap());
    assert_eq!(web.backends[1].state, AdminState::Drain);
    assert_eq!(web.backends[0].weight, 2);
    let dns = &c.vips[1];
    assert_eq!(dns.id.to_string(), "[2001:db8::10]:*/udp");
    assert_eq!(dns.id.port, 0);
    assert_eq!(dns.mode, Mode::DsrL2);
    assert_eq!(dns.hash, HashMode::Src);
    assert!(!dns.conntrack);
    assert_eq!(dns.table_size, 65537);
    assert_eq!(dns.backends[0].addr.port(), 0);
}

#[test]
fn an_empty_file_is_a_valid_config_with_defaults() {
    let c = Config::parse("", "empty").unwrap();
    assert_eq!(c.instance, "default");
    assert_eq!(c.limits.table_size, 65537);
    assert_eq!(c.api.mode, 0o600);
    assert_eq!(c.api.socket, PathBuf::from("/run/vip/default.sock"));
    assert!(c.vips.is_empty());
}

/// Every error path: the config text and fragments its message must contain.
#[test]
fn every_error_names_its_place_and_the_fix() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown top-level key",
            "colour = 1\n",
            &["line 1", "unknown field `colour`"],
        ),
        (
            "unknown key in a vip",
            "[[vip]]\naddress = \"198.18.1.10:80\"\nbackends = []\n",
            &["line 3", "unknown field `backends`", "backend"],
        ),
        ("bad toml", "[[vip]\n", &["line 1"]),
        (
            "vip without port",
            "[[vip]]\naddress = \"198.18.1.10\"\n",
            &["line 2", "port is required"],
        ),
        (
            "ipv6 vip without brackets",
            "[[vip]]\naddress = \"2001:db8::1:80\"\n",
            &["line 2", "port is required"],
        ),
        (
            "bad protocol",
            "[[vip]]\naddress = \"198.18.1.10:80\"\nprotocol = \"sctp\"\n",
            &["line 3", "unknown variant `sctp`", "tcp", "udp"],
        ),
        (
            "bad mode",
            "[[vip]]\naddress = \"198.18.1.10:80\"\nmode = \"nat\"\n",
            &["line 3", "unknown variant `nat`", "dsr-l2"],
        ),
        (
            "duplicate vip",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip]]\naddress = \"198.18.1.10:80\"\n",
            &["198.18.1.10:80/tcp is defined twice"],
        ),
        (
            "duplicate backend",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n",
            &["line 2", "198.18.2.1:80 is listed twice"],
        ),
        (
            "table size not prime",
            "[[vip]]\naddress = \"198.18.1.10:80\"\ntable_size = 100\n",
            &["not prime", "101"],
        ),
        (
            "limit table size not prime",
            "[limits]\ntable_size = 65536\n",
            &["line 2", "not prime", "65537"],
        ),
        (
            "vip table bigger than the limit",
            "[[vip]]\naddress = \"198.18.1.10:80\"\ntable_size = 131071\n",
            &["exceeds limits.table_size 65537"],
        ),
        (
            "ipv6 vip to ipv4 backend in tunnel mode",
            "[[vip]]\naddress = \"[2001:db8::1]:80\"\n[[vip.backend]]\naddress = \"198.18.2.1:80\"\n",
            &["is IPv4 but the VIP is IPv6"],
        ),
        (
            "dsr-l2 across families",
            "[[vip]]\naddress = \"198.18.1.10:80\"\nmode = \"dsr-l2\"\n[[vip.backend]]\naddress = \"[2001:db8::2]:80\"\n",
            &["same family"],
        ),
        (
            "too many vips",
            "[limits]\nmax_vips = 1\n[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip]]\naddress = \"198.18.1.11:80\"\n",
            &["2 VIPs but limits.max_vips is 1"],
        ),
        (
            "too many backends",
            "[limits]\nmax_backends = 1\n[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[[vip.backend]]\naddress = \"198.18.2.2\"\n",
            &["2 backends in all VIPs but limits.max_backends is 1"],
        ),
        (
            "more backends than a Maglev entry can name",
            "[limits]\nmax_backends = 70000\n",
            &[
                "line 2",
                "limits.max_backends = 70000 is out of range",
                "1..=65536",
            ],
        ),
        (
            "bad duration",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"tcp\"\ninterval = \"2 parsecs\"\n",
            &["line 5", "health.interval", "\"2s\""],
        ),
        (
            "timeout above interval",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"tcp\"\ninterval = \"1s\"\ntimeout = \"3s\"\n",
            &["health.timeout 3s must be above 0 and at most health.interval 1s"],
        ),
        (
            "bad check type",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"icmp\"\n",
            &["line 4", "use none, tcp, http or udp"],
        ),
        (
            "http options on a tcp check",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"tcp\"\npath = \"/\"\n",
            &["only apply to type = \"http\""],
        ),
        (
            "bad status range",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"http\"\nexpect_status = \"399-200\"\n",
            &["not a range of HTTP statuses"],
        ),
        (
            "all-ports vip check without port",
            "[[vip]]\naddress = \"198.18.1.10:*\"\n[vip.health]\ntype = \"tcp\"\n",
            &["set health.port"],
        ),
        (
            "all-ports vip backend with port",
            "[[vip]]\naddress = \"198.18.1.10:*\"\n[[vip.backend]]\naddress = \"198.18.2.1:80\"\n",
            &["give the backend without a port"],
        ),
        (
            "bad admin state",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\nstate = \"down\"\n",
            &["line 5", "unknown variant `down`", "drain"],
        ),
        (
            "bad xdp mode",
            "[datapath]\nxdp_mode = \"turbo\"\n",
            &["line 2", "native"],
        ),
        (
            "bad mtu",
            "[datapath]\nmtu = 100\n",
            &["line 2", "576..=9216"],
        ),
        (
            "bad tunnel prefix",
            "[datapath]\ntunnel_source_v6 = \"2001:db8::/120\"\n",
            &["line 2", "/96 or shorter"],
        ),
        (
            "world-readable socket",
            "[api]\nmode = \"0666\"\n",
            &["line 2", "\"0660\""],
        ),
        (
            "bad metrics address",
            "[metrics]\nlisten = \"localhost\"\n",
            &["line 2", "127.0.0.1:9641"],
        ),
        (
            "bad instance",
            "instance = \"a/b\"\n",
            &["line 1", "letters, digits"],
        ),
        (
            "weight too big",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\nweight = 100000\n",
            &["weight 100000 is above 65535"],
        ),
        (
            "zero port",
            "[[vip]]\naddress = \"198.18.1.10:0\"\n",
            &["use * for all ports"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, wants) in cases {
        match Config::parse(text, "t.toml") {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) => {
                let msg = e.to_string();
                for w in *wants {
                    if !msg.contains(w) {
                        failures.push(format!("{name}: message lacks {w:?}:\n{msg}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vip_ids_parse_and_print_alike() {
    for s in [
        "198.18.1.10:80/tcp",
        "[2001:db8::1]:443/udp",
        "198.18.1.10:*/tcp",
    ] {
        assert_eq!(s.parse::<VipId>().unwrap().to_string(), s);
    }
    assert_eq!(
        "198.18.1.10:80".parse::<VipId>().unwrap().proto,
        Protocol::Tcp
    );
    assert!("2001:db8::1:80".parse::<VipId>().is_err());
}

#[test]
fn primes() {
    assert!(is_prime(65537) && is_prime(655373) && is_prime(251) && is_prime(2));
    assert!(!is_prime(65536) && !is_prime(1) && !is_prime(9));
    assert_eq!(next_prime(100), 101);
}

#[test]
fn the_ha_example_parses_and_puts_its_vip_in_its_group() {
    let cfg = Config::parse(
        include_str!("../../../examples/ha/vipd-ha.toml"),
        "examples/ha/vipd-ha.toml",
    )
    .unwrap();
    assert_eq!(
        cfg.groups,
        vec![GroupSpec {
            name: "web".into(),
            interfaces: vec!["eth0".into()],
            garp_repeat: 5,
            garp_interval: Duration::from_millis(200),
        }]
    );
    assert_eq!(cfg.vips[0].announce.as_deref(), Some("web"));
}

#[test]
fn ha_mistakes_name_the_fix() {
    let vip = "[[vip]]\naddress = \"198.18.1.10:80\"\n";
    for (text, want) in [
        (
            format!("{vip}announce = \"arp\"\n"),
            "announce = \"arp\" needs group = NAME",
        ),
        (format!("{vip}group = \"web\"\n"), "add announce = \"arp\""),
        (
            format!("{vip}announce = \"arp\"\ngroup = \"db\"\n"),
            "group \"db\" is not defined",
        ),
        (
            format!("{vip}announce = \"bgp\"\ngroup = \"web\"\n[[group]]\nname = \"web\"\n"),
            "the only way is \"arp\"",
        ),
        (
            "[[group]]\nname = \"web\"\n[[group]]\nname = \"web\"\n".to_string(),
            "defined twice",
        ),
        (
            "[[group]]\nname = \"web\"\ngarp_repeat = 0\n".to_string(),
            "garp_repeat: use 1..=100",
        ),
        (
            "[[group]]\nname = \"a name far longer than thirty-one bytes\"\n".to_string(),
            "use 1-31 letters",
        ),
    ] {
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains(want), "{text}: want {want:?} in {e}");
    }
}
