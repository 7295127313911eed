//! CUDA IPC between client processes of one server: `cuIpcGetMemHandle` exports an
//! allocation under a random 64-byte handle the server keeps; another process presenting the
//! same token opens it (`cuIpcOpenMemHandle`) and sees the same bytes at an address of its
//! own. Handles do not cross servers (each server's memory is its own), and event handles are
//! not supported.

use std::collections::HashMap;
use std::ffi::c_uint;
use std::sync::Mutex;

use remora_protocol::messages::{CtxId, ReplyBody, Request};
use remora_protocol::CuStatus;

use crate::client;
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::registry::{self, registry, Alloc};

/// `CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS`, the one flag `cuIpcOpenMemHandle` takes.
const LAZY_ENABLE_PEER_ACCESS: c_uint = 1;

/// Memory this process opened: address -> times opened (CUDA counts opens of one handle).
static OPENED: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

fn opened<T>(f: impl FnOnce(&mut HashMap<u64, u32>) -> T) -> T {
    f(OPENED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new))
}

/// Whether `ptr` is memory opened by IPC (which `cuMemFree` must not free).
pub fn is_opened(ptr: u64) -> bool {
    opened(|o| o.contains_key(&ptr))
}

pub fn get_mem_handle(handle: &mut [u8; 64], dptr: u64) -> ShimResult<()> {
    let ctx = registry()
        .memory(|s| {
            s.allocs
                .get(&dptr)
                .filter(|a| a.module.is_none())
                .map(|a| a.ctx)
        })
        .filter(|_| !is_opened(dptr))
        .ok_or_else(|| invalid(format!("{dptr:#x} is not the start of a device allocation")))?;
    let reply = client::client()?.call(&Request::IpcExport {
        ctx: CtxId(ctx),
        ptr: dptr,
    })?;
    let ReplyBody::Ipc { handle: h } = reply.body else {
        return Err(ShimError::new(
            CuStatus::UNKNOWN,
            "server answered an IPC export without a handle",
        ));
    };
    *handle = h;
    Ok(())
}

pub fn open_mem_handle(pdptr: &mut u64, handle: [u8; 64], flags: c_uint) -> ShimResult<()> {
    if flags & !LAZY_ENABLE_PEER_ACCESS != 0 {
        return Err(invalid(format!("IPC open flags {flags:#x}")));
    }
    let ctx = registry::current_ctx()?;
    let device = registry().with_context(ctx, |c| c.device)?;
    let reply = client::client()?.call(&Request::IpcOpen {
        ctx: CtxId(ctx),
        handle,
    })?;
    let ReplyBody::Mapped { ptr, size } = reply.body else {
        return Err(ShimError::new(
            CuStatus::UNKNOWN,
            "server answered an IPC open without an address",
        ));
    };
    registry().memory(|s| {
        s.allocs.insert(
            ptr,
            Alloc {
                size,
                ctx,
                device,
                module: None,
                leased: false,
            },
        )
    });
    opened(|o| *o.entry(ptr).or_insert(0) += 1);
    *pdptr = ptr;
    Ok(())
}

pub fn close_mem_handle(dptr: u64) -> ShimResult<()> {
    let last = opened(|o| match o.get_mut(&dptr) {
        None => None,
        Some(n) if *n > 1 => {
            *n -= 1;
            Some(false)
        }
        Some(_) => {
            o.remove(&dptr);
            Some(true)
        }
    })
    .ok_or_else(|| invalid(format!("{dptr:#x} was not opened with cuIpcOpenMemHandle")))?;
    let ctx = registry()
        .memory(|s| {
            let ctx = s.allocs.get(&dptr).map(|a| a.ctx);
            if last {
                s.remove_alloc(dptr);
            }
            ctx
        })
        .ok_or_else(|| invalid(format!("{dptr:#x} is gone with its context")))?;
    // The server counts opens too: each close is one call, queued in order.
    client::client()?.post(
        &Request::IpcClose {
            ctx: CtxId(ctx),
            ptr: dptr,
        },
        &[],
    )
}
