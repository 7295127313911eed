//! Integer and bit arithmetic, moves, packing and unpacking.

use super::*;

impl Runner<'_, '_> {
    #[inline(always)]
    pub(super) fn exec_integer(
        &mut self,
        op: &Op,
        m: u32,
        b: Bases,
        _line: u32,
    ) -> Result<(), EmuError> {
        match op {
            Op::Mov { d, a, mask } => {
                let x = self.fetch(a, b);
                let mask = *mask;
                self.write(*d, b, m, |l| x[l] & mask);
            }
            Op::MovPred { d, a } => {
                let v = self.pmask(*a, b);
                self.set_pred(*d, b, m, v);
            }
            Op::Pack { d, parts, bits } => {
                let vals: Vec<V> = parts.iter().map(|p| self.fetch(p, b)).collect();
                let bits = *bits;
                let pm = width_mask(bits);
                self.write(*d, b, m, |l| {
                    vals.iter()
                        .enumerate()
                        .fold(0u64, |acc, (k, v)| acc | ((v[l] & pm) << (k as u32 * bits)))
                });
            }
            Op::Unpack { ds, a, bits } => {
                let x = self.fetch(a, b);
                let bits = *bits;
                let pm = width_mask(bits);
                for (k, d) in ds.iter().enumerate() {
                    let sh = k as u32 * bits;
                    self.write(*d, b, m, |l| if sh >= 64 { 0 } else { (x[l] >> sh) & pm });
                }
            }
            Op::Int2 {
                op,
                bits,
                signed,
                sat,
                d,
                a,
                b: bb,
            } => self.int2(*op, *bits, *signed, *sat, *d, a, bb, m, b),
            Op::Int1 {
                op,
                bits,
                signed,
                d,
                a,
            } => {
                let x = self.fetch(a, b);
                let (bits, signed) = (*bits, *signed);
                let mask = width_mask(bits);
                match op {
                    I1::Not => self.write(*d, b, m, |l| !x[l] & mask),
                    I1::Cnot => self.write(*d, b, m, |l| (x[l] & mask == 0) as u64),
                    I1::Neg => self.write(*d, b, m, |l| x[l].wrapping_neg() & mask),
                    I1::Abs => {
                        self.write(*d, b, m, |l| (sx(x[l], bits).wrapping_abs() as u64) & mask)
                    }
                    I1::Popc => self.write(*d, b, m, |l| (x[l] & mask).count_ones() as u64),
                    I1::Clz => self.write(*d, b, m, |l| {
                        let v = x[l] & mask;
                        (v.leading_zeros() - (64 - bits)) as u64
                    }),
                    I1::Brev => {
                        self.write(*d, b, m, |l| (x[l] & mask).reverse_bits() >> (64 - bits))
                    }
                    I1::Bfind | I1::BfindShift => {
                        let shift = *op == I1::BfindShift;
                        self.write(*d, b, m, |l| {
                            let mut v = x[l] & mask;
                            if signed && sx(v, bits) < 0 {
                                v = !v & mask;
                            }
                            if v == 0 {
                                0xFFFF_FFFF
                            } else {
                                let pos = 63 - v.leading_zeros() as u64;
                                if shift {
                                    bits as u64 - 1 - pos
                                } else {
                                    pos
                                }
                            }
                        })
                    }
                }
            }
            Op::Int3 {
                op,
                bits,
                signed,
                d,
                a,
                b: bb,
                c,
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                let (bits, signed) = (*bits, *signed);
                let mask = width_mask(bits);
                match op {
                    I3::MadLo => self.write(*d, b, m, |l| {
                        x[l].wrapping_mul(y[l]).wrapping_add(z[l]) & mask
                    }),
                    I3::MadHi => self.write(*d, b, m, |l| {
                        mul_hi(x[l], y[l], bits, signed).wrapping_add(z[l]) & mask
                    }),
                    I3::MadWide => {
                        let wm = width_mask(bits * 2);
                        self.write(*d, b, m, |l| {
                            mul_wide(x[l], y[l], bits, signed).wrapping_add(z[l]) & wm
                        })
                    }
                    I3::Bfe => self.write(*d, b, m, |l| bfe(x[l], y[l], z[l], bits, signed)),
                    I3::Prmt => self.write(*d, b, m, |l| prmt(x[l], y[l], z[l])),
                    I3::Lop3(lut) => {
                        let lut = *lut;
                        self.write(*d, b, m, |l| lop3(x[l], y[l], z[l], lut) & mask)
                    }
                    I3::Slct => self.write(*d, b, m, |l| {
                        let ge = if signed {
                            z[l] as u32 as i32 >= 0
                        } else {
                            f32::from_bits(z[l] as u32) >= 0.0
                        };
                        if ge {
                            x[l]
                        } else {
                            y[l]
                        }
                    }),
                    I3::Shf { left, wrap } => {
                        let (left, wrap) = (*left, *wrap);
                        self.write(*d, b, m, |l| {
                            let n = if wrap {
                                z[l] & 31
                            } else {
                                (z[l] & 0xFFFF_FFFF).min(32)
                            };
                            let v = ((y[l] & 0xFFFF_FFFF) << 32) | (x[l] & 0xFFFF_FFFF);
                            if left {
                                ((v << n) >> 32) & 0xFFFF_FFFF
                            } else {
                                (v >> n) & 0xFFFF_FFFF
                            }
                        })
                    }
                    I3::Mad24 { hi } => {
                        let hi = *hi;
                        self.write(*d, b, m, |l| {
                            let (p, q) = if signed {
                                (sx(x[l], 24) as i128, sx(y[l], 24) as i128)
                            } else {
                                ((x[l] & 0xFF_FFFF) as i128, (y[l] & 0xFF_FFFF) as i128)
                            };
                            let prod = (p * q) as u64;
                            let part = if hi { prod >> 16 } else { prod };
                            part.wrapping_add(z[l]) & 0xFFFF_FFFF
                        })
                    }
                    I3::Dp4a { sa, sb } => {
                        let (sa, sb) = (*sa, *sb);
                        self.write(*d, b, m, |l| {
                            let part = |v: u64, k: u32, s: bool| {
                                let byte = (v >> (8 * k)) & 0xff;
                                if s {
                                    byte as u8 as i8 as i64
                                } else {
                                    byte as i64
                                }
                            };
                            let sum: i64 =
                                (0..4).map(|k| part(x[l], k, sa) * part(y[l], k, sb)).sum();
                            (z[l] as u32 as i64).wrapping_add(sum) as u64 & 0xFFFF_FFFF
                        })
                    }
                    I3::Dp2a { sa, sb, hi } => {
                        let (sa, sb, hi) = (*sa, *sb, *hi);
                        self.write(*d, b, m, |l| {
                            let h = |k: u32| {
                                let v = (x[l] >> (16 * k)) & 0xffff;
                                if sa {
                                    v as u16 as i16 as i64
                                } else {
                                    v as i64
                                }
                            };
                            let byte = |k: u32| {
                                let v = (y[l] >> (8 * (k + if hi { 2 } else { 0 }))) & 0xff;
                                if sb {
                                    v as u8 as i8 as i64
                                } else {
                                    v as i64
                                }
                            };
                            let sum = h(0) * byte(0) + h(1) * byte(1);
                            (z[l] as u32 as i64).wrapping_add(sum) as u64 & 0xFFFF_FFFF
                        })
                    }
                    I3::Sad => self.write(*d, b, m, |l| {
                        let diff = if signed {
                            (sx(x[l], bits) - sx(y[l], bits)).unsigned_abs()
                        } else {
                            (x[l] & mask).abs_diff(y[l] & mask)
                        };
                        diff.wrapping_add(z[l]) & mask
                    }),
                }
            }
            Op::Bfi {
                bits,
                d,
                a,
                b: bb,
                c,
                e,
            } => {
                let (x, y, p, n) = (
                    self.fetch(a, b),
                    self.fetch(bb, b),
                    self.fetch(c, b),
                    self.fetch(e, b),
                );
                let bits = *bits;
                self.write(*d, b, m, |l| {
                    let (pos, len) = ((p[l] & 0xff) as u32, (n[l] & 0xff) as u32);
                    if len == 0 || pos >= bits {
                        return y[l];
                    }
                    let len = len.min(bits - pos);
                    let f = width_mask(len) << pos;
                    ((y[l] & !f) | ((x[l] << pos) & f)) & width_mask(bits)
                });
            }
            Op::Carry {
                sub,
                mad_hi,
                cin,
                cout,
                bits,
                d,
                a,
                b: bb,
                c,
            } => {
                let (x, y, z) = (self.fetch(a, b), self.fetch(bb, b), self.fetch(c, b));
                let bits = *bits;
                let mask = width_mask(bits) as u128;
                let cc = self.w.cc;
                let mut out_cc = 0u32;
                let mut res = [0u64; 32];
                for l in lanes(m) {
                    let ci = if *cin { ((cc >> l) & 1) as u128 } else { 0 };
                    let (xv, yv) = (x[l] as u128 & mask, y[l] as u128 & mask);
                    let (r, carry) = match mad_hi {
                        Some(hi) => {
                            let p = xv * yv;
                            let part = if *hi { (p >> bits) & mask } else { p & mask };
                            let s = part + (z[l] as u128 & mask) + ci;
                            (s & mask, s >> bits != 0)
                        }
                        None if *sub => {
                            let s = xv.wrapping_sub(yv).wrapping_sub(ci);
                            (s & mask, xv < yv + ci)
                        }
                        None => {
                            let s = xv + yv + ci;
                            (s & mask, s >> bits != 0)
                        }
                    };
                    res[l] = r as u64;
                    out_cc |= (carry as u32) << l;
                }
                self.write(*d, b, m, |l| res[l]);
                if *cout {
                    self.w.cc = (cc & !m) | (out_cc & m);
                }
            }
            _ => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn int2(
        &mut self,
        op: I2,
        bits: u32,
        signed: bool,
        sat: bool,
        d: u32,
        a: &Src,
        bb: &Src,
        m: u32,
        b: Bases,
    ) {
        let (x, y) = (self.fetch(a, b), self.fetch(bb, b));
        let mask = width_mask(bits);
        match op {
            I2::Add if sat && signed => self.write(d, b, m, |l| {
                (sx(x[l], bits)
                    .saturating_add(sx(y[l], bits))
                    .clamp(i32::MIN as i64, i32::MAX as i64) as u64)
                    & mask
            }),
            I2::Sub if sat && signed => self.write(d, b, m, |l| {
                (sx(x[l], bits)
                    .saturating_sub(sx(y[l], bits))
                    .clamp(i32::MIN as i64, i32::MAX as i64) as u64)
                    & mask
            }),
            I2::Add => self.write(d, b, m, |l| x[l].wrapping_add(y[l]) & mask),
            I2::Sub => self.write(d, b, m, |l| x[l].wrapping_sub(y[l]) & mask),
            I2::MulLo => self.write(d, b, m, |l| x[l].wrapping_mul(y[l]) & mask),
            I2::MulHi => self.write(d, b, m, |l| mul_hi(x[l], y[l], bits, signed) & mask),
            I2::MulWide => {
                let wm = width_mask(bits * 2);
                self.write(d, b, m, |l| mul_wide(x[l], y[l], bits, signed) & wm)
            }
            I2::Div if signed => self.write(d, b, m, |l| {
                let (p, q) = (sx(x[l], bits), sx(y[l], bits));
                if q == 0 {
                    mask
                } else {
                    (p.wrapping_div(q) as u64) & mask
                }
            }),
            I2::Div => self.write(d, b, m, |l| {
                (x[l] & mask).checked_div(y[l] & mask).unwrap_or(mask)
            }),
            I2::Rem if signed => self.write(d, b, m, |l| {
                let (p, q) = (sx(x[l], bits), sx(y[l], bits));
                if q == 0 {
                    x[l] & mask
                } else {
                    (p.wrapping_rem(q) as u64) & mask
                }
            }),
            I2::Rem => self.write(d, b, m, |l| {
                let (p, q) = (x[l] & mask, y[l] & mask);
                if q == 0 {
                    p
                } else {
                    p % q
                }
            }),
            I2::Min if signed => self.write(d, b, m, |l| {
                (sx(x[l], bits).min(sx(y[l], bits)) as u64) & mask
            }),
            I2::Max if signed => self.write(d, b, m, |l| {
                (sx(x[l], bits).max(sx(y[l], bits)) as u64) & mask
            }),
            I2::Min => self.write(d, b, m, |l| (x[l] & mask).min(y[l] & mask)),
            I2::Max => self.write(d, b, m, |l| (x[l] & mask).max(y[l] & mask)),
            I2::And => self.write(d, b, m, |l| x[l] & y[l] & mask),
            I2::Or => self.write(d, b, m, |l| (x[l] | y[l]) & mask),
            I2::Xor => self.write(d, b, m, |l| (x[l] ^ y[l]) & mask),
            I2::Shl => self.write(d, b, m, |l| {
                let s = y[l] & 0xFFFF_FFFF;
                if s >= bits as u64 {
                    0
                } else {
                    (x[l] << s) & mask
                }
            }),
            I2::Shr if signed => self.write(d, b, m, |l| {
                let s = (y[l] & 0xFFFF_FFFF).min(bits as u64 - 1);
                ((sx(x[l], bits) >> s) as u64) & mask
            }),
            I2::Shr => self.write(d, b, m, |l| {
                let s = y[l] & 0xFFFF_FFFF;
                if s >= bits as u64 {
                    0
                } else {
                    (x[l] & mask) >> s
                }
            }),
        }
    }
}

pub(super) fn mul_hi(x: u64, y: u64, bits: u32, signed: bool) -> u64 {
    if signed {
        ((sx(x, bits) as i128 * sx(y, bits) as i128) >> bits) as u64
    } else {
        let m = width_mask(bits) as u128;
        (((x as u128 & m) * (y as u128 & m)) >> bits) as u64
    }
}

pub(super) fn mul_wide(x: u64, y: u64, bits: u32, signed: bool) -> u64 {
    if signed {
        (sx(x, bits) as i128 * sx(y, bits) as i128) as u64
    } else {
        let m = width_mask(bits) as u128;
        ((x as u128 & m) * (y as u128 & m)) as u64
    }
}

pub(super) fn bfe(a: u64, b: u64, c: u64, bits: u32, signed: bool) -> u64 {
    let pos = (b & 0xff) as u32;
    let len = (c & 0xff) as u32;
    let msb = bits - 1;
    let bit = |i: u32| (a >> i) & 1;
    let sbit = if signed && len > 0 {
        bit((pos + len - 1).min(msb))
    } else {
        0
    };
    let mut r = 0u64;
    for i in 0..bits {
        let v = if i < len && pos + i <= msb {
            bit(pos + i)
        } else {
            sbit
        };
        r |= v << i;
    }
    r
}

pub(super) fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = (a & 0xFFFF_FFFF) | ((b & 0xFFFF_FFFF) << 32);
    let mut r = 0u64;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xf;
        let byte = (bytes >> ((sel & 7) * 8)) & 0xff;
        let byte = if sel & 8 != 0 {
            if byte & 0x80 != 0 {
                0xff
            } else {
                0
            }
        } else {
            byte
        };
        r |= byte << (8 * i);
    }
    r
}

pub(super) fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut r = 0u64;
    for i in 0..8 {
        if (lut >> i) & 1 != 0 {
            let ta = if i & 4 != 0 { a } else { !a };
            let tb = if i & 2 != 0 { b } else { !b };
            let tc = if i & 1 != 0 { c } else { !c };
            r |= ta & tb & tc;
        }
    }
    r
}
