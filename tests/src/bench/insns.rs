//! Section 1e: BPF instructions executed per packet. The bench object's programs run in
//! a small interpreter over the contents of the loaded maps, and every instruction is
//! counted. Unlike the timings, a count does not move with the machine's load: it shows
//! what a change to the datapath did to the work each packet takes, to the instruction.
//!
//! What the count is not: time. The kernel turns an array-map lookup (a helper call in
//! the object) into about six inline instructions, a helper such as
//! `bpf_xdp_adjust_head` costs far more than one, and a cache miss costs nothing here.
//! The helper calls are therefore reported beside the count.
//!
//! The interpreter is checked against the kernel on every case: the unwrapped datapath
//! (`bench_lb_once`) must give the verdict and the output bytes that
//! `BPF_PROG_TEST_RUN` gave for the same packet, or the section fails.

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::{Map, MapData},
};
use object::{
    Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SectionKind, SymbolKind,
};

use super::{
    VIP_BENCH,
    report::Report,
    stats::Trials,
    testrun::{Case, run_once},
};
use crate::fixture::{action, hex};

/// Headroom in front of the packet, as `BPF_PROG_TEST_RUN` gives (`XDP_PACKET_HEADROOM`).
const HEADROOM: usize = 256;
/// Bytes of stack per BPF frame.
const FRAME: u64 = 512;
/// Frames of BPF-to-BPF calls allowed (the kernel's limit).
const MAX_FRAMES: u64 = 8;
/// Instructions after which a run is called a loop.
const MAX_STEPS: u64 = 1_000_000;
/// `ifindex` the interpreted context reports as the ingress interface (the test-run
/// default: loopback).
const INGRESS_IFINDEX: u64 = 1;

/// Region ids of the address space: an address is `region << 32 | offset`.
const CTX_REGION: u64 = 1;
const MAP_HANDLE_REGION: u64 = 2;
const FIRST_DATA_REGION: u64 = 16;

/// What one run did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The program's return value.
    pub verdict: u32,
    /// Instructions executed (a 16-byte load of a 64-bit constant counts once).
    pub insns: u64,
    /// Helper calls, by helper number.
    pub helpers: HashMap<i32, u64>,
    /// Map lookups, by map name.
    pub lookups: HashMap<String, u64>,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

impl Run {
    /// Helper calls in all.
    pub fn helper_calls(&self) -> u64 {
        self.helpers.values().sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct Insn {
    op: u8,
    dst: usize,
    src: usize,
    off: i16,
    imm: i32,
}

/// A relocation target: a map (by name) or a place in a section.
#[derive(Debug, Clone)]
enum Target {
    Map(String),
    Section(SectionIndex, u64),
}

/// The code of a BPF object, ready to interpret.
#[derive(Debug)]
pub struct Program {
    code: HashMap<SectionIndex, Vec<Insn>>,
    relocs: HashMap<(SectionIndex, usize), Target>,
    funcs: HashMap<String, (SectionIndex, usize)>,
    data: HashMap<SectionIndex, Vec<u8>>,
}

impl Program {
    /// Parses an eBPF ELF object.
    pub fn parse(object: &[u8]) -> Result<Self> {
        let file = object::File::parse(object).context("parsing the eBPF object")?;
        let mut code = HashMap::new();
        let mut data = HashMap::new();
        let mut relocs = HashMap::new();
        let maps_section = file.section_by_name("maps").map(|s| s.index());
        for s in file.sections() {
            if s.kind() == SectionKind::Text {
                let bytes = s.data()?;
                let insns = bytes
                    .chunks_exact(8)
                    .map(|c| Insn {
                        op: c[0],
                        dst: usize::from(c[1] & 0x0f),
                        src: usize::from(c[1] >> 4),
                        off: i16::from_le_bytes([c[2], c[3]]),
                        imm: i32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                    })
                    .collect::<Vec<_>>();
                // BPF has eleven registers; anything else is not code this can run.
                ensure!(
                    insns.iter().all(|i| i.dst <= 10 && i.src <= 10),
                    "section {}: register numbers above r10",
                    s.name().unwrap_or("?")
                );
                code.insert(s.index(), insns);
            } else if matches!(s.kind(), SectionKind::ReadOnlyData | SectionKind::Data) {
                data.insert(s.index(), s.data()?.to_vec());
            }
            for (offset, rel) in s.relocations() {
                let RelocationTarget::Symbol(sym) = rel.target() else {
                    continue;
                };
                let sym = file.symbol_by_index(sym)?;
                let Some(section) = sym.section_index() else {
                    continue;
                };
                let target = if Some(section) == maps_section {
                    Target::Map(sym.name()?.to_string())
                } else {
                    Target::Section(section, sym.address())
                };
                relocs.insert((s.index(), offset as usize / 8), target);
            }
        }
        let funcs = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text)
            .filter_map(|s| {
                Some((
                    s.name().ok()?.to_string(),
                    (s.section_index()?, s.address() as usize / 8),
                ))
            })
            .collect();
        Ok(Self {
            code,
            relocs,
            funcs,
            data,
        })
    }

    /// Runs program `name` on `packet`, reading map contents from `ebpf` (which must be
    /// the same object, loaded). Map writes stay in the interpreter.
    pub fn run(&self, ebpf: &Ebpf, name: &str, packet: &[u8]) -> Result<Run> {
        let (sec, pc) = *self
            .funcs
            .get(name)
            .with_context(|| format!("no program {name} in the object"))?;
        let mut m = Machine {
            program: self,
            ebpf,
            regions: Vec::new(),
            maps: Vec::new(),
            lookups: HashMap::new(),
            data_regions: HashMap::new(),
            data: 0,
            data_end: 0,
            helpers: HashMap::new(),
            lookups_by_map: HashMap::new(),
        };
        m.execute(sec, pc, packet)
    }
}

/// A map the program refers to: its name, file descriptor and sizes.
struct MapRef {
    name: String,
    fd: i32,
    key_size: usize,
    value_size: usize,
    per_cpu: bool,
}

struct Machine<'a> {
    program: &'a Program,
    ebpf: &'a Ebpf,
    regions: Vec<Vec<u8>>,
    maps: Vec<MapRef>,
    lookups: HashMap<(usize, Vec<u8>), u64>,
    data_regions: HashMap<SectionIndex, u64>,
    data: u64,
    data_end: u64,
    helpers: HashMap<i32, u64>,
    lookups_by_map: HashMap<String, u64>,
}

impl Machine<'_> {
    fn region(&mut self, bytes: Vec<u8>) -> u64 {
        self.regions.push(bytes);
        (FIRST_DATA_REGION + self.regions.len() as u64 - 1) << 32
    }

    fn slice(&mut self, addr: u64, len: usize) -> Result<&mut [u8]> {
        let (region, off) = (addr >> 32, (addr & 0xffff_ffff) as usize);
        let r = region
            .checked_sub(FIRST_DATA_REGION)
            .and_then(|i| self.regions.get_mut(i as usize))
            .with_context(|| format!("access to unmapped address {addr:#x}"))?;
        ensure!(
            off + len <= r.len(),
            "access of {len} bytes at {addr:#x} past its region ({} bytes)",
            r.len()
        );
        Ok(&mut r[off..off + len])
    }

    fn load(&mut self, addr: u64, size: usize) -> Result<u64> {
        if addr >> 32 == CTX_REGION {
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index.
            return match addr & 0xffff_ffff {
                0 | 8 => Ok(self.data),
                4 => Ok(self.data_end),
                12 => Ok(INGRESS_IFINDEX),
                16 => Ok(0),
                off => bail!("read of xdp_md at offset {off}"),
            };
        }
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(self.slice(addr, size)?);
        Ok(u64::from_le_bytes(b))
    }

    fn store(&mut self, addr: u64, size: usize, value: u64) -> Result<()> {
        self.slice(addr, size)?
            .copy_from_slice(&value.to_le_bytes()[..size]);
        Ok(())
    }

    fn map_handle(&mut self, name: &str) -> Result<u64> {
        if let Some(i) = self.maps.iter().position(|m| m.name == name) {
            return Ok((MAP_HANDLE_REGION << 32) | i as u64);
        }
        let map = self
            .ebpf
            .map(name)
            .with_context(|| format!("map {name} is not loaded"))?;
        let (data, per_cpu): (&MapData, bool) = match map {
            // A trie's lookup is the kernel's longest-prefix match, one helper call here.
            Map::Array(d)
            | Map::HashMap(d)
            | Map::LruHashMap(d)
            | Map::DevMapHash(d)
            | Map::LpmTrie(d) => (d, false),
            Map::PerCpuArray(d) | Map::PerCpuHashMap(d) | Map::PerCpuLruHashMap(d) => (d, true),
            // Only reserved from and submitted to (helpers 131, 132).
            Map::RingBuf(d) => (d, false),
            _ => bail!("map {name}: its kind is not modelled"),
        };
        let info = data.info()?;
        self.maps.push(MapRef {
            name: name.to_string(),
            fd: data.fd().as_fd().as_raw_fd(),
            key_size: info.key_size() as usize,
            value_size: info.value_size() as usize,
            per_cpu,
        });
        Ok((MAP_HANDLE_REGION << 32) | (self.maps.len() - 1) as u64)
    }

    /// `bpf_map_lookup_elem`: the value is read from the kernel on first use and kept, so
    /// the program's writes are seen by its later lookups.
    fn lookup(&mut self, handle: u64, key_addr: u64) -> Result<u64> {
        ensure!(handle >> 32 == MAP_HANDLE_REGION, "lookup in a non-map");
        let i = (handle & 0xffff_ffff) as usize;
        let (fd, ks, vs, per_cpu) = {
            let m = &self.maps[i];
            (m.fd, m.key_size, m.value_size, m.per_cpu)
        };
        *self
            .lookups_by_map
            .entry(self.maps[i].name.clone())
            .or_default() += 1;
        let key = self.slice(key_addr, ks)?.to_vec();
        if let Some(addr) = self.lookups.get(&(i, key.clone())) {
            return Ok(*addr);
        }
        let addr = match kernel_lookup(fd, &key, vs, per_cpu)? {
            Some(value) => self.region(value),
            None => 0,
        };
        self.lookups.insert((i, key), addr);
        Ok(addr)
    }

    fn helper(&mut self, n: i32, r: &[u64; 11]) -> Result<u64> {
        *self.helpers.entry(n).or_default() += 1;
        match n {
            // bpf_map_lookup_elem
            1 => self.lookup(r[1], r[2]),
            // bpf_get_smp_processor_id
            8 => Ok(0),
            // bpf_xdp_adjust_head: as the kernel allows, within the headroom and leaving
            // at least an Ethernet header.
            44 => {
                let delta = i64::from(r[2] as i32);
                let start = self.data & !0xffff_ffff;
                let new = self.data as i64 + delta;
                if new < start as i64 || new as u64 > self.data_end - 14 {
                    return Ok(u64::MAX); // -EINVAL
                }
                self.data = new as u64;
                Ok(0)
            }
            // bpf_redirect_map: XDP_REDIRECT
            51 => Ok(4),
            // bpf_ktime_get_ns (live trace): any non-zero time.
            5 => Ok(1),
            // bpf_ringbuf_output(ring, data, size, flags): the ring never fills here;
            // the bytes must be readable.
            130 => {
                self.slice(r[2], r[3] as usize)?;
                Ok(0)
            }
            _ => bail!("helper {n} is not modelled"),
        }
    }

    fn execute(&mut self, mut sec: SectionIndex, mut pc: usize, packet: &[u8]) -> Result<Run> {
        let mut bytes = vec![0u8; HEADROOM];
        bytes.extend_from_slice(packet);
        let base = self.region(bytes);
        self.data = base + HEADROOM as u64;
        self.data_end = base + (HEADROOM + packet.len()) as u64;
        let stack = self.region(vec![0u8; (FRAME * MAX_FRAMES) as usize]);
        let mut r = [0u64; 11];
        r[1] = CTX_REGION << 32;
        r[10] = stack + FRAME * MAX_FRAMES;
        let mut frames: Vec<(SectionIndex, usize, [u64; 5])> = Vec::new();
        let mut steps = 0u64;
        let program = self.program;
        loop {
            let code = &program.code[&sec];
            let i = *code
                .get(pc)
                .with_context(|| format!("jump out of the code at {pc}"))?;
            steps += 1;
            ensure!(steps <= MAX_STEPS, "more than {MAX_STEPS} instructions");
            let here = pc;
            pc += 1;
            let class = i.op & 7;
            let use_reg = i.op & 8 != 0;
            match class {
                // ALU (32-bit) and ALU64.
                4 | 7 => {
                    let wide = class == 7;
                    let code = i.op & 0xf0;
                    if code == 0xd0 {
                        // Byte swap: BPF_TO_BE swaps (the target is little-endian).
                        let v = r[i.dst];
                        r[i.dst] = match (i.imm, use_reg) {
                            (16, true) => u64::from((v as u16).swap_bytes()),
                            (32, true) => u64::from((v as u32).swap_bytes()),
                            (64, true) => v.swap_bytes(),
                            (16, false) => v & 0xffff,
                            (32, false) => v & 0xffff_ffff,
                            (64, false) => v,
                            (w, _) => bail!("byte swap of width {w}"),
                        };
                        continue;
                    }
                    let x = if use_reg {
                        r[i.src]
                    } else {
                        i64::from(i.imm) as u64
                    };
                    r[i.dst] = if wide {
                        alu64(code, r[i.dst], x, i.off)?
                    } else {
                        u64::from(alu32(code, r[i.dst] as u32, x as u32, i.off)?)
                    };
                }
                // JMP and JMP32.
                5 | 6 => {
                    let code = i.op & 0xf0;
                    match code {
                        0x00 => {
                            pc = offset(pc, if class == 6 { i.imm } else { i32::from(i.off) })?;
                        }
                        0x80 if i.src == 1 => {
                            // A call of a BPF function.
                            ensure!(
                                (frames.len() as u64) < MAX_FRAMES - 1,
                                "calls nested too deep"
                            );
                            frames.push((sec, pc, [r[6], r[7], r[8], r[9], r[10]]));
                            match program.relocs.get(&(sec, here)) {
                                Some(Target::Section(s, addr)) => {
                                    sec = *s;
                                    pc = offset(*addr as usize / 8 + 1, i.imm)?;
                                }
                                _ => pc = offset(pc, i.imm)?,
                            }
                            r[10] -= FRAME;
                        }
                        0x80 => {
                            let v = self.helper(i.imm, &r)?;
                            r[0] = v;
                        }
                        0x90 => match frames.pop() {
                            None => {
                                let start = (self.data - base) as usize;
                                let end = (self.data_end - base) as usize;
                                let packet = self.regions
                                    [(base >> 32) as usize - FIRST_DATA_REGION as usize]
                                    [start..end]
                                    .to_vec();
                                return Ok(Run {
                                    verdict: r[0] as u32,
                                    insns: steps,
                                    helpers: std::mem::take(&mut self.helpers),
                                    lookups: std::mem::take(&mut self.lookups_by_map),
                                    packet,
                                });
                            }
                            Some((s, p, saved)) => {
                                sec = s;
                                pc = p;
                                r[6..11].copy_from_slice(&saved);
                            }
                        },
                        _ => {
                            let b = if use_reg {
                                r[i.src]
                            } else {
                                i64::from(i.imm) as u64
                            };
                            let (a, b) = if class == 6 {
                                (u64::from(r[i.dst] as u32), u64::from(b as u32))
                            } else {
                                (r[i.dst], b)
                            };
                            let (sa, sb) = if class == 6 {
                                (i64::from(a as u32 as i32), i64::from(b as u32 as i32))
                            } else {
                                (a as i64, b as i64)
                            };
                            let taken = match code {
                                0x10 => a == b,
                                0x20 => a > b,
                                0x30 => a >= b,
                                0x40 => a & b != 0,
                                0x50 => a != b,
                                0x60 => sa > sb,
                                0x70 => sa >= sb,
                                0xa0 => a < b,
                                0xb0 => a <= b,
                                0xc0 => sa < sb,
                                0xd0 => sa <= sb,
                                _ => bail!("jump op {:#x}", i.op),
                            };
                            if taken {
                                pc = offset(pc, i32::from(i.off))?;
                            }
                        }
                    }
                }
                // LD: only the 64-bit immediate (two slots).
                0 => {
                    ensure!(i.op == 0x18, "load op {:#x}", i.op);
                    let hi = code.get(pc).context("truncated 64-bit load")?.imm;
                    pc += 1;
                    r[i.dst] = match program.relocs.get(&(sec, here)).cloned() {
                        Some(Target::Map(name)) => self.map_handle(&name)?,
                        Some(Target::Section(s, addr)) => {
                            let region = match self.data_regions.get(&s) {
                                Some(r) => *r,
                                None => {
                                    let bytes = program
                                        .data
                                        .get(&s)
                                        .context("64-bit load of a section without data")?
                                        .clone();
                                    let r = self.region(bytes);
                                    self.data_regions.insert(s, r);
                                    r
                                }
                            };
                            region + addr + i64::from(i.imm) as u64
                        }
                        None => u64::from(i.imm as u32) | (u64::from(hi as u32) << 32),
                    };
                }
                // LDX, ST, STX.
                1..=3 => {
                    let size = match i.op & 0x18 {
                        0x00 => 4,
                        0x08 => 2,
                        0x10 => 1,
                        _ => 8,
                    };
                    let mode = i.op & 0xe0;
                    if class == 1 {
                        ensure!(mode == 0x60, "load mode {:#x}", i.op);
                        let addr = r[i.src].wrapping_add(i64::from(i.off) as u64);
                        r[i.dst] = self.load(addr, size)?;
                        continue;
                    }
                    let addr = r[i.dst].wrapping_add(i64::from(i.off) as u64);
                    if mode == 0xc0 {
                        // Atomic add, without fetch.
                        ensure!(i.imm == 0, "atomic op {:#x}", i.imm);
                        let v = self.load(addr, size)?.wrapping_add(r[i.src]);
                        self.store(addr, size, v)?;
                        continue;
                    }
                    ensure!(mode == 0x60, "store mode {:#x}", i.op);
                    let v = if class == 3 {
                        r[i.src]
                    } else {
                        i64::from(i.imm) as u64
                    };
                    self.store(addr, size, v)?;
                }
                _ => bail!("op {:#x}", i.op),
            }
        }
    }
}

/// Section title.
pub const INSNS: &str = "1e. instructions executed per packet (counted, not timed)";

/// Counts the instructions of the floor cases and the datapath cases of section 1 (in
/// `ebpf`, loaded from [`VIP_BENCH`] and set up as section 1 has it), after checking the
/// interpreter against the kernel on every datapath case.
pub fn section(report: &mut Report, ebpf: &mut Ebpf, floors: &[Case], lb: &[Case]) -> Result<()> {
    let program = Program::parse(VIP_BENCH)?;
    for c in lb {
        let (verdict, out) = run_once(ebpf, "bench_lb_once", &c.packet)?;
        let run = program.run(ebpf, "bench_lb_once", &c.packet)?;
        ensure!(
            run.verdict == verdict && run.packet == out,
            "{}: the instruction counter's interpreter disagrees with the kernel: verdict \
             {} against {}\n  interpreter {}\n  kernel      {}",
            c.name,
            action::name(run.verdict),
            action::name(verdict),
            hex(&run.packet),
            hex(&out)
        );
    }
    let count = |c: &Case| -> Result<Run> {
        let run = program
            .run(ebpf, c.prog, &c.packet)
            .with_context(|| format!("counting {}", c.name))?;
        ensure!(
            run.verdict == c.verdict,
            "{}: interpreted verdict {}, want {}",
            c.name,
            action::name(run.verdict),
            action::name(c.verdict)
        );
        Ok(run)
    };
    let by_prog = |prog: &str| floors.iter().find(|c| c.prog == prog);
    let (Some(pass), Some(encap)) = (by_prog("bench_pass"), by_prog("bench_encap")) else {
        bail!("section 1e needs the pass and encap floors");
    };
    let pass = count(pass)?.insns as f64;
    let encap = count(encap)?.insns as f64;
    for c in floors.iter().chain(lb) {
        let run = count(c)?;
        if c.prog == "bench_lb_new" {
            ensure!(
                run.lookups.contains_key("MAGLEV"),
                "{}: the counted run found its flow in the table (no Maglev lookup)",
                c.name
            );
        }
        let n = run.insns as f64;
        let row = report.push(
            INSNS,
            c.name.clone(),
            "instructions",
            Trials {
                median: n,
                min: n,
                max: n,
                n: 1,
            },
        );
        row.ratios = vec![
            ("pass floor".into(), n / pass),
            ("encap floor".into(), n / encap),
        ];
        row.note = format!(
            "{:+} over the pass floor (the wrapper alone); {} helper calls, {} of them map \
             lookups",
            run.insns as i64 - pass as i64,
            run.helper_calls(),
            run.lookups.values().sum::<u64>()
        );
    }
    Ok(())
}

fn offset(pc: usize, off: i32) -> Result<usize> {
    usize::try_from(pc as i64 + i64::from(off)).context("jump before the code")
}

/// An ALU operation at one width (`u64` for ALU64, `u32` for ALU): wrapping arithmetic,
/// shift amounts masked to the width, division by zero giving 0 and modulo by zero
/// keeping the dividend, as the kernel defines them. The signed forms (`off != 0`,
/// BPF v4) are refused.
macro_rules! alu {
    ($name:ident, $u:ty, $i:ty) => {
        fn $name(code: u8, a: $u, x: $u, off: i16) -> Result<$u> {
            let shift = x & (<$u>::BITS as $u - 1);
            Ok(match code {
                0x00 => a.wrapping_add(x),
                0x10 => a.wrapping_sub(x),
                0x20 => a.wrapping_mul(x),
                0x30 if off == 0 => a.checked_div(x).unwrap_or(0),
                0x40 => a | x,
                0x50 => a & x,
                0x60 => a << shift,
                0x70 => a >> shift,
                0x80 => a.wrapping_neg(),
                0x90 if off == 0 => a.checked_rem(x).unwrap_or(a),
                0xa0 => a ^ x,
                0xb0 if off == 0 => x,
                0xc0 => ((a as $i) >> shift) as $u,
                _ => bail!("{}-bit ALU op {code:#x} (off {off})", <$u>::BITS),
            })
        }
    };
}
alu!(alu64, u64, i64);
alu!(alu32, u32, i32);

/// `BPF_MAP_LOOKUP_ELEM` on `fd`; for a per-CPU map, the first CPU's value.
fn kernel_lookup(fd: i32, key: &[u8], value_size: usize, per_cpu: bool) -> Result<Option<Vec<u8>>> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let len = if per_cpu {
        value_size.next_multiple_of(8) * possible_cpus()?
    } else {
        value_size
    };
    let mut value = vec![0u8; len];
    let attr = Attr {
        map_fd: fd as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: attr points at live buffers of the sizes the map was created with.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            1, // BPF_MAP_LOOKUP_ELEM
            &attr as *const Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e).context("BPF_MAP_LOOKUP_ELEM");
    }
    value.truncate(value_size);
    Ok(Some(value))
}

fn possible_cpus() -> Result<usize> {
    aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .context("reading the possible CPUs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alu_ops_wrap_and_shift_as_bpf_does() {
        assert_eq!(alu64(0x00, u64::MAX, 2, 0).unwrap(), 1);
        assert_eq!(alu32(0x00, u32::MAX, 2, 0).unwrap(), 1);
        assert_eq!(alu64(0x30, 7, 0, 0).unwrap(), 0, "division by zero gives 0");
        assert_eq!(
            alu64(0x90, 7, 0, 0).unwrap(),
            7,
            "modulo zero keeps the dividend"
        );
        assert_eq!(alu32(0xc0, 0x8000_0000, 4, 0).unwrap(), 0xf800_0000);
        assert_eq!(
            alu64(0x60, 1, 65, 0).unwrap(),
            2,
            "shift amounts are masked"
        );
        assert!(
            alu64(0xb0, 1, 2, 8).is_err(),
            "sign-extending moves are refused"
        );
    }
}
