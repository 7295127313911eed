//! Modules and kernel launches.

use std::sync::Arc;

use remora_protocol::messages::{kernel_order, CtxId, ModuleId, ReplyBody, StreamId};
use remora_protocol::CuStatus;

use super::{invalid_handle, Alloc, AllocKind, Module, Session, MAX_FAILED_LOADS};
use crate::backend::{CuError, CuResult, Launch};

impl Session {
    /// Validates a module load before its image is read off the wire; the device to load on.
    pub fn begin_module_load(&self, ctx: CtxId, module: ModuleId) -> CuResult<u32> {
        let device = self.ctx(ctx)?.device;
        if self.modules.contains_key(&module) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("module handle {module:#x} already in use"),
            ));
        }
        Ok(device)
    }

    /// Loads a module. `kernels` are a posted load's kernel names, by which the client numbers
    /// the kernels it launches ([`kernel_order`]); the reply lists the backend's kernels in the
    /// backend's order either way.
    pub fn load_module(
        &mut self,
        ctx: CtxId,
        module: ModuleId,
        hash: [u8; 32],
        image: Arc<[u8]>,
        kernels: Option<&[String]>,
    ) -> CuResult<ReplyBody> {
        let device = self.begin_module_load(ctx, module)?;
        let image_bytes = image.len() as u64;
        if let Some(a) = &self.account {
            a.reserve_module(image_bytes)
                .map_err(|why| CuError::new(CuStatus::OUT_OF_MEMORY, why))?;
        }
        let loaded = match self.backend.load_module(device, module.0, hash, image) {
            Ok(l) => l,
            Err(e) => {
                if let Some(a) = &self.account {
                    a.release_module(image_bytes);
                }
                return Err(e);
            }
        };
        let mut globals = Vec::new();
        // Backends place globals in memory of their own, never inside an allocation.
        for g in &loaded.globals {
            self.allocs.insert(
                g.addr,
                Alloc {
                    size: g.size.max(1),
                    ctx,
                    kind: AllocKind::ModuleGlobal,
                },
            );
            globals.push(g.addr);
        }
        let needed = |i: usize| {
            let k = &loaded.kernels[i];
            let bytes = k
                .params
                .iter()
                .map(|p| u64::from(p.offset) + u64::from(p.size))
                .max()
                .unwrap_or(0);
            (i as u32, bytes)
        };
        self.modules.insert(
            module,
            Module {
                ctx,
                kernels: kernel_order(kernels, &loaded.kernels)
                    .into_iter()
                    .map(|i| i.map(needed))
                    .collect(),
                globals,
                image_bytes,
            },
        );
        Ok(ReplyBody::Module {
            kernels: loaded.kernels,
            globals: loaded.globals,
        })
    }

    /// Remembers that a posted load of `module` failed with `e`: launches of it report `e`
    /// (the client went on as if it had loaded, as a driver that loads lazily does).
    pub fn posted_load_failed(&mut self, ctx: CtxId, module: ModuleId, e: CuError) {
        if self.modules.contains_key(&module) {
            return;
        }
        if self.failed_loads.len() >= MAX_FAILED_LOADS {
            self.failed_loads.clear();
        }
        self.failed_loads.insert(module, (ctx, e));
    }

    /// The error of a failed posted load of `module`, if that is what it is.
    fn failed_load(&self, module: ModuleId) -> CuResult<()> {
        match self.failed_loads.get(&module) {
            Some((_, e)) => Err(CuError::new(
                e.status,
                format!("the module's load failed: {}", e.message),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn module_unload(&mut self, ctx: CtxId, module: ModuleId) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        if self.failed_loads.remove(&module).is_some() {
            return Ok(ReplyBody::None);
        }
        self.module(ctx, module)?;
        self.unload_module(module)?;
        Ok(ReplyBody::None)
    }

    pub(super) fn unload_module(&mut self, module: ModuleId) -> CuResult<()> {
        let m = self
            .modules
            .remove(&module)
            .ok_or_else(|| invalid_handle("module", module))?;
        for g in m.globals {
            self.allocs.remove(&g);
        }
        if let Some(a) = &self.account {
            a.release_module(m.image_bytes);
        }
        self.backend.unload_module(module.0)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch(
        &mut self,
        ctx: CtxId,
        stream: StreamId,
        module: ModuleId,
        kernel: u32,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        cooperative: bool,
        params: &[u8],
    ) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        self.failed_load(module)?;
        let m = self.module(ctx, module)?;
        let (kernel, needed) = m
            .kernels
            .get(kernel as usize)
            .ok_or_else(|| invalid_handle("function", u64::from(kernel)))?
            .ok_or_else(|| {
                CuError::new(
                    CuStatus::NOT_FOUND,
                    "the kernel is in the image's PTX but not in the module the device loaded",
                )
            })?;
        // Backends read the whole parameter layout the load reply described.
        if (params.len() as u64) < needed {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!(
                    "parameter buffer of {} bytes, the kernel needs {needed}",
                    params.len()
                ),
            ));
        }
        let launch = Launch {
            module: module.0,
            kernel,
            grid,
            block,
            shared,
            params,
            cooperative,
        };
        let (out, result) = self.backend.launch(&launch);
        self.output.push_str(&out);
        match result {
            Ok(()) => Ok(ReplyBody::None),
            Err(e) => {
                if e.status.is_sticky() {
                    if let Some(c) = self.contexts.get_mut(&ctx) {
                        c.sticky = Some(e.clone());
                    }
                }
                Err(e)
            }
        }
    }
}
