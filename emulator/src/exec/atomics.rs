//! Atomic read-modify-write and reductions to memory.

use super::*;

impl Runner<'_, '_> {
    #[inline(always)]
    pub(super) fn exec_atomics(
        &mut self,
        op: &Op,
        m: u32,
        b: Bases,
        line: u32,
    ) -> Result<(), EmuError> {
        if let Op::Atom {
            space,
            op,
            ty,
            d,
            addr,
            b: bb,
            c,
        } = op
        {
            let base = self.fetch(&addr.base, b);
            let (y, z) = (self.fetch(bb, b), self.fetch(c, b));
            let mut res = [0u64; 32];
            for l in lanes(m) {
                let a = base[l].wrapping_add(addr.off as u64);
                self.record(*space, a, ty.bytes(), true);
                res[l] = self.atomic(*space, *op, *ty, a, y[l], z[l], line)?;
            }
            self.write(*d, b, m, |l| res[l]);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn atomic(
        &mut self,
        space: Space,
        op: AtomOp,
        ty: Ty,
        addr: u64,
        b: u64,
        c: u64,
        line: u32,
    ) -> Result<u64, EmuError> {
        let size = ty.bytes();
        let (s, a) = self.resolve(space, addr);
        if a & (size as u64 - 1) != 0 {
            return Err(misaligned(a, size as u64, line));
        }
        match s {
            Space::Shared => {
                let old = read_le(self.shared, a, size).ok_or_else(|| illegal(addr, size, line))?;
                write_le(self.shared, a, size, atom_apply(op, ty, old, b, c));
                Ok(old)
            }
            Space::Global | Space::Generic | Space::Const => {
                let al = self
                    .ctx
                    .space
                    .find_reach(a, size as u64)
                    .map_err(|_| illegal(a, size, line))?;
                let off = a - al.base();
                let shift = (off % 8) * 8;
                let wm = width_mask(size * 8) << shift;
                let prev = al
                    .word(off)
                    .fetch_update(Relaxed, Relaxed, |w| {
                        let old = (w & wm) >> shift;
                        let new = atom_apply(op, ty, old, b, c);
                        Some((w & !wm) | ((new << shift) & wm))
                    })
                    .unwrap_or_else(|w| w);
                Ok((prev & wm) >> shift)
            }
            _ => Err(illegal(addr, size, line)),
        }
    }
}

pub(super) fn atom_apply(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    let mask = width_mask(bits);
    if matches!(ty, Ty::F16x2 | Ty::BF16x2) {
        let half = if ty == Ty::F16x2 { Ty::F16 } else { Ty::BF16 };
        let lo = atom_apply(op, half, old & 0xFFFF, b & 0xFFFF, 0);
        let hi = atom_apply(op, half, (old >> 16) & 0xFFFF, (b >> 16) & 0xFFFF, 0);
        return (lo & 0xFFFF) | ((hi & 0xFFFF) << 16);
    }
    if ty.float() {
        let f = |x: f64| -> u64 {
            match ty {
                Ty::F32 => (x as f32).to_bits() as u64,
                Ty::F16 => float::f2h(x, false, Rnd::Rn) as u64,
                Ty::BF16 => float::f2h(x, true, Rnd::Rn) as u64,
                _ => x.to_bits(),
            }
        };
        let (x, y) = (to_f64(ty, old, false), to_f64(ty, b, false));
        return match op {
            AtomOp::Add => match ty {
                Ty::F32 => (f32::from_bits(old as u32) + f32::from_bits(b as u32)).to_bits() as u64,
                Ty::F64 => (x + y).to_bits(),
                _ => f(x + y),
            },
            AtomOp::Min => f(float::min64(x, y)),
            AtomOp::Max => f(float::max64(x, y)),
            AtomOp::Exch => b,
            AtomOp::Cas => {
                if old == b & mask {
                    c
                } else {
                    old
                }
            }
            _ => old,
        };
    }
    let s = ty.signed();
    (match op {
        AtomOp::Add => old.wrapping_add(b),
        AtomOp::Min => {
            if s {
                sx(old, bits).min(sx(b, bits)) as u64
            } else {
                old.min(b & mask)
            }
        }
        AtomOp::Max => {
            if s {
                sx(old, bits).max(sx(b, bits)) as u64
            } else {
                old.max(b & mask)
            }
        }
        AtomOp::Inc => {
            if old >= b & mask {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            if old == 0 || old > b & mask {
                b
            } else {
                old - 1
            }
        }
        AtomOp::And => old & b,
        AtomOp::Or => old | b,
        AtomOp::Xor => old ^ b,
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if old == b & mask {
                c
            } else {
                old
            }
        }
    }) & mask
}
