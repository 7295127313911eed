//! Integer and bit arithmetic (and the arithmetic opcodes shared with floats, which hand
//! their float forms to `float`): add to lop3, carries, mad, sad, dp4a, slct.

use super::*;

impl FnLower<'_> {
    pub(super) fn integer(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let tys: &[Ty] = &i.mods.types;
        let need_ty = || self.need_ty(i);
        let a = &i.args;
        let ftz = i.mods.has(Mod::Ftz);
        let sat = i.mods.has(Mod::Sat);
        let op = match i.opcode {
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
                    self.float2(i, ty, fty)?
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
                    self.fma(i, ty, fty)?
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
            _ => return Err(self.unsupported(i)),
        };
        Ok(op)
    }
}
