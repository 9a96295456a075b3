use vip_common::ConnState;

use super::*;
use crate::{
    config::{AdminState, BackendSpec, CheckKind, HealthCheck},
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
[[vip]]
address = "[2001:db8::10]:443"
[[vip.backend]]
address = "[2001:db8::2:1]:443"
"#;

fn cfg() -> Config {
    Config::parse(CFG, "t").unwrap()
}

fn owner() -> Owner<FakeMaps> {
    Owner::start(&cfg(), FakeMaps::default(), None).unwrap()
}

fn vip(s: &str) -> VipId {
    s.parse().unwrap()
}

/// A snapshot of everything a change may touch.
fn snapshot(o: &Owner<FakeMaps>) -> String {
    let mut vips: Vec<_> = o
        .tables
        .vips
        .iter()
        .map(|(k, v)| format!("{k:?}{v:?}"))
        .collect();
    vips.sort();
    format!("{:?}{:?}{:?}{:?}", o.vips, o.alloc, o.tables.backends, vips)
}

fn acl(allow: &[&str], deny: &[&str]) -> crate::config::Acl {
    crate::config::Acl {
        allow: allow.iter().map(|p| p.parse().unwrap()).collect(),
        deny: deny.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

#[test]
fn an_access_list_change_republishes_the_vip_with_its_entries() {
    let mut o = owner();
    let id = vip("198.18.1.10:80");
    let key = crate::datapath::keys::vip_id_key(&id);
    assert_eq!(o.tables.acls.get(&key).map(Vec::len), Some(0));
    let list = acl(&["198.18.0.0/16", "2001:db8::/32"], &["198.18.7.0/24"]);
    o.change(Change::VipAcl {
        vip: id,
        acl: list.clone(),
    })
    .unwrap();
    // The IPv4 prefixes and the allow list's default deny; the IPv6 one is not the VIP's.
    assert_eq!(o.tables.acls[&key], list.entries(false));
    assert_eq!(o.tables.acls[&key].len(), 3);
    let st = o.status();
    let shown = st.vips.iter().find(|v| v.vip == id).unwrap();
    assert_eq!(shown.acl, list);
    // What `vipctl flow` says about a refused client, and that it gets no backend.
    let f = o
        .flow(
            Protocol::Tcp,
            "198.18.7.1:4000".parse().unwrap(),
            "198.18.1.10:80".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(
        f.acl.as_deref(),
        Some("refused (drop_acl) by deny 198.18.7.0/24")
    );
    assert_eq!(f.backend, None);
    let f = o
        .flow(
            Protocol::Tcp,
            "198.18.8.1:4000".parse().unwrap(),
            "198.18.1.10:80".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(f.acl.as_deref(), Some("allowed by allow 198.18.0.0/16"));
    assert!(f.backend.is_some());
    // Removing the list.
    o.change(Change::VipAcl {
        vip: id,
        acl: crate::config::Acl::default(),
    })
    .unwrap();
    assert!(o.tables.acls[&key].is_empty());
}

fn backend(addr: &str, weight: u32) -> BackendSpec {
    BackendSpec {
        addr: addr.parse().unwrap(),
        weight,
        state: AdminState::Ready,
        health: None,
    }
}

#[test]
fn every_refused_change_says_why_and_changes_nothing() {
    let web = vip("198.18.1.10:80/tcp");
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "add an existing VIP",
            Change::VipAdd {
                spec: Box::new(cfg().vips[0].clone()),
            },
            "VIP 198.18.1.10:80/tcp already exists",
        ),
        (
            "delete an unknown VIP",
            Change::VipDel {
                vip: vip("198.18.1.99:80"),
            },
            "no VIP 198.18.1.99:80/tcp: `vipctl vip list`",
        ),
        (
            "add a backend to an unknown VIP (wrong protocol)",
            Change::BackendAdd {
                vip: vip("198.18.1.10:80/udp"),
                backend: backend("198.18.2.3:80", 1),
            },
            "no VIP 198.18.1.10:80/udp",
        ),
        (
            "add a backend twice",
            Change::BackendAdd {
                vip: web,
                backend: backend("198.18.2.1:80", 1),
            },
            "backend 198.18.2.1:80 already exists in VIP 198.18.1.10:80/tcp: use `vipctl backend set`",
        ),
        (
            "delete an unknown backend",
            Change::BackendDel {
                vip: web,
                addr: "198.18.2.9:80".parse().unwrap(),
            },
            "VIP 198.18.1.10:80/tcp has no backend 198.18.2.9:80",
        ),
        (
            "set an unknown backend",
            Change::BackendSet {
                vip: web,
                addr: "198.18.2.9:80".parse().unwrap(),
                weight: Some(2),
                state: None,
            },
            "has no backend 198.18.2.9:80",
        ),
        (
            "weight above the maximum",
            Change::BackendSet {
                vip: web,
                addr: "198.18.2.1:80".parse().unwrap(),
                weight: Some(70_000),
                state: None,
            },
            "weight 70000 is above 65535",
        ),
        (
            "an IPv4 backend for an IPv6 VIP",
            Change::BackendAdd {
                vip: vip("[2001:db8::10]:443"),
                backend: backend("198.18.2.3:443", 1),
            },
            "is IPv4 but the VIP is IPv6",
        ),
        (
            "more backends than the limit",
            Change::VipAdd {
                spec: Box::new(VipSpec {
                    id: vip("198.18.1.11:80"),
                    backends: (1..=6)
                        .map(|i| backend(&format!("198.18.3.{i}:80"), 1))
                        .collect(),
                    ..cfg().vips[0].clone()
                }),
            },
            "9 backends in all VIPs but limits.max_backends is 8",
        ),
        (
            "a table size that is not prime",
            Change::VipAdd {
                spec: Box::new(VipSpec {
                    id: vip("198.18.1.11:80"),
                    table_size: 250,
                    ..cfg().vips[0].clone()
                }),
            },
            "table_size 250 is not prime",
        ),
        // Regression: the API is held to the config file's rules.
        (
            "an http check whose path carries a second request",
            Change::VipAdd {
                spec: Box::new(VipSpec {
                    id: vip("198.18.1.11:80"),
                    health: HealthCheck {
                        kind: CheckKind::Http {
                            path: "/ HTTP/1.1\r\nHost: x\r\n\r\nDELETE /admin".into(),
                            host: None,
                            expect_status: (200, 399),
                        },
                        ..HealthCheck::none()
                    },
                    ..cfg().vips[0].clone()
                }),
            },
            "health.path",
        ),
        (
            "a check every nanosecond",
            Change::VipAdd {
                spec: Box::new(VipSpec {
                    id: vip("198.18.1.11:80"),
                    health: HealthCheck {
                        kind: CheckKind::Tcp,
                        interval: std::time::Duration::from_nanos(1),
                        timeout: std::time::Duration::from_nanos(1),
                        ..HealthCheck::none()
                    },
                    ..cfg().vips[0].clone()
                }),
            },
            "below the minimum of 10ms",
        ),
        (
            "a loopback backend",
            Change::BackendAdd {
                vip: web,
                backend: backend("127.0.0.1:80", 1),
            },
            "127.0.0.1 is a loopback address",
        ),
        (
            "a backend that is the VIP",
            Change::BackendAdd {
                vip: web,
                backend: backend("198.18.1.10:80", 1),
            },
            "is the VIP's own address",
        ),
        (
            "an access list of the other family only",
            Change::VipAcl {
                vip: vip("198.18.1.10:80"),
                acl: acl(&["2001:db8::/32"], &[]),
            },
            "allow has no IPv4 prefix",
        ),
        (
            "a prefix in both lists",
            Change::VipAcl {
                vip: vip("[2001:db8::10]:443"),
                acl: acl(&["2001:db8::/48"], &["2001:db8::/48"]),
            },
            "2001:db8::/48 is in both allow and deny",
        ),
        (
            "an access list for a VIP that does not exist",
            Change::VipAcl {
                vip: vip("198.18.1.99:80"),
                acl: acl(&[], &["198.18.0.0/16"]),
            },
            "no VIP 198.18.1.99:80/tcp",
        ),
        (
            "a new VIP whose deny list has no prefix of its family",
            Change::VipAdd {
                spec: Box::new(VipSpec {
                    id: vip("198.18.1.12:80"),
                    acl: acl(&[], &["2001:db8::/32"]),
                    ..cfg().vips[0].clone()
                }),
            },
            "deny has no IPv4 prefix",
        ),
        (
            "a multicast VIP",
            Change::VipAdd {
                spec: Box::new(VipSpec {
                    id: vip("224.0.0.9:80"),
                    ..cfg().vips[0].clone()
                }),
            },
            "is a multicast address",
        ),
    ];
    let mut o = owner();
    let before = snapshot(&o);
    let mut failures = Vec::new();
    for (name, change, want) in cases {
        match o.change(change) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) if !e.to_string().contains(want) => failures.push(format!(
                "{name}: message {:?} lacks {want:?}",
                e.to_string()
            )),
            Err(_) => {}
        }
        if snapshot(&o) != before {
            failures.push(format!("{name}: state changed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_failed_map_write_is_rolled_back() {
    for fail_after in 0..2 {
        let mut o = owner();
        let before = snapshot(&o);
        o.tables.fail_after = Some(fail_after);
        let err = o
            .change(Change::BackendAdd {
                vip: vip("198.18.1.10:80"),
                backend: backend("198.18.2.3:80", 1),
            })
            .unwrap_err();
        o.tables.fail_after = None;
        // The roll-back itself hit the injected failure only while fail_after allowed it.
        assert!(
            err.to_string().contains("writing the datapath maps failed"),
            "{err}"
        );
        let mut again = o.change(Change::BackendSet {
            vip: vip("198.18.1.10:80"),
            addr: "198.18.2.1:80".parse().unwrap(),
            weight: Some(1),
            state: None,
        });
        if !err.to_string().contains("restored only partly") {
            assert_eq!(snapshot(&o), before, "fail_after {fail_after}");
        }
        again
            .as_mut()
            .expect("the owner still works after a failure");
    }
}

#[test]
fn a_persist_failure_undoes_the_change() {
    let dir = std::env::temp_dir().join(format!("vip-owner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A state file whose parent is a regular file cannot be written.
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let mut o = owner();
    o.state_file = Some(blocker.join("state.json"));
    let before = snapshot(&o);
    let err = o
        .change(Change::VipDel {
            vip: vip("198.18.1.10:80"),
        })
        .unwrap_err();
    assert!(err.to_string().contains("the change was undone"), "{err}");
    assert_eq!(snapshot(&o), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runtime_changes_and_ids_survive_a_restart_and_an_edit_of_other_vips() {
    let dir = std::env::temp_dir().join(format!("vip-owner-restart-{}", std::process::id()));
    let state = dir.join("state.json");
    let mut o = Owner::start(&cfg(), FakeMaps::default(), Some(state.clone())).unwrap();
    o.change(Change::BackendAdd {
        vip: vip("198.18.1.10:80"),
        backend: backend("198.18.2.3:80", 3),
    })
    .unwrap();
    o.change(Change::BackendDel {
        vip: vip("198.18.1.10:80"),
        addr: "198.18.2.1:80".parse().unwrap(),
    })
    .unwrap();
    o.set_health(
        (vip("198.18.1.10:80"), "198.18.2.2:80".parse().unwrap()),
        false,
    )
    .unwrap();
    let (vips, alloc) = (o.vips.clone(), o.alloc.clone());
    let table = o.tables.vips.clone();
    drop(o);
    let o = Owner::start(&cfg(), FakeMaps::default(), Some(state.clone())).unwrap();
    assert_eq!(o.vips, vips);
    assert_eq!(o.alloc, alloc);
    assert_eq!(o.tables.vips, table, "same ids, same health, same tables");
    // An edited config file: the VIP it removed goes, the VIP it left alone keeps its
    // runtime changes (as a reload does; ids stay stable).
    let mut edited = cfg();
    edited.vips.pop();
    let o = Owner::start(&edited, FakeMaps::default(), Some(state)).unwrap();
    assert_eq!(o.vips, vips[..1]);
    assert_eq!(
        o.alloc
            .backend(&(vip("198.18.1.10:80"), "198.18.2.2:80".parse().unwrap())),
        alloc.backend(&(vip("198.18.1.10:80"), "198.18.2.2:80".parse().unwrap()))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flow_answers_from_the_conntrack_first_then_maglev() {
    let mut o = owner();
    let src: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    let dst: SocketAddr = "198.18.1.10:80".parse().unwrap();
    let a = o.flow(Protocol::Tcp, src, dst).unwrap();
    let slot = a.slot.unwrap();
    assert_eq!(a.hash % 251, slot);
    assert!(a.conntrack.is_none());
    assert_eq!(a.backend, a.maglev_backend);
    // Pin the flow to the other backend in the connection table.
    let other: SocketAddr = if a.backend == Some("198.18.2.1:80".parse().unwrap()) {
        "198.18.2.2:80".parse().unwrap()
    } else {
        "198.18.2.1:80".parse().unwrap()
    };
    let (id, generation) = o.alloc.backend(&(vip("198.18.1.10:80"), other)).unwrap();
    o.tables.conns.insert(
        flow_key(src, dst, Protocol::Tcp.number()),
        ConnState {
            backend_id: id,
            generation,
        },
    );
    let b = o.flow(Protocol::Tcp, src, dst).unwrap();
    assert_eq!(b.backend, Some(other));
    assert!(b.conntrack.unwrap().usable);
    // Once that backend is down, the flow re-hashes.
    o.set_health((vip("198.18.1.10:80"), other), false).unwrap();
    let c = o.flow(Protocol::Tcp, src, dst).unwrap();
    assert!(!c.conntrack.unwrap().usable);
    assert_eq!(c.backend, a.backend);
    let err = o.flow(Protocol::Udp, src, dst).unwrap_err();
    assert!(err.to_string().contains("is not a VIP"), "{err}");
}

#[test]
fn a_reused_backend_id_starts_its_counters_from_zero() {
    let mut o = owner();
    let web = vip("198.18.1.10:80");
    let (id, _) = o
        .alloc
        .backend(&(web, "198.18.2.1:80".parse().unwrap()))
        .unwrap();
    o.tables.backend_packets.insert(id, 1000);
    o.change(Change::BackendDel {
        vip: web,
        addr: "198.18.2.1:80".parse().unwrap(),
    })
    .unwrap();
    o.change(Change::BackendAdd {
        vip: web,
        backend: backend("198.18.9.9:80", 1),
    })
    .unwrap();
    let (reused, _) = o
        .alloc
        .backend(&(web, "198.18.9.9:80".parse().unwrap()))
        .unwrap();
    assert_eq!(reused, id, "the lowest free id is handed out again");
    o.tables.backend_packets.insert(id, 1007);
    let st = o.status();
    let b = st.vips[0]
        .backends
        .iter()
        .find(|b| b.addr == "198.18.9.9:80".parse().unwrap())
        .unwrap();
    assert_eq!(b.packets, 7);
}

fn drain(o: &mut Owner<FakeMaps>, vip_: &str, addr: &str, state: AdminState) {
    o.change(Change::BackendSet {
        vip: vip(vip_),
        addr: addr.parse().unwrap(),
        weight: None,
        state: Some(state),
    })
    .unwrap();
}

/// Regression: a reload of an unchanged file changes nothing: runtime drain,
/// maint and added VIPs survive, and no map is written.
#[test]
fn a_reload_of_an_unchanged_file_keeps_every_runtime_change() {
    let mut o = owner();
    drain(&mut o, "198.18.1.10:80", "198.18.2.1:80", AdminState::Drain);
    drain(&mut o, "198.18.1.10:80", "198.18.2.2:80", AdminState::Maint);
    o.change(Change::VipAdd {
        spec: Box::new(VipSpec {
            id: vip("198.18.1.11:53/udp"),
            ..cfg().vips[0].clone()
        }),
    })
    .unwrap();
    let before = snapshot(&o);
    let stats = o.reload(&cfg()).unwrap();
    assert_eq!(snapshot(&o), before);
    assert_eq!(stats.map_writes(), 0, "{stats:?}");
}

/// Regression: with a changed file, a VIP whose `[[vip]]` section changed (or
/// was added or removed) takes the file's definition, runtime changes included; every
/// other VIP keeps its running state.
#[test]
fn a_reload_of_a_changed_file_replaces_only_the_vips_the_file_changed() {
    let mut o = owner();
    let web = vip("198.18.1.10:80");
    let v6 = vip("[2001:db8::10]:443");
    drain(&mut o, "198.18.1.10:80", "198.18.2.1:80", AdminState::Drain);
    o.change(Change::BackendAdd {
        vip: v6,
        backend: backend("[2001:db8::2:2]:443", 1),
    })
    .unwrap();
    let added = VipSpec {
        id: vip("198.18.1.11:53/udp"),
        ..cfg().vips[0].clone()
    };
    o.change(Change::VipAdd {
        spec: Box::new(added.clone()),
    })
    .unwrap();
    // The file changes the IPv6 VIP (a weight) and adds a VIP.
    let text = CFG.replace(
        "address = \"[2001:db8::2:1]:443\"",
        "address = \"[2001:db8::2:1]:443\"\nweight = 7",
    ) + "[[vip]]\naddress = \"198.18.1.12:80\"\n[[vip.backend]]\naddress = \"198.18.2.9\"\n";
    let edited = Config::parse(&text, "t").unwrap();
    o.reload(&edited).unwrap();
    let running = |o: &Owner<FakeMaps>, id: VipId| o.vips.iter().find(|v| v.id == id).cloned();
    let web_now = running(&o, web).unwrap();
    assert_eq!(
        web_now.backends[0].state,
        AdminState::Drain,
        "an unchanged VIP keeps its runtime drain"
    );
    assert_eq!(
        running(&o, added.id),
        Some(added.clone()),
        "a runtime VIP stays"
    );
    assert_eq!(
        running(&o, v6),
        Some(edited.vips[1].clone()),
        "a changed VIP takes the file's definition (the runtime backend goes)"
    );
    assert_eq!(
        running(&o, vip("198.18.1.12:80")),
        Some(edited.vips[2].clone())
    );
    // The file drops the web VIP: it goes, runtime drain and all.
    let mut dropped = edited.clone();
    dropped.vips.remove(0);
    o.reload(&dropped).unwrap();
    assert_eq!(running(&o, web), None);
    assert_eq!(running(&o, added.id), Some(added), "still there");
}

/// A config with room for `extra` more VIPs of 2 backends each.
fn roomy() -> Config {
    Config::parse(
        &CFG.replace("max_vips = 4", "max_vips = 32")
            .replace("max_backends = 8", "max_backends = 64"),
        "t",
    )
    .unwrap()
}

/// VIP `198.18.3.<i>:80` with backends `198.18.4.<i>` and `198.18.5.<i>`.
fn extra_vip(i: u8) -> VipSpec {
    VipSpec {
        id: vip(&format!("198.18.3.{i}:80")),
        backends: vec![
            backend(&format!("198.18.4.{i}:80"), 1),
            backend(&format!("198.18.5.{i}:80"), 1),
        ],
        ..cfg().vips[0].clone()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vip-owner-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Regression: vipd killed during an apply leaves VIPs in the pinned maps that
/// the state file does not know. A restart removes them, clears their backends, and a
/// backend id they used gets a newer generation when it is handed out again.
#[test]
fn a_restart_removes_ghost_vips_the_state_file_does_not_know() {
    let dir = temp_dir("ghosts");
    let state = dir.join("state.json");
    let mut o = Owner::start(&roomy(), FakeMaps::default(), Some(state.clone())).unwrap();
    let persisted = std::fs::read(&state).unwrap();
    let mut vips = o.vips.clone();
    vips.extend((1..=20).map(extra_vip));
    o.set_vips(vips).unwrap();
    let ghost_ids: Vec<(u32, u32)> = o
        .alloc
        .backends
        .iter()
        .filter(|((v, _), _, _)| v.addr.to_string().starts_with("198.18.3."))
        .map(|&(_, id, g)| (id, g))
        .collect();
    // SIGKILL after the maps were written, before the state file was replaced.
    std::fs::write(&state, &persisted).unwrap();
    let maps = o.into_tables();
    assert_eq!(maps.vips.len(), 22);
    let mut o = Owner::start(&roomy(), maps, Some(state)).unwrap();
    let want: std::collections::HashSet<_> = cfg().vips.iter().map(|v| vip_id_key(&v.id)).collect();
    let held: std::collections::HashSet<_> = o.tables.vips.keys().copied().collect();
    assert_eq!(
        held, want,
        "only the state file's VIPs are left in the maps"
    );
    for (id, _) in &ghost_ids {
        assert_eq!(
            o.tables.backends[id].state,
            vip_common::BACKEND_UNUSED,
            "ghost backend {id} cleared"
        );
    }
    assert!(o.unmanaged.is_empty(), "ghosts are not kept as unmanaged");
    // Ids the ghosts used come back with a newer generation: their connection-table
    // entries must not match the new owner.
    let mut vips = o.vips.clone();
    vips.extend((30..=40).map(extra_vip));
    o.set_vips(vips).unwrap();
    for &(_, id, g) in &o.alloc.backends {
        if let Some((_, ghost_gen)) = ghost_ids.iter().find(|(i, _)| *i == id) {
            assert!(
                g > *ghost_gen,
                "id {id}: generation {g} not above the ghost's {ghost_gen}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression, the state file lost: VIPs found in the pinned maps that the
/// config does not have are kept forwarding, as they are, and shown as unmanaged; their
/// slot and backend ids are not handed out; config VIPs keep the ids the maps give
/// them. `vipctl vip del` removes one.
#[test]
fn without_a_state_file_pinned_vips_are_kept_as_unmanaged_until_deleted() {
    let dir = temp_dir("lost-state");
    let state = dir.join("state.json");
    let mut o = Owner::start(&roomy(), FakeMaps::default(), Some(state.clone())).unwrap();
    let added = extra_vip(7);
    o.change(Change::VipAdd {
        spec: Box::new(added.clone()),
    })
    .unwrap();
    let alloc = o.alloc.clone();
    let maps = o.into_tables();
    let entry = maps.vips[&vip_id_key(&added.id)].clone();
    std::fs::rename(&state, dir.join("moved-away.json")).unwrap();
    let mut o = Owner::start(&roomy(), maps, Some(state.clone())).unwrap();
    assert_eq!(
        o.tables.vips[&vip_id_key(&added.id)],
        entry,
        "still forwarding"
    );
    let st = o.status();
    assert_eq!(st.unmanaged.len(), 1, "{:?}", st.unmanaged);
    assert_eq!(st.unmanaged[0].vip, added.id);
    assert_eq!(st.unmanaged[0].backends.len(), 2);
    for v in &cfg().vips {
        for b in &v.backends {
            assert_eq!(
                o.alloc.backend(&(v.id, b.addr)),
                alloc.backend(&(v.id, b.addr)),
                "config backends keep their pinned ids"
            );
        }
    }
    // Nothing new takes the unmanaged VIP's slot or ids.
    let (slot, ids) = (
        alloc.vips[&added.id],
        [0, 1].map(|i| {
            alloc
                .backend(&(added.id, added.backends[i].addr))
                .unwrap()
                .0
        }),
    );
    let mut vips = o.vips.clone();
    vips.extend((10..=15).map(extra_vip));
    o.set_vips(vips).unwrap();
    assert!(o.alloc.vips.values().all(|s| *s != slot));
    assert!(o.alloc.backends.iter().all(|(_, id, _)| !ids.contains(id)));
    assert_eq!(o.tables.vips[&vip_id_key(&added.id)], entry);
    // Kept across a restart (now with a state file), until deleted.
    let maps = o.into_tables();
    let mut o = Owner::start(&roomy(), maps, Some(state.clone())).unwrap();
    assert_eq!(o.status().unmanaged.len(), 1);
    o.change(Change::VipDel { vip: added.id }).unwrap();
    assert!(!o.tables.vips.contains_key(&vip_id_key(&added.id)));
    for id in ids {
        assert_eq!(o.tables.backends[&id].state, vip_common::BACKEND_UNUSED);
    }
    assert!(o.status().unmanaged.is_empty());
    let o = Owner::start(&roomy(), o.into_tables(), Some(state)).unwrap();
    assert!(o.status().unmanaged.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: a start that cannot succeed is refused before the first map
/// write, so the maps it adopted are exactly as they were, and it never claims to have
/// restored anything.
#[test]
fn a_start_that_cannot_succeed_leaves_the_maps_as_it_found_them() {
    type Edit = fn(&mut serde_json::Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "a VIP slot out of range",
            |s| s["alloc"]["vips"][0][1] = 99.into(),
            "slot 99",
        ),
        (
            "a backend id out of range",
            |s| s["alloc"]["backends"][0][1] = 99.into(),
            "backend id 99",
        ),
        (
            "a backend id given twice",
            |s| s["alloc"]["backends"][1][1] = s["alloc"]["backends"][0][1].clone(),
            "is given to both",
        ),
        (
            "a VIP slot given twice",
            |s| s["alloc"]["vips"][1][1] = s["alloc"]["vips"][0][1].clone(),
            "is given to both",
        ),
        (
            "a VIP defined twice",
            |s| {
                // No runtime change: the running set is the file's, written once.
                assert_eq!(s["vips_as_file"], true);
                let mut vips = s["file_vips"].clone();
                let v = vips[0].clone();
                vips.as_array_mut().unwrap().push(v);
                s["vips"] = vips;
                s.as_object_mut().unwrap().remove("vips_as_file");
            },
            "defined twice",
        ),
    ];
    let dir = temp_dir("failed-start");
    let state = dir.join("state.json");
    let mut failures = Vec::new();
    for (name, edit, want) in cases {
        let o = Owner::start(&cfg(), FakeMaps::default(), Some(state.clone())).unwrap();
        let mut maps = o.into_tables();
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        maps.every_write = Some(writes.clone());
        let mut s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        edit(&mut s);
        std::fs::write(&state, serde_json::to_vec(&s).unwrap()).unwrap();
        let err = match Owner::start(&cfg(), maps, Some(state.clone())) {
            Ok(_) => {
                failures.push(format!("{name}: started"));
                continue;
            }
            Err(e) => e,
        };
        let msg = crate::Report(&err).to_string();
        if !msg.contains(want) || msg.contains("restored") {
            failures.push(format!(
                "{name}: {msg:?} lacks {want:?} or claims a restore"
            ));
        }
        let n = writes.load(std::sync::atomic::Ordering::Relaxed);
        if n != 0 {
            failures.push(format!("{name}: {n} map writes"));
        }
        std::fs::remove_file(&state).unwrap();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: the resize procedure vipd prescribes (`vipd down`, lower
/// `max_backends`, start) works: the state file's ids were made for maps that are
/// gone, so they are handed out again within the new limits.
#[test]
fn a_start_after_a_resize_hands_the_ids_out_again_within_the_new_limits() {
    let dir = temp_dir("resize");
    let state = dir.join("state.json");
    let mut o = Owner::start(&roomy(), FakeMaps::default(), Some(state.clone())).unwrap();
    let mut vips = o.vips.clone();
    vips.extend((1..=10).map(extra_vip));
    o.set_vips(vips).unwrap();
    let mut vips = cfg().vips;
    vips.push(extra_vip(10));
    o.set_vips(vips).unwrap();
    assert!(o.alloc.backends.iter().any(|(_, id, _)| *id >= 8));
    drop(o); // `vipd down`: the maps are gone
    let small = Config::parse(&CFG.replace("max_backends = 8", "max_backends = 6"), "t").unwrap();
    let o = Owner::start(&small, FakeMaps::default(), Some(state)).unwrap();
    assert_eq!(o.vips.len(), 3, "the runtime VIP is kept");
    for (ident, id, _) in &o.alloc.backends {
        assert!(*id < 6, "{ident:?} has id {id}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: a map write that fails during a start is reported as such: the
/// maps may be partly changed, and nothing claims they were restored.
#[test]
fn a_failed_write_at_start_does_not_claim_a_restore() {
    let o = owner();
    let mut maps = o.into_tables();
    maps.fail_after = Some(0);
    let edited = Config::parse(
        &CFG.replace(
            "address = \"198.18.2.2\"\n",
            "address = \"198.18.2.2\"\nweight = 3\n",
        ),
        "t",
    )
    .unwrap();
    let err = Owner::start(&edited, maps, None).unwrap_err();
    let msg = crate::Report(&err).to_string();
    assert!(!msg.contains("restored") && msg.contains("partly"), "{msg}");
}

/// Regression: `generations` holds the live ids only, and an id handed out
/// again still gets a generation it never had (the backend array remembers the last).
#[test]
fn generations_hold_live_ids_only_and_a_reused_id_still_gets_a_new_one() {
    let mut o = owner();
    let web = vip("198.18.1.10:80");
    let mut seen = std::collections::BTreeSet::new();
    for &(_, id, g) in &o.alloc.backends {
        seen.insert((id, g));
    }
    for i in 1..=30 {
        let addr = format!("198.18.9.{i}:80");
        o.change(Change::BackendAdd {
            vip: web,
            backend: backend(&addr, 1),
        })
        .unwrap();
        let (id, g) = o.alloc.backend(&(web, addr.parse().unwrap())).unwrap();
        assert!(
            seen.insert((id, g)),
            "id {id} generation {g} handed out twice"
        );
        o.change(Change::BackendDel {
            vip: web,
            addr: addr.parse().unwrap(),
        })
        .unwrap();
        let live: Vec<u32> = o.alloc.backends.iter().map(|&(_, id, _)| id).collect();
        let kept: Vec<u32> = o.alloc.generations.keys().copied().collect();
        assert_eq!(
            kept.len(),
            live.len(),
            "generations {kept:?} for live ids {live:?}"
        );
    }
    // After a restart on the same maps, too.
    let dir = temp_dir("generations");
    let state = dir.join("state.json");
    let cfg = cfg();
    let o2 = Owner::start(&cfg, o.into_tables(), Some(state.clone())).unwrap();
    let mut o = Owner::start(&cfg, o2.into_tables(), Some(state)).unwrap();
    for i in 31..=40 {
        let addr = format!("198.18.9.{i}:80");
        o.change(Change::BackendAdd {
            vip: web,
            backend: backend(&addr, 1),
        })
        .unwrap();
        let (id, g) = o.alloc.backend(&(web, addr.parse().unwrap())).unwrap();
        assert!(
            seen.insert((id, g)),
            "after a restart: id {id} generation {g} handed out twice"
        );
        o.change(Change::BackendDel {
            vip: web,
            addr: addr.parse().unwrap(),
        })
        .unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A drained node stays drained across a restart (the drain is in the state file), and
/// a drain leaves the maps alone: the datapath keeps forwarding what still arrives.
#[test]
fn a_drain_survives_a_restart_and_writes_no_map() {
    let dir = temp_dir("drain");
    let state = dir.join("state.json");
    let mut o = Owner::start(&cfg(), FakeMaps::default(), Some(state.clone())).unwrap();
    assert!(!o.drained());
    let tables = o.tables.vips.clone();
    o.set_drained(true).unwrap();
    assert_eq!(o.tables.vips, tables, "a drain changes no map");
    let maps = o.into_tables();
    let mut o = Owner::start(&cfg(), maps, Some(state.clone())).unwrap();
    assert!(o.drained(), "the drain must survive a restart");
    o.set_drained(false).unwrap();
    let o = Owner::start(&cfg(), o.into_tables(), Some(state)).unwrap();
    assert!(!o.drained());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A configuration whose Maglev tables do not fit `[limits] maglev_pool` is refused
/// whole, naming the VIP that does not fit and the key to raise, whether it comes as
/// a file (`vipd check`, a start), a reload or an API change; the running state and the
/// maps are left as they were.
#[test]
fn a_change_beyond_the_maglev_pool_is_refused_whole_and_changes_nothing() {
    // Two VIPs of M = 251 (504 entries each) and the room to change one's M (504).
    let small = CFG.replace(
        "table_size = 251\n",
        "table_size = 251\nmaglev_pool = 1512\n",
    );
    let cfg = Config::parse(&small, "t").unwrap();
    assert_eq!(cfg.limits.maglev_pool, 1512);
    let mut o = Owner::start(&cfg, FakeMaps::default(), None).unwrap();
    let before = snapshot(&o);
    let publishes = o.tables.publishes;
    let third = VipSpec {
        id: vip("198.18.1.11:53/udp"),
        ..cfg.vips[0].clone()
    };
    let err = o
        .change(Change::VipAdd {
            spec: Box::new(third.clone()),
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "VIP 198.18.1.11:53/udp needs 504 entries (two tables of M = 251) where 0 are left"
        ) && err.contains("need 2016 entries")
            && err.contains("raise [limits] maglev_pool to at least 2016"),
        "{err}"
    );
    // A bigger M for a VIP that is there: its region grows past the pool.
    let mut bigger = cfg.vips[0].clone();
    bigger.table_size = 1021;
    let mut limits = cfg.limits;
    limits.table_size = 1021;
    assert!(crate::config::validate_vips(&[bigger, cfg.vips[1].clone()], &limits).is_err());
    // The same through a reload of a file with the third VIP.
    let grown = format!(
        "{small}[[vip]]\naddress = \"198.18.1.11:53\"\nprotocol = \"udp\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n"
    );
    let refused = Config::parse(&grown, "t").unwrap_err().to_string();
    assert!(refused.contains("raise [limits] maglev_pool"), "{refused}");
    assert_eq!(snapshot(&o), before);
    assert_eq!(o.tables.publishes, publishes, "no table was written");
    // What fits still goes in.
    o.change(Change::VipDel {
        vip: cfg.vips[1].id,
    })
    .unwrap();
    o.change(Change::VipAdd {
        spec: Box::new(third),
    })
    .unwrap();
}

/// A change planned for the VIPs it touches alone ends where a plan of the whole set
/// does: the same ids, the same maps, the same writes, over random sequences of VIPs
/// added, removed, reweighted, drained and given backends (some of them refused for
/// want of ids), and health results (applied for their VIPs alone too) between them.
#[test]
fn a_change_planned_for_the_vips_it_touches_ends_as_a_whole_plan_does() {
    let mut seed = 0x005e_ed0f_7ac4_u64;
    let mut below = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let tight = Config::parse(
        &CFG.replace("max_vips = 4", "max_vips = 12")
            .replace("max_backends = 8", "max_backends = 20"),
        "t",
    )
    .unwrap();
    for _ in 0..40 {
        let mut scoped = Owner::start(&tight, FakeMaps::default(), None).unwrap();
        let mut whole = Owner::start(&tight, FakeMaps::default(), None).unwrap();
        for _ in 0..30 {
            let mut vips = scoped.vips.clone();
            match below(6) {
                0 => vips.push(extra_vip(below(16) as u8)),
                1 if !vips.is_empty() => {
                    vips.remove(below(vips.len() as u64) as usize);
                }
                2 if !vips.is_empty() => {
                    let i = below(vips.len() as u64) as usize;
                    let n = below(250) as u8;
                    vips[i]
                        .backends
                        .push(backend(&format!("198.18.6.{n}:80"), 1));
                }
                3 if !vips.is_empty() => {
                    let i = below(vips.len() as u64) as usize;
                    if let Some(b) = vips[i].backends.first_mut() {
                        b.weight = below(4) as u32;
                    }
                }
                4 if !vips.is_empty() => {
                    let i = below(vips.len() as u64) as usize;
                    if let Some(b) = vips[i].backends.last_mut() {
                        b.state = AdminState::Drain;
                    }
                }
                _ => {
                    let ids = scoped.backend_ids();
                    if !ids.is_empty() {
                        let (ident, _) = ids[below(ids.len() as u64) as usize];
                        let up = below(2) == 0;
                        whole.in_step = false; // plans the whole set
                        let a = scoped.set_health(ident, up).map_err(|e| e.to_string());
                        let b = whole.set_health(ident, up).map_err(|e| e.to_string());
                        assert_eq!(a, b);
                        assert_eq!(snapshot(&scoped), snapshot(&whole));
                        assert_eq!(scoped.health, whole.health);
                    }
                    continue;
                }
            }
            let writes = |o: &Owner<FakeMaps>| (o.tables.backend_writes, o.tables.publishes);
            whole.in_step = false; // plans the whole set
            let a = scoped.set_vips(vips.clone()).map_err(|e| e.to_string());
            let b = whole.set_vips(vips).map_err(|e| e.to_string());
            assert_eq!(a, b);
            assert_eq!(snapshot(&scoped), snapshot(&whole));
            assert_eq!(scoped.health, whole.health);
            assert_eq!(writes(&scoped), writes(&whole));
            assert_eq!(scoped.reserved, whole.reserved);
        }
    }
}
