//! The implemented driver functions.
//!
//! Each line of the table below binds one exported symbol to its implementation, grouped by
//! API family (`cuMemAlloc_v2` -> `memory::mem_alloc`). Per-thread-default-stream variants
//! (`_ptds`, `_ptsz`) share their implementation: this shim runs every default stream in order.
//! Every symbol not listed keeps the trait's default body: logged once, `NOT_SUPPORTED`.

pub mod context;
pub mod device;
pub mod image;
pub mod init;
pub mod launch;
pub mod memory;
pub mod module;
pub mod stream;

use crate::driver::{self, Driver};
use crate::ffi;
use crate::generated::types::*;

/// The shim's implementation of the driver API.
pub struct Shim;

macro_rules! implement {
    ($($name:ident($($arg:ident: $ty:ty),*) => $body:expr;)*) => {
        #[allow(unused_unsafe, unused_variables, clippy::too_many_arguments)]
        impl Driver for Shim {
            $(
                unsafe fn $name($($arg: $ty),*) -> CUresult {
                    // SAFETY: arguments are as the driver API documents; implementations
                    // check pointers before use.
                    ffi::finish(stringify!($name), unsafe { $body })
                }
            )*
        }
    };
}

fn s(stream: CUstream) -> u64 {
    stream as u64
}

fn geometry(
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
) -> launch::Geometry {
    launch::Geometry {
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared,
    }
}

implement! {
    // Initialisation, versions, errors, entry points.
    cuInit(Flags: c_uint) => init::init(Flags);
    cuDriverGetVersion(driverVersion: *mut c_int) => init::driver_get_version(driverVersion);
    cuGetErrorName(error: CUresult, pStr: *mut *const c_char) => init::get_error_text(error, pStr, true);
    cuGetErrorString(error: CUresult, pStr: *mut *const c_char) => init::get_error_text(error, pStr, false);
    cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, cudaVersion: c_int, flags: cuuint64_t)
        => init::get_proc_address(symbol, pfn, cudaVersion, flags, std::ptr::null_mut(), driver::symbol_address::<Shim>);
    cuGetProcAddress_v2(symbol: *const c_char, pfn: *mut *mut c_void, cudaVersion: c_int, flags: cuuint64_t, symbolStatus: *mut CUdriverProcAddressQueryResult)
        => init::get_proc_address(symbol, pfn, cudaVersion, flags, symbolStatus, driver::symbol_address::<Shim>);
    cuGetExportTable(ppExportTable: *mut *const c_void, pExportTableId: *const CUuuid) => init::get_export_table(ppExportTable, pExportTableId);

    // Devices.
    cuDeviceGetCount(count: *mut c_int) => device::get_count(count);
    cuDeviceGet(device: *mut CUdevice, ordinal: c_int) => device::get(device, ordinal);
    cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) => device::get_name(name, len, dev);
    cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) => device::get_uuid(uuid, dev);
    cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) => device::get_uuid(uuid, dev);
    cuDeviceTotalMem_v2(bytes: *mut size_t, dev: CUdevice) => device::total_mem(bytes, dev);
    cuDeviceGetAttribute(pi: *mut c_int, attrib: CUdevice_attribute, dev: CUdevice) => device::get_attribute(pi, attrib, dev);
    cuDeviceComputeCapability(major: *mut c_int, minor: *mut c_int, dev: CUdevice) => device::compute_capability(major, minor, dev);
    cuDeviceGetPCIBusId(pciBusId: *mut c_char, len: c_int, dev: CUdevice) => device::get_pci_bus_id(pciBusId, len, dev);
    cuDeviceGetByPCIBusId(dev: *mut CUdevice, pciBusId: *const c_char) => device::get_by_pci_bus_id(dev, pciBusId);
    cuDeviceCanAccessPeer(canAccessPeer: *mut c_int, dev: CUdevice, peerDev: CUdevice) => device::can_access_peer(canAccessPeer, dev, peerDev);
    cuDeviceGetProperties(prop: *mut CUdevprop, dev: CUdevice) => device::get_properties(prop, dev);

    // Primary contexts.
    cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) => context::primary_retain(pctx, dev);
    cuDevicePrimaryCtxRelease(dev: CUdevice) => context::primary_release(dev);
    cuDevicePrimaryCtxRelease_v2(dev: CUdevice) => context::primary_release(dev);
    cuDevicePrimaryCtxReset(dev: CUdevice) => context::primary_reset(dev);
    cuDevicePrimaryCtxReset_v2(dev: CUdevice) => context::primary_reset(dev);
    cuDevicePrimaryCtxSetFlags(dev: CUdevice, flags: c_uint) => context::primary_set_flags(dev, flags);
    cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) => context::primary_set_flags(dev, flags);
    cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) => context::primary_get_state(dev, flags, active);

    // Contexts.
    cuCtxCreate(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) => context::create(pctx, flags, dev);
    cuCtxCreate_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) => context::create(pctx, flags, dev);
    cuCtxCreate_v3(pctx: *mut CUcontext, paramsArray: *mut CUexecAffinityParam, numParams: c_int, flags: c_uint, dev: CUdevice)
        => context::create(pctx, flags, dev);
    cuCtxCreate_v4(pctx: *mut CUcontext, ctxCreateParams: *mut CUctxCreateParams, flags: c_uint, dev: CUdevice)
        => context::create(pctx, flags, dev);
    cuCtxDestroy(ctx: CUcontext) => context::destroy(ctx);
    cuCtxDestroy_v2(ctx: CUcontext) => context::destroy(ctx);
    cuCtxPushCurrent(ctx: CUcontext) => context::push(ctx);
    cuCtxPushCurrent_v2(ctx: CUcontext) => context::push(ctx);
    cuCtxPopCurrent(pctx: *mut CUcontext) => context::pop(pctx);
    cuCtxPopCurrent_v2(pctx: *mut CUcontext) => context::pop(pctx);
    cuCtxSetCurrent(ctx: CUcontext) => context::set_current(ctx);
    cuCtxGetCurrent(pctx: *mut CUcontext) => context::get_current(pctx);
    cuCtxGetDevice(device: *mut CUdevice) => context::get_device(device, std::ptr::null_mut());
    cuCtxGetDevice_v2(device: *mut CUdevice, ctx: CUcontext) => context::get_device(device, ctx);
    cuCtxSynchronize() => context::synchronize(std::ptr::null_mut());
    cuCtxSynchronize_v2(ctx: CUcontext) => context::synchronize(ctx);
    cuCtxGetLimit(pvalue: *mut size_t, limit: CUlimit) => context::get_limit(pvalue, limit);
    cuCtxSetLimit(limit: CUlimit, value: size_t) => context::set_limit(limit, value);
    cuCtxGetApiVersion(ctx: CUcontext, version: *mut c_uint) => context::get_api_version(ctx, version);
    cuCtxGetFlags(flags: *mut c_uint) => context::get_flags(flags);
    cuCtxSetFlags(flags: c_uint) => context::set_flags(flags);
    cuCtxGetCacheConfig(pconfig: *mut CUfunc_cache) => context::get_config(pconfig, 0);
    cuCtxSetCacheConfig(config: CUfunc_cache) => context::set_config();
    cuCtxGetSharedMemConfig(pConfig: *mut CUsharedconfig) => context::get_config(pConfig, 1);
    cuCtxSetSharedMemConfig(config: CUsharedconfig) => context::set_config();
    cuCtxGetStreamPriorityRange(leastPriority: *mut c_int, greatestPriority: *mut c_int)
        => context::stream_priority_range(leastPriority, greatestPriority);
    cuCtxGetId(ctx: CUcontext, ctxId: *mut c_ulonglong) => context::get_id(ctx, ctxId);

    // Device memory.
    cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: size_t) => memory::mem_alloc(dptr, bytesize);
    cuMemAllocPitch_v2(dptr: *mut CUdeviceptr, pPitch: *mut size_t, WidthInBytes: size_t, Height: size_t, ElementSizeBytes: c_uint)
        => memory::alloc_pitch(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    cuMemFree_v2(dptr: CUdeviceptr) => memory::free(dptr);
    cuMemGetInfo_v2(free: *mut size_t, total: *mut size_t) => memory::get_info(free, total);
    cuMemGetAddressRange_v2(pbase: *mut CUdeviceptr, psize: *mut size_t, dptr: CUdeviceptr) => memory::get_address_range(pbase, psize, dptr);

    // Copies.
    cuMemcpyHtoD_v2(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: size_t) => memory::copy_htod(dstDevice, srcHost, ByteCount, 0);
    cuMemcpyHtoD_v2_ptds(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: size_t) => memory::copy_htod(dstDevice, srcHost, ByteCount, 0);
    cuMemcpyHtoDAsync_v2(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: size_t, hStream: CUstream)
        => memory::copy_htod(dstDevice, srcHost, ByteCount, s(hStream));
    cuMemcpyHtoDAsync_v2_ptsz(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: size_t, hStream: CUstream)
        => memory::copy_htod(dstDevice, srcHost, ByteCount, s(hStream));
    cuMemcpyDtoH_v2(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: size_t) => memory::copy_dtoh(dstHost, srcDevice, ByteCount, 0);
    cuMemcpyDtoH_v2_ptds(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: size_t) => memory::copy_dtoh(dstHost, srcDevice, ByteCount, 0);
    cuMemcpyDtoHAsync_v2(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: size_t, hStream: CUstream)
        => memory::copy_dtoh_async(dstHost, srcDevice, ByteCount, s(hStream));
    cuMemcpyDtoHAsync_v2_ptsz(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: size_t, hStream: CUstream)
        => memory::copy_dtoh_async(dstHost, srcDevice, ByteCount, s(hStream));
    cuMemcpyDtoD_v2(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: size_t) => memory::dtod(dstDevice, srcDevice, ByteCount as u64, 0);
    cuMemcpyDtoD_v2_ptds(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: size_t) => memory::dtod(dstDevice, srcDevice, ByteCount as u64, 0);
    cuMemcpyDtoDAsync_v2(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: size_t, hStream: CUstream)
        => memory::dtod(dstDevice, srcDevice, ByteCount as u64, s(hStream));
    cuMemcpyDtoDAsync_v2_ptsz(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: size_t, hStream: CUstream)
        => memory::dtod(dstDevice, srcDevice, ByteCount as u64, s(hStream));
    cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: size_t) => memory::copy_unified(dst, src, ByteCount, 0, false);
    cuMemcpy_ptds(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: size_t) => memory::copy_unified(dst, src, ByteCount, 0, false);
    cuMemcpyAsync(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: size_t, hStream: CUstream) => memory::copy_unified(dst, src, ByteCount, s(hStream), true);
    cuMemcpyAsync_ptsz(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: size_t, hStream: CUstream) => memory::copy_unified(dst, src, ByteCount, s(hStream), true);

    // 2D copies.
    cuMemcpy2D_v2(pCopy: *const CUDA_MEMCPY2D) => memory::copy_2d(pCopy.cast(), 0, false);
    cuMemcpy2D_v2_ptds(pCopy: *const CUDA_MEMCPY2D) => memory::copy_2d(pCopy.cast(), 0, false);
    cuMemcpy2DUnaligned_v2(pCopy: *const CUDA_MEMCPY2D) => memory::copy_2d(pCopy.cast(), 0, false);
    cuMemcpy2DUnaligned_v2_ptds(pCopy: *const CUDA_MEMCPY2D) => memory::copy_2d(pCopy.cast(), 0, false);
    cuMemcpy2DAsync_v2(pCopy: *const CUDA_MEMCPY2D, hStream: CUstream) => memory::copy_2d(pCopy.cast(), s(hStream), true);
    cuMemcpy2DAsync_v2_ptsz(pCopy: *const CUDA_MEMCPY2D, hStream: CUstream) => memory::copy_2d(pCopy.cast(), s(hStream), true);

    // Memsets.
    cuMemsetD8_v2(dstDevice: CUdeviceptr, uc: c_uchar, N: size_t) => memory::memset(dstDevice, N, uc as u32, 1, N, 1, 0);
    cuMemsetD8_v2_ptds(dstDevice: CUdeviceptr, uc: c_uchar, N: size_t) => memory::memset(dstDevice, N, uc as u32, 1, N, 1, 0);
    cuMemsetD16_v2(dstDevice: CUdeviceptr, us: c_ushort, N: size_t) => memory::memset(dstDevice, N.saturating_mul(2), us as u32, 2, N, 1, 0);
    cuMemsetD16_v2_ptds(dstDevice: CUdeviceptr, us: c_ushort, N: size_t) => memory::memset(dstDevice, N.saturating_mul(2), us as u32, 2, N, 1, 0);
    cuMemsetD32_v2(dstDevice: CUdeviceptr, ui: c_uint, N: size_t) => memory::memset(dstDevice, N.saturating_mul(4), ui, 4, N, 1, 0);
    cuMemsetD32_v2_ptds(dstDevice: CUdeviceptr, ui: c_uint, N: size_t) => memory::memset(dstDevice, N.saturating_mul(4), ui, 4, N, 1, 0);
    cuMemsetD8Async(dstDevice: CUdeviceptr, uc: c_uchar, N: size_t, hStream: CUstream) => memory::memset(dstDevice, N, uc as u32, 1, N, 1, s(hStream));
    cuMemsetD8Async_ptsz(dstDevice: CUdeviceptr, uc: c_uchar, N: size_t, hStream: CUstream) => memory::memset(dstDevice, N, uc as u32, 1, N, 1, s(hStream));
    cuMemsetD16Async(dstDevice: CUdeviceptr, us: c_ushort, N: size_t, hStream: CUstream) => memory::memset(dstDevice, N.saturating_mul(2), us as u32, 2, N, 1, s(hStream));
    cuMemsetD16Async_ptsz(dstDevice: CUdeviceptr, us: c_ushort, N: size_t, hStream: CUstream) => memory::memset(dstDevice, N.saturating_mul(2), us as u32, 2, N, 1, s(hStream));
    cuMemsetD32Async(dstDevice: CUdeviceptr, ui: c_uint, N: size_t, hStream: CUstream) => memory::memset(dstDevice, N.saturating_mul(4), ui, 4, N, 1, s(hStream));
    cuMemsetD32Async_ptsz(dstDevice: CUdeviceptr, ui: c_uint, N: size_t, hStream: CUstream) => memory::memset(dstDevice, N.saturating_mul(4), ui, 4, N, 1, s(hStream));
    cuMemsetD2D8_v2(dstDevice: CUdeviceptr, dstPitch: size_t, uc: c_uchar, Width: size_t, Height: size_t)
        => memory::memset(dstDevice, dstPitch, uc as u32, 1, Width, Height, 0);
    cuMemsetD2D8_v2_ptds(dstDevice: CUdeviceptr, dstPitch: size_t, uc: c_uchar, Width: size_t, Height: size_t)
        => memory::memset(dstDevice, dstPitch, uc as u32, 1, Width, Height, 0);
    cuMemsetD2D16_v2(dstDevice: CUdeviceptr, dstPitch: size_t, us: c_ushort, Width: size_t, Height: size_t)
        => memory::memset(dstDevice, dstPitch, us as u32, 2, Width, Height, 0);
    cuMemsetD2D16_v2_ptds(dstDevice: CUdeviceptr, dstPitch: size_t, us: c_ushort, Width: size_t, Height: size_t)
        => memory::memset(dstDevice, dstPitch, us as u32, 2, Width, Height, 0);
    cuMemsetD2D32_v2(dstDevice: CUdeviceptr, dstPitch: size_t, ui: c_uint, Width: size_t, Height: size_t)
        => memory::memset(dstDevice, dstPitch, ui, 4, Width, Height, 0);
    cuMemsetD2D32_v2_ptds(dstDevice: CUdeviceptr, dstPitch: size_t, ui: c_uint, Width: size_t, Height: size_t)
        => memory::memset(dstDevice, dstPitch, ui, 4, Width, Height, 0);
    cuMemsetD2D8Async(dstDevice: CUdeviceptr, dstPitch: size_t, uc: c_uchar, Width: size_t, Height: size_t, hStream: CUstream)
        => memory::memset(dstDevice, dstPitch, uc as u32, 1, Width, Height, s(hStream));
    cuMemsetD2D8Async_ptsz(dstDevice: CUdeviceptr, dstPitch: size_t, uc: c_uchar, Width: size_t, Height: size_t, hStream: CUstream)
        => memory::memset(dstDevice, dstPitch, uc as u32, 1, Width, Height, s(hStream));
    cuMemsetD2D16Async(dstDevice: CUdeviceptr, dstPitch: size_t, us: c_ushort, Width: size_t, Height: size_t, hStream: CUstream)
        => memory::memset(dstDevice, dstPitch, us as u32, 2, Width, Height, s(hStream));
    cuMemsetD2D16Async_ptsz(dstDevice: CUdeviceptr, dstPitch: size_t, us: c_ushort, Width: size_t, Height: size_t, hStream: CUstream)
        => memory::memset(dstDevice, dstPitch, us as u32, 2, Width, Height, s(hStream));
    cuMemsetD2D32Async(dstDevice: CUdeviceptr, dstPitch: size_t, ui: c_uint, Width: size_t, Height: size_t, hStream: CUstream)
        => memory::memset(dstDevice, dstPitch, ui, 4, Width, Height, s(hStream));
    cuMemsetD2D32Async_ptsz(dstDevice: CUdeviceptr, dstPitch: size_t, ui: c_uint, Width: size_t, Height: size_t, hStream: CUstream)
        => memory::memset(dstDevice, dstPitch, ui, 4, Width, Height, s(hStream));

    // Page-locked host memory and pointer attributes.
    cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: size_t) => memory::host_alloc(pp, bytesize, 0);
    cuMemHostAlloc(pp: *mut *mut c_void, bytesize: size_t, Flags: c_uint) => memory::host_alloc(pp, bytesize, Flags);
    cuMemFreeHost(p: *mut c_void) => memory::free_host(p);
    cuMemHostRegister(p: *mut c_void, bytesize: size_t, Flags: c_uint) => memory::host_register(p, bytesize, Flags);
    cuMemHostRegister_v2(p: *mut c_void, bytesize: size_t, Flags: c_uint) => memory::host_register(p, bytesize, Flags);
    cuMemHostUnregister(p: *mut c_void) => memory::host_unregister(p);
    cuMemHostGetFlags(pFlags: *mut c_uint, p: *mut c_void) => memory::host_get_flags(pFlags, p);
    cuMemHostGetDevicePointer_v2(pdptr: *mut CUdeviceptr, p: *mut c_void, Flags: c_uint) => memory::host_get_device_pointer();
    cuPointerGetAttribute(data: *mut c_void, attribute: CUpointer_attribute, ptr: CUdeviceptr) => memory::pointer_get_attribute(data, attribute, ptr);
    cuPointerGetAttributes(numAttributes: c_uint, attributes: *mut CUpointer_attribute, data: *mut *mut c_void, ptr: CUdeviceptr)
        => memory::pointer_get_attributes(numAttributes, attributes, data, ptr);

    // Streams.
    cuStreamCreate(phStream: *mut CUstream, Flags: c_uint) => stream::create(phStream, Flags, 0);
    cuStreamCreateWithPriority(phStream: *mut CUstream, flags: c_uint, priority: c_int) => stream::create(phStream, flags, priority);
    cuStreamDestroy(hStream: CUstream) => stream::destroy(hStream);
    cuStreamDestroy_v2(hStream: CUstream) => stream::destroy(hStream);
    cuStreamSynchronize(hStream: CUstream) => stream::synchronize(hStream);
    cuStreamSynchronize_ptsz(hStream: CUstream) => stream::synchronize(hStream);
    cuStreamQuery(hStream: CUstream) => stream::query(hStream);
    cuStreamQuery_ptsz(hStream: CUstream) => stream::query(hStream);
    cuStreamWaitEvent(hStream: CUstream, hEvent: CUevent, Flags: c_uint) => stream::wait_event(hStream, hEvent, Flags);
    cuStreamWaitEvent_ptsz(hStream: CUstream, hEvent: CUevent, Flags: c_uint) => stream::wait_event(hStream, hEvent, Flags);
    cuStreamGetFlags(hStream: CUstream, flags: *mut c_uint) => stream::get_flags(hStream, flags);
    cuStreamGetFlags_ptsz(hStream: CUstream, flags: *mut c_uint) => stream::get_flags(hStream, flags);
    cuStreamGetPriority(hStream: CUstream, priority: *mut c_int) => stream::get_priority(hStream, priority);
    cuStreamGetPriority_ptsz(hStream: CUstream, priority: *mut c_int) => stream::get_priority(hStream, priority);
    cuStreamGetCtx(hStream: CUstream, pctx: *mut CUcontext) => stream::get_ctx(hStream, pctx);
    cuStreamGetCtx_ptsz(hStream: CUstream, pctx: *mut CUcontext) => stream::get_ctx(hStream, pctx);
    cuStreamGetId(hStream: CUstream, streamId: *mut c_ulonglong) => stream::get_id(hStream, streamId);
    cuStreamGetId_ptsz(hStream: CUstream, streamId: *mut c_ulonglong) => stream::get_id(hStream, streamId);

    // Events.
    cuEventCreate(phEvent: *mut CUevent, Flags: c_uint) => stream::event_create(phEvent, Flags);
    cuEventRecord(hEvent: CUevent, hStream: CUstream) => stream::event_record(hEvent, hStream);
    cuEventRecord_ptsz(hEvent: CUevent, hStream: CUstream) => stream::event_record(hEvent, hStream);
    cuEventRecordWithFlags(hEvent: CUevent, hStream: CUstream, flags: c_uint) => stream::event_record(hEvent, hStream);
    cuEventRecordWithFlags_ptsz(hEvent: CUevent, hStream: CUstream, flags: c_uint) => stream::event_record(hEvent, hStream);
    cuEventSynchronize(hEvent: CUevent) => stream::event_synchronize(hEvent);
    cuEventQuery(hEvent: CUevent) => stream::event_query(hEvent);
    cuEventElapsedTime(pMilliseconds: *mut c_float, hStart: CUevent, hEnd: CUevent) => stream::event_elapsed(pMilliseconds, hStart, hEnd);
    cuEventElapsedTime_v2(pMilliseconds: *mut c_float, hStart: CUevent, hEnd: CUevent) => stream::event_elapsed(pMilliseconds, hStart, hEnd);
    cuEventDestroy(hEvent: CUevent) => stream::event_destroy(hEvent);
    cuEventDestroy_v2(hEvent: CUevent) => stream::event_destroy(hEvent);

    // Host functions and callbacks.
    cuLaunchHostFunc(hStream: CUstream, fn_: CUhostFn, userData: *mut c_void) => stream::launch_host_func(hStream, fn_, userData);
    cuLaunchHostFunc_ptsz(hStream: CUstream, fn_: CUhostFn, userData: *mut c_void) => stream::launch_host_func(hStream, fn_, userData);
    cuStreamAddCallback(hStream: CUstream, callback: CUstreamCallback, userData: *mut c_void, flags: c_uint)
        => stream::add_callback(hStream, callback, userData, flags);
    cuStreamAddCallback_ptsz(hStream: CUstream, callback: CUstreamCallback, userData: *mut c_void, flags: c_uint)
        => stream::add_callback(hStream, callback, userData, flags);

    // Modules and libraries.
    cuModuleLoad(module: *mut CUmodule, fname: *const c_char) => module::load_file(module, fname);
    cuModuleLoadData(module: *mut CUmodule, image: *const c_void) => module::load_data(module, image, 0, std::ptr::null(), std::ptr::null());
    cuModuleLoadDataEx(module: *mut CUmodule, image: *const c_void, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void)
        => module::load_data(module, image, numOptions, options, optionValues);
    cuModuleLoadFatBinary(module: *mut CUmodule, fatCubin: *const c_void) => module::load_data(module, fatCubin, 0, std::ptr::null(), std::ptr::null());
    cuModuleUnload(hmod: CUmodule) => module::unload(hmod);
    cuModuleGetFunction(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char) => module::get_function(hfunc, hmod, name);
    cuModuleGetGlobal_v2(dptr: *mut CUdeviceptr, bytes: *mut size_t, hmod: CUmodule, name: *const c_char) => module::get_global(dptr, bytes, hmod, name);
    cuModuleGetLoadingMode(mode: *mut CUmoduleLoadingMode) => ffi::put(mode, 2); // CU_MODULE_LAZY_LOADING
    cuModuleGetFunctionCount(count: *mut c_uint, mod_: CUmodule) => module::function_count(count, mod_);
    cuModuleEnumerateFunctions(functions: *mut CUfunction, numFunctions: c_uint, mod_: CUmodule) => module::enumerate_functions(functions, numFunctions, mod_);
    cuLibraryLoadData(library: *mut CUlibrary, code: *const c_void, jitOptions: *mut CUjit_option, jitOptionsValues: *mut *mut c_void, numJitOptions: c_uint, libraryOptions: *mut CUlibraryOption, libraryOptionValues: *mut *mut c_void, numLibraryOptions: c_uint)
        => module::load_data(library, code, numJitOptions, jitOptions, jitOptionsValues);
    cuLibraryLoadFromFile(library: *mut CUlibrary, fileName: *const c_char, jitOptions: *mut CUjit_option, jitOptionsValues: *mut *mut c_void, numJitOptions: c_uint, libraryOptions: *mut CUlibraryOption, libraryOptionValues: *mut *mut c_void, numLibraryOptions: c_uint)
        => module::load_file(library, fileName);
    cuLibraryUnload(library: CUlibrary) => module::unload(library);
    cuLibraryGetKernel(pKernel: *mut CUkernel, library: CUlibrary, name: *const c_char) => module::get_function(pKernel, library, name);
    cuLibraryGetModule(pMod: *mut CUmodule, library: CUlibrary) => module::library_get_module(pMod, library);
    cuLibraryGetGlobal(dptr: *mut CUdeviceptr, bytes: *mut size_t, library: CUlibrary, name: *const c_char) => module::get_global(dptr, bytes, library, name);
    cuLibraryGetKernelCount(count: *mut c_uint, lib: CUlibrary) => module::function_count(count, lib);
    cuLibraryEnumerateKernels(kernels: *mut CUkernel, numKernels: c_uint, lib: CUlibrary) => module::enumerate_functions(kernels, numKernels, lib);
    cuKernelGetFunction(pFunc: *mut CUfunction, kernel: CUkernel) => module::kernel_get_function(pFunc, kernel);
    cuKernelGetLibrary(pLib: *mut CUlibrary, kernel: CUkernel) => module::kernel_get_library(pLib, kernel);
    cuKernelGetAttribute(pi: *mut c_int, attrib: CUfunction_attribute, kernel: CUkernel, dev: CUdevice) => module::get_attribute(pi, attrib, kernel);
    cuKernelSetAttribute(attrib: CUfunction_attribute, val: c_int, kernel: CUkernel, dev: CUdevice) => module::set_attribute(kernel, attrib, val);
    cuKernelGetName(name: *mut *const c_char, hfunc: CUkernel) => module::get_name(name, hfunc);
    cuKernelGetParamInfo(kernel: CUkernel, paramIndex: size_t, paramOffset: *mut size_t, paramSize: *mut size_t)
        => module::get_param_info(kernel, paramIndex, paramOffset, paramSize);
    cuKernelSetCacheConfig(kernel: CUkernel, config: CUfunc_cache, dev: CUdevice) => module::check_function(kernel);

    // Functions.
    cuFuncGetAttribute(pi: *mut c_int, attrib: CUfunction_attribute, hfunc: CUfunction) => module::get_attribute(pi, attrib, hfunc);
    cuFuncSetAttribute(hfunc: CUfunction, attrib: CUfunction_attribute, value: c_int) => module::set_attribute(hfunc, attrib, value);
    cuFuncSetCacheConfig(hfunc: CUfunction, config: CUfunc_cache) => module::check_function(hfunc);
    cuFuncSetSharedMemConfig(hfunc: CUfunction, config: CUsharedconfig) => module::check_function(hfunc);
    cuFuncGetParamInfo(func: CUfunction, paramIndex: size_t, paramOffset: *mut size_t, paramSize: *mut size_t)
        => module::get_param_info(func, paramIndex, paramOffset, paramSize);
    cuFuncGetName(name: *mut *const c_char, hfunc: CUfunction) => module::get_name(name, hfunc);
    cuFuncGetModule(hmod: *mut CUmodule, hfunc: CUfunction) => module::get_module(hmod, hfunc);
    cuFuncLoad(function: CUfunction) => module::check_function(function);
    cuFuncIsLoaded(state: *mut CUfunctionLoadingState, function: CUfunction) => module::check_function(function).and_then(|()| ffi::put(state, 1));

    // Launches and occupancy.
    cuLaunchKernel(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void, extra: *mut *mut c_void)
        => launch::launch(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), s(hStream), kernelParams, extra);
    cuLaunchKernel_ptsz(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void, extra: *mut *mut c_void)
        => launch::launch(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), s(hStream), kernelParams, extra);
    cuLaunchCooperativeKernel(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void)
        => launch::launch(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), s(hStream), kernelParams, std::ptr::null_mut());
    cuLaunchCooperativeKernel_ptsz(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void)
        => launch::launch(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), s(hStream), kernelParams, std::ptr::null_mut());
    cuLaunchKernelEx(config: *const CUlaunchConfig, f: CUfunction, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) => launch::launch_ex(config, f, kernelParams, extra);
    cuLaunchKernelEx_ptsz(config: *const CUlaunchConfig, f: CUfunction, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) => launch::launch_ex(config, f, kernelParams, extra);
    cuOccupancyMaxActiveBlocksPerMultiprocessor(numBlocks: *mut c_int, func: CUfunction, blockSize: c_int, dynamicSMemSize: size_t)
        => launch::max_active_blocks(numBlocks, func, blockSize, dynamicSMemSize);
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(numBlocks: *mut c_int, func: CUfunction, blockSize: c_int, dynamicSMemSize: size_t, flags: c_uint)
        => launch::max_active_blocks(numBlocks, func, blockSize, dynamicSMemSize);
    cuOccupancyMaxPotentialBlockSize(minGridSize: *mut c_int, blockSize: *mut c_int, func: CUfunction, blockSizeToDynamicSMemSize: CUoccupancyB2DSize, dynamicSMemSize: size_t, blockSizeLimit: c_int)
        => launch::max_potential_block_size(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit);
    cuOccupancyMaxPotentialBlockSizeWithFlags(minGridSize: *mut c_int, blockSize: *mut c_int, func: CUfunction, blockSizeToDynamicSMemSize: CUoccupancyB2DSize, dynamicSMemSize: size_t, blockSizeLimit: c_int, flags: c_uint)
        => launch::max_potential_block_size(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit);
    cuOccupancyAvailableDynamicSMemPerBlock(dynamicSmemSize: *mut size_t, func: CUfunction, numBlocks: c_int, blockSize: c_int)
        => launch::available_dynamic_shared(dynamicSmemSize, func, numBlocks, blockSize);

    // The linker (numba's driver path): PTX in, one PTX module out.
    cuLinkCreate(numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void, stateOut: *mut CUlinkState) => module::link_create(stateOut);
    cuLinkCreate_v2(numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void, stateOut: *mut CUlinkState) => module::link_create(stateOut);
    cuLinkAddData(state: CUlinkState, type_: CUjitInputType, data: *mut c_void, size: size_t, name: *const c_char, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void)
        => module::link_add_data(state, data, size, name);
    cuLinkAddData_v2(state: CUlinkState, type_: CUjitInputType, data: *mut c_void, size: size_t, name: *const c_char, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void)
        => module::link_add_data(state, data, size, name);
    cuLinkAddFile(state: CUlinkState, type_: CUjitInputType, path: *const c_char, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void)
        => module::link_add_file(state, path);
    cuLinkAddFile_v2(state: CUlinkState, type_: CUjitInputType, path: *const c_char, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void)
        => module::link_add_file(state, path);
    cuLinkComplete(state: CUlinkState, cubinOut: *mut *mut c_void, sizeOut: *mut size_t) => module::link_complete(state, cubinOut, sizeOut);
    cuLinkDestroy(state: CUlinkState) => module::link_destroy(state);

    // Stream capture: nothing is ever capturing.
    cuStreamIsCapturing(hStream: CUstream, captureStatus: *mut CUstreamCaptureStatus) => stream::capture_status(hStream, captureStatus, std::ptr::null_mut());
    cuStreamIsCapturing_ptsz(hStream: CUstream, captureStatus: *mut CUstreamCaptureStatus) => stream::capture_status(hStream, captureStatus, std::ptr::null_mut());
    cuStreamGetCaptureInfo(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut cuuint64_t) => stream::capture_status(hStream, captureStatus_out, id_out);
    cuStreamGetCaptureInfo_ptsz(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut cuuint64_t) => stream::capture_status(hStream, captureStatus_out, id_out);
    cuStreamGetCaptureInfo_v2(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut cuuint64_t, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, numDependencies_out: *mut size_t)
        => stream::capture_status(hStream, captureStatus_out, id_out);
    cuStreamGetCaptureInfo_v2_ptsz(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut cuuint64_t, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, numDependencies_out: *mut size_t)
        => stream::capture_status(hStream, captureStatus_out, id_out);
    cuStreamGetCaptureInfo_v3(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut cuuint64_t, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, edgeData_out: *mut *const CUgraphEdgeData, numDependencies_out: *mut size_t)
        => stream::capture_status(hStream, captureStatus_out, id_out);
    cuStreamGetCaptureInfo_v3_ptsz(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut cuuint64_t, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, edgeData_out: *mut *const CUgraphEdgeData, numDependencies_out: *mut size_t)
        => stream::capture_status(hStream, captureStatus_out, id_out);
    cuThreadExchangeStreamCaptureMode(mode: *mut CUstreamCaptureMode) => stream::exchange_capture_mode(mode);
}
