//! Control flow and synchronisation: bra, call, ret, exit, trap, hints that do nothing,
//! bar and barrier.

use super::*;

impl FnLower<'_> {
    pub(super) fn control(&mut self, i: &PInst) -> Result<Op, PtxError> {
        let m = &i.mods;
        let a = &i.args;
        let op = match i.opcode {
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
}
