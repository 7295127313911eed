//! Floating-point operations: the float forms of add to max and of fma, the unary functions
//! (rcp, sqrt, ex2, sin, tanh...) and testp.

use super::*;

impl FnLower<'_> {
    pub(super) fn float(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let need_ty = || self.need_ty(i);
        let a = &i.args;
        let rnd = i.mods.rnd;
        let ftz = i.mods.has(Mod::Ftz);
        let sat = i.mods.has(Mod::Sat);
        let op = match i.opcode {
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
            _ => return Err(self.unsupported(i)),
        };
        Ok(op)
    }

    /// The float form of add, sub, mul, div, min, max and copysign.
    pub(super) fn float2(&self, i: &PInst, ty: Ty, fty: FTy) -> Result<Op, PtxError> {
        let (m, a) = (&i.mods, &i.args);
        let (rnd, ftz, sat) = (m.rnd, m.has(Mod::Ftz), m.has(Mod::Sat));
        let op = match i.opcode {
            Opcode::Add => F2::Add,
            Opcode::Sub => F2::Sub,
            Opcode::Mul => F2::Mul,
            Opcode::Div => F2::Div,
            _ if m.has(Mod::Xorsign) || m.has(Mod::Abs) => return Err(self.unsupported(i)),
            Opcode::Min if m.has(Mod::NaN) => F2::MinNaN,
            Opcode::Max if m.has(Mod::NaN) => F2::MaxNaN,
            Opcode::Min => F2::Min,
            Opcode::Max => F2::Max,
            Opcode::Copysign => F2::Copysign,
            _ => return Err(self.unsupported(i)),
        };
        Ok(Op::Float2 {
            op,
            ty: fty,
            rnd: rnd.unwrap_or(Rnd::Rn),
            ftz,
            sat,
            d: self.dst(&a[0])?,
            a: self.src(&a[1], ty)?,
            b: self.src(&a[2], ty)?,
        })
    }

    /// The float form of mad and fma.
    pub(super) fn fma(&self, i: &PInst, ty: Ty, fty: FTy) -> Result<Op, PtxError> {
        let (m, a) = (&i.mods, &i.args);
        let (rnd, ftz, sat) = (m.rnd, m.has(Mod::Ftz), m.has(Mod::Sat));
        Ok(Op::Fma {
            ty: fty,
            rnd: rnd.unwrap_or(Rnd::Rn),
            ftz,
            sat,
            relu: m.has(Mod::Relu),
            d: self.dst(&a[0])?,
            a: self.src(&a[1], ty)?,
            b: self.src(&a[2], ty)?,
            c: self.src(&a[3], ty)?,
        })
    }
}
