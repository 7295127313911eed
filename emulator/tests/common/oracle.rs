//! Every corpus launch doubles as a test of the split-launch footprint analysis
//! (`remora_emulator::footprint`):
//!
//! (a) the kernel is analysed; (b) when splittable, the launch runs with the access log and
//! every recorded global access of each block must lie inside the static footprint of the
//! block's range, for ranges of one block and for 2 and 3 equal ranges (reads of `.const`
//! module variables excepted: every member loads the module); (c) when [`plan`] accepts a
//! split into 2 and into 3 ranges, each range runs the guarded module on its own copy of the
//! memory as it was before the launch, and the bytes of each range's write footprint, taken
//! from its copy, assembled over the snapshot, must equal the unsplit launch's memory in every
//! allocation. Launches past [`SPLIT_LIMIT`] thread-instructions skip (c), and past
//! [`LOG_LIMIT`] accesses skip (b); both say so on stderr. A violation panics, naming the
//! kernel and the first violating access.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use remora_emulator::access_log::AccessLog;
use remora_emulator::footprint::{plan_in, split_dim, Analysis, KernelFootprint, RangeFootprint};
use remora_emulator::guard::{guard_params, guard_ptx};
use remora_emulator::{
    AddressSpace, DeviceMemory, GlobalSpace, LaunchConfig, LaunchOptions, LaunchOutcome,
    LoadedModule, Module,
};

use super::Gpu;

/// Most thread-instructions for which the split is run and compared.
pub const SPLIT_LIMIT: u64 = 1 << 20;
/// Most accesses logged per launch.
pub const LOG_LIMIT: usize = 1 << 21;

type Key = usize;

fn key(m: &Arc<Module>) -> Key {
    Arc::as_ptr(m) as usize
}

static TEXTS: Mutex<Vec<(Key, Arc<Module>, String)>> = Mutex::new(Vec::new());
static GUARDED: Mutex<Vec<(Key, Arc<Module>)>> = Mutex::new(Vec::new());
/// Outcome of each split check: (test thread, kernel, parts, accepted by `plan` and matched).
type SplitLog = Vec<(std::thread::ThreadId, String, u32, bool)>;
static SPLITS: Mutex<SplitLog> = Mutex::new(Vec::new());

fn record(kernel: &str, parts: u32, ok: bool) {
    SPLITS
        .lock()
        .unwrap()
        .push((std::thread::current().id(), kernel.to_string(), parts, ok));
}

/// The split checks of `kernel` this test thread ran so far: (parts, whether [`plan_in`]
/// accepted the split; an accepted split that differs from the unsplit run panics).
pub fn splits(kernel: &str) -> Vec<(u32, bool)> {
    let me = std::thread::current().id();
    SPLITS
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.0 == me && x.1 == kernel)
        .map(|x| (x.2, x.3))
        .collect()
}

/// Remembers a module's PTX text (keeping the module alive so the key stays unique), so that
/// its guarded form can be built.
pub fn register(m: &Arc<Module>, text: &str) {
    TEXTS
        .lock()
        .unwrap()
        .push((key(m), m.clone(), text.to_string()));
}

fn guarded(m: &Arc<Module>) -> Option<Arc<Module>> {
    let k = key(m);
    if let Some((_, g)) = GUARDED.lock().unwrap().iter().find(|x| x.0 == k) {
        return Some(g.clone());
    }
    let text = TEXTS
        .lock()
        .unwrap()
        .iter()
        .find(|x| x.0 == k)
        .map(|x| x.2.clone())?;
    let g = guard_ptx(&text).unwrap_or_else(|e| panic!("guard_ptx: {e}"));
    let gm = Arc::new(Module::from_ptx(&g).unwrap_or_else(|e| panic!("guarded module: {e}")));
    GUARDED.lock().unwrap().push((k, gm.clone()));
    Some(gm)
}

fn snapshot(space: &AddressSpace) -> Vec<(u64, Vec<u8>)> {
    space
        .allocations()
        .into_iter()
        .map(|(b, n)| {
            let mut v = vec![0u8; n as usize];
            space.read(b, &mut v).unwrap();
            (b, v)
        })
        .collect()
}

/// The launch, through the oracle.
pub fn launch(
    gpu: &Gpu,
    kernel: &str,
    cfg: &LaunchConfig,
    buf: &[u8],
    opts: &LaunchOptions,
) -> LaunchOutcome {
    let m = gpu.lm.module().clone();
    let analysis = if cfg.cooperative {
        None
    } else {
        m.footprint(kernel)
    };
    let fp = match &analysis {
        Some(Analysis::Splittable(fp)) => fp,
        Some(Analysis::NotSplittable(why)) => {
            eprintln!("footprint: {kernel}: not splittable: {why}");
            return gpu.lm.launch(&gpu.space, kernel, cfg, buf, opts);
        }
        None => return gpu.lm.launch(&gpu.space, kernel, cfg, buf, opts),
    };
    let before = snapshot(&gpu.space);
    let log = AccessLog::new(LOG_LIMIT);
    let out = gpu
        .lm
        .launch_recorded(&gpu.space, kernel, cfg, buf, opts, Some(&log));
    if out.result.is_err() {
        return out;
    }
    let (grid, block) = (cfg.grid, cfg.block);
    let dim = split_dim(grid);
    let n = grid[dim];
    // Ranges of one block and 2/3 equal ranges must cover what their blocks touched.
    let mut evals: HashMap<(u32, u32), Result<RangeFootprint, String>> = HashMap::new();
    let mut ev = |lo: u32, hi: u32| -> Result<RangeFootprint, String> {
        evals
            .entry((lo, hi))
            .or_insert_with(|| fp.evaluate(buf, grid, block, dim, lo, hi))
            .clone()
    };
    if let Err(e) = ev(0, n) {
        eprintln!("footprint: {kernel}: not splittable at launch: {e}");
        return out;
    }
    eprintln!("footprint: {kernel}: splittable");
    let consts: Vec<(u64, u64)> = m
        .globals()
        .iter()
        .filter(|g| g.space == GlobalSpace::Const)
        .filter_map(|g| gpu.lm.global(&g.name))
        .collect();
    if log.overflowed() {
        eprintln!("footprint: {kernel}: over {LOG_LIMIT} accesses, coverage check skipped");
    } else {
        let accesses = log.take();
        let mut violations = 0usize;
        let mut first = None;
        for parts in [n, 2, 3] {
            if parts > n {
                continue;
            }
            for a in &accesses {
                let b = a.block;
                let c = [
                    b % grid[0] as u64,
                    (b / grid[0] as u64) % grid[1] as u64,
                    b / (grid[0] as u64 * grid[1] as u64),
                ][dim] as u32;
                let r = |i: u32| (i as u64 * n as u64 / parts as u64) as u32;
                let (lo, hi) = (0..parts)
                    .map(|k| (r(k), r(k + 1)))
                    .find(|(lo, hi)| (*lo..*hi).contains(&c))
                    .unwrap_or((c, c + 1));
                let f = match ev(lo, hi) {
                    Ok(f) => f,
                    Err(e) => panic!("{kernel}: range {lo}..{hi} not evaluable: {e}"),
                };
                let size = a.size as u64;
                let regions = if a.write { &f.writes } else { &f.reads };
                let ok = regions.iter().any(|r| r.contains(a.addr, size))
                    || (!a.write
                        && f.unbounded_reads.iter().any(|&u| {
                            gpu.space.find(u).is_some_and(|al| {
                                al.contains(a.addr, size)
                                    || (a.addr >= al.base() && a.addr < al.base() + al.extent())
                            })
                        }))
                    || (!a.write
                        && consts
                            .iter()
                            .any(|&(s, l)| a.addr >= s && a.addr + size <= s + l));
                if !ok {
                    violations += 1;
                    if first.is_none() {
                        first = Some(format!(
                            "{a:?} (along {dim}: block {c}, range {lo}..{hi}, footprint {f:?})"
                        ));
                    }
                }
            }
        }
        assert!(
            violations == 0,
            "footprint of {kernel} misses {violations} accesses; first: {}",
            first.unwrap_or_default()
        );
    }
    if out.thread_instructions > SPLIT_LIMIT {
        eprintln!(
            "footprint: {kernel}: {} thread-instructions, split run skipped",
            out.thread_instructions
        );
        return out;
    }
    split_check(gpu, &m, fp, kernel, cfg, buf, opts, &before);
    out
}

/// (c): the split runs, assembled, equal the unsplit one.
#[allow(clippy::too_many_arguments)]
fn split_check(
    gpu: &Gpu,
    m: &Arc<Module>,
    fp: &KernelFootprint,
    kernel: &str,
    cfg: &LaunchConfig,
    buf: &[u8],
    opts: &LaunchOptions,
    before: &[(u64, Vec<u8>)],
) {
    let Some(gm) = guarded(m) else {
        eprintln!("footprint: {kernel}: no PTX text, split run skipped");
        return;
    };
    let after = snapshot(&gpu.space);
    let dim = split_dim(cfg.grid);
    let n = cfg.grid[dim];
    let alloc = |a: u64| gpu.space.find(a).map(|al| (al.base(), al.size()));
    for parts in [2u32, 3] {
        if parts > n {
            continue;
        }
        let ranges: Vec<(u32, u32)> = (0..parts)
            .map(|k| {
                let r = |i: u32| (i as u64 * n as u64 / parts as u64) as u32;
                (r(k), r(k + 1))
            })
            .collect();
        let fps = match plan_in(fp, buf, cfg.grid, cfg.block, &ranges, &alloc) {
            Ok((_, f)) => f,
            Err(e) => {
                eprintln!("footprint: {kernel}: split into {parts} refused: {e}");
                record(kernel, parts, false);
                continue;
            }
        };
        let mut image: Vec<(u64, Vec<u8>)> = before.to_vec();
        for (&(lo, hi), f) in ranges.iter().zip(&fps) {
            let space = AddressSpace::new(DeviceMemory::new(1 << 32), 0x7f00_0000_0000, 1 << 36);
            let lm = LoadedModule::new(gm.clone(), &space).unwrap();
            for g in m.globals() {
                if lm.global(&g.name) != gpu.lm.global(&g.name) {
                    eprintln!("footprint: {kernel}: module globals moved, split run skipped");
                    return;
                }
            }
            for (b, bytes) in before {
                if space.find(*b).is_none() {
                    space.alloc_fixed(*b, bytes.len() as u64).unwrap();
                }
                space.write(*b, bytes).unwrap();
            }
            let params = guard_params(buf, dim as u32, lo, hi);
            let r = lm.launch(&space, kernel, cfg, &params, opts);
            r.result
                .unwrap_or_else(|e| panic!("{kernel}: guarded range {lo}..{hi}: {e}"));
            for (b, img) in image.iter_mut() {
                let (b, end) = (*b, *b + img.len() as u64);
                for w in &f.writes {
                    for (s, e) in w.intervals() {
                        let (s, e) = (s.max(b), e.min(end));
                        if s < e {
                            space
                                .read(s, &mut img[(s - b) as usize..(e - b) as usize])
                                .unwrap();
                        }
                    }
                }
            }
        }
        for ((b, got), (_, want)) in image.iter().zip(&after) {
            if let Some(i) = got.iter().zip(want).position(|(x, y)| x != y) {
                panic!(
                    "{kernel}: split into {parts} differs from the unsplit run at {:#x} \
                     (allocation {b:#x}): {} vs {}",
                    b + i as u64,
                    got[i],
                    want[i]
                );
            }
        }
        eprintln!("footprint: {kernel}: split into {parts} matches");
        record(kernel, parts, true);
    }
}
