//! The module a member of a split launch runs: [`guard_ptx`] rewrites PTX text so that every
//! `.entry` takes three more `.u32` parameters (split dimension, first block, end block) and
//! starts with a prologue that returns for blocks whose index along that dimension is outside
//! `[lo, hi)`. With `lo = 0, hi = u32::MAX` the kernel behaves as before. The rewrite is
//! textual: comments are skipped, `.visible`/`.weak` entries, entries with `()` and
//! performance directives (`.maxntid`, `.reqntid`, `.minnctapersm`, ...) between the
//! parameter list and the body are handled; names and registers use a `__remora_` prefix.

/// Parameters the guard adds to every entry, after the kernel's own.
pub const GUARD_PARAMS: u32 = 3;

const PARAMS: &str =
    ".param .u32 __remora_split_dim, .param .u32 __remora_split_lo, .param .u32 __remora_split_hi";

const PROLOGUE: &str = "
\t.reg .u32 %__remora_g<4>;
\t.reg .pred %__remora_p<3>;
\tld.param.u32 %__remora_g0, [__remora_split_dim];
\tld.param.u32 %__remora_g1, [__remora_split_lo];
\tld.param.u32 %__remora_g2, [__remora_split_hi];
\tmov.u32 %__remora_g3, %ctaid.x;
\tsetp.eq.u32 %__remora_p0, %__remora_g0, 1;
\t@%__remora_p0 mov.u32 %__remora_g3, %ctaid.y;
\tsetp.eq.u32 %__remora_p0, %__remora_g0, 2;
\t@%__remora_p0 mov.u32 %__remora_g3, %ctaid.z;
\tsetp.lt.u32 %__remora_p1, %__remora_g3, %__remora_g1;
\tsetp.ge.u32 %__remora_p2, %__remora_g3, %__remora_g2;
\tor.pred %__remora_p1, %__remora_p1, %__remora_p2;
\t@%__remora_p1 ret;
";

/// Byte positions of the text outside comments, as a mask.
fn code_mask(t: &[u8]) -> Vec<bool> {
    let mut m = vec![true; t.len()];
    let mut i = 0;
    while i < t.len() {
        if t[i..].starts_with(b"//") {
            while i < t.len() && t[i] != b'\n' {
                m[i] = false;
                i += 1;
            }
        } else if t[i..].starts_with(b"/*") {
            let end = t[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(t.len(), |p| i + 2 + p + 2);
            m[i..end].iter_mut().for_each(|x| *x = false);
            i = end;
        } else if t[i] == b'"' {
            // String literals (in initialisers of other items): skipped whole.
            let end = t[i + 1..]
                .iter()
                .position(|&c| c == b'"')
                .map_or(t.len(), |p| i + 1 + p + 1);
            m[i..end].iter_mut().for_each(|x| *x = false);
            i = end;
        } else {
            i += 1;
        }
    }
    m
}

/// Adds to every `.entry` of `ptx` three trailing `.param .u32` parameters (split dimension,
/// lo, hi) and a prologue that returns for blocks whose index along that dimension is outside
/// `[lo, hi)`.
pub fn guard_ptx(ptx: &str) -> Result<String, String> {
    let t = ptx.as_bytes();
    let mask = code_mask(t);
    let find = |from: usize, pred: &dyn Fn(u8) -> bool| -> Option<usize> {
        (from..t.len()).find(|&i| mask[i] && pred(t[i]))
    };
    // (position, text) insertions.
    let mut ins: Vec<(usize, String)> = Vec::new();
    let mut at = 0;
    while let Some(p) = ptx[at..].find(".entry") {
        let p = at + p;
        at = p + ".entry".len();
        let word_end = t
            .get(at)
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'));
        if !mask[p]
            || !word_end
            || (p > 0 && (t[p - 1].is_ascii_alphanumeric() || t[p - 1] == b'_'))
        {
            continue;
        }
        let next = find(at, &|c| c == b'(' || c == b'{' || c == b';')
            .ok_or_else(|| format!("`.entry` at byte {p} has no body"))?;
        let mut body_from = next;
        if t[next] == b'(' {
            let mut depth = 0;
            let mut close = None;
            for i in next..t.len() {
                if !mask[i] {
                    continue;
                }
                match t[i] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let close = close.ok_or_else(|| format!("unclosed parameter list at byte {next}"))?;
            let empty = (next + 1..close).all(|i| !mask[i] || t[i].is_ascii_whitespace());
            ins.push((
                close,
                if empty {
                    PARAMS.to_string()
                } else {
                    format!(",\n\t{PARAMS}\n")
                },
            ));
            body_from = close;
        } else {
            // No parameter list at all: one after the name.
            let name_start = find(at, &|c| !c.is_ascii_whitespace()).unwrap_or(at);
            let name_end = (name_start..t.len())
                .find(|&i| !(t[i].is_ascii_alphanumeric() || b"_$.".contains(&t[i])))
                .unwrap_or(t.len());
            ins.push((name_end, format!("({PARAMS})")));
        }
        let brace = find(body_from, &|c| c == b'{' || c == b';');
        if let Some(b) = brace.filter(|&b| t[b] == b'{') {
            ins.push((b + 1, PROLOGUE.to_string()));
            at = b + 1;
        }
    }
    ins.sort_by_key(|x| x.0);
    let mut out = String::with_capacity(ptx.len() + ins.len() * 600);
    let mut last = 0;
    for (pos, text) in ins {
        out.push_str(&ptx[last..pos]);
        out.push_str(&text);
        last = pos;
    }
    out.push_str(&ptx[last..]);
    Ok(out)
}

/// The parameter buffer of a guarded launch: `params` (the kernel's own, `size` bytes laid out
/// by the unguarded kernel) followed by the three guard words at 4-byte alignment.
pub fn guard_params(params: &[u8], dim: u32, lo: u32, hi: u32) -> Vec<u8> {
    let mut out = params.to_vec();
    out.resize(params.len().next_multiple_of(4), 0);
    for v in [dim, lo, hi] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_directives_comments_and_no_params() {
        let ptx = ".version 8.0\n.target sm_80\n.address_size 64\n\
            // .entry fake(\n\
            .visible .entry a() .maxntid 64, 1, 1 /* { */ {\n ret;\n}\n\
            .weak .entry b(.param .u64 p /* ) */)\n.reqntid 32\n{\n ret;\n}\n";
        let g = guard_ptx(ptx).unwrap();
        assert_eq!(g.matches("__remora_split_dim,").count(), 2, "{g}");
        assert_eq!(g.matches("@%__remora_p1 ret;").count(), 2, "{g}");
        let l = crate::lower::lower(&crate::parser::parse(&g).unwrap()).unwrap();
        let params = |name: &str| {
            l.funcs
                .iter()
                .find(|f| f.kernel && f.name == name)
                .map(|f| f.kparams.len())
        };
        assert_eq!(params("a"), Some(3));
        assert_eq!(params("b"), Some(4));
    }
}
