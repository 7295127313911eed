//! Device allocations as the server sees them: placed by the shim inside its memory lease (no
//! round trip) or asked of the server, and freed. Below both plain (`memory`) and managed
//! (`managed`) allocations, which add their own bookkeeping on top.

use remora_protocol::messages::{CtxId, ReplyBody, Request};
use remora_protocol::CuStatus;

use crate::client;
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::registry::{registry, Alloc};

/// Allocates `size` bytes in `ctx` at an address aligned to `align` (0: the device's own
/// alignment): `(pointer, allocation base)`. The two differ only when the server placed the
/// allocation, which is then `align` bytes larger so an aligned pointer fits inside.
pub fn alloc_aligned(
    c: &client::Client,
    ctx: u64,
    device: i32,
    size: u64,
    align: u64,
) -> ShimResult<(u64, u64)> {
    // Inside the server's memory lease the shim places the allocation itself: no round trip.
    let lease = || {
        let w = c.windows.get(usize::try_from(device).ok()?)?;
        (c.info.lease > 0).then_some((w.base + w.size / 2, w.base + w.size, c.info.lease))
    };
    // After an error the context may be faulted (sticky): ask the server, which says so.
    let placed = (!c.last_call_failed())
        .then(|| {
            registry().memory(|s| {
                let ptr = s.lease_place(device, size, align, lease)?;
                s.allocs.insert(
                    ptr,
                    Alloc {
                        size,
                        ctx,
                        device,
                        module: None,
                        leased: true,
                    },
                );
                Some(ptr)
            })
        })
        .flatten();
    if let Some(ptr) = placed {
        let req = Request::MemAllocAt {
            ctx: CtxId(ctx),
            ptr,
            size,
        };
        if let Err(e) = c.post(&req, &[]) {
            registry().memory(|s| s.remove_alloc(ptr));
            return Err(e);
        }
        return Ok((ptr, ptr));
    }
    let asked = size
        .checked_add(align)
        .ok_or_else(|| invalid("allocation too large"))?;
    let reply = c.call(&Request::MemAlloc {
        ctx: CtxId(ctx),
        size: asked,
    })?;
    let ReplyBody::Ptr { ptr } = reply.body else {
        return Err(ShimError::new(
            CuStatus::UNKNOWN,
            "server answered an allocation without a pointer",
        ));
    };
    registry().memory(|s| {
        s.allocs.insert(
            ptr,
            Alloc {
                size: asked,
                ctx,
                device,
                module: None,
                leased: false,
            },
        )
    });
    Ok((ptr.next_multiple_of(align.max(1)), ptr))
}

/// Frees the device allocation starting at `ptr` (its base): forgotten here at once, freed on
/// the server in stream order, without waiting.
pub fn free(ptr: u64) -> ShimResult<()> {
    let ctx = registry().memory(|s| match s.allocs.get(&ptr) {
        Some(a) if a.module.is_none() => {
            let ctx = a.ctx;
            s.remove_alloc(ptr);
            Ok(ctx)
        }
        _ => Err(invalid(format!(
            "{ptr:#x} is not the start of a device allocation"
        ))),
    })?;
    client::client()?.post(
        &Request::MemFree {
            ctx: CtxId(ctx),
            ptr,
        },
        &[],
    )
}
