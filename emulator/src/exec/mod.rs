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

mod atomics;
mod compare;
mod control;
mod floating;
mod integer;
mod memory;
mod warp;

use floating::*;
use memory::*;

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

/// Frame layouts come from the PTX front end, which the client shares (see
/// [`remora_ptx::kernels`]).
pub use remora_ptx::kernels::{layout, Bases, KernelLayout};

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

    fn exec(&mut self, op: &Op, m: u32, b: Bases, line: u32) -> Result<(), EmuError> {
        match op {
            Op::Mov { .. }
            | Op::MovPred { .. }
            | Op::Pack { .. }
            | Op::Unpack { .. }
            | Op::Int2 { .. }
            | Op::Int1 { .. }
            | Op::Int3 { .. }
            | Op::Bfi { .. }
            | Op::Carry { .. } => self.exec_integer(op, m, b, line),
            Op::Float2 { .. }
            | Op::Float1 { .. }
            | Op::Fma { .. }
            | Op::CvtPack { .. }
            | Op::Cvt { .. }
            | Op::Testp { .. } => self.exec_floating(op, m, b, line),
            Op::CpAsync { .. }
            | Op::Ld { .. }
            | Op::St { .. }
            | Op::Cvta { .. }
            | Op::Isspacep { .. } => self.exec_memory(op, m, b, line),
            Op::Setp { .. }
            | Op::Set { .. }
            | Op::PredLogic { .. }
            | Op::PredNot { .. }
            | Op::Selp { .. } => self.exec_compare(op, m, b, line),
            Op::Atom { .. } => self.exec_atomics(op, m, b, line),
            Op::Shfl { .. }
            | Op::Vote { .. }
            | Op::Activemask { .. }
            | Op::Match { .. }
            | Op::Redux { .. } => self.exec_warp(op, m, b, line),
            // Control flow is handled by run_split.
            Op::Nop
            | Op::Bra { .. }
            | Op::Call { .. }
            | Op::CallIndirect { .. }
            | Op::Builtin { .. }
            | Op::Ret
            | Op::Exit
            | Op::Trap
            | Op::Bar { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compare::compare;
    use super::integer::{bfe, lop3, prmt};
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
