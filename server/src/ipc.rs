//! CUDA IPC between the clients of one server: allocations exported under random handles
//! (`cuIpcGetMemHandle`), which another client presenting the same token may map
//! (`cuIpcOpenMemHandle`). A handle lives while its allocation does: freeing it, or the
//! exporting client going away, withdraws it (mappings already made keep the bytes alive,
//! where CUDA calls using them undefined).
//!
//! Backends keep one table for all their sessions; `T` is what they share (the emulated
//! backend's allocation storage).

use std::collections::HashMap;
use std::sync::Mutex;

use rand::RngCore;
use remora_protocol::messages::IpcHandle;
use remora_protocol::CuStatus;

use crate::backend::{CuError, CuResult};

struct Export<T> {
    device: u32,
    /// The token's owner: only sessions of the same person may open it.
    owner: String,
    /// The exporting session and the allocation's address there.
    session: u64,
    ptr: u64,
    shared: T,
}

pub struct IpcTable<T> {
    exports: Mutex<HashMap<IpcHandle, Export<T>>>,
}

impl<T> Default for IpcTable<T> {
    fn default() -> Self {
        Self {
            exports: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> IpcTable<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpcHandle, Export<T>>> {
        self.exports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of `session`'s allocation at `ptr`: the same one if already exported.
    pub fn export(&self, session: u64, owner: &str, device: u32, ptr: u64, shared: T) -> IpcHandle {
        let mut t = self.lock();
        if let Some((h, _)) = t.iter().find(|(_, e)| e.session == session && e.ptr == ptr) {
            return *h;
        }
        let mut handle = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut handle);
        t.insert(
            handle,
            Export {
                device,
                owner: owner.to_string(),
                session,
                ptr,
                shared,
            },
        );
        handle
    }

    /// What `handle` shares, for `session` of `owner` on `device`. A handle that is unknown,
    /// withdrawn, or another person's is the same error: nothing tells them apart.
    pub fn open(&self, session: u64, owner: &str, device: u32, handle: &IpcHandle) -> CuResult<T> {
        let t = self.lock();
        let e = t.get(handle).filter(|e| e.owner == owner).ok_or_else(|| {
            CuError::new(
                CuStatus::INVALID_VALUE,
                "no such IPC memory handle (its allocation was freed, or it is another client's)",
            )
        })?;
        if e.session == session {
            return Err(CuError::new(
                CuStatus::INVALID_CONTEXT,
                "an IPC memory handle cannot be opened by the process that exported it",
            ));
        }
        if e.device != device {
            return Err(CuError::new(
                CuStatus::INVALID_DEVICE,
                format!(
                    "the IPC memory handle is for device {}; open it in a context of that device",
                    e.device
                ),
            ));
        }
        Ok(e.shared.clone())
    }

    /// Withdraws the handle of `session`'s allocation at `ptr` (it was freed).
    pub fn withdraw(&self, session: u64, ptr: u64) {
        self.lock()
            .retain(|_, e| !(e.session == session && e.ptr == ptr));
    }

    /// Withdraws every handle `session` exported (it ended).
    pub fn withdraw_all(&self, session: u64) {
        self.lock().retain(|_, e| e.session != session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_opens_for_another_session_of_the_same_owner_only() {
        let t = IpcTable::<u32>::default();
        let h = t.export(1, "alice", 0, 0x1000, 7);
        assert_eq!(t.export(1, "alice", 0, 0x1000, 7), h, "exported once");
        assert_eq!(t.open(2, "alice", 0, &h), Ok(7));
        assert_eq!(
            t.open(2, "bob", 0, &h).unwrap_err().status,
            CuStatus::INVALID_VALUE
        );
        assert_eq!(
            t.open(1, "alice", 0, &h).unwrap_err().status,
            CuStatus::INVALID_CONTEXT
        );
        assert_eq!(
            t.open(2, "alice", 1, &h).unwrap_err().status,
            CuStatus::INVALID_DEVICE
        );
        let mut guessed = h;
        guessed[63] ^= 1;
        assert_eq!(
            t.open(2, "alice", 0, &guessed).unwrap_err().status,
            CuStatus::INVALID_VALUE
        );
    }

    #[test]
    fn freeing_or_leaving_withdraws_the_handles() {
        let t = IpcTable::<u32>::default();
        let a = t.export(1, "", 0, 0x1000, 1);
        let b = t.export(1, "", 0, 0x2000, 2);
        t.withdraw(1, 0x1000);
        assert!(t.open(2, "", 0, &a).is_err());
        assert_eq!(t.open(2, "", 0, &b), Ok(2));
        t.withdraw_all(1);
        assert!(t.open(2, "", 0, &b).is_err());
    }
}
