//! Warp collectives: shuffles, votes, match and redux.

use super::*;

impl Runner<'_, '_> {
    #[inline(always)]
    pub(super) fn exec_warp(
        &mut self,
        op: &Op,
        m: u32,
        b: Bases,
        _line: u32,
    ) -> Result<(), EmuError> {
        match op {
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b: bb,
                c,
                ..
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                let mut res = [0u64; 32];
                let mut pv = 0u32;
                for l in lanes(m) {
                    let lane = l as u32;
                    let bval = (y[l] & 0x1f) as u32;
                    let cval = (z[l] & 0x1f) as u32;
                    let seg = ((z[l] >> 8) & 0x1f) as u32;
                    let max_lane = (lane & seg) | (cval & !seg);
                    let min_lane = lane & seg;
                    let (j, ok) = match mode {
                        ShflMode::Up => {
                            let j = lane as i32 - bval as i32;
                            (j, j >= max_lane as i32)
                        }
                        ShflMode::Down => {
                            let j = (lane + bval) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Bfly => {
                            let j = (lane ^ bval) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Idx => {
                            let j = (min_lane | (bval & !seg)) as i32;
                            (j, j <= max_lane as i32)
                        }
                    };
                    let src = if ok && (0..32).contains(&j) {
                        j as usize
                    } else {
                        l
                    };
                    res[l] = x[src] & 0xFFFF_FFFF;
                    pv |= (ok as u32) << l;
                }
                self.write(*d, b, m, |l| res[l]);
                self.set_pred(*p, b, m, pv);
            }
            Op::Vote { mode, d, a, .. } => {
                let v = self.pmask(*a, b) & m;
                match mode {
                    VoteMode::Ballot => self.write(*d, b, m, |_| v as u64),
                    VoteMode::All => self.set_pred(*d, b, m, if v == m { FULL } else { 0 }),
                    VoteMode::Any => self.set_pred(*d, b, m, if v != 0 { FULL } else { 0 }),
                    VoteMode::Uni => {
                        self.set_pred(*d, b, m, if v == m || v == 0 { FULL } else { 0 })
                    }
                }
            }
            Op::Activemask { d } => self.write(*d, b, m, |_| m as u64),
            Op::Match {
                all, bits, d, p, a, ..
            } => {
                let x = self.fetch(a, b);
                let mask = width_mask(*bits);
                let mut res = [0u64; 32];
                let mut same = true;
                let first = m.trailing_zeros() as usize;
                for l in lanes(m) {
                    let mut mm = 0u32;
                    for k in lanes(m) {
                        if x[k] & mask == x[l] & mask {
                            mm |= 1 << k;
                        }
                    }
                    res[l] = mm as u64;
                    same &= x[l] & mask == x[first] & mask;
                }
                if *all {
                    let v = if same { m as u64 } else { 0 };
                    self.write(*d, b, m, |_| v);
                    self.set_pred(*p, b, m, if same { FULL } else { 0 });
                } else {
                    self.write(*d, b, m, |l| res[l]);
                }
            }
            Op::Redux {
                op, signed, d, a, ..
            } => {
                let x = self.fetch(a, b);
                let vals = lanes(m).map(|l| x[l] & 0xFFFF_FFFF);
                let r = match (op, signed) {
                    (ReduxOp::Add, _) => vals.fold(0u64, |s, v| s.wrapping_add(v)) & 0xFFFF_FFFF,
                    (ReduxOp::Min, true) => {
                        vals.map(|v| v as u32 as i32).min().unwrap_or(0) as u32 as u64
                    }
                    (ReduxOp::Max, true) => {
                        vals.map(|v| v as u32 as i32).max().unwrap_or(0) as u32 as u64
                    }
                    (ReduxOp::Min, false) => vals.min().unwrap_or(0),
                    (ReduxOp::Max, false) => vals.max().unwrap_or(0),
                    (ReduxOp::And, _) => vals.fold(0xFFFF_FFFF, |s, v| s & v),
                    (ReduxOp::Or, _) => vals.fold(0, |s, v| s | v),
                    (ReduxOp::Xor, _) => vals.fold(0, |s, v| s ^ v),
                };
                self.write(*d, b, m, |_| r);
            }
            _ => {}
        }
        Ok(())
    }
}
