//! Modules and libraries, functions and kernels, module globals, and the `cuLink*` linker.
//!
//! Launches need each kernel's parameter layout, which the shim reads from the image itself
//! when it can ([`local_image`]: PTX text, or a fatbin with PTX for the device, read with the
//! emulated GPU's own front end). Such a load is *posted*: it travels with the next batch and
//! nothing waits for it, so loading a module, looking up its functions and launching them
//! costs no round trip until the program synchronises. The request names the kernels in the
//! order the shim numbers them (`Request::ModuleLoad::kernels`), so the server launches the
//! kernel the shim meant whatever order its backend lists them in. What only the server
//! knows stays lazy: the globals' device addresses, and on a real GPU the driver's register,
//! local and shared memory counts (on an emulated one the shim's are the server's, computed by
//! the same code). The first call that needs them ([`settle`]: `cuModuleGetGlobal`, an
//! attribute or occupancy query on a real GPU, a block over 256 threads there, an address the
//! address map does not know) waits for the load's reply, kept by its ticket, and the server's
//! description replaces the shim's. A posted load that fails is reported by the next
//! synchronising call, as a driver that loads lazily reports it, and every later launch of its
//! kernels fails with its error (the server remembers it; here once the reply was taken).
//!
//! An image the shim cannot read (machine code only, PTX too large or that the front end does
//! not take) is loaded as before, waiting for the reply: one round trip, so its error (with
//! the JIT log) is reported at the call. Either way an image over 64 KiB that this process has
//! not uploaded is first offered by its hash (`ModuleHave`, a round trip): images are keyed by
//! content hash and uploaded once per server, whose cache outlives processes, and re-sending a
//! large image costs more than a round trip on slow links.
//!
//! Libraries (`cuLibrary*`) are modules, and kernels (`CUkernel`) are functions: the same
//! handles serve both families, as cudart expects when it hands a `CUkernel` to
//! `cuLaunchKernel`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex};

use remora_protocol::messages::{CtxId, GlobalDesc, KernelDesc, ModuleId};
use remora_protocol::messages::{ReplyBody, Request};
use remora_protocol::CuStatus;
use sha2::{Digest, Sha256};

use super::local_image::{self, LocalImage};
use super::{context, device, image};
use crate::client;
use crate::devrt;
use crate::error::invalid_handle;
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::registry::{self, registry, Function, PostedLoad};

/// Images at most this large are sent with their load request instead of asking first.
const ASK_FIRST: usize = 64 << 10;

/// Loads an image into the current context; returns the module handle. Libraries are
/// context-independent in CUDA and cudart loads them before any context exists: without a
/// current context the image goes to device 0's primary context.
pub fn load(image: &[u8]) -> ShimResult<u64> {
    let ctx = match registry::current() {
        Some(c) => c,
        None => context::primary_handle(0)?,
    };
    load_into(ctx, image)
}

fn load_into(ctx: u64, image: &[u8]) -> ShimResult<u64> {
    let c = client::client()?;
    c.forget(&registry().take_orphaned());
    let hash: [u8; 32] = Sha256::digest(image).into();
    let known = registry().uploaded(&hash);
    let send = if known {
        false
    } else if image.len() > ASK_FIRST {
        let r = c.call(&Request::ModuleHave { hash })?;
        !matches!(r.body, ReplyBody::Have { present: true })
    } else {
        true
    };
    let module = registry::mint();
    let payload = if send { image } else { &[][..] };
    let dev = device::device(registry().with_context(ctx, |c| c.device)?)?;
    if let Some(local) = local_image::read_for(image, dev) {
        return post_load(c, ctx, module, hash, payload, local, dev.emulated);
    }
    let reply = c
        .call_write(
            &Request::ModuleLoad {
                ctx: CtxId(ctx),
                module: ModuleId(module),
                hash,
                kernels: None,
            },
            payload,
        )
        .inspect_err(|e| {
            // Machine-code-only modules (cuBLAS, CUB) cannot run on an emulated GPU; libraries
            // often swallow the error, so say it where the user will see it, once per image.
            if e.status() == CuStatus::NO_BINARY_FOR_GPU && registry().mark_uploaded(hash) {
                eprintln!(
                    "remora: module {} ({} bytes) cannot be loaded: {e}. The emulated GPU runs PTX only: \
                 this module needs a real GPU, or, if it was built at run time, a build to PTX. \
                 `remora run` arranges that for NVRTC (a cubin for --gpu-architecture=sm_XY is \
                 its PTX), numba's nvJitLink and CuPy; without it (the shim preloaded by hand, \
                 NVRTC linked statically, a cubin built ahead of time) ask for PTX (NVRTC: \
                 compute_XY and nvrtcGetPTX; nvcc: -arch=compute_XY -code=compute_XY)",
                    hex_prefix(&hash),
                    image.len()
                );
            }
        })?;
    let ReplyBody::Module { kernels, globals } = reply.body else {
        return Err(ShimError::new(
            CuStatus::UNKNOWN,
            "server answered a module load without its contents",
        ));
    };
    registry().mark_uploaded(hash);
    registry().add_module(ctx, module, kernels, globals, None)?;
    Ok(module)
}

/// Posts the load of an image the shim read, and registers the module from what it read.
/// The image counts as uploaded from here: the server keeps an image whose bytes match its
/// hash before it loads it, and a later load naming it by its hash alone comes after this one.
fn post_load(
    c: &client::Client,
    ctx: u64,
    module: u64,
    hash: [u8; 32],
    payload: &[u8],
    local: LocalImage,
    exact: bool,
) -> ShimResult<u64> {
    let names: Vec<String> = local.kernels.iter().map(|k| k.name.clone()).collect();
    let req = Request::ModuleLoad {
        ctx: CtxId(ctx),
        module: ModuleId(module),
        hash,
        kernels: Some(names.clone()),
    };
    let ticket = c.post_call(&req, payload)?;
    registry().mark_uploaded(hash);
    let load = Arc::new(PostedLoad {
        ticket,
        names,
        exact,
        has_globals: !local.globals.is_empty(),
        outcome: Mutex::new(None),
    });
    if let Err(e) = registry().add_module(ctx, module, local.kernels, Vec::new(), Some(load)) {
        c.forget(&[ticket]);
        return Err(e);
    }
    Ok(module)
}

/// Waits, if it has not yet, for the reply of module `module`'s posted load, and replaces what
/// the shim read with the server's description; the load's error if it failed (then also
/// every later launch's). Nothing to do for a module loaded the way that waits.
pub fn settle(module: u64) -> ShimResult<()> {
    let Some(load) = registry().posted_load(module)? else {
        return match registry().with_module(module, |m| m.failed.clone())? {
            Some(e) => Err(e),
            None => Ok(()),
        };
    };
    let mut outcome = load.outcome.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(done) = outcome.as_ref() {
        return done.clone();
    }
    let reply = client::client()?.wait_posted(load.ticket);
    let got: ShimResult<(Vec<KernelDesc>, Vec<GlobalDesc>)> = match reply {
        Ok(r) => match r.body {
            ReplyBody::Module { kernels, globals } => Ok((kernels, globals)),
            _ => Err(ShimError::new(
                CuStatus::UNKNOWN,
                "server answered a module load without its contents",
            )),
        },
        Err(e) => Err(e),
    };
    let done = got.as_ref().map(|_| ()).map_err(Clone::clone);
    registry().settle_module(module, &load, got);
    *outcome = Some(done.clone());
    done
}

/// [`settle`] for a function whose attributes are wanted: only when they are not the server's
/// yet (a posted load on a real GPU). The function's description once they are.
pub fn exact(f: &Function) -> ShimResult<&KernelDesc> {
    if let Some(e) = f.failed() {
        return Err(e.clone());
    }
    if !f.exact() {
        settle(f.module)?;
    }
    Ok(f.desc())
}

/// Runs `f` on the address maps; if it fails, and posted loads whose images declare globals
/// are still unsettled, settles them and runs it again. An address the maps do not know may be
/// a global the program has without asking for it (a kernel stored its address), whose
/// module's reply has not been taken yet.
pub fn in_memory<T>(f: impl Fn(&mut registry::Memory) -> ShimResult<T>) -> ShimResult<T> {
    let first = registry().memory(&f);
    if first.is_ok() {
        return first;
    }
    let pending = registry().posted_with_globals();
    if pending.is_empty() {
        return first;
    }
    for (m, _) in &pending {
        // A failed load has no globals to add; its error is its launches'.
        let _ = settle(*m);
    }
    registry().memory(&f)
}

/// JIT options that carry log buffers: the server's message goes into the error log.
unsafe fn write_error_log(
    n: c_uint,
    options: *const c_uint,
    values: *const *mut c_void,
    msg: &str,
) {
    if n == 0 || options.is_null() || values.is_null() {
        return;
    }
    // SAFETY: both arrays have n entries by the driver API's contract.
    let (opts, vals) = unsafe {
        (
            std::slice::from_raw_parts(options, n as usize),
            std::slice::from_raw_parts(values, n as usize),
        )
    };
    let buf = opts
        .iter()
        .position(|&o| o == 5)
        .map(|i| vals[i].cast::<u8>()); // CU_JIT_ERROR_LOG_BUFFER
    let size = opts.iter().position(|&o| o == 6).map(|i| vals[i] as usize); // ..._SIZE_BYTES
    if let (Some(buf), Some(size)) = (buf, size) {
        if !buf.is_null() && size > 0 {
            let n = msg.len().min(size - 1);
            // SAFETY: the application gave `size` writable bytes at `buf`.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), buf, n);
                *buf.add(n) = 0;
            }
        }
    }
}

/// # Safety
/// `image` points to a complete module image; `options` and `values` have `n` entries, and a
/// log buffer among them is writable for its size.
pub unsafe fn load_data(
    pmod: &mut u64,
    image: *const c_void,
    n: c_uint,
    options: *const c_uint,
    values: *const *mut c_void,
) -> ShimResult<()> {
    // SAFETY: the image is complete, as the driver API requires.
    let bytes = unsafe { image::image_bytes(image.cast()) }?;
    match load(bytes) {
        Ok(h) => {
            *pmod = h;
            Ok(())
        }
        Err(e) => {
            // SAFETY: option arrays from C.
            unsafe { write_error_log(n, options, values, &e.to_string()) };
            Err(e)
        }
    }
}

/// `cuLibraryLoadData`: a module that remembers its image (see [`library_module`]); and a
/// library the emulated GPU cannot run is also reported at the next synchronising call.
///
/// cudart loads a program's kernels this way, lazily, when one is first used, and returns a
/// failure from the kernel launch that triggered it. Libraries in between drop it (CuPy's CUB
/// reductions ignore what CUB returns), and the program would go on with results never
/// computed: on a real GPU its machine code would have loaded. Reporting it again at the next
/// synchronisation makes the failure reach the application, as an asynchronous error would.
///
/// # Safety
/// As [`load_data`].
pub unsafe fn library_load_data(
    plib: &mut u64,
    image: *const c_void,
    n: c_uint,
    options: *const c_uint,
    values: *const *mut c_void,
) -> ShimResult<()> {
    // SAFETY: the caller's contract is load_data's.
    if let Err(e) = unsafe { load_data(plib, image, n, options, values) } {
        let c = client::client()?;
        if e.status() == CuStatus::NO_BINARY_FOR_GPU && c.info.devices.iter().any(|d| d.emulated) {
            c.hold_for_next_sync(ShimError::new(
                e.status(),
                format!(
                    "a library's kernels could not be loaded earlier, so work that needed \
                     them never ran: {e}"
                ),
            ));
        }
        return Err(e);
    }
    // SAFETY: as above; the image was read whole just now.
    let bytes = unsafe { image::image_bytes(image.cast()) }?;
    registry().add_library(*plib, bytes);
    Ok(())
}

pub fn library_load_file(plib: &mut u64, path: &str) -> ShimResult<()> {
    load_file(plib, path)?;
    let data = std::fs::read(path)
        .map_err(|e| ShimError::new(CuStatus::FILE_NOT_FOUND, format!("{path}: {e}")))?;
    registry().add_library(*plib, &data);
    Ok(())
}

/// The module to launch kernel `f` from in context `ctx`. A library's kernels (`CUkernel`)
/// run in every context, as in CUDA: the library is loaded into `ctx` the first time one of
/// its kernels is launched there (numba launches one kernel on each GPU it is used on). A
/// plain module's function stays bound to its context (the server refuses the launch).
pub fn library_module(f: &Function, ctx: u64) -> ShimResult<u64> {
    instance(f.module, f.ctx, ctx)
}

/// Module `module` (loaded in `module_ctx`) as context `ctx` sees it: a library's instance
/// there, loaded on first use.
fn instance(module: u64, module_ctx: u64, ctx: u64) -> ShimResult<u64> {
    if module_ctx == ctx {
        return Ok(module);
    }
    match registry().library_in(module, ctx) {
        None => Ok(module),
        Some(Ok(m)) => Ok(m),
        Some(Err(image)) => {
            let m = load_into(ctx, &image)?;
            registry().set_library_instance(module, ctx, m);
            Ok(m)
        }
    }
}

pub fn library_unload(library: u64) -> ShimResult<()> {
    let unloaded = unload(library);
    for m in registry().remove_library(library) {
        // A module already gone with its context needs no unloading.
        if registry().with_module(m, |_| ()).is_ok() {
            unload(m)?;
        }
    }
    unloaded
}

pub fn load_file(pmod: &mut u64, path: &str) -> ShimResult<()> {
    let data = std::fs::read(path)
        .map_err(|e| ShimError::new(CuStatus::FILE_NOT_FOUND, format!("{path}: {e}")))?;
    *pmod = load(&data)?;
    Ok(())
}

pub fn unload(h: u64) -> ShimResult<()> {
    let ctx = registry().remove_module(h)?;
    let c = client::client()?;
    c.forget(&registry().take_orphaned());
    c.post(
        &Request::ModuleUnload {
            ctx: CtxId(ctx),
            module: ModuleId(h),
        },
        &[],
    )
}

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn get_function(pf: &mut u64, module: u64, name: &str) -> ShimResult<()> {
    *pf = match registry().find_function(module, name) {
        Err(e) if e.status() == CuStatus::NOT_FOUND => {
            // Not in the PTX the shim read: on a real GPU the driver's module may have it.
            kernels_known(module)?;
            registry().find_function(module, name)?
        }
        r => r?,
    };
    Ok(())
}

/// Either out-pointer may be NULL.
pub fn get_global(
    dptr: Option<&mut u64>,
    size: Option<&mut usize>,
    module: u64,
    name: &str,
) -> ShimResult<()> {
    // A library's globals are the current context's copy (`cuLibraryGetGlobal`).
    let module = match registry::current() {
        Some(ctx) => instance(module, registry().module_context(module)?, ctx)?,
        None => module,
    };
    settle(module)?;
    let (addr, sz) = registry().with_module(module, |md| {
        md.globals
            .iter()
            .find(|g| g.name == name)
            .map(|g| (g.addr, g.size))
            .ok_or_else(|| ShimError::new(CuStatus::NOT_FOUND, format!("no global named {name}")))
    })??;
    if let Some(dptr) = dptr {
        *dptr = addr;
    }
    if let Some(size) = size {
        *size = sz as usize;
    }
    Ok(())
}

/// A module's kernels as the server's device holds them: on a real GPU its driver may know
/// kernels the image's PTX does not (machine code for the device), so a posted load is settled.
fn kernels_known(module: u64) -> ShimResult<()> {
    match registry().posted_load(module)? {
        Some(load) if !load.exact => settle(module),
        _ => Ok(()),
    }
}

pub fn function_count(count: &mut c_uint, module: u64) -> ShimResult<()> {
    kernels_known(module)?;
    *count = registry().with_module(module, |md| md.kernels.len() as c_uint)?;
    Ok(())
}

pub fn enumerate_functions(fns: &mut [*mut c_void], module: u64) -> ShimResult<()> {
    kernels_known(module)?;
    let handles = registry().module_functions(module)?;
    if fns.len() < handles.len() {
        return Err(invalid("function array too small"));
    }
    for (slot, f) in fns.iter_mut().zip(handles) {
        *slot = f as *mut c_void;
    }
    Ok(())
}

pub fn library_get_module(pmod: &mut u64, library: u64) -> ShimResult<()> {
    registry()
        .with_module(library, |_| ())
        .map_err(|_| invalid_handle("library", library))?;
    *pmod = library;
    Ok(())
}

pub fn kernel_get_function(pf: &mut u64, kernel: u64) -> ShimResult<()> {
    function(kernel)?;
    *pf = kernel;
    Ok(())
}

pub fn kernel_get_library(plib: &mut u64, kernel: u64) -> ShimResult<()> {
    *plib = function(kernel)?.module;
    Ok(())
}

/// A function handle's entry: module, kernel index, parameter layout. Takes no lock.
pub fn function(f: u64) -> ShimResult<&'static Function> {
    registry().function(f)
}

pub fn set_attribute(f: u64, attrib: c_uint, value: c_int) -> ShimResult<()> {
    let func = function(f)?;
    match attrib {
        8 => {
            if !(0..=166_912).contains(&value) {
                return Err(invalid(format!("dynamic shared memory of {value} bytes")));
            }
            func.set_max_dynamic_shared(value);
            Ok(())
        }
        9..=15 => Ok(()),
        _ => Err(invalid(format!(
            "function attribute {attrib} cannot be set"
        ))),
    }
}

/// Either out-pointer may be NULL.
pub fn get_param_info(
    f: u64,
    index: usize,
    offset: Option<&mut usize>,
    size: Option<&mut usize>,
) -> ShimResult<()> {
    let k = function(f)?.desc();
    let p = k
        .params
        .get(index)
        .ok_or_else(|| invalid(format!("kernel {} has no parameter {index}", k.name)))?;
    if let Some(offset) = offset {
        *offset = p.offset as usize;
    }
    if let Some(size) = size {
        *size = p.size as usize;
    }
    Ok(())
}

/// The name lives as long as the process.
pub fn get_name(name: &mut *const c_char, f: u64) -> ShimResult<()> {
    *name = function(f)?.name.as_ptr();
    Ok(())
}

pub fn get_module(pmod: &mut u64, f: u64) -> ShimResult<()> {
    *pmod = function(f)?.module;
    Ok(())
}

pub fn check_function(f: u64) -> ShimResult<()> {
    function(f).map(|_| ())
}

pub fn link_create(out: &mut u64) -> ShimResult<()> {
    *out = registry().link_create();
    Ok(())
}

/// PTX is linked; `libcudadevrt.a` becomes Remora's device runtime in PTX (see
/// [`devrt`]); other machine code is refused, the reason in the message.
fn link_add(state: u64, data: Vec<u8>, name: &str) -> ShimResult<()> {
    match devrt::classify(&data, name) {
        devrt::Input::Ptx => registry().link_add(state, data),
        devrt::Input::DeviceRuntime => registry().link_add(state, devrt::PTX.as_bytes().to_vec()),
        devrt::Input::Refused(why) => Err(ShimError::new(
            CuStatus::NOT_SUPPORTED,
            format!("cuLinkAddData: {why}"),
        )),
    }
}

/// The name may be NULL (or not UTF-8): it is only for messages.
pub fn link_add_data(state: u64, data: &[u8], name: Option<&CStr>) -> ShimResult<()> {
    let name = name.and_then(|n| n.to_str().ok()).unwrap_or("<data>");
    link_add(state, data.to_vec(), name)
}

pub fn link_add_file(state: u64, path: &str) -> ShimResult<()> {
    let data = std::fs::read(path)
        .map_err(|e| ShimError::new(CuStatus::FILE_NOT_FOUND, format!("{path}: {e}")))?;
    link_add(state, data, path)
}

/// The image lives until `cuLinkDestroy`; the size may be NULL.
pub fn link_complete(
    state: u64,
    out_image: &mut *mut c_void,
    out_size: Option<&mut usize>,
) -> ShimResult<()> {
    let (ptr, len) = registry().link_complete(state, |inputs| {
        if inputs.is_empty() {
            return Err(invalid("nothing to link"));
        }
        // The device runtime goes last, once: the first input's header is the module's.
        let runtime = devrt::PTX.as_bytes();
        let mut ordered: Vec<Vec<u8>> = inputs
            .iter()
            .filter(|i| i.as_slice() != runtime)
            .cloned()
            .collect();
        if ordered.len() < inputs.len() {
            ordered.push(runtime.to_vec());
        }
        image::link_ptx(&ordered)
    })?;
    *out_image = ptr;
    if let Some(size) = out_size {
        *size = len;
    }
    Ok(())
}

pub fn link_destroy(state: u64) -> ShimResult<()> {
    registry().link_destroy(state)
}
