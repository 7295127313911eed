//! The seam between sessions and GPUs.
//!
//! A [`Backend`] owns devices; a [`DeviceSession`] is one client's use of them. Sessions have
//! already checked every handle, pointer and size against what the client owns before a call
//! reaches a backend, so backends can trust their arguments' ownership (they still report
//! device-side failures as errors).

use std::sync::Arc;

use remora_protocol::messages::{DeviceInfo, GlobalDesc, IpcHandle, KernelDesc, Window};
use remora_protocol::CuStatus;

/// A CUDA error with a human explanation, as it travels back to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct CuError {
    pub status: CuStatus,
    pub message: String,
}

impl CuError {
    pub fn new(status: CuStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

pub type CuResult<T> = Result<T, CuError>;

/// What a server offers, whatever executes the work.
pub trait Backend: Send + Sync {
    /// A short name for logs (`emulated`, `cuda`).
    fn kind(&self) -> &'static str;
    fn driver_version(&self) -> i32;
    fn devices(&self) -> &[DeviceInfo];
    /// Device memory in use on `device` by every session together, where the backend knows it.
    fn memory_used(&self, _device: u32) -> Option<u64> {
        None
    }
    /// Device memory a session may allocate itself on each device, without a round trip
    /// (`DeviceSession::lease`); 0 where the backend cannot place allocations where told.
    fn lease(&self) -> u64 {
        0
    }
    /// Sets aside up to `bytes` on each of the first `devices` devices for a session's lease,
    /// when the server promises it in the hello: what is promised is then certain, however
    /// many sessions arrive at once. Backends without leases reserve nothing.
    fn reserve_lease(&self, _devices: u32, _bytes: u64) -> LeaseReservation {
        LeaseReservation::none()
    }
    /// Opens one client's session inside the address windows that client reserved.
    fn open(&self, windows: &[Window]) -> CuResult<Box<dyn DeviceSession>>;
}

/// Device memory set aside for one session's lease ([`Backend::reserve_lease`]); given back
/// when dropped, unless the session took it over ([`LeaseReservation::taken`]).
pub struct LeaseReservation {
    pub bytes: u64,
    give_back: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl LeaseReservation {
    pub fn none() -> Self {
        Self {
            bytes: 0,
            give_back: None,
        }
    }

    pub fn new(bytes: u64, give_back: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            bytes,
            give_back: Some(Box::new(give_back)),
        }
    }

    /// The session's lease owns the bytes now.
    pub fn taken(mut self) {
        self.give_back = None;
    }
}

impl Drop for LeaseReservation {
    fn drop(&mut self) {
        if let Some(f) = self.give_back.take() {
            f();
        }
    }
}

fn no_ipc() -> CuError {
    CuError::new(
        CuStatus::NOT_SUPPORTED,
        "this server's backend cannot share memory between its clients (CUDA IPC)",
    )
}

/// A loaded module as the client needs to see it.
pub struct ModuleImage {
    pub kernels: Vec<KernelDesc>,
    pub globals: Vec<GlobalDesc>,
}

/// Launch geometry and arguments.
pub struct Launch<'a> {
    pub module: u64,
    pub kernel: u32,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared: u32,
    pub params: &'a [u8],
    /// A cooperative launch: all blocks resident at once, so they may synchronise with each
    /// other; a grid larger than that is `CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE`.
    pub cooperative: bool,
}

/// One client's use of a backend's devices. Dropping it frees everything it holds.
///
/// Work is executed in the order calls arrive (a stronger order than CUDA's streams promise),
/// so stream and event handles need only what a backend must track for them.
pub trait DeviceSession: Send {
    fn alloc(&mut self, device: u32, size: u64) -> CuResult<u64>;
    fn free(&mut self, ptr: u64) -> CuResult<()>;
    fn mem_info(&self, device: u32) -> CuResult<(u64, u64)>;
    /// Percent of the last second `device` ran kernels, where the backend knows it.
    fn utilization(&self, _device: u32) -> Option<u32> {
        None
    }
    fn write(&mut self, dst: u64, data: &[u8]) -> CuResult<()>;
    fn read(&mut self, src: u64, out: &mut [u8]) -> CuResult<()>;
    fn copy(&mut self, dst: u64, src: u64, size: u64) -> CuResult<()>;
    #[allow(clippy::too_many_arguments)]
    fn memset(
        &mut self,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
    ) -> CuResult<()>;
    /// Copies between devices by staging through the host in chunks (a peer copy where the
    /// devices cannot reach each other's memory).
    fn copy_through_host(&mut self, dst: u64, src: u64, size: u64) -> CuResult<()> {
        let mut buf = vec![0u8; size.min(1 << 20) as usize];
        let mut off = 0;
        while off < size {
            let n = (size - off).min(buf.len() as u64) as usize;
            self.read(src + off, &mut buf[..n])?;
            self.write(dst + off, &buf[..n])?;
            off += n as u64;
        }
        Ok(())
    }

    /// Waits for all work of the session (a no-op where execution is synchronous).
    fn synchronize(&mut self) -> CuResult<()>;
    /// Reserves `bytes` on `device` for the client to allocate itself, at addresses it chooses
    /// in the upper half of that device's window (a memory lease), taking over bytes that
    /// [`Backend::reserve_lease`] set aside. Backends that cannot place allocations where the
    /// client says refuse (`Backend::lease` is then 0).
    fn lease(&mut self, _device: u32, _bytes: u64) -> CuResult<()> {
        Err(CuError::new(
            CuStatus::NOT_SUPPORTED,
            "this backend grants no memory lease",
        ))
    }

    /// An allocation the client placed at `ptr` inside its lease on `device`.
    fn alloc_at(&mut self, _device: u32, _ptr: u64, _size: u64) -> CuResult<()> {
        Err(CuError::new(
            CuStatus::NOT_SUPPORTED,
            "this backend grants no memory lease",
        ))
    }

    /// An allocation at `ptr`, in the lower half of `device`'s window, where another device
    /// placed the same allocation (the pool's virtual GPU). Backends that cannot place
    /// allocations where told refuse.
    fn alloc_fixed(&mut self, _device: u32, _ptr: u64, _size: u64) -> CuResult<()> {
        Err(CuError::new(
            CuStatus::NOT_SUPPORTED,
            "this backend cannot place an allocation at a given address",
        ))
    }

    /// CUDA IPC: a handle to the allocation starting at `ptr` on `device`, which other sessions
    /// of `owner` (the same token) may open while the allocation lives.
    fn ipc_export(&mut self, _device: u32, _ptr: u64, _owner: &str) -> CuResult<IpcHandle> {
        Err(no_ipc())
    }

    /// Maps the allocation `handle` names into this session on `device`: `(address, size)`.
    fn ipc_open(
        &mut self,
        _device: u32,
        _handle: &IpcHandle,
        _owner: &str,
    ) -> CuResult<(u64, u64)> {
        Err(no_ipc())
    }

    /// Removes a mapping made by [`DeviceSession::ipc_open`].
    fn ipc_close(&mut self, _ptr: u64) -> CuResult<()> {
        Err(no_ipc())
    }

    /// Whether all work of the session is complete now (true where execution is synchronous).
    fn is_idle(&mut self) -> bool {
        false
    }
    /// Loads a module image (PTX, fatbin, cubin) on `device` under the client's handle;
    /// `hash` is the image's SHA-256 (verified), for caches shared between sessions.
    fn load_module(
        &mut self,
        device: u32,
        module: u64,
        hash: [u8; 32],
        image: Arc<[u8]>,
    ) -> CuResult<ModuleImage>;
    fn unload_module(&mut self, module: u64) -> CuResult<()>;
    /// Runs a kernel; returns the `printf` output it produced (also when it failed).
    fn launch(&mut self, launch: &Launch<'_>) -> (String, CuResult<()>);
}
