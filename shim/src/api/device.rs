//! Device queries, answered from the facts fetched once at connect.

use std::ffi::{c_char, c_int, c_uint};

use remora_protocol::messages::DeviceInfo;
use remora_protocol::CuStatus;

use crate::client;
use crate::ffi::{c_str, invalid, out, put, ShimError, ShimResult};
use crate::generated::{CUdevprop, CUuuid};

pub const ATTR_PCI_BUS: u32 = 33;
pub const ATTR_PCI_DEVICE: u32 = 34;
pub const ATTR_PCI_DOMAIN: u32 = 50;
const ATTR_CC_MAJOR: u32 = 75;
const ATTR_CC_MINOR: u32 = 76;
/// Attributes above this are not defined by any CUDA release the shim knows.
const ATTR_MAX: u32 = 200;

pub fn device(dev: c_int) -> ShimResult<&'static DeviceInfo> {
    let c = client::client()?;
    usize::try_from(dev)
        .ok()
        .and_then(|d| c.info.devices.get(d))
        .ok_or_else(|| ShimError::new(CuStatus::INVALID_DEVICE, format!("no device {dev}")))
}

fn attr(d: &DeviceInfo, a: u32) -> i32 {
    d.attribute(a).unwrap_or(0)
}

pub unsafe fn get_count(count: *mut c_int) -> ShimResult<()> {
    let n = client::client()?.info.devices.len() as c_int;
    // SAFETY: out-pointer from C.
    unsafe { put(count, n) }
}

pub unsafe fn get(dev: *mut c_int, ordinal: c_int) -> ShimResult<()> {
    device(ordinal)?;
    // SAFETY: out-pointer from C.
    unsafe { put(dev, ordinal) }
}

/// Copies `s` into a C buffer of `len` bytes, truncating and always NUL-terminating.
unsafe fn write_c_string(buf: *mut c_char, len: c_int, s: &str) -> ShimResult<()> {
    if buf.is_null() || len <= 0 {
        return Err(invalid("null or empty name buffer"));
    }
    let n = s.len().min(len as usize - 1);
    // SAFETY: the caller gives `len` writable bytes at `buf`; we write n + 1 <= len of them.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    Ok(())
}

pub unsafe fn get_name(name: *mut c_char, len: c_int, dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    // SAFETY: buffer from C of `len` bytes.
    unsafe { write_c_string(name, len, &d.name) }
}

pub unsafe fn get_uuid(uuid: *mut CUuuid, dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    let p = uuid.cast::<[u8; 16]>();
    // SAFETY: CUuuid is 16 bytes (asserted in the generated types); out-pointer from C.
    unsafe { put(p, d.uuid) }
}

pub unsafe fn total_mem(bytes: *mut usize, dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    // SAFETY: out-pointer from C.
    unsafe { put(bytes, d.total_mem as usize) }
}

pub unsafe fn get_attribute(pi: *mut c_int, attrib: c_uint, dev: c_int) -> ShimResult<()> {
    // SAFETY: out-pointer from C.
    let pi = unsafe { out(pi) }?;
    let d = device(dev)?;
    if attrib == 0 || attrib > ATTR_MAX {
        return Err(invalid(format!("unknown device attribute {attrib}")));
    }
    *pi = attr(d, attrib);
    Ok(())
}

pub unsafe fn compute_capability(
    major: *mut c_int,
    minor: *mut c_int,
    dev: c_int,
) -> ShimResult<()> {
    let d = device(dev)?;
    // SAFETY: out-pointers from C.
    unsafe {
        put(major, attr(d, ATTR_CC_MAJOR))?;
        put(minor, attr(d, ATTR_CC_MINOR))
    }
}

fn pci_bus_id(d: &DeviceInfo) -> String {
    format!(
        "{:04x}:{:02x}:{:02x}.0",
        attr(d, ATTR_PCI_DOMAIN),
        attr(d, ATTR_PCI_BUS),
        attr(d, ATTR_PCI_DEVICE)
    )
}

pub unsafe fn get_pci_bus_id(buf: *mut c_char, len: c_int, dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    // SAFETY: buffer from C of `len` bytes.
    unsafe { write_c_string(buf, len, &pci_bus_id(d)) }
}

pub unsafe fn get_by_pci_bus_id(dev: *mut c_int, id: *const c_char) -> ShimResult<()> {
    // SAFETY: C string from C.
    let id = unsafe { c_str(id) }?.to_ascii_lowercase();
    let c = client::client()?;
    // Accept the short form "bb:dd.f" as the driver does, by comparing suffixes.
    let idx = c.info.devices.iter().position(|d| {
        let full = pci_bus_id(d);
        full == id || full.ends_with(&id) || full.trim_end_matches(".0") == id
    });
    let idx = idx.ok_or_else(|| invalid(format!("no device at PCI bus id {id}")))?;
    // SAFETY: out-pointer from C.
    unsafe { put(dev, idx as c_int) }
}

pub unsafe fn can_access_peer(can: *mut c_int, dev: c_int, peer: c_int) -> ShimResult<()> {
    device(dev)?;
    device(peer)?;
    // SAFETY: out-pointer from C.
    unsafe { put(can, 0) }
}

/// The legacy `CUdevprop` struct: 14 ints.
pub unsafe fn get_properties(prop: *mut CUdevprop, dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    let a = |n| attr(d, n);
    let v: [c_int; 14] = [
        a(1),
        a(2),
        a(3),
        a(4),
        a(5),
        a(6),
        a(7),
        a(8),
        a(9),
        a(10),
        a(11),
        a(12),
        a(13),
        a(14),
    ];
    // SAFETY: CUdevprop is 14 ints in cuda.h; out-pointer from C.
    unsafe { put(prop.cast::<[c_int; 14]>(), v) }
}
