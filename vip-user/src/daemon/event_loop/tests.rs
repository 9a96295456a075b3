//! The daemon loop over a real Unix socket, with in-memory maps: every CLI command and
//! its error paths, end to end through `vipctl`'s own parser and printer.

use std::path::{Path, PathBuf};

use clap::Parser;

use super::*;
use crate::{
    cli::{self, Cli},
    datapath::fake::FakeMaps,
};

const CFG: &str = r#"
[limits]
max_vips = 4
max_backends = 8
table_size = 251
[[vip]]
address = "198.18.1.10:80"
[[vip.backend]]
address = "198.18.2.1"
[[vip.backend]]
address = "198.18.2.2"
"#;

struct Daemon {
    dir: PathBuf,
    socket: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
    keep_dir: bool,
}

impl Daemon {
    /// Stops the daemon (as a kill would), keeping its files.
    fn stop(mut self) -> PathBuf {
        // Wait for the runtime to drop its tasks: `shutdown_background` returns before
        // the API listener is closed, and a daemon started at once on the same socket
        // would find it still answering (`InUse`).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(10));
        }
        self.keep_dir = true;
        self.dir.clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes `text` as the daemon's config file, with the test's own API socket (so a
/// reload sees the same `[api]` as the running daemon).
fn write_config(dir: &Path, text: &str) {
    std::fs::write(
        dir.join("vipd.toml"),
        format!("{text}\n[api]\nsocket = {:?}\n", dir.join("api.sock")),
    )
    .unwrap();
}

fn start(name: &str) -> Daemon {
    let dir = std::env::temp_dir().join(format!("vipd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_config(&dir, CFG);
    spawn(&dir)
}

fn spawn(dir: &Path) -> Daemon {
    let config_path = dir.join("vipd.toml");
    let socket = dir.join("api.sock");
    let cfg = Config::load(&config_path).unwrap();
    assert_eq!(cfg.api.socket, socket);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let owner = Owner::start(&cfg, FakeMaps::default(), Some(dir.join("state.json"))).unwrap();
    let (listener, access) = rt
        .block_on(async { api::listen(&socket, 0o600, None) })
        .unwrap();
    rt.spawn(run(owner, cfg, config_path, listener, access, None));
    Daemon {
        dir: dir.to_owned(),
        socket,
        rt: Some(rt),
        keep_dir: false,
    }
}

fn vipctl(d: &Daemon, args: &str) -> Result<String, String> {
    let mut argv = vec!["vipctl", "--socket", d.socket.to_str().unwrap()];
    argv.extend(args.split_whitespace());
    let c = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let req = cli::request(&c.command)
        .map_err(|e| e.to_string())?
        .unwrap();
    // As vipctl prints it.
    cli::run_remote(&c, &req).map_err(|e| crate::Report(&e).to_string())
}

fn ok(d: &Daemon, args: &str) -> String {
    vipctl(d, args).unwrap_or_else(|e| panic!("vipctl {args}: {e}"))
}

#[test]
fn the_cli_round_trips_through_the_daemon() {
    let d = start("roundtrip");
    let list = ok(&d, "vip list");
    assert!(
        list.contains("198.18.1.10:80/tcp  tunnel  5tuple  on         251  2/2"),
        "{list}"
    );
    ok(
        &d,
        "vip add [2001:db8::10]:443/udp --hash src --table-size 251 --check udp --payload ping --interval 5s",
    );
    let json = ok(&d, "-o json vip list");
    assert!(
        json.contains("\"payload\": \"ping\"") && json.contains("\"interval\": \"5s\""),
        "{json}"
    );
    ok(
        &d,
        "backend add [2001:db8::10]:443/udp [2001:db8::2:1] --weight 3",
    );
    let b = ok(&d, "backend list [2001:db8::10]:443/udp");
    assert!(b.contains("[2001:db8::2:1]:443"), "{b}");
    assert!(b.contains("ready  pass    up     251"), "{b}");
    let drained = ok(&d, "backend drain 198.18.1.10:80 198.18.2.1");
    assert!(
        drained.contains("~ backend 198.18.1.10:80/tcp 198.18.2.1:80 state: ready -> drain"),
        "{drained}"
    );
    let b = ok(&d, "backend list 198.18.1.10:80");
    assert!(b.contains("drain  pass    draining  0"), "{b}");
    let json = ok(&d, "-o json backend list 198.18.1.10:80");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0][1]["state"], "draining");
    let flow = ok(&d, "flow tcp 198.18.0.1:40000 198.18.1.10:80");
    assert!(
        flow.contains("backend:  198.18.2.2:80"),
        "only the ready backend has slots: {flow}"
    );
    ok(&d, "backend del 198.18.1.10:80 198.18.2.1");
    ok(&d, "vip del [2001:db8::10]:443/udp");
    let stats = ok(&d, "stats");
    // 1,000,000 flows asked for: 2^18 sets of 4 entries.
    assert!(stats.contains("connections: 0 of 1048576"), "{stats}");
}

#[test]
fn vipctl_sets_shows_and_removes_an_access_list() {
    let d = start("acl");
    ok(
        &d,
        "vip acl 198.18.1.10:80 --allow 198.18.0.0/16 --allow 2001:db8::/32 --deny 198.18.7.0/24",
    );
    let list = ok(&d, "vip list");
    assert!(
        list.contains("allow 198.18.0.0/16, 2001:db8::/32; deny 198.18.7.0/24"),
        "{list}"
    );
    let flow = ok(&d, "flow tcp 198.18.7.9:4000 198.18.1.10:80");
    assert!(
        flow.contains("acl:      refused (drop_acl) by deny 198.18.7.0/24")
            && flow.contains("backend:  none"),
        "{flow}"
    );
    ok(&d, "vip add 198.18.1.12:80 --deny 198.18.0.0/24");
    let json: serde_json::Value = serde_json::from_str(&ok(&d, "-o json vip list")).unwrap();
    let added = json
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vip"]["addr"] == "198.18.1.12")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(
        added["acl"]["deny"],
        serde_json::json!(["198.18.0.0/24"]),
        "{json}"
    );
    assert!(added["acl"].get("allow").is_none(), "{json}");
    ok(&d, "vip acl 198.18.1.10:80");
    let list = ok(&d, "vip list");
    assert!(!list.contains("198.18.7.0/24"), "{list}");
}

#[test]
fn apply_and_diff_are_idempotent_and_touch_only_what_changed() {
    let d = start("apply");
    let file = d.dir.join("apply.toml");
    std::fs::write(&file, CFG.to_string() + "[[vip]]\naddress = \"198.18.1.11:53\"\nprotocol = \"udp\"\ntable_size = 251\n[[vip.backend]]\naddress = \"198.18.2.9\"\n").unwrap();
    let arg = format!("diff -f {}", file.display());
    let diff = ok(&d, &arg);
    assert_eq!(
        diff,
        "+ vip 198.18.1.11:53/udp mode=tunnel hash=5tuple conntrack=true table_size=251 backends=1\n+ backend 198.18.1.11:53/udp 198.18.2.9:53 weight=1 state=ready\n"
    );
    let applied = ok(&d, &format!("apply -f {}", file.display()));
    // One backend, one table of 251 entries + the VIP entry.
    assert!(applied.ends_with("253 map writes\n"), "{applied}");
    let again = ok(&d, &format!("apply -f {}", file.display()));
    assert_eq!(again, "no changes\n0 map writes\n");
    assert_eq!(ok(&d, &arg), "no changes\n");
}

/// Every error a vipctl user can hit: the message, and that nothing changed.
#[test]
fn every_cli_error_says_what_to_fix_and_changes_nothing() {
    let d = start("errors");
    let bad_file = d.dir.join("bad.toml");
    std::fs::write(
        &bad_file,
        "[[vip]]\naddress = \"198.18.1.10:80\"\ntable_size = 100\n",
    )
    .unwrap();
    let unknown_key = d.dir.join("unknown.toml");
    std::fs::write(&unknown_key, "[[vip]]\naddres = \"198.18.1.10:80\"\n").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            "vip add 198.18.1.10".into(),
            "has no port: write ADDR:PORT, or ADDR:* for all ports",
        ),
        ("vip add 2001:db8::1:80".into(), "has no port"),
        (
            "vip add 198.18.1.10:80/sctp".into(),
            "unknown protocol \"sctp\": use tcp or udp",
        ),
        (
            "vip add 198.18.1.10:80".into(),
            "VIP 198.18.1.10:80/tcp already exists",
        ),
        (
            "vip add 198.18.1.12:80 --table-size 100".into(),
            "table_size 100 is not prime: use a prime such as 101",
        ),
        (
            "vip add 198.18.1.12:80 --mode nat".into(),
            "invalid value 'nat'",
        ),
        ("vip del 198.18.1.99:80".into(), "no VIP 198.18.1.99:80/tcp"),
        (
            "vip add 198.18.1.12:80 --allow 198.18.0.1/16".into(),
            "--allow 198.18.0.1/16 has host bits set: write 198.18.0.0/16",
        ),
        (
            "vip acl 198.18.1.10:80 --deny lan".into(),
            "--deny \"lan\" is not a prefix",
        ),
        (
            "vip acl 198.18.1.10:80 --deny 2001:db8::/32".into(),
            "deny has no IPv4 prefix",
        ),
        (
            "vip acl 198.18.1.10:80 --allow 198.18.0.0/16 --deny 198.18.0.0/16".into(),
            "198.18.0.0/16 is in both allow and deny",
        ),
        (
            "vip acl 198.18.1.99:80 --deny 198.18.0.0/16".into(),
            "no VIP 198.18.1.99:80/tcp",
        ),
        (
            "vip add 198.18.1.12:80 --check http --path nope".into(),
            "--path \"nope\" must start with '/'",
        ),
        (
            "vip add 198.18.1.12:80 --check icmp".into(),
            "--check: unknown health-check type \"icmp\": use none, tcp, http, https or udp",
        ),
        (
            "vip add 198.18.1.12:80 --check tcp --interval 1s --timeout 5s".into(),
            "--timeout 5s must be above 0 and at most --interval 1s",
        ),
        (
            "vip add 198.18.1.12:* --check tcp".into(),
            "so its health check needs a port",
        ),
        (
            "backend add 198.18.1.10:80 198.18.2.1".into(),
            "already exists in VIP 198.18.1.10:80/tcp",
        ),
        (
            "backend add 198.18.1.10:80 198.18.2.5 --weight 70000".into(),
            "weight 70000 is above 65535",
        ),
        (
            "backend add 198.18.1.10:80 not-an-ip".into(),
            "is not an address",
        ),
        (
            // The VIP has no check (type none): a path alone cannot make one.
            "backend add 198.18.1.10:80 198.18.2.5 --path /x".into(),
            "backend 198.18.2.5:80: health.path does not apply to type = \"none\"",
        ),
        (
            "backend add 198.18.1.10:80 198.18.2.5 --check https --tls-ca ca.pem".into(),
            "backend 198.18.2.5:80: health.tls_ca \"ca.pem\" is not an absolute path",
        ),
        (
            "vip add 198.18.1.12:443 --check http --tls-verify false".into(),
            "--tls-verify does not apply to --check http: remove it or change the type (to --check https)",
        ),
        (
            "backend add 198.18.1.10:80 198.18.2.5 --interval soon".into(),
            "--interval \"soon\"",
        ),
        (
            "backend del 198.18.1.10:80 198.18.2.7".into(),
            "has no backend 198.18.2.7:80",
        ),
        (
            "backend set 198.18.1.10:80 198.18.2.1".into(),
            "needs --weight N and/or --state",
        ),
        (
            "backend set 198.18.1.10:80 198.18.2.1 --state down".into(),
            "invalid value 'down'",
        ),
        (
            "backend set 198.18.1.10:80 198.18.2.1 --weight 99999".into(),
            "weight 99999 is above 65535",
        ),
        (
            "backend list 198.18.1.77:80".into(),
            "no VIP 198.18.1.77:80/tcp",
        ),
        (
            "flow tcp 198.18.0.1:1 198.18.1.99:80".into(),
            "is not a VIP",
        ),
        (
            "flow tcp 198.18.0.1 198.18.1.10:80".into(),
            "a port is required",
        ),
        (
            "flow tcp [2001:db8::1]:1 198.18.1.10:80".into(),
            "same family",
        ),
        (
            format!("apply -f {}", bad_file.display()),
            "line 2: VIP 198.18.1.10:80/tcp: table_size 100 is not prime",
        ),
        (format!("apply -f {}", unknown_key.display()), "line 2"),
        (
            format!("diff -f {}", d.dir.join("missing.toml").display()),
            "cannot read",
        ),
    ];
    let state = |d: &Daemon| ok(d, "-o json backend list") + &ok(d, "-o json vip list");
    let before = state(&d);
    let mut failures = Vec::new();
    for (args, want) in &cases {
        match vipctl(&d, args) {
            Ok(out) => failures.push(format!("{args}: accepted:\n{out}")),
            Err(e) if !e.contains(want) => failures.push(format!("{args}: {e:?} lacks {want:?}")),
            Err(_) => {}
        }
        if state(&d) != before {
            failures.push(format!("{args}: state changed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // No daemon at all.
    let c =
        Cli::try_parse_from(["vipctl", "--socket", "/nonexistent/x.sock", "vip", "list"]).unwrap();
    let e = cli::run_remote(&c, &Request::Status).unwrap_err();
    assert!(e.to_string().contains("Is vipd running"), "{e}");
}

#[test]
fn a_backend_added_with_its_own_check_shows_the_merged_check() {
    let d = start("backend-check");
    ok(
        &d,
        "vip add 198.18.1.20:443 --check https --path /healthz --tls-server-name api.example.com --interval 5s",
    );
    ok(&d, "backend add 198.18.1.20:443 198.18.2.1");
    ok(
        &d,
        "backend add 198.18.1.20:443 198.18.2.2 --check http --check-port 8080 --interval 3s",
    );
    ok(
        &d,
        "backend add 198.18.1.20:443 198.18.2.3 --tls-verify false --tls-server-name other.example.com",
    );
    let json = ok(&d, "-o json backend list 198.18.1.20:443");
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let check = |i: usize| rows[i][1]["health_check"].clone();
    // The VIP's check, as it is.
    assert_eq!(check(0)["kind"]["type"], "https", "{json}");
    assert_eq!(check(0)["kind"]["tls_server_name"], "api.example.com");
    assert_eq!(check(0)["kind"]["tls_verify"], true);
    assert_eq!(check(0)["interval"], "5s");
    // Another type: the shared http keys stay, the TLS ones go.
    assert_eq!(check(1)["kind"]["type"], "http", "{json}");
    assert_eq!(check(1)["kind"]["path"], "/healthz");
    assert!(check(1)["kind"].get("tls_server_name").is_none(), "{json}");
    assert_eq!(
        (check(1)["port"].clone(), check(1)["interval"].clone()),
        (8080.into(), "3s".into())
    );
    // Two keys replaced, the rest the VIP's.
    assert_eq!(check(2)["kind"]["tls_verify"], false, "{json}");
    assert_eq!(check(2)["kind"]["tls_server_name"], "other.example.com");
    assert_eq!(
        (
            check(2)["kind"]["path"].clone(),
            check(2)["interval"].clone()
        ),
        ("/healthz".into(), "5s".into())
    );
    // The backend keeps its own keys across a restart (they are in the state file).
    let before: Vec<_> = (0..3).map(check).collect();
    let dir = d.stop();
    let d = spawn(&dir);
    let json = ok(&d, "-o json backend list 198.18.1.20:443");
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let after: Vec<_> = (0..3).map(|i| rows[i][1]["health_check"].clone()).collect();
    assert_eq!(after, before);
}

#[test]
fn runtime_changes_survive_a_daemon_restart() {
    let d = start("persist");
    ok(&d, "backend add 198.18.1.10:80 198.18.2.3 --weight 2");
    let before = ok(&d, "backend list");
    let dir = d.stop();
    let d2 = spawn(&dir);
    assert_eq!(ok(&d2, "backend list"), before);
    assert!(before.contains("198.18.2.3:80"), "{before}");
}

#[test]
fn reload_applies_the_edited_file_and_refuses_a_broken_one() {
    let d = start("reload");
    write_config(
        &d.dir,
        &CFG.replace(
            "address = \"198.18.2.2\"\n",
            "address = \"198.18.2.2\"\nweight = 5\n",
        ),
    );
    let out = ok(&d, "reload");
    assert!(
        out.contains("~ backend 198.18.1.10:80/tcp 198.18.2.2:80 weight: 1 -> 5"),
        "{out}"
    );
    let before = ok(&d, "-o json backend list");
    write_config(&d.dir, &(CFG.to_string() + "bogus = 1\n"));
    let e = vipctl(&d, "reload").unwrap_err();
    assert!(
        e.contains("unknown field `bogus`") && e.contains("nothing was changed"),
        "{e}"
    );
    write_config(&d.dir, &CFG.replace("max_vips = 4", "max_vips = 5"));
    let e = vipctl(&d, "reload").unwrap_err();
    assert!(
        e.contains("[limits] changed") && e.contains("vipd down"),
        "{e}"
    );
    assert_eq!(ok(&d, "-o json backend list"), before);
}

/// Regression: a reload whose file changes a setting only a restart applies
/// is refused whole (an error, not "ok" and a log line), and nothing changes.
#[test]
fn a_reload_that_changes_restart_only_settings_is_refused_whole() {
    let d = start("reload-restart-only");
    ok(&d, "backend drain 198.18.1.10:80 198.18.2.1");
    let before = ok(&d, "-o json backend list");
    for (what, text) in [
        ("instance", format!("instance = \"other\"\n{CFG}")),
        ("[api]", format!("{CFG}\n[api]\nmode = \"0660\"\n")),
        (
            "[datapath] interfaces",
            format!("[datapath]\ninterfaces = [\"eth9\"]\n{CFG}"),
        ),
        (
            "state_file",
            format!("state_file = \"/tmp/elsewhere.json\"\n{CFG}"),
        ),
    ] {
        // The file changes a weight too: that is not applied either.
        let text = text.replace(
            "address = \"198.18.2.2\"\n",
            "address = \"198.18.2.2\"\nweight = 5\n",
        );
        if what == "[api]" {
            // Its own [api] section, socket included.
            std::fs::write(
                d.dir.join("vipd.toml"),
                text.replace("[api]\n", &format!("[api]\nsocket = {:?}\n", d.socket)),
            )
            .unwrap();
        } else {
            write_config(&d.dir, &text);
        }
        let e = vipctl(&d, "reload").unwrap_err();
        assert!(
            e.contains(what) && e.contains("restart") && e.contains("nothing was changed"),
            "{what}: {e}"
        );
        assert_eq!(ok(&d, "-o json backend list"), before, "{what}");
    }
    // The original file again: nothing to do, the runtime drain stays.
    write_config(&d.dir, CFG);
    assert_eq!(ok(&d, "reload"), "ok (0 map writes)\n");
    assert_eq!(ok(&d, "-o json backend list"), before);
}

/// Regression: removing a VIP's last backend, or applying a file without VIPs,
/// acts, and the answer carries a warning that vipctl prints.
#[test]
fn the_last_backend_or_an_empty_apply_acts_with_a_warning() {
    let d = start("warnings");
    let out = ok(&d, "backend del 198.18.1.10:80 198.18.2.1");
    assert!(!out.contains("warning"), "{out}");
    let out = ok(&d, "backend del 198.18.1.10:80 198.18.2.2");
    assert!(
        out.contains("warning: VIP 198.18.1.10:80/tcp has no backends left"),
        "{out}"
    );
    ok(&d, "backend add 198.18.1.10:80 198.18.2.1");
    let empty = d.dir.join("empty.toml");
    std::fs::write(&empty, "# no VIPs\n").unwrap();
    let json = ok(&d, &format!("-o json apply -f {}", empty.display()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("no VIPs are left")),
        "{json}"
    );
    assert_eq!(ok(&d, "vip list").lines().count(), 1, "only the header");
    ok(&d, "vip add 198.18.1.10:80");
    let out = ok(&d, &format!("apply -f {}", empty.display()));
    assert!(
        out.contains("- vip 198.18.1.10:80/tcp") && out.contains("warning: no VIPs are left"),
        "{out}"
    );
}

/// SO_PEERCRED: with the socket's permissions opened up by mistake, a user who is
/// neither root nor in the configured group is still refused.
#[test]
fn the_api_refuses_other_users_even_through_an_open_socket() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "vip-test-skipped: the_api_refuses_other_users_even_through_an_open_socket: needs root to switch users"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = start("peercred");
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = std::ffi::CString::new(d.socket.to_str().unwrap()).unwrap();
    let request = b"{\"cmd\":\"status\"}\n";
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in path.as_bytes().iter().enumerate() {
        addr.sun_path[i] = *b as libc::c_char;
    }
    let mut answer = [0u8; 512];
    // The child only makes raw system calls (no allocation after fork).
    // SAFETY: fork; the child runs async-signal-safe calls only and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(3);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                libc::_exit(4);
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            let n = libc::read(fd, answer.as_mut_ptr().cast(), answer.len());
            // Exit 0 only if the answer is an error naming the uid.
            let needle = b"uid 65534";
            let ok = n > 0
                && answer[..n as usize]
                    .windows(needle.len())
                    .any(|w| w == needle);
            libc::_exit(if ok { 0 } else { 5 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child died: {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "3: setuid, 4: connect, 5: not refused"
    );
    // Root still gets in.
    ok(&d, "vip list");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    text.starts_with("HTTP/1.1 200")
        .then_some(text)
        .ok_or_else(|| "not 200".to_string())
}

fn scrape_within(port: u16, limit: std::time::Duration) -> Result<String, String> {
    let start = std::time::Instant::now();
    loop {
        match scrape(port) {
            Ok(t) => return Ok(t),
            Err(e) if start.elapsed() > limit => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Finding 9: `vipctl reload` applies a `[metrics]` change (it used to answer ok and
/// keep serving the old address).
#[test]
fn vipctl_reload_moves_the_metrics_endpoint() {
    let (p1, p2) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("vipd-test-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let with_port = |p: u16| format!("[metrics]\nlisten = \"127.0.0.1:{p}\"\n{CFG}");
    write_config(&dir, &with_port(p1));
    let d = spawn(&dir);
    let first = scrape_within(p1, std::time::Duration::from_secs(2)).expect("metrics on start");
    assert!(first.contains("vip_backend_up"), "{first}");
    write_config(&dir, &with_port(p2));
    ok(&d, "reload");
    scrape_within(p2, std::time::Duration::from_secs(2))
        .expect("metrics on the new address after vipctl reload");
    assert!(scrape(p1).is_err(), "the old address still serves");
    // Reloading the same file again and again keeps it up.
    for i in 0..20 {
        ok(&d, "reload");
        scrape_within(p2, std::time::Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("reload {i}: metrics down: {e}"));
    }
}
