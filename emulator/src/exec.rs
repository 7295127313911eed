//! The interpreter: warps of 32 lanes in lockstep, divergence by splits (lowest program counter
//! first, merged when they meet), block-wide barriers that count exited threads, blocks handed
//! to worker threads in increasing order and parked when they run long, so blocks that wait on
//! each other still progress.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::error::EmuError;
use crate::float;
use crate::ir::*;
use crate::lower::width_mask;
use crate::memory::{AddressSpace, Allocation};

const FULL: u32 = u32::MAX;
/// Warp instructions a warp runs before the next warp of its block gets a turn.
const WARP_SLICE: u64 = 1 << 12;
/// Warp instructions a block runs before it is parked if other blocks are waiting.
const BLOCK_SLICE: u64 = 1 << 21;
/// The same for a cooperative launch, whose blocks wait for each other at every grid
/// barrier: a block spinning there is parked soon, so the blocks that have not arrived yet
/// run. A park costs a lock and a queue push, small beside this many instructions.
const COOPERATIVE_SLICE: u64 = 1 << 12;
/// Local memory of one thread, recursive activations included; beyond it a call fails as a
/// stack overflow. Bounds the host memory one block can take.
const MAX_LOCAL: u32 = 1 << 17;

/// Register, predicate and local-memory bases of one function's frame within a kernel.
#[derive(Debug, Clone, Copy)]
pub struct Bases {
    pub reg: u32,
    pub pred: u32,
    pub local: u32,
}

/// Frame layout of a kernel and every function it can call: one frame per function.
#[derive(Debug, Clone)]
pub struct KernelLayout {
    /// (function, bases), sorted by function: sparse, since modules can hold thousands of
    /// functions and kernels.
    pub bases: Vec<(u32, Bases)>,
    pub regs: u32,
    pub preds: u32,
    pub local: u32,
    /// (variable, shared-space offset) of each static shared variable the kernel uses, sorted.
    pub shared_offsets: Vec<(u32, u32)>,
    pub static_shared: u32,
}

/// Lays out frames for `kernel` and its callees.
pub fn layout(
    funcs: &[Func],
    shared_vars: &[(u32, u32)],
    kernel: u32,
) -> Result<KernelLayout, EmuError> {
    let mut l = KernelLayout {
        bases: Vec::new(),
        regs: 0,
        preds: 0,
        local: 0,
        shared_offsets: Vec::new(),
        static_shared: 0,
    };
    // Iterative DFS; `seen` marks functions already given a frame.
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<(u32, usize)> = vec![(kernel, 0)];
    while let Some(&mut (f, ref mut next)) = stack.last_mut() {
        let fi = f as usize;
        if *next == 0 && seen.insert(f) {
            let func = &funcs[fi];
            let local = l.local.next_multiple_of(16);
            l.bases.push((
                f,
                Bases {
                    reg: l.regs,
                    pred: l.preds,
                    local,
                },
            ));
            l.regs = l.regs.saturating_add(func.nregs);
            l.preds = l.preds.saturating_add(func.npreds);
            l.local = local.saturating_add(func.local_bytes);
        }
        let callees = &funcs[fi].callees;
        if *next < callees.len() {
            let c = callees[*next];
            *next += 1;
            // A function already seen may be on the DFS stack (a recursive call): its one
            // frame is saved and restored around nested activations at run time.
            if !seen.contains(&c) {
                stack.push((c, 0));
            }
        } else {
            stack.pop();
        }
    }
    l.bases.sort_unstable_by_key(|b| b.0);
    if let Some(f) = l
        .bases
        .iter()
        .map(|b| &funcs[b.0 as usize])
        .find(|f| f.entry.is_none() && f.builtin.is_none())
    {
        return Err(EmuError::unsupported(
            f.line,
            format!("call to external function `{}`", f.name),
        ));
    }
    let mut used: Vec<u32> = l
        .bases
        .iter()
        .flat_map(|b| funcs[b.0 as usize].shared_used.iter().copied())
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut off = 0u64;
    for v in used {
        let Some(&(size, align)) = shared_vars.get(v as usize) else {
            continue;
        };
        let o = off.next_multiple_of(align.max(1) as u64);
        l.shared_offsets.push((v, o as u32));
        off = o + size as u64;
        if off > u32::MAX as u64 / 4 {
            return Err(EmuError::unsupported(
                0,
                "kernel static shared memory too large",
            ));
        }
    }
    l.static_shared = off as u32;
    // Bounds on per-warp state, so one launch cannot exhaust host memory.
    if l.local > 1 << 16 || l.regs > 1 << 14 {
        return Err(EmuError::unsupported(0, "kernel frame too large"));
    }
    Ok(l)
}

/// Everything a launch shares between worker threads.
pub struct Ctx<'a> {
    pub code: &'a [Inst],
    pub funcs: &'a [Func],
    pub layout: &'a KernelLayout,
    pub kernel: u32,
    pub space: &'a AddressSpace,
    pub params: &'a [u8],
    pub globals: &'a [u64],
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub dyn_base: u32,
    pub budget: u64,
    pub used: AtomicU64,
    pub abort: AtomicBool,
    /// Bytes of printf output so far; output past [`PRINTF_LIMIT`] is dropped, as the device's
    /// printf FIFO drops it.
    pub printf_bytes: AtomicU64,
    /// Device address of the grid workspace of a cooperative launch (its barrier word at
    /// offset 4, as `cooperative_groups` lays it out), read through `%envreg1` (high half)
    /// and `%envreg2` (low half); 0 in other launches, where a grid sync traps, as the
    /// headers make it on a GPU.
    pub grid_workspace: u64,
    /// Where to log global-memory accesses (the footprint oracle), if anywhere.
    pub record: Option<&'a crate::access_log::AccessLog>,
}

/// CUDA's default printf FIFO size (`cudaLimitPrintfFifoSize`).
pub const PRINTF_LIMIT: u64 = 1 << 20;

pub struct RunResult {
    pub printf: String,
    pub result: Result<(), EmuError>,
    pub thread_instructions: u64,
}

/// Runs every block of the grid on `threads` workers.
pub fn run(ctx: &Ctx, threads: usize) -> RunResult {
    let nblocks = ctx.grid.iter().map(|&g| g as u64).product::<u64>();
    let next = AtomicU64::new(0);
    let parked: Mutex<VecDeque<Box<Block>>> = Mutex::new(VecDeque::new());
    let outputs: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let error: Mutex<Option<(u64, EmuError)>> = Mutex::new(None);
    let tinstr = AtomicU64::new(0);
    let workers = threads.clamp(1, 256).min(nblocks.max(1) as usize);
    let work = || {
        let mut local_t = 0u64;
        // The last finished block, whose buffers the next one reuses.
        let mut spare: Option<Box<Block>> = None;
        loop {
            if ctx.abort.load(Relaxed) {
                break;
            }
            // New blocks first, in increasing order; parked ones when none are left.
            let i = next.fetch_add(1, Relaxed);
            let mut blk = if i < nblocks {
                match spare.take() {
                    Some(mut b) => {
                        b.reset(ctx, i);
                        b
                    }
                    None => Box::new(Block::new(ctx, i)),
                }
            } else {
                match parked.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
                    Some(b) => b,
                    None => break,
                }
            };
            let slice = if ctx.grid_workspace != 0 {
                COOPERATIVE_SLICE
            } else {
                BLOCK_SLICE
            };
            let others_waiting = || {
                next.load(Relaxed) < nblocks
                    || !parked.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
            };
            loop {
                let r = blk.run(ctx, slice);
                local_t += blk.take_tinstr();
                match r {
                    Ok(true) => {
                        if !blk.printf.is_empty() {
                            let s = std::mem::take(&mut blk.printf);
                            outputs
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((blk.linear, s));
                        }
                        spare = Some(blk);
                        break;
                    }
                    Ok(false) => {
                        if ctx.abort.load(Relaxed) {
                            break;
                        }
                        if others_waiting() {
                            parked
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push_back(blk);
                            break;
                        }
                    }
                    Err(e) => {
                        if !blk.printf.is_empty() {
                            let s = std::mem::take(&mut blk.printf);
                            outputs
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((blk.linear, s));
                        }
                        let mut g = error.lock().unwrap_or_else(|e| e.into_inner());
                        if g.as_ref().is_none_or(|(b, _)| blk.linear < *b) {
                            *g = Some((blk.linear, e));
                        }
                        ctx.abort.store(true, Relaxed);
                        break;
                    }
                }
            }
        }
        tinstr.fetch_add(local_t, Relaxed);
    };
    if workers <= 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    let mut outs = outputs.into_inner().unwrap_or_else(|e| e.into_inner());
    outs.sort_by_key(|o| o.0);
    let printf = outs.into_iter().map(|o| o.1).collect::<String>();
    let result = match error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    };
    RunResult {
        printf,
        result,
        thread_instructions: tinstr.load(Relaxed),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    None,
    /// Waiting at a barrier: id and expected thread count.
    Barrier(u32, u32),
    Collective,
}

#[derive(Debug, Clone)]
struct Split {
    pc: u32,
    mask: u32,
    func: u32,
    stack: Vec<Frame>,
    wait: Wait,
    forced: bool,
    /// Ran out its time slice while other splits waited: they go first, so intra-warp spin
    /// locks make progress.
    yielded: bool,
}

/// A call in progress.
#[derive(Debug, Clone)]
struct Frame {
    ret_pc: u32,
    caller: u32,
    call_pc: u32,
    /// The callee's registers and predicates as they were before a recursive call overwrote
    /// them.
    saved: Option<Arc<Saved>>,
    /// Local-memory base of the callee's activation. A function's first activation uses its
    /// frame in the static layout; a recursive one gets fresh local memory above every active
    /// frame, because its caller may have handed it pointers into the caller's own frame
    /// (numba returns values through such pointers).
    local: u32,
    /// End of the local memory the activations up to this one use.
    top: u32,
}

// Splits from one call share its saved frame: they may merge; different calls may not.
impl PartialEq for Frame {
    fn eq(&self, o: &Frame) -> bool {
        self.ret_pc == o.ret_pc
            && self.caller == o.caller
            && self.call_pc == o.call_pc
            && self.local == o.local
            && self.top == o.top
            && match (&self.saved, &o.saved) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

/// Registers and predicates of one function frame, all 32 lanes.
#[derive(Debug)]
struct Saved {
    regs: Vec<u64>,
    preds: Vec<u32>,
}

struct Warp {
    id: u32,
    regs: Vec<u64>,
    preds: Vec<u32>,
    local: Vec<u8>,
    local_size: u32,
    splits: Vec<Split>,
    valid: u32,
    exited: u32,
    cc: u32,
    cache: Option<Arc<Allocation>>,
    clock: u64,
    tinstr: u64,
    /// %tid.x/y/z of each lane, computed once.
    tid: [[u32; 32]; 3],
}

struct Block {
    linear: u64,
    ctaid: [u32; 3],
    shared: Vec<u8>,
    warps: Vec<Warp>,
    printf: String,
    arrive: [u32; 16],
    nthreads: u32,
}

enum WarpState {
    Done,
    Blocked,
    Ran,
}

enum Ev {
    Slice,
    Resched,
}

impl Block {
    fn new(ctx: &Ctx, linear: u64) -> Block {
        let gx = ctx.grid[0].max(1) as u64;
        let gy = ctx.grid[1].max(1) as u64;
        let ctaid = [
            (linear % gx) as u32,
            ((linear / gx) % gy) as u32,
            (linear / (gx * gy)) as u32,
        ];
        let nthreads = ctx.block.iter().product::<u32>();
        let nwarps = nthreads.div_ceil(32);
        let l = ctx.layout;
        let warps = (0..nwarps)
            .map(|w| {
                let n = (nthreads - w * 32).min(32);
                let valid = if n == 32 { FULL } else { (1u32 << n) - 1 };
                Warp {
                    id: w,
                    regs: vec![0; l.regs as usize * 32],
                    preds: vec![0; l.preds as usize],
                    local: vec![0; l.local as usize * 32],
                    local_size: l.local,
                    splits: vec![Split {
                        pc: ctx.funcs[ctx.kernel as usize].entry.unwrap_or(0),
                        mask: valid,
                        func: ctx.kernel,
                        stack: Vec::new(),
                        wait: Wait::None,
                        forced: false,
                        yielded: false,
                    }],
                    valid,
                    exited: 0,
                    cc: 0,
                    cache: None,
                    clock: 0,
                    tinstr: 0,
                    tid: {
                        let [bx, by, _] = ctx.block.map(|d| d.max(1));
                        let mut tid = [[0u32; 32]; 3];
                        for l in 0..32u32 {
                            let t = w * 32 + l;
                            tid[0][l as usize] = t % bx;
                            tid[1][l as usize] = (t / bx) % by;
                            tid[2][l as usize] = t / (bx * by);
                        }
                        tid
                    },
                }
            })
            .collect();
        Block {
            linear,
            ctaid,
            shared: vec![0; ctx.shared_bytes as usize],
            warps,
            printf: String::new(),
            arrive: [0; 16],
            nthreads,
        }
    }

    /// Makes a finished block of the same launch into block `linear`, reusing its buffers.
    fn reset(&mut self, ctx: &Ctx, linear: u64) {
        let gx = ctx.grid[0].max(1) as u64;
        let gy = ctx.grid[1].max(1) as u64;
        self.linear = linear;
        self.ctaid = [
            (linear % gx) as u32,
            ((linear / gx) % gy) as u32,
            (linear / (gx * gy)) as u32,
        ];
        // Shared and local memory and registers start at zero, so runs are reproducible.
        self.shared.fill(0);
        self.printf.clear();
        self.arrive = [0; 16];
        let entry = ctx.funcs[ctx.kernel as usize].entry.unwrap_or(0);
        for w in &mut self.warps {
            w.regs.fill(0);
            w.preds.fill(0);
            w.local.fill(0);
            w.splits.clear();
            w.splits.push(Split {
                pc: entry,
                mask: w.valid,
                func: ctx.kernel,
                stack: Vec::new(),
                wait: Wait::None,
                forced: false,
                yielded: false,
            });
            w.exited = 0;
            w.cc = 0;
            w.clock = 0;
            w.tinstr = 0;
        }
    }

    fn take_tinstr(&mut self) -> u64 {
        self.warps
            .iter_mut()
            .map(|w| std::mem::take(&mut w.tinstr))
            .sum()
    }

    /// Runs up to `slice` warp instructions; Ok(true) when every thread has exited.
    fn run(&mut self, ctx: &Ctx, slice: u64) -> Result<bool, EmuError> {
        let mut steps = 0u64;
        loop {
            let mut all_done = true;
            let mut progress = false;
            for wi in 0..self.warps.len() {
                let mut r = Runner {
                    ctx,
                    shared: &mut self.shared,
                    printf: &mut self.printf,
                    ctaid: self.ctaid,
                    arrive: &mut self.arrive,
                    w: &mut self.warps[wi],
                    steps: 0,
                };
                let st = r.run_warp(WARP_SLICE);
                let n = r.steps;
                steps += n;
                let used = ctx.used.fetch_add(n, Relaxed) + n;
                if used > ctx.budget {
                    ctx.abort.store(true, Relaxed);
                    return Err(EmuError::LaunchTimeout(ctx.budget));
                }
                match st? {
                    WarpState::Done => {}
                    WarpState::Blocked => all_done = false,
                    WarpState::Ran => {
                        all_done = false;
                        progress = true;
                    }
                }
                if n > 0 {
                    progress = true;
                }
            }
            if all_done {
                return Ok(true);
            }
            let waiting = self
                .warps
                .iter()
                .any(|w| w.splits.iter().any(|s| matches!(s.wait, Wait::Barrier(..))));
            let released = waiting && self.release(ctx)?;
            if !progress && !released {
                return Err(EmuError::LaunchFailed(
                    "deadlock: threads wait at a barrier or warp collective that the others never reach".into(),
                ));
            }
            if ctx.abort.load(Relaxed) {
                return Err(EmuError::LaunchFailed("launch aborted".into()));
            }
            if steps >= slice {
                return Ok(false);
            }
        }
    }

    /// Releases barriers whose arrived plus exited threads reach the expected count.
    fn release(&mut self, ctx: &Ctx) -> Result<bool, EmuError> {
        let mut released = false;
        for id in 0..16u32 {
            let mut arrived = 0u32;
            let mut expected = 0u32;
            for w in &self.warps {
                for s in &w.splits {
                    if let Wait::Barrier(i, e) = s.wait {
                        if i == id {
                            arrived += s.mask.count_ones();
                            expected = e;
                        }
                    }
                }
            }
            if arrived == 0 {
                continue;
            }
            let exited: u32 = self.warps.iter().map(|w| w.exited.count_ones()).sum();
            let full = expected >= self.nthreads;
            let have = arrived
                .saturating_add(self.arrive[id as usize])
                .saturating_add(if full { exited } else { 0 });
            if have < expected {
                continue;
            }
            self.arrive[id as usize] = 0;
            released = true;
            // bar.red: reduce the predicate over the arrived threads.
            let mut popc = 0u32;
            let mut any = false;
            let mut all = true;
            let mut red_inst: Option<&Inst> = None;
            for w in &self.warps {
                for s in &w.splits {
                    if s.wait == Wait::Barrier(id, expected) {
                        let inst = ctx.code.get(s.pc as usize);
                        if let Some(
                            i @ Inst {
                                op: Op::Bar { kind, p, .. },
                                ..
                            },
                        ) = inst
                        {
                            if *kind != BarKind::Sync {
                                red_inst = Some(i);
                                let b = bases(ctx, s.func)?;
                                let v = psrc_mask(&w.preds, b.pred, *p) & s.mask;
                                popc += v.count_ones();
                                any |= v != 0;
                                all &= v == s.mask;
                            }
                        }
                    }
                }
            }
            for w in &mut self.warps {
                for s in &mut w.splits {
                    if s.wait == Wait::Barrier(id, expected) {
                        s.wait = Wait::None;
                        if let Some(Inst {
                            op: Op::Bar { kind, d, .. },
                            ..
                        }) = red_inst
                        {
                            let b = bases(ctx, s.func)?;
                            match kind {
                                BarKind::RedPopc if *d != SINK => {
                                    let base = (b.reg + d) as usize * 32;
                                    for l in lanes(s.mask) {
                                        w.regs[base + l] = popc as u64;
                                    }
                                }
                                BarKind::RedAnd | BarKind::RedOr if *d != SINK => {
                                    let v = if *kind == BarKind::RedAnd { all } else { any };
                                    let p = &mut w.preds[(b.pred + d) as usize];
                                    *p = if v { *p | s.mask } else { *p & !s.mask };
                                }
                                _ => {}
                            }
                        }
                        s.pc += 1;
                    }
                }
                merge(&mut w.splits);
            }
        }
        Ok(released)
    }
}

/// The bases of the activation a split runs in: a recursive activation's local memory is its
/// own (see `Frame::local`).
fn split_bases(ctx: &Ctx, sp: &Split) -> Result<Bases, EmuError> {
    let mut b = bases(ctx, sp.func)?;
    if let Some(f) = sp.stack.last() {
        b.local = f.local;
    }
    Ok(b)
}

fn bases(ctx: &Ctx, func: u32) -> Result<Bases, EmuError> {
    let b = &ctx.layout.bases;
    b.binary_search_by_key(&func, |x| x.0)
        .ok()
        .and_then(|i| b.get(i))
        .map(|x| x.1)
        .ok_or_else(|| {
            EmuError::LaunchFailed("call into a function outside the kernel layout".into())
        })
}

fn psrc_mask(preds: &[u32], pb: u32, p: PSrc) -> u32 {
    match p {
        PSrc::Reg(r, neg) => {
            let v = preds[(pb + r) as usize];
            if neg {
                !v
            } else {
                v
            }
        }
        PSrc::Imm(b) => {
            if b {
                FULL
            } else {
                0
            }
        }
    }
}

fn merge(splits: &mut Vec<Split>) {
    let mut i = 0;
    while i < splits.len() {
        let mut j = i + 1;
        while j < splits.len() {
            let (a, b) = (&splits[i], &splits[j]);
            if a.pc == b.pc && a.func == b.func && a.wait == b.wait && a.stack == b.stack {
                let m = b.mask;
                splits[i].mask |= m;
                splits[i].forced |= splits[j].forced;
                splits[i].yielded &= splits[j].yielded;
                splits.swap_remove(j);
            } else {
                j += 1;
            }
        }
        i += 1;
    }
}

/// Lanes set in `m`, lowest first.
fn lanes(m: u32) -> impl Iterator<Item = usize> {
    let mut m = m;
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            Some(l)
        }
    })
}

#[inline(always)]
fn sx(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

struct Runner<'r, 'a> {
    ctx: &'r Ctx<'a>,
    shared: &'r mut Vec<u8>,
    printf: &'r mut String,
    ctaid: [u32; 3],
    arrive: &'r mut [u32; 16],
    w: &'r mut Warp,
    steps: u64,
}

type V = [u64; 32];

impl Runner<'_, '_> {
    fn run_warp(&mut self, limit: u64) -> Result<WarpState, EmuError> {
        let start = self.steps;
        loop {
            if self.w.splits.is_empty() {
                return Ok(if self.steps > start {
                    WarpState::Ran
                } else {
                    WarpState::Done
                });
            }
            // Deepest call first, then the lowest program counter.
            let pick = self
                .w
                .splits
                .iter()
                .enumerate()
                .filter(|(_, s)| s.wait == Wait::None)
                .min_by_key(|(_, s)| (s.yielded, std::cmp::Reverse(s.stack.len()), s.pc))
                .map(|(i, _)| i);
            if let Some(i) = pick {
                if self.w.splits[i].yielded {
                    // Everyone has yielded: start a new round.
                    for s in &mut self.w.splits {
                        s.yielded = false;
                    }
                }
            }
            let i = match pick {
                Some(i) => i,
                None => {
                    // Only waiting splits: a collective whose lanes never all arrive runs with
                    // the lanes it has.
                    let c = self
                        .w
                        .splits
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.wait == Wait::Collective)
                        .min_by_key(|(_, s)| s.pc)
                        .map(|(i, _)| i);
                    match c {
                        Some(i) => {
                            self.w.splits[i].wait = Wait::None;
                            self.w.splits[i].forced = true;
                            i
                        }
                        None => {
                            return Ok(if self.steps > start {
                                WarpState::Ran
                            } else {
                                WarpState::Blocked
                            });
                        }
                    }
                }
            };
            let mut sp = self.w.splits.swap_remove(i);
            let others: Vec<u32> = self
                .w
                .splits
                .iter()
                .filter(|s| {
                    s.func == sp.func && s.stack.len() == sp.stack.len() && s.wait == Wait::None
                })
                .map(|s| s.pc)
                .collect();
            let budget = (start + limit).saturating_sub(self.steps).max(1);
            let r = self.run_split(&mut sp, budget, &others);
            if matches!(r, Ok(Ev::Slice)) && !self.w.splits.is_empty() {
                sp.yielded = true;
            }
            if sp.mask != 0 {
                self.w.splits.push(sp);
            }
            if self.w.splits.len() > 1 {
                merge(&mut self.w.splits);
            }
            match r? {
                Ev::Slice => return Ok(WarpState::Ran),
                Ev::Resched => {
                    if self.steps - start >= limit {
                        return Ok(WarpState::Ran);
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn fetch(&self, s: &Src, b: Bases) -> V {
        match *s {
            Src::Reg(r) => {
                let i = (b.reg + r) as usize * 32;
                let mut o = [0u64; 32];
                o.copy_from_slice(&self.w.regs[i..i + 32]);
                o
            }
            Src::Imm(v) => [v; 32],
            Src::Global(g, off) => {
                let base = self.ctx.globals.get(g as usize).copied().unwrap_or(0);
                [base.wrapping_add(off as u64); 32]
            }
            Src::Local(off) => [(b.local + off) as u64; 32],
            Src::Shared(v, off) => {
                let offs = &self.ctx.layout.shared_offsets;
                let base = offs
                    .binary_search_by_key(&v, |x| x.0)
                    .ok()
                    .and_then(|i| offs.get(i))
                    .map_or(0, |x| x.1);
                [(base as i64).wrapping_add(off) as u64; 32]
            }
            Src::Sreg(Sreg::Tid(d)) => self.w.tid[d as usize % 3].map(|v| v as u64),
            Src::Sreg(
                s @ (Sreg::Ntid(_)
                | Sreg::Ctaid(_)
                | Sreg::Nctaid(_)
                | Sreg::Warpid
                | Sreg::Clock
                | Sreg::Clock64),
            ) => [self.sreg(s, 0); 32],
            Src::Sreg(s) => {
                let mut o = [0u64; 32];
                for (l, v) in o.iter_mut().enumerate() {
                    *v = self.sreg(s, l);
                }
                o
            }
        }
    }

    fn sreg(&self, s: Sreg, lane: usize) -> u64 {
        let c = self.ctx;
        let tid = [
            self.w.tid[0][lane],
            self.w.tid[1][lane],
            self.w.tid[2][lane],
        ];
        let lane = lane as u32;
        (match s {
            Sreg::Tid(d) => tid[d as usize % 3],
            Sreg::Ntid(d) => c.block[d as usize % 3],
            Sreg::Ctaid(d) => self.ctaid[d as usize % 3],
            Sreg::Nctaid(d) => c.grid[d as usize % 3],
            Sreg::Laneid => lane,
            Sreg::Warpid => self.w.id,
            Sreg::Nwarpid => c.block.iter().product::<u32>().div_ceil(32),
            Sreg::Smid | Sreg::Gridid => 0,
            Sreg::Nsmid => 1,
            Sreg::Clock => self.w.clock as u32,
            Sreg::Clock64 | Sreg::GlobalTimer => return self.w.clock,
            Sreg::LanemaskEq => 1u32 << lane,
            Sreg::LanemaskLt => (1u32 << lane) - 1,
            Sreg::LanemaskLe => ((1u64 << (lane + 1)) - 1) as u32,
            Sreg::LanemaskGt => !(((1u64 << (lane + 1)) - 1) as u32),
            Sreg::LanemaskGe => !((1u32 << lane) - 1),
            Sreg::DynSmem => c.shared_bytes - c.dyn_base,
            Sreg::TotalSmem => c.shared_bytes,
            Sreg::DynSharedBase => c.dyn_base,
            Sreg::EnvReg(1) => (c.grid_workspace >> 32) as u32,
            Sreg::EnvReg(2) => c.grid_workspace as u32,
            Sreg::EnvReg(_) => 0,
        }) as u64
    }

    #[inline(always)]
    fn write(&mut self, d: u32, b: Bases, m: u32, f: impl Fn(usize) -> u64) {
        if d == SINK {
            return;
        }
        let i = (b.reg + d) as usize * 32;
        let dst = &mut self.w.regs[i..i + 32];
        if m == FULL {
            for (l, v) in dst.iter_mut().enumerate() {
                *v = f(l);
            }
        } else {
            for l in lanes(m) {
                dst[l] = f(l);
            }
        }
    }

    fn set_pred(&mut self, p: u32, b: Bases, m: u32, v: u32) {
        if p == SINK {
            return;
        }
        let slot = &mut self.w.preds[(b.pred + p) as usize];
        *slot = (*slot & !m) | (v & m);
    }

    fn pmask(&self, p: PSrc, b: Bases) -> u32 {
        psrc_mask(&self.w.preds, b.pred, p)
    }

    fn run_split(&mut self, sp: &mut Split, limit: u64, others: &[u32]) -> Result<Ev, EmuError> {
        let code = self.ctx.code;
        let b = split_bases(self.ctx, sp)?;
        let mut n = 0u64;
        let res = loop {
            if n >= limit {
                break Ok(Ev::Slice);
            }
            let Some(inst) = code.get(sp.pc as usize) else {
                break Err(EmuError::LaunchFailed(
                    "ran past the end of the code".into(),
                ));
            };
            let mut m = sp.mask;
            if let Some((p, neg)) = inst.guard {
                let v = self.w.preds[(b.pred + p) as usize];
                m &= if neg { !v } else { v };
            }
            n += 1;
            self.w.tinstr += m.count_ones() as u64;
            match &inst.op {
                Op::Bra { target } => {
                    if m == sp.mask {
                        sp.pc = *target;
                        if !others.is_empty() {
                            break Ok(Ev::Resched);
                        }
                        continue;
                    }
                    if m != 0 {
                        let mut t = sp.clone();
                        t.pc = *target;
                        t.mask = m;
                        self.w.splits.push(t);
                        sp.mask &= !m;
                        sp.pc += 1;
                        break Ok(Ev::Resched);
                    }
                }
                Op::Exit | Op::Ret if m != 0 => {
                    if m != sp.mask {
                        // Lanes that do not leave continue after the instruction.
                        let mut rest = sp.clone();
                        rest.mask = sp.mask & !m;
                        rest.pc += 1;
                        self.w.splits.push(rest);
                        sp.mask = m;
                    }
                    if matches!(inst.op, Op::Exit) || sp.stack.is_empty() {
                        self.w.exited |= m;
                        sp.mask = 0;
                        break Ok(Ev::Resched);
                    }
                    let Some(frame) = sp.stack.pop() else {
                        break Ok(Ev::Resched);
                    };
                    let mut cb = bases(self.ctx, frame.caller)?;
                    if let Some(f) = sp.stack.last() {
                        cb.local = f.local;
                    }
                    // Return values leave the callee's frame before a saved one comes back.
                    let mut values = Vec::new();
                    if let Some(Inst {
                        op: Op::Call { rets, .. } | Op::CallIndirect { rets, .. },
                        ..
                    }) = code.get(frame.call_pc as usize)
                    {
                        let callee = &self.ctx.funcs[sp.func as usize];
                        for (k, &(off, size)) in rets.iter().enumerate() {
                            if let Some(&(coff, csize)) = callee.rets.get(k) {
                                let size = size.min(csize);
                                values.push((off, size, self.read_local(m, b.local + coff, size)));
                            }
                        }
                    }
                    if let Some(saved) = &frame.saved {
                        self.restore(sp.func, b, m, saved);
                    }
                    for (off, size, bytes) in values {
                        self.write_local(m, cb.local + off, size, &bytes);
                    }
                    sp.func = frame.caller;
                    sp.pc = frame.ret_pc;
                    break Ok(Ev::Resched);
                }
                Op::Call { func, args, .. } if m != 0 => {
                    if m != sp.mask {
                        let mut rest = sp.clone();
                        rest.mask = sp.mask & !m;
                        rest.pc += 1;
                        self.w.splits.push(rest);
                        sp.mask = m;
                    }
                    break self.enter(sp, *func, args, b).map(|()| Ev::Resched);
                }
                Op::CallIndirect { target, args, .. } if m != 0 => {
                    // Lanes may hold different targets: the lowest lane's goes first, the
                    // others call theirs when their split runs this instruction again.
                    let t = self.fetch(target, b);
                    let first = m.trailing_zeros() as usize;
                    let same = lanes(m)
                        .filter(|&l| t[l] == t[first])
                        .fold(0u32, |a, l| a | 1 << l);
                    if sp.mask & !m != 0 {
                        let mut rest = sp.clone();
                        rest.mask = sp.mask & !m;
                        rest.pc += 1;
                        self.w.splits.push(rest);
                    }
                    if m & !same != 0 {
                        let mut rest = sp.clone();
                        rest.mask = m & !same;
                        self.w.splits.push(rest);
                    }
                    sp.mask = same;
                    let func = match self.function_at(t[first]) {
                        Ok(f) => f,
                        Err(e) => break Err(e),
                    };
                    break self.enter(sp, func, args, b).map(|()| Ev::Resched);
                }
                Op::Bar {
                    kind, id, count, ..
                } if m != 0 => {
                    if m != sp.mask {
                        let mut rest = sp.clone();
                        rest.mask = sp.mask & !m;
                        rest.pc += 1;
                        self.w.splits.push(rest);
                        sp.mask = m;
                    }
                    let first = m.trailing_zeros() as usize;
                    let id = (self.fetch(id, b)[first] & 15) as u32;
                    let expected = match count {
                        Some(c) => self.fetch(c, b)[first] as u32,
                        None => self.ctx.block.iter().product(),
                    };
                    if *kind == BarKind::Arrive {
                        self.arrive[id as usize] =
                            self.arrive[id as usize].saturating_add(m.count_ones());
                        sp.pc += 1;
                        continue;
                    }
                    sp.wait = Wait::Barrier(id, expected);
                    break Ok(Ev::Resched);
                }
                Op::Shfl { member, .. }
                | Op::Vote { member, .. }
                | Op::Match { member, .. }
                | Op::Redux { member, .. }
                    if m != 0 =>
                {
                    let first = m.trailing_zeros() as usize;
                    let need = self.fetch(member, b)[first] as u32 & self.w.valid & !self.w.exited;
                    if need & !m != 0 && !sp.forced && !self.w.splits.is_empty() {
                        sp.wait = Wait::Collective;
                        break Ok(Ev::Resched);
                    }
                    sp.forced = false;
                    self.exec(&inst.op, m, b, inst.line)?;
                }
                Op::Activemask { d } if m != 0 => {
                    // Threads predicated off are still active.
                    let active = sp.mask as u64;
                    self.write(*d, b, m, |_| active);
                }
                Op::Trap if m != 0 => {
                    break Err(EmuError::LaunchFailed(format!(
                        "trap at line {}",
                        inst.line
                    )));
                }
                Op::Builtin { which, args, rets } if m != 0 => {
                    self.builtin(*which, args, rets, m, b)?;
                }
                _ if m != 0 => {
                    if let Err(e) = self.exec(&inst.op, m, b, inst.line) {
                        break Err(e);
                    }
                }
                _ => {}
            }
            sp.pc += 1;
            if !others.is_empty() && others.contains(&sp.pc) {
                break Ok(Ev::Resched);
            }
        };
        self.steps += n;
        self.w.clock += n;
        res
    }

    /// Calls `func` for the lanes of `sp`, copying `args` (caller frame slots) into its
    /// parameters.
    fn enter(
        &mut self,
        sp: &mut Split,
        func: u32,
        args: &[(u32, u32)],
        b: Bases,
    ) -> Result<(), EmuError> {
        let m = sp.mask;
        if sp.stack.len() >= 1024 {
            return Err(EmuError::LaunchFailed("call stack overflow".into()));
        }
        let callee = &self.ctx.funcs[func as usize];
        let mut nb = bases(self.ctx, func)?;
        // A recursive call reuses the callee's registers: keep the active ones.
        let active = sp.func == func || sp.stack.iter().any(|f| f.caller == func);
        let saved = active.then(|| Arc::new(self.save(func, nb)));
        let mut top = sp.stack.last().map_or(self.ctx.layout.local, |f| f.top);
        if active {
            nb.local = top.next_multiple_of(16);
            top = nb.local.saturating_add(callee.local_bytes);
            if top > MAX_LOCAL {
                return Err(EmuError::LaunchFailed("call stack overflow".into()));
            }
            self.grow_local(top);
            self.zero_local(m, nb.local, callee.local_bytes);
        }
        for (k, &(off, size)) in args.iter().enumerate() {
            if let Some(&(coff, csize)) = callee.params.get(k) {
                self.copy_local(m, b.local + off, nb.local + coff, size.min(csize));
            }
        }
        sp.stack.push(Frame {
            ret_pc: sp.pc + 1,
            caller: sp.func,
            call_pc: sp.pc,
            saved,
            local: nb.local,
            top,
        });
        sp.func = func;
        sp.pc = callee.entry.unwrap_or(0);
        Ok(())
    }

    /// The function whose address (see `FUNC_WINDOW`) is `addr`; anything else is a jump to
    /// an invalid program counter, as on hardware.
    fn function_at(&self, addr: u64) -> Result<u32, EmuError> {
        let bad = || EmuError::InvalidPc(format!("indirect call to {addr:#x}, not a function"));
        let off = addr.checked_sub(FUNC_WINDOW).ok_or_else(bad)?;
        if off % FUNC_STRIDE != 0 {
            return Err(bad());
        }
        let f = u32::try_from(off / FUNC_STRIDE).map_err(|_| bad())?;
        match self.ctx.funcs.get(f as usize) {
            Some(func) if func.entry.is_some() && bases(self.ctx, f).is_ok() => Ok(f),
            _ => Err(bad()),
        }
    }

    fn save(&self, func: u32, b: Bases) -> Saved {
        let f = &self.ctx.funcs[func as usize];
        let (r0, p0) = (b.reg as usize * 32, b.pred as usize);
        let regs = self
            .w
            .regs
            .get(r0..r0 + f.nregs as usize * 32)
            .unwrap_or(&[])
            .to_vec();
        let preds = self
            .w
            .preds
            .get(p0..p0 + f.npreds as usize)
            .unwrap_or(&[])
            .to_vec();
        Saved { regs, preds }
    }

    /// Puts back the lanes `m` of a saved frame.
    fn restore(&mut self, func: u32, b: Bases, m: u32, saved: &Saved) {
        let f = &self.ctx.funcs[func as usize];
        for slot in 0..f.nregs as usize {
            for l in lanes(m) {
                if let (Some(d), Some(v)) = (
                    self.w.regs.get_mut((b.reg as usize + slot) * 32 + l),
                    saved.regs.get(slot * 32 + l),
                ) {
                    *d = *v;
                }
            }
        }
        for (p, v) in saved.preds.iter().enumerate() {
            if let Some(d) = self.w.preds.get_mut(b.pred as usize + p) {
                *d = (*d & !m) | (v & m);
            }
        }
    }

    /// `size` bytes at a local offset of each lane in `m`, lane by lane.
    fn read_local(&self, m: u32, off: u32, size: u32) -> Vec<u8> {
        let ls = self.w.local_size as usize;
        let mut out = Vec::new();
        for l in lanes(m) {
            let s = l * ls + off as usize;
            match self.w.local.get(s..s + size as usize) {
                Some(b) => out.extend_from_slice(b),
                None => out.extend(std::iter::repeat_n(0, size as usize)),
            }
        }
        out
    }

    fn write_local(&mut self, m: u32, off: u32, size: u32, bytes: &[u8]) {
        let ls = self.w.local_size as usize;
        for (k, l) in lanes(m).enumerate() {
            let s = l * ls + off as usize;
            let src = bytes.get(k * size as usize..(k + 1) * size as usize);
            if let (Some(d), Some(v)) = (self.w.local.get_mut(s..s + size as usize), src) {
                d.copy_from_slice(v);
            }
        }
    }

    /// Widens each lane's local memory to at least `top` bytes, keeping its contents.
    fn grow_local(&mut self, top: u32) {
        let old = self.w.local_size as usize;
        if top as usize <= old {
            return;
        }
        let new = (top as usize).next_power_of_two().min(MAX_LOCAL as usize);
        let mut local = vec![0; new * 32];
        for l in 0..32 {
            if let (Some(d), Some(s)) = (
                local.get_mut(l * new..l * new + old),
                self.w.local.get(l * old..(l + 1) * old),
            ) {
                d.copy_from_slice(s);
            }
        }
        self.w.local = local;
        self.w.local_size = new as u32;
    }

    /// A fresh activation's local memory starts at zero, so runs are reproducible.
    fn zero_local(&mut self, m: u32, off: u32, size: u32) {
        let ls = self.w.local_size as usize;
        for l in lanes(m) {
            let s = l * ls + off as usize;
            if let Some(d) = self.w.local.get_mut(s..s + size as usize) {
                d.fill(0);
            }
        }
    }

    fn copy_local(&mut self, m: u32, from: u32, to: u32, size: u32) {
        let ls = self.w.local_size as usize;
        for l in lanes(m) {
            let (f, t) = (l * ls + from as usize, l * ls + to as usize);
            if f + size as usize <= self.w.local.len() && t + size as usize <= self.w.local.len() {
                self.w.local.copy_within(f..f + size as usize, t);
            }
        }
    }

    fn exec(&mut self, op: &Op, m: u32, b: Bases, line: u32) -> Result<(), EmuError> {
        match op {
            Op::Mov { d, a, mask } => {
                let x = self.fetch(a, b);
                let mask = *mask;
                self.write(*d, b, m, |l| x[l] & mask);
            }
            Op::MovPred { d, a } => {
                let v = self.pmask(*a, b);
                self.set_pred(*d, b, m, v);
            }
            Op::Pack { d, parts, bits } => {
                let vals: Vec<V> = parts.iter().map(|p| self.fetch(p, b)).collect();
                let bits = *bits;
                let pm = width_mask(bits);
                self.write(*d, b, m, |l| {
                    vals.iter()
                        .enumerate()
                        .fold(0u64, |acc, (k, v)| acc | ((v[l] & pm) << (k as u32 * bits)))
                });
            }
            Op::Unpack { ds, a, bits } => {
                let x = self.fetch(a, b);
                let bits = *bits;
                let pm = width_mask(bits);
                for (k, d) in ds.iter().enumerate() {
                    let sh = k as u32 * bits;
                    self.write(*d, b, m, |l| if sh >= 64 { 0 } else { (x[l] >> sh) & pm });
                }
            }
            Op::Int2 {
                op,
                bits,
                signed,
                sat,
                d,
                a,
                b: bb,
            } => self.int2(*op, *bits, *signed, *sat, *d, a, bb, m, b),
            Op::Int1 {
                op,
                bits,
                signed,
                d,
                a,
            } => {
                let x = self.fetch(a, b);
                let (bits, signed) = (*bits, *signed);
                let mask = width_mask(bits);
                match op {
                    I1::Not => self.write(*d, b, m, |l| !x[l] & mask),
                    I1::Cnot => self.write(*d, b, m, |l| (x[l] & mask == 0) as u64),
                    I1::Neg => self.write(*d, b, m, |l| x[l].wrapping_neg() & mask),
                    I1::Abs => {
                        self.write(*d, b, m, |l| (sx(x[l], bits).wrapping_abs() as u64) & mask)
                    }
                    I1::Popc => self.write(*d, b, m, |l| (x[l] & mask).count_ones() as u64),
                    I1::Clz => self.write(*d, b, m, |l| {
                        let v = x[l] & mask;
                        (v.leading_zeros() - (64 - bits)) as u64
                    }),
                    I1::Brev => {
                        self.write(*d, b, m, |l| (x[l] & mask).reverse_bits() >> (64 - bits))
                    }
                    I1::Bfind | I1::BfindShift => {
                        let shift = *op == I1::BfindShift;
                        self.write(*d, b, m, |l| {
                            let mut v = x[l] & mask;
                            if signed && sx(v, bits) < 0 {
                                v = !v & mask;
                            }
                            if v == 0 {
                                0xFFFF_FFFF
                            } else {
                                let pos = 63 - v.leading_zeros() as u64;
                                if shift {
                                    bits as u64 - 1 - pos
                                } else {
                                    pos
                                }
                            }
                        })
                    }
                }
            }
            Op::Int3 {
                op,
                bits,
                signed,
                d,
                a,
                b: bb,
                c,
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                let (bits, signed) = (*bits, *signed);
                let mask = width_mask(bits);
                match op {
                    I3::MadLo => self.write(*d, b, m, |l| {
                        x[l].wrapping_mul(y[l]).wrapping_add(z[l]) & mask
                    }),
                    I3::MadHi => self.write(*d, b, m, |l| {
                        mul_hi(x[l], y[l], bits, signed).wrapping_add(z[l]) & mask
                    }),
                    I3::MadWide => {
                        let wm = width_mask(bits * 2);
                        self.write(*d, b, m, |l| {
                            mul_wide(x[l], y[l], bits, signed).wrapping_add(z[l]) & wm
                        })
                    }
                    I3::Bfe => self.write(*d, b, m, |l| bfe(x[l], y[l], z[l], bits, signed)),
                    I3::Prmt => self.write(*d, b, m, |l| prmt(x[l], y[l], z[l])),
                    I3::Lop3(lut) => {
                        let lut = *lut;
                        self.write(*d, b, m, |l| lop3(x[l], y[l], z[l], lut) & mask)
                    }
                    I3::Slct => self.write(*d, b, m, |l| {
                        let ge = if signed {
                            z[l] as u32 as i32 >= 0
                        } else {
                            f32::from_bits(z[l] as u32) >= 0.0
                        };
                        if ge {
                            x[l]
                        } else {
                            y[l]
                        }
                    }),
                    I3::Shf { left, wrap } => {
                        let (left, wrap) = (*left, *wrap);
                        self.write(*d, b, m, |l| {
                            let n = if wrap {
                                z[l] & 31
                            } else {
                                (z[l] & 0xFFFF_FFFF).min(32)
                            };
                            let v = ((y[l] & 0xFFFF_FFFF) << 32) | (x[l] & 0xFFFF_FFFF);
                            if left {
                                ((v << n) >> 32) & 0xFFFF_FFFF
                            } else {
                                (v >> n) & 0xFFFF_FFFF
                            }
                        })
                    }
                    I3::Mad24 { hi } => {
                        let hi = *hi;
                        self.write(*d, b, m, |l| {
                            let (p, q) = if signed {
                                (sx(x[l], 24) as i128, sx(y[l], 24) as i128)
                            } else {
                                ((x[l] & 0xFF_FFFF) as i128, (y[l] & 0xFF_FFFF) as i128)
                            };
                            let prod = (p * q) as u64;
                            let part = if hi { prod >> 16 } else { prod };
                            part.wrapping_add(z[l]) & 0xFFFF_FFFF
                        })
                    }
                    I3::Dp4a { sa, sb } => {
                        let (sa, sb) = (*sa, *sb);
                        self.write(*d, b, m, |l| {
                            let part = |v: u64, k: u32, s: bool| {
                                let byte = (v >> (8 * k)) & 0xff;
                                if s {
                                    byte as u8 as i8 as i64
                                } else {
                                    byte as i64
                                }
                            };
                            let sum: i64 =
                                (0..4).map(|k| part(x[l], k, sa) * part(y[l], k, sb)).sum();
                            (z[l] as u32 as i64).wrapping_add(sum) as u64 & 0xFFFF_FFFF
                        })
                    }
                    I3::Dp2a { sa, sb, hi } => {
                        let (sa, sb, hi) = (*sa, *sb, *hi);
                        self.write(*d, b, m, |l| {
                            let h = |k: u32| {
                                let v = (x[l] >> (16 * k)) & 0xffff;
                                if sa {
                                    v as u16 as i16 as i64
                                } else {
                                    v as i64
                                }
                            };
                            let byte = |k: u32| {
                                let v = (y[l] >> (8 * (k + if hi { 2 } else { 0 }))) & 0xff;
                                if sb {
                                    v as u8 as i8 as i64
                                } else {
                                    v as i64
                                }
                            };
                            let sum = h(0) * byte(0) + h(1) * byte(1);
                            (z[l] as u32 as i64).wrapping_add(sum) as u64 & 0xFFFF_FFFF
                        })
                    }
                    I3::Sad => self.write(*d, b, m, |l| {
                        let diff = if signed {
                            (sx(x[l], bits) - sx(y[l], bits)).unsigned_abs()
                        } else {
                            (x[l] & mask).abs_diff(y[l] & mask)
                        };
                        diff.wrapping_add(z[l]) & mask
                    }),
                }
            }
            Op::Bfi {
                bits,
                d,
                a,
                b: bb,
                c,
                e,
            } => {
                let (x, y, p, n) = (
                    self.fetch(a, b),
                    self.fetch(bb, b),
                    self.fetch(c, b),
                    self.fetch(e, b),
                );
                let bits = *bits;
                self.write(*d, b, m, |l| {
                    let (pos, len) = ((p[l] & 0xff) as u32, (n[l] & 0xff) as u32);
                    if len == 0 || pos >= bits {
                        return y[l];
                    }
                    let len = len.min(bits - pos);
                    let f = width_mask(len) << pos;
                    ((y[l] & !f) | ((x[l] << pos) & f)) & width_mask(bits)
                });
            }
            Op::Carry {
                sub,
                mad_hi,
                cin,
                cout,
                bits,
                d,
                a,
                b: bb,
                c,
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                let bits = *bits;
                let mask = width_mask(bits) as u128;
                let cc = self.w.cc;
                let mut out_cc = 0u32;
                let mut res = [0u64; 32];
                for l in lanes(m) {
                    let ci = if *cin { ((cc >> l) & 1) as u128 } else { 0 };
                    let (xv, yv) = (x[l] as u128 & mask, y[l] as u128 & mask);
                    let (r, carry) = match mad_hi {
                        Some(hi) => {
                            let p = xv * yv;
                            let part = if *hi { (p >> bits) & mask } else { p & mask };
                            let s = part + (z[l] as u128 & mask) + ci;
                            (s & mask, s >> bits != 0)
                        }
                        None if *sub => {
                            let s = xv.wrapping_sub(yv).wrapping_sub(ci);
                            (s & mask, xv < yv + ci)
                        }
                        None => {
                            let s = xv + yv + ci;
                            (s & mask, s >> bits != 0)
                        }
                    };
                    res[l] = r as u64;
                    out_cc |= (carry as u32) << l;
                }
                self.write(*d, b, m, |l| res[l]);
                if *cout {
                    self.w.cc = (cc & !m) | (out_cc & m);
                }
            }
            Op::Float2 {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a,
                b: bb,
            } => {
                let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
                if *ty == FTy::F32
                    && *rnd == Rnd::Rn
                    && !*ftz
                    && !*sat
                    && matches!(op, F2::Add | F2::Mul | F2::Sub)
                {
                    let f = |l: usize| (f32::from_bits(x[l] as u32), f32::from_bits(y[l] as u32));
                    let nan = |r: f32| {
                        if r.is_nan() {
                            float::NAN32
                        } else {
                            r.to_bits() as u64
                        }
                    };
                    match op {
                        F2::Add => self.write(*d, b, m, |l| {
                            let (p, q) = f(l);
                            nan(p + q)
                        }),
                        F2::Sub => self.write(*d, b, m, |l| {
                            let (p, q) = f(l);
                            nan(p - q)
                        }),
                        _ => self.write(*d, b, m, |l| {
                            let (p, q) = f(l);
                            nan(p * q)
                        }),
                    }
                } else {
                    let (op, ty, rnd, ftz, sat) = (*op, *ty, *rnd, *ftz, *sat);
                    self.write(*d, b, m, |l| float::bin(op, ty, rnd, ftz, sat, x[l], y[l]));
                }
            }
            Op::Float1 {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a,
            } => {
                let x = self.fetch(a, b);
                let (op, ty, rnd, ftz, sat) = (*op, *ty, *rnd, *ftz, *sat);
                self.write(*d, b, m, |l| float::un(op, ty, rnd, ftz, sat, x[l]));
            }
            Op::Fma {
                ty,
                rnd,
                ftz,
                sat,
                relu,
                d,
                a,
                b: bb,
                c,
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                if *relu {
                    let (ty, rnd, ftz) = (*ty, *rnd, *ftz);
                    self.write(*d, b, m, |l| {
                        float::relu_half(ty, float::fma(ty, rnd, ftz, false, x[l], y[l], z[l]))
                    });
                } else if *ty == FTy::F32 && *rnd == Rnd::Rn && !*ftz && !*sat {
                    self.write(*d, b, m, |l| {
                        let r = float::fma32_rn(
                            f32::from_bits(x[l] as u32),
                            f32::from_bits(y[l] as u32),
                            f32::from_bits(z[l] as u32),
                        );
                        if r.is_nan() {
                            float::NAN32
                        } else {
                            r.to_bits() as u64
                        }
                    });
                } else {
                    let (ty, rnd, ftz, sat) = (*ty, *rnd, *ftz, *sat);
                    self.write(*d, b, m, |l| {
                        float::fma(ty, rnd, ftz, sat, x[l], y[l], z[l])
                    });
                }
            }
            Op::CvtPack {
                bf,
                rnd,
                relu,
                d,
                a,
                b: bb,
            } => {
                let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
                let (bf, rnd, relu) = (*bf, *rnd, *relu);
                let ty = if bf { FTy::BF16 } else { FTy::F16 };
                let h = move |v: u64| {
                    let f = float::f2h(f32::from_bits(v as u32) as f64, bf, rnd) as u64;
                    if relu {
                        float::relu_half(ty, f)
                    } else {
                        f
                    }
                };
                self.write(*d, b, m, |l| (h(x[l]) << 16) | h(y[l]));
            }
            Op::CpAsync {
                size,
                src_size,
                dst,
                src,
            } => {
                let (db, sb, ss) = (
                    self.fetch(&dst.base, b),
                    self.fetch(&src.base, b),
                    self.fetch(src_size, b),
                );
                let size = *size as u64;
                for l in lanes(m) {
                    let (da, sa) = (
                        db[l].wrapping_add(dst.off as u64),
                        sb[l].wrapping_add(src.off as u64),
                    );
                    if da % size != 0 || sa % size != 0 {
                        return Err(misaligned(if sa % size != 0 { sa } else { da }, size, line));
                    }
                    let n = ss[l].min(size);
                    self.record(Space::Global, sa, n as u32, false);
                    for k in 0..size {
                        let v = if k < n {
                            self.load(Space::Global, sa + k, 1, l, b, line)?
                        } else {
                            0
                        };
                        self.store(Space::Shared, da + k, 1, v, l, b, line)?;
                    }
                }
            }
            Op::Cvt {
                to,
                from,
                rnd,
                int_rnd,
                ftz,
                sat,
                d,
                a,
            } => {
                let x = self.fetch(a, b);
                let (to, from, rnd, int_rnd, ftz, sat) = (*to, *from, *rnd, *int_rnd, *ftz, *sat);
                self.write(*d, b, m, |l| cvt(to, from, rnd, int_rnd, ftz, sat, x[l]));
            }
            Op::Setp {
                cmp,
                ty,
                ftz,
                p,
                q,
                a,
                b: bb,
                comb,
            } => {
                let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
                if matches!(ty, Ty::F16x2 | Ty::BF16x2) {
                    // Two comparisons: the lower halves into p, the upper ones into q.
                    let h = if *ty == Ty::F16x2 { Ty::F16 } else { Ty::BF16 };
                    let (mut lo, mut hi) = (0u32, 0u32);
                    for l in lanes(m) {
                        lo |= (compare(*cmp, h, *ftz, x[l] & 0xFFFF, y[l] & 0xFFFF) as u32) << l;
                        hi |= (compare(*cmp, h, *ftz, (x[l] >> 16) & 0xFFFF, (y[l] >> 16) & 0xFFFF)
                            as u32)
                            << l;
                    }
                    if let Some((op, c)) = comb {
                        let c = self.pmask(*c, b);
                        (lo, hi) = (boolop(*op, lo, c), boolop(*op, hi, c));
                    }
                    self.set_pred(*p, b, m, lo);
                    self.set_pred(*q, b, m, hi);
                    return Ok(());
                }
                let mut r = 0u32;
                for l in lanes(m) {
                    r |= (compare(*cmp, *ty, *ftz, x[l], y[l]) as u32) << l;
                }
                let (pv, qv) = match comb {
                    Some((op, c)) => {
                        let c = self.pmask(*c, b);
                        (boolop(*op, r, c), boolop(*op, !r, c))
                    }
                    None => (r, !r),
                };
                self.set_pred(*p, b, m, pv);
                self.set_pred(*q, b, m, qv);
            }
            Op::Set {
                cmp,
                ty,
                dty,
                ftz,
                d,
                a,
                b: bb,
                comb,
            } => {
                let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
                let mut r = 0u32;
                for l in lanes(m) {
                    r |= (compare(*cmp, *ty, *ftz, x[l], y[l]) as u32) << l;
                }
                if let Some((op, c)) = comb {
                    r = boolop(*op, r, self.pmask(*c, b));
                }
                let (t, f) = if *dty == Ty::F32 {
                    (1.0f32.to_bits() as u64, 0)
                } else {
                    (width_mask(dty.bits()), 0)
                };
                self.write(*d, b, m, |l| if (r >> l) & 1 != 0 { t } else { f });
            }
            Op::PredLogic { op, d, a, b: bb } => {
                let v = boolop(*op, self.pmask(*a, b), self.pmask(*bb, b));
                self.set_pred(*d, b, m, v);
            }
            Op::PredNot { d, a } => {
                let v = !self.pmask(*a, b);
                self.set_pred(*d, b, m, v);
            }
            Op::Selp {
                mask,
                d,
                a,
                b: bb,
                p,
            } => {
                let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
                let pm = self.pmask(*p, b);
                let mask = *mask;
                self.write(*d, b, m, |l| {
                    if (pm >> l) & 1 != 0 {
                        x[l] & mask
                    } else {
                        y[l] & mask
                    }
                });
            }
            Op::Ld {
                space: Space::Param,
                size,
                n,
                ds,
                addr:
                    Addr {
                        base: Src::Imm(base),
                        off,
                    },
                sext,
            } => {
                // Kernel parameters at a constant address: one read for the warp.
                let a = base.wrapping_add(*off as u64);
                for (k, &d) in ds.iter().enumerate().take(*n as usize) {
                    let v = self.load(
                        Space::Param,
                        a.wrapping_add(k as u64 * *size as u64),
                        *size,
                        0,
                        b,
                        line,
                    )?;
                    let v = if *sext != 0 { sx(v, *sext) as u64 } else { v };
                    self.write(d, b, m, |_| v);
                }
            }
            Op::Ld {
                space,
                size,
                n,
                ds,
                addr,
                sext,
            } => {
                let base = self.fetch(&addr.base, b);
                let (size, n, sext) = (*size, *n, *sext);
                let total = (size * n) as u64;
                let check_align = *space != Space::Local && *space != Space::Param;
                for l in lanes(m) {
                    let a = base[l].wrapping_add(addr.off as u64);
                    if check_align && a & (total.max(1) - 1) != 0 {
                        return Err(misaligned(a, total, line));
                    }
                    for (k, &d) in ds.iter().enumerate() {
                        let ea = a.wrapping_add(k as u64 * size as u64);
                        self.record(*space, ea, size, false);
                        // Fast paths: shared memory, and the warp's last global allocation.
                        let hit = match (&self.w.cache, space) {
                            (_, Space::Shared) => read_le(self.shared, ea, size),
                            (Some(al), Space::Global | Space::Generic)
                                if ea >= al.base()
                                    && ea.saturating_add(size as u64)
                                        <= al.base() + al.extent() =>
                            {
                                Some(al.load(ea - al.base(), size))
                            }
                            _ => None,
                        };
                        let v = match hit {
                            Some(v) => v,
                            None => self.load(*space, ea, size, l, b, line)?,
                        };
                        if d != SINK {
                            self.w.regs[(b.reg + d) as usize * 32 + l] =
                                if sext != 0 { sx(v, sext) as u64 } else { v };
                        }
                    }
                }
            }
            Op::St {
                space,
                size,
                n,
                srcs,
                addr,
            } => {
                let base = self.fetch(&addr.base, b);
                let (size, n) = (*size, *n);
                for l in lanes(m).filter(|_| self.ctx.record.is_some()) {
                    let a = base[l].wrapping_add(addr.off as u64);
                    (0..n).for_each(|k| self.record(*space, a + (k * size) as u64, size, true));
                }
                if n == 1 && size == 4 && matches!(space, Space::Global | Space::Generic) {
                    let val = self.fetch(&srcs[0], b);
                    if self.store_pairs(m, &base, addr.off as u64, &val) {
                        return Ok(());
                    }
                }
                let total = (size * n) as u64;
                let vals: Vec<V> = srcs.iter().map(|s| self.fetch(s, b)).collect();
                for l in lanes(m) {
                    let a = base[l].wrapping_add(addr.off as u64);
                    if a & (total.max(1) - 1) != 0 && *space != Space::Local {
                        return Err(misaligned(a, total, line));
                    }
                    for (k, val) in vals.iter().enumerate().take(n as usize) {
                        let ea = a.wrapping_add(k as u64 * size as u64);
                        if *space == Space::Shared
                            && write_le(self.shared, ea, size, val[l]).is_some()
                        {
                            continue;
                        }
                        if let (Some(al), Space::Global | Space::Generic) = (&self.w.cache, space) {
                            if ea >= al.base()
                                && ea.saturating_add(size as u64) <= al.base() + al.extent()
                            {
                                al.store(ea - al.base(), size, val[l]);
                                continue;
                            }
                        }
                        self.store(*space, ea, size, val[l], l, b, line)?;
                    }
                }
            }
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b: bb,
                c,
            } => {
                let base = self.fetch(&addr.base, b);
                let (y, z) = (self.fetch(bb, b), self.fetch(c, b));
                let mut res = [0u64; 32];
                for l in lanes(m) {
                    let a = base[l].wrapping_add(addr.off as u64);
                    self.record(*space, a, ty.bytes(), true);
                    res[l] = self.atomic(*space, *op, *ty, a, y[l], z[l], line)?;
                }
                self.write(*d, b, m, |l| res[l]);
            }
            Op::Cvta {
                to_generic,
                space,
                d,
                a,
                bits,
            } => {
                let x = self.fetch(a, b);
                let win = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                let mask = width_mask(*bits);
                let tg = *to_generic;
                self.write(*d, b, m, |l| {
                    if win == 0 {
                        x[l] & mask
                    } else if tg {
                        x[l].wrapping_add(win) & mask
                    } else {
                        x[l].wrapping_sub(win) & mask
                    }
                });
            }
            Op::Isspacep { space, p, a } => {
                let x = self.fetch(a, b);
                let mut r = 0u32;
                for l in lanes(m) {
                    let s = classify(x[l]).0;
                    let hit = match space {
                        Space::Global | Space::Const => s == Space::Global,
                        other => s == *other,
                    };
                    r |= (hit as u32) << l;
                }
                self.set_pred(*p, b, m, r);
            }
            Op::Testp { op, ty, p, a } => {
                let x = self.fetch(a, b);
                let mut r = 0u32;
                for l in lanes(m) {
                    let v = match ty {
                        FTy::F64 => f64::from_bits(x[l]),
                        _ => f32::from_bits(x[l] as u32) as f64,
                    };
                    let sub = match ty {
                        FTy::F64 => v.is_subnormal(),
                        _ => f32::from_bits(x[l] as u32).is_subnormal(),
                    };
                    let hit = match op {
                        0 => v.is_finite(),
                        1 => v.is_infinite(),
                        2 => !v.is_nan(),
                        3 => v.is_nan(),
                        4 => v.is_finite() && v != 0.0 && !sub,
                        _ => sub,
                    };
                    r |= (hit as u32) << l;
                }
                self.set_pred(*p, b, m, r);
            }
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b: bb,
                c,
                ..
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                let mut res = [0u64; 32];
                let mut pv = 0u32;
                for l in lanes(m) {
                    let lane = l as u32;
                    let bval = (y[l] & 0x1f) as u32;
                    let cval = (z[l] & 0x1f) as u32;
                    let seg = ((z[l] >> 8) & 0x1f) as u32;
                    let max_lane = (lane & seg) | (cval & !seg);
                    let min_lane = lane & seg;
                    let (j, ok) = match mode {
                        ShflMode::Up => {
                            let j = lane as i32 - bval as i32;
                            (j, j >= max_lane as i32)
                        }
                        ShflMode::Down => {
                            let j = (lane + bval) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Bfly => {
                            let j = (lane ^ bval) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Idx => {
                            let j = (min_lane | (bval & !seg)) as i32;
                            (j, j <= max_lane as i32)
                        }
                    };
                    let src = if ok && (0..32).contains(&j) {
                        j as usize
                    } else {
                        l
                    };
                    res[l] = x[src] & 0xFFFF_FFFF;
                    pv |= (ok as u32) << l;
                }
                self.write(*d, b, m, |l| res[l]);
                self.set_pred(*p, b, m, pv);
            }
            Op::Vote { mode, d, a, .. } => {
                let v = self.pmask(*a, b) & m;
                match mode {
                    VoteMode::Ballot => self.write(*d, b, m, |_| v as u64),
                    VoteMode::All => self.set_pred(*d, b, m, if v == m { FULL } else { 0 }),
                    VoteMode::Any => self.set_pred(*d, b, m, if v != 0 { FULL } else { 0 }),
                    VoteMode::Uni => {
                        self.set_pred(*d, b, m, if v == m || v == 0 { FULL } else { 0 })
                    }
                }
            }
            Op::Activemask { d } => self.write(*d, b, m, |_| m as u64),
            Op::Match {
                all, bits, d, p, a, ..
            } => {
                let x = self.fetch(a, b);
                let mask = width_mask(*bits);
                let mut res = [0u64; 32];
                let mut same = true;
                let first = m.trailing_zeros() as usize;
                for l in lanes(m) {
                    let mut mm = 0u32;
                    for k in lanes(m) {
                        if x[k] & mask == x[l] & mask {
                            mm |= 1 << k;
                        }
                    }
                    res[l] = mm as u64;
                    same &= x[l] & mask == x[first] & mask;
                }
                if *all {
                    let v = if same { m as u64 } else { 0 };
                    self.write(*d, b, m, |_| v);
                    self.set_pred(*p, b, m, if same { FULL } else { 0 });
                } else {
                    self.write(*d, b, m, |l| res[l]);
                }
            }
            Op::Redux {
                op, signed, d, a, ..
            } => {
                let x = self.fetch(a, b);
                let vals = lanes(m).map(|l| x[l] & 0xFFFF_FFFF);
                let r = match (op, signed) {
                    (ReduxOp::Add, _) => vals.fold(0u64, |s, v| s.wrapping_add(v)) & 0xFFFF_FFFF,
                    (ReduxOp::Min, true) => {
                        vals.map(|v| v as u32 as i32).min().unwrap_or(0) as u32 as u64
                    }
                    (ReduxOp::Max, true) => {
                        vals.map(|v| v as u32 as i32).max().unwrap_or(0) as u32 as u64
                    }
                    (ReduxOp::Min, false) => vals.min().unwrap_or(0),
                    (ReduxOp::Max, false) => vals.max().unwrap_or(0),
                    (ReduxOp::And, _) => vals.fold(0xFFFF_FFFF, |s, v| s & v),
                    (ReduxOp::Or, _) => vals.fold(0, |s, v| s | v),
                    (ReduxOp::Xor, _) => vals.fold(0, |s, v| s ^ v),
                };
                self.write(*d, b, m, |_| r);
            }
            Op::Nop => {}
            // Control flow is handled by run_split.
            Op::Bra { .. }
            | Op::Call { .. }
            | Op::CallIndirect { .. }
            | Op::Builtin { .. }
            | Op::Ret
            | Op::Exit
            | Op::Trap
            | Op::Bar { .. } => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn int2(
        &mut self,
        op: I2,
        bits: u32,
        signed: bool,
        sat: bool,
        d: u32,
        a: &Src,
        bb: &Src,
        m: u32,
        b: Bases,
    ) {
        let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
        let mask = width_mask(bits);
        match op {
            I2::Add if sat && signed => self.write(d, b, m, |l| {
                (sx(x[l], bits)
                    .saturating_add(sx(y[l], bits))
                    .clamp(i32::MIN as i64, i32::MAX as i64) as u64)
                    & mask
            }),
            I2::Sub if sat && signed => self.write(d, b, m, |l| {
                (sx(x[l], bits)
                    .saturating_sub(sx(y[l], bits))
                    .clamp(i32::MIN as i64, i32::MAX as i64) as u64)
                    & mask
            }),
            I2::Add => self.write(d, b, m, |l| x[l].wrapping_add(y[l]) & mask),
            I2::Sub => self.write(d, b, m, |l| x[l].wrapping_sub(y[l]) & mask),
            I2::MulLo => self.write(d, b, m, |l| x[l].wrapping_mul(y[l]) & mask),
            I2::MulHi => self.write(d, b, m, |l| mul_hi(x[l], y[l], bits, signed) & mask),
            I2::MulWide => {
                let wm = width_mask(bits * 2);
                self.write(d, b, m, |l| mul_wide(x[l], y[l], bits, signed) & wm)
            }
            I2::Div if signed => self.write(d, b, m, |l| {
                let (p, q) = (sx(x[l], bits), sx(y[l], bits));
                if q == 0 {
                    mask
                } else {
                    (p.wrapping_div(q) as u64) & mask
                }
            }),
            I2::Div => self.write(d, b, m, |l| {
                (x[l] & mask).checked_div(y[l] & mask).unwrap_or(mask)
            }),
            I2::Rem if signed => self.write(d, b, m, |l| {
                let (p, q) = (sx(x[l], bits), sx(y[l], bits));
                if q == 0 {
                    x[l] & mask
                } else {
                    (p.wrapping_rem(q) as u64) & mask
                }
            }),
            I2::Rem => self.write(d, b, m, |l| {
                let (p, q) = (x[l] & mask, y[l] & mask);
                if q == 0 {
                    p
                } else {
                    p % q
                }
            }),
            I2::Min if signed => self.write(d, b, m, |l| {
                (sx(x[l], bits).min(sx(y[l], bits)) as u64) & mask
            }),
            I2::Max if signed => self.write(d, b, m, |l| {
                (sx(x[l], bits).max(sx(y[l], bits)) as u64) & mask
            }),
            I2::Min => self.write(d, b, m, |l| (x[l] & mask).min(y[l] & mask)),
            I2::Max => self.write(d, b, m, |l| (x[l] & mask).max(y[l] & mask)),
            I2::And => self.write(d, b, m, |l| x[l] & y[l] & mask),
            I2::Or => self.write(d, b, m, |l| (x[l] | y[l]) & mask),
            I2::Xor => self.write(d, b, m, |l| (x[l] ^ y[l]) & mask),
            I2::Shl => self.write(d, b, m, |l| {
                let s = y[l] & 0xFFFF_FFFF;
                if s >= bits as u64 {
                    0
                } else {
                    (x[l] << s) & mask
                }
            }),
            I2::Shr if signed => self.write(d, b, m, |l| {
                let s = (y[l] & 0xFFFF_FFFF).min(bits as u64 - 1);
                ((sx(x[l], bits) >> s) as u64) & mask
            }),
            I2::Shr => self.write(d, b, m, |l| {
                let s = y[l] & 0xFFFF_FFFF;
                if s >= bits as u64 {
                    0
                } else {
                    (x[l] & mask) >> s
                }
            }),
        }
    }

    /// Logs a global-memory access for the footprint oracle, when the launch asks.
    fn record(&self, space: Space, addr: u64, size: u32, write: bool) {
        if let (Some(log), (Space::Global, a)) = (self.ctx.record, self.resolve(space, addr)) {
            let block = self.ctaid[0] as u64
                + self.ctx.grid[0] as u64
                    * (self.ctaid[1] as u64 + self.ctx.grid[1] as u64 * self.ctaid[2] as u64);
            let (addr, write) = (a, write);
            log.push(crate::access_log::Access {
                block,
                addr,
                size,
                write,
            });
        }
    }

    fn resolve(&self, space: Space, addr: u64) -> (Space, u64) {
        match space {
            Space::Generic => classify(addr),
            Space::Param if addr >= PARAM_WINDOW => (Space::Param, addr - PARAM_WINDOW),
            Space::Const => (Space::Global, addr),
            s => (s, addr),
        }
    }

    fn load(
        &mut self,
        space: Space,
        addr: u64,
        size: u32,
        lane: usize,
        _b: Bases,
        line: u32,
    ) -> Result<u64, EmuError> {
        let (s, a) = self.resolve(space, addr);
        match s {
            Space::Global | Space::Generic | Space::Const => {
                if a & (size as u64 - 1) != 0 {
                    return Err(misaligned(a, size as u64, line));
                }
                if let Some(al) = &self.w.cache {
                    if a >= al.base() && a.saturating_add(size as u64) <= al.base() + al.extent() {
                        return Ok(al.load(a - al.base(), size));
                    }
                }
                let al = self
                    .ctx
                    .space
                    .find_reach(a, size as u64)
                    .map_err(|_| illegal(a, size, line))?;
                let v = al.load(a - al.base(), size);
                self.w.cache = Some(al);
                Ok(v)
            }
            Space::Shared => read_le(self.shared, a, size).ok_or_else(|| illegal(addr, size, line)),
            Space::Local => {
                let ls = self.w.local_size as u64;
                if a.checked_add(size as u64).is_none_or(|e| e > ls) {
                    return Err(illegal(addr, size, line));
                }
                read_le(&self.w.local, lane as u64 * ls + a, size)
                    .ok_or_else(|| illegal(addr, size, line))
            }
            Space::Param => {
                read_le(self.ctx.params, a, size).ok_or_else(|| illegal(addr, size, line))
            }
        }
    }

    /// The common case of `st.global.u32` from a converged warp: neighbouring lanes writing the
    /// two halves of one 8-byte word store it whole, one plain atomic store instead of two
    /// read-modify-writes. Returns false (having stored nothing) unless every active lane's
    /// address is aligned and inside the warp's cached allocation.
    fn store_pairs(&mut self, m: u32, base: &V, off: u64, val: &V) -> bool {
        let Some(al) = &self.w.cache else {
            return false;
        };
        let (lo, hi) = (al.base(), al.base() + al.extent());
        let ok = lanes(m).all(|l| {
            let a = base[l].wrapping_add(off);
            a & 3 == 0 && a >= lo && a.saturating_add(4) <= hi
        });
        if !ok {
            return false;
        }
        let mut rest = m;
        while rest != 0 {
            let l = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let a = base[l].wrapping_add(off);
            if l % 2 == 0
                && rest & (1 << (l + 1)) != 0
                && a & 7 == 0
                && base[l + 1].wrapping_add(off) == a + 4
            {
                rest &= !(1 << (l + 1));
                al.store(a - lo, 8, (val[l] & 0xffff_ffff) | (val[l + 1] << 32));
            } else {
                al.store(a - lo, 4, val[l]);
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        space: Space,
        addr: u64,
        size: u32,
        v: u64,
        lane: usize,
        _b: Bases,
        line: u32,
    ) -> Result<(), EmuError> {
        let (s, a) = self.resolve(space, addr);
        match s {
            Space::Global | Space::Generic | Space::Const => {
                if a & (size as u64 - 1) != 0 {
                    return Err(misaligned(a, size as u64, line));
                }
                if let Some(al) = &self.w.cache {
                    if a >= al.base() && a.saturating_add(size as u64) <= al.base() + al.extent() {
                        al.store(a - al.base(), size, v);
                        return Ok(());
                    }
                }
                let al = self
                    .ctx
                    .space
                    .find_reach(a, size as u64)
                    .map_err(|_| illegal(a, size, line))?;
                al.store(a - al.base(), size, v);
                self.w.cache = Some(al);
                Ok(())
            }
            Space::Shared => {
                write_le(self.shared, a, size, v).ok_or_else(|| illegal(addr, size, line))
            }
            Space::Local => {
                let ls = self.w.local_size as u64;
                if a.checked_add(size as u64).is_none_or(|e| e > ls) {
                    return Err(illegal(addr, size, line));
                }
                write_le(&mut self.w.local, lane as u64 * ls + a, size, v)
                    .ok_or_else(|| illegal(addr, size, line))
            }
            Space::Param => Err(illegal(addr, size, line)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        space: Space,
        op: AtomOp,
        ty: Ty,
        addr: u64,
        b: u64,
        c: u64,
        line: u32,
    ) -> Result<u64, EmuError> {
        let size = ty.bytes();
        let (s, a) = self.resolve(space, addr);
        if a & (size as u64 - 1) != 0 {
            return Err(misaligned(a, size as u64, line));
        }
        match s {
            Space::Shared => {
                let old = read_le(self.shared, a, size).ok_or_else(|| illegal(addr, size, line))?;
                write_le(self.shared, a, size, atom_apply(op, ty, old, b, c));
                Ok(old)
            }
            Space::Global | Space::Generic | Space::Const => {
                let al = self
                    .ctx
                    .space
                    .find_reach(a, size as u64)
                    .map_err(|_| illegal(a, size, line))?;
                let off = a - al.base();
                let shift = (off % 8) * 8;
                let wm = width_mask(size * 8) << shift;
                let prev = al
                    .word(off)
                    .fetch_update(Relaxed, Relaxed, |w| {
                        let old = (w & wm) >> shift;
                        let new = atom_apply(op, ty, old, b, c);
                        Some((w & !wm) | ((new << shift) & wm))
                    })
                    .unwrap_or_else(|w| w);
                Ok((prev & wm) >> shift)
            }
            _ => Err(illegal(addr, size, line)),
        }
    }

    fn builtin(
        &mut self,
        which: Builtin,
        args: &[(u32, u32)],
        rets: &[(u32, u32)],
        m: u32,
        b: Bases,
    ) -> Result<(), EmuError> {
        let arg_slot = |k: usize| args.get(k).map(|a| a.0);
        for l in lanes(m) {
            let local = |s: &Self, off: Option<u32>, size: u32| -> u64 {
                off.and_then(|o| {
                    read_le(
                        &s.w.local,
                        l as u64 * s.w.local_size as u64 + (b.local + o) as u64,
                        size,
                    )
                })
                .unwrap_or(0)
            };
            match which {
                Builtin::Vprintf => {
                    let fmt_ptr = local(self, arg_slot(0), 8);
                    let args_ptr = local(self, arg_slot(1), 8);
                    let fmt = self.cstring(fmt_ptr, l, b);
                    let mut src = PrintfArgs {
                        r: self,
                        lane: l,
                        b,
                        base: args_ptr,
                        cursor: 0,
                        count: 0,
                    };
                    let s = crate::printf::format_with(fmt.as_bytes(), &mut src);
                    let count = src.count;
                    let nbytes = s.len() as u64;
                    let before = self.ctx.printf_bytes.fetch_add(nbytes, Relaxed);
                    if before + nbytes <= PRINTF_LIMIT {
                        self.printf.push_str(&s);
                    }
                    if let Some(&(off, size)) = rets.first() {
                        let ls = self.w.local_size as u64;
                        write_le(
                            &mut self.w.local,
                            l as u64 * ls + (b.local + off) as u64,
                            size.min(4),
                            count,
                        );
                    }
                }
                Builtin::Malloc => {
                    // NULL when device memory runs out, as device malloc does.
                    let size = local(self, arg_slot(0), 8);
                    let p = self.ctx.space.heap_alloc(size).unwrap_or(0);
                    if let Some(&(off, size)) = rets.first() {
                        let ls = self.w.local_size as u64;
                        write_le(
                            &mut self.w.local,
                            l as u64 * ls + (b.local + off) as u64,
                            size.min(8),
                            p,
                        );
                    }
                }
                Builtin::Free => {
                    let p = local(self, arg_slot(0), 8);
                    if p != 0 && self.ctx.space.heap_free(p).is_err() {
                        return Err(EmuError::IllegalAddress(format!(
                            "free({p:#x}) of memory device malloc did not return"
                        )));
                    }
                    // The warp's cached allocation may be the one freed.
                    self.w.cache = None;
                }
                Builtin::AssertFail => {
                    let msg = local(self, arg_slot(0), 8);
                    let file = local(self, arg_slot(1), 8);
                    let line = local(self, arg_slot(2), 4);
                    let func = local(self, arg_slot(3), 8);
                    let (msg, file, func) = (
                        self.cstring(msg, l, b),
                        self.cstring(file, l, b),
                        self.cstring(func, l, b),
                    );
                    let c = self.ctx;
                    let t = self.w.id * 32 + l as u32;
                    let bx = c.block[0].max(1);
                    let by = c.block[1].max(1);
                    let tid = [t % bx, (t / bx) % by, t / (bx * by)];
                    self.printf.push_str(&format!(
                        "{file}:{line}: {func}: block: [{},{},{}], thread: [{},{},{}] Assertion `{msg}` failed.\n",
                        self.ctaid[0], self.ctaid[1], self.ctaid[2], tid[0], tid[1], tid[2]
                    ));
                }
            }
        }
        if which == Builtin::AssertFail {
            return Err(EmuError::Assert);
        }
        Ok(())
    }

    fn cstring(&mut self, addr: u64, lane: usize, b: Bases) -> String {
        let mut bytes = Vec::new();
        let mut a = addr;
        while bytes.len() < 1 << 16 {
            match self.load(Space::Generic, a, 1, lane, b, 0) {
                Ok(0) | Err(_) => break,
                Ok(c) => bytes.push(c as u8),
            }
            a = a.wrapping_add(1);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// vprintf's argument buffer, read through the executing lane's view of memory.
struct PrintfArgs<'x, 'r, 'a> {
    r: &'x mut Runner<'r, 'a>,
    lane: usize,
    b: Bases,
    base: u64,
    cursor: u64,
    /// Arguments read: what device printf returns.
    count: u64,
}

impl crate::printf::Args for PrintfArgs<'_, '_, '_> {
    fn arg(&mut self, size: u32) -> u64 {
        // Each argument is aligned to its size in the buffer.
        self.cursor = self.cursor.next_multiple_of(size as u64);
        let v = self.r.load(
            Space::Generic,
            self.base.wrapping_add(self.cursor),
            size,
            self.lane,
            self.b,
            0,
        );
        self.cursor += size as u64;
        self.count += 1;
        v.unwrap_or(0)
    }

    fn cstr(&mut self, addr: u64) -> String {
        self.r.cstring(addr, self.lane, self.b)
    }
}

fn classify(addr: u64) -> (Space, u64) {
    if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&addr) {
        (Space::Shared, addr - SHARED_WINDOW)
    } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&addr) {
        (Space::Local, addr - LOCAL_WINDOW)
    } else if (PARAM_WINDOW..PARAM_WINDOW + WINDOW_SIZE).contains(&addr) {
        (Space::Param, addr - PARAM_WINDOW)
    } else {
        (Space::Global, addr)
    }
}

#[inline]
fn read_le(buf: &[u8], off: u64, size: u32) -> Option<u64> {
    let s = usize::try_from(off).ok()?;
    let e = s.checked_add(size as usize)?;
    let bytes = buf.get(s..e)?;
    Some(match bytes.len() {
        4 => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64,
        8 => u64::from_le_bytes(bytes.try_into().ok()?),
        1 => bytes[0] as u64,
        2 => u16::from_le_bytes([bytes[0], bytes[1]]) as u64,
        _ => {
            let mut w = [0u8; 8];
            let n = bytes.len().min(8);
            w[..n].copy_from_slice(&bytes[..n]);
            u64::from_le_bytes(w)
        }
    })
}

fn write_le(buf: &mut [u8], off: u64, size: u32, v: u64) -> Option<()> {
    let s = usize::try_from(off).ok()?;
    let e = s.checked_add(size as usize)?;
    let dst = buf.get_mut(s..e)?;
    let n = dst.len().min(8);
    dst[..n].copy_from_slice(&v.to_le_bytes()[..n]);
    Some(())
}

fn illegal(addr: u64, size: u32, line: u32) -> EmuError {
    EmuError::IllegalAddress(format!("{size}-byte access at {addr:#x} (PTX line {line})"))
}

fn misaligned(addr: u64, size: u64, line: u32) -> EmuError {
    EmuError::MisalignedAddress(format!("{size}-byte access at {addr:#x} (PTX line {line})"))
}

fn mul_hi(x: u64, y: u64, bits: u32, signed: bool) -> u64 {
    if signed {
        ((sx(x, bits) as i128 * sx(y, bits) as i128) >> bits) as u64
    } else {
        let m = width_mask(bits) as u128;
        (((x as u128 & m) * (y as u128 & m)) >> bits) as u64
    }
}

fn mul_wide(x: u64, y: u64, bits: u32, signed: bool) -> u64 {
    if signed {
        (sx(x, bits) as i128 * sx(y, bits) as i128) as u64
    } else {
        let m = width_mask(bits) as u128;
        ((x as u128 & m) * (y as u128 & m)) as u64
    }
}

fn bfe(a: u64, b: u64, c: u64, bits: u32, signed: bool) -> u64 {
    let pos = (b & 0xff) as u32;
    let len = (c & 0xff) as u32;
    let msb = bits - 1;
    let bit = |i: u32| (a >> i) & 1;
    let sbit = if signed && len > 0 {
        bit((pos + len - 1).min(msb))
    } else {
        0
    };
    let mut r = 0u64;
    for i in 0..bits {
        let v = if i < len && pos + i <= msb {
            bit(pos + i)
        } else {
            sbit
        };
        r |= v << i;
    }
    r
}

fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = (a & 0xFFFF_FFFF) | ((b & 0xFFFF_FFFF) << 32);
    let mut r = 0u64;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xf;
        let byte = (bytes >> ((sel & 7) * 8)) & 0xff;
        let byte = if sel & 8 != 0 {
            if byte & 0x80 != 0 {
                0xff
            } else {
                0
            }
        } else {
            byte
        };
        r |= byte << (8 * i);
    }
    r
}

fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut r = 0u64;
    for i in 0..8 {
        if (lut >> i) & 1 != 0 {
            let ta = if i & 4 != 0 { a } else { !a };
            let tb = if i & 2 != 0 { b } else { !b };
            let tc = if i & 1 != 0 { c } else { !c };
            r |= ta & tb & tc;
        }
    }
    r
}

fn boolop(op: BoolOp, a: u32, b: u32) -> u32 {
    match op {
        BoolOp::And => a & b,
        BoolOp::Or => a | b,
        BoolOp::Xor => a ^ b,
    }
}

fn to_f64(ty: Ty, v: u64, ftz: bool) -> f64 {
    match ty {
        Ty::F32 => {
            let f = f32::from_bits(v as u32);
            (if ftz { float::ftz32(f) } else { f }) as f64
        }
        Ty::F64 => f64::from_bits(v),
        Ty::F16 => float::h2f(v as u16, false),
        Ty::BF16 => float::h2f(v as u16, true),
        _ => 0.0,
    }
}

fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    if ty.float() {
        let (x, y) = (to_f64(ty, a, ftz), to_f64(ty, b, ftz));
        let un = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => !un && x != y,
            Cmp::Lt | Cmp::Lo => x < y,
            Cmp::Le | Cmp::Ls => x <= y,
            Cmp::Gt | Cmp::Hi => x > y,
            Cmp::Ge | Cmp::Hs => x >= y,
            Cmp::Equ => un || x == y,
            Cmp::Neu => un || x != y,
            Cmp::Ltu => un || x < y,
            Cmp::Leu => un || x <= y,
            Cmp::Gtu => un || x > y,
            Cmp::Geu => un || x >= y,
            Cmp::Num => !un,
            Cmp::Nan => un,
        };
    }
    let bits = ty.bits();
    let (ua, ub) = (a & width_mask(bits), b & width_mask(bits));
    let (sa, sb) = (sx(a, bits), sx(b, bits));
    let s = ty.signed();
    match cmp {
        Cmp::Eq | Cmp::Equ => ua == ub,
        Cmp::Ne | Cmp::Neu => ua != ub,
        Cmp::Lt | Cmp::Ltu => {
            if s {
                sa < sb
            } else {
                ua < ub
            }
        }
        Cmp::Le | Cmp::Leu => {
            if s {
                sa <= sb
            } else {
                ua <= ub
            }
        }
        Cmp::Gt | Cmp::Gtu => {
            if s {
                sa > sb
            } else {
                ua > ub
            }
        }
        Cmp::Ge | Cmp::Geu => {
            if s {
                sa >= sb
            } else {
                ua >= ub
            }
        }
        Cmp::Lo => ua < ub,
        Cmp::Ls => ua <= ub,
        Cmp::Hi => ua > ub,
        Cmp::Hs => ua >= ub,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

fn atom_apply(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    let mask = width_mask(bits);
    if matches!(ty, Ty::F16x2 | Ty::BF16x2) {
        let half = if ty == Ty::F16x2 { Ty::F16 } else { Ty::BF16 };
        let lo = atom_apply(op, half, old & 0xFFFF, b & 0xFFFF, 0);
        let hi = atom_apply(op, half, (old >> 16) & 0xFFFF, (b >> 16) & 0xFFFF, 0);
        return (lo & 0xFFFF) | ((hi & 0xFFFF) << 16);
    }
    if ty.float() {
        let f = |x: f64| -> u64 {
            match ty {
                Ty::F32 => (x as f32).to_bits() as u64,
                Ty::F16 => float::f2h(x, false, Rnd::Rn) as u64,
                Ty::BF16 => float::f2h(x, true, Rnd::Rn) as u64,
                _ => x.to_bits(),
            }
        };
        let (x, y) = (to_f64(ty, old, false), to_f64(ty, b, false));
        return match op {
            AtomOp::Add => match ty {
                Ty::F32 => (f32::from_bits(old as u32) + f32::from_bits(b as u32)).to_bits() as u64,
                Ty::F64 => (x + y).to_bits(),
                _ => f(x + y),
            },
            AtomOp::Min => f(float::min64(x, y)),
            AtomOp::Max => f(float::max64(x, y)),
            AtomOp::Exch => b,
            AtomOp::Cas => {
                if old == b & mask {
                    c
                } else {
                    old
                }
            }
            _ => old,
        };
    }
    let s = ty.signed();
    (match op {
        AtomOp::Add => old.wrapping_add(b),
        AtomOp::Min => {
            if s {
                sx(old, bits).min(sx(b, bits)) as u64
            } else {
                old.min(b & mask)
            }
        }
        AtomOp::Max => {
            if s {
                sx(old, bits).max(sx(b, bits)) as u64
            } else {
                old.max(b & mask)
            }
        }
        AtomOp::Inc => {
            if old >= b & mask {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            if old == 0 || old > b & mask {
                b
            } else {
                old - 1
            }
        }
        AtomOp::And => old & b,
        AtomOp::Or => old | b,
        AtomOp::Xor => old ^ b,
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if old == b & mask {
                c
            } else {
                old
            }
        }
    }) & mask
}

/// cvt between any two scalar types.
fn cvt(to: Ty, from: Ty, rnd: Option<Rnd>, int_rnd: bool, ftz: bool, sat: bool, v: u64) -> u64 {
    let to_mask = width_mask(to.bits());
    if from.float() {
        let x = to_f64(from, v, ftz);
        if to.float() {
            let mode = rnd.unwrap_or(Rnd::Rn);
            let x = if sat { float::sat64(x) } else { x };
            return match to {
                Ty::F32 => {
                    let r = float::to_f32(x, 0.0, mode);
                    let r = if ftz { float::ftz32(r) } else { r };
                    if r.is_nan() {
                        float::NAN32
                    } else {
                        r.to_bits() as u64
                    }
                }
                Ty::F64 => x.to_bits(),
                Ty::F16 => float::f2h(x, false, mode) as u64,
                Ty::BF16 => float::f2h(x, true, mode) as u64,
                _ => 0,
            };
        }
        // float -> int: round, saturate to the range, NaN -> 0.
        if x.is_nan() {
            return 0;
        }
        let r = float::round_int(
            x,
            Some(if int_rnd {
                rnd.unwrap_or(Rnd::Rz)
            } else {
                Rnd::Rz
            }),
        );
        let bits = to.bits();
        return if to.signed() {
            let (lo, hi) = (
                -(2f64.powi(bits as i32 - 1)),
                2f64.powi(bits as i32 - 1) - 1.0,
            );
            let c = r.clamp(lo, hi);
            (c as i64 as u64) & to_mask
        } else {
            let hi = 2f64.powi(bits as i32) - 1.0;
            (r.clamp(0.0, hi) as u64) & to_mask
        };
    }
    // Integer source.
    let fb = from.bits();
    let ival: i128 = if from.signed() {
        sx(v, fb) as i128
    } else {
        (v & width_mask(fb)) as i128
    };
    if to.float() {
        let mode = rnd.unwrap_or(Rnd::Rn);
        return match to {
            Ty::F64 => {
                let r = ival as f64;
                let err = if r.is_finite() {
                    (ival - r as i128).signum() as f64
                } else {
                    0.0
                };
                float::adjust64(r, err, mode).to_bits()
            }
            Ty::F32 => {
                let r = ival as f64;
                let err = (ival - r as i128).signum() as f64;
                let f = float::to_f32(r, err * f64::MIN_POSITIVE, mode);
                let f = if sat { float::sat32(f) } else { f };
                f.to_bits() as u64
            }
            Ty::F16 => float::f2h(ival as f64, false, mode) as u64,
            Ty::BF16 => float::f2h(ival as f64, true, mode) as u64,
            _ => 0,
        };
    }
    if sat {
        let tb = to.bits();
        let (lo, hi): (i128, i128) = if to.signed() {
            (-(1i128 << (tb - 1)), (1i128 << (tb - 1)) - 1)
        } else {
            (0, (1i128 << tb) - 1)
        };
        return (ival.clamp(lo, hi) as u64) & to_mask;
    }
    (ival as u64) & to_mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_helpers() {
        assert_eq!(bfe(0xF0, 4, 4, 32, false), 0xF);
        assert_eq!(bfe(0xF0, 4, 4, 32, true), 0xFFFF_FFFF);
        assert_eq!(prmt(0x44332211, 0x88776655, 0x5410), 0x66552211);
        assert_eq!(lop3(0b1100, 0b1010, 0b0110, 0x96), 0b1100 ^ 0b1010 ^ 0b0110);
        assert_eq!(
            cvt(
                Ty::S32,
                Ty::F32,
                Some(Rnd::Rz),
                true,
                false,
                false,
                (-3.7f32).to_bits() as u64
            ),
            (-3i32) as u32 as u64
        );
        assert_eq!(
            cvt(
                Ty::U8,
                Ty::F32,
                Some(Rnd::Rn),
                true,
                false,
                false,
                300f32.to_bits() as u64
            ),
            255
        );
        assert_eq!(
            cvt(Ty::S64, Ty::S32, None, false, false, false, 0xFFFF_FFFF),
            u64::MAX
        );
        assert_eq!(
            cvt(
                Ty::F32,
                Ty::U64,
                Some(Rnd::Rz),
                false,
                false,
                false,
                u64::MAX
            ),
            0x5F7F_FFFF
        );
        assert!(compare(
            Cmp::Ltu,
            Ty::F32,
            false,
            f32::NAN.to_bits() as u64,
            0
        ));
        assert!(!compare(
            Cmp::Lt,
            Ty::F32,
            false,
            f32::NAN.to_bits() as u64,
            0
        ));
        assert!(compare(Cmp::Lt, Ty::S32, false, 0xFFFF_FFFF, 0));
        assert!(!compare(Cmp::Lo, Ty::S32, false, 0xFFFF_FFFF, 0));
    }
}
