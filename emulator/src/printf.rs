//! Device-side `printf` (`vprintf`): the C format subset CUDA supports, arguments read from
//! the packed argument buffer (each aligned to its size, floats promoted to double).

/// Where `printf` arguments come from.
pub trait Args {
    /// The next argument of `size` bytes.
    fn arg(&mut self, size: u32) -> u64;
    /// The NUL-terminated string at a device address.
    fn cstr(&mut self, addr: u64) -> String;
}

struct Closures<A, C>(A, C);

impl<A: FnMut(u32) -> u64, C: FnMut(u64) -> String> Args for Closures<A, C> {
    fn arg(&mut self, size: u32) -> u64 {
        (self.0)(size)
    }
    fn cstr(&mut self, addr: u64) -> String {
        (self.1)(addr)
    }
}

/// Formats `fmt` with arguments from `arg(size)` (returns the next argument of `size` bytes)
/// and strings from `cstr(address)`.
pub fn format(fmt: &[u8], arg: impl FnMut(u32) -> u64, cstr: impl FnMut(u64) -> String) -> String {
    format_with(fmt, &mut Closures(arg, cstr))
}

/// Formats `fmt` with arguments from `src`.
pub fn format_with(fmt: &[u8], src: &mut dyn Args) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        if c != b'%' {
            // Copy a run of literal bytes (UTF-8 passes through).
            let start = i;
            while i < fmt.len() && fmt[i] != b'%' {
                i += 1;
            }
            out.push_str(&String::from_utf8_lossy(&fmt[start..i]));
            continue;
        }
        i += 1;
        if fmt.get(i) == Some(&b'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let (mut left, mut plus, mut space, mut zero, mut alt) =
            (false, false, false, false, false);
        while let Some(&f) = fmt.get(i) {
            match f {
                b'-' => left = true,
                b'+' => plus = true,
                b' ' => space = true,
                b'0' => zero = true,
                b'#' => alt = true,
                _ => break,
            }
            i += 1;
        }
        let mut width = 0usize;
        if fmt.get(i) == Some(&b'*') {
            width = src.arg(4) as i32 as usize;
            i += 1;
        }
        while let Some(d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            width = (width * 10 + (d - b'0') as usize).min(4096);
            i += 1;
        }
        let mut prec: Option<usize> = None;
        if fmt.get(i) == Some(&b'.') {
            i += 1;
            let mut p = 0usize;
            if fmt.get(i) == Some(&b'*') {
                p = src.arg(4) as i32 as usize;
                i += 1;
            }
            while let Some(d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
                p = (p * 10 + (d - b'0') as usize).min(4096);
                i += 1;
            }
            prec = Some(p.min(4096));
        }
        let mut long = 0;
        while let Some(&l) = fmt.get(i) {
            match l {
                b'l' | b'z' | b'j' | b't' | b'L' => long += 1,
                b'h' => {}
                _ => break,
            }
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else { break };
        i += 1;
        let size = if long > 0 { 8 } else { 4 };
        let (body, numeric, negative): (String, bool, bool) = match conv {
            b'd' | b'i' => {
                let v = src.arg(size);
                let v = if size == 4 {
                    v as u32 as i32 as i64
                } else {
                    v as i64
                };
                let mut s = v.unsigned_abs().to_string();
                if let Some(p) = prec {
                    while s.len() < p {
                        s.insert(0, '0');
                    }
                }
                (s, true, v < 0)
            }
            b'u' | b'x' | b'X' | b'o' => {
                let v = src.arg(size);
                let v = if size == 4 { v as u32 as u64 } else { v };
                let mut s = match conv {
                    b'u' => v.to_string(),
                    b'x' => format!("{v:x}"),
                    b'X' => format!("{v:X}"),
                    _ => format!("{v:o}"),
                };
                if let Some(p) = prec {
                    while s.len() < p {
                        s.insert(0, '0');
                    }
                }
                if alt && v != 0 {
                    s.insert_str(
                        0,
                        match conv {
                            b'x' => "0x",
                            b'X' => "0X",
                            b'o' => "0",
                            _ => "",
                        },
                    );
                }
                (s, true, false)
            }
            b'c' => (((src.arg(4) as u8) as char).to_string(), false, false),
            b's' => {
                let p = src.arg(8);
                let mut s = if p == 0 {
                    "(null)".to_string()
                } else {
                    src.cstr(p)
                };
                if let Some(pr) = prec {
                    s = s.chars().take(pr).collect();
                }
                (s, false, false)
            }
            b'p' => (format!("0x{:x}", src.arg(8)), false, false),
            b'f' | b'F' | b'e' | b'E' | b'g' | b'G' | b'a' | b'A' => {
                let v = f64::from_bits(src.arg(8));
                let s = float(v.abs(), conv, prec.unwrap_or(6), alt);
                (s, v.is_finite(), v.is_sign_negative() && !v.is_nan())
            }
            _ => {
                out.push('%');
                out.push(conv as char);
                continue;
            }
        };
        let sign = if negative {
            "-"
        } else if plus && numeric {
            "+"
        } else if space && numeric {
            " "
        } else {
            ""
        };
        let len = sign.len() + body.chars().count();
        if len >= width {
            out.push_str(sign);
            out.push_str(&body);
        } else if left {
            out.push_str(sign);
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', width - len));
        } else if zero
            && numeric
            && !(prec.is_some() && matches!(conv, b'd' | b'i' | b'u' | b'x' | b'X' | b'o'))
        {
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', width - len));
            out.push_str(&body);
        } else {
            out.extend(std::iter::repeat_n(' ', width - len));
            out.push_str(sign);
            out.push_str(&body);
        }
    }
    out
}

fn float(v: f64, conv: u8, prec: usize, alt: bool) -> String {
    let upper = conv.is_ascii_uppercase();
    let s = if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        "inf".to_string()
    } else {
        match conv.to_ascii_lowercase() {
            b'f' => format!("{v:.prec$}"),
            b'e' => exp(v, prec),
            b'a' => format!("{v:e}"),
            _ => {
                let p = prec.max(1);
                let e = exp(v, p - 1);
                let x: i32 = e
                    .rsplit('e')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let mut s = if x < p as i32 && x >= -4 {
                    let decimals = (p as i32 - 1 - x).max(0) as usize;
                    format!("{v:.decimals$}")
                } else {
                    e
                };
                if !alt {
                    // Strip trailing zeros of the fraction (keeping any exponent).
                    let (mant, tail) = match s.find('e') {
                        Some(k) => (s[..k].to_string(), s[k..].to_string()),
                        None => (s.clone(), String::new()),
                    };
                    let mant = if mant.contains('.') {
                        mant.trim_end_matches('0').trim_end_matches('.').to_string()
                    } else {
                        mant
                    };
                    s = mant + &tail;
                }
                s
            }
        }
    };
    if upper {
        s.to_uppercase()
    } else {
        s
    }
}

/// C's `%.Ne`: mantissa with `prec` decimals, exponent with sign and at least two digits.
fn exp(v: f64, prec: usize) -> String {
    let s = format!("{v:.prec$e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let n: i32 = e.parse().unwrap_or(0);
            format!(
                "{m}e{}{:02}",
                if n < 0 { '-' } else { '+' },
                n.unsigned_abs()
            )
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fmt: &str, args: &[u64]) -> String {
        let mut it = args.iter();
        format(
            fmt.as_bytes(),
            |_| *it.next().unwrap_or(&0),
            |_| "str".into(),
        )
    }

    #[test]
    fn c_formats() {
        assert_eq!(run("%d %i %u", &[(-5i32) as u32 as u64, 7, 8]), "-5 7 8");
        assert_eq!(run("%5d|%-5d|%05d", &[42, 42, 42]), "   42|42   |00042");
        assert_eq!(
            run("%x %X %#x %lld", &[255, 255, 255, (-3i64) as u64]),
            "ff FF 0xff -3"
        );
        assert_eq!(
            run(
                "%f %.2f %e",
                &[1.5f64.to_bits(), 3.14659f64.to_bits(), 1234.5f64.to_bits()]
            ),
            "1.500000 3.15 1.234500e+03"
        );
        assert_eq!(
            run(
                "%g %g %g",
                &[100000f64.to_bits(), 1e-5f64.to_bits(), 0.5f64.to_bits()]
            ),
            "100000 1e-05 0.5"
        );
        assert_eq!(run("%s %c %%", &[1, 65]), "str A %");
        assert_eq!(run("%8.3f|", &[(-2.5f64).to_bits()]), "  -2.500|");
        assert_eq!(run("[%.2s|%5s|%-4s]", &[1, 2, 3]), "[st|  str|str ]");
    }
}
