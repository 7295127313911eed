//! Comparisons, predicate logic and selection.

use super::*;

impl Runner<'_, '_> {
    #[inline(always)]
    pub(super) fn exec_compare(
        &mut self,
        op: &Op,
        m: u32,
        b: Bases,
        _line: u32,
    ) -> Result<(), EmuError> {
        match op {
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
            _ => {}
        }
        Ok(())
    }
}

pub(super) fn boolop(op: BoolOp, a: u32, b: u32) -> u32 {
    match op {
        BoolOp::And => a & b,
        BoolOp::Or => a | b,
        BoolOp::Xor => a ^ b,
    }
}

pub(super) fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
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
