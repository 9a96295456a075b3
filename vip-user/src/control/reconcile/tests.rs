use super::*;
use crate::{
    config::{BackendSpec, Config},
    datapath::fake::FakeMaps as Recorder,
};

fn config(backends: usize) -> Vec<VipSpec> {
    let mut text = String::from("[[vip]]\naddress = \"198.18.1.10:80\"\ntable_size = 251\n");
    for i in 0..backends {
        text += &format!("[[vip.backend]]\naddress = \"198.18.2.{}\"\n", i + 1);
    }
    text += "[[vip]]\naddress = \"[2001:db8::10]:53\"\nprotocol = \"udp\"\ntable_size = 251\n[[vip.backend]]\naddress = \"[2001:db8::2:1]:53\"\n";
    Config::parse(&text, "t").unwrap().vips
}

fn limits() -> LimitsSpec {
    LimitsSpec {
        max_vips: 4,
        max_backends: 16,
        table_size: 251,
        max_conns: 1024,
        maglev_pool: vip_common::maglev_pool_default(4, 251) as u32,
    }
}

struct World {
    alloc: Allocation,
    health: HealthMap,
    applied: Applied,
    maps: Recorder,
}

impl World {
    fn new() -> Self {
        World {
            alloc: Allocation::default(),
            health: HealthMap::new(),
            applied: Applied::default(),
            maps: Recorder::default(),
        }
    }
    fn apply(&mut self, vips: &[VipSpec]) -> ApplyStats {
        // The backend array keeps the last generation of a freed id (as the owner reads
        // it back): reuse bumps past it.
        let reserved = Reserved {
            generations: self
                .maps
                .backends
                .iter()
                .map(|(&id, b)| (id, b.generation))
                .collect(),
            ..Reserved::default()
        };
        self.alloc.update(vips, &limits(), &reserved).unwrap();
        let want = desired_tables(vips, &self.alloc, &self.health);
        self.applied
            .reconcile(&mut self.maps, &GlobalConfig::default(), &want)
            .unwrap()
    }
    fn table(&self, vip: &VipSpec) -> Vec<u32> {
        self.maps.vips[&vip_id_key(&vip.id)].2.clone()
    }
    fn id(&self, vip: &VipSpec, i: usize) -> u32 {
        self.alloc
            .backend(&(vip.id, vip.backends[i].addr))
            .unwrap()
            .0
    }
}

#[test]
fn reapplying_the_same_config_writes_nothing() {
    let vips = config(4);
    let mut w = World::new();
    let first = w.apply(&vips);
    assert_eq!(first.vips_published, 2);
    assert_eq!(first.backend_writes, 5);
    let again = w.apply(&vips);
    assert_eq!(again, ApplyStats::default());
}

#[test]
fn a_backend_going_down_leaves_only_its_vips_table_and_costs_its_slots() {
    let vips = config(4);
    let mut w = World::new();
    w.apply(&vips);
    let before = w.table(&vips[0]);
    let down = w.id(&vips[0], 2);
    w.health
        .insert((vips[0].id, vips[0].backends[2].addr), false);
    let stats = w.apply(&vips);
    let after = w.table(&vips[0]);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as u64;
    let owned = before.iter().filter(|&&b| b == down).count() as u64;
    assert!(!after.contains(&down));
    // Maglev moves the down backend's slots and (rarely) a few others.
    assert!(
        moved >= owned && moved <= owned + owned / 2,
        "moved {moved}, owned {owned}"
    );
    assert_eq!(stats.vips_published, 1, "the other VIP is untouched");
    assert_eq!(stats.backend_writes, 1);
    assert_eq!(stats.publish_writes, moved + 1);
    assert_eq!(w.maps.backends[&down].state, BACKEND_DOWN);
}

#[test]
fn drain_and_maint_set_their_states_and_leave_the_table() {
    let mut vips = config(3);
    let mut w = World::new();
    w.apply(&vips);
    vips[0].backends[0].state = AdminState::Drain;
    vips[0].backends[1].state = AdminState::Maint;
    w.apply(&vips);
    let (d, m, r) = (w.id(&vips[0], 0), w.id(&vips[0], 1), w.id(&vips[0], 2));
    assert_eq!(w.maps.backends[&d].state, BACKEND_DRAINING);
    assert_eq!(w.maps.backends[&m].state, BACKEND_DOWN);
    assert!(w.table(&vips[0]).iter().all(|&b| b == r));
}

#[test]
fn ids_are_stable_by_identity_and_reuse_bumps_the_generation() {
    let mut vips = config(3);
    let mut w = World::new();
    w.apply(&vips);
    let keep = w
        .alloc
        .backend(&(vips[0].id, vips[0].backends[2].addr))
        .unwrap();
    let (gone_id, gone_gen) = w
        .alloc
        .backend(&(vips[0].id, vips[0].backends[0].addr))
        .unwrap();
    // Remove backend 0; the next new backend must not see its old flows.
    vips[0].backends.remove(0);
    w.apply(&vips);
    assert_eq!(w.maps.backends.get(&gone_id).unwrap().state, BACKEND_UNUSED);
    // Fill every other id so the freed one is reused.
    for i in 0..12 {
        vips[0].backends.push(BackendSpec {
            addr: format!("198.18.3.{i}:80").parse().unwrap(),
            weight: 1,
            state: AdminState::Ready,
            health: None,
        });
    }
    w.apply(&vips);
    let reused = w
        .alloc
        .backends
        .iter()
        .find(|&&(_, id, _)| id == gone_id)
        .expect("freed id reused once the others are taken");
    assert_eq!(reused.2, gone_gen + 1);
    assert_eq!(w.maps.backends[&gone_id].generation, gone_gen + 1);
    assert_eq!(
        w.alloc
            .backend(&(vips[0].id, vips[0].backends[1].addr))
            .unwrap(),
        keep
    );
}

#[test]
fn same_config_in_any_order_gives_the_same_backends_per_slot() {
    let vips = config(5);
    let mut reversed = vips.clone();
    reversed[0].backends.reverse();
    let (mut a, mut b) = (World::new(), World::new());
    a.apply(&vips);
    b.apply(&reversed);
    let by_addr = |w: &World, v: &VipSpec| -> Vec<SocketAddr> {
        let ids: HashMap<u32, SocketAddr> = w
            .alloc
            .backends
            .iter()
            .map(|&((_, a), id, _)| (id, a))
            .collect();
        w.table(v).iter().map(|id| ids[id]).collect()
    };
    assert_eq!(by_addr(&a, &vips[0]), by_addr(&b, &reversed[0]));
}

#[test]
fn allocation_fails_cleanly_when_ids_run_out() {
    let vips = config(20);
    let mut alloc = Allocation::default();
    let err = alloc
        .update(&vips, &limits(), &Reserved::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("raise [limits] max_backends"),
        "{err}"
    );
}

#[test]
fn backends_carry_their_vips_slot_and_flags() {
    let vips = config(2);
    let mut w = World::new();
    w.apply(&vips);
    for v in &vips {
        let (slot, flags, _) = w.maps.vips[&vip_id_key(&v.id)];
        for i in 0..v.backends.len() {
            let b = w.maps.backends[&w.id(v, i)];
            assert_eq!((b.vip_id, b.vip_flags), (slot, flags & 0xff), "{}", v.id);
        }
    }
}

#[test]
fn a_vip_mode_change_rewrites_its_backends_with_the_new_flags() {
    let mut vips = config(3);
    let mut w = World::new();
    w.apply(&vips);
    vips[0].mode = Mode::DsrL2;
    vips[0].conntrack = false;
    let stats = w.apply(&vips);
    let want = VIP_F_DSR_L2 | VIP_F_NO_CONNTRACK;
    assert_eq!(stats.backend_writes, 3, "only the changed VIP's backends");
    assert_eq!(stats.vips_published, 1);
    assert_eq!(stats.tables_built, 0, "same members: no new table");
    for i in 0..3 {
        assert_eq!(w.maps.backends[&w.id(&vips[0], i)].vip_flags, want);
    }
    assert_eq!(w.maps.vips[&vip_id_key(&vips[0].id)].1 & 0xff, want);
    let other = w.maps.backends[&w.id(&vips[1], 0)];
    assert_eq!(other.vip_flags, 0);
}

#[test]
fn a_removed_backend_is_cleared_but_keeps_its_vip() {
    let mut vips = config(3);
    let mut w = World::new();
    w.apply(&vips);
    let id = w.id(&vips[0], 0);
    let before = w.maps.backends[&id];
    vips[0].backends.remove(0);
    w.apply(&vips);
    let after = w.maps.backends[&id];
    assert_eq!(after.state, BACKEND_UNUSED);
    assert_eq!(
        (after.vip_id, after.vip_flags),
        (before.vip_id, before.vip_flags)
    );
}
