//! Lowering of the syntax tree into the typed IR: names resolved (with `{ }` scopes),
//! registers numbered, labels turned into instruction indices, modifiers decoded as sets, the
//! kernel parameter and per-thread local frame layouts computed with PTX alignment rules.

use std::collections::HashMap;

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
        let ty = tys.last().copied();
        let need_ty =
            || ty.ok_or_else(|| PtxError::ptx(i.line, format!("`{}` needs a type", full_name(i))));
        let a = &i.args;
        let rnd = m.rnd;
        let ftz = m.has(Mod::Ftz);
        let sat = m.has(Mod::Sat);
        let op = match i.opcode {
            Opcode::Mov => {
                let ty = need_ty()?;
                self.args(i, 2)?;
                if ty == Ty::Pred {
                    return Ok(Op::MovPred {
                        d: self.pdst(&a[0])?,
                        a: self.psrc(&a[1])?,
                    });
                }
                let parts_ok = |n: usize| {
                    matches!(n, 2 | 4 | 8) && ty.bits() % n as u32 == 0 && ty.bits() <= 128
                };
                match (&a[0], &a[1]) {
                    (Opnd::Vec(parts), _) | (_, Opnd::Vec(parts)) if !parts_ok(parts.len()) => {
                        return self.err(format!(
                            "`{}` cannot split into {} parts",
                            full_name(i),
                            parts.len()
                        ));
                    }
                    (Opnd::Vec(parts), _) => {
                        let ds = parts
                            .iter()
                            .map(|p| self.dst(p))
                            .collect::<Result<Vec<_>, _>>()?;
                        let bits = ty.bits() / (ds.len().max(1) as u32);
                        Op::Unpack {
                            ds,
                            a: self.src(&a[1], ty)?,
                            bits,
                        }
                    }
                    (_, Opnd::Vec(parts)) => {
                        let bits = ty.bits() / (parts.len().max(1) as u32);
                        let pty = int_ty(bits);
                        let parts = parts
                            .iter()
                            .map(|p| self.src(p, pty))
                            .collect::<Result<Vec<_>, _>>()?;
                        Op::Pack {
                            d: self.dst(&a[0])?,
                            parts,
                            bits,
                        }
                    }
                    _ => Op::Mov {
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                        mask: width_mask(ty.bits()),
                    },
                }
            }
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
            | Opcode::Copysign => {
                let ty = need_ty()?;
                self.args(i, 3)?;
                if ty == Ty::Pred {
                    let op = match i.opcode {
                        Opcode::And => BoolOp::And,
                        Opcode::Or => BoolOp::Or,
                        Opcode::Xor => BoolOp::Xor,
                        _ => return Err(self.unsupported(i)),
                    };
                    return Ok(Op::PredLogic {
                        op,
                        d: self.pdst(&a[0])?,
                        a: self.psrc(&a[1])?,
                        b: self.psrc(&a[2])?,
                    });
                }
                if (i.opcode == Opcode::Add || i.opcode == Opcode::Sub) && m.has(Mod::Cc) {
                    return Ok(Op::Carry {
                        sub: i.opcode == Opcode::Sub,
                        mad_hi: None,
                        cin: false,
                        cout: true,
                        bits: ty.bits(),
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                        b: self.src(&a[2], ty)?,
                        c: Src::Imm(0),
                    });
                }
                if let Some(fty) = fty(ty) {
                    let op = match i.opcode {
                        Opcode::Add => F2::Add,
                        Opcode::Sub => F2::Sub,
                        Opcode::Mul => F2::Mul,
                        Opcode::Div => F2::Div,
                        _ if m.has(Mod::Xorsign) || m.has(Mod::Abs) => {
                            return Err(self.unsupported(i))
                        }
                        Opcode::Min if m.has(Mod::NaN) => F2::MinNaN,
                        Opcode::Max if m.has(Mod::NaN) => F2::MaxNaN,
                        Opcode::Min => F2::Min,
                        Opcode::Max => F2::Max,
                        Opcode::Copysign => F2::Copysign,
                        _ => return Err(self.unsupported(i)),
                    };
                    let approx = m.has(Mod::Approx) || m.has(Mod::Full);
                    let _ = approx;
                    Op::Float2 {
                        op,
                        ty: fty,
                        rnd: rnd.unwrap_or(Rnd::Rn),
                        ftz,
                        sat,
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                        b: self.src(&a[2], ty)?,
                    }
                } else {
                    let op = match i.opcode {
                        Opcode::Add => I2::Add,
                        Opcode::Sub => I2::Sub,
                        Opcode::Mul if m.has(Mod::Hi) => I2::MulHi,
                        Opcode::Mul if m.has(Mod::Wide) => I2::MulWide,
                        Opcode::Mul => I2::MulLo,
                        Opcode::Div => I2::Div,
                        Opcode::Rem => I2::Rem,
                        Opcode::Min => I2::Min,
                        Opcode::Max => I2::Max,
                        Opcode::And => I2::And,
                        Opcode::Or => I2::Or,
                        Opcode::Xor => I2::Xor,
                        Opcode::Shl => I2::Shl,
                        Opcode::Shr => I2::Shr,
                        _ => return Err(self.unsupported(i)),
                    };
                    let bty = if matches!(op, I2::Shl | I2::Shr) {
                        Ty::U32
                    } else {
                        ty
                    };
                    Op::Int2 {
                        op,
                        bits: ty.bits(),
                        signed: ty.signed(),
                        sat,
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                        b: self.src(&a[2], bty)?,
                    }
                }
            }
            Opcode::Mul24 | Opcode::Mad24 => {
                let ty = need_ty()?;
                let mad = i.opcode == Opcode::Mad24;
                self.args(i, if mad { 4 } else { 3 })?;
                Op::Int3 {
                    op: I3::Mad24 { hi: m.has(Mod::Hi) },
                    bits: 32,
                    signed: ty.signed(),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    b: self.src(&a[2], ty)?,
                    c: if mad {
                        self.src(&a[3], ty)?
                    } else {
                        Src::Imm(0)
                    },
                }
            }
            Opcode::Cp => {
                if !m.has(Mod::Async)
                    || !(m.has(Mod::Shared) || m.has(Mod::SharedCta))
                    || !m.has(Mod::Global)
                {
                    if m.has(Mod::Async)
                        && (m.has(Mod::CommitGroup) || m.has(Mod::WaitGroup) || m.has(Mod::WaitAll))
                    {
                        return Ok(Op::Nop);
                    }
                    return Err(self.unsupported(i));
                }
                if a.len() < 3 {
                    return self.err("cp.async takes 3 or 4 operands");
                }
                let Opnd::Lit(Lit::Int(size)) = a[2] else {
                    return self.err("cp.async needs a constant size");
                };
                if !matches!(size, 4 | 8 | 16) {
                    return self.err("cp.async size must be 4, 8 or 16");
                }
                let src_size = match a.get(3) {
                    Some(o @ (Opnd::Name(_) | Opnd::Lit(_))) => self.src(o, Ty::U32)?,
                    _ => Src::Imm(size),
                };
                Op::CpAsync {
                    size: size as u32,
                    src_size,
                    dst: self.addr(&a[0])?.0,
                    src: self.addr(&a[1])?.0,
                }
            }
            Opcode::Addc | Opcode::Subc | Opcode::Madc => {
                let ty = need_ty()?;
                let mad = i.opcode == Opcode::Madc;
                self.args(i, if mad { 4 } else { 3 })?;
                Op::Carry {
                    sub: i.opcode == Opcode::Subc,
                    mad_hi: if mad { Some(m.has(Mod::Hi)) } else { None },
                    cin: true,
                    cout: m.has(Mod::Cc),
                    bits: ty.bits(),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    b: self.src(&a[2], ty)?,
                    c: if mad {
                        self.src(&a[3], ty)?
                    } else {
                        Src::Imm(0)
                    },
                }
            }
            Opcode::Mad | Opcode::Fma => {
                let ty = need_ty()?;
                self.args(i, 4)?;
                if let Some(fty) = fty(ty) {
                    Op::Fma {
                        ty: fty,
                        rnd: rnd.unwrap_or(Rnd::Rn),
                        ftz,
                        sat,
                        relu: m.has(Mod::Relu),
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                        b: self.src(&a[2], ty)?,
                        c: self.src(&a[3], ty)?,
                    }
                } else if m.has(Mod::Cc) {
                    Op::Carry {
                        sub: false,
                        mad_hi: Some(m.has(Mod::Hi)),
                        cin: false,
                        cout: true,
                        bits: ty.bits(),
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                        b: self.src(&a[2], ty)?,
                        c: self.src(&a[3], ty)?,
                    }
                } else {
                    let op = if m.has(Mod::Hi) {
                        I3::MadHi
                    } else if m.has(Mod::Wide) {
                        I3::MadWide
                    } else {
                        I3::MadLo
                    };
                    let cty = if op == I3::MadWide {
                        int_ty(ty.bits() * 2)
                    } else {
                        ty
                    };
                    Op::Int3 {
                        op,
                        bits: ty.bits(),
                        signed: ty.signed(),
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                        b: self.src(&a[2], ty)?,
                        c: self.src(&a[3], cty)?,
                    }
                }
            }
            Opcode::Sad => {
                let ty = need_ty()?;
                self.args(i, 4)?;
                Op::Int3 {
                    op: I3::Sad,
                    bits: ty.bits(),
                    signed: ty.signed(),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    b: self.src(&a[2], ty)?,
                    c: self.src(&a[3], ty)?,
                }
            }
            Opcode::Abs
            | Opcode::Neg
            | Opcode::Not
            | Opcode::Cnot
            | Opcode::Popc
            | Opcode::Clz
            | Opcode::Brev
            | Opcode::Bfind => {
                let ty = need_ty()?;
                self.args(i, 2)?;
                if ty == Ty::Pred && i.opcode == Opcode::Not {
                    return Ok(Op::PredNot {
                        d: self.pdst(&a[0])?,
                        a: self.psrc(&a[1])?,
                    });
                }
                if let (Some(fty), Opcode::Abs | Opcode::Neg) = (fty(ty), i.opcode) {
                    let op = if i.opcode == Opcode::Abs {
                        F1::Abs
                    } else {
                        F1::Neg
                    };
                    return Ok(Op::Float1 {
                        op,
                        ty: fty,
                        rnd: Rnd::Rn,
                        ftz,
                        sat,
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], ty)?,
                    });
                }
                let op = match i.opcode {
                    Opcode::Abs => I1::Abs,
                    Opcode::Neg => I1::Neg,
                    Opcode::Not => I1::Not,
                    Opcode::Cnot => I1::Cnot,
                    Opcode::Popc => I1::Popc,
                    Opcode::Clz => I1::Clz,
                    Opcode::Brev => I1::Brev,
                    _ if m.has(Mod::Shiftamt) => I1::BfindShift,
                    _ => I1::Bfind,
                };
                Op::Int1 {
                    op,
                    bits: ty.bits(),
                    signed: ty.signed(),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                }
            }
            Opcode::Rcp
            | Opcode::Sqrt
            | Opcode::Rsqrt
            | Opcode::Ex2
            | Opcode::Lg2
            | Opcode::Sin
            | Opcode::Cos
            | Opcode::Tanh => {
                let ty = need_ty()?;
                self.args(i, 2)?;
                let fty = fty(ty).ok_or_else(|| self.unsupported(i))?;
                let approx = m.has(Mod::Approx);
                let op = match i.opcode {
                    Opcode::Rcp if approx => F1::RcpApprox,
                    Opcode::Rcp => F1::Rcp,
                    Opcode::Sqrt if approx => F1::SqrtApprox,
                    Opcode::Sqrt => F1::Sqrt,
                    Opcode::Rsqrt => F1::Rsqrt,
                    Opcode::Ex2 => F1::Ex2,
                    Opcode::Lg2 => F1::Lg2,
                    Opcode::Sin => F1::Sin,
                    Opcode::Cos => F1::Cos,
                    _ => F1::Tanh,
                };
                Op::Float1 {
                    op,
                    ty: fty,
                    rnd: rnd.unwrap_or(Rnd::Rn),
                    ftz,
                    sat,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                }
            }
            Opcode::Bfe => {
                let ty = need_ty()?;
                self.args(i, 4)?;
                Op::Int3 {
                    op: I3::Bfe,
                    bits: ty.bits(),
                    signed: ty.signed(),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    b: self.src(&a[2], Ty::U32)?,
                    c: self.src(&a[3], Ty::U32)?,
                }
            }
            Opcode::Bfi => {
                let ty = need_ty()?;
                self.args(i, 5)?;
                Op::Bfi {
                    bits: ty.bits(),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    b: self.src(&a[2], ty)?,
                    c: self.src(&a[3], Ty::U32)?,
                    e: self.src(&a[4], Ty::U32)?,
                }
            }
            Opcode::Prmt => {
                self.args(i, 4)?;
                if [Mod::F4e, Mod::B4e, Mod::Rc8, Mod::Ecl, Mod::Ecr, Mod::Rc16]
                    .iter()
                    .any(|&f| m.has(f))
                {
                    return Err(self.unsupported(i));
                }
                Op::Int3 {
                    op: I3::Prmt,
                    bits: 32,
                    signed: false,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], Ty::B32)?,
                    b: self.src(&a[2], Ty::B32)?,
                    c: self.src(&a[3], Ty::B32)?,
                }
            }
            Opcode::Shf => {
                self.args(i, 4)?;
                Op::Int3 {
                    op: I3::Shf {
                        left: m.has(Mod::L),
                        wrap: m.has(Mod::Wrap),
                    },
                    bits: 32,
                    signed: false,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], Ty::B32)?,
                    b: self.src(&a[2], Ty::B32)?,
                    c: self.src(&a[3], Ty::U32)?,
                }
            }
            Opcode::Dp4a | Opcode::Dp2a => {
                self.args(i, 4)?;
                let (Some(&ta), Some(&tb)) = (tys.first(), tys.get(1)) else {
                    return self.err(format!("`{}` needs two types", full_name(i)));
                };
                let op = if i.opcode == Opcode::Dp4a {
                    I3::Dp4a {
                        sa: ta.signed(),
                        sb: tb.signed(),
                    }
                } else {
                    I3::Dp2a {
                        sa: ta.signed(),
                        sb: tb.signed(),
                        hi: m.has(Mod::Hi),
                    }
                };
                let cty = if ta.signed() || tb.signed() {
                    Ty::S32
                } else {
                    Ty::U32
                };
                Op::Int3 {
                    op,
                    bits: 32,
                    signed: false,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ta)?,
                    b: self.src(&a[2], tb)?,
                    c: self.src(&a[3], cty)?,
                }
            }
            Opcode::Lop3 => {
                let ty = need_ty()?;
                self.args(i, 5)?;
                let Opnd::Lit(Lit::Int(lut)) = a[4] else {
                    return self.err("lop3 needs an immediate table");
                };
                Op::Int3 {
                    op: I3::Lop3(lut as u8),
                    bits: ty.bits(),
                    signed: false,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    b: self.src(&a[2], ty)?,
                    c: self.src(&a[3], ty)?,
                }
            }
            Opcode::Selp => {
                let ty = need_ty()?;
                self.args(i, 4)?;
                Op::Selp {
                    mask: width_mask(ty.bits()),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    b: self.src(&a[2], ty)?,
                    p: self.psrc(&a[3])?,
                }
            }
            Opcode::Slct => {
                self.args(i, 4)?;
                let (Some(&dty), Some(&cty)) = (tys.first(), tys.get(1)) else {
                    return self.err("slct needs two types");
                };
                Op::Int3 {
                    op: I3::Slct,
                    bits: dty.bits(),
                    signed: cty == Ty::S32,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], dty)?,
                    b: self.src(&a[2], dty)?,
                    c: self.src(&a[3], cty)?,
                }
            }
            Opcode::Setp | Opcode::Set => {
                let cmp = m.cmp.ok_or_else(|| self.unsupported(i))?;
                let comb = m.boolop;
                let sty = *tys.last().ok_or_else(|| self.unsupported(i))?;
                let n = if comb.is_some() { 4 } else { 3 };
                self.args(i, n)?;
                let comb = match comb {
                    Some(op) => Some((op, self.psrc(&a[3])?)),
                    None => None,
                };
                if i.opcode == Opcode::Set && matches!(sty, Ty::F16x2 | Ty::BF16x2 | Ty::B128) {
                    return Err(self.unsupported(i));
                }
                if i.opcode == Opcode::Set {
                    let dty = *tys.first().ok_or_else(|| self.unsupported(i))?;
                    return Ok(Op::Set {
                        cmp,
                        ty: sty,
                        dty,
                        ftz,
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], sty)?,
                        b: self.src(&a[2], sty)?,
                        comb,
                    });
                }
                let (p, q) = match &a[0] {
                    Opnd::Pipe(p, q) => (self.pred(p)?, self.pred(q)?),
                    o => (self.pdst(o)?, SINK),
                };
                Op::Setp {
                    cmp,
                    ty: sty,
                    ftz,
                    p,
                    q,
                    a: self.src(&a[1], sty)?,
                    b: self.src(&a[2], sty)?,
                    comb,
                }
            }
            Opcode::Cvt => {
                let (Some(&to), Some(&from)) = (tys.first(), tys.get(1)) else {
                    return self.err("cvt needs two types");
                };
                if !(matches!(to, Ty::F16x2 | Ty::BF16x2) && a.len() == 3) {
                    self.args(i, 2)?;
                }
                let int_rnd = m.int_rnd;
                if to.float() && to == from && !matches!(to, Ty::F16x2 | Ty::BF16x2) {
                    let Some(fty) = fty(to) else {
                        return Err(self.unsupported(i));
                    };
                    return Ok(Op::Float1 {
                        op: F1::Round(if int_rnd { rnd } else { None }),
                        ty: fty,
                        rnd: rnd.unwrap_or(Rnd::Rn),
                        ftz,
                        sat,
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], from)?,
                    });
                }
                if matches!(to, Ty::F16x2 | Ty::BF16x2) && from == Ty::F32 && a.len() == 3 {
                    return Ok(Op::CvtPack {
                        bf: to == Ty::BF16x2,
                        rnd: rnd.unwrap_or(Rnd::Rn),
                        relu: m.has(Mod::Relu),
                        d: self.dst(&a[0])?,
                        a: self.src(&a[1], Ty::F32)?,
                        b: self.src(&a[2], Ty::F32)?,
                    });
                }
                if matches!(to, Ty::F16x2 | Ty::BF16x2 | Ty::B128)
                    || matches!(from, Ty::F16x2 | Ty::BF16x2 | Ty::B128)
                {
                    return Err(self.unsupported(i));
                }
                Op::Cvt {
                    to,
                    from,
                    rnd,
                    int_rnd,
                    ftz,
                    sat,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], from)?,
                }
            }
            Opcode::Cvta => {
                self.args(i, 2)?;
                let space = m.space.ok_or_else(|| self.unsupported(i))?;
                let ty = ty.unwrap_or(Ty::U64);
                Op::Cvta {
                    to_generic: !m.has(Mod::To),
                    space,
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    bits: ty.bits(),
                }
            }
            Opcode::Isspacep => {
                self.args(i, 2)?;
                let space = m.space.ok_or_else(|| self.unsupported(i))?;
                Op::Isspacep {
                    space,
                    p: self.pdst(&a[0])?,
                    a: self.src(&a[1], Ty::U64)?,
                }
            }
            Opcode::Testp => {
                self.args(i, 2)?;
                let ty = need_ty()?;
                let op = [
                    Mod::Finite,
                    Mod::Infinite,
                    Mod::Number,
                    Mod::Notanumber,
                    Mod::Normal,
                    Mod::Subnormal,
                ]
                .iter()
                .position(|&t| m.has(t))
                .ok_or_else(|| self.unsupported(i))? as u8;
                Op::Testp {
                    op,
                    ty: fty(ty).ok_or_else(|| self.unsupported(i))?,
                    p: self.pdst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                }
            }
            Opcode::Ld | Opcode::Ldu | Opcode::St => {
                // `.L2::cache_hint` adds a policy operand, which is only a hint.
                let a = if m.has(Mod::L2CacheHint) && a.len() == 3 {
                    &a[..2]
                } else {
                    &a[..]
                };
                if a.len() != 2 {
                    return self.err(format!(
                        "`{}` takes 2 operands, found {}",
                        full_name(i),
                        a.len()
                    ));
                }
                let ty = need_ty()?;
                if m.has(Mod::V8) {
                    return Err(self.unsupported(i));
                }
                let n = if m.has(Mod::V2) {
                    2
                } else if m.has(Mod::V4) {
                    4
                } else {
                    1
                };
                let is_ld = i.opcode != Opcode::St;
                let (addr, sym) = self.addr(if is_ld { &a[1] } else { &a[0] })?;
                let mut space = m.space.unwrap_or(Space::Generic);
                if space == Space::Param {
                    space = match sym {
                        Some(Sym::Local(..)) => Space::Local,
                        Some(Sym::KParam(_)) => Space::Param,
                        _ if self.kernel => Space::Param,
                        _ => Space::Local,
                    };
                }
                if space == Space::Const {
                    space = Space::Global;
                }
                if ty == Ty::B128 {
                    return Err(self.unsupported(i));
                }
                let size = ty.bytes();
                let vals: Vec<&Opnd> = match if is_ld { &a[0] } else { &a[1] } {
                    Opnd::Vec(v) => v.iter().collect(),
                    o => vec![o],
                };
                if vals.len() != n as usize {
                    return self.err(format!("`{}` needs {n} values", full_name(i)));
                }
                if is_ld {
                    let ds = vals
                        .iter()
                        .map(|o| self.dst(o))
                        .collect::<Result<Vec<_>, _>>()?;
                    let wide = vals
                        .first()
                        .and_then(|o| self.reg_ty(o))
                        .is_some_and(|t| t.bits() > ty.bits());
                    let sext = if ty.signed() && wide { ty.bits() } else { 0 };
                    Op::Ld {
                        space,
                        size,
                        n,
                        ds,
                        addr,
                        sext,
                    }
                } else {
                    let srcs = vals
                        .iter()
                        .map(|o| self.src(o, ty))
                        .collect::<Result<Vec<_>, _>>()?;
                    Op::St {
                        space,
                        size,
                        n,
                        srcs,
                        addr,
                    }
                }
            }
            Opcode::Atom | Opcode::Red => {
                let ty = need_ty()?;
                let is_red = i.opcode == Opcode::Red;
                let op = [
                    (Mod::Add, AtomOp::Add),
                    (Mod::Min, AtomOp::Min),
                    (Mod::Max, AtomOp::Max),
                    (Mod::Inc, AtomOp::Inc),
                    (Mod::Dec, AtomOp::Dec),
                    (Mod::And, AtomOp::And),
                    (Mod::Or, AtomOp::Or),
                    (Mod::Xor, AtomOp::Xor),
                    (Mod::Exch, AtomOp::Exch),
                    (Mod::Cas, AtomOp::Cas),
                ]
                .iter()
                .find(|(s, _)| m.has(*s))
                .map(|x| x.1)
                .ok_or_else(|| self.unsupported(i))?;
                if m.has(Mod::V2)
                    || m.has(Mod::V4)
                    || m.has(Mod::V8)
                    || ty == Ty::B128
                    || (matches!(ty, Ty::F16x2 | Ty::BF16x2)
                        && !matches!(op, AtomOp::Add | AtomOp::Min | AtomOp::Max))
                {
                    return Err(self.unsupported(i));
                }
                let base = if is_red { 0 } else { 1 };
                let n = base + if op == AtomOp::Cas { 3 } else { 2 };
                self.args(i, n)?;
                let (addr, _) = self.addr(&a[base])?;
                let mut space = m.space.unwrap_or(Space::Generic);
                if space == Space::Const || space == Space::Param || space == Space::Local {
                    return Err(self.unsupported(i));
                }
                if space == Space::Global {
                    space = Space::Global;
                }
                Op::Atom {
                    space,
                    op,
                    ty,
                    d: if is_red { SINK } else { self.dst(&a[0])? },
                    addr,
                    b: self.src(&a[base + 1], ty)?,
                    c: if op == AtomOp::Cas {
                        self.src(&a[base + 2], ty)?
                    } else {
                        Src::Imm(0)
                    },
                }
            }
            Opcode::Bra | Opcode::Brx => {
                if i.opcode == Opcode::Brx {
                    return Err(self.unsupported(i));
                }
                self.args(i, 1)?;
                let Opnd::Name(l) = &a[0] else {
                    return self.err("bra needs a label");
                };
                let target = self
                    .label(l)
                    .ok_or_else(|| PtxError::ptx(i.line, format!("undefined label `{l}`")))?;
                Op::Bra { target }
            }
            Opcode::Call => self.call(i)?,
            Opcode::Ret => Op::Ret,
            Opcode::Exit => Op::Exit,
            Opcode::Trap => Op::Trap,
            Opcode::Brkpt
            | Opcode::Membar
            | Opcode::Fence
            | Opcode::Nanosleep
            | Opcode::Pmevent
            | Opcode::Prefetch
            | Opcode::Prefetchu
            | Opcode::Discard
            | Opcode::Griddepcontrol
            | Opcode::Applypriority
            | Opcode::Createpolicy => {
                if i.opcode == Opcode::Fence && (m.has(Mod::Proxy) && m.has(Mod::Tensormap)) {
                    return Err(self.unsupported(i));
                }
                if i.opcode == Opcode::Createpolicy {
                    // A cache policy is only a hint: any value will do.
                    let d = a
                        .first()
                        .ok_or_else(|| PtxError::ptx(i.line, "createpolicy needs a destination"))?;
                    return Ok(Op::Mov {
                        d: self.dst(d)?,
                        a: Src::Imm(0),
                        mask: u64::MAX,
                    });
                }
                Op::Nop
            }
            Opcode::Bar | Opcode::Barrier => {
                if m.has(Mod::Cluster) {
                    return Err(self.unsupported(i));
                }
                if m.has(Mod::Warp) {
                    return Ok(Op::Nop);
                }
                let kind = if m.has(Mod::Arrive) {
                    BarKind::Arrive
                } else if m.has(Mod::Red) {
                    if m.has(Mod::Popc) {
                        BarKind::RedPopc
                    } else if m.has(Mod::And) {
                        BarKind::RedAnd
                    } else {
                        BarKind::RedOr
                    }
                } else {
                    BarKind::Sync
                };
                let red = matches!(kind, BarKind::RedPopc | BarKind::RedAnd | BarKind::RedOr);
                let ops: &[Opnd] = if red { a.get(1..).unwrap_or(&[]) } else { a };
                let id = match ops.first() {
                    Some(o) => self.src(o, Ty::U32)?,
                    None => Src::Imm(0),
                };
                let (count, p) = if red {
                    match ops.len() {
                        2 => (None, self.psrc(&ops[1])?),
                        3 => (Some(self.src(&ops[1], Ty::U32)?), self.psrc(&ops[2])?),
                        _ => return self.err("bar.red needs a predicate"),
                    }
                } else {
                    (
                        ops.get(1).map(|o| self.src(o, Ty::U32)).transpose()?,
                        PSrc::Imm(true),
                    )
                };
                let d = if red {
                    if kind == BarKind::RedPopc {
                        self.dst(&a[0])?
                    } else {
                        // and/or write a predicate.
                        self.pdst(&a[0])?
                    }
                } else {
                    SINK
                };
                Op::Bar {
                    kind,
                    id,
                    count,
                    d,
                    p,
                }
            }
            Opcode::Shfl => {
                let mode = if m.has(Mod::Up) {
                    ShflMode::Up
                } else if m.has(Mod::Down) {
                    ShflMode::Down
                } else if m.has(Mod::Bfly) {
                    ShflMode::Bfly
                } else {
                    ShflMode::Idx
                };
                if a.len() != 5 && a.len() != 4 {
                    return self.err("shfl takes 4 or 5 operands");
                }
                let (d, p) = match &a[0] {
                    Opnd::Pipe(d, p) => (self.dst(&Opnd::Name(d.clone()))?, self.pred(p)?),
                    o => (self.dst(o)?, SINK),
                };
                let member = match a.get(4) {
                    Some(o) => self.src(o, Ty::B32)?,
                    None => Src::Imm(0xFFFF_FFFF),
                };
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(&a[1], Ty::B32)?,
                    b: self.src(&a[2], Ty::U32)?,
                    c: self.src(&a[3], Ty::U32)?,
                    member,
                }
            }
            Opcode::Vote => {
                let mode = if m.has(Mod::All) {
                    VoteMode::All
                } else if m.has(Mod::Any) {
                    VoteMode::Any
                } else if m.has(Mod::Uni) {
                    VoteMode::Uni
                } else if m.has(Mod::Ballot) {
                    VoteMode::Ballot
                } else {
                    return Err(self.unsupported(i));
                };
                if a.len() < 2 {
                    return self.err("vote takes 2 or 3 operands");
                }
                let d = if mode == VoteMode::Ballot {
                    self.dst(&a[0])?
                } else {
                    self.pdst(&a[0])?
                };
                let member = match a.get(2) {
                    Some(o) => self.src(o, Ty::B32)?,
                    None => Src::Imm(0xFFFF_FFFF),
                };
                Op::Vote {
                    mode,
                    d,
                    a: self.psrc(&a[1])?,
                    member,
                }
            }
            Opcode::Activemask => {
                self.args(i, 1)?;
                Op::Activemask {
                    d: self.dst(&a[0])?,
                }
            }
            Opcode::Match => {
                let ty = need_ty()?;
                if a.len() != 3 {
                    return self.err("match takes 3 operands");
                }
                let (d, p) = match &a[0] {
                    Opnd::Pipe(d, p) => (self.dst(&Opnd::Name(d.clone()))?, self.pred(p)?),
                    o => (self.dst(o)?, SINK),
                };
                Op::Match {
                    all: m.has(Mod::All),
                    bits: ty.bits(),
                    d,
                    p,
                    a: self.src(&a[1], ty)?,
                    member: self.src(&a[2], Ty::B32)?,
                }
            }
            Opcode::Redux => {
                let ty = need_ty()?;
                if a.len() != 3 || ty.float() {
                    return Err(self.unsupported(i));
                }
                let op = [
                    (Mod::Add, ReduxOp::Add),
                    (Mod::Min, ReduxOp::Min),
                    (Mod::Max, ReduxOp::Max),
                    (Mod::And, ReduxOp::And),
                    (Mod::Or, ReduxOp::Or),
                    (Mod::Xor, ReduxOp::Xor),
                ]
                .iter()
                .find(|(s, _)| m.has(*s))
                .map(|x| x.1)
                .ok_or_else(|| self.unsupported(i))?;
                Op::Redux {
                    op,
                    signed: ty.signed(),
                    d: self.dst(&a[0])?,
                    a: self.src(&a[1], ty)?,
                    member: self.src(&a[2], Ty::B32)?,
                }
            }
            _ => return Err(self.unsupported(i)),
        };
        Ok(op)
    }

    fn call(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let mut it = i.args.iter().peekable();
        let mut rets = Vec::new();
        if let Some(Opnd::List(r)) = it.peek() {
            rets = r.clone();
            it.next();
        }
        let Some(Opnd::Name(fname)) = it.next() else {
            return self.err("call needs a function name or a register");
        };
        // `call (ret), %rd, (args), proto;`: the target is a register (or any value), and a
        // `.callprototype` or `.calltargets` label follows the arguments.
        let indirect = !matches!(self.lookup(fname), Some(Sym::Func(_)));
        let args = match it.next() {
            Some(Opnd::List(a)) => a.clone(),
            None => Vec::new(),
            Some(Opnd::Name(_)) if indirect => Vec::new(),
            Some(_) => return self.err("call arguments must be a ( ) list"),
        };
        let rest: Vec<&Opnd> = it.collect();
        if indirect && rest.len() > 1 || !indirect && !rest.is_empty() {
            return self.err("unexpected operands after the call arguments");
        }
        let func = match self.lookup(fname) {
            Some(Sym::Func(f)) => Some(f),
            Some(Sym::Reg(..)) => None,
            _ => return self.err(format!("call to undefined function `{fname}`")),
        };
        let slot = |o: &Opnd| -> Result<(u32, u32), PtxError> {
            match o {
                Opnd::Name(n) => match self.lookup(n) {
                    Some(Sym::Local(off, size)) => Ok((off, size)),
                    _ => Err(PtxError::unsupported(
                        i.line,
                        format!("call argument `{n}` that is not a .param"),
                    )),
                },
                _ => Err(PtxError::unsupported(
                    i.line,
                    "call argument that is not a .param",
                )),
            }
        };
        let args = args.iter().map(slot).collect::<Result<Vec<_>, _>>()?;
        let rets = rets.iter().map(slot).collect::<Result<Vec<_>, _>>()?;
        let Some(func) = func else {
            self.calls_indirect = true;
            return Ok(Op::CallIndirect {
                target: self.sym_value(fname, 0)?,
                args,
                rets,
            });
        };
        let f = &self.out.funcs[func as usize];
        if let Some(b) = f.builtin {
            return Ok(Op::Builtin {
                which: b,
                args,
                rets,
            });
        }
        self.callees.push(func);
        Ok(Op::Call { func, args, rets })
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
