//! Kernel parameters and launch shapes, as a launch and a graph's kernel node both take them:
//! `kernelParams` (or the `extra` buffer) packed into one buffer with the kernel's layout (read
//! from the image, or returned by the module load), and the geometry checked against the
//! device's and the kernel's limits.

use std::ffi::c_void;

use crate::ffi::{invalid, ShimResult};
use crate::registry::Function;

/// `CU_LAUNCH_PARAM_END`, `CU_LAUNCH_PARAM_BUFFER_POINTER`, `CU_LAUNCH_PARAM_BUFFER_SIZE`.
const PARAM_END: usize = 0;
const PARAM_BUFFER_POINTER: usize = 1;
const PARAM_BUFFER_SIZE: usize = 2;

pub struct Geometry {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared: u32,
}

/// Threads a block of any kernel may have on the GPUs the driver runs: even at 255 registers
/// a thread, 256 threads fit in a block's 64 Ki registers. A larger block of a kernel whose
/// driver-given limit is not known yet waits for it (`module::exact`).
const ANY_KERNEL_THREADS: u64 = 256;

/// Refuses a launch shape the device or the kernel does not allow, as the driver does at the
/// launch itself (not at a later synchronisation).
pub fn check_geometry(func: &Function, g: &Geometry) -> ShimResult<()> {
    if let Some(e) = func.failed() {
        return Err(e.clone());
    }
    if g.grid.contains(&0) || g.block.contains(&0) {
        return Err(invalid("grid and block dimensions must be at least 1"));
    }
    let threads = g.block.iter().map(|&d| d as u64).product::<u64>();
    if g.block[0] > 1024
        || g.block[1] > 1024
        || g.block[2] > 64
        || g.grid[1] > 65535
        || g.grid[2] > 65535
    {
        return Err(invalid(format!(
            "launch of {:?} x {:?} exceeds the device's limits",
            g.grid, g.block
        )));
    }
    let desc = if threads > ANY_KERNEL_THREADS {
        super::module::exact(func)?
    } else {
        func.desc()
    };
    // The kernel's own limit (`.maxntid`, else the device's 1024).
    let limit = super::attributes::max_threads(desc.max_threads);
    if threads > limit as u64 {
        return Err(invalid(format!(
            "a block of {threads} threads exceeds the {limit} that kernel {} allows",
            desc.name
        )));
    }
    Ok(())
}

/// Packs `kernelParams` (or the `extra` buffer) into one parameter buffer laid out as the
/// kernel's description says.
///
/// # Safety
/// As for `cuLaunchKernel`: `params` has one valid pointer per kernel parameter, or `extra` is
/// a valid `CU_LAUNCH_PARAM_*` list.
pub unsafe fn pack(
    func: &Function,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> ShimResult<Vec<u8>> {
    let desc = func.desc();
    let size = desc
        .params
        .iter()
        .map(|p| (p.offset + p.size) as usize)
        .max()
        .unwrap_or(0);
    let mut buf = vec![0u8; size];
    if !params.is_null() {
        for (i, p) in desc.params.iter().enumerate() {
            // SAFETY: kernelParams has one pointer per parameter, each to `p.size` bytes.
            let src = unsafe { *params.add(i) };
            if src.is_null() {
                return Err(invalid(format!(
                    "kernelParams[{i}] of {} is null",
                    desc.name
                )));
            }
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), p.size as usize) };
            buf[p.offset as usize..(p.offset + p.size) as usize].copy_from_slice(bytes);
        }
    } else if !extra.is_null() {
        // SAFETY: `extra` is a NULL-terminated list of (key, value) pairs.
        let (ptr, len) = unsafe { parse_extra(extra) }?;
        if len < size {
            return Err(invalid(format!(
                "parameter buffer of {len} bytes, kernel {} needs {size}",
                desc.name
            )));
        }
        // SAFETY: the application gave a buffer of `len` bytes.
        buf.copy_from_slice(&unsafe { std::slice::from_raw_parts(ptr, len) }[..size]);
    } else if !desc.params.is_empty() {
        return Err(invalid(format!(
            "kernel {} takes parameters and none were given",
            desc.name
        )));
    }
    Ok(buf)
}

/// # Safety
/// `extra` is a valid `CU_LAUNCH_PARAM_*` list.
unsafe fn parse_extra(extra: *mut *mut c_void) -> ShimResult<(*const u8, usize)> {
    let (mut ptr, mut len) = (std::ptr::null::<u8>(), None);
    let mut i = 0;
    loop {
        // SAFETY: entries up to and including PARAM_END are readable.
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            PARAM_END => break,
            // SAFETY: every key is followed by its value.
            PARAM_BUFFER_POINTER => ptr = unsafe { *extra.add(i + 1) }.cast(),
            // SAFETY: the value of BUFFER_SIZE points to a size_t.
            PARAM_BUFFER_SIZE => len = Some(unsafe { *(*extra.add(i + 1)).cast::<usize>() }),
            other => return Err(invalid(format!("unknown launch extra key {other:#x}"))),
        }
        i += 2;
        if i > 64 {
            return Err(invalid("launch extra list is not terminated"));
        }
    }
    match (ptr.is_null(), len) {
        (false, Some(l)) => Ok((ptr, l)),
        _ => Err(invalid(
            "launch extra needs both BUFFER_POINTER and BUFFER_SIZE",
        )),
    }
}
