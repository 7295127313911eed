//! Loads, stores and address spaces: `resolve`, `load`, `store`, `store_pairs`, and the
//! generic-address windows.

use super::*;

impl Runner<'_, '_> {
    #[inline(always)]
    pub(super) fn exec_memory(
        &mut self,
        op: &Op,
        m: u32,
        b: Bases,
        line: u32,
    ) -> Result<(), EmuError> {
        match op {
            Op::CpAsync {
                size,
                src_size,
                dst,
                src,
            } => {
                let (db, sb, ss) = (
                    self.fetch(&dst.base, b),
                    self.fetch(&src.base, b),
                    self.fetch(src_size, b),
                );
                let size = *size as u64;
                for l in lanes(m) {
                    let (da, sa) = (
                        db[l].wrapping_add(dst.off as u64),
                        sb[l].wrapping_add(src.off as u64),
                    );
                    if da % size != 0 || sa % size != 0 {
                        return Err(misaligned(if sa % size != 0 { sa } else { da }, size, line));
                    }
                    let n = ss[l].min(size);
                    self.record(Space::Global, sa, n as u32, false);
                    for k in 0..size {
                        let v = if k < n {
                            self.load(Space::Global, sa + k, 1, l, b, line)?
                        } else {
                            0
                        };
                        self.store(Space::Shared, da + k, 1, v, l, b, line)?;
                    }
                }
            }
            Op::Ld {
                space: Space::Param,
                size,
                n,
                ds,
                addr:
                    Addr {
                        base: Src::Imm(base),
                        off,
                    },
                sext,
            } => {
                // Kernel parameters at a constant address: one read for the warp.
                let a = base.wrapping_add(*off as u64);
                for (k, &d) in ds.iter().enumerate().take(*n as usize) {
                    let v = self.load(
                        Space::Param,
                        a.wrapping_add(k as u64 * *size as u64),
                        *size,
                        0,
                        b,
                        line,
                    )?;
                    let v = if *sext != 0 { sx(v, *sext) as u64 } else { v };
                    self.write(d, b, m, |_| v);
                }
            }
            Op::Ld {
                space,
                size,
                n,
                ds,
                addr,
                sext,
            } => {
                let base = self.fetch(&addr.base, b);
                let (size, n, sext) = (*size, *n, *sext);
                let total = (size * n) as u64;
                let check_align = *space != Space::Local && *space != Space::Param;
                for l in lanes(m) {
                    let a = base[l].wrapping_add(addr.off as u64);
                    if check_align && a & (total.max(1) - 1) != 0 {
                        return Err(misaligned(a, total, line));
                    }
                    for (k, &d) in ds.iter().enumerate() {
                        let ea = a.wrapping_add(k as u64 * size as u64);
                        self.record(*space, ea, size, false);
                        // Fast paths: shared memory, and the warp's last global allocation.
                        let hit = match (&self.w.cache, space) {
                            (_, Space::Shared) => read_le(self.shared, ea, size),
                            (Some(al), Space::Global | Space::Generic)
                                if ea >= al.base()
                                    && ea.saturating_add(size as u64)
                                        <= al.base() + al.extent() =>
                            {
                                Some(al.load(ea - al.base(), size))
                            }
                            _ => None,
                        };
                        let v = match hit {
                            Some(v) => v,
                            None => self.load(*space, ea, size, l, b, line)?,
                        };
                        if d != SINK {
                            self.w.regs[(b.reg + d) as usize * 32 + l] =
                                if sext != 0 { sx(v, sext) as u64 } else { v };
                        }
                    }
                }
            }
            Op::St {
                space,
                size,
                n,
                srcs,
                addr,
            } => {
                let base = self.fetch(&addr.base, b);
                let (size, n) = (*size, *n);
                if self.ctx.record.is_some() {
                    for l in lanes(m) {
                        let a = base[l].wrapping_add(addr.off as u64);
                        (0..n).for_each(|k| self.record(*space, a + (k * size) as u64, size, true));
                    }
                }
                if n == 1 && size == 4 && matches!(space, Space::Global | Space::Generic) {
                    let val = self.fetch(&srcs[0], b);
                    if self.store_pairs(m, &base, addr.off as u64, &val) {
                        return Ok(());
                    }
                }
                let total = (size * n) as u64;
                let vals: Vec<V> = srcs.iter().map(|s| self.fetch(s, b)).collect();
                for l in lanes(m) {
                    let a = base[l].wrapping_add(addr.off as u64);
                    if a & (total.max(1) - 1) != 0 && *space != Space::Local {
                        return Err(misaligned(a, total, line));
                    }
                    for (k, val) in vals.iter().enumerate().take(n as usize) {
                        let ea = a.wrapping_add(k as u64 * size as u64);
                        if *space == Space::Shared
                            && write_le(self.shared, ea, size, val[l]).is_some()
                        {
                            continue;
                        }
                        if let (Some(al), Space::Global | Space::Generic) = (&self.w.cache, space) {
                            if ea >= al.base()
                                && ea.saturating_add(size as u64) <= al.base() + al.extent()
                            {
                                al.store(ea - al.base(), size, val[l]);
                                continue;
                            }
                        }
                        self.store(*space, ea, size, val[l], l, b, line)?;
                    }
                }
            }
            Op::Cvta {
                to_generic,
                space,
                d,
                a,
                bits,
            } => {
                let x = self.fetch(a, b);
                let win = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                let mask = width_mask(*bits);
                let tg = *to_generic;
                self.write(*d, b, m, |l| {
                    if win == 0 {
                        x[l] & mask
                    } else if tg {
                        x[l].wrapping_add(win) & mask
                    } else {
                        x[l].wrapping_sub(win) & mask
                    }
                });
            }
            Op::Isspacep { space, p, a } => {
                let x = self.fetch(a, b);
                let mut r = 0u32;
                for l in lanes(m) {
                    let s = classify(x[l]).0;
                    let hit = match space {
                        Space::Global | Space::Const => s == Space::Global,
                        other => s == *other,
                    };
                    r |= (hit as u32) << l;
                }
                self.set_pred(*p, b, m, r);
            }
            _ => {}
        }
        Ok(())
    }

    /// Logs a global-memory access for the footprint oracle, when the launch asks.
    #[inline]
    pub(super) fn record(&self, space: Space, addr: u64, size: u32, write: bool) {
        // On the loads' path: nothing but this test when no log is asked for.
        let Some(log) = self.ctx.record else {
            return;
        };
        if let (Space::Global, a) = self.resolve(space, addr) {
            let block = self.ctaid[0] as u64
                + self.ctx.grid[0] as u64
                    * (self.ctaid[1] as u64 + self.ctx.grid[1] as u64 * self.ctaid[2] as u64);
            log.push(crate::access_log::Access {
                block,
                addr: a,
                size,
                write,
            });
        }
    }

    pub(super) fn resolve(&self, space: Space, addr: u64) -> (Space, u64) {
        match space {
            Space::Generic => classify(addr),
            Space::Param if addr >= PARAM_WINDOW => (Space::Param, addr - PARAM_WINDOW),
            Space::Const => (Space::Global, addr),
            s => (s, addr),
        }
    }

    pub(super) fn load(
        &mut self,
        space: Space,
        addr: u64,
        size: u32,
        lane: usize,
        _b: Bases,
        line: u32,
    ) -> Result<u64, EmuError> {
        let (s, a) = self.resolve(space, addr);
        match s {
            Space::Global | Space::Generic | Space::Const => {
                if a & (size as u64 - 1) != 0 {
                    return Err(misaligned(a, size as u64, line));
                }
                if let Some(al) = &self.w.cache {
                    if a >= al.base() && a.saturating_add(size as u64) <= al.base() + al.extent() {
                        return Ok(al.load(a - al.base(), size));
                    }
                }
                let al = self
                    .ctx
                    .space
                    .find_reach(a, size as u64)
                    .map_err(|_| illegal(a, size, line))?;
                let v = al.load(a - al.base(), size);
                self.w.cache = Some(al);
                Ok(v)
            }
            Space::Shared => read_le(self.shared, a, size).ok_or_else(|| illegal(addr, size, line)),
            Space::Local => {
                let ls = self.w.local_size as u64;
                if a.checked_add(size as u64).is_none_or(|e| e > ls) {
                    return Err(illegal(addr, size, line));
                }
                read_le(&self.w.local, lane as u64 * ls + a, size)
                    .ok_or_else(|| illegal(addr, size, line))
            }
            Space::Param => {
                read_le(self.ctx.params, a, size).ok_or_else(|| illegal(addr, size, line))
            }
        }
    }

    /// The common case of `st.global.u32` from a converged warp: neighbouring lanes writing the
    /// two halves of one 8-byte word store it whole, one plain atomic store instead of two
    /// read-modify-writes. Returns false (having stored nothing) unless every active lane's
    /// address is aligned and inside the warp's cached allocation.
    pub(super) fn store_pairs(&mut self, m: u32, base: &V, off: u64, val: &V) -> bool {
        let Some(al) = &self.w.cache else {
            return false;
        };
        let (lo, hi) = (al.base(), al.base() + al.extent());
        let ok = lanes(m).all(|l| {
            let a = base[l].wrapping_add(off);
            a & 3 == 0 && a >= lo && a.saturating_add(4) <= hi
        });
        if !ok {
            return false;
        }
        let mut rest = m;
        while rest != 0 {
            let l = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let a = base[l].wrapping_add(off);
            if l % 2 == 0
                && rest & (1 << (l + 1)) != 0
                && a & 7 == 0
                && base[l + 1].wrapping_add(off) == a + 4
            {
                rest &= !(1 << (l + 1));
                al.store(a - lo, 8, (val[l] & 0xffff_ffff) | (val[l + 1] << 32));
            } else {
                al.store(a - lo, 4, val[l]);
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        space: Space,
        addr: u64,
        size: u32,
        v: u64,
        lane: usize,
        _b: Bases,
        line: u32,
    ) -> Result<(), EmuError> {
        let (s, a) = self.resolve(space, addr);
        match s {
            Space::Global | Space::Generic | Space::Const => {
                if a & (size as u64 - 1) != 0 {
                    return Err(misaligned(a, size as u64, line));
                }
                if let Some(al) = &self.w.cache {
                    if a >= al.base() && a.saturating_add(size as u64) <= al.base() + al.extent() {
                        al.store(a - al.base(), size, v);
                        return Ok(());
                    }
                }
                let al = self
                    .ctx
                    .space
                    .find_reach(a, size as u64)
                    .map_err(|_| illegal(a, size, line))?;
                al.store(a - al.base(), size, v);
                self.w.cache = Some(al);
                Ok(())
            }
            Space::Shared => {
                write_le(self.shared, a, size, v).ok_or_else(|| illegal(addr, size, line))
            }
            Space::Local => {
                let ls = self.w.local_size as u64;
                if a.checked_add(size as u64).is_none_or(|e| e > ls) {
                    return Err(illegal(addr, size, line));
                }
                write_le(&mut self.w.local, lane as u64 * ls + a, size, v)
                    .ok_or_else(|| illegal(addr, size, line))
            }
            Space::Param => Err(illegal(addr, size, line)),
        }
    }
}

pub(super) fn classify(addr: u64) -> (Space, u64) {
    if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&addr) {
        (Space::Shared, addr - SHARED_WINDOW)
    } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&addr) {
        (Space::Local, addr - LOCAL_WINDOW)
    } else if (PARAM_WINDOW..PARAM_WINDOW + WINDOW_SIZE).contains(&addr) {
        (Space::Param, addr - PARAM_WINDOW)
    } else {
        (Space::Global, addr)
    }
}

#[inline]
pub(super) fn read_le(buf: &[u8], off: u64, size: u32) -> Option<u64> {
    let s = usize::try_from(off).ok()?;
    let e = s.checked_add(size as usize)?;
    let bytes = buf.get(s..e)?;
    Some(match bytes.len() {
        4 => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64,
        8 => u64::from_le_bytes(bytes.try_into().ok()?),
        1 => bytes[0] as u64,
        2 => u16::from_le_bytes([bytes[0], bytes[1]]) as u64,
        _ => {
            let mut w = [0u8; 8];
            let n = bytes.len().min(8);
            w[..n].copy_from_slice(&bytes[..n]);
            u64::from_le_bytes(w)
        }
    })
}

pub(super) fn write_le(buf: &mut [u8], off: u64, size: u32, v: u64) -> Option<()> {
    let s = usize::try_from(off).ok()?;
    let e = s.checked_add(size as usize)?;
    let dst = buf.get_mut(s..e)?;
    let n = dst.len().min(8);
    dst[..n].copy_from_slice(&v.to_le_bytes()[..n]);
    Some(())
}

pub(super) fn illegal(addr: u64, size: u32, line: u32) -> EmuError {
    EmuError::IllegalAddress(format!("{size}-byte access at {addr:#x} (PTX line {line})"))
}

pub(super) fn misaligned(addr: u64, size: u64, line: u32) -> EmuError {
    EmuError::MisalignedAddress(format!("{size}-byte access at {addr:#x} (PTX line {line})"))
}
