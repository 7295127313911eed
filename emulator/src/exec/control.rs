//! Calls and frames (entering and leaving functions, the per-lane local memory of frames),
//! the device runtime (`printf`, `assert`, `malloc`) and the instructions that do nothing here
//! (branches, calls and barriers are run by the split loop).

use super::*;

impl Runner<'_, '_> {
    /// Calls `func` for the lanes of `sp`, copying `args` (caller frame slots) into its
    /// parameters.
    pub(super) fn enter(
        &mut self,
        sp: &mut Split,
        func: u32,
        args: &[(u32, u32)],
        b: Bases,
    ) -> Result<(), EmuError> {
        let m = sp.mask;
        if sp.stack.len() >= 1024 {
            return Err(EmuError::LaunchFailed("call stack overflow".into()));
        }
        let callee = &self.ctx.funcs[func as usize];
        let mut nb = bases(self.ctx, func)?;
        // A recursive call reuses the callee's registers: keep the active ones.
        let active = sp.func == func || sp.stack.iter().any(|f| f.caller == func);
        let saved = active.then(|| Arc::new(self.save(func, nb)));
        let mut top = sp.stack.last().map_or(self.ctx.layout.local, |f| f.top);
        if active {
            nb.local = top.next_multiple_of(16);
            top = nb.local.saturating_add(callee.local_bytes);
            if top > MAX_LOCAL {
                return Err(EmuError::LaunchFailed("call stack overflow".into()));
            }
            self.grow_local(top);
            self.zero_local(m, nb.local, callee.local_bytes);
        }
        for (k, &(off, size)) in args.iter().enumerate() {
            if let Some(&(coff, csize)) = callee.params.get(k) {
                self.copy_local(m, b.local + off, nb.local + coff, size.min(csize));
            }
        }
        sp.stack.push(Frame {
            ret_pc: sp.pc + 1,
            caller: sp.func,
            call_pc: sp.pc,
            saved,
            local: nb.local,
            top,
        });
        sp.func = func;
        sp.pc = callee.entry.unwrap_or(0);
        Ok(())
    }

    /// The function whose address (see `FUNC_WINDOW`) is `addr`; anything else is a jump to
    /// an invalid program counter, as on hardware.
    pub(super) fn function_at(&self, addr: u64) -> Result<u32, EmuError> {
        let bad = || EmuError::InvalidPc(format!("indirect call to {addr:#x}, not a function"));
        let off = addr.checked_sub(FUNC_WINDOW).ok_or_else(bad)?;
        if off % FUNC_STRIDE != 0 {
            return Err(bad());
        }
        let f = u32::try_from(off / FUNC_STRIDE).map_err(|_| bad())?;
        match self.ctx.funcs.get(f as usize) {
            Some(func) if func.entry.is_some() && bases(self.ctx, f).is_ok() => Ok(f),
            _ => Err(bad()),
        }
    }

    pub(super) fn save(&self, func: u32, b: Bases) -> Saved {
        let f = &self.ctx.funcs[func as usize];
        let (r0, p0) = (b.reg as usize * 32, b.pred as usize);
        let regs = self
            .w
            .regs
            .get(r0..r0 + f.nregs as usize * 32)
            .unwrap_or(&[])
            .to_vec();
        let preds = self
            .w
            .preds
            .get(p0..p0 + f.npreds as usize)
            .unwrap_or(&[])
            .to_vec();
        Saved { regs, preds }
    }

    /// Puts back the lanes `m` of a saved frame.
    pub(super) fn restore(&mut self, func: u32, b: Bases, m: u32, saved: &Saved) {
        let f = &self.ctx.funcs[func as usize];
        for slot in 0..f.nregs as usize {
            for l in lanes(m) {
                if let (Some(d), Some(v)) = (
                    self.w.regs.get_mut((b.reg as usize + slot) * 32 + l),
                    saved.regs.get(slot * 32 + l),
                ) {
                    *d = *v;
                }
            }
        }
        for (p, v) in saved.preds.iter().enumerate() {
            if let Some(d) = self.w.preds.get_mut(b.pred as usize + p) {
                *d = (*d & !m) | (v & m);
            }
        }
    }

    /// `size` bytes at a local offset of each lane in `m`, lane by lane.
    pub(super) fn read_local(&self, m: u32, off: u32, size: u32) -> Vec<u8> {
        let ls = self.w.local_size as usize;
        let mut out = Vec::new();
        for l in lanes(m) {
            let s = l * ls + off as usize;
            match self.w.local.get(s..s + size as usize) {
                Some(b) => out.extend_from_slice(b),
                None => out.extend(std::iter::repeat_n(0, size as usize)),
            }
        }
        out
    }

    pub(super) fn write_local(&mut self, m: u32, off: u32, size: u32, bytes: &[u8]) {
        let ls = self.w.local_size as usize;
        for (k, l) in lanes(m).enumerate() {
            let s = l * ls + off as usize;
            let src = bytes.get(k * size as usize..(k + 1) * size as usize);
            if let (Some(d), Some(v)) = (self.w.local.get_mut(s..s + size as usize), src) {
                d.copy_from_slice(v);
            }
        }
    }

    /// Widens each lane's local memory to at least `top` bytes, keeping its contents.
    pub(super) fn grow_local(&mut self, top: u32) {
        let old = self.w.local_size as usize;
        if top as usize <= old {
            return;
        }
        let new = (top as usize).next_power_of_two().min(MAX_LOCAL as usize);
        let mut local = vec![0; new * 32];
        for l in 0..32 {
            if let (Some(d), Some(s)) = (
                local.get_mut(l * new..l * new + old),
                self.w.local.get(l * old..(l + 1) * old),
            ) {
                d.copy_from_slice(s);
            }
        }
        self.w.local = local;
        self.w.local_size = new as u32;
    }

    /// A fresh activation's local memory starts at zero, so runs are reproducible.
    pub(super) fn zero_local(&mut self, m: u32, off: u32, size: u32) {
        let ls = self.w.local_size as usize;
        for l in lanes(m) {
            let s = l * ls + off as usize;
            if let Some(d) = self.w.local.get_mut(s..s + size as usize) {
                d.fill(0);
            }
        }
    }

    pub(super) fn copy_local(&mut self, m: u32, from: u32, to: u32, size: u32) {
        let ls = self.w.local_size as usize;
        for l in lanes(m) {
            let (f, t) = (l * ls + from as usize, l * ls + to as usize);
            if f + size as usize <= self.w.local.len() && t + size as usize <= self.w.local.len() {
                self.w.local.copy_within(f..f + size as usize, t);
            }
        }
    }

    pub(super) fn builtin(
        &mut self,
        which: Builtin,
        args: &[(u32, u32)],
        rets: &[(u32, u32)],
        m: u32,
        b: Bases,
    ) -> Result<(), EmuError> {
        let arg_slot = |k: usize| args.get(k).map(|a| a.0);
        for l in lanes(m) {
            let local = |s: &Self, off: Option<u32>, size: u32| -> u64 {
                off.and_then(|o| {
                    read_le(
                        &s.w.local,
                        l as u64 * s.w.local_size as u64 + (b.local + o) as u64,
                        size,
                    )
                })
                .unwrap_or(0)
            };
            match which {
                Builtin::Vprintf => {
                    let fmt_ptr = local(self, arg_slot(0), 8);
                    let args_ptr = local(self, arg_slot(1), 8);
                    let fmt = self.cstring(fmt_ptr, l, b);
                    let mut src = PrintfArgs {
                        r: self,
                        lane: l,
                        b,
                        base: args_ptr,
                        cursor: 0,
                        count: 0,
                    };
                    let s = crate::printf::format_with(fmt.as_bytes(), &mut src);
                    let count = src.count;
                    let nbytes = s.len() as u64;
                    let before = self.ctx.printf_bytes.fetch_add(nbytes, Relaxed);
                    if before + nbytes <= PRINTF_LIMIT {
                        self.printf.push_str(&s);
                    }
                    if let Some(&(off, size)) = rets.first() {
                        let ls = self.w.local_size as u64;
                        write_le(
                            &mut self.w.local,
                            l as u64 * ls + (b.local + off) as u64,
                            size.min(4),
                            count,
                        );
                    }
                }
                Builtin::Malloc => {
                    // NULL when device memory runs out, as device malloc does.
                    let size = local(self, arg_slot(0), 8);
                    let p = self.ctx.space.heap_alloc(size).unwrap_or(0);
                    if let Some(&(off, size)) = rets.first() {
                        let ls = self.w.local_size as u64;
                        write_le(
                            &mut self.w.local,
                            l as u64 * ls + (b.local + off) as u64,
                            size.min(8),
                            p,
                        );
                    }
                }
                Builtin::Free => {
                    let p = local(self, arg_slot(0), 8);
                    if p != 0 && self.ctx.space.heap_free(p).is_err() {
                        return Err(EmuError::IllegalAddress(format!(
                            "free({p:#x}) of memory device malloc did not return"
                        )));
                    }
                    // The warp's cached allocation may be the one freed.
                    self.w.cache = None;
                }
                Builtin::AssertFail => {
                    let msg = local(self, arg_slot(0), 8);
                    let file = local(self, arg_slot(1), 8);
                    let line = local(self, arg_slot(2), 4);
                    let func = local(self, arg_slot(3), 8);
                    let (msg, file, func) = (
                        self.cstring(msg, l, b),
                        self.cstring(file, l, b),
                        self.cstring(func, l, b),
                    );
                    let c = self.ctx;
                    let t = self.w.id * 32 + l as u32;
                    let bx = c.block[0].max(1);
                    let by = c.block[1].max(1);
                    let tid = [t % bx, (t / bx) % by, t / (bx * by)];
                    self.printf.push_str(&format!(
                        "{file}:{line}: {func}: block: [{},{},{}], thread: [{},{},{}] Assertion `{msg}` failed.\n",
                        self.ctaid[0], self.ctaid[1], self.ctaid[2], tid[0], tid[1], tid[2]
                    ));
                }
            }
        }
        if which == Builtin::AssertFail {
            return Err(EmuError::Assert);
        }
        Ok(())
    }

    pub(super) fn cstring(&mut self, addr: u64, lane: usize, b: Bases) -> String {
        let mut bytes = Vec::new();
        let mut a = addr;
        while bytes.len() < 1 << 16 {
            match self.load(Space::Generic, a, 1, lane, b, 0) {
                Ok(0) | Err(_) => break,
                Ok(c) => bytes.push(c as u8),
            }
            a = a.wrapping_add(1);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// vprintf's argument buffer, read through the executing lane's view of memory.
struct PrintfArgs<'x, 'r, 'a> {
    r: &'x mut Runner<'r, 'a>,
    lane: usize,
    b: Bases,
    base: u64,
    cursor: u64,
    /// Arguments read: what device printf returns.
    count: u64,
}

impl crate::printf::Args for PrintfArgs<'_, '_, '_> {
    fn arg(&mut self, size: u32) -> u64 {
        // Each argument is aligned to its size in the buffer.
        self.cursor = self.cursor.next_multiple_of(size as u64);
        let v = self.r.load(
            Space::Generic,
            self.base.wrapping_add(self.cursor),
            size,
            self.lane,
            self.b,
            0,
        );
        self.cursor += size as u64;
        self.count += 1;
        v.unwrap_or(0)
    }

    fn cstr(&mut self, addr: u64) -> String {
        self.r.cstring(addr, self.lane, self.b)
    }
}
