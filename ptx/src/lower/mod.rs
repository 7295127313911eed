//! Lowering of the syntax tree into the typed IR: names resolved (with `{ }` scopes),
//! registers numbered, labels turned into instruction indices, modifiers decoded as sets, the
//! kernel parameter and per-thread local frame layouts computed with PTX alignment rules.
//!
//! This file holds the names, scopes, layouts and operand decoding; each instruction family
//! decodes in its own file: `integer` (with the arithmetic opcodes shared with floats),
//! `float`, `compare`, `convert`, `memory`, `atomics`, `control` and `warp`.

use std::collections::HashMap;

mod atomics;
mod compare;
mod control;
mod convert;
mod float;
mod integer;
mod memory;
mod warp;

use crate::error::PtxError;
use crate::ir::*;
use crate::parser::{
    Ast, FuncDecl, Init, Inst as PInst, Item, Lit, Mod, Opcode, Opnd, Stmt, VarDecl,
};

/// Where a module variable lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalSpace {
    Global,
    Const,
}

/// A module-scope `.global` or `.const` variable, placed in device memory at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    pub name: String,
    pub size: u64,
    pub align: u32,
    /// Initial bytes (zero-filled when the variable has no initialiser).
    pub init: Vec<u8>,
    pub space: GlobalSpace,
}

/// An initialiser that stores the address of another global: (global, offset, target, addend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloc {
    pub global: u32,
    pub offset: u64,
    pub target: u32,
    pub addend: i64,
    pub size: u32,
}

#[derive(Debug, Default)]
pub struct Lowered {
    pub code: Vec<Inst>,
    pub funcs: Vec<Func>,
    pub globals: Vec<GlobalInfo>,
    pub relocs: Vec<Reloc>,
    /// Static `.shared` variables (size, alignment); each kernel lays out the ones it uses.
    pub shared_vars: Vec<(u32, u32)>,
    /// Largest alignment asked of dynamic shared memory.
    pub dyn_align: u32,
    /// Functions whose address is taken (used as a value or in an initialiser).
    pub address_taken: Vec<u32>,
}

/// Largest variable the loader accepts (a bound, so hostile input cannot exhaust memory).
const MAX_VAR: u64 = 1 << 30;

#[derive(Debug, Clone, Copy)]
enum Sym {
    Reg(u32, Ty),
    Pred(u32),
    /// Frame-relative local offset and size (`.local` variables, `.func` and call-site params).
    Local(u32, u32),
    KParam(u32),
    Shared(u32),
    DynShared,
    Global(u32),
    Func(u32),
}

pub fn lower(ast: &Ast) -> Result<Lowered, PtxError> {
    let mut out = Lowered::default();
    let mut module: HashMap<String, Sym> = HashMap::new();
    let mut pending = Vec::new();
    // Module-scope variables and function names first: bodies may refer to later items.
    for item in &ast.items {
        match item {
            Item::Var(v) => {
                let sym = module_var(v, &mut out, &mut pending)?;
                module.insert(v.name.clone(), sym);
            }
            Item::Func(f) => {
                if let Some(Sym::Func(idx)) = module.get(&f.name) {
                    // A prototype followed by the definition: keep the index.
                    let idx = *idx as usize;
                    if f.body.is_some() {
                        if let Some(slot) = out.funcs.get_mut(idx) {
                            slot.line = f.line;
                        }
                    }
                    continue;
                }
                let idx = out.funcs.len() as u32;
                let builtin = match f.name.as_str() {
                    "vprintf" => Some(Builtin::Vprintf),
                    "__assertfail" | "__assert_fail" => Some(Builtin::AssertFail),
                    "malloc" => Some(Builtin::Malloc),
                    "free" => Some(Builtin::Free),
                    _ => None,
                };
                out.funcs.push(Func {
                    name: f.name.clone(),
                    kernel: f.kernel,
                    entry: None,
                    nregs: 0,
                    npreds: 0,
                    local_bytes: 0,
                    params: Vec::new(),
                    rets: Vec::new(),
                    kparams: Vec::new(),
                    callees: Vec::new(),
                    calls_indirect: false,
                    shared_used: Vec::new(),
                    max_threads: f.max_threads,
                    builtin,
                    line: f.line,
                });
                module.insert(f.name.clone(), Sym::Func(idx));
            }
        }
    }
    for (global, offset, name, addend, size) in pending {
        if let Some(Sym::Func(f)) = module.get(&name).copied() {
            // A function pointer in an initialiser (a table of functions): a constant.
            let v = func_addr(f).wrapping_add(addend as u64).to_le_bytes();
            let slot = out.globals.get_mut(global as usize).and_then(|g| {
                g.init
                    .get_mut(offset as usize..offset as usize + (size as usize).min(8))
            });
            if let Some(slot) = slot {
                let n = slot.len();
                slot.copy_from_slice(&v[..n]);
            }
            out.address_taken.push(f);
            continue;
        }
        let Some(Sym::Global(target)) = module.get(&name).copied() else {
            return Err(PtxError::unsupported(
                0,
                format!("initialiser referring to `{name}`"),
            ));
        };
        out.relocs.push(Reloc {
            global,
            offset,
            target,
            addend,
            size,
        });
    }
    let chosen = chosen_definitions(ast)?;
    for (k, item) in ast.items.iter().enumerate() {
        if let Item::Func(f) = item {
            let Some(Sym::Func(idx)) = module.get(&f.name).copied() else {
                continue;
            };
            if f.body.is_some() && chosen.get(f.name.as_str()) != Some(&k) {
                continue;
            }
            let mut l = FnLower::new(&module, &mut out, f, idx)?;
            l.run(f)?;
        }
    }
    // Any function whose address is taken (and that has a body) may be the target of an
    // indirect call: frames are laid out for all of them.
    let mut taken = std::mem::take(&mut out.address_taken);
    taken.sort_unstable();
    taken.dedup();
    taken.retain(|&f| out.funcs.get(f as usize).is_some_and(|x| x.entry.is_some()));
    for func in out.funcs.iter_mut().filter(|f| f.calls_indirect) {
        func.callees.extend_from_slice(&taken);
        func.callees.sort_unstable();
        func.callees.dedup();
    }
    out.address_taken = taken;
    out.dyn_align = out.dyn_align.max(16);
    Ok(out)
}

/// A function's address as a value.
fn func_addr(f: u32) -> u64 {
    FUNC_WINDOW + f as u64 * FUNC_STRIDE
}

/// The item index of the definition each function name keeps. Linked PTX (the shim joins
/// `cuLink` inputs into one module) may define a `.weak` function several times, as numba
/// does for a device function called from two places; as the linker does, a non-weak
/// definition wins, else the first weak one. Two non-weak definitions are an error.
fn chosen_definitions(ast: &Ast) -> Result<HashMap<&str, usize>, PtxError> {
    let mut chosen: HashMap<&str, (usize, bool)> = HashMap::new();
    for (k, item) in ast.items.iter().enumerate() {
        let Item::Func(f) = item else { continue };
        if f.body.is_none() {
            continue;
        }
        match chosen.get(f.name.as_str()) {
            None => {
                chosen.insert(&f.name, (k, f.weak));
            }
            Some(&(_, true)) if !f.weak => {
                chosen.insert(&f.name, (k, false));
            }
            Some(&(_, false)) if !f.weak => {
                return Err(PtxError::ptx(
                    f.line,
                    format!(
                        "function `{}` defined twice (neither definition is .weak)",
                        f.name
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(chosen.into_iter().map(|(n, (k, _))| (n, k)).collect())
}

fn decl_size(v: &VarDecl) -> Result<(u64, u32, Ty), PtxError> {
    if matches!(v.ty.as_str(), "texref" | "samplerref" | "surfref") {
        return Err(PtxError::unsupported(
            v.line,
            format!(".{} `{}`", v.ty, v.name),
        ));
    }
    let ty = Ty::parse(&v.ty).ok_or_else(|| {
        PtxError::ptx(v.line, format!("unknown type `.{}` of `{}`", v.ty, v.name))
    })?;
    let elem = (ty.bytes().max(1) as u64) * v.vector as u64;
    let mut n = 1u64;
    for d in &v.dims {
        n = n
            .checked_mul(d.unwrap_or(0))
            .ok_or_else(|| PtxError::ptx(v.line, "array too large"))?;
    }
    let size = elem.checked_mul(n).filter(|&s| s <= MAX_VAR);
    let size = size.ok_or_else(|| PtxError::ptx(v.line, format!("`{}` is too large", v.name)))?;
    let align = v.align.unwrap_or(elem as u32).max(1);
    if !align.is_power_of_two() {
        return Err(PtxError::ptx(
            v.line,
            format!("alignment {align} is not a power of two"),
        ));
    }
    Ok((size, align, ty))
}

fn module_var(
    v: &VarDecl,
    out: &mut Lowered,
    pending: &mut Vec<(u32, u64, String, i64, u32)>,
) -> Result<Sym, PtxError> {
    let (mut size, align, ty) = decl_size(v)?;
    match v.space.as_str() {
        "shared" => {
            if v.dims.iter().any(|d| d.is_none()) || v.is_extern {
                // Dynamic shared memory: placed after the kernel's static part; all alias.
                out.dyn_align = out.dyn_align.max(align.min(1 << 12));
                return Ok(Sym::DynShared);
            }
            out.shared_vars.push((size as u32, align.min(1 << 12)));
            Ok(Sym::Shared(out.shared_vars.len() as u32 - 1))
        }
        "global" | "const" => {
            let idx = out.globals.len() as u32;
            if v.dims.iter().any(|d| d.is_none()) {
                // `.global .u8 x[] = {...}`: size from the initialiser.
                if let Some(Init::List(items)) = &v.init {
                    size = (items.len() as u64) * (ty.bytes().max(1) as u64);
                }
            }
            let mut init = vec![0u8; size as usize];
            let mut relocs = Vec::new();
            if let Some(i) = &v.init {
                let mut pos = 0u64;
                fill_init(i, ty, &mut init, &mut pos, &mut relocs, v.line)?;
            }
            for (offset, name, addend) in relocs {
                pending.push((idx, offset, name, addend, ty.bytes()));
            }
            out.globals.push(GlobalInfo {
                name: v.name.clone(),
                size,
                align,
                init,
                space: if v.space == "const" {
                    GlobalSpace::Const
                } else {
                    GlobalSpace::Global
                },
            });
            Ok(Sym::Global(idx))
        }
        other => Err(PtxError::unsupported(
            v.line,
            format!(".{other} variable `{}` at module scope", v.name),
        )),
    }
}

fn fill_init(
    i: &Init,
    ty: Ty,
    buf: &mut [u8],
    pos: &mut u64,
    relocs: &mut Vec<(u64, String, i64)>,
    line: u32,
) -> Result<(), PtxError> {
    match i {
        Init::List(items) => {
            for it in items {
                fill_init(it, ty, buf, pos, relocs, line)?;
            }
        }
        Init::Lit(l) => {
            let n = ty.bytes().max(1) as u64;
            let v = lit_bits(*l, ty);
            let start = *pos as usize;
            let bytes = v.to_le_bytes();
            let end = start.checked_add(n as usize).filter(|&e| e <= buf.len());
            end.ok_or_else(|| PtxError::ptx(line, "too many initialisers"))?;
            let k = (n as usize).min(8);
            buf[start..start + k].copy_from_slice(&bytes[..k]);
            *pos += n;
        }
        Init::Sym(name, off) => {
            relocs.push((*pos, name.clone(), *off));
            *pos += ty.bytes().max(1) as u64;
        }
    }
    Ok(())
}

/// The bits of a constant as a value of type `ty`.
pub fn lit_bits(l: Lit, ty: Ty) -> u64 {
    let as_f64 = |l: Lit| match l {
        Lit::Int(v) => v as i64 as f64,
        Lit::F32(b) => f32::from_bits(b) as f64,
        Lit::F64(b) => f64::from_bits(b),
        Lit::Float(v) => v,
    };
    let v = match ty {
        Ty::F32 => match l {
            Lit::F32(b) => b as u64,
            Lit::Int(v) => v & 0xFFFF_FFFF,
            _ => (as_f64(l) as f32).to_bits() as u64,
        },
        Ty::F64 => match l {
            Lit::F64(b) => b,
            Lit::Int(v) => v,
            _ => as_f64(l).to_bits(),
        },
        Ty::F16 => match l {
            Lit::Int(v) => v & 0xFFFF,
            _ => half::f16::from_f64(as_f64(l)).to_bits() as u64,
        },
        Ty::BF16 => match l {
            Lit::Int(v) => v & 0xFFFF,
            _ => half::bf16::from_f64(as_f64(l)).to_bits() as u64,
        },
        _ => match l {
            Lit::Int(v) => v,
            Lit::F32(b) => b as u64,
            Lit::F64(b) => b,
            Lit::Float(v) => v as i64 as u64,
        },
    };
    let bits = ty.bits();
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

struct FnLower<'a> {
    module: &'a HashMap<String, Sym>,
    out: &'a mut Lowered,
    idx: u32,
    kernel: bool,
    scopes: Vec<HashMap<String, Sym>>,
    /// Labels per `{ }` scope (inline asm may reuse a name in each of its scopes).
    labels: HashMap<(u32, String), u32>,
    scope_parent: Vec<u32>,
    scope_ids: Vec<u32>,
    next_scope: u32,
    nregs: u32,
    npreds: u32,
    local: u64,
    callees: Vec<u32>,
    calls_indirect: bool,
    shared_used: std::cell::RefCell<Vec<u32>>,
    address_taken: std::cell::RefCell<Vec<u32>>,
    line: u32,
}

impl<'a> FnLower<'a> {
    fn new(
        module: &'a HashMap<String, Sym>,
        out: &'a mut Lowered,
        f: &FuncDecl,
        idx: u32,
    ) -> Result<Self, PtxError> {
        Ok(FnLower {
            module,
            out,
            idx,
            kernel: f.kernel,
            scopes: vec![HashMap::new()],
            labels: HashMap::new(),
            scope_parent: vec![0],
            scope_ids: vec![0],
            next_scope: 1,
            nregs: 0,
            npreds: 0,
            local: 0,
            callees: Vec::new(),
            calls_indirect: false,
            shared_used: std::cell::RefCell::new(Vec::new()),
            address_taken: std::cell::RefCell::new(Vec::new()),
            line: f.line,
        })
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PtxError> {
        Err(PtxError::ptx(self.line, msg))
    }

    fn local_slot(&mut self, v: &VarDecl) -> Result<(u32, u32), PtxError> {
        let (size, align, _) = decl_size(v)?;
        let off = self.local.next_multiple_of(align as u64);
        self.local = off + size;
        if self.local > MAX_VAR {
            return self.err("local frame too large");
        }
        Ok((off as u32, size as u32))
    }

    fn run(&mut self, f: &FuncDecl) -> Result<(), PtxError> {
        // Parameters.
        let mut kparams = Vec::new();
        let mut params = Vec::new();
        let mut rets = Vec::new();
        let mut koff = 0u64;
        for p in &f.params {
            if f.kernel {
                let (size, align, _) = decl_size(p)?;
                let off = koff.next_multiple_of(align as u64);
                koff = off + size;
                if koff > 1 << 20 {
                    return Err(PtxError::ptx(p.line, "kernel parameters too large"));
                }
                kparams.push((off as u32, size as u32));
                self.scopes[0].insert(p.name.clone(), Sym::KParam(off as u32));
            } else {
                let (off, size) = self.local_slot(p)?;
                params.push((off, size));
                self.scopes[0].insert(p.name.clone(), Sym::Local(off, size));
            }
        }
        for r in &f.rets {
            let (off, size) = self.local_slot(r)?;
            rets.push((off, size));
            self.scopes[0].insert(r.name.clone(), Sym::Local(off, size));
        }
        {
            let func = &mut self.out.funcs[self.idx as usize];
            func.kparams = kparams;
            func.params = params;
            func.rets = rets;
        }
        let Some(body) = &f.body else { return Ok(()) };
        let entry = self.out.code.len() as u32;
        // Labels first: instruction i of the body is at entry + i.
        let mut n = 0u32;
        let mut stack = vec![0u32];
        for s in body {
            match s {
                Stmt::Inst(_) => n += 1,
                Stmt::Label(l) => {
                    let scope = *stack.last().unwrap_or(&0);
                    self.labels.insert((scope, l.clone()), entry + n);
                }
                Stmt::Open => {
                    let id = self.scope_parent.len() as u32;
                    self.scope_parent.push(*stack.last().unwrap_or(&0));
                    stack.push(id);
                }
                Stmt::Close => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                }
                Stmt::Decl(_) => {}
            }
        }
        let has_ret_at_end = matches!(body.iter().rev().find(|s| matches!(s, Stmt::Inst(_))),
            Some(Stmt::Inst(i)) if i.opcode == Opcode::Ret || i.opcode == Opcode::Exit || (i.opcode == Opcode::Bra && i.guard.is_none()));
        for s in body {
            match s {
                Stmt::Open => {
                    self.scopes.push(HashMap::new());
                    self.scope_ids.push(self.next_scope);
                    self.next_scope += 1;
                }
                Stmt::Close => {
                    if self.scopes.len() > 1 {
                        self.scopes.pop();
                        self.scope_ids.pop();
                    }
                }
                Stmt::Label(_) => {}
                Stmt::Decl(v) => self.decl(v)?,
                Stmt::Inst(i) => {
                    self.line = i.line;
                    let op = self.inst(i)?;
                    let guard = match &i.guard {
                        None => None,
                        Some((p, neg)) => Some((self.pred(p)?, *neg)),
                    };
                    self.out.code.push(Inst {
                        op,
                        guard,
                        line: i.line,
                    });
                }
            }
        }
        if !has_ret_at_end {
            // Falling off the end returns.
            self.out.code.push(Inst {
                op: Op::Ret,
                guard: None,
                line: self.line,
            });
        }
        let local = u32::try_from(self.local)
            .map_err(|_| PtxError::ptx(f.line, "local frame too large"))?;
        let func = &mut self.out.funcs[self.idx as usize];
        func.entry = Some(entry);
        func.nregs = self.nregs;
        func.npreds = self.npreds;
        func.local_bytes = local;
        self.callees.sort_unstable();
        self.callees.dedup();
        func.callees = std::mem::take(&mut self.callees);
        func.calls_indirect = self.calls_indirect;
        let mut used = self.shared_used.take();
        used.sort_unstable();
        used.dedup();
        func.shared_used = used;
        self.out.address_taken.extend(self.address_taken.take());
        Ok(())
    }

    fn decl(&mut self, v: &VarDecl) -> Result<(), PtxError> {
        self.line = v.line;
        let scope = self.scopes.len() - 1;
        match v.space.as_str() {
            "reg" => {
                let ty = Ty::parse(&v.ty).ok_or_else(|| {
                    PtxError::ptx(v.line, format!("unknown register type `.{}`", v.ty))
                })?;
                let names: Vec<String> = match v.range {
                    Some(n) if n > 1 << 20 => return self.err("register range too large"),
                    Some(n) => (0..n).map(|i| format!("{}{}", v.name, i)).collect(),
                    None => vec![v.name.clone()],
                };
                for name in names {
                    let sym = if ty == Ty::Pred {
                        self.npreds += 1;
                        Sym::Pred(self.npreds - 1)
                    } else {
                        self.nregs += v.vector.max(1);
                        Sym::Reg(self.nregs - v.vector.max(1), ty)
                    };
                    self.scopes[scope].insert(name, sym);
                }
                if self.nregs > 1 << 16 || self.npreds > 1 << 16 {
                    return self.err("too many registers");
                }
            }
            "local" | "param" => {
                let (off, size) = self.local_slot(v)?;
                self.scopes[scope].insert(v.name.clone(), Sym::Local(off, size));
            }
            "shared" => {
                let (size, align, _) = decl_size(v)?;
                self.out.shared_vars.push((size as u32, align.min(1 << 12)));
                let idx = self.out.shared_vars.len() as u32 - 1;
                self.scopes[scope].insert(v.name.clone(), Sym::Shared(idx));
            }
            other => {
                return Err(PtxError::unsupported(
                    v.line,
                    format!(".{other} variable in a function"),
                ))
            }
        }
        Ok(())
    }

    fn label(&self, name: &str) -> Option<u32> {
        let mut scope = *self.scope_ids.last()?;
        // Bounded walk to the root: parents always have smaller ids.
        for _ in 0..=self.scope_parent.len() {
            if let Some(&pc) = self.labels.get(&(scope, name.to_string())) {
                return Some(pc);
            }
            if scope == 0 {
                return None;
            }
            scope = *self.scope_parent.get(scope as usize)?;
        }
        None
    }

    fn lookup(&self, name: &str) -> Option<Sym> {
        for s in self.scopes.iter().rev() {
            if let Some(x) = s.get(name) {
                return Some(*x);
            }
        }
        self.module.get(name).copied()
    }

    fn pred(&self, name: &str) -> Result<u32, PtxError> {
        match self.lookup(name) {
            Some(Sym::Pred(p)) => Ok(p),
            Some(_) => self.err(format!("`{name}` is not a predicate")),
            None => self.err(format!("undefined predicate `{name}`")),
        }
    }

    fn psrc(&self, o: &Opnd) -> Result<PSrc, PtxError> {
        match o {
            Opnd::Name(n) => Ok(PSrc::Reg(self.pred(n)?, false)),
            Opnd::Not(inner) => match self.psrc(inner)? {
                PSrc::Reg(p, neg) => Ok(PSrc::Reg(p, !neg)),
                PSrc::Imm(b) => Ok(PSrc::Imm(!b)),
            },
            Opnd::Lit(Lit::Int(v)) => Ok(PSrc::Imm(*v != 0)),
            _ => self.err("expected a predicate operand"),
        }
    }

    fn pdst(&self, o: &Opnd) -> Result<u32, PtxError> {
        match o {
            Opnd::Name(n) => self.pred(n),
            Opnd::Sink => Ok(SINK),
            _ => self.err("expected a predicate destination"),
        }
    }

    fn reg_ty(&self, o: &Opnd) -> Option<Ty> {
        match o {
            Opnd::Name(n) => match self.lookup(n) {
                Some(Sym::Reg(_, t)) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }

    fn dst(&self, o: &Opnd) -> Result<u32, PtxError> {
        match o {
            Opnd::Name(n) => match self.lookup(n) {
                Some(Sym::Reg(r, _)) => Ok(r),
                Some(_) => self.err(format!("`{n}` is not a register")),
                None => self.err(format!("undefined register `{n}`")),
            },
            Opnd::Sink => Ok(SINK),
            _ => self.err("expected a register destination"),
        }
    }

    fn sym_value(&self, n: &str, off: i64) -> Result<Src, PtxError> {
        Ok(match self.lookup(n) {
            Some(Sym::Reg(r, _)) if off == 0 => Src::Reg(r),
            Some(Sym::Global(g)) => Src::Global(g, off),
            Some(Sym::Shared(s)) => {
                self.shared_used.borrow_mut().push(s);
                Src::Shared(s, off)
            }
            Some(Sym::DynShared) if off == 0 => Src::Sreg(Sreg::DynSharedBase),
            Some(Sym::KParam(k)) => Src::Imm(PARAM_WINDOW.wrapping_add((k as i64 + off) as u64)),
            Some(Sym::Local(l, _)) => Src::Local((l as i64 + off) as u32),
            Some(Sym::Func(f)) => {
                self.address_taken.borrow_mut().push(f);
                Src::Imm(func_addr(f).wrapping_add(off as u64))
            }
            Some(_) => return self.err(format!("`{n}` cannot be used as a value")),
            None => match sreg(n) {
                Some(s) => Src::Sreg(s),
                None => return self.err(format!("undefined name `{n}`")),
            },
        })
    }

    fn src(&self, o: &Opnd, ty: Ty) -> Result<Src, PtxError> {
        match o {
            Opnd::Name(n) => self.sym_value(n, 0),
            Opnd::SymOff(n, off) => self.sym_value(n, *off),
            Opnd::Lit(l) => Ok(Src::Imm(lit_bits(*l, ty))),
            _ => self.err("expected a register or constant"),
        }
    }

    fn addr(&self, o: &Opnd) -> Result<(Addr, Option<Sym>), PtxError> {
        let Opnd::Addr { base, imm } = o else {
            return self.err("expected an address [..]");
        };
        match base {
            None => Ok((
                Addr {
                    base: Src::Imm(0),
                    off: *imm,
                },
                None,
            )),
            Some(n) => {
                let sym = self.lookup(n);
                match sym {
                    Some(Sym::Local(l, _)) => Ok((
                        Addr {
                            base: Src::Local(l),
                            off: *imm,
                        },
                        sym,
                    )),
                    _ => Ok((
                        Addr {
                            base: self.sym_value(n, 0)?,
                            off: *imm,
                        },
                        sym,
                    )),
                }
            }
        }
    }

    fn args(&self, i: &PInst, n: usize) -> Result<(), PtxError> {
        if i.args.len() != n {
            return self.err(format!(
                "`{}` takes {n} operands, found {}",
                full_name(i),
                i.args.len()
            ));
        }
        Ok(())
    }

    fn inst(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let tys: &[Ty] = &m.types;
        // `.relu` exists on half-precision fma and on cvt packing two f32 into halves.
        let halves = |t: &Ty| matches!(t, Ty::F16 | Ty::BF16 | Ty::F16x2 | Ty::BF16x2);
        let relu_ok = match i.opcode {
            Opcode::Fma => tys.len() == 1 && halves(&tys[0]),
            Opcode::Cvt => {
                matches!(tys.first(), Some(Ty::F16x2 | Ty::BF16x2)) && tys.get(1) == Some(&Ty::F32)
            }
            _ => false,
        };
        if tys.contains(&Ty::B128) || m.exotic_type || (m.has(Mod::Relu) && !relu_ok) {
            return Err(self.unsupported(i));
        }
        match i.opcode {
            Opcode::Mov | Opcode::Cvt | Opcode::Cvta | Opcode::Isspacep => self.convert(i),
            Opcode::Add
            | Opcode::Sub
            | Opcode::Mul
            | Opcode::Div
            | Opcode::Min
            | Opcode::Max
            | Opcode::Rem
            | Opcode::And
            | Opcode::Or
            | Opcode::Xor
            | Opcode::Shl
            | Opcode::Shr
            | Opcode::Copysign
            | Opcode::Mul24
            | Opcode::Mad24
            | Opcode::Addc
            | Opcode::Subc
            | Opcode::Madc
            | Opcode::Mad
            | Opcode::Fma
            | Opcode::Sad
            | Opcode::Abs
            | Opcode::Neg
            | Opcode::Not
            | Opcode::Cnot
            | Opcode::Popc
            | Opcode::Clz
            | Opcode::Brev
            | Opcode::Bfind
            | Opcode::Bfe
            | Opcode::Bfi
            | Opcode::Prmt
            | Opcode::Shf
            | Opcode::Dp4a
            | Opcode::Dp2a
            | Opcode::Lop3
            | Opcode::Slct => self.integer(i),
            Opcode::Cp | Opcode::Ld | Opcode::Ldu | Opcode::St => self.memory(i),
            Opcode::Rcp
            | Opcode::Sqrt
            | Opcode::Rsqrt
            | Opcode::Ex2
            | Opcode::Lg2
            | Opcode::Sin
            | Opcode::Cos
            | Opcode::Tanh
            | Opcode::Testp => self.float(i),
            Opcode::Selp | Opcode::Setp | Opcode::Set => self.compare(i),
            Opcode::Atom | Opcode::Red => self.atomics(i),
            Opcode::Bra
            | Opcode::Brx
            | Opcode::Call
            | Opcode::Ret
            | Opcode::Exit
            | Opcode::Trap
            | Opcode::Brkpt
            | Opcode::Membar
            | Opcode::Fence
            | Opcode::Nanosleep
            | Opcode::Pmevent
            | Opcode::Prefetch
            | Opcode::Prefetchu
            | Opcode::Discard
            | Opcode::Griddepcontrol
            | Opcode::Applypriority
            | Opcode::Createpolicy
            | Opcode::Bar
            | Opcode::Barrier => self.control(i),
            Opcode::Shfl | Opcode::Vote | Opcode::Activemask | Opcode::Match | Opcode::Redux => {
                self.warp(i)
            }
            _ => Err(self.unsupported(i)),
        }
    }

    fn need_ty(&self, i: &PInst) -> Result<Ty, PtxError> {
        i.mods
            .ty()
            .ok_or_else(|| PtxError::ptx(i.line, format!("`{}` needs a type", full_name(i))))
    }

    fn unsupported(&self, i: &PInst) -> PtxError {
        PtxError::unsupported(i.line, format!("instruction `{}`", full_name(i)))
    }
}

fn full_name(i: &PInst) -> String {
    i.text.clone()
}

fn fty(t: Ty) -> Option<FTy> {
    Some(match t {
        Ty::F16 => FTy::F16,
        Ty::BF16 => FTy::BF16,
        Ty::F32 => FTy::F32,
        Ty::F64 => FTy::F64,
        Ty::F16x2 => FTy::F16x2,
        Ty::BF16x2 => FTy::BF16x2,
        _ => return None,
    })
}

fn int_ty(bits: u32) -> Ty {
    match bits {
        8 => Ty::B8,
        16 => Ty::B16,
        32 => Ty::B32,
        _ => Ty::B64,
    }
}

#[inline]
pub fn width_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn sreg(n: &str) -> Option<Sreg> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, d)) = n.split_once('.') {
        let d = dim(d)?;
        return Some(match base {
            "%tid" => Sreg::Tid(d),
            "%ntid" => Sreg::Ntid(d),
            "%ctaid" => Sreg::Ctaid(d),
            "%nctaid" => Sreg::Nctaid(d),
            _ => return None,
        });
    }
    Some(match n {
        "%laneid" => Sreg::Laneid,
        "%warpid" => Sreg::Warpid,
        "%nwarpid" => Sreg::Nwarpid,
        "%smid" => Sreg::Smid,
        "%nsmid" => Sreg::Nsmid,
        "%gridid" => Sreg::Gridid,
        "%clock" => Sreg::Clock,
        "%clock64" => Sreg::Clock64,
        "%globaltimer" => Sreg::GlobalTimer,
        "%lanemask_eq" => Sreg::LanemaskEq,
        "%lanemask_lt" => Sreg::LanemaskLt,
        "%lanemask_le" => Sreg::LanemaskLe,
        "%lanemask_gt" => Sreg::LanemaskGt,
        "%lanemask_ge" => Sreg::LanemaskGe,
        "%dynamic_smem_size" => Sreg::DynSmem,
        "%total_smem_size" => Sreg::TotalSmem,
        _ => {
            let n: u8 = n.strip_prefix("%envreg")?.parse().ok()?;
            return (n < 32).then_some(Sreg::EnvReg(n));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_the_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../emulator/tests/ptx");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let src = std::fs::read_to_string(&p).unwrap();
            let ast = crate::parser::parse(&src).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            let l = lower(&ast).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert!(l.funcs.iter().any(|f| f.kernel), "{p:?}");
        }
    }

    #[test]
    fn unsupported_instruction_is_named() {
        let src = ".version 8.0\n.target sm_80\n.address_size 64\n.entry k()\n{\n.reg .b32 %r<4>;\n tex.1d.v4.s32.s32 {%r0,%r1,%r2,%r3}, [t, {%r0}];\n}\n";
        let ast = crate::parser::parse(src).unwrap();
        let e = lower(&ast).unwrap_err();
        assert_eq!(e.cuda_code(), 801);
        assert!(e.to_string().contains("tex.1d"), "{e}");
    }

    #[test]
    fn unknown_opcode_is_named_with_its_modifiers() {
        let src = ".version 8.0\n.target sm_80\n.address_size 64\n.entry k()\n{\n.reg .b32 %r<4>;\n frobnicate.sync.b32 %r0, %r1;\n}\n";
        let ast = crate::parser::parse(src).unwrap();
        let e = lower(&ast).unwrap_err();
        assert_eq!(e.cuda_code(), 801);
        assert!(e.to_string().contains("`frobnicate.sync.b32`"), "{e}");
    }
}
