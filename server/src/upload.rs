//! Module images as they arrive: checked while they stream in, never trusted or held whole
//! before the checks.
//!
//! - The announced size is a claim: memory is reserved as bytes arrive, not for the claim.
//! - The first bytes must look like a module image (PTX text, a fatbin, an ELF cubin); anything
//!   else is refused after 16 bytes, and the rest of its payload is dropped as it arrives.
//! - Bytes held by uploads in progress, over all connections, come from one budget
//!   ([`UPLOAD_BUDGET`]): a flood of clients each announcing a 1 GiB image holds at most that
//!   much; an upload that cannot get its share in [`BUDGET_WAIT`] fails with
//!   `CUDA_ERROR_OUT_OF_MEMORY` instead of waiting forever behind stalled peers.
//! - The content hash is computed as bytes arrive and checked at the end, before the image is
//!   cached for every client.

use std::sync::Arc;
use std::time::Duration;

use remora_protocol::messages::{CtxId, ModuleId};
use remora_protocol::CuStatus;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::{CuError, CuResult};
use crate::Shared;

/// Largest module image a client may send.
pub(crate) const MAX_IMAGE: u64 = 1 << 30;
/// Bytes of module images the server keeps by hash (shared by all clients).
const MAX_CACHED_BYTES: usize = 2 << 30;
/// Bytes all uploads in progress may hold together.
pub(crate) const UPLOAD_BUDGET: u64 = 2 << 30;
/// The budget is counted in units of this many bytes (a semaphore permit each).
const UNIT: u64 = 1 << 10;
/// How long an upload waits for its share of the budget.
const BUDGET_WAIT: Duration = Duration::from_secs(30);
/// Bytes seen before an image's kind is judged.
const SNIFF: usize = 16;
/// Memory reserved ahead of the bytes, whatever size is announced.
const INITIAL_CAPACITY: u64 = 1 << 20;

const FATBIN_MAGIC: u32 = 0xBA55_ED50;

/// The budget semaphore for [`Shared`].
pub(crate) fn budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new((UPLOAD_BUDGET / UNIT) as usize))
}

/// A module image being received for a `ModuleLoad`.
pub(crate) struct Upload {
    pub ctx: CtxId,
    pub module: ModuleId,
    pub hash: [u8; 32],
    /// A posted load's kernel names ([`remora_protocol::messages::Request::ModuleLoad`]).
    pub kernels: Option<Vec<String>>,
    bytes: Vec<u8>,
    hasher: Sha256,
    /// The budget this upload holds, returned when it is dropped.
    held: Option<OwnedSemaphorePermit>,
    sniffed: bool,
    /// How long a piece waits for budget ([`BUDGET_WAIT`]).
    wait: Duration,
}

impl Upload {
    /// An upload announced as `len` bytes; refused at once when larger than [`MAX_IMAGE`].
    pub fn begin(
        ctx: CtxId,
        module: ModuleId,
        hash: [u8; 32],
        kernels: Option<Vec<String>>,
        len: u64,
    ) -> CuResult<Self> {
        if len > MAX_IMAGE {
            return Err(CuError::new(
                CuStatus::INVALID_IMAGE,
                format!("module image of {len} bytes is too large (at most {MAX_IMAGE})"),
            ));
        }
        Ok(Self {
            ctx,
            module,
            hash,
            kernels,
            bytes: Vec::with_capacity(len.min(INITIAL_CAPACITY) as usize),
            hasher: Sha256::new(),
            held: None,
            sniffed: false,
            wait: BUDGET_WAIT,
        })
    }

    /// Takes the next piece: its budget first (waiting at most [`BUDGET_WAIT`]), then the
    /// image-kind check once enough bytes are in.
    pub async fn push(&mut self, budget: &Arc<Semaphore>, chunk: &[u8]) -> CuResult<()> {
        let units = (self.bytes.len() + chunk.len()).div_ceil(UNIT as usize)
            - self.bytes.len().div_ceil(UNIT as usize);
        if units > 0 {
            let units = u32::try_from(units).unwrap_or(u32::MAX);
            let permit = tokio::time::timeout(self.wait, budget.clone().acquire_many_owned(units))
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    CuError::new(
                        CuStatus::OUT_OF_MEMORY,
                        format!(
                            "the server is receiving {} MiB of module images from other clients; \
                             try the load again later",
                            UPLOAD_BUDGET >> 20
                        ),
                    )
                })?;
            match &mut self.held {
                Some(h) => h.merge(permit),
                None => self.held = Some(permit),
            }
        }
        self.bytes.extend_from_slice(chunk);
        self.hasher.update(chunk);
        if !self.sniffed && self.bytes.len() >= SNIFF {
            self.sniff()?;
        }
        Ok(())
    }

    fn sniff(&mut self) -> CuResult<()> {
        self.sniffed = true;
        if looks_like_image(&self.bytes) {
            Ok(())
        } else {
            let head: String = self
                .bytes
                .iter()
                .take(SNIFF)
                .map(|b| format!("{b:02x}"))
                .collect();
            Err(CuError::new(
                CuStatus::INVALID_IMAGE,
                format!("not a module image (PTX text, fatbin or ELF): it begins {head}"),
            ))
        }
    }

    /// The whole image, checked against its hash and cached for every client.
    pub fn finish(mut self, shared: &Shared) -> CuResult<Arc<[u8]>> {
        if !self.sniffed {
            self.sniff()?;
        }
        let actual: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        // The cache is shared between clients: never trust a client's claim about its content.
        if actual != self.hash {
            return Err(CuError::new(
                CuStatus::INVALID_IMAGE,
                "module image does not match its content hash",
            ));
        }
        let image: Arc<[u8]> = std::mem::take(&mut self.bytes).into();
        let mut cache = lock(shared);
        let held: usize = cache.values().map(|i| i.len()).sum();
        if held + image.len() > MAX_CACHED_BYTES {
            // Sessions keep their own references: dropping the cache only costs a re-upload.
            cache.clear();
        }
        cache.insert(self.hash, image.clone());
        Ok(image)
    }
}

/// The cached image with this hash, for a load that sent no bytes.
pub(crate) fn cached(shared: &Shared, hash: &[u8; 32]) -> CuResult<Arc<[u8]>> {
    lock(shared).get(hash).cloned().ok_or_else(|| {
        CuError::new(
            CuStatus::INVALID_VALUE,
            "module image is not cached on the server; send it",
        )
    })
}

/// The server's module images by hash.
pub(crate) fn lock(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], Arc<[u8]>>> {
    shared.images.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an image's first bytes are those of a fatbin, an ELF file or text (PTX). The loaders
/// check the rest; this only stops what is clearly not an image before it is gathered.
fn looks_like_image(head: &[u8]) -> bool {
    let head = &head[..head.len().min(SNIFF)];
    let magic = head
        .get(..4)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    magic == Some(FATBIN_MAGIC)
        || head.starts_with(b"\x7fELF")
        || (!head.is_empty()
            && head
                .iter()
                .all(|&b| b == b'\t' || b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(len: u64) -> Upload {
        Upload::begin(CtxId(1), ModuleId(2), [0; 32], None, len).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn ptx_fatbins_and_elf_look_like_images_and_other_bytes_do_not() {
        assert!(looks_like_image(
            b"//\n// Generated by NVIDIA NVVM Compiler\n"
        ));
        assert!(looks_like_image(b".version 8.0\n.target sm_80\n"));
        assert!(looks_like_image(&[0x50, 0xed, 0x55, 0xba, 1, 0, 0x10, 0]));
        assert!(looks_like_image(b"\x7fELF\x02\x01\x01\0"));
        assert!(!looks_like_image(b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"));
        assert!(!looks_like_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert!(!looks_like_image(&[0xb1, 0x43, 0x62, 0x46, 1, 0, 0, 0]));
        assert!(!looks_like_image(b""));
    }

    #[test]
    fn an_announced_size_reserves_no_more_than_a_megabyte() {
        let u = upload(MAX_IMAGE);
        assert!(u.bytes.capacity() as u64 <= INITIAL_CAPACITY);
    }

    #[test]
    fn an_image_larger_than_the_limit_is_refused_before_any_byte() {
        let e = Upload::begin(CtxId(1), ModuleId(2), [0; 32], None, MAX_IMAGE + 1)
            .err()
            .unwrap();
        assert_eq!(e.status, CuStatus::INVALID_IMAGE);
    }

    #[test]
    fn garbage_is_refused_after_its_first_bytes() {
        let budget = budget();
        let mut u = upload(1 << 20);
        let e = rt().block_on(u.push(&budget, &[0xffu8; 64])).unwrap_err();
        assert_eq!(e.status, CuStatus::INVALID_IMAGE);
        assert!(e.message.contains("begins ffff"), "{}", e.message);
    }

    #[test]
    fn uploads_hold_budget_until_dropped() {
        let budget = budget();
        let all = budget.available_permits();
        let mut u = upload(8 << 10);
        rt().block_on(u.push(&budget, &[b'x'; 3000])).unwrap();
        rt().block_on(u.push(&budget, &[b'x'; 3000])).unwrap();
        assert_eq!(budget.available_permits(), all - 6);
        drop(u);
        assert_eq!(budget.available_permits(), all);
    }

    #[test]
    fn an_exhausted_budget_fails_the_load_with_out_of_memory() {
        let budget = Arc::new(Semaphore::new(1));
        let rt = rt();
        let mut a = upload(4096);
        rt.block_on(a.push(&budget, &[b'x'; 1000])).unwrap();
        let mut b = upload(4096);
        b.wait = Duration::from_millis(20);
        let e = rt.block_on(b.push(&budget, &[b'x'; 1000]));
        assert_eq!(e.unwrap_err().status, CuStatus::OUT_OF_MEMORY);
    }
}
