//! What a launcher needs to know about each kernel of a module, computed once from the lowered
//! IR: the parameter buffer layout, the frame layout (registers, local bytes, static shared
//! memory) and the attributes the driver reports (`cuFuncGetAttribute`).
//!
//! The emulated GPU builds its modules with [`describe`], and the client (the shim) reads the
//! same description from an image with [`read_image`] before the server has answered, so that a
//! module load needs no round trip: both ends compute every number with this one code.

use std::collections::HashSet;

use crate::error::PtxError;
use crate::ir::Func;
use crate::lower::{GlobalSpace, Lowered};

/// Most threads in a block.
pub const MAX_BLOCK_THREADS: u32 = 1024;

/// Register, predicate and local-memory bases of one function's frame within a kernel.
#[derive(Debug, Clone, Copy)]
pub struct Bases {
    pub reg: u32,
    pub pred: u32,
    pub local: u32,
}

/// Frame layout of a kernel and every function it can call: one frame per function.
#[derive(Debug, Clone)]
pub struct KernelLayout {
    /// (function, bases), sorted by function: sparse, since modules can hold thousands of
    /// functions and kernels.
    pub bases: Vec<(u32, Bases)>,
    pub regs: u32,
    pub preds: u32,
    pub local: u32,
    /// (variable, shared-space offset) of each static shared variable the kernel uses, sorted.
    pub shared_offsets: Vec<(u32, u32)>,
    pub static_shared: u32,
}

/// Lays out frames for `kernel` and its callees. An error (a call to a function the module only
/// declares, a frame too large to run) is the kernel's, reported when it is launched, not when
/// its module loads.
pub fn layout(
    funcs: &[Func],
    shared_vars: &[(u32, u32)],
    kernel: u32,
) -> Result<KernelLayout, PtxError> {
    let mut l = KernelLayout {
        bases: Vec::new(),
        regs: 0,
        preds: 0,
        local: 0,
        shared_offsets: Vec::new(),
        static_shared: 0,
    };
    // Iterative DFS; `seen` marks functions already given a frame.
    let mut seen = HashSet::new();
    let mut stack: Vec<(u32, usize)> = vec![(kernel, 0)];
    while let Some(&mut (f, ref mut next)) = stack.last_mut() {
        let Some(func) = funcs.get(f as usize) else {
            stack.pop();
            continue;
        };
        if *next == 0 && seen.insert(f) {
            let local = l.local.next_multiple_of(16);
            l.bases.push((
                f,
                Bases {
                    reg: l.regs,
                    pred: l.preds,
                    local,
                },
            ));
            l.regs = l.regs.saturating_add(func.nregs);
            l.preds = l.preds.saturating_add(func.npreds);
            l.local = local.saturating_add(func.local_bytes);
        }
        let callees = &func.callees;
        if *next < callees.len() {
            let c = callees[*next];
            *next += 1;
            // A function already seen may be on the DFS stack (a recursive call): its one
            // frame is saved and restored around nested activations at run time.
            if !seen.contains(&c) {
                stack.push((c, 0));
            }
        } else {
            stack.pop();
        }
    }
    l.bases.sort_unstable_by_key(|b| b.0);
    if let Some(f) = l
        .bases
        .iter()
        .map(|b| &funcs[b.0 as usize])
        .find(|f| f.entry.is_none() && f.builtin.is_none())
    {
        return Err(PtxError::unsupported(
            f.line,
            format!("call to external function `{}`", f.name),
        ));
    }
    let mut used: Vec<u32> = l
        .bases
        .iter()
        .flat_map(|b| funcs[b.0 as usize].shared_used.iter().copied())
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut off = 0u64;
    for v in used {
        let Some(&(size, align)) = shared_vars.get(v as usize) else {
            continue;
        };
        let o = off.next_multiple_of(align.max(1) as u64);
        l.shared_offsets.push((v, o as u32));
        off = o + size as u64;
        if off > u32::MAX as u64 / 4 {
            return Err(PtxError::unsupported(
                0,
                "kernel static shared memory too large",
            ));
        }
    }
    l.static_shared = off as u32;
    // Bounds on per-warp state, so one launch cannot exhaust host memory.
    if l.local > 1 << 16 || l.regs > 1 << 14 {
        return Err(PtxError::unsupported(0, "kernel frame too large"));
    }
    Ok(l)
}

/// One kernel parameter: its offset and size in the packed parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamInfo {
    pub offset: u32,
    pub size: u32,
}

/// What a launcher needs to know about a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub name: String,
    pub params: Vec<ParamInfo>,
    pub static_shared_bytes: u32,
    pub local_bytes: u32,
    pub num_regs: u32,
    pub max_threads_per_block: u32,
    /// Bytes of the module's `.const` variables, all of which any kernel may use.
    pub const_bytes: u32,
}

impl KernelInfo {
    /// Bytes of the packed parameter buffer.
    pub fn params_size(&self) -> u32 {
        self.params
            .iter()
            .map(|p| p.offset + p.size)
            .max()
            .unwrap_or(0)
    }
}

/// A kernel as [`describe`] finds it: what launchers are told, and what runs it.
#[derive(Debug, Clone)]
pub struct Described {
    pub info: KernelInfo,
    /// Its function's index in [`Lowered::funcs`].
    pub func: u32,
    /// Its frame layout, or why it cannot run (reported at launch).
    pub layout: Result<KernelLayout, PtxError>,
}

/// Every kernel (`.entry` with a body) of a lowered module, in the order the module defines
/// them. `text` is the PTX the module was lowered from (for directives the IR does not keep).
pub fn describe(text: &str, l: &Lowered) -> Vec<Described> {
    let const_bytes = l
        .globals
        .iter()
        .filter(|g| g.space == GlobalSpace::Const)
        .map(|g| g.size)
        .sum::<u64>()
        .min(u32::MAX as u64) as u32;
    let mut out = Vec::new();
    for (i, f) in l.funcs.iter().enumerate() {
        if !f.kernel || f.entry.is_none() {
            continue;
        }
        let lay = layout(&l.funcs, &l.shared_vars, i as u32);
        let (local, regs) = lay.as_ref().map(|x| (x.local, x.regs)).unwrap_or((0, 0));
        let info = KernelInfo {
            name: f.name.clone(),
            params: f
                .kparams
                .iter()
                .map(|&(offset, size)| ParamInfo { offset, size })
                .collect(),
            static_shared_bytes: lay.as_ref().map(|x| x.static_shared).unwrap_or(0),
            local_bytes: local,
            // A register budget the kernel declares (`.maxnreg`) caps what it reports, as
            // ptxas's allocation stays within it.
            num_regs: regs
                .min(255)
                .min(entry_directive(text, &f.name, ".maxnreg").unwrap_or(255))
                .max(1),
            const_bytes,
            max_threads_per_block: f
                .max_threads
                .unwrap_or(MAX_BLOCK_THREADS)
                .clamp(1, MAX_BLOCK_THREADS),
        };
        out.push(Described {
            info,
            func: i as u32,
            layout: lay,
        });
    }
    out
}

/// A module image as a client reads it before loading it: its kernels and the names and sizes
/// of its module-scope variables (whose addresses only the device that loads it can give).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKernels {
    pub kernels: Vec<KernelInfo>,
    /// `(name, size)` of each `.global` and `.const` variable, in declaration order.
    pub globals: Vec<(String, u64)>,
}

/// Reads the PTX an emulated GPU of compute capability `cc` would use from `image` (PTX text or
/// a fatbin; see [`crate::loader::extract_ptx`]), parses and lowers it, and describes its
/// kernels as [`describe`] does. Any error is the one loading the image on the emulated GPU
/// reports.
pub fn read_image(image: &[u8], cc: u32) -> Result<ImageKernels, PtxError> {
    let text = crate::loader::extract_ptx(image, cc)?;
    let ast = crate::parser::parse(&text)?;
    let l = crate::lower::lower(&ast)?;
    Ok(ImageKernels {
        kernels: describe(&text, &l).into_iter().map(|d| d.info).collect(),
        globals: l.globals.iter().map(|g| (g.name.clone(), g.size)).collect(),
    })
}

/// The number after `directive` in the header of kernel `name` (between `.entry name` and its
/// body), if it has one.
pub fn entry_directive(text: &str, name: &str, directive: &str) -> Option<u32> {
    let mut rest = text;
    while let Some(at) = rest.find(".entry") {
        let after = rest[at + ".entry".len()..].trim_start();
        rest = &rest[at + ".entry".len()..];
        let Some(tail) = after.strip_prefix(name) else {
            continue;
        };
        if tail.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let header = &tail[..tail.find('{')?];
        let value = header.split(directive).nth(1)?;
        let digits: String = value
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return digits.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_directives_cap_registers_and_const_bytes_are_the_modules() {
        let ptx = ".version 7.0\n.target sm_80\n.address_size 64\n\
            .const .align 8 .b8 c[24];\n.const .u32 d;\n\
            .visible .entry kk(.param .u64 p) { .reg .b32 %r<30>; mov.u32 %r1, %tid.x; ret; }\n\
            .visible .entry k(.param .u64 p) .maxntid 64, 2, 1 .maxnreg 2 {\n\
            .reg .b32 %r<30>; mov.u32 %r1, %tid.x; mov.u32 %r2, %r1; mov.u32 %r3, %r2; ret; }\n";
        let m = read_image(ptx.as_bytes(), 80).unwrap();
        let k = m.kernels.iter().find(|k| k.name == "k").unwrap();
        assert_eq!(
            (k.num_regs, k.max_threads_per_block, k.const_bytes),
            (2, 128, 28)
        );
        assert_eq!(m.kernels[0].name, "kk");
        assert_eq!(m.kernels[0].const_bytes, 28);
        assert_eq!(m.kernels[0].params, vec![ParamInfo { offset: 0, size: 8 }]);
        assert_eq!(m.globals, vec![("c".to_string(), 24), ("d".to_string(), 4)]);
        assert_eq!(entry_directive(ptx, "k", ".maxnreg"), Some(2));
        assert_eq!(entry_directive(ptx, "kk", ".maxnreg"), None);
        assert_eq!(entry_directive(ptx, "missing", ".maxnreg"), None);
    }

    #[test]
    fn an_error_is_the_one_loading_reports() {
        assert_eq!(read_image(b"\x7fELF\x02", 80).unwrap_err().cuda_code(), 209);
        let bad = ".version 7.0\n.target sm_80\n.address_size 64\n\
            .visible .entry k() { mov.u32 %nowhere, 1; ret; }\n";
        assert_eq!(read_image(bad.as_bytes(), 80).unwrap_err().cuda_code(), 218);
    }
}
