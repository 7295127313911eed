//! Warp collectives: shfl, vote, activemask, match, redux.

use super::*;

impl FnLower<'_> {
    pub(super) fn warp(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let need_ty = || self.need_ty(i);
        let a = &i.args;
        let op = match i.opcode {
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
}
