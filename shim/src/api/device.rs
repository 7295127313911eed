//! Device queries, answered from the facts fetched once at connect.

use std::ffi::{c_int, c_uint};

use remora_protocol::messages::{DeviceInfo, ReplyBody, Request};
use remora_protocol::CuStatus;

use crate::client;
use crate::ffi::{invalid, write_c_string, ShimError, ShimResult};

pub const ATTR_PCI_BUS: u32 = 33;
pub const ATTR_PCI_DEVICE: u32 = 34;
pub const ATTR_PCI_DOMAIN: u32 = 50;
const ATTR_CC_MAJOR: u32 = 75;
const ATTR_CC_MINOR: u32 = 76;
const ATTR_MANAGED_MEMORY: u32 = 83;
const ATTR_PAGEABLE_MEMORY_ACCESS: u32 = 88;
const ATTR_CONCURRENT_MANAGED_ACCESS: u32 = 89;
const ATTR_PAGEABLE_USES_HOST_PAGE_TABLES: u32 = 100;
const ATTR_DIRECT_MANAGED_FROM_HOST: u32 = 101;
const ATTR_MEMORY_POOLS_SUPPORTED: u32 = 115;
/// Attributes above this are not defined by any CUDA release the shim knows.
const ATTR_MAX: u32 = 200;

pub fn device(dev: c_int) -> ShimResult<&'static DeviceInfo> {
    let c = client::client()?;
    usize::try_from(dev)
        .ok()
        .and_then(|d| c.info.devices.get(d))
        .ok_or_else(|| ShimError::new(CuStatus::INVALID_DEVICE, format!("no device {dev}")))
}

/// Managed memory follows the shim's model (`api::managed`), whatever GPU serves it: host and
/// device take turns, as on GPUs without concurrent managed access.
fn attr(d: &DeviceInfo, a: u32) -> i32 {
    match a {
        ATTR_MANAGED_MEMORY => 1,
        // Stream-ordered allocation is the shim's own (`api::mempool`), whatever GPU serves it.
        ATTR_MEMORY_POOLS_SUPPORTED => 1,
        ATTR_PAGEABLE_MEMORY_ACCESS
        | ATTR_CONCURRENT_MANAGED_ACCESS
        | ATTR_PAGEABLE_USES_HOST_PAGE_TABLES
        | ATTR_DIRECT_MANAGED_FROM_HOST => 0,
        _ => d.attribute(a).unwrap_or(0),
    }
}

pub fn get_count(count: &mut c_int) -> ShimResult<()> {
    *count = client::client()?.info.devices.len() as c_int;
    Ok(())
}

pub fn get(dev: &mut c_int, ordinal: c_int) -> ShimResult<()> {
    device(ordinal)?;
    *dev = ordinal;
    Ok(())
}

pub fn get_name(name: &mut [u8], dev: c_int) -> ShimResult<()> {
    write_c_string(name, &device(dev)?.name)
}

pub fn get_uuid(uuid: &mut [u8; 16], dev: c_int) -> ShimResult<()> {
    *uuid = device(dev)?.uuid;
    Ok(())
}

/// What NVML reports of a device beyond the driver API: free and total memory as the server
/// sees it now, and the percent of the last second it ran kernels (`None`: unknown). One round
/// trip; asks about the device itself, so no context is needed.
pub fn usage(dev: c_int) -> ShimResult<(u64, u64, Option<u32>)> {
    device(dev)?;
    let reply = client::client()?.call(&Request::MemGetInfo { device: dev as u32 })?;
    match reply.body {
        ReplyBody::MemInfo {
            free,
            total,
            utilization,
        } => Ok((free, total, utilization)),
        _ => Err(ShimError::new(
            CuStatus::UNKNOWN,
            "server answered memory info without numbers",
        )),
    }
}

pub fn total_mem(bytes: &mut usize, dev: c_int) -> ShimResult<()> {
    *bytes = device(dev)?.total_mem as usize;
    Ok(())
}

pub fn get_attribute(pi: &mut c_int, attrib: c_uint, dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    if attrib == 0 || attrib > ATTR_MAX {
        return Err(invalid(format!("unknown device attribute {attrib}")));
    }
    *pi = attr(d, attrib);
    Ok(())
}

pub fn compute_capability(major: &mut c_int, minor: &mut c_int, dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    *major = attr(d, ATTR_CC_MAJOR);
    *minor = attr(d, ATTR_CC_MINOR);
    Ok(())
}

fn pci_bus_id(d: &DeviceInfo) -> String {
    format!(
        "{:04x}:{:02x}:{:02x}.0",
        attr(d, ATTR_PCI_DOMAIN),
        attr(d, ATTR_PCI_BUS),
        attr(d, ATTR_PCI_DEVICE)
    )
}

pub fn get_pci_bus_id(buf: &mut [u8], dev: c_int) -> ShimResult<()> {
    write_c_string(buf, &pci_bus_id(device(dev)?))
}

pub fn get_by_pci_bus_id(dev: &mut c_int, id: &str) -> ShimResult<()> {
    let id = id.to_ascii_lowercase();
    let c = client::client()?;
    // Accept the short form "bb:dd.f" as the driver does, by comparing suffixes.
    let idx = c.info.devices.iter().position(|d| {
        let full = pci_bus_id(d);
        full == id || full.ends_with(&id) || full.trim_end_matches(".0") == id
    });
    *dev = idx.ok_or_else(|| invalid(format!("no device at PCI bus id {id}")))? as c_int;
    Ok(())
}

pub fn can_access_peer(can: &mut c_int, dev: c_int, peer: c_int) -> ShimResult<()> {
    device(dev)?;
    device(peer)?;
    *can = 0;
    Ok(())
}

/// The legacy `CUdevprop` struct: 14 ints.
pub fn get_properties(prop: &mut [c_int; 14], dev: c_int) -> ShimResult<()> {
    let d = device(dev)?;
    for (i, p) in prop.iter_mut().enumerate() {
        *p = attr(d, i as u32 + 1);
    }
    Ok(())
}
