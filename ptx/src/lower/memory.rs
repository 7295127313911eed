//! Loads and stores: ld, ldu, st, and cp.async.

use super::*;

impl FnLower<'_> {
    pub(super) fn memory(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let need_ty = || self.need_ty(i);
        let a = &i.args;
        let op = match i.opcode {
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
            _ => return Err(self.unsupported(i)),
        };
        Ok(op)
    }
}
