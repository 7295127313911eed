//! Moves and conversions: mov (with packing and unpacking), cvt, cvta, isspacep.

use super::*;

impl FnLower<'_> {
    pub(super) fn convert(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let tys: &[Ty] = &i.mods.types;
        let ty = i.mods.ty();
        let need_ty = || self.need_ty(i);
        let a = &i.args;
        let rnd = i.mods.rnd;
        let ftz = i.mods.has(Mod::Ftz);
        let sat = i.mods.has(Mod::Sat);
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
            _ => return Err(self.unsupported(i)),
        };
        Ok(op)
    }
}
