//! Floating-point arithmetic and conversions.

use super::*;

impl Runner<'_, '_> {
    #[inline(always)]
    pub(super) fn exec_floating(
        &mut self,
        op: &Op,
        m: u32,
        b: Bases,
        _line: u32,
    ) -> Result<(), EmuError> {
        match op {
            Op::Float2 {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a,
                b: bb,
            } => {
                let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
                if *ty == FTy::F32
                    && *rnd == Rnd::Rn
                    && !*ftz
                    && !*sat
                    && matches!(op, F2::Add | F2::Mul | F2::Sub)
                {
                    let f = |l: usize| (f32::from_bits(x[l] as u32), f32::from_bits(y[l] as u32));
                    let nan = |r: f32| {
                        if r.is_nan() {
                            float::NAN32
                        } else {
                            r.to_bits() as u64
                        }
                    };
                    match op {
                        F2::Add => self.write(*d, b, m, |l| {
                            let (p, q) = f(l);
                            nan(p + q)
                        }),
                        F2::Sub => self.write(*d, b, m, |l| {
                            let (p, q) = f(l);
                            nan(p - q)
                        }),
                        _ => self.write(*d, b, m, |l| {
                            let (p, q) = f(l);
                            nan(p * q)
                        }),
                    }
                } else {
                    let (op, ty, rnd, ftz, sat) = (*op, *ty, *rnd, *ftz, *sat);
                    self.write(*d, b, m, |l| float::bin(op, ty, rnd, ftz, sat, x[l], y[l]));
                }
            }
            Op::Float1 {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a,
            } => {
                let x = self.fetch(a, b);
                let (op, ty, rnd, ftz, sat) = (*op, *ty, *rnd, *ftz, *sat);
                self.write(*d, b, m, |l| float::un(op, ty, rnd, ftz, sat, x[l]));
            }
            Op::Fma {
                ty,
                rnd,
                ftz,
                sat,
                relu,
                d,
                a,
                b: bb,
                c,
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                if *relu {
                    let (ty, rnd, ftz) = (*ty, *rnd, *ftz);
                    self.write(*d, b, m, |l| {
                        float::relu_half(ty, float::fma(ty, rnd, ftz, false, x[l], y[l], z[l]))
                    });
                } else if *ty == FTy::F32 && *rnd == Rnd::Rn && !*ftz && !*sat {
                    self.write(*d, b, m, |l| {
                        let r = float::fma32_rn(
                            f32::from_bits(x[l] as u32),
                            f32::from_bits(y[l] as u32),
                            f32::from_bits(z[l] as u32),
                        );
                        if r.is_nan() {
                            float::NAN32
                        } else {
                            r.to_bits() as u64
                        }
                    });
                } else {
                    let (ty, rnd, ftz, sat) = (*ty, *rnd, *ftz, *sat);
                    self.write(*d, b, m, |l| {
                        float::fma(ty, rnd, ftz, sat, x[l], y[l], z[l])
                    });
                }
            }
            Op::CvtPack {
                bf,
                rnd,
                relu,
                d,
                a,
                b: bb,
            } => {
                let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
                let (bf, rnd, relu) = (*bf, *rnd, *relu);
                let ty = if bf { FTy::BF16 } else { FTy::F16 };
                let h = move |v: u64| {
                    let f = float::f2h(f32::from_bits(v as u32) as f64, bf, rnd) as u64;
                    if relu {
                        float::relu_half(ty, f)
                    } else {
                        f
                    }
                };
                self.write(*d, b, m, |l| (h(x[l]) << 16) | h(y[l]));
            }
            Op::Cvt {
                to,
                from,
                rnd,
                int_rnd,
                ftz,
                sat,
                d,
                a,
            } => {
                let x = self.fetch(a, b);
                let (to, from, rnd, int_rnd, ftz, sat) = (*to, *from, *rnd, *int_rnd, *ftz, *sat);
                self.write(*d, b, m, |l| cvt(to, from, rnd, int_rnd, ftz, sat, x[l]));
            }
            Op::Testp { op, ty, p, a } => {
                let x = self.fetch(a, b);
                let mut r = 0u32;
                for l in lanes(m) {
                    let v = match ty {
                        FTy::F64 => f64::from_bits(x[l]),
                        _ => f32::from_bits(x[l] as u32) as f64,
                    };
                    let sub = match ty {
                        FTy::F64 => v.is_subnormal(),
                        _ => f32::from_bits(x[l] as u32).is_subnormal(),
                    };
                    let hit = match op {
                        0 => v.is_finite(),
                        1 => v.is_infinite(),
                        2 => !v.is_nan(),
                        3 => v.is_nan(),
                        4 => v.is_finite() && v != 0.0 && !sub,
                        _ => sub,
                    };
                    r |= (hit as u32) << l;
                }
                self.set_pred(*p, b, m, r);
            }
            _ => {}
        }
        Ok(())
    }
}

pub(super) fn to_f64(ty: Ty, v: u64, ftz: bool) -> f64 {
    match ty {
        Ty::F32 => {
            let f = f32::from_bits(v as u32);
            (if ftz { float::ftz32(f) } else { f }) as f64
        }
        Ty::F64 => f64::from_bits(v),
        Ty::F16 => float::h2f(v as u16, false),
        Ty::BF16 => float::h2f(v as u16, true),
        _ => 0.0,
    }
}

/// cvt between any two scalar types.
pub(super) fn cvt(
    to: Ty,
    from: Ty,
    rnd: Option<Rnd>,
    int_rnd: bool,
    ftz: bool,
    sat: bool,
    v: u64,
) -> u64 {
    let to_mask = width_mask(to.bits());
    if from.float() {
        let x = to_f64(from, v, ftz);
        if to.float() {
            let mode = rnd.unwrap_or(Rnd::Rn);
            let x = if sat { float::sat64(x) } else { x };
            return match to {
                Ty::F32 => {
                    let r = float::to_f32(x, 0.0, mode);
                    let r = if ftz { float::ftz32(r) } else { r };
                    if r.is_nan() {
                        float::NAN32
                    } else {
                        r.to_bits() as u64
                    }
                }
                Ty::F64 => x.to_bits(),
                Ty::F16 => float::f2h(x, false, mode) as u64,
                Ty::BF16 => float::f2h(x, true, mode) as u64,
                _ => 0,
            };
        }
        // float -> int: round, saturate to the range, NaN -> 0.
        if x.is_nan() {
            return 0;
        }
        let r = float::round_int(
            x,
            Some(if int_rnd {
                rnd.unwrap_or(Rnd::Rz)
            } else {
                Rnd::Rz
            }),
        );
        let bits = to.bits();
        return if to.signed() {
            let (lo, hi) = (
                -(2f64.powi(bits as i32 - 1)),
                2f64.powi(bits as i32 - 1) - 1.0,
            );
            let c = r.clamp(lo, hi);
            (c as i64 as u64) & to_mask
        } else {
            let hi = 2f64.powi(bits as i32) - 1.0;
            (r.clamp(0.0, hi) as u64) & to_mask
        };
    }
    // Integer source.
    let fb = from.bits();
    let ival: i128 = if from.signed() {
        sx(v, fb) as i128
    } else {
        (v & width_mask(fb)) as i128
    };
    if to.float() {
        let mode = rnd.unwrap_or(Rnd::Rn);
        return match to {
            Ty::F64 => {
                let r = ival as f64;
                let err = if r.is_finite() {
                    (ival - r as i128).signum() as f64
                } else {
                    0.0
                };
                float::adjust64(r, err, mode).to_bits()
            }
            Ty::F32 => {
                let r = ival as f64;
                let err = (ival - r as i128).signum() as f64;
                let f = float::to_f32(r, err * f64::MIN_POSITIVE, mode);
                let f = if sat { float::sat32(f) } else { f };
                f.to_bits() as u64
            }
            Ty::F16 => float::f2h(ival as f64, false, mode) as u64,
            Ty::BF16 => float::f2h(ival as f64, true, mode) as u64,
            _ => 0,
        };
    }
    if sat {
        let tb = to.bits();
        let (lo, hi): (i128, i128) = if to.signed() {
            (-(1i128 << (tb - 1)), (1i128 << (tb - 1)) - 1)
        } else {
            (0, (1i128 << tb) - 1)
        };
        return (ival.clamp(lo, hi) as u64) & to_mask;
    }
    (ival as u64) & to_mask
}
