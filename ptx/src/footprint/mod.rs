//! Memory footprints of kernel launches, for splitting one launch across several devices.
//!
//! The pool's virtual GPU cuts a launch into ranges of blocks along the grid's slowest
//! dimension with more than one block ([`split_dim`]); each member runs the whole grid behind a
//! guard ([`crate::guard`]) that returns for blocks outside its range, after the bytes its range
//! may read were copied to it, and afterwards the bytes its range wrote are valid only there.
//! This module decides when that is sound and computes those bytes:
//!
//! * [`analyze`] (once per module load) proves a kernel splittable or says why not: every
//!   global address must be a polynomial in kernel parameter words ([`Atom::Param`], struct
//!   fields included), `%tid`, `%ntid`, `%ctaid`, `%nctaid` and loop iteration counts; no
//!   address may depend on a value loaded from memory; no global atomics, no `%envreg` (grid
//!   sync), no calls but `vprintf`/`__assertfail`, no `.global` module variables (`.const`
//!   ones may be read: every member loads the module). It is abstract interpretation over
//!   the typed IR only (`&[Inst]`, `&[Func]`; see `analysis.rs`).
//! * [`KernelFootprint::evaluate`] (per launch and range of blocks) puts the real parameters
//!   and geometry in: each address becomes affine in the block, thread and loop indices; loop
//!   trip counts come from their exit tests; bound checks (`if (i < n)`) clip accesses; each
//!   access becomes one strided [`Region`] (or two when clipping cuts its last row).
//! * [`plan`] checks a split: writes of different ranges disjoint, and no range reading what
//!   another writes.
//!
//! * Values computed only from parameter words, `%ntid` and `%nctaid` by operations no
//!   polynomial expresses (div, rem, shifts, bitwise ops, min/max, selp on such a condition,
//!   extensions) become [`Atom::Uni`] atoms naming a [`Uniform`] expression that `evaluate`
//!   computes exactly as the registers would (so `(n + 15) / 16` bounds a loop). Uniform
//!   operands of comparisons are read as the comparison's signedness.
//! * Patterns exact only for values in a range are recorded as [`Assume`]s, and `evaluate`
//!   refuses a launch where the range's indices may leave it: `shl 32; shr.s64 32` (sign
//!   extension, also through loop induction) gives the value when it lies in `[-2^31, 2^31)`,
//!   and a sign test `shr.s x, bits-1` (numba's negative-index wrap) gives 0 when `x >= 0`.
//! * Bound checks combined by `and.pred` (or the `or.pred` of their negations) clip like
//!   single ones.
//!
//! Soundness notes: 32-bit index arithmetic is treated as exact integers, and `evaluate`
//! refuses a launch where a 32-bit value widened into an address may have wrapped; reads in
//! loops whose trip count is unknown come back as [`RangeFootprint::unbounded_reads`] (the
//! whole allocation must be copied); writes there make the kernel not splittable.

mod analysis;
pub mod poly;

use std::collections::BTreeMap;

pub use analysis::{wrap, Access, Assume, Fact, LoopBound, LoopInfo, Narrow, Rel, UOp, Uniform};
use poly::ceil_div;
pub use poly::{Atom, Poly};

use crate::ir::{Func, Inst};

/// Static summary of one kernel, computed once per module load.
#[derive(Debug, Clone)]
pub enum Analysis {
    Splittable(KernelFootprint),
    /// Why not, for the operator ("global atomics at line 42", "calls a function ...").
    NotSplittable(String),
}

/// The accesses of a splittable kernel, symbolic in the launch.
#[derive(Debug, Clone)]
pub struct KernelFootprint {
    pub accesses: Vec<Access>,
    pub loops: Vec<LoopInfo>,
    pub narrow: Vec<Narrow>,
    /// The uniform values [`Atom::Uni`] names, each over earlier ones only.
    pub uniforms: Vec<Uniform>,
    /// Ranges values must lie in for the accesses to be exact, checked at launch.
    pub assumes: Vec<Assume>,
}

/// Every kernel of a lowered module with its analysis, by name, in the module's order;
/// `.const` variables are the module's globals in the const space.
pub fn analyze_lowered(l: &crate::lower::Lowered) -> Vec<(String, Analysis)> {
    let is_const = |g: u32| {
        l.globals
            .get(g as usize)
            .is_some_and(|g| g.space == crate::lower::GlobalSpace::Const)
    };
    l.funcs
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kernel && f.entry.is_some())
        .map(|(i, f)| {
            (
                f.name.clone(),
                analyze(&l.code, &l.funcs, i as u32, &is_const),
            )
        })
        .collect()
}

/// [`analyze_lowered`] of PTX text; one unnamed entry saying why when the text cannot be read.
pub fn analyze_ptx(text: &str) -> Vec<(String, Analysis)> {
    match crate::parser::parse(text).and_then(|ast| crate::lower::lower(&ast)) {
        Ok(l) => analyze_lowered(&l),
        Err(e) => vec![(
            String::new(),
            Analysis::NotSplittable(format!("its PTX could not be read: {e}")),
        )],
    }
}

/// Proves kernel `kernel` (an index into `funcs`) splittable or says why not.
/// `is_const(g)` tells whether module variable `g` is in the `.const` space (reads of those
/// are allowed; any other module variable addressed makes the kernel not splittable).
pub fn analyze(
    code: &[Inst],
    funcs: &[Func],
    kernel: u32,
    is_const: &dyn Fn(u32) -> bool,
) -> Analysis {
    match analysis::interpret(code, funcs, kernel, is_const) {
        Ok(r) => Analysis::Splittable(KernelFootprint {
            accesses: r.accesses,
            loops: r.loops,
            narrow: r.narrow,
            uniforms: r.uniforms,
            assumes: r.assumes,
        }),
        Err(why) => Analysis::NotSplittable(why),
    }
}

/// `rows` × `[offset + r*pitch, offset + r*pitch + width)` in bytes; `pitch = 0` and
/// `rows = 1` for a plain interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region {
    pub offset: u64,
    pub width: u64,
    pub pitch: u64,
    pub rows: u64,
}

impl Region {
    pub fn plain(offset: u64, width: u64) -> Region {
        Region {
            offset,
            width,
            pitch: 0,
            rows: 1,
        }
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + (self.rows - 1) * self.pitch + self.width
    }

    /// Whether `[addr, addr + size)` lies inside one row.
    pub fn contains(&self, addr: u64, size: u64) -> bool {
        if addr < self.offset || self.rows == 0 {
            return false;
        }
        let j = (addr - self.offset)
            .checked_div(self.pitch)
            .unwrap_or(0)
            .min(self.rows - 1);
        let start = self.offset + j * self.pitch;
        addr + size <= start + self.width
    }

    /// The rows, as intervals (for callers that copy bytes).
    pub fn intervals(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.rows).map(|j| {
            let s = self.offset + j * self.pitch;
            (s, s + self.width)
        })
    }

    /// Whether the two regions share a byte.
    pub fn overlaps(&self, o: &Region) -> bool {
        if self.width == 0 || o.width == 0 || self.end() <= o.offset || o.end() <= self.offset {
            return false;
        }
        let (a, b) = if self.rows <= o.rows {
            (self, o)
        } else {
            (o, self)
        };
        if a.rows > 1 << 20 {
            return true;
        }
        a.intervals().any(|(s, e)| b.hits(s, e))
    }

    /// Whether `[s, e)` meets a row.
    fn hits(&self, s: u64, e: u64) -> bool {
        if self.pitch == 0 {
            return s < self.offset + self.width && self.offset < e;
        }
        // Rows j with offset + j*p < e and offset + j*p + width > s.
        let p = self.pitch as i128;
        let (o, w) = (self.offset as i128, self.width as i128);
        let lo = ceil_div(s as i128 - o - w + 1, p).max(0);
        let hi = (e as i128 - 1 - o).div_euclid(p).min(self.rows as i128 - 1);
        lo <= hi
    }
}

/// What one range of blocks may touch in global memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeFootprint {
    pub reads: Vec<Region>,
    pub writes: Vec<Region>,
    /// Reads whose extent is not bounded: the allocation containing each of these addresses
    /// must be treated as read whole.
    pub unbounded_reads: Vec<u64>,
}

/// The slowest dimension with more than one block (z, then y, else x).
pub fn split_dim(grid: [u32; 3]) -> usize {
    if grid[2] > 1 {
        2
    } else if grid[1] > 1 {
        1
    } else {
        0
    }
}

/// Value of a parameter word.
fn param(params: &[u8], offset: u32, size: u32) -> Option<i128> {
    let b = params.get(offset as usize..(offset as usize).checked_add(size as usize)?)?;
    let mut w = [0u8; 8];
    w.get_mut(..b.len())?.copy_from_slice(b);
    let u = u64::from_le_bytes(w);
    Some(match size {
        4 => u as u32 as i32 as i128,
        8 => u as i64 as i128,
        _ => u as i128,
    })
}

impl KernelFootprint {
    /// Evaluated at launch with the real parameter buffer and geometry, for blocks `lo..hi`
    /// along dimension `dim` (0 = x, 1 = y, 2 = z). `Err(reason)` when the launch is not
    /// splittable after all (a write whose extent cannot be bounded, an address that
    /// overflows, a 32-bit index that may wrap).
    pub fn evaluate(
        &self,
        params: &[u8],
        grid: [u32; 3],
        block: [u32; 3],
        dim: usize,
        lo: u32,
        hi: u32,
    ) -> Result<RangeFootprint, String> {
        if dim > 2 || lo >= hi || hi > grid[dim] || grid.contains(&0) || block.contains(&0) {
            return Err(format!(
                "bad range {lo}..{hi} along {dim} of grid {grid:?}, block {block:?}"
            ));
        }
        let mut bad_param = None;
        let known = |a: Atom, uni: &[Option<i128>]| -> Option<i128> {
            match a {
                Atom::Param { offset, size } => param(params, offset, size),
                Atom::Ntid(d) => Some(block[d as usize] as i128),
                Atom::Nctaid(d) => Some(grid[d as usize] as i128),
                Atom::Uni(i) => uni.get(i as usize).copied().flatten(),
                _ => None,
            }
        };
        let mut uni: Vec<Option<i128>> = Vec::with_capacity(self.uniforms.len());
        for u in &self.uniforms {
            let args = u
                .args
                .iter()
                .map(|p| p.subst(&|a| known(a, &uni))?.as_const())
                .collect::<Option<Vec<_>>>();
            uni.push(args.and_then(|a| u.eval(&a)));
        }
        let fixed = |a: Atom| known(a, &uni);
        for a in self.accesses.iter().flat_map(|x| x.addr.atoms()) {
            if let Atom::Param { offset, size } = a {
                if param(params, offset, size).is_none() {
                    bad_param = Some(offset);
                }
            }
        }
        if let Some(o) = bad_param {
            return Err(format!("parameter at offset {o} is outside the buffer"));
        }
        let mut loops: BTreeMap<u32, (i128, i128)> = BTreeMap::new();
        let ranges = |loops: &BTreeMap<u32, (i128, i128)>, a: Atom| -> Option<(i128, i128)> {
            match a {
                Atom::Tid(d) => Some((0, block[d as usize] as i128 - 1)),
                Atom::Ctaid(d) if d as usize == dim => Some((lo as i128, hi as i128 - 1)),
                Atom::Ctaid(d) => Some((0, grid[d as usize] as i128 - 1)),
                Atom::Loop(h) => loops.get(&h).copied(),
                _ => fixed(a).map(|v| (v, v)),
            }
        };
        for l in &self.loops {
            let Some(b) = &l.bound else { continue };
            let r = |p: &Poly| p.range(&|a| ranges(&loops, a));
            let k = (|| {
                let s = b.s.subst(&fixed)?.as_const()?;
                let (cmin, cmax) = r(&b.c)?;
                let (bmin, bmax) = r(&b.b)?;
                if b.unsigned && (cmin < 0 || bmin < 0) {
                    return None;
                }
                let k = match b.rel {
                    Rel::Lt if s > 0 => ceil_div(bmax - cmin, s),
                    Rel::Le if s > 0 => (bmax - cmin).div_euclid(s) + 1,
                    Rel::Gt if s < 0 => ceil_div(cmax - bmin, -s),
                    Rel::Ge if s < 0 => (cmax - bmin).div_euclid(-s) + 1,
                    Rel::Ne if s == 1 && cmax <= bmin => bmax - cmin,
                    Rel::Ne if s == -1 && cmin >= bmax => cmax - bmin,
                    _ => return None,
                };
                Some(k.max(0))
            })();
            if let Some(k) = k.filter(|&k| k < 1 << 40) {
                loops.insert(l.header, (0, k));
            }
        }
        let range = |p: &Poly| p.range(&|a| ranges(&loops, a));
        for a in &self.assumes {
            let r = a.poly.subst(&fixed).and_then(|p| range(&p));
            match r {
                Some((x, y)) if x >= a.lo && y < a.hi => {}
                Some((x, y)) => {
                    return Err(format!(
                        "the value at line {} must lie in {}..{} but may be {x}..={y}",
                        a.line, a.lo, a.hi
                    ))
                }
                None => {
                    return Err(format!(
                        "the value at line {} cannot be bounded (it must lie in {}..{})",
                        a.line, a.lo, a.hi
                    ))
                }
            }
        }
        for n in &self.narrow {
            let Some((a, b)) = range(n.poly.subst(&fixed).as_ref().unwrap_or(&n.poly)) else {
                continue;
            };
            let (min, max) = if n.signed {
                (i32::MIN as i128, i32::MAX as i128)
            } else {
                (0, u32::MAX as i128)
            };
            if a < min || b > max {
                return Err(format!(
                    "a 32-bit index at line {} may wrap ({a}..={b})",
                    n.line
                ));
            }
        }
        let mut out = RangeFootprint::default();
        for acc in &self.accesses {
            let addr = acc
                .addr
                .subst(&fixed)
                .ok_or_else(|| format!("address at line {} overflows", acc.line))?;
            let unbounded = addr
                .atoms()
                .any(|a| matches!(a, Atom::Loop(h) if !loops.contains_key(&h)));
            if unbounded {
                if acc.write {
                    return Err(format!(
                        "a write at line {} in a loop whose trip count cannot be bounded",
                        acc.line
                    ));
                }
                let base = acc
                    .addr
                    .0
                    .iter()
                    .find_map(|(m, c)| match m[..] {
                        [Atom::Param { offset, size: 8 }] if *c == 1 => param(params, offset, 8),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        format!("unbounded read at line {} has no base pointer", acc.line)
                    })?;
                if !out.unbounded_reads.contains(&(base as u64)) {
                    out.unbounded_reads.push(base as u64);
                }
                continue;
            }
            let regions = region(&addr, acc, &fixed, &range)
                .ok_or_else(|| format!("address at line {} overflows", acc.line))?;
            let list = if acc.write {
                &mut out.writes
            } else {
                &mut out.reads
            };
            list.extend(regions);
        }
        for l in [&mut out.reads, &mut out.writes] {
            l.sort_unstable();
            l.dedup();
        }
        Ok(out)
    }
}

/// The regions one access covers, clipped by its facts: the smaller of two sound covers,
/// one over the index atoms (its end clipped by the facts), one where each fact `e < b` that
/// the address contains becomes a variable ranging up to `b - 1`.
fn region(
    addr: &Poly,
    acc: &Access,
    fixed: &dyn Fn(Atom) -> Option<i128>,
    range: &dyn Fn(&Poly) -> Option<(i128, i128)>,
) -> Option<Vec<Region>> {
    let size = acc.size as i128;
    let (min, max) = range(addr)?;
    let end = max.checked_add(size)?;
    if min < 0 || end > u64::MAX as i128 {
        return None;
    }
    let linear = addr.0.keys().all(|m| m.len() <= 1);
    if !linear {
        return Some(vec![Region::plain(min as u64, (end - min) as u64)]);
    }
    // Candidate A: the atoms as variables.
    let mut terms = Vec::new();
    for (m, c) in &addr.0 {
        if let [a] = m[..] {
            let (p, q) = range(&Poly::atom(a))?;
            terms.push((*c, p, q));
        }
    }
    let a = clip_all(
        layout(addr.as_const_part(), &terms, size)?,
        fact_end(addr, acc, fixed, range, end, size),
    );
    // Candidate B: the facts' expressions as variables.
    let mut rest = addr.clone();
    let mut fterms = Vec::new();
    for f in by_size(&acc.facts) {
        let (Some(e), Some(b)) = (f.e.subst(fixed), f.b.subst(fixed)) else {
            continue;
        };
        let (Some((bmin, bmax)), Some((emin, emax))) = (range(&b), range(&e)) else {
            continue;
        };
        if f.unsigned && bmin < 0 {
            continue;
        }
        let Some(scale) = contains(&rest, &e) else {
            continue;
        };
        let Some(nr) = e.scale(scale).and_then(|se| rest.sub(&se)) else {
            continue;
        };
        rest = nr;
        let (ec, _) = e.as_const_split();
        // The fact's variable part ranges over [emin - ec, min(emax, bmax - 1) - ec].
        let hi = emax.min(bmax - 1);
        if hi < emin {
            return Some(Vec::new());
        }
        fterms.push((scale, emin - ec, hi - ec));
        rest = rest.add(&Poly::constant(scale * ec))?;
    }
    if fterms.is_empty() {
        return Some(a);
    }
    for (m, c) in &rest.0 {
        if let [x] = m[..] {
            let (p, q) = range(&Poly::atom(x))?;
            fterms.push((*c, p, q));
        }
    }
    let b = layout(rest.as_const_part(), &fterms, size)?;
    let bytes = |v: &[Region]| {
        v.iter()
            .map(|r| r.rows as u128 * r.width as u128)
            .sum::<u128>()
    };
    Some(if bytes(&b) < bytes(&a) { b } else { a })
}

/// Facts over more terms first (a loop's `i < n` before its entry's `i0 < n`).
fn by_size(f: &[Fact]) -> Vec<&Fact> {
    let mut v: Vec<&Fact> = f.iter().collect();
    v.sort_by_key(|f| std::cmp::Reverse(f.e.0.len()));
    v
}

/// `scale` with `rest` containing `scale * e` (all of `e`'s non-constant terms), if any.
fn contains(rest: &Poly, e: &Poly) -> Option<i128> {
    let (m, ce) = e.0.iter().find(|(m, _)| !m.is_empty())?;
    let ca = rest.0.get(m)?;
    if ca % ce != 0 || ca / ce <= 0 {
        return None;
    }
    let scale = ca / ce;
    e.0.iter()
        .all(|(m, c)| m.is_empty() || rest.0.get(m) == Some(&(c * scale)))
        .then_some(scale)
}

/// Where the facts end an access: `addr = rest + sum(scale * e)` with `e < b` gives
/// `addr + size <= max(rest) + sum(scale * (b - 1)) + size`.
fn fact_end(
    addr: &Poly,
    acc: &Access,
    fixed: &dyn Fn(Atom) -> Option<i128>,
    range: &dyn Fn(&Poly) -> Option<(i128, i128)>,
    end: i128,
    size: i128,
) -> i128 {
    let mut rest = addr.clone();
    let mut bound = 0i128;
    let mut used = false;
    for f in by_size(&acc.facts) {
        let (Some(e), Some(b)) = (f.e.subst(fixed), f.b.subst(fixed)) else {
            continue;
        };
        let Some((bmin, bmax)) = range(&b) else {
            continue;
        };
        if (f.unsigned && bmin < 0) || range(&e).is_none() {
            continue;
        }
        let Some(scale) = contains(&rest, &e) else {
            continue;
        };
        let Some(nr) = e.scale(scale).and_then(|se| rest.sub(&se)) else {
            continue;
        };
        rest = nr;
        bound += scale * (bmax - 1);
        used = true;
    }
    match (used, range(&rest)) {
        (true, Some((_, rmax))) => end.min(rmax + bound + size),
        _ => end,
    }
}

fn clip_all(v: Vec<Region>, end: i128) -> Vec<Region> {
    v.into_iter().flat_map(|r| clip(r, end)).collect()
}

/// The regions of `base + sum(c * v)` for `v` in `[p, q]` of each `(c, p, q)`, accesses of
/// `size` bytes: strided along the largest coefficient when the rest fits between its rows,
/// nested (one strided region per row) when few.
fn layout(base: i128, terms: &[(i128, i128, i128)], size: i128) -> Option<Vec<Region>> {
    let mut base = base;
    let mut t: Vec<(i128, i128)> = Vec::new(); // (coef > 0, count)
    for &(c, p, q) in terms {
        let (c, p, q) = if c < 0 { (-c, -q, -p) } else { (c, p, q) };
        base = base.checked_add(c.checked_mul(p)?)?;
        if q > p && c != 0 {
            t.push((c, q - p + 1));
        }
    }
    if base < 0 {
        return None;
    }
    t.sort_unstable_by(|a, b| b.cmp(a));
    fn go(base: i128, t: &[(i128, i128)], size: i128) -> Option<Vec<Region>> {
        let Some(&(c, n)) = t.first() else {
            return Some(vec![Region::plain(base as u64, size as u64)]);
        };
        let rest = &t[1..];
        let width = rest.iter().map(|(c, n)| c * (n - 1)).sum::<i128>() + size;
        let total = c * (n - 1) + width;
        if base.checked_add(total)? > u64::MAX as i128 {
            return None;
        }
        if c < width {
            return Some(vec![Region::plain(base as u64, total as u64)]);
        }
        let sub = go(base, rest, size)?;
        if let [r] = sub[..] {
            if r.rows == 1 {
                return Some(vec![if c == r.width as i128 {
                    Region::plain(base as u64, total as u64)
                } else {
                    Region {
                        offset: base as u64,
                        width: r.width,
                        pitch: c as u64,
                        rows: n as u64,
                    }
                }]);
            }
        }
        if n * sub.len() as i128 <= 64 {
            return Some(
                (0..n)
                    .flat_map(|j| {
                        sub.iter().map(move |r| Region {
                            offset: r.offset + (c * j) as u64,
                            ..*r
                        })
                    })
                    .collect(),
            );
        }
        Some(vec![Region {
            offset: base as u64,
            width: width as u64,
            pitch: c as u64,
            rows: n as u64,
        }])
    }
    go(base, &t, size)
}

/// `r` cut at `end`: its full rows, and the part of the next one before `end`.
fn clip(r: Region, end: i128) -> Vec<Region> {
    let (o, w, p, n) = (
        r.offset as i128,
        r.width as i128,
        r.pitch as i128,
        r.rows as i128,
    );
    if end >= r.end() as i128 {
        return vec![r];
    }
    if end <= o {
        return Vec::new();
    }
    let full = if p == 0 || end < o + w {
        0
    } else {
        ((end - o - w) / p + 1).min(n)
    };
    let mut out = Vec::new();
    if full > 0 {
        out.push(Region {
            offset: r.offset,
            width: r.width,
            pitch: if full > 1 { r.pitch } else { 0 },
            rows: full as u64,
        });
    }
    if full < n {
        let s = o + full * p;
        if s < end {
            out.push(Region::plain(s as u64, (end - s).min(w) as u64));
        }
    }
    out
}

/// Checks a proposed split of a launch into `ranges` of blocks along [`split_dim`]: each
/// range's footprint, with writes of different ranges disjoint and no range reading bytes
/// another range writes. A range with unbounded reads conflicts with any write of another
/// range (the allocation is unknown here; see [`plan_in`]). Err(reason) otherwise.
pub fn plan(
    fp: &KernelFootprint,
    params: &[u8],
    grid: [u32; 3],
    block: [u32; 3],
    ranges: &[(u32, u32)],
) -> Result<(usize, Vec<RangeFootprint>), String> {
    plan_in(fp, params, grid, block, ranges, &|_| None)
}

/// [`plan`], with `allocation(addr)` giving the (base, size) of the allocation holding `addr`,
/// so that unbounded reads conflict only with writes into that allocation.
pub fn plan_in(
    fp: &KernelFootprint,
    params: &[u8],
    grid: [u32; 3],
    block: [u32; 3],
    ranges: &[(u32, u32)],
    allocation: &dyn Fn(u64) -> Option<(u64, u64)>,
) -> Result<(usize, Vec<RangeFootprint>), String> {
    let dim = split_dim(grid);
    let fps = ranges
        .iter()
        .map(|&(lo, hi)| fp.evaluate(params, grid, block, dim, lo, hi))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in fps.iter().enumerate() {
        let mut reads = a.reads.clone();
        for &u in &a.unbounded_reads {
            reads.push(match allocation(u) {
                Some((base, size)) => Region::plain(base, size),
                None => Region::plain(0, u64::MAX),
            });
        }
        for (j, b) in fps.iter().enumerate() {
            if i == j {
                continue;
            }
            for w in &b.writes {
                if j > i {
                    if let Some(x) = a.writes.iter().find(|x| x.overlaps(w)) {
                        return Err(format!(
                            "ranges {:?} and {:?} both write {x:?} / {w:?}",
                            ranges[i], ranges[j]
                        ));
                    }
                }
                if let Some(r) = reads.iter().find(|r| r.overlaps(w)) {
                    return Err(format!(
                        "range {:?} reads {r:?}, which range {:?} writes ({w:?})",
                        ranges[i], ranges[j]
                    ));
                }
            }
        }
    }
    Ok((dim, fps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_overlap_and_contain() {
        let a = Region {
            offset: 0,
            width: 16,
            pitch: 64,
            rows: 4,
        };
        assert!(a.contains(64, 16) && !a.contains(60, 8) && !a.contains(256, 4));
        assert!(!a.overlaps(&Region {
            offset: 16,
            width: 48,
            pitch: 64,
            rows: 3
        }));
        assert!(a.overlaps(&Region::plain(200, 4)));
        assert!(!a.overlaps(&Region::plain(208, 40)));
        assert_eq!(
            clip(a, 64 * 3 + 8),
            vec![
                Region {
                    offset: 0,
                    width: 16,
                    pitch: 64,
                    rows: 3
                },
                Region::plain(192, 8)
            ]
        );
    }
}
