//! Comparisons and selection: setp, set, selp.

use super::*;

impl FnLower<'_> {
    pub(super) fn compare(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let tys: &[Ty] = &i.mods.types;
        let need_ty = || self.need_ty(i);
        let a = &i.args;
        let ftz = i.mods.has(Mod::Ftz);
        let op = match i.opcode {
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
            _ => return Err(self.unsupported(i)),
        };
        Ok(op)
    }
}
