//! Atomics and reductions to memory: atom, red.

use super::*;

impl FnLower<'_> {
    pub(super) fn atomics(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let need_ty = || self.need_ty(i);
        let a = &i.args;
        let op = match i.opcode {
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
            _ => return Err(self.unsupported(i)),
        };
        Ok(op)
    }
}
