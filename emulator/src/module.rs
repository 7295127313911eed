//! Modules and launches: [`Module`] is a parsed, lowered image (immutable, shareable);
//! [`LoadedModule`] is a module whose globals live in one [`AddressSpace`], and launches its
//! kernels there.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crate::error::EmuError;
use crate::exec::{self, KernelLayout};
use crate::ir::{Func, Inst};
use crate::lower::{self as lowering, Reloc};
pub use crate::lower::{GlobalInfo, GlobalSpace};
use crate::memory::AddressSpace;
use remora_ptx::kernels;

/// Most threads in a block.
pub use remora_ptx::kernels::MAX_BLOCK_THREADS;
/// Most shared memory per block (static plus dynamic), as on sm_80.
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// What a launcher needs to know about a kernel, and each parameter's place: computed by the
/// PTX front end ([`remora_ptx::kernels::describe`]), which the client uses too.
pub use remora_ptx::kernels::{KernelInfo, ParamInfo};

/// A parsed and lowered module image.
#[derive(Debug)]
pub struct Module {
    code: Vec<Inst>,
    funcs: Vec<Func>,
    globals: Vec<GlobalInfo>,
    relocs: Vec<Reloc>,
    dyn_align: u32,
    kernels: Vec<KernelInfo>,
    /// Per kernel (same order as `kernels`): function index and frame layout.
    layouts: Vec<(u32, Result<KernelLayout, EmuError>)>,
}

impl Module {
    /// Loads PTX text, a fatbin or an ELF image (ELF: 209, no PTX to run). `cc` is the
    /// emulated compute capability (80 for sm_80); the PTX of the highest arch not above it
    /// is used.
    pub fn load(image: &[u8], cc: u32) -> Result<Module, EmuError> {
        let text = crate::loader::extract_ptx(image, cc)?;
        Self::from_ptx(&text)
    }

    /// Parses and lowers PTX text.
    pub fn from_ptx(text: &str) -> Result<Module, EmuError> {
        let ast = crate::parser::parse(text)?;
        let l = lowering::lower(&ast)?;
        let mut kernels = Vec::new();
        let mut layouts = Vec::new();
        for d in kernels::describe(text, &l) {
            kernels.push(d.info);
            layouts.push((d.func, d.layout.map_err(EmuError::from)));
        }
        Ok(Module {
            code: l.code,
            funcs: l.funcs,
            globals: l.globals,
            relocs: l.relocs,
            dyn_align: l.dyn_align,
            kernels,
            layouts,
        })
    }

    pub fn kernels(&self) -> &[KernelInfo] {
        &self.kernels
    }

    pub fn kernel(&self, name: &str) -> Option<&KernelInfo> {
        self.kernels.iter().find(|k| k.name == name)
    }

    pub fn globals(&self) -> &[GlobalInfo] {
        &self.globals
    }

    /// The lowered code and functions (for static analyses such as [`crate::footprint`]).
    pub fn code(&self) -> (&[Inst], &[Func]) {
        (&self.code, &self.funcs)
    }

    /// Whether kernel `name` can be split across devices ([`crate::footprint::analyze`]).
    pub fn footprint(&self, name: &str) -> Option<crate::footprint::Analysis> {
        let k = self.funcs.iter().position(|f| f.kernel && f.name == name)?;
        let is_const = |g: u32| {
            self.globals
                .get(g as usize)
                .is_some_and(|g| g.space == GlobalSpace::Const)
        };
        Some(crate::footprint::analyze(
            &self.code,
            &self.funcs,
            k as u32,
            &is_const,
        ))
    }
}

/// Launch geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
    /// A cooperative launch (`cuLaunchCooperativeKernel`): its blocks may wait for each other
    /// at grid barriers. It gets a grid workspace, as the driver gives one, and its blocks
    /// take short turns (see `exec::Ctx::grid_workspace`). The launcher checks that the grid
    /// fits on the device at once (the emulator itself has no multiprocessors to count).
    pub cooperative: bool,
}

/// Bytes of a cooperative launch's grid workspace: `cooperative_groups`'
/// `details::grid_workspace`, a size and the barrier word.
const GRID_WORKSPACE: u64 = 8;

/// How to run a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Worker threads; 0 uses every core.
    pub threads: usize,
    /// Warp instructions the launch may execute before it fails with 702 `LAUNCH_TIMEOUT`.
    pub instruction_budget: u64,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            threads: 0,
            instruction_budget: 1 << 36,
        }
    }
}

/// What a launch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOutcome {
    /// Device `printf` output (and assertion messages), in block order.
    pub printf: String,
    pub result: Result<(), EmuError>,
    /// Thread instructions executed (active lanes summed over warp instructions).
    pub thread_instructions: u64,
}

impl LaunchOutcome {
    fn err(e: EmuError) -> Self {
        LaunchOutcome {
            printf: String::new(),
            result: Err(e),
            thread_instructions: 0,
        }
    }
}

/// A module instantiated in one address space: its globals allocated and initialised there.
#[derive(Debug)]
pub struct LoadedModule {
    module: Arc<Module>,
    addrs: Vec<u64>,
}

impl LoadedModule {
    pub fn new(module: Arc<Module>, space: &AddressSpace) -> Result<LoadedModule, EmuError> {
        let mut addrs: Vec<u64> = Vec::with_capacity(module.globals.len());
        let free_all = |addrs: &[u64]| {
            for &a in addrs {
                let _ = space.free(a);
            }
        };
        for g in &module.globals {
            match space.alloc(g.size.max(1)) {
                Ok(a) => {
                    addrs.push(a);
                    if !g.init.is_empty() {
                        if let Err(e) = space.write(a, &g.init) {
                            free_all(&addrs);
                            return Err(e.into());
                        }
                    }
                }
                Err(e) => {
                    free_all(&addrs);
                    return Err(e.into());
                }
            }
        }
        for r in &module.relocs {
            let (Some(&base), Some(&target)) =
                (addrs.get(r.global as usize), addrs.get(r.target as usize))
            else {
                continue;
            };
            let v = target.wrapping_add(r.addend as u64);
            let n = (r.size as usize).min(8);
            let _ = space.write(base + r.offset, &v.to_le_bytes()[..n]);
        }
        Ok(LoadedModule { module, addrs })
    }

    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// Device address and size of a module global.
    pub fn global(&self, name: &str) -> Option<(u64, u64)> {
        let i = self.module.globals.iter().position(|g| g.name == name)?;
        Some((self.addrs[i], self.module.globals[i].size))
    }

    /// Frees the module's globals.
    pub fn free(&self, space: &AddressSpace) {
        for &a in &self.addrs {
            let _ = space.free(a);
        }
    }

    /// Runs `kernel` to completion.
    pub fn launch(
        &self,
        space: &AddressSpace,
        kernel: &str,
        cfg: &LaunchConfig,
        params: &[u8],
        opts: &LaunchOptions,
    ) -> LaunchOutcome {
        self.launch_recorded(space, kernel, cfg, params, opts, None)
    }

    /// [`LoadedModule::launch`], logging every global-memory access into `record`.
    pub fn launch_recorded(
        &self,
        space: &AddressSpace,
        kernel: &str,
        cfg: &LaunchConfig,
        params: &[u8],
        opts: &LaunchOptions,
        record: Option<&crate::access_log::AccessLog>,
    ) -> LaunchOutcome {
        let m = &*self.module;
        let Some(k) = m.kernels.iter().position(|k| k.name == kernel) else {
            return LaunchOutcome::err(EmuError::NotFound(format!("kernel `{kernel}`")));
        };
        let info = &m.kernels[k];
        let (fidx, layout) = &m.layouts[k];
        let layout = match layout {
            Ok(l) => l,
            Err(e) => return LaunchOutcome::err(e.clone()),
        };
        let threads_per_block = cfg.block.iter().try_fold(1u32, |a, &b| a.checked_mul(b));
        let bad = |msg: String| LaunchOutcome::err(EmuError::InvalidValue(msg));
        match threads_per_block {
            Some(t) if t >= 1 && t <= info.max_threads_per_block => {}
            _ => {
                return bad(format!(
                    "block {:?} exceeds {} threads or is empty",
                    cfg.block, info.max_threads_per_block
                ))
            }
        }
        if cfg.block[2] > 64
            || cfg.grid.contains(&0)
            || cfg.grid[1] > 65535
            || cfg.grid[2] > 65535
            || cfg.grid[0] > i32::MAX as u32
        {
            return bad(format!(
                "invalid launch dimensions grid {:?} block {:?}",
                cfg.grid, cfg.block
            ));
        }
        let dyn_base = layout.static_shared.next_multiple_of(m.dyn_align.max(16));
        let shared = dyn_base as u64 + cfg.dynamic_shared_bytes as u64;
        if shared > MAX_SHARED_BYTES as u64 {
            return bad(format!("{shared} bytes of shared memory requested"));
        }
        if (params.len() as u64) < info.params_size() as u64 {
            return bad(format!(
                "parameter buffer of {} bytes, kernel needs {}",
                params.len(),
                info.params_size()
            ));
        }
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            opts.threads
        };
        let grid_workspace = if cfg.cooperative {
            match grid_workspace(space) {
                Ok(w) => w,
                Err(e) => return LaunchOutcome::err(e),
            }
        } else {
            0
        };
        let ctx = exec::Ctx {
            code: &m.code,
            funcs: &m.funcs,
            layout,
            kernel: *fidx,
            space,
            params,
            globals: &self.addrs,
            grid: cfg.grid,
            block: cfg.block,
            shared_bytes: shared as u32,
            dyn_base,
            budget: opts.instruction_budget,
            used: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            printf_bytes: AtomicU64::new(0),
            grid_workspace,
            record,
        };
        let r = exec::run(&ctx, threads);
        if grid_workspace != 0 {
            // Allocated above and not reachable by the host: freeing it cannot fail.
            let _ = space.free(grid_workspace);
        }
        LaunchOutcome {
            printf: r.printf,
            result: r.result,
            thread_instructions: r.thread_instructions,
        }
    }
}

/// A zeroed grid workspace in `space` whose size field says its size.
fn grid_workspace(space: &AddressSpace) -> Result<u64, EmuError> {
    let w = space.alloc(GRID_WORKSPACE)?;
    if let Err(e) = space.write(w, &(GRID_WORKSPACE as u32).to_le_bytes()) {
        let _ = space.free(w);
        return Err(e.into());
    }
    Ok(w)
}

// A module is shared between sessions and launch threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Module>();
    assert_send_sync::<LoadedModule>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::DeviceMemory;

    const PTX: &str = r#".version 8.0
.target sm_80
.address_size 64
.global .align 4 .u32 counter = 5;
.visible .entry bump(.param .u32 by)
{
    .reg .b32 %r<3>;
    .reg .b64 %rd<2>;
    ld.param.u32 %r1, [by];
    mov.u64 %rd1, counter;
    atom.global.add.u32 %r2, [%rd1], %r1;
    ret;
}
"#;

    #[test]
    fn fatbin_image_loads_globals_and_launches() {
        let lz = lz4_flex::block::compress(PTX.as_bytes());
        let fb = crate::loader::build_fatbin(&[
            (2, 80, 0, vec![0x7f, b'E', b'L', b'F'], 0),
            (1, 80, 0x2000, lz, PTX.len() as u64),
        ]);
        let m = Arc::new(Module::load(&fb, 86).unwrap());
        assert_eq!(
            m.kernels()[0].params,
            vec![ParamInfo { offset: 0, size: 4 }]
        );
        assert_eq!(m.globals()[0].init, 5u32.to_le_bytes().to_vec());
        let space = AddressSpace::new(DeviceMemory::new(1 << 20), 0x7f00_0000_0000, 1 << 30);
        let lm = LoadedModule::new(m, &space).unwrap();
        let cfg = LaunchConfig {
            grid: [3, 1, 1],
            block: [100, 1, 1],
            dynamic_shared_bytes: 0,
            cooperative: false,
        };
        let out = lm.launch(
            &space,
            "bump",
            &cfg,
            &2u32.to_le_bytes(),
            &LaunchOptions::default(),
        );
        out.result.unwrap();
        let (addr, size) = lm.global("counter").unwrap();
        assert_eq!(size, 4);
        let mut v = [0u8; 4];
        space.read(addr, &mut v).unwrap();
        assert_eq!(u32::from_le_bytes(v), 5 + 600);
        assert_eq!(out.thread_instructions, 300 * 4);
        lm.free(&space);
        assert_eq!(space.used(), 0);
        // Too short a parameter buffer.
        let out = LoadedModule::new(lm.module().clone(), &space)
            .unwrap()
            .launch(&space, "bump", &cfg, &[0; 2], &LaunchOptions::default());
        assert_eq!(out.result.unwrap_err().cuda_code(), 1);
    }
}
