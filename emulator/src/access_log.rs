//! The emulator as an oracle for [`crate::footprint`]: an optional log of every global-memory
//! access a launch makes (block, address, size, load or store), filled by the interpreter's
//! load, store, atomic and `cp.async` paths when a launch asks for it
//! ([`crate::LoadedModule::launch_recorded`]). Without one, a launch pays one branch per
//! memory instruction.

use std::sync::Mutex;

/// One access: the block's linear index (x fastest), the address and size, and whether it
/// wrote (atomics count as writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub block: u64,
    pub addr: u64,
    pub size: u32,
    pub write: bool,
}

/// The accesses of one launch, up to a limit (past it, [`AccessLog::overflowed`] says so).
#[derive(Debug)]
pub struct AccessLog {
    limit: usize,
    inner: Mutex<(Vec<Access>, bool)>,
}

impl AccessLog {
    pub fn new(limit: usize) -> AccessLog {
        AccessLog {
            limit,
            inner: Mutex::new((Vec::new(), false)),
        }
    }

    pub fn push(&self, a: Access) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.len() < self.limit {
            g.0.push(a);
        } else {
            g.1 = true;
        }
    }

    /// The accesses so far.
    pub fn take(&self) -> Vec<Access> {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Whether accesses past the limit were dropped.
    pub fn overflowed(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}
