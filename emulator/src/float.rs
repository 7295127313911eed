//! Floating point with PTX semantics: IEEE rounding modes done exactly through error-free
//! transformations in f64, `.ftz`, `.sat`, PTX min/max NaN rules, f16/bf16 via `half`.

use half::{bf16, f16};

use crate::ir::{FTy, Rnd, F1, F2};

pub fn next_up32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down32(x: f32) -> f32 {
    -next_up32(-x)
}

pub fn next_up64(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down64(x: f64) -> f64 {
    -next_up64(-x)
}

/// Error-free sum: `a + b == s + e` exactly.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    if !s.is_finite() {
        return (s, 0.0);
    }
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// Rounds the exact value `x + err` (|err| below half an ulp of `x` in f64) to f32.
pub fn to_f32(x: f64, err: f64, mode: Rnd) -> f32 {
    if x.is_nan() {
        return f32::NAN;
    }
    let f = x as f32;
    let fd = f as f64;
    // Ordering of f against the exact value.
    let gt = fd > x || (fd == x && err < 0.0);
    let lt = fd < x || (fd == x && err > 0.0);
    match mode {
        Rnd::Rn => {
            if fd != x && err != 0.0 && f.is_finite() {
                let (lo, hi) = if fd < x {
                    (f, next_up32(f))
                } else {
                    (next_down32(f), f)
                };
                if hi.is_finite() && lo.is_finite() && (lo as f64 + hi as f64) / 2.0 == x {
                    return if err > 0.0 { hi } else { lo };
                }
            }
            f
        }
        Rnd::Rm => {
            if gt {
                next_down32(f)
            } else {
                f
            }
        }
        Rnd::Rp => {
            if lt {
                next_up32(f)
            } else {
                f
            }
        }
        Rnd::Rz => {
            let neg = x < 0.0 || (x == 0.0 && err < 0.0);
            if !neg && gt {
                next_down32(f)
            } else if neg && lt {
                next_up32(f)
            } else {
                f
            }
        }
    }
}

/// Adjusts the round-to-nearest f64 result `r` of an operation whose exact value is `r + err`.
pub fn adjust64(r: f64, err: f64, mode: Rnd) -> f64 {
    if err == 0.0 || r.is_nan() {
        return r;
    }
    match mode {
        Rnd::Rn => r,
        Rnd::Rm => {
            if err < 0.0 {
                next_down64(r)
            } else {
                r
            }
        }
        Rnd::Rp => {
            if err > 0.0 {
                next_up64(r)
            } else {
                r
            }
        }
        Rnd::Rz => {
            if r > 0.0 && err < 0.0 {
                next_down64(r)
            } else if r < 0.0 && err > 0.0 {
                next_up64(r)
            } else {
                r
            }
        }
    }
}

/// Exact zero sums are -0 when rounding down, +0 otherwise (IEEE 754 6.3).
fn zero_sign32(r: f32, a: f32, b: f32, mode: Rnd) -> f32 {
    if r == 0.0 && !(a == 0.0 && b == 0.0 && a.is_sign_negative() == b.is_sign_negative()) {
        return if mode == Rnd::Rm { -0.0 } else { 0.0 };
    }
    r
}

fn zero_sign64(r: f64, a: f64, b: f64, mode: Rnd) -> f64 {
    if r == 0.0 && !(a == 0.0 && b == 0.0 && a.is_sign_negative() == b.is_sign_negative()) {
        return if mode == Rnd::Rm { -0.0 } else { 0.0 };
    }
    r
}

pub fn add32(a: f32, b: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return a + b;
    }
    let (s, e) = two_sum(a as f64, b as f64);
    zero_sign32(to_f32(s, e, mode), a, b, mode)
}

pub fn mul32(a: f32, b: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return a * b;
    }
    to_f32(a as f64 * b as f64, 0.0, mode)
}

pub fn div32(a: f32, b: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return a / b;
    }
    let (a, b) = (a as f64, b as f64);
    let q = a / b;
    if !q.is_finite() || q == 0.0 {
        return to_f32(q, 0.0, mode);
    }
    let rem = (-q).mul_add(b, a);
    to_f32(q, rem * b.signum(), mode)
}

pub fn sqrt32(a: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return a.sqrt();
    }
    let a = a as f64;
    let r = a.sqrt();
    if !r.is_finite() || r == 0.0 {
        return r as f32;
    }
    let rem = (-r).mul_add(r, a);
    to_f32(r, rem, mode)
}

/// Round-to-nearest f32 fma without a libm call on CPUs built without FMA: the f64 product is
/// exact and one f64 rounding of the sum cannot cross an f32 rounding boundary, so only a sum
/// that lands exactly on a midpoint (or in the subnormal range) needs the slow exact path.
#[inline(always)]
pub fn fma32_rn(a: f32, b: f32, c: f32) -> f32 {
    let s = a as f64 * b as f64 + c as f64;
    if (s.to_bits() & 0x1FFF_FFFF) == 0x1000_0000 || s.abs() < f32::MIN_POSITIVE as f64 {
        return a.mul_add(b, c);
    }
    s as f32
}

pub fn fma32(a: f32, b: f32, c: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return fma32_rn(a, b, c);
    }
    let p = a as f64 * b as f64;
    let (s, e) = two_sum(p, c as f64);
    let r = to_f32(s, e, mode);
    if r == 0.0 && p != 0.0 && s == 0.0 && e == 0.0 {
        return if mode == Rnd::Rm { -0.0 } else { 0.0 };
    }
    r
}

pub fn add64(a: f64, b: f64, mode: Rnd) -> f64 {
    if mode == Rnd::Rn {
        return a + b;
    }
    let (s, e) = two_sum(a, b);
    zero_sign64(adjust64(s, e, mode), a, b, mode)
}

pub fn mul64(a: f64, b: f64, mode: Rnd) -> f64 {
    let r = a * b;
    if mode == Rnd::Rn || !r.is_finite() {
        return directed_overflow64(r, mode);
    }
    adjust64(r, a.mul_add(b, -r), mode)
}

fn directed_overflow64(r: f64, mode: Rnd) -> f64 {
    if r.is_infinite() {
        match (mode, r > 0.0) {
            (Rnd::Rz, _) | (Rnd::Rm, true) | (Rnd::Rp, false) => return f64::MAX.copysign(r),
            _ => {}
        }
    }
    r
}

pub fn div64(a: f64, b: f64, mode: Rnd) -> f64 {
    let q = a / b;
    if mode == Rnd::Rn || !q.is_finite() || q == 0.0 {
        return q;
    }
    adjust64(q, (-q).mul_add(b, a) * b.signum(), mode)
}

pub fn sqrt64(a: f64, mode: Rnd) -> f64 {
    let r = a.sqrt();
    if mode == Rnd::Rn || !r.is_finite() || r == 0.0 {
        return r;
    }
    adjust64(r, (-r).mul_add(r, a), mode)
}

pub fn fma64(a: f64, b: f64, c: f64, mode: Rnd) -> f64 {
    let r = a.mul_add(b, c);
    if mode == Rnd::Rn || !r.is_finite() {
        return r;
    }
    // exact = p + pe + c with p + pe == a * b exactly; compare with r.
    let p = a * b;
    let pe = a.mul_add(b, -p);
    let (s, e) = two_sum(p, c);
    let err = (s - r) + (e + pe);
    adjust64(r, err, mode)
}

pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

pub fn sat32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

pub fn sat64(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// `min.NaN`/`max.NaN`: a NaN operand makes the result the canonical NaN.
fn nan_or(a: f64, b: f64, f: fn(f64, f64) -> f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        f(a, b)
    }
}

pub fn min64(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            if a.is_sign_negative() {
                a
            } else {
                b
            }
        }
        _ => a.min(b),
    }
}

pub fn max64(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            if a.is_sign_negative() {
                b
            } else {
                a
            }
        }
        _ => a.max(b),
    }
}

pub const NAN32: u64 = 0x7FFF_FFFF;
pub const NAN64: u64 = 0x7FFF_FFFF_FFFF_FFFF;

/// A binary float op on one lane's bits.
pub fn bin(op: F2, ty: FTy, rnd: Rnd, ftz: bool, sat: bool, a: u64, b: u64) -> u64 {
    match ty {
        FTy::F32 => {
            let (mut x, mut y) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
            if ftz {
                x = ftz32(x);
                y = ftz32(y);
            }
            let mut r = match op {
                F2::Add => add32(x, y, rnd),
                F2::Sub => add32(x, -y, rnd),
                F2::Mul => mul32(x, y, rnd),
                F2::Div => div32(x, y, rnd),
                F2::Min => min64(x as f64, y as f64) as f32,
                F2::Max => max64(x as f64, y as f64) as f32,
                F2::MinNaN => nan_or(x as f64, y as f64, min64) as f32,
                F2::MaxNaN => nan_or(x as f64, y as f64, max64) as f32,
                F2::Copysign => y.copysign(x),
            };
            if ftz {
                r = ftz32(r);
            }
            if sat {
                r = sat32(r);
            }
            if r.is_nan() && !matches!(op, F2::Copysign) {
                return NAN32;
            }
            r.to_bits() as u64
        }
        FTy::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            let mut r = match op {
                F2::Add => add64(x, y, rnd),
                F2::Sub => add64(x, -y, rnd),
                F2::Mul => mul64(x, y, rnd),
                F2::Div => div64(x, y, rnd),
                F2::Min => min64(x, y),
                F2::Max => max64(x, y),
                F2::MinNaN => nan_or(x, y, min64),
                F2::MaxNaN => nan_or(x, y, max64),
                F2::Copysign => y.copysign(x),
            };
            if sat {
                r = sat64(r);
            }
            if r.is_nan() && !matches!(op, F2::Copysign) {
                return NAN64;
            }
            r.to_bits()
        }
        FTy::F16 | FTy::BF16 => {
            half_bin(op, ty == FTy::BF16, rnd, ftz, sat, a as u16, b as u16) as u64
        }
        FTy::F16x2 | FTy::BF16x2 => {
            let bf = ty == FTy::BF16x2;
            let lo = half_bin(op, bf, rnd, ftz, sat, a as u16, b as u16) as u64;
            let hi = half_bin(op, bf, rnd, ftz, sat, (a >> 16) as u16, (b >> 16) as u16) as u64;
            lo | (hi << 16)
        }
    }
}

pub fn h2f(bits: u16, bf: bool) -> f64 {
    if bf {
        bf16::from_bits(bits).to_f64()
    } else {
        f16::from_bits(bits).to_f64()
    }
}

/// Rounds `x` to f16/bf16 in `mode`.
pub fn f2h(x: f64, bf: bool, mode: Rnd) -> u16 {
    if x.is_nan() {
        return 0x7FFF;
    }
    // `half` rounds from f64 through the upper 32 bits only (or through f32, with F16C), which
    // misrounds values just above a tie: fold the lower bits into a sticky bit first. 20
    // mantissa bits are plenty for 10 and hold exactly in an f32.
    let v = x.to_bits();
    let folded = if v & 0xFFFF_FFFF != 0 {
        f64::from_bits((v | 1 << 32) & !0xFFFF_FFFF)
    } else {
        x
    };
    let bits = if bf {
        bf16::from_f64(folded).to_bits()
    } else {
        f16::from_f64(folded).to_bits()
    };
    if mode == Rnd::Rn {
        return bits;
    }
    let v = h2f(bits, bf);
    let up = |b: u16| -> u16 {
        // next representable above (in value) for sign-magnitude bits
        if b & 0x8000 == 0 {
            b + 1
        } else if b == 0x8000 {
            1
        } else {
            b - 1
        }
    };
    let down = |b: u16| -> u16 {
        if b == 0 {
            0x8001
        } else if b & 0x8000 == 0 {
            b - 1
        } else {
            b + 1
        }
    };
    let neg = x < 0.0;
    match mode {
        Rnd::Rm if v > x => down(bits),
        Rnd::Rp if v < x => up(bits),
        Rnd::Rz if !neg && v > x => down(bits),
        Rnd::Rz if neg && v < x => up(bits),
        _ => bits,
    }
}

fn half_bin(op: F2, bf: bool, rnd: Rnd, ftz: bool, sat: bool, a: u16, b: u16) -> u16 {
    let (x, y) = (h2f(a, bf), h2f(b, bf));
    let r = match op {
        F2::Add => odd_sum(x, y),
        F2::Sub => odd_sum(x, -y),
        F2::Mul => x * y,
        F2::Div => x / y,
        F2::Min => min64(x, y),
        F2::Max => max64(x, y),
        F2::MinNaN => nan_or(x, y, min64),
        F2::MaxNaN => nan_or(x, y, max64),
        F2::Copysign => y.copysign(x),
    };
    let _ = ftz;
    let r = if sat { sat64(r) } else { r };
    f2h(r, bf, rnd)
}

pub fn fma(ty: FTy, rnd: Rnd, ftz: bool, sat: bool, a: u64, b: u64, c: u64) -> u64 {
    match ty {
        FTy::F32 => {
            let (mut x, mut y, mut z) = (
                f32::from_bits(a as u32),
                f32::from_bits(b as u32),
                f32::from_bits(c as u32),
            );
            if ftz {
                x = ftz32(x);
                y = ftz32(y);
                z = ftz32(z);
            }
            let mut r = fma32(x, y, z, rnd);
            if ftz {
                r = ftz32(r);
            }
            if sat {
                r = sat32(r);
            }
            if r.is_nan() {
                return NAN32;
            }
            r.to_bits() as u64
        }
        FTy::F64 => {
            let mut r = fma64(f64::from_bits(a), f64::from_bits(b), f64::from_bits(c), rnd);
            if sat {
                r = sat64(r);
            }
            if r.is_nan() {
                return NAN64;
            }
            r.to_bits()
        }
        FTy::F16 | FTy::BF16 => {
            let bf = ty == FTy::BF16;
            half_fma(bf, rnd, ftz, sat, a as u16, b as u16, c as u16) as u64
        }
        FTy::F16x2 | FTy::BF16x2 => {
            let bf = ty == FTy::BF16x2;
            let lo = half_fma(bf, rnd, ftz, sat, a as u16, b as u16, c as u16) as u64;
            let hi = half_fma(
                bf,
                rnd,
                ftz,
                sat,
                (a >> 16) as u16,
                (b >> 16) as u16,
                (c >> 16) as u16,
            ) as u64;
            lo | (hi << 16)
        }
    }
}

fn half_fma(bf: bool, rnd: Rnd, ftz: bool, sat: bool, a: u16, b: u16, c: u16) -> u16 {
    let f = |h: u16| if ftz && !bf { ftz16(h) } else { h };
    // The product of two halves is exact in f64; only the sum rounds.
    let r = odd_sum(h2f(f(a), bf) * h2f(f(b), bf), h2f(f(c), bf));
    f(f2h(if sat { sat64(r) } else { r }, bf, rnd))
}

/// An f16 subnormal flushed to zero of the same sign (`.ftz` on f16; bf16 has no `.ftz`).
fn ftz16(h: u16) -> u16 {
    if h & 0x7C00 == 0 {
        h & 0x8000
    } else {
        h
    }
}

/// `a + b` rounded to odd: an inexact sum gets an odd last bit, so rounding it once more to a
/// half (11 bits or fewer, against f64's 53) gives the correctly rounded sum in every mode.
/// bf16's exponent range is f32's, so a plain f64 sum of two bf16 values can be inexact.
fn odd_sum(a: f64, b: f64) -> f64 {
    let s = a + b;
    if !s.is_finite() {
        return s;
    }
    // Knuth's TwoSum: `e` is exactly the rounding error of `s`.
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    let bits = s.to_bits();
    if e == 0.0 || bits & 1 == 1 {
        return s;
    }
    // Step one ulp towards the exact value; a zero `s` with an error cannot happen (the sum of
    // two floats that cancels is exact).
    if (e > 0.0) == (s > 0.0) {
        f64::from_bits(bits + 1)
    } else {
        f64::from_bits(bits - 1)
    }
}

/// PTX's `.relu` on one or two halves in `bits`: a negative result becomes +0, a NaN the
/// canonical NaN.
pub fn relu_half(ty: FTy, bits: u64) -> u64 {
    let one = |h: u16| -> u16 {
        if h & 0x7FFF
            > if ty == FTy::BF16 || ty == FTy::BF16x2 {
                0x7F80
            } else {
                0x7C00
            }
        {
            0x7FFF
        } else if h & 0x8000 != 0 {
            0
        } else {
            h
        }
    };
    match ty {
        FTy::F16x2 | FTy::BF16x2 => {
            one(bits as u16) as u64 | (one((bits >> 16) as u16) as u64) << 16
        }
        _ => one(bits as u16) as u64,
    }
}

pub fn un(op: F1, ty: FTy, rnd: Rnd, ftz: bool, sat: bool, a: u64) -> u64 {
    match ty {
        FTy::F32 => {
            let mut x = f32::from_bits(a as u32);
            if ftz {
                x = ftz32(x);
            }
            let xd = x as f64;
            let mut r = match op {
                F1::Neg => -x,
                F1::Abs => x.abs(),
                F1::Rcp => div32(1.0, x, rnd),
                F1::RcpApprox => (1.0 / xd) as f32,
                F1::Sqrt => sqrt32(x, rnd),
                F1::SqrtApprox => xd.sqrt() as f32,
                F1::Rsqrt => (1.0 / xd.sqrt()) as f32,
                F1::Ex2 => xd.exp2() as f32,
                F1::Lg2 => xd.log2() as f32,
                F1::Sin => xd.sin() as f32,
                F1::Cos => xd.cos() as f32,
                F1::Tanh => xd.tanh() as f32,
                F1::Round(m) => round_int(xd, m) as f32,
            };
            if ftz {
                r = ftz32(r);
            }
            if sat {
                r = sat32(r);
            }
            if r.is_nan() && !matches!(op, F1::Neg | F1::Abs) {
                return NAN32;
            }
            r.to_bits() as u64
        }
        FTy::F64 => {
            let x = f64::from_bits(a);
            let mut r = match op {
                F1::Neg => -x,
                F1::Abs => x.abs(),
                F1::Rcp => div64(1.0, x, rnd),
                F1::RcpApprox => 1.0 / x,
                F1::Sqrt => sqrt64(x, rnd),
                F1::SqrtApprox => x.sqrt(),
                F1::Rsqrt => 1.0 / x.sqrt(),
                F1::Ex2 => x.exp2(),
                F1::Lg2 => x.log2(),
                F1::Sin => x.sin(),
                F1::Cos => x.cos(),
                F1::Tanh => x.tanh(),
                F1::Round(m) => round_int(x, m),
            };
            if sat {
                r = sat64(r);
            }
            r.to_bits()
        }
        FTy::F16 | FTy::BF16 => half_un(op, ty == FTy::BF16, rnd, sat, a as u16) as u64,
        FTy::F16x2 | FTy::BF16x2 => {
            let bf = ty == FTy::BF16x2;
            let lo = half_un(op, bf, rnd, sat, a as u16) as u64;
            let hi = half_un(op, bf, rnd, sat, (a >> 16) as u16) as u64;
            lo | (hi << 16)
        }
    }
}

fn half_un(op: F1, bf: bool, rnd: Rnd, sat: bool, a: u16) -> u16 {
    match op {
        F1::Neg => return a ^ 0x8000,
        F1::Abs => return a & 0x7FFF,
        _ => {}
    }
    let x = h2f(a, bf);
    let r = match op {
        F1::Rcp | F1::RcpApprox => 1.0 / x,
        F1::Sqrt | F1::SqrtApprox => x.sqrt(),
        F1::Rsqrt => 1.0 / x.sqrt(),
        F1::Ex2 => x.exp2(),
        F1::Lg2 => x.log2(),
        F1::Sin => x.sin(),
        F1::Cos => x.cos(),
        F1::Tanh => x.tanh(),
        F1::Round(m) => round_int(x, m),
        F1::Neg | F1::Abs => x,
    };
    f2h(if sat { sat64(r) } else { r }, bf, rnd)
}

/// Rounds to an integral value (`.rni` ties to even, `.rzi`, `.rmi`, `.rpi`); `None` copies.
pub fn round_int(x: f64, m: Option<Rnd>) -> f64 {
    match m {
        None => x,
        Some(Rnd::Rn) => x.round_ties_even(),
        Some(Rnd::Rz) => x.trunc(),
        Some(Rnd::Rm) => x.floor(),
        Some(Rnd::Rp) => x.ceil(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_of_add_and_mul() {
        let a = 1.0f32;
        let b = f32::from_bits(1); // tiny
        assert_eq!(add32(a, b, Rnd::Rn), 1.0);
        assert_eq!(add32(a, b, Rnd::Rp), next_up32(1.0));
        assert_eq!(add32(a, b, Rnd::Rm), 1.0);
        assert_eq!(add32(a, -b, Rnd::Rm), next_down32(1.0));
        assert_eq!(add32(a, -b, Rnd::Rz), next_down32(1.0));
        assert_eq!(add32(1.0, -1.0, Rnd::Rm).to_bits(), (-0.0f32).to_bits());
        let x = 1.0f32 / 3.0;
        assert_eq!(mul32(x, 3.0, Rnd::Rn), x * 3.0);
        assert!(mul32(x, 3.0, Rnd::Rm) <= mul32(x, 3.0, Rnd::Rp));
        assert_eq!(div32(1.0, 3.0, Rnd::Rz), div32(1.0, 3.0, Rnd::Rm));
        assert_eq!(
            div32(1.0, 3.0, Rnd::Rp),
            next_up32(div32(1.0, 3.0, Rnd::Rm))
        );
        assert_eq!(sqrt64(2.0, Rnd::Rp), next_up64(sqrt64(2.0, Rnd::Rm)));
        assert_eq!(add64(1.0, 1e-30, Rnd::Rp), next_up64(1.0));
        assert_eq!(fma64(1.0, 1.0, 1e-30, Rnd::Rp), next_up64(1.0));
        assert_eq!(fma32(1.0, 1.0, 1e-30, Rnd::Rp), next_up32(1.0));
        assert_eq!(fma32(1.0, 1.0, -1e-30, Rnd::Rz), next_down32(1.0));
        assert_eq!(fma32(1.0, 1.0, -1e-30, Rnd::Rn), 1.0);
    }

    #[test]
    fn fma_relu_on_halves() {
        const ONE: u64 = 0x3F80; // bf16 1.0
        let bf = |v: f32| half::bf16::from_f32(v).to_bits() as u64;
        let relu = |ty, a, b, c| relu_half(ty, fma(ty, Rnd::Rn, false, false, a, b, c));
        // 2 * 3 + 1 = 7 stays; 2 * -3 + 1 = -5 becomes +0; -0 becomes +0.
        assert_eq!(relu(FTy::BF16, bf(2.0), bf(3.0), ONE), 0x40E0);
        assert_eq!(relu(FTy::BF16, bf(2.0), bf(-3.0), ONE), 0);
        assert_eq!(relu(FTy::BF16, bf(-0.0), ONE, bf(-0.0)), 0);
        // NaN in, and inf * 0, give the canonical NaN.
        assert_eq!(relu(FTy::BF16, 0xFFC1, ONE, ONE), 0x7FFF);
        assert_eq!(relu(FTy::BF16, 0x7F80, 0, ONE), 0x7FFF);
        // -inf is negative: +0.
        assert_eq!(relu(FTy::BF16, 0xFF80, ONE, ONE), 0);
        // bf16x2: each half on its own (low: 7, high: -5 -> 0).
        let pair = |lo: u64, hi: u64| lo | hi << 16;
        assert_eq!(
            relu(
                FTy::BF16x2,
                pair(bf(2.0), bf(2.0)),
                pair(bf(3.0), bf(-3.0)),
                pair(ONE, ONE)
            ),
            0x40E0
        );
        // f16: 0.5 * -0.5 + 0.125 = -0.125 -> 0; 0.5 * 0.5 + 0.125 = 0.375 (0x3600).
        let h = |v: f32| half::f16::from_f32(v).to_bits() as u64;
        assert_eq!(relu(FTy::F16, h(0.5), h(-0.5), h(0.125)), 0);
        assert_eq!(relu(FTy::F16, h(0.5), h(0.5), h(0.125)), 0x3600);
        assert_eq!(relu_half(FTy::F16x2, 0x7C01_BC00), 0x7FFF_0000);
        // Without .relu the negative result stays.
        assert_eq!(
            fma(FTy::BF16, Rnd::Rn, false, false, bf(2.0), bf(-3.0), ONE),
            bf(-5.0)
        );
    }

    #[test]
    fn halves_round_once_from_the_exact_value() {
        // bf16 (1 + 2^-4)^2 = 1 + 2^-3 + 2^-8 is a tie between 0x3F90 and 0x3F91: even wins,
        // but a tiny addend must tip it up, which rounding the sum to f64 first loses.
        let a = 0x3F88;
        assert_eq!(fma(FTy::BF16, Rnd::Rn, false, false, a, a, 0), 0x3F90);
        assert_eq!(fma(FTy::BF16, Rnd::Rn, false, false, a, a, 0x0D80), 0x3F91);
        assert_eq!(fma(FTy::BF16, Rnd::Rn, false, false, a, a, 0x8D80), 0x3F90);
        // Directed rounding sees the addend too.
        assert_eq!(
            fma(FTy::BF16, Rnd::Rz, false, false, 0x3F80, 0x3F80, 0x8D80),
            0x3F7F
        );
        assert_eq!(
            fma(FTy::BF16, Rnd::Rp, false, false, 0x3F80, 0x3F80, 0x0D80),
            0x3F81
        );
        // bf16 add of 1 and 2^-100 rounded up.
        assert_eq!(
            bin(F2::Add, FTy::BF16, Rnd::Rp, false, false, 0x3F80, 0x0D80),
            0x3F81
        );
        // f64 -> half conversions: just above a tie rounds up.
        let above = |t: f64| f64::from_bits(t.to_bits() + 1);
        assert_eq!(f2h(above(1.0 + 2f64.powi(-8)), true, Rnd::Rn), 0x3F81);
        assert_eq!(f2h(1.0 + 2f64.powi(-8), true, Rnd::Rn), 0x3F80);
        assert_eq!(f2h(above(1.0 + 2f64.powi(-11)), false, Rnd::Rn), 0x3C01);
        assert_eq!(f2h(1.0 + 2f64.powi(-11), false, Rnd::Rn), 0x3C00);
    }

    #[test]
    fn f16_ftz_flushes_subnormals_in_and_out() {
        let tiny = 0x0001; // smallest f16 subnormal
        assert_eq!(fma(FTy::F16, Rnd::Rn, false, false, tiny, 0x3C00, 0), 1);
        assert_eq!(fma(FTy::F16, Rnd::Rn, true, false, tiny, 0x3C00, 0), 0);
        // 2^-14 (smallest normal) * 0.5 is subnormal: flushed.
        assert_eq!(fma(FTy::F16, Rnd::Rn, true, false, 0x0400, 0x3800, 0), 0);
        assert_eq!(
            fma(FTy::F16, Rnd::Rn, false, false, 0x0400, 0x3800, 0),
            0x0200
        );
    }

    #[test]
    fn double_rounding_midpoint_is_broken_by_the_error() {
        // 1 + 2^-24 is a midpoint between two f32; a tiny positive error must round up.
        let x = 1.0f64 + 2f64.powi(-24);
        assert_eq!(to_f32(x, 1e-40, Rnd::Rn), next_up32(1.0));
        assert_eq!(to_f32(x, -1e-40, Rnd::Rn), 1.0);
        assert_eq!(to_f32(x, 0.0, Rnd::Rn), 1.0);
    }

    #[test]
    fn fast_fma_matches_the_exact_one() {
        let mut x = 0x1234_5678u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            f32::from_bits(x)
        };
        for _ in 0..200_000 {
            let (a, b, c) = (next(), next(), next());
            let (r, want) = (fma32_rn(a, b, c), a.mul_add(b, c));
            assert!(
                r.to_bits() == want.to_bits() || (r.is_nan() && want.is_nan()),
                "{a:e} {b:e} {c:e}"
            );
        }
        // Exact midpoint cases: 1 + 2^-24 (+ tiny) must round by the tiny part.
        let t = f32::from_bits(1);
        assert_eq!(
            fma32_rn(1.0, 1.0 + f32::EPSILON, 2f32.powi(-24) - 0.0),
            1.0f32.mul_add(1.0 + f32::EPSILON, 2f32.powi(-24))
        );
        assert_eq!(fma32_rn(2f32.powi(-24), 1.0, 1.0 + t * 0.0), 1.0);
    }

    #[test]
    fn min_max_nan_and_zero_rules() {
        assert_eq!(min64(f64::NAN, 1.0), 1.0);
        assert_eq!(max64(2.0, f64::NAN), 2.0);
        assert!(min64(f64::NAN, f64::NAN).is_nan());
        assert!(min64(0.0, -0.0).is_sign_negative());
        assert!(max64(-0.0, 0.0).is_sign_positive());
    }

    #[test]
    fn half_rounding() {
        let one = f16::from_f32(1.0).to_bits();
        assert_eq!(f2h(1.0 + 1e-6, false, Rnd::Rp), one + 1);
        assert_eq!(f2h(1.0 + 1e-6, false, Rnd::Rm), one);
        assert_eq!(f2h(-1.0 - 1e-6, false, Rnd::Rz), one | 0x8000);
    }
}
