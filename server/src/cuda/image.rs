//! What the driver will not tell us about a module image, read from the image itself.
//!
//! Drivers before 12.4 cannot enumerate a module's kernels (`cuModuleEnumerateFunctions`) or
//! report parameter layouts (`cuFuncGetParamInfo`), and no driver enumerates module globals. So
//! kernel names, parameter layouts and global names are also read here from PTX text (the
//! `.entry` parameter lists, laid out with PTX's alignment rules), from ELF cubins (the symbol
//! table and each kernel's `.nv.info.<kernel>` `EIATTR_KPARAM_INFO` records), and from fatbins
//! (whose members are PTX or ELF, possibly LZ4 or Zstandard compressed).
//!
//! Everything here is pure and bounded: images come from the network.

use std::collections::BTreeMap;

use remora_protocol::messages::ParamDesc;

/// Names and layouts found in an image. Every name is a *candidate*: the caller confirms each
/// with the driver (`cuModuleGetFunction`, `cuModuleGetGlobal`) before reporting it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageSymbols {
    /// Kernel name -> parameter layout, where the image says it.
    pub kernels: BTreeMap<String, Option<Vec<ParamDesc>>>,
    /// Module-scope variables (`.global`, `.const`).
    pub globals: Vec<String>,
}

impl ImageSymbols {
    fn merge(&mut self, other: ImageSymbols) {
        for (name, params) in other.kernels {
            let slot = self.kernels.entry(name).or_insert(None);
            if slot.is_none() {
                *slot = params;
            }
        }
        for g in other.globals {
            if !self.globals.contains(&g) {
                self.globals.push(g);
            }
        }
    }
}

const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const FATBIN_KIND_PTX: u16 = 1;
const FATBIN_KIND_ELF: u16 = 2;

/// `EIATTR_KPARAM_INFO`: one kernel parameter's ordinal, offset and size.
pub const EIATTR_KPARAM_INFO: u8 = 0x17;
const EIFMT_SVAL: u8 = 0x04;

/// Reads every symbol the image offers, whatever its kind. Members of a fatbin that cannot be
/// read are skipped: the driver is the judge of whether the image loads.
pub fn symbols(image: &[u8]) -> ImageSymbols {
    if image.len() >= 4
        && u32::from_le_bytes([image[0], image[1], image[2], image[3]]) == FATBIN_MAGIC
    {
        let mut all = ImageSymbols::default();
        for (kind, bytes) in fatbin_members(image) {
            match kind {
                FATBIN_KIND_PTX => all.merge(ptx_symbols(&ptx_text(&bytes))),
                FATBIN_KIND_ELF => all.merge(elf_symbols(&bytes).unwrap_or_default()),
                _ => {}
            }
        }
        all
    } else if image.starts_with(b"\x7fELF") {
        elf_symbols(image).unwrap_or_default()
    } else {
        ptx_symbols(&ptx_text(image))
    }
}

/// Whether `cuModuleLoadData` will read the image as NUL-terminated PTX text.
pub fn is_text(image: &[u8]) -> bool {
    let fatbin = image.len() >= 4
        && u32::from_le_bytes([image[0], image[1], image[2], image[3]]) == FATBIN_MAGIC;
    !fatbin && !image.starts_with(b"\x7fELF")
}

/// Checks that every extent a binary image's headers declare lies inside the bytes received.
///
/// `cuModuleLoadData` takes no length: it trusts the fatbin or ELF headers, so a truncated or
/// hostile image would make the driver read past the buffer. Text (PTX) needs only its NUL,
/// which the caller guarantees.
pub fn check_extents(image: &[u8]) -> Result<(), String> {
    let len = image.len() as u64;
    if !is_text(image) && image.starts_with(b"\x7fELF") {
        let bad = |what: &str| {
            Err(format!(
                "ELF image: {what} lies outside the {len} bytes sent"
            ))
        };
        if image.get(4) != Some(&2) {
            return Err("ELF image is not 64-bit".into());
        }
        let (Some(phoff), Some(phentsize), Some(phnum)) = (
            u64_at(image, 0x20),
            u16_at(image, 0x36),
            u16_at(image, 0x38),
        ) else {
            return bad("the header");
        };
        let (Some(shoff), Some(shentsize), Some(shnum)) = (
            u64_at(image, 0x28),
            u16_at(image, 0x3a),
            u16_at(image, 0x3c),
        ) else {
            return bad("the header");
        };
        let table_end = |off: u64, n: u16, size: u16| {
            off.checked_add(n as u64 * size as u64)
                .is_some_and(|e| e <= len)
        };
        if !table_end(phoff, phnum, phentsize) || !table_end(shoff, shnum, shentsize) {
            return bad("a header table");
        }
        for i in 0..shnum as u64 {
            let h = (shoff + i * shentsize as u64) as usize;
            const SHT_NOBITS: u32 = 8;
            let (Some(kind), Some(off), Some(size)) = (
                u32_at(image, h + 4),
                u64_at(image, h + 0x18),
                u64_at(image, h + 0x20),
            ) else {
                return bad("a section header");
            };
            if kind != SHT_NOBITS && i > 0 && off.checked_add(size).is_none_or(|e| e > len) {
                return bad("a section");
            }
        }
        for i in 0..phnum as u64 {
            let h = (phoff + i * phentsize as u64) as usize;
            let (Some(off), Some(size)) = (u64_at(image, h + 8), u64_at(image, h + 0x20)) else {
                return bad("a program header");
            };
            if off.checked_add(size).is_none_or(|e| e > len) {
                return bad("a segment");
            }
        }
        return Ok(());
    }
    if !is_text(image) {
        // A fatbin: its containers, back to back, must each end inside the image.
        let mut pos = 0usize;
        while u32_at(image, pos) == Some(FATBIN_MAGIC) {
            let (Some(hsize), Some(body)) = (u16_at(image, pos + 6), u64_at(image, pos + 8)) else {
                return Err("fatbin: truncated header".into());
            };
            // The header is 16 bytes: a smaller size would never move past it.
            if hsize < 16 {
                return Err(format!("fatbin: a container header of {hsize} bytes"));
            }
            let end = (pos as u64)
                .checked_add(hsize as u64)
                .and_then(|s| s.checked_add(body));
            match end {
                Some(e) if e <= len => pos = e as usize,
                _ => {
                    return Err(format!(
                        "fatbin: a container lies outside the {len} bytes sent"
                    ))
                }
            }
        }
    }
    Ok(())
}

fn ptx_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn le<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    le(b, at).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    le(b, at).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    le(b, at).map(u64::from_le_bytes)
}

/// The (kind, decompressed payload) of every member of a fatbin; members that cannot be read
/// are skipped (the driver is the judge of the image).
fn fatbin_members(image: &[u8]) -> Vec<(u16, Vec<u8>)> {
    remora_emulator::loader::entries(image)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| Some((e.kind, e.bytes().ok()?)))
        .collect()
}

/// Removes `//` and `/* */` comments, keeping line structure.
fn strip_comments(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    let mut rest = ptx;
    while !rest.is_empty() {
        match (rest.find("//"), rest.find("/*")) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |n| &rest[l + n..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b..].find("*/").map_or("", |n| &rest[b + n + 2..]);
                out.push(' ');
            }
            _ => {
                out.push_str(rest);
                rest = "";
            }
        }
    }
    out
}

/// Kernels (with parameter layouts) and module-scope variables declared in PTX text.
pub fn ptx_symbols(ptx: &str) -> ImageSymbols {
    let text = strip_comments(ptx);
    let mut syms = ImageSymbols::default();
    let mut depth = 0i32;
    let mut stmt = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                if depth == 0 {
                    take_statement(&stmt, &mut syms);
                    stmt.clear();
                }
                depth += 1;
            }
            '}' => {
                depth -= 1;
                if depth <= 0 {
                    depth = 0;
                    stmt.clear();
                }
            }
            ';' if depth == 0 => {
                take_statement(&stmt, &mut syms);
                stmt.clear();
            }
            _ if depth == 0 => {
                // A `.const` initialiser `= { ... }` opens braces at module scope: skip it whole.
                if c == '=' && (stmt.contains(".global") || stmt.contains(".const")) {
                    take_statement(&stmt, &mut syms);
                    stmt.clear();
                    let mut nest = 0i32;
                    for c2 in chars.by_ref() {
                        match c2 {
                            '{' => nest += 1,
                            '}' => nest -= 1,
                            ';' if nest <= 0 => break,
                            _ => {}
                        }
                    }
                    continue;
                }
                stmt.push(c);
            }
            _ => {}
        }
    }
    syms
}

/// One module-scope statement (everything up to `;`, `{` or `=`).
fn take_statement(stmt: &str, syms: &mut ImageSymbols) {
    let s = stmt.trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.contains(&".entry") {
        if let Some((name, params)) = entry(s) {
            syms.kernels.insert(name, params);
        }
    } else if (words.contains(&".global") || words.contains(&".const"))
        && !words.contains(&".extern")
        && !words.contains(&".func")
        && !s.contains('(')
    {
        // `.visible .global .align 8 .b8 table[64]` -> `table`
        let decl = s.split('[').next().unwrap_or(s);
        if let Some(name) = decl
            .split_whitespace()
            .last()
            .filter(|n| !n.starts_with('.'))
        {
            let name = name.trim_end_matches(',');
            if !name.is_empty() && !syms.globals.iter().any(|g| g == name) {
                syms.globals.push(name.to_string());
            }
        }
    }
}

/// `.visible .entry name ( .param ..., ... ) .maxntid ...` -> the name and parameter layout.
fn entry(stmt: &str) -> Option<(String, Option<Vec<ParamDesc>>)> {
    let after = &stmt[stmt.find(".entry")? + ".entry".len()..];
    let open = after.find('(');
    let name_end = open.unwrap_or(after.len());
    let name = after[..name_end].split_whitespace().next()?.to_string();
    let Some(open) = open else {
        return Some((name, Some(Vec::new())));
    };
    let close = open + after[open..].find(')')?;
    let list = after[open + 1..close].trim();
    if list.is_empty() {
        return Some((name, Some(Vec::new())));
    }
    let mut params = Vec::new();
    let mut offset = 0u32;
    for p in list.split(',') {
        let Some((size, align)) = param_size_align(p) else {
            return Some((name, None));
        };
        offset = offset.checked_add(align - 1)? / align * align;
        params.push(ParamDesc { offset, size });
        offset = offset.checked_add(size)?;
    }
    Some((name, Some(params)))
}

/// Size and alignment of one `.param` declaration, per the PTX ISA: a parameter is aligned to
/// its explicit `.align` or else to its type's size; `.ptr ... .align N` is the *pointee's*
/// alignment and does not move the parameter.
fn param_size_align(decl: &str) -> Option<(u32, u32)> {
    let decl = decl.trim();
    let (head, count) = match decl.find('[') {
        Some(b) => {
            let n: u32 = decl[b + 1..].split(']').next()?.trim().parse().ok()?;
            (&decl[..b], n)
        }
        None => (decl, 1),
    };
    let words: Vec<&str> = head.split_whitespace().collect();
    if words.first() != Some(&".param") {
        return None;
    }
    let mut align = None;
    let mut ty = None;
    let mut in_ptr = false;
    let mut i = 1;
    while i < words.len() {
        match words[i] {
            ".ptr" => in_ptr = true,
            ".align" => {
                let n: u32 = words.get(i + 1)?.parse().ok()?;
                if !in_ptr {
                    align = Some(n);
                }
                i += 1;
            }
            w if w.starts_with('.') => {
                if let Some(s) = type_size(w) {
                    ty = Some(s);
                }
            }
            _ => {}
        }
        i += 1;
    }
    let elem = ty?;
    let align = align.unwrap_or(elem).max(1);
    if !align.is_power_of_two() {
        return None;
    }
    Some((elem.checked_mul(count)?, align))
}

fn type_size(t: &str) -> Option<u32> {
    Some(match t {
        ".b8" | ".u8" | ".s8" | ".pred" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" | ".texref" | ".samplerref" | ".surfref" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

/// Parameter layout from a kernel's `.nv.info.<kernel>` section: its `EIATTR_KPARAM_INFO`
/// records, each `{u32 index, u16 ordinal, u16 offset, u32 flags}` with the size in bits 18..32
/// of `flags`. Records come in any order (ptxas writes them last parameter first); they are
/// returned by ordinal. `None` when the section is malformed or has gaps in its ordinals.
pub fn nv_info_params(section: &[u8]) -> Option<Vec<ParamDesc>> {
    let mut by_ordinal = BTreeMap::new();
    let mut at = 0usize;
    while at + 4 <= section.len() {
        let (fmt, attr) = (section[at], section[at + 1]);
        let value = u16_at(section, at + 2)? as usize;
        if fmt == EIFMT_SVAL {
            let body = section.get(at + 4..at + 4 + value)?;
            if attr == EIATTR_KPARAM_INFO && body.len() >= 12 {
                let ordinal = u16_at(body, 4)?;
                let offset = u16_at(body, 6)? as u32;
                let size = (u32_at(body, 8)? >> 18) & 0x3fff;
                by_ordinal.insert(ordinal, ParamDesc { offset, size });
            }
            at += 4 + value;
        } else {
            // EIFMT_NVAL, _BVAL, _HVAL: the value (if any) fits in the 16 bits already read.
            at += 4;
        }
    }
    let params: Vec<ParamDesc> = by_ordinal.values().copied().collect();
    if by_ordinal.keys().enumerate().any(|(i, &o)| i != o as usize) {
        return None;
    }
    Some(params)
}

/// Function and object symbols and per-kernel `.nv.info` layouts of an ELF64 cubin.
pub fn elf_symbols(elf: &[u8]) -> Option<ImageSymbols> {
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return None; // not ELF64 little-endian
    }
    let shoff = usize::try_from(u64_at(elf, 0x28)?).ok()?;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    if shentsize < 64 {
        return None;
    }
    struct Sh {
        name: u32,
        kind: u32,
        offset: usize,
        size: usize,
        link: u32,
    }
    let sections: Vec<Sh> = (0..shnum)
        .map(|i| {
            let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
            Some(Sh {
                name: u32_at(elf, h)?,
                kind: u32_at(elf, h + 4)?,
                offset: usize::try_from(u64_at(elf, h + 0x18)?).ok()?,
                size: usize::try_from(u64_at(elf, h + 0x20)?).ok()?,
                link: u32_at(elf, h + 0x28)?,
            })
        })
        .collect::<Option<_>>()?;
    let data = |s: &Sh| -> Option<&[u8]> { elf.get(s.offset..s.offset.checked_add(s.size)?) };
    let cstr = |table: &[u8], at: u32| -> Option<String> {
        let rest = table.get(at as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
    };
    let shstr = data(sections.get(shstrndx)?)?;
    let mut nv_info = BTreeMap::new();
    for s in &sections {
        if let Some(kernel) =
            cstr(shstr, s.name).and_then(|n| n.strip_prefix(".nv.info.").map(str::to_string))
        {
            nv_info.insert(kernel, data(s)?);
        }
    }
    let mut syms = ImageSymbols::default();
    const SHT_SYMTAB: u32 = 2;
    const STT_OBJECT: u8 = 1;
    const STT_FUNC: u8 = 2;
    for s in sections.iter().filter(|s| s.kind == SHT_SYMTAB) {
        let table = data(s)?;
        let strtab = data(sections.get(s.link as usize)?)?;
        for sym in table.chunks_exact(24) {
            let Some(name) = cstr(strtab, u32::from_le_bytes([sym[0], sym[1], sym[2], sym[3]]))
            else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            match sym[4] & 0xf {
                STT_FUNC => {
                    let params = nv_info.get(&name).and_then(|sec| nv_info_params(sec));
                    syms.kernels.insert(name, params);
                }
                STT_OBJECT if !syms.globals.contains(&name) => syms.globals.push(name),
                _ => {}
            }
        }
    }
    Some(syms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: u32, size: u32) -> ParamDesc {
        ParamDesc { offset, size }
    }

    const PTX: &str = r#"
//
// Generated by NVIDIA NVVM Compiler
.version 8.5
.target sm_80
.address_size 64

.global .align 4 .u32 counter;
.visible .global .align 8 .b8 table[64];
.const .align 4 .f32 coeffs[4] = {0f3F800000, 0f40000000, 0f40400000, 0f40800000};
.extern .global .align 4 .u32 elsewhere;
.shared .align 4 .b8 scratch[128];

	// .globl	_Z3addPfS_i
.visible .entry _Z3addPfS_i(
	.param .u64 .ptr .global .align 16 _Z3addPfS_i_param_0,  // pointee alignment only
	.param .u8 _Z3addPfS_i_param_1,
	.param .u32 _Z3addPfS_i_param_2,
	.param .align 16 .b8 _Z3addPfS_i_param_3[24],
	.param .f64 _Z3addPfS_i_param_4,
	.param .u16 _Z3addPfS_i_param_5
)
.maxntid 256, 1, 1
{
	.reg .b32 %r<4>;
	/* { braces in a comment } */
	ret;
}

.visible .entry noargs()
{
	{ .reg .b32 inner; }
	ret;
}

.func (.param .b32 r) helper(.param .b32 a)
{
	ret;
}
"#;

    #[test]
    fn ptx_layout_follows_alignment_rules() {
        let s = ptx_symbols(PTX);
        assert_eq!(
            s.kernels["_Z3addPfS_i"],
            Some(vec![
                p(0, 8),
                p(8, 1),
                p(12, 4),
                p(16, 24),
                p(40, 8),
                p(48, 2)
            ])
        );
        assert_eq!(s.kernels["noargs"], Some(vec![]));
        assert!(!s.kernels.contains_key("helper"), "a .func is not a kernel");
        assert_eq!(s.kernels.len(), 2);
    }

    #[test]
    fn ptx_globals_skip_extern_and_shared() {
        let s = ptx_symbols(PTX);
        assert_eq!(s.globals, vec!["counter", "table", "coeffs"]);
    }

    #[test]
    fn ptx_unknown_param_type_gives_no_layout() {
        let s = ptx_symbols(".visible .entry k(.param .weird x) { ret; }");
        assert_eq!(s.kernels["k"], None);
    }

    #[test]
    fn ptx_garbage_finds_nothing() {
        assert_eq!(ptx_symbols("not ptx at all { } ;"), ImageSymbols::default());
        assert_eq!(symbols(b"\x00\x01\x02"), ImageSymbols::default());
    }

    fn kparam(ordinal: u16, offset: u16, size: u32) -> Vec<u8> {
        let mut r = vec![EIFMT_SVAL, EIATTR_KPARAM_INFO, 12, 0];
        r.extend(0u32.to_le_bytes());
        r.extend(ordinal.to_le_bytes());
        r.extend(offset.to_le_bytes());
        r.extend(((size << 18) | 0x1f000).to_le_bytes());
        r
    }

    fn nv_info_blob() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend([0x04, 0x37, 4, 0, 0x82, 0, 0, 0]); // EIATTR_CUDA_API_VERSION (SVAL)
        b.extend([0x01, 0x2a, 0, 0]); // an NVAL record
        b.extend([0x04, 0x0a, 8, 0, 9, 0, 0, 0, 0x60, 1, 0x18, 0]); // EIATTR_PARAM_CBANK
        b.extend([0x03, 0x19, 0x18, 0]); // EIATTR_CBANK_PARAM_SIZE (HVAL)
                                         // ptxas writes the last parameter first.
        b.extend(kparam(2, 16, 8));
        b.extend(kparam(1, 8, 4));
        b.extend(kparam(0, 0, 8));
        b.extend([0x03, 0x1b, 0xff, 0]); // EIATTR_MAXREG_COUNT
        b
    }

    #[test]
    fn nv_info_kparam_records_by_ordinal() {
        assert_eq!(
            nv_info_params(&nv_info_blob()),
            Some(vec![p(0, 8), p(8, 4), p(16, 8)])
        );
        assert_eq!(nv_info_params(&[]), Some(vec![]));
    }

    #[test]
    fn nv_info_rejects_truncation_and_gaps() {
        let blob = nv_info_blob();
        assert_eq!(
            nv_info_params(&blob[..blob.len() - 10]),
            None,
            "truncated record"
        );
        let mut gap = Vec::new();
        gap.extend(kparam(0, 0, 8));
        gap.extend(kparam(2, 16, 8));
        assert_eq!(nv_info_params(&gap), None, "ordinal 1 missing");
    }

    /// A minimal ELF64 with a symbol table and one `.nv.info.<kernel>` section.
    fn tiny_elf() -> Vec<u8> {
        let shstr = b"\0.shstrtab\0.strtab\0.symtab\0.nv.info.kern\0".to_vec();
        let strtab = b"\0kern\0gvar\0".to_vec();
        let mut symtab = vec![0u8; 24];
        for (name, info) in [(1u32, 0x12u8), (6, 0x11)] {
            let mut s = vec![0u8; 24];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[4] = info;
            symtab.extend(s);
        }
        let info = nv_info_blob();
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let mut place = |bytes: &[u8]| {
            let at = elf.len() as u64;
            elf.extend_from_slice(bytes);
            at
        };
        let offs = [place(&shstr), place(&strtab), place(&symtab), place(&info)];
        let shoff = elf.len() as u64;
        let headers = [
            (0u32, 0u32, 0u64, 0u64, 0u32),
            (1, 3, offs[0], shstr.len() as u64, 0),
            (11, 3, offs[1], strtab.len() as u64, 0),
            (19, 2, offs[2], symtab.len() as u64, 2),
            (27, 0x70000000, offs[3], info.len() as u64, 0),
        ];
        for (name, kind, off, size, link) in headers {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            h[0x28..0x2c].copy_from_slice(&link.to_le_bytes());
            elf.extend(h);
        }
        elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&5u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn elf_kernels_globals_and_layouts() {
        let s = elf_symbols(&tiny_elf()).expect("valid ELF");
        assert_eq!(s.kernels["kern"], Some(vec![p(0, 8), p(8, 4), p(16, 8)]));
        assert_eq!(s.globals, vec!["gvar"]);
        assert_eq!(symbols(&tiny_elf()), s);
    }

    #[test]
    fn extents_of_truncated_images_are_refused() {
        let elf = tiny_elf();
        assert_eq!(check_extents(&elf), Ok(()));
        assert!(
            check_extents(&elf[..elf.len() - 1]).is_err(),
            "section headers cut short"
        );
        assert!(check_extents(&elf[..200]).is_err());
        let f = fatbin(&[(FATBIN_KIND_ELF, &elf)]);
        assert_eq!(check_extents(&f), Ok(()));
        assert!(check_extents(&f[..f.len() - 1]).is_err());
        assert!(check_extents(&f[..10]).is_err());
        assert_eq!(check_extents(b".version 8.0\0"), Ok(()));
    }

    #[test]
    fn elf_truncated_is_none() {
        let elf = tiny_elf();
        assert_eq!(elf_symbols(&elf[..100]), None);
        assert_eq!(elf_symbols(b"\x7fELF\x01\x01"), None);
    }

    fn fatbin(members: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, payload) in members {
            let mut h = vec![0u8; 64];
            h[..2].copy_from_slice(&kind.to_le_bytes());
            h[4..8].copy_from_slice(&64u32.to_le_bytes());
            h[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            h[28..32].copy_from_slice(&80u32.to_le_bytes());
            h[56..64].copy_from_slice(&(payload.len() as u64).to_le_bytes());
            body.extend(h);
            body.extend_from_slice(payload);
        }
        let mut f = Vec::new();
        f.extend(FATBIN_MAGIC.to_le_bytes());
        f.extend(1u16.to_le_bytes());
        f.extend(16u16.to_le_bytes());
        f.extend((body.len() as u64).to_le_bytes());
        f.extend(body);
        f
    }

    #[test]
    fn a_fatbin_header_of_size_zero_is_refused_not_looped_on() {
        let mut image = vec![0u8; 64];
        image[..4].copy_from_slice(&FATBIN_MAGIC.to_le_bytes());
        assert!(check_extents(&image)
            .unwrap_err()
            .contains("header of 0 bytes"));
    }

    #[test]
    fn fatbin_members_are_merged() {
        let ptx = b".version 8.0\n.target sm_80\n.global .u32 g2;\n.visible .entry k2(.param .u32 a) { ret; }\0";
        let image = fatbin(&[(FATBIN_KIND_ELF, &tiny_elf()), (FATBIN_KIND_PTX, ptx)]);
        let s = symbols(&image);
        assert_eq!(s.kernels.keys().collect::<Vec<_>>(), ["k2", "kern"]);
        assert_eq!(s.kernels["k2"], Some(vec![p(0, 4)]));
        assert_eq!(s.globals, vec!["gvar", "g2"]);
        assert!(!is_text(&image));
        assert!(is_text(ptx));
        // A truncated container yields what could be read, never a panic.
        let _ = symbols(&image[..image.len() / 2]);
    }
}
