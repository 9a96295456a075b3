use super::*;

pub(super) const GOOD: &str = r#"
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
    let m = c.metrics.expect("[metrics] given");
    assert_eq!(m.listen, "127.0.0.1:9641".parse().unwrap());
    // Defaults of the listener bounds.
    assert_eq!((m.max_connections, m.refresh), (64, Duration::from_secs(2)));
    assert_eq!(
        (
            c.api.max_connections,
            c.api.max_connections_per_user,
            c.api.request_timeout,
            c.api.max_request_bytes
        ),
        (64, 16, Duration::from_secs(5), 1 << 20)
    );
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
/// Each (name, config text, wanted fragments): the text is refused with a message that
/// holds every fragment; all failures are reported together.
fn refused_naming<'a>(cases: impl Iterator<Item = (&'a str, &'a str, &'a [&'a str])>) {
    let mut failures = Vec::new();
    for (name, text, wants) in cases {
        match Config::parse(text, "t.toml") {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) => {
                let msg = e.to_string();
                for w in wants {
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
            &[
                "line 4",
                "unknown health-check type \"icmp\": use none, tcp, http, https or udp",
            ],
        ),
        (
            "http options on a tcp check",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"tcp\"\npath = \"/\"\n",
            &[
                "health.path does not apply to type = \"tcp\"",
                "(to type = \"http\" or type = \"https\")",
            ],
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
            "no API connection at all",
            "[api]\nmax_connections = 0\n",
            &[
                "line 2",
                "api.max_connections = 0 is out of range: use 1..=65536",
            ],
        ),
        (
            "per-user cap above the total",
            "[api]\nmax_connections = 8\nmax_connections_per_user = 9\n",
            &["line 3", "use 1..=8"],
        ),
        (
            "request timeout of an hour",
            "[api]\nrequest_timeout = \"1h\"\n",
            &[
                "line 2",
                "api.request_timeout \"1h\" is out of range: use 100ms..=5m",
            ],
        ),
        (
            "metrics refresh not a duration",
            "[metrics]\nlisten = \"127.0.0.1:9641\"\nrefresh = \"often\"\n",
            &["line 3", "metrics.refresh \"often\"", "\"500ms\""],
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
        // Regression: what a health check sends and how often, and addresses
        // that cannot be a VIP or a backend.
        (
            "CR/LF in an http check's path",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"http\"\npath = \"/x HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nGET /admin\"\n",
            &["health.path", "control character or space", "\"/healthz\""],
        ),
        (
            "LF in an http check's host",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"http\"\nhost = \"a\\nX-Evil: 1\"\n",
            &[
                "health.host",
                "control character or space",
                "\"www.example.com\"",
            ],
        ),
        (
            "a space in an http check's path",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"http\"\npath = \"/a b\"\n",
            &["health.path", "%20"],
        ),
        (
            "an interval of 1 ns",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"tcp\"\ninterval = \"1ns\"\ntimeout = \"1ns\"\n",
            &[
                "health.interval 1ns is below the minimum of 10ms",
                "health.timeout 1ns is below the minimum of 10ms",
            ],
        ),
        (
            "the unspecified address as a VIP",
            "[[vip]]\naddress = \"0.0.0.0:80\"\n",
            &[
                "line 2",
                "VIP address 0.0.0.0 is the unspecified address",
                "write the unicast address clients send to",
            ],
        ),
        (
            "the unspecified IPv6 address as a VIP",
            "[[vip]]\naddress = \"[::]:80\"\n",
            &["VIP address :: is the unspecified address"],
        ),
        (
            "broadcast as a VIP",
            "[[vip]]\naddress = \"255.255.255.255:80\"\n",
            &["VIP address 255.255.255.255 is the broadcast address"],
        ),
        (
            "multicast as a VIP",
            "[[vip]]\naddress = \"224.0.0.1:80\"\n",
            &["VIP address 224.0.0.1 is a multicast address"],
        ),
        (
            "IPv6 multicast as a VIP",
            "[[vip]]\naddress = \"[ff02::1]:80\"\n",
            &["VIP address ff02::1 is a multicast address"],
        ),
        (
            "loopback as a VIP",
            "[[vip]]\naddress = \"127.0.0.1:80\"\n",
            &["VIP address 127.0.0.1 is a loopback address"],
        ),
        (
            "loopback backends",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"127.0.0.2\"\n[[vip]]\naddress = \"[2001:db8::10]:80\"\n[[vip.backend]]\naddress = \"::1\"\n",
            &[
                "backend 127.0.0.2:80: 127.0.0.2 is a loopback address",
                "backend [::1]:80: ::1 is a loopback address",
                "write the backend's own address",
            ],
        ),
        (
            "unspecified, broadcast and multicast backends",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"0.0.0.0\"\n[[vip.backend]]\naddress = \"255.255.255.255\"\n[[vip.backend]]\naddress = \"239.1.1.1\"\n",
            &[
                "0.0.0.0 is the unspecified address",
                "255.255.255.255 is the broadcast address",
                "239.1.1.1 is a multicast address",
            ],
        ),
        (
            "a backend that is its own VIP",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.1.10:8080\"\n",
            &[
                "backend 198.18.1.10:8080 is the VIP's own address",
                "would loop",
            ],
        ),
        (
            "[vip.health] without a type",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\nport = 81\n",
            &[
                "VIP 198.18.1.10:80/tcp: [vip.health] has no type",
                "\"https\"",
            ],
        ),
        (
            "TLS keys on an http check",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"http\"\ntls_verify = false\ntls_ca = \"/ca.pem\"\n",
            &[
                "line 4",
                "health.tls_verify, health.tls_ca do not apply to type = \"http\": remove them",
                "(to type = \"https\")",
            ],
        ),
        (
            "an https check's server name that is no name",
            "[[vip]]\naddress = \"198.18.1.10:443\"\n[vip.health]\ntype = \"https\"\ntls_server_name = \"a b\"\n",
            &["health.tls_server_name \"a b\" is neither a DNS name nor an IP address"],
        ),
        (
            "an https check's CA by a relative path",
            "[[vip]]\naddress = \"198.18.1.10:443\"\n[vip.health]\ntype = \"https\"\ntls_ca = \"ca.pem\"\n",
            &["health.tls_ca \"ca.pem\" is not an absolute path"],
        ),
        (
            "CR/LF in an https check's path",
            "[[vip]]\naddress = \"198.18.1.10:443\"\n[vip.health]\ntype = \"https\"\npath = \"/\\r\\nX: y\"\n",
            &["health.path", "control character or space"],
        ),
        // Per-backend checks: each problem names the backend.
        (
            "a backend's path on a VIP's tcp check",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"tcp\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\npath = \"/x\"\n",
            &[
                "line 2: VIP 198.18.1.10:80/tcp: backend 198.18.2.1:80: health.path does not apply to type = \"tcp\"",
            ],
        ),
        (
            "a backend's timeout above the VIP's interval",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"tcp\"\ninterval = \"1s\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\ntimeout = \"3s\"\n",
            &[
                "backend 198.18.2.1:80: health.timeout 3s must be above 0 and at most health.interval 1s",
            ],
        ),
        (
            "a backend's unknown check type",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\ntype = \"icmp\"\n",
            &[
                "line 6: VIP 198.18.1.10:80/tcp: backend 198.18.2.1: health.type: unknown health-check type \"icmp\"",
            ],
        ),
        (
            "a backend's bad interval",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\ninterval = \"soon\"\n",
            &["line 6", "backend 198.18.2.1: health.interval \"soon\""],
        ),
        (
            "LF in a backend's host",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\ntype = \"http\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\nhost = \"a\\nX: 1\"\n",
            &[
                "backend 198.18.2.1:80: health.host",
                "control character or space",
            ],
        ),
        (
            "a backend's check of an all-ports VIP without a port",
            "[[vip]]\naddress = \"198.18.1.10:*\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\ntype = \"tcp\"\n",
            &["backend 198.18.2.1:0: the VIP takes all ports, so its health check needs a port"],
        ),
        (
            "an unknown key in a backend's check",
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\nretries = 3\n",
            &["line 6", "unknown field `retries`"],
        ),
        (
            "announcing into the main table",
            "[announce]\nenabled = true\ntable = 254\n",
            &["line 3", "announce.table = 254", "a table of its own"],
        ),
        (
            "announcing with BIRD's protocol id",
            "[announce]\nprotocol = 12\n",
            &["line 2", "announce.protocol = 12", "other than 12"],
        ),
        (
            "announcing with a kernel protocol id",
            "[announce]\nprotocol = 4\n",
            &["announce.protocol = 4", "5..=255"],
        ),
        (
            "min_healthy 0",
            "[[vip]]\naddress = \"198.18.1.10:80\"\nmin_healthy = 0\n",
            &["line 3", "min_healthy", "at least 1"],
        ),
    ];
    refused_naming(cases.iter().map(|(n, t, w)| (*n, *t, *w)));
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

/// A backend's check: the VIP's, with the keys the backend gives in place of the VIP's.
#[test]
fn a_backend_check_is_the_vips_with_its_own_keys_over_it() {
    let secs = Duration::from_secs;
    let http = |path: &str, host: Option<&str>, expect_status| CheckKind::Http {
        path: path.into(),
        host: host.map(Into::into),
        expect_status,
    };
    let check = |kind, port, interval, rise| HealthCheck {
        kind,
        port,
        interval,
        timeout: secs(1),
        rise,
        fall: 3,
    };
    // (case, the VIP's [vip.health] keys, the backend's, the backend's check)
    let cases = [
        (
            "no keys: the VIP's check",
            "type = \"tcp\"",
            "",
            check(CheckKind::Tcp, None, secs(2), 2),
        ),
        (
            "port, interval and rise only",
            "type = \"http\"\npath = \"/healthz\"\nexpect_status = \"200-299\"",
            "port = 8080\ninterval = \"5s\"\nrise = 4",
            check(http("/healthz", None, (200, 299)), Some(8080), secs(5), 4),
        ),
        (
            "http to https keeps path, host and status",
            "type = \"http\"\npath = \"/healthz\"\nhost = \"api.example.com\"\nexpect_status = \"204\"",
            "type = \"https\"\ntls_verify = false",
            check(
                CheckKind::Https {
                    path: "/healthz".into(),
                    host: Some("api.example.com".into()),
                    expect_status: (204, 204),
                    tls_server_name: None,
                    tls_verify: false,
                    tls_ca: None,
                },
                None,
                secs(2),
                2,
            ),
        ),
        (
            "https keys of the VIP's, one of them replaced",
            "type = \"https\"\ntls_ca = \"/etc/vip/ca.pem\"\ntls_server_name = \"a.example\"",
            "tls_server_name = \"b.example\"",
            check(
                CheckKind::Https {
                    path: "/".into(),
                    host: None,
                    expect_status: (200, 399),
                    tls_server_name: Some("b.example".into()),
                    tls_verify: true,
                    tls_ca: Some("/etc/vip/ca.pem".into()),
                },
                None,
                secs(2),
                2,
            ),
        ),
        (
            "https to tcp leaves the http and TLS keys behind",
            "type = \"https\"\npath = \"/x\"\ntls_ca = \"/etc/vip/ca.pem\"\nport = 8443",
            "type = \"tcp\"",
            check(CheckKind::Tcp, Some(8443), secs(2), 2),
        ),
        (
            "a check for one backend of an unchecked VIP",
            "type = \"none\"",
            "type = \"http\"\npath = \"/b\"",
            check(http("/b", None, (200, 399)), None, secs(2), 2),
        ),
        (
            "udp payload replaced",
            "type = \"udp\"\npayload = \"ping\"",
            "payload = \"pong\"",
            check(
                CheckKind::Udp {
                    payload: "pong".into(),
                },
                None,
                secs(2),
                2,
            ),
        ),
    ];
    for (name, vip, backend, want) in cases {
        let text = format!(
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[vip.health]\n{vip}\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[vip.backend.health]\n{backend}\n[[vip.backend]]\naddress = \"198.18.2.2\"\n"
        );
        let c = Config::parse(&text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = &c.vips[0];
        assert_eq!(v.check_of(&v.backends[0]), want, "{name}");
        assert_eq!(
            v.check_of(&v.backends[1]),
            v.health,
            "{name}: the other backend"
        );
        // What the state file and the API carry round-trips.
        let json = serde_json::to_string(v).unwrap();
        assert_eq!(
            &serde_json::from_str::<VipSpec>(&json).unwrap(),
            v,
            "{name}"
        );
    }
}

#[test]
fn the_annotated_example_is_a_valid_config() {
    let text = include_str!("../../examples/vipd.toml");
    let c = Config::parse(text, "examples/vipd.toml").unwrap_or_else(|e| panic!("{e}"));
    let https = c
        .vips
        .iter()
        .find(|v| v.id.port == 443)
        .expect("the https example");
    let own = https.check_of(&https.backends[1]);
    assert_eq!(own.port, Some(8443));
    assert!(
        matches!(
            own.kind,
            CheckKind::Https {
                tls_verify: false,
                ..
            }
        ),
        "{own:?}"
    );
}

#[test]
fn announcing_defaults_to_off_in_table_100_with_protocol_200() {
    let c = Config::parse(
        "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip]]\naddress = \"198.18.1.11:80\"\nannounce = true\nmin_healthy = 3\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.announce, AnnounceSpec::default());
    assert_eq!((c.announce.table, c.announce.protocol), (100, 200));
    let covered: Vec<(bool, u32)> = c
        .vips
        .iter()
        .map(|v| (c.announce.covers(v), v.min_healthy))
        .collect();
    assert_eq!(covered, [(false, 1), (true, 3)]);
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
    assert_eq!(cfg.vips[0].ha_group.as_deref(), Some("web"));
    assert_eq!(
        cfg.vips[0].announce,
        Some(false),
        "an HA group's VIP is not routed"
    );
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
            format!("{vip}announce = \"bgp\"\n"),
            "announce = \"bgp\": use \"route\"",
        ),
        (
            format!("{vip}announce = \"route\"\ngroup = \"web\"\n[[group]]\nname = \"web\"\n"),
            "group is set but announce is not \"arp\"",
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

/// Every bad `allow` / `deny`: the line of the prefix (or of the VIP) and the fix.
#[test]
fn bad_access_lists_name_the_line_and_the_fix() {
    let vip = |v: &str, lists: &str| format!("[[vip]]\naddress = \"{v}\"\n{lists}");
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "host bits set",
            vip(
                "198.18.1.10:80",
                "allow = [\n  \"198.18.0.0/16\",\n  \"198.18.0.1/16\",\n]\n",
            ),
            &[
                "line 5",
                "allow",
                "198.18.0.1/16 has host bits set",
                "198.18.0.0/16",
            ],
        ),
        (
            "host bits set, IPv6",
            vip("[2001:db8::10]:80", "deny = [\"2001:db8::1/32\"]\n"),
            &["line 3", "deny", "host bits set", "write 2001:db8::/32"],
        ),
        (
            "not a prefix",
            vip("198.18.1.10:80", "deny = [\"lan\"]\n"),
            &["line 3", "\"lan\" is not a prefix", "ADDRESS/LENGTH"],
        ),
        (
            "length too long",
            vip("198.18.1.10:80", "allow = [\"198.18.0.0/40\"]\n"),
            &["line 3", "at most /32"],
        ),
        (
            "length not a number",
            vip("198.18.1.10:80", "allow = [\"198.18.0.0/\"]\n"),
            &["line 3", "not a number of bits"],
        ),
        (
            "only the other family",
            vip("198.18.1.10:80", "allow = [\"2001:db8::/32\"]\n"),
            &[
                "line 2",
                "198.18.1.10:80/tcp",
                "allow has no IPv4 prefix",
                "refuse every client",
            ],
        ),
        (
            "only the other family, deny, IPv6 VIP",
            vip("[2001:db8::10]:80", "deny = [\"198.18.0.0/15\"]\n"),
            &["line 2", "deny has no IPv6 prefix"],
        ),
        (
            "in both lists",
            vip(
                "198.18.1.10:80",
                "allow = [\"198.18.0.0/16\"]\ndeny = [\"198.18.0.0/16\"]\n",
            ),
            &["line 2", "198.18.0.0/16 is in both allow and deny"],
        ),
        (
            "listed twice",
            vip(
                "198.18.1.10:80",
                "deny = [\"198.18.0.0/16\", \"198.18.0.0/16\"]\n",
            ),
            &["line 2", "deny lists 198.18.0.0/16 twice"],
        ),
        (
            "not a list",
            vip("198.18.1.10:80", "allow = \"198.18.0.0/16\"\n"),
            &["line 3", "allow"],
        ),
    ];
    refused_naming(cases.iter().map(|(n, t, w)| (*n, t.as_str(), *w)));
}

#[test]
fn access_lists_parse_both_families_and_empty_lists_mean_none() {
    let c = Config::parse(
        "[[vip]]\naddress = \"198.18.1.10:80\"\nallow = [\"198.18.0.0/16\", \"2001:db8::/32\"]\ndeny = [\"198.18.7.0/24\"]\n[[vip]]\naddress = \"198.18.1.11:80\"\nallow = []\ndeny = []\n",
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let acl = &c.vips[0].acl;
    assert_eq!(
        acl.to_string(),
        "allow 198.18.0.0/16, 2001:db8::/32; deny 198.18.7.0/24"
    );
    assert!(c.vips[1].acl.is_empty());
    assert!(c.vips[1].acl.entries(false).is_empty());
    // The spec travels through the API and the state file as JSON.
    let json = serde_json::to_string(&c.vips[0]).unwrap();
    assert!(
        json.contains(
            r#""acl":{"allow":["198.18.0.0/16","2001:db8::/32"],"deny":["198.18.7.0/24"]}"#
        ),
        "{json}"
    );
    let back: VipSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c.vips[0]);
    // A bad prefix in JSON (an API request) is refused with the same message.
    let bad = json.replace("198.18.7.0/24", "198.18.7.1/24");
    let e = serde_json::from_str::<VipSpec>(&bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("host bits set"), "{e}");
}

#[test]
fn too_many_access_list_prefixes_are_refused() {
    let c = Config::parse("[[vip]]\naddress = \"198.18.1.10:80\"\n", "t.toml").unwrap();
    let mut spec = c.vips[0].clone();
    spec.acl.deny = (0..vip_common::ACL_MAX_PREFIXES + 1)
        .map(|i| Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24).unwrap())
        .collect();
    let problems = validate_vips(&[spec], &c.limits).unwrap_err();
    assert!(
        problems.iter().any(|p| p.contains("exceed the 65536")),
        "{problems:?}"
    );
}

/// `[limits] maglev_pool`: by default what the limits always reserved (room for
/// `max_vips + 1` VIPs of the largest M); a default past 2^32 entries and a set of VIPs
/// that does not fit are refused naming the key; what fits exactly is accepted.
#[test]
fn the_maglev_pool_defaults_to_the_old_reservation_and_refuses_what_does_not_fit() {
    let c = Config::parse("[limits]\nmax_vips = 10\ntable_size = 251\n", "t.toml").unwrap();
    assert_eq!(c.limits.maglev_pool, 11 * 2 * 252);
    assert_eq!(
        u64::from(Config::parse("", "t.toml").unwrap().limits.maglev_pool),
        vip_common::maglev_pool_default(
            vip_common::defaults::MAX_VIPS,
            vip_common::defaults::TABLE_SIZE
        )
    );
    let vip = |a: &str, m: u32| {
        format!(
            "[[vip]]\naddress = \"{a}\"\ntable_size = {m}\n[[vip.backend]]\naddress = \"198.18.2.1\"\n"
        )
    };
    // 13 -> 2 x 16 entries, 251 -> 2 x 252: 32 + 504 + 504 once more = 1040.
    let two = format!(
        "[limits]\ntable_size = 251\nmaglev_pool = 1040\n{}{}",
        vip("198.18.1.1:80", 13),
        vip("198.18.1.2:80", 251)
    );
    assert_eq!(
        Config::parse(&two, "t.toml").unwrap().limits.maglev_pool,
        1040
    );
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "a default pool past 2^32 entries",
            "[limits]\nmax_vips = 65536\ntable_size = 65537\n".into(),
            vec![
                "default maglev_pool",
                "exceeds 2^32",
                "set [limits] maglev_pool",
            ],
        ),
        (
            "one entry short",
            two.replace("maglev_pool = 1040", "maglev_pool = 1039"),
            vec![
                "VIP 198.18.1.2:80/tcp needs 504 entries (two tables of M = 251) where 503 are left",
                "need 1040 entries",
                "raise [limits] maglev_pool to at least 1040",
            ],
        ),
    ];
    refused_naming(cases.iter().map(|(n, t, w)| (*n, t.as_str(), w.as_slice())));
}
