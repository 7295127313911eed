//! The static half of the footprint: abstract interpretation of one kernel's control-flow
//! graph in which every register holds a polynomial over [`Atom`]s (or an address in a
//! shared/local/parameter window, or a module global's address, or unknown). Loop headers
//! widen a register that changes around the loop into `init + Loop(h) * step`; the loop's
//! exit test then bounds `Loop(h)`. Branch conditions of the form `e < b` are kept as facts
//! along the paths they guard, so that `if (i < n) y[i] = ..` can clip an access at launch.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::poly::{Atom, Poly};
use crate::ir::*;

/// A register's abstract value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    P(Poly),
    /// An address in the shared, local or parameter window (or a shared/local-space offset).
    Win,
    /// The address of module global `.0`, plus an unknown offset.
    Glob(u32),
    /// Unknown; `true` when it comes from a value loaded from memory.
    Top(bool),
}

impl Val {
    fn mem(&self) -> bool {
        matches!(self, Val::Top(true))
    }
    fn join(&self, o: &Val) -> Val {
        if self == o {
            self.clone()
        } else {
            Val::Top(self.mem() || o.mem())
        }
    }
    fn mentions(&self, a: Atom) -> bool {
        matches!(self, Val::P(p) if p.mentions(a))
    }
}

/// Comparison of a condition, over mathematical integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rel {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Rel {
    fn negate(self) -> Rel {
        match self {
            Rel::Lt => Rel::Ge,
            Rel::Ge => Rel::Lt,
            Rel::Le => Rel::Gt,
            Rel::Gt => Rel::Le,
            Rel::Eq => Rel::Ne,
            Rel::Ne => Rel::Eq,
        }
    }
    fn swap(self) -> Rel {
        match self {
            Rel::Lt => Rel::Gt,
            Rel::Gt => Rel::Lt,
            Rel::Le => Rel::Ge,
            Rel::Ge => Rel::Le,
            r => r,
        }
    }
}

/// What a predicate register holds: `a rel b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    rel: Rel,
    unsigned: bool,
    a: Poly,
    b: Poly,
    /// Width of the compared registers.
    bits: u32,
}

impl Cond {
    fn negate(&self) -> Cond {
        Cond {
            rel: self.rel.negate(),
            ..self.clone()
        }
    }
    /// The fact `e < b` this condition gives when it holds.
    fn fact(&self) -> Option<Fact> {
        let one = Poly::constant(1);
        let (e, b) = match self.rel {
            Rel::Lt => (self.a.clone(), self.b.clone()),
            Rel::Le | Rel::Eq => (self.a.clone(), self.b.add(&one)?),
            Rel::Gt => (self.b.clone(), self.a.clone()),
            Rel::Ge => (self.b.clone(), self.a.add(&one)?),
            Rel::Ne => return None,
        };
        Some(Fact {
            e,
            b,
            unsigned: self.unsigned,
        })
    }
}

/// Most conditions one predicate keeps.
const MAX_CONDS: usize = 8;

/// What a predicate register holds: all of `conds` (`neg == false`), or not all of them
/// (`neg == true`, never with a single condition: that one is negated instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PredV {
    neg: bool,
    conds: Vec<Cond>,
}

impl PredV {
    fn one(c: Cond) -> PredV {
        PredV {
            neg: false,
            conds: vec![c],
        }
    }
    fn make(neg: bool, conds: Vec<Cond>) -> Option<PredV> {
        if conds.is_empty() || conds.len() > MAX_CONDS {
            return None;
        }
        Some(match (neg, &conds[..]) {
            (true, [c]) => PredV::one(c.negate()),
            _ => PredV { neg, conds },
        })
    }
    fn negate(&self) -> PredV {
        PredV::make(!self.neg, self.conds.clone()).unwrap_or_else(|| self.clone())
    }
    /// The condition, when the predicate is a single one.
    fn single(&self) -> Option<Cond> {
        match (&self.conds[..], self.neg) {
            ([c], false) => Some(c.clone()),
            _ => None,
        }
    }
    /// Conditions that all hold when the predicate does.
    fn all(&self) -> Option<Vec<Cond>> {
        (!self.neg).then(|| self.conds.clone())
    }
    /// Conditions not all of which hold when the predicate does.
    fn not_all(&self) -> Option<Vec<Cond>> {
        match (&self.conds[..], self.neg) {
            (_, true) => Some(self.conds.clone()),
            ([c], false) => Some(vec![c.negate()]),
            _ => None,
        }
    }
    fn mentions(&self, a: Atom) -> bool {
        self.conds
            .iter()
            .any(|c| c.a.mentions(a) || c.b.mentions(a))
    }
    /// The facts that hold where the predicate does.
    fn facts(&self) -> Vec<Fact> {
        self.all()
            .unwrap_or_default()
            .iter()
            .filter_map(Cond::fact)
            .collect()
    }
    fn and(&self, o: &PredV) -> Option<PredV> {
        let mut c = self.all()?;
        c.extend(o.all()?);
        PredV::make(false, c)
    }
    fn or(&self, o: &PredV) -> Option<PredV> {
        let mut c = self.not_all()?;
        c.extend(o.not_all()?);
        PredV::make(true, c)
    }
    fn comb(&self, op: BoolOp, o: &PredV) -> Option<PredV> {
        match op {
            BoolOp::And => self.and(o),
            BoolOp::Or => self.or(o),
            BoolOp::Xor => None,
        }
    }
}

/// An operation on uniform values, computed at launch ([`Uniform::eval`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UOp {
    Div,
    Rem,
    Shr,
    Shl,
    And,
    Or,
    Xor,
    Min,
    Max,
    MulHi,
    Not,
    Abs,
    /// Sign- (when signed) or zero-extension from `from` bits.
    Ext {
        from: u32,
    },
    /// `args[0] rel args[1]` (compared at `bits` bits, unsigned when `unsigned`) ?
    /// `args[2]` : `args[3]`.
    Sel {
        rel: Rel,
        unsigned: bool,
        bits: u32,
    },
}

/// A value computed from parameter words, `%ntid`, `%nctaid` and earlier uniform values by an
/// operation polynomials cannot express: `op` on the `bits`-bit registers holding `args`
/// (read as signed when `signed`). [`Atom::Uni`] names it by its index in the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uniform {
    pub op: UOp,
    pub bits: u32,
    pub signed: bool,
    pub args: Vec<Poly>,
    pub line: u32,
}

/// `v` as the `bits`-bit register holding it reads (as signed or unsigned).
pub fn wrap(v: i128, bits: u32, signed: bool) -> i128 {
    let m = 1i128 << bits.min(64);
    let u = v.rem_euclid(m);
    if signed && u >= m / 2 {
        u - m
    } else {
        u
    }
}

impl Uniform {
    /// The value, given the arguments' values; `None` where the hardware result is not
    /// defined (a division by zero).
    pub fn eval(&self, a: &[i128]) -> Option<i128> {
        let (bits, s) = (self.bits, self.signed);
        let w = |v: i128| wrap(v, bits, s);
        let u = |v: i128| wrap(v, bits, false);
        let x = *a.first()?;
        let y = || a.get(1).copied();
        let r = match self.op {
            UOp::Div | UOp::Rem => {
                let (x, y) = (w(x), w(y()?));
                if y == 0 {
                    return None;
                }
                if self.op == UOp::Div {
                    x.checked_div(y)?
                } else {
                    x.checked_rem(y)?
                }
            }
            UOp::Shr => {
                let n = wrap(y()?, 32, false);
                if s {
                    w(x) >> n.min(bits as i128 - 1)
                } else if n >= bits as i128 {
                    0
                } else {
                    u(x) >> n
                }
            }
            UOp::Shl => {
                let n = wrap(y()?, 32, false);
                if n >= bits as i128 {
                    0
                } else {
                    u(x) << n
                }
            }
            UOp::And => u(x) & u(y()?),
            UOp::Or => u(x) | u(y()?),
            UOp::Xor => u(x) ^ u(y()?),
            UOp::Min => w(x).min(w(y()?)),
            UOp::Max => w(x).max(w(y()?)),
            UOp::MulHi => w(x).checked_mul(w(y()?))? >> bits,
            UOp::Not => !u(x),
            UOp::Abs => w(x).abs(),
            UOp::Ext { from } => wrap(x, from, s),
            UOp::Sel {
                rel,
                unsigned,
                bits: cb,
            } => {
                let c = |v: i128| wrap(v, cb, !unsigned);
                let (p, q) = (c(x), c(y()?));
                let holds = match rel {
                    Rel::Lt => p < q,
                    Rel::Le => p <= q,
                    Rel::Gt => p > q,
                    Rel::Ge => p >= q,
                    Rel::Eq => p == q,
                    Rel::Ne => p != q,
                };
                return a.get(if holds { 2 } else { 3 }).copied();
            }
        };
        Some(w(r))
    }
}

/// `lo <= poly < hi` must hold wherever line `line` executes for the value the analysis
/// uses to be exact (a sign extension by shifts, a sign test); checked at launch over the
/// range's indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assume {
    pub poly: Poly,
    pub lo: i128,
    pub hi: i128,
    pub line: u32,
}

/// `e < b` holds where an access executes (compared unsigned when `unsigned`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fact {
    pub e: Poly,
    pub b: Poly,
    pub unsigned: bool,
}

/// One global-memory access of the kernel.
#[derive(Debug, Clone)]
pub struct Access {
    pub write: bool,
    pub addr: Poly,
    pub size: u64,
    pub line: u32,
    pub facts: Vec<Fact>,
}

/// How a loop's iteration index is bounded: the loop goes on while `c + Loop * s rel b`.
#[derive(Debug, Clone)]
pub struct LoopBound {
    pub c: Poly,
    pub s: Poly,
    pub rel: Rel,
    pub unsigned: bool,
    pub b: Poly,
}

/// A loop (by the instruction index of its header) and its bound, if one was found.
#[derive(Debug, Clone)]
pub struct LoopInfo {
    pub header: u32,
    pub bound: Option<LoopBound>,
}

/// A 32-bit (or narrower) value used as a wider one: it must not have wrapped.
#[derive(Debug, Clone)]
pub struct Narrow {
    pub poly: Poly,
    pub signed: bool,
    pub line: u32,
}

/// What the interpretation found.
pub struct Raw {
    pub accesses: Vec<Access>,
    pub loops: Vec<LoopInfo>,
    pub narrow: Vec<Narrow>,
    pub uniforms: Vec<Uniform>,
    pub assumes: Vec<Assume>,
}

/// Most uniform values one kernel may define.
const MAX_UNIFORMS: usize = 1024;

const MAX_FACTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    regs: Vec<Val>,
    preds: Vec<Option<PredV>>,
    facts: BTreeSet<Fact>,
    /// Version of each enclosing loop header's state this state was computed from.
    ver: BTreeMap<u32, u32>,
}

impl State {
    fn join(&self, o: &State) -> State {
        let mut ver = self.ver.clone();
        for (h, v) in &o.ver {
            let e = ver.entry(*h).or_insert(*v);
            *e = (*e).min(*v);
        }
        State {
            regs: self
                .regs
                .iter()
                .zip(&o.regs)
                .map(|(a, b)| a.join(b))
                .collect(),
            preds: self
                .preds
                .iter()
                .zip(&o.preds)
                .map(|(a, b)| if a == b { a.clone() } else { None })
                .collect(),
            facts: self.facts.intersection(&o.facts).cloned().collect(),
            ver,
        }
    }
    fn add_fact(&mut self, f: Option<Fact>) {
        if let Some(f) = f {
            if self.facts.len() < MAX_FACTS {
                self.facts.insert(f);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Status {
    Inv,
    Iv(Poly),
    Top,
}

/// Collects what the final pass finds.
#[derive(Default)]
struct Out {
    accesses: Vec<Access>,
    narrow: Vec<Narrow>,
    assumes: Vec<Assume>,
    reason: Option<String>,
}

impl Out {
    fn refuse(&mut self, r: String) {
        if self.reason.is_none() {
            self.reason = Some(r);
        }
    }
}

/// Instruction range of function `f`'s body.
fn body(code: &[Inst], funcs: &[Func], f: usize) -> Option<(usize, usize)> {
    let start = funcs.get(f)?.entry? as usize;
    let end = funcs
        .iter()
        .filter_map(|g| g.entry.map(|e| e as usize))
        .filter(|&e| e > start)
        .min()
        .unwrap_or(code.len())
        .min(code.len());
    (start < end).then_some((start, end))
}

struct Cfg {
    /// (first, end) instruction of each block.
    blocks: Vec<(usize, usize)>,
    succs: Vec<Vec<usize>>,
    preds: Vec<Vec<usize>>,
    /// Blocks that are targets of a back edge, with the largest source block of one.
    headers: BTreeMap<usize, usize>,
}

fn cfg(code: &[Inst], start: usize, end: usize) -> Cfg {
    let mut leaders = BTreeSet::new();
    leaders.insert(start);
    for (i, inst) in code.iter().enumerate().take(end).skip(start) {
        match inst.op {
            Op::Bra { target } => {
                let t = target as usize;
                if (start..end).contains(&t) {
                    leaders.insert(t);
                }
                leaders.insert(i + 1);
            }
            Op::Ret | Op::Exit | Op::Trap => {
                leaders.insert(i + 1);
            }
            _ => {}
        }
    }
    let ls: Vec<usize> = leaders.into_iter().filter(|&l| l < end).collect();
    let blocks: Vec<(usize, usize)> = ls
        .iter()
        .enumerate()
        .map(|(k, &s)| (s, ls.get(k + 1).copied().unwrap_or(end)))
        .collect();
    let index: BTreeMap<usize, usize> = ls.iter().enumerate().map(|(k, &s)| (s, k)).collect();
    let mut succs = vec![Vec::new(); blocks.len()];
    for (k, &(_, e)) in blocks.iter().enumerate() {
        let last = &code[e - 1];
        let next = index.get(&e).copied();
        let mut s = Vec::new();
        match last.op {
            Op::Bra { target } => {
                if let Some(&t) = index.get(&(target as usize)) {
                    s.push(t);
                }
                if last.guard.is_some() {
                    s.extend(next);
                }
            }
            Op::Ret | Op::Exit | Op::Trap => {
                if last.guard.is_some() {
                    s.extend(next);
                }
            }
            _ => s.extend(next),
        }
        s.dedup();
        succs[k] = s;
    }
    let mut preds = vec![Vec::new(); blocks.len()];
    let mut headers = BTreeMap::new();
    for (k, s) in succs.iter().enumerate() {
        for &t in s {
            preds[t].push(k);
            if t <= k {
                let e = headers.entry(t).or_insert(k);
                *e = (*e).max(k);
            }
        }
    }
    Cfg {
        blocks,
        succs,
        preds,
        headers,
    }
}

fn imm(v: u64, bits: u32) -> i128 {
    match bits {
        8 => v as u8 as i8 as i128,
        16 => v as u16 as i16 as i128,
        32 => v as u32 as i32 as i128,
        _ => v as i64 as i128,
    }
}

fn rel_of(cmp: Cmp, ty: Ty) -> Option<(Rel, bool)> {
    if ty.float() || ty == Ty::Pred {
        return None;
    }
    let uns = !ty.signed();
    Some(match cmp {
        Cmp::Eq => (Rel::Eq, uns),
        Cmp::Ne => (Rel::Ne, uns),
        Cmp::Lt => (Rel::Lt, uns),
        Cmp::Le => (Rel::Le, uns),
        Cmp::Gt => (Rel::Gt, uns),
        Cmp::Ge => (Rel::Ge, uns),
        Cmp::Lo => (Rel::Lt, true),
        Cmp::Ls => (Rel::Le, true),
        Cmp::Hi => (Rel::Gt, true),
        Cmp::Hs => (Rel::Ge, true),
        _ => return None,
    })
}

struct Interp<'a> {
    funcs: &'a [Func],
    is_const: &'a dyn Fn(u32) -> bool,
    nregs: usize,
    npreds: usize,
    uni: RefCell<Vec<Uniform>>,
}

fn in_window(c: i128) -> bool {
    (c as u64) >= SHARED_WINDOW && (c as u64) < FUNC_WINDOW
}

impl Interp<'_> {
    fn src(&self, st: &State, s: &Src, bits: u32, out: &mut Option<&mut Out>, line: u32) -> Val {
        match *s {
            Src::Reg(r) => st.regs.get(r as usize).cloned().unwrap_or(Val::Top(false)),
            Src::Imm(v) => Val::P(Poly::constant(imm(v, bits))),
            Src::Sreg(sr) => match sr {
                Sreg::Tid(d) => Val::P(Poly::atom(Atom::Tid(d % 3))),
                Sreg::Ntid(d) => Val::P(Poly::atom(Atom::Ntid(d % 3))),
                Sreg::Ctaid(d) => Val::P(Poly::atom(Atom::Ctaid(d % 3))),
                Sreg::Nctaid(d) => Val::P(Poly::atom(Atom::Nctaid(d % 3))),
                Sreg::DynSharedBase => Val::Win,
                Sreg::EnvReg(_) => {
                    if let Some(o) = out {
                        o.refuse(format!("reads %envreg (grid sync) at line {line}"));
                    }
                    Val::Top(false)
                }
                _ => Val::Top(false),
            },
            Src::Global(g, _) => Val::Glob(g),
            Src::Local(_) | Src::Shared(..) => Val::Win,
        }
    }

    fn set(&self, st: &mut State, d: u32, v: Val, guarded: bool) {
        if let Some(slot) = st.regs.get_mut(d as usize) {
            *slot = if guarded { slot.join(&v) } else { v };
        }
    }

    /// The uniform value `op(args)` (folded when the arguments are constants), or unknown
    /// when an argument is not uniform.
    fn uniform(&self, op: UOp, bits: u32, signed: bool, args: Vec<Poly>, line: u32) -> Val {
        if !args.iter().all(Poly::uniform) {
            return Val::Top(false);
        }
        let u = Uniform {
            op,
            bits,
            signed,
            args,
            line,
        };
        if let Some(c) = u
            .args
            .iter()
            .map(Poly::as_const)
            .collect::<Option<Vec<_>>>()
        {
            return u
                .eval(&c)
                .map_or(Val::Top(false), |v| Val::P(Poly::constant(v)));
        }
        let mut t = self.uni.borrow_mut();
        let i = match t.iter().position(|x| {
            x.op == u.op && x.bits == u.bits && x.signed == u.signed && x.args == u.args
        }) {
            Some(i) => i,
            None if t.len() < MAX_UNIFORMS => {
                t.push(u);
                t.len() - 1
            }
            None => return Val::Top(false),
        };
        Val::P(Poly::atom(Atom::Uni(i as u32)))
    }

    /// `shr` of a non-uniform `p` by the constant `c`: exact when every coefficient is a
    /// multiple of `2^c` (the quotient, assumed in range), or 0 for a sign test
    /// (`c == bits - 1`, `p` assumed non-negative).
    #[allow(clippy::too_many_arguments)]
    fn shr(
        &self,
        p: &Poly,
        c: i128,
        bits: u32,
        signed: bool,
        out: &mut Option<&mut Out>,
        line: u32,
    ) -> Val {
        let b = bits as i128;
        if !(0..b).contains(&c) {
            return Val::Top(false);
        }
        let k = 1i128 << c;
        let (v, poly, lo, hi) = if p.0.values().all(|x| x % k == 0) {
            let q = Poly(p.0.iter().map(|(m, x)| (m.clone(), x / k)).collect());
            let (lo, hi) = if signed {
                (-(1i128 << (b - 1 - c)), 1i128 << (b - 1 - c))
            } else {
                (0, 1i128 << (b - c))
            };
            (q.clone(), q, lo, hi)
        } else if c == b - 1 {
            (Poly::default(), p.clone(), 0, 1i128 << (b - 1))
        } else {
            return Val::Top(false);
        };
        if let Some(o) = out {
            o.assumes.push(Assume { poly, lo, hi, line });
        }
        Val::P(v)
    }

    fn pred(&self, st: &State, a: &PSrc) -> Option<PredV> {
        match a {
            PSrc::Reg(p, neg) => {
                let c = st.preds.get(*p as usize).cloned().flatten()?;
                Some(if *neg { c.negate() } else { c })
            }
            PSrc::Imm(_) => None,
        }
    }

    fn set_pred(&self, st: &mut State, p: u32, c: Option<PredV>, guarded: bool) {
        if let Some(slot) = st.preds.get_mut(p as usize) {
            *slot = if guarded && *slot != c { None } else { c };
        }
    }

    /// Classifies a memory operand: records a global access, or refuses.
    #[allow(clippy::too_many_arguments)]
    fn access(
        &self,
        st: &State,
        space: Space,
        addr: &Addr,
        size: u64,
        write: bool,
        atomic: bool,
        line: u32,
        out: &mut Option<&mut Out>,
    ) {
        let Some(o) = out else { return };
        if matches!(space, Space::Shared | Space::Local | Space::Param) {
            return;
        }
        let base = self.src(st, &addr.base, 64, &mut None, line);
        let v = match base {
            Val::P(p) => match p.add(&Poly::constant(addr.off as i128)) {
                Some(p) => Val::P(p),
                None => Val::Top(false),
            },
            v => v,
        };
        match v {
            Val::P(p) => {
                if space == Space::Generic && p.as_const().is_some_and(in_window) {
                    return;
                }
                if atomic {
                    o.refuse(format!("global atomics at line {line}"));
                    return;
                }
                o.accesses.push(Access {
                    write,
                    addr: p,
                    size,
                    line,
                    facts: st.facts.iter().cloned().collect(),
                });
            }
            Val::Win if space == Space::Generic => {}
            Val::Win => o.refuse(format!("global access to a window address at line {line}")),
            Val::Glob(g) => {
                if atomic {
                    o.refuse(format!("global atomics on a module global at line {line}"));
                } else if write {
                    o.refuse(format!("writes a module global at line {line}"));
                } else if !(self.is_const)(g) {
                    o.refuse(format!("reads a module global at line {line}"));
                }
            }
            Val::Top(true) => o.refuse(format!("address loaded from memory at line {line}")),
            Val::Top(false) => o.refuse(format!(
                "address not derived from parameters and indices at line {line}"
            )),
        }
    }

    fn step(&self, st: &mut State, inst: &Inst, out: &mut Option<&mut Out>) {
        let g = inst.guard.is_some();
        let line = inst.line;
        let top = |v: &[&Val]| Val::Top(v.iter().any(|x| x.mem()));
        let narrow = |out: &mut Option<&mut Out>, v: &Val, signed: bool| {
            if let (Some(o), Val::P(p)) = (out, v) {
                if p.as_const().is_none() {
                    o.narrow.push(Narrow {
                        poly: p.clone(),
                        signed,
                        line,
                    });
                }
            }
        };
        match &inst.op {
            Op::Mov { d, a, mask } => {
                let v = self.src(st, a, 64 - mask.leading_zeros().min(63), out, line);
                self.set(st, *d, v, g);
            }
            Op::MovPred { d, a } => {
                let c = self.pred(st, a);
                self.set_pred(st, *d, c, g);
            }
            Op::PredLogic { op, d, a, b } => {
                let c = match (self.pred(st, a), self.pred(st, b)) {
                    (Some(x), Some(y)) => x.comb(*op, &y),
                    _ => None,
                };
                self.set_pred(st, *d, c, g);
            }
            Op::Int2 {
                op,
                bits,
                signed,
                sat,
                d,
                a,
                b,
            } => {
                let x = self.src(st, a, *bits, out, line);
                let y = self.src(st, b, *bits, out, line);
                let v = match (op, &x, &y, sat) {
                    (_, _, _, true) => top(&[&x, &y]),
                    (I2::Add, Val::P(p), Val::P(q), _) => p.add(q).map_or(Val::Top(false), Val::P),
                    (I2::Sub, Val::P(p), Val::P(q), _) => p.sub(q).map_or(Val::Top(false), Val::P),
                    (I2::Add, Val::Win, Val::P(_), _)
                    | (I2::Add, Val::P(_), Val::Win, _)
                    | (I2::Sub, Val::Win, Val::P(_), _) => Val::Win,
                    (I2::Add, Val::Glob(k), Val::P(_), _)
                    | (I2::Add, Val::P(_), Val::Glob(k), _)
                    | (I2::Sub, Val::Glob(k), Val::P(_), _) => Val::Glob(*k),
                    (I2::MulLo, Val::P(p), Val::P(q), _) => {
                        p.mul(q).map_or(Val::Top(false), Val::P)
                    }
                    (I2::MulWide, Val::P(p), Val::P(q), _) => {
                        narrow(out, &x, *signed);
                        narrow(out, &y, *signed);
                        p.mul(q).map_or(Val::Top(false), Val::P)
                    }
                    (I2::Shl, Val::P(p), Val::P(q), _) if matches!(q.as_const(), Some(0..=62)) => {
                        let c = q.as_const().unwrap_or(0);
                        p.scale(1 << c).map_or(Val::Top(false), Val::P)
                    }
                    (_, Val::P(p), Val::P(q), _) if p.uniform() && q.uniform() => {
                        let u = match op {
                            I2::Div => Some(UOp::Div),
                            I2::Rem => Some(UOp::Rem),
                            I2::Shr => Some(UOp::Shr),
                            I2::Shl => Some(UOp::Shl),
                            I2::And => Some(UOp::And),
                            I2::Or => Some(UOp::Or),
                            I2::Xor => Some(UOp::Xor),
                            I2::Min => Some(UOp::Min),
                            I2::Max => Some(UOp::Max),
                            I2::MulHi => Some(UOp::MulHi),
                            _ => None,
                        };
                        match u {
                            Some(u) => {
                                self.uniform(u, *bits, *signed, vec![p.clone(), q.clone()], line)
                            }
                            None => Val::Top(false),
                        }
                    }
                    (I2::Shr, Val::P(p), Val::P(q), _) if q.as_const().is_some() => {
                        let c = q.as_const().unwrap_or(0);
                        self.shr(p, c, *bits, *signed, out, line)
                    }
                    (I2::And, Val::P(p), Val::P(q), _)
                        if p.as_const() == Some(0) || q.as_const() == Some(0) =>
                    {
                        Val::P(Poly::default())
                    }
                    (I2::Or | I2::Xor, Val::P(p), v, _) | (I2::Or | I2::Xor, v, Val::P(p), _)
                        if p.as_const() == Some(0) =>
                    {
                        v.clone()
                    }
                    _ => top(&[&x, &y]),
                };
                self.set(st, *d, v, g);
            }
            Op::Int1 {
                op: I1::Neg,
                bits,
                d,
                a,
                ..
            } => {
                let v = match self.src(st, a, *bits, out, line) {
                    Val::P(p) => p.scale(-1).map_or(Val::Top(false), Val::P),
                    x => top(&[&x]),
                };
                self.set(st, *d, v, g);
            }
            Op::Int1 {
                op: op @ (I1::Not | I1::Abs),
                bits,
                d,
                a,
                ..
            } => {
                let (u, signed) = if *op == I1::Not {
                    (UOp::Not, false)
                } else {
                    (UOp::Abs, true)
                };
                let v = match self.src(st, a, *bits, out, line) {
                    Val::P(p) => self.uniform(u, *bits, signed, vec![p], line),
                    x => top(&[&x]),
                };
                self.set(st, *d, v, g);
            }
            Op::Int3 {
                op,
                bits,
                signed,
                d,
                a,
                b,
                c,
            } => {
                let x = self.src(st, a, *bits, out, line);
                let y = self.src(st, b, *bits, out, line);
                let cb = if *op == I3::MadWide { 2 * bits } else { *bits };
                let z = self.src(st, c, cb, out, line);
                let v = match (op, &x, &y, &z) {
                    (I3::MadLo | I3::MadWide, Val::P(p), Val::P(q), zz) => {
                        if *op == I3::MadWide {
                            narrow(out, &x, *signed);
                            narrow(out, &y, *signed);
                        }
                        match (p.mul(q), zz) {
                            (Some(pq), Val::P(r)) => pq.add(r).map_or(Val::Top(false), Val::P),
                            (Some(pq), Val::Win) if pq.as_const().is_some() => Val::Win,
                            (Some(_), Val::Glob(k)) => Val::Glob(*k),
                            _ => top(&[&x, &y, &z]),
                        }
                    }
                    _ => top(&[&x, &y, &z]),
                };
                self.set(st, *d, v, g);
            }
            Op::Cvt { to, from, d, a, .. } => {
                let x = self.src(st, a, from.bits(), out, line);
                let v = if to.float() || from.float() || *to == Ty::Pred || *from == Ty::Pred {
                    top(&[&x])
                } else {
                    match &x {
                        Val::P(p) if to.bits() > from.bits() && p.uniform() => self.uniform(
                            UOp::Ext { from: from.bits() },
                            to.bits(),
                            from.signed(),
                            vec![p.clone()],
                            line,
                        ),
                        _ => {
                            if from.bits() <= 32 && to.bits() > from.bits() {
                                narrow(out, &x, from.signed());
                            }
                            x
                        }
                    }
                };
                self.set(st, *d, v, g);
            }
            Op::Cvta {
                space, d, a, bits, ..
            } => {
                let x = self.src(st, a, *bits, out, line);
                let v = match space {
                    Space::Global | Space::Const | Space::Generic => x,
                    _ => Val::Win,
                };
                self.set(st, *d, v, g);
            }
            Op::Selp {
                d, a, b, mask, p, ..
            } => {
                let bits = 64 - mask.leading_zeros().min(63);
                let x = self.src(st, a, bits, out, line);
                let y = self.src(st, b, bits, out, line);
                let c = self.pred(st, p).and_then(|c| c.single());
                let v = match (&x, &y, c) {
                    _ if x == y => x.clone(),
                    (Val::P(px), Val::P(py), Some(c)) => self.uniform(
                        UOp::Sel {
                            rel: c.rel,
                            unsigned: c.unsigned,
                            bits: c.bits,
                        },
                        bits,
                        false,
                        vec![c.a, c.b, px.clone(), py.clone()],
                        line,
                    ),
                    _ => x.join(&y),
                };
                self.set(st, *d, v, g);
            }
            Op::Setp {
                cmp,
                ty,
                p,
                q,
                a,
                b,
                comb,
                ..
            } => {
                let x = self.src(st, a, ty.bits(), out, line);
                let y = self.src(st, b, ty.bits(), out, line);
                // A uniform operand is compared as the register reads (signed or not), not
                // as whichever representative its polynomial holds.
                let exact = |p: Poly, unsigned: bool| -> Option<Poly> {
                    if p.as_const().is_some() || !p.uniform() {
                        return Some(p);
                    }
                    let bits = ty.bits();
                    match self.uniform(UOp::Ext { from: bits }, bits, !unsigned, vec![p], line) {
                        Val::P(q) => Some(q),
                        _ => None,
                    }
                };
                let c = match (rel_of(*cmp, *ty), x, y) {
                    (Some((rel, unsigned)), Val::P(a), Val::P(b)) => {
                        match (exact(a, unsigned), exact(b, unsigned)) {
                            (Some(a), Some(b)) => Some(PredV::one(Cond {
                                rel,
                                unsigned,
                                a,
                                b,
                                bits: ty.bits(),
                            })),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let nc = c.as_ref().map(PredV::negate);
                let (c, nc) = match comb {
                    None => (c, nc),
                    Some((op, ps)) => {
                        let other = self.pred(st, ps);
                        let f = |c: Option<PredV>| {
                            c.zip(other.clone()).and_then(|(c, o)| c.comb(*op, &o))
                        };
                        (f(c), f(nc))
                    }
                };
                self.set_pred(st, *p, c, g);
                if *q != SINK {
                    self.set_pred(st, *q, nc, g);
                }
            }
            Op::PredNot { d, a } => {
                let c = self.pred(st, a).map(|c| c.negate());
                self.set_pred(st, *d, c, g);
            }
            Op::Ld {
                space,
                size,
                n,
                ds,
                addr,
                ..
            } => {
                let base = self.src(st, &addr.base, 64, out, line);
                let pw = match (&base, space) {
                    (Val::P(p), Space::Param | Space::Generic) => p
                        .as_const()
                        .map(|c| (c as u64).wrapping_add(addr.off as u64))
                        .filter(|&a| (PARAM_WINDOW..PARAM_WINDOW + WINDOW_SIZE).contains(&a)),
                    _ => None,
                };
                if let Some(a) = pw {
                    let off = (a - PARAM_WINDOW) as u32;
                    for (k, d) in ds.iter().enumerate() {
                        let v = if *size <= 8 {
                            Val::P(Poly::atom(Atom::Param {
                                offset: off + k as u32 * size,
                                size: *size,
                            }))
                        } else {
                            Val::Top(false)
                        };
                        self.set(st, *d, v, g);
                    }
                } else {
                    let total = (*size * *n) as u64;
                    self.access(st, *space, addr, total, false, false, line, out);
                    for d in ds {
                        self.set(st, *d, Val::Top(*space != Space::Param), g);
                    }
                }
            }
            Op::St {
                space,
                size,
                n,
                addr,
                ..
            } => {
                let total = (*size * *n) as u64;
                self.access(st, *space, addr, total, true, false, line, out);
            }
            Op::Atom {
                space, ty, d, addr, ..
            } => {
                self.access(st, *space, addr, ty.bytes() as u64, true, true, line, out);
                self.set(st, *d, Val::Top(true), g);
            }
            Op::CpAsync { size, src, .. } => {
                self.access(
                    st,
                    Space::Global,
                    src,
                    *size as u64,
                    false,
                    false,
                    line,
                    out,
                );
            }
            Op::Call { func, .. } => {
                if let Some(o) = out {
                    let name = self
                        .funcs
                        .get(*func as usize)
                        .map_or("?", |f| f.name.as_str());
                    o.refuse(format!("calls a function (`{name}`) at line {line}"));
                }
            }
            Op::CallIndirect { .. } => {
                if let Some(o) = out {
                    o.refuse(format!("calls through a function pointer at line {line}"));
                }
            }
            Op::Builtin { which, .. } => {
                if let (Some(o), Builtin::Malloc | Builtin::Free) = (out, which) {
                    o.refuse(format!("device malloc/free at line {line}"));
                }
            }
            op => {
                // Everything else: its destinations become unknown.
                for d in reg_dests(op) {
                    self.set(st, d, Val::Top(false), g);
                }
                for p in pred_dests(op) {
                    self.set_pred(st, p, None, g);
                }
            }
        }
    }

    fn initial(&self) -> State {
        State {
            regs: vec![Val::Top(false); self.nregs],
            preds: vec![None; self.npreds],
            facts: BTreeSet::new(),
            ver: BTreeMap::new(),
        }
    }
}

fn reg_dests(op: &Op) -> Vec<u32> {
    match op {
        Op::Mov { d, .. }
        | Op::Pack { d, .. }
        | Op::Int2 { d, .. }
        | Op::Int1 { d, .. }
        | Op::Int3 { d, .. }
        | Op::Bfi { d, .. }
        | Op::Carry { d, .. }
        | Op::Float2 { d, .. }
        | Op::Float1 { d, .. }
        | Op::Fma { d, .. }
        | Op::CvtPack { d, .. }
        | Op::Cvt { d, .. }
        | Op::Set { d, .. }
        | Op::Selp { d, .. }
        | Op::Atom { d, .. }
        | Op::Shfl { d, .. }
        | Op::Vote { d, .. }
        | Op::Activemask { d }
        | Op::Match { d, .. }
        | Op::Redux { d, .. }
        | Op::Cvta { d, .. }
        | Op::Bar { d, .. } => vec![*d],
        Op::Unpack { ds, .. } | Op::Ld { ds, .. } => ds.clone(),
        _ => Vec::new(),
    }
}

fn pred_dests(op: &Op) -> Vec<u32> {
    match op {
        Op::Setp { p, q, .. } => vec![*p, *q],
        Op::PredLogic { d, .. } | Op::PredNot { d, .. } | Op::MovPred { d, .. } => vec![*d],
        Op::Shfl { p, .. } | Op::Match { p, .. } => vec![*p],
        Op::Isspacep { p, .. } | Op::Testp { p, .. } => vec![*p],
        Op::Vote { d, .. } => vec![*d],
        Op::Bar {
            p: PSrc::Reg(p, _), ..
        } => vec![*p],
        _ => Vec::new(),
    }
}

/// Runs the interpretation of kernel `kernel` (an index into `funcs`); `Err` is the reason it
/// cannot be split.
pub fn interpret(
    code: &[Inst],
    funcs: &[Func],
    kernel: u32,
    is_const: &dyn Fn(u32) -> bool,
) -> Result<Raw, String> {
    let f = funcs
        .get(kernel as usize)
        .ok_or_else(|| "no such kernel".to_string())?;
    let (start, end) = body(code, funcs, kernel as usize).ok_or("kernel has no body")?;
    let it = Interp {
        funcs,
        is_const,
        nregs: f.nregs as usize,
        npreds: f.npreds as usize,
        uni: RefCell::new(Vec::new()),
    };
    let g = cfg(code, start, end);
    let nb = g.blocks.len();
    let mut outs: Vec<Option<State>> = vec![None; nb];
    let mut ins: Vec<Option<State>> = vec![None; nb];
    let mut status: BTreeMap<(usize, u32), Status> = BTreeMap::new();
    let mut version: BTreeMap<usize, u32> = BTreeMap::new();
    let mut work: BTreeSet<usize> = BTreeSet::new();
    work.insert(0);
    let mut visits = 0u64;
    // Out-state along edge k -> t: the branch condition as a fact.
    let edge = |outs: &[Option<State>], k: usize, t: usize| -> Option<State> {
        let mut s = outs[k].clone()?;
        let (_, e) = g.blocks[k];
        let last = &code[e - 1];
        if let (Op::Bra { target }, Some((p, neg))) = (&last.op, last.guard) {
            if let Some(Some(c)) = s.preds.get(p as usize).cloned() {
                if *target as usize != e {
                    let taken = g.blocks[t].0 == *target as usize;
                    let holds = taken != neg;
                    let c = if holds { c } else { c.negate() };
                    for f in c.facts() {
                        s.add_fact(Some(f));
                    }
                }
            }
        }
        Some(s)
    };
    while let Some(k) = work.pop_first() {
        visits += 1;
        if visits > 200_000 {
            return Err("the analysis did not converge".into());
        }
        // In-state.
        let new_in = if k == 0 {
            Some(it.initial())
        } else if g.headers.contains_key(&k) {
            let h = g.blocks[k].0 as u32;
            let la = Atom::Loop(h);
            let mut entry: Option<State> = None;
            let mut back: Option<State> = None;
            for &p in &g.preds[k] {
                let Some(s) = edge(&outs, p, k) else { continue };
                let slot = if p >= k { &mut back } else { &mut entry };
                *slot = Some(match slot.take() {
                    Some(x) => x.join(&s),
                    None => s,
                });
            }
            let cur = *version.get(&k).unwrap_or(&0);
            let back = back.filter(|b| b.ver.get(&h) == Some(&cur));
            entry.map(|e| {
                let mut st = e.clone();
                for r in 0..it.nregs {
                    let ev = match &e.regs[r] {
                        v if v.mentions(la) => Val::Top(false),
                        v => v.clone(),
                    };
                    let key = (k, r as u32);
                    let stt = status.get(&key).cloned().unwrap_or(Status::Inv);
                    let v = match (stt, &ev, back.as_ref().map(|b| &b.regs[r])) {
                        (Status::Inv, _, None) => ev.clone(),
                        (Status::Inv, _, Some(bv)) if *bv == ev => ev.clone(),
                        (Status::Inv, Val::P(x), Some(Val::P(y))) => {
                            match y.sub(x).filter(|d| !d.mentions(la)) {
                                Some(d) => {
                                    status.insert(key, Status::Iv(d.clone()));
                                    Poly::atom(la)
                                        .mul(&d)
                                        .and_then(|ld| ld.add(x))
                                        .map_or(Val::Top(false), Val::P)
                                }
                                None => {
                                    status.insert(key, Status::Top);
                                    Val::Top(false)
                                }
                            }
                        }
                        (Status::Iv(d), Val::P(x), bv) => {
                            let v = Poly::atom(la).mul(&d).and_then(|ld| ld.add(x));
                            let ok = match (&v, bv) {
                                (Some(v), Some(Val::P(y))) => v.add(&d).as_ref() == Some(y),
                                (Some(_), None) => true,
                                _ => false,
                            };
                            if ok {
                                Val::P(v.unwrap_or_default())
                            } else {
                                status.insert(key, Status::Top);
                                Val::Top(bv.is_some_and(Val::mem))
                            }
                        }
                        (Status::Inv, _, Some(bv)) => {
                            if !matches!((&ev, bv), (Val::Win, Val::Win))
                                && !matches!((&ev, bv), (Val::Glob(a), Val::Glob(b)) if a == b)
                            {
                                status.insert(key, Status::Top);
                            }
                            ev.join(bv)
                        }
                        (_, _, bv) => {
                            status.insert(key, Status::Top);
                            Val::Top(ev.mem() || bv.is_some_and(Val::mem))
                        }
                    };
                    st.regs[r] = v;
                }
                for (p, c) in st.preds.iter_mut().enumerate() {
                    let keep = c.as_ref().is_some_and(|c| {
                        !c.mentions(la)
                            && back.as_ref().is_none_or(|b| b.preds[p].as_ref() == Some(c))
                    });
                    if !keep {
                        *c = None;
                    }
                }
                let mut facts: BTreeSet<Fact> = e
                    .facts
                    .iter()
                    .filter(|f| !f.e.mentions(la) && !f.b.mentions(la))
                    .filter(|f| back.as_ref().is_none_or(|b| b.facts.contains(f)))
                    .cloned()
                    .collect();
                if let Some(b) = &back {
                    for r in 0..it.nregs {
                        let (Val::P(x), Val::P(y), Val::P(v)) =
                            (&e.regs[r], &b.regs[r], &st.regs[r])
                        else {
                            continue;
                        };
                        if x == v {
                            continue;
                        }
                        for f in &e.facts {
                            if f.e == *x && !f.b.mentions(la) {
                                let lifted = Fact {
                                    e: y.clone(),
                                    ..f.clone()
                                };
                                if b.facts.contains(&lifted) && facts.len() < MAX_FACTS {
                                    facts.insert(Fact {
                                        e: v.clone(),
                                        ..f.clone()
                                    });
                                }
                            }
                        }
                    }
                }
                st.facts = facts;
                st.ver.insert(h, cur);
                st
            })
        } else {
            let mut acc: Option<State> = None;
            for &p in &g.preds[k] {
                if let Some(s) = edge(&outs, p, k) {
                    acc = Some(match acc {
                        Some(a) => a.join(&s),
                        None => s,
                    });
                }
            }
            acc
        };
        let Some(mut new_in) = new_in else { continue };
        if g.headers.contains_key(&k) {
            let h = g.blocks[k].0 as u32;
            if ins[k].as_ref().is_some_and(|old| {
                let mut o = old.clone();
                o.ver = new_in.ver.clone();
                o != new_in
            }) {
                let v = version.entry(k).or_insert(0);
                *v += 1;
                new_in.ver.insert(h, *v);
            }
        }
        if ins[k].as_ref() == Some(&new_in) && outs[k].is_some() {
            continue;
        }
        let mut st = new_in.clone();
        ins[k] = Some(new_in);
        let (s, e) = g.blocks[k];
        for inst in &code[s..e] {
            it.step(&mut st, inst, &mut None);
        }
        if outs[k].as_ref() != Some(&st) {
            outs[k] = Some(st);
            work.extend(g.succs[k].iter().copied());
        }
    }
    // Final pass: collect accesses and reasons from the fixpoint.
    let mut out = Out::default();
    #[allow(clippy::needless_range_loop)]
    for k in 0..nb {
        let Some(mut st) = ins[k].clone() else {
            continue;
        };
        let (s, e) = g.blocks[k];
        for inst in &code[s..e] {
            it.step(&mut st, inst, &mut Some(&mut out));
        }
    }
    if let Some(r) = out.reason {
        return Err(r);
    }
    // Loop bounds.
    let mut loops = Vec::new();
    for (&hk, &latch) in &g.headers {
        let h = g.blocks[hk].0 as u32;
        let la = Atom::Loop(h);
        let lend = g.blocks[latch].1;
        let backs: Vec<usize> = g.preds[hk].iter().copied().filter(|&p| p >= hk).collect();
        let cond_at = |k: usize| -> Option<(Cond, u32, bool)> {
            let last = &code[g.blocks[k].1 - 1];
            let (Op::Bra { target }, Some((p, neg))) = (&last.op, last.guard) else {
                return None;
            };
            let c = outs[k].as_ref()?.preds.get(p as usize)?.clone()?.single()?;
            Some((c, *target, neg))
        };
        let mut cont = None;
        if let [b] = backs[..] {
            if let Some((c, target, neg)) = cond_at(b) {
                if target == h {
                    cont = Some(if neg { c.negate() } else { c });
                }
            }
        }
        if cont.is_none() {
            if let Some((c, target, neg)) = cond_at(hk) {
                let t = target as usize;
                if t < h as usize || t >= lend {
                    cont = Some(if neg { c } else { c.negate() });
                }
            }
        }
        let bound = cont.and_then(|c| {
            let (rel, e, b) = match (c.a.mentions(la), c.b.mentions(la)) {
                (true, false) => (c.rel, c.a, c.b),
                (false, true) => (c.rel.swap(), c.b, c.a),
                _ => return None,
            };
            let (c0, s) = e.linear_in(la)?;
            if s.mentions(la) {
                return None;
            }
            Some(LoopBound {
                c: c0,
                s,
                rel,
                unsigned: c.unsigned,
                b,
            })
        });
        loops.push(LoopInfo { header: h, bound });
    }
    Ok(Raw {
        accesses: out.accesses,
        loops,
        narrow: out.narrow,
        uniforms: it.uni.into_inner(),
        assumes: out.assumes,
    })
}
