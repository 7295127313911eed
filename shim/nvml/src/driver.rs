//! The devices, as the shim (`libcuda.so.1`, already loaded in the process) reports them.
//!
//! Functions are looked up in the process's global scope, where `remora run` preloads the
//! shim: NVML then sees the same session, over the same connection, as CUDA does. Without the
//! shim there is nothing to report, and `nvmlInit` says so.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

type CuResult = c_int;

/// `RemoraDeviceUsage` of the shim.
#[repr(C)]
#[derive(Default)]
pub struct Usage {
    pub free: u64,
    pub total: u64,
    pub utilization: i32,
}

type InitFn = unsafe extern "C" fn(c_uint) -> CuResult;
type IntOutFn = unsafe extern "C" fn(*mut c_int) -> CuResult;
type NameFn = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult;
type UuidFn = unsafe extern "C" fn(*mut [u8; 16], c_int) -> CuResult;
type AttributeFn = unsafe extern "C" fn(*mut c_int, c_uint, c_int) -> CuResult;
type UsageFn = unsafe extern "C" fn(c_int, *mut Usage) -> CuResult;

struct Api {
    init: InitFn,
    count: IntOutFn,
    name: NameFn,
    uuid: UuidFn,
    attribute: AttributeFn,
    driver_version: IntOutFn,
    usage: UsageFn,
}

/// One device, read once at `nvmlInit`: these facts do not change during a session.
pub struct Device {
    pub name: String,
    pub uuid: [u8; 16],
    pub pci_domain: u32,
    pub pci_bus: u32,
    pub pci_device: u32,
    pub cc: (i32, i32),
}

pub struct Driver {
    api: Api,
    pub cuda_version: i32,
    pub devices: Vec<Device>,
}

/// Why NVML cannot start: the shim is missing, or it could not reach its server.
pub enum InitError {
    NoShim(&'static str),
    Cuda(c_int),
}

fn symbol(name: &CStr) -> Result<*mut c_void, InitError> {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        Err(InitError::NoShim(
            "libcuda.so.1 (the Remora shim) is not loaded; run the program under `remora run`",
        ))
    } else {
        Ok(p)
    }
}

macro_rules! bind {
    ($name:literal, $ty:ty) => {{
        let p = symbol($name)?;
        // SAFETY: the symbol is the driver function of that name, whose C signature is $ty.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
    }};
}

fn check(r: CuResult) -> Result<(), InitError> {
    if r == 0 {
        Ok(())
    } else {
        Err(InitError::Cuda(r))
    }
}

impl Driver {
    fn open() -> Result<Driver, InitError> {
        // Only the shim exports this one: a real libcuda.so.1 would give CUDA's view, not a
        // Remora session's.
        let usage = bind!(c"remora_device_usage", UsageFn);
        let api = Api {
            init: bind!(c"cuInit", InitFn),
            count: bind!(c"cuDeviceGetCount", IntOutFn),
            name: bind!(c"cuDeviceGetName", NameFn),
            uuid: bind!(c"cuDeviceGetUuid", UuidFn),
            attribute: bind!(c"cuDeviceGetAttribute", AttributeFn),
            driver_version: bind!(c"cuDriverGetVersion", IntOutFn),
            usage,
        };
        // SAFETY: driver functions called with valid out-pointers and device ordinals below n.
        unsafe {
            check((api.init)(0))?;
            let mut n = 0;
            check((api.count)(&mut n))?;
            let mut cuda_version = 0;
            check((api.driver_version)(&mut cuda_version))?;
            let mut devices = Vec::new();
            for d in 0..n {
                let mut name = [0 as c_char; 256];
                check((api.name)(name.as_mut_ptr(), name.len() as c_int, d))?;
                let mut uuid = [0u8; 16];
                check((api.uuid)(&mut uuid, d))?;
                let attr = |a: c_uint| {
                    let mut v = 0;
                    check((api.attribute)(&mut v, a, d)).map(|_| v)
                };
                devices.push(Device {
                    name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                    uuid,
                    pci_domain: attr(50)? as u32,
                    pci_bus: attr(33)? as u32,
                    pci_device: attr(34)? as u32,
                    cc: (attr(75)?, attr(76)?),
                });
            }
            Ok(Driver {
                api,
                cuda_version,
                devices,
            })
        }
    }

    /// Free and total memory and utilisation now: a round trip to the server.
    pub fn usage(&self, index: usize) -> Result<Usage, c_int> {
        let mut u = Usage::default();
        // SAFETY: a valid out-pointer; the index is one of the devices read at start.
        let r = unsafe { (self.api.usage)(index as c_int, &mut u) };
        if r == 0 {
            Ok(u)
        } else {
            Err(r)
        }
    }
}

static DRIVER: OnceLock<Result<Driver, InitError>> = OnceLock::new();

/// The devices, read on first use; an error stays (as a failed `nvmlInit` does for the
/// process).
pub fn driver() -> &'static Result<Driver, InitError> {
    DRIVER.get_or_init(Driver::open)
}

impl Device {
    /// NVML's form: `GPU-` and the UUID's 16 bytes in 8-4-4-4-12 hex groups.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "GPU-{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// NVML's `busId`: domain with 8 hex digits; `busIdLegacy` has 4.
    pub fn bus_id(&self, domain_digits: usize) -> String {
        format!(
            "{:0w$x}:{:02x}:{:02x}.0",
            self.pci_domain,
            self.pci_bus,
            self.pci_device,
            w = domain_digits
        )
        .to_uppercase()
    }
}
