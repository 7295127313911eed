//! Initialisation, versions, error strings, `cuGetProcAddress` and `cuGetExportTable`.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Once, OnceLock};

use remora_protocol::CuStatus;

use super::{context, device};
use crate::client;
use crate::export_tables::{self, DeviceIdentity, Host};
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::generated::{proc_lookup, PROC_TABLE};

/// What the shim reports before it has talked to a server (and if it never can).
pub const FALLBACK_DRIVER_VERSION: i32 = 13050;

/// `cuInit` opens no connection: NVRTC and nvJitLink call it in processes that never use a GPU.
pub fn init(flags: u32) -> ShimResult<()> {
    if flags != 0 {
        return Err(invalid("cuInit flags must be 0"));
    }
    crate::fork::initialised();
    Ok(())
}

/// The server's driver version (the same value everywhere: cudart hashes it).
pub fn driver_version() -> i32 {
    client::client()
        .map(|c| c.info.driver_version)
        .unwrap_or(FALLBACK_DRIVER_VERSION)
}

pub fn driver_get_version(out: &mut c_int) -> ShimResult<()> {
    *out = driver_version();
    Ok(())
}

fn error_strings() -> &'static HashMap<u32, (CString, CString)> {
    static S: OnceLock<HashMap<u32, (CString, CString)>> = OnceLock::new();
    S.get_or_init(|| {
        (0..=1000u32)
            .filter_map(|c| {
                let s = CuStatus(c);
                Some((
                    c,
                    (
                        CString::new(s.name()?).ok()?,
                        CString::new(s.description()?).ok()?,
                    ),
                ))
            })
            .collect()
    })
}

/// The strings live for the whole process.
pub fn get_error_text(error: u32, out: &mut *const c_char, name: bool) -> ShimResult<()> {
    match error_strings().get(&error) {
        Some((n, d)) => {
            *out = if name { n } else { d }.as_ptr();
            Ok(())
        }
        None => {
            *out = std::ptr::null();
            Err(invalid(format!("unknown CUresult {error}")))
        }
    }
}

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
const PER_THREAD: u64 = 2;

/// `cuGetProcAddress`: the variant of the largest ABI version not above the one asked.
/// `status` is absent in the legacy ABI.
pub fn get_proc_address(
    name: &str,
    pfn: &mut *mut c_void,
    version: c_int,
    flags: u64,
    status: Option<&mut u32>,
    symbol_address: fn(&str) -> Option<*mut c_void>,
) -> ShimResult<()> {
    let found = proc_lookup(name, version.max(0) as u32, flags & PER_THREAD != 0)
        .and_then(|e| symbol_address(e.symbol));
    // 0 found, 1 symbol not found, 2 version not sufficient.
    let (addr, st) = match found {
        Some(a) => (a, 0),
        None if PROC_TABLE.iter().any(|e| e.name == name) => (std::ptr::null_mut(), 2),
        None => (std::ptr::null_mut(), 1),
    };
    *pfn = addr;
    if let Some(status) = status {
        *status = st;
    }
    if addr.is_null() {
        tracing::debug!(name, version, flags, "cuGetProcAddress: not found");
        Err(ShimError::new(
            CuStatus::NOT_FOUND,
            format!("{name}@{version} is not a driver function"),
        ))
    } else {
        Ok(())
    }
}

pub fn get_export_table(out: &mut *const c_void, id: &[u8; 16]) -> ShimResult<()> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        export_tables::install(Host {
            driver_version,
            devices: device_identities,
            primary_context: |dev| {
                context::primary_handle(dev)
                    .map(|h| h as *mut c_void)
                    .map_err(|e| e.status().0)
            },
        })
    });
    // SAFETY: both are references, valid for the call.
    let r = unsafe { export_tables::get_export_table(out, id) };
    if r == 0 {
        Ok(())
    } else {
        Err(ShimError::new(CuStatus(r), "export table refused"))
    }
}

fn device_identities() -> Result<Vec<DeviceIdentity>, u32> {
    let c = client::client().map_err(|e| e.status().0)?;
    Ok(c.info
        .devices
        .iter()
        .map(|d| DeviceIdentity {
            uuid: d.uuid,
            pci_domain: d.attribute(device::ATTR_PCI_DOMAIN).unwrap_or(0),
            pci_bus: d.attribute(device::ATTR_PCI_BUS).unwrap_or(0),
            pci_device: d.attribute(device::ATTR_PCI_DEVICE).unwrap_or(0),
        })
        .collect())
}
